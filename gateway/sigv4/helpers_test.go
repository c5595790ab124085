package sigv4

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

const (
	testRegion  = "us-east-1"
	testService = "kms"
	testAKID    = "AKIDHSMGATETEST01"
	testSecret  = "hsmgate/test+secret/0123456789abcdefghij"
	otherSecret = "hsmgate/test+secret/0123456789abcdefghiX"
	testARN     = "arn:aws:iam::111122223333:user/alice"
)

// testNow is the verifier's clock in the tests that inject one.
var testNow = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func hexSHA(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// staticLookup knows exactly one key.
func staticLookup(akid, secret, principal string) Lookup {
	return func(_ context.Context, id string) (Credentials, error) {
		if id != akid {
			return Credentials{}, ErrUnknownAccessKey
		}
		return Credentials{AccessKeyID: akid, Secret: secret, Principal: principal}, nil
	}
}

// newTestVerifier returns a verifier for testRegion/testService that knows
// testAKID with testSecret, with the clock fixed at testNow.
func newTestVerifier() *Verifier {
	return &Verifier{
		Region:  testRegion,
		Service: testService,
		Lookup:  staticLookup(testAKID, testSecret, testARN),
		Now:     func() time.Time { return testNow },
	}
}

// outcome is what the server-side handler saw.
type outcome struct {
	res *Result
	err error
	req *http.Request // the server's request (headers, Host, lengths), body consumed
}

// verifyServer is an httptest server whose handler reads the body, runs
// Verify and reports the outcome. It answers like the gateway will: 200
// with a ListKeys body, or the AWS JSON error.
type verifyServer struct {
	*httptest.Server
	v        *Verifier
	outcomes chan outcome
}

func startVerifyServer(t testing.TB, v *Verifier, mode string) *verifyServer {
	t.Helper()
	s := &verifyServer{v: v, outcomes: make(chan outcome, 16)}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.handle))
	switch mode {
	case "http":
		s.Start()
	case "tls":
		s.StartTLS()
	case "h2":
		s.EnableHTTP2 = true
		s.StartTLS()
	default:
		t.Fatalf("unknown server mode %q", mode)
	}
	t.Cleanup(s.Close)
	return s
}

func (s *verifyServer) handle(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	res, verr := s.v.Verify(r, body)
	s.outcomes <- outcome{res: res, err: verr, req: r}
	writeAWSResponse(w, verr)
}

func writeAWSResponse(w http.ResponseWriter, verr error) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("x-amzn-RequestId", "5f2c7a8e-0d6e-4c59-9a55-1f7c1e0b9d42")
	if verr != nil {
		w.WriteHeader(HTTPStatus(verr))
		msg := verr.Error()
		var e *Error
		if errors.As(verr, &e) {
			msg = e.AWSMessage()
		}
		json.NewEncoder(w).Encode(map[string]string{"__type": ErrorCode(verr), "message": msg})
		return
	}
	io.WriteString(w, `{"Keys":[],"Truncated":false}`)
}

// do sends req and returns the server-side outcome.
func (s *verifyServer) do(t testing.TB, req *http.Request) outcome {
	t.Helper()
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatalf("sending request: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	select {
	case o := <-s.outcomes:
		return o
	default:
		t.Fatalf("handler did not run (HTTP %d)", resp.StatusCode)
		return outcome{}
	}
}

// headerSet is which headers a client puts on a KMS request and signs.
type headerSet int

const (
	// cliHeaders is what the AWS CLI (botocore) signs for KMS:
	// content-type;host;x-amz-date;x-amz-target.
	cliHeaders headerSet = iota
	// sdkHeaders is what aws-sdk-go-v2 signs: amz-sdk-invocation-id;
	// amz-sdk-request;content-length;content-type;host;x-amz-date;x-amz-target.
	sdkHeaders
)

func (h headerSet) signedHeaders() string {
	if h == cliHeaders {
		return "content-type;host;x-amz-date;x-amz-target"
	}
	return "amz-sdk-invocation-id;amz-sdk-request;content-length;content-type;host;x-amz-date;x-amz-target"
}

var listKeysBody = []byte(`{"Limit":50}`)

// newKMSRequest builds a ListKeys request to base with the header set hs
// (not yet signed).
func newKMSRequest(t testing.TB, base string, hs headerSet, body []byte) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", "TrentService.ListKeys")
	if hs == sdkHeaders {
		req.Header.Set("Amz-Sdk-Invocation-Id", "8d2f0a8c-3b0e-4a57-b1a4-2c5f3f2f7c0e")
		req.Header.Set("Amz-Sdk-Request", "attempt=1; max=3")
	}
	return req
}

// signParams is how a test request is signed.
type signParams struct {
	akid, secret, token string
	region, service     string
	at                  time.Time
	payloadHash         string // "" means the SHA-256 of body
	signContentLength   bool   // sign content-length (the Go SDK does; the CLI does not)
}

func defaultSign(hs headerSet) signParams {
	return signParams{
		akid: testAKID, secret: testSecret, region: testRegion, service: testService,
		at: testNow, signContentLength: hs == sdkHeaders,
	}
}

// sign signs req with aws-sdk-go-v2's v4.Signer. The SDK signer signs
// content-length whenever req.ContentLength > 0; to reproduce the CLI's
// header set the length is hidden from it and restored afterwards, so the
// transport still sends Content-Length (unsigned).
func sign(t testing.TB, req *http.Request, body []byte, p signParams) {
	t.Helper()
	cl := req.ContentLength
	if !p.signContentLength {
		req.ContentLength = 0
	}
	ph := p.payloadHash
	if ph == "" {
		ph = hexSHA(body)
	}
	creds := aws.Credentials{AccessKeyID: p.akid, SecretAccessKey: p.secret, SessionToken: p.token}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, ph, p.service, p.region, p.at); err != nil {
		t.Fatal(err)
	}
	req.ContentLength = cl
}

// setBody replaces req's body (after signing, to tamper with it).
func setBody(req *http.Request, body []byte) {
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	req.ContentLength = int64(len(body))
}

// editAuthorization rewrites the Authorization header of a signed request.
func editAuthorization(req *http.Request, f func(string) string) {
	req.Header.Set("Authorization", f(req.Header.Get("Authorization")))
}

func replaceOnce(old, new string) func(string) string {
	return func(s string) string {
		if !strings.Contains(s, old) {
			panic("replaceOnce: " + old + " not in " + s)
		}
		return strings.Replace(s, old, new, 1)
	}
}

// checkOutcome compares an outcome with the expected sentinel (nil for
// success), and checks that a refusal is an *Error that shows no secret.
func checkOutcome(t *testing.T, o outcome, want error) {
	t.Helper()
	if want == nil {
		if o.err != nil {
			var e *Error
			if errors.As(o.err, &e) && e.CanonicalRequest != "" {
				t.Logf("server canonical request:\n%s", e.CanonicalRequest)
			}
			t.Fatalf("Verify: unexpected error %v", o.err)
		}
		if o.res == nil {
			t.Fatal("Verify returned neither result nor error")
		}
		if o.res.AccessKeyID == "" || o.res.Principal == "" || len(o.res.SignedHeaders) == 0 || o.res.Date.IsZero() {
			t.Fatalf("incomplete result %+v", o.res)
		}
		return
	}
	if o.res != nil {
		t.Fatalf("Verify returned a result together with or instead of error %v", want)
	}
	if !errors.Is(o.err, want) {
		t.Fatalf("Verify error = %v, want %v", o.err, want)
	}
	var e *Error
	if !errors.As(o.err, &e) {
		t.Fatalf("Verify error %T is not *Error", o.err)
	}
	assertNoSecrets(t, e)
}

// assertNoSecrets checks that an error shows neither secret nor anything
// derived from it.
func assertNoSecrets(t *testing.T, e *Error) {
	t.Helper()
	for _, s := range []string{e.Error(), e.AWSMessage(), e.CanonicalRequest, e.StringToSign} {
		for _, secret := range []string{testSecret, otherSecret} {
			if strings.Contains(s, secret) {
				t.Fatalf("error text contains a secret: %q", s)
			}
		}
		if e.StringToSign != "" {
			// The signature the server expected, under either secret.
			for _, secret := range []string{testSecret, otherSecret} {
				if want := expectedSignature(secret, e.StringToSign); strings.Contains(s, want) {
					t.Fatalf("error text contains the expected signature")
				}
			}
		}
	}
}

// expectedSignature computes the signature of a string to sign with the
// standard library's HMAC, independently of the package's code.
func expectedSignature(secret, stringToSign string) string {
	lines := strings.Split(stringToSign, "\n")
	if len(lines) != 4 {
		return "<bad string to sign>"
	}
	scope := strings.Split(lines[2], "/")
	k := []byte("AWS4" + secret)
	for _, part := range scope {
		k = hmacStd(k, part)
	}
	return hex.EncodeToString(hmacStd(k, stringToSign))
}

func hmacStd(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// checkIdentity checks that o is a success for the test key.
func checkIdentity(t *testing.T, o outcome) {
	t.Helper()
	checkOutcome(t, o, nil)
	if o.res.AccessKeyID != testAKID || o.res.Principal != testARN {
		t.Fatalf("identity = %q/%q, want %q/%q", o.res.AccessKeyID, o.res.Principal, testAKID, testARN)
	}
}
