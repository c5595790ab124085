package sigv4

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// signedServerRequest returns a server-side request (as net/http's server
// would hand it to a handler) for ListKeys, signed by aws-sdk-go-v2 with
// the SDK header set plus extra headers, and its body.
func signedServerRequest(t testing.TB, p signParams, extra ...[2]string) (*http.Request, []byte) {
	t.Helper()
	body := bytes.Clone(listKeysBody)
	client := newKMSRequest(t, "http://kms.hsmgate.test:8443", sdkHeaders, body)
	for _, h := range extra {
		client.Header.Add(h[0], h[1])
	}
	sign(t, client, body, p)
	r := httptest.NewRequest(client.Method, client.URL.String(), bytes.NewReader(body))
	r.Host = client.URL.Host
	for k, vs := range client.Header {
		r.Header[k] = vs
	}
	r.Header.Set("Content-Length", fmt.Sprint(len(body)))
	return r, body
}

func TestSignedServerRequestVerifies(t *testing.T) {
	r, body := signedServerRequest(t, defaultSign(sdkHeaders))
	res, err := newTestVerifier().Verify(r, body)
	checkIdentity(t, outcome{res: res, err: err})
	r.Header.Set("X-Amz-Target", "TrentService.Decrypt")
	res, err = newTestVerifier().Verify(r, body)
	checkOutcome(t, outcome{res: res, err: err}, ErrSignatureMismatch)
}

// TestContentLengthFromRequest: a hand-built request (httptest.NewRequest)
// has r.ContentLength but no Content-Length header; the signed
// content-length is then taken from r.ContentLength, and must match it.
func TestContentLengthFromRequest(t *testing.T) {
	for _, c := range []struct {
		name   string
		length int64
		want   error
	}{
		{"r.ContentLength as signed", int64(len(listKeysBody)), nil},
		{"r.ContentLength differs", int64(len(listKeysBody)) + 1, ErrSignatureMismatch},
		{"r.ContentLength unknown", -1, ErrSignedHeaderMissing},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, body := signedServerRequest(t, defaultSign(sdkHeaders))
			r.Header.Del("Content-Length")
			r.ContentLength = c.length
			res, err := newTestVerifier().Verify(r, body)
			checkOutcome(t, outcome{res: res, err: err}, c.want)
		})
	}
}

func TestMisconfiguredVerifier(t *testing.T) {
	r, body := signedServerRequest(t, defaultSign(sdkHeaders))
	for name, mutate := range map[string]func(*Verifier){
		"no region":        func(v *Verifier) { v.Region = "" },
		"no service":       func(v *Verifier) { v.Service = "" },
		"no lookup":        func(v *Verifier) { v.Lookup = nil },
		"negative skew":    func(v *Verifier) { v.MaxSkew = -time.Second },
		"working (contra)": func(*Verifier) {},
	} {
		t.Run(name, func(t *testing.T) {
			v := newTestVerifier()
			mutate(v)
			res, err := v.Verify(r, body)
			if name == "working (contra)" {
				checkIdentity(t, outcome{res: res, err: err})
				return
			}
			checkOutcome(t, outcome{res: res, err: err}, ErrMisconfigured)
			if ErrorCode(err) != CodeInternalFailure || HTTPStatus(err) != http.StatusInternalServerError {
				t.Fatalf("code %s status %d", ErrorCode(err), HTTPStatus(err))
			}
		})
	}
}

func TestLookupOutcomes(t *testing.T) {
	r, body := signedServerRequest(t, defaultSign(sdkHeaders))
	dbDown := errors.New("keystore: connection refused")
	for _, c := range []struct {
		name   string
		lookup Lookup
		want   error
	}{
		{"found", func(context.Context, string) (Credentials, error) {
			return Credentials{Secret: testSecret, Principal: testARN}, nil
		}, nil},
		{"unknown, wrapped", func(_ context.Context, id string) (Credentials, error) {
			return Credentials{}, fmt.Errorf("key %s: %w", id, ErrUnknownAccessKey)
		}, ErrUnknownAccessKey},
		{"keystore down", func(context.Context, string) (Credentials, error) {
			return Credentials{}, dbDown
		}, ErrLookupFailed},
		{"empty secret", func(context.Context, string) (Credentials, error) {
			return Credentials{Principal: testARN}, nil
		}, ErrLookupFailed},
		{"another key's credentials", func(context.Context, string) (Credentials, error) {
			return Credentials{AccessKeyID: "AKIDSOMEONEELSE01", Secret: testSecret, Principal: testARN}, nil
		}, ErrLookupFailed},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := newTestVerifier()
			v.Lookup = c.lookup
			res, err := v.Verify(r, body)
			if c.want == nil {
				checkIdentity(t, outcome{res: res, err: err})
				return
			}
			checkOutcome(t, outcome{res: res, err: err}, c.want)
			if c.name == "keystore down" {
				if !errors.Is(err, dbDown) || strings.Contains(err.Error(), "connection refused") {
					t.Fatalf("lookup error must be wrapped but not shown to the client: %v", err)
				}
			}
		})
	}
}

func TestLookupGetsRequestContext(t *testing.T) {
	type key struct{}
	r, body := signedServerRequest(t, defaultSign(sdkHeaders))
	r = r.WithContext(context.WithValue(r.Context(), key{}, "marker"))
	v := newTestVerifier()
	var seen any
	v.Lookup = func(ctx context.Context, id string) (Credentials, error) {
		seen = ctx.Value(key{})
		return staticLookup(testAKID, testSecret, testARN)(ctx, id)
	}
	if _, err := v.Verify(r, body); err != nil || seen != "marker" {
		t.Fatalf("err %v, context value %v", err, seen)
	}
}

// TestRefusedBeforeLookup checks that requests refused for their form never
// reach the Lookup.
func TestRefusedBeforeLookup(t *testing.T) {
	v := newTestVerifier()
	var calls atomic.Int32
	v.Lookup = func(ctx context.Context, id string) (Credentials, error) {
		calls.Add(1)
		return staticLookup(testAKID, testSecret, testARN)(ctx, id)
	}
	for name, mutate := range map[string]func(r *http.Request){
		"stale":               func(r *http.Request) { r.Header.Set("X-Amz-Date", "20261127T110000Z") },
		"session token":       func(r *http.Request) { r.Header.Set("X-Amz-Security-Token", "t") },
		"query session token": func(r *http.Request) { r.URL.RawQuery = "X-Amz-Security-Token=t" },
		"query signature":     func(r *http.Request) { r.URL.RawQuery = "x-amz-signature=0" },
		"missing header":      func(r *http.Request) { r.Header.Del("Amz-Sdk-Request") },
		"bad content sha":     func(r *http.Request) { r.Header.Set("X-Amz-Content-Sha256", strings.Repeat("0", 64)) },
		"two x-amz-date":      func(r *http.Request) { r.Header.Add("X-Amz-Date", "20261127T120000Z") },
		"bad x-amz-date":      func(r *http.Request) { r.Header.Set("X-Amz-Date", "2026-11-27T12:00:00Z") },
		"no date at all":      func(r *http.Request) { r.Header.Del("X-Amz-Date") },
		"undecodable query":   func(r *http.Request) { r.URL.RawQuery = "a=%zz" },
		"no host":             func(r *http.Request) { r.Host = "" },
	} {
		r, body := signedServerRequest(t, defaultSign(sdkHeaders))
		mutate(r)
		if res, err := v.Verify(r, body); err == nil || res != nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("Lookup called %d times", n)
	}
}

func TestErrorCodeTable(t *testing.T) {
	for _, c := range []struct {
		err    error
		code   string
		status int
	}{
		{nil, "", 0},
		{newError(ErrMissingAuthentication, "m"), "MissingAuthenticationTokenException", 400},
		{newError(ErrMalformedAuthorization, "m"), "IncompleteSignatureException", 400},
		{newError(ErrUnknownAccessKey, "m"), "UnrecognizedClientException", 400},
		{newError(ErrSessionTokenRefused, "m"), "UnrecognizedClientException", 400},
		{newError(ErrCredentialScope, "m"), "InvalidSignatureException", 400},
		{newError(ErrSignatureExpired, "m"), "InvalidSignatureException", 400},
		{newError(ErrSignedHeaderMissing, "m"), "InvalidSignatureException", 400},
		{newError(ErrPayloadHash, "m"), "InvalidSignatureException", 400},
		{newError(ErrSignatureMismatch, "m"), "InvalidSignatureException", 400},
		{newError(ErrLookupFailed, "m"), "InternalFailure", 500},
		{newError(ErrMisconfigured, "m"), "InternalFailure", 500},
		{fmt.Errorf("wrapped: %w", newError(ErrSignatureMismatch, "m")), "InvalidSignatureException", 400},
		{errors.New("foreign"), "InternalFailure", 500},
		{ErrSignatureMismatch, "InternalFailure", 500}, // a bare sentinel did not come from Verify
	} {
		if got := ErrorCode(c.err); got != c.code {
			t.Errorf("ErrorCode(%v) = %q, want %q", c.err, got, c.code)
		}
		if got := HTTPStatus(c.err); got != c.status {
			t.Errorf("HTTPStatus(%v) = %d, want %d", c.err, got, c.status)
		}
	}
	// Every sentinel is in the table.
	for _, s := range []error{ErrMissingAuthentication, ErrMalformedAuthorization, ErrUnknownAccessKey, ErrSessionTokenRefused,
		ErrCredentialScope, ErrSignatureExpired, ErrSignedHeaderMissing, ErrPayloadHash, ErrSignatureMismatch, ErrLookupFailed, ErrMisconfigured} {
		found := false
		for _, c := range codes {
			found = found || c.err == s
		}
		if !found {
			t.Errorf("%v has no AWS code", s)
		}
	}
}

func TestErrorMessages(t *testing.T) {
	verify := func(mutate func(*signParams, *Verifier), edit func(*http.Request)) *Error {
		t.Helper()
		p := defaultSign(sdkHeaders)
		v := newTestVerifier()
		mutate(&p, v)
		r, body := signedServerRequest(t, p)
		if edit != nil {
			edit(r)
		}
		_, err := v.Verify(r, body)
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("error %v", err)
		}
		assertNoSecrets(t, e)
		return e
	}
	for _, c := range []struct {
		name   string
		mutate func(*signParams, *Verifier)
		edit   func(*http.Request)
		want   string
	}{
		{"expired", func(p *signParams, _ *Verifier) { p.at = testNow.Add(-6 * time.Minute) }, nil,
			"Signature expired: 20261127T115400Z is now earlier than 20261127T115500Z (20261127T120000Z - 5 min.)"},
		{"not yet current", func(p *signParams, _ *Verifier) { p.at = testNow.Add(6 * time.Minute) }, nil,
			"Signature not yet current: 20261127T120600Z is still later than 20261127T120500Z (20261127T120000Z + 5 min.)"},
		{"odd skew", func(p *signParams, v *Verifier) { p.at = testNow.Add(-time.Minute); v.MaxSkew = 30 * time.Second }, nil,
			"(20261127T120000Z - 30s.)"},
		{"region", func(p *signParams, _ *Verifier) { p.region = "eu-west-1" }, nil,
			"Credential should be scoped to a valid region: expected 'us-east-1', not 'eu-west-1'."},
		{"service", func(p *signParams, _ *Verifier) { p.service = "sts" }, nil,
			"Credential should be scoped to correct service: expected 'kms', not 'sts'."},
		{"scope date", func(*signParams, *Verifier) {}, func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "/20261127/", "/20261126/", 1))
		}, "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '20261126' != '20261127', from '20261127T120000Z'."},
		{"missing header", func(*signParams, *Verifier) {}, func(r *http.Request) { r.Header.Del("Amz-Sdk-Request") },
			"signed header 'amz-sdk-request' is not present in the request"},
		{"unknown key", func(p *signParams, _ *Verifier) { p.akid = "AKIDNOBODY" }, nil,
			"The security token included in the request is invalid."},
		{"unsigned payload", func(*signParams, *Verifier) {}, func(r *http.Request) { r.Header.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD") },
			"X-Amz-Content-Sha256 'UNSIGNED-PAYLOAD' is not accepted"},
		{"mismatch", func(p *signParams, _ *Verifier) { p.secret = otherSecret }, nil,
			"The request signature we calculated does not match the signature you provided."},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := verify(c.mutate, c.edit)
			if !strings.Contains(e.Message, c.want) {
				t.Fatalf("message %q\nwant it to contain %q", e.Message, c.want)
			}
		})
	}

	t.Run("mismatch details", func(t *testing.T) {
		e := verify(func(p *signParams, _ *Verifier) { p.secret = otherSecret }, nil)
		if !strings.HasPrefix(e.CanonicalRequest, "POST\n/\n\namz-sdk-invocation-id:") ||
			!strings.HasSuffix(e.CanonicalRequest, "\n"+hexSHA(listKeysBody)) ||
			!strings.Contains(e.CanonicalRequest, "\nhost:kms.hsmgate.test:8443\n") {
			t.Fatalf("canonical request:\n%s", e.CanonicalRequest)
		}
		if !strings.HasPrefix(e.StringToSign, "AWS4-HMAC-SHA256\n20261127T120000Z\n20261127/us-east-1/kms/aws4_request\n") {
			t.Fatalf("string to sign:\n%s", e.StringToSign)
		}
		if m := e.AWSMessage(); !strings.Contains(m, e.CanonicalRequest) || !strings.Contains(m, e.StringToSign) {
			t.Fatalf("AWSMessage lacks the details: %s", m)
		}
		if strings.Contains(e.Error(), "\n") {
			t.Fatalf("Error() is multi-line: %q", e.Error())
		}
	})
}

func TestResultSignedHeaders(t *testing.T) {
	for _, n := range []int{0, 1, 2, 10} { // 7 to 17 signed headers: both sides of the inline array
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			var extra [][2]string
			for i := range n {
				extra = append(extra, [2]string{fmt.Sprintf("X-Extra-%02d", i), "v"})
			}
			r, body := signedServerRequest(t, defaultSign(sdkHeaders), extra...)
			res, err := newTestVerifier().Verify(r, body)
			checkIdentity(t, outcome{res: res, err: err})
			want := strings.Split(sdkHeaders.signedHeaders(), ";")
			for i := range n {
				want = append(want, fmt.Sprintf("x-extra-%02d", i))
			}
			if got := strings.Join(res.SignedHeaders, ";"); got != strings.Join(sortedCopy(want), ";") {
				t.Fatalf("SignedHeaders = %s", got)
			}
			if len(res.SignedHeaders) != cap(res.SignedHeaders) {
				t.Fatalf("len %d cap %d: appending would write into shared memory", len(res.SignedHeaders), cap(res.SignedHeaders))
			}
		})
	}
}

func sortedCopy(s []string) []string {
	c := append([]string(nil), s...)
	for i := range c {
		for j := i + 1; j < len(c); j++ {
			if c[j] < c[i] {
				c[i], c[j] = c[j], c[i]
			}
		}
	}
	return c
}

func TestKeyCache(t *testing.T) {
	t.Run("reuses, and notices a rotated secret", func(t *testing.T) {
		c := newKeyCache(4)
		k := keyCacheKey{"AKID", "20261127", "us-east-1", "kms"}
		a := c.signingKey(k, "s1")
		if a != deriveSigningKey("s1", "20261127", "us-east-1", "kms") || c.len() != 1 {
			t.Fatal("first derivation")
		}
		if c.signingKey(k, "s1") != a || c.len() != 1 {
			t.Fatal("second lookup")
		}
		b := c.signingKey(k, "s2")
		if b == a || b != deriveSigningKey("s2", "20261127", "us-east-1", "kms") || c.len() != 1 {
			t.Fatal("rotated secret served the old key")
		}
		other := keyCacheKey{"AKID", "20261128", "us-east-1", "kms"}
		if c.signingKey(other, "s2") == b {
			t.Fatal("another date served the same key")
		}
	})
	t.Run("bounded", func(t *testing.T) {
		c := newKeyCache(8)
		for i := range 100 {
			k := keyCacheKey{fmt.Sprint("AKID", i), "20261127", "us-east-1", "kms"}
			if c.signingKey(k, "s") != deriveSigningKey("s", "20261127", "us-east-1", "kms") {
				t.Fatal("wrong key")
			}
			if c.len() > 8 {
				t.Fatalf("cache grew to %d", c.len())
			}
		}
	})
	t.Run("verifier uses it with a rotated secret", func(t *testing.T) {
		secret := testSecret
		var mu sync.Mutex
		v := newTestVerifier()
		v.Lookup = func(context.Context, string) (Credentials, error) {
			mu.Lock()
			defer mu.Unlock()
			return Credentials{Secret: secret, Principal: testARN}, nil
		}
		r, body := signedServerRequest(t, defaultSign(sdkHeaders))
		if _, err := v.Verify(r, body); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		secret = otherSecret
		mu.Unlock()
		_, err := v.Verify(r, body)
		checkOutcome(t, outcome{err: err}, ErrSignatureMismatch)
	})
}

// TestConcurrentVerify runs Verify from many goroutines on one Verifier
// (for the race detector), mixing keys, dates and failures.
func TestConcurrentVerify(t *testing.T) {
	secrets := map[string]string{}
	for i := range 8 {
		secrets[fmt.Sprintf("AKIDCONCURRENT%02d", i)] = fmt.Sprintf("secret-%d", i)
	}
	v := &Verifier{
		Region: testRegion, Service: testService, KeyCacheSize: 4,
		Now: func() time.Time { return testNow },
		Lookup: func(_ context.Context, id string) (Credentials, error) {
			s, ok := secrets[id]
			if !ok {
				return Credentials{}, ErrUnknownAccessKey
			}
			return Credentials{AccessKeyID: id, Secret: s, Principal: "p-" + id}, nil
		},
	}
	type job struct {
		r    *http.Request
		body []byte
		want error
		akid string
	}
	var jobs []job
	for id, s := range secrets {
		for _, d := range []time.Duration{-4 * time.Minute, 0, 4 * time.Minute} { // crosses no day, but varies the request
			p := defaultSign(sdkHeaders)
			p.akid, p.secret, p.at = id, s, testNow.Add(d)
			r, body := signedServerRequest(t, p)
			jobs = append(jobs, job{r, body, nil, id})
			p.secret = "wrong"
			r, body = signedServerRequest(t, p)
			jobs = append(jobs, job{r, body, ErrSignatureMismatch, id})
		}
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				j := jobs[(g*31+i)%len(jobs)]
				res, err := v.Verify(j.r, j.body)
				if j.want == nil {
					if err != nil || res.AccessKeyID != j.akid || res.Principal != "p-"+j.akid {
						t.Errorf("%s: %v %+v", j.akid, err, res)
						return
					}
				} else if !errors.Is(err, j.want) || res != nil {
					t.Errorf("%s: got %v, want %v", j.akid, err, j.want)
					return
				}
			}
		})
	}
	wg.Wait()
}
