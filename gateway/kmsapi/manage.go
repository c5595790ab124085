package kmsapi

import (
	"context"
	"crypto/rand"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/gateway/policy"
)

const (
	maxDescription = 8192
	defaultLimit   = 100
	maxLimit       = 1000
)

func (s *Service) createKey(ctx context.Context, c Caller, req *createKeyRequest) (*keyMetadataResponse, error) {
	spec := req.KeySpec
	if req.CustomerMasterKeySpec != "" {
		if spec != "" && spec != req.CustomerMasterKeySpec {
			return nil, Errorf(ExValidation, "KeySpec and CustomerMasterKeySpec differ; use KeySpec.")
		}
		spec = req.CustomerMasterKeySpec
	}
	if spec == "" {
		spec = symmetricDefault
	}
	usage := req.KeyUsage
	if usage == "" {
		usage = UsageEncryptDecrypt
	}
	switch {
	case req.Origin != "" && req.Origin != "AWS_KMS" && req.Origin != originExternal:
		return nil, Errorf(ExUnsupported, "Origin %s is not supported: keys are generated in the HSMs (AWS_KMS) or imported (EXTERNAL).", truncate(req.Origin, 32))
	case req.MultiRegion:
		return nil, Errorf(ExUnsupported, "Multi-Region keys are not supported.")
	case req.CustomKeyStoreId != "" || req.XksKeyId != "":
		return nil, Errorf(ExUnsupported, "Custom key stores are not supported: hsmgate is itself the key store.")
	case utf8.RuneCountInString(req.Description) > maxDescription:
		return nil, Errorf(ExValidation, "Description is longer than %d characters.", maxDescription)
	}
	info, ok := specs[spec]
	if !ok {
		if why, known := unservedSpecs[spec]; known {
			return nil, Errorf(ExUnsupported, "KeySpec %s: %s.", spec, why)
		}
		return nil, Errorf(ExValidation, "KeySpec %q is not a valid key spec.", truncate(spec, 64))
	}
	if !contains(info.usages, usage) {
		return nil, Errorf(ExValidation, "KeyUsage %s is not valid for KeySpec %s (valid: %s).", truncate(usage, 32), spec, strings.Join(info.usages, ", "))
	}
	tags, err := validTags(req.Tags)
	if err != nil {
		return nil, err
	}
	if err := s.Pool.Capabilities().Supports(info.pool, poolUsage[usage]); err != nil {
		return nil, Errorf(ExUnsupported, "KeySpec %s with KeyUsage %s is not supported by this gateway's HSMs: %v.", spec, usage, err)
	}
	if req.Origin == originExternal {
		if err := s.importable(info.pool); err != nil {
			return nil, err
		}
	}
	now := s.now().UTC()
	k := keystore.Key{
		ID: newKeyID(), CreatedAt: now, Description: req.Description, State: keystore.StateEnabled,
		Spec: spec, Usage: usage, Origin: "AWS_KMS", Owner: c.Principal, Tags: tags,
		KeyManager: keystore.KeyManagerCustomer,
	}
	if req.Origin == originExternal {
		k.Origin, k.State, k.Import = originExternal, keystore.StatePendingImport, &keystore.Import{}
	}
	if req.Policy != nil {
		if err := s.checkNewPolicy(ctx, c, &k, *req.Policy, req.BypassPolicyLockoutSafetyCheck); err != nil {
			return nil, err
		}
		k.Policy = *req.Policy
	} else {
		k.Policy = s.defaultPolicy(c.Principal)
	}
	if k.Origin != originExternal {
		gen, err := s.Pool.GenerateKey(ctx, info.pool, poolUsage[usage])
		if err != nil {
			return nil, err
		}
		k.Versions = []keystore.Version{{Number: 1, CreatedAt: now, Blob: gen.Blob, Public: gen.Public}}
	}
	if err := s.Store.Apply(&keystore.CreateKey{Key: k}); err != nil {
		return nil, err
	}
	stored, err := s.Store.Key(k.ID)
	if err != nil {
		return nil, err
	}
	return &keyMetadataResponse{KeyMetadata: s.metadata(stored)}, nil
}

// newKeyID returns a random (version 4) UUID.
func newKeyID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func (s *Service) metadata(k *keystore.Key) KeyMetadata {
	enc, sig, mac, agree := s.algorithms(k.Spec, k.Usage)
	m := KeyMetadata{
		AWSAccountId: s.Account, KeyId: k.ID, Arn: s.KeyARN(k.ID), CreationDate: Epoch(k.CreatedAt),
		Enabled: k.State == keystore.StateEnabled, Description: k.Description, KeyUsage: k.Usage,
		KeyState: k.State, Origin: k.Origin, KeyManager: keyManager(k), CustomerMasterKeySpec: k.Spec,
		KeySpec: k.Spec, EncryptionAlgorithms: enc, SigningAlgorithms: sig, MacAlgorithms: mac,
		KeyAgreementAlgorithms: agree,
	}
	if k.State == keystore.StatePendingDeletion {
		d, w := Epoch(k.DeletionDate), k.PendingWindowDays
		m.DeletionDate, m.PendingDeletionWindowInDays = &d, &w
	}
	if k.Import != nil && len(k.Versions) > 0 {
		m.ExpirationModel = expiresNever
		if !k.Import.ValidTo.IsZero() {
			v := Epoch(k.Import.ValidTo)
			m.ExpirationModel, m.ValidTo = expires, &v
		}
	}
	return m
}

func keyManager(k *keystore.Key) string {
	if k.KeyManager == "" {
		return keystore.KeyManagerCustomer
	}
	return k.KeyManager
}

func (s *Service) describeKey(ctx context.Context, c Caller, req *keyIDRequest) (*keyMetadataResponse, error) {
	k, err := s.authorized(ctx, c, "DescribeKey", req.KeyId)
	if err != nil {
		return nil, err
	}
	return &keyMetadataResponse{KeyMetadata: s.metadata(k)}, nil
}

func limitOf(l *int) (int, error) {
	if l == nil {
		return defaultLimit, nil
	}
	if *l < 1 || *l > maxLimit {
		return 0, Errorf(ExValidation, "Limit must be between 1 and %d.", maxLimit)
	}
	return *l, nil
}

func (s *Service) listKeys(ctx context.Context, c Caller, req *listRequest) (*listKeysResponse, error) {
	limit, err := limitOf(req.Limit)
	if err != nil {
		return nil, err
	}
	keys, more := s.Store.Keys(req.Marker, limit, s.visible(ctx, c))
	out := &listKeysResponse{Keys: make([]keyListEntry, len(keys)), Truncated: more}
	for i, k := range keys {
		out.Keys[i] = keyListEntry{KeyId: k.ID, KeyArn: s.KeyARN(k.ID)}
	}
	if more {
		out.NextMarker = keys[len(keys)-1].ID
	}
	return out, nil
}

// visible filters the keys a caller may list.
// visible filters the keys a caller is shown by ListKeys and ListAliases:
// those its key policy lets it describe, and those it holds a grant on.
// (AWS lists every key of the account to anyone allowed kms:ListKeys; a
// gateway shared by many teams shows each only what it may use.)
func (s *Service) visible(ctx context.Context, c Caller) func(*keystore.Key) bool {
	arn := s.callerARN(&c)
	return func(k *keystore.Key) bool {
		if d, err := s.decide(ctx, "DescribeKey", k); err == nil && d == policy.Allow {
			return true
		}
		for _, g := range s.Store.GrantsOf(k.ID) {
			if g.GranteePrincipal == arn {
				return true
			}
		}
		return false
	}
}

func (s *Service) setState(ctx context.Context, c Caller, action, keyID, state string) (*empty, error) {
	k, err := s.resolve(ctx, keyID)
	if err != nil {
		return nil, err
	}
	if err := s.authorize(ctx, c, action, k); err != nil {
		return nil, err
	}
	if k.Managed() {
		return nil, managedRefusal(s, k, "it is always enabled")
	}
	if k.State != keystore.StateEnabled && k.State != keystore.StateDisabled {
		return nil, Errorf(ExInvalidState, "%s is %s.", s.KeyARN(k.ID), pendingWord(k.State))
	}
	if err := s.Store.Apply(&keystore.SetKeyState{KeyID: k.ID, State: state}); err != nil {
		return nil, err
	}
	return &empty{}, nil
}

func (s *Service) enableKey(ctx context.Context, c Caller, req *keyIDRequest) (*empty, error) {
	return s.setState(ctx, c, "EnableKey", req.KeyId, keystore.StateEnabled)
}

func (s *Service) disableKey(ctx context.Context, c Caller, req *keyIDRequest) (*empty, error) {
	return s.setState(ctx, c, "DisableKey", req.KeyId, keystore.StateDisabled)
}

func (s *Service) updateKeyDescription(ctx context.Context, c Caller, req *updateDescriptionRequest) (*empty, error) {
	if req.Description == nil {
		return nil, Errorf(ExValidation, "Description is required.")
	}
	if utf8.RuneCountInString(*req.Description) > maxDescription {
		return nil, Errorf(ExValidation, "Description is longer than %d characters.", maxDescription)
	}
	k, err := s.authorized(ctx, c, "UpdateKeyDescription", req.KeyId)
	if err != nil {
		return nil, err
	}
	if k.Managed() {
		return nil, managedRefusal(s, k, "its description can't be changed")
	}
	if err := s.Store.Apply(&keystore.SetDescription{KeyID: k.ID, Description: *req.Description}); err != nil {
		return nil, err
	}
	return &empty{}, nil
}

var aliasName = regexp.MustCompile(`^alias/[a-zA-Z0-9/_-]+$`)

func validAlias(name string) error {
	switch {
	case !aliasName.MatchString(name) || len(name) > 256:
		return Errorf(ExValidation, "Alias name must begin with alias/ followed by 1 to 250 of a-z, A-Z, 0-9, /, _ and -.")
	case strings.HasPrefix(name, "alias/aws/"), strings.HasPrefix(name, ManagedAliasPrefix):
		return Errorf(ExInvalidAliasName, "Alias names beginning with alias/aws/ or %s are reserved.", ManagedAliasPrefix)
	}
	return nil
}

// aliasTarget resolves an alias's target, which must be a key id or key ARN.
func (s *Service) aliasTarget(ctx context.Context, c Caller, action, target string) (*keystore.Key, error) {
	if strings.HasPrefix(target, "alias/") || strings.Contains(target, ":alias/") {
		return nil, Errorf(ExValidation, "TargetKeyId must be a key id or key ARN, not an alias.")
	}
	k, err := s.resolve(ctx, target)
	if err != nil {
		return nil, err
	}
	if err := s.authorize(ctx, c, action, k); err != nil {
		return nil, err
	}
	if k.Managed() {
		return nil, managedRefusal(s, k, "only its own alias can name it")
	}
	if k.State == keystore.StatePendingDeletion {
		return nil, Errorf(ExInvalidState, "%s is pending deletion.", s.KeyARN(k.ID))
	}
	return k, nil
}

func (s *Service) createAlias(ctx context.Context, c Caller, req *aliasRequest) (*empty, error) {
	if err := validAlias(req.AliasName); err != nil {
		return nil, err
	}
	k, err := s.aliasTarget(ctx, c, "CreateAlias", req.TargetKeyId)
	if err != nil {
		return nil, err
	}
	now := s.now().UTC()
	err = s.Store.Apply(&keystore.CreateAlias{Alias: keystore.Alias{Name: req.AliasName, KeyID: k.ID, CreatedAt: now, UpdatedAt: now}})
	if err != nil {
		return nil, aliasError(s, req.AliasName, err)
	}
	return &empty{}, nil
}

func aliasError(s *Service, name string, err error) error {
	switch api := toAPI(err); api.Type {
	case ExAlreadyExists:
		return Errorf(ExAlreadyExists, "An alias with the name %s already exists.", s.aliasARN(name))
	case ExNotFound:
		return Errorf(ExNotFound, "Alias %s is not found.", s.aliasARN(name))
	}
	return err
}

// aliasedKey returns the key an existing alias names, checking the caller
// may manage it.
func (s *Service) aliasedKey(ctx context.Context, c Caller, action, name string) (*keystore.Key, error) {
	if err := validAlias(name); err != nil {
		return nil, err
	}
	a, err := s.Store.Alias(name)
	if err != nil {
		return nil, Errorf(ExNotFound, "Alias %s is not found.", s.aliasARN(name))
	}
	k, err := s.Store.Key(a.KeyID)
	if err != nil {
		return nil, err
	}
	return k, s.authorize(ctx, c, action, k)
}

func (s *Service) updateAlias(ctx context.Context, c Caller, req *aliasRequest) (*empty, error) {
	old, err := s.aliasedKey(ctx, c, "UpdateAlias", req.AliasName)
	if err != nil {
		return nil, err
	}
	k, err := s.aliasTarget(ctx, c, "UpdateAlias", req.TargetKeyId)
	if err != nil {
		return nil, err
	}
	if keyType(old.Spec) != keyType(k.Spec) || old.Usage != k.Usage {
		return nil, Errorf(ExValidation, "The new key must be of the same type (%s) and key usage (%s) as the alias's current key.", keyType(old.Spec), old.Usage)
	}
	if err := s.Store.Apply(&keystore.UpdateAlias{Name: req.AliasName, KeyID: k.ID, At: s.now().UTC()}); err != nil {
		return nil, aliasError(s, req.AliasName, err)
	}
	return &empty{}, nil
}

// keyType is AWS's grouping for UpdateAlias: symmetric, asymmetric or HMAC.
func keyType(spec string) string {
	switch {
	case spec == symmetricDefault:
		return "symmetric"
	case strings.HasPrefix(spec, "HMAC_"):
		return "HMAC"
	}
	return "asymmetric"
}

func (s *Service) deleteAlias(ctx context.Context, c Caller, req *aliasRequest) (*empty, error) {
	if _, err := s.aliasedKey(ctx, c, "DeleteAlias", req.AliasName); err != nil {
		return nil, err
	}
	if err := s.Store.Apply(&keystore.DeleteAlias{Name: req.AliasName}); err != nil {
		return nil, aliasError(s, req.AliasName, err)
	}
	return &empty{}, nil
}

func (s *Service) listAliases(ctx context.Context, c Caller, req *listRequest) (*listAliasesResponse, error) {
	limit, err := limitOf(req.Limit)
	if err != nil {
		return nil, err
	}
	keyID := ""
	if req.KeyId != "" {
		k, err := s.resolve(ctx, req.KeyId)
		if err != nil {
			return nil, err
		}
		if err := s.authorize(ctx, c, "ListAliases", k); err != nil {
			return nil, err
		}
		keyID = k.ID
	}
	see := s.visible(ctx, c)
	filter := func(a *keystore.Alias) bool {
		k, err := s.Store.Key(a.KeyID)
		return err == nil && see(k)
	}
	aliases, more := s.Store.Aliases(keyID, req.Marker, limit, filter)
	out := &listAliasesResponse{Aliases: make([]aliasEntry, len(aliases)), Truncated: more}
	for i, a := range aliases {
		out.Aliases[i] = aliasEntry{AliasName: a.Name, AliasArn: s.aliasARN(a.Name), TargetKeyId: a.KeyID,
			CreationDate: Epoch(a.CreatedAt), LastUpdatedDate: Epoch(a.UpdatedAt)}
	}
	if more {
		out.NextMarker = aliases[len(aliases)-1].Name
	}
	return out, nil
}

// validTags checks tags as AWS does and returns them as a map.
func validTags(tags []Tag) (map[string]string, error) {
	if len(tags) == 0 {
		return nil, nil
	}
	if len(tags) > keystore.MaxTags {
		return nil, Errorf(ExTag, "At most %d tags are allowed.", keystore.MaxTags)
	}
	out := make(map[string]string, len(tags))
	for _, t := range tags {
		switch {
		case t.TagKey == "" || utf8.RuneCountInString(t.TagKey) > 128:
			return nil, Errorf(ExTag, "TagKey must be 1 to 128 characters.")
		case utf8.RuneCountInString(t.TagValue) > 256:
			return nil, Errorf(ExTag, "TagValue must be at most 256 characters.")
		case strings.HasPrefix(strings.ToLower(t.TagKey), "aws:"):
			return nil, Errorf(ExTag, "Tag keys beginning with aws: are reserved.")
		}
		out[t.TagKey] = t.TagValue
	}
	return out, nil
}

func (s *Service) tagResource(ctx context.Context, c Caller, req *tagResourceRequest) (*empty, error) {
	tags, err := validTags(req.Tags)
	if err != nil {
		return nil, err
	}
	if len(tags) == 0 {
		return nil, Errorf(ExValidation, "Tags is required.")
	}
	k, err := s.authorized(ctx, c, "TagResource", req.KeyId)
	if err != nil {
		return nil, err
	}
	if k.Managed() {
		return nil, managedRefusal(s, k, "its tags can't be changed")
	}
	if err := s.Store.Apply(&keystore.TagKey{KeyID: k.ID, Tags: tags}); err != nil {
		return nil, tagError(err)
	}
	return &empty{}, nil
}

func tagError(err error) error {
	if api := toAPI(err); api.Type == ExValidation {
		return Errorf(ExTag, "%s", api.Message)
	}
	return err
}

func (s *Service) untagResource(ctx context.Context, c Caller, req *untagResourceRequest) (*empty, error) {
	if len(req.TagKeys) == 0 {
		return nil, Errorf(ExValidation, "TagKeys is required.")
	}
	k, err := s.authorized(ctx, c, "UntagResource", req.KeyId)
	if err != nil {
		return nil, err
	}
	if k.Managed() {
		return nil, managedRefusal(s, k, "its tags can't be changed")
	}
	if err := s.Store.Apply(&keystore.UntagKey{KeyID: k.ID, TagKeys: req.TagKeys}); err != nil {
		return nil, err
	}
	return &empty{}, nil
}

func (s *Service) listResourceTags(ctx context.Context, c Caller, req *listRequest) (*listTagsResponse, error) {
	limit, err := limitOf(req.Limit)
	if err != nil {
		return nil, err
	}
	if req.Limit != nil && limit > 50 {
		limit = 50 // AWS caps this list at 50
	}
	k, err := s.authorized(ctx, c, "ListResourceTags", req.KeyId)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(k.Tags))
	for n := range k.Tags {
		if n > req.Marker {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	out := &listTagsResponse{Tags: []Tag{}}
	if len(names) > limit {
		names, out.Truncated = names[:limit], true
		out.NextMarker = names[limit-1]
	}
	for _, n := range names {
		out.Tags = append(out.Tags, Tag{TagKey: n, TagValue: k.Tags[n]})
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
