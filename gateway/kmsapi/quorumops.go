package kmsapi

import (
	"context"
	"encoding/json"
	"math"

	"github.com/hsmgate/hsmgate/gateway/keystore"
)

// ActionExportKey is the key-policy action that allows a key to be
// exported through an approved key-export quorum proposal. No default
// policy allows it ("kms:*" does not match it): a key is exportable only
// when its policy says so.
const ActionExportKey = "hsmgate:ExportKey"

// ExportableKey resolves keyID and checks that c may propose, and later
// run, its export: the key policy allows hsmgate:ExportKey to c, the key is
// enabled, its material is in this gateway's HSMs (not an external key
// store's), it is a customer key, and the version exists.
func (s *Service) ExportableKey(ctx context.Context, c Caller, keyID string, version uint64) (*keystore.Key, *keystore.Version, error) {
	c.arn = s.callerARN(&c)
	ctx = context.WithValue(ctx, requestKey{}, &request{caller: &c})
	k, err := s.resolve(ctx, keyID)
	if err != nil {
		return nil, nil, err
	}
	if err := s.authorize(ctx, c, ActionExportKey, k); err != nil {
		return nil, nil, err
	}
	switch {
	case k.Managed():
		return nil, nil, Errorf(ExUnsupported, "%s is a service-managed key; it can't be exported.", s.KeyARN(k.ID))
	case k.XKS != nil:
		return nil, nil, Errorf(ExUnsupported, "%s is in an external key store; its material is not in this gateway's HSMs.", s.KeyARN(k.ID))
	case k.State == keystore.StateDisabled:
		return nil, nil, Errorf(ExDisabled, "%s is disabled.", s.KeyARN(k.ID))
	case k.State != keystore.StateEnabled:
		return nil, nil, Errorf(ExInvalidState, "%s is %s.", s.KeyARN(k.ID), pendingWord(k.State))
	}
	if version < 1 || version > math.MaxUint32 {
		return nil, nil, Errorf(ExValidation, "Key versions are numbered from 1; %d is not one.", version)
	}
	v := k.Version(uint32(version))
	if v == nil {
		return nil, nil, Errorf(ExNotFound, "%s has no version %d (it has %d).", s.KeyARN(k.ID), version, len(k.Versions))
	}
	return k, v, nil
}

// QuorumOperations are the KMS operations a key-operation quorum proposal
// may run: those that change or destroy a key, which a key policy can
// reserve to a quorum with a Deny on hsmgate:QuorumApproved = false.
var QuorumOperations = map[string]bool{
	"ScheduleKeyDeletion": true, "CancelKeyDeletion": true, "PutKeyPolicy": true,
	"DisableKey": true, "EnableKey": true, "DeleteImportedKeyMaterial": true,
	"EnableKeyRotation": true, "DisableKeyRotation": true, "RotateKeyOnDemand": true,
	"CreateGrant": true, "RevokeGrant": true, "RetireGrant": true,
	"UpdateKeyDescription": true, "TagResource": true, "UntagResource": true,
	"CreateAlias": true, "UpdateAlias": true, "DeleteAlias": true,
	"ImportKeyMaterial": true,
}

// QuorumOperationKey checks a key-operation proposal's request before it
// is put to the officers: the operation is one a quorum may run, the
// request is a JSON object, and its KeyId (TargetKeyId for aliases)
// resolves to the key the proposal names. It returns the key's ARN.
func (s *Service) QuorumOperationKey(ctx context.Context, keyID, operation string, body []byte) (string, error) {
	if !QuorumOperations[operation] {
		return "", Errorf(ExValidation, "%q is not an operation a quorum proposal can run; those are the key-changing operations (ScheduleKeyDeletion, PutKeyPolicy, DisableKey, …).", truncate(operation, 64))
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		return "", Errorf(ExValidation, "The proposal's request must be the operation's JSON request object.")
	}
	named := ""
	for _, field := range []string{"KeyId", "TargetKeyId"} {
		if raw, ok := fields[field]; ok {
			if err := json.Unmarshal(raw, &named); err != nil {
				return "", Errorf(ExValidation, "The request's %s must be a string.", field)
			}
			break
		}
	}
	ctx = context.WithValue(ctx, requestKey{}, &request{})
	want, err := s.resolve(ctx, keyID)
	if err != nil {
		return "", err
	}
	if named == "" {
		return "", Errorf(ExValidation, "The request names no KeyId; it must name the proposal's key %s.", s.KeyARN(want.ID))
	}
	got, err := s.resolve(ctx, named)
	if err != nil {
		return "", err
	}
	if got.ID != want.ID {
		return "", Errorf(ExValidation, "The request's key %s is not the proposal's key %s.", s.KeyARN(got.ID), s.KeyARN(want.ID))
	}
	return s.KeyARN(want.ID), nil
}
