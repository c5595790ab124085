// Package kmsapi implements the AWS KMS JSON 1.1 protocol's operations on
// the keystore and the HSM pool. It is transport-free: the gateway's HTTP
// server authenticates a request, then hands its target and body to
// [Service.Do] and writes back what it returns. See docs/api-compatibility.md
// for the operations and key specs served, and the deviations from AWS.
package kmsapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/hsmpool"
)

// TargetPrefix is the X-Amz-Target prefix of AWS KMS operations.
const TargetPrefix = "TrentService."

// Service serves KMS operations. Its fields are set once before use.
type Service struct {
	Pool    *hsmpool.Pool
	Store   *keystore.Store
	Region  string // for ARNs, e.g. "us-east-1"
	Account string // 12-digit account id for ARNs
	Log     *slog.Logger
	Now     func() time.Time // nil means time.Now

	// GCMLimit and GCMReserve override DefaultGCMLimit and
	// DefaultGCMReserve (for tests).
	GCMLimit, GCMReserve uint64
	// OnRotation, when set, is told of every rotation (scheduled, forced
	// by the GCM limit, or on demand), for the audit log.
	OnRotation func(context.Context, RotationEvent)

	keys      sync.Map // keyVersion -> *hsmpool.Key, parsed blobs
	gcm       sync.Map // keyVersion -> *gcmBudget
	rotations rotationLocks
	arns      sync.Map // key id -> key ARN
	policies  policyCache
	managed   sync.Mutex // serialises the creation of service-managed keys
	grantMu   sync.Mutex // serialises CreateGrant's idempotency check and write
}

type keyVersion struct {
	id      string
	version uint32
}

type handler func(s *Service, ctx context.Context, c Caller, body []byte) (any, error)

// op adapts a typed operation to the dispatcher: it decodes the request
// body into Req.
func op[Req any, Resp any](f func(s *Service, ctx context.Context, c Caller, req *Req) (*Resp, error)) handler {
	return func(s *Service, ctx context.Context, c Caller, body []byte) (any, error) {
		var req Req
		if len(bytes.TrimSpace(body)) > 0 {
			if err := json.Unmarshal(body, &req); err != nil {
				return nil, serializationError(err)
			}
		}
		if t, ok := any(&req).(interface{ tokens() []string }); ok {
			if err := validGrantTokens(t.tokens()); err != nil {
				return nil, err
			}
			reqOf(ctx).grantTokens = t.tokens()
		}
		return f(s, ctx, c, &req)
	}
}

func serializationError(err error) *Error {
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &typeErr):
		return Errorf(ExSerialization, "Cannot deserialize the value of field %q: expected %s.", typeErr.Field, typeErr.Type)
	case errors.Is(err, errBadTimestamp):
		return Errorf(ExSerialization, "A timestamp is not a number of seconds.")
	}
	// Go's messages for bad base64 and bad JSON name positions, not content.
	return Errorf(ExSerialization, "The request body is not valid JSON for this operation: %s.", strings.TrimPrefix(err.Error(), "json: "))
}

var errBadTimestamp = errors.New("bad timestamp")

var operations = map[string]handler{
	"CreateKey":                           op((*Service).createKey),
	"DescribeKey":                         op((*Service).describeKey),
	"ListKeys":                            op((*Service).listKeys),
	"EnableKey":                           op((*Service).enableKey),
	"DisableKey":                          op((*Service).disableKey),
	"UpdateKeyDescription":                op((*Service).updateKeyDescription),
	"CreateAlias":                         op((*Service).createAlias),
	"UpdateAlias":                         op((*Service).updateAlias),
	"DeleteAlias":                         op((*Service).deleteAlias),
	"ListAliases":                         op((*Service).listAliases),
	"TagResource":                         op((*Service).tagResource),
	"UntagResource":                       op((*Service).untagResource),
	"ListResourceTags":                    op((*Service).listResourceTags),
	"Encrypt":                             op((*Service).encrypt),
	"Decrypt":                             op((*Service).decrypt),
	"ReEncrypt":                           op((*Service).reEncrypt),
	"GenerateDataKey":                     op((*Service).generateDataKey),
	"GenerateDataKeyWithoutPlaintext":     op((*Service).generateDataKeyWithoutPlaintext),
	"GenerateMac":                         op((*Service).generateMac),
	"VerifyMac":                           op((*Service).verifyMac),
	"Sign":                                op((*Service).sign),
	"Verify":                              op((*Service).verify),
	"GetPublicKey":                        op((*Service).getPublicKey),
	"GenerateRandom":                      op((*Service).generateRandom),
	"GenerateDataKeyPair":                 op((*Service).generateDataKeyPair),
	"GenerateDataKeyPairWithoutPlaintext": op((*Service).generateDataKeyPairWithoutPlaintext),
	"DeriveSharedSecret":                  op((*Service).deriveSharedSecret),
	"GetParametersForImport":              op((*Service).getParametersForImport),
	"ImportKeyMaterial":                   op((*Service).importKeyMaterial),
	"DeleteImportedKeyMaterial":           op((*Service).deleteImportedKeyMaterial),
	"EnableKeyRotation":                   op((*Service).enableKeyRotation),
	"DisableKeyRotation":                  op((*Service).disableKeyRotation),
	"GetKeyRotationStatus":                op((*Service).getKeyRotationStatus),
	"RotateKeyOnDemand":                   op((*Service).rotateKeyOnDemand),
	"ListKeyRotations":                    op((*Service).listKeyRotations),
	"ScheduleKeyDeletion":                 op((*Service).scheduleKeyDeletion),
	"CancelKeyDeletion":                   op((*Service).cancelKeyDeletion),
	"GetKeyPolicy":                        op((*Service).getKeyPolicy),
	"PutKeyPolicy":                        op((*Service).putKeyPolicy),
	"ListKeyPolicies":                     op((*Service).listKeyPolicies),
	"CreateGrant":                         op((*Service).createGrant),
	"ListGrants":                          op((*Service).listGrants),
	"ListRetirableGrants":                 op((*Service).listRetirableGrants),
	"RetireGrant":                         op((*Service).retireGrant),
	"RevokeGrant":                         op((*Service).revokeGrant),
}

// Operations lists the operation names served, sorted, for documentation
// and metrics.
func Operations() []string {
	out := make([]string, 0, len(operations))
	for name := range operations {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// OperationName returns the operation an X-Amz-Target names, or "" when it
// is not one this service serves.
func OperationName(target string) string {
	name, ok := strings.CutPrefix(target, TargetPrefix)
	if !ok {
		return ""
	}
	if _, ok := operations[name]; !ok {
		return ""
	}
	return name
}

// Info is what an operation tells the audit log about itself: the key it
// used (the first one it resolved), the version, and the encryption
// context. Never plaintext, ciphertext or key material.
type Info struct {
	KeyID             string
	KeyARN            string
	KeyVersion        uint32
	EncryptionContext map[string]string
	GrantID           string // the grant that allowed the request, if one did
}

func infoOf(ctx context.Context) *Info { return reqOf(ctx).info }

// noteKey records the first key an operation resolves.
func (s *Service) noteKey(ctx context.Context, k *keystore.Key) {
	if info := infoOf(ctx); info != nil && info.KeyID == "" {
		info.KeyID, info.KeyARN = k.ID, s.KeyARN(k.ID)
	}
}

func noteVersion(ctx context.Context, v uint32) {
	if info := infoOf(ctx); info != nil && info.KeyVersion == 0 {
		info.KeyVersion = v
	}
}

// noteContext records the request's encryption context for the audit log
// and for the authorization that follows.
func noteContext(ctx context.Context, ec map[string]string) {
	setContext(ctx, ec)
	if info := infoOf(ctx); info != nil && info.EncryptionContext == nil && len(ec) > 0 {
		info.EncryptionContext = ec
	}
}

// Do runs the operation named by an X-Amz-Target header with a JSON body
// and returns the JSON response, or an error in the protocol's shape. When
// info is not nil the operation fills it in for the audit log.
func (s *Service) Do(ctx context.Context, c Caller, target string, body []byte, info *Info) ([]byte, *Error) {
	c.arn = s.callerARN(&c)
	ctx = context.WithValue(ctx, requestKey{}, &request{info: info, caller: &c})
	name, ok := strings.CutPrefix(target, TargetPrefix)
	h := operations[name]
	if !ok || h == nil {
		return nil, Errorf(ExUnknownOperation, "Operation %q is not served.", truncate(target, 64))
	}
	resp, err := h(s, ctx, c, body)
	if err != nil {
		return nil, toAPI(err)
	}
	out, err := json.Marshal(resp)
	if err != nil {
		return nil, Errorf(ExInternal, "Internal error.")
	}
	return out, nil
}

// catchUpWait bounds how long a miss waits for a clustered keystore to
// catch up with its leader.
const catchUpWait = 2 * time.Second

// catchUp, on a clustered keystore, waits until this node holds every
// change the cluster committed, so that a key made through another node a
// moment ago is found; it reports whether looking again may help.
func (s *Service) catchUp(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, catchUpWait)
	defer cancel()
	return s.Store.CatchUp(ctx)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// KeyARN and friends build the ARNs AWS clients expect. Key ARNs are
// asked for several times per request, so they are kept.
func (s *Service) KeyARN(id string) string {
	if a, ok := s.arns.Load(id); ok {
		return a.(string)
	}
	a := "arn:aws:kms:" + s.Region + ":" + s.Account + ":key/" + id
	if len(id) == 36 { // a key id, not arbitrary input
		s.arns.Store(id, a)
	}
	return a
}

func (s *Service) aliasARN(name string) string {
	return "arn:aws:kms:" + s.Region + ":" + s.Account + ":" + name
}

// resolve finds the key a KeyId names: a key id, a key ARN, an alias name
// or an alias ARN, as AWS KMS accepts.
func (s *Service) resolve(ctx context.Context, keyID string) (*keystore.Key, error) {
	if keyID == "" {
		return nil, Errorf(ExValidation, "KeyId is required.")
	}
	ref := keyID
	if rest, ok := strings.CutPrefix(ref, "arn:"); ok {
		parts := strings.SplitN(rest, ":", 5) // partition, service, region, account, resource
		if len(parts) != 5 || parts[1] != "kms" {
			return nil, Errorf(ExNotFound, "Invalid keyId %s.", truncate(keyID, 300))
		}
		if parts[2] != s.Region || parts[3] != s.Account {
			return nil, Errorf(ExNotFound, "Key '%s' does not exist.", truncate(keyID, 300))
		}
		ref = parts[4]
		if id, ok := strings.CutPrefix(ref, "key/"); ok {
			ref = id
		} else if !strings.HasPrefix(ref, "alias/") {
			return nil, Errorf(ExNotFound, "Invalid keyId %s.", truncate(keyID, 300))
		}
	}
	if strings.HasPrefix(ref, "alias/") {
		a, err := s.Store.Alias(ref)
		if err != nil && s.catchUp(ctx) {
			a, err = s.Store.Alias(ref)
		}
		if err != nil {
			if a, err = s.managedAlias(ctx, ref); err != nil {
				return nil, err
			}
		}
		reqOf(ctx).alias = ref
		ref = a.KeyID
	}
	k, err := s.Store.Key(ref)
	if err != nil && s.catchUp(ctx) {
		k, err = s.Store.Key(ref)
	}
	if err != nil {
		return nil, Errorf(ExNotFound, "Key '%s' does not exist.", s.KeyARN(truncate(ref, 64)))
	}
	s.noteKey(ctx, k)
	return k, nil
}

// usable resolves a key for a cryptographic operation: found, allowed,
// enabled, and of the usage the operation needs.
func (s *Service) usable(ctx context.Context, c Caller, action, keyID, usage string) (*keystore.Key, error) {
	k, err := s.resolve(ctx, keyID)
	if err != nil {
		return nil, err
	}
	if err := s.authorize(ctx, c, action, k); err != nil {
		return nil, err
	}
	switch k.State {
	case keystore.StateEnabled:
	case keystore.StateDisabled:
		return nil, Errorf(ExDisabled, "%s is disabled.", s.KeyARN(k.ID))
	default:
		return nil, Errorf(ExInvalidState, "%s is %s.", s.KeyARN(k.ID), pendingWord(k.State))
	}
	if usage != "" && k.Usage != usage {
		return nil, Errorf(ExInvalidKeyUsage, "%s key usage is %s which is not valid for %s.", s.KeyARN(k.ID), k.Usage, action)
	}
	return k, nil
}

func pendingWord(state string) string {
	switch state {
	case keystore.StatePendingDeletion:
		return "pending deletion"
	case keystore.StatePendingImport:
		return "pending import"
	}
	return state
}

// PoolKey returns the parsed pool key for a version of k, the same
// *hsmpool.Key every time (so the pool's per-slot key cache is hit).
func (s *Service) PoolKey(k *keystore.Key, v *keystore.Version) (*hsmpool.Key, error) {
	kv := keyVersion{k.ID, v.Number}
	if pk, ok := s.keys.Load(kv); ok {
		return pk.(*hsmpool.Key), nil
	}
	pk, err := hsmpool.NewKey(k.ID, v.Number, v.Blob, v.Public)
	if err != nil {
		return nil, fmt.Errorf("load key %s v%d: %w", k.ID, v.Number, err)
	}
	s.keys.Store(kv, pk)
	return pk, nil
}
