package cluster_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/hsmgate/hsmgate/attest"
	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/gateway/cluster"
	"github.com/hsmgate/hsmgate/internal/swtpmtest"
	"github.com/hsmgate/hsmgate/internal/testenv"
)

func digest(s string) []byte {
	d := sha256.Sum256([]byte(s))
	return d[:]
}

// A peer's attestation is verified (a real swtpm quote, fetched over mutual
// TLS and bound to that connection's key) before a request is forwarded to
// it; a relayed document, an unapproved boot and an unknown node are
// refused.
func TestPeerVerifierAndAttestedFailover(t *testing.T) {
	sw := swtpmtest.Start(t)
	tpm, err := attest.Open(sw.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer tpm.Close()
	manifest := []byte(`{"image":"cluster-test"}`)
	imageDigest := sha256.Sum256(manifest)
	for _, m := range []struct {
		kind, name string
		digest     []byte
	}{{attest.KindImage, "image", imageDigest[:]}, {attest.KindBinary, "/usr/bin/hsmgate", digest("binary")}, {attest.KindConfig, "hsmgate.toml", digest("config")}} {
		if _, err := tpm.Measure(m.kind, m.name, m.digest); err != nil {
			t.Fatal(err)
		}
	}
	policy := attest.GoldenPolicy{ImageDigests: [][]byte{imageDigest[:]}, BinaryDigests: [][]byte{digest("binary")}, ConfigDigests: [][]byte{digest("config")}}
	enr := swtpmtest.Enroll(t, tpm)

	env := testenv.NewSoftHSM(t, 2)
	labels := env.Labels()
	local := newTestGateway(t, env, labels[0], true, nil)
	peer := newTestGateway(t, env, labels[1], false, func(server *x509.Certificate) *gateway.AttestationOptions {
		return &gateway.AttestationOptions{TPM: tpm, Manifest: manifest, TLSKeyHash: gateway.TLSKeyHash(server)}
	})
	peerURL := peer.serve(t, peer.gw.Handler())
	peerAddr := strings.TrimPrefix(peerURL, "https://")
	enrollments := func(id string) (attest.Enrollment, error) {
		if id == "gw-peer" || id == "gw-relay" {
			return *enr, nil
		}
		return attest.Enrollment{}, fmt.Errorf("node %s is not enrolled", id)
	}
	newVerifier := func(tc *tls.Config, p attest.GoldenPolicy) *cluster.PeerVerifier {
		v, err := cluster.NewPeerVerifier(cluster.PeerVerifierConfig{TLS: tc, Enrollment: enrollments, Policy: p})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(v.Close)
		return v
	}
	at := func(id, addr string) cluster.NodeStatus {
		return cluster.NodeStatus{ID: id, State: cluster.MemberAlive, Meta: &cluster.NodeMeta{NodeID: id, Zone: "z", APIAddress: addr, Attestation: cluster.AttestationMeasured}}
	}
	ctx := context.Background()

	v := newVerifier(peer.clientTLS(t), policy)
	d, err := v.Verify(ctx, at("gw-peer", peerAddr))
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	serverCert := peer.cert.Leaf
	if serverCert == nil {
		serverCert, _ = x509.ParseCertificate(peer.cert.Certificate[0])
	}
	if !v.Pinned("gw-peer", peerAddr, gateway.TLSKeyHash(serverCert)) || v.Pinned("gw-peer", peerAddr, digest("another key")) || v.Pinned("gw-peer", "127.0.0.1:1", gateway.TLSKeyHash(serverCert)) {
		t.Error("the verified TLS key is not pinned, or another is")
	}
	if string(d.Boot.Manifest) != string(manifest) || string(d.Boot.BinaryDigest) != string(digest("binary")) {
		t.Errorf("boot state %+v", d.Boot)
	}
	if again, err := v.Verify(ctx, at("gw-peer", peerAddr)); err != nil || !again.At.Equal(d.At) {
		t.Errorf("a second Verify within the TTL verified again (%v, %v)", again.At, err)
	}

	// Refusals, each with its reason.
	withRoots := func(roots *x509.CertPool) *tls.Config {
		tc := peer.clientTLS(t)
		tc.RootCAs = roots
		return tc
	}
	unattested := strings.TrimPrefix(local.serve(t, local.gw.Handler()), "https://") // no TPM: /attestation is 404
	relay, relayRoots := startRelay(t, peer, peerURL)
	for name, tc := range map[string]struct {
		v    *cluster.PeerVerifier
		node cluster.NodeStatus
		want error
	}{
		"unapproved binary": {newVerifier(peer.clientTLS(t), attest.GoldenPolicy{ImageDigests: policy.ImageDigests, BinaryDigests: [][]byte{digest("other")}, ConfigDigests: policy.ConfigDigests}),
			at("gw-peer", peerAddr), attest.ErrGoldenPolicy},
		"relayed document": {newVerifier(withRoots(relayRoots), policy), at("gw-relay", relay), attest.ErrTLSKey},
		"not enrolled":     {newVerifier(peer.clientTLS(t), policy), at("gw-other", peerAddr), nil},
		"no attestation":   {newVerifier(withRoots(local.cas), policy), at("gw-relay", unattested), nil},
	} {
		t.Run(name, func(t *testing.T) {
			d, err := tc.v.Verify(ctx, tc.node)
			if !errors.Is(err, cluster.ErrPeerNotVerified) || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
			if d.Err == nil || d.TLSKeyHash != nil || d.Boot != nil {
				t.Errorf("verdict %+v", d)
			}
			if got, ok := tc.v.Verdict(tc.node.ID); !ok || got.Err == nil || got.Expired {
				t.Errorf("the failure is not kept: %+v %v", got, ok)
			}
			if tc.v.Pinned(tc.node.ID, tc.node.Meta.APIAddress, gateway.TLSKeyHash(serverCert)) {
				t.Error("a key is pinned after a failure")
			}
		})
	}

	// Failover requiring attestation: forwarded once the peer verifies.
	key, _ := cluster.GenerateGossipKey()
	var fo atomic.Pointer[cluster.Failover]
	localURL := local.serveSoftwareKey(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fo.Load().Wrap(local.gw.Handler()).ServeHTTP(w, r)
	}))
	fv := newVerifier(peer.clientTLS(t), policy)
	lg := gossipNode(t, "gw-local", "zone-1", localURL, key, cluster.AttestationMeasured, local, func(c *cluster.GossipConfig) {
		c.RequireAttestation, c.Verifier = true, fv
	})
	pg := gossipNode(t, "gw-peer", "zone-2", peerURL, key, cluster.AttestationMeasured, peer, nil)
	if _, err := pg.Join([]string{lg.GossipAddress()}); err != nil {
		t.Fatal(err)
	}
	f, err := cluster.NewFailover(cluster.FailoverConfig{
		Gossip: lg, Verifier: fv, LocalHealthy: func() bool { return local.pool.Healthy() > 0 }, TLS: peer.clientTLS(t), Timeout: 20 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	fo.Store(f)
	viaPeer := kmsClient(peerURL, peer.cas, peer.admin)
	ck, err := viaPeer.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	viaLocal := kmsClient(localURL, local.cas, peer.admin)
	if _, err := viaLocal.Encrypt(ctx, &kms.EncryptInput{KeyId: ck.KeyMetadata.KeyId, Plaintext: []byte("x")}); apiErrorCode(err) != "UnrecognizedClientException" {
		t.Fatalf("Encrypt on the healthy local node: %v", err)
	}
	local.failSlots(t)
	waitUntil(t, "the peer to be picked", func() bool { p, ok := lg.PickPeer(true); return ok && p.ID == "gw-peer" })
	if _, ok := fv.Verdict("gw-peer"); ok {
		t.Fatal("verified before any request needed it")
	}
	enc, err := viaLocal.Encrypt(ctx, &kms.EncryptInput{KeyId: ck.KeyMetadata.KeyId, Plaintext: []byte("attested")})
	if err != nil {
		t.Fatalf("Encrypt through the failed node: %v", err)
	}
	if d, ok := fv.Verdict("gw-peer"); !ok || d.Err != nil {
		t.Errorf("verdict on the peer: %+v %v", d, ok)
	}
	for _, n := range lg.Status().Nodes {
		if n.ID == "gw-peer" && (n.Attestation != "verified" || !n.Forwardable) {
			t.Errorf("/cluster shows the peer as %+v", n)
		}
	}
	dec, err := viaPeer.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
	if err != nil || string(dec.Plaintext) != "attested" {
		t.Fatalf("Decrypt on the peer: %q %v", dec.Plaintext, err)
	}

	// The same cluster with a policy the peer's boot does not match: the
	// request is not forwarded, the failed node answers it.
	bad := newVerifier(peer.clientTLS(t), attest.GoldenPolicy{ImageDigests: policy.ImageDigests, BinaryDigests: policy.BinaryDigests, ConfigDigests: [][]byte{digest("other config")}})
	fBad, err := cluster.NewFailover(cluster.FailoverConfig{Gossip: lg, Verifier: bad, LocalHealthy: func() bool { return false }, TLS: peer.clientTLS(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer fBad.Close()
	served := false
	h := fBad.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served = true }))
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader("{}"))
	r.Header.Set("X-Amz-Target", "TrentService.Encrypt")
	r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=x")
	h.ServeHTTP(httptest.NewRecorder(), r)
	if !served {
		t.Error("forwarded to a peer whose boot the policy does not approve")
	}
	if d, ok := bad.Verdict("gw-peer"); !ok || !errors.Is(d.Err, attest.ErrGoldenPolicy) {
		t.Errorf("verdict %+v %v, want ErrGoldenPolicy", d, ok)
	}
}

// startRelay serves a TLS relay with its own key that fetches /attestation
// from the real peer and passes the document on: a machine trying to pass
// off another's attestation as its own. It returns the relay's address and
// roots trusting both it and the peer.
func startRelay(t *testing.T, peer *testGateway, peerURL string) (string, *x509.CertPool) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: peer.clientTLS(t)}}
	t.Cleanup(client.CloseIdleConnections)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resp, err := client.Get(peerURL + r.URL.RequestURI())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	t.Cleanup(srv.Close)
	roots := peer.cas.Clone()
	roots.AddCert(srv.Certificate())
	return strings.TrimPrefix(srv.URL, "https://"), roots
}
