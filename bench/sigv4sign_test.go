package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/hsmgate/hsmgate/gateway/sigv4"
)

func newKMSRequest(t testing.TB, endpoint string, body []byte) *http.Request {
	t.Helper()
	r, err := http.NewRequest(http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Content-Type", "application/x-amz-json-1.1")
	r.Header.Set("X-Amz-Target", "TrentService.Encrypt")
	return r
}

// sdkSign signs a copy of r with aws-sdk-go-v2's signer and returns its
// Authorization header.
func sdkSign(t *testing.T, r *http.Request, body []byte, s *Signer, now time.Time) (auth, date, token string) {
	t.Helper()
	c := r.Clone(context.Background())
	for _, h := range []string{"Authorization", "X-Amz-Date", "X-Amz-Security-Token"} {
		c.Header.Del(h)
	}
	// The SDK also signs content-length when it is known; this signer does
	// not (the KMS protocol does not ask for it), so hide it.
	c.ContentLength = 0
	sum := sha256.Sum256(body)
	creds := aws.Credentials{AccessKeyID: s.AccessKeyID, SecretAccessKey: s.Secret, SessionToken: s.SessionToken}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, c, hex.EncodeToString(sum[:]), s.Service, s.Region, now); err != nil {
		t.Fatal(err)
	}
	return c.Header.Get("Authorization"), c.Header.Get("X-Amz-Date"), c.Header.Get("X-Amz-Security-Token")
}

func TestSignerMatchesSDK(t *testing.T) {
	signers := []*Signer{
		{AccessKeyID: "AKIDEXAMPLE", Secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", Region: "eu-west-1", Service: "kms"},
		{AccessKeyID: "ASIAEXAMPLE", Secret: "secret", SessionToken: "FwoGZXIvYXdzEJr//////////wEaDH  token+/=", Region: "us-east-1", Service: "kms"},
	}
	bodies := [][]byte{nil, []byte(`{}`), []byte(`{"KeyId":"alias/x","Plaintext":"aGVsbG8="}`), bytes.Repeat([]byte("x"), 6000)}
	endpoints := []string{"https://127.0.0.1:8443/", "https://kms.eu-west-1.amazonaws.com", "http://localhost:4566/"}
	times := []time.Time{
		time.Date(2015, 8, 30, 12, 36, 0, 0, time.UTC),
		time.Date(2026, 1, 31, 23, 59, 59, 0, time.UTC),
		time.Date(2026, 2, 1, 0, 0, 1, 0, time.FixedZone("CET", 3600)), // the day in UTC is the day before
	}
	n := 0
	for _, s := range signers {
		for _, body := range bodies {
			for _, ep := range endpoints {
				for _, now := range times {
					r := newKMSRequest(t, ep, body)
					s.Sign(r, body, now)
					auth, date, token := sdkSign(t, r, body, s, now)
					if got := r.Header.Get("Authorization"); got != auth {
						t.Fatalf("%s %s %v body %d:\n got %s\nwant %s", s.AccessKeyID, ep, now, len(body), got, auth)
					}
					if got := r.Header.Get("X-Amz-Date"); got != date {
						t.Fatalf("X-Amz-Date %q, SDK %q", got, date)
					}
					if got := r.Header.Get("X-Amz-Security-Token"); got != token {
						t.Fatalf("X-Amz-Security-Token %q, SDK %q", got, token)
					}
					n++
				}
			}
		}
	}
	// Re-signing a signed request replaces the signature (headers reused).
	s := signers[0]
	r := newKMSRequest(t, endpoints[0], nil)
	s.Sign(r, nil, times[0])
	s.Sign(r, []byte("other"), times[1])
	if auth, _, _ := sdkSign(t, r, []byte("other"), s, times[1]); r.Header.Get("Authorization") != auth || len(r.Header["Authorization"]) != 1 {
		t.Fatalf("re-signed: %v", r.Header)
	}
	t.Logf("%d signatures equal the SDK's", n)
}

// TestSignerVector checks the get-vanilla case of AWS's SigV4 test suite.
func TestSignerVector(t *testing.T) {
	r, _ := http.NewRequest(http.MethodGet, "https://example.amazonaws.com/", nil)
	s := &Signer{AccessKeyID: "AKIDEXAMPLE", Secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", Region: "us-east-1", Service: "service"}
	s.Sign(r, nil, time.Date(2015, 8, 30, 12, 36, 0, 0, time.UTC))
	const want = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
	if got := r.Header.Get("Authorization"); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

func TestSignerCachesTheDaysKey(t *testing.T) {
	s := &Signer{AccessKeyID: "AKID", Secret: "secret", Region: "eu-west-1", Service: "kms"}
	day1 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	r := newKMSRequest(t, "https://127.0.0.1:8443/", nil)
	s.Sign(r, nil, day1)
	k1 := s.key.Load()
	s.Sign(r, nil, day1.Add(time.Hour))
	if s.key.Load() != k1 {
		t.Fatal("the same day's key was derived again")
	}
	s.Sign(r, nil, day1.Add(24*time.Hour))
	if k2 := s.key.Load(); k2 == k1 || string(k2.date[:]) != "20260302" {
		t.Fatal("the next day's key was not derived")
	}
	// A changed secret is not signed with the old key.
	s.Secret = "other"
	s.Sign(r, nil, day1.Add(24*time.Hour))
	auth, _, _ := sdkSign(t, r, nil, s, day1.Add(24*time.Hour))
	if r.Header.Get("Authorization") != auth {
		t.Fatal("signed with the old secret's key")
	}
}

func TestSignerIsAccepted(t *testing.T) {
	now := time.Now()
	creds := map[string]string{"AKIABENCH": "bench-secret"}
	v := &sigv4.Verifier{Region: "eu-west-1", Service: "kms", Now: func() time.Time { return now },
		Lookup: func(_ context.Context, akid string) (sigv4.Credentials, error) {
			secret, ok := creds[akid]
			if !ok {
				return sigv4.Credentials{}, fmt.Errorf("%w: %s", sigv4.ErrUnknownAccessKey, akid)
			}
			return sigv4.Credentials{AccessKeyID: akid, Secret: secret, Principal: "bench"}, nil
		}}
	s := &Signer{AccessKeyID: "AKIABENCH", Secret: "bench-secret", Region: "eu-west-1", Service: "kms"}
	body := []byte(`{"KeyId":"alias/bench","Plaintext":"aGVsbG8gaHNt"}`)

	r := newKMSRequest(t, "https://127.0.0.1:8443/", body)
	s.Sign(r, body, now)
	res, err := v.Verify(r, body)
	if err != nil {
		t.Fatalf("the gateway's verifier refused the signature: %v", err)
	}
	if res.Principal != "bench" || strings.Join(res.SignedHeaders, ";") != "content-type;host;x-amz-date;x-amz-target" {
		t.Fatalf("result %+v", res)
	}

	changed := append(bytes.Clone(body[:len(body)-2]), `X"}`...)
	if _, err := v.Verify(r, changed); !errors.Is(err, sigv4.ErrSignatureMismatch) {
		t.Fatalf("a changed body: %v, want a signature mismatch", err)
	}
	r.Header.Set("X-Amz-Target", "TrentService.Decrypt")
	if _, err := v.Verify(r, body); !errors.Is(err, sigv4.ErrSignatureMismatch) {
		t.Fatalf("a changed target: %v, want a signature mismatch", err)
	}

	wrong := &Signer{AccessKeyID: "AKIABENCH", Secret: "not-the-secret", Region: "eu-west-1", Service: "kms"}
	r = newKMSRequest(t, "https://127.0.0.1:8443/", body)
	wrong.Sign(r, body, now)
	if _, err := v.Verify(r, body); !errors.Is(err, sigv4.ErrSignatureMismatch) {
		t.Fatalf("a wrong secret: %v", err)
	}

	// hsmgate issues no session tokens and refuses a request that carries
	// one: the token is sent.
	tok := &Signer{AccessKeyID: "AKIABENCH", Secret: "bench-secret", SessionToken: "tok", Region: "eu-west-1", Service: "kms"}
	r = newKMSRequest(t, "https://127.0.0.1:8443/", body)
	tok.Sign(r, body, now)
	if _, err := v.Verify(r, body); !errors.Is(err, sigv4.ErrSessionTokenRefused) {
		t.Fatalf("with a session token: %v, want it refused", err)
	}
}

func TestSignerAllocations(t *testing.T) {
	s := &Signer{AccessKeyID: "AKIABENCH", Secret: "bench-secret", Region: "eu-west-1", Service: "kms"}
	body := bytes.Repeat([]byte("b"), 200)
	r := newKMSRequest(t, "https://127.0.0.1:8443/", body)
	now := time.Now()
	s.Sign(r, body, now) // derives the key, creates the header slices
	allocs := testing.AllocsPerRun(200, func() { s.Sign(r, body, now) })
	// The X-Amz-Date and Authorization strings.
	if allocs > 2 {
		t.Fatalf("Sign allocates %v times per call, want at most 2", allocs)
	}
}

func BenchmarkSigner(b *testing.B) {
	s := &Signer{AccessKeyID: "AKIABENCH", Secret: "bench-secret", Region: "eu-west-1", Service: "kms"}
	body := bytes.Repeat([]byte("b"), 200)
	r := newKMSRequest(b, "https://127.0.0.1:8443/", body)
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		s.Sign(r, body, now)
	}
}
