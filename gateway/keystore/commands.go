package keystore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Command is one change to the store. Commands carry every value they need
// (ids, times): applying the same bytes on any node gives the same state.
type Command interface {
	op() string
	apply(t *txn) error
}

// Encode turns a command into the bytes that Apply takes (and a replicated
// log would carry).
func Encode(c Command) ([]byte, error) {
	body, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	return json.Marshal(envelope{Op: c.op(), Cmd: body})
}

type envelope struct {
	Op  string          `json:"op"`
	Cmd json.RawMessage `json:"cmd"`
}

var commands = map[string]func() Command{
	"CreateKey":        func() Command { return &CreateKey{} },
	"SetKeyState":      func() Command { return &SetKeyState{} },
	"SetDescription":   func() Command { return &SetDescription{} },
	"TagKey":           func() Command { return &TagKey{} },
	"UntagKey":         func() Command { return &UntagKey{} },
	"CreateAlias":      func() Command { return &CreateAlias{} },
	"UpdateAlias":      func() Command { return &UpdateAlias{} },
	"DeleteAlias":      func() Command { return &DeleteAlias{} },
	"CreatePrincipal":  func() Command { return &CreatePrincipal{} },
	"CreateAccessKey":  func() Command { return &CreateAccessKey{} },
	"RevokeAccessKey":  func() Command { return &RevokeAccessKey{} },
	"DeletePrincipal":  func() Command { return &DeletePrincipal{} },
	"SetMeta":          func() Command { return &SetMeta{} },
	"PutKeyPolicy":     func() Command { return &PutKeyPolicy{} },
	"SetRotation":      func() Command { return &SetRotation{} },
	"AddKeyVersion":    func() Command { return &AddKeyVersion{} },
	"SetPrincipal":     func() Command { return &SetPrincipal{} },
	"CreateGrant":      func() Command { return &CreateGrant{} },
	"DeleteGrant":      func() Command { return &DeleteGrant{} },
	"Reserve":          func() Command { return &ReserveEncryptions{} },
	"ScheduleDeletion": func() Command { return &ScheduleDeletion{} },
	"CancelDeletion":   func() Command { return &CancelDeletion{} },
	"DeleteKey":        func() Command { return &DeleteKey{} },
	"SetImportParams":  func() Command { return &SetImportParams{} },
	"ImportMaterial":   func() Command { return &ImportMaterial{} },
	"DeleteMaterial":   func() Command { return &DeleteMaterial{} },
	"SetXKS":           func() Command { return &SetXKS{} },
}

// Decode parses bytes made by Encode.
func Decode(b []byte) (Command, error) {
	var env envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return nil, fmt.Errorf("%w: command: %v", ErrInvalid, err)
	}
	mk, ok := commands[env.Op]
	if !ok {
		return nil, fmt.Errorf("%w: unknown command %q", ErrInvalid, env.Op)
	}
	c := mk()
	if err := json.Unmarshal(env.Cmd, c); err != nil {
		return nil, fmt.Errorf("%w: command %s: %v", ErrInvalid, env.Op, err)
	}
	return c, nil
}

// Apply makes the change c durable and visible. It is the only way the
// store changes. With a [Replicator] set, it goes through it; without one,
// a replica (see [Store.MarkReplica]) refuses (ErrUnavailable).
func (s *Store) Apply(c Command) error { return s.ApplyContext(context.Background(), c) }

// ApplyContext is Apply with a context that bounds how long a replicated
// write may wait (the replicator adds its own bound).
func (s *Store) ApplyContext(ctx context.Context, c Command) error {
	b, err := Encode(c)
	if err != nil {
		return err
	}
	if box := s.replicator.Load(); box != nil {
		return box.r.Replicate(ctx, b)
	}
	if replica, err := s.Replica(); err == nil && replica {
		// A change here alone would make this node differ from the others.
		return fmt.Errorf("%w: this keystore is a cluster node's replica: change it through a running node of the cluster", ErrUnavailable)
	}
	return s.ApplyBytes(b)
}

// Replicator carries encoded commands through a consensus log. Replicate
// returns once the command is committed and applied to this store (every
// node's log applies it with [Store.ApplyLogEntry]), with the error that
// applying it returned (ErrNotFound, ErrAlreadyExists, …), or an error
// matching ErrUnavailable when the log can't take writes now.
type Replicator interface {
	Replicate(ctx context.Context, cmd []byte) error
}

// ErrUnavailable is what a replicated store's writes fail with while the
// store can't take writes (a node cut off from its cluster's majority);
// reads keep working.
var ErrUnavailable = errors.New("keystore writes unavailable")

// CatchUpper is a Replicator that can also wait until this store holds
// every change the cluster has committed (a read barrier).
type CatchUpper interface {
	CatchUp(ctx context.Context) error
}

// CatchUp waits (within ctx) until a replicated store holds every change
// its cluster had committed, and reports whether it did: a reader that
// missed a record calls it before it answers "not found", and looks again
// when it returns true. Without a replicator it returns false at once.
func (s *Store) CatchUp(ctx context.Context) bool {
	b := s.replicator.Load()
	if b == nil {
		return false
	}
	c, ok := b.r.(CatchUpper)
	return ok && c.CatchUp(ctx) == nil
}

type replicatorBox struct{ r Replicator }

// SetReplicator makes Apply go through r. With nil, Apply is local again,
// unless the store is a replica.
func (s *Store) SetReplicator(r Replicator) {
	if r == nil {
		s.replicator.Store(nil)
		return
	}
	s.replicator.Store(&replicatorBox{r})
}

// ApplyBytes applies an encoded command here, not through a replicator.
// Either the whole change commits and is then published, or nothing
// changes.
func (s *Store) ApplyBytes(b []byte) error { return s.applyBytes(b, 0) }

// applyBytes applies an encoded command. index, when not 0, is the
// command's position in a replicated log: it is recorded with the change,
// and a command at or before the recorded position was already applied and
// is skipped (snapshot.go).
func (s *Store) applyBytes(b []byte, index uint64) error {
	c, err := Decode(b)
	if err != nil {
		return err
	}
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	if index != 0 && s.appliedBefore(index) {
		return nil
	}
	t := &txn{s: s, keys: map[string]*Key{}, aliases: map[string]*Alias{}, principals: map[string]*Principal{}, accessKeys: map[string]*AccessKey{}, grants: map[string]*Grant{}}
	if err := c.apply(t); err != nil {
		return err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		return errJoin(
			markApplied(tx, index),
			write(tx, bucketKeys, t.keys),
			write(tx, bucketAliases, t.aliases),
			write(tx, bucketPrincipals, t.principals),
			write(tx, bucketAccessKeys, t.accessKeys),
			write(tx, bucketGrants, t.grants),
			writeMeta(tx, t.meta))
	})
	if err != nil {
		return fmt.Errorf("commit %s: %w", c.op(), err)
	}
	s.mu.Lock()
	for id, k := range t.keys {
		if old, ok := s.keys[id]; ok && old.XKS != nil {
			delete(s.xksKeys, xksIndex(old.XKS.Store, old.XKS.ExternalID))
		}
		if k != nil && k.XKS != nil {
			s.xksKeys[xksIndex(k.XKS.Store, k.XKS.ExternalID)] = id
		}
	}
	publish(s.keys, t.keys)
	publish(s.aliases, t.aliases)
	publish(s.principals, t.principals)
	publish(s.accessKeys, t.accessKeys)
	if len(t.grants) > 0 {
		publish(s.grants, t.grants)
		s.indexGrants()
	}
	s.mu.Unlock()
	return nil
}

func errJoin(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// write stores staged records; a nil record is a deletion.
func write[T any](tx *bolt.Tx, bucket []byte, staged map[string]*T) error {
	b := tx.Bucket(bucket)
	for id, rec := range staged {
		if rec == nil {
			if err := b.Delete([]byte(id)); err != nil {
				return err
			}
			continue
		}
		v, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		if err := b.Put([]byte(id), v); err != nil {
			return err
		}
	}
	return nil
}

func writeMeta(tx *bolt.Tx, meta map[string][]byte) error {
	b := tx.Bucket(bucketMeta)
	for k, v := range meta {
		if err := b.Put([]byte(k), v); err != nil {
			return err
		}
	}
	return nil
}

func publish[T any](into, staged map[string]*T) {
	for id, rec := range staged {
		if rec == nil {
			delete(into, id)
		} else {
			into[id] = rec
		}
	}
}

// txn is a change being prepared: reads see the store plus what the change
// has staged; writes stage new records (copies, never the published ones).
type txn struct {
	s          *Store
	keys       map[string]*Key
	aliases    map[string]*Alias
	principals map[string]*Principal
	accessKeys map[string]*AccessKey
	grants     map[string]*Grant
	meta       map[string][]byte
}

func lookup[T any](staged, published map[string]*T, id string) (*T, bool) {
	if rec, ok := staged[id]; ok {
		return rec, rec != nil
	}
	rec, ok := published[id]
	return rec, ok
}

// key returns a private copy of key id to modify and stage.
func (t *txn) key(id string) (*Key, error) {
	t.s.mu.RLock()
	k, ok := lookup(t.keys, t.s.keys, id)
	t.s.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("key %s: %w", id, ErrNotFound)
	}
	c := *k
	c.Tags = maps.Clone(k.Tags)
	c.Versions = slices.Clone(k.Versions)
	return &c, nil
}

func (t *txn) alias(name string) (*Alias, bool) {
	t.s.mu.RLock()
	defer t.s.mu.RUnlock()
	a, ok := lookup(t.aliases, t.s.aliases, name)
	if !ok {
		return nil, false
	}
	c := *a
	return &c, true
}

// CreateKey adds a new key with its first version.
type CreateKey struct{ Key Key }

func (c *CreateKey) op() string { return "CreateKey" }
func (c *CreateKey) apply(t *txn) error {
	if c.Key.ID == "" || (len(c.Key.Versions) == 0) != (c.Key.State == StatePendingImport) {
		return fmt.Errorf("%w: a key needs an id and a first version, unless it is pending import", ErrInvalid)
	}
	if _, err := t.key(c.Key.ID); err == nil {
		return fmt.Errorf("key %s: %w", c.Key.ID, ErrAlreadyExists)
	}
	k := c.Key
	t.keys[k.ID] = &k
	return nil
}

// SetKeyState enables or disables a key.
type SetKeyState struct {
	KeyID string
	State string
}

func (c *SetKeyState) op() string { return "SetKeyState" }
func (c *SetKeyState) apply(t *txn) error {
	switch c.State {
	case StateEnabled, StateDisabled:
	default:
		return fmt.Errorf("%w: key state %q", ErrInvalid, c.State)
	}
	k, err := t.key(c.KeyID)
	if err != nil {
		return err
	}
	k.State = c.State
	t.keys[k.ID] = k
	return nil
}

// SetDescription changes a key's description.
type SetDescription struct {
	KeyID       string
	Description string
}

func (c *SetDescription) op() string { return "SetDescription" }
func (c *SetDescription) apply(t *txn) error {
	k, err := t.key(c.KeyID)
	if err != nil {
		return err
	}
	k.Description = c.Description
	t.keys[k.ID] = k
	return nil
}

// MaxTags is AWS KMS's limit of tags per key.
const MaxTags = 50

// TagKey adds or replaces tags.
type TagKey struct {
	KeyID string
	Tags  map[string]string
}

func (c *TagKey) op() string { return "TagKey" }
func (c *TagKey) apply(t *txn) error {
	k, err := t.key(c.KeyID)
	if err != nil {
		return err
	}
	if k.Tags == nil {
		k.Tags = map[string]string{}
	}
	maps.Copy(k.Tags, c.Tags)
	if len(k.Tags) > MaxTags {
		return fmt.Errorf("%w: a key can have at most %d tags", ErrInvalid, MaxTags)
	}
	t.keys[k.ID] = k
	return nil
}

// UntagKey removes tags by key.
type UntagKey struct {
	KeyID   string
	TagKeys []string
}

func (c *UntagKey) op() string { return "UntagKey" }
func (c *UntagKey) apply(t *txn) error {
	k, err := t.key(c.KeyID)
	if err != nil {
		return err
	}
	for _, tk := range c.TagKeys {
		delete(k.Tags, tk)
	}
	t.keys[k.ID] = k
	return nil
}

// CreateAlias names a key.
type CreateAlias struct{ Alias Alias }

func (c *CreateAlias) op() string { return "CreateAlias" }
func (c *CreateAlias) apply(t *txn) error {
	if _, ok := t.alias(c.Alias.Name); ok {
		return fmt.Errorf("alias %s: %w", c.Alias.Name, ErrAlreadyExists)
	}
	if _, err := t.key(c.Alias.KeyID); err != nil {
		return err
	}
	a := c.Alias
	t.aliases[a.Name] = &a
	return nil
}

// UpdateAlias points an alias at another key.
type UpdateAlias struct {
	Name  string
	KeyID string
	At    time.Time
}

func (c *UpdateAlias) op() string { return "UpdateAlias" }
func (c *UpdateAlias) apply(t *txn) error {
	a, ok := t.alias(c.Name)
	if !ok {
		return fmt.Errorf("alias %s: %w", c.Name, ErrNotFound)
	}
	if _, err := t.key(c.KeyID); err != nil {
		return err
	}
	a.KeyID, a.UpdatedAt = c.KeyID, c.At
	t.aliases[a.Name] = a
	return nil
}

// DeleteAlias removes an alias.
type DeleteAlias struct{ Name string }

func (c *DeleteAlias) op() string { return "DeleteAlias" }
func (c *DeleteAlias) apply(t *txn) error {
	if _, ok := t.alias(c.Name); !ok {
		return fmt.Errorf("alias %s: %w", c.Name, ErrNotFound)
	}
	t.aliases[c.Name] = nil
	return nil
}

// CreatePrincipal adds an identity.
type CreatePrincipal struct{ Principal Principal }

func (c *CreatePrincipal) op() string { return "CreatePrincipal" }
func (c *CreatePrincipal) apply(t *txn) error {
	t.s.mu.RLock()
	_, exists := lookup(t.principals, t.s.principals, c.Principal.Name)
	t.s.mu.RUnlock()
	if exists {
		return fmt.Errorf("principal %s: %w", c.Principal.Name, ErrAlreadyExists)
	}
	if c.Principal.Name == "" {
		return fmt.Errorf("%w: a principal needs a name", ErrInvalid)
	}
	p := c.Principal
	t.principals[p.Name] = &p
	return nil
}

// CreateAccessKey adds a SigV4 credential to a principal.
type CreateAccessKey struct{ AccessKey AccessKey }

func (c *CreateAccessKey) op() string { return "CreateAccessKey" }
func (c *CreateAccessKey) apply(t *txn) error {
	t.s.mu.RLock()
	_, principal := lookup(t.principals, t.s.principals, c.AccessKey.Principal)
	_, exists := lookup(t.accessKeys, t.s.accessKeys, c.AccessKey.ID)
	t.s.mu.RUnlock()
	switch {
	case !principal:
		return fmt.Errorf("principal %s: %w", c.AccessKey.Principal, ErrNotFound)
	case exists:
		return fmt.Errorf("access key %s: %w", c.AccessKey.ID, ErrAlreadyExists)
	}
	a := c.AccessKey
	t.accessKeys[a.ID] = &a
	return nil
}

// RevokeAccessKey disables an access key for good.
type RevokeAccessKey struct{ ID string }

func (c *RevokeAccessKey) op() string { return "RevokeAccessKey" }
func (c *RevokeAccessKey) apply(t *txn) error {
	t.s.mu.RLock()
	a, ok := lookup(t.accessKeys, t.s.accessKeys, c.ID)
	t.s.mu.RUnlock()
	if !ok {
		return fmt.Errorf("access key %s: %w", c.ID, ErrNotFound)
	}
	r := *a
	r.Revoked = true
	t.accessKeys[r.ID] = &r
	return nil
}

// DeletePrincipal removes a principal and revokes its access keys. Keys it
// created stay, for the admin to manage.
type DeletePrincipal struct{ Name string }

func (c *DeletePrincipal) op() string { return "DeletePrincipal" }
func (c *DeletePrincipal) apply(t *txn) error {
	t.s.mu.RLock()
	_, ok := lookup(t.principals, t.s.principals, c.Name)
	var keys []*AccessKey
	for _, a := range t.s.accessKeys {
		if a.Principal == c.Name && !a.Revoked {
			keys = append(keys, a)
		}
	}
	t.s.mu.RUnlock()
	if !ok {
		return fmt.Errorf("principal %s: %w", c.Name, ErrNotFound)
	}
	for _, a := range keys {
		r := *a
		r.Revoked = true
		t.accessKeys[r.ID] = &r
	}
	t.principals[c.Name] = nil
	return nil
}

// SetMeta stores a small named value (the gateway's own settings, such as
// the TLS key's blob).
type SetMeta struct {
	Name  string
	Value []byte
	// IfSHA256, when set, makes the write conditional: it applies only if
	// the SHA-256 of the value it replaces is this (MetaSHA256 of what the
	// writer read; an absent value hashes as an empty one), and fails with
	// ErrConflict otherwise. Applied in log order on every node, so in a
	// cluster it is a compare-and-set across nodes.
	IfSHA256 []byte `json:",omitempty"`
}

func (c *SetMeta) op() string { return "SetMeta" }
func (c *SetMeta) apply(t *txn) error {
	if t.meta == nil {
		t.meta = map[string][]byte{}
	}
	if c.IfSHA256 != nil {
		cur, staged := t.meta[c.Name]
		if !staged {
			var err error
			if cur, err = t.s.Meta(c.Name); err != nil {
				return err
			}
		}
		if h := MetaSHA256(cur); !bytes.Equal(h[:], c.IfSHA256) {
			return fmt.Errorf("%w: %s", ErrConflict, c.Name)
		}
	}
	t.meta[c.Name] = c.Value
	return nil
}

// MetaSHA256 is the digest SetMeta.IfSHA256 compares: of the value read
// with Store.Meta (nil for an absent value).
func MetaSHA256(value []byte) [32]byte { return sha256.Sum256(value) }

// PutKeyPolicy replaces a key's policy document.
type PutKeyPolicy struct {
	KeyID  string
	Policy string
}

func (c *PutKeyPolicy) op() string { return "PutKeyPolicy" }
func (c *PutKeyPolicy) apply(t *txn) error {
	k, err := t.key(c.KeyID)
	if err != nil {
		return err
	}
	k.Policy = c.Policy
	t.keys[k.ID] = k
	return nil
}

// SetRotation turns automatic rotation on (PeriodDays > 0, next due at
// Next) or off.
type SetRotation struct {
	KeyID      string
	PeriodDays int
	Next       time.Time
}

func (c *SetRotation) op() string { return "SetRotation" }
func (c *SetRotation) apply(t *txn) error {
	k, err := t.key(c.KeyID)
	if err != nil {
		return err
	}
	if c.PeriodDays < 0 || (c.PeriodDays > 0 && c.Next.IsZero()) {
		return fmt.Errorf("%w: rotation period %d", ErrInvalid, c.PeriodDays)
	}
	k.RotationPeriodDays, k.NextRotation = c.PeriodDays, c.Next
	if c.PeriodDays == 0 {
		k.NextRotation = time.Time{}
	}
	t.keys[k.ID] = k
	return nil
}

// AddKeyVersion adds a new version (rotation): it becomes the current one.
// Version.Number must be one more than the key's newest. NextRotation, when
// not zero, is the next automatic rotation's due time.
type AddKeyVersion struct {
	KeyID        string
	Version      Version
	NextRotation time.Time
}

func (c *AddKeyVersion) op() string { return "AddKeyVersion" }
func (c *AddKeyVersion) apply(t *txn) error {
	k, err := t.key(c.KeyID)
	if err != nil {
		return err
	}
	if want := uint32(len(k.Versions)) + 1; c.Version.Number != want || len(c.Version.Blob) == 0 {
		return fmt.Errorf("%w: key %s: new version must be %d and have material", ErrInvalid, k.ID, want)
	}
	k.Versions = append(k.Versions, c.Version)
	if !c.NextRotation.IsZero() {
		k.NextRotation = c.NextRotation
	}
	if c.Version.RotationType == RotationOnDemand {
		k.OnDemandRotations++
	}
	t.keys[k.ID] = k
	return nil
}

// SetPrincipal changes a principal's kind, service and tags (replacing
// them all).
type SetPrincipal struct {
	Name    string
	Kind    string
	Service string
	Tags    map[string]string
}

func (c *SetPrincipal) op() string { return "SetPrincipal" }
func (c *SetPrincipal) apply(t *txn) error {
	t.s.mu.RLock()
	p, ok := lookup(t.principals, t.s.principals, c.Name)
	t.s.mu.RUnlock()
	if !ok {
		return fmt.Errorf("principal %s: %w", c.Name, ErrNotFound)
	}
	switch c.Kind {
	case "", KindUser, KindRole:
	default:
		return fmt.Errorf("%w: principal kind %q", ErrInvalid, c.Kind)
	}
	n := *p
	n.Kind, n.Service, n.Tags = c.Kind, c.Service, maps.Clone(c.Tags)
	t.principals[n.Name] = &n
	return nil
}

// MaxGrantsPerKey bounds a key's grants (AWS's quota is 50,000 per key; a
// smaller bound keeps authorization fast).
const MaxGrantsPerKey = 10000

// CreateGrant adds a grant.
type CreateGrant struct{ Grant Grant }

func (c *CreateGrant) op() string { return "CreateGrant" }
func (c *CreateGrant) apply(t *txn) error {
	if c.Grant.ID == "" || c.Grant.GranteePrincipal == "" || len(c.Grant.Operations) == 0 {
		return fmt.Errorf("%w: a grant needs an id, a grantee and operations", ErrInvalid)
	}
	if _, err := t.key(c.Grant.KeyID); err != nil {
		return err
	}
	t.s.mu.RLock()
	_, exists := lookup(t.grants, t.s.grants, c.Grant.ID)
	n := len(t.s.keyGrants[c.Grant.KeyID])
	t.s.mu.RUnlock()
	if exists {
		return fmt.Errorf("grant %s: %w", c.Grant.ID, ErrAlreadyExists)
	}
	if n >= MaxGrantsPerKey {
		return fmt.Errorf("%w: key %s has %d grants, the most it can have", ErrLimit, c.Grant.KeyID, n)
	}
	g := c.Grant
	t.grants[g.ID] = &g
	return nil
}

// DeleteGrant removes a grant (retired or revoked).
type DeleteGrant struct{ ID string }

func (c *DeleteGrant) op() string { return "DeleteGrant" }
func (c *DeleteGrant) apply(t *txn) error {
	t.s.mu.RLock()
	_, ok := lookup(t.grants, t.s.grants, c.ID)
	t.s.mu.RUnlock()
	if !ok {
		return fmt.Errorf("grant %s: %w", c.ID, ErrNotFound)
	}
	t.grants[c.ID] = nil
	return nil
}

// ReserveEncryptions reserves Count more AES-GCM encryptions of a key
// version for the gateway that applies it. Reservations only grow: a
// gateway that crashes loses the unused part of its reservation, so the
// count can only overstate how many encryptions were made, never
// understate it. Several gateways may reserve concurrently.
type ReserveEncryptions struct {
	KeyID   string
	Version uint32
	Count   uint64
}

func (c *ReserveEncryptions) op() string { return "Reserve" }
func (c *ReserveEncryptions) apply(t *txn) error {
	k, err := t.key(c.KeyID)
	if err != nil {
		return err
	}
	if c.Version == 0 || int(c.Version) > len(k.Versions) {
		return fmt.Errorf("key %s version %d: %w", c.KeyID, c.Version, ErrNotFound)
	}
	k.Versions[c.Version-1].GCMReserved += c.Count
	t.keys[k.ID] = k
	return nil
}

// ScheduleDeletion puts a key in PendingDeletion until Date.
type ScheduleDeletion struct {
	KeyID      string
	Date       time.Time
	WindowDays int
}

func (c *ScheduleDeletion) op() string { return "ScheduleDeletion" }
func (c *ScheduleDeletion) apply(t *txn) error {
	k, err := t.key(c.KeyID)
	if err != nil {
		return err
	}
	if k.State == StatePendingDeletion {
		return fmt.Errorf("%w: key %s is already pending deletion", ErrInvalid, k.ID)
	}
	k.State, k.DeletionDate, k.PendingWindowDays = StatePendingDeletion, c.Date, c.WindowDays
	t.keys[k.ID] = k
	return nil
}

// CancelDeletion takes a key out of PendingDeletion; it is then Disabled,
// as in AWS KMS.
type CancelDeletion struct{ KeyID string }

func (c *CancelDeletion) op() string { return "CancelDeletion" }
func (c *CancelDeletion) apply(t *txn) error {
	k, err := t.key(c.KeyID)
	if err != nil {
		return err
	}
	if k.State != StatePendingDeletion {
		return fmt.Errorf("%w: key %s is not pending deletion", ErrInvalid, k.ID)
	}
	k.State, k.DeletionDate, k.PendingWindowDays = StateDisabled, time.Time{}, 0
	t.keys[k.ID] = k
	return nil
}

// DeleteKey removes a key that is pending deletion, with its wrapped
// material, its aliases and its grants.
type DeleteKey struct{ KeyID string }

func (c *DeleteKey) op() string { return "DeleteKey" }
func (c *DeleteKey) apply(t *txn) error {
	k, err := t.key(c.KeyID)
	if err != nil {
		return err
	}
	if k.State != StatePendingDeletion {
		return fmt.Errorf("%w: key %s is not pending deletion", ErrInvalid, k.ID)
	}
	t.keys[k.ID] = nil
	t.s.mu.RLock()
	for name, a := range t.s.aliases {
		if a.KeyID == k.ID {
			t.aliases[name] = nil
		}
	}
	for _, g := range t.s.keyGrants[k.ID] {
		t.grants[g.ID] = nil
	}
	t.s.mu.RUnlock()
	return nil
}

// SetImportParams records new import parameters for a key of origin
// EXTERNAL, replacing earlier ones.
type SetImportParams struct {
	KeyID          string
	TokenID        string
	WrappingBlob   []byte
	WrappingPublic []byte
	Algorithm      string
	ValidTo        time.Time
}

func (c *SetImportParams) op() string { return "SetImportParams" }
func (c *SetImportParams) apply(t *txn) error {
	k, err := t.key(c.KeyID)
	if err != nil {
		return err
	}
	if k.Origin != "EXTERNAL" {
		return fmt.Errorf("%w: key %s does not take imported material", ErrInvalid, k.ID)
	}
	imp := Import{}
	if k.Import != nil {
		imp = *k.Import
	}
	imp.TokenID, imp.WrappingBlob, imp.WrappingPublic, imp.Algorithm, imp.ParamsValidTo = c.TokenID, c.WrappingBlob, c.WrappingPublic, c.Algorithm, c.ValidTo
	k.Import = &imp
	t.keys[k.ID] = k
	return nil
}

// ImportMaterial installs imported material (already wrapped under the
// domain key) as the key's version 1 and enables a key pending import.
// The import parameters are used up. Material with a KCV other than the
// first import's is refused.
type ImportMaterial struct {
	KeyID   string
	Version Version
	KCV     []byte
	ValidTo time.Time
}

func (c *ImportMaterial) op() string { return "ImportMaterial" }
func (c *ImportMaterial) apply(t *txn) error {
	k, err := t.key(c.KeyID)
	if err != nil {
		return err
	}
	if k.Import == nil || len(c.Version.Blob) == 0 || len(c.KCV) == 0 || c.Version.Number != 1 {
		return fmt.Errorf("%w: key %s: import without parameters or material", ErrInvalid, k.ID)
	}
	imp := *k.Import
	if imp.KCV != nil && string(imp.KCV) != string(c.KCV) {
		return fmt.Errorf("%w: key %s: the material differs from the key's first import", ErrMismatch, k.ID)
	}
	imp.KCV, imp.ValidTo = c.KCV, c.ValidTo
	imp.TokenID, imp.WrappingBlob, imp.WrappingPublic, imp.Algorithm, imp.ParamsValidTo = "", nil, nil, "", time.Time{}
	k.Import = &imp
	k.Versions = []Version{c.Version}
	if k.State == StatePendingImport {
		k.State = StateEnabled
	}
	t.keys[k.ID] = k
	return nil
}

// DeleteMaterial removes a key's imported material (DeleteImportedKeyMaterial,
// or expiry): the key is PendingImport until the same material is imported
// again.
type DeleteMaterial struct{ KeyID string }

func (c *DeleteMaterial) op() string { return "DeleteMaterial" }
func (c *DeleteMaterial) apply(t *txn) error {
	k, err := t.key(c.KeyID)
	if err != nil {
		return err
	}
	if k.Import == nil || len(k.Versions) == 0 {
		return fmt.Errorf("%w: key %s has no imported material", ErrInvalid, k.ID)
	}
	imp := *k.Import
	imp.ValidTo = time.Time{}
	k.Import = &imp
	k.Versions = nil
	if k.State != StatePendingDeletion {
		k.State = StatePendingImport
	}
	t.keys[k.ID] = k
	return nil
}

// SetXKS marks a key for an external key store (XKS nil unmarks it). A
// store's external ids are unique; only symmetric encryption keys can be
// marked.
type SetXKS struct {
	KeyID string
	XKS   *XKSUse
}

func (c *SetXKS) op() string { return "SetXKS" }
func (c *SetXKS) apply(t *txn) error {
	k, err := t.key(c.KeyID)
	if err != nil {
		return err
	}
	if c.XKS != nil {
		if k.Spec != "SYMMETRIC_DEFAULT" || k.Usage != "ENCRYPT_DECRYPT" {
			return fmt.Errorf("%w: key %s is a %s key; only symmetric encryption keys serve an external key store", ErrInvalid, k.ID, k.Spec)
		}
		if c.XKS.Store == "" || c.XKS.ExternalID == "" || len(c.XKS.Usages) == 0 {
			return fmt.Errorf("%w: an external key needs a store, an external id and usages", ErrInvalid)
		}
		t.s.mu.RLock()
		other, taken := t.s.xksKeys[xksIndex(c.XKS.Store, c.XKS.ExternalID)]
		t.s.mu.RUnlock()
		if taken && other != k.ID {
			return fmt.Errorf("external key %s of store %s: %w (key %s)", c.XKS.ExternalID, c.XKS.Store, ErrAlreadyExists, other)
		}
		x := *c.XKS
		x.Usages = slices.Clone(c.XKS.Usages)
		k.XKS = &x
	} else {
		k.XKS = nil
	}
	t.keys[k.ID] = k
	return nil
}
