package xks_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/hsmgate/hsmgate/gateway/xks"
	"github.com/hsmgate/hsmgate/hsmpool"
	"github.com/hsmgate/hsmgate/internal/testenv"
)

const testRegion = "eu-west-1"

// openPool opens a pool on n fresh SoftHSM slots with the domain key
// provisioned and fault injection on, closed at the test's end.
func openPool(t *testing.T, n int) (*hsmpool.Pool, *testenv.SoftHSM) {
	t.Helper()
	env := testenv.NewSoftHSM(t, n)
	p, err := hsmpool.Open(context.Background(), hsmpool.Options{
		Modules:                 []hsmpool.ModuleOptions{{Path: env.Module, PIN: hsmpool.PINSource{File: env.PINFile}}},
		QuarantineProbeInterval: 50 * time.Millisecond,
		FaultInjection:          true,
		Logger:                  quietLog(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.ClearFaults()
		if err := p.Close(); err != nil {
			t.Errorf("pool close: %v", err)
		}
	})
	dk, err := hsmpool.NewDomainKeyMaterial()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.ProvisionDomainKey(context.Background(), dk); err != nil {
		t.Fatal(err)
	}
	clear(dk)
	if p.Healthy() != n {
		t.Fatalf("healthy slots: %d of %d: %+v", p.Healthy(), n, p.Status())
	}
	return p, env
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// memKey is an in-memory xks.Key over pool keys, one per version.
type memKey struct {
	id       string
	usages   []string
	enabled  atomic.Bool
	mu       sync.Mutex
	versions []*hsmpool.Key
	encrypts atomic.Int64
}

func (k *memKey) ID() string       { return k.id }
func (k *memKey) Usages() []string { return k.usages }
func (k *memKey) Enabled() bool    { return k.enabled.Load() }

func (k *memKey) EncryptKey(context.Context) (*hsmpool.Key, error) {
	k.encrypts.Add(1)
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.versions[len(k.versions)-1], nil
}

func (k *memKey) DecryptKey(_ context.Context, v uint32) (*hsmpool.Key, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if v == 0 {
		return k.versions[len(k.versions)-1], nil
	}
	if int(v) > len(k.versions) {
		return nil, fmt.Errorf("key %s has no version %d: %w", k.id, v, xks.ErrKeyVersionNotFound)
	}
	return k.versions[v-1], nil
}

func (k *memKey) addVersion(pk *hsmpool.Key) {
	k.mu.Lock()
	k.versions = append(k.versions, pk)
	k.mu.Unlock()
}

// memKeys is an in-memory xks.Keys. A key id in block makes Lookup wait
// until the channel closes (to hold requests in flight).
type memKeys struct {
	mu     sync.Mutex
	keys   map[string]map[string]*memKey // store -> id -> key
	block  map[string]chan struct{}
	failID map[string]error
	looked atomic.Int64
}

func newMemKeys() *memKeys {
	return &memKeys{keys: map[string]map[string]*memKey{}, block: map[string]chan struct{}{}, failID: map[string]error{}}
}

func (m *memKeys) Lookup(ctx context.Context, store, id string) (xks.Key, error) {
	m.looked.Add(1)
	m.mu.Lock()
	k := m.keys[store][id]
	ch := m.block[id]
	ferr := m.failID[id]
	m.mu.Unlock()
	if ch != nil {
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if ferr != nil {
		return nil, ferr
	}
	if k == nil {
		return nil, fmt.Errorf("no key %q in store %q: %w", id, store, xks.ErrKeyNotFound)
	}
	return k, nil
}

func (m *memKeys) add(store string, k *memKey) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.keys[store] == nil {
		m.keys[store] = map[string]*memKey{}
	}
	m.keys[store][k.id] = k
}

// newPoolKey generates an AES-256 key in the pool.
func newPoolKey(t *testing.T, p *hsmpool.Pool, id string, version uint32) *hsmpool.Key {
	t.Helper()
	g, err := p.GenerateKey(context.Background(), hsmpool.AES256, hsmpool.UsageEncrypt)
	if err != nil {
		t.Fatal(err)
	}
	k, err := hsmpool.NewKey(id, version, g.Blob, nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newMemKey(t *testing.T, p *hsmpool.Pool, id string, usages ...string) *memKey {
	t.Helper()
	if len(usages) == 0 {
		usages = []string{xks.UsageEncrypt, xks.UsageDecrypt}
	}
	k := &memKey{id: id, usages: usages}
	k.enabled.Store(true)
	k.addVersion(newPoolKey(t, p, id, 1))
	return k
}

// credSet is a store's reloadable credentials.
type credSet struct {
	p atomic.Pointer[[]xks.Credential]
}

func (c *credSet) get() []xks.Credential { return *c.p.Load() }
func (c *credSet) set(cs ...xks.Credential) {
	c.p.Store(&cs)
}

func newCred(t *testing.T) xks.Credential {
	t.Helper()
	c, err := xks.NewCredential()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("NewCredential made an invalid credential: %v", err)
	}
	return c
}

// auditLog collects events; fail makes the next appends fail.
type auditLog struct {
	mu     sync.Mutex
	events []xks.Event
	fail   atomic.Bool
}

func (a *auditLog) append(_ context.Context, ev xks.Event) error {
	if a.fail.Load() {
		return errors.New("disk full")
	}
	a.mu.Lock()
	a.events = append(a.events, ev)
	a.mu.Unlock()
	return nil
}

// byRequestID returns the event of a response's X-Amzn-RequestId.
func (a *auditLog) byRequestID(t *testing.T, id string) xks.Event {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, ev := range a.events {
		if ev.RequestID == id {
			return ev
		}
	}
	t.Fatalf("no audit event for request %s", id)
	return xks.Event{}
}

func (a *auditLog) all() []xks.Event {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]xks.Event(nil), a.events...)
}

// serve starts h over TLS (client certificates requested, not required).
func serve(t *testing.T, h *xks.Handler) *httptest.Server {
	t.Helper()
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// client signs requests to one server with aws-sdk-go-v2's SigV4 signer.
type client struct {
	srv     *httptest.Server
	http    *http.Client
	cred    xks.Credential
	region  string
	service string
	skew    time.Duration // added to the signing time
	unsign  bool          // send no Authorization header
}

func newClient(srv *httptest.Server, cred xks.Credential) *client {
	return &client{srv: srv, http: srv.Client(), cred: cred, region: testRegion, service: xks.SigV4Service}
}

type response struct {
	Status int
	Header http.Header
	Body   []byte
	JSON   map[string]any
}

func (r *response) str(name string) string {
	s, _ := r.JSON[name].(string)
	return s
}

func (r *response) bytes(t *testing.T, name string) []byte {
	t.Helper()
	s, ok := r.JSON[name].(string)
	if !ok {
		t.Fatalf("response has no string %s: %s", name, r.Body)
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("%s is not Base64: %v", name, err)
	}
	return b
}

var base64Std = base64.StdEncoding

func (c *client) do(t *testing.T, method, path string, body []byte) *response {
	t.Helper()
	return c.send(t, method, path, body, body)
}

// doSigned signs one body and sends another.
func (c *client) doSigned(t *testing.T, path string, signed, sent []byte) *response {
	t.Helper()
	return c.send(t, http.MethodPost, path, signed, sent)
}

func (c *client) send(t *testing.T, method, path string, signed, body []byte) *response {
	t.Helper()
	req, err := http.NewRequest(method, c.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if !c.unsign {
		sum := sha256.Sum256(signed)
		creds := aws.Credentials{AccessKeyID: c.cred.AccessKeyID, SecretAccessKey: c.cred.Secret}
		if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), c.service, c.region, time.Now().Add(c.skew)); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := &response{Status: resp.StatusCode, Header: resp.Header, Body: b}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(b, &out.JSON); err != nil {
			t.Fatalf("response is not JSON: %v: %q", err, b)
		}
	}
	return out
}

func (c *client) post(t *testing.T, path string, body any) *response {
	t.Helper()
	var b []byte
	switch v := body.(type) {
	case []byte:
		b = v
	case string:
		b = []byte(v)
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	return c.do(t, http.MethodPost, path, b)
}

// with returns a copy of the client changed by f.
func (c *client) with(f func(*client)) *client {
	d := *c
	f(&d)
	return &d
}

func wantOK(t *testing.T, r *response) {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Fatalf("status %d, want 200: %s", r.Status, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
}

// wantError checks the error name, its status from the specification's
// table, and the errorMessage rules (printable ASCII, under 512).
func wantError(t *testing.T, r *response, name string) {
	t.Helper()
	status := map[string]int{
		"ValidationException": 400, "InvalidStateException": 400, "InvalidCiphertextException": 400,
		"InvalidKeyUsageException": 400, "AuthenticationFailedException": 401, "AccessDeniedException": 403,
		"KeyNotFoundException": 404, "InvalidUriPathException": 404, "ThrottlingException": 429,
		"UnsupportedOperationException": 501, "DependencyTimeoutException": 503, "InternalException": 500,
	}[name]
	if status == 0 {
		t.Fatalf("test bug: unknown error name %s", name)
	}
	if r.Status != status || r.str("errorName") != name {
		t.Fatalf("got %d %s, want %d %s: %s", r.Status, r.str("errorName"), status, name, r.Body)
	}
	if xks.Statuses[name] != status {
		t.Errorf("xks.Statuses[%s] = %d, want %d", name, xks.Statuses[name], status)
	}
	msg := r.str("errorMessage")
	if len(msg) >= 512 {
		t.Errorf("errorMessage of %d characters", len(msg))
	}
	for _, c := range []byte(msg) {
		if c < 0x20 || c > 0x7e {
			t.Errorf("errorMessage has byte %#x: %q", c, msg)
			break
		}
	}
}

// Request bodies.

func metadata(op string) map[string]any {
	return map[string]any{
		"awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
		"kmsKeyArn":       "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
		"kmsOperation":    op,
		"kmsRequestId":    "4112f4d6-db54-4af4-ae30-c55a22a8dfae",
		"kmsViaService":   "ebs",
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func encryptBody(plaintext, aad []byte, cdiv bool) map[string]any {
	m := map[string]any{"requestMetadata": metadata("Encrypt"), "plaintext": b64(plaintext), "encryptionAlgorithm": "AES_GCM"}
	if aad != nil {
		m["additionalAuthenticatedData"] = b64(aad)
	}
	if cdiv {
		m["ciphertextDataIntegrityValueAlgorithm"] = "SHA_256"
	}
	return m
}

// sealed is an Encrypt's output.
type sealed struct {
	ct, cm, iv, tag, cdiv []byte
	hasCM                 bool
}

func decryptBody(s sealed, aad []byte) map[string]any {
	m := map[string]any{
		"requestMetadata": metadata("Decrypt"), "ciphertext": b64(s.ct), "encryptionAlgorithm": "AES_GCM",
		"initializationVector": b64(s.iv), "authenticationTag": b64(s.tag),
	}
	if s.hasCM {
		m["ciphertextMetadata"] = b64(s.cm)
	}
	if aad != nil {
		m["additionalAuthenticatedData"] = b64(aad)
	}
	return m
}

func parseSealed(t *testing.T, r *response) sealed {
	t.Helper()
	wantOK(t, r)
	s := sealed{ct: r.bytes(t, "ciphertext"), iv: r.bytes(t, "initializationVector"), tag: r.bytes(t, "authenticationTag")}
	if _, ok := r.JSON["ciphertextMetadata"]; ok {
		s.cm, s.hasCM = r.bytes(t, "ciphertextMetadata"), true
	}
	if _, ok := r.JSON["ciphertextDataIntegrityValue"]; ok {
		s.cdiv = r.bytes(t, "ciphertextDataIntegrityValue")
	}
	return s
}

// specAAD is the AAD layout of the specification's "Encrypt", written out
// independently of the package.
func specAAD(aad, cm []byte) []byte {
	out := []byte{byte(len(aad) >> 8), byte(len(aad))}
	out = append(out, aad...)
	out = append(out, byte(len(cm)))
	return append(out, cm...)
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
