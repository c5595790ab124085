package images

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/hsmgate/hsmgate/quorum"
)

// Signature schemes of release and timestamp keys.
const (
	// SchemeEd25519: a plain Ed25519 key (RFC 8032); PublicKey.Key is the
	// 32-byte public key.
	SchemeEd25519 = "ed25519"
	// SchemeOfficer: an officer's hybrid key from package quorum (Ed25519
	// and ML-DSA-65, both must verify); PublicKey.Key is the canonical
	// encoding of the quorum.OfficerPublicKey.
	SchemeOfficer = "officer-hybrid"
)

const tagKey = "hsmgate/images/key/v1"

// KeyID identifies a signing key: the SHA-256 of the canonical encoding of
// [tag, scheme, key]. Signatures name the key by KeyID, and thresholds
// count distinct KeyIDs. It does not depend on any label, so a signer
// knows its KeyID from its key alone.
type KeyID [32]byte

// String is the key id in lower-case hex.
func (id KeyID) String() string { return hex.EncodeToString(id[:]) }

// Short is the first 8 bytes in hex, grouped in fours, for display only.
func (id KeyID) Short() string {
	h := hex.EncodeToString(id[:8])
	return h[0:4] + "-" + h[4:8] + "-" + h[8:12] + "-" + h[12:16]
}

// PublicKey is a signing key's public half.
type PublicKey struct {
	// Scheme is SchemeEd25519 or SchemeOfficer.
	Scheme string
	// Key is the scheme's public key bytes.
	Key []byte
}

type keyIDWire struct {
	_      struct{} `cbor:",toarray"`
	Tag    string
	Scheme string
	Key    []byte
}

// Ed25519PublicKey is an Ed25519 release or timestamp key.
func Ed25519PublicKey(pub ed25519.PublicKey) PublicKey {
	return PublicKey{Scheme: SchemeEd25519, Key: append([]byte(nil), pub...)}
}

// OfficerPublicKey is an officer's hybrid key used as a release key.
func OfficerPublicKey(k quorum.OfficerPublicKey) (PublicKey, error) {
	b, err := k.Encode()
	if err != nil {
		return PublicKey{}, err
	}
	return PublicKey{Scheme: SchemeOfficer, Key: b}, nil
}

// ID returns the key id. The key must be valid (Validate).
func (k PublicKey) ID() KeyID {
	b, err := marshal(keyIDWire{Tag: tagKey, Scheme: k.Scheme, Key: k.Key})
	if err != nil {
		panic(err) // strings and bytes always encode
	}
	return sha256.Sum256(b)
}

// Validate checks that the key parses under its scheme.
func (k PublicKey) Validate() error {
	switch k.Scheme {
	case SchemeEd25519:
		if len(k.Key) != ed25519.PublicKeySize {
			return fmt.Errorf("images: Ed25519 key is %d bytes, want %d", len(k.Key), ed25519.PublicKeySize)
		}
		return nil
	case SchemeOfficer:
		if _, err := quorum.DecodeOfficerPublicKey(k.Key); err != nil {
			return fmt.Errorf("images: officer key: %w", err)
		}
		return nil
	}
	return fmt.Errorf("images: unknown key scheme %q", k.Scheme)
}

// Officer returns the officer key of a SchemeOfficer key.
func (k PublicKey) Officer() (quorum.OfficerPublicKey, error) {
	if k.Scheme != SchemeOfficer {
		return quorum.OfficerPublicKey{}, fmt.Errorf("images: a %s key is not an officer key", k.Scheme)
	}
	return quorum.DecodeOfficerPublicKey(k.Key)
}

// ed25519Material is the Ed25519 public key inside k (the whole key, or an
// officer key's Ed25519 half). Trust.Validate refuses two keys with the
// same material: one person holding an officer key must not count twice
// by also being listed as a plain Ed25519 key.
func (k PublicKey) ed25519Material() []byte {
	if k.Scheme == SchemeEd25519 {
		return k.Key
	}
	if o, err := k.Officer(); err == nil {
		return o.Ed25519
	}
	return nil
}

// ErrBadSignature: a signature that does not verify under the key it
// names (made over other bytes, or by another key).
var ErrBadSignature = errors.New("images: signature does not verify")

// verify checks sig over msg.
func (k PublicKey) verify(msg, sig []byte) error {
	switch k.Scheme {
	case SchemeEd25519:
		if len(k.Key) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize || !ed25519.Verify(ed25519.PublicKey(k.Key), msg, sig) {
			return ErrBadSignature
		}
		return nil
	case SchemeOfficer:
		o, err := k.Officer()
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBadSignature, err)
		}
		if err := o.VerifySignature(msg, sig); err != nil {
			return fmt.Errorf("%w: %v", ErrBadSignature, err)
		}
		return nil
	}
	return fmt.Errorf("%w: unknown key scheme %q", ErrBadSignature, k.Scheme)
}

// A Signer makes release or timestamp signatures.
type Signer interface {
	// PublicKey is the signer's public key.
	PublicKey() PublicKey
	// Sign signs msg (the package passes domain-separated messages).
	Sign(msg []byte) ([]byte, error)
}

// Ed25519Signer signs with an Ed25519 private key.
type Ed25519Signer struct{ key ed25519.PrivateKey }

// NewEd25519Signer returns a Signer for key.
func NewEd25519Signer(key ed25519.PrivateKey) *Ed25519Signer { return &Ed25519Signer{key: key} }

func (s *Ed25519Signer) PublicKey() PublicKey {
	return Ed25519PublicKey(s.key.Public().(ed25519.PublicKey))
}
func (s *Ed25519Signer) Sign(msg []byte) ([]byte, error) { return ed25519.Sign(s.key, msg), nil }

// OfficerSigner signs with an officer's hybrid key.
type OfficerSigner struct{ key *quorum.OfficerKey }

// NewOfficerSigner returns a Signer for an officer key.
func NewOfficerSigner(key *quorum.OfficerKey) *OfficerSigner { return &OfficerSigner{key: key} }

func (s *OfficerSigner) PublicKey() PublicKey {
	k, err := OfficerPublicKey(s.key.Public())
	if err != nil {
		panic(err) // an OfficerKey's public record always encodes
	}
	return k
}
func (s *OfficerSigner) Sign(msg []byte) ([]byte, error) { return s.key.Sign(msg) }

// GenerateEd25519Key makes a new Ed25519 release (or timestamp) key and
// returns its PKCS#8 private key PEM and PKIX public key PEM.
func GenerateEd25519Key() (privatePEM, publicPEM []byte, err error) {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, nil, err
	}
	return Armor(PEMPrivateKey, der), Armor(PEMPublicKey, pubDER), nil
}

// ParseEd25519PrivateKey reads a PKCS#8 "PRIVATE KEY" PEM file holding an
// Ed25519 key (GenerateEd25519Key, hsmgate image keygen, or openssl genpkey
// -algorithm ed25519).
func ParseEd25519PrivateKey(file []byte) (ed25519.PrivateKey, error) {
	der, err := DearmorType(file, PEMPrivateKey)
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("images: PKCS#8 private key: %w", err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("images: the private key is a %T, not Ed25519", k)
	}
	return ek, nil
}

// ParsePublicKeyFile reads a public key file: a PKIX "PUBLIC KEY" PEM
// holding an Ed25519 key, or an officer public key record ("HSMGATE OFFICER
// PUBLIC KEY", from hsmofficer keygen). name is the officer's name for an
// officer key, "" for an Ed25519 key.
func ParsePublicKeyFile(file []byte) (k PublicKey, name string, err error) {
	typ, der, err := Dearmor(file)
	if err != nil {
		return PublicKey{}, "", err
	}
	switch typ {
	case PEMPublicKey:
		pk, err := x509.ParsePKIXPublicKey(der)
		if err != nil {
			return PublicKey{}, "", fmt.Errorf("images: PKIX public key: %w", err)
		}
		ek, ok := pk.(ed25519.PublicKey)
		if !ok {
			return PublicKey{}, "", fmt.Errorf("images: the public key is a %T, not Ed25519", pk)
		}
		return Ed25519PublicKey(ek), "", nil
	case PEMOfficerPublic:
		o, err := quorum.DecodeOfficerPublicKey(der)
		if err != nil {
			return PublicKey{}, "", err
		}
		k, err := OfficerPublicKey(o)
		return k, o.Name, err
	}
	return PublicKey{}, "", fmt.Errorf("images: a %q file is not a public key (want %q or %q)", typ, PEMPublicKey, PEMOfficerPublic)
}
