package sigv4

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

const upperHex = "0123456789ABCDEF"

// appendCanonicalRequest appends the SigV4 canonical request of r to b:
//
//	Method \n CanonicalURI \n CanonicalQuery \n CanonicalHeaders \n SignedHeaders \n HexPayloadHash
//
// where CanonicalHeaders is one "name:value\n" line per signed header.
func appendCanonicalRequest(b []byte, r *http.Request, a *authorization, payloadHash []byte) ([]byte, *Error) {
	b = append(b, r.Method...)
	b = append(b, '\n')
	b = appendCanonicalURI(b, r.URL)
	b = append(b, '\n')
	var err *Error
	if b, err = appendCanonicalQuery(b, r.URL.RawQuery); err != nil {
		return b, err
	}
	b = append(b, '\n')
	for name, rest, more := "", a.signedHeaders, true; more; {
		name, rest, more = cutSemi(rest)
		b = append(b, name...)
		b = append(b, ':')
		var ok bool
		if b, ok = appendHeaderValue(b, r, name); !ok {
			return b, newError(ErrSignedHeaderMissing, "The request signature we calculated does not match the signature you provided: signed header "+quote(name)+" is not present in the request.")
		}
		b = append(b, '\n')
	}
	b = append(b, '\n')
	b = append(b, a.signedHeaders...)
	b = append(b, '\n')
	b = append(b, payloadHash...)
	return b, nil
}

// appendCanonicalURI appends the canonical URI: the path as it was sent on
// the wire (already percent-encoded by the client), URI-encoded once more
// with '/' kept. This double encoding is what SigV4 prescribes for every
// service but S3, and what aws-sdk-go-v2 and botocore do. An empty path is
// "/". No dot-segment or slash normalization is applied, as in
// aws-sdk-go-v2.
func appendCanonicalURI(b []byte, u *url.URL) []byte {
	p := u.EscapedPath()
	if p == "" {
		return append(b, '/')
	}
	return appendURIEncode(b, p, true)
}

// appendURIEncode percent-encodes every byte of s except the RFC 3986
// unreserved characters (A-Z a-z 0-9 - . _ ~) and, if keepSlash, '/', with
// uppercase hex digits.
func appendURIEncode(b []byte, s string, keepSlash bool) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isUnreserved(c) || (c == '/' && keepSlash) {
			b = append(b, c)
		} else {
			b = append(b, '%', upperHex[c>>4], upperHex[c&0xf])
		}
	}
	return b
}

func isUnreserved(c byte) bool {
	return ('A' <= c && c <= 'Z') || ('a' <= c && c <= 'z') || isDigit(c) ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

type queryParam struct{ key, value string }

// appendCanonicalQuery appends the canonical query string: each name=value
// pair of the raw query decoded (with '+' as space, as url.ParseQuery does
// and as aws-sdk-go-v2 reads it), re-encoded with appendURIEncode, sorted by
// encoded name then encoded value and joined with '&'. A name without '='
// gets an empty value; empty pairs ("a=1&&b=2") are skipped. ';' is an
// ordinary character.
func appendCanonicalQuery(b []byte, raw string) ([]byte, *Error) {
	if raw == "" {
		return b, nil
	}
	params, err := decodeQuery(raw)
	if err != nil {
		return b, err
	}
	for i := range params {
		params[i].key = string(appendURIEncode(nil, params[i].key, false))
		params[i].value = string(appendURIEncode(nil, params[i].value, false))
	}
	slices.SortFunc(params, func(x, y queryParam) int {
		if c := strings.Compare(x.key, y.key); c != 0 {
			return c
		}
		return strings.Compare(x.value, y.value)
	})
	for i, p := range params {
		if i > 0 {
			b = append(b, '&')
		}
		b = append(b, p.key...)
		b = append(b, '=')
		b = append(b, p.value...)
	}
	return b, nil
}

// decodeQuery splits and decodes a raw query string into name/value pairs,
// in order.
func decodeQuery(raw string) ([]queryParam, *Error) {
	var params []queryParam
	for pair := range strings.SplitSeq(raw, "&") {
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		dk, err1 := url.QueryUnescape(k)
		dv, err2 := url.QueryUnescape(v)
		if err1 != nil || err2 != nil {
			return nil, newError(ErrSignatureMismatch, "The query string is not valid percent-encoding, so the request cannot be canonicalized.")
		}
		params = append(params, queryParam{dk, dv})
	}
	return params, nil
}

// appendHeaderValue appends the canonical value of the signed header name
// (lowercase) of r: each value trimmed and runs of spaces collapsed to one,
// several values joined with ','. It reports false when the request has no
// such header.
//
// Go's server moves some headers out of r.Header; they are taken from
// where it puts them: Host from r.Host (with the port if the client sent
// one), Transfer-Encoding from r.TransferEncoding. Content-Length stays in
// r.Header (net/http keeps it there for HTTP/1.x and HTTP/2, except for a
// chunked request, where it is removed and so reported missing); when it
// is absent from r.Header but r.ContentLength is known (a request built
// with httptest.NewRequest), r.ContentLength is used.
func appendHeaderValue(b []byte, r *http.Request, name string) ([]byte, bool) {
	switch name {
	case "host":
		if r.Host == "" {
			return b, false
		}
		return appendTrimmed(b, r.Host), true
	case "content-length":
		if headerValues(r.Header, name) == nil && r.ContentLength >= 0 && len(r.TransferEncoding) == 0 {
			return strconv.AppendInt(b, r.ContentLength, 10), true
		}
	case "transfer-encoding":
		if len(r.TransferEncoding) > 0 && len(r.Header["Transfer-Encoding"]) == 0 {
			for i, v := range r.TransferEncoding {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendTrimmed(b, v)
			}
			return b, true
		}
	}
	values := headerValues(r.Header, name)
	if values == nil {
		return b, false
	}
	for i, v := range values {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendTrimmed(b, v)
	}
	return b, true
}

// headerValues returns the values of the header name (lowercase) in h, or
// nil if there is none. Like http.Header.Values it reads the canonical key
// (textproto.CanonicalMIMEHeaderKey), which is where net/http's server puts
// every header; the key is built on the stack so this does not allocate.
func headerValues(h http.Header, name string) []string {
	var buf [64]byte
	var key []byte
	if len(name) <= len(buf) {
		key = buf[:len(name)]
	} else {
		key = make([]byte, len(name))
	}
	upper := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		if upper && 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		key[i] = c
		upper = c == '-'
	}
	return h[string(key)]
}

// appendTrimmed appends v with leading and trailing white space removed and
// each run of spaces inside collapsed to a single space.
func appendTrimmed(b []byte, v string) []byte {
	v = strings.TrimSpace(v)
	if !strings.Contains(v, "  ") {
		return append(b, v...)
	}
	space := false
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == ' ' {
			if space {
				continue
			}
			space = true
		} else {
			space = false
		}
		b = append(b, c)
	}
	return b
}
