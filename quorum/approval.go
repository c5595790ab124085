package quorum

import (
	"bytes"
	"crypto/sha256"
	"fmt"
)

const (
	tagApproval   = "hsmgate/quorum/approval/v1"
	tagRejection  = "hsmgate/quorum/rejection/v1"
	tagPossession = "hsmgate/quorum/proof-of-possession/v1"
)

// Approval is an officer's signature approving one proposal. The signed
// message is
//
//	"hsmgate/quorum/approval/v1" || 0x00 || proposal bytes
//
// (and the hybrid signature adds its own tag in front of that).
type Approval struct {
	_ struct{} `cbor:",toarray"`
	// Tag is always "hsmgate/quorum/approval/v1".
	Tag string
	// ProposalHash is SHA-256 of the proposal bytes (to match files up; the
	// signature covers the bytes themselves).
	ProposalHash []byte
	// Officer is the signer's fingerprint.
	Officer []byte
	// Signature is an encoded HybridSignature.
	Signature []byte
}

// Rejection is an officer's signed refusal of a proposal, with a reason.
// The signed message is
//
//	"hsmgate/quorum/rejection/v1" || 0x00 || SHA-256(proposal bytes) || reason
type Rejection struct {
	_            struct{} `cbor:",toarray"`
	Tag          string
	ProposalHash []byte
	Officer      []byte
	Reason       string
	Signature    []byte
}

func domainMessage(tag string, parts ...[]byte) []byte {
	m := append([]byte(tag), 0)
	for _, p := range parts {
		m = append(m, p...)
	}
	return m
}

// ApprovalMessage is the message an approval's signature covers.
func ApprovalMessage(proposal []byte) []byte { return domainMessage(tagApproval, proposal) }

// RejectionMessage is the message a rejection's signature covers.
func RejectionMessage(proposal []byte, reason string) []byte {
	h := sha256.Sum256(proposal)
	return domainMessage(tagRejection, h[:], []byte(reason))
}

// Approve signs proposal (its canonical bytes). It refuses bytes that are
// not a canonical proposal, so an officer cannot be made to sign anything
// else with this call.
func (k *OfficerKey) Approve(proposal []byte) (*Approval, error) {
	if _, err := DecodeProposal(proposal); err != nil {
		return nil, err
	}
	sig, err := k.Sign(ApprovalMessage(proposal))
	if err != nil {
		return nil, err
	}
	h := ProposalHash(proposal)
	fp := k.Fingerprint()
	return &Approval{Tag: tagApproval, ProposalHash: h[:], Officer: fp[:], Signature: sig}, nil
}

// Reject signs a refusal of proposal with a reason (printable ASCII, up to
// 512 bytes).
func (k *OfficerKey) Reject(proposal []byte, reason string) (*Rejection, error) {
	if _, err := DecodeProposal(proposal); err != nil {
		return nil, err
	}
	if err := checkText("rejection reason", reason, 512, true); err != nil {
		return nil, err
	}
	sig, err := k.Sign(RejectionMessage(proposal, reason))
	if err != nil {
		return nil, err
	}
	h := ProposalHash(proposal)
	fp := k.Fingerprint()
	return &Rejection{Tag: tagRejection, ProposalHash: h[:], Officer: fp[:], Reason: reason, Signature: sig}, nil
}

// Encode returns the canonical encoding of a.
func (a *Approval) Encode() ([]byte, error) { return marshal(a) }

// Fingerprint is the signer's fingerprint.
func (a *Approval) Fingerprint() Fingerprint { var f Fingerprint; copy(f[:], a.Officer); return f }

// DecodeApproval strictly decodes an approval: decode then Encode gives the
// same bytes for everything it accepts.
func DecodeApproval(data []byte) (*Approval, error) {
	var a Approval
	if err := unmarshalStrict(data, &a); err != nil {
		return nil, fmt.Errorf("approval: %w", err)
	}
	if a.Tag != tagApproval {
		return nil, fmt.Errorf("%w: approval tag %q", ErrNonCanonical, a.Tag)
	}
	if len(a.ProposalHash) != 32 || len(a.Officer) != 32 {
		return nil, fmt.Errorf("%w: approval hash or fingerprint of the wrong length", ErrNonCanonical)
	}
	if err := checkSignatureEncoding(a.Signature); err != nil {
		return nil, fmt.Errorf("approval: %w", err)
	}
	return &a, nil
}

// Encode returns the canonical encoding of r.
func (r *Rejection) Encode() ([]byte, error) { return marshal(r) }

// Fingerprint is the signer's fingerprint.
func (r *Rejection) Fingerprint() Fingerprint { var f Fingerprint; copy(f[:], r.Officer); return f }

// DecodeRejection strictly decodes a rejection.
func DecodeRejection(data []byte) (*Rejection, error) {
	var r Rejection
	if err := unmarshalStrict(data, &r); err != nil {
		return nil, fmt.Errorf("rejection: %w", err)
	}
	if r.Tag != tagRejection {
		return nil, fmt.Errorf("%w: rejection tag %q", ErrNonCanonical, r.Tag)
	}
	if len(r.ProposalHash) != 32 || len(r.Officer) != 32 {
		return nil, fmt.Errorf("%w: rejection hash or fingerprint of the wrong length", ErrNonCanonical)
	}
	if err := checkText("rejection reason", r.Reason, 512, true); err != nil {
		return nil, err
	}
	if err := checkSignatureEncoding(r.Signature); err != nil {
		return nil, fmt.Errorf("rejection: %w", err)
	}
	return &r, nil
}

// checkSignatureEncoding checks that sig is a canonical HybridSignature of
// the right lengths (not that it verifies).
func checkSignatureEncoding(sig []byte) error {
	var hs HybridSignature
	if err := unmarshalStrict(sig, &hs); err != nil {
		return fmt.Errorf("signature: %w", err)
	}
	if len(hs.Ed25519) != 64 || len(hs.MLDSA65) != 3309 {
		return fmt.Errorf("%w: signature halves of the wrong length", ErrNonCanonical)
	}
	return nil
}

// ProofOfPossession is a new officer key's signature over
//
//	"hsmgate/quorum/proof-of-possession/v1" || 0x00 || next set hash || fingerprint
//
// showing that whoever is added to a set holds the private key (so nobody
// can add a copy of someone else's public key under another name).
type ProofOfPossession struct {
	_         struct{} `cbor:",toarray"`
	Tag       string
	SetHash   []byte
	Officer   []byte
	Signature []byte
}

// PossessionMessage is what a ProofOfPossession signs.
func PossessionMessage(setHash [32]byte, fp Fingerprint) []byte {
	return domainMessage(tagPossession, setHash[:], fp[:])
}

// ProvePossession signs the possession statement for set (which must
// contain k).
func (k *OfficerKey) ProvePossession(set *Set) (*ProofOfPossession, error) {
	if err := set.Validate(); err != nil {
		return nil, err
	}
	fp := k.Fingerprint()
	if _, ok := set.Officer(fp); !ok {
		return nil, fmt.Errorf("%w: %s is not in this set", ErrUnknownOfficer, fp.Short())
	}
	h := set.Hash()
	sig, err := k.Sign(PossessionMessage(h, fp))
	if err != nil {
		return nil, err
	}
	return &ProofOfPossession{Tag: tagPossession, SetHash: h[:], Officer: fp[:], Signature: sig}, nil
}

// Encode returns the canonical encoding of p.
func (p *ProofOfPossession) Encode() ([]byte, error) { return marshal(p) }

// DecodeProofOfPossession strictly decodes a proof of possession.
func DecodeProofOfPossession(data []byte) (*ProofOfPossession, error) {
	var p ProofOfPossession
	if err := unmarshalStrict(data, &p); err != nil {
		return nil, fmt.Errorf("proof of possession: %w", err)
	}
	if p.Tag != tagPossession || len(p.SetHash) != 32 || len(p.Officer) != 32 {
		return nil, fmt.Errorf("%w: proof of possession header", ErrNonCanonical)
	}
	if err := checkSignatureEncoding(p.Signature); err != nil {
		return nil, fmt.Errorf("proof of possession: %w", err)
	}
	return &p, nil
}

// verify checks p against the officer key for set hash h.
func (p *ProofOfPossession) verify(h [32]byte, o OfficerPublicKey) error {
	fp := o.Fingerprint()
	if !bytes.Equal(p.SetHash, h[:]) {
		return fmt.Errorf("%w: proof of possession by %s is for another set", ErrBadPossession, fp.Short())
	}
	if !bytes.Equal(p.Officer, fp[:]) {
		return fmt.Errorf("%w: proof of possession names another officer", ErrBadPossession)
	}
	if err := o.VerifySignature(PossessionMessage(h, fp), p.Signature); err != nil {
		return fmt.Errorf("%w: %s (%q): %v", ErrBadPossession, fp.Short(), o.Name, err)
	}
	return nil
}
