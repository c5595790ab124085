package quorum

import (
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/cloudflare/circl/hpke"
	"github.com/cloudflare/circl/kem"
)

const tagEnvelope = "hsmgate/quorum/hpke-envelope/v1"

// The HPKE suites: base mode, HKDF-SHA256, AES-256-GCM, with either KEM.
const (
	hpkeKDF  = hpke.KDF_HKDF_SHA256
	hpkeAEAD = hpke.AEAD_AES256GCM
)

// Envelope is an HPKE (RFC 9180, base mode) ciphertext to one recipient.
// Its header (everything but the ciphertext) is the AEAD's associated
// data; the caller's info string is bound through HPKE's key schedule.
type Envelope struct {
	_ struct{} `cbor:",toarray"`
	// Tag is always "hsmgate/quorum/hpke-envelope/v1".
	Tag string
	// KEM, KDF and AEAD are the HPKE algorithm identifiers.
	KEM  uint16
	KDF  uint16
	AEAD uint16
	// Recipient is the recipient key's fingerprint (RecipientKey.Fingerprint).
	Recipient []byte
	// Enc is HPKE's encapsulated key.
	Enc []byte
	// Ciphertext is the sealed plaintext.
	Ciphertext []byte
}

type envelopeHeader struct {
	_         struct{} `cbor:",toarray"`
	Tag       string
	KEM       uint16
	KDF       uint16
	AEAD      uint16
	Recipient []byte
	Enc       []byte
}

func (e *Envelope) aad() []byte {
	return mustMarshal(envelopeHeader{Tag: e.Tag, KEM: e.KEM, KDF: e.KDF, AEAD: e.AEAD, Recipient: e.Recipient, Enc: e.Enc})
}

func recipientScheme(id uint16) (hpke.KEM, error) {
	switch hpke.KEM(id) {
	case KEMX25519, KEMXWing:
		return hpke.KEM(id), nil
	}
	return 0, fmt.Errorf("quorum: unsupported HPKE KEM %#04x (want X25519 %#04x or X-Wing %#04x)", id, uint16(KEMX25519), uint16(KEMXWing))
}

// SealTo encrypts plaintext to recipient with HPKE base mode. info names
// the purpose (for example the proposal hash of an export); Open must be
// given the same info.
func SealTo(recipient RecipientKey, plaintext, info []byte) (*Envelope, error) {
	kemID, err := recipientScheme(recipient.KEM)
	if err != nil {
		return nil, err
	}
	pk, err := kemID.Scheme().UnmarshalBinaryPublicKey(recipient.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("quorum: recipient public key: %v", err)
	}
	suite := hpke.NewSuite(kemID, hpkeKDF, hpkeAEAD)
	sender, err := suite.NewSender(pk, info)
	if err != nil {
		return nil, err
	}
	enc, sealer, err := sender.Setup(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("quorum: HPKE setup: %v", err)
	}
	fp := recipient.Fingerprint()
	e := &Envelope{Tag: tagEnvelope, KEM: recipient.KEM, KDF: uint16(hpkeKDF), AEAD: uint16(hpkeAEAD), Recipient: fp[:], Enc: enc}
	if e.Ciphertext, err = sealer.Seal(plaintext, e.aad()); err != nil {
		return nil, fmt.Errorf("quorum: HPKE seal: %v", err)
	}
	return e, nil
}

// ErrNotForThisKey: an envelope addressed to another recipient key.
var ErrNotForThisKey = errors.New("quorum: encrypted to another key")

// ErrDecrypt: an envelope that does not open (wrong key, wrong info, or
// modified).
var ErrDecrypt = errors.New("quorum: HPKE envelope does not decrypt (wrong key, wrong context, or modified)")

// OpenEnvelope decrypts e with the recipient's KEM private key.
func OpenEnvelope(sk kem.PrivateKey, e *Envelope, info []byte) ([]byte, error) {
	if e.Tag != tagEnvelope {
		return nil, fmt.Errorf("%w: envelope tag %q", ErrNonCanonical, e.Tag)
	}
	kemID, err := recipientScheme(e.KEM)
	if err != nil {
		return nil, err
	}
	if e.KDF != uint16(hpkeKDF) || e.AEAD != uint16(hpkeAEAD) {
		return nil, fmt.Errorf("quorum: unsupported HPKE suite KDF %#04x AEAD %#04x", e.KDF, e.AEAD)
	}
	pub, err := sk.Public().MarshalBinary()
	if err != nil {
		return nil, err
	}
	fp := RecipientKey{KEM: e.KEM, PublicKey: pub}.Fingerprint()
	if string(fp[:]) != string(e.Recipient) {
		return nil, fmt.Errorf("%w (envelope for %s recipient %x…)", ErrNotForThisKey, kemName(e.KEM), e.Recipient[:min(8, len(e.Recipient))])
	}
	receiver, err := hpke.NewSuite(kemID, hpkeKDF, hpkeAEAD).NewReceiver(sk, info)
	if err != nil {
		return nil, err
	}
	opener, err := receiver.Setup(e.Enc)
	if err != nil {
		return nil, ErrDecrypt
	}
	pt, err := opener.Open(e.Ciphertext, e.aad())
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}

// Open decrypts an envelope sealed to one of the officer's HPKE keys.
func (k *OfficerKey) Open(e *Envelope, info []byte) ([]byte, error) {
	switch hpke.KEM(e.KEM) {
	case KEMX25519:
		return OpenEnvelope(k.xPriv, e, info)
	case KEMXWing:
		return OpenEnvelope(k.xwPriv, e, info)
	}
	return nil, fmt.Errorf("quorum: unsupported HPKE KEM %#04x", e.KEM)
}

// Encode returns the canonical encoding of e.
func (e *Envelope) Encode() ([]byte, error) { return marshal(e) }

// DecodeEnvelope strictly decodes an envelope.
func DecodeEnvelope(data []byte) (*Envelope, error) {
	var e Envelope
	if err := unmarshalStrict(data, &e); err != nil {
		return nil, fmt.Errorf("envelope: %w", err)
	}
	if e.Tag != tagEnvelope {
		return nil, fmt.Errorf("%w: envelope tag %q", ErrNonCanonical, e.Tag)
	}
	if _, err := recipientScheme(e.KEM); err != nil {
		return nil, err
	}
	if len(e.Recipient) != 32 {
		return nil, fmt.Errorf("%w: envelope recipient fingerprint length", ErrNonCanonical)
	}
	return &e, nil
}
