package gateway

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/gateway/sigv4"
	"github.com/hsmgate/hsmgate/hsmpool"
	"github.com/hsmgate/hsmgate/internal/pki"
)

// Identities manages principals and their SigV4 access keys.
//
// An access key's secret is shown once, when it is created. The keystore
// keeps it only encrypted, in the HSM, under the gateway's secrets key (an
// AES-256 key of the pool, itself wrapped under the domain key). The
// gateway decrypts a secret on first use and keeps it in memory for SigV4
// verification, as any SigV4 server must.
type Identities struct {
	Pool  *hsmpool.Pool
	Store *keystore.Store
	Now   func() time.Time

	mu      sync.Mutex
	secrets map[string]string // access key id -> secret, for verification
	key     *hsmpool.Key      // the secrets key, once loaded

	pmu sync.Mutex // one change of a principal's tags at a time
}

const metaSecretsKey = "secrets-key"

// storedKey is how the gateway keeps its own pool keys in the keystore's
// meta bucket.
type storedKey struct {
	Blob   []byte `json:"blob"`
	Public []byte `json:"public,omitempty"`
}

// LoadOrCreateKey returns the gateway-internal pool key stored under name
// in the keystore, generating it in the HSM on first use.
func LoadOrCreateKey(ctx context.Context, pool *hsmpool.Pool, store *keystore.Store, name string, spec hsmpool.KeySpec, usage hsmpool.Usage) (*hsmpool.Key, error) {
	raw, err := store.Meta(name)
	if err != nil {
		return nil, err
	}
	var sk storedKey
	if raw == nil {
		g, err := pool.GenerateKey(ctx, spec, usage)
		if err != nil {
			return nil, fmt.Errorf("generate %s: %w", name, err)
		}
		sk = storedKey{Blob: g.Blob, Public: g.Public}
		b, _ := json.Marshal(sk)
		if err := store.Apply(&keystore.SetMeta{Name: name, Value: b}); err != nil {
			return nil, err
		}
	} else if err := json.Unmarshal(raw, &sk); err != nil {
		return nil, fmt.Errorf("stored key %s: %w", name, err)
	}
	return hsmpool.NewKey("hsmgate:"+name, 1, sk.Blob, sk.Public)
}

func (id *Identities) secretsKey(ctx context.Context) (*hsmpool.Key, error) {
	id.mu.Lock()
	defer id.mu.Unlock()
	if id.key != nil {
		return id.key, nil
	}
	k, err := LoadOrCreateKey(ctx, id.Pool, id.Store, metaSecretsKey, hsmpool.AES256, hsmpool.UsageEncrypt)
	if err != nil {
		return nil, err
	}
	id.key = k
	return k, nil
}

func secretAAD(akid string) []byte { return []byte("hsmgate sigv4 secret v1 " + akid) }

// PrincipalSpec describes a principal to create.
type PrincipalSpec struct {
	Name  string
	Admin bool
	// Kind is "user" (the default when empty) or "role": the resource type
	// of the principal's ARN, arn:aws:iam::<account>:<kind>/<name>.
	Kind string
	// Service, when set, makes the principal the integrated service of that
	// name (a lowercase DNS label such as "storage").
	Service string
	// Tags are the principal's tags, for aws:PrincipalTag/<key> conditions.
	Tags map[string]string
}

// Limits on principal tags, as IAM's.
const (
	MaxPrincipalTags      = 50
	MaxPrincipalTagKey    = 128
	MaxPrincipalTagValue  = 256
	maxServiceNameLen     = 63
	reservedTagKeyPrefix  = "aws:"
	principalTagCharsDesc = "letters, digits, spaces and _ . : / = + - @"
)

// CreatePrincipal adds a principal. Names use the IAM user-name alphabet
// (pki.ValidPrincipalName), so that any principal can be given a client
// certificate.
func (id *Identities) CreatePrincipal(spec PrincipalSpec) error {
	if err := pki.ValidPrincipalName(spec.Name); err != nil {
		return fmt.Errorf("%w: %v", keystore.ErrInvalid, err)
	}
	if isXKSPrincipal(spec.Name) {
		return fmt.Errorf("%w: principal names beginning with %q are reserved for external key stores' credentials", keystore.ErrInvalid, XKSPrincipalPrefix)
	}
	kind, err := validKind(spec.Kind)
	if err != nil {
		return err
	}
	if err := ValidServiceName(spec.Service); err != nil {
		return err
	}
	tags, err := mergeTags(nil, spec.Tags)
	if err != nil {
		return err
	}
	return id.Store.Apply(&keystore.CreatePrincipal{Principal: keystore.Principal{
		Name: spec.Name, Admin: spec.Admin, Kind: kind, Service: spec.Service, Tags: tags, CreatedAt: id.now(),
	}})
}

// SetPrincipalTags adds tags to a principal, replacing the value of a tag
// it already has. Tag keys are compared without regard to case (as
// aws:PrincipalTag conditions compare them): "Team" replaces "team".
func (id *Identities) SetPrincipalTags(name string, tags map[string]string) error {
	id.pmu.Lock()
	defer id.pmu.Unlock()
	p, err := id.Store.Principal(name)
	if err != nil {
		return err
	}
	merged, err := mergeTags(p.Tags, tags)
	if err != nil {
		return err
	}
	return id.Store.Apply(&keystore.SetPrincipal{Name: p.Name, Kind: p.Kind, Service: p.Service, Tags: merged})
}

// UntagPrincipal removes tags from a principal; keys it doesn't have are
// ignored. Keys are compared without regard to case.
func (id *Identities) UntagPrincipal(name string, keys []string) error {
	id.pmu.Lock()
	defer id.pmu.Unlock()
	p, err := id.Store.Principal(name)
	if err != nil {
		return err
	}
	if len(keys) == 0 {
		return fmt.Errorf("%w: no tag keys to remove", keystore.ErrInvalid)
	}
	tags := maps.Clone(p.Tags)
	for _, k := range keys {
		if err := validTagKey(k); err != nil {
			return err
		}
		for have := range tags {
			if strings.EqualFold(have, k) {
				delete(tags, have)
			}
		}
	}
	if len(tags) == 0 {
		tags = nil
	}
	return id.Store.Apply(&keystore.SetPrincipal{Name: p.Name, Kind: p.Kind, Service: p.Service, Tags: tags})
}

func validKind(kind string) (string, error) {
	switch kind {
	case "", keystore.KindUser:
		return keystore.KindUser, nil
	case keystore.KindRole:
		return kind, nil
	}
	return "", fmt.Errorf("%w: principal kind %q: it must be %s or %s", keystore.ErrInvalid, kind, keystore.KindUser, keystore.KindRole)
}

// ValidServiceName checks the name of an integrated service a principal
// may be: a lowercase DNS label (1 to 63 of a-z, 0-9 and '-', neither
// first nor last a '-'). The empty name (no service) is valid.
func ValidServiceName(s string) error {
	if s == "" {
		return nil
	}
	ok := len(s) <= maxServiceNameLen && s[0] != '-' && s[len(s)-1] != '-'
	for i := 0; ok && i < len(s); i++ {
		c := s[i]
		ok = c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-'
	}
	if !ok {
		return fmt.Errorf("%w: service name %q: it must be a lowercase DNS label: 1 to %d of a-z, 0-9 and '-', not starting or ending with '-'",
			keystore.ErrInvalid, truncateRunes(s, 64), maxServiceNameLen)
	}
	return nil
}

// mergeTags returns have with add's tags set (a key equal to one of have's
// without regard to case replaces it), checking add and the result.
func mergeTags(have, add map[string]string) (map[string]string, error) {
	out := maps.Clone(have)
	seen := make(map[string]string, len(add))
	for k, v := range add {
		if err := validTagKey(k); err != nil {
			return nil, err
		}
		if err := validTagValue(k, v); err != nil {
			return nil, err
		}
		lk := strings.ToLower(k)
		if other, dup := seen[lk]; dup {
			return nil, fmt.Errorf("%w: tag keys %q and %q differ only in case", keystore.ErrInvalid, other, k)
		}
		seen[lk] = k
		for h := range out {
			if strings.EqualFold(h, k) {
				delete(out, h)
			}
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	if len(out) > MaxPrincipalTags {
		return nil, fmt.Errorf("%w: a principal may have at most %d tags; this would give it %d", keystore.ErrInvalid, MaxPrincipalTags, len(out))
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

func validTagKey(k string) error {
	switch n := utf8.RuneCountInString(k); {
	case n < 1 || n > MaxPrincipalTagKey:
		return fmt.Errorf("%w: tag key %q: it must be 1 to %d characters", keystore.ErrInvalid, truncateRunes(k, 64), MaxPrincipalTagKey)
	case len(k) >= len(reservedTagKeyPrefix) && strings.EqualFold(k[:len(reservedTagKeyPrefix)], reservedTagKeyPrefix):
		return fmt.Errorf("%w: tag key %q: keys starting with %q are reserved", keystore.ErrInvalid, truncateRunes(k, 64), reservedTagKeyPrefix)
	case !validTagChars(k):
		return fmt.Errorf("%w: tag key %q: it may hold only %s", keystore.ErrInvalid, truncateRunes(k, 64), principalTagCharsDesc)
	}
	return nil
}

func validTagValue(k, v string) error {
	if utf8.RuneCountInString(v) > MaxPrincipalTagValue {
		return fmt.Errorf("%w: the value of tag %q is longer than %d characters", keystore.ErrInvalid, k, MaxPrincipalTagValue)
	}
	if !validTagChars(v) {
		return fmt.Errorf("%w: the value of tag %q may hold only %s", keystore.ErrInvalid, k, principalTagCharsDesc)
	}
	return nil
}

// validTagChars reports whether s holds only what IAM allows in tags:
// Unicode letters, digits and spaces, and _ . : / = + - @.
func validTagChars(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !(unicode.IsLetter(r) || unicode.IsDigit(r) || r == ' ' || strings.ContainsRune("_.:/=+-@", r)) {
			return false
		}
	}
	return true
}

func truncateRunes(s string, n int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\ufffd")
	}
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "…"
}

func (id *Identities) now() time.Time {
	if id.Now != nil {
		return id.Now().UTC()
	}
	return time.Now().UTC()
}

// MaxActiveAccessKeys is how many unrevoked access keys a principal may
// have: two, so that a key can be rotated without downtime.
const MaxActiveAccessKeys = 2

// CreateAccessKey issues a new SigV4 access key for a principal and returns
// its id and secret. The secret is not stored anywhere in plaintext and
// can't be shown again.
func (id *Identities) CreateAccessKey(ctx context.Context, principal string) (akid, secret string, err error) {
	if p, err := id.Store.Principal(principal); err != nil {
		return "", "", err
	} else if p.XKSStore != "" {
		return "", "", fmt.Errorf("%w: %s holds external key store %s's credentials: create them with CreateXKSCredential", keystore.ErrInvalid, principal, p.XKSStore)
	}
	if active := id.activeAccessKeys(principal); active >= MaxActiveAccessKeys {
		return "", "", fmt.Errorf("principal %s already has %d active access keys; revoke one first: %w", principal, active, keystore.ErrInvalid)
	}
	var raw [10 + 30]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", "", err
	}
	akid = "AKIA" + base32.StdEncoding.EncodeToString(raw[:10]) // 16 characters of A-Z2-7, as AWS's
	secret = base64.StdEncoding.EncodeToString(raw[10:])        // 40 characters
	clear(raw[:])
	if err := id.storeSecret(ctx, principal, akid, secret); err != nil {
		return "", "", err
	}
	return akid, secret, nil
}

// storeSecret encrypts an access key's secret in the HSM and records the
// access key.
func (id *Identities) storeSecret(ctx context.Context, principal, akid, secret string) error {
	k, err := id.secretsKey(ctx)
	if err != nil {
		return err
	}
	iv, sealed, err := id.Pool.EncryptGCM(ctx, k, []byte(secret), secretAAD(akid))
	if err != nil {
		return err
	}
	return id.Store.Apply(&keystore.CreateAccessKey{AccessKey: keystore.AccessKey{
		ID: akid, Principal: principal, SecretBlob: append(iv, sealed...), CreatedAt: id.now(),
	}})
}

// activeAccessKeys counts a principal's unrevoked access keys.
func (id *Identities) activeAccessKeys(principal string) int {
	n := 0
	for _, a := range id.Store.AccessKeysOf(principal) {
		if !a.Revoked {
			n++
		}
	}
	return n
}

// RevokeAccessKey disables an access key at once and for good.
func (id *Identities) RevokeAccessKey(akid string) error {
	if err := id.Store.Apply(&keystore.RevokeAccessKey{ID: akid}); err != nil {
		return err
	}
	id.mu.Lock()
	delete(id.secrets, akid)
	id.mu.Unlock()
	return nil
}

// forget drops access keys' secrets from the verification cache (Lookup
// refuses revoked keys anyway).
func (id *Identities) forget(akids ...string) {
	id.mu.Lock()
	for _, akid := range akids {
		delete(id.secrets, akid)
	}
	id.mu.Unlock()
}

// Lookup finds the credentials of an access key for SigV4 verification.
func (id *Identities) Lookup(ctx context.Context, akid string) (sigv4.Credentials, error) {
	ak, err := id.Store.AccessKey(akid)
	if err != nil || ak.Revoked {
		id.mu.Lock()
		delete(id.secrets, akid)
		id.mu.Unlock()
		return sigv4.Credentials{}, sigv4.ErrUnknownAccessKey
	}
	id.mu.Lock()
	secret, ok := id.secrets[akid]
	id.mu.Unlock()
	if !ok {
		if secret, err = id.decryptSecret(ctx, ak); err != nil {
			return sigv4.Credentials{}, err
		}
		id.mu.Lock()
		if id.secrets == nil {
			id.secrets = map[string]string{}
		}
		id.secrets[akid] = secret
		id.mu.Unlock()
	}
	return sigv4.Credentials{AccessKeyID: akid, Secret: secret, Principal: ak.Principal}, nil
}

func (id *Identities) decryptSecret(ctx context.Context, ak *keystore.AccessKey) (string, error) {
	k, err := id.secretsKey(ctx)
	if err != nil {
		return "", err
	}
	if len(ak.SecretBlob) < 12+16 {
		return "", errors.New("stored access key secret is malformed")
	}
	pt, err := id.Pool.DecryptGCM(ctx, k, ak.SecretBlob[:12], ak.SecretBlob[12:], secretAAD(ak.ID))
	if err != nil {
		return "", fmt.Errorf("decrypt access key secret: %w", err)
	}
	return string(pt), nil
}
