package sigv4

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// BenchmarkVerify measures Verify on a ListKeys request carrying the Go
// SDK's header set, with the signing key cached (the steady state).
func BenchmarkVerify(b *testing.B) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	creds := map[string]Credentials{"AKIDBENCH": {Secret: "benchsecret", Principal: "bench"}}
	v := &Verifier{Region: "us-east-1", Service: "kms", Now: func() time.Time { return now },
		Lookup: func(_ context.Context, id string) (Credentials, error) {
			c, ok := creds[id]
			if !ok {
				return Credentials{}, ErrUnknownAccessKey
			}
			return c, nil
		}}
	body := []byte(`{"Limit":100}`)
	r := httptest.NewRequest(http.MethodPost, "http://kms.example.com:8443/", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/x-amz-json-1.1")
	r.Header.Set("X-Amz-Target", "TrentService.ListKeys")
	r.Header.Set("Amz-Sdk-Invocation-Id", "0b7b1f2e-7d55-4d8f-8c1e-6a2f7a9d3c11")
	r.Header.Set("Amz-Sdk-Request", "attempt=1; max=3")
	r.Header.Set("User-Agent", "aws-sdk-go-v2/1.48.0 os/linux lang/go#1.26 md/GOOS#linux md/GOARCH#amd64 api/kms#1.62.6")
	err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: "AKIDBENCH", SecretAccessKey: "benchsecret"},
		r, hexSHA(body), "kms", "us-east-1", now)
	if err != nil {
		b.Fatal(err)
	}
	r.Header.Set("Content-Length", "13") // as net/http's server leaves it
	if _, err := v.Verify(r, body); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(r, body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDeriveSigningKey is what a key cache miss adds to a Verify.
func BenchmarkDeriveSigningKey(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		deriveSigningKey("benchsecret", "20261127", "us-east-1", "kms")
	}
}
