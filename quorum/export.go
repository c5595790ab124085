package quorum

import (
	"bytes"
	"fmt"

	"github.com/cloudflare/circl/hpke"
	"github.com/cloudflare/circl/kem"

	"github.com/hsmgate/hsmgate/internal/kwp"
)

// Exported keys and recovery shares: what an approved key-export or
// domain-recovery proposal hands to its recipient.
const (
	tagExportedKey   = "hsmgate/quorum/exported-key/v1"
	tagRecoveryShare = "hsmgate/quorum/recovery-share/v1"
)

// PEM types of the records in this file.
const (
	PEMExportedKey   = "HSMGATE EXPORTED KEY"
	PEMRecoveryShare = "HSMGATE QUORUM RECOVERY SHARE"
)

// Export formats of ExportedKey.Format: the key's raw bytes (AES, HMAC)
// or a PKCS#8 PrivateKeyInfo (key pairs).
const (
	ExportRaw   = "raw"
	ExportPKCS8 = "pkcs8"
)

// ExportedKey is a key exported by an approved key-export proposal. The
// HSM wrapped the key (RFC 5649) under a fresh AES-256 transport key; the
// transport key is HPKE-sealed to the proposal's recipient, with every
// other field of the record bound into the HPKE info, so no field can be
// changed without the open failing.
type ExportedKey struct {
	_ struct{} `cbor:",toarray"`
	// Tag is always "hsmgate/quorum/exported-key/v1".
	Tag string
	// ProposalHash is the approved proposal's hash (32 bytes).
	ProposalHash []byte
	// KeyID is the key's ARN, KeyVersion the version exported.
	KeyID      string
	KeyVersion uint64
	// KeySpec is the AWS key spec (SYMMETRIC_DEFAULT, ECC_NIST_P256, …).
	KeySpec string
	// Format is ExportRaw or ExportPKCS8.
	Format string
	// Wrapped is the key wrapped under the transport key with RFC 5649.
	Wrapped []byte
	// Transport is the transport key sealed to the recipient.
	Transport Envelope
}

type exportedKeyHeader struct {
	_            struct{} `cbor:",toarray"`
	Tag          string
	ProposalHash []byte
	KeyID        string
	KeyVersion   uint64
	KeySpec      string
	Format       string
	Wrapped      []byte
}

func (e *ExportedKey) info() []byte {
	return domainMessage(tagExportedKey, mustMarshal(exportedKeyHeader{
		Tag: e.Tag, ProposalHash: e.ProposalHash, KeyID: e.KeyID, KeyVersion: e.KeyVersion,
		KeySpec: e.KeySpec, Format: e.Format, Wrapped: e.Wrapped,
	}))
}

func (e *ExportedKey) validate() error {
	if e.Tag != tagExportedKey || len(e.ProposalHash) != 32 {
		return fmt.Errorf("%w: exported key header", ErrNonCanonical)
	}
	if err := checkText("key id", e.KeyID, 256, false); err != nil {
		return err
	}
	if err := checkText("key spec", e.KeySpec, 64, false); err != nil {
		return err
	}
	if e.Format != ExportRaw && e.Format != ExportPKCS8 {
		return fmt.Errorf("%w: export format %q", ErrNonCanonical, e.Format)
	}
	if len(e.Wrapped) < 16 || len(e.Wrapped)%8 != 0 || len(e.Wrapped) > 64<<10 {
		return fmt.Errorf("%w: wrapped key of %d bytes", ErrNonCanonical, len(e.Wrapped))
	}
	return nil
}

// SealExport makes the record of an export: p is the approved key-export
// proposal (its bytes hash to proposalHash), transport the AES-256 key the
// HSM wrapped the key under. The caller zeroes transport afterwards.
func SealExport(p *Proposal, proposalHash [32]byte, keyID, keySpec, format string, transport, wrapped []byte) (*ExportedKey, error) {
	params, ok := p.Params.(*KeyExportParams)
	if !ok {
		return nil, fmt.Errorf("quorum: a %s proposal exports nothing", p.Kind)
	}
	e := &ExportedKey{Tag: tagExportedKey, ProposalHash: proposalHash[:], KeyID: keyID, KeyVersion: params.KeyVersion,
		KeySpec: keySpec, Format: format, Wrapped: wrapped}
	if err := e.validate(); err != nil {
		return nil, err
	}
	env, err := SealTo(params.Recipient, transport, e.info())
	if err != nil {
		return nil, err
	}
	e.Transport = *env
	return e, nil
}

// Encode returns the canonical encoding of e.
func (e *ExportedKey) Encode() ([]byte, error) { return marshal(e) }

// DecodeExportedKey strictly decodes an exported key record.
func DecodeExportedKey(data []byte) (*ExportedKey, error) {
	var e ExportedKey
	if err := unmarshalStrict(data, &e); err != nil {
		return nil, fmt.Errorf("exported key: %w", err)
	}
	if err := e.validate(); err != nil {
		return nil, err
	}
	if e.Transport.Tag != tagEnvelope || len(e.Transport.Recipient) != 32 {
		return nil, fmt.Errorf("%w: exported key envelope", ErrNonCanonical)
	}
	return &e, nil
}

// OpenExport recovers the exported key with the recipient's officer key:
// the raw key or PKCS#8 DER, as e.Format says. The result is secret.
func (k *OfficerKey) OpenExport(e *ExportedKey) ([]byte, error) {
	return openExport(e, func(env *Envelope, info []byte) ([]byte, error) { return k.Open(env, info) })
}

// OpenExportWith is OpenExport with a bare HPKE private key.
func OpenExportWith(sk kem.PrivateKey, e *ExportedKey) ([]byte, error) {
	return openExport(e, func(env *Envelope, info []byte) ([]byte, error) { return OpenEnvelope(sk, env, info) })
}

func openExport(e *ExportedKey, open func(*Envelope, []byte) ([]byte, error)) ([]byte, error) {
	if err := e.validate(); err != nil {
		return nil, err
	}
	transport, err := open(&e.Transport, e.info())
	if err != nil {
		return nil, err
	}
	defer clear(transport)
	key, err := kwp.Unwrap(transport, e.Wrapped)
	if err != nil {
		return nil, fmt.Errorf("quorum: exported key does not unwrap under its transport key: %w", err)
	}
	return key, nil
}

// RecoveryShare is an officer's decrypted share re-sealed to the HPKE key
// named by an approved domain-recovery proposal (the recovering gateway's
// key), bound to that proposal. Only that gateway can open it, and only
// for that proposal.
type RecoveryShare struct {
	_ struct{} `cbor:",toarray"`
	// Tag is always "hsmgate/quorum/recovery-share/v1".
	Tag          string
	ProposalHash []byte
	// Officer is the sharing officer's fingerprint, Index the share's.
	Officer  []byte
	Index    uint64
	Envelope Envelope
}

func recoveryInfo(proposalHash, officer []byte, index uint64) []byte {
	return domainMessage(tagRecoveryShare, proposalHash, officer, []byte(fmt.Sprint(index)))
}

// SealRecoveryShare seals sh to the recipient of the domain-recovery
// proposal p (whose bytes hash to proposalHash). It refuses a share of
// another split than the proposal's.
func SealRecoveryShare(p *Proposal, proposalHash [32]byte, sh *Share) (*RecoveryShare, error) {
	params, ok := p.Params.(*DomainRecoveryParams)
	if !ok {
		return nil, fmt.Errorf("quorum: a %s proposal takes no shares", p.Kind)
	}
	if !bytes.Equal(sh.Split.ID, params.SplitID) {
		return nil, fmt.Errorf("%w: the share is of split %x, the proposal recovers split %x", ErrBadShare, sh.Split.ID, params.SplitID)
	}
	plain, err := sh.Encode()
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	env, err := SealTo(params.Recipient, plain, recoveryInfo(proposalHash[:], sh.Officer, sh.Index))
	if err != nil {
		return nil, err
	}
	return &RecoveryShare{Tag: tagRecoveryShare, ProposalHash: proposalHash[:], Officer: sh.Officer, Index: sh.Index, Envelope: *env}, nil
}

// Encode returns the canonical encoding of r.
func (r *RecoveryShare) Encode() ([]byte, error) { return marshal(r) }

// DecodeRecoveryShare strictly decodes a recovery share.
func DecodeRecoveryShare(data []byte) (*RecoveryShare, error) {
	var r RecoveryShare
	if err := unmarshalStrict(data, &r); err != nil {
		return nil, fmt.Errorf("recovery share: %w", err)
	}
	if r.Tag != tagRecoveryShare || len(r.ProposalHash) != 32 || len(r.Officer) != 32 || r.Index < 1 || r.Index > 255 {
		return nil, fmt.Errorf("%w: recovery share header", ErrNonCanonical)
	}
	if r.Envelope.Tag != tagEnvelope || len(r.Envelope.Recipient) != 32 {
		return nil, fmt.Errorf("%w: recovery share envelope", ErrNonCanonical)
	}
	return &r, nil
}

// OpenRecoveryShare opens r with the recovering gateway's private key and
// checks the share against its split's commitments and its header.
func OpenRecoveryShare(sk kem.PrivateKey, r *RecoveryShare) (*Share, error) {
	plain, err := OpenEnvelope(sk, &r.Envelope, recoveryInfo(r.ProposalHash, r.Officer, r.Index))
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	sh, err := DecodeShare(plain)
	if err != nil {
		return nil, err
	}
	if sh.Index != r.Index || !bytes.Equal(sh.Officer, r.Officer) {
		return nil, fmt.Errorf("%w: the sealed share is not the one its header names", ErrBadShare)
	}
	return sh, nil
}

// NewRecipientKey makes an HPKE key pair (X-Wing unless kemID says
// otherwise) for a one-off recipient, such as a gateway recovering its
// domain key. The private key lives only in memory.
func NewRecipientKey(kemID hpke.KEM) (RecipientKey, kem.PrivateKey, error) {
	if _, err := recipientScheme(uint16(kemID)); err != nil {
		return RecipientKey{}, nil, err
	}
	pk, sk, err := kemID.Scheme().GenerateKeyPair()
	if err != nil {
		return RecipientKey{}, nil, err
	}
	raw, err := pk.MarshalBinary()
	if err != nil {
		return RecipientKey{}, nil, err
	}
	return RecipientKey{KEM: uint16(kemID), PublicKey: raw}, sk, nil
}
