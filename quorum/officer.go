package quorum

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/cloudflare/circl/hpke"
	"github.com/cloudflare/circl/kem"
	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
)

// Domain tags. Each record carries its own tag as field 0 and each signed
// message starts with one, so that no bytes valid in one role are valid in
// another.
const (
	tagOfficerPublic = "hsmgate/quorum/officer-public-key/v1"
	tagOfficerSecret = "hsmgate/quorum/officer-secret/v1"
	tagHybridSig     = "hsmgate/quorum/hybrid-signature/v1"
)

// Fingerprint identifies an officer: the SHA-256 of the canonical encoding
// of its OfficerPublicKey. Approvals are counted by distinct fingerprint.
type Fingerprint [32]byte

// String is the full fingerprint in lower-case hex.
func (f Fingerprint) String() string { return hex.EncodeToString(f[:]) }

// Short is the first 8 bytes in hex, grouped in fours for reading aloud
// (e.g. "3f2a-91c0-77de-0b14"). It is for display only: compare full
// fingerprints.
func (f Fingerprint) Short() string {
	h := hex.EncodeToString(f[:8])
	return h[0:4] + "-" + h[4:8] + "-" + h[8:12] + "-" + h[12:16]
}

// ParseFingerprint parses 64 hex digits.
func ParseFingerprint(s string) (Fingerprint, error) {
	var f Fingerprint
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(f) {
		return f, fmt.Errorf("quorum: fingerprint %q: want 64 hex digits", s)
	}
	copy(f[:], b)
	return f, nil
}

// OfficerPublicKey is the public record of an officer: both halves of the
// hybrid signature key, and the officer's HPKE public keys (X25519 and
// X-Wing) for the shares and exports encrypted to them.
type OfficerPublicKey struct {
	_ struct{} `cbor:",toarray"`
	// Tag is always "hsmgate/quorum/officer-public-key/v1".
	Tag string
	// Name is a human label ("alice@example.com"): printable ASCII, 1–128
	// bytes. It is bound into the fingerprint.
	Name string
	// Ed25519 is the 32-byte Ed25519 public key.
	Ed25519 []byte
	// MLDSA65 is the 1952-byte ML-DSA-65 public key.
	MLDSA65 []byte
	// X25519 is the 32-byte public key for HPKE with DHKEM(X25519, HKDF-SHA256).
	X25519 []byte
	// XWing is the 1216-byte public key for HPKE with X-Wing (X25519 + ML-KEM-768).
	XWing []byte
}

// Encode returns the canonical encoding of k.
func (k OfficerPublicKey) Encode() ([]byte, error) {
	if err := k.checkShape(); err != nil {
		return nil, err
	}
	return marshal(k)
}

// Fingerprint is SHA-256 of the canonical encoding. It panics on a record
// whose fields have the wrong lengths (records from
// DecodeOfficerPublicKey, a decoded or validated Set, or OfficerKey.Public
// never do).
func (k OfficerPublicKey) Fingerprint() Fingerprint {
	b, err := k.Encode()
	if err != nil {
		panic(err)
	}
	return sha256.Sum256(b)
}

// DecodeOfficerPublicKey strictly decodes a canonical OfficerPublicKey.
func DecodeOfficerPublicKey(data []byte) (OfficerPublicKey, error) {
	var k OfficerPublicKey
	if err := unmarshalStrict(data, &k); err != nil {
		return OfficerPublicKey{}, fmt.Errorf("officer public key: %w", err)
	}
	if err := k.validate(); err != nil {
		return OfficerPublicKey{}, err
	}
	return k, nil
}

// checkShape checks the tag, the name and the key lengths: enough for a
// well-defined encoding and fingerprint.
func (k OfficerPublicKey) checkShape() error {
	if k.Tag != tagOfficerPublic {
		return fmt.Errorf("%w: officer public key tag %q", ErrNonCanonical, k.Tag)
	}
	if err := checkText("officer name", k.Name, 128, true); err != nil {
		return err
	}
	if len(k.Ed25519) != ed25519.PublicKeySize || len(k.MLDSA65) != mldsa65.PublicKeySize ||
		len(k.X25519) != KEMX25519.Scheme().PublicKeySize() || len(k.XWing) != KEMXWing.Scheme().PublicKeySize() {
		return fmt.Errorf("quorum: officer %q: a public key of the wrong length", k.Name)
	}
	return nil
}

// validate is checkShape and parses every key.
func (k OfficerPublicKey) validate() error {
	if err := k.checkShape(); err != nil {
		return err
	}
	// Any 1952 bytes are an ML-DSA-65 public key (ρ and packed t1), and
	// any 32 bytes an Ed25519 or X25519 one as far as parsing goes; X-Wing's
	// ML-KEM part has a modulus check.
	if _, err := hpke.KEM_X25519_HKDF_SHA256.Scheme().UnmarshalBinaryPublicKey(k.X25519); err != nil {
		return fmt.Errorf("quorum: officer %q: X25519 key: %v", k.Name, err)
	}
	if _, err := hpke.KEM_XWING.Scheme().UnmarshalBinaryPublicKey(k.XWing); err != nil {
		return fmt.Errorf("quorum: officer %q: X-Wing key: %v", k.Name, err)
	}
	return nil
}

// Equal reports whether k and o are the same record.
func (k OfficerPublicKey) Equal(o OfficerPublicKey) bool {
	return k.Tag == o.Tag && k.Name == o.Name && bytes.Equal(k.Ed25519, o.Ed25519) &&
		bytes.Equal(k.MLDSA65, o.MLDSA65) && bytes.Equal(k.X25519, o.X25519) && bytes.Equal(k.XWing, o.XWing)
}

// Recipient returns the officer's HPKE public key for kem (KEMX25519 or
// KEMXWing).
func (k OfficerPublicKey) Recipient(kemID hpke.KEM) (RecipientKey, error) {
	switch kemID {
	case KEMX25519:
		return RecipientKey{KEM: uint16(kemID), PublicKey: k.X25519}, nil
	case KEMXWing:
		return RecipientKey{KEM: uint16(kemID), PublicKey: k.XWing}, nil
	}
	return RecipientKey{}, fmt.Errorf("quorum: unsupported HPKE KEM %#04x", uint16(kemID))
}

// HybridSignature is the canonical pair of an Ed25519 signature and an
// ML-DSA-65 signature over the same message; both must verify.
type HybridSignature struct {
	_       struct{} `cbor:",toarray"`
	Ed25519 []byte
	MLDSA65 []byte
}

// ErrBadSignature: a signature that does not verify, for example one made
// over other bytes than the proposal it is presented with.
var ErrBadSignature = errors.New("quorum: signature does not verify")

// hybridMessage is what both halves sign: a domain tag, a zero byte, msg.
func hybridMessage(msg []byte) []byte {
	m := make([]byte, 0, len(tagHybridSig)+1+len(msg))
	m = append(m, tagHybridSig...)
	m = append(m, 0)
	return append(m, msg...)
}

// VerifySignature checks sig (an encoded HybridSignature) over msg: both the
// Ed25519 and the ML-DSA-65 signature must verify. It returns
// ErrBadSignature (or ErrNonCanonical for a malformed encoding).
func (k OfficerPublicKey) VerifySignature(msg, sig []byte) error {
	var hs HybridSignature
	if err := unmarshalStrict(sig, &hs); err != nil {
		return fmt.Errorf("signature: %w", err)
	}
	if len(hs.Ed25519) != ed25519.SignatureSize || len(hs.MLDSA65) != mldsa65.SignatureSize {
		return fmt.Errorf("%w: wrong signature lengths", ErrBadSignature)
	}
	if len(k.Ed25519) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: bad Ed25519 key", ErrBadSignature)
	}
	var mpk mldsa65.PublicKey
	if err := mpk.UnmarshalBinary(k.MLDSA65); err != nil {
		return fmt.Errorf("%w: bad ML-DSA-65 key", ErrBadSignature)
	}
	m := hybridMessage(msg)
	edOK := ed25519.Verify(ed25519.PublicKey(k.Ed25519), m, hs.Ed25519)
	mlOK := mldsa65.Verify(&mpk, m, nil, hs.MLDSA65)
	switch {
	case !edOK && !mlOK:
		return fmt.Errorf("%w: neither the Ed25519 nor the ML-DSA-65 half verifies", ErrBadSignature)
	case !edOK:
		return fmt.Errorf("%w: the Ed25519 half does not verify", ErrBadSignature)
	case !mlOK:
		return fmt.Errorf("%w: the ML-DSA-65 half does not verify", ErrBadSignature)
	}
	return nil
}

// OfficerKey is an officer's private key: the Ed25519 and ML-DSA-65 halves
// of the hybrid signature key and the two HPKE private keys. Keep it in a
// passphrase-encrypted key file (EncryptKeyFile).
type OfficerKey struct {
	name     string
	edSeed   []byte // 32-byte Ed25519 seed
	mlSeed   []byte // 32-byte ML-DSA-65 seed
	x25519   []byte // 32-byte HPKE X25519 private key
	xwing    []byte // 32-byte HPKE X-Wing private key (its seed)
	edPriv   ed25519.PrivateKey
	mlPriv   *mldsa65.PrivateKey
	xPriv    kem.PrivateKey
	xwPriv   kem.PrivateKey
	public   OfficerPublicKey
	publicFP Fingerprint
	// token is set when the Ed25519 half is held in a PKCS#11 token
	// (edSeed and edPriv are then empty); edSigner is that key once
	// attached (AttachTokenSigner).
	token    *TokenRef
	edSigner crypto.Signer
}

// KEM identifiers for HPKE (RFC 9180 registry; X-Wing's is 0x647a).
const (
	KEMX25519 = hpke.KEM_X25519_HKDF_SHA256
	KEMXWing  = hpke.KEM_XWING
)

// GenerateOfficerKey makes a new officer key named name.
func GenerateOfficerKey(name string) (*OfficerKey, error) {
	if err := checkText("officer name", name, 128, true); err != nil {
		return nil, err
	}
	s := officerSecret{Tag: tagOfficerSecret, Name: name}
	var err error
	if s.Ed25519Seed, err = randomBytes(ed25519.SeedSize); err != nil {
		return nil, err
	}
	if s.MLDSA65Seed, s.X25519, s.XWing, err = newSoftwareSecrets(); err != nil {
		return nil, err
	}
	return s.key()
}

// officerSecret is the plaintext inside a key file.
type officerSecret struct {
	_           struct{} `cbor:",toarray"`
	Tag         string
	Name        string
	Ed25519Seed []byte
	MLDSA65Seed []byte
	X25519      []byte
	XWing       []byte
}

func (s officerSecret) key() (*OfficerKey, error) {
	if s.Tag != tagOfficerSecret {
		return nil, fmt.Errorf("%w: officer secret tag %q", ErrNonCanonical, s.Tag)
	}
	if len(s.Ed25519Seed) != ed25519.SeedSize || len(s.MLDSA65Seed) != mldsa65.SeedSize {
		return nil, errors.New("quorum: officer key: bad seed length")
	}
	k := &OfficerKey{name: s.Name, edSeed: s.Ed25519Seed}
	k.edPriv = ed25519.NewKeyFromSeed(s.Ed25519Seed)
	return k.complete(k.edPriv.Public().(ed25519.PublicKey), s.MLDSA65Seed, s.X25519, s.XWing)
}

// complete derives the rest of k from its secrets and the Ed25519 public
// key.
func (k *OfficerKey) complete(edPub ed25519.PublicKey, mlSeed, x25519, xwing []byte) (*OfficerKey, error) {
	if len(edPub) != ed25519.PublicKeySize || len(mlSeed) != mldsa65.SeedSize {
		return nil, errors.New("quorum: officer key: bad key length")
	}
	k.mlSeed, k.x25519, k.xwing = mlSeed, x25519, xwing
	var seed [mldsa65.SeedSize]byte
	copy(seed[:], mlSeed)
	mlPub, mlPriv := mldsa65.NewKeyFromSeed(&seed)
	k.mlPriv = mlPriv
	var err error
	if k.xPriv, err = KEMX25519.Scheme().UnmarshalBinaryPrivateKey(x25519); err != nil {
		return nil, fmt.Errorf("quorum: officer key: X25519: %v", err)
	}
	if k.xwPriv, err = KEMXWing.Scheme().UnmarshalBinaryPrivateKey(xwing); err != nil {
		return nil, fmt.Errorf("quorum: officer key: X-Wing: %v", err)
	}
	xPub, _ := k.xPriv.Public().MarshalBinary()
	xwPub, _ := k.xwPriv.Public().MarshalBinary()
	k.public = OfficerPublicKey{
		Tag:     tagOfficerPublic,
		Name:    k.name,
		Ed25519: append([]byte(nil), edPub...),
		MLDSA65: mlPub.Bytes(),
		X25519:  xPub,
		XWing:   xwPub,
	}
	if err := k.public.validate(); err != nil {
		return nil, err
	}
	k.publicFP = k.public.Fingerprint()
	return k, nil
}

func (k *OfficerKey) secret() any {
	if k.token != nil {
		return officerTokenSecret{Tag: tagOfficerTokenSecret, Name: k.name, Ed25519: k.public.Ed25519, Token: *k.token,
			MLDSA65Seed: k.mlSeed, X25519: k.x25519, XWing: k.xwing}
	}
	return officerSecret{Tag: tagOfficerSecret, Name: k.name, Ed25519Seed: k.edSeed, MLDSA65Seed: k.mlSeed, X25519: k.x25519, XWing: k.xwing}
}

// Public returns the officer's public record.
func (k *OfficerKey) Public() OfficerPublicKey { return k.public }

// Fingerprint is k.Public().Fingerprint().
func (k *OfficerKey) Fingerprint() Fingerprint { return k.publicFP }

// Name is the officer's label.
func (k *OfficerKey) Name() string { return k.name }

// Sign makes the hybrid signature over msg: Ed25519 and ML-DSA-65 (hedged,
// empty context) both over "hsmgate/quorum/hybrid-signature/v1" || 0x00 ||
// msg. The result is an encoded HybridSignature.
func (k *OfficerKey) Sign(msg []byte) ([]byte, error) {
	m := hybridMessage(msg)
	ed, err := k.signEd25519(m)
	if err != nil {
		return nil, err
	}
	hs := HybridSignature{Ed25519: ed, MLDSA65: make([]byte, mldsa65.SignatureSize)}
	if err := mldsa65.SignTo(k.mlPriv, m, nil, true, hs.MLDSA65); err != nil {
		return nil, fmt.Errorf("quorum: ML-DSA-65 sign: %w", err)
	}
	return marshal(hs)
}

// Verify checks sig over msg with k's public key.
func (k *OfficerKey) Verify(msg, sig []byte) error { return k.public.VerifySignature(msg, sig) }

// newSoftwareSecrets draws the secrets every officer key holds in its key
// file: the ML-DSA-65 seed and the two HPKE private keys.
func newSoftwareSecrets() (mlSeed, x25519, xwing []byte, err error) {
	if mlSeed, err = randomBytes(mldsa65.SeedSize); err != nil {
		return nil, nil, nil, err
	}
	_, xsk, err := KEMX25519.Scheme().GenerateKeyPair()
	if err != nil {
		return nil, nil, nil, err
	}
	if x25519, err = xsk.MarshalBinary(); err != nil {
		return nil, nil, nil, err
	}
	_, xwsk, err := KEMXWing.Scheme().GenerateKeyPair()
	if err != nil {
		return nil, nil, nil, err
	}
	if xwing, err = xwsk.MarshalBinary(); err != nil {
		return nil, nil, nil, err
	}
	return mlSeed, x25519, xwing, nil
}

func randomBytes(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	return b, nil
}

// checkText accepts 1..max bytes of printable ASCII (detcbor.CheckText):
// everything shown to an officer passes through it.
func checkText(what, s string, max int, spaces bool) error {
	return codec.CheckText(what, s, max, spaces)
}
