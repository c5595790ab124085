package gateway

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

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

// CreatePrincipal adds a principal. Names use the IAM user-name alphabet
// (pki.ValidPrincipalName), so that any principal can be given a client
// certificate.
func (id *Identities) CreatePrincipal(name string, admin bool) error {
	if err := pki.ValidPrincipalName(name); err != nil {
		return fmt.Errorf("%w: %v", keystore.ErrInvalid, err)
	}
	return id.Store.Apply(&keystore.CreatePrincipal{Principal: keystore.Principal{Name: name, Admin: admin, CreatedAt: id.now()}})
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
	if _, err := id.Store.Principal(principal); err != nil {
		return "", "", err
	}
	active := 0
	for _, a := range id.Store.AccessKeysOf(principal) {
		if !a.Revoked {
			active++
		}
	}
	if active >= MaxActiveAccessKeys {
		return "", "", fmt.Errorf("principal %s already has %d active access keys; revoke one first: %w", principal, active, keystore.ErrInvalid)
	}
	k, err := id.secretsKey(ctx)
	if err != nil {
		return "", "", err
	}
	var raw [10 + 30]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", "", err
	}
	akid = "AKIA" + base32.StdEncoding.EncodeToString(raw[:10]) // 16 characters of A-Z2-7, as AWS's
	secret = base64.StdEncoding.EncodeToString(raw[10:])        // 40 characters
	clear(raw[:])
	iv, sealed, err := id.Pool.EncryptGCM(ctx, k, []byte(secret), secretAAD(akid))
	if err != nil {
		return "", "", err
	}
	err = id.Store.Apply(&keystore.CreateAccessKey{AccessKey: keystore.AccessKey{
		ID: akid, Principal: principal, SecretBlob: append(iv, sealed...), CreatedAt: id.now(),
	}})
	if err != nil {
		return "", "", err
	}
	return akid, secret, nil
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
