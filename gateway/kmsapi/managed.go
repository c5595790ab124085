package kmsapi

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/hsmpool"
)

// Service-managed keys
//
// An integrated service (a principal declared with a Service name, see
// docs/access-control.md) gets its own key, alias/managed/<service>,
// created the first time that service's principal names it. Its policy
// lets anyone use it only through that service (kms:ViaService), lets the
// account's administrators read its metadata and policy, and nobody
// change it: users can't re-policy, disable, tag, describe-edit, alias or
// delete it. It rotates every year. This is what AWS calls an AWS managed
// key (alias/aws/<service>); DescribeKey reports KeyManager AWS.

// ManagedAliasPrefix starts the alias of every service-managed key.
const ManagedAliasPrefix = "alias/managed/"

// ManagedRotationDays is how often service-managed keys rotate (AWS
// rotates its managed keys yearly).
const ManagedRotationDays = 365

// managedAlias returns the alias of the service-managed key ref names,
// creating the key when the caller is that service. Any other case is the
// usual alias-not-found error.
func (s *Service) managedAlias(ctx context.Context, ref string) (*keystore.Alias, error) {
	notFound := Errorf(ExNotFound, "Alias %s is not found.", s.aliasARN(truncate(ref, 256)))
	service, ok := strings.CutPrefix(ref, ManagedAliasPrefix)
	c := reqOf(ctx).caller
	if !ok || c == nil || c.Service == "" || c.Service != service {
		return nil, notFound
	}
	s.managed.Lock()
	defer s.managed.Unlock()
	if a, err := s.Store.Alias(ref); err == nil {
		return a, nil // another request made it first
	}
	gen, err := s.Pool.GenerateKey(ctx, hsmpool.AES256, hsmpool.UsageEncrypt)
	if err != nil {
		return nil, err
	}
	now := s.now().UTC()
	k := keystore.Key{
		ID: newKeyID(), CreatedAt: now, State: keystore.StateEnabled,
		Description: fmt.Sprintf("Default key that protects my %s data when no other key is defined", service),
		Spec:        symmetricDefault, Usage: UsageEncryptDecrypt, Origin: "AWS_KMS", KeyManager: keystore.KeyManagerAWS,
		Policy:             s.managedPolicy(service),
		RotationPeriodDays: ManagedRotationDays, NextRotation: now.AddDate(0, 0, ManagedRotationDays),
		Versions: []keystore.Version{{Number: 1, CreatedAt: now, Blob: gen.Blob, Public: gen.Public}},
	}
	if err := s.Store.Apply(&keystore.CreateKey{Key: k}); err != nil {
		return nil, err
	}
	a := keystore.Alias{Name: ref, KeyID: k.ID, CreatedAt: now, UpdatedAt: now}
	if err := s.Store.Apply(&keystore.CreateAlias{Alias: a}); err != nil {
		return nil, err
	}
	if s.Log != nil {
		s.Log.Info("created service-managed key", "alias", ref, "key_id", k.ID, "service", service)
	}
	return &a, nil
}

// managedPolicy is the fixed policy of a service's managed key.
func (s *Service) managedPolicy(service string) string {
	doc := map[string]any{
		"Version": "2012-10-17",
		"Id":      "auto-" + service,
		"Statement": []any{
			map[string]any{
				"Sid":       "Allow access through " + service + " for all principals in the account that are authorized to use " + service,
				"Effect":    "Allow",
				"Principal": map[string]any{"AWS": "*"},
				"Action":    []string{"kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:CreateGrant", "kms:DescribeKey"},
				"Resource":  "*",
				"Condition": map[string]any{"StringEquals": map[string]string{
					"kms:CallerAccount": s.Account,
					"kms:ViaService":    s.viaService(service),
				}},
			},
			map[string]any{
				"Sid":       "Allow direct access to key metadata to the account",
				"Effect":    "Allow",
				"Principal": map[string]any{"AWS": "arn:aws:iam::" + s.Account + ":root"},
				"Action":    []string{"kms:Describe*", "kms:Get*", "kms:List*", "kms:RevokeGrant"},
				"Resource":  "*",
			},
		},
	}
	b, _ := json.MarshalIndent(doc, "", "  ")
	return string(b)
}

// rotate adds a version to k (see rotateLocked, which callers use).
func (s *Service) rotate(ctx context.Context, k *keystore.Key, typ string, next time.Time) (uint32, error) {
	info, ok := specs[k.Spec]
	if !ok {
		return 0, fmt.Errorf("key spec %s can't rotate", k.Spec)
	}
	gen, err := s.Pool.GenerateKey(ctx, info.pool, poolUsage[k.Usage])
	if err != nil {
		return 0, err
	}
	now := s.now().UTC()
	v := keystore.Version{Number: uint32(len(k.Versions)) + 1, CreatedAt: now, Blob: gen.Blob, Public: gen.Public, RotationType: typ}
	if err := s.Store.Apply(&keystore.AddKeyVersion{KeyID: k.ID, Version: v, NextRotation: next}); err != nil {
		return 0, err
	}
	if s.Log != nil {
		s.Log.Info("rotated key", "key_id", k.ID, "version", v.Number, "type", typ)
	}
	return v.Number, nil
}
