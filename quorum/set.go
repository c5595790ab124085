package quorum

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
)

const tagSet = "hsmgate/quorum/set/v1"

// Kind is an operation kind that the quorum gates.
type Kind string

// The operation kinds. Every Set has a threshold for each.
const (
	KindKeyExport          Kind = "key-export"
	KindDomainRecovery     Kind = "domain-recovery"
	KindFirmwareActivation Kind = "firmware-activation"
	KindSetChange          Kind = "set-change"
	KindKeyOperation       Kind = "key-operation"
	// KindReleaseTrust changes the firmware images' trusted release keys
	// (package images). A set made before it existed has no threshold for
	// it: the firmware-activation threshold applies (Set.Threshold).
	KindReleaseTrust Kind = "release-trust"
)

// Kinds lists every kind, in a fixed order.
var Kinds = []Kind{KindKeyExport, KindDomainRecovery, KindFirmwareActivation, KindSetChange, KindKeyOperation, KindReleaseTrust}

// Threshold is how many distinct officers must approve kind k.
func (s *Set) Threshold(k Kind) int {
	if t, ok := s.Thresholds[k]; ok {
		return t
	}
	if k == KindReleaseTrust {
		return s.Thresholds[KindFirmwareActivation]
	}
	return 0
}

// Valid reports whether k is one of Kinds.
func (k Kind) Valid() bool { return slices.Contains(Kinds, k) }

// ErrThreshold: a threshold the set validation refuses.
var ErrThreshold = errors.New("quorum: invalid threshold")

// Set is the quorum set: the officers' public keys, a threshold per
// operation kind, and an epoch that every change increments.
type Set struct {
	// Epoch starts at 1 and goes up by exactly 1 with every set change.
	Epoch uint64
	// Officers, in canonical order (ascending fingerprint) once encoded.
	Officers []OfficerPublicKey
	// Thresholds: how many distinct officers must approve each kind.
	Thresholds map[Kind]int
}

type setWire struct {
	_          struct{} `cbor:",toarray"`
	Tag        string
	Epoch      uint64
	Officers   []OfficerPublicKey
	Thresholds map[Kind]int
}

// Validate checks the set: at least one officer, no two with the same
// fingerprint (or the same Ed25519, ML-DSA-65 or HPKE key), epoch ≥ 1, and
// a threshold for every kind: for set changes at least 2 and more than half
// the officers, for the others between 1 and the number of officers.
func (s *Set) Validate() error {
	if s.Epoch < 1 {
		return errors.New("quorum: set epoch must be at least 1")
	}
	n := len(s.Officers)
	if n == 0 {
		return errors.New("quorum: set has no officers")
	}
	seen := map[string]string{}
	for _, o := range s.Officers {
		if err := o.validate(); err != nil {
			return err
		}
		fp := o.Fingerprint()
		for what, key := range map[string][]byte{"fingerprint": fp[:], "Ed25519 key": o.Ed25519, "ML-DSA-65 key": o.MLDSA65, "X25519 key": o.X25519, "X-Wing key": o.XWing} {
			id := what + ":" + string(key)
			if prev, dup := seen[id]; dup {
				return fmt.Errorf("quorum: officers %q and %q have the same %s", prev, o.Name, what)
			}
			seen[id] = o.Name
		}
	}
	for k := range s.Thresholds {
		if !k.Valid() {
			return fmt.Errorf("%w: unknown operation kind %q", ErrThreshold, k)
		}
	}
	for _, k := range Kinds {
		t, ok := s.Thresholds[k]
		if !ok && k == KindReleaseTrust {
			continue // Threshold falls back to firmware-activation's
		}
		if !ok {
			return fmt.Errorf("%w: no threshold for %s", ErrThreshold, k)
		}
		if err := CheckThreshold(k, t, n); err != nil {
			return err
		}
	}
	return nil
}

// CheckThreshold applies the threshold rule for kind with n officers.
func CheckThreshold(kind Kind, t, n int) error {
	if kind == KindSetChange {
		if t < 2 || 2*t <= n || t > n {
			return fmt.Errorf("%w: a set change needs at least 2 and more than half of the %d officers (and no more than %d), not %d", ErrThreshold, n, n, t)
		}
		return nil
	}
	if t < 1 || t > n {
		return fmt.Errorf("%w: %s threshold %d must be between 1 and the %d officers", ErrThreshold, kind, t, n)
	}
	return nil
}

// canonical returns a copy of s with the officers sorted by fingerprint.
func (s *Set) canonical() setWire {
	type entry struct {
		fp Fingerprint
		o  OfficerPublicKey
	}
	es := make([]entry, len(s.Officers))
	for i, o := range s.Officers {
		es[i] = entry{o.Fingerprint(), o}
	}
	slices.SortFunc(es, func(a, b entry) int { return bytes.Compare(a.fp[:], b.fp[:]) })
	offs := make([]OfficerPublicKey, len(es))
	for i, e := range es {
		offs[i] = e.o
	}
	return setWire{Tag: tagSet, Epoch: s.Epoch, Officers: offs, Thresholds: s.Thresholds}
}

// Encode validates s and returns its canonical encoding (officers sorted by
// fingerprint, deterministic CBOR).
func (s *Set) Encode() ([]byte, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return marshal(s.canonical())
}

// Hash is SHA-256 of the canonical encoding. It panics on an invalid set;
// call Validate first for sets not from DecodeSet.
func (s *Set) Hash() [32]byte {
	b, err := s.Encode()
	if err != nil {
		panic(err)
	}
	return sha256.Sum256(b)
}

// DecodeSet strictly decodes and validates a canonical set encoding.
func DecodeSet(data []byte) (*Set, error) {
	var w setWire
	if err := unmarshalStrict(data, &w); err != nil {
		return nil, fmt.Errorf("quorum set: %w", err)
	}
	if w.Tag != tagSet {
		return nil, fmt.Errorf("%w: quorum set tag %q", ErrNonCanonical, w.Tag)
	}
	s := &Set{Epoch: w.Epoch, Officers: w.Officers, Thresholds: w.Thresholds}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	again, _ := s.Encode()
	if !bytes.Equal(again, data) {
		return nil, fmt.Errorf("%w: quorum set officers are not in fingerprint order", ErrNonCanonical)
	}
	return s, nil
}

// Officer returns the officer with fingerprint fp.
func (s *Set) Officer(fp Fingerprint) (OfficerPublicKey, bool) {
	for _, o := range s.Officers {
		if o.Fingerprint() == fp {
			return o, true
		}
	}
	return OfficerPublicKey{}, false
}

// Index returns the 0-based position of fp in the canonical officer order,
// or -1.
func (s *Set) Index(fp Fingerprint) int {
	for i, o := range s.canonical().Officers {
		if o.Fingerprint() == fp {
			return i
		}
	}
	return -1
}

// Render is a human-readable description of the set.
func (s *Set) Render() string {
	var b strings.Builder
	h := s.Hash()
	fmt.Fprintf(&b, "quorum set, epoch %d, hash %s\n", s.Epoch, hex.EncodeToString(h[:]))
	fmt.Fprintf(&b, "  %d officers:\n", len(s.Officers))
	for _, o := range s.canonical().Officers {
		fp := o.Fingerprint()
		fmt.Fprintf(&b, "    %-24q %s\n", o.Name, fp)
	}
	b.WriteString("  thresholds:\n")
	for _, k := range Kinds {
		fmt.Fprintf(&b, "    %-22s %d of %d\n", k, s.Threshold(k), len(s.Officers))
	}
	return b.String()
}
