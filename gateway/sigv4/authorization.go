package sigv4

import (
	"strings"
)

const (
	algorithm  = "AWS4-HMAC-SHA256"
	terminator = "aws4_request"

	// maxAuthorizationLen bounds the header we are willing to parse. Real
	// headers are around 250-400 bytes.
	maxAuthorizationLen = 4096
	maxAccessKeyIDLen   = 128
	maxScopePartLen     = 64
)

// authorization is a parsed Authorization header. All strings are
// sub-strings of the header value; nothing is trusted until the signature
// has been checked.
type authorization struct {
	accessKeyID   string
	date          string // YYYYMMDD from the credential scope
	region        string
	service       string
	signedHeaders string // "a;b;c": lowercase, sorted, unique
	signature     string // 64 lowercase hex digits

	nSigned int         // number of names in signedHeaders
	signed  signedFlags // which of the headers the verifier cares about are signed
}

// signedFlags records whether host, x-amz-date and date are signed.
type signedFlags uint8

const (
	signsHost signedFlags = 1 << iota
	signsAmzDate
	signsDate
)

// cutSemi splits a ';'-separated list at its first ';'.
func cutSemi(s string) (first, rest string, more bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == ';' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// scope returns the credential scope "date/region/service/aws4_request".
func (a *authorization) appendScope(b []byte) []byte {
	b = append(b, a.date...)
	b = append(b, '/')
	b = append(b, a.region...)
	b = append(b, '/')
	b = append(b, a.service...)
	b = append(b, '/')
	b = append(b, terminator...)
	return b
}

// String formats a in the canonical layout the AWS SDKs use. Parsing the
// result gives a back.
func (a *authorization) String() string {
	b := make([]byte, 0, 128+len(a.accessKeyID)+len(a.region)+len(a.service)+len(a.signedHeaders))
	b = append(b, algorithm+" Credential="...)
	b = append(b, a.accessKeyID...)
	b = append(b, '/')
	b = a.appendScope(b)
	b = append(b, ", SignedHeaders="...)
	b = append(b, a.signedHeaders...)
	b = append(b, ", Signature="...)
	b = append(b, a.signature...)
	return string(b)
}

// appendSignedHeaders appends the signed header names to dst.
func (a *authorization) appendSignedHeaders(dst []string) []string {
	for name, rest, more := "", a.signedHeaders, true; more; {
		name, rest, more = cutSemi(rest)
		dst = append(dst, name)
	}
	return dst
}

func malformed(msg string) *Error { return newError(ErrMalformedAuthorization, msg) }

// parseAuthorization parses a SigV4 Authorization header value strictly:
//
//	AWS4-HMAC-SHA256 Credential=AKID/YYYYMMDD/region/service/aws4_request, SignedHeaders=a;b;c, Signature=<64 hex>
//
// The algorithm is followed by one or more spaces; components are separated
// by commas with optional spaces or tabs around them, may come in any order,
// and each must appear exactly once. Nothing else is accepted.
//
// It checks the syntax only; whether the scope's region, service and date
// are the expected ones, and which headers must be signed, is the
// verifier's business.
func parseAuthorization(h string) (authorization, *Error) {
	a, err := parseAuthorizationFields(h)
	if err != nil {
		return authorization{}, err // nothing half-parsed escapes
	}
	return a, nil
}

func parseAuthorizationFields(h string) (authorization, *Error) {
	var a authorization
	if len(h) > maxAuthorizationLen {
		return a, malformed("Authorization header is too long.")
	}
	alg, rest, _ := strings.Cut(h, " ")
	if alg != algorithm {
		return a, malformed("Unsupported AWS 'algorithm': " + quote(alg) + ". Only AWS4-HMAC-SHA256 in the Authorization header is supported.")
	}
	rest = strings.TrimLeft(rest, " ")

	var credential, signedHeaders, signature string
	var haveCred, haveSH, haveSig bool
	if rest != "" {
		for comp := range strings.SplitSeq(rest, ",") {
			part := trimOWS(comp)
			if part == "" {
				return a, malformed("Authorization header has an empty component.")
			}
			name, value, ok := strings.Cut(part, "=")
			if !ok || value == "" {
				return a, malformed("Authorization component " + quote(part) + " is not of the form name=value.")
			}
			var have *bool
			var dst *string
			switch name {
			case "Credential":
				have, dst = &haveCred, &credential
			case "SignedHeaders":
				have, dst = &haveSH, &signedHeaders
			case "Signature":
				have, dst = &haveSig, &signature
			default:
				return a, malformed("Authorization header has an unknown component " + quote(name) + ".")
			}
			if *have {
				return a, malformed("Authorization header has more than one '" + name + "' component.")
			}
			*have, *dst = true, value
		}
	}
	if !(haveCred && haveSH && haveSig) {
		var msg []string
		if !haveCred {
			msg = append(msg, "Authorization header requires 'Credential' parameter.")
		}
		if !haveSig {
			msg = append(msg, "Authorization header requires 'Signature' parameter.")
		}
		if !haveSH {
			msg = append(msg, "Authorization header requires 'SignedHeaders' parameter.")
		}
		return a, malformed(strings.Join(msg, " "))
	}

	if err := a.parseCredential(credential); err != nil {
		return a, err
	}
	if err := a.parseSignedHeaders(signedHeaders); err != nil {
		return a, err
	}
	if !isLowerHex(signature, 64) {
		return a, malformed("Signature must be 64 lowercase hexadecimal digits.")
	}
	a.signature = signature
	return a, nil
}

func trimOWS(s string) string {
	for s != "" && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for s != "" && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

func (a *authorization) parseCredential(c string) *Error {
	var parts [5]string
	rest := c
	for i := range parts {
		var ok bool
		parts[i], rest, ok = strings.Cut(rest, "/")
		if ok == (i == len(parts)-1) {
			return malformed("Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got " + quote(c) + ".")
		}
	}
	akid, date, region, service, term := parts[0], parts[1], parts[2], parts[3], parts[4]
	if akid == "" || len(akid) > maxAccessKeyIDLen || !allBytes(akid, isAccessKeyByte) {
		return malformed("Credential has an invalid access key id.")
	}
	if !isDate(date) {
		return malformed("Credential has an invalid date " + quote(date) + "; expected YYYYMMDD.")
	}
	if region == "" || len(region) > maxScopePartLen || !allBytes(region, isScopeByte) {
		return malformed("Credential has an invalid region " + quote(region) + ".")
	}
	if service == "" || len(service) > maxScopePartLen || !allBytes(service, isScopeByte) {
		return malformed("Credential has an invalid service " + quote(service) + ".")
	}
	if term != terminator {
		return malformed("Credential should be scoped with a valid terminator: 'aws4_request', not " + quote(term) + ".")
	}
	a.accessKeyID, a.date, a.region, a.service = akid, date, region, service
	return nil
}

// parseSignedHeaders checks "a;b;c": non-empty names of lowercase token
// characters, strictly ascending (so sorted and unique), and records them.
func (a *authorization) parseSignedHeaders(s string) *Error {
	prev := ""
	n := 0
	var flags signedFlags
	for name, rest, more := "", s, true; more; {
		name, rest, more = cutSemi(rest)
		if name == "" {
			return malformed("SignedHeaders has an empty header name.")
		}
		if !allBytes(name, isLowerTokenByte) {
			return malformed("SignedHeaders has an invalid header name " + quote(name) + "; names must be lowercase.")
		}
		if n > 0 && name <= prev {
			if name == prev {
				return malformed("SignedHeaders lists " + quote(name) + " more than once.")
			}
			return malformed("SignedHeaders must be sorted: " + quote(name) + " comes after " + quote(prev) + ".")
		}
		switch name {
		case "host":
			flags |= signsHost
		case "x-amz-date":
			flags |= signsAmzDate
		case "date":
			flags |= signsDate
		}
		prev = name
		n++
	}
	a.signedHeaders, a.nSigned, a.signed = s, n, flags
	return nil
}

func allBytes(s string, ok func(byte) bool) bool {
	for i := 0; i < len(s); i++ {
		if !ok(s[i]) {
			return false
		}
	}
	return true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isAccessKeyByte(c byte) bool { return byteClass[c]&classAccessKey != 0 }
func isScopeByte(c byte) bool     { return byteClass[c]&classScope != 0 }

// isLowerTokenByte: RFC 9110 token characters without uppercase letters.
func isLowerTokenByte(c byte) bool { return byteClass[c]&classLowerToken != 0 }

const (
	classAccessKey  = 1 << iota // A-Z a-z 0-9 - _ .
	classScope                  // a-z 0-9 -
	classLowerToken             // a-z 0-9 ! # $ % & ' * + - . ^ _ ` | ~
)

var byteClass = func() (t [256]uint8) {
	for c := '0'; c <= '9'; c++ {
		t[c] |= classAccessKey | classScope | classLowerToken
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] |= classAccessKey | classScope | classLowerToken
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] |= classAccessKey
	}
	for _, c := range "-_." {
		t[c] |= classAccessKey
	}
	t['-'] |= classScope
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] |= classLowerToken
	}
	return t
}()

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isDigit(c) && !('a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// isDate reports whether s is a valid calendar date YYYYMMDD.
func isDate(s string) bool {
	if len(s) != 8 || !allBytes(s, isDigit) {
		return false
	}
	y := atoi(s[0:4])
	m := atoi(s[4:6])
	d := atoi(s[6:8])
	return y >= 1 && m >= 1 && m <= 12 && d >= 1 && d <= daysIn(m, y)
}

func atoi(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		n = n*10 + int(s[i]-'0')
	}
	return n
}

func daysIn(m, y int) int {
	switch m {
	case 2:
		if y%4 == 0 && (y%100 != 0 || y%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}
