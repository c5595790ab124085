package kmsapi

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/gateway/policy"
)

// Caller is the authenticated principal making a request, with what key
// policies' conditions may ask about it.
type Caller struct {
	Principal string // name
	// Admin marks the gateway's administrators: key policies name them
	// as the account root, arn:aws:iam::<account>:root.
	Admin bool
	// Kind is the principal's ARN resource type: "user" (when empty) or
	// "role".
	Kind string
	// Service is the integrated service the principal is, if any: its
	// requests carry kms:ViaService.
	Service  string
	Tags     map[string]string
	SourceIP string // the client's address, for aws:SourceIp
	// QuorumApproved marks an operation run by the gateway because a
	// threshold of officers approved it (a quorum key-operation or
	// key-export proposal); policies see it as hsmgate:QuorumApproved.
	// Requests never set it.
	QuorumApproved bool

	arn string // the caller's ARN, once computed
}

// request is the per-request state the operations share through the
// context: what the audit log is told and what policy conditions see.
type request struct {
	info   *Info
	caller *Caller

	ec          map[string]string // encryption context of the action being authorized
	alias       string            // the alias the KeyId named, for kms:RequestAlias
	grantTokens []string
	// Algorithms the request names, for kms:SigningAlgorithm and friends.
	signingAlgorithm, messageType, macAlgorithm, encryptionAlgorithm string
	// Further condition keys set by the operation, lower case.
	cond map[string][]string

	// Reused by every authorization of the request, so that deciding
	// allocates nothing.
	principals [1]string
	pr         policy.Request
	cc         condContext
}

type requestKey struct{}

func reqOf(ctx context.Context) *request {
	rq, _ := ctx.Value(requestKey{}).(*request)
	if rq == nil {
		return &request{}
	}
	return rq
}

// setContext sets the encryption context the next authorization sees.
func setContext(ctx context.Context, ec map[string]string) { reqOf(ctx).ec = ec }

// setCond sets a condition key (lower case) for the next authorization.
func setCond(ctx context.Context, key string, vals ...string) {
	rq := reqOf(ctx)
	if rq.cond == nil {
		rq.cond = map[string][]string{}
	}
	rq.cond[key] = vals
}

// callerARN is the ARN a principal has in key policies and grants.
func (s *Service) callerARN(c *Caller) string {
	if c.arn != "" {
		return c.arn
	}
	kind := c.Kind
	if kind == "" {
		kind = keystore.KindUser
	}
	return "arn:aws:iam::" + s.Account + ":" + kind + "/" + c.Principal
}

// viaService is the kms:ViaService value of a service principal's requests.
func (s *Service) viaService(service string) string {
	return service + "." + s.Region + ".amazonaws.com"
}

// policyCache keeps parsed key policies, keyed by key id and checked
// against the stored text.
type policyCache struct {
	m sync.Map // key id -> *cachedPolicy
}

type cachedPolicy struct {
	text string // the policy as stored in the key ("" for the default)
	p    *policy.Policy
}

// keyPolicy returns k's parsed policy. A key stored without one (made
// before key policies existed) has the default policy for its owner.
func (s *Service) keyPolicy(k *keystore.Key) (*policy.Policy, error) {
	if v, ok := s.policies.m.Load(k.ID); ok && v.(*cachedPolicy).text == k.Policy {
		return v.(*cachedPolicy).p, nil
	}
	text := k.Policy
	if text == "" {
		text = s.defaultPolicy(k.Owner)
	}
	p, err := policy.Parse([]byte(text))
	if err != nil {
		return nil, err
	}
	s.policies.m.Store(k.ID, &cachedPolicy{text: k.Policy, p: p})
	return p, nil
}

// defaultPolicy is the policy CreateKey gives a key when the request names
// none: the account's administrators (the account root) and the principal
// that created it may do everything; nobody else may do anything, except
// through grants.
func (s *Service) defaultPolicy(owner string) string {
	ownerARN := ""
	if owner != "" {
		c := &Caller{Principal: owner}
		if p, err := s.Store.Principal(owner); err == nil {
			c.Kind = p.Kind
		}
		ownerARN = s.callerARN(c)
	}
	return policy.DefaultKeyPolicy(s.Account, ownerARN)
}

// decide evaluates k's policy for the request's caller doing action, with
// the request's condition keys.
func (s *Service) decide(ctx context.Context, action string, k *keystore.Key) (policy.Decision, error) {
	p, err := s.keyPolicy(k)
	if err != nil {
		return policy.NotApplicable, err
	}
	rq := reqOf(ctx)
	c := rq.caller
	if c == nil {
		return policy.NotApplicable, nil
	}
	rq.principals[0] = s.callerARN(c)
	rq.cc = condContext{s: s, c: c, k: k, rq: rq, now: s.now()}
	rq.pr = policy.Request{
		Principals: rq.principals[:],
		Admin:      c.Admin,
		Account:    s.Account,
		Action:     kmsAction(action),
		Resource:   s.KeyARN(k.ID),
		Context:    &rq.cc,
	}
	return p.Evaluate(&rq.pr), nil
}

// kmsActions caches the policy action names ("kms:" + operation).
var kmsActions sync.Map

func kmsAction(a string) string {
	if strings.IndexByte(a, ':') >= 0 { // an hsmgate: action, whole already
		return a
	}
	if v, ok := kmsActions.Load(a); ok {
		return v.(string)
	}
	v := "kms:" + a
	kmsActions.Store(a, v)
	return v
}

// authorize checks that c may run action on k: the key policy must allow
// it (an explicit Deny always wins), or else a grant to c for the
// operation whose constraints the request's encryption context meets. The
// grant used is noted for the audit log.
func (s *Service) authorize(ctx context.Context, c Caller, action string, k *keystore.Key) error {
	rq := reqOf(ctx)
	if err := s.checkGrantTokens(rq.grantTokens); err != nil {
		return err
	}
	d, err := s.decide(ctx, action, k)
	if err != nil {
		// A stored policy always parsed when it was put.
		return Errorf(ExInternal, "The key policy of %s could not be read.", s.KeyARN(k.ID))
	}
	switch d {
	case policy.Allow:
		return nil
	case policy.Deny:
		return Errorf(ExAccessDenied, "User: %s is not authorized to perform: %s on resource: %s with an explicit deny in a resource-based policy.",
			s.callerARN(&c), kmsAction(action), s.KeyARN(k.ID))
	}
	if g := s.grantFor(&c, action, k, rq.ec); g != nil {
		if rq.info != nil && rq.info.GrantID == "" {
			rq.info.GrantID = g.ID
		}
		return nil
	}
	return s.denied(&c, action, k)
}

// authorized resolves keyID and checks that c may run action on it.
func (s *Service) authorized(ctx context.Context, c Caller, action, keyID string) (*keystore.Key, error) {
	k, err := s.resolve(ctx, keyID)
	if err != nil {
		return nil, err
	}
	if err := s.authorize(ctx, c, action, k); err != nil {
		return nil, err
	}
	return k, nil
}

func (s *Service) denied(c *Caller, action string, k *keystore.Key) error {
	return Errorf(ExAccessDenied, "User: %s is not authorized to perform: %s on resource: %s because no resource-based policy allows the %s action.",
		s.callerARN(c), kmsAction(action), s.KeyARN(k.ID), kmsAction(action))
}

// grantFor returns a grant that lets c run action on k with encryption
// context ec, or nil.
func (s *Service) grantFor(c *Caller, action string, k *keystore.Key, ec map[string]string) *keystore.Grant {
	grants := s.Store.GrantsOf(k.ID)
	if len(grants) == 0 {
		return nil
	}
	arn := s.callerARN(c)
	for _, g := range grants {
		if g.GranteePrincipal == arn && contains(g.Operations, action) && grantContextOK(g, ec) {
			return g
		}
	}
	return nil
}

// grantContextOK checks a grant's encryption context constraints.
func grantContextOK(g *keystore.Grant, ec map[string]string) bool {
	if g.ContextEquals != nil {
		if len(ec) != len(g.ContextEquals) {
			return false
		}
		for k, v := range g.ContextEquals {
			if w, ok := ec[k]; !ok || w != v {
				return false
			}
		}
	}
	for k, v := range g.ContextSubset {
		if w, ok := ec[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// condContext answers policy condition keys for one authorization. Keys
// arrive lower-cased (condition key names are case-insensitive).
type condContext struct {
	s   *Service
	c   *Caller
	k   *keystore.Key
	rq  *request
	now time.Time
}

const (
	prefixEC           = "kms:encryptioncontext:"
	prefixPrincipalTag = "aws:principaltag/"
	prefixResourceTag  = "aws:resourcetag/"
)

func (x *condContext) Values(key string) ([]string, bool) {
	switch key {
	case "kms:calleraccount", "aws:principalaccount":
		return []string{x.s.Account}, true
	case "kms:viaservice":
		if x.c.Service == "" {
			return nil, false
		}
		return []string{x.s.viaService(x.c.Service)}, true
	case "aws:principalarn":
		return []string{x.s.callerARN(x.c)}, true
	case "aws:username":
		if x.c.Kind != "" && x.c.Kind != keystore.KindUser {
			return nil, false
		}
		return []string{x.c.Principal}, true
	case "aws:principaltype":
		if x.c.Kind == keystore.KindRole {
			return []string{"AssumedRole"}, true
		}
		return []string{"User"}, true
	case "aws:sourceip":
		if x.c.SourceIP == "" {
			return nil, false
		}
		return []string{x.c.SourceIP}, true
	case "aws:currenttime":
		return []string{x.now.UTC().Format(time.RFC3339)}, true
	case "aws:epochtime":
		return []string{strconv.FormatInt(x.now.Unix(), 10)}, true
	case "aws:securetransport":
		return []string{"true"}, true
	case "hsmgate:quorumapproved":
		return []string{strconv.FormatBool(x.c.QuorumApproved)}, true
	case "kms:encryptioncontextkeys":
		if len(x.rq.ec) == 0 {
			return nil, false
		}
		keys := make([]string, 0, len(x.rq.ec))
		for k := range x.rq.ec {
			keys = append(keys, k)
		}
		return keys, true
	case "kms:requestalias":
		if x.rq.alias == "" {
			return nil, false
		}
		return []string{x.rq.alias}, true
	case "kms:resourcealiases":
		as, _ := x.s.Store.Aliases(x.k.ID, "", maxLimit, nil)
		if len(as) == 0 {
			return nil, false
		}
		names := make([]string, len(as))
		for i, a := range as {
			names[i] = a.Name
		}
		return names, true
	case "kms:keyspec":
		return []string{x.k.Spec}, true
	case "kms:keyusage":
		return []string{x.k.Usage}, true
	case "kms:keyorigin":
		return []string{x.k.Origin}, true
	case "kms:multiregion":
		return []string{"false"}, true
	case "kms:signingalgorithm":
		return nonEmpty(x.rq.signingAlgorithm)
	case "kms:messagetype":
		return nonEmpty(x.rq.messageType)
	case "kms:macalgorithm":
		return nonEmpty(x.rq.macAlgorithm)
	case "kms:encryptionalgorithm":
		return nonEmpty(x.rq.encryptionAlgorithm)
	case "kms:grantisforawsresource":
		if _, ok := x.rq.cond["kms:grantoperations"]; ok {
			return []string{"false"}, true
		}
		return nil, false
	}
	if v, ok := x.rq.cond[key]; ok {
		return v, true
	}
	switch {
	case strings.HasPrefix(key, prefixEC):
		// The context key in kms:EncryptionContext:<key> is matched
		// without regard to case, as AWS does; the value is case-sensitive.
		name := key[len(prefixEC):]
		var vals []string
		for k, v := range x.rq.ec {
			if strings.EqualFold(k, name) {
				vals = append(vals, v)
			}
		}
		if len(vals) > 0 {
			return vals, true
		}
	case strings.HasPrefix(key, prefixPrincipalTag):
		name := key[len(prefixPrincipalTag):]
		for k, v := range x.c.Tags {
			if strings.EqualFold(k, name) {
				return []string{v}, true
			}
		}
	case strings.HasPrefix(key, prefixResourceTag):
		name := key[len(prefixResourceTag):]
		for k, v := range x.k.Tags {
			if strings.EqualFold(k, name) {
				return []string{v}, true
			}
		}
	}
	return nil, false
}

func nonEmpty(v string) ([]string, bool) {
	if v == "" {
		return nil, false
	}
	return []string{v}, true
}
