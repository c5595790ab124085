package gateway_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/gateway/audit"
	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/hsmpool"
)

// rawPost sends a KMS request with the admin's client certificate and no
// SDK, for what the SDK would never send.
func (tg *testGateway) rawPost(t *testing.T, target, contentType string, body []byte, withCert bool) (int, map[string]string, http.Header) {
	t.Helper()
	cfg := &tls.Config{RootCAs: tg.caPool}
	if withCert {
		cert, err := tls.LoadX509KeyPair(tg.admin.ClientCert, tg.admin.ClientKey)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	req, _ := http.NewRequest("POST", tg.url+"/", bytes.NewReader(body))
	req.Header.Set("X-Amz-Target", target)
	req.Header.Set("Content-Type", contentType)
	resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := map[string]string{}
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out, resp.Header
}

func TestProtocolErrors(t *testing.T) {
	tg := startGateway(t, nil)
	const ct = "application/x-amz-json-1.1"
	cases := []struct {
		name     string
		target   string
		body     []byte
		withCert bool
		status   int
		typ      string
	}{
		{"unknown operation", "TrentService.Nope", []byte("{}"), true, 400, "UnknownOperationException"},
		{"other service", "DynamoDB_20120810.ListTables", []byte("{}"), true, 400, "UnknownOperationException"},
		{"bad JSON", "TrentService.Encrypt", []byte("{not json"), true, 400, "SerializationException"},
		{"bad base64", "TrentService.Encrypt", []byte(`{"KeyId":"x","Plaintext":"@@@"}`), true, 400, "SerializationException"},
		{"wrong type", "TrentService.ListKeys", []byte(`{"Limit":"ten"}`), true, 400, "SerializationException"},
		{"too large", "TrentService.Encrypt", bytes.Repeat([]byte(" "), gateway.MaxBody+1), true, 400, "ValidationException"},
		{"no credentials", "TrentService.ListKeys", []byte("{}"), false, 400, "MissingAuthenticationTokenException"},
		{"limit out of range", "TrentService.ListKeys", []byte(`{"Limit":0}`), true, 400, "ValidationException"},
		{"empty plaintext", "TrentService.Encrypt", []byte(`{"KeyId":"alias/x","Plaintext":""}`), true, 400, "ValidationException"},
		{"bad context", "TrentService.Encrypt", []byte(`{"KeyId":"alias/x","Plaintext":"eA==","EncryptionContext":{"":"v"}}`), true, 400, "ValidationException"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body, h := tg.rawPost(t, tc.target, ct, tc.body, tc.withCert)
			if status != tc.status || body["__type"] != tc.typ || body["message"] == "" {
				t.Fatalf("got %d %v, want %d %s", status, body, tc.status, tc.typ)
			}
			if h.Get("x-amzn-RequestId") == "" || h.Get("Content-Type") != ct {
				t.Errorf("headers %v", h)
			}
		})
	}
	// A valid request through the same raw path works: the cases above fail
	// for their own reasons.
	status, body, _ := tg.rawPost(t, "TrentService.ListKeys", ct, []byte("{}"), true)
	if status != 200 || body["__type"] != "" {
		t.Fatalf("valid raw request: %d %v", status, body)
	}
}

func TestAuthenticationErrors(t *testing.T) {
	tg := startGateway(t, nil)
	ctx := context.Background()
	ak := tg.admin.AccessKeyID
	cases := map[string]struct {
		c    *kms.Client
		code string
	}{
		"wrong secret": {tg.sigv4Client(ak, strings.Repeat("x", 40)), "InvalidSignatureException"},
		"unknown key":  {tg.sigv4Client("AKIAAAAAAAAAAAAAAAAA", tg.admin.SecretAccessKey), "UnrecognizedClientException"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := tc.c.ListKeys(ctx, &kms.ListKeysInput{})
			wantCode(t, err, tc.code)
		})
	}
	// Another region's signature is refused.
	other := kms.New(kms.Options{Region: "us-west-2", BaseEndpoint: aws.String(tg.url),
		HTTPClient:  &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tg.caPool}}},
		Credentials: staticCreds{ak, tg.admin.SecretAccessKey}, Retryer: aws.NopRetryer{}})
	_, err := other.ListKeys(ctx, &kms.ListKeysInput{})
	wantCode(t, err, "InvalidSignatureException")

	// A revoked key stops working at once; a second key keeps working.
	ids := tg.gw.Identities()
	ak2, secret2, err := ids.CreateAccessKey(ctx, gateway.AdminName)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ids.CreateAccessKey(ctx, gateway.AdminName); err == nil {
		t.Fatal("a third active access key was issued")
	}
	if _, err := tg.sigv4Client(ak2, secret2).ListKeys(ctx, &kms.ListKeysInput{}); err != nil {
		t.Fatal(err)
	}
	if err := ids.RevokeAccessKey(ak2); err != nil {
		t.Fatal(err)
	}
	_, err = tg.sigv4Client(ak2, secret2).ListKeys(ctx, &kms.ListKeysInput{})
	wantCode(t, err, "UnrecognizedClientException")
	if _, err := tg.sigv4Client(ak, tg.admin.SecretAccessKey).ListKeys(ctx, &kms.ListKeysInput{}); err != nil {
		t.Fatal(err)
	}
}

func TestAccessDenied(t *testing.T) {
	tg := startGateway(t, nil)
	ctx := context.Background()
	admin := tg.sigv4Client(tg.admin.AccessKeyID, tg.admin.SecretAccessKey)
	k, err := admin.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	ids := tg.gw.Identities()
	if err := ids.CreatePrincipal(gateway.PrincipalSpec{Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	akid, secret, err := ids.CreateAccessKey(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	alice := tg.sigv4Client(akid, secret)
	_, err = alice.Encrypt(ctx, &kms.EncryptInput{KeyId: k.KeyMetadata.KeyId, Plaintext: []byte("x")})
	wantCode(t, err, "AccessDeniedException")
	_, err = alice.DisableKey(ctx, &kms.DisableKeyInput{KeyId: k.KeyMetadata.KeyId})
	wantCode(t, err, "AccessDeniedException")
	// Alice's own key works for her, and she lists only it.
	mine, err := alice.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Encrypt(ctx, &kms.EncryptInput{KeyId: mine.KeyMetadata.KeyId, Plaintext: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	list, err := alice.ListKeys(ctx, &kms.ListKeysInput{})
	if err != nil || len(list.Keys) != 1 || *list.Keys[0].KeyId != *mine.KeyMetadata.KeyId {
		t.Fatalf("alice lists %+v %v", list, err)
	}
	// The admin may use it too.
	if _, err := admin.Encrypt(ctx, &kms.EncryptInput{KeyId: mine.KeyMetadata.KeyId, Plaintext: []byte("x")}); err != nil {
		t.Fatal(err)
	}
}

// Errors that need the HSM or the keystore to misbehave.
func TestServerSideErrors(t *testing.T) {
	tg := startGateway(t, func(po *hsmpool.Options, gc *gateway.Config) {
		po.OpTimeout = 300 * time.Millisecond
		gc.RequestTimeout = 2 * time.Second
		gc.MaxInFlight = 1
	})
	ctx := context.Background()
	// One HTTP/2 connection carries every request, so that requests made
	// while the HSMs hang need no new TLS handshake (whose signature the
	// HSM makes).
	c := kms.New(kms.Options{Region: testRegion, BaseEndpoint: aws.String(tg.url),
		HTTPClient: &http.Client{Transport: &http.Transport{ForceAttemptHTTP2: true,
			TLSClientConfig: &tls.Config{RootCAs: tg.caPool}}},
		Credentials: staticCreds{tg.admin.AccessKeyID, tg.admin.SecretAccessKey}, Retryer: aws.NopRetryer{}})
	k, err := c.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}

	// A key whose stored material is broken: KMSInternalException.
	good, _ := tg.store.Key(*k.KeyMetadata.KeyId)
	broken := *good
	broken.ID = "0badb10b-0000-4000-8000-000000000000"
	broken.Versions = []keystore.Version{{Number: 1, Blob: []byte("not a blob")}}
	pending := *good
	pending.ID = "0badb10b-0000-4000-8000-000000000001"
	pending.State, pending.Versions = keystore.StatePendingImport, nil
	for _, key := range []keystore.Key{broken, pending} {
		if err := tg.store.Apply(&keystore.CreateKey{Key: key}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(broken.ID), Plaintext: []byte("x")})
	wantCode(t, err, "KMSInternalException")
	_, err = c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(pending.ID), Plaintext: []byte("x")})
	wantCode(t, err, "KMSInvalidStateException")

	// Every slot hangs: the request ends at its deadline with 503
	// DependencyTimeoutException, and a request arriving meanwhile is
	// shed with ThrottlingException (MaxInFlight is 1).
	clearFaults := tg.pool.ClearFaults
	t.Cleanup(clearFaults) // before the gateway and pool close, even on failure
	for _, st := range tg.pool.Status() {
		if err := tg.pool.InjectFault(st.Name, hsmpool.FaultHang); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	var hungErr error
	go func() {
		defer wg.Done()
		_, hungErr = c.Encrypt(ctx, &kms.EncryptInput{KeyId: k.KeyMetadata.KeyId, Plaintext: []byte("x")})
	}()
	// Once the Encrypt is held in the pool (it holds the one place), a
	// ListKeys is shed.
	for deadline := time.Now().Add(5 * time.Second); !inPool(tg.pool); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the request never reached the pool")
		}
	}
	_, shed := c.ListKeys(ctx, &kms.ListKeysInput{})
	if shed == nil {
		wg.Wait()
		t.Fatal("no request was shed while one was in flight")
	}
	wg.Wait()
	wantCode(t, shed, "ThrottlingException")
	wantCode(t, hungErr, "DependencyTimeoutException")
	clearFaults()
}

// Keys made before a restart decrypt what they encrypted before it, and
// the data folder and logs never hold key material or secrets.
func TestRestartAndNoSecretsAtRest(t *testing.T) {
	var logs bytes.Buffer
	tg := startGateway(t, nil)
	ctx := context.Background()
	c := tg.sigv4Client(tg.admin.AccessKeyID, tg.admin.SecretAccessKey)
	k, err := c.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	dk, err := c.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: k.KeyMetadata.KeyId, KeySpec: "AES_256"})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: k.KeyMetadata.KeyId, Plaintext: []byte("before restart")})
	if err != nil {
		t.Fatal(err)
	}
	// Restart: stop serving, reopen the keystore, serve again.
	tg.stop()
	if err := tg.store.Close(); err != nil {
		t.Fatal(err)
	}
	store, err := keystore.Open(filepath.Join(tg.dir, gateway.KeystoreFile))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	gw, err := gateway.New(gateway.Config{Pool: tg.pool, Store: store, Region: testRegion, Account: testAccount,
		Logger: slogTo(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	srv, _, _ := startServing(t, ctx, gw, tg.pool, store, tg.dir)
	c2 := kms.New(kms.Options{Region: testRegion, BaseEndpoint: aws.String(srv),
		HTTPClient:  &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tg.caPool}}},
		Credentials: staticCreds{tg.admin.AccessKeyID, tg.admin.SecretAccessKey}, Retryer: aws.NopRetryer{}})
	dec, err := c2.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
	if err != nil || string(dec.Plaintext) != "before restart" {
		t.Fatalf("decrypt after restart: %v", err)
	}
	if _, err := c2.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: []byte("garbage that is long enough to parse as nothing at all")}); err == nil {
		t.Fatal("garbage decrypted")
	}

	// Nothing secret at rest: no data key, no access key secret, no PIN.
	secrets := map[string][]byte{
		"data key":          dk.Plaintext,
		"access key secret": []byte(tg.admin.SecretAccessKey),
	}
	err = filepath.WalkDir(tg.dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for name, s := range secrets {
			if bytes.Contains(raw, s) {
				t.Errorf("%s found in %s", name, path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range secrets {
		if bytes.Contains(logs.Bytes(), s) {
			t.Errorf("%s found in the logs", name)
		}
	}
}

// Encrypt takes up to 4096 bytes of plaintext: the limit itself passes and
// one byte more is a ValidationException. Sent with plain net/http, not the
// SDK (whose transport drops a small share of bodies over 4 KiB: upstream
// aws-sdk-go-v2 issues 1825 and 2737).
func TestPlaintextLimit(t *testing.T) {
	tg := startGateway(t, nil)
	ctx := context.Background()
	k, err := tg.mtlsClient(t).CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		n      int
		status int
		typ    string
	}{{4096, 200, ""}, {4097, 400, "ValidationException"}} {
		body, _ := json.Marshal(map[string]any{"KeyId": *k.KeyMetadata.KeyId, "Plaintext": bytes.Repeat([]byte{7}, tc.n)})
		for i := 0; i < 20; i++ { // repeated: a server-side flake would show
			status, out, _ := tg.rawPost(t, "TrentService.Encrypt", "application/x-amz-json-1.1", body, true)
			if status != tc.status || out["__type"] != tc.typ {
				t.Fatalf("%d bytes: %d %v", tc.n, status, out)
			}
		}
	}
}

// Shutting down lets a request in flight finish.
func TestGracefulShutdown(t *testing.T) {
	tg := startGateway(t, func(po *hsmpool.Options, gc *gateway.Config) { po.OpTimeout = 10 * time.Second })
	ctx := context.Background()
	// One HTTP/2 connection, warmed up before the HSMs hang: the request
	// held below is in the handler, not in a new TLS handshake (whose
	// signature the hanging HSMs would hold too).
	cert, err := tls.LoadX509KeyPair(tg.admin.ClientCert, tg.admin.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	c := kms.New(kms.Options{Region: testRegion, BaseEndpoint: aws.String(tg.url),
		HTTPClient: &http.Client{Transport: &http.Transport{ForceAttemptHTTP2: true,
			TLSClientConfig: &tls.Config{RootCAs: tg.caPool, Certificates: []tls.Certificate{cert}}}},
		Credentials: aws.AnonymousCredentials{}, Retryer: aws.NopRetryer{}})
	k, err := c.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for _, st := range tg.pool.Status() {
		names = append(names, st.Name)
	}
	// Released all at once, the held call (which the hang ends with a
	// device error) is retried on a slot that no longer hangs.
	release := tg.pool.ClearFaults
	t.Cleanup(release)
	// Warm every slot's key cache, then hold every slot's calls.
	for i := 0; i < 20; i++ {
		if _, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: k.KeyMetadata.KeyId, Plaintext: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range names {
		if err := tg.pool.InjectFault(n, hsmpool.FaultHang); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: k.KeyMetadata.KeyId, Plaintext: []byte("in flight")})
		done <- err
	}()
	for deadline := time.Now().Add(5 * time.Second); !inPool(tg.pool); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the request never reached the pool")
		}
	}
	stopped := make(chan struct{})
	go func() { tg.stop(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("shutdown returned while a request was in flight")
	case <-time.After(300 * time.Millisecond):
	}
	release()
	if err := <-done; err != nil {
		t.Fatalf("the request in flight failed during shutdown: %v", err)
	}
	<-stopped
}

func TestIssueClientCert(t *testing.T) {
	tg := startGateway(t, nil)
	ctx := context.Background()
	if err := tg.gw.Identities().CreatePrincipal(gateway.PrincipalSpec{Name: "carol"}); err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := gateway.IssueClientCert(ctx, tg.pool, tg.store, tg.dir, "carol", &key.PublicKey, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// Carol authenticates with it over mTLS and sees her (empty) key list.
	c := kms.New(kms.Options{Region: testRegion, BaseEndpoint: aws.String(tg.url),
		HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tg.caPool,
			Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key}}}}},
		Credentials: aws.AnonymousCredentials{}, Retryer: aws.NopRetryer{}})
	list, err := c.ListKeys(ctx, &kms.ListKeysInput{})
	if err != nil || len(list.Keys) != 0 {
		t.Fatalf("carol's ListKeys: %+v %v", list, err)
	}
	if _, err := gateway.IssueClientCert(ctx, tg.pool, tg.store, tg.dir, "nobody", &key.PublicKey, time.Hour, time.Now()); err == nil {
		t.Fatal("a certificate for an unknown principal")
	}
}

// inPool reports whether any request is in flight in the pool.
func inPool(p *hsmpool.Pool) bool {
	for _, st := range p.Status() {
		if st.InFlight > 0 {
			return true
		}
	}
	return false
}

// serveAudited starts a second gateway on tg's pool and keystore with the
// audit log on (and the external key stores of x, if any). stop ends
// serving; close w after it to flush the log.
func (tg *testGateway) serveAudited(t *testing.T, x *gateway.XKSOptions) (gw *gateway.Gateway, w *audit.Writer, url string, stop func()) {
	t.Helper()
	ctx := context.Background()
	w, err := gateway.OpenAudit(ctx, tg.pool, tg.store, tg.dir)
	if err != nil {
		t.Fatal(err)
	}
	gw, err = gateway.New(gateway.Config{Pool: tg.pool, Store: tg.store, Region: testRegion, Account: testAccount, Audit: w, XKS: x,
		QuorumLedger: filepath.Join(tg.dir, gateway.QuorumLedgerFile)})
	if err != nil {
		t.Fatal(err)
	}
	url, _, stop = startServing(t, ctx, gw, tg.pool, tg.store, tg.dir)
	return gw, w, url, stop
}

// Every request, served or refused, leaves one audit record, durable
// before its answer; the chain verifies with the audit key's public half.
func TestAuditRecordsEveryRequest(t *testing.T) {
	tg := startGateway(t, nil)
	ctx := context.Background()
	_, w, url, stop := tg.serveAudited(t, nil)
	transport := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tg.caPool}}
	c := kms.New(kms.Options{Region: testRegion, BaseEndpoint: aws.String(url), HTTPClient: &http.Client{Transport: transport},
		Credentials: staticCreds{tg.admin.AccessKeyID, tg.admin.SecretAccessKey}, Retryer: aws.NopRetryer{}})
	k, err := c.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	const n = 40
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: k.KeyMetadata.KeyId, Plaintext: []byte("audited"),
				EncryptionContext: map[string]string{"case": "audit"}}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	bad := kms.New(kms.Options{Region: testRegion, BaseEndpoint: aws.String(url),
		HTTPClient:  &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tg.caPool}}},
		Credentials: staticCreds{tg.admin.AccessKeyID, strings.Repeat("x", 40)}, Retryer: aws.NopRetryer{}})
	if _, err := bad.ListKeys(ctx, &kms.ListKeysInput{}); err == nil {
		t.Fatal("a wrong secret was accepted")
	}
	// The 40 concurrent calls may have left connections the client dialled
	// but never used; the server waits 5 s for such a connection's first
	// request before it counts as idle. Close them from the client's side.
	transport.CloseIdleConnections()
	stop()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	pubPEM, err := os.ReadFile(filepath.Join(tg.dir, gateway.AuditKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pubPEM)
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Verify(filepath.Join(tg.dir, gateway.AuditDir), pub)
	if err != nil {
		t.Fatal(err)
	}
	var encrypts, denied int
	err = audit.Query(filepath.Join(tg.dir, gateway.AuditDir), audit.Filter{}, func(r audit.Record) error {
		if r.Kind != audit.KindRecord {
			return nil
		}
		switch {
		case r.Operation == "Encrypt" && r.Outcome == audit.OutcomeOK && r.KeyID == *k.KeyMetadata.KeyId &&
			r.KeyVersion == 1 && r.EncryptionContext["case"] == "audit" && r.Principal == gateway.AdminName:
			encrypts++
		case r.Outcome == audit.OutcomeDenied && r.ErrorCode == "InvalidSignatureException" && r.Principal == tg.admin.AccessKeyID:
			denied++
		}
		return nil
	})
	if err != nil || encrypts != n || denied != 1 || rep.Records < n+2 {
		t.Fatalf("audit: %v, %d encrypt records (want %d), %d denied (want 1), %d records", err, encrypts, n, denied, rep.Records)
	}
	// Nothing secret in the log: not the plaintext, not the secret.
	files, _ := filepath.Glob(filepath.Join(tg.dir, gateway.AuditDir, "*"))
	for _, f := range files {
		raw, _ := os.ReadFile(f)
		if bytes.Contains(raw, []byte("audited")) || bytes.Contains(raw, []byte(tg.admin.SecretAccessKey)) {
			t.Errorf("%s holds a plaintext or a secret", f)
		}
	}
}
