package quorum

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"

	"github.com/cloudflare/circl/group"
	"github.com/cloudflare/circl/secretsharing"
)

// Secret sharing. The secret (any length up to 64 KiB, typically a domain
// key) is encrypted with AES-256-GCM under a key derived with HKDF-SHA256
// from a random scalar s of the Ristretto255 group; s is split with
// Shamir's scheme over Ristretto255's scalar field (circl's secretsharing,
// constant time for this group) and each share is HPKE-encrypted (X-Wing)
// to one officer. Feldman commitments to the polynomial travel with every
// share, so each share can be checked on its own before it is combined: a
// wrong or altered share is named instead of silently giving a wrong key.

const (
	tagSplit        = "hsmgate/quorum/secret-split/v1"
	tagEncShare     = "hsmgate/quorum/encrypted-share/v1"
	tagShare        = "hsmgate/quorum/share/v1"
	infoShareKEK    = "hsmgate/quorum/share-kek/v1"
	maxSecretLength = 64 << 10
)

var shamirGroup = group.Ristretto255

// ErrNotEnoughShares: fewer distinct valid shares than the threshold.
var ErrNotEnoughShares = errors.New("quorum: not enough shares")

// ErrBadShare: a share that does not match its split's commitments, or
// shares from different splits.
var ErrBadShare = errors.New("quorum: share does not belong to this split")

// Split is what every share of one split has in common.
type Split struct {
	_ struct{} `cbor:",toarray"`
	// Tag is always "hsmgate/quorum/secret-split/v1".
	Tag string
	// ID is random, 16 bytes.
	ID []byte
	// Label says what the secret is ("domain-key/prod-eu"): printable ASCII.
	Label string
	// Epoch and SetHash are those of the quorum set split to.
	Epoch   uint64
	SetHash []byte
	// Threshold shares of Count recover the secret.
	Threshold uint64
	Count     uint64
	// Commitments are the Feldman commitments (Threshold Ristretto255
	// elements, g^a_i for the polynomial's coefficients).
	Commitments [][]byte
	// Sealed is nonce (12) || AES-256-GCM(secret), associated data the
	// encoding of this Split with Sealed empty.
	Sealed []byte
}

func (s *Split) validate() error {
	if s.Tag != tagSplit || len(s.ID) != 16 || len(s.SetHash) != 32 {
		return fmt.Errorf("%w: split header", ErrNonCanonical)
	}
	if err := checkText("split label", s.Label, 256, false); err != nil {
		return err
	}
	if s.Threshold < 1 || s.Threshold > s.Count || s.Count > 255 || uint64(len(s.Commitments)) != s.Threshold {
		return fmt.Errorf("%w: split of %d of %d with %d commitments", ErrNonCanonical, s.Threshold, s.Count, len(s.Commitments))
	}
	if len(s.Sealed) < 12+16 {
		return fmt.Errorf("%w: sealed secret too short", ErrNonCanonical)
	}
	return nil
}

func (s *Split) aad() []byte {
	c := *s
	c.Sealed = nil
	return mustMarshal(c)
}

func (s *Split) commitments() (secretsharing.SecretCommitment, error) {
	c := make(secretsharing.SecretCommitment, len(s.Commitments))
	for i, b := range s.Commitments {
		c[i] = shamirGroup.NewElement()
		if err := c[i].UnmarshalBinary(b); err != nil {
			return nil, fmt.Errorf("%w: commitment %d: %v", ErrBadShare, i, err)
		}
	}
	return c, nil
}

// EncryptedShare is one officer's share, HPKE-encrypted to them. The
// envelope's info is "hsmgate/quorum/share/v1" || 0x00 || SHA-256 of the
// encoding of [Split, Index, Officer], binding the share to its place.
type EncryptedShare struct {
	_        struct{} `cbor:",toarray"`
	Tag      string
	Split    Split
	Index    uint64 // 1..Count, the officer's position in the set's canonical order + 1
	Officer  []byte // fingerprint
	Envelope Envelope
}

type shareBinding struct {
	_       struct{} `cbor:",toarray"`
	Split   Split
	Index   uint64
	Officer []byte
}

func shareInfo(s Split, index uint64, officer []byte) []byte {
	h := sha256.Sum256(mustMarshal(shareBinding{Split: s, Index: index, Officer: officer}))
	return domainMessage(tagShare, h[:])
}

// Share is a decrypted share. It is secret: anyone holding Threshold of
// them holds the secret.
type Share struct {
	_       struct{} `cbor:",toarray"`
	Tag     string
	Split   Split
	Index   uint64
	Officer []byte
	Value   []byte // the 32-byte Ristretto255 scalar
}

// SplitSecret splits secret among set's officers: any
// set.Thresholds[KindDomainRecovery] of them recover it, fewer learn
// nothing. Share i goes to the i-th officer in canonical (fingerprint)
// order, encrypted to their X-Wing key.
func SplitSecret(secret []byte, set *Set, label string) ([]*EncryptedShare, error) {
	if len(secret) == 0 || len(secret) > maxSecretLength {
		return nil, fmt.Errorf("quorum: secret must be 1 to %d bytes", maxSecretLength)
	}
	if err := set.Validate(); err != nil {
		return nil, err
	}
	officers := set.canonical().Officers
	t := set.Thresholds[KindDomainRecovery]
	n := len(officers)
	if n > 255 {
		return nil, errors.New("quorum: at most 255 officers can share a secret")
	}
	id, err := randomBytes(16)
	if err != nil {
		return nil, err
	}
	h := set.Hash()
	s := shamirGroup.RandomNonZeroScalar(rand.Reader)
	ss := secretsharing.New(rand.Reader, uint(t-1), s)
	split := Split{Tag: tagSplit, ID: id, Label: label, Epoch: set.Epoch, SetHash: h[:], Threshold: uint64(t), Count: uint64(n)}
	for _, c := range ss.CommitSecret() {
		b, err := c.MarshalBinary()
		if err != nil {
			return nil, err
		}
		split.Commitments = append(split.Commitments, b)
	}
	split.Sealed = []byte{} // for aad: encoded as empty, as in aad()
	if err := split.seal(s, secret); err != nil {
		return nil, err
	}
	if err := split.validate(); err != nil {
		return nil, err
	}
	shares := ss.Share(uint(n))
	out := make([]*EncryptedShare, n)
	for i, o := range officers {
		v, err := shares[i].Value.MarshalBinary()
		if err != nil {
			return nil, err
		}
		fp := o.Fingerprint()
		rcpt, err := o.Recipient(KEMXWing)
		if err != nil {
			return nil, err
		}
		idx := uint64(i + 1)
		env, err := SealTo(rcpt, v, shareInfo(split, idx, fp[:]))
		if err != nil {
			return nil, err
		}
		out[i] = &EncryptedShare{Tag: tagEncShare, Split: split, Index: idx, Officer: fp[:], Envelope: *env}
	}
	return out, nil
}

func shareKey(s group.Scalar, splitID []byte) ([]byte, error) {
	ikm, err := s.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return hkdf.Key(sha256.New, ikm, splitID, infoShareKEK, 32)
}

func (sp *Split) seal(s group.Scalar, secret []byte) error {
	key, err := shareKey(s, sp.ID)
	if err != nil {
		return err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return err
	}
	nonce, err := randomBytes(gcm.NonceSize())
	if err != nil {
		return err
	}
	sp.Sealed = gcm.Seal(nonce, nonce, secret, sp.aad())
	return nil
}

func (sp *Split) open(s group.Scalar) ([]byte, error) {
	key, err := shareKey(s, sp.ID)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	n := gcm.NonceSize()
	pt, err := gcm.Open(nil, sp.Sealed[:n], sp.Sealed[n:], sp.aad())
	if err != nil {
		return nil, fmt.Errorf("%w: the recovered key does not open the sealed secret", ErrBadShare)
	}
	return pt, nil
}

// Encode returns the canonical encoding of e.
func (e *EncryptedShare) Encode() ([]byte, error) { return marshal(e) }

// DecodeEncryptedShare strictly decodes an encrypted share.
func DecodeEncryptedShare(data []byte) (*EncryptedShare, error) {
	var e EncryptedShare
	if err := unmarshalStrict(data, &e); err != nil {
		return nil, fmt.Errorf("encrypted share: %w", err)
	}
	if e.Tag != tagEncShare || len(e.Officer) != 32 {
		return nil, fmt.Errorf("%w: encrypted share header", ErrNonCanonical)
	}
	if err := e.Split.validate(); err != nil {
		return nil, err
	}
	if e.Index < 1 || e.Index > e.Split.Count {
		return nil, fmt.Errorf("%w: share index %d of %d", ErrNonCanonical, e.Index, e.Split.Count)
	}
	return &e, nil
}

// DecryptShare opens the share encrypted to k and checks it against the
// split's commitments.
func (k *OfficerKey) DecryptShare(e *EncryptedShare) (*Share, error) {
	fp := k.Fingerprint()
	if !bytes.Equal(e.Officer, fp[:]) {
		var to Fingerprint
		copy(to[:], e.Officer)
		return nil, fmt.Errorf("%w: this share is for officer %s, this key is %s", ErrNotForThisKey, to.Short(), fp.Short())
	}
	v, err := k.Open(&e.Envelope, shareInfo(e.Split, e.Index, e.Officer))
	if err != nil {
		return nil, err
	}
	sh := &Share{Tag: tagShare, Split: e.Split, Index: e.Index, Officer: e.Officer, Value: v}
	if _, err := sh.verify(); err != nil {
		return nil, err
	}
	return sh, nil
}

func (sh *Share) verify() (secretsharing.Share, error) {
	if err := sh.Split.validate(); err != nil {
		return secretsharing.Share{}, err
	}
	c, err := sh.Split.commitments()
	if err != nil {
		return secretsharing.Share{}, err
	}
	v := shamirGroup.NewScalar()
	if err := v.UnmarshalBinary(sh.Value); err != nil {
		return secretsharing.Share{}, fmt.Errorf("%w: share %d value: %v", ErrBadShare, sh.Index, err)
	}
	if sh.Index < 1 || sh.Index > sh.Split.Count {
		return secretsharing.Share{}, fmt.Errorf("%w: share index %d of %d", ErrBadShare, sh.Index, sh.Split.Count)
	}
	s := secretsharing.Share{ID: shamirGroup.NewScalar().SetUint64(sh.Index), Value: v}
	if !secretsharing.Verify(uint(sh.Split.Threshold-1), s, c) {
		return secretsharing.Share{}, fmt.Errorf("%w: share %d does not match the commitments", ErrBadShare, sh.Index)
	}
	return s, nil
}

// Encode returns the canonical encoding of sh.
func (sh *Share) Encode() ([]byte, error) { return marshal(sh) }

// DecodeShare strictly decodes a decrypted share and checks it against its
// commitments.
func DecodeShare(data []byte) (*Share, error) {
	var sh Share
	if err := unmarshalStrict(data, &sh); err != nil {
		return nil, fmt.Errorf("share: %w", err)
	}
	if sh.Tag != tagShare || len(sh.Officer) != 32 {
		return nil, fmt.Errorf("%w: share header", ErrNonCanonical)
	}
	if _, err := sh.verify(); err != nil {
		return nil, err
	}
	return &sh, nil
}

// Combine recovers the secret from at least threshold distinct shares of
// one split. threshold must be the split's (the set's domain-recovery
// threshold when it was made).
func Combine(shares []*Share, threshold int) ([]byte, error) {
	if len(shares) == 0 {
		return nil, fmt.Errorf("%w: none given", ErrNotEnoughShares)
	}
	first := shares[0].Split
	if threshold < 1 || uint64(threshold) != first.Threshold {
		return nil, fmt.Errorf("%w: the split needs %d shares, threshold %d was asked", ErrThreshold, first.Threshold, threshold)
	}
	want := mustMarshal(first)
	var good []secretsharing.Share
	var seen []uint64
	for _, sh := range shares {
		if !bytes.Equal(mustMarshal(sh.Split), want) {
			return nil, fmt.Errorf("%w: shares from different splits", ErrBadShare)
		}
		s, err := sh.verify()
		if err != nil {
			return nil, err
		}
		if slices.Contains(seen, sh.Index) {
			continue // the same share twice: count it once
		}
		seen = append(seen, sh.Index)
		good = append(good, s)
	}
	if len(good) < threshold {
		return nil, fmt.Errorf("%w: %d distinct shares, %d needed", ErrNotEnoughShares, len(good), threshold)
	}
	s, err := secretsharing.Recover(uint(threshold-1), good)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotEnoughShares, err)
	}
	return first.open(s)
}
