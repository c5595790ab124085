package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/aws/smithy-go"

	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/hsmpool"
	"github.com/hsmgate/hsmgate/internal/gatewaytest"
)

const (
	kmsTestRegion  = "eu-west-1"
	kmsTestAccount = "111122223333"
)

// kmsTestGateway is a real gateway serving HTTPS on loopback, on a 2-token
// SoftHSM pool.
type kmsTestGateway struct {
	url   string
	admin *gateway.AdminCredentials
}

func startKMSTestGateway(t *testing.T) *kmsTestGateway {
	t.Helper()
	g := gatewaytest.Start(t, 2, kmsTestRegion)
	return &kmsTestGateway{url: g.URL, admin: g.Admin}
}

func (g *kmsTestGateway) sigv4Config() KMSConfig {
	return KMSConfig{Endpoint: g.url, Region: kmsTestRegion, AccessKeyID: g.admin.AccessKeyID,
		SecretAccessKey: g.admin.SecretAccessKey, CABundle: g.admin.CABundle, MaxConns: 16}
}

func (g *kmsTestGateway) mtlsConfig() KMSConfig {
	return KMSConfig{Endpoint: g.url, CABundle: g.admin.CABundle, ClientCert: g.admin.ClientCert, ClientKey: g.admin.ClientKey}
}

// allOps is a workload of every operation.
func allOps(payload int, signSpec, signAlg, macSpec string) *Workload {
	w := &Workload{PayloadSize: payload, SignKeySpec: signSpec, SigningAlgorithm: signAlg, MacKeySpec: macSpec, CheckEvery: 1}
	for _, op := range AllOps {
		w.Mix = append(w.Mix, Weighted{Op: op, Weight: 1})
	}
	return w
}

// exerciseTarget prepares tgt for w and runs every operation n times with
// check, then a few concurrent callers on the mix.
func exerciseTarget(t *testing.T, tgt Target, w *Workload, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := tgt.Prepare(ctx, w); err != nil {
		t.Fatalf("prepare: %v (code %s)", err, ErrorCode(err))
	}
	for _, op := range AllOps {
		for i := range n {
			if err := tgt.Do(ctx, op, true); err != nil {
				t.Fatalf("%s #%d: %v (code %s)", op, i, err, ErrorCode(err))
			}
			if err := tgt.Do(ctx, op, false); err != nil {
				t.Fatalf("%s #%d unchecked: %v (code %s)", op, i, err, ErrorCode(err))
			}
		}
	}
	p := NewPicker(w.Mix)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 7))
			for i := range 10 {
				op := p.Pick(r)
				if err := tgt.Do(ctx, op, i%2 == 0); err != nil {
					errs <- fmt.Errorf("%s: %w", op, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent calls: %v (code %s)", err, ErrorCode(err))
	}
}

func TestKMSTargetsAgainstGateway(t *testing.T) {
	g := startKMSTestGateway(t)
	targets := []struct {
		name string
		new  func(KMSConfig) (Target, error)
		cfg  KMSConfig
	}{
		{"sdk/sigv4", NewSDKTarget, g.sigv4Config()},
		{"sdk/mtls", NewSDKTarget, g.mtlsConfig()},
		{"lean/sigv4", NewLeanTarget, g.sigv4Config()},
		{"lean/mtls", NewLeanTarget, g.mtlsConfig()},
	}
	for _, tc := range targets {
		t.Run(tc.name, func(t *testing.T) {
			tgt, err := tc.new(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer tgt.Close()
			client := tc.name[:len(tc.name)-len("/sigv4")]
			if tc.name[len(tc.name)-4:] == "mtls" {
				client = tc.name[:len(tc.name)-len("/mtls")]
			}
			if tgt.Name() != g.url || tgt.Client() != client {
				t.Fatalf("Name %q Client %q", tgt.Name(), tgt.Client())
			}
			exerciseTarget(t, tgt, allOps(32, "", "", ""), 2)
			// The request bodies of Encrypt, Sign and GenerateMac of
			// 1 KiB stay under the 4 KiB at which the SDK is known to
			// drop connections (see NewSDKTarget).
			exerciseTarget(t, tgt, allOps(1024, "ECC_NIST_P384", "", "HMAC_512"), 1)
		})
	}
	t.Run("lean/rsa-4096-payload", func(t *testing.T) {
		tgt, err := NewLeanTarget(g.sigv4Config())
		if err != nil {
			t.Fatal(err)
		}
		defer tgt.Close()
		exerciseTarget(t, tgt, allOps(4096, "RSA_2048", "", "HMAC_224"), 1)
		exerciseTarget(t, tgt, allOps(17, "RSA_2048", "RSASSA_PKCS1_V1_5_SHA_384", "HMAC_384"), 1)
	})
	t.Run("sdk/rsa", func(t *testing.T) {
		tgt, err := NewSDKTarget(g.mtlsConfig())
		if err != nil {
			t.Fatal(err)
		}
		defer tgt.Close()
		exerciseTarget(t, tgt, allOps(100, "RSA_2048", "RSASSA_PSS_SHA_512", ""), 1)
	})
}

func TestKMSTargetErrors(t *testing.T) {
	g := startKMSTestGateway(t)
	ctx := context.Background()
	for _, c := range []struct {
		client string
		new    func(KMSConfig) (Target, error)
	}{{"sdk", NewSDKTarget}, {"lean", NewLeanTarget}} {
		t.Run(c.client, func(t *testing.T) {
			// An unknown access key and a wrong secret.
			unknown := g.sigv4Config()
			unknown.AccessKeyID = "AKIAUNKNOWNKEY000000"
			wrongSecret := g.sigv4Config()
			wrongSecret.SecretAccessKey += "x"
			for name, cfg := range map[string]KMSConfig{"unknown key": unknown, "wrong secret": wrongSecret} {
				tgt, err := c.new(cfg)
				if err != nil {
					t.Fatal(err)
				}
				err = tgt.Prepare(ctx, &Workload{})
				code := ErrorCode(err)
				if name == "unknown key" && code != "UnrecognizedClientException" && code != "AccessDeniedException" {
					t.Errorf("%s: %v (code %q)", name, err, code)
				}
				if name == "wrong secret" && code != "InvalidSignatureException" {
					t.Errorf("%s: %v (code %q)", name, err, code)
				}
				if code := ErrorCode(tgt.Do(ctx, OpEncrypt, false)); code != ErrorCode(err) {
					t.Errorf("%s: Do gave code %q, Prepare %q", name, code, ErrorCode(err))
				}
				tgt.Close()
			}

			tgt, err := c.new(g.sigv4Config())
			if err != nil {
				t.Fatal(err)
			}
			defer tgt.Close()
			if err := tgt.Prepare(ctx, allOps(64, "", "", "")); err != nil {
				t.Fatal(err)
			}
			kt := tgt.(*kmsTarget)

			// A tampered signature: the KMS refuses it, which a check
			// reports as a wrong result.
			good := kt.signature
			kt.signature = append([]byte(nil), good...)
			kt.signature[len(kt.signature)-3] ^= 0x40
			if code := ErrorCode(tgt.Do(ctx, OpVerify, true)); code != CodeWrongResult {
				t.Errorf("Verify of a tampered signature, checked: code %q", code)
			}
			if code := ErrorCode(tgt.Do(ctx, OpVerify, false)); code != "KMSInvalidSignatureException" {
				t.Errorf("Verify of a tampered signature, unchecked: code %q", code)
			}
			kt.signature = good

			// A decryption compared with the wrong bytes.
			payload := kt.payload
			kt.payload = append([]byte(nil), payload...)
			kt.payload[0] ^= 1
			for _, op := range []Op{OpDecrypt} {
				err := tgt.Do(ctx, op, true)
				if ErrorCode(err) != CodeWrongResult || !errors.Is(err, ErrWrongResult) {
					t.Errorf("%s against wrong bytes: %v (code %q)", op, err, ErrorCode(err))
				}
				if err := tgt.Do(ctx, op, false); err != nil {
					t.Errorf("%s unchecked: %v", op, err)
				}
			}
			kt.payload = payload

			// A ciphertext that does not decrypt: an API error unchecked.
			ct := kt.ciphertext
			kt.ciphertext = append([]byte(nil), ct...)
			kt.ciphertext[len(ct)-1] ^= 1
			if code := ErrorCode(tgt.Do(ctx, OpDecrypt, true)); code != "InvalidCiphertextException" {
				t.Errorf("Decrypt of a tampered ciphertext: code %q", code)
			}
			kt.ciphertext = ct

			// A context that has ended is a timeout, whatever the client
			// made of it.
			dead, cancel := context.WithTimeout(ctx, -time.Second)
			defer cancel()
			if code := ErrorCode(tgt.Do(dead, OpEncrypt, true)); code != CodeTimeout {
				t.Errorf("expired context: code %q", code)
			}
			short, cancel2 := context.WithTimeout(ctx, time.Millisecond)
			defer cancel2()
			time.Sleep(2 * time.Millisecond)
			if code := ErrorCode(tgt.Do(short, OpSign, false)); code != CodeTimeout {
				t.Errorf("short context: code %q", code)
			}
			if err := tgt.Do(ctx, OpEncrypt, true); err != nil {
				t.Errorf("after the errors: %v", err)
			}

			// Nothing listening: a transport error.
			ln, _ := net.Listen("tcp", "127.0.0.1:0")
			closed := g.sigv4Config()
			closed.Endpoint = "https://" + ln.Addr().String()
			ln.Close()
			tgt2, err := c.new(closed)
			if err != nil {
				t.Fatal(err)
			}
			defer tgt2.Close()
			if err := tgt2.Prepare(ctx, &Workload{}); ErrorCode(err) != CodeTransport {
				t.Errorf("nothing listening: %v (code %q)", err, ErrorCode(err))
			}
		})
	}
}

// TestLeanErrorAnswers checks how the lean client reads error answers it
// does not get from hsmgate: a namespaced __type, the code only in the
// X-Amzn-ErrorType header, a body that is not JSON.
func TestLeanErrorAnswers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" || r.Header.Get("X-Amz-Target") != "TrentService.CreateKey" ||
			r.Header.Get("Content-Type") != "application/x-amz-json-1.1" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		body, _ := io.ReadAll(r.Body)
		switch string(body) {
		case `{"Description":"hsmbench","KeySpec":"SYMMETRIC_DEFAULT","KeyUsage":"ENCRYPT_DECRYPT","Tags":[{"TagKey":"Purpose","TagValue":"hsmbench"}]}`:
		default:
			http.Error(w, "unexpected body "+string(body), http.StatusBadRequest)
			return
		}
		switch r.URL.Query().Get("case") {
		case "namespaced":
			w.WriteHeader(400)
			io.WriteString(w, `{"__type":"com.amazon.coral.service#UnrecognizedClientException","Message":"The security token included in the request is invalid."}`)
		case "header":
			w.Header().Set("X-Amzn-ErrorType", "ThrottlingException:http://internal.amazon.com/coral/com.amazon.coral.availability/")
			w.WriteHeader(400)
			io.WriteString(w, `{}`)
		case "html":
			w.WriteHeader(502)
			io.WriteString(w, `<html>bad gateway</html>`)
		case "ok":
			io.WriteString(w, `{"KeyMetadata":{"KeyId":"1234abcd-12ab-34cd-56ef-1234567890ab","Enabled":true}}`)
		}
	}))
	defer srv.Close()
	for q, want := range map[string]string{"namespaced": "UnrecognizedClientException", "header": "ThrottlingException",
		"html": CodeBadResponse, "ok": ""} {
		tgt, err := NewLeanTarget(KMSConfig{Endpoint: srv.URL + "/?case=" + q, Region: "us-east-1", AccessKeyID: "AKID", SecretAccessKey: "s"})
		if err != nil {
			t.Fatal(err)
		}
		err = tgt.Prepare(context.Background(), &Workload{Mix: []Weighted{{OpEncrypt, 1}}})
		if got := ErrorCode(err); got != want {
			t.Errorf("%s: code %q (%v), want %q", q, got, err, want)
		}
		tgt.Close()
	}
}

func TestKMSConfig(t *testing.T) {
	t.Setenv("AWS_ENDPOINT_URL", "https://127.0.0.1:8443")
	t.Setenv("AWS_ENDPOINT_URL_KMS", "")
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "eu-central-1")
	t.Setenv("AWS_ACCESS_KEY_ID", "AKID")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_SESSION_TOKEN", "token")
	t.Setenv("AWS_CA_BUNDLE", "/data/ca.pem")
	want := KMSConfig{Endpoint: "https://127.0.0.1:8443", Region: "eu-central-1", AccessKeyID: "AKID",
		SecretAccessKey: "secret", SessionToken: "token", CABundle: "/data/ca.pem"}
	if got := KMSConfigFromEnv(); got != want {
		t.Fatalf("got %+v", got)
	}
	t.Setenv("AWS_ENDPOINT_URL_KMS", "https://kms.local")
	t.Setenv("AWS_REGION", "eu-west-3")
	if got := KMSConfigFromEnv(); got.Endpoint != "https://kms.local" || got.Region != "eu-west-3" {
		t.Fatalf("precedence: %+v", got)
	}

	for name, cfg := range map[string]KMSConfig{
		"no endpoint":    {Region: "r", AccessKeyID: "a", SecretAccessKey: "s"},
		"not a URL":      {Endpoint: "127.0.0.1:8443", Region: "r", AccessKeyID: "a", SecretAccessKey: "s"},
		"no region":      {Endpoint: "https://h", AccessKeyID: "a", SecretAccessKey: "s"},
		"no secret":      {Endpoint: "https://h", Region: "r", AccessKeyID: "a"},
		"cert, no key":   {Endpoint: "https://h", ClientCert: "c.pem"},
		"missing bundle": {Endpoint: "https://h", Region: "r", AccessKeyID: "a", SecretAccessKey: "s", CABundle: "/nonexistent.pem"},
	} {
		for client, newTarget := range map[string]func(KMSConfig) (Target, error){"sdk": NewSDKTarget, "lean": NewLeanTarget} {
			if _, err := newTarget(cfg); err == nil {
				t.Errorf("%s %s: no error", client, name)
			}
		}
	}
}

func TestErrorCodeOfPlainErrors(t *testing.T) {
	for err, want := range map[error]string{
		nil:                        "",
		ErrWrongResult:             CodeWrongResult,
		context.DeadlineExceeded:   CodeTimeout,
		context.Canceled:           CodeTimeout,
		io.ErrUnexpectedEOF:        CodeTransport,
		net.ErrClosed:              CodeTransport,
		&leanError{Code: "X"}:      "X",
		hsmpool.ErrThrottled:       "ThrottlingException",
		errors.New("something"):    CodeClientError,
		&CallError{Code: "Custom"}: "Custom",
		// aws-sdk-go-v2's failure of issues 1825/2737, and an answer that
		// is not JSON.
		&smithy.DeserializationError{Err: &net.OpError{Op: "read", Net: "tcp", Err: net.ErrClosed}}: CodeTransport,
		&smithy.DeserializationError{Err: errors.New("invalid character '<'")}:                      CodeBadResponse,
	} {
		if got := ErrorCode(err); got != want {
			t.Errorf("ErrorCode(%v) = %q, want %q", err, got, want)
		}
	}
}
