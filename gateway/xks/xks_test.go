package xks_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/gateway/xks"
	"github.com/hsmgate/hsmgate/hsmpool"
)

// fixture is a Handler with several key stores on a 2-slot pool, served
// over TLS.
type fixture struct {
	pool   *hsmpool.Pool
	h      *xks.Handler
	srv    *httptest.Server
	keys   *memKeys
	audit  *auditLog
	creds  *credSet // store "main": two credentials
	c1, c2 xks.Credential
	other  xks.Credential // every other store's
	authz  atomic.Int64   // Authorizer calls
	off    atomic.Bool    // store "main" disabled
	ca     *testCA
}

const (
	mainPath   = "/xks/main/kms/xks/v1"
	rootPath   = "/kms/xks/v1"
	narrowPath = "/xks/narrow/kms/xks/v1"
	ratedPath  = "/xks/rated/kms/xks/v1"
	mtlsPath   = "/xks/mtls/kms/xks/v1"
)

func newFixture(t *testing.T) *fixture {
	t.Helper()
	pool, _ := openPool(t, 2)
	f := &fixture{pool: pool, keys: newMemKeys(), audit: &auditLog{}, creds: &credSet{}}
	f.c1, f.c2, f.other = newCred(t), newCred(t), newCred(t)
	f.creds.set(f.c1, f.c2)
	other := func() []xks.Credential { return []xks.Credential{f.other} }
	f.ca = newTestCA(t)
	roots := x509.NewCertPool()
	roots.AddCert(f.ca.cert)
	authorize := func(_ context.Context, r *xks.AuthzRequest) error {
		f.authz.Add(1)
		if r.Operation == xks.OpGetHealthStatus {
			return fmt.Errorf("health must not be authorized: %w", xks.ErrAccessDenied)
		}
		if r.Metadata.KMSViaService == "forbidden" || r.Metadata.Extra["callerTag"] == "blocked" {
			return fmt.Errorf("statement DenyForbidden matched: %w", xks.ErrAccessDenied)
		}
		if r.Metadata.KMSViaService == "broken" {
			return fmt.Errorf("policy store unreachable")
		}
		return nil
	}
	f.h = &xks.Handler{
		Pool: pool,
		Stores: []*xks.Store{
			{Name: "main", Prefix: "/xks/main", Credentials: f.creds.get, Keys: f.keys, Authorize: authorize,
				Enabled: func() bool { return !f.off.Load() }},
			{Name: "root", Prefix: "", Credentials: other, Keys: f.keys, Regions: []string{testRegion}},
			{Name: "narrow", Prefix: "/xks/narrow", Credentials: other, Keys: f.keys, MaxInFlight: 1},
			{Name: "rated", Prefix: "/xks/rated", Credentials: other, Keys: f.keys, RateLimit: 0.001, Burst: 2},
			{Name: "mtls", Prefix: "/xks/mtls", Credentials: other, Keys: f.keys,
				ClientCert: &xks.ClientCertPolicy{Roots: roots, CommonNames: []string{"cks.kms." + testRegion + ".amazonaws.com"}}},
		},
		Audit:     f.audit.append,
		Log:       quietLog(),
		FleetSize: 3,
		Timeout:   5 * time.Second,
	}
	f.srv = serve(t, f.h)

	for _, store := range []string{"main", "root", "narrow", "rated", "mtls"} {
		f.keys.add(store, newMemKey(t, pool, "k1"))
	}
	f.keys.add("main", newMemKey(t, pool, "encrypt-only", xks.UsageEncrypt))
	f.keys.add("main", newMemKey(t, pool, "decrypt-only", xks.UsageDecrypt))
	f.keys.add("main", newMemKey(t, pool, "wrapper", xks.UsageEncrypt, xks.UsageDecrypt, xks.UsageWrap, xks.UsageUnwrap))
	disabled := newMemKey(t, pool, "disabled")
	disabled.enabled.Store(false)
	f.keys.add("main", disabled)
	f.keys.failID["pending-deletion"] = fmt.Errorf("key is pending deletion: %w", xks.ErrInvalidState)
	f.keys.failID["store-down"] = fmt.Errorf("keystore: disk I/O error")
	return f
}

func (f *fixture) client() *client { return newClient(f.srv, f.c1) }

func TestXKS(t *testing.T) {
	f := newFixture(t)
	t.Run("GetHealthStatus", f.testHealth)
	t.Run("GetKeyMetadata", f.testMetadata)
	t.Run("encrypt and decrypt", f.testRoundTrip)
	t.Run("AAD layout and 16-byte IVs against Go's AES-GCM", f.testKnownKey)
	t.Run("key rotation", f.testRotation)
	t.Run("InvalidCiphertextException", f.testInvalidCiphertext)
	t.Run("ValidationException", f.testValidation)
	t.Run("size limits", f.testLimits)
	t.Run("AuthenticationFailedException", f.testAuthentication)
	t.Run("credential rotation", f.testCredentialRotation)
	t.Run("key state and usage", f.testKeyState)
	t.Run("AccessDeniedException", f.testAuthorization)
	t.Run("URI paths and methods", f.testPaths)
	t.Run("ThrottlingException", f.testThrottling)
	t.Run("mutual TLS", f.testMTLS)
	t.Run("audit events", f.testAudit)
	t.Run("audit failure", f.testAuditFailure)
	if f.pool.Healthy() != 2 {
		t.Errorf("the tests left a slot unhealthy: %+v", f.pool.Status())
	}
}

func healthBody() map[string]any {
	return map[string]any{"requestMetadata": map[string]any{"kmsRequestId": "1124f4d6-db54-4af4-ae30-c55a22a8abcd", "kmsOperation": "KmsHealthCheck"}}
}

func (f *fixture) testHealth(t *testing.T) {
	before := f.authz.Load()
	r := f.client().post(t, mainPath+"/health", healthBody())
	wantOK(t, r)
	var h struct {
		FleetSize   int    `json:"xksProxyFleetSize"`
		ProxyVendor string `json:"xksProxyVendor"`
		ProxyModel  string `json:"xksProxyModel"`
		EKMVendor   string `json:"ekmVendor"`
		Details     []struct {
			ID, Model, HealthStatus string
		} `json:"ekmFleetDetails"`
	}
	if err := json.Unmarshal(r.Body, &h); err != nil {
		t.Fatal(err)
	}
	if h.FleetSize != 3 || h.ProxyVendor == "" || h.ProxyModel == "" || h.EKMVendor == "" {
		t.Errorf("health = %s", r.Body)
	}
	st := f.pool.Status()
	if len(h.Details) != len(st) {
		t.Fatalf("%d fleet details for %d slots: %s", len(h.Details), len(st), r.Body)
	}
	for i, d := range h.Details {
		if d.ID != st[i].Name || d.HealthStatus != "ACTIVE" || !strings.Contains(d.Model, strings.TrimSpace(st[i].Model)) || !strings.Contains(d.Model, strings.TrimSpace(st[i].Serial)) {
			t.Errorf("fleet detail %d = %+v, slot %s (%s, %s)", i, d, st[i].Name, st[i].Model, st[i].Serial)
		}
	}
	if f.authz.Load() != before {
		t.Errorf("GetHealthStatus went through secondary authorization")
	}

	// In a cluster, the other gateways count in the fleet and are listed.
	f.h.Fleet = func() []xks.FleetNode {
		return []xks.FleetNode{{ID: "n2", Usable: true}, {ID: "n3"}, {ID: "n4", Usable: true}}
	}
	defer func() { f.h.Fleet = nil }()
	r = f.client().post(t, mainPath+"/health", healthBody())
	wantOK(t, r)
	h.Details = nil
	if err := json.Unmarshal(r.Body, &h); err != nil {
		t.Fatal(err)
	}
	if h.FleetSize != 4 || len(h.Details) != len(st)+3 {
		t.Fatalf("health with a fleet: %s", r.Body)
	}
	for i, want := range []string{"ACTIVE", "UNAVAILABLE", "ACTIVE"} {
		d := h.Details[len(st)+i]
		if d.ID != fmt.Sprintf("node n%d", i+2) || d.HealthStatus != want {
			t.Errorf("fleet peer %d = %+v, want %s", i, d, want)
		}
	}
	// The health check of a store without a prefix, and GET's 405.
	wantOK(t, newClient(f.srv, f.other).post(t, rootPath+"/health", healthBody()))
	if r := f.client().do(t, http.MethodGet, mainPath+"/health", nil); r.Status != http.StatusMethodNotAllowed || r.Header.Get("Allow") != "POST" {
		t.Errorf("GET health: %d, Allow %q", r.Status, r.Header.Get("Allow"))
	}
	// A malformed body: ValidationException, as AWS's test client expects.
	wantError(t, f.client().post(t, mainPath+"/health", `{}`), "ValidationException")
	wantError(t, f.client().post(t, mainPath+"/health", `{"requestMetadata":{}}`), "ValidationException")
}

func (f *fixture) testMetadata(t *testing.T) {
	c := f.client()
	body := map[string]any{"requestMetadata": metadata("DescribeKey")}
	r := c.post(t, mainPath+"/keys/k1/metadata", body)
	wantOK(t, r)
	if string(r.Body) != `{"keySpec":"AES_256","keyUsage":["ENCRYPT","DECRYPT"],"keyStatus":"ENABLED"}` {
		t.Errorf("metadata = %s", r.Body)
	}
	r = c.post(t, mainPath+"/keys/wrapper/metadata", body)
	wantOK(t, r)
	if !strings.Contains(string(r.Body), `"keyUsage":["ENCRYPT","DECRYPT","WRAP","UNWRAP"]`) {
		t.Errorf("metadata = %s", r.Body)
	}
	r = c.post(t, mainPath+"/keys/disabled/metadata", body)
	wantOK(t, r)
	if !strings.Contains(string(r.Body), `"keyStatus":"DISABLED"`) {
		t.Errorf("metadata of a disabled key = %s", r.Body)
	}
	// KMS omits kmsKeyArn when it calls during CreateKey.
	md := metadata("CreateKey")
	delete(md, "kmsKeyArn")
	wantOK(t, c.post(t, mainPath+"/keys/k1/metadata", map[string]any{"requestMetadata": md}))
	// An unknown kmsOperation is not refused.
	wantOK(t, c.post(t, mainPath+"/keys/k1/metadata", map[string]any{"requestMetadata": metadata("BulkDescribeKey")}))
	wantError(t, c.post(t, mainPath+"/keys/nope/metadata", body), "KeyNotFoundException")
	wantError(t, c.post(t, mainPath+"/keys/k1/metadata", `{}`), "ValidationException")
	wantError(t, c.post(t, mainPath+"/keys/k1/metadata", `{"requestMetadata":{}}`), "ValidationException")
}

func (f *fixture) testRoundTrip(t *testing.T) {
	c := f.client()
	for _, tc := range []struct {
		name string
		pt   []byte
		aad  []byte
		cdiv bool
	}{
		{"no AAD", []byte("Hello World!"), nil, false},
		{"AAD", []byte("Hello World!"), []byte("project=nile,department=marketing"), false},
		{"empty AAD", []byte("x"), []byte{}, false},
		{"CDIV without AAD", random(t, 32), nil, true},
		{"CDIV with AAD", random(t, 32), random(t, 100), true},
		{"4300 bytes and 8192 bytes of AAD", random(t, 4300), random(t, 8192), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := c.post(t, mainPath+"/keys/k1/encrypt", encryptBody(tc.pt, tc.aad, tc.cdiv))
			s := parseSealed(t, r)
			if len(s.ct) != len(tc.pt) || len(s.iv) != 12 || len(s.tag) != 16 || !s.hasCM || len(s.cm) > 20 {
				t.Fatalf("encrypt: ciphertext %d bytes for %d, IV %d, tag %d, metadata %v %d: %s", len(s.ct), len(tc.pt), len(s.iv), len(s.tag), s.hasCM, len(s.cm), r.Body)
			}
			if bytes.Equal(s.ct, tc.pt) {
				t.Fatal("ciphertext equals plaintext")
			}
			if tc.cdiv {
				// Appendix C, computed independently.
				h := sha256.New()
				h.Write(tc.aad)
				h.Write(s.cm)
				h.Write(s.iv)
				h.Write(s.ct)
				h.Write(s.tag)
				if !bytes.Equal(s.cdiv, h.Sum(nil)) {
					t.Errorf("CDIV %x, want %x", s.cdiv, h.Sum(nil))
				}
			} else if s.cdiv != nil {
				t.Errorf("CDIV returned without being asked for")
			}
			r = c.post(t, mainPath+"/keys/k1/decrypt", decryptBody(s, tc.aad))
			wantOK(t, r)
			if got := r.bytes(t, "plaintext"); !bytes.Equal(got, tc.pt) {
				t.Errorf("decrypted %d bytes, not the plaintext", len(got))
			}
		})
	}
	// Two encryptions of the same plaintext differ (a fresh IV each).
	a := parseSealed(t, c.post(t, mainPath+"/keys/k1/encrypt", encryptBody([]byte("same"), nil, false)))
	b := parseSealed(t, c.post(t, mainPath+"/keys/k1/encrypt", encryptBody([]byte("same"), nil, false)))
	if bytes.Equal(a.iv, b.iv) || bytes.Equal(a.ct, b.ct) {
		t.Error("two encryptions reused an IV")
	}
	// The spec's Appendix C example.
	ex := xks.CDIV([]byte("project=nile,department=marketing"), []byte("key_version=1"),
		mustB64(t, "HMrlRw85cAJUd5Ax"), mustB64(t, "ghxkK1txeDNn3q8Y"), mustB64(t, "vBxN2ncH1oEkR8WVXpmyYQ=="))
	if got := b64(ex[:]); got != "qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc=" {
		t.Errorf("CDIV of the specification's example = %s", got)
	}
}

// testKnownKey imports AES key material the test knows, so that Go's own
// AES-GCM can check the AAD layout the HSM is given, and make ciphertexts
// with 16-byte IVs (which the pool never draws).
func (f *fixture) testKnownKey(t *testing.T) {
	ctx := context.Background()
	g, err := f.pool.GenerateKey(ctx, hsmpool.RSA2048, hsmpool.UsageImportWrap)
	if err != nil {
		t.Fatal(err)
	}
	wk, err := hsmpool.NewKey("wrapping", 1, g.Blob, g.Public)
	if err != nil {
		t.Fatal(err)
	}
	material := random(t, 32)
	wrapped, err := hsmpool.WrapKeyMaterial(wk.Public().(*rsa.PublicKey), hsmpool.RSAESOAEPSHA1, material)
	if err != nil {
		t.Fatal(err)
	}
	imp, _, err := f.pool.ImportKey(ctx, wk, hsmpool.RSAESOAEPSHA1, wrapped, hsmpool.AES256, hsmpool.UsageEncrypt)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := hsmpool.NewKey("imported", 7, imp.Blob, nil)
	if err != nil {
		t.Fatal(err)
	}
	k := &memKey{id: "imported", usages: []string{xks.UsageEncrypt, xks.UsageDecrypt}}
	k.enabled.Store(true)
	k.versions = make([]*hsmpool.Key, 7)
	k.versions[6] = pk
	f.keys.add("main", k)

	block, err := aes.NewCipher(material)
	if err != nil {
		t.Fatal(err)
	}
	gcm12, _ := cipher.NewGCM(block)
	gcm16, err := cipher.NewGCMWithNonceSize(block, 16)
	if err != nil {
		t.Fatal(err)
	}
	c := f.client()
	pt, aad := []byte("data key bytes"), []byte("kms header")

	// Encrypt in the HSM, open in Go with the specification's layout.
	s := parseSealed(t, c.post(t, mainPath+"/keys/imported/encrypt", encryptBody(pt, aad, false)))
	if want := []byte{1, 0, 0, 0, 7}; !bytes.Equal(s.cm, want) {
		t.Errorf("ciphertextMetadata = %x, want %x (format 1, version 7)", s.cm, want)
	}
	got, err := gcm12.Open(nil, s.iv, append(append([]byte{}, s.ct...), s.tag...), specAAD(aad, s.cm))
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("Go's AES-GCM can't open the HSM's ciphertext with the specification's AAD layout: %v", err)
	}

	// Seal in Go, decrypt in the HSM: 16-byte and 12-byte IVs, with and
	// without ciphertext metadata.
	for _, tc := range []struct {
		name  string
		gcm   cipher.AEAD
		ivLen int
		cm    []byte
	}{
		{"16-byte IV", gcm16, 16, []byte{1, 0, 0, 0, 7}},
		{"12-byte IV", gcm12, 12, []byte{1, 0, 0, 0, 7}},
		{"16-byte IV, no metadata", gcm16, 16, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			iv := random(t, tc.ivLen)
			out := tc.gcm.Seal(nil, iv, pt, specAAD(aad, tc.cm))
			s := sealed{ct: out[:len(pt)], tag: out[len(pt):], iv: iv, cm: tc.cm, hasCM: tc.cm != nil}
			r := c.post(t, mainPath+"/keys/imported/decrypt", decryptBody(s, aad))
			wantOK(t, r)
			if !bytes.Equal(r.bytes(t, "plaintext"), pt) {
				t.Errorf("decrypted to other bytes")
			}
			// Another 16-byte IV does not authenticate.
			bad := s
			bad.iv = random(t, tc.ivLen)
			wantError(t, c.post(t, mainPath+"/keys/imported/decrypt", decryptBody(bad, aad)), "InvalidCiphertextException")
		})
	}
	// Without the lengths (plain AAD || metadata), it must not decrypt.
	iv := random(t, 12)
	out := gcm12.Seal(nil, iv, pt, append(append([]byte{}, aad...), 1, 0, 0, 0, 7))
	s = sealed{ct: out[:len(pt)], tag: out[len(pt):], iv: iv, cm: []byte{1, 0, 0, 0, 7}, hasCM: true}
	wantError(t, c.post(t, mainPath+"/keys/imported/decrypt", decryptBody(s, aad)), "InvalidCiphertextException")
}

func (f *fixture) testRotation(t *testing.T) {
	c := f.client()
	k := newMemKey(t, f.pool, "rotating")
	f.keys.add("main", k)
	old := parseSealed(t, c.post(t, mainPath+"/keys/rotating/encrypt", encryptBody([]byte("v1 secret"), nil, false)))
	k.addVersion(newPoolKey(t, f.pool, "rotating", 2))
	cur := parseSealed(t, c.post(t, mainPath+"/keys/rotating/encrypt", encryptBody([]byte("v2 secret"), nil, false)))
	if old.cm[4] != 1 || cur.cm[4] != 2 {
		t.Fatalf("metadata versions %x and %x, want 1 and 2", old.cm, cur.cm)
	}
	for _, s := range []sealed{old, cur} {
		wantOK(t, c.post(t, mainPath+"/keys/rotating/decrypt", decryptBody(s, nil)))
	}
	// A version the key does not have.
	gone := old
	gone.cm = []byte{1, 0, 0, 0, 9}
	wantError(t, c.post(t, mainPath+"/keys/rotating/decrypt", decryptBody(gone, nil)), "InvalidCiphertextException")
	// Metadata naming the other version: the tag binds it.
	swapped := old
	swapped.cm = cur.cm
	wantError(t, c.post(t, mainPath+"/keys/rotating/decrypt", decryptBody(swapped, nil)), "InvalidCiphertextException")
	if n := k.encrypts.Load(); n != 2 {
		t.Errorf("EncryptKey counted %d encryptions, want 2", n)
	}
}

func (f *fixture) testInvalidCiphertext(t *testing.T) {
	c := f.client()
	aad := []byte("project=nile,department=marketing")
	s := parseSealed(t, c.post(t, mainPath+"/keys/k1/encrypt", encryptBody([]byte("plaintext\n"), aad, false)))
	flip := func(b []byte) []byte { b = append([]byte{}, b...); b[0] ^= 1; return b }
	cases := map[string]func() (sealed, []byte){
		"missing AAD":          func() (sealed, []byte) { return s, nil },
		"other AAD":            func() (sealed, []byte) { return s, []byte("project=blue,department=finance") },
		"changed ciphertext":   func() (sealed, []byte) { x := s; x.ct = flip(s.ct); return x, aad },
		"changed tag":          func() (sealed, []byte) { x := s; x.tag = flip(s.tag); return x, aad },
		"changed IV":           func() (sealed, []byte) { x := s; x.iv = flip(s.iv); return x, aad },
		"changed metadata":     func() (sealed, []byte) { x := s; x.cm = flip(s.cm); return x, aad },
		"metadata dropped":     func() (sealed, []byte) { x := s; x.hasCM = false; return x, aad },
		"IV of 8 bytes":        func() (sealed, []byte) { x := s; x.iv = s.iv[:8]; return x, aad },
		"IV of 13 bytes":       func() (sealed, []byte) { x := s; x.iv = append(append([]byte{}, s.iv...), 0); return x, aad },
		"tag of 12 bytes":      func() (sealed, []byte) { x := s; x.tag = s.tag[:12]; return x, aad },
		"empty tag":            func() (sealed, []byte) { x := s; x.tag = []byte{}; return x, aad },
		"metadata of 20 bytes": func() (sealed, []byte) { x := s; x.cm = make([]byte, 20); return x, aad },
		"another key's":        nil,
	}
	for name, mk := range cases {
		t.Run(name, func(t *testing.T) {
			path := mainPath + "/keys/k1/decrypt"
			x, a := s, aad
			if mk != nil {
				x, a = mk()
			} else {
				path = mainPath + "/keys/wrapper/decrypt"
			}
			wantError(t, c.post(t, path, decryptBody(x, a)), "InvalidCiphertextException")
		})
	}
	// Metadata moved into the AAD: the lengths tell them apart.
	n := parseSealed(t, c.post(t, mainPath+"/keys/k1/encrypt", encryptBody([]byte("plaintext"), nil, false)))
	moved := n
	moved.hasCM = false
	wantError(t, c.post(t, mainPath+"/keys/k1/decrypt", decryptBody(moved, n.cm)), "InvalidCiphertextException")
}

func (f *fixture) testValidation(t *testing.T) {
	c := f.client()
	md := metadata("Encrypt")
	enc := func(edit func(m map[string]any)) map[string]any {
		m := encryptBody([]byte("hello"), nil, false)
		edit(m)
		return m
	}
	s := parseSealed(t, c.post(t, mainPath+"/keys/k1/encrypt", encryptBody([]byte("hello"), nil, false)))
	dec := func(edit func(m map[string]any)) map[string]any {
		m := decryptBody(s, nil)
		edit(m)
		return m
	}
	long := strings.Repeat("a", 2049)
	for name, body := range map[string]any{
		"not JSON":                    `{"requestMetadata":`,
		"a JSON array":                `[]`,
		"null":                        `null`,
		"trailing garbage":            `{"requestMetadata":{}} x`,
		"no requestMetadata":          enc(func(m map[string]any) { delete(m, "requestMetadata") }),
		"requestMetadata a string":    enc(func(m map[string]any) { m["requestMetadata"] = "x" }),
		"no awsPrincipalArn":          enc(func(m map[string]any) { m["requestMetadata"] = without(md, "awsPrincipalArn") }),
		"no kmsKeyArn":                enc(func(m map[string]any) { m["requestMetadata"] = without(md, "kmsKeyArn") }),
		"no kmsOperation":             enc(func(m map[string]any) { m["requestMetadata"] = without(md, "kmsOperation") }),
		"no kmsRequestId":             enc(func(m map[string]any) { m["requestMetadata"] = without(md, "kmsRequestId") }),
		"empty kmsRequestId":          enc(func(m map[string]any) { m["requestMetadata"] = with(md, "kmsRequestId", "") }),
		"numeric kmsRequestId":        enc(func(m map[string]any) { m["requestMetadata"] = with(md, "kmsRequestId", 7) }),
		"ARN over 2048":               enc(func(m map[string]any) { m["requestMetadata"] = with(md, "awsPrincipalArn", long) }),
		"no plaintext":                enc(func(m map[string]any) { delete(m, "plaintext") }),
		"null plaintext":              enc(func(m map[string]any) { m["plaintext"] = nil }),
		"empty plaintext":             enc(func(m map[string]any) { m["plaintext"] = "" }),
		"plaintext a number":          enc(func(m map[string]any) { m["plaintext"] = 12 }),
		"plaintext not Base64":        enc(func(m map[string]any) { m["plaintext"] = "not base64!" }),
		"plaintext URL-safe Base64":   enc(func(m map[string]any) { m["plaintext"] = "-_-_" }),
		"plaintext unpadded":          enc(func(m map[string]any) { m["plaintext"] = "aGVsbG8" }),
		"plaintext with a line break": enc(func(m map[string]any) { m["plaintext"] = "aGVs\nbG8=" }),
		"AAD not Base64":              enc(func(m map[string]any) { m["additionalAuthenticatedData"] = "@@@@" }),
		"no encryptionAlgorithm":      enc(func(m map[string]any) { delete(m, "encryptionAlgorithm") }),
		"AES_GCM_256":                 enc(func(m map[string]any) { m["encryptionAlgorithm"] = "AES_GCM_256" }),
		"CDIV algorithm SHA_512":      enc(func(m map[string]any) { m["ciphertextDataIntegrityValueAlgorithm"] = "SHA_512" }),
		"decrypt without ciphertext":  dec(func(m map[string]any) { delete(m, "ciphertext") }),
		"decrypt without IV":          dec(func(m map[string]any) { delete(m, "initializationVector") }),
		"decrypt without tag":         dec(func(m map[string]any) { delete(m, "authenticationTag") }),
		"decrypt, tag not Base64":     dec(func(m map[string]any) { m["authenticationTag"] = "####" }),
		"decrypt, metadata over 20":   dec(func(m map[string]any) { m["ciphertextMetadata"] = b64(make([]byte, 21)) }),
		"decrypt, other algorithm":    dec(func(m map[string]any) { m["encryptionAlgorithm"] = "AES_CBC" }),
		"decrypt, empty ciphertext":   dec(func(m map[string]any) { m["ciphertext"] = "" }),
	} {
		t.Run(name, func(t *testing.T) {
			path := mainPath + "/keys/k1/encrypt"
			if strings.HasPrefix(name, "decrypt") {
				path = mainPath + "/keys/k1/decrypt"
			}
			wantError(t, c.post(t, path, body), "ValidationException")
		})
	}
	// Invalid external key ids.
	for _, id := range []string{"bad!id", "bad:id", strings.Repeat("k", 129)} {
		wantError(t, c.post(t, mainPath+"/keys/"+id+"/encrypt", encryptBody([]byte("x"), nil, false)), "ValidationException")
	}
	wantError(t, c.post(t, mainPath+"/keys//encrypt", encryptBody([]byte("x"), nil, false)), "ValidationException")
	// Fields the specification does not name are ignored.
	extra := encryptBody([]byte("x"), nil, false)
	extra["futureField"] = map[string]any{"a": 1}
	extra["requestMetadata"] = with(md, "sourceIdentity", "alice")
	wantOK(t, c.post(t, mainPath+"/keys/k1/encrypt", extra))
	// A key id of 128 characters is well formed (and unknown).
	wantError(t, c.post(t, mainPath+"/keys/"+strings.Repeat("k", 128)+"/encrypt", encryptBody([]byte("x"), nil, false)), "KeyNotFoundException")
}

func (f *fixture) testLimits(t *testing.T) {
	c := f.client()
	// The largest values this proxy supports.
	pt, aad := random(t, xks.MaxPlaintext), random(t, xks.MaxAAD)
	s := parseSealed(t, c.post(t, mainPath+"/keys/k1/encrypt", encryptBody(pt, aad, true)))
	r := c.post(t, mainPath+"/keys/k1/decrypt", decryptBody(s, aad))
	wantOK(t, r)
	if !bytes.Equal(r.bytes(t, "plaintext"), pt) {
		t.Error("round trip at the limits lost data")
	}
	// One byte more: supported by the specification's rules, not here.
	wantError(t, c.post(t, mainPath+"/keys/k1/encrypt", encryptBody(random(t, xks.MaxPlaintext+1), nil, false)), "UnsupportedOperationException")
	wantError(t, c.post(t, mainPath+"/keys/k1/encrypt", encryptBody([]byte("x"), random(t, xks.MaxAAD+1), false)), "UnsupportedOperationException")
	big := s
	big.ct = random(t, xks.MaxCiphertext+1)
	wantError(t, c.post(t, mainPath+"/keys/k1/decrypt", decryptBody(big, aad)), "UnsupportedOperationException")
	// A body over MaxBody.
	huge := encryptBody([]byte("x"), nil, false)
	huge["padding"] = strings.Repeat(" ", xks.MaxBody)
	wantError(t, c.post(t, mainPath+"/keys/k1/encrypt", huge), "UnsupportedOperationException")
}

func (f *fixture) testAuthentication(t *testing.T) {
	c := f.client()
	body := encryptBody([]byte("x"), nil, false)
	path := mainPath + "/keys/k1/encrypt"
	unknown := newCred(t)
	for name, cl := range map[string]*client{
		"wrong secret":                 c.with(func(c *client) { c.cred.Secret = f.c2.Secret }),
		"unknown access key id":        c.with(func(c *client) { c.cred = unknown }),
		"another store's credential":   c.with(func(c *client) { c.cred = f.other }),
		"no signature":                 c.with(func(c *client) { c.unsign = true }),
		"service kms":                  c.with(func(c *client) { c.service = "kms" }),
		"signed 6 minutes ago":         c.with(func(c *client) { c.skew = -6 * time.Minute }),
		"signed 6 minutes ahead":       c.with(func(c *client) { c.skew = 6 * time.Minute }),
		"malformed access key id":      c.with(func(c *client) { c.cred.AccessKeyID = "Invalid" + c.cred.AccessKeyID }),
		"region not allowed (no path)": nil,
	} {
		t.Run(name, func(t *testing.T) {
			if cl == nil {
				cl = newClient(f.srv, f.other).with(func(c *client) { c.region = "us-east-1" })
				wantError(t, cl.post(t, rootPath+"/keys/k1/encrypt", body), "AuthenticationFailedException")
				return
			}
			wantError(t, cl.post(t, path, body), "AuthenticationFailedException")
		})
	}
	// Any region is accepted where none is configured, and the allowed one
	// where one is.
	wantOK(t, c.with(func(c *client) { c.region = "ap-southeast-2" }).post(t, path, body))
	wantOK(t, newClient(f.srv, f.other).post(t, rootPath+"/keys/k1/encrypt", body))
	// A changed body breaks the signature.
	req := c.with(func(*client) {})
	r := req.postTampered(t, path, body)
	wantError(t, r, "AuthenticationFailedException")
}

// postTampered signs one body and sends another.
func (c *client) postTampered(t *testing.T, path string, body map[string]any) *response {
	t.Helper()
	signed, _ := json.Marshal(body)
	sent := bytes.Replace(signed, []byte(`"AES_GCM"`), []byte(`"AES_GCM" `), 1)
	return c.doSigned(t, path, signed, sent)
}

func (f *fixture) testCredentialRotation(t *testing.T) {
	body := encryptBody([]byte("x"), nil, false)
	path := mainPath + "/keys/k1/encrypt"
	old, cur := newClient(f.srv, f.c1), newClient(f.srv, f.c2)
	wantOK(t, old.post(t, path, body))
	wantOK(t, cur.post(t, path, body))
	// The reload that retires the old credential applies at once.
	f.creds.set(f.c2)
	defer f.creds.set(f.c1, f.c2)
	wantError(t, old.post(t, path, body), "AuthenticationFailedException")
	wantOK(t, cur.post(t, path, body))
	// A rotated secret under the same access key id.
	rotated := xks.Credential{AccessKeyID: f.c2.AccessKeyID, Secret: newCred(t).Secret}
	f.creds.set(rotated)
	wantError(t, cur.post(t, path, body), "AuthenticationFailedException")
	wantOK(t, newClient(f.srv, rotated).post(t, path, body))
	// A set that is not valid fails closed.
	f.creds.set(f.c1, f.c2, rotated)
	wantError(t, old.post(t, path, body), "InternalException")
	if err := xks.ValidateCredentials([]xks.Credential{f.c1, f.c2, rotated}); err == nil {
		t.Error("three credentials validate")
	}
	for _, bad := range []xks.Credential{
		{AccessKeyID: "SHORT", Secret: f.c1.Secret},
		{AccessKeyID: strings.Repeat("A", 31), Secret: f.c1.Secret},
		{AccessKeyID: strings.Repeat("A", 20) + "1", Secret: f.c1.Secret},
		{AccessKeyID: strings.Repeat("a", 20), Secret: f.c1.Secret},
		{AccessKeyID: f.c1.AccessKeyID, Secret: strings.Repeat("s", 42)},
		{AccessKeyID: f.c1.AccessKeyID, Secret: strings.Repeat("s", 65)},
		{AccessKeyID: f.c1.AccessKeyID, Secret: strings.Repeat("s", 42) + "-"},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%v validates", bad)
		} else if strings.Contains(err.Error(), bad.Secret) {
			t.Errorf("the error names the secret: %v", err)
		}
	}
	if err := xks.ValidateCredentials([]xks.Credential{f.c1, f.c1}); err == nil {
		t.Error("a duplicated access key id validates")
	}
	if s := fmt.Sprintf("%v %+v %#v", f.c1, f.c1, f.c1); strings.Contains(s, f.c1.Secret) {
		t.Errorf("formatting a credential shows its secret: %s", s)
	}
}

func (f *fixture) testKeyState(t *testing.T) {
	c := f.client()
	enc := encryptBody([]byte("x"), nil, false)
	s := parseSealed(t, c.post(t, mainPath+"/keys/encrypt-only/encrypt", enc))
	wantError(t, c.post(t, mainPath+"/keys/encrypt-only/decrypt", decryptBody(s, nil)), "InvalidKeyUsageException")
	wantError(t, c.post(t, mainPath+"/keys/decrypt-only/encrypt", enc), "InvalidKeyUsageException")
	wantError(t, c.post(t, mainPath+"/keys/decrypt-only/encrypt", encryptBody([]byte("x"), []byte("aad"), true)), "InvalidKeyUsageException")
	wantError(t, c.post(t, mainPath+"/keys/disabled/encrypt", enc), "InvalidStateException")
	wantError(t, c.post(t, mainPath+"/keys/disabled/decrypt", decryptBody(s, nil)), "InvalidStateException")
	wantError(t, c.post(t, mainPath+"/keys/pending-deletion/encrypt", enc), "InvalidStateException")
	wantError(t, c.post(t, mainPath+"/keys/pending-deletion/metadata", map[string]any{"requestMetadata": metadata("DescribeKey")}), "InvalidStateException")
	wantError(t, c.post(t, mainPath+"/keys/store-down/encrypt", enc), "InternalException")
	// A disabled key store refuses everything, health included, once the
	// caller is authenticated.
	f.off.Store(true)
	wantError(t, c.post(t, mainPath+"/keys/k1/encrypt", enc), "InvalidStateException")
	wantError(t, c.post(t, mainPath+"/keys/k1/metadata", map[string]any{"requestMetadata": metadata("DescribeKey")}), "InvalidStateException")
	wantError(t, c.post(t, mainPath+"/health", healthBody()), "InvalidStateException")
	wantError(t, c.with(func(c *client) { c.cred.Secret = f.c2.Secret }).post(t, mainPath+"/health", healthBody()), "AuthenticationFailedException")
	f.off.Store(false)
	wantOK(t, c.post(t, mainPath+"/keys/k1/encrypt", enc))
	wantError(t, c.post(t, mainPath+"/keys/no-such-key/encrypt", enc), "KeyNotFoundException")
	wantError(t, c.post(t, mainPath+"/keys/no-such-key/decrypt", decryptBody(s, nil)), "KeyNotFoundException")
	// A key of another store is not found through this one.
	f.keys.add("narrow", newMemKey(t, f.pool, "narrow-only"))
	wantError(t, c.post(t, mainPath+"/keys/narrow-only/encrypt", enc), "KeyNotFoundException")
	// A key whose pool key is not AES-256.
	hk := &memKey{id: "hmac", usages: []string{xks.UsageEncrypt, xks.UsageDecrypt}}
	hk.enabled.Store(true)
	g, err := f.pool.GenerateKey(context.Background(), hsmpool.HMAC256, hsmpool.UsageMAC)
	if err != nil {
		t.Fatal(err)
	}
	hpk, err := hsmpool.NewKey("hmac", 1, g.Blob, nil)
	if err != nil {
		t.Fatal(err)
	}
	hk.addVersion(hpk)
	f.keys.add("main", hk)
	wantError(t, c.post(t, mainPath+"/keys/hmac/encrypt", enc), "InvalidKeyUsageException")
}

func (f *fixture) testAuthorization(t *testing.T) {
	c := f.client()
	enc := encryptBody([]byte("x"), nil, false)
	before := f.authz.Load()
	wantOK(t, c.post(t, mainPath+"/keys/k1/encrypt", enc))
	if f.authz.Load() != before+1 {
		t.Errorf("the authorizer was called %d times for one request", f.authz.Load()-before)
	}
	denied := encryptBody([]byte("x"), nil, false)
	denied["requestMetadata"] = with(metadata("Encrypt"), "kmsViaService", "forbidden")
	wantError(t, c.post(t, mainPath+"/keys/k1/encrypt", denied), "AccessDeniedException")
	dm := map[string]any{"requestMetadata": with(metadata("DescribeKey"), "kmsViaService", "forbidden")}
	wantError(t, c.post(t, mainPath+"/keys/k1/metadata", dm), "AccessDeniedException")
	// Before the key's state is told.
	wantError(t, c.post(t, mainPath+"/keys/disabled/encrypt", denied), "AccessDeniedException")
	// Fields KMS may add are seen by the authorizer.
	tagged := encryptBody([]byte("x"), nil, false)
	tagged["requestMetadata"] = with(metadata("Encrypt"), "callerTag", "blocked")
	wantError(t, c.post(t, mainPath+"/keys/k1/encrypt", tagged), "AccessDeniedException")
	// An authorizer that fails is an internal error, not a denial.
	broken := encryptBody([]byte("x"), nil, false)
	broken["requestMetadata"] = with(metadata("Encrypt"), "kmsViaService", "broken")
	wantError(t, c.post(t, mainPath+"/keys/k1/encrypt", broken), "InternalException")
	// Conditions for key policies.
	md := xks.RequestMetadata{AWSPrincipalARN: "arn:aws:iam::1:user/a", KMSOperation: "Encrypt", Extra: map[string]string{"sourceIdentity": "alice"}}
	cond := md.Conditions()
	if cond["xks:awsprincipalarn"][0] != "arn:aws:iam::1:user/a" || cond["xks:kmsoperation"][0] != "Encrypt" || cond["xks:sourceidentity"][0] != "alice" {
		t.Errorf("Conditions() = %v", cond)
	}
	if _, ok := cond["xks:kmskeyarn"]; ok {
		t.Errorf("an absent field is a condition key")
	}
}

func (f *fixture) testPaths(t *testing.T) {
	c := f.client()
	enc := encryptBody([]byte("x"), nil, false)
	for _, p := range []string{
		"/xks/main/invalid/kms/xks/v1/keys/k1/encrypt",
		"/xks/other/kms/xks/v1/keys/k1/encrypt",
		"/xks/main/kms/xks/v2/keys/k1/encrypt",
		mainPath + "/keys/k1/sign",
		mainPath + "/keys/k1",
		mainPath + "/keys/k1/encrypt/",
		mainPath + "/keys/k1/encrypt/x",
		mainPath + "/keys",
		mainPath + "/health/",
		mainPath + "/status",
		mainPath + "/",
		"/xks/main/kms/xks/v1",
		mainPath + "/keys/k%31/encrypt",
		"/kms/xks/v1x/health",
	} {
		t.Run(p, func(t *testing.T) {
			if !f.h.Match(p) {
				t.Errorf("Match(%q) = false", p)
			}
			wantError(t, c.post(t, p, enc), "InvalidUriPathException")
		})
	}
	for _, p := range []string{"/", "/healthz", "/metrics", "/readyz"} {
		if f.h.Match(p) {
			t.Errorf("Match(%q) = true: the gateway's own route", p)
		}
	}
	if !f.h.Match("/xks/main/anything") {
		t.Error("a path under a store's prefix does not match")
	}
	// 405 for every other method at an API's URI, before authentication.
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete, http.MethodPatch} {
		r := c.with(func(c *client) { c.unsign = true }).do(t, m, mainPath+"/keys/k1/encrypt", nil)
		if r.Status != http.StatusMethodNotAllowed || r.Header.Get("Allow") != "POST" {
			t.Errorf("%s: %d %s, Allow %q", m, r.Status, r.Body, r.Header.Get("Allow"))
		}
	}
	r := c.do(t, http.MethodGet, mainPath+"/keys/k1/metadata", nil)
	if r.Status != http.StatusMethodNotAllowed {
		t.Errorf("GET metadata: %d", r.Status)
	}
	// GET at an unknown path is an unknown path.
	wantError(t, c.do(t, http.MethodGet, "/xks/nowhere/kms/xks/v1/health", nil), "InvalidUriPathException")
	if err := xks.ValidatePrefix("/a//b"); err == nil {
		t.Error("ValidatePrefix accepts //")
	}
	for _, bad := range []string{"a", "/a/", "/a b", "/a/kms/xks/v1", "/" + strings.Repeat("p", 117)} {
		if xks.ValidatePrefix(bad) == nil {
			t.Errorf("ValidatePrefix(%q) = nil", bad)
		}
	}
	for _, good := range []string{"", "/keystores/4a0d79d6-1d1b_49fd", "/" + strings.Repeat("p", 116)} {
		if err := xks.ValidatePrefix(good); err != nil {
			t.Errorf("ValidatePrefix(%q) = %v", good, err)
		}
	}
}

func (f *fixture) testThrottling(t *testing.T) {
	nc := newClient(f.srv, f.other)
	enc := encryptBody([]byte("x"), nil, false)
	// Hold one request of the narrow store (MaxInFlight 1) in Keys.Lookup.
	hold := make(chan struct{})
	f.keys.mu.Lock()
	f.keys.block["held"] = hold
	f.keys.mu.Unlock()
	f.keys.add("narrow", newMemKey(t, f.pool, "held"))
	before := f.keys.looked.Load()
	var wg sync.WaitGroup
	wg.Add(1)
	var held *response
	go func() {
		defer wg.Done()
		held = nc.post(t, narrowPath+"/keys/held/encrypt", enc)
	}()
	eventually(t, 10*time.Second, "the held request to reach Keys.Lookup", func() bool { return f.keys.looked.Load() > before })
	wantError(t, nc.post(t, narrowPath+"/keys/k1/encrypt", enc), "ThrottlingException")
	wantError(t, nc.post(t, narrowPath+"/health", healthBody()), "ThrottlingException")
	// Other stores are not held back.
	wantOK(t, nc.post(t, rootPath+"/keys/k1/encrypt", enc))
	wantOK(t, f.client().post(t, mainPath+"/keys/k1/encrypt", enc))
	close(hold)
	wg.Wait()
	wantOK(t, held)
	wantOK(t, nc.post(t, narrowPath+"/keys/k1/encrypt", enc))

	// The rated store: a burst of 2, then 1 request per 1000 s.
	wantOK(t, nc.post(t, ratedPath+"/health", healthBody()))
	wantOK(t, nc.post(t, ratedPath+"/keys/k1/encrypt", enc))
	wantError(t, nc.post(t, ratedPath+"/keys/k1/encrypt", enc), "ThrottlingException")
	wantOK(t, nc.post(t, rootPath+"/keys/k1/encrypt", enc))
	// Authentication comes before the quota: a request with another
	// store's credential is refused as such, not throttled.
	wantError(t, nc.with(func(c *client) { c.cred = f.c1 }).post(t, ratedPath+"/health", healthBody()), "AuthenticationFailedException")
}

func (f *fixture) testMTLS(t *testing.T) {
	hc := func(cert *tls.Certificate) *client {
		c := newClient(f.srv, f.other)
		tr := f.srv.Client().Transport.(*http.Transport).Clone()
		if cert != nil {
			tr.TLSClientConfig.Certificates = []tls.Certificate{*cert}
		}
		c.http = &http.Client{Transport: tr}
		return c
	}
	good := f.ca.client(t, "cks.kms."+testRegion+".amazonaws.com", f.ca)
	otherCN := f.ca.client(t, "cks.kms.us-east-1.amazonaws.com", f.ca)
	stranger := newTestCA(t)
	foreign := stranger.client(t, "cks.kms."+testRegion+".amazonaws.com", stranger)
	wantOK(t, hc(&good).post(t, mtlsPath+"/health", healthBody()))
	wantOK(t, hc(&good).post(t, mtlsPath+"/keys/k1/encrypt", encryptBody([]byte("x"), nil, false)))
	wantError(t, hc(nil).post(t, mtlsPath+"/health", healthBody()), "AuthenticationFailedException")
	wantError(t, hc(&otherCN).post(t, mtlsPath+"/health", healthBody()), "AuthenticationFailedException")
	wantError(t, hc(&foreign).post(t, mtlsPath+"/health", healthBody()), "AuthenticationFailedException")
	// The certificate does not replace the signature.
	wantError(t, hc(&good).with(func(c *client) { c.unsign = true }).post(t, mtlsPath+"/health", healthBody()), "AuthenticationFailedException")
}

func (f *fixture) testAudit(t *testing.T) {
	c := f.client()
	pt := []byte("top secret plaintext that must never be audited")
	aad := []byte("aad that is not recorded")
	r := c.post(t, mainPath+"/keys/k1/encrypt", encryptBody(pt, aad, true))
	s := parseSealed(t, r)
	ev := f.audit.byRequestID(t, r.Header.Get("X-Amzn-Requestid"))
	if ev.Store != "main" || ev.Operation != xks.OpEncrypt || ev.ExternalKeyID != "k1" || ev.AccessKeyID != f.c1.AccessKeyID ||
		!ev.Authenticated || ev.Region != testRegion || ev.Outcome != xks.OutcomeOK || ev.ErrorName != "" || ev.HTTPStatus != 200 ||
		ev.KeyVersion != 1 || ev.Latency <= 0 || ev.SourceIP != "127.0.0.1" || ev.Time.IsZero() || ev.Key == nil || ev.Key.ID() != "k1" {
		t.Errorf("encrypt event = %+v", ev)
	}
	md := ev.Metadata
	if md.AWSPrincipalARN != "arn:aws:iam::123456789012:user/Alice" || md.KMSOperation != "Encrypt" ||
		md.KMSRequestID != "4112f4d6-db54-4af4-ae30-c55a22a8dfae" || md.KMSViaService != "ebs" || md.KMSKeyARN == "" {
		t.Errorf("event metadata = %+v", md)
	}
	if m := md.Map(); m["kmsRequestId"] != md.KMSRequestID || m["kmsViaService"] != "ebs" {
		t.Errorf("Metadata.Map() = %v", m)
	}
	r = c.post(t, mainPath+"/keys/k1/decrypt", decryptBody(s, aad))
	wantOK(t, r)
	if ev := f.audit.byRequestID(t, r.Header.Get("X-Amzn-Requestid")); ev.Operation != xks.OpDecrypt || ev.Metadata.KMSOperation != "Decrypt" || ev.KeyVersion != 1 {
		t.Errorf("decrypt event = %+v", ev)
	}
	// Failures are recorded with their error name.
	r = c.with(func(c *client) { c.cred.Secret = f.c2.Secret }).post(t, mainPath+"/keys/k1/encrypt", encryptBody(pt, nil, false))
	if ev := f.audit.byRequestID(t, r.Header.Get("X-Amzn-Requestid")); ev.Outcome != xks.OutcomeDenied || ev.ErrorName != "AuthenticationFailedException" ||
		ev.HTTPStatus != 401 || ev.Authenticated || ev.AccessKeyID != f.c1.AccessKeyID {
		t.Errorf("authentication failure event = %+v", ev)
	}
	r = c.post(t, mainPath+"/keys/nope/encrypt", encryptBody(pt, nil, false))
	if ev := f.audit.byRequestID(t, r.Header.Get("X-Amzn-Requestid")); ev.Outcome != xks.OutcomeError || ev.ErrorName != "KeyNotFoundException" || ev.ExternalKeyID != "nope" {
		t.Errorf("key not found event = %+v", ev)
	}
	r = c.post(t, "/nowhere/kms/xks/v1/health", healthBody())
	if ev := f.audit.byRequestID(t, r.Header.Get("X-Amzn-Requestid")); ev.ErrorName != "InvalidUriPathException" || ev.Store != "" || ev.Path != "/nowhere/kms/xks/v1/health" {
		t.Errorf("invalid path event = %+v", ev)
	}
	r = c.do(t, http.MethodGet, mainPath+"/health", nil)
	if ev := f.audit.byRequestID(t, r.Header.Get("X-Amzn-Requestid")); ev.HTTPStatus != 405 || ev.Outcome != xks.OutcomeError {
		t.Errorf("405 event = %+v", ev)
	}
	// No event ever holds plaintext, AAD or ciphertext.
	all, _ := json.Marshal(f.audit.all())
	for _, secret := range [][]byte{pt, aad, []byte(b64(pt)), []byte(b64(aad)), []byte(b64(s.ct)), []byte(f.c1.Secret)} {
		if bytes.Contains(all, secret) {
			t.Errorf("an audit event holds %q", secret)
		}
	}
}

func (f *fixture) testAuditFailure(t *testing.T) {
	c := f.client()
	f.audit.fail.Store(true)
	defer f.audit.fail.Store(false)
	r := c.post(t, mainPath+"/keys/k1/encrypt", encryptBody([]byte("x"), nil, false))
	wantError(t, r, "InternalException")
	if _, ok := r.JSON["ciphertext"]; ok {
		t.Error("a ciphertext was returned without an audit record")
	}
	wantError(t, c.post(t, mainPath+"/health", healthBody()), "InternalException")
}

// TestFaults drives the HSM failures through the API: a hung HSM gives
// DependencyTimeoutException, a failed one InternalException, and health
// reports each slot.
func TestFaults(t *testing.T) {
	pool, _ := openPool(t, 2)
	keys := newMemKeys()
	keys.add("s", newMemKey(t, pool, "k1"))
	cred := newCred(t)
	h := &xks.Handler{Pool: pool, Log: quietLog(), Timeout: 300 * time.Millisecond,
		Stores: []*xks.Store{{Name: "s", Prefix: "/s", Credentials: func() []xks.Credential { return []xks.Credential{cred} }, Keys: keys}}}
	srv := serve(t, h)
	c := newClient(srv, cred)
	enc := encryptBody([]byte("x"), nil, false)
	s := parseSealed(t, c.post(t, "/s/kms/xks/v1/keys/k1/encrypt", enc))
	wantOK(t, c.post(t, "/s/kms/xks/v1/health", healthBody())) // makes the test key
	names := []string{pool.Status()[0].Name, pool.Status()[1].Name}
	heal := func() {
		t.Helper()
		pool.ClearFaults()
		for _, n := range names {
			pool.ProbeSlot(n)
		}
		eventually(t, 10*time.Second, "both slots healthy again", func() bool { return pool.Healthy() == 2 })
	}

	t.Run("one slot down", func(t *testing.T) {
		defer heal()
		if err := pool.InjectFault(names[0], hsmpool.FaultDeviceError); err != nil {
			t.Fatal(err)
		}
		pool.ProbeSlot(names[0])
		r := c.post(t, "/s/kms/xks/v1/health", healthBody())
		wantOK(t, r)
		var hr struct {
			Details []struct{ ID, HealthStatus string } `json:"ekmFleetDetails"`
		}
		json.Unmarshal(r.Body, &hr)
		if len(hr.Details) != 2 || hr.Details[0].ID != names[0] || hr.Details[0].HealthStatus != "UNAVAILABLE" || hr.Details[1].HealthStatus != "ACTIVE" {
			t.Errorf("health with one slot down = %s", r.Body)
		}
		wantOK(t, c.post(t, "/s/kms/xks/v1/keys/k1/decrypt", decryptBody(s, nil)))
	})
	t.Run("every slot failed", func(t *testing.T) {
		defer heal()
		for _, n := range names {
			pool.InjectFault(n, hsmpool.FaultDeviceError)
		}
		wantError(t, c.post(t, "/s/kms/xks/v1/keys/k1/encrypt", enc), "InternalException")
		wantError(t, c.post(t, "/s/kms/xks/v1/health", healthBody()), "InternalException")
	})
	// warm has both slots hold the unwrapped keys (k1 and the health
	// check's), so that a hang hits an operation, not the control session
	// (a hung control session makes the pool answer "throttled").
	warm := func() {
		t.Helper()
		eventually(t, 10*time.Second, "both slots to cache the keys", func() bool {
			wantOK(t, c.post(t, "/s/kms/xks/v1/keys/k1/decrypt", decryptBody(s, nil)))
			wantOK(t, c.post(t, "/s/kms/xks/v1/health", healthBody()))
			st := pool.Status()
			return st[0].CachedKeys >= 2 && st[1].CachedKeys >= 2
		})
	}
	t.Run("hung HSM", func(t *testing.T) {
		defer heal()
		warm()
		for _, n := range names {
			pool.InjectFault(n, hsmpool.FaultHang)
		}
		start := time.Now()
		wantError(t, c.post(t, "/s/kms/xks/v1/keys/k1/decrypt", decryptBody(s, nil)), "DependencyTimeoutException")
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("the timeout took %v", d)
		}
	})
	t.Run("hung HSM health", func(t *testing.T) {
		defer heal()
		warm()
		for _, n := range names {
			pool.InjectFault(n, hsmpool.FaultHang)
		}
		wantError(t, c.post(t, "/s/kms/xks/v1/health", healthBody()), "DependencyTimeoutException")
	})
	wantOK(t, c.post(t, "/s/kms/xks/v1/keys/k1/decrypt", decryptBody(s, nil)))
}

// TestConfig checks the Handler's validation.
func TestConfig(t *testing.T) {
	cred := xks.Credential{AccessKeyID: strings.Repeat("A", 20), Secret: strings.Repeat("s", 43)}
	creds := func() []xks.Credential { return []xks.Credential{cred} }
	pool := &hsmpool.Pool{}
	ok := func() *xks.Store { return &xks.Store{Name: "a", Prefix: "/a", Credentials: creds, Keys: newMemKeys()} }
	for name, h := range map[string]*xks.Handler{
		"no pool":        {Stores: []*xks.Store{ok()}},
		"no store":       {Pool: pool},
		"no name":        {Pool: pool, Stores: []*xks.Store{{Prefix: "/a", Credentials: creds, Keys: newMemKeys()}}},
		"no keys":        {Pool: pool, Stores: []*xks.Store{{Name: "a", Credentials: creds}}},
		"no credentials": {Pool: pool, Stores: []*xks.Store{{Name: "a", Keys: newMemKeys()}}},
		"bad prefix":     {Pool: pool, Stores: []*xks.Store{{Name: "a", Prefix: "a/", Credentials: creds, Keys: newMemKeys()}}},
		"same prefix":    {Pool: pool, Stores: []*xks.Store{ok(), func() *xks.Store { s := ok(); s.Name = "b"; return s }()}},
		"same name":      {Pool: pool, Stores: []*xks.Store{ok(), func() *xks.Store { s := ok(); s.Prefix = "/b"; return s }()}},
		"bad region":     {Pool: pool, Stores: []*xks.Store{func() *xks.Store { s := ok(); s.Regions = []string{"EU WEST"}; return s }()}},
		"negative quota": {Pool: pool, Stores: []*xks.Store{func() *xks.Store { s := ok(); s.MaxInFlight = -1; return s }()}},
		"empty mTLS":     {Pool: pool, Stores: []*xks.Store{func() *xks.Store { s := ok(); s.ClientCert = &xks.ClientCertPolicy{}; return s }()}},
	} {
		if err := h.Validate(); err == nil {
			t.Errorf("%s: Validate() = nil", name)
		}
	}
	h := &xks.Handler{Pool: pool, Stores: []*xks.Store{ok(), func() *xks.Store { s := ok(); s.Name, s.Prefix = "root", "/"; return s }()}}
	if err := h.Validate(); err != nil {
		t.Fatalf("Validate() = %v", err)
	}
	// A store without credentials yet is valid (it refuses requests until
	// one is made).
	none := &xks.Handler{Pool: pool, Stores: []*xks.Store{{Name: "a", Keys: newMemKeys(), Credentials: func() []xks.Credential { return nil }}}}
	if err := none.Validate(); err != nil {
		t.Fatalf("a store without credentials: Validate() = %v", err)
	}
	if got := h.Stores[1].URIPath(); got != "/kms/xks/v1" {
		t.Errorf("URIPath of the root store = %q", got)
	}
	// The KMS console's configuration file.
	b, err := h.Stores[0].ConsoleConfig(cred)
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		XksProxyUriPath                  string
		XksProxyAuthenticationCredential struct{ AccessKeyId, RawSecretAccessKey string }
	}
	if err := json.Unmarshal(b, &file); err != nil || file.XksProxyUriPath != "/a/kms/xks/v1" ||
		file.XksProxyAuthenticationCredential.AccessKeyId != cred.AccessKeyID || file.XksProxyAuthenticationCredential.RawSecretAccessKey != cred.Secret {
		t.Errorf("ConsoleConfig = %s (%v)", b, err)
	}
	if _, err := h.Stores[0].ConsoleConfig(xks.Credential{AccessKeyID: "x"}); err == nil {
		t.Error("ConsoleConfig takes an invalid credential")
	}
}

// Test helpers.

func random(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func mustB64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64Std.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func without(m map[string]any, k string) map[string]any {
	out := map[string]any{}
	for a, b := range m {
		if a != k {
			out[a] = b
		}
	}
	return out
}

func with(m map[string]any, k string, v any) map[string]any {
	out := without(m, k)
	out[k] = v
	return out
}

// testCA issues client certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key}
}

func (ca *testCA) client(t *testing.T, cn string, issuer *testCA) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer.cert, &key.PublicKey, issuer.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
