package kmsapi

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/hsmgate/hsmgate/gateway/keystore"
)

// Rotation rules, as AWS KMS has them.
const (
	minRotationDays     = 90
	maxRotationDays     = 2560
	defaultRotationDays = 365
	// maxOnDemandRotations is AWS's lifetime limit of RotateKeyOnDemand
	// calls per key.
	maxOnDemandRotations = 25
	minPendingWindowDays = 7
	maxPendingWindowDays = 30
)

// GCM limits: NIST SP 800-38D bounds a key to 2^32 encryptions with random
// 96-bit IVs. A version stops encrypting, and its key rotates, when the
// encryptions reserved for it would pass DefaultGCMLimit; reservations are
// made DefaultGCMReserve at a time, so the keystore is written once per
// that many encryptions.
const (
	DefaultGCMLimit   = 1<<32 - 1<<24
	DefaultGCMReserve = 1 << 16
)

// RotationEvent is one rotation, for the audit log: automatic (scheduled
// or forced by the GCM limit) or on demand.
type RotationEvent struct {
	KeyID   string
	Version uint32 // the new version; 0 if Err is set
	Type    string // keystore.RotationAutomatic or RotationOnDemand
	Reason  string // "schedule", "gcm-limit" or "on-demand"
	// Principal is the caller whose request caused the rotation (on
	// demand, or at the GCM limit); empty for scheduled rotations.
	Principal string
	Err       error
}

// DeletionEvent is the end of a key's pending-deletion window.
type DeletionEvent struct {
	KeyID string
	Err   error
}

type rotationStatusResponse struct {
	KeyId                     string
	KeyRotationEnabled        bool
	RotationPeriodInDays      *int   `json:",omitempty"`
	NextRotationDate          *Epoch `json:",omitempty"`
	OnDemandRotationStartDate *Epoch `json:",omitempty"`
}

type enableRotationRequest struct {
	KeyId                string
	RotationPeriodInDays *int
}

type keyIDResponse struct{ KeyId string }

type rotationEntry struct {
	KeyId        string
	RotationDate Epoch
	RotationType string
}

type listRotationsResponse struct {
	Rotations  []rotationEntry
	NextMarker string `json:",omitempty"`
	Truncated  bool
}

type scheduleDeletionRequest struct {
	KeyId               string
	PendingWindowInDays *int
}

type scheduleDeletionResponse struct {
	KeyId               string
	DeletionDate        Epoch
	KeyState            string
	PendingWindowInDays int
}

// rotatable checks that k is a key AWS lets rotate: symmetric encryption,
// generated in the HSMs, customer managed, and enabled.
func (s *Service) rotatable(k *keystore.Key, what string) error {
	switch {
	case k.Managed():
		return managedRefusal(s, k, "it rotates every year and its rotation can't be changed")
	case k.Spec != symmetricDefault:
		return Errorf(ExUnsupported, "%s is a %s key; %s works only on symmetric encryption keys.", s.KeyARN(k.ID), k.Spec, what)
	case k.Origin != "AWS_KMS":
		return Errorf(ExUnsupported, "%s has imported key material (origin %s); %s works only on keys generated in the HSMs.", s.KeyARN(k.ID), k.Origin, what)
	case k.State == keystore.StateDisabled:
		return Errorf(ExDisabled, "%s is disabled.", s.KeyARN(k.ID))
	case k.State != keystore.StateEnabled:
		return Errorf(ExInvalidState, "%s is %s.", s.KeyARN(k.ID), pendingWord(k.State))
	}
	return nil
}

func (s *Service) enableKeyRotation(ctx context.Context, c Caller, req *enableRotationRequest) (*empty, error) {
	days := defaultRotationDays
	if req.RotationPeriodInDays != nil {
		days = *req.RotationPeriodInDays
		if days < minRotationDays || days > maxRotationDays {
			return nil, Errorf(ExValidation, "RotationPeriodInDays must be between %d and %d.", minRotationDays, maxRotationDays)
		}
	}
	k, err := s.authorized(ctx, c, "EnableKeyRotation", req.KeyId)
	if err != nil {
		return nil, err
	}
	if err := s.rotatable(k, "automatic rotation"); err != nil {
		return nil, err
	}
	// The next rotation is a period after the newest version was made,
	// or now if that has passed.
	now := s.now().UTC()
	next := k.Current().CreatedAt.AddDate(0, 0, days)
	if next.Before(now) {
		next = now
	}
	if err := s.Store.Apply(&keystore.SetRotation{KeyID: k.ID, PeriodDays: days, Next: next}); err != nil {
		return nil, err
	}
	return &empty{}, nil
}

func (s *Service) disableKeyRotation(ctx context.Context, c Caller, req *keyIDRequest) (*empty, error) {
	k, err := s.authorized(ctx, c, "DisableKeyRotation", req.KeyId)
	if err != nil {
		return nil, err
	}
	if err := s.rotatable(k, "automatic rotation"); err != nil {
		return nil, err
	}
	if err := s.Store.Apply(&keystore.SetRotation{KeyID: k.ID}); err != nil {
		return nil, err
	}
	return &empty{}, nil
}

func (s *Service) getKeyRotationStatus(ctx context.Context, c Caller, req *keyIDRequest) (*rotationStatusResponse, error) {
	k, err := s.authorized(ctx, c, "GetKeyRotationStatus", req.KeyId)
	if err != nil {
		return nil, err
	}
	if k.State == keystore.StatePendingDeletion {
		return nil, Errorf(ExInvalidState, "%s is pending deletion.", s.KeyARN(k.ID))
	}
	out := &rotationStatusResponse{KeyId: s.KeyARN(k.ID), KeyRotationEnabled: k.RotationPeriodDays > 0}
	if out.KeyRotationEnabled {
		days := k.RotationPeriodDays
		next := Epoch(k.NextRotation)
		out.RotationPeriodInDays, out.NextRotationDate = &days, &next
	}
	return out, nil
}

func (s *Service) rotateKeyOnDemand(ctx context.Context, c Caller, req *keyIDRequest) (*keyIDResponse, error) {
	k, err := s.authorized(ctx, c, "RotateKeyOnDemand", req.KeyId)
	if err != nil {
		return nil, err
	}
	if err := s.rotatable(k, "RotateKeyOnDemand"); err != nil {
		return nil, err
	}
	if k.OnDemandRotations >= maxOnDemandRotations {
		return nil, Errorf(ExLimitExceeded, "%s has been rotated on demand %d times, the most a key may be.", s.KeyARN(k.ID), maxOnDemandRotations)
	}
	v, err := s.rotateLocked(ctx, k.ID, 0, keystore.RotationOnDemand, "on-demand", time.Time{})
	if err != nil {
		return nil, err
	}
	noteVersion(ctx, v)
	return &keyIDResponse{KeyId: s.KeyARN(k.ID)}, nil
}

func (s *Service) listKeyRotations(ctx context.Context, c Caller, req *listRequest) (*listRotationsResponse, error) {
	limit, err := limitOf(req.Limit)
	if err != nil {
		return nil, err
	}
	k, err := s.authorized(ctx, c, "ListKeyRotations", req.KeyId)
	if err != nil {
		return nil, err
	}
	if k.Spec != symmetricDefault {
		return nil, Errorf(ExUnsupported, "%s is a %s key, which never rotates.", s.KeyARN(k.ID), k.Spec)
	}
	after := uint32(1) // version 1 is the key's original material, not a rotation
	if req.Marker != "" {
		m, err := strconv.ParseUint(req.Marker, 10, 32)
		if err != nil {
			return nil, Errorf(ExValidation, "Marker is not one this operation returned.")
		}
		after = max(after, uint32(m))
	}
	out := &listRotationsResponse{Rotations: []rotationEntry{}}
	for _, v := range k.Versions {
		if v.Number <= after {
			continue
		}
		if len(out.Rotations) == limit {
			out.Truncated, out.NextMarker = true, strconv.FormatUint(uint64(v.Number-1), 10)
			break
		}
		typ := v.RotationType
		if typ == "" {
			typ = keystore.RotationAutomatic
		}
		out.Rotations = append(out.Rotations, rotationEntry{KeyId: s.KeyARN(k.ID), RotationDate: Epoch(v.CreatedAt), RotationType: typ})
	}
	return out, nil
}

// rotationLocks serialises rotations per key, so that two triggers (the
// schedule and the GCM limit, or two gateways' requests) make one version.
type rotationLocks struct {
	mu sync.Mutex
	m  map[string]*sync.Mutex
}

func (r *rotationLocks) lock(id string) func() {
	r.mu.Lock()
	if r.m == nil {
		r.m = map[string]*sync.Mutex{}
	}
	l, ok := r.m[id]
	if !ok {
		l = &sync.Mutex{}
		r.m[id] = l
	}
	r.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// rotateLocked adds a version to key id, unless its newest version is no
// longer ifCurrent (when ifCurrent is not 0: someone rotated it already).
// next, when not zero, is the next automatic rotation's due time. The new
// material is generated and wrapped in the HSM first; the keystore then
// records it in one command, so a crash leaves either the old state or the
// new one, never a version without material.
func (s *Service) rotateLocked(ctx context.Context, id string, ifCurrent uint32, typ, reason string, next time.Time) (uint32, error) {
	unlock := s.rotations.lock(id)
	defer unlock()
	k, err := s.Store.Key(id)
	if err != nil {
		return 0, err
	}
	if cur := k.Current().Number; ifCurrent != 0 && cur != ifCurrent {
		return cur, nil
	}
	v, err := s.rotate(ctx, k, typ, next)
	ev := RotationEvent{KeyID: id, Version: v, Type: typ, Reason: reason, Err: err}
	if c := reqOf(ctx).caller; c != nil {
		ev.Principal = c.Principal
	}
	s.rotated(ctx, ev)
	return v, err
}

// rotated reports a rotation to the hook (the gateway's audit log).
func (s *Service) rotated(ctx context.Context, ev RotationEvent) {
	if ev.Err != nil && s.Log != nil {
		s.Log.Error("key rotation failed", "key_id", ev.KeyID, "reason", ev.Reason, "err", ev.Err)
	}
	if s.OnRotation != nil {
		s.OnRotation(ctx, ev)
	}
}

// RotateDue rotates every key whose automatic rotation is due at now: a
// new version is generated in the HSM pool and becomes the one Encrypt
// uses; older versions keep decrypting what they encrypted. A rotation
// missed while the gateway was down happens once, at the next call, and
// the next one is scheduled a period after now. Disabled keys and keys
// pending deletion are not rotated (as AWS does); they rotate once enabled
// again. Each rotation is reported to OnRotation.
func (s *Service) RotateDue(ctx context.Context, now time.Time) []RotationEvent {
	now = now.UTC()
	due, _ := s.Store.Keys("", 1<<30, func(k *keystore.Key) bool {
		return k.RotationPeriodDays > 0 && !k.NextRotation.After(now) && k.State == keystore.StateEnabled
	})
	out := make([]RotationEvent, 0, len(due))
	for _, k := range due {
		next := now.AddDate(0, 0, k.RotationPeriodDays)
		v, err := s.rotateLocked(ctx, k.ID, k.Current().Number, keystore.RotationAutomatic, "schedule", next)
		out = append(out, RotationEvent{KeyID: k.ID, Version: v, Type: keystore.RotationAutomatic, Reason: "schedule", Err: err})
	}
	return out
}

// gcmBudget is this gateway's unused reservation of encryptions for one
// key version.
type gcmBudget struct {
	mu   sync.Mutex
	left uint64
}

var errVersionExhausted = errors.New("key version reached its AES-GCM encryption limit")

// takeEncryption counts one AES-GCM encryption with version v of k,
// reserving a block in the keystore when this gateway's reservation is
// used up. It returns errVersionExhausted when the version may not encrypt
// any more.
func (s *Service) takeEncryption(k *keystore.Key, v *keystore.Version) error {
	kv := keyVersion{k.ID, v.Number}
	b, ok := s.gcm.Load(kv)
	if !ok {
		b, _ = s.gcm.LoadOrStore(kv, &gcmBudget{})
	}
	budget := b.(*gcmBudget)
	budget.mu.Lock()
	defer budget.mu.Unlock()
	if budget.left > 0 {
		budget.left--
		return nil
	}
	limit, block := s.gcmLimits()
	cur, err := s.Store.Key(k.ID)
	if err != nil {
		return err
	}
	cv := cur.Version(v.Number)
	if cv == nil {
		return errVersionExhausted
	}
	if cv.GCMReserved+block > limit {
		return errVersionExhausted
	}
	if err := s.Store.Apply(&keystore.ReserveEncryptions{KeyID: k.ID, Version: v.Number, Count: block}); err != nil {
		return fmt.Errorf("reserve encryptions: %w", err)
	}
	budget.left = block - 1
	return nil
}

func (s *Service) gcmLimits() (limit, block uint64) {
	limit, block = DefaultGCMLimit, DefaultGCMReserve
	if s.GCMLimit > 0 {
		limit = s.GCMLimit
	}
	if s.GCMReserve > 0 {
		block = s.GCMReserve
	}
	return limit, block
}

func (s *Service) scheduleKeyDeletion(ctx context.Context, c Caller, req *scheduleDeletionRequest) (*scheduleDeletionResponse, error) {
	days := maxPendingWindowDays
	if req.PendingWindowInDays != nil {
		days = *req.PendingWindowInDays
		if days < minPendingWindowDays || days > maxPendingWindowDays {
			return nil, Errorf(ExValidation, "PendingWindowInDays must be between %d and %d.", minPendingWindowDays, maxPendingWindowDays)
		}
	}
	k, err := s.authorized(ctx, c, "ScheduleKeyDeletion", req.KeyId)
	if err != nil {
		return nil, err
	}
	if k.Managed() {
		return nil, managedRefusal(s, k, "it can't be deleted")
	}
	if k.State == keystore.StatePendingDeletion {
		return nil, Errorf(ExInvalidState, "%s is already pending deletion.", s.KeyARN(k.ID))
	}
	date := s.now().UTC().AddDate(0, 0, days)
	if err := s.Store.Apply(&keystore.ScheduleDeletion{KeyID: k.ID, Date: date, WindowDays: days}); err != nil {
		return nil, err
	}
	return &scheduleDeletionResponse{KeyId: s.KeyARN(k.ID), DeletionDate: Epoch(date), KeyState: keystore.StatePendingDeletion, PendingWindowInDays: days}, nil
}

func (s *Service) cancelKeyDeletion(ctx context.Context, c Caller, req *keyIDRequest) (*keyIDResponse, error) {
	k, err := s.authorized(ctx, c, "CancelKeyDeletion", req.KeyId)
	if err != nil {
		return nil, err
	}
	if k.State != keystore.StatePendingDeletion {
		return nil, Errorf(ExInvalidState, "%s is not pending deletion.", s.KeyARN(k.ID))
	}
	if err := s.Store.Apply(&keystore.CancelDeletion{KeyID: k.ID}); err != nil {
		return nil, err
	}
	return &keyIDResponse{KeyId: s.KeyARN(k.ID)}, nil
}

// DeleteDue deletes every key whose pending-deletion window has ended at
// now: its record, wrapped material, aliases and grants leave the
// keystore, and requests naming it get NotFoundException. Audit records
// that name it stay.
func (s *Service) DeleteDue(ctx context.Context, now time.Time) []DeletionEvent {
	due, _ := s.Store.Keys("", 1<<30, func(k *keystore.Key) bool {
		return k.State == keystore.StatePendingDeletion && !k.DeletionDate.After(now)
	})
	out := make([]DeletionEvent, 0, len(due))
	for _, k := range due {
		err := s.Store.Apply(&keystore.DeleteKey{KeyID: k.ID})
		if err == nil {
			for _, v := range k.Versions {
				s.keys.Delete(keyVersion{k.ID, v.Number})
				s.gcm.Delete(keyVersion{k.ID, v.Number})
			}
			s.policies.m.Delete(k.ID)
			if s.Log != nil {
				s.Log.Info("deleted key at the end of its pending window", "key_id", k.ID)
			}
		}
		out = append(out, DeletionEvent{KeyID: k.ID, Err: err})
	}
	return out
}
