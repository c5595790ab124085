package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hsmgate/hsmgate/internal/pki"
)

// Failover forwards crypto requests to a healthy peer while this node's
// HSM pool has no healthy slot, so that clients get answers instead of
// errors.
//
// A request is forwarded as it came: method, path and query, body, and
// every header but the hop-by-hop ones, with the original Host header, so
// that the peer verifies the client's SigV4 signature (which covers the
// Host) exactly as this node would have. The peer's answer is returned
// unchanged. The forwarded request is marked (FailoverForwardedHeader) and
// a marked request is never forwarded again: a request crosses at most one
// link between gateways.
//
// Requests go to peers over mutual TLS, the peer authenticated by the
// cluster CA; when the cluster requires attestation, also by a verified
// attestation and a pinned TLS key (PeerVerifier). A client that
// authenticated with its certificate can't be forwarded as such (the peer
// sees this node's certificate): with ForwardCertificateCallers this node
// names the client's principal in FailoverPrincipalHeader, which a peer
// must honour only from another node (TrustForwarded); without it, such
// requests are served locally.
type Failover struct {
	cfg FailoverConfig
	log *slog.Logger

	mu         sync.Mutex
	transports map[string]*failoverTransport // by node id

	forwarded atomic.Uint64
	failed    atomic.Uint64
}

// Headers of a forwarded request, set by the forwarding node. A client
// can't set them: the forwarder replaces them, and a gateway honours them
// only on a connection from another node (TrustForwarded).
const (
	// FailoverForwardedHeader names the node that forwarded the request.
	FailoverForwardedHeader = "X-Hsmgate-Forwarded"
	// FailoverPrincipalHeader names the principal of a client that
	// authenticated with its certificate.
	FailoverPrincipalHeader = "X-Hsmgate-Forwarded-Principal"
	// FailoverSourceIPHeader is the client's IP address, for
	// aws:SourceIp conditions and the audit record.
	FailoverSourceIPHeader = "X-Hsmgate-Forwarded-Source-Ip"
)

// FailoverConfig configures a Failover.
type FailoverConfig struct {
	// Gossip is the view peers are picked from (required).
	Gossip *Gossip
	// LocalHealthy reports whether this node can serve crypto requests
	// itself (required); typically pool.Healthy() > 0. Requests are
	// forwarded only while it is false.
	LocalHealthy func() bool
	// TLS is the client side of mutual TLS to peers (required): RootCAs
	// the cluster CA, Certificates this node's client certificate.
	TLS *tls.Config
	// Verifier verifies peers' attestation (required when the Gossip
	// requires attestation, ignored otherwise).
	Verifier *PeerVerifier
	// Forwardable says which requests may be forwarded; nil means
	// IsCryptoRequest: the AWS KMS operations that need an HSM slot.
	Forwardable func(*http.Request) bool
	// ForwardCertificateCallers forwards requests of clients that
	// authenticated with their TLS certificate, naming their principal in
	// FailoverPrincipalHeader. Turn it on only when every peer honours that
	// header from nodes alone (TrustForwarded); otherwise the peer would
	// see the request as this node's. False serves them locally.
	ForwardCertificateCallers bool
	// Timeout bounds one forwarded request. Zero means 30s.
	Timeout time.Duration
	// MaxAttempts is how many peers a request may be sent to when the
	// previous one could not be reached (never when one answered, whatever
	// it answered). Zero means 2.
	MaxAttempts int
	// MaxBody is the largest body forwarded; a larger request is served
	// locally (which refuses it). Zero means 128 KiB, the gateway's own
	// limit.
	MaxBody int64
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// NewFailover returns a Failover; Wrap puts it in front of a handler.
func NewFailover(cfg FailoverConfig) (*Failover, error) {
	switch {
	case cfg.Gossip == nil || cfg.LocalHealthy == nil:
		return nil, errors.New("cluster: failover needs the gossip view and the local health check")
	case cfg.TLS == nil || (len(cfg.TLS.Certificates) == 0 && cfg.TLS.GetClientCertificate == nil):
		return nil, errors.New("cluster: failover needs a TLS client configuration with this node's client certificate (requests to peers use mutual TLS)")
	case cfg.Gossip.cfg.RequireAttestation && cfg.Verifier == nil:
		return nil, errors.New("cluster: the cluster requires attestation: failover needs a PeerVerifier")
	}
	if !cfg.Gossip.cfg.RequireAttestation {
		cfg.Verifier = nil
	}
	if cfg.Forwardable == nil {
		cfg.Forwardable = IsCryptoRequest
	}
	cfg.Timeout = orDefaultDuration(cfg.Timeout, 30*time.Second)
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 2
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 128 << 10
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Failover{cfg: cfg, log: cfg.Logger.With("component", "failover"), transports: map[string]*failoverTransport{}}, nil
}

// failoverCryptoOperations are the AWS KMS operations that need an HSM
// slot and change nothing: safe to serve on any node.
var failoverCryptoOperations = map[string]bool{
	"Encrypt": true, "Decrypt": true, "ReEncrypt": true,
	"GenerateDataKey": true, "GenerateDataKeyWithoutPlaintext": true,
	"GenerateDataKeyPair": true, "GenerateDataKeyPairWithoutPlaintext": true,
	"GenerateMac": true, "VerifyMac": true, "Sign": true, "Verify": true,
	"GetPublicKey": true, "GenerateRandom": true, "DeriveSharedSecret": true,
}

// IsCryptoRequest reports whether r is an AWS KMS data-plane (crypto)
// request: POST / with X-Amz-Target TrentService.<op> for an operation
// that uses an HSM slot and changes no key metadata.
func IsCryptoRequest(r *http.Request) bool {
	if r.Method != http.MethodPost || r.URL.Path != "/" {
		return false
	}
	op, ok := strings.CutPrefix(r.Header.Get("X-Amz-Target"), "TrentService.")
	return ok && failoverCryptoOperations[op]
}

// FailoverStats counts forwarded requests.
type FailoverStats struct {
	Forwarded uint64 // answered by a peer
	Failed    uint64 // no peer could be reached; served locally
}

// Stats returns the counts so far.
func (f *Failover) Stats() FailoverStats {
	return FailoverStats{Forwarded: f.forwarded.Load(), Failed: f.failed.Load()}
}

// Close closes idle connections to peers.
func (f *Failover) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, t := range f.transports {
		t.CloseIdleConnections()
	}
}

// Wrap returns next with failover in front of it.
func (f *Failover) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { f.serve(w, r, next) })
}

func (f *Failover) serve(w http.ResponseWriter, r *http.Request, next http.Handler) {
	// Never forward twice, only what may be forwarded.
	if len(r.Header.Values(FailoverForwardedHeader)) > 0 || !f.cfg.Forwardable(r) {
		next.ServeHTTP(w, r)
		return
	}
	var principal string
	if r.Header.Get("Authorization") == "" {
		p, ok := f.certificatePrincipal(r)
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		principal = p
	}
	if r.Body == nil {
		r.Body = http.NoBody
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, f.cfg.MaxBody+1))
	if err != nil || int64(len(body)) > f.cfg.MaxBody {
		// Too large or unreadable: the local handler says so.
		r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), r.Body))
		next.ServeHTTP(w, r)
		return
	}
	if f.cfg.LocalHealthy() {
		// Served here, unless the pool fails under this very request (an
		// HSM that dies mid-call answers 503 and leaves no healthy slot):
		// then the answer is held back and a peer answers instead.
		r.Body = io.NopCloser(bytes.NewReader(body))
		hw := &holdWriter{w: w, header: http.Header{}, hold: func(status int) bool {
			return status == http.StatusServiceUnavailable && !f.cfg.LocalHealthy()
		}}
		next.ServeHTTP(hw, r)
		if !hw.held {
			return
		}
		if f.forward(w, r, body, principal) {
			return
		}
		hw.replay()
		return
	}
	if f.forward(w, r, body, principal) {
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	next.ServeHTTP(w, r)
}

// forward sends the request to healthy peers (same zone first) until one
// answers, and copies that answer to w. It reports whether one did.
func (f *Failover) forward(w http.ResponseWriter, r *http.Request, body []byte, principal string) bool {
	peers := f.cfg.Gossip.PickPeers(true)
	if len(peers) == 0 {
		f.failed.Add(1)
		f.log.Warn("no healthy HSM slot here and no healthy peer to forward to", "target", r.Header.Get("X-Amz-Target"))
		return false
	}
	attempts := 0
	for _, p := range peers {
		if attempts == f.cfg.MaxAttempts || r.Context().Err() != nil {
			break
		}
		if f.cfg.Verifier != nil {
			if _, err := f.cfg.Verifier.Verify(r.Context(), p); err != nil {
				continue // logged by the verifier
			}
		}
		attempts++
		resp, err := f.send(r, p, body, principal)
		if err != nil {
			f.log.Warn("forwarding to a peer failed", "peer", p.ID, "address", p.Meta.APIAddress, "err", err)
			continue
		}
		f.forwarded.Add(1)
		f.log.Debug("forwarded a request: no healthy HSM slot here", "peer", p.ID, "target", r.Header.Get("X-Amz-Target"), "status", resp.StatusCode)
		copyFailoverResponse(w, resp)
		return true
	}
	f.failed.Add(1)
	f.log.Warn("no healthy HSM slot here and no peer could take the request", "tried", attempts, "candidates", len(peers))
	return false
}

// holdWriter passes a response through to w, unless hold says, when the
// status is written, to hold it back (kept for replay).
type holdWriter struct {
	w      http.ResponseWriter
	header http.Header
	hold   func(status int) bool
	status int
	held   bool
	buf    bytes.Buffer
}

func (h *holdWriter) Header() http.Header {
	if h.status != 0 && !h.held {
		return h.w.Header()
	}
	return h.header
}

func (h *holdWriter) WriteHeader(status int) {
	if h.status != 0 {
		return
	}
	h.status = status
	if h.hold(status) {
		h.held = true
		return
	}
	dst := h.w.Header()
	for k, v := range h.header {
		dst[k] = v
	}
	h.w.WriteHeader(status)
}

func (h *holdWriter) Write(b []byte) (int, error) {
	if h.status == 0 {
		h.WriteHeader(http.StatusOK)
	}
	if h.held {
		return h.buf.Write(b)
	}
	return h.w.Write(b)
}

// replay writes the held response.
func (h *holdWriter) replay() {
	dst := h.w.Header()
	for k, v := range h.header {
		dst[k] = v
	}
	h.w.WriteHeader(h.status)
	h.w.Write(h.buf.Bytes())
}

// certificatePrincipal is the principal of a client that authenticated
// with its certificate, when such requests are forwarded.
func (f *Failover) certificatePrincipal(r *http.Request) (string, bool) {
	if !f.cfg.ForwardCertificateCallers || r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return "", false
	}
	p, err := pki.PrincipalFromCert(r.TLS.VerifiedChains[0][0])
	return p, err == nil
}

// send forwards r to peer p and returns its response, whose body the
// caller must copy and close.
func (f *Failover) send(r *http.Request, p NodeStatus, body []byte, principal string) (*http.Response, error) {
	u := &url.URL{Scheme: "https", Host: p.Meta.APIAddress, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	ctx, cancel := context.WithTimeout(r.Context(), f.cfg.Timeout)
	out, err := http.NewRequestWithContext(ctx, r.Method, u.String(), bytes.NewReader(body))
	if err != nil {
		cancel()
		return nil, err
	}
	out.Header = r.Header.Clone()
	removeFailoverHopHeaders(out.Header)
	out.Header.Del(FailoverForwardedHeader)
	out.Header.Del(FailoverPrincipalHeader)
	out.Header.Del(FailoverSourceIPHeader)
	out.Header.Del("Expect")
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = []string{""} // send none, as the client did
	}
	out.Host = r.Host // SigV4 signs it
	out.ContentLength = int64(len(body))
	out.Header.Set(FailoverForwardedHeader, f.cfg.Gossip.NodeID())
	if principal != "" {
		out.Header.Set(FailoverPrincipalHeader, principal)
	}
	if ip := failoverRemoteIP(r); ip != "" {
		out.Header.Set(FailoverSourceIPHeader, ip)
	}
	resp, err := f.transport(p).RoundTrip(out)
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// failoverTransport is the connection pool to one peer at one address.
type failoverTransport struct {
	*http.Transport
	addr string
}

// transport returns the connections to p, made anew when p moved. With a
// verifier, a connection is accepted only if the peer's TLS key is the one
// its verified attestation bound.
func (f *Failover) transport(p NodeStatus) *failoverTransport {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t := f.transports[p.ID]; t != nil && t.addr == p.Meta.APIAddress {
		return t
	} else if t != nil {
		t.CloseIdleConnections()
	}
	tc := f.cfg.TLS.Clone()
	if tc.MinVersion < tls.VersionTLS12 {
		tc.MinVersion = tls.VersionTLS12
	}
	if v := f.cfg.Verifier; v != nil {
		id, addr := p.ID, p.Meta.APIAddress
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !v.Pinned(id, addr, peerTLSKeyHash(cs.PeerCertificates[0])) {
				v.Forget(id) // verify again next time
				return fmt.Errorf("cluster: node %s at %s presents a TLS key its verified attestation does not bind", id, addr)
			}
			return nil
		}
	}
	t := &failoverTransport{addr: p.Meta.APIAddress, Transport: &http.Transport{
		TLSClientConfig:       tc,
		ForceAttemptHTTP2:     true,
		DisableCompression:    true, // pass the peer's bytes through as they are
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: f.cfg.Timeout,
		Proxy:                 nil,
	}}
	f.transports[p.ID] = t
	return t
}

// failoverHopHeaders are the hop-by-hop headers (RFC 9110 7.6.1), which
// concern one connection and are not forwarded either way.
var failoverHopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func removeFailoverHopHeaders(h http.Header) {
	for _, v := range h.Values("Connection") {
		for name := range strings.SplitSeq(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range failoverHopHeaders {
		h.Del(name)
	}
}

// copyFailoverResponse writes the peer's response as it came.
func copyFailoverResponse(w http.ResponseWriter, resp *http.Response) {
	defer resp.Body.Close()
	removeFailoverHopHeaders(resp.Header)
	h := w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

func failoverRemoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return ""
	}
	return host
}

// ForwardedRequest is what a gateway learns from a request another node
// forwarded to it.
type ForwardedRequest struct {
	// Node is the node that forwarded it.
	Node string
	// Principal is the client's principal when the client authenticated
	// with its certificate at the forwarding node; "" for a SigV4 request,
	// whose signature names its principal.
	Principal string
	// SourceIP is the client's address, "" if not given.
	SourceIP string
}

// ErrForwardNotTrusted: a request carries the forwarding headers but does
// not come from a node of the cluster.
var ErrForwardNotTrusted = errors.New("cluster: the request claims to be forwarded, but not over a connection from a cluster node")

// TrustForwarded tells a gateway whether r was forwarded by another node,
// and what the forwarder vouches for. isNode says whether the verified
// client certificate chain of the connection is a cluster node's
// (NodeChain builds one for the cluster CA). It returns nil, nil for a
// request that does not claim to be forwarded; an error wrapping
// ErrForwardNotTrusted when it claims so (it carries one of the forwarding
// headers) but the connection's certificate is not a node's, or its
// forwarding headers are malformed. The gateway should refuse such a
// request, and for a forwarded one with a Principal and no Authorization
// header, authenticate that principal instead of the connection's.
func TrustForwarded(r *http.Request, isNode func(chain []*x509.Certificate) bool) (*ForwardedRequest, error) {
	nodes := r.Header.Values(FailoverForwardedHeader)
	if len(nodes) == 0 && len(r.Header.Values(FailoverPrincipalHeader)) == 0 && len(r.Header.Values(FailoverSourceIPHeader)) == 0 {
		return nil, nil
	}
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return nil, fmt.Errorf("%w: no client certificate", ErrForwardNotTrusted)
	}
	if !isNode(r.TLS.VerifiedChains[0]) {
		return nil, fmt.Errorf("%w: the client certificate is not a node's", ErrForwardNotTrusted)
	}
	var err error
	one := func(name string) (string, error) {
		v := r.Header.Values(name)
		switch len(v) {
		case 0:
			return "", nil
		case 1:
			return v[0], nil
		}
		return "", fmt.Errorf("%w: %d %s headers", ErrForwardNotTrusted, len(v), name)
	}
	fr := &ForwardedRequest{}
	if fr.Node, err = one(FailoverForwardedHeader); err != nil {
		return nil, err
	}
	if fr.Node == "" || metaCheckString(fr.Node, 1, MaxNodeIDLen, metaIsIDByte) != nil {
		return nil, fmt.Errorf("%w: a bad or missing %s header", ErrForwardNotTrusted, FailoverForwardedHeader)
	}
	if fr.Principal, err = one(FailoverPrincipalHeader); err != nil {
		return nil, err
	}
	if fr.Principal != "" && pki.ValidPrincipalName(fr.Principal) != nil {
		return nil, fmt.Errorf("%w: a bad %s header", ErrForwardNotTrusted, FailoverPrincipalHeader)
	}
	if fr.SourceIP, err = one(FailoverSourceIPHeader); err != nil {
		return nil, err
	}
	if fr.SourceIP != "" {
		ip, err := netip.ParseAddr(fr.SourceIP)
		if err != nil {
			return nil, fmt.Errorf("%w: a bad %s header", ErrForwardNotTrusted, FailoverSourceIPHeader)
		}
		fr.SourceIP = ip.String()
	}
	return fr, nil
}

// NodeChain returns an isNode check for TrustForwarded: the chain's leaf
// verifies, for client authentication, against the cluster CA roots (and
// the chain's intermediates). Give the cluster CA alone, not the CA of
// the gateway's clients: whoever holds a certificate of these roots can
// vouch for any principal.
func NodeChain(roots *x509.CertPool) func(chain []*x509.Certificate) bool {
	return func(chain []*x509.Certificate) bool {
		if len(chain) == 0 {
			return false
		}
		inter := x509.NewCertPool()
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
		_, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		return err == nil
	}
}
