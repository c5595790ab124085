package kmsapi

import (
	"context"

	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/gateway/policy"
)

// defaultPolicyName is the name of a key's one policy, as in AWS KMS.
const defaultPolicyName = "default"

// maxPolicyBytes is AWS's limit on a key policy document.
const maxPolicyBytes = 32768

type getKeyPolicyRequest struct {
	KeyId      string
	PolicyName string
}

type getKeyPolicyResponse struct {
	Policy     string
	PolicyName string
}

type putKeyPolicyRequest struct {
	KeyId                          string
	PolicyName                     string
	Policy                         string
	BypassPolicyLockoutSafetyCheck bool
}

type listKeyPoliciesResponse struct {
	PolicyNames []string
	Truncated   bool
}

func checkPolicyName(name string) error {
	if name != "" && name != defaultPolicyName {
		return Errorf(ExNotFound, "Policy %q is not found: a key has one policy, named default.", truncate(name, 128))
	}
	return nil
}

func (s *Service) getKeyPolicy(ctx context.Context, c Caller, req *getKeyPolicyRequest) (*getKeyPolicyResponse, error) {
	if err := checkPolicyName(req.PolicyName); err != nil {
		return nil, err
	}
	k, err := s.authorized(ctx, c, "GetKeyPolicy", req.KeyId)
	if err != nil {
		return nil, err
	}
	text := k.Policy
	if text == "" {
		text = s.defaultPolicy(k.Owner)
	}
	return &getKeyPolicyResponse{Policy: text, PolicyName: defaultPolicyName}, nil
}

func (s *Service) listKeyPolicies(ctx context.Context, c Caller, req *listRequest) (*listKeyPoliciesResponse, error) {
	if _, err := limitOf(req.Limit); err != nil {
		return nil, err
	}
	if _, err := s.authorized(ctx, c, "ListKeyPolicies", req.KeyId); err != nil {
		return nil, err
	}
	return &listKeyPoliciesResponse{PolicyNames: []string{defaultPolicyName}}, nil
}

func (s *Service) putKeyPolicy(ctx context.Context, c Caller, req *putKeyPolicyRequest) (*empty, error) {
	if err := checkPolicyName(req.PolicyName); err != nil {
		return nil, err
	}
	k, err := s.authorized(ctx, c, "PutKeyPolicy", req.KeyId)
	if err != nil {
		return nil, err
	}
	if k.Managed() {
		return nil, managedRefusal(s, k, "its key policy can't be changed")
	}
	if k.State == keystore.StatePendingDeletion {
		return nil, Errorf(ExInvalidState, "%s is pending deletion.", s.KeyARN(k.ID))
	}
	if err := s.checkNewPolicy(ctx, c, k, req.Policy, req.BypassPolicyLockoutSafetyCheck); err != nil {
		return nil, err
	}
	if err := s.Store.Apply(&keystore.PutKeyPolicy{KeyID: k.ID, Policy: req.Policy}); err != nil {
		return nil, err
	}
	return &empty{}, nil
}

// checkNewPolicy parses a policy for k and, unless bypassed, runs the
// lockout safety check: the principal setting the policy must still be
// allowed to change it afterwards (AWS's rule). It keeps a typo from
// leaving a key that no administrator can ever manage again.
func (s *Service) checkNewPolicy(ctx context.Context, c Caller, k *keystore.Key, text string, bypass bool) error {
	if text == "" {
		return Errorf(ExValidation, "Policy is required.")
	}
	if len(text) > maxPolicyBytes {
		return Errorf(ExValidation, "Policy is %d bytes; a key policy can be at most %d.", len(text), maxPolicyBytes)
	}
	p, err := policy.Parse([]byte(text))
	if err != nil {
		return err
	}
	if bypass {
		return nil
	}
	trial := *k
	trial.Policy = text
	rq := reqOf(ctx)
	saved := rq.cond
	rq.cond = nil
	defer func() { rq.cond = saved }()
	d := p.Evaluate(&policy.Request{
		Principals: []string{s.callerARN(&c)},
		Admin:      c.Admin,
		Account:    s.Account,
		Action:     "kms:PutKeyPolicy",
		Resource:   s.KeyARN(k.ID),
		Context:    &condContext{s: s, c: &c, k: &trial, rq: rq, now: s.now()},
	})
	if d != policy.Allow {
		return Errorf(ExMalformedPolicy, "The new key policy will not allow you to update the key policy in the future (it does not allow %s kms:PutKeyPolicy). Set BypassPolicyLockoutSafetyCheck to set it anyway.", s.callerARN(&c))
	}
	return nil
}

// managedRefusal is the error for changing what users can't change on a
// service-managed key.
func managedRefusal(s *Service, k *keystore.Key, what string) error {
	return Errorf(ExUnsupported, "%s is a service-managed key: %s.", s.KeyARN(k.ID), what)
}
