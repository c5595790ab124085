package images

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
)

const tagTrust = "hsmgate/images/trust/v1"

// MaxKeys bounds the keys of each role in a Trust.
const MaxKeys = 64

// Trust is the appliance's trusted state for firmware images: which keys
// sign releases and how many must (like TUF's targets role), and optionally
// which keys sign timestamps and how many must (TUF's timestamp role, for
// freeze protection). Changing it is a quorum operation; Version goes up by
// one with every change.
type Trust struct {
	// Version is the trust record's version: 1 for the first, +1 for each
	// change.
	Version uint64
	// ReleaseKeys sign manifests (1 to MaxKeys keys).
	ReleaseKeys []TrustedKey
	// ReleaseThreshold is how many distinct release keys must sign a
	// manifest: 1 to len(ReleaseKeys).
	ReleaseThreshold int
	// TimestampKeys sign timestamps (0 to MaxKeys keys). None means
	// freeze protection is off: no timestamp is asked for.
	TimestampKeys []TrustedKey
	// TimestampThreshold is how many distinct timestamp keys must sign a
	// timestamp: 0 without timestamp keys, else 1 to len(TimestampKeys).
	TimestampThreshold int
}

// TrustedKey is a key and the name it is shown under.
type TrustedKey struct {
	_ struct{} `cbor:",toarray"`
	// Name labels the key for people ("release-1", an officer's name):
	// 1–128 bytes of printable ASCII, spaces only inside.
	Name string
	// Key is the public key.
	Key PublicKey
}

// The PublicKey inside a TrustedKey encodes as [scheme, key].
func (k PublicKey) MarshalCBOR() ([]byte, error) {
	return codec.Marshal(keyWire{Scheme: k.Scheme, Key: k.Key})
}

func (k *PublicKey) UnmarshalCBOR(data []byte) error {
	var w keyWire
	if err := codec.Decode(data, &w); err != nil {
		return err
	}
	k.Scheme, k.Key = w.Scheme, w.Key
	return nil
}

type keyWire struct {
	_      struct{} `cbor:",toarray"`
	Scheme string
	Key    []byte
}

type trustWire struct {
	_                  struct{} `cbor:",toarray"`
	Tag                string
	Version            uint64
	ReleaseKeys        []TrustedKey
	ReleaseThreshold   uint64
	TimestampKeys      []TrustedKey
	TimestampThreshold uint64
}

// ErrTrust: a Trust that Validate refuses.
var ErrTrust = errors.New("images: invalid trust")

// Validate checks the trust record: version ≥ 1; 1 to MaxKeys release
// keys and a release threshold between 1 and their number; 0 to MaxKeys
// timestamp keys and a timestamp threshold of 0 without them, else between
// 1 and their number; every key valid and named; no key listed twice, in
// either role or across the two, and no two keys sharing Ed25519 key
// material (a plain Ed25519 key equal to an officer key's Ed25519 half),
// so that one holder can never count twice.
func (t *Trust) Validate() error {
	if t.Version < 1 {
		return fmt.Errorf("%w: version must be at least 1", ErrTrust)
	}
	if n := len(t.ReleaseKeys); n < 1 || n > MaxKeys {
		return fmt.Errorf("%w: %d release keys (want 1 to %d)", ErrTrust, n, MaxKeys)
	}
	if t.ReleaseThreshold < 1 || t.ReleaseThreshold > len(t.ReleaseKeys) {
		return fmt.Errorf("%w: release threshold %d must be between 1 and the %d release keys", ErrTrust, t.ReleaseThreshold, len(t.ReleaseKeys))
	}
	if n := len(t.TimestampKeys); n > MaxKeys {
		return fmt.Errorf("%w: %d timestamp keys (at most %d)", ErrTrust, n, MaxKeys)
	}
	if len(t.TimestampKeys) == 0 && t.TimestampThreshold != 0 {
		return fmt.Errorf("%w: timestamp threshold %d without timestamp keys", ErrTrust, t.TimestampThreshold)
	}
	if len(t.TimestampKeys) > 0 && (t.TimestampThreshold < 1 || t.TimestampThreshold > len(t.TimestampKeys)) {
		return fmt.Errorf("%w: timestamp threshold %d must be between 1 and the %d timestamp keys", ErrTrust, t.TimestampThreshold, len(t.TimestampKeys))
	}
	ids := map[KeyID]string{}
	material := map[string]string{}
	for _, role := range []struct {
		name string
		keys []TrustedKey
	}{{"release", t.ReleaseKeys}, {"timestamp", t.TimestampKeys}} {
		for _, k := range role.keys {
			if err := checkText(role.name+" key name", k.Name, 128, true); err != nil {
				return fmt.Errorf("%w: %v", ErrTrust, err)
			}
			if err := k.Key.Validate(); err != nil {
				return fmt.Errorf("%w: %s key %q: %v", ErrTrust, role.name, k.Name, err)
			}
			id := k.Key.ID()
			if prev, dup := ids[id]; dup {
				return fmt.Errorf("%w: keys %q and %q are the same key", ErrTrust, prev, k.Name)
			}
			ids[id] = k.Name
			m := string(k.Key.ed25519Material())
			if prev, dup := material[m]; dup {
				return fmt.Errorf("%w: keys %q and %q share their Ed25519 key", ErrTrust, prev, k.Name)
			}
			material[m] = k.Name
		}
	}
	return nil
}

// sortedKeys returns keys ordered by ascending key id, the canonical order.
func sortedKeys(keys []TrustedKey) []TrustedKey {
	out := slices.Clone(keys)
	slices.SortFunc(out, func(a, b TrustedKey) int {
		ia, ib := a.Key.ID(), b.Key.ID()
		return bytes.Compare(ia[:], ib[:])
	})
	return out
}

// Encode returns the canonical encoding: deterministic CBOR of [tag,
// version, release keys, release threshold, timestamp keys, timestamp
// threshold], each key [name, [scheme, key]], keys in ascending key id
// order.
func (t *Trust) Encode() ([]byte, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return marshal(trustWire{
		Tag: tagTrust, Version: t.Version,
		ReleaseKeys: sortedKeys(t.ReleaseKeys), ReleaseThreshold: uint64(t.ReleaseThreshold),
		TimestampKeys: sortedKeys(t.TimestampKeys), TimestampThreshold: uint64(t.TimestampThreshold),
	})
}

// Hash is the SHA-256 of the canonical encoding.
func (t *Trust) Hash() ([32]byte, error) {
	b, err := t.Encode()
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(b), nil
}

// DecodeTrust strictly decodes and validates a canonical trust encoding
// (keys in key id order).
func DecodeTrust(data []byte) (*Trust, error) {
	var w trustWire
	if err := unmarshalStrict(data, &w); err != nil {
		return nil, fmt.Errorf("trust: %w", err)
	}
	if w.Tag != tagTrust {
		return nil, fmt.Errorf("%w: trust tag %q", ErrNonCanonical, w.Tag)
	}
	if w.ReleaseThreshold > MaxKeys || w.TimestampThreshold > MaxKeys {
		return nil, fmt.Errorf("%w: threshold above %d", ErrTrust, MaxKeys)
	}
	t := &Trust{
		Version: w.Version, ReleaseKeys: w.ReleaseKeys, ReleaseThreshold: int(w.ReleaseThreshold),
		TimestampKeys: w.TimestampKeys, TimestampThreshold: int(w.TimestampThreshold),
	}
	again, err := t.Encode()
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(again, data) {
		return nil, fmt.Errorf("%w: trust keys are not in key id order", ErrNonCanonical)
	}
	return t, nil
}

// FreezeProtection reports whether the trust asks for timestamps.
func (t *Trust) FreezeProtection() bool { return len(t.TimestampKeys) > 0 }
