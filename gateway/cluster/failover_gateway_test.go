package cluster_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
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
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/smithy-go"

	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/gateway/cluster"
	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/hsmpool"
	"github.com/hsmgate/hsmgate/internal/gatewaytest"
	"github.com/hsmgate/hsmgate/internal/pki"
	"github.com/hsmgate/hsmgate/internal/testenv"
)

// Failover against real gateways: two gateways on SoftHSM tokens of one
// module (each its own token, domain key, keystore and CA), gossiping on
// loopback. The "local" gateway's slot is made to fail; a client calls it
// with the AWS SDK, signing with SigV4 for the local gateway's address, and
// the peer verifies that signature on the forwarded request.

const region = "eu-west-1"

// testGateway is a real gateway, not yet serving.
type testGateway struct {
	gw    *gateway.Gateway
	pool  *hsmpool.Pool
	store *keystore.Store
	dir   string
	admin *gateway.AdminCredentials
	cert  tls.Certificate // its TLS server certificate (key in the pool)
	cas   *x509.CertPool  // its CA
}

// newTestGateway opens a pool on one token of env and builds a gateway on
// it; attestation, when set, receives the server certificate and returns
// the gateway's attestation options.
//
// Fault injection wraps the module all pools of the process share, so only
// the first pool opened on it may have it (hsmpool installs the injector in
// the shared module).
func newTestGateway(t *testing.T, env *testenv.SoftHSM, token string, faults bool, attestation func(server *x509.Certificate) *gateway.AttestationOptions) *testGateway {
	t.Helper()
	ctx := context.Background()
	pool, err := hsmpool.Open(ctx, hsmpool.Options{
		Modules:        []hsmpool.ModuleOptions{{Path: env.Module, Tokens: []hsmpool.TokenSelector{{Label: token}}, PIN: hsmpool.PINSource{File: env.PINFile}}},
		FaultInjection: faults,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	dir, store, admin := gatewaytest.Provision(t, pool)
	cert, cas, err := gateway.LoadTLS(ctx, pool, store, dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := gateway.Config{Pool: pool, Store: store, Region: region, Account: gatewaytest.Account, Logger: slog.New(slog.DiscardHandler)}
	if attestation != nil {
		raw, err := os.ReadFile(filepath.Join(dir, gateway.ServerCertFile))
		if err != nil {
			t.Fatal(err)
		}
		chain, err := pki.ParseCertsPEM(raw)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Attestation = attestation(chain[0])
	}
	gw, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &testGateway{gw: gw, pool: pool, store: store, dir: dir, admin: admin, cert: cert, cas: cas}
}

// serve serves h with the gateway's TLS configuration until the test ends
// and returns its URL.
func (tg *testGateway) serve(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = gateway.TLSConfig(tg.cert, tg.cas, 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL
}

// serveSoftwareKey is serve with a TLS server key in memory, from a CA of
// its own, which it adds to the gateway's CA pool (tg.cas). A gateway's own
// TLS key is in its HSM pool: once no slot is healthy it completes no new
// TLS handshake, and failover serves only the connections already open
// (docs/cluster.md). The tests of a failed node's failover use this, so
// that the SDK's connections don't depend on its pool.
func (tg *testGateway) serveSoftwareKey(t *testing.T, h http.Handler) string {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca, err := pki.NewCA(caKey, "software TLS CA", 24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf, err := pki.IssueServer(ca, caKey, &key.PublicKey, []string{"127.0.0.1"}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tg.cas.AddCert(ca)
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = gateway.TLSConfig(tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}, tg.cas, 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL
}

// clientTLS is mutual TLS as the gateway's admin, trusting its CA.
func (tg *testGateway) clientTLS(t *testing.T) *tls.Config {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(tg.admin.ClientCert, tg.admin.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{RootCAs: tg.cas, Certificates: []tls.Certificate{cert}}
}

// failSlots makes every slot of the pool fail (device errors) and probes
// them, so the pool has no healthy slot.
func (tg *testGateway) failSlots(t *testing.T) {
	t.Helper()
	for _, s := range tg.pool.Status() {
		if err := tg.pool.InjectFault(s.Name, hsmpool.FaultDeviceError); err != nil {
			t.Fatal(err)
		}
		if _, err := tg.pool.ProbeSlot(s.Name); err != nil {
			t.Fatal(err)
		}
	}
	if n := tg.pool.Healthy(); n != 0 {
		t.Fatalf("%d healthy slots after injecting faults", n)
	}
}

// kmsClient is the AWS SDK's KMS client signing with creds, calling url
// and trusting cas.
func kmsClient(url string, cas *x509.CertPool, creds *gateway.AdminCredentials) *kms.Client {
	return kms.New(kms.Options{
		Region: region, BaseEndpoint: aws.String(url),
		HTTPClient:  &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cas}}},
		Credentials: aws.NewCredentialsCache(staticCreds{creds.AccessKeyID, creds.SecretAccessKey}),
		Retryer:     aws.NopRetryer{},
	})
}

type staticCreds struct{ id, secret string }

func (s staticCreds) Retrieve(context.Context) (aws.Credentials, error) {
	return aws.Credentials{AccessKeyID: s.id, SecretAccessKey: s.secret, Source: "test"}, nil
}

// gossipNode starts a gossip node publishing tg's pool health.
func gossipNode(t *testing.T, id, zone, apiURL string, key []byte, att cluster.AttestationState, tg *testGateway, edit func(*cluster.GossipConfig)) *cluster.Gossip {
	t.Helper()
	cfg := cluster.GossipConfig{
		NodeID: id, Zone: zone, APIAddress: strings.TrimPrefix(apiURL, "https://"), BindAddress: "127.0.0.1:0",
		Label: "hsmgate-test", Keys: [][]byte{key}, RefreshInterval: 100 * time.Millisecond,
		Status: func() cluster.LocalStatus {
			return cluster.LocalStatus{Attestation: att, Slots: cluster.PoolSlotHealth(tg.pool.Status()), MaxInFlight: 1024}
		},
		Logger: slog.New(slog.DiscardHandler),
	}
	cluster.TuneForTests(&cfg)
	if edit != nil {
		edit(&cfg)
	}
	g, err := cluster.NewGossip(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Shutdown() })
	return g
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func apiErrorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func TestFailoverToGateway(t *testing.T) {
	env := testenv.NewSoftHSM(t, 2)
	labels := env.Labels()
	local := newTestGateway(t, env, labels[0], true, nil)
	peer := newTestGateway(t, env, labels[1], false, nil)
	peerURL := peer.serve(t, peer.gw.Handler())

	key, _ := cluster.GenerateGossipKey()
	// The local node's API address is only known once it serves: its
	// gossip starts after, the failover reads it through a variable.
	var fo atomic.Pointer[cluster.Failover]
	localURL := local.serveSoftwareKey(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fo.Load().Wrap(local.gw.Handler()).ServeHTTP(w, r)
	}))
	lg := gossipNode(t, "gw-local", "zone-1", localURL, key, cluster.AttestationOff, local, nil)
	pg := gossipNode(t, "gw-peer", "zone-2", peerURL, key, cluster.AttestationOff, peer, nil)
	if _, err := pg.Join([]string{lg.GossipAddress()}); err != nil {
		t.Fatal(err)
	}
	f, err := cluster.NewFailover(cluster.FailoverConfig{
		Gossip: lg, LocalHealthy: func() bool { return local.pool.Healthy() > 0 }, TLS: peer.clientTLS(t), Timeout: 20 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	fo.Store(f)

	ctx := context.Background()
	// The peer's admin and key: in a cluster the replicated keystore makes
	// them every node's.
	viaPeer := kmsClient(peerURL, peer.cas, peer.admin)
	ck, err := viaPeer.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	keyID := ck.KeyMetadata.KeyId
	viaLocal := kmsClient(localURL, local.cas, peer.admin)

	// Healthy local pool: served locally, where the peer's key and
	// credentials are unknown.
	if _, err := viaLocal.Encrypt(ctx, &kms.EncryptInput{KeyId: keyID, Plaintext: []byte("hello")}); apiErrorCode(err) != "UnrecognizedClientException" {
		t.Fatalf("Encrypt on the healthy local node: %v, want UnrecognizedClientException (served locally)", err)
	}

	raw := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: local.cas}}}
	defer raw.CloseIdleConnections()
	local.failSlots(t)
	waitUntil(t, "the peer to be picked", func() bool { p, ok := lg.PickPeer(true); return ok && p.ID == "gw-peer" })
	enc, err := viaLocal.Encrypt(ctx, &kms.EncryptInput{KeyId: keyID, Plaintext: []byte("hello")})
	if err != nil {
		t.Fatalf("Encrypt through the failed node: %v", err)
	}
	dec, err := viaLocal.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
	if err != nil || string(dec.Plaintext) != "hello" {
		t.Fatalf("Decrypt through the failed node: %q, %v", dec.Plaintext, err)
	}
	if _, err := viaPeer.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob}); err != nil {
		t.Fatalf("the peer does not decrypt what it encrypted for the failed node: %v", err)
	}
	// A control-plane request is not forwarded.
	if _, err := viaLocal.CreateKey(ctx, &kms.CreateKeyInput{}); err == nil {
		t.Error("CreateKey on the failed node succeeded: it was forwarded")
	}
	if st := f.Stats(); st.Forwarded != 2 {
		t.Errorf("stats %+v, want 2 forwarded", st)
	}

	// A request already forwarded once is not forwarded again.
	body := []byte(`{"KeyId":"` + *keyID + `","Plaintext":"aGVsbG8="}`)
	req, _ := http.NewRequest(http.MethodPost, localURL+"/", bytes.NewReader(body))
	req.Header.Set("X-Amz-Target", "TrentService.Encrypt")
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set(cluster.FailoverForwardedHeader, "gw-other")
	sum := sha256.Sum256(body)
	if err := v4.NewSigner().SignHTTP(ctx, aws.Credentials{AccessKeyID: peer.admin.AccessKeyID, SecretAccessKey: peer.admin.SecretAccessKey},
		req, hex.EncodeToString(sum[:]), "kms", region, time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, err := raw.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if typ := resp.Header.Get("X-Amzn-Errortype"); resp.StatusCode == http.StatusOK || typ != "UnrecognizedClientException" {
		t.Errorf("a request marked as forwarded: %s %s, want the local node's UnrecognizedClientException (not forwarded again)", resp.Status, typ)
	}

	// The peer fails too: no peer to take the request, and the failed
	// node answers its own error.
	if err := pg.Shutdown(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "no peer to be picked", func() bool { _, ok := lg.PickPeer(true); return !ok })
	if _, err := viaLocal.Encrypt(ctx, &kms.EncryptInput{KeyId: keyID, Plaintext: []byte("hello")}); err == nil {
		t.Error("Encrypt succeeded with no healthy slot anywhere")
	}
	if st := f.Stats(); st.Forwarded != 2 || st.Failed != 1 {
		t.Errorf("stats %+v, want 2 forwarded, 1 failed", st)
	}
}
