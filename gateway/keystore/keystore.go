// Package keystore keeps the gateway's durable state: key metadata and each
// key version's wrapped blob, aliases, tags, principals and their access
// keys. It holds no plaintext key material or secret: blobs are wrapped
// under the HSM pool's domain key, and access-key secrets are kept only as
// HSM-wrapped HMAC keys.
//
// # State machine
//
// Every change is a [Command], encoded to bytes and applied by one function,
// [Store.Apply]. A single gateway applies the bytes to the embedded bbolt
// database in the data folder; in a cluster a [Replicator] (gateway/cluster's
// raft node) ships the same bytes through a consensus log to every node's
// [Store.ApplyLogEntry], so the logic of a change lives in exactly one place.
// Snapshots and restore (snapshot.go) copy the whole store.
//
// Reads are served from memory: the store loads everything at open and
// publishes immutable snapshots of each record after every committed
// change, so a read never waits for a write and never sees half of one.
package keystore

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Errors that the API maps to its wire errors.
var (
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
	ErrInvalid       = errors.New("invalid")
	ErrLimit         = errors.New("limit exceeded")
	ErrMismatch      = errors.New("does not match")
	// ErrConflict: a conditional write (SetMeta.IfSHA256) found the value
	// changed since it was read, by another writer (in a cluster, perhaps
	// on another node). Read again and retry.
	ErrConflict = errors.New("changed concurrently")
)

// Key states, as AWS KMS names them.
const (
	StateEnabled         = "Enabled"
	StateDisabled        = "Disabled"
	StatePendingDeletion = "PendingDeletion"
	StatePendingImport   = "PendingImport"
)

// Key is a customer key: its metadata and versions. Values handed out by
// the store are shared snapshots: never modify them.
type Key struct {
	ID          string            `json:"id"` // UUID
	CreatedAt   time.Time         `json:"created_at"`
	Description string            `json:"description"`
	State       string            `json:"state"`
	Spec        string            `json:"spec"`  // AWS KeySpec, e.g. SYMMETRIC_DEFAULT
	Usage       string            `json:"usage"` // AWS KeyUsage, e.g. ENCRYPT_DECRYPT
	Origin      string            `json:"origin"`
	Owner       string            `json:"owner"` // the principal that created it
	Tags        map[string]string `json:"tags,omitempty"`
	Versions    []Version         `json:"versions"`
	// Policy is the key policy document (JSON), named "default". Empty
	// means the default policy for the key's owner.
	Policy string `json:"policy,omitempty"`
	// KeyManager is "CUSTOMER", or "AWS" for a service-managed key (AWS's
	// name for it), which users can't re-policy, disable or delete.
	KeyManager string `json:"key_manager,omitempty"`
	// RotationPeriodDays is the automatic rotation period; 0 means
	// automatic rotation is off.
	RotationPeriodDays int `json:"rotation_period_days,omitempty"`
	// NextRotation is when the next automatic rotation is due (zero when
	// rotation is off).
	NextRotation time.Time `json:"next_rotation,omitzero"`
	// OnDemandRotations counts RotateKeyOnDemand calls, which are limited.
	OnDemandRotations int `json:"on_demand_rotations,omitempty"`
	// DeletionDate is when a key pending deletion is deleted, and
	// PendingWindowDays the window it was scheduled with.
	DeletionDate      time.Time `json:"deletion_date,omitzero"`
	PendingWindowDays int       `json:"pending_window_days,omitempty"`
	// Import is the state of a key with imported material (origin
	// EXTERNAL); nil for other keys.
	Import *Import `json:"import,omitempty"`
	// XKS marks a key for use by AWS KMS through an external key store;
	// nil for other keys.
	XKS *XKSUse `json:"xks,omitempty"`
}

// XKSUse is how an external key store uses a key.
type XKSUse struct {
	Store      string   `json:"store"`       // the [[xks.stores]] name
	ExternalID string   `json:"external_id"` // the id AWS KMS sends in the URI
	Usages     []string `json:"usages"`      // subset of ENCRYPT DECRYPT WRAP UNWRAP
	// Policy, when set, is a key policy document deciding requests on the
	// XKS requestMetadata (actions xks:Encrypt, xks:Decrypt,
	// xks:GetKeyMetadata); empty allows every authenticated request.
	Policy string `json:"policy,omitempty"`
}

// Import is what the keystore keeps about a key's imported material. The
// material itself is Versions[0]'s blob, wrapped under the domain key like
// any other; a key whose material is deleted or expired has no versions.
type Import struct {
	// The current import parameters (GetParametersForImport): the
	// wrapping key pair (its private half wrapped under the domain key),
	// the algorithm it is for, and the token that names them.
	TokenID        string    `json:"token_id,omitempty"`
	WrappingBlob   []byte    `json:"wrapping_blob,omitempty"`
	WrappingPublic []byte    `json:"wrapping_public,omitempty"`
	Algorithm      string    `json:"algorithm,omitempty"`
	ParamsValidTo  time.Time `json:"params_valid_to,omitzero"`
	// KCV identifies the first material imported; later imports must
	// bring the same (AWS's rule), so old ciphertexts stay decryptable.
	KCV []byte `json:"kcv,omitempty"`
	// ValidTo is when the material expires (zero: it doesn't).
	ValidTo time.Time `json:"valid_to,omitzero"`
}

// Managed reports whether k is a service-managed key.
func (k *Key) Managed() bool { return k.KeyManager == KeyManagerAWS }

// Key managers, as AWS names them.
const (
	KeyManagerCustomer = "CUSTOMER"
	KeyManagerAWS      = "AWS"
)

// Current returns the newest version. Every key has one except a key
// pending import (state PendingImport), which callers refuse first.
func (k *Key) Current() *Version { return &k.Versions[len(k.Versions)-1] }

// Version returns version n, or nil.
func (k *Key) Version(n uint32) *Version {
	if n == 0 || int(n) > len(k.Versions) {
		return nil
	}
	return &k.Versions[n-1]
}

// Version is one generation of a key's material.
type Version struct {
	Number    uint32    `json:"number"` // 1, 2, …
	CreatedAt time.Time `json:"created_at"`
	Blob      []byte    `json:"blob"`             // hsmpool key blob, wrapped under the domain key
	Public    []byte    `json:"public,omitempty"` // DER SubjectPublicKeyInfo of a key pair
	// RotationType says how the version came to be: "" for a key's first
	// version, else AUTOMATIC or ON_DEMAND (AWS's names).
	RotationType string `json:"rotation_type,omitempty"`
	// GCMReserved counts the AES-GCM encryptions with random IVs that
	// gateways have reserved for this version (see ReserveEncryptions).
	GCMReserved uint64 `json:"gcm_reserved,omitempty"`
}

// Rotation types.
const (
	RotationAutomatic = "AUTOMATIC"
	RotationOnDemand  = "ON_DEMAND"
)

// Alias names a key.
type Alias struct {
	Name      string    `json:"name"` // "alias/…"
	KeyID     string    `json:"key_id"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Principal is an identity that calls the API.
type Principal struct {
	Name  string `json:"name"`
	Admin bool   `json:"admin"`
	// Kind is "user" (the default when empty) or "role"; it is the
	// resource type of the principal's ARN, arn:aws:iam::<account>:<kind>/<name>.
	Kind string `json:"kind,omitempty"`
	// Service, when set, declares the principal to be the integrated
	// service of that name (a DNS label such as "storage"): its requests
	// carry kms:ViaService "<service>.<region>.amazonaws.com" and it may
	// use the service-managed key alias/managed/<service>.
	Service   string            `json:"service,omitempty"`
	Tags      map[string]string `json:"tags,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
	// XKSStore, when set, makes the principal the holder of an external
	// key store's credentials: its access keys sign only XKS requests to
	// that store, never KMS or admin requests.
	XKSStore string `json:"xks_store,omitempty"`
}

// Principal kinds.
const (
	KindUser = "user"
	KindRole = "role"
)

// ARNKind returns the resource type of p's ARN.
func (p *Principal) ARNKind() string {
	if p.Kind == "" {
		return KindUser
	}
	return p.Kind
}

// Grant lets a grantee principal use a key for some operations, as AWS KMS
// grants do.
type Grant struct {
	ID                string            `json:"id"`
	KeyID             string            `json:"key_id"`
	Name              string            `json:"name,omitempty"`
	GranteePrincipal  string            `json:"grantee"`            // ARN
	RetiringPrincipal string            `json:"retiring,omitempty"` // ARN
	IssuingPrincipal  string            `json:"issuer"`             // ARN
	Operations        []string          `json:"operations"`
	ContextEquals     map[string]string `json:"context_equals,omitempty"`
	ContextSubset     map[string]string `json:"context_subset,omitempty"`
	CreatedAt         time.Time         `json:"created_at"`
	// TokenNonce makes the grant's token unguessable: a token names the
	// grant and carries this nonce.
	TokenNonce string `json:"token_nonce"`
}

// AccessKey is a SigV4 credential of a principal. The secret itself is not
// stored: SecretBlob is the HSM-wrapped HMAC key "AWS4"+secret, from which
// the gateway derives SigV4 signing keys inside the HSM.
type AccessKey struct {
	ID         string    `json:"id"`
	Principal  string    `json:"principal"`
	SecretBlob []byte    `json:"secret_blob"`
	CreatedAt  time.Time `json:"created_at"`
	Revoked    bool      `json:"revoked"`
}

var (
	bucketKeys       = []byte("keys")
	bucketAliases    = []byte("aliases")
	bucketPrincipals = []byte("principals")
	bucketAccessKeys = []byte("access_keys")
	bucketMeta       = []byte("meta")
	bucketGrants     = []byte("grants")
	allBuckets       = [][]byte{bucketKeys, bucketAliases, bucketPrincipals, bucketAccessKeys, bucketMeta, bucketGrants}
)

// Store is the keystore. It is safe for concurrent use.
type Store struct {
	db *bolt.DB

	mu         sync.RWMutex // guards the maps; held for writing only while publishing
	keys       map[string]*Key
	aliases    map[string]*Alias
	principals map[string]*Principal
	accessKeys map[string]*AccessKey
	grants     map[string]*Grant
	keyGrants  map[string][]*Grant // by key id, rebuilt when grants change
	xksKeys    map[string]string   // xksIndex(store, external id) -> key id
	applyMu    sync.Mutex          // one Apply (or Restore) at a time

	// replicator, when set, takes every Apply (commands.go).
	replicator atomic.Pointer[replicatorBox]
}

// Open opens (creating if needed) the store in file path.
func Open(path string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open keystore %s: %w", path, err)
	}
	s := &Store{db: db}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		var st *state
		err = db.View(func(tx *bolt.Tx) (err error) {
			st, err = loadState(tx) // snapshot.go
			return err
		})
		if err == nil {
			s.install(st)
		}
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("load keystore %s: %w", path, err)
	}
	return s, nil
}

func load[T any](tx *bolt.Tx, bucket []byte, into map[string]*T) error {
	return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
		var rec T
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("record %s/%s: %w", bucket, k, err)
		}
		into[string(k)] = &rec
		return nil
	})
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Key returns the key with this id.
func (s *Store) Key(id string) (*Key, error) {
	s.mu.RLock()
	k, ok := s.keys[id]
	s.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("key %s: %w", id, ErrNotFound)
	}
	return k, nil
}

// Alias returns the alias with this name ("alias/…").
func (s *Store) Alias(name string) (*Alias, error) {
	s.mu.RLock()
	a, ok := s.aliases[name]
	s.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("alias %s: %w", name, ErrNotFound)
	}
	return a, nil
}

// Principal returns the principal with this name.
func (s *Store) Principal(name string) (*Principal, error) {
	s.mu.RLock()
	p, ok := s.principals[name]
	s.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("principal %s: %w", name, ErrNotFound)
	}
	return p, nil
}

// AccessKey returns the access key with this id.
func (s *Store) AccessKey(id string) (*AccessKey, error) {
	s.mu.RLock()
	a, ok := s.accessKeys[id]
	s.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("access key %s: %w", id, ErrNotFound)
	}
	return a, nil
}

// Keys returns up to limit keys with ids after marker (""), in id order,
// only those keep accepts (all when keep is nil), and whether more follow.
func (s *Store) Keys(marker string, limit int, keep func(*Key) bool) ([]*Key, bool) {
	s.mu.RLock()
	ids := make([]string, 0, len(s.keys))
	for id, k := range s.keys {
		if id > marker && (keep == nil || keep(k)) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	more := len(ids) > limit
	if more {
		ids = ids[:limit]
	}
	out := make([]*Key, len(ids))
	for i, id := range ids {
		out[i] = s.keys[id]
	}
	s.mu.RUnlock()
	return out, more
}

// Aliases returns up to limit aliases named after marker, in name order,
// only those of keyID when it is not empty and those keep accepts (all when
// keep is nil), and whether more follow.
func (s *Store) Aliases(keyID, marker string, limit int, keep func(*Alias) bool) ([]*Alias, bool) {
	s.mu.RLock()
	var out []*Alias
	for n, a := range s.aliases {
		if n > marker && (keyID == "" || a.KeyID == keyID) {
			out = append(out, a)
		}
	}
	s.mu.RUnlock()
	// Snapshots are immutable, so filtering can run without the lock (and
	// keep may read the store).
	if keep != nil {
		out = slices.DeleteFunc(out, func(a *Alias) bool { return !keep(a) })
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	more := len(out) > limit
	if more {
		out = out[:limit]
	}
	return out, more
}

// Principals returns every principal, sorted by name.
func (s *Store) Principals() []*Principal {
	s.mu.RLock()
	out := make([]*Principal, 0, len(s.principals))
	for _, p := range s.principals {
		out = append(out, p)
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// AccessKeysOf returns the access keys of a principal, sorted by id.
func (s *Store) AccessKeysOf(principal string) []*AccessKey {
	s.mu.RLock()
	var out []*AccessKey
	for _, a := range s.accessKeys {
		if a.Principal == principal {
			out = append(out, a)
		}
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// indexGrants rebuilds keyGrants; the caller holds mu for writing (or has
// the store to itself).
func (s *Store) indexGrants() {
	idx := make(map[string][]*Grant)
	for _, g := range s.grants {
		idx[g.KeyID] = append(idx[g.KeyID], g)
	}
	for _, gs := range idx {
		sort.Slice(gs, func(i, j int) bool { return gs[i].ID < gs[j].ID })
	}
	s.keyGrants = idx
}

// GrantsOf returns the grants of a key, sorted by id. The slice is shared:
// don't modify it.
func (s *Store) GrantsOf(keyID string) []*Grant {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.keyGrants[keyID]
}

// Grant returns the grant with this id.
func (s *Store) Grant(id string) (*Grant, error) {
	s.mu.RLock()
	g, ok := s.grants[id]
	s.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("grant %s: %w", id, ErrNotFound)
	}
	return g, nil
}

// Grants returns every grant that keep accepts, sorted by id.
func (s *Store) Grants(keep func(*Grant) bool) []*Grant {
	s.mu.RLock()
	var out []*Grant
	for _, g := range s.grants {
		if keep == nil || keep(g) {
			out = append(out, g)
		}
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func xksIndex(store, externalID string) string { return store + "\x00" + externalID }

// XKSKey returns the key an external key store names by external id.
func (s *Store) XKSKey(store, externalID string) (*Key, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if id, ok := s.xksKeys[xksIndex(store, externalID)]; ok {
		if k, ok := s.keys[id]; ok {
			return k, nil
		}
	}
	return nil, fmt.Errorf("key %s of external key store %s: %w", externalID, store, ErrNotFound)
}

// Meta returns a value stored with SetMeta, or nil.
func (s *Store) Meta(name string) ([]byte, error) {
	var v []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		v = append([]byte(nil), tx.Bucket(bucketMeta).Get([]byte(name))...)
		return nil
	})
	if len(v) == 0 {
		v = nil
	}
	return v, err
}
