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
// and those of the external key stores (docs/xks.md):
//
//	CreateXKSCredential     {Store} -> {AccessKeyId, SecretAccessKey, Store}
//	ListXKSCredentials      {Store} -> {Store, Credentials: [{AccessKeyId, Status, CreateDate}]}
//	SetXKSKey               {KeyId, Store, ExternalKeyId, Usages, Policy} -> XKSKey
//	CreateXKSKey            {Store, ExternalKeyId, Usages, Policy, Description} -> XKSKey
//	RemoveXKSKey            {KeyId} -> XKSKey (as it was)
//	ListXKSKeys             {Store} -> {Keys: [XKSKey]}
//
// and those of the officer quorum (quorum.go; docs/quorum.md): QuorumInit,
// QuorumLinkOfficer, QuorumStatus, QuorumPropose, QuorumList, QuorumShow,
// QuorumApprove, QuorumReject. The last six are also open to principals
// linked to an officer of the current quorum set.
//
// An XKSKey is {KeyId, Store, ExternalKeyId, Usages, Policy, KeyState,
// Description}. A store's credentials are access keys of the principal
// "xks.<store>" (XKSPrincipal): RevokeAccessKey revokes them.
// CreateXKSCredential and CreateXKSKey (a SYMMETRIC_DEFAULT key, then
// marked) and SetXKSKey take only the stores the gateway serves
// ([[xks.stores]]); the others take any store, so that what a store
// removed from the configuration left behind can still be seen and
// cleaned up. ExternalKeyId defaults to the key id, Usages to ENCRYPT and
// DECRYPT; Policy is an optional key policy document deciding XKS requests
// (actions xks:Encrypt, xks:Decrypt, xks:GetKeyMetadata).
//
// A Principal is {PrincipalName, Arn, Admin, Kind, Service, Tags,
// CreationDate, AccessKeys: [{AccessKeyId, Status (Active|Revoked),
// CreateDate}], KeysCreated}. Times are epoch seconds, as in KMS.
//
// CreateAccessKey's and CreateXKSCredential's answers are the only places
// a secret access key appears: it is neither logged nor audited. IssueClientCertificate takes a
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
	"github.com/hsmgate/hsmgate/gateway/policy"
	"github.com/hsmgate/hsmgate/gateway/xks"
	"github.com/hsmgate/hsmgate/hsmpool"
	"github.com/hsmgate/hsmgate/internal/pki"
	"github.com/hsmgate/hsmgate/quorum"
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
	// XKSStores are the names of the external key stores served
	// ([[xks.stores]]): CreateXKSCredential, SetXKSKey and CreateXKSKey
	// refuse other stores. Nil takes any valid store name, for callers
	// that check their configuration themselves (the hsmgate command).
	XKSStores []string
	// KMS creates CreateXKSKey's key; nil means a Service on Identities'
	// pool and keystore.
	KMS *kmsapi.Service
	// OnQuorumExecuted, if set, is called after an approved quorum
	// proposal was run (err: why it failed after its request id was
	// consumed), for the audit log (quorum.go).
	OnQuorumExecuted func(ctx context.Context, principal string, d quorum.Decision, err error)
	// Images is the firmware image configuration, nil without [images].
	Images *ImageService
	// Gossip is the running cluster node's gossip keyring, or nil.
	Gossip GossipKeyring
	// QuorumLedger is where this gateway keeps its quorum replay ledger
	// (Config.QuorumLedger). QuorumInit needs it: the path is the
	// gateway's to choose, never the caller's. Empty elsewhere means the
	// path recorded at QuorumInit.
	QuorumLedger string
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
	"CreatePrincipal":         adminOp((*Admin).createPrincipal),
	"ListPrincipals":          adminOp((*Admin).listPrincipals),
	"DescribePrincipal":       adminOp((*Admin).describePrincipal),
	"DeletePrincipal":         adminOp((*Admin).deletePrincipal),
	"TagPrincipal":            adminOp((*Admin).tagPrincipal),
	"UntagPrincipal":          adminOp((*Admin).untagPrincipal),
	"CreateAccessKey":         adminOp((*Admin).createAccessKey),
	"RevokeAccessKey":         adminOp((*Admin).revokeAccessKey),
	"IssueClientCertificate":  adminOp((*Admin).issueClientCertificate),
	"CreateXKSCredential":     adminOp((*Admin).createXKSCredential),
	"ListXKSCredentials":      adminOp((*Admin).listXKSCredentials),
	"SetXKSKey":               adminOp((*Admin).setXKSKey),
	"CreateXKSKey":            adminOp((*Admin).createXKSKey),
	"RemoveXKSKey":            adminOp((*Admin).removeXKSKey),
	"ListXKSKeys":             adminOp((*Admin).listXKSKeys),
	"QuorumInit":              adminOp((*Admin).quorumInit),
	"QuorumLinkOfficer":       adminOp((*Admin).quorumLinkOfficer),
	"QuorumStatus":            adminOp((*Admin).quorumStatus),
	"QuorumPropose":           adminOp((*Admin).quorumPropose),
	"QuorumList":              adminOp((*Admin).quorumList),
	"QuorumShow":              adminOp((*Admin).quorumShow),
	"QuorumApprove":           adminOp((*Admin).quorumApprove),
	"QuorumReject":            adminOp((*Admin).quorumReject),
	"ImageTrustInstall":       adminOp((*Admin).imageTrustInstall),
	"ImageStatus":             adminOp((*Admin).imageStatus),
	"ImageStage":              adminOp((*Admin).imageStage),
	"ImageRefresh":            adminOp((*Admin).imageRefresh),
	"ClusterGossipKeys":       adminOp((*Admin).gossipKeys),
	"ClusterGossipKeyInstall": adminOp((*Admin).gossipKeyInstall),
	"ClusterGossipKeyUse":     adminOp((*Admin).gossipKeyUse),
	"ClusterGossipKeyRemove":  adminOp((*Admin).gossipKeyRemove),
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
// (CreateAccessKey and CreateXKSCredential encrypt the secret;
// IssueClientCertificate signs with the CA key; CreateXKSKey generates a
// key).
func AdminNeedsPool(op string) bool {
	switch op {
	case "CreateAccessKey", "IssueClientCertificate", "CreateXKSCredential", "CreateXKSKey":
		return true
	}
	return false
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
	a := &Admin{Identities: g.identities, Account: g.cfg.Account, CACertificates: servingCACertificates, Log: g.log,
		XKSStores: []string{}, KMS: g.service, OnQuorumExecuted: g.auditQuorumExecution, Images: g.cfg.Images, Gossip: g.cfg.GossipKeys,
		QuorumLedger: g.cfg.QuorumLedger}
	if g.cfg.XKS != nil {
		for _, st := range g.cfg.XKS.Stores {
			a.XKSStores = append(a.XKSStores, st.Name)
		}
	}
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
//
// The quorum operations for officers (quorumOfficerOps, quorum.go) are the
// exception: they decide themselves who may call them.
func (a *Admin) Do(ctx context.Context, caller kmsapi.Caller, target string, body []byte) ([]byte, *kmsapi.Error) {
	name, _ := strings.CutPrefix(target, AdminTargetPrefix)
	if !caller.Admin && !(quorumOfficerOps[name] && isAdminTarget(target)) {
		return nil, kmsapi.Errorf(kmsapi.ExAccessDenied, "Principal %s is not an administrator: the HsmGate admin API is for admin principals only.", caller.Principal)
	}
	h, ok := adminOperations[name]
	if !ok || !isAdminTarget(target) {
		return nil, kmsapi.Errorf(kmsapi.ExUnknownOperation, "Operation %q is not served.", truncateRunes(target, 64))
	}
	if AdminNeedsPool(name) && a.Identities.Pool == nil {
		return nil, kmsapi.Errorf(kmsapi.ExInternal, "%s needs the HSM pool, which is not open.", name)
	}
	// In a cluster, first hold every change the cluster has committed, so
	// that what was just done through another node (a principal created,
	// a proposal submitted) is seen here. Admin calls are rare; a node cut
	// off from its leader answers from what it holds after a short wait.
	catchUp, cancel := context.WithTimeout(ctx, adminCatchUpWait)
	a.Identities.Store.CatchUp(catchUp)
	cancel()
	resp, err := h(a, ctx, &caller, body)
	// A quorum operation that lost a race to change the quorum state (in
	// a cluster, with another node) read a state that is gone: it runs
	// again on the current one. What it changes is written last, so the
	// refused write was its only effect (an execution records its outcome
	// with updateQuorum, which retries by itself).
	for i := 0; errors.Is(err, keystore.ErrConflict) && i < quorumRetries; i++ {
		resp, err = h(a, ctx, &caller, body)
	}
	if err != nil {
		return nil, a.toAPI(name, err)
	}
	out, err := json.Marshal(resp)
	if err != nil {
		return nil, kmsapi.Errorf(kmsapi.ExInternal, "Internal error.")
	}
	return out, nil
}

// adminCatchUpWait bounds the read barrier before an admin operation.
const adminCatchUpWait = 2 * time.Second

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
	case errors.Is(err, keystore.ErrConflict):
		return kmsapi.Errorf(kmsapi.ExThrottling, "The quorum state kept changing under this request (other gateways of the cluster were changing it). Retry.")
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
	// Officer links go first, so that a principal later made with the
	// same name can never inherit an officer's standing.
	if err := a.unlinkOfficer(req.PrincipalName); err != nil {
		return nil, err
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

// Requests and answers of the external key stores' admin operations.
type (
	AdminXKSStoreInput             struct{ Store string }
	AdminCreateXKSCredentialOutput struct {
		AccessKeyId     string
		SecretAccessKey string
		Store           string
	}
	// AdminXKSCredential describes a credential of an external key store,
	// without its secret.
	AdminXKSCredential struct {
		AccessKeyId string
		Status      string // Active or Revoked
		CreateDate  kmsapi.Epoch
	}
	AdminListXKSCredentialsOutput struct {
		Store       string
		Credentials []AdminXKSCredential
	}
	AdminSetXKSKeyInput struct {
		KeyId string // a key id, key ARN or alias name
		Store string
		// ExternalKeyId is what AWS KMS names the key by; it defaults to
		// the key id.
		ExternalKeyId string
		// Usages default to ENCRYPT and DECRYPT.
		Usages []string
		// Policy is an optional key policy document deciding XKS requests.
		Policy string
	}
	AdminCreateXKSKeyInput struct {
		Store         string
		ExternalKeyId string // defaults to the new key's id
		Usages        []string
		Policy        string
		Description   string
	}
	AdminXKSKeyInput struct{ KeyId string }
	// AdminXKSKey describes a key marked for an external key store.
	AdminXKSKey struct {
		KeyId         string
		Store         string
		ExternalKeyId string
		Usages        []string
		Policy        string `json:",omitempty"`
		KeyState      string
		Description   string `json:",omitempty"`
	}
	AdminListXKSKeysOutput struct{ Keys []AdminXKSKey }
)

// DefaultXKSUsages are the usages of a key marked without any: what AWS
// KMS's CreateKey needs of an external key.
var DefaultXKSUsages = []string{xks.UsageEncrypt, xks.UsageDecrypt}

// checkXKSStore checks a store name (as [[xks.stores]] names are: 1 to 32
// of a-z, 0-9 and -) and, if served, that the gateway serves it.
func (a *Admin) checkXKSStore(name string, served bool) error {
	if name == "" {
		return kmsapi.Errorf(kmsapi.ExValidation, "Store is required.")
	}
	valid := len(name) <= 32
	for _, c := range name {
		valid = valid && (c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-')
	}
	if !valid {
		return kmsapi.Errorf(kmsapi.ExValidation, "Store %q is not an external key store name: 1 to 32 of a-z, 0-9 and -.", truncateRunes(name, 64))
	}
	if served && a.XKSStores != nil && !slices.Contains(a.XKSStores, name) {
		if len(a.XKSStores) == 0 {
			return kmsapi.Errorf(kmsapi.ExNotFound, "External key store %s is not served: the gateway's configuration has no [[xks.stores]].", name)
		}
		return kmsapi.Errorf(kmsapi.ExNotFound, "External key store %s is not served; the gateway serves %s.", name, strings.Join(a.XKSStores, ", "))
	}
	return nil
}

// validExternalKeyID reports whether id is an external key id as the XKS
// specification allows: 1 to 128 of A-Z a-z 0-9 - . _.
func validExternalKeyID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// xksUse checks what marks a key for a store and fills in the defaults;
// keyID is the key's id (the default external id), or "" when not known
// yet.
func (a *Admin) xksUse(store, externalID, keyID string, usages []string, pol string) (*keystore.XKSUse, error) {
	if err := a.checkXKSStore(store, true); err != nil {
		return nil, err
	}
	if externalID == "" {
		externalID = keyID
	}
	if externalID != "" && !validExternalKeyID(externalID) {
		return nil, kmsapi.Errorf(kmsapi.ExValidation, "ExternalKeyId %q is not valid: 1 to 128 of A-Z a-z 0-9 - . _.", truncateRunes(externalID, 64))
	}
	if len(usages) == 0 {
		usages = DefaultXKSUsages
	}
	for i, u := range usages {
		if !slices.Contains(xks.ValidUsages, u) {
			return nil, kmsapi.Errorf(kmsapi.ExValidation, "Usage %q is not one of %s.", truncateRunes(u, 32), strings.Join(xks.ValidUsages, ", "))
		}
		if slices.Contains(usages[:i], u) {
			return nil, kmsapi.Errorf(kmsapi.ExValidation, "Usage %s is given twice.", u)
		}
	}
	if pol != "" {
		if _, err := policy.Parse([]byte(pol)); err != nil {
			return nil, kmsapi.Errorf(kmsapi.ExMalformedPolicy, "Policy: %s.", strings.TrimSuffix(err.Error(), "."))
		}
	}
	return &keystore.XKSUse{Store: store, ExternalID: externalID, Usages: slices.Clone(usages), Policy: pol}, nil
}

// resolveKey finds a key by id, key ARN or alias name.
func (a *Admin) resolveKey(ref string) (*keystore.Key, error) {
	if ref == "" {
		return nil, kmsapi.Errorf(kmsapi.ExValidation, "KeyId is required.")
	}
	store := a.Identities.Store
	id := ref
	if strings.HasPrefix(ref, "arn:") {
		_, after, ok := strings.Cut(ref, ":key/")
		if !ok {
			if _, alias, ok := strings.Cut(ref, ":alias/"); ok {
				ref = "alias/" + alias
			}
		}
		id = after
	}
	if strings.HasPrefix(ref, "alias/") {
		al, err := store.Alias(ref)
		if err != nil {
			return nil, kmsapi.Errorf(kmsapi.ExNotFound, "Alias %s does not exist.", truncateRunes(ref, 256))
		}
		id = al.KeyID
	}
	k, err := store.Key(id)
	if err != nil {
		return nil, kmsapi.Errorf(kmsapi.ExNotFound, "Key %s does not exist.", truncateRunes(ref, 256))
	}
	return k, nil
}

func describeXKSKey(k *keystore.Key) AdminXKSKey {
	d := AdminXKSKey{KeyId: k.ID, KeyState: k.State, Description: k.Description}
	if k.XKS != nil {
		d.Store, d.ExternalKeyId, d.Usages, d.Policy = k.XKS.Store, k.XKS.ExternalID, slices.Clone(k.XKS.Usages), k.XKS.Policy
	}
	return d
}

func (a *Admin) createXKSCredential(ctx context.Context, caller *kmsapi.Caller, req *AdminXKSStoreInput) (*AdminCreateXKSCredentialOutput, error) {
	if err := a.checkXKSStore(req.Store, true); err != nil {
		return nil, err
	}
	c, err := a.Identities.CreateXKSCredential(ctx, req.Store)
	if err != nil {
		return nil, err
	}
	a.changed(ctx, "CreateXKSCredential", caller, "store", req.Store, "access_key_id", c.AccessKeyID)
	return &AdminCreateXKSCredentialOutput{AccessKeyId: c.AccessKeyID, SecretAccessKey: c.Secret, Store: req.Store}, nil
}

func (a *Admin) listXKSCredentials(_ context.Context, _ *kmsapi.Caller, req *AdminXKSStoreInput) (*AdminListXKSCredentialsOutput, error) {
	if err := a.checkXKSStore(req.Store, false); err != nil {
		return nil, err
	}
	out := &AdminListXKSCredentialsOutput{Store: req.Store, Credentials: []AdminXKSCredential{}}
	for _, ak := range a.Identities.Store.AccessKeysOf(XKSPrincipal(req.Store)) {
		d := describeAccessKey(ak)
		out.Credentials = append(out.Credentials, AdminXKSCredential{AccessKeyId: d.AccessKeyId, Status: d.Status, CreateDate: d.CreateDate})
	}
	return out, nil
}

// markXKS marks a key, refusing keys AWS manages; the keystore refuses
// keys that are not symmetric encryption keys and external ids in use.
func (a *Admin) markXKS(k *keystore.Key, use *keystore.XKSUse) (*keystore.Key, error) {
	if k.Managed() {
		return nil, kmsapi.Errorf(kmsapi.ExValidation, "Key %s is an AWS managed key; it can't serve an external key store.", k.ID)
	}
	if err := a.Identities.Store.Apply(&keystore.SetXKS{KeyID: k.ID, XKS: use}); err != nil {
		if errors.Is(err, keystore.ErrAlreadyExists) {
			other, _ := a.Identities.Store.XKSKey(use.Store, use.ExternalID)
			if other != nil {
				return nil, kmsapi.Errorf(kmsapi.ExAlreadyExists, "External key store %s already has a key with external key id %s: key %s.", use.Store, use.ExternalID, other.ID)
			}
		}
		return nil, err
	}
	return a.Identities.Store.Key(k.ID)
}

func (a *Admin) setXKSKey(ctx context.Context, caller *kmsapi.Caller, req *AdminSetXKSKeyInput) (*AdminXKSKey, error) {
	k, err := a.resolveKey(req.KeyId)
	if err != nil {
		return nil, err
	}
	use, err := a.xksUse(req.Store, req.ExternalKeyId, k.ID, req.Usages, req.Policy)
	if err != nil {
		return nil, err
	}
	if k, err = a.markXKS(k, use); err != nil {
		return nil, err
	}
	a.changed(ctx, "SetXKSKey", caller, "key_id", k.ID, "store", use.Store, "external_key_id", use.ExternalID, "usages", use.Usages, "policy", use.Policy != "")
	d := describeXKSKey(k)
	return &d, nil
}

// kms is the KMS service that creates CreateXKSKey's keys.
func (a *Admin) kms() *kmsapi.Service {
	if a.KMS != nil {
		return a.KMS
	}
	return &kmsapi.Service{Pool: a.Identities.Pool, Store: a.Identities.Store, Account: a.Account, Log: a.Log, Now: a.Identities.Now}
}

func (a *Admin) createXKSKey(ctx context.Context, caller *kmsapi.Caller, req *AdminCreateXKSKeyInput) (*AdminXKSKey, error) {
	use, err := a.xksUse(req.Store, req.ExternalKeyId, "", req.Usages, req.Policy)
	if err != nil {
		return nil, err
	}
	if use.ExternalID != "" {
		if other, err := a.Identities.Store.XKSKey(use.Store, use.ExternalID); err == nil {
			return nil, kmsapi.Errorf(kmsapi.ExAlreadyExists, "External key store %s already has a key with external key id %s: key %s.", use.Store, use.ExternalID, other.ID)
		}
	}
	// The key is the caller's, as if it had called CreateKey; one made by
	// the hsmgate command on a stopped gateway is the admin's.
	owner := *caller
	if _, err := a.Identities.Store.Principal(owner.Principal); err != nil {
		owner = kmsapi.Caller{Principal: AdminName, Admin: true}
	}
	body, err := json.Marshal(struct{ KeySpec, KeyUsage, Description string }{"SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", req.Description})
	if err != nil {
		return nil, err
	}
	resp, apiErr := a.kms().Do(ctx, owner, kmsapi.TargetPrefix+"CreateKey", body, nil)
	if apiErr != nil {
		return nil, apiErr
	}
	var created struct{ KeyMetadata struct{ KeyId string } }
	if err := json.Unmarshal(resp, &created); err != nil || created.KeyMetadata.KeyId == "" {
		return nil, fmt.Errorf("CreateKey's answer: %v", err)
	}
	k, err := a.Identities.Store.Key(created.KeyMetadata.KeyId)
	if err != nil {
		return nil, err
	}
	if use.ExternalID == "" {
		use.ExternalID = k.ID
	}
	if k, err = a.markXKS(k, use); err != nil {
		// Rare: another key took the external id meanwhile. The new key
		// stays, unmarked, for the admin to mark or delete.
		if a.Log != nil {
			a.Log.WarnContext(ctx, "a key created for an external key store could not be marked", "key_id", created.KeyMetadata.KeyId, "store", use.Store, "err", err)
		}
		return nil, err
	}
	a.changed(ctx, "CreateXKSKey", caller, "key_id", k.ID, "store", use.Store, "external_key_id", use.ExternalID, "usages", use.Usages, "policy", use.Policy != "")
	d := describeXKSKey(k)
	return &d, nil
}

func (a *Admin) removeXKSKey(ctx context.Context, caller *kmsapi.Caller, req *AdminXKSKeyInput) (*AdminXKSKey, error) {
	k, err := a.resolveKey(req.KeyId)
	if err != nil {
		return nil, err
	}
	if k.XKS == nil {
		return nil, kmsapi.Errorf(kmsapi.ExNotFound, "Key %s serves no external key store.", k.ID)
	}
	d := describeXKSKey(k)
	if err := a.Identities.Store.Apply(&keystore.SetXKS{KeyID: k.ID}); err != nil {
		return nil, err
	}
	a.changed(ctx, "RemoveXKSKey", caller, "key_id", k.ID, "store", d.Store, "external_key_id", d.ExternalKeyId)
	return &d, nil
}

// listXKSKeys lists the keys of a store (of every store when Store is
// empty), by store and external key id.
func (a *Admin) listXKSKeys(_ context.Context, _ *kmsapi.Caller, req *AdminXKSStoreInput) (*AdminListXKSKeysOutput, error) {
	if req.Store != "" {
		if err := a.checkXKSStore(req.Store, false); err != nil {
			return nil, err
		}
	}
	keys, _ := a.Identities.Store.Keys("", 1<<30, func(k *keystore.Key) bool {
		return k.XKS != nil && (req.Store == "" || k.XKS.Store == req.Store)
	})
	out := &AdminListXKSKeysOutput{Keys: make([]AdminXKSKey, 0, len(keys))}
	for _, k := range keys {
		out.Keys = append(out.Keys, describeXKSKey(k))
	}
	slices.SortFunc(out.Keys, func(x, y AdminXKSKey) int {
		return strings.Compare(x.Store+"\x00"+x.ExternalKeyId, y.Store+"\x00"+y.ExternalKeyId)
	})
	return out, nil
}
