package bench

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync/atomic"
	"time"
)

// Signer signs requests with AWS Signature Version 4 (header form), for the
// lean client. It signs only what the KMS JSON protocol needs: the method,
// path, query, the headers content-type, host, x-amz-date, x-amz-target
// (and x-amz-security-token with a session token) and the payload hash.
//
// Set the fields before the first Sign and leave them alone afterwards; a
// Signer is then safe for concurrent use. It keeps the derived signing key
// of the current day, so most calls run four SHA-256 blocks' worth of HMAC
// instead of five HMACs.
type Signer struct {
	AccessKeyID, Secret, SessionToken, Region, Service string

	key atomic.Pointer[signingKey]
}

// signingKey is the key derived for one day, with what it was derived from.
type signingKey struct {
	date                    [8]byte // YYYYMMDD
	secret, region, service string
	key                     [sha256.Size]byte
}

const (
	sigv4Algorithm = "AWS4-HMAC-SHA256"
	amzDateLayout  = "20060102T150405Z"
)

// Sign signs r, whose body is body, as of now. It sets X-Amz-Date, and
// X-Amz-Security-Token when the Signer has a session token, then the
// Authorization header. Content-Type and X-Amz-Target are signed when r
// carries them, so set them first. Host is r.Host, else r.URL.Host: what
// net/http sends.
func (s *Signer) Sign(r *http.Request, body []byte, now time.Time) {
	now = now.UTC()
	if r.Header == nil {
		r.Header = make(http.Header)
	}
	var dateBuf [16]byte
	amzDate := now.AppendFormat(dateBuf[:0], amzDateLayout)
	date := amzDate[:8]
	setHeader(r.Header, "X-Amz-Date", string(amzDate))
	if s.SessionToken != "" {
		setHeader(r.Header, "X-Amz-Security-Token", s.SessionToken)
	}

	// The signed headers, in the sorted order SigV4 wants them.
	ctype, hasCtype := r.Header["Content-Type"]
	target, hasTarget := r.Header["X-Amz-Target"]
	host := r.Host
	if host == "" {
		host = r.URL.Host
	}
	var signed [5]string
	names := signed[:0]
	if hasCtype {
		names = append(names, "content-type")
	}
	names = append(names, "host", "x-amz-date")
	if s.SessionToken != "" {
		names = append(names, "x-amz-security-token")
	}
	if hasTarget {
		names = append(names, "x-amz-target")
	}

	// The canonical request.
	var crBuf [1024]byte
	cr := append(crBuf[:0], r.Method...)
	cr = append(cr, '\n')
	path := r.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	cr = appendURIEncode(cr, path, true)
	cr = append(cr, '\n')
	if r.URL.RawQuery != "" {
		cr = appendCanonicalQuery(cr, r.URL.RawQuery)
	}
	cr = append(cr, '\n')
	for _, name := range names {
		cr = append(cr, name...)
		cr = append(cr, ':')
		switch name {
		case "content-type":
			cr = appendHeaderValues(cr, ctype)
		case "host":
			cr = appendTrimmedValue(cr, host)
		case "x-amz-date":
			cr = append(cr, amzDate...)
		case "x-amz-security-token":
			cr = appendTrimmedValue(cr, s.SessionToken)
		case "x-amz-target":
			cr = appendHeaderValues(cr, target)
		}
		cr = append(cr, '\n')
	}
	cr = append(cr, '\n')
	cr = appendSignedHeaders(cr, names)
	cr = append(cr, '\n')
	payloadHash := sha256.Sum256(body)
	cr = hex.AppendEncode(cr, payloadHash[:])
	crHash := sha256.Sum256(cr)

	// The string to sign.
	var stsBuf [256]byte
	sts := append(stsBuf[:0], sigv4Algorithm+"\n"...)
	sts = append(sts, amzDate...)
	sts = append(sts, '\n')
	scopeStart := len(sts)
	sts = appendScope(sts, date, s.Region, s.Service)
	scope := sts[scopeStart:]
	sts = append(sts, '\n')
	sts = hex.AppendEncode(sts, crHash[:])

	key := s.signingKey(date)
	sig := hmacSHA256(key[:], sts)

	// The Authorization header.
	var authBuf [512]byte
	auth := append(authBuf[:0], sigv4Algorithm+" Credential="...)
	auth = append(auth, s.AccessKeyID...)
	auth = append(auth, '/')
	auth = append(auth, scope...)
	auth = append(auth, ", SignedHeaders="...)
	auth = appendSignedHeaders(auth, names)
	auth = append(auth, ", Signature="...)
	auth = hex.AppendEncode(auth, sig[:])
	setHeader(r.Header, "Authorization", string(auth))
}

// setHeader sets a header (canonical key) reusing its value slice when it
// has one.
func setHeader(h http.Header, key, value string) {
	if v := h[key]; len(v) == 1 {
		v[0] = value
		return
	}
	h[key] = []string{value}
}

func appendSignedHeaders(b []byte, names []string) []byte {
	for i, n := range names {
		if i > 0 {
			b = append(b, ';')
		}
		b = append(b, n...)
	}
	return b
}

// appendScope appends the credential scope: date/region/service/aws4_request.
func appendScope(b, date []byte, region, service string) []byte {
	b = append(b, date...)
	b = append(b, '/')
	b = append(b, region...)
	b = append(b, '/')
	b = append(b, service...)
	return append(b, "/aws4_request"...)
}

// signingKey returns the signing key for date (YYYYMMDD), deriving it when
// the cached one is for another day (or other credentials):
//
//	kDate    = HMAC("AWS4" + secret, date)
//	kRegion  = HMAC(kDate, region)
//	kService = HMAC(kRegion, service)
//	kSigning = HMAC(kService, "aws4_request")
func (s *Signer) signingKey(date []byte) [sha256.Size]byte {
	if c := s.key.Load(); c != nil && string(c.date[:]) == string(date) &&
		c.secret == s.Secret && c.region == s.Region && c.service == s.Service {
		return c.key
	}
	k := hmacSHA256([]byte("AWS4"+s.Secret), date)
	k = hmacSHA256(k[:], []byte(s.Region))
	k = hmacSHA256(k[:], []byte(s.Service))
	k = hmacSHA256(k[:], []byte("aws4_request"))
	c := &signingKey{secret: s.Secret, region: s.Region, service: s.Service, key: k}
	copy(c.date[:], date)
	s.key.Store(c)
	return k
}

// hmacSHA256 is HMAC-SHA256 (RFC 2104) on stack buffers: crypto/hmac
// allocates its two hash states on every call.
func hmacSHA256(key, msg []byte) [sha256.Size]byte {
	const block = 64
	var k [block]byte
	if len(key) > block {
		sum := sha256.Sum256(key)
		copy(k[:], sum[:])
	} else {
		copy(k[:], key)
	}
	var inBuf [block + 512]byte
	in := inBuf[:0]
	for _, c := range k {
		in = append(in, c^0x36)
	}
	in = append(in, msg...)
	inner := sha256.Sum256(in)
	var out [block + sha256.Size]byte
	for i, c := range k {
		out[i] = c ^ 0x5c
	}
	copy(out[block:], inner[:])
	return sha256.Sum256(out[:])
}

// appendHeaderValues appends a header's values, each trimmed, joined by
// commas.
func appendHeaderValues(b []byte, values []string) []byte {
	for i, v := range values {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendTrimmedValue(b, v)
	}
	return b
}

// appendTrimmedValue appends v without leading and trailing spaces and with
// each run of spaces inside collapsed to one.
func appendTrimmedValue(b []byte, v string) []byte {
	v = strings.TrimSpace(v)
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

// appendURIEncode percent-encodes s (uppercase hex) but for the unreserved
// characters A-Z a-z 0-9 - . _ ~ and, when keepSlash, '/'. Applied to the
// path as sent (already escaped once) it gives the double encoding SigV4
// prescribes for every service but S3.
func appendURIEncode(b []byte, s string, keepSlash bool) []byte {
	const hexDigits = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9',
			c == '-', c == '.', c == '_', c == '~', c == '/' && keepSlash:
			b = append(b, c)
		default:
			b = append(b, '%', hexDigits[c>>4], hexDigits[c&0xf])
		}
	}
	return b
}

// appendCanonicalQuery appends the canonical query string: parameters
// decoded, re-encoded, and sorted by name then value. KMS requests have
// none; this path is not allocation-light.
func appendCanonicalQuery(b []byte, raw string) []byte {
	type param struct{ k, v string }
	var ps []param
	for part := range strings.SplitSeq(raw, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		if dk, err := url.QueryUnescape(k); err == nil {
			k = dk
		}
		if dv, err := url.QueryUnescape(v); err == nil {
			v = dv
		}
		ps = append(ps, param{k, v})
	}
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].k != ps[j].k {
			return ps[i].k < ps[j].k
		}
		return ps[i].v < ps[j].v
	})
	for i, p := range ps {
		if i > 0 {
			b = append(b, '&')
		}
		b = appendURIEncode(b, p.k, false)
		b = append(b, '=')
		b = appendURIEncode(b, p.v, false)
	}
	return b
}
