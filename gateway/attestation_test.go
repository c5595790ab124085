package gateway_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/hsmgate/hsmgate/attest"
	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/gateway/audit"
	"github.com/hsmgate/hsmgate/internal/pki"
	"github.com/hsmgate/hsmgate/internal/swtpmtest"
)

func sum(s string) []byte {
	d := sha256.Sum256([]byte(s))
	return d[:]
}

func newNonce(t *testing.T) []byte {
	t.Helper()
	n := make([]byte, 32)
	if _, err := rand.Read(n); err != nil {
		t.Fatal(err)
	}
	return n
}

// getAttestation fetches GET /attestation?nonce=… with client and returns
// the status, the body and the hash of the TLS key the connection saw.
func getAttestation(t *testing.T, client *http.Client, url, query string, sign func(*http.Request)) (int, []byte, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url+"/attestation"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sign != nil {
		sign(req)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body, gateway.TLSKeyHash(resp.TLS.PeerCertificates[0])
}

// GET /attestation: authenticated callers only (mTLS or SigV4), the
// caller's nonce and the gateway's TLS key bound into the quote, each call
// audited; /readyz and hsmgate_attestation_ok follow the attestation check.
func TestAttestationEndpoint(t *testing.T) {
	sw := swtpmtest.Start(t)
	tpm, err := attest.Open(sw.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer tpm.Close()
	for _, m := range []struct{ kind, name, content string }{
		{attest.KindImage, "pkcs11-modules", "image"}, {attest.KindBinary, "/usr/bin/hsmgate", "binary"}, {attest.KindConfig, "hsmgate.toml", "config"},
	} {
		if _, err := tpm.Measure(m.kind, m.name, sum(m.content)); err != nil {
			t.Fatal(err)
		}
	}
	policy := attest.GoldenPolicy{ImageDigests: [][]byte{sum("image")}, BinaryDigests: [][]byte{sum("binary")}, ConfigDigests: [][]byte{sum("config")}}
	enr := swtpmtest.Enroll(t, tpm)

	tg := startGateway(t, nil)
	ctx := context.Background()
	raw, err := os.ReadFile(filepath.Join(tg.dir, gateway.ServerCertFile))
	if err != nil {
		t.Fatal(err)
	}
	chain, err := pki.ParseCertsPEM(raw)
	if err != nil {
		t.Fatal(err)
	}
	auditLog, err := gateway.OpenAudit(ctx, tg.pool, tg.store, tg.dir)
	if err != nil {
		t.Fatal(err)
	}
	var checkErr atomic.Pointer[error]
	manifest := []byte(`{"image":"test"}`)
	gw, err := gateway.New(gateway.Config{Pool: tg.pool, Store: tg.store, Region: testRegion, Account: testAccount, Audit: auditLog,
		Attestation: &gateway.AttestationOptions{TPM: tpm, Manifest: manifest, TLSKeyHash: gateway.TLSKeyHash(chain[0]),
			Check: func() error {
				if e := checkErr.Load(); e != nil {
					return *e
				}
				return nil
			},
			CheckInterval: time.Nanosecond}})
	if err != nil {
		t.Fatal(err)
	}
	url, _, stop := startServing(t, ctx, gw, tg.pool, tg.store, tg.dir)

	cert, err := tls.LoadX509KeyPair(tg.admin.ClientCert, tg.admin.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	mtls := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tg.caPool, Certificates: []tls.Certificate{cert}}}}
	anon := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tg.caPool}}}
	defer mtls.CloseIdleConnections()
	defer anon.CloseIdleConnections()

	// mTLS: a document for this nonce and this connection's key.
	nonce := newNonce(t)
	code, doc, keyHash := getAttestation(t, mtls, url, "?nonce="+hex.EncodeToString(nonce), nil)
	if code != http.StatusOK {
		t.Fatalf("GET /attestation over mTLS: %d %s", code, doc)
	}
	st, err := attest.Verify(doc, *enr, nonce, keyHash, policy)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if string(st.Manifest) != string(manifest) {
		t.Errorf("manifest %q, want %q", st.Manifest, manifest)
	}
	// Bound: another nonce (a replay) or another TLS key (a relay) fails.
	if _, err := attest.Verify(doc, *enr, newNonce(t), keyHash, policy); !errors.Is(err, attest.ErrNonce) {
		t.Errorf("Verify with another nonce: %v, want ErrNonce", err)
	}
	if _, err := attest.Verify(doc, *enr, nonce, sum("another key"), policy); !errors.Is(err, attest.ErrTLSKey) {
		t.Errorf("Verify with another TLS key: %v, want ErrTLSKey", err)
	}

	// SigV4, as the KMS API signs (service kms, the gateway's region).
	nonce2 := newNonce(t)
	sign := func(r *http.Request) {
		empty := sha256.Sum256(nil)
		if err := v4.NewSigner().SignHTTP(ctx, aws.Credentials{AccessKeyID: tg.admin.AccessKeyID, SecretAccessKey: tg.admin.SecretAccessKey},
			r, hex.EncodeToString(empty[:]), "kms", testRegion, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	code, doc, keyHash = getAttestation(t, anon, url, "?nonce="+hex.EncodeToString(nonce2), sign)
	if code != http.StatusOK {
		t.Fatalf("GET /attestation with SigV4: %d %s", code, doc)
	}
	if _, err := attest.Verify(doc, *enr, nonce2, keyHash, policy); err != nil {
		t.Fatalf("Verify (SigV4): %v", err)
	}

	// Unauthenticated, wrongly signed, or with a bad nonce: refused.
	for name, tc := range map[string]struct {
		client *http.Client
		query  string
		sign   func(*http.Request)
		code   int
		typ    string
	}{
		"no credentials": {anon, "?nonce=" + hex.EncodeToString(nonce), nil, 400, "MissingAuthenticationTokenException"},
		"wrong secret": {anon, "?nonce=" + hex.EncodeToString(nonce), func(r *http.Request) {
			v4.NewSigner().SignHTTP(ctx, aws.Credentials{AccessKeyID: tg.admin.AccessKeyID, SecretAccessKey: strings.Repeat("x", 40)},
				r, hex.EncodeToString(sum("")), "kms", testRegion, time.Now())
		}, 400, "InvalidSignatureException"},
		"no nonce":    {mtls, "", nil, 400, "ValidationException"},
		"short nonce": {mtls, "?nonce=0011223344556677", nil, 400, "ValidationException"},
		"not hex":     {mtls, "?nonce=" + strings.Repeat("zz", 32), nil, 400, "ValidationException"},
		"two nonces":  {mtls, "?nonce=" + hex.EncodeToString(nonce) + "&nonce=" + hex.EncodeToString(nonce2), nil, 400, "ValidationException"},
		"too long":    {mtls, "?nonce=" + strings.Repeat("00", attest.MaxNonceSize+1), nil, 400, "ValidationException"},
	} {
		t.Run(name, func(t *testing.T) {
			code, body, _ := getAttestation(t, tc.client, url, tc.query, tc.sign)
			var e struct {
				Type string `json:"__type"`
			}
			json.Unmarshal(body, &e)
			if code != tc.code || e.Type != tc.typ {
				t.Errorf("%d %s, want %d %s", code, body, tc.code, tc.typ)
			}
		})
	}

	// Readiness and the metric follow the check.
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := anon.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/readyz"); code != 200 {
		t.Errorf("/readyz: %d %s", code, body)
	}
	if _, body := get("/metrics"); !strings.Contains(body, "\nhsmgate_attestation_ok 1\n") {
		t.Error("/metrics lacks hsmgate_attestation_ok 1")
	}
	bad := errors.New("PCR 15 no longer holds this boot's measurements")
	checkErr.Store(&bad)
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "attestation: PCR 15 no longer") {
		t.Errorf("/readyz with a failing check: %d %s", code, body)
	}
	if _, body := get("/metrics"); !strings.Contains(body, "\nhsmgate_attestation_ok 0\n") {
		t.Error("/metrics lacks hsmgate_attestation_ok 0")
	}
	checkErr.Store(nil)

	anon.CloseIdleConnections()
	mtls.CloseIdleConnections()
	stop()
	if err := auditLog.Close(); err != nil {
		t.Fatal(err)
	}
	var ok, refused int
	err = audit.Query(filepath.Join(tg.dir, gateway.AuditDir), audit.Filter{Operation: gateway.AttestationOperation}, func(r audit.Record) error {
		switch {
		case r.Kind != audit.KindRecord:
		case r.Outcome == audit.OutcomeOK && r.Principal == gateway.AdminName:
			ok++
		default:
			refused++
		}
		return nil
	})
	if err != nil || ok != 2 || refused != 7 {
		t.Errorf("audit: %v; %d served and %d refused Attestation records, want 2 and 7", err, ok, refused)
	}
}

// Without a TPM, GET /attestation answers 404 to an authenticated caller.
func TestAttestationWithoutTPM(t *testing.T) {
	tg := startGateway(t, nil)
	cert, err := tls.LoadX509KeyPair(tg.admin.ClientCert, tg.admin.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tg.caPool, Certificates: []tls.Certificate{cert}}}}
	defer c.CloseIdleConnections()
	code, body, _ := getAttestation(t, c, tg.url, "?nonce="+hex.EncodeToString(newNonce(t)), nil)
	if code != http.StatusNotFound || !strings.Contains(string(body), "no TPM attestation") {
		t.Errorf("%d %s, want 404", code, body)
	}
	if _, err := gateway.New(gateway.Config{Pool: tg.pool, Store: tg.store, Region: testRegion, Account: testAccount,
		Attestation: &gateway.AttestationOptions{TPM: nil}}); err == nil {
		t.Error("New accepted attestation without a TPM")
	}
}

// A gateway that refuses to serve: health up, not ready with the reason,
// the metric 0, everything else 503; over a temporary certificate.
func TestRefusalHandler(t *testing.T) {
	const reason = "unseal the PIN: PCR 13 (binary) differs"
	srv := httptest.NewServer(gateway.RefusalHandler(reason))
	defer srv.Close()
	for _, tc := range []struct {
		method, path string
		code         int
		want         string
	}{
		{"GET", "/healthz", 200, "ok"},
		{"GET", "/readyz", 503, "not ready: refusing to serve: " + reason},
		{"GET", "/metrics", 200, "\nhsmgate_attestation_ok 0\n"},
		{"POST", "/", 503, `"__type":"KMSInternalException"`},
		{"GET", "/attestation?nonce=00", 503, reason},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || !strings.Contains(string(b), tc.want) {
			t.Errorf("%s %s: %d %s, want %d and %q", tc.method, tc.path, resp.StatusCode, b, tc.code, tc.want)
		}
	}

	cert, err := gateway.TemporaryCertificate([]string{"localhost", "127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.Leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Error(err)
	}
	roots := x509.NewCertPool()
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: roots}); err == nil {
		t.Error("the temporary certificate verifies against an empty root set")
	}
}
