package kmsapi

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/gateway/policy"
)

// Grant operations, as AWS KMS names them. ReEncryptFrom and ReEncryptTo
// are the two halves of ReEncrypt.
var grantOperations = []string{
	"Decrypt", "Encrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext",
	"ReEncryptFrom", "ReEncryptTo", "Sign", "Verify", "GetPublicKey", "CreateGrant",
	"RetireGrant", "DescribeKey", "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext",
	"GenerateMac", "VerifyMac", "DeriveSharedSecret",
}

// contextOperations are the grant operations that take an encryption
// context, the only ones a grant may constrain by one (besides the grant
// operations themselves).
var contextOperations = []string{
	"Decrypt", "Encrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext",
	"ReEncryptFrom", "ReEncryptTo", "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext",
	"CreateGrant", "RetireGrant",
}

// grantOpsForUsage are the operations that make sense for a key usage;
// CreateGrant rejects others as AWS does.
var grantOpsForUsage = map[string][]string{
	UsageEncryptDecrypt:    {"Decrypt", "Encrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext", "ReEncryptFrom", "ReEncryptTo", "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext", "GetPublicKey"},
	UsageSignVerify:        {"Sign", "Verify", "GetPublicKey"},
	UsageGenerateVerifyMac: {"GenerateMac", "VerifyMac"},
	UsageKeyAgreement:      {"DeriveSharedSecret", "GetPublicKey"},
}

type grantConstraints struct {
	EncryptionContextEquals map[string]string `json:",omitempty"`
	EncryptionContextSubset map[string]string `json:",omitempty"`
}

type createGrantRequest struct {
	KeyId             string
	GranteePrincipal  string
	RetiringPrincipal string
	Operations        []string
	Constraints       *grantConstraints
	GrantTokens       []string
	Name              string
	DryRun            bool
}

func (r *createGrantRequest) tokens() []string { return r.GrantTokens }

type createGrantResponse struct {
	GrantToken string
	GrantId    string
}

type listGrantsRequest struct {
	KeyId             string
	Limit             *int
	Marker            string
	GrantId           string
	GranteePrincipal  string
	RetiringPrincipal string // ListRetirableGrants
}

type grantEntry struct {
	KeyId             string
	GrantId           string
	Name              string `json:",omitempty"`
	CreationDate      Epoch
	GranteePrincipal  string
	RetiringPrincipal string `json:",omitempty"`
	IssuingAccount    string
	Operations        []string
	Constraints       *grantConstraints `json:",omitempty"`
}

type listGrantsResponse struct {
	Grants     []grantEntry
	NextMarker string `json:",omitempty"`
	Truncated  bool
}

type retireGrantRequest struct {
	GrantToken string
	KeyId      string
	GrantId    string
	DryRun     bool
}

var grantName = regexp.MustCompile(`^[a-zA-Z0-9:/_-]{1,256}$`)

// validPrincipal checks a grantee or retiring principal: an ARN of one of
// the gateway's principals (user/… or role/…) or the account root.
func (s *Service) validPrincipal(field, arn string) error {
	if arn == "arn:aws:iam::"+s.Account+":root" {
		return nil
	}
	rest, ok := strings.CutPrefix(arn, "arn:aws:iam::"+s.Account+":")
	kind, name, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 || (kind != keystore.KindUser && kind != keystore.KindRole) {
		return Errorf(ExValidation, "%s %q is not the ARN of a principal of account %s (arn:aws:iam::%s:user/NAME or role/NAME).", field, truncate(arn, 256), s.Account, s.Account)
	}
	p, err := s.Store.Principal(name)
	if err != nil || p.ARNKind() != kind {
		return Errorf(ExValidation, "%s %s is not a principal of this gateway.", field, truncate(arn, 256))
	}
	return nil
}

func (s *Service) createGrant(ctx context.Context, c Caller, req *createGrantRequest) (*createGrantResponse, error) {
	if req.GranteePrincipal == "" || len(req.Operations) == 0 {
		return nil, Errorf(ExValidation, "GranteePrincipal and Operations are required.")
	}
	if err := s.validPrincipal("GranteePrincipal", req.GranteePrincipal); err != nil {
		return nil, err
	}
	if req.RetiringPrincipal != "" {
		if err := s.validPrincipal("RetiringPrincipal", req.RetiringPrincipal); err != nil {
			return nil, err
		}
	}
	if req.Name != "" && !grantName.MatchString(req.Name) {
		return nil, Errorf(ExValidation, "Name must be 1 to 256 of a-z, A-Z, 0-9, :, /, _ and -.")
	}
	ops := slices.Clone(req.Operations)
	sort.Strings(ops)
	ops = slices.Compact(ops)
	var cons grantConstraints
	if req.Constraints != nil {
		cons = *req.Constraints
		if cons.EncryptionContextEquals != nil && cons.EncryptionContextSubset != nil {
			return nil, Errorf(ExValidation, "Constraints may have EncryptionContextEquals or EncryptionContextSubset, not both.")
		}
		for _, ec := range []map[string]string{cons.EncryptionContextEquals, cons.EncryptionContextSubset} {
			if err := checkContext(ec); err != nil {
				return nil, err
			}
		}
	}
	constrained := len(cons.EncryptionContextEquals)+len(cons.EncryptionContextSubset) > 0
	for _, op := range ops {
		if !contains(grantOperations, op) {
			return nil, Errorf(ExValidation, "Operations: %q is not a grant operation (valid: %s).", truncate(op, 64), strings.Join(grantOperations, ", "))
		}
		if constrained && !contains(contextOperations, op) {
			return nil, Errorf(ExValidation, "Operations: %s takes no encryption context, so a grant for it can't have encryption context constraints.", op)
		}
	}
	k, err := s.resolve(ctx, req.KeyId)
	if err != nil {
		return nil, err
	}
	for _, op := range ops {
		switch op {
		case "CreateGrant", "RetireGrant", "DescribeKey":
			continue
		}
		if !contains(grantOpsForUsage[k.Usage], op) || (strings.HasPrefix(op, "GenerateDataKey") && !strings.HasPrefix(op, "GenerateDataKeyPair") && k.Spec != symmetricDefault) {
			return nil, Errorf(ExValidation, "Operations: %s is not valid for %s, a %s key with usage %s.", op, s.KeyARN(k.ID), k.Spec, k.Usage)
		}
	}
	if k.State == keystore.StatePendingDeletion {
		return nil, Errorf(ExInvalidState, "%s is pending deletion.", s.KeyARN(k.ID))
	}
	setCond(ctx, "kms:grantoperations", ops...)
	setCond(ctx, "kms:granteeprincipal", req.GranteePrincipal)
	if req.RetiringPrincipal != "" {
		setCond(ctx, "kms:retiringprincipal", req.RetiringPrincipal)
	}
	if err := s.authorizeCreateGrant(ctx, c, k, ops, &cons); err != nil {
		return nil, err
	}
	if req.DryRun {
		return nil, dryRun()
	}
	g := keystore.Grant{
		KeyID: k.ID, Name: req.Name, GranteePrincipal: req.GranteePrincipal,
		RetiringPrincipal: req.RetiringPrincipal, IssuingPrincipal: s.callerARN(&c),
		Operations: ops, ContextEquals: cons.EncryptionContextEquals, ContextSubset: cons.EncryptionContextSubset,
		CreatedAt: s.now().UTC(),
	}
	s.grantMu.Lock()
	defer s.grantMu.Unlock()
	if req.Name != "" {
		// Idempotency: the same named grant with the same parameters is
		// the grant that exists; different parameters make a new grant.
		for _, old := range s.Store.GrantsOf(k.ID) {
			if sameGrant(old, &g) {
				return &createGrantResponse{GrantId: old.ID, GrantToken: grantToken(old)}, nil
			}
		}
	}
	g.ID = randomHex(32)
	g.TokenNonce = randomHex(16)
	if err := s.Store.Apply(&keystore.CreateGrant{Grant: g}); err != nil {
		return nil, err
	}
	if info := infoOf(ctx); info != nil && info.GrantID == "" {
		info.GrantID = g.ID
	}
	return &createGrantResponse{GrantId: g.ID, GrantToken: grantToken(&g)}, nil
}

// authorizeCreateGrant allows CreateGrant by the key policy, or by a grant
// to the caller that includes CreateGrant: then the new grant may only
// narrow it (a subset of its operations, and its constraints kept).
func (s *Service) authorizeCreateGrant(ctx context.Context, c Caller, k *keystore.Key, ops []string, cons *grantConstraints) error {
	rq := reqOf(ctx)
	if err := s.checkGrantTokens(rq.grantTokens); err != nil {
		return err
	}
	d, err := s.decide(ctx, "CreateGrant", k)
	if err != nil {
		return Errorf(ExInternal, "The key policy of %s could not be read.", s.KeyARN(k.ID))
	}
	switch d {
	case policy.Allow:
		return nil
	case policy.Deny:
		return Errorf(ExAccessDenied, "User: %s is not authorized to perform: kms:CreateGrant on resource: %s with an explicit deny in a resource-based policy.", s.callerARN(&c), s.KeyARN(k.ID))
	}
	arn := s.callerARN(&c)
	for _, parent := range s.Store.GrantsOf(k.ID) {
		if parent.GranteePrincipal != arn || !contains(parent.Operations, "CreateGrant") {
			continue
		}
		narrower := true
		for _, op := range ops {
			narrower = narrower && contains(parent.Operations, op)
		}
		if parent.ContextEquals != nil && !maps.Equal(parent.ContextEquals, cons.EncryptionContextEquals) {
			narrower = false
		}
		for key, v := range parent.ContextSubset {
			if w, ok := cons.EncryptionContextSubset[key]; !ok || w != v {
				if w, ok := cons.EncryptionContextEquals[key]; !ok || w != v {
					narrower = false
				}
			}
		}
		if narrower {
			if rq.info != nil && rq.info.GrantID == "" {
				rq.info.GrantID = parent.ID
			}
			return nil
		}
	}
	return s.denied(&c, "CreateGrant", k)
}

func sameGrant(a, b *keystore.Grant) bool {
	return a.Name == b.Name && a.GranteePrincipal == b.GranteePrincipal &&
		a.RetiringPrincipal == b.RetiringPrincipal && slices.Equal(a.Operations, b.Operations) &&
		maps.Equal(a.ContextEquals, b.ContextEquals) && maps.Equal(a.ContextSubset, b.ContextSubset) &&
		(a.ContextEquals == nil) == (b.ContextEquals == nil) && (a.ContextSubset == nil) == (b.ContextSubset == nil)
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b)
}

// Grant tokens are "hsmgate-grant-v1." + grant id + "." + the grant's
// random nonce. Grants take effect as soon as CreateGrant returns, so a
// token adds nothing to what the grant allows; it is checked so that a
// forged or mangled token is reported rather than silently ignored.
const grantTokenPrefix = "hsmgate-grant-v1."

func grantToken(g *keystore.Grant) string { return grantTokenPrefix + g.ID + "." + g.TokenNonce }

// maxGrantTokens and maxGrantToken are AWS's limits.
const (
	maxGrantTokens = 10
	maxGrantToken  = 8192
)

// validGrantTokens checks the GrantTokens parameter's shape.
func validGrantTokens(tokens []string) error {
	if len(tokens) > maxGrantTokens {
		return Errorf(ExValidation, "GrantTokens can have at most %d tokens.", maxGrantTokens)
	}
	for _, t := range tokens {
		if len(t) == 0 || len(t) > maxGrantToken {
			return Errorf(ExValidation, "A grant token must be 1 to %d characters.", maxGrantToken)
		}
	}
	return nil
}

// parseGrantToken returns the grant id and nonce of a token.
func parseGrantToken(t string) (id, nonce string, ok bool) {
	rest, ok := strings.CutPrefix(t, grantTokenPrefix)
	if !ok {
		return "", "", false
	}
	id, nonce, ok = strings.Cut(rest, ".")
	return id, nonce, ok && len(id) == 64 && len(nonce) == 32
}

// checkGrantTokens refuses tokens that were not made by this gateway, or
// that name an existing grant with the wrong nonce. A well-formed token of
// a grant that no longer exists is ignored: the grant can't allow anything.
func (s *Service) checkGrantTokens(tokens []string) error {
	for _, t := range tokens {
		id, nonce, ok := parseGrantToken(t)
		if !ok {
			return Errorf(ExInvalidGrantToken, "A grant token is not valid.")
		}
		if g, err := s.Store.Grant(id); err == nil && subtle.ConstantTimeCompare([]byte(g.TokenNonce), []byte(nonce)) != 1 {
			return Errorf(ExInvalidGrantToken, "A grant token is not valid.")
		}
	}
	return nil
}

func (s *Service) grantEntry(g *keystore.Grant) grantEntry {
	e := grantEntry{
		KeyId: s.KeyARN(g.KeyID), GrantId: g.ID, Name: g.Name, CreationDate: Epoch(g.CreatedAt),
		GranteePrincipal: g.GranteePrincipal, RetiringPrincipal: g.RetiringPrincipal,
		IssuingAccount: "arn:aws:iam::" + s.Account + ":root", Operations: g.Operations,
	}
	if g.ContextEquals != nil || g.ContextSubset != nil {
		e.Constraints = &grantConstraints{EncryptionContextEquals: g.ContextEquals, EncryptionContextSubset: g.ContextSubset}
	}
	return e
}

// pageGrants returns one page of grants (sorted by id) after marker.
func (s *Service) pageGrants(grants []*keystore.Grant, marker string, limit int) *listGrantsResponse {
	out := &listGrantsResponse{Grants: []grantEntry{}}
	for _, g := range grants {
		if g.ID <= marker {
			continue
		}
		if len(out.Grants) == limit {
			out.Truncated = true
			out.NextMarker = out.Grants[len(out.Grants)-1].GrantId
			break
		}
		out.Grants = append(out.Grants, s.grantEntry(g))
	}
	return out
}

func (s *Service) listGrants(ctx context.Context, c Caller, req *listGrantsRequest) (*listGrantsResponse, error) {
	limit, err := limitOf(req.Limit)
	if err != nil {
		return nil, err
	}
	k, err := s.authorized(ctx, c, "ListGrants", req.KeyId)
	if err != nil {
		return nil, err
	}
	var grants []*keystore.Grant
	for _, g := range s.Store.GrantsOf(k.ID) {
		if (req.GrantId == "" || g.ID == req.GrantId) && (req.GranteePrincipal == "" || g.GranteePrincipal == req.GranteePrincipal) {
			grants = append(grants, g)
		}
	}
	return s.pageGrants(grants, req.Marker, limit), nil
}

// listRetirableGrants lists the grants a principal may retire. A principal
// may list its own; an administrator anyone's.
func (s *Service) listRetirableGrants(ctx context.Context, c Caller, req *listGrantsRequest) (*listGrantsResponse, error) {
	limit, err := limitOf(req.Limit)
	if err != nil {
		return nil, err
	}
	if req.RetiringPrincipal == "" {
		return nil, Errorf(ExValidation, "RetiringPrincipal is required.")
	}
	if !c.Admin && req.RetiringPrincipal != s.callerARN(&c) {
		return nil, Errorf(ExAccessDenied, "User: %s is not authorized to perform: kms:ListRetirableGrants for %s: a principal may list only its own retirable grants.", s.callerARN(&c), truncate(req.RetiringPrincipal, 256))
	}
	grants := s.Store.Grants(func(g *keystore.Grant) bool { return g.RetiringPrincipal == req.RetiringPrincipal })
	return s.pageGrants(grants, req.Marker, limit), nil
}

func (s *Service) retireGrant(ctx context.Context, c Caller, req *retireGrantRequest) (*empty, error) {
	var g *keystore.Grant
	switch {
	case req.GrantToken != "":
		if err := validGrantTokens([]string{req.GrantToken}); err != nil {
			return nil, err
		}
		id, nonce, ok := parseGrantToken(req.GrantToken)
		if !ok {
			return nil, Errorf(ExInvalidGrantToken, "The grant token is not valid.")
		}
		found, err := s.Store.Grant(id)
		if err != nil {
			return nil, Errorf(ExNotFound, "Grant %s is not found.", id)
		}
		if subtle.ConstantTimeCompare([]byte(found.TokenNonce), []byte(nonce)) != 1 {
			return nil, Errorf(ExInvalidGrantToken, "The grant token is not valid.")
		}
		g = found
	case req.KeyId != "" && req.GrantId != "":
		k, err := s.resolve(ctx, req.KeyId)
		if err != nil {
			return nil, err
		}
		found, err := s.Store.Grant(req.GrantId)
		if err != nil || found.KeyID != k.ID {
			return nil, Errorf(ExNotFound, "Grant %s is not found on %s.", truncate(req.GrantId, 128), s.KeyARN(k.ID))
		}
		g = found
	default:
		return nil, Errorf(ExValidation, "RetireGrant needs a GrantToken, or a KeyId and a GrantId.")
	}
	k, err := s.Store.Key(g.KeyID)
	if err != nil {
		return nil, err
	}
	s.noteKey(ctx, k)
	if info := infoOf(ctx); info != nil {
		info.GrantID = g.ID
	}
	arn := s.callerARN(&c)
	allowed := g.RetiringPrincipal == arn || (g.GranteePrincipal == arn && contains(g.Operations, "RetireGrant")) ||
		(c.Admin && g.RetiringPrincipal == "arn:aws:iam::"+s.Account+":root")
	if !allowed {
		if d, err := s.decide(ctx, "RetireGrant", k); err != nil || d != policy.Allow {
			return nil, s.denied(&c, "RetireGrant", k)
		}
	}
	if req.DryRun {
		return nil, dryRun()
	}
	if err := s.Store.Apply(&keystore.DeleteGrant{ID: g.ID}); err != nil {
		return nil, err
	}
	return &empty{}, nil
}

func (s *Service) revokeGrant(ctx context.Context, c Caller, req *retireGrantRequest) (*empty, error) {
	if req.GrantId == "" {
		return nil, Errorf(ExValidation, "GrantId is required.")
	}
	k, err := s.authorized(ctx, c, "RevokeGrant", req.KeyId)
	if err != nil {
		return nil, err
	}
	g, err := s.Store.Grant(req.GrantId)
	if err != nil || g.KeyID != k.ID {
		return nil, Errorf(ExNotFound, "Grant %s is not found on %s.", truncate(req.GrantId, 128), s.KeyARN(k.ID))
	}
	if info := infoOf(ctx); info != nil {
		info.GrantID = g.ID
	}
	if req.DryRun {
		return nil, dryRun()
	}
	if err := s.Store.Apply(&keystore.DeleteGrant{ID: g.ID}); err != nil {
		return nil, err
	}
	return &empty{}, nil
}
