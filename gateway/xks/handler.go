package xks

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hsmgate/hsmgate/gateway/sigv4"
	"github.com/hsmgate/hsmgate/hsmpool"
)

// Operation names, as the specification's "API Operations" section names
// them. They are also the op of an [AuthzRequest] and of an [Event].
const (
	OpGetKeyMetadata  = "GetKeyMetadata"
	OpEncrypt         = "Encrypt"
	OpDecrypt         = "Decrypt"
	OpGetHealthStatus = "GetHealthStatus"
)

// Key usages a key may report ("GetKeyMetadata": ENCRYPT and DECRYPT, and
// other values the key manager supports). Encrypt needs UsageEncrypt and
// Decrypt UsageDecrypt; WRAP and UNWRAP are reported only.
const (
	UsageEncrypt = "ENCRYPT"
	UsageDecrypt = "DECRYPT"
	UsageWrap    = "WRAP"
	UsageUnwrap  = "UNWRAP"
)

// ValidUsages are the key usages a Key may report.
var ValidUsages = []string{UsageEncrypt, UsageDecrypt, UsageWrap, UsageUnwrap}

// SigV4Service is the service name in the credential scope of every XKS
// request ("Appendix A").
const SigV4Service = "kms-xks-proxy"

// apiRoot is what follows a key store's path prefix in every URI ("API
// Operations": [/<path-prefix>]/kms/xks/v1).
const apiRoot = "/kms/xks/v1"

// maxURIPath is the specification's bound on XksProxyUriPath, the prefix
// and apiRoot together.
const maxURIPath = 128

// Key is an hsmgate key usable through XKS: an AES-256 key of the keystore
// marked for external use. Implementations must be safe for concurrent use.
type Key interface {
	// ID is the external key id, as AWS KMS sends it in the URI:
	// 1 to 128 characters A-Z a-z 0-9 - . _ ("API Operations").
	ID() string
	// Usages are the usages GetKeyMetadata reports, a non-empty subset of
	// ValidUsages.
	Usages() []string
	// Enabled reports the key's status: GetKeyMetadata reports ENABLED or
	// DISABLED, and a disabled key refuses Encrypt and Decrypt with
	// InvalidStateException.
	Enabled() bool
	// EncryptKey returns the pool key of the version that encrypts (its
	// current one), after counting one AES-GCM encryption with a random IV
	// against that version (NIST SP 800-38D's limit; the keystore's
	// ReserveEncryptions). Return the same *hsmpool.Key for a version every
	// time, so that the pool's per-slot cache of unwrapped keys is hit.
	EncryptKey(ctx context.Context) (*hsmpool.Key, error)
	// DecryptKey returns the pool key of a version (hsmpool.Key.Version;
	// 0 means the current one), or ErrKeyVersionNotFound.
	DecryptKey(ctx context.Context, version uint32) (*hsmpool.Key, error)
}

// Keys finds the external keys of a key store.
type Keys interface {
	// Lookup returns the key of a store (by Store.Name) with that external
	// key id, or an error wrapping ErrKeyNotFound (or ErrInvalidState for
	// a key that exists but can't be used at all, such as one pending
	// deletion).
	Lookup(ctx context.Context, store, externalKeyID string) (Key, error)
}

// AuthzRequest is what a secondary authorization decides on ("Authorization").
type AuthzRequest struct {
	Store       string // Store.Name
	Key         Key
	Operation   string // OpGetKeyMetadata, OpEncrypt or OpDecrypt
	Metadata    *RequestMetadata
	AccessKeyID string // the SigV4 credential that signed the request
	SourceIP    string
}

// Authorizer is a key store's secondary authorization: nil allows; an
// error wrapping ErrAccessDenied refuses with AccessDeniedException (its
// text is logged, not sent); any other error is an InternalException.
// GetHealthStatus is never authorized ("GetHealthStatus": it MUST be
// excluded from secondary authorization).
type Authorizer func(ctx context.Context, r *AuthzRequest) error

// Store is one external key store: the path prefix AWS KMS was given (its
// XksProxyUriPath is Prefix + "/kms/xks/v1"), its credentials and its keys.
type Store struct {
	// Name identifies the store in audit events, logs and Keys.Lookup.
	// Required, unique.
	Name string
	// Prefix is the optional path prefix: "" (or "/") for none, or "/"
	// followed by segments of A-Z a-z 0-9 - _ separated by single
	// slashes, without a trailing slash and without "/kms/xks/v1" (for
	// example "/xks/store1"). Prefix + "/kms/xks/v1" must not exceed 128
	// characters. Unique.
	Prefix string
	// Credentials returns the credentials accepted now (one, or two during
	// a rotation; see ValidateCredentials). It is called on every request,
	// so a reload applies to the next one; it must be fast and safe for
	// concurrent use. A set that is not valid fails requests with
	// InternalException (fail closed).
	Credentials func() []Credential
	// Regions, if set, are the only AWS regions accepted in the SigV4
	// credential scope (KMS signs with the region that calls the proxy).
	// Empty accepts any region.
	Regions []string
	// Keys finds the store's keys. Required.
	Keys Keys
	// Authorize is the optional secondary authorization.
	Authorize Authorizer
	// MaxInFlight, if positive, is how many requests of this store may be
	// served at once; one more gets ThrottlingException ("API Operations":
	// a proxy MAY keep a quota per path prefix).
	MaxInFlight int
	// RateLimit, if positive, is this store's sustained requests per
	// second, with bursts of Burst (at least 1; 0 means
	// max(1, RateLimit)). Requests past it get ThrottlingException.
	RateLimit float64
	Burst     int
	// ClientCert, if set, requires a TLS client certificate that passes
	// it, in addition to SigV4.
	ClientCert *ClientCertPolicy
	// Enabled, if set, is asked on every authenticated request; false
	// refuses it with InvalidStateException ("Error Codes": a disabled key
	// store), health checks included. Nil means always enabled.
	Enabled func() bool
}

// URIPath is the XksProxyUriPath to give AWS KMS for the store.
func (s *Store) URIPath() string { return s.prefix() + apiRoot }

// prefix is Prefix with "/" read as "".
func (s *Store) prefix() string {
	if s.Prefix == "/" {
		return ""
	}
	return s.Prefix
}

// ConsoleConfig is the JSON file the AWS KMS console takes to set up an
// external key store ("XKS Proxy Configuration in AWS KMS Console"): the
// store's URI path and one of its credentials. It holds the secret: hand
// it only to whoever may configure KMS.
func (s *Store) ConsoleConfig(c Credential) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	type credential struct {
		AccessKeyID        string `json:"AccessKeyId"`
		RawSecretAccessKey string `json:"RawSecretAccessKey"`
	}
	return json.MarshalIndent(struct {
		XksProxyURIPath                  string     `json:"XksProxyUriPath"`
		XksProxyAuthenticationCredential credential `json:"XksProxyAuthenticationCredential"`
	}{s.URIPath(), credential{c.AccessKeyID, c.Secret}}, "", "  ")
}

// Handler serves the XKS proxy API for one or more key stores from an HSM
// pool. Set its fields, then call Validate (or let the first request do
// it); do not change them afterwards. It is safe for concurrent use.
type Handler struct {
	Pool   *hsmpool.Pool
	Stores []*Store
	// Audit receives one event per request before the response is sent;
	// an error fails the request with InternalException instead. Nil
	// records nothing.
	Audit func(context.Context, Event) error
	// Now is the clock (SigV4 skew, rate limits, event times); nil means
	// time.Now.
	Now func() time.Time
	// Log receives failures (never key material or plaintext); nil means
	// slog.Default().
	Log *slog.Logger
	// Timeout bounds each request's work on the key store and the pool;
	// zero means 2s (KMS itself gives up after 250ms).
	Timeout time.Duration
	// FleetSize is the number of proxies (gateway instances) serving these
	// stores, for GetHealthStatus's xksProxyFleetSize; zero means 1.
	FleetSize int
	// Fleet, when set, lists the other gateways of a cluster: they count
	// in xksProxyFleetSize, and each is reported in ekmFleetDetails as
	// "node <id>" (ACTIVE when it can take requests, else UNAVAILABLE).
	Fleet func() []FleetNode
	// Vendor names for GetHealthStatus: the proxy's (xksProxyVendor,
	// xksProxyModel) and the HSMs' (ekmVendor). Empty means "hsmgate",
	// "hsmgate XKS proxy" and the slots' token models.
	ProxyVendor, ProxyModel, EKMVendor string

	once     sync.Once
	initErr  error
	byPrefix map[string]*store

	healthMu  sync.Mutex
	healthKey *hsmpool.Key
}

// store is a Store with its routing and throttling state.
type store struct {
	*Store
	inFlight  chan struct{} // nil: unlimited
	bucket    *tokenBucket  // nil: unlimited
	lookup    sigv4.Lookup
	verifiers sync.Map // region -> *sigv4.Verifier
	nVerifier atomic.Int32
	warned    atomic.Bool // bad credentials logged
}

// maxVerifiers bounds the regions a store keeps a SigV4 verifier (and its
// signing key cache) for; requests naming further regions get a fresh one.
const maxVerifiers = 64

// Validate checks the configuration and prepares the routes. ServeHTTP
// calls it too; a Handler that does not validate answers every request
// with InternalException.
func (h *Handler) Validate() error {
	h.once.Do(func() { h.initErr = h.init() })
	return h.initErr
}

func (h *Handler) init() error {
	if h.Pool == nil {
		return errors.New("xks: Handler.Pool is required")
	}
	if len(h.Stores) == 0 {
		return errors.New("xks: no external key store configured")
	}
	if h.Timeout < 0 || h.FleetSize < 0 {
		return errors.New("xks: Handler.Timeout and FleetSize must not be negative")
	}
	h.byPrefix = map[string]*store{}
	names := map[string]bool{}
	for _, s := range h.Stores {
		if s == nil {
			return errors.New("xks: nil Store")
		}
		if err := validateStore(s); err != nil {
			return err
		}
		if names[s.Name] {
			return fmt.Errorf("xks: two key stores are named %q", s.Name)
		}
		names[s.Name] = true
		prefix := s.prefix()
		if _, dup := h.byPrefix[prefix]; dup {
			return fmt.Errorf("xks: key stores %q and another share the path prefix %q", s.Name, prefix)
		}
		st := &store{Store: s}
		if s.MaxInFlight > 0 {
			st.inFlight = make(chan struct{}, s.MaxInFlight)
		}
		if s.RateLimit > 0 {
			st.bucket = newTokenBucket(s.RateLimit, s.Burst, h.now())
		}
		st.lookup = st.lookupCredential(h)
		h.byPrefix[prefix] = st
	}
	return nil
}

func validateStore(s *Store) error {
	switch {
	case s.Name == "":
		return fmt.Errorf("xks: the key store with prefix %q has no name", s.Prefix)
	case s.Keys == nil:
		return fmt.Errorf("xks: key store %q: Keys is required", s.Name)
	case s.Credentials == nil:
		return fmt.Errorf("xks: key store %q: Credentials is required", s.Name)
	case s.MaxInFlight < 0 || s.RateLimit < 0 || s.Burst < 0:
		return fmt.Errorf("xks: key store %q: MaxInFlight, RateLimit and Burst must not be negative", s.Name)
	}
	if err := ValidatePrefix(s.prefix()); err != nil {
		return fmt.Errorf("xks: key store %q: %w", s.Name, err)
	}
	// Credentials are not checked here: they change while serving, and a
	// store without any yet refuses every request until one is made.
	for _, r := range s.Regions {
		if r == "" || len(r) > 64 || !allBytes(r, isRegionByte) {
			return fmt.Errorf("xks: key store %q: %q is not an AWS region name", s.Name, r)
		}
	}
	if c := s.ClientCert; c != nil && (c.Roots == nil || len(c.CommonNames) == 0) {
		return fmt.Errorf("xks: key store %q: a client certificate policy needs roots and at least one common name", s.Name)
	}
	return nil
}

// ValidatePrefix checks a key store's path prefix (see Store.Prefix).
// "API Operations": XksProxyUriPath has at most 128 characters of
// a-z A-Z 0-9 / - _.
func ValidatePrefix(p string) error {
	if p == "" {
		return nil
	}
	if len(p)+len(apiRoot) > maxURIPath {
		return fmt.Errorf("path prefix %q: with %s it exceeds the %d characters KMS accepts", printableASCII(p, 64), apiRoot, maxURIPath)
	}
	if p[0] != '/' || strings.HasSuffix(p, "/") || strings.Contains(p, "//") || !allBytes(p, isPrefixByte) {
		return fmt.Errorf("path prefix %q: want \"/\" followed by segments of A-Z a-z 0-9 - _ separated by single slashes", printableASCII(p, 64))
	}
	if strings.Contains(p, apiRoot) {
		return fmt.Errorf("path prefix %q: give the prefix without %s", p, apiRoot)
	}
	return nil
}

func isPrefixByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '/' || c == '-' || c == '_'
}

func isRegionByte(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' }

// validKeyID reports whether id is an external key id as "API Operations"
// allows: 1 to 128 characters A-Z a-z 0-9 - . _.
func validKeyID(id string) bool {
	return id != "" && len(id) <= 128 && allBytes(id, func(c byte) bool {
		return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_'
	})
}

// Match reports whether a request path belongs to the XKS API, so that a
// server mux can send it to the Handler: any path containing "/kms/xks"
// (those that name no store get InvalidUriPathException), and any path
// under a configured non-empty prefix.
func (h *Handler) Match(path string) bool {
	if strings.Contains(path, "/kms/xks") {
		return true
	}
	for _, s := range h.Stores {
		if p := s.Prefix; p != "" && p != "/" && (path == p || strings.HasPrefix(path, p+"/")) {
			return true
		}
	}
	return false
}

func (h *Handler) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

func (h *Handler) log() *slog.Logger {
	if h.Log != nil {
		return h.Log
	}
	return slog.Default()
}

func (h *Handler) timeout() time.Duration {
	if h.Timeout > 0 {
		return h.Timeout
	}
	return 2 * time.Second
}

// route is what a request's path names.
type route struct {
	st    *store
	op    string
	keyID string
}

// route parses an escaped request path. Every character the specification
// allows in a path is unreserved, so a path with a '%' is not one of ours.
func (h *Handler) route(p string) (route, *Error) {
	invalid := apiErrorf(ErrNameInvalidURIPath, "The URI path is not an XKS API of this proxy.")
	i := strings.Index(p, apiRoot+"/")
	if i < 0 || strings.Contains(p, "%") {
		return route{}, invalid
	}
	st := h.byPrefix[p[:i]]
	if st == nil {
		return route{}, invalid
	}
	rest := p[i+len(apiRoot)+1:]
	if rest == "health" {
		return route{st: st, op: OpGetHealthStatus}, nil
	}
	id, action, ok := strings.Cut(strings.TrimPrefix(rest, "keys/"), "/")
	if !ok || !strings.HasPrefix(rest, "keys/") {
		return route{}, invalid
	}
	var op string
	switch action {
	case "metadata":
		op = OpGetKeyMetadata
	case "encrypt":
		op = OpEncrypt
	case "decrypt":
		op = OpDecrypt
	default:
		return route{}, invalid
	}
	return route{st: st, op: op, keyID: id}, nil
}

// Event is the audit record of one request. It never holds plaintext,
// ciphertext, additional authenticated data, key material or secrets.
type Event struct {
	Time      time.Time // when the request arrived
	RequestID string    // this proxy's id, also in the X-Amzn-RequestId header
	Store     string    // Store.Name; "" when the path named no store
	Path      string    // the URI path, for requests that named no API (cut to 256 bytes)
	// AccessKeyID is the SigV4 credential, verified when Authenticated,
	// else only claimed (cut to 128 bytes).
	AccessKeyID   string
	Authenticated bool
	Region        string // the SigV4 scope's region, once verified
	SourceIP      string
	UserAgent     string
	Operation     string // OpEncrypt, ...; "" when the path named no API
	ExternalKeyID string // cut to 128 bytes
	// Key is the key Keys.Lookup returned, nil when none was found: the
	// audit mapper can take the hsmgate key id and ARN from it.
	Key        Key    `json:"-"`
	KeyVersion uint32 // the hsmgate key version used by Encrypt and Decrypt
	// Metadata is the request's requestMetadata, as far as it was read.
	Metadata   RequestMetadata
	Outcome    string // OutcomeOK, OutcomeDenied or OutcomeError
	ErrorName  string // the error name answered, "" on success
	HTTPStatus int
	Latency    time.Duration
}

// Outcomes of a request, as gateway/audit names them.
const (
	OutcomeOK     = "ok"
	OutcomeDenied = "denied" // AuthenticationFailedException, AccessDeniedException
	OutcomeError  = "error"
)

// ServeHTTP serves one XKS API request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ev := Event{Time: h.now(), RequestID: newRequestID(), SourceIP: remoteIP(r), UserAgent: truncate(r.UserAgent(), 256)}
	w.Header()["X-Amzn-Requestid"] = []string{ev.RequestID}
	resp, apiErr := h.serveSafely(r, &ev)

	ev.Latency = time.Since(start)
	ev.Outcome, ev.HTTPStatus = OutcomeOK, http.StatusOK
	if apiErr != nil {
		ev.Outcome, ev.ErrorName, ev.HTTPStatus = OutcomeError, apiErr.Name, apiErr.Status
		switch apiErr.Name {
		case ErrNameAuthenticationFailed, ErrNameAccessDenied:
			ev.Outcome = OutcomeDenied
		case "":
			ev.ErrorName = errNameMethodNotAllowed
		}
	}
	if h.Audit != nil {
		// Durable before the answer leaves: no use of a key goes unrecorded.
		if err := h.Audit(r.Context(), ev); err != nil {
			h.log().Error("xks: audit record failed; refusing the request", "request_id", ev.RequestID, "err", err)
			clear(resp)
			resp, apiErr = nil, apiErrorf(ErrNameInternal, "The audit log could not be written, so the request was not served.")
		}
	}
	if apiErr != nil {
		h.logFailure(&ev, apiErr)
		writeError(w, apiErr)
		return
	}
	w.Header()["Content-Type"] = jsonContentType
	w.Header()["Content-Length"] = []string{strconv.Itoa(len(resp))}
	w.WriteHeader(http.StatusOK)
	w.Write(resp)
	clear(resp) // a Decrypt's response holds plaintext
	if l := h.log(); l.Enabled(r.Context(), slog.LevelDebug) {
		l.Debug("xks request", "request_id", ev.RequestID, "store", ev.Store, "operation", ev.Operation,
			"key", ev.ExternalKeyID, "kms_request_id", ev.Metadata.KMSRequestID, "latency", ev.Latency)
	}
}

var jsonContentType = []string{"application/json"}

func (h *Handler) logFailure(ev *Event, e *Error) {
	if e.Status == http.StatusMethodNotAllowed {
		return
	}
	// "Logging": log the request metadata, the processing time and the
	// error; kmsRequestId ties the line to CloudTrail. The cause (an
	// hsmpool or keystore error) names slots and keys, never material.
	var cause string
	if e.cause != nil {
		cause = e.cause.Error()
	}
	h.log().Info("xks request failed", "request_id", ev.RequestID, "store", ev.Store, "operation", ev.Operation,
		"key", ev.ExternalKeyID, "access_key_id", ev.AccessKeyID, "source_ip", ev.SourceIP,
		"kms_request_id", ev.Metadata.KMSRequestID, "kms_operation", ev.Metadata.KMSOperation,
		"aws_principal_arn", ev.Metadata.AWSPrincipalARN, "kms_key_arn", ev.Metadata.KMSKeyARN,
		"error", e.Name, "message", e.Message, "cause", cause, "latency", ev.Latency)
}

func writeError(w http.ResponseWriter, e *Error) {
	hd := w.Header()
	if e.Status == http.StatusMethodNotAllowed {
		hd.Set("Allow", http.MethodPost)
		hd.Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(e.Status)
		io.WriteString(w, "405 method not allowed: the XKS proxy API takes POST requests only\n")
		return
	}
	hd["Content-Type"] = jsonContentType
	w.WriteHeader(e.Status)
	w.Write(errorBody(e))
}

// serveSafely is serve that turns a panic into an InternalException.
func (h *Handler) serveSafely(r *http.Request, ev *Event) (resp []byte, apiErr *Error) {
	defer func() {
		if p := recover(); p != nil {
			h.log().Error("xks: panic serving a request", "request_id", ev.RequestID, "panic", fmt.Sprint(p))
			resp, apiErr = nil, apiErrorf(ErrNameInternal, "Internal error.")
		}
	}()
	return h.serve(r, ev)
}

// serve routes, reads, authenticates, throttles, decodes and runs a
// request, in that order: everything before authentication reveals nothing
// but whether the path is an API.
func (h *Handler) serve(r *http.Request, ev *Event) ([]byte, *Error) {
	if err := h.Validate(); err != nil {
		h.log().Error("xks: handler misconfigured", "err", err)
		return nil, apiErrorf(ErrNameInternal, "The proxy is misconfigured.")
	}
	path := r.URL.EscapedPath()
	rt, e := h.route(path)
	if e != nil {
		ev.Path = truncate(path, 256)
		return nil, e
	}
	ev.Store, ev.Operation, ev.ExternalKeyID = rt.st.Name, rt.op, truncate(rt.keyID, 128)
	if r.Method != http.MethodPost {
		// "API Operations": a GET at an API's URI MUST get 405.
		return nil, &Error{Status: http.StatusMethodNotAllowed, Message: "method not allowed"}
	}
	body, e := readBody(r)
	if e != nil {
		ev.AccessKeyID = credentialID(r)
		return nil, e
	}
	res, e := h.authenticate(rt.st, r, body)
	if e != nil {
		ev.AccessKeyID = credentialID(r)
		return nil, e
	}
	ev.AccessKeyID, ev.Authenticated, ev.Region = res.AccessKeyID, true, res.Region
	if rt.st.Enabled != nil && !rt.st.Enabled() {
		return nil, apiErrorf(ErrNameInvalidState, "This external key store is disabled.")
	}
	release, e := rt.st.admit(h.now())
	if e != nil {
		return nil, e
	}
	defer release()
	req, e := decodeRequest(rt.op, body)
	ev.Metadata = req.Metadata
	if e != nil {
		return nil, e
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.timeout())
	defer cancel()
	c := &call{h: h, st: rt.st, op: rt.op, keyID: rt.keyID, req: req, ev: ev}
	switch rt.op {
	case OpGetKeyMetadata:
		return c.getKeyMetadata(ctx)
	case OpEncrypt:
		return c.encrypt(ctx)
	case OpDecrypt:
		return c.decrypt(ctx)
	}
	return h.health(ctx)
}

func readBody(r *http.Request) ([]byte, *Error) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, apiErrorf(ErrNameUnsupportedOperation, "The request body is larger than the %d bytes this proxy supports.", MaxBody)
		}
		return nil, validationf("The request body could not be read.")
	}
	return body, nil
}

// authenticate checks the optional client certificate, then the SigV4
// signature ("Authentication", "Appendix A": service kms-xks-proxy, the
// region KMS calls from, at most 5 minutes of skew).
func (h *Handler) authenticate(st *store, r *http.Request, body []byte) (*sigv4.Result, *Error) {
	if st.ClientCert != nil {
		if e := h.checkClientCert(st.ClientCert, r); e != nil {
			return nil, e
		}
	}
	region := scopeRegion(r.Header.Get("Authorization"))
	if len(st.Regions) > 0 && region != "" && !slices.Contains(st.Regions, region) {
		return nil, apiErrorf(ErrNameAuthenticationFailed, "Requests signed for region %q are not accepted by this key store.", region)
	}
	res, err := st.verifier(h, region).Verify(r, body)
	if err != nil {
		if errors.Is(err, sigv4.ErrLookupFailed) || errors.Is(err, sigv4.ErrMisconfigured) {
			return nil, apiErrorf(ErrNameInternal, "The proxy could not check the request's credentials.")
		}
		msg := "The request signature is not valid."
		var se *sigv4.Error
		if errors.As(err, &se) {
			msg = se.Message // never the secret or the expected signature
		}
		return nil, apiErrorf(ErrNameAuthenticationFailed, "%s", msg)
	}
	return res, nil
}

func (h *Handler) checkClientCert(p *ClientCertPolicy, r *http.Request) *Error {
	refuse := apiErrorf(ErrNameAuthenticationFailed, "This key store requires a trusted TLS client certificate.")
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return refuse
	}
	leaf := r.TLS.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range r.TLS.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: p.Roots, Intermediates: inter, CurrentTime: h.now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return refuse
	}
	if !slices.Contains(p.CommonNames, leaf.Subject.CommonName) {
		return refuse
	}
	return nil
}

// scopeRegion is the region of the Authorization header's credential
// scope, or "" when it has none that could be valid. The Verifier then
// parses the header strictly.
func scopeRegion(authz string) string {
	_, rest, ok := strings.Cut(authz, "Credential=")
	if !ok {
		return ""
	}
	parts := strings.SplitN(rest, "/", 4)
	if len(parts) < 4 {
		return ""
	}
	if r := parts[2]; r != "" && len(r) <= 64 && allBytes(r, isRegionByte) {
		return r
	}
	return ""
}

// verifier returns the store's SigV4 verifier for a region ("" for a
// request whose header names none: any verifier then refuses it).
func (st *store) verifier(h *Handler, region string) *sigv4.Verifier {
	if region == "" {
		region = "none"
	}
	if v, ok := st.verifiers.Load(region); ok {
		return v.(*sigv4.Verifier)
	}
	v := &sigv4.Verifier{Region: region, Service: SigV4Service, Lookup: st.lookup, Now: h.Now}
	if st.nVerifier.Load() >= maxVerifiers {
		return v
	}
	actual, loaded := st.verifiers.LoadOrStore(region, v)
	if !loaded {
		st.nVerifier.Add(1)
	}
	return actual.(*sigv4.Verifier)
}

// lookupCredential resolves access key ids against the store's current
// credentials.
func (st *store) lookupCredential(h *Handler) sigv4.Lookup {
	return func(_ context.Context, id string) (sigv4.Credentials, error) {
		cs := st.Credentials()
		if len(cs) == 0 {
			return sigv4.Credentials{}, sigv4.ErrUnknownAccessKey // none made yet, or all revoked
		}
		if err := ValidateCredentials(cs); err != nil {
			if !st.warned.Swap(true) {
				h.log().Error("xks: the key store's credentials are not valid; refusing its requests", "store", st.Name, "err", err)
			}
			return sigv4.Credentials{}, err
		}
		st.warned.Store(false)
		for _, c := range cs {
			if c.AccessKeyID == id {
				return sigv4.Credentials{AccessKeyID: c.AccessKeyID, Secret: c.Secret, Principal: st.Name + "/" + c.AccessKeyID}, nil
			}
		}
		return sigv4.Credentials{}, sigv4.ErrUnknownAccessKey
	}
}

// admit applies the store's quotas; release must be called when the
// request is done.
func (st *store) admit(now time.Time) (release func(), e *Error) {
	if st.bucket != nil && !st.bucket.take(now) {
		return nil, apiErrorf(ErrNameThrottling, "This external key store's request rate quota is exceeded. Reduce the request rate.")
	}
	if st.inFlight == nil {
		return func() {}, nil
	}
	select {
	case st.inFlight <- struct{}{}:
		return func() { <-st.inFlight }, nil
	default:
		return nil, apiErrorf(ErrNameThrottling, "This external key store is serving its maximum of %d requests at once.", cap(st.inFlight))
	}
}

// tokenBucket is a rate limiter: rate tokens a second, at most burst.
type tokenBucket struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func newTokenBucket(rate float64, burst int, now time.Time) *tokenBucket {
	b := float64(burst)
	if burst <= 0 {
		b = max(1, rate)
	}
	return &tokenBucket{rate: rate, burst: b, tokens: b, last: now}
}

func (b *tokenBucket) take(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.burst, b.tokens+d.Seconds()*b.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// credentialID is the access key id a SigV4 Authorization header claims,
// for the audit event of a request that did not authenticate.
func credentialID(r *http.Request) string {
	_, rest, ok := strings.Cut(r.Header.Get("Authorization"), "Credential=")
	if !ok {
		return ""
	}
	id, _, _ := strings.Cut(rest, "/")
	return printableASCII(truncate(id, 128), 128)
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

// newRequestID returns a random (version 4) UUID.
func newRequestID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	s := hex.EncodeToString(b[:])
	return s[0:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:]
}

// FleetNode is another gateway of the cluster, for GetHealthStatus.
type FleetNode struct {
	ID     string
	Usable bool
}
