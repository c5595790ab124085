package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/hsmgate/hsmgate/attest"
)

// PeerVerifier verifies peers' attestation before this node trusts them
// with forwarded requests: gossip only carries a peer's own claim.
//
// To verify a peer it asks GET https://<peer API address>/attestation
// ?nonce=<32 random bytes, hex> over mutual TLS (this node's client
// certificate, the cluster CA), and runs attest.Verify on the document
// with the peer's enrollment record, the nonce, the hash of the TLS key
// that very connection presented, and the golden policy; then it checks
// that the manifest sent is the measured image. A verdict is cached, a
// success for TTL and a failure for RetryAfter, and the verified TLS key
// is pinned: the forwarder only sends requests to a peer over connections
// that present that key (PeerVerifier.Pinned), so a verified quote can't
// be borrowed by another machine.
type PeerVerifier struct {
	cfg    PeerVerifierConfig
	client *http.Client
	log    *slog.Logger

	mu       sync.Mutex
	verdicts map[string]*PeerVerdict
	pending  map[string]*verifyCall
}

// PeerVerifierConfig configures a PeerVerifier.
type PeerVerifierConfig struct {
	// TLS is the client side of mutual TLS to peers (required): RootCAs
	// the cluster CA, Certificates this node's client certificate, whose
	// principal the peers know.
	TLS *tls.Config
	// Enrollment returns the enrollment record of a node's TPM (required):
	// the attestation key its quotes must be signed with.
	Enrollment func(nodeID string) (attest.Enrollment, error)
	// Policy is the golden policy every peer's boot must match: approved
	// image, binary and configuration digests (every node's configuration
	// differs, so list each node's).
	Policy attest.GoldenPolicy
	// TTL is how long a successful verification is trusted. Zero means
	// 5m.
	TTL time.Duration
	// RetryAfter is how long a failed verification stands before the peer
	// is tried again. Zero means 15s.
	RetryAfter time.Duration
	// Timeout bounds one verification. Zero means 10s.
	Timeout time.Duration
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// PeerVerdict is the outcome of a peer's verification.
type PeerVerdict struct {
	NodeID  string
	Address string // the API address verified
	At      time.Time
	// Err is why verification failed; nil when it succeeded.
	Err error
	// TLSKeyHash is SHA-256 of the verified peer's TLS public key (DER
	// SubjectPublicKeyInfo), when verified.
	TLSKeyHash []byte
	// Boot is what the peer's quote proved, when verified.
	Boot *attest.BootState
	// Expired is true when the verdict is older than its TTL (success) or
	// RetryAfter (failure): it no longer decides anything.
	Expired bool
}

type verifyCall struct {
	done    chan struct{}
	verdict *PeerVerdict
}

// ErrPeerNotVerified wraps every error of PeerVerifier.Verify.
var ErrPeerNotVerified = errors.New("cluster: peer attestation not verified")

// NewPeerVerifier returns a verifier.
func NewPeerVerifier(cfg PeerVerifierConfig) (*PeerVerifier, error) {
	if cfg.TLS == nil || cfg.Enrollment == nil {
		return nil, errors.New("cluster: a peer verifier needs a TLS client configuration and the peers' enrollment records")
	}
	if len(cfg.TLS.Certificates) == 0 && cfg.TLS.GetClientCertificate == nil {
		return nil, errors.New("cluster: a peer verifier needs this node's client certificate: a peer's /attestation answers authenticated callers only")
	}
	cfg.TTL = orDefaultDuration(cfg.TTL, 5*time.Minute)
	cfg.RetryAfter = orDefaultDuration(cfg.RetryAfter, 15*time.Second)
	cfg.Timeout = orDefaultDuration(cfg.Timeout, 10*time.Second)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	tc := cfg.TLS.Clone()
	if tc.MinVersion < tls.VersionTLS12 {
		tc.MinVersion = tls.VersionTLS12
	}
	return &PeerVerifier{
		cfg: cfg, log: cfg.Logger.With("component", "peer-attestation"),
		client: &http.Client{Timeout: cfg.Timeout, Transport: &http.Transport{
			TLSClientConfig: tc, ForceAttemptHTTP2: true, TLSHandshakeTimeout: cfg.Timeout, IdleConnTimeout: time.Minute,
		}},
		verdicts: map[string]*PeerVerdict{}, pending: map[string]*verifyCall{},
	}, nil
}

// Close closes the verifier's idle connections.
func (v *PeerVerifier) Close() { v.client.CloseIdleConnections() }

// Verdict returns the latest verdict on a node, if there is one.
func (v *PeerVerifier) Verdict(nodeID string) (PeerVerdict, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	d := v.verdicts[nodeID]
	if d == nil {
		return PeerVerdict{}, false
	}
	out := *d
	out.Expired = v.expired(d)
	return out, true
}

func (v *PeerVerifier) expired(d *PeerVerdict) bool {
	ttl := v.cfg.TTL
	if d.Err != nil {
		ttl = v.cfg.RetryAfter
	}
	return v.cfg.Now().Sub(d.At) >= ttl
}

// Forget drops the verdict on a node: the next Verify asks it again.
func (v *PeerVerifier) Forget(nodeID string) {
	v.mu.Lock()
	delete(v.verdicts, nodeID)
	v.mu.Unlock()
}

// Pinned reports whether keyHash is the TLS key verified for nodeID at
// address, by a verdict still in force.
func (v *PeerVerifier) Pinned(nodeID, address string, keyHash []byte) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	d := v.verdicts[nodeID]
	return d != nil && d.Err == nil && d.Address == address && !v.expired(d) && bytes.Equal(d.TLSKeyHash, keyHash)
}

// Verify returns the peer's verdict, verifying it now unless a verdict on
// its current API address is in force (concurrent callers share one
// verification). The error, when not nil, wraps ErrPeerNotVerified and
// says why.
func (v *PeerVerifier) Verify(ctx context.Context, peer NodeStatus) (*PeerVerdict, error) {
	if peer.Meta == nil {
		return nil, fmt.Errorf("%w: node %s: %s", ErrPeerNotVerified, peer.ID, peer.MetaError)
	}
	addr := peer.Meta.APIAddress
	for {
		v.mu.Lock()
		if d := v.verdicts[peer.ID]; d != nil && d.Address == addr && !v.expired(d) {
			out := *d
			v.mu.Unlock()
			return &out, out.Err
		}
		call := v.pending[peer.ID]
		if call == nil {
			call = &verifyCall{done: make(chan struct{})}
			v.pending[peer.ID] = call
			// Detached from the caller: one caller giving up must not
			// leave a failure that stands for RetryAfter.
			go func(ctx context.Context) {
				d := v.verify(ctx, peer.ID, addr)
				v.mu.Lock()
				v.verdicts[peer.ID] = d
				delete(v.pending, peer.ID)
				call.verdict = d
				v.mu.Unlock()
				close(call.done)
			}(context.WithoutCancel(ctx))
		}
		v.mu.Unlock()
		select {
		case <-call.done:
			if call.verdict.Address == addr {
				out := *call.verdict
				return &out, out.Err
			}
			// Verified at another address meanwhile: look again.
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: node %s: %w", ErrPeerNotVerified, peer.ID, ctx.Err())
		}
	}
}

// verify runs one verification.
func (v *PeerVerifier) verify(ctx context.Context, nodeID, addr string) *PeerVerdict {
	d := &PeerVerdict{NodeID: nodeID, Address: addr}
	st, keyHash, err := v.fetchAndVerify(ctx, nodeID, addr)
	d.At = v.cfg.Now()
	if err != nil {
		d.Err = fmt.Errorf("%w: node %s at %s: %w", ErrPeerNotVerified, nodeID, addr, err)
		v.log.Warn("a peer's attestation did not verify: no request is forwarded to it", "node", nodeID, "address", addr, "err", err, "retry_after", v.cfg.RetryAfter)
		return d
	}
	d.TLSKeyHash, d.Boot = keyHash, st
	v.log.Info("verified a peer's attestation", "node", nodeID, "address", addr, "ak", hex.EncodeToString(st.AKName), "tpm_reset_count", st.ResetCount)
	return d
}

func (v *PeerVerifier) fetchAndVerify(ctx context.Context, nodeID, addr string) (*attest.BootState, []byte, error) {
	enr, err := v.cfg.Enrollment(nodeID)
	if err != nil {
		return nil, nil, fmt.Errorf("no enrollment record: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, v.cfg.Timeout)
	defer cancel()
	// The same verification as hsmgate attest verify and hsmofficer
	// verify-gateway: a fresh nonce, the TLS key of this very connection
	// (a document relayed from another machine binds another key), the
	// quote, the event log, the golden policy and the manifest.
	st, err := attest.VerifyGateway(ctx, v.client, "https://"+addr, enr, v.cfg.Policy)
	if err != nil {
		return nil, nil, err
	}
	return st, st.TLSKeyHash, nil
}

// peerTLSKeyHash is the TLS key hash an attestation document binds.
func peerTLSKeyHash(cert *x509.Certificate) []byte { return attest.TLSKeyHash(cert) }

func truncateBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
