package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hsmgate/hsmgate/attest"
	"github.com/hsmgate/hsmgate/gateway/audit"
	"github.com/hsmgate/hsmgate/gateway/kmsapi"
	"github.com/hsmgate/hsmgate/internal/pki"
)

// Attestation: GET /attestation, the attestation readiness check and the
// hsmgate_attestation_ok metric of a gateway whose boot was measured into a
// TPM (docs/attestation.md), and what a gateway that refuses to serve
// answers (RefusalHandler).

// AttestationOperation is the operation name of GET /attestation in the
// audit log and the request metrics.
const AttestationOperation = "Attestation"

// Attester makes attestation documents; *attest.TPM is one.
type Attester interface {
	Attest(nonce, tlsKeyHash, manifest []byte) (*attest.Document, error)
}

// AttestationOptions turn on GET /attestation.
type AttestationOptions struct {
	// TPM quotes the measured PCRs.
	TPM Attester
	// Manifest is the active image manifest, sent in every document (its
	// SHA-256 is bound into the quote).
	Manifest []byte
	// TLSKeyHash is SHA-256 of the DER SubjectPublicKeyInfo of the TLS
	// server certificate the gateway serves with (TLSKeyHash).
	TLSKeyHash []byte
	// Check, when set, reports whether attestation still holds: the TPM
	// answers and its PCRs are still this boot's measurements. While it
	// fails, /readyz answers 503 with its error and hsmgate_attestation_ok
	// is 0. It is called at most once per CheckInterval.
	Check func() error
	// CheckInterval caches Check's result; zero means 2s.
	CheckInterval time.Duration
}

// TLSKeyHash is attest.TLSKeyHash: the hash of the TLS key an attestation
// document binds.
func TLSKeyHash(cert *x509.Certificate) []byte { return attest.TLSKeyHash(cert) }

// maxAttestations bounds the quotes waiting for the TPM, which makes one
// at a time: more callers are shed with ThrottlingException.
const maxAttestations = 8

// attestationState is a gateway's attestation: nil without a TPM.
type attestationState struct {
	opts AttestationOptions
	sem  chan struct{}

	mu      sync.Mutex
	checked time.Time
	lastErr error
}

// setupAttestation checks the attestation options and registers the
// hsmgate_attestation_ok gauge. New calls it; GET /attestation is routed
// whether or not the gateway has a TPM (without one it answers 404).
func (g *Gateway) setupAttestation() error {
	o := g.cfg.Attestation
	if o == nil {
		return nil
	}
	if o.TPM == nil {
		return fmt.Errorf("gateway: attestation needs a TPM")
	}
	if len(o.TLSKeyHash) != sha256.Size {
		return fmt.Errorf("gateway: the attestation TLS key hash is %d bytes, want a SHA-256 digest", len(o.TLSKeyHash))
	}
	if o.CheckInterval <= 0 {
		o.CheckInterval = 2 * time.Second
	}
	g.attestation = &attestationState{opts: *o, sem: make(chan struct{}, maxAttestations)}
	g.metrics.reg.MustRegister(prometheus.NewGaugeFunc(attestationOKOpts, func() float64 {
		if g.attestation.check() != nil {
			return 0
		}
		return 1
	}))
	return nil
}

var attestationOKOpts = prometheus.GaugeOpts{
	Name: "hsmgate_attestation_ok",
	Help: "1 while the gateway's measured boot holds (measured, PINs unsealed, the TPM's PCRs still this boot's); 0 when it refuses to serve or the check fails.",
}

// check runs the Check hook, at most once per CheckInterval.
func (a *attestationState) check() error {
	if a == nil || a.opts.Check == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if now := time.Now(); a.checked.IsZero() || now.Sub(a.checked) >= a.opts.CheckInterval {
		a.lastErr = a.opts.Check()
		a.checked = time.Now()
	}
	return a.lastErr
}

// attestationReady is the readiness hook of /readyz.
func (g *Gateway) attestationReady() error { return g.attestation.check() }

// serveAttestation answers GET /attestation?nonce=<hex>: the attestation
// document for the caller's nonce, with the TLS key hash and manifest bound
// into the quote. Callers must authenticate (mTLS or SigV4) as a principal
// of the keystore. Every call leaves an audit record.
func (g *Gateway) serveAttestation(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	reqID := newRequestID()
	w.Header()["X-Amzn-Requestid"] = []string{reqID}
	principal, doc, apiErr := g.attest(r)
	if g.cfg.Audit != nil {
		rec := audit.Record{
			RequestID: reqID, Principal: principal, SourceIP: remoteIP(r), UserAgent: truncate(r.UserAgent(), 256),
			Operation: AttestationOperation, Outcome: audit.OutcomeOK, LatencyNS: int64(time.Since(start)),
		}
		if apiErr != nil {
			rec.Outcome, rec.ErrorCode = audit.OutcomeError, apiErr.Type
			if denied(apiErr.Type) {
				rec.Outcome = audit.OutcomeDenied
			}
		}
		if err := g.cfg.Audit.Append(r.Context(), rec); err != nil {
			g.log.Error("audit log write failed; refusing the request", "request_id", reqID, "err", err)
			doc, apiErr = nil, kmsapi.Errorf(kmsapi.ExInternal, "The audit log could not be written, so the request was not served.")
		}
	}
	if apiErr != nil {
		g.fail(w, reqID, AttestationOperation, principal, start, apiErr)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.Write(doc)
	g.metrics.observe(AttestationOperation, "ok", time.Since(start))
	g.log.Debug("attestation", "request_id", reqID, "principal", principal, "duration", time.Since(start))
}

// attest authenticates an attestation request and makes its document.
func (g *Gateway) attest(r *http.Request) (principal string, doc []byte, apiErr *kmsapi.Error) {
	select {
	case g.inFlight <- struct{}{}:
		defer func() { <-g.inFlight }()
	default:
		return "", nil, kmsapi.Errorf(kmsapi.ExThrottling, "Rate exceeded: the gateway is serving its maximum of %d requests.", cap(g.inFlight))
	}
	// A GET has no body: SigV4 signs the empty payload.
	caller, apiErr := g.authenticate(r, nil)
	if apiErr != nil {
		return credentialID(r), nil, apiErr
	}
	a := g.attestation
	if a == nil {
		e := kmsapi.Errorf(kmsapi.ExUnsupported, "This gateway has no TPM attestation ([attest] mode is off).")
		e.Status = http.StatusNotFound
		return caller.Principal, nil, e
	}
	q := r.URL.Query()["nonce"]
	if len(q) != 1 {
		return caller.Principal, nil, kmsapi.Errorf(kmsapi.ExValidation, "Give exactly one nonce: GET /attestation?nonce=<%d to %d bytes in hex>.", attest.MinNonceSize, attest.MaxNonceSize)
	}
	nonce, err := hex.DecodeString(q[0])
	if err != nil || len(nonce) < attest.MinNonceSize || len(nonce) > attest.MaxNonceSize {
		return caller.Principal, nil, kmsapi.Errorf(kmsapi.ExValidation, "The nonce must be %d to %d bytes in hex.", attest.MinNonceSize, attest.MaxNonceSize)
	}
	ctx, cancel := context.WithTimeout(r.Context(), g.cfg.RequestTimeout)
	defer cancel()
	select {
	case a.sem <- struct{}{}:
		defer func() { <-a.sem }()
	case <-ctx.Done():
		return caller.Principal, nil, kmsapi.Errorf(kmsapi.ExThrottling, "Rate exceeded: too many attestations are waiting for the TPM.")
	}
	d, err := a.opts.TPM.Attest(nonce, a.opts.TLSKeyHash, a.opts.Manifest)
	if err != nil {
		g.log.Error("attestation failed", "principal", caller.Principal, "err", err)
		return caller.Principal, nil, kmsapi.Errorf(kmsapi.ExInternal, "The TPM could not make an attestation document.")
	}
	b, err := json.Marshal(d)
	if err != nil {
		return caller.Principal, nil, kmsapi.Errorf(kmsapi.ExInternal, "The attestation document could not be encoded.")
	}
	return caller.Principal, b, nil
}

// RefusalHandler is what a gateway that refuses to serve answers, when its
// measured boot did not match (it could not unseal its PINs, say) and it
// did not open the HSM pool: GET /healthz 200 (the process is up),
// GET /readyz 503 with reason, GET /metrics with hsmgate_attestation_ok 0,
// and 503 with reason to everything else, the KMS API included.
func RefusalHandler(reason string) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGaugeFunc(attestationOKOpts, func() float64 { return 0 }),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "not ready: refusing to serve: "+reason, http.StatusServiceUnavailable)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		e := kmsapi.Errorf(kmsapi.ExInternal, "The gateway refuses to serve: %s", reason)
		e.Status = http.StatusServiceUnavailable
		writeJSONError(w, e)
	})
	return mux
}

// TemporaryCertificate makes a TLS server certificate for hosts with a
// fresh key that lives only in this process's memory, chained to a
// throw-away CA of its own. A gateway that refuses to serve has no other:
// its real TLS key is in the HSM pool, which it does not open. Clients
// that verify the gateway's CA reject it, as they should; health probes
// that don't verify, or that pin this certificate, can still read /readyz.
func TemporaryCertificate(hosts []string, now time.Time) (tls.Certificate, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	ca, err := pki.NewCA(caKey, "hsmgate temporary CA (refusing to serve)", 7*24*time.Hour, now)
	if err != nil {
		return tls.Certificate{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := pki.IssueServer(ca, caKey, &key.PublicKey, hosts, 7*24*time.Hour, now)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{leaf.Raw, ca.Raw}, PrivateKey: key, Leaf: leaf}, nil
}
