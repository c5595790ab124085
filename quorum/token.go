package quorum

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
)

// Officer keys whose Ed25519 half is held in a PKCS#11 token (a smart
// card or USB token that does EdDSA): the key file then holds a reference
// to the token key instead of its seed, and the Ed25519 signature is made
// by the token. No token holds ML-DSA-65 or X-Wing keys yet, so those
// halves stay in the passphrase-encrypted key file: a signature needs both
// the token (and its PIN) and the key file (and its passphrase).

const tagOfficerTokenSecret = "hsmgate/quorum/officer-secret-token/v1"

// TokenRef names the token key: the token's label and the key's label
// and CKA_ID.
type TokenRef struct {
	_     struct{} `cbor:",toarray"`
	Token string
	Label string
	ID    []byte
}

// officerTokenSecret is the plaintext of a key file whose Ed25519 half is
// in a token.
type officerTokenSecret struct {
	_           struct{} `cbor:",toarray"`
	Tag         string
	Name        string
	Ed25519     []byte // the token key's public key
	Token       TokenRef
	MLDSA65Seed []byte
	X25519      []byte
	XWing       []byte
}

// ErrTokenNotAttached: a key whose Ed25519 half is in a token was asked to
// sign before its token key was attached.
var ErrTokenNotAttached = errors.New("quorum: the officer key's Ed25519 half is in a PKCS#11 token that is not attached")

func (s officerTokenSecret) key() (*OfficerKey, error) {
	if s.Tag != tagOfficerTokenSecret {
		return nil, fmt.Errorf("%w: officer secret tag %q", ErrNonCanonical, s.Tag)
	}
	if err := checkText("token label", s.Token.Token, 32, true); err != nil {
		return nil, err
	}
	ref := s.Token
	k := &OfficerKey{name: s.Name, token: &ref}
	return k.complete(s.Ed25519, s.MLDSA65Seed, s.X25519, s.XWing)
}

// decodeSecret decodes a key file's plaintext of either kind.
func decodeSecret(plain []byte) (*OfficerKey, error) {
	var s officerSecret
	if err := unmarshalStrict(plain, &s); err == nil {
		return s.key()
	}
	var ts officerTokenSecret
	if err := unmarshalStrict(plain, &ts); err != nil {
		return nil, fmt.Errorf("key file contents: %w", err)
	}
	return ts.key()
}

// GenerateTokenOfficerKey makes a new officer key named name whose Ed25519
// half is the token key signer (an Ed25519 crypto.Signer, made in the
// token), referred to by ref.
func GenerateTokenOfficerKey(name string, ref TokenRef, signer crypto.Signer) (*OfficerKey, error) {
	if err := checkText("officer name", name, 128, true); err != nil {
		return nil, err
	}
	pub, ok := signer.Public().(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("quorum: the token key is %T, not Ed25519", signer.Public())
	}
	s := officerTokenSecret{Tag: tagOfficerTokenSecret, Name: name, Ed25519: pub, Token: ref}
	var err error
	if s.MLDSA65Seed, s.X25519, s.XWing, err = newSoftwareSecrets(); err != nil {
		return nil, err
	}
	k, err := s.key()
	if err != nil {
		return nil, err
	}
	return k, k.AttachTokenSigner(signer)
}

// Token is the token reference of a key whose Ed25519 half is in a
// PKCS#11 token, or nil.
func (k *OfficerKey) Token() *TokenRef { return k.token }

// AttachTokenSigner attaches the token key to a key loaded from its key
// file: its public key must be the one recorded.
func (k *OfficerKey) AttachTokenSigner(s crypto.Signer) error {
	if k.token == nil {
		return errors.New("quorum: this officer key holds its Ed25519 half itself")
	}
	pub, ok := s.Public().(ed25519.PublicKey)
	if !ok || !bytes.Equal(pub, k.public.Ed25519) {
		return fmt.Errorf("quorum: the token key %q in token %q is not this officer key's Ed25519 half", k.token.Label, k.token.Token)
	}
	k.edSigner = s
	return nil
}

// signEd25519 signs m with the Ed25519 half, in software or in the token;
// a token's signature is checked before it is used.
func (k *OfficerKey) signEd25519(m []byte) ([]byte, error) {
	if k.token == nil {
		return ed25519.Sign(k.edPriv, m), nil
	}
	if k.edSigner == nil {
		return nil, ErrTokenNotAttached
	}
	sig, err := k.edSigner.Sign(rand.Reader, m, crypto.Hash(0))
	if err != nil {
		return nil, fmt.Errorf("quorum: token Ed25519 signature: %w", err)
	}
	if !ed25519.Verify(k.public.Ed25519, m, sig) {
		return nil, errors.New("quorum: the token's Ed25519 signature does not verify")
	}
	return sig, nil
}
