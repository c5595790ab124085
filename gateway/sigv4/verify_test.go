package sigv4

import (
	"bytes"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// step is one part of how a test request is made.
type step struct {
	before   func(req *http.Request, p *signParams) // before signing
	after    func(req *http.Request)                // after signing, before sending
	verifier func(v *Verifier)
}

// verifyPair is a positive case and its negative twin: the twin is the
// positive case plus one change (twist), and must fail with want.
type verifyPair struct {
	name    string
	headers headerSet
	base    step
	neg     string // what the twist does
	twist   step
	want    error
}

func (c verifyPair) run(t *testing.T, mode string, steps ...step) outcome {
	t.Helper()
	v := newTestVerifier()
	for _, s := range steps {
		if s.verifier != nil {
			s.verifier(v)
		}
	}
	srv := startVerifyServer(t, v, mode)
	body := bytes.Clone(listKeysBody)
	req := newKMSRequest(t, srv.URL, c.headers, body)
	p := defaultSign(c.headers)
	for _, s := range steps {
		if s.before != nil {
			s.before(req, &p)
		}
	}
	sign(t, req, body, p)
	for _, s := range steps {
		if s.after != nil {
			s.after(req)
		}
	}
	o := srv.do(t, req)
	if wantMajor := map[string]int{"http": 1, "h2": 2}[mode]; o.req.ProtoMajor != wantMajor {
		t.Fatalf("request went over HTTP/%d, want HTTP/%d", o.req.ProtoMajor, wantMajor)
	}
	return o
}

func at(d time.Duration) func(*http.Request, *signParams) {
	return func(_ *http.Request, p *signParams) { p.at = testNow.Add(d) }
}

func setHeader(k string, vals ...string) func(*http.Request) {
	return func(req *http.Request) {
		req.Header.Del(k)
		for _, v := range vals {
			req.Header.Add(k, v)
		}
	}
}

func setHeaderBefore(k string, vals ...string) func(*http.Request, *signParams) {
	return func(req *http.Request, _ *signParams) { setHeader(k, vals...)(req) }
}

// sendChunked makes the client send the body with unknown length, which
// net/http's client sends as Transfer-Encoding: chunked over HTTP/1.1 and
// without Content-Length over HTTP/2.
func sendChunked(req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.GetBody = nil
	req.ContentLength = -1
}

var verifyPairs = []verifyPair{
	{
		name: "cli header set", headers: cliHeaders,
		neg:   "wrong secret",
		twist: step{before: func(_ *http.Request, p *signParams) { p.secret = otherSecret }},
		want:  ErrSignatureMismatch,
	},
	{
		name: "sdk header set", headers: sdkHeaders,
		neg:   "wrong secret",
		twist: step{before: func(_ *http.Request, p *signParams) { p.secret = otherSecret }},
		want:  ErrSignatureMismatch,
	},
	{
		name: "known access key", headers: cliHeaders,
		neg:   "unknown access key",
		twist: step{before: func(_ *http.Request, p *signParams) { p.akid = "AKIDNOBODYKNOWS01" }},
		want:  ErrUnknownAccessKey,
	},
	{
		name: "signed 4m59s ago", headers: sdkHeaders,
		base:  step{before: at(-(5*time.Minute - time.Second))},
		neg:   "signed 6 min ago",
		twist: step{before: at(-6 * time.Minute)},
		want:  ErrSignatureExpired,
	},
	{
		name: "signed 4m59s in the future", headers: sdkHeaders,
		base:  step{before: at(5*time.Minute - time.Second)},
		neg:   "signed 6 min in the future",
		twist: step{before: at(6 * time.Minute)},
		want:  ErrSignatureExpired,
	},
	{
		name: "signed exactly MaxSkew ago", headers: cliHeaders,
		base:  step{before: at(-5 * time.Minute)},
		neg:   "verifier MaxSkew 4m",
		twist: step{verifier: func(v *Verifier) { v.MaxSkew = 4 * time.Minute }},
		want:  ErrSignatureExpired,
	},
	{
		name: "x-amz-target as signed", headers: sdkHeaders,
		neg:   "x-amz-target changed after signing",
		twist: step{after: setHeader("X-Amz-Target", "TrentService.ScheduleKeyDeletion")},
		want:  ErrSignatureMismatch,
	},
	{
		name: "body as signed", headers: sdkHeaders,
		neg:   "body changed after signing (same length)",
		twist: step{after: func(req *http.Request) { setBody(req, []byte(`{"Limit":51}`)) }},
		want:  ErrSignatureMismatch,
	},
	{
		name: "body as signed, cli", headers: cliHeaders,
		neg:   "body changed after signing (other length)",
		twist: step{after: func(req *http.Request) { setBody(req, []byte(`{"Limit":1000}`)) }},
		want:  ErrSignatureMismatch,
	},
	{
		name: "host with port as signed", headers: cliHeaders,
		neg: "Host changed after signing (same server)",
		twist: step{after: func(req *http.Request) {
			req.Host = strings.Replace(req.URL.Host, "127.0.0.1", "localhost", 1)
		}},
		want: ErrSignatureMismatch,
	},
	{
		name: "host signed", headers: cliHeaders,
		neg:   "host not in SignedHeaders",
		twist: step{after: func(req *http.Request) { editAuthorization(req, replaceOnce("content-type;host;", "content-type;")) }},
		want:  ErrMalformedAuthorization,
	},
	{
		name: "x-amz-date signed", headers: cliHeaders,
		neg:   "x-amz-date not in SignedHeaders",
		twist: step{after: func(req *http.Request) { editAuthorization(req, replaceOnce(";x-amz-date;", ";")) }},
		want:  ErrMalformedAuthorization,
	},
	{
		name: "x-amz-date as signed", headers: sdkHeaders,
		neg:   "x-amz-date one second later after signing",
		twist: step{after: setHeader("X-Amz-Date", testNow.Add(time.Second).Format("20060102T150405Z"))},
		want:  ErrSignatureMismatch,
	},
	{
		name: "region as configured", headers: sdkHeaders,
		neg:   "signed for eu-west-1",
		twist: step{before: func(_ *http.Request, p *signParams) { p.region = "eu-west-1" }},
		want:  ErrCredentialScope,
	},
	{
		name: "verifier region", headers: sdkHeaders,
		neg:   "verifier configured for eu-west-1",
		twist: step{verifier: func(v *Verifier) { v.Region = "eu-west-1" }},
		want:  ErrCredentialScope,
	},
	{
		name: "service as configured", headers: cliHeaders,
		neg:   "signed for service sts",
		twist: step{before: func(_ *http.Request, p *signParams) { p.service = "sts" }},
		want:  ErrCredentialScope,
	},
	{
		name: "scope date is the request's", headers: cliHeaders,
		neg:   "scope date one day earlier",
		twist: step{after: func(req *http.Request) { editAuthorization(req, replaceOnce("/20261127/", "/20261126/")) }},
		want:  ErrCredentialScope,
	},
	{
		name: "signed headers all sent", headers: sdkHeaders,
		neg:   "x-amz-target removed after signing",
		twist: step{after: func(req *http.Request) { req.Header.Del("X-Amz-Target") }},
		want:  ErrSignedHeaderMissing,
	},
	{
		name: "sdk signed headers all sent", headers: sdkHeaders,
		neg:   "amz-sdk-request removed after signing",
		twist: step{after: func(req *http.Request) { req.Header.Del("Amz-Sdk-Request") }},
		want:  ErrSignedHeaderMissing,
	},
	{
		name: "signed content-length sent", headers: sdkHeaders,
		neg:   "body sent chunked without content-length",
		twist: step{after: sendChunked},
		want:  ErrSignedHeaderMissing,
	},
	{
		name: "unsigned length, body sent chunked", headers: cliHeaders,
		base:  step{after: sendChunked},
		neg:   "chunked body changed",
		twist: step{after: func(req *http.Request) { setBody(req, []byte(`{"Limit":51}`)); sendChunked(req) }},
		want:  ErrSignatureMismatch,
	},
	{
		name: "x-amz-content-sha256 of the body, sdk", headers: sdkHeaders,
		base: step{before: func(req *http.Request, _ *signParams) {
			req.Header.Set("X-Amz-Content-Sha256", hexSHA(listKeysBody))
		}},
		neg: "UNSIGNED-PAYLOAD",
		twist: step{before: func(req *http.Request, p *signParams) {
			req.Header.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
			p.payloadHash = "UNSIGNED-PAYLOAD"
		}},
		want: ErrPayloadHash,
	},
	{
		name: "x-amz-content-sha256 of the body, cli", headers: cliHeaders,
		base: step{before: func(req *http.Request, _ *signParams) {
			req.Header.Set("X-Amz-Content-Sha256", hexSHA(listKeysBody))
		}},
		neg: "x-amz-content-sha256 of another body, signed consistently",
		twist: step{before: func(req *http.Request, p *signParams) {
			req.Header.Set("X-Amz-Content-Sha256", hexSHA([]byte("{}")))
			p.payloadHash = hexSHA([]byte("{}"))
		}},
		want: ErrPayloadHash,
	},
	{
		name: "no session token", headers: sdkHeaders,
		neg:   "signed session token",
		twist: step{before: func(_ *http.Request, p *signParams) { p.token = "FwoGZXIvYXdzEBYaDHRlc3R0b2tlbg==" }},
		want:  ErrSessionTokenRefused,
	},
	{
		name: "unsigned header added after signing", headers: cliHeaders,
		base:  step{after: setHeader("X-Forwarded-For", "192.0.2.7")},
		neg:   "a signed custom header changed after signing",
		twist: step{before: setHeaderBefore("X-Custom", "a"), after: setHeader("X-Custom", "b")},
		want:  ErrSignatureMismatch,
	},
	{
		name: "values trimmed and inner spaces collapsed", headers: cliHeaders,
		base: step{
			before: setHeaderBefore("X-Custom", "  a   b  c  "),
			after:  setHeader("X-Custom", "a b c"), // same canonical value
		},
		neg:   "value re-spaced into other words",
		twist: step{after: setHeader("X-Custom", "ab c")},
		want:  ErrSignatureMismatch,
	},
	{
		name: "tab inside a value kept", headers: cliHeaders,
		base:  step{before: setHeaderBefore("X-Custom", "a\tb")},
		neg:   "tab replaced by a space",
		twist: step{after: setHeader("X-Custom", "a b")},
		want:  ErrSignatureMismatch,
	},
	{
		name: "multiple values joined with commas", headers: sdkHeaders,
		base:  step{before: setHeaderBefore("X-Custom", "1", "2")},
		neg:   "values reordered after signing",
		twist: step{after: setHeader("X-Custom", "2", "1")},
		want:  ErrSignatureMismatch,
	},
	{
		name: "empty header value signed", headers: cliHeaders,
		base:  step{before: setHeaderBefore("X-Empty", "")},
		neg:   "empty header dropped after signing",
		twist: step{after: func(req *http.Request) { req.Header.Del("X-Empty") }},
		want:  ErrSignedHeaderMissing,
	},
	{
		name: "query as signed", headers: cliHeaders,
		base:  step{before: func(req *http.Request, _ *signParams) { req.URL.RawQuery = "b=2&a=1&a=0&c=x+y&d=%7E%21" }},
		neg:   "query value changed after signing",
		twist: step{after: func(req *http.Request) { req.URL.RawQuery = strings.Replace(req.URL.RawQuery, "b=2", "b=3", 1) }},
		want:  ErrSignatureMismatch,
	},
	{
		name: "path as signed", headers: sdkHeaders,
		base:  step{before: func(req *http.Request, _ *signParams) { req.URL.Path = "/a b/ü/%x" }},
		neg:   "path changed after signing",
		twist: step{after: func(req *http.Request) { req.URL.Path = "/a b/ü/%y" }},
		want:  ErrSignatureMismatch,
	},
	{
		name: "authorization sent", headers: cliHeaders,
		neg:   "authorization removed",
		twist: step{after: func(req *http.Request) { req.Header.Del("Authorization") }},
		want:  ErrMissingAuthentication,
	},
	{
		name: "one authorization header", headers: cliHeaders,
		neg:   "authorization header sent twice",
		twist: step{after: func(req *http.Request) { req.Header.Add("Authorization", req.Header.Get("Authorization")) }},
		want:  ErrMalformedAuthorization,
	},
	{
		name: "header authorization", headers: cliHeaders,
		neg:   "presigned query parameters too",
		twist: step{after: func(req *http.Request) { req.URL.RawQuery = "X-Amz-Signature=" + strings.Repeat("0", 64) }},
		want:  ErrMalformedAuthorization,
	},
}

// TestVerifyPairs runs each positive case and its negative twin through a
// real HTTP/1.1 server and a real HTTP/2 (TLS) server, signed by
// aws-sdk-go-v2's signer.
func TestVerifyPairs(t *testing.T) {
	for _, mode := range []string{"http", "h2"} {
		t.Run(mode, func(t *testing.T) {
			for _, c := range verifyPairs {
				t.Run(c.name, func(t *testing.T) {
					t.Run("ok", func(t *testing.T) {
						o := c.run(t, mode, c.base)
						checkIdentity(t, o)
						// The client signed at least its usual header set, and
						// the result reports exactly what it signed.
						wantSigned := strings.Split(c.headers.signedHeaders(), ";")
						for _, h := range wantSigned {
							if !slices.Contains(o.res.SignedHeaders, h) {
								t.Errorf("signed headers %q lack %q", o.res.SignedHeaders, h)
							}
						}
						if got := "SignedHeaders=" + strings.Join(o.res.SignedHeaders, ";") + ","; !strings.Contains(o.req.Header.Get("Authorization"), got) {
							t.Errorf("Result.SignedHeaders %q differ from the Authorization header %q", o.res.SignedHeaders, o.req.Header.Get("Authorization"))
						}
						if !o.res.Date.Equal(mustAmzDate(t, o.req.Header.Get("X-Amz-Date"))) || o.res.Region != testRegion || o.res.Service != testService {
							t.Errorf("result = %+v", o.res)
						}
					})
					t.Run(c.neg, func(t *testing.T) {
						checkOutcome(t, c.run(t, mode, c.base, c.twist), c.want)
					})
				})
			}
		})
	}
}

func mustAmzDate(t *testing.T, s string) time.Time {
	t.Helper()
	tm, err := time.Parse("20060102T150405Z", s)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

// TestVerifyMalformedAuthorizationOverHTTP sends many malformed
// Authorization headers, each derived from a valid signed one, through a
// real server. The unmodified header is the positive twin.
func TestVerifyMalformedAuthorizationOverHTTP(t *testing.T) {
	v := newTestVerifier()
	srv := startVerifyServer(t, v, "http")
	valid := func(t *testing.T) (*http.Request, string) {
		body := bytes.Clone(listKeysBody)
		req := newKMSRequest(t, srv.URL, sdkHeaders, body)
		sign(t, req, body, defaultSign(sdkHeaders))
		return req, req.Header.Get("Authorization")
	}
	t.Run("valid", func(t *testing.T) {
		req, _ := valid(t)
		checkIdentity(t, srv.do(t, req))
	})
	for _, m := range authorizationMutations {
		t.Run(m.name, func(t *testing.T) {
			req, h := valid(t)
			req.Header.Set("Authorization", m.f(h))
			o := srv.do(t, req)
			checkOutcome(t, o, ErrMalformedAuthorization)
			if ErrorCode(o.err) != CodeIncompleteSignature {
				t.Fatalf("ErrorCode = %q", ErrorCode(o.err))
			}
		})
	}
}

// authorizationMutations turn a valid Authorization header (as the Go SDK
// formats it) into malformed ones.
var authorizationMutations = []struct {
	name string
	f    func(string) string
}{
	{"empty", func(string) string { return "" }},
	{"algorithm only", func(string) string { return "AWS4-HMAC-SHA256" }},
	{"algorithm and space", func(string) string { return "AWS4-HMAC-SHA256 " }},
	{"lowercase algorithm", replaceOnce("AWS4-HMAC-SHA256", "aws4-hmac-sha256")},
	{"sigv4a algorithm", replaceOnce("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256")},
	{"basic auth", func(string) string { return "Basic YWxhZGRpbjpvcGVuc2VzYW1l" }},
	{"no space after algorithm", replaceOnce("AWS4-HMAC-SHA256 ", "AWS4-HMAC-SHA256")},
	{"tab after algorithm", replaceOnce("AWS4-HMAC-SHA256 ", "AWS4-HMAC-SHA256\t")},
	{"missing credential", func(h string) string { return cutComponent(h, "Credential=") }},
	{"missing signed headers", func(h string) string { return cutComponent(h, "SignedHeaders=") }},
	{"missing signature", func(h string) string { return cutComponent(h, "Signature=") }},
	{"duplicate credential", func(h string) string { return h + ", " + component(h, "Credential=") }},
	{"duplicate signed headers", func(h string) string { return h + ", " + component(h, "SignedHeaders=") }},
	{"duplicate signature", func(h string) string { return h + ", " + component(h, "Signature=") }},
	{"duplicate identical components", func(h string) string {
		return h + ", " + component(h, "Signature=") + ", " + component(h, "Credential=")
	}},
	{"unknown component", func(h string) string { return h + ", Foo=bar" }},
	{"lowercase component name", replaceOnce("Signature=", "signature=")},
	{"space before equals", replaceOnce("Signature=", "Signature =")},
	{"empty component", replaceOnce(", SignedHeaders", ",, SignedHeaders")},
	{"trailing comma", func(h string) string { return h + "," }},
	{"component without value", func(h string) string { return h + ", Signature" }},
	{"empty signature", func(h string) string { return cutComponent(h, "Signature=") + ", Signature=" }},
	{"uppercase hex signature", func(h string) string { i := strings.Index(h, "Signature=") + 10; return h[:i] + strings.ToUpper(h[i:]) }},
	{"63 hex digits", func(h string) string { return h[:len(h)-1] }},
	{"65 hex digits", func(h string) string { return h + "0" }},
	{"non-hex signature", func(h string) string { return h[:len(h)-1] + "g" }},
	{"credential with 4 parts", replaceOnce("/aws4_request", "")},
	{"credential with 6 parts", replaceOnce("/aws4_request", "/aws4_request/x")},
	{"bad terminator", replaceOnce("/aws4_request", "/aws5_request")},
	{"empty access key", replaceOnce(testAKID+"/", "/")},
	{"access key with space", replaceOnce(testAKID, "AKID X")},
	{"bad scope date", replaceOnce("/20261127/", "/20261327/")},
	{"short scope date", replaceOnce("/20261127/", "/2026112/")},
	{"uppercase region", replaceOnce("/us-east-1/", "/US-EAST-1/")},
	{"empty service", replaceOnce("/kms/", "//")},
	{"unsorted signed headers", replaceOnce("content-type;host", "host;content-type")},
	{"duplicate signed header", replaceOnce("content-type;host", "content-type;host;host")},
	{"uppercase signed header", replaceOnce("content-type;host", "Content-Type;host")},
	{"empty signed header name", replaceOnce("content-type;host", "content-type;;host")},
	{"signed headers trailing semicolon", replaceOnce(", Signature=", ";, Signature=")},
	{"signed header with space", replaceOnce("content-type;host", "content type;host")},
	{"too long", func(h string) string { return h + ", Foo=" + strings.Repeat("x", maxAuthorizationLen) }},
}

// component returns the "Name=value" component of h.
func component(h, prefix string) string {
	i := strings.Index(h, prefix)
	rest := h[i:]
	if j := strings.Index(rest, ","); j >= 0 {
		rest = rest[:j]
	}
	return rest
}

// cutComponent removes the component starting with prefix from h.
func cutComponent(h, prefix string) string {
	c := component(h, prefix)
	h = strings.Replace(h, ", "+c, "", 1)
	return strings.Replace(h, c+", ", "", 1)
}
