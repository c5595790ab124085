package sigv4

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// DefaultMaxSkew is the clock skew a Verifier allows when MaxSkew is zero,
// the same 5 minutes AWS allows.
const DefaultMaxSkew = 5 * time.Minute

// Credentials are what a [Lookup] returns for an access key id.
type Credentials struct {
	// AccessKeyID, if set, must equal the id that was looked up; it guards
	// against a Lookup that returns another key's credentials.
	AccessKeyID string
	// Secret is the secret access key. It must not be empty.
	Secret string
	// Principal names the identity the key belongs to (an ARN, a user
	// name); it is copied to [Result.Principal] and not interpreted here.
	Principal string
}

// Lookup returns the credentials for an access key id. When the key does
// not exist (or is disabled) it returns an error that wraps
// [ErrUnknownAccessKey]; any other error is reported as [ErrLookupFailed]
// (InternalFailure), because the client is not at fault.
type Lookup func(ctx context.Context, accessKeyID string) (Credentials, error)

// Verifier checks AWS Signature Version 4 on HTTP requests signed with an
// Authorization header. Set its fields before the first call to Verify and
// do not change them afterwards; a Verifier is then safe for concurrent use.
// It must not be copied after first use.
type Verifier struct {
	// Region and Service are the only credential scope accepted, e.g.
	// "us-east-1" and "kms". Both are required.
	Region  string
	Service string
	// Lookup resolves access key ids. Required.
	Lookup Lookup
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// MaxSkew is how far the request's time may be from Now in either
	// direction; zero means DefaultMaxSkew.
	MaxSkew time.Duration
	// KeyCacheSize bounds the number of derived signing keys kept; zero
	// means DefaultKeyCacheSize.
	KeyCacheSize int

	once  sync.Once
	cache *keyCache
}

// Result is the verified identity of a request. Verify returns one only
// when every check passed.
type Result struct {
	AccessKeyID string
	Principal   string
	// SignedHeaders are the lowercase names of the headers the signature
	// covers, sorted. Headers not in this list were not authenticated.
	SignedHeaders []string
	// Date is the request's signing time (from X-Amz-Date, else Date), UTC.
	Date    time.Time
	Region  string
	Service string
}

// Verify checks the SigV4 signature of r, whose body the caller has already
// read in full into body (Verify does not touch r.Body). It returns the
// verified identity, or nil and an [*Error] saying why the request must be
// refused; see the package documentation for the checks and their order.
func (v *Verifier) Verify(r *http.Request, body []byte) (*Result, error) {
	if err := v.check(); err != nil {
		return nil, err
	}
	if r == nil || r.URL == nil {
		return nil, newError(ErrMisconfigured, "sigv4: Verify called without a request URL")
	}
	v.once.Do(func() { v.cache = newKeyCache(v.KeyCacheSize) })

	// Query-string (presigned) authentication is not offered.
	if r.URL.RawQuery != "" {
		if err := checkQueryAuth(r.URL.RawQuery); err != nil {
			return nil, err
		}
	}

	authz := headerValues(r.Header, "authorization")
	switch len(authz) {
	case 0:
		return nil, newError(ErrMissingAuthentication, "Missing Authentication Token")
	case 1:
	default:
		return nil, malformed("The request has more than one Authorization header.")
	}
	a, perr := parseAuthorization(authz[0])
	if perr != nil {
		return nil, perr
	}

	if headerValues(r.Header, "x-amz-security-token") != nil {
		return nil, newError(ErrSessionTokenRefused, "The security token included in the request is invalid.")
	}

	if a.region != v.Region {
		return nil, newError(ErrCredentialScope, "Credential should be scoped to a valid region: expected "+quote(v.Region)+", not "+quote(a.region)+".")
	}
	if a.service != v.Service {
		return nil, newError(ErrCredentialScope, "Credential should be scoped to correct service: expected "+quote(v.Service)+", not "+quote(a.service)+".")
	}

	if a.signed&signsHost == 0 {
		return nil, malformed("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
	}
	t, stamp, terr := requestTime(r, &a)
	if terr != nil {
		return nil, terr
	}
	if a.date != string(stamp[:8]) {
		return nil, newError(ErrCredentialScope, "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "+
			quote(a.date)+" != "+quote(string(stamp[:8]))+", from "+quote(string(stamp[:]))+".")
	}
	if err := v.checkSkew(t); err != nil {
		return nil, err
	}

	sum := sha256.Sum256(body)
	var payloadHash [64]byte
	hex.Encode(payloadHash[:], sum[:])
	if err := checkContentSHA256(r, payloadHash[:]); err != nil {
		return nil, err
	}

	var creqBuf [1024]byte
	creq, cerr := appendCanonicalRequest(creqBuf[:0], r, &a, payloadHash[:])
	if cerr != nil {
		return nil, cerr
	}

	creds, err := v.Lookup(r.Context(), a.accessKeyID)
	if err != nil {
		if errors.Is(err, ErrUnknownAccessKey) {
			return nil, newError(ErrUnknownAccessKey, "The security token included in the request is invalid.")
		}
		return nil, &Error{Err: ErrLookupFailed, Message: "An internal error occurred while looking up the access key.", cause: err}
	}
	if creds.Secret == "" || (creds.AccessKeyID != "" && creds.AccessKeyID != a.accessKeyID) {
		return nil, newError(ErrLookupFailed, "An internal error occurred while looking up the access key.")
	}

	// String to sign: algorithm, request time, scope, hash of the canonical
	// request.
	var stsBuf [192]byte
	sts := append(stsBuf[:0], algorithm+"\n"...)
	sts = append(sts, stamp[:]...)
	sts = append(sts, '\n')
	sts = a.appendScope(sts)
	sts = append(sts, '\n')
	creqSum := sha256.Sum256(creq)
	sts = hex.AppendEncode(sts, creqSum[:])

	key := v.cache.signingKey(keyCacheKey{a.accessKeyID, a.date, a.region, a.service}, creds.Secret)
	mac := hmac.New(sha256.New, key[:])
	mac.Write(sts)
	var want [sha256.Size]byte
	mac.Sum(want[:0])
	clear(key[:])

	var got [sha256.Size]byte
	decodeLowerHex(got[:], a.signature)
	if !hmac.Equal(want[:], got[:]) {
		clear(want[:])
		return nil, &Error{
			Err: ErrSignatureMismatch,
			Message: "The request signature we calculated does not match the signature you provided. " +
				"Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
			CanonicalRequest: string(creq),
			StringToSign:     string(sts),
		}
	}

	return newResult(&a, creds.Principal, t), nil
}

// newResult builds the Result. The Result and the backing array of its
// SignedHeaders share one allocation when there are few signed headers.
func newResult(a *authorization, principal string, t time.Time) *Result {
	type resultWithHeaders struct {
		Result
		headers [8]string
	}
	var res *Result
	var headers []string
	if a.nSigned <= 8 {
		rh := new(resultWithHeaders)
		res, headers = &rh.Result, rh.headers[:0:a.nSigned]
	} else {
		res, headers = new(Result), make([]string, 0, a.nSigned)
	}
	*res = Result{
		AccessKeyID:   a.accessKeyID,
		Principal:     principal,
		SignedHeaders: a.appendSignedHeaders(headers),
		Date:          t,
		Region:        a.region,
		Service:       a.service,
	}
	return res
}

func (v *Verifier) check() *Error {
	switch {
	case v.Region == "":
		return newError(ErrMisconfigured, "sigv4: Verifier.Region is not set")
	case v.Service == "":
		return newError(ErrMisconfigured, "sigv4: Verifier.Service is not set")
	case v.Lookup == nil:
		return newError(ErrMisconfigured, "sigv4: Verifier.Lookup is not set")
	case v.MaxSkew < 0:
		return newError(ErrMisconfigured, "sigv4: Verifier.MaxSkew is negative")
	}
	return nil
}

const amzDateLayout = "20060102T150405Z"

// requestTime returns the request's signing time and its ISO 8601 basic
// form, from X-Amz-Date if the request has one, else from Date. The header
// used must appear once and be signed.
func requestTime(r *http.Request, a *authorization) (time.Time, [16]byte, *Error) {
	var stamp [16]byte
	if vals := headerValues(r.Header, "x-amz-date"); vals != nil {
		if len(vals) != 1 {
			return time.Time{}, stamp, malformed("The request has more than one X-Amz-Date header.")
		}
		if a.signed&signsAmzDate == 0 {
			return time.Time{}, stamp, malformed("'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization.")
		}
		t, ok := parseAmzDate(vals[0])
		if !ok {
			return time.Time{}, stamp, malformed("Date must be in ISO-8601 'basic format'. Got " + quote(vals[0]) + ".")
		}
		copy(stamp[:], vals[0])
		return t, stamp, nil
	}
	if vals := headerValues(r.Header, "date"); vals != nil {
		if len(vals) != 1 {
			return time.Time{}, stamp, malformed("The request has more than one Date header.")
		}
		if a.signed&signsDate == 0 {
			return time.Time{}, stamp, malformed("'Date' must be a 'SignedHeader' in the AWS Authorization.")
		}
		t, err := http.ParseTime(vals[0])
		if err != nil {
			return time.Time{}, stamp, malformed("The Date header is not a valid HTTP date. Got " + quote(vals[0]) + ".")
		}
		t = t.UTC()
		t.AppendFormat(stamp[:0], amzDateLayout)
		return t, stamp, nil
	}
	return time.Time{}, stamp, malformed("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
}

// parseAmzDate parses exactly YYYYMMDD'T'HHMMSS'Z' (UTC).
func parseAmzDate(s string) (time.Time, bool) {
	if len(s) != 16 || s[8] != 'T' || s[15] != 'Z' || !isDate(s[:8]) || !allBytes(s[9:15], isDigit) {
		return time.Time{}, false
	}
	h, m, sec := atoi(s[9:11]), atoi(s[11:13]), atoi(s[13:15])
	if h > 23 || m > 59 || sec > 59 {
		return time.Time{}, false
	}
	return time.Date(atoi(s[0:4]), time.Month(atoi(s[4:6])), atoi(s[6:8]), h, m, sec, 0, time.UTC), true
}

func (v *Verifier) checkSkew(t time.Time) *Error {
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	n := now().UTC()
	skew := v.MaxSkew
	if skew == 0 {
		skew = DefaultMaxSkew
	}
	span := func() string {
		if skew%time.Minute == 0 {
			return fmt.Sprintf("%d min.", skew/time.Minute)
		}
		return skew.String() + "."
	}
	switch {
	case t.Before(n.Add(-skew)):
		return newError(ErrSignatureExpired, fmt.Sprintf("Signature expired: %s is now earlier than %s (%s - %s)",
			t.Format(amzDateLayout), n.Add(-skew).Format(amzDateLayout), n.Format(amzDateLayout), span()))
	case t.After(n.Add(skew)):
		return newError(ErrSignatureExpired, fmt.Sprintf("Signature not yet current: %s is still later than %s (%s + %s)",
			t.Format(amzDateLayout), n.Add(skew).Format(amzDateLayout), n.Format(amzDateLayout), span()))
	}
	return nil
}

// checkContentSHA256 checks X-Amz-Content-Sha256, when present: it must be
// the hex SHA-256 of the body. The body is always signed; the values that
// announce an unsigned or streamed payload are refused.
func checkContentSHA256(r *http.Request, payloadHash []byte) *Error {
	vals := headerValues(r.Header, "x-amz-content-sha256")
	if vals == nil {
		return nil
	}
	if len(vals) == 1 && vals[0] == string(payloadHash) {
		return nil
	}
	if len(vals) == 1 && (vals[0] == "UNSIGNED-PAYLOAD" || strings.HasPrefix(vals[0], "STREAMING-")) {
		return newError(ErrPayloadHash, "X-Amz-Content-Sha256 "+quote(vals[0])+" is not accepted: this service requires a signed payload.")
	}
	return newError(ErrPayloadHash, "The provided 'x-amz-content-sha256' header does not match what was computed.")
}

// checkQueryAuth refuses query-string authentication parameters.
func checkQueryAuth(raw string) *Error {
	if !strings.Contains(raw, "-") && !strings.Contains(raw, "%") {
		return nil // fast path: every parameter name checked below has a '-'
	}
	params, _ := decodeQuery(raw) // undecodable queries fail later, in canonicalization
	for _, p := range params {
		switch {
		case strings.EqualFold(p.key, "X-Amz-Security-Token"):
			return newError(ErrSessionTokenRefused, "The security token included in the request is invalid.")
		case strings.EqualFold(p.key, "X-Amz-Signature"), strings.EqualFold(p.key, "X-Amz-Algorithm"),
			strings.EqualFold(p.key, "X-Amz-Credential"), strings.EqualFold(p.key, "X-Amz-SignedHeaders"):
			return malformed("Query-string authentication is not supported; sign the request with an Authorization header.")
		}
	}
	return nil
}

// decodeLowerHex decodes s, already checked to be len(dst)*2 lowercase hex
// digits, into dst.
func decodeLowerHex(dst []byte, s string) {
	val := func(c byte) byte {
		if c <= '9' {
			return c - '0'
		}
		return c - 'a' + 10
	}
	for i := range dst {
		dst[i] = val(s[2*i])<<4 | val(s[2*i+1])
	}
}
