package gateway

// The admin API: principals, their access keys and client certificates,
// managed on the running gateway.
//
// Requests are KMS-shaped: POST / with X-Amz-Target: HsmGate.<Operation>,
// Content-Type application/x-amz-json-1.1 and a JSON body; they are
// authenticated like KMS requests (mutual TLS or SigV4), shed, audited
// (the record's operation is "HsmGate.<Operation>") and answered with the
// same error shape, {"__type":…,"message":…}. Only admin principals may
// call them: anyone else gets AccessDeniedException, whatever the
// operation.
//
//	CreatePrincipal         {PrincipalName, Admin, Kind, Service, Tags: [{TagKey, TagValue}]} -> {Principal}
//	ListPrincipals          {} -> {Principals: [Principal]}
//	DescribePrincipal       {PrincipalName} -> {Principal} (with KeysCreated)
//	DeletePrincipal         {PrincipalName} -> {RevokedAccessKeyIds}
//	TagPrincipal            {PrincipalName, Tags: [{TagKey, TagValue}]} -> {}
//	UntagPrincipal          {PrincipalName, TagKeys: [key]} -> {}
//	CreateAccessKey         {PrincipalName} -> {AccessKey: {AccessKeyId, SecretAccessKey, …}}
//	RevokeAccessKey         {AccessKeyId} -> {AccessKeyId, PrincipalName, AlreadyRevoked}
//	IssueClientCertificate  {PrincipalName, CertificateSigningRequest (PEM), ValidityDays} -> {Certificate, CACertificate (PEM), NotAfter}
//
// A Principal is {PrincipalName, Arn, Admin, Kind, Service, Tags,
// CreationDate, AccessKeys: [{AccessKeyId, Status (Active|Revoked),
// CreateDate}], KeysCreated}. Times are epoch seconds, as in KMS.
//
// CreateAccessKey's answer is the only place a secret access key appears:
// it is neither logged nor audited. IssueClientCertificate takes a
// certificate signing request, so that the client's private key never
// leaves the client; the request's signature must verify (proof that the
// caller holds the key), and only its public key is used: the certificate
// names the principal of the request, whatever the CSR's subject says.

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/gateway/kmsapi"
	"github.com/hsmgate/hsmgate/hsmpool"
	"github.com/hsmgate/hsmgate/internal/pki"
)

// AdminTargetPrefix starts the X-Amz-Target of every admin API request.
const AdminTargetPrefix = "HsmGate."

// Limits of IssueClientCertificate's ValidityDays.
const (
	DefaultClientCertDays = 365
	MaxClientCertDays     = 3650
)

// AdminTag is a principal tag on the wire, shaped as KMS's tags.
type AdminTag = kmsapi.Tag

// AdminPrincipal describes a principal.
type AdminPrincipal struct {
	PrincipalName string
	Arn           string
	Admin         bool
	Kind          string // user or role
	Service       string `json:",omitempty"`
	Tags          []AdminTag
	CreationDate  kmsapi.Epoch
	AccessKeys    []AdminAccessKey
	// KeysCreated counts the KMS keys the principal created (DescribePrincipal
	// only).
	KeysCreated *int `json:",omitempty"`
}

// AdminAccessKey describes an access key. SecretAccessKey is set only in
// CreateAccessKey's answer.
type AdminAccessKey struct {
	AccessKeyId     string
	PrincipalName   string
	Status          string // Active or Revoked
	CreateDate      kmsapi.Epoch
	SecretAccessKey string `json:",omitempty"`
}

// Access key states on the wire.
const (
	AccessKeyActive  = "Active"
	AccessKeyRevoked = "Revoked"
)

// Requests and answers of the admin operations.
type (
	AdminCreatePrincipalInput struct {
		PrincipalName string
		Admin         bool
		Kind          string
		Service       string
		Tags          []AdminTag
	}
	AdminPrincipalOutput      struct{ Principal AdminPrincipal }
	AdminPrincipalInput       struct{ PrincipalName string }
	AdminListPrincipalsOutput struct {
		Principals []AdminPrincipal
	}
	AdminDeletePrincipalOutput struct {
		RevokedAccessKeyIds []string
	}
	AdminTagPrincipalInput struct {
		PrincipalName string
		Tags          []AdminTag
	}
	AdminUntagPrincipalInput struct {
		PrincipalName string
		TagKeys       []string
	}
	AdminCreateAccessKeyOutput struct{ AccessKey AdminAccessKey }
	AdminRevokeAccessKeyInput  struct{ AccessKeyId string }
	AdminRevokeAccessKeyOutput struct {
		AccessKeyId    string
		PrincipalName  string
		AlreadyRevoked bool
	}
	AdminIssueClientCertificateInput struct {
		PrincipalName string
		// CertificateSigningRequest is a PKCS#10 request, PEM.
		CertificateSigningRequest string
		// ValidityDays defaults to DefaultClientCertDays.
		ValidityDays int
	}
	AdminIssueClientCertificateOutput struct {
		Certificate   string // PEM
		CACertificate string // PEM: the CA that client certificates chain to
		SerialNumber  string // hex
		NotAfter      kmsapi.Epoch
	}
	adminEmpty struct{}
)

// Admin runs the admin operations on a keystore. The running gateway
// serves them over HTTP (see the file's comment); the hsmgate command runs
// them in-process on the keystore while the gateway is stopped, so both
// ways behave the same.
type Admin struct {
	// Identities is the principal manager. Its Pool may be nil if only
	// operations that don't use the HSMs are run (see AdminNeedsPool).
	Identities *Identities
	// Account is the 12-digit account id of ARNs.
	Account string
	// CACertificates returns candidates for the gateway's CA certificate;
	// the one whose public key is the CA key's in the HSMs is used. Only
	// IssueClientCertificate needs it.
	CACertificates func(ctx context.Context) ([]*x509.Certificate, error)
	// Log gets one line per change (never a secret); nil means none.
	Log *slog.Logger
}

type adminHandler func(a *Admin, ctx context.Context, caller *kmsapi.Caller, body []byte) (any, error)

// adminOp adapts a typed admin operation to the dispatcher.
func adminOp[Req any, Resp any](f func(a *Admin, ctx context.Context, caller *kmsapi.Caller, req *Req) (*Resp, error)) adminHandler {
	return func(a *Admin, ctx context.Context, caller *kmsapi.Caller, body []byte) (any, error) {
		var req Req
		if len(strings.TrimSpace(string(body))) > 0 {
			if err := json.Unmarshal(body, &req); err != nil {
				return nil, adminSerializationError(err)
			}
		}
		return f(a, ctx, caller, &req)
	}
}

var adminOperations = map[string]adminHandler{
	"CreatePrincipal":        adminOp((*Admin).createPrincipal),
	"ListPrincipals":         adminOp((*Admin).listPrincipals),
	"DescribePrincipal":      adminOp((*Admin).describePrincipal),
	"DeletePrincipal":        adminOp((*Admin).deletePrincipal),
	"TagPrincipal":           adminOp((*Admin).tagPrincipal),
	"UntagPrincipal":         adminOp((*Admin).untagPrincipal),
	"CreateAccessKey":        adminOp((*Admin).createAccessKey),
	"RevokeAccessKey":        adminOp((*Admin).revokeAccessKey),
	"IssueClientCertificate": adminOp((*Admin).issueClientCertificate),
}

// AdminOperations lists the admin operations, sorted, without the prefix.
func AdminOperations() []string {
	out := make([]string, 0, len(adminOperations))
	for name := range adminOperations {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// AdminNeedsPool reports whether an admin operation uses the HSM pool
// (CreateAccessKey encrypts the secret; IssueClientCertificate signs with
// the CA key).
func AdminNeedsPool(op string) bool {
	return op == "CreateAccessKey" || op == "IssueClientCertificate"
}

// isAdminTarget reports whether a request's X-Amz-Target is for the admin
// API.
func isAdminTarget(target string) bool { return strings.HasPrefix(target, AdminTargetPrefix) }

// operationName is what metrics, logs and the audit log call a request's
// operation: the KMS operation ("Encrypt"), the admin one with its prefix
// ("HsmGate.CreatePrincipal"), or "" when the target names neither.
func operationName(target string) string {
	if name, ok := strings.CutPrefix(target, AdminTargetPrefix); ok {
		if _, known := adminOperations[name]; known {
			return target
		}
		return ""
	}
	return kmsapi.OperationName(target)
}

// admin serves an authenticated admin API request on the gateway.
func (g *Gateway) admin(ctx context.Context, caller kmsapi.Caller, target string, body []byte) ([]byte, *kmsapi.Error) {
	a := &Admin{Identities: g.identities, Account: g.cfg.Account, CACertificates: servingCACertificates, Log: g.log}
	return a.Do(ctx, caller, target, body)
}

// servingCACertificates finds the CA certificate in the chain the gateway
// serves (pki/server.pem holds the server certificate and its CA), from
// the http.Server serving the request.
func servingCACertificates(ctx context.Context) ([]*x509.Certificate, error) {
	srv, _ := ctx.Value(http.ServerContextKey).(*http.Server)
	if srv == nil || srv.TLSConfig == nil {
		return nil, errors.New("the request was not served by a TLS server")
	}
	var out []*x509.Certificate
	for _, c := range srv.TLSConfig.Certificates {
		for _, der := range c.Certificate {
			if cert, err := x509.ParseCertificate(der); err == nil && cert.IsCA {
				out = append(out, cert)
			}
		}
	}
	return out, nil
}

// Do runs the admin operation target ("HsmGate.<Operation>") for caller,
// who must be an admin, and returns the JSON answer.
func (a *Admin) Do(ctx context.Context, caller kmsapi.Caller, target string, body []byte) ([]byte, *kmsapi.Error) {
	if !caller.Admin {
		return nil, kmsapi.Errorf(kmsapi.ExAccessDenied, "Principal %s is not an administrator: the HsmGate admin API is for admin principals only.", caller.Principal)
	}
	name, _ := strings.CutPrefix(target, AdminTargetPrefix)
	h, ok := adminOperations[name]
	if !ok || !isAdminTarget(target) {
		return nil, kmsapi.Errorf(kmsapi.ExUnknownOperation, "Operation %q is not served.", truncateRunes(target, 64))
	}
	if AdminNeedsPool(name) && a.Identities.Pool == nil {
		return nil, kmsapi.Errorf(kmsapi.ExInternal, "%s needs the HSM pool, which is not open.", name)
	}
	resp, err := h(a, ctx, &caller, body)
	if err != nil {
		return nil, a.toAPI(name, err)
	}
	out, err := json.Marshal(resp)
	if err != nil {
		return nil, kmsapi.Errorf(kmsapi.ExInternal, "Internal error.")
	}
	return out, nil
}

// toAPI maps an internal error to the wire, as kmsapi does for KMS
// operations. Messages of our own packages name principals, access key
// ids and limits, never secrets.
func (a *Admin) toAPI(op string, err error) *kmsapi.Error {
	var apiErr *kmsapi.Error
	if errors.As(err, &apiErr) {
		return apiErr
	}
	switch {
	case errors.Is(err, keystore.ErrNotFound):
		return kmsapi.Errorf(kmsapi.ExNotFound, "%s", err.Error())
	case errors.Is(err, keystore.ErrAlreadyExists):
		return kmsapi.Errorf(kmsapi.ExAlreadyExists, "%s", err.Error())
	case errors.Is(err, keystore.ErrInvalid):
		msg := strings.TrimPrefix(err.Error(), keystore.ErrInvalid.Error()+": ")
		return kmsapi.Errorf(kmsapi.ExValidation, "%s", strings.TrimSuffix(msg, ": "+keystore.ErrInvalid.Error()))
	case errors.Is(err, keystore.ErrLimit):
		return kmsapi.Errorf(kmsapi.ExLimitExceeded, "%s", err.Error())
	case errors.Is(err, hsmpool.ErrThrottled):
		return kmsapi.Errorf(kmsapi.ExThrottling, "Rate exceeded: every HSM session is busy. Retry with backoff.")
	case errors.Is(err, hsmpool.ErrTimeout), errors.Is(err, hsmpool.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return kmsapi.Errorf(kmsapi.ExDependencyTimeout, "The HSM pool did not answer in time.")
	}
	if a.Log != nil {
		a.Log.Error("admin operation failed", "operation", AdminTargetPrefix+op, "err", err)
	}
	return kmsapi.Errorf(kmsapi.ExInternal, "Internal error.")
}

func adminSerializationError(err error) *kmsapi.Error {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		return kmsapi.Errorf(kmsapi.ExSerialization, "Cannot deserialize the value of field %q: expected %s.", typeErr.Field, typeErr.Type)
	}
	return kmsapi.Errorf(kmsapi.ExSerialization, "The request body is not valid JSON for this operation: %s.", strings.TrimPrefix(err.Error(), "json: "))
}

func (a *Admin) changed(ctx context.Context, op string, caller *kmsapi.Caller, attrs ...any) {
	if a.Log != nil {
		a.Log.InfoContext(ctx, "admin change", append([]any{"operation", AdminTargetPrefix + op, "by", caller.Principal}, attrs...)...)
	}
}

func needName(name string) error {
	if name == "" {
		return kmsapi.Errorf(kmsapi.ExValidation, "PrincipalName is required.")
	}
	return nil
}

// tagMap turns wire tags into a map, refusing a key given twice.
func tagMap(tags []AdminTag) (map[string]string, error) {
	if len(tags) == 0 {
		return nil, nil
	}
	if len(tags) > MaxPrincipalTags {
		return nil, kmsapi.Errorf(kmsapi.ExValidation, "At most %d tags may be given; got %d.", MaxPrincipalTags, len(tags))
	}
	m := make(map[string]string, len(tags))
	for _, t := range tags {
		if _, dup := m[t.TagKey]; dup {
			return nil, kmsapi.Errorf(kmsapi.ExValidation, "The tag key %q is given twice.", truncateRunes(t.TagKey, 64))
		}
		m[t.TagKey] = t.TagValue
	}
	return m, nil
}

// PrincipalARN is a principal's ARN: arn:aws:iam::<account>:<kind>/<name>.
func PrincipalARN(account string, p *keystore.Principal) string {
	return "arn:aws:iam::" + account + ":" + p.ARNKind() + "/" + p.Name
}

func (a *Admin) describe(p *keystore.Principal) AdminPrincipal {
	d := AdminPrincipal{
		PrincipalName: p.Name, Arn: PrincipalARN(a.Account, p), Admin: p.Admin, Kind: p.ARNKind(), Service: p.Service,
		Tags: []AdminTag{}, CreationDate: kmsapi.Epoch(p.CreatedAt), AccessKeys: []AdminAccessKey{},
	}
	for _, k := range sortedKeys(p.Tags) {
		d.Tags = append(d.Tags, AdminTag{TagKey: k, TagValue: p.Tags[k]})
	}
	for _, ak := range a.Identities.Store.AccessKeysOf(p.Name) {
		d.AccessKeys = append(d.AccessKeys, describeAccessKey(ak))
	}
	return d
}

func describeAccessKey(ak *keystore.AccessKey) AdminAccessKey {
	st := AccessKeyActive
	if ak.Revoked {
		st = AccessKeyRevoked
	}
	return AdminAccessKey{AccessKeyId: ak.ID, PrincipalName: ak.Principal, Status: st, CreateDate: kmsapi.Epoch(ak.CreatedAt)}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (a *Admin) createPrincipal(ctx context.Context, caller *kmsapi.Caller, req *AdminCreatePrincipalInput) (*AdminPrincipalOutput, error) {
	if err := needName(req.PrincipalName); err != nil {
		return nil, err
	}
	tags, err := tagMap(req.Tags)
	if err != nil {
		return nil, err
	}
	spec := PrincipalSpec{Name: req.PrincipalName, Admin: req.Admin, Kind: req.Kind, Service: req.Service, Tags: tags}
	if err := a.Identities.CreatePrincipal(spec); err != nil {
		return nil, err
	}
	p, err := a.Identities.Store.Principal(req.PrincipalName)
	if err != nil {
		return nil, err
	}
	a.changed(ctx, "CreatePrincipal", caller, "principal", p.Name, "admin", p.Admin, "kind", p.ARNKind(), "service", p.Service)
	return &AdminPrincipalOutput{Principal: a.describe(p)}, nil
}

func (a *Admin) listPrincipals(_ context.Context, _ *kmsapi.Caller, _ *adminEmpty) (*AdminListPrincipalsOutput, error) {
	out := &AdminListPrincipalsOutput{Principals: []AdminPrincipal{}}
	for _, p := range a.Identities.Store.Principals() {
		out.Principals = append(out.Principals, a.describe(p))
	}
	return out, nil
}

func (a *Admin) describePrincipal(_ context.Context, _ *kmsapi.Caller, req *AdminPrincipalInput) (*AdminPrincipalOutput, error) {
	if err := needName(req.PrincipalName); err != nil {
		return nil, err
	}
	p, err := a.Identities.Store.Principal(req.PrincipalName)
	if err != nil {
		return nil, err
	}
	d := a.describe(p)
	owned, _ := a.Identities.Store.Keys("", 1<<30, func(k *keystore.Key) bool { return k.Owner == p.Name })
	n := len(owned)
	d.KeysCreated = &n
	return &AdminPrincipalOutput{Principal: d}, nil
}

func (a *Admin) deletePrincipal(ctx context.Context, caller *kmsapi.Caller, req *AdminPrincipalInput) (*AdminDeletePrincipalOutput, error) {
	if err := needName(req.PrincipalName); err != nil {
		return nil, err
	}
	switch req.PrincipalName {
	case AdminName:
		return nil, kmsapi.Errorf(kmsapi.ExValidation, "The admin principal can't be removed.")
	case caller.Principal:
		return nil, kmsapi.Errorf(kmsapi.ExValidation, "A principal can't remove itself; ask another admin.")
	}
	var active []string
	for _, ak := range a.Identities.Store.AccessKeysOf(req.PrincipalName) {
		if !ak.Revoked {
			active = append(active, ak.ID)
		}
	}
	if err := a.Identities.Store.Apply(&keystore.DeletePrincipal{Name: req.PrincipalName}); err != nil {
		return nil, err
	}
	a.Identities.forget(active...)
	a.changed(ctx, "DeletePrincipal", caller, "principal", req.PrincipalName, "revoked_access_keys", active)
	if active == nil {
		active = []string{}
	}
	return &AdminDeletePrincipalOutput{RevokedAccessKeyIds: active}, nil
}

func (a *Admin) tagPrincipal(ctx context.Context, caller *kmsapi.Caller, req *AdminTagPrincipalInput) (*adminEmpty, error) {
	if err := needName(req.PrincipalName); err != nil {
		return nil, err
	}
	if len(req.Tags) == 0 {
		return nil, kmsapi.Errorf(kmsapi.ExValidation, "Tags is required.")
	}
	tags, err := tagMap(req.Tags)
	if err != nil {
		return nil, err
	}
	if err := a.Identities.SetPrincipalTags(req.PrincipalName, tags); err != nil {
		return nil, err
	}
	a.changed(ctx, "TagPrincipal", caller, "principal", req.PrincipalName, "tag_keys", sortedKeys(tags))
	return &adminEmpty{}, nil
}

func (a *Admin) untagPrincipal(ctx context.Context, caller *kmsapi.Caller, req *AdminUntagPrincipalInput) (*adminEmpty, error) {
	if err := needName(req.PrincipalName); err != nil {
		return nil, err
	}
	if len(req.TagKeys) == 0 {
		return nil, kmsapi.Errorf(kmsapi.ExValidation, "TagKeys is required.")
	}
	if err := a.Identities.UntagPrincipal(req.PrincipalName, req.TagKeys); err != nil {
		return nil, err
	}
	a.changed(ctx, "UntagPrincipal", caller, "principal", req.PrincipalName, "tag_keys", req.TagKeys)
	return &adminEmpty{}, nil
}

func (a *Admin) createAccessKey(ctx context.Context, caller *kmsapi.Caller, req *AdminPrincipalInput) (*AdminCreateAccessKeyOutput, error) {
	if err := needName(req.PrincipalName); err != nil {
		return nil, err
	}
	akid, secret, err := a.Identities.CreateAccessKey(ctx, req.PrincipalName)
	if err != nil {
		return nil, err
	}
	ak, err := a.Identities.Store.AccessKey(akid)
	if err != nil {
		return nil, err
	}
	a.changed(ctx, "CreateAccessKey", caller, "principal", req.PrincipalName, "access_key_id", akid)
	out := describeAccessKey(ak)
	out.SecretAccessKey = secret
	return &AdminCreateAccessKeyOutput{AccessKey: out}, nil
}

func (a *Admin) revokeAccessKey(ctx context.Context, caller *kmsapi.Caller, req *AdminRevokeAccessKeyInput) (*AdminRevokeAccessKeyOutput, error) {
	if req.AccessKeyId == "" {
		return nil, kmsapi.Errorf(kmsapi.ExValidation, "AccessKeyId is required.")
	}
	ak, err := a.Identities.Store.AccessKey(req.AccessKeyId)
	if err != nil {
		return nil, kmsapi.Errorf(kmsapi.ExNotFound, "Access key %s does not exist.", truncateRunes(req.AccessKeyId, 128))
	}
	out := &AdminRevokeAccessKeyOutput{AccessKeyId: ak.ID, PrincipalName: ak.Principal, AlreadyRevoked: ak.Revoked}
	if ak.Revoked {
		return out, nil
	}
	if err := a.Identities.RevokeAccessKey(ak.ID); err != nil {
		return nil, err
	}
	a.changed(ctx, "RevokeAccessKey", caller, "principal", ak.Principal, "access_key_id", ak.ID)
	return out, nil
}

func (a *Admin) issueClientCertificate(ctx context.Context, caller *kmsapi.Caller, req *AdminIssueClientCertificateInput) (*AdminIssueClientCertificateOutput, error) {
	if err := needName(req.PrincipalName); err != nil {
		return nil, err
	}
	days := req.ValidityDays
	if days == 0 {
		days = DefaultClientCertDays
	}
	if days < 1 || days > MaxClientCertDays {
		return nil, kmsapi.Errorf(kmsapi.ExValidation, "ValidityDays must be 1 to %d.", MaxClientCertDays)
	}
	pub, err := parseCSR(req.CertificateSigningRequest)
	if err != nil {
		return nil, err
	}
	store, pool := a.Identities.Store, a.Identities.Pool
	if _, err := store.Principal(req.PrincipalName); err != nil {
		return nil, err
	}
	if stored, err := store.Meta(metaCAKey); err != nil || stored == nil {
		return nil, kmsapi.Errorf(kmsapi.ExUnsupported, "The keystore holds no CA key: run hsmgate init.")
	}
	if a.CACertificates == nil {
		return nil, errors.New("no source of the CA certificate")
	}
	cands, err := a.CACertificates(ctx)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	caSigner, err := poolSigner(ctx, pool, store, metaCAKey)
	if err != nil {
		return nil, err
	}
	var ca *x509.Certificate
	for _, c := range cands {
		if publicKeysEqual(c.PublicKey, caSigner.Public()) {
			ca = c
			break
		}
	}
	if ca == nil {
		return nil, errors.New("no CA certificate belongs to the keystore's CA key")
	}
	cert, err := pki.IssueClient(ca, caSigner, pub, req.PrincipalName, time.Duration(days)*24*time.Hour, a.Identities.now())
	if err != nil {
		if errors.Is(err, hsmpool.ErrTimeout) || errors.Is(err, hsmpool.ErrUnavailable) || errors.Is(err, hsmpool.ErrThrottled) {
			return nil, err
		}
		return nil, kmsapi.Errorf(kmsapi.ExValidation, "The certificate could not be issued: %s.", strings.TrimPrefix(err.Error(), "pki: IssueClient: "))
	}
	a.changed(ctx, "IssueClientCertificate", caller, "principal", req.PrincipalName, "serial", cert.SerialNumber.Text(16), "not_after", cert.NotAfter)
	return &AdminIssueClientCertificateOutput{
		Certificate: string(pki.EncodeCertPEM(cert)), CACertificate: string(pki.EncodeCertPEM(ca)),
		SerialNumber: cert.SerialNumber.Text(16), NotAfter: kmsapi.Epoch(cert.NotAfter),
	}, nil
}

// parseCSR checks a PEM certificate signing request, its signature
// included, and returns its public key: ECDSA P-256 or P-384, Ed25519, or
// RSA of 2048 bits or more.
func parseCSR(pemText string) (crypto.PublicKey, error) {
	block, _ := pem.Decode([]byte(pemText))
	if block == nil || block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
		return nil, kmsapi.Errorf(kmsapi.ExValidation, "CertificateSigningRequest must be a PEM CERTIFICATE REQUEST.")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, kmsapi.Errorf(kmsapi.ExValidation, "CertificateSigningRequest could not be parsed.")
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, kmsapi.Errorf(kmsapi.ExValidation, "CertificateSigningRequest's signature does not verify.")
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if n := k.Curve.Params().Name; n == "P-256" || n == "P-384" {
			return k, nil
		}
	case ed25519.PublicKey:
		return k, nil
	case *rsa.PublicKey:
		if k.N.BitLen() >= 2048 {
			return k, nil
		}
	}
	return nil, kmsapi.Errorf(kmsapi.ExValidation, "CertificateSigningRequest's key must be ECDSA P-256 or P-384, Ed25519, or RSA of at least 2048 bits.")
}
