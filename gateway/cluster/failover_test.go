package cluster

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/attest"
	"github.com/hsmgate/hsmgate/internal/pki"
)

// testPKI is a throw-away CA issuing the certificates of a test.
type testPKI struct {
	ca    *x509.Certificate
	key   crypto.Signer
	roots *x509.CertPool
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.NewCA(key, "cluster test CA", 24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	return &testPKI{ca: ca, key: key, roots: roots}
}

func (p *testPKI) server(t *testing.T) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c, err := pki.IssueServer(p.ca, p.key, &key.PublicKey, []string{"127.0.0.1", "localhost"}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: key, Leaf: c}
}

func (p *testPKI) client(t *testing.T, principal string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c, err := pki.IssueClient(p.ca, p.key, &key.PublicKey, principal, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: key, Leaf: c}
}

// clientTLS is a client configuration with a throw-away CA and certificate.
func clientTLS(t *testing.T) *tls.Config {
	p := newTestPKI(t)
	return &tls.Config{RootCAs: p.roots, Certificates: []tls.Certificate{p.client(t, "node-x")}}
}

func noEnrollment(string) (attest.Enrollment, error) {
	return attest.Enrollment{}, errors.New("no record")
}

// echo is what the test peer saw of a forwarded request.
type echo struct {
	Method, Path, Query, Host, Body, ClientPrincipal string
	Header                                           http.Header
}

// startPeer serves the test peer: mutual TLS (client certificates of p's
// CA required), recording each request and answering a fixed response.
func startPeer(t *testing.T, p *testPKI, name string, seen chan<- echo) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		e := echo{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Host: r.Host, Body: string(body), Header: r.Header.Clone()}
		if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
			e.ClientPrincipal, _ = pki.PrincipalFromCert(r.TLS.VerifiedChains[0][0])
		}
		if seen != nil {
			seen <- e
		}
		h := w.Header()
		h.Set("Content-Type", "application/x-amz-json-1.1")
		h.Set("X-Amzn-Requestid", "answered-by-"+name)
		h.Set("X-Amzn-Errortype", "NotFoundException")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"__type":"NotFoundException","message":"from `+name+`"}`)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{p.server(t)}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: p.roots}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func hostPort(srv *httptest.Server) string { return strings.TrimPrefix(srv.URL, "https://") }

// failoverRig is a local node in front of peers.
type failoverRig struct {
	local       *httptest.Server
	localServed atomic.Int32
	healthy     atomic.Bool
	f           *Failover
	client      *http.Client
}

func newFailoverRig(t *testing.T, p *testPKI, g *Gossip, edit func(*FailoverConfig)) *failoverRig {
	t.Helper()
	rig := &failoverRig{}
	cfg := FailoverConfig{
		Gossip: g, LocalHealthy: rig.healthy.Load,
		TLS:     &tls.Config{RootCAs: p.roots, Certificates: []tls.Certificate{p.client(t, "node-"+g.NodeID())}},
		Timeout: 10 * time.Second,
	}
	if edit != nil {
		edit(&cfg)
	}
	f, err := NewFailover(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	rig.f = f
	rig.local = httptest.NewUnstartedServer(f.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rig.localServed.Add(1)
		io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Amzn-Requestid", "answered-locally")
		http.Error(w, `{"__type":"KMSInternalException","message":"no healthy HSM slot"}`, http.StatusInternalServerError)
	})))
	rig.local.TLS = &tls.Config{Certificates: []tls.Certificate{p.server(t)}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: p.roots}
	rig.local.StartTLS()
	t.Cleanup(rig.local.Close)
	rig.client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.roots}}}
	t.Cleanup(rig.client.CloseIdleConnections)
	return rig
}

// kmsRequest is a SigV4-looking Encrypt request to the rig's local node.
func (rig *failoverRig) kmsRequest(t *testing.T, target string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, rig.local.URL+"/", strings.NewReader(`{"KeyId":"alias/x","Plaintext":"aGVsbG8="}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "kms.eu-west-1.example.com:8443"
	req.Header.Set("X-Amz-Target", target)
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Date", "20250101T000000Z")
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250101/eu-west-1/kms/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=00")
	req.Header.Set("User-Agent", "test-sdk/1.0")
	return req
}

func do(t *testing.T, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func metaAt(id, zone, addr string) *NodeMeta {
	m := peerMeta(id, zone, 1, AttestationOff)
	m.APIAddress = addr
	return m
}

// A crypto request reaching a node without a healthy slot is answered by a
// peer: forwarded with its Host, signature headers and body intact, marked
// once, over mutual TLS, and the peer's answer passed back unchanged.
func TestFailoverForwardsUnchanged(t *testing.T) {
	p := newTestPKI(t)
	seen := make(chan echo, 1)
	peer := startPeer(t, p, "b1", seen)
	g := fakeGossip(t, false, peerMeta("a1", "a", 0, AttestationOff), metaAt("b1", "b", hostPort(peer)))
	rig := newFailoverRig(t, p, g, nil)

	req := rig.kmsRequest(t, "TrentService.Encrypt")
	req.URL.RawQuery = "x=1"
	req.Header.Set("Connection", "X-Hop")
	req.Header.Set("X-Hop", "not forwarded")
	req.Header.Set(FailoverPrincipalHeader, "admin")     // a client can't set these
	req.Header.Set(FailoverSourceIPHeader, "192.0.2.66") // …
	resp, body := do(t, rig.client, req)
	e := <-seen

	if e.Host != "kms.eu-west-1.example.com:8443" {
		t.Errorf("the peer saw Host %q, want the client's (SigV4 signs it)", e.Host)
	}
	for _, h := range []string{"Authorization", "X-Amz-Target", "X-Amz-Date", "Content-Type", "User-Agent"} {
		if got, want := e.Header.Get(h), req.Header.Get(h); got != want {
			t.Errorf("the peer saw %s %q, want %q", h, got, want)
		}
	}
	if e.Method != http.MethodPost || e.Path != "/" || e.Query != "x=1" || e.Body != `{"KeyId":"alias/x","Plaintext":"aGVsbG8="}` {
		t.Errorf("the peer saw %s %s?%s %q", e.Method, e.Path, e.Query, e.Body)
	}
	if got := e.Header.Get(FailoverForwardedHeader); got != "a1" {
		t.Errorf("%s = %q, want a1", FailoverForwardedHeader, got)
	}
	if got := e.Header.Values(FailoverPrincipalHeader); len(got) != 0 {
		t.Errorf("a SigV4 request was forwarded with %s %q", FailoverPrincipalHeader, got)
	}
	if got := e.Header.Get(FailoverSourceIPHeader); got != "127.0.0.1" {
		t.Errorf("%s = %q, want the client's address 127.0.0.1", FailoverSourceIPHeader, got)
	}
	if e.Header.Get("X-Hop") != "" {
		t.Error("a header named by Connection was forwarded")
	}
	if e.ClientPrincipal != "node-a1" {
		t.Errorf("the peer authenticated %q, want the forwarding node's certificate node-a1", e.ClientPrincipal)
	}
	if resp.StatusCode != http.StatusBadRequest || body != `{"__type":"NotFoundException","message":"from b1"}` ||
		resp.Header.Get("X-Amzn-Requestid") != "answered-by-b1" || resp.Header.Get("X-Amzn-Errortype") != "NotFoundException" ||
		resp.Header.Get("Content-Type") != "application/x-amz-json-1.1" {
		t.Errorf("the client got %d %v %q, want the peer's answer unchanged", resp.StatusCode, resp.Header, body)
	}
	if n := rig.localServed.Load(); n != 0 {
		t.Errorf("served locally %d times", n)
	}
	if st := rig.f.Stats(); st.Forwarded != 1 || st.Failed != 0 {
		t.Errorf("stats %+v", st)
	}
}

// What is not forwarded: requests a healthy node serves, requests already
// forwarded once, other operations, and requests when no peer can take them.
func TestFailoverServesLocally(t *testing.T) {
	p := newTestPKI(t)
	seen := make(chan echo, 10)
	peer := startPeer(t, p, "b1", seen)
	g := fakeGossip(t, false, peerMeta("a1", "a", 0, AttestationOff), metaAt("b1", "b", hostPort(peer)))
	for name, tc := range map[string]struct {
		healthy bool
		edit    func(*http.Request)
		gossip  *Gossip
	}{
		"local pool healthy":  {healthy: true},
		"already forwarded":   {edit: func(r *http.Request) { r.Header.Set(FailoverForwardedHeader, "c1") }},
		"control plane":       {edit: func(r *http.Request) { r.Header.Set("X-Amz-Target", "TrentService.CreateKey") }},
		"admin API":           {edit: func(r *http.Request) { r.Header.Set("X-Amz-Target", "HsmGate.ListPrincipals") }},
		"another path":        {edit: func(r *http.Request) { r.URL.Path = "/kms/xks/v1/keys/k/encrypt" }},
		"certificate caller":  {edit: func(r *http.Request) { r.Header.Del("Authorization") }},
		"body over the limit": {edit: func(r *http.Request) { r.Body = io.NopCloser(strings.NewReader(strings.Repeat("x", 128<<10+1))) }},
		"no healthy peer":     {gossip: fakeGossip(t, false, peerMeta("a1", "a", 0, AttestationOff), metaAt("b1", "b", hostPort(peer)), peerMeta("c1", "c", 0, AttestationOff))},
	} {
		t.Run(name, func(t *testing.T) {
			gg := g
			if tc.gossip != nil {
				gg = tc.gossip
				gg.view.nodes["b1"].state = MemberDead
			}
			rig := newFailoverRig(t, p, gg, nil)
			rig.healthy.Store(tc.healthy)
			req := rig.kmsRequest(t, "TrentService.Decrypt")
			if tc.edit != nil {
				tc.edit(req)
				req.ContentLength = -1
			}
			resp, body := do(t, rig.client, req)
			if resp.Header.Get("X-Amzn-Requestid") != "answered-locally" || rig.localServed.Load() != 1 {
				t.Errorf("got %d %q from %s, want the local answer", resp.StatusCode, body, resp.Header.Get("X-Amzn-Requestid"))
			}
			select {
			case e := <-seen:
				t.Errorf("the peer got %+v", e)
			default:
			}
		})
	}
}

// A peer that can't be reached (or whose certificate the cluster CA did not
// issue) is skipped for the next; at most MaxAttempts peers are tried, then
// the node answers itself.
func TestFailoverTriesNextPeer(t *testing.T) {
	p := newTestPKI(t)
	seen := make(chan echo, 10)
	good := startPeer(t, p, "c1", seen)
	closed := startPeer(t, p, "x", nil)
	closed.Close()
	impostor := startPeer(t, newTestPKI(t), "impostor", seen) // another CA

	// Same zone (tried first) unreachable, then another zone.
	g := fakeGossip(t, false, peerMeta("a1", "a", 0, AttestationOff), metaAt("a2", "a", hostPort(closed)), metaAt("c1", "c", hostPort(good)))
	rig := newFailoverRig(t, p, g, nil)
	resp, _ := do(t, rig.client, rig.kmsRequest(t, "TrentService.Sign"))
	if resp.Header.Get("X-Amzn-Requestid") != "answered-by-c1" {
		t.Errorf("answered by %q, want c1 after a2 could not be reached", resp.Header.Get("X-Amzn-Requestid"))
	}
	<-seen

	g = fakeGossip(t, false, peerMeta("a1", "a", 0, AttestationOff), metaAt("a2", "a", hostPort(impostor)), metaAt("c1", "c", hostPort(good)))
	rig = newFailoverRig(t, p, g, nil)
	resp, _ = do(t, rig.client, rig.kmsRequest(t, "TrentService.Sign"))
	if resp.Header.Get("X-Amzn-Requestid") != "answered-by-c1" {
		t.Errorf("answered by %q, want c1: a2's certificate is not the cluster CA's", resp.Header.Get("X-Amzn-Requestid"))
	}
	if e := <-seen; e.Header.Get(FailoverForwardedHeader) != "a1" {
		t.Errorf("c1 saw %+v", e)
	}

	// Two unreachable peers before the good one: MaxAttempts 2 stops there.
	closed2 := startPeer(t, p, "y", nil)
	closed2.Close()
	g = fakeGossip(t, false, peerMeta("a1", "a", 0, AttestationOff), metaAt("a2", "a", hostPort(closed)), metaAt("a3", "a", hostPort(closed2)), metaAt("c1", "c", hostPort(good)))
	rig = newFailoverRig(t, p, g, nil)
	resp, _ = do(t, rig.client, rig.kmsRequest(t, "TrentService.Sign"))
	if resp.Header.Get("X-Amzn-Requestid") != "answered-locally" {
		t.Errorf("answered by %q, want the local node after two failed attempts", resp.Header.Get("X-Amzn-Requestid"))
	}
	if st := rig.f.Stats(); st.Forwarded != 0 || st.Failed != 1 {
		t.Errorf("stats %+v", st)
	}
	select {
	case e := <-seen:
		t.Errorf("c1 got %+v", e)
	default:
	}
}

// A client that authenticated with its certificate is forwarded only with
// ForwardCertificateCallers, its principal named by the forwarder.
func TestFailoverCertificateCallers(t *testing.T) {
	p := newTestPKI(t)
	seen := make(chan echo, 1)
	peer := startPeer(t, p, "b1", seen)
	g := fakeGossip(t, false, peerMeta("a1", "a", 0, AttestationOff), metaAt("b1", "b", hostPort(peer)))
	rig := newFailoverRig(t, p, g, func(c *FailoverConfig) { c.ForwardCertificateCallers = true })
	app := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.roots, Certificates: []tls.Certificate{p.client(t, "app")}}}}
	defer app.CloseIdleConnections()

	req := rig.kmsRequest(t, "TrentService.GenerateDataKey")
	req.Header.Del("Authorization")
	req.Header.Set(FailoverPrincipalHeader, "admin")
	resp, _ := do(t, app, req)
	if resp.Header.Get("X-Amzn-Requestid") != "answered-by-b1" {
		t.Fatalf("answered by %q", resp.Header.Get("X-Amzn-Requestid"))
	}
	e := <-seen
	if got := e.Header.Values(FailoverPrincipalHeader); len(got) != 1 || got[0] != "app" {
		t.Errorf("%s = %q, want [app]: the client's certificate, not what it claimed", FailoverPrincipalHeader, got)
	}
	if e.ClientPrincipal != "node-a1" {
		t.Errorf("the peer authenticated %q", e.ClientPrincipal)
	}
	// No certificate and no signature: nothing to vouch for.
	req = rig.kmsRequest(t, "TrentService.GenerateDataKey")
	req.Header.Del("Authorization")
	if resp, _ := do(t, rig.client, req); resp.Header.Get("X-Amzn-Requestid") != "answered-locally" {
		t.Errorf("an anonymous request was answered by %q", resp.Header.Get("X-Amzn-Requestid"))
	}
}

// With attestation required, a request goes only over a connection whose
// TLS key is the one the peer's verified attestation bound.
func TestFailoverPinsVerifiedKey(t *testing.T) {
	p := newTestPKI(t)
	seen := make(chan echo, 1)
	peer := startPeer(t, p, "b1", seen)
	g := fakeGossip(t, true, peerMeta("a1", "a", 0, AttestationMeasured), func() *NodeMeta {
		m := metaAt("b1", "b", hostPort(peer))
		m.Attestation = AttestationMeasured
		return m
	}())
	v, err := NewPeerVerifier(PeerVerifierConfig{TLS: &tls.Config{RootCAs: p.roots, Certificates: []tls.Certificate{p.client(t, "node-a1")}}, Enrollment: noEnrollment})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewFailover(FailoverConfig{Gossip: g, LocalHealthy: func() bool { return false }, TLS: clientTLS(t)}); err == nil {
		t.Error("NewFailover without a verifier accepted a cluster requiring attestation")
	}
	rig := newFailoverRig(t, p, g, func(c *FailoverConfig) { c.Verifier = v })

	// A verdict binding another key: the connection is refused, the
	// verdict dropped, and the node answers itself.
	v.verdicts["b1"] = &PeerVerdict{NodeID: "b1", Address: hostPort(peer), At: time.Now(), TLSKeyHash: make([]byte, 32)}
	if resp, _ := do(t, rig.client, rig.kmsRequest(t, "TrentService.Encrypt")); resp.Header.Get("X-Amzn-Requestid") != "answered-locally" {
		t.Errorf("answered by %q over a key attestation did not bind", resp.Header.Get("X-Amzn-Requestid"))
	}
	if _, ok := v.Verdict("b1"); ok {
		t.Error("the verdict on b1 was kept after its key did not match")
	}
	// The verified key: forwarded.
	v.verdicts["b1"] = &PeerVerdict{NodeID: "b1", Address: hostPort(peer), At: time.Now(), TLSKeyHash: peerTLSKeyHash(peer.TLS.Certificates[0].Leaf)}
	if resp, _ := do(t, rig.client, rig.kmsRequest(t, "TrentService.Encrypt")); resp.Header.Get("X-Amzn-Requestid") != "answered-by-b1" {
		t.Errorf("answered by %q, want b1 (its key is verified)", resp.Header.Get("X-Amzn-Requestid"))
	}
	<-seen
	// No verdict, and the peer serves no attestation: verification fails
	// (the peer's answer is no document) and nothing is forwarded.
	v.Forget("b1")
	rig.f.Close()
	if resp, _ := do(t, rig.client, rig.kmsRequest(t, "TrentService.Encrypt")); resp.Header.Get("X-Amzn-Requestid") != "answered-locally" {
		t.Errorf("answered by %q without a verified attestation", resp.Header.Get("X-Amzn-Requestid"))
	}
	if d, ok := v.Verdict("b1"); !ok || d.Err == nil || !errors.Is(d.Err, ErrPeerNotVerified) {
		t.Errorf("verdict on b1: %+v %v", d, ok)
	}
	select {
	case e := <-seen:
		if e.Path != "/attestation" {
			t.Errorf("the peer got %s %s", e.Method, e.Path)
		}
	default:
	}
}

func TestTrustForwarded(t *testing.T) {
	p, clients := newTestPKI(t), newTestPKI(t) // the cluster CA, the clients' CA
	node, app := p.client(t, "node-b1"), clients.client(t, "app")
	isNode := NodeChain(p.roots)
	req := func(cert *tls.Certificate, h map[string][]string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		for k, v := range h {
			r.Header[k] = v
		}
		if cert != nil {
			root := clients.ca
			if cert == &node {
				root = p.ca
			}
			r.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert.Leaf, root}}}
		}
		return r
	}
	fwd, prin, ip := http.CanonicalHeaderKey(FailoverForwardedHeader), http.CanonicalHeaderKey(FailoverPrincipalHeader), http.CanonicalHeaderKey(FailoverSourceIPHeader)
	ok := map[string]struct {
		r    *http.Request
		want *ForwardedRequest
	}{
		"not forwarded":      {req(&app, nil), nil},
		"not forwarded, TLS": {req(nil, nil), nil},
		"SigV4":              {req(&node, map[string][]string{fwd: {"a1"}, ip: {"2001:db8::1"}}), &ForwardedRequest{Node: "a1", SourceIP: "2001:db8::1"}},
		"certificate caller": {req(&node, map[string][]string{fwd: {"a1"}, prin: {"app"}, ip: {"192.0.2.1"}}), &ForwardedRequest{Node: "a1", Principal: "app", SourceIP: "192.0.2.1"}},
	}
	for name, tc := range ok {
		t.Run(name, func(t *testing.T) {
			got, err := TrustForwarded(tc.r, isNode)
			if err != nil || (got == nil) != (tc.want == nil) || (got != nil && *got != *tc.want) {
				t.Errorf("TrustForwarded = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
	bad := map[string]*http.Request{
		"from a client":       req(&app, map[string][]string{fwd: {"a1"}}),
		"without certificate": req(nil, map[string][]string{fwd: {"a1"}}),
		"principal alone":     req(&app, map[string][]string{prin: {"admin"}}),
		"no node header":      req(&node, map[string][]string{prin: {"app"}}),
		"two node headers":    req(&node, map[string][]string{fwd: {"a1", "a2"}}),
		"bad node id":         req(&node, map[string][]string{fwd: {"a 1"}}),
		"bad principal":       req(&node, map[string][]string{fwd: {"a1"}, prin: {"a/b"}}),
		"two principals":      req(&node, map[string][]string{fwd: {"a1"}, prin: {"app", "admin"}}),
		"bad address":         req(&node, map[string][]string{fwd: {"a1"}, ip: {"example.com"}}),
	}
	for name, r := range bad {
		t.Run(name, func(t *testing.T) {
			if got, err := TrustForwarded(r, isNode); !errors.Is(err, ErrForwardNotTrusted) || got != nil {
				t.Errorf("TrustForwarded = %+v, %v; want ErrForwardNotTrusted", got, err)
			}
		})
	}
}

func TestIsCryptoRequest(t *testing.T) {
	for target, want := range map[string]bool{
		"TrentService.Encrypt": true, "TrentService.Decrypt": true, "TrentService.Sign": true, "TrentService.GenerateRandom": true,
		"TrentService.CreateKey": false, "TrentService.PutKeyPolicy": false, "TrentService.ScheduleKeyDeletion": false,
		"HsmGate.Encrypt": false, "Encrypt": false, "": false,
	} {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		r.Header.Set("X-Amz-Target", target)
		if got := IsCryptoRequest(r); got != want {
			t.Errorf("%q: %v, want %v", target, got, want)
		}
	}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("X-Amz-Target", "TrentService.Encrypt")
	if IsCryptoRequest(r) {
		t.Error("a GET is a crypto request")
	}
}
