// Package gateway is hsmgate's server: it authenticates callers (mutual TLS
// or SigV4), serves the AWS KMS JSON protocol from package kmsapi on the HSM
// pool, and exposes health, readiness and Prometheus metrics.
//
// # Routes
//
//	POST /         AWS KMS JSON 1.1 (X-Amz-Target: TrentService.<Operation>)
//	POST /         the admin API, for admin principals (X-Amz-Target: HsmGate.<Operation>; see admin.go)
//	GET  /healthz  200 while the process serves
//	GET  /readyz   200 while the pool has a healthy slot (and, with a TPM,
//	               while attestation holds), else 503
//	GET  /metrics  Prometheus metrics
//	GET  /attestation?nonce=<hex>  a TPM attestation document, for
//	               authenticated callers (attestation.go)
//
// # Authentication
//
// A request with an Authorization header is authenticated by SigV4 (service
// "kms", the configured region); any other request by its TLS client
// certificate, verified against the client CA, naming its principal in a
// SAN URI urn:hsmgate:principal:<name> or else its subject CN. The
// principal must exist in the keystore. Anything else is refused.
package gateway

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hsmgate/hsmgate/gateway/audit"
	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/gateway/kmsapi"
	"github.com/hsmgate/hsmgate/gateway/sigv4"
	"github.com/hsmgate/hsmgate/gateway/xks"
	"github.com/hsmgate/hsmgate/hsmpool"
	"github.com/hsmgate/hsmgate/internal/pki"
)

// MaxBody bounds a request body. The largest legitimate KMS request
// (a 6144-byte ciphertext and an 8 KiB encryption context, base64) is far
// smaller.
const MaxBody = 128 << 10

// Config configures a Gateway.
type Config struct {
	Pool    *hsmpool.Pool
	Store   *keystore.Store
	Region  string // for SigV4 scopes and ARNs; required
	Account string // 12-digit account id for ARNs; required
	Logger  *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// RequestTimeout bounds each request's work on the pool. Zero means
	// 10s. The pool fails over within it and answers
	// DependencyTimeoutException when it runs out.
	RequestTimeout time.Duration
	// Audit, when set, receives one record per request, durable before the
	// response is sent; a request whose record can't be written fails.
	Audit *audit.Writer
	// MaxInFlight sheds load: a request arriving while this many are being
	// served gets ThrottlingException at once instead of queueing. Zero
	// means 1024.
	MaxInFlight int
	// XKS, when set, also serves the External Key Store proxy API.
	XKS *XKSOptions
	// Attestation, when set, serves GET /attestation from the TPM that
	// measured this boot, and makes /readyz follow its Check
	// (attestation.go; docs/attestation.md).
	Attestation *AttestationOptions
	// RunSchedule, when set, gates the rotation and deletion scheduler:
	// each scheduled check runs only while it returns true (in a cluster,
	// while this node is the raft leader). Nil runs every check.
	RunSchedule func() bool
	// Images, when set, serves the firmware image operations and runs
	// approved activations (images.go).
	Images *ImageService
	// QuorumLedger is the absolute path of the quorum replay ledger, a
	// bbolt file of this node (hsmgate serve: <data>/quorum/ledger.db).
	// QuorumInit puts it there; empty means QuorumInit is refused.
	QuorumLedger string
	// Wrap, when set, wraps the gateway's handler (in a cluster: load
	// metering and failover to peers, package cluster).
	Wrap func(http.Handler) http.Handler
	// ClusterStatus, when set, is served on GET /cluster to admins.
	ClusterStatus http.Handler
	// Fleet, when set, reports the cluster as this node sees it: its
	// members and which can take requests (gossip). /readyz and the XKS
	// health response include it.
	Fleet func() []FleetMember
	// GossipKeys, when set, lets admins rotate the node's gossip keyring
	// (gossipkeys.go).
	GossipKeys GossipKeyring
	// Forwarded, when set, vets a request another node forwarded
	// (cluster.TrustForwarded): nil for a request that was not forwarded;
	// an error refuses the request (forwarding headers from anyone but a
	// node). A forwarded request's Principal is the client's when it
	// authenticated with its certificate at the forwarding node.
	Forwarded func(r *http.Request) (*ForwardedRequest, error)
}

// ForwardedRequest is what a forwarding node vouches for.
type ForwardedRequest struct {
	Principal string // "" for a SigV4 request, which names its own
	SourceIP  string // the client's address, "" if not given
}

// FleetMember is one other node of the cluster, for health reports.
type FleetMember struct {
	ID     string
	Zone   string
	Usable bool // alive, with a healthy HSM slot (and, if required, attested)
}

// Gateway serves the API. Create it with New.
type Gateway struct {
	cfg         Config
	log         *slog.Logger
	service     *kmsapi.Service
	identities  *Identities
	verifier    *sigv4.Verifier
	metrics     *metrics
	mux         *http.ServeMux
	inFlight    chan struct{}
	xks         *xks.Handler      // nil without external key stores
	attestation *attestationState // nil without a TPM
}

// New builds a gateway on an open pool and keystore.
func New(cfg Config) (*Gateway, error) {
	switch {
	case cfg.Pool == nil || cfg.Store == nil:
		return nil, errors.New("gateway: a pool and a keystore are required")
	case cfg.Region == "":
		return nil, errors.New("gateway: a region is required")
	case len(cfg.Account) != 12:
		return nil, errors.New("gateway: the account id must be 12 digits")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 1024
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	g := &Gateway{cfg: cfg, log: cfg.Logger, inFlight: make(chan struct{}, cfg.MaxInFlight)}
	g.service = &kmsapi.Service{Pool: cfg.Pool, Store: cfg.Store, Region: cfg.Region, Account: cfg.Account, Log: cfg.Logger, Now: now}
	g.service.OnRotation = g.auditRotation
	g.identities = &Identities{Pool: cfg.Pool, Store: cfg.Store, Now: now}
	g.verifier = &sigv4.Verifier{Region: cfg.Region, Service: "kms", Lookup: g.identities.Lookup, Now: now}
	g.metrics = newMetrics(cfg.Pool)
	g.mux = http.NewServeMux()
	g.mux.HandleFunc("POST /{$}", g.serveKMS)
	g.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	g.mux.HandleFunc("GET /readyz", g.serveReady)
	g.mux.Handle("GET /metrics", g.metrics.handler())
	g.mux.HandleFunc("GET /attestation", g.serveAttestation)
	if cfg.ClusterStatus != nil {
		g.mux.Handle("GET /cluster", g.adminOnly(cfg.ClusterStatus))
	}
	if err := g.setupAttestation(); err != nil {
		return nil, err
	}
	if cfg.XKS != nil && len(cfg.XKS.Stores) > 0 {
		h, err := g.newXKS(cfg.XKS)
		if err != nil {
			return nil, err
		}
		g.xks = h
	}
	return g, nil
}

// Identities returns the gateway's principal and access key manager.
func (g *Gateway) Identities() *Identities { return g.identities }

// Handler returns the gateway's HTTP handler.
func (g *Gateway) Handler() http.Handler {
	var h http.Handler = g.mux
	if g.xks != nil {
		h = http.HandlerFunc(g.serveAll)
	}
	if g.cfg.Wrap != nil {
		h = g.cfg.Wrap(h)
	}
	return h
}

// adminOnly serves h to authenticated admins, and refuses anyone else.
func (g *Gateway) adminOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, apiErr := g.authenticate(r, nil)
		if apiErr == nil && !c.Admin {
			apiErr = kmsapi.Errorf(kmsapi.ExAccessDenied, "Only administrators may read the cluster's state.")
		}
		if apiErr != nil {
			writeJSONError(w, apiErr)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// fleetSummary is "; cluster: U of N other nodes usable", or "".
func (g *Gateway) fleetSummary() string {
	if g.cfg.Fleet == nil {
		return ""
	}
	members := g.cfg.Fleet()
	usable := 0
	for _, m := range members {
		if m.Usable {
			usable++
		}
	}
	return fmt.Sprintf("; cluster: %d of %d other nodes usable", usable, len(members))
}

func (g *Gateway) serveReady(w http.ResponseWriter, _ *http.Request) {
	if err := g.attestationReady(); err != nil {
		http.Error(w, "not ready: attestation: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	if n := g.cfg.Pool.Healthy(); n > 0 {
		fmt.Fprintf(w, "ready: %d healthy HSM slots%s\n", n, g.fleetSummary())
		return
	}
	// Without a healthy slot the node completes no new TLS handshake (its
	// TLS key is in the pool): it is not ready, even if peers could answer
	// its requests (docs/cluster.md).
	http.Error(w, "not ready: no healthy HSM slot"+g.fleetSummary(), http.StatusServiceUnavailable)
}

func (g *Gateway) serveKMS(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	reqID := newRequestID()
	w.Header()["X-Amzn-Requestid"] = []string{reqID} // x-amzn-RequestId, canonical form
	target := r.Header.Get("X-Amz-Target")
	op := operationName(target) // admin operations are "HsmGate.<Operation>"
	var info kmsapi.Info
	principal, resp, apiErr := g.handle(r, target, &info)
	if g.cfg.Audit != nil {
		rec := audit.Record{
			RequestID: reqID, Principal: principal, SourceIP: remoteIP(r), UserAgent: truncate(r.UserAgent(), 256),
			Operation: op, KeyID: info.KeyID, KeyARN: info.KeyARN, KeyVersion: info.KeyVersion,
			EncryptionContext: info.EncryptionContext, GrantID: info.GrantID, Outcome: audit.OutcomeOK, LatencyNS: int64(time.Since(start)),
		}
		if op == "" {
			rec.Operation = truncate(target, 128)
		}
		if apiErr != nil {
			rec.Outcome, rec.ErrorCode = audit.OutcomeError, apiErr.Type
			if denied(apiErr.Type) {
				rec.Outcome = audit.OutcomeDenied
			}
		}
		// Durable before the answer leaves: no use of a key goes unrecorded.
		if err := g.cfg.Audit.Append(r.Context(), rec); err != nil {
			g.log.Error("audit log write failed; refusing the request", "request_id", reqID, "err", err)
			resp, apiErr = nil, kmsapi.Errorf(kmsapi.ExInternal, "The audit log could not be written, so the request was not served.")
		}
	}
	if apiErr != nil {
		g.fail(w, reqID, op, principal, start, apiErr)
		return
	}
	h := w.Header()
	h["Content-Type"] = jsonContentType
	if len(resp) > 2048 {
		// Smaller bodies are written in one piece before the handler
		// returns, and net/http sets their Content-Length itself.
		h["Content-Length"] = []string{strconv.Itoa(len(resp))}
	}
	w.Write(resp)
	g.metrics.observe(op, "ok", time.Since(start))
	if g.log.Enabled(r.Context(), slog.LevelDebug) {
		g.log.Debug("kms request", "request_id", reqID, "operation", op, "principal", principal, "duration", time.Since(start))
	}
}

// handle sheds, reads, authenticates and runs a KMS request. principal is
// who made it (or, when SigV4 authentication failed, the access key id it
// named), for the audit log.
func (g *Gateway) handle(r *http.Request, target string, info *kmsapi.Info) (principal string, resp []byte, apiErr *kmsapi.Error) {
	select {
	case g.inFlight <- struct{}{}:
		defer func() { <-g.inFlight }()
	default:
		return "", nil, kmsapi.Errorf(kmsapi.ExThrottling, "Rate exceeded: the gateway is serving its maximum of %d requests.", cap(g.inFlight))
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return "", nil, kmsapi.Errorf(kmsapi.ExValidation, "The request body is larger than %d bytes.", MaxBody)
		}
		return "", nil, kmsapi.Errorf(kmsapi.ExSerialization, "The request body could not be read.")
	}
	caller, apiErr := g.authenticate(r, body)
	if apiErr != nil {
		return credentialID(r), nil, apiErr
	}
	ctx, cancel := context.WithTimeout(r.Context(), g.cfg.RequestTimeout)
	defer cancel()
	if isAdminTarget(target) { // the admin API (admin.go)
		resp, apiErr = g.admin(ctx, caller, target, body)
	} else {
		resp, apiErr = g.service.Do(ctx, caller, target, body, info)
	}
	return caller.Principal, resp, apiErr
}

// denied says whether an exception type means the caller was refused.
func denied(typ string) bool {
	switch typ {
	case kmsapi.ExAccessDenied, kmsapi.ExUnrecognizedClient, kmsapi.ExMissingAuthToken,
		sigv4.CodeInvalidSignature, sigv4.CodeIncompleteSignature:
		return true
	}
	return false
}

// credentialID is the access key id a SigV4 Authorization header names,
// for the audit record of a request whose signature was refused.
func credentialID(r *http.Request) string {
	_, rest, ok := strings.Cut(r.Header.Get("Authorization"), "Credential=")
	if !ok {
		return ""
	}
	id, _, _ := strings.Cut(rest, "/")
	return truncate(id, 128)
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// fail answers a request with an API error, counts and logs it.
func (g *Gateway) fail(w http.ResponseWriter, reqID, op, principal string, start time.Time, e *kmsapi.Error) {
	if op == "" {
		op = "unknown"
	}
	g.metrics.observe(op, e.Type, time.Since(start))
	g.log.Info("kms request failed", "request_id", reqID, "operation", op, "principal", principal, "error", e.Type, "message", e.Message)
	writeJSONError(w, e)
}

// authenticate finds the caller: SigV4 when the request carries an
// Authorization header, else its verified TLS client certificate.
func (g *Gateway) authenticate(r *http.Request, body []byte) (kmsapi.Caller, *kmsapi.Error) {
	var name string
	sourceIP := remoteIP(r)
	var fw *ForwardedRequest
	if g.cfg.Forwarded != nil {
		var err error
		if fw, err = g.cfg.Forwarded(r); err != nil {
			return kmsapi.Caller{}, kmsapi.Errorf(kmsapi.ExAccessDenied, "%s", err.Error())
		}
		if fw != nil && fw.SourceIP != "" {
			sourceIP = fw.SourceIP
		}
	}
	switch {
	case fw != nil && r.Header.Get("Authorization") == "" && fw.Principal != "":
		// A client that authenticated with its certificate at the node
		// that forwarded the request, which vouches for it.
		name = fw.Principal
	case r.Header.Get("Authorization") != "":
		res, err := g.verifier.Verify(r, body)
		if err != nil {
			var se *sigv4.Error
			msg := "The request signature is not valid."
			if errors.As(err, &se) {
				msg = se.Message
			}
			e := kmsapi.Errorf(sigv4.ErrorCode(err), "%s", msg)
			e.Status = sigv4.HTTPStatus(err)
			return kmsapi.Caller{}, e
		}
		name = res.Principal
	case r.TLS != nil && len(r.TLS.VerifiedChains) > 0:
		p, err := pki.PrincipalFromCert(r.TLS.VerifiedChains[0][0])
		if err != nil {
			return kmsapi.Caller{}, kmsapi.Errorf(kmsapi.ExUnrecognizedClient, "The client certificate names no valid principal.")
		}
		name = p
	default:
		return kmsapi.Caller{}, kmsapi.Errorf(kmsapi.ExMissingAuthToken, "Request is missing Authentication Token: sign it with SigV4 or present a client certificate.")
	}
	p, err := g.cfg.Store.Principal(name)
	if err != nil || p.XKSStore != "" {
		// An external key store's credentials sign only XKS requests.
		return kmsapi.Caller{}, kmsapi.Errorf(kmsapi.ExUnrecognizedClient, "The principal %q is not known to this gateway.", name)
	}
	return kmsapi.Caller{Principal: p.Name, Admin: p.Admin, Kind: p.Kind, Service: p.Service, Tags: p.Tags, SourceIP: sourceIP}, nil
}

// jsonContentType is shared by every response's header: net/http only
// reads header values.
var jsonContentType = []string{"application/x-amz-json-1.1"}

func writeJSONError(w http.ResponseWriter, e *kmsapi.Error) {
	h := w.Header()
	h.Set("Content-Type", "application/x-amz-json-1.1")
	h.Set("x-amzn-ErrorType", e.Type)
	w.WriteHeader(e.Status)
	w.Write(kmsapi.ErrorBody(e))
}

// newRequestID returns a random (version 4) UUID.
func newRequestID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:], b[10:16])
	return string(out[:])
}

// TLSConfig returns the server's TLS configuration: TLS 1.3 unless
// minVersion allows 1.2, the server certificate (whose key may be an HSM
// signer), and client certificates verified against clientCAs when a client
// presents one (SigV4 clients need none).
func TLSConfig(cert tls.Certificate, clientCAs *x509.CertPool, minVersion uint16) *tls.Config {
	if minVersion == 0 {
		minVersion = tls.VersionTLS13
	}
	return &tls.Config{
		MinVersion:   minVersion,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    clientCAs,
	}
}

// Serve serves HTTPS on ln until ctx ends, then shuts down gracefully:
// it stops accepting, lets requests in flight finish (up to grace), and
// returns.
func (g *Gateway) Serve(ctx context.Context, ln net.Listener, tlsConfig *tls.Config, grace time.Duration) error {
	srv := &http.Server{
		Handler:           g.Handler(),
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	// Scheduled rotation and deletion run while serving; they have stopped
	// when Serve returns, so the caller may close the pool and keystore.
	schedCtx, stopSchedule := context.WithCancel(ctx)
	scheduleDone := make(chan struct{})
	go func() { defer close(scheduleDone); g.scheduleLoop(schedCtx) }()
	defer func() { stopSchedule(); <-scheduleDone }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := srv.Shutdown(sctx)
	<-errc
	return err
}
