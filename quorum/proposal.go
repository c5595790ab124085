package quorum

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"
)

// ProposalDomain is the domain tag at the head of every proposal.
const ProposalDomain = "hsmgate/quorum/proposal/v1"

// MaxValidity is the longest a proposal may be valid (Expiry − NotBefore):
// long enough for an offline approval carried to an air-gapped machine and
// back, short enough that a forgotten proposal does not linger.
const MaxValidity = 30 * 24 * time.Hour

// RequestID is the random identifier of a proposal; the executor records
// it durably before running the operation, so a proposal runs at most once.
type RequestID [16]byte

// String is the request id in hex.
func (r RequestID) String() string { return hex.EncodeToString(r[:]) }

// Params are an operation's parameters; each kind has its own type.
type Params interface {
	Kind() Kind
	validate() error
	render(b *strings.Builder)
}

// Proposal is what officers approve. Its canonical encoding (Encode) is
// deterministic CBOR of a fixed array:
//
//	[Domain, Kind, Params, ClusterID, Target, Epoch, SetHash, RequestID,
//	 Requester, NotBefore, Expiry]
//
// with Params the kind's own fixed array and the times in Unix seconds.
type Proposal struct {
	// Domain is always ProposalDomain.
	Domain string
	// Kind is the operation kind; it must match Params.Kind().
	Kind   Kind
	Params Params
	// ClusterID and Target name the cluster and the gateway that may run it.
	ClusterID string
	Target    string
	// Epoch and SetHash are those of the quorum set the proposal was made
	// under; a set change voids the proposal.
	Epoch   uint64
	SetHash [32]byte
	// RequestID is random (NewProposal draws it).
	RequestID RequestID
	// Requester is the principal that asked for the operation.
	Requester string
	// NotBefore ≤ now < Expiry for an approval to count; whole seconds.
	NotBefore time.Time
	Expiry    time.Time
}

type proposalWire struct {
	_         struct{} `cbor:",toarray"`
	Domain    string
	Kind      Kind
	Params    cbor.RawMessage
	ClusterID string
	Target    string
	Epoch     uint64
	SetHash   []byte
	RequestID []byte
	Requester string
	NotBefore int64
	Expiry    int64
}

// Header holds the fields of a proposal that its maker chooses besides the
// operation.
type Header struct {
	ClusterID string
	Target    string
	Requester string
	NotBefore time.Time
	Expiry    time.Time
}

// NewProposal makes a proposal for params under set, with a fresh random
// request id. Times are truncated to whole seconds.
func NewProposal(set *Set, params Params, h Header) (*Proposal, error) {
	if err := set.Validate(); err != nil {
		return nil, err
	}
	p := &Proposal{
		Domain:    ProposalDomain,
		Kind:      params.Kind(),
		Params:    params,
		ClusterID: h.ClusterID,
		Target:    h.Target,
		Epoch:     set.Epoch,
		SetHash:   set.Hash(),
		Requester: h.Requester,
		NotBefore: h.NotBefore.Truncate(time.Second).UTC(),
		Expiry:    h.Expiry.Truncate(time.Second).UTC(),
	}
	id, err := randomBytes(len(p.RequestID))
	if err != nil {
		return nil, err
	}
	copy(p.RequestID[:], id)
	if err := p.validate(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Proposal) validate() error {
	if p.Domain != ProposalDomain {
		return fmt.Errorf("%w: proposal domain %q", ErrNonCanonical, p.Domain)
	}
	if !p.Kind.Valid() {
		return fmt.Errorf("quorum: unknown operation kind %q", p.Kind)
	}
	if p.Params == nil || p.Params.Kind() != p.Kind {
		return fmt.Errorf("quorum: proposal of kind %s has parameters for another kind", p.Kind)
	}
	if err := p.Params.validate(); err != nil {
		return err
	}
	if err := checkText("cluster id", p.ClusterID, 128, false); err != nil {
		return err
	}
	if err := checkText("target gateway", p.Target, 128, false); err != nil {
		return err
	}
	if err := checkText("requester", p.Requester, 256, false); err != nil {
		return err
	}
	if p.Epoch < 1 {
		return errors.New("quorum: proposal epoch must be at least 1")
	}
	if p.RequestID == (RequestID{}) {
		return errors.New("quorum: proposal request id is zero")
	}
	if !p.Expiry.After(p.NotBefore) {
		return errors.New("quorum: proposal expires before it becomes valid")
	}
	if p.Expiry.Sub(p.NotBefore) > MaxValidity {
		return fmt.Errorf("quorum: proposal valid for %v, more than the %v allowed", p.Expiry.Sub(p.NotBefore), MaxValidity)
	}
	return nil
}

// Encode validates p and returns its canonical encoding: the bytes officers
// sign.
func (p *Proposal) Encode() ([]byte, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	params, err := marshal(p.Params)
	if err != nil {
		return nil, err
	}
	return marshal(proposalWire{
		Domain:    p.Domain,
		Kind:      p.Kind,
		Params:    params,
		ClusterID: p.ClusterID,
		Target:    p.Target,
		Epoch:     p.Epoch,
		SetHash:   p.SetHash[:],
		RequestID: p.RequestID[:],
		Requester: p.Requester,
		NotBefore: p.NotBefore.Unix(),
		Expiry:    p.Expiry.Unix(),
	})
}

// ProposalHash is SHA-256 of a proposal's encoding.
func ProposalHash(encoded []byte) [32]byte { return sha256.Sum256(encoded) }

// DecodeProposal strictly decodes a proposal: the input must be exactly
// the canonical encoding of a valid proposal (so Encode of the result gives
// back the same bytes), or ErrNonCanonical / a validation error.
func DecodeProposal(data []byte) (*Proposal, error) {
	var w proposalWire
	if err := unmarshalStrict(data, &w); err != nil {
		return nil, fmt.Errorf("proposal: %w", err)
	}
	if w.Domain != ProposalDomain {
		return nil, fmt.Errorf("%w: proposal domain %q", ErrNonCanonical, w.Domain)
	}
	if len(w.SetHash) != 32 || len(w.RequestID) != 16 {
		return nil, fmt.Errorf("%w: proposal set hash or request id of the wrong length", ErrNonCanonical)
	}
	params, err := decodeParams(w.Kind, w.Params)
	if err != nil {
		return nil, err
	}
	p := &Proposal{
		Domain:    w.Domain,
		Kind:      w.Kind,
		Params:    params,
		ClusterID: w.ClusterID,
		Target:    w.Target,
		Epoch:     w.Epoch,
		Requester: w.Requester,
		NotBefore: time.Unix(w.NotBefore, 0).UTC(),
		Expiry:    time.Unix(w.Expiry, 0).UTC(),
	}
	copy(p.SetHash[:], w.SetHash)
	copy(p.RequestID[:], w.RequestID)
	if err := p.validate(); err != nil {
		return nil, err
	}
	if again, err := p.Encode(); err != nil || !bytes.Equal(again, data) {
		return nil, fmt.Errorf("%w: proposal does not re-encode to the same bytes", ErrNonCanonical)
	}
	return p, nil
}

func decodeParams(kind Kind, raw []byte) (Params, error) {
	var p Params
	switch kind {
	case KindKeyExport:
		p = &KeyExportParams{}
	case KindDomainRecovery:
		p = &DomainRecoveryParams{}
	case KindFirmwareActivation:
		p = &FirmwareActivationParams{}
	case KindSetChange:
		var w setChangeWire
		if err := unmarshalStrict(raw, &w); err != nil {
			return nil, fmt.Errorf("set-change parameters: %w", err)
		}
		next, err := DecodeSet(w.Next)
		if err != nil {
			return nil, fmt.Errorf("set-change parameters: next set: %w", err)
		}
		return &SetChangeParams{Next: next}, nil
	case KindReleaseTrust:
		p = &ReleaseTrustParams{}
	case KindKeyOperation:
		p = &KeyOperationParams{}
	default:
		return nil, fmt.Errorf("quorum: unknown operation kind %q", kind)
	}
	if err := unmarshalStrict(raw, p); err != nil {
		return nil, fmt.Errorf("%s parameters: %w", kind, err)
	}
	return p, nil
}

// RecipientKey is an HPKE public key to encrypt to: a KEM identifier
// (KEMX25519 or KEMXWing) and the KEM's public key.
type RecipientKey struct {
	_         struct{} `cbor:",toarray"`
	KEM       uint16
	PublicKey []byte
}

// Fingerprint is SHA-256 of the recipient key's encoding.
func (r RecipientKey) Fingerprint() [32]byte { return sha256.Sum256(mustMarshal(r)) }

func (r RecipientKey) validate() error {
	k, err := recipientScheme(r.KEM)
	if err != nil {
		return err
	}
	if _, err := k.Scheme().UnmarshalBinaryPublicKey(r.PublicKey); err != nil {
		return fmt.Errorf("quorum: recipient public key: %v", err)
	}
	return nil
}

func kemName(id uint16) string {
	switch id {
	case uint16(KEMX25519):
		return "X25519 (DHKEM, HKDF-SHA256)"
	case uint16(KEMXWing):
		return "X-Wing (X25519 + ML-KEM-768)"
	}
	return fmt.Sprintf("KEM %#04x", id)
}

// KeyExportParams: export version KeyVersion (1, 2, … in order of
// rotation) of key KeyID, wrapped for Recipient with HPKE.
type KeyExportParams struct {
	_          struct{} `cbor:",toarray"`
	KeyID      string
	KeyVersion uint64
	Recipient  RecipientKey
}

func (*KeyExportParams) Kind() Kind { return KindKeyExport }
func (p *KeyExportParams) validate() error {
	if err := checkText("key id", p.KeyID, 256, false); err != nil {
		return err
	}
	if p.KeyVersion < 1 || p.KeyVersion > math.MaxUint32 {
		return fmt.Errorf("%w: key version %d (versions are numbered from 1)", ErrNonCanonical, p.KeyVersion)
	}
	return p.Recipient.validate()
}
func (p *KeyExportParams) render(b *strings.Builder) {
	fp := p.Recipient.Fingerprint()
	line(b, "export key", strconv.Quote(p.KeyID))
	line(b, "key version", strconv.FormatUint(p.KeyVersion, 10))
	line(b, "to recipient", hex.EncodeToString(fp[:]))
	line(b, "recipient KEM", kemName(p.Recipient.KEM))
}

// DomainRecoveryParams: recover domain key DomainKeyID from the Shamir
// split SplitID, re-encrypting the shares to Recipient (the recovering
// HSM's HPKE key).
type DomainRecoveryParams struct {
	_           struct{} `cbor:",toarray"`
	DomainKeyID string
	SplitID     []byte // 16 bytes
	Recipient   RecipientKey
}

func (*DomainRecoveryParams) Kind() Kind { return KindDomainRecovery }
func (p *DomainRecoveryParams) validate() error {
	if err := checkText("domain key id", p.DomainKeyID, 256, false); err != nil {
		return err
	}
	if len(p.SplitID) != 16 {
		return fmt.Errorf("%w: split id must be 16 bytes", ErrNonCanonical)
	}
	return p.Recipient.validate()
}
func (p *DomainRecoveryParams) render(b *strings.Builder) {
	fp := p.Recipient.Fingerprint()
	line(b, "domain key", strconv.Quote(p.DomainKeyID))
	line(b, "share split id", hex.EncodeToString(p.SplitID))
	line(b, "to recipient", hex.EncodeToString(fp[:]))
	line(b, "recipient KEM", kemName(p.Recipient.KEM))
}

// FirmwareActivationParams: activate firmware Version whose image has
// SHA-256 ImageSHA256.
type FirmwareActivationParams struct {
	_           struct{} `cbor:",toarray"`
	Version     string
	ImageSHA256 []byte // 32 bytes
}

func (*FirmwareActivationParams) Kind() Kind { return KindFirmwareActivation }
func (p *FirmwareActivationParams) validate() error {
	if err := checkText("firmware version", p.Version, 128, false); err != nil {
		return err
	}
	if len(p.ImageSHA256) != sha256.Size {
		return fmt.Errorf("%w: firmware image SHA-256 must be 32 bytes", ErrNonCanonical)
	}
	return nil
}
func (p *FirmwareActivationParams) render(b *strings.Builder) {
	line(b, "firmware version", strconv.Quote(p.Version))
	line(b, "image SHA-256", hex.EncodeToString(p.ImageSHA256))
}

// KeyOperationParams: run Operation on key KeyID; Request is the exact
// request body the gateway will execute (at most 16 KiB).
type KeyOperationParams struct {
	_         struct{} `cbor:",toarray"`
	KeyID     string
	Operation string
	Request   []byte
}

func (*KeyOperationParams) Kind() Kind { return KindKeyOperation }
func (p *KeyOperationParams) validate() error {
	if err := checkText("key id", p.KeyID, 256, false); err != nil {
		return err
	}
	if err := checkText("operation", p.Operation, 64, false); err != nil {
		return err
	}
	if len(p.Request) > 16<<10 {
		return fmt.Errorf("quorum: key operation request is %d bytes, more than 16 KiB", len(p.Request))
	}
	return nil
}
func (p *KeyOperationParams) render(b *strings.Builder) {
	line(b, "key", strconv.Quote(p.KeyID))
	line(b, "operation", strconv.Quote(p.Operation))
	sum := sha256.Sum256(p.Request)
	line(b, "request SHA-256", hex.EncodeToString(sum[:]))
	if utf8.Valid(p.Request) {
		line(b, "request", strconv.QuoteToASCII(string(p.Request)))
	} else {
		line(b, "request (hex)", hex.EncodeToString(p.Request))
	}
}

// ReleaseTrustParams: replace the firmware images' trusted state (package
// images: release keys and threshold, timestamp keys) by the trust record
// of version Version whose canonical encoding has SHA-256 TrustSHA256.
// The record itself travels beside the proposal; officers check its hash.
type ReleaseTrustParams struct {
	_           struct{} `cbor:",toarray"`
	Version     uint64
	TrustSHA256 []byte // 32 bytes
}

func (*ReleaseTrustParams) Kind() Kind { return KindReleaseTrust }
func (p *ReleaseTrustParams) validate() error {
	if p.Version < 1 {
		return fmt.Errorf("%w: trust version %d", ErrNonCanonical, p.Version)
	}
	if len(p.TrustSHA256) != sha256.Size {
		return fmt.Errorf("%w: trust SHA-256 must be 32 bytes", ErrNonCanonical)
	}
	return nil
}
func (p *ReleaseTrustParams) render(b *strings.Builder) {
	line(b, "trust version", strconv.FormatUint(p.Version, 10))
	line(b, "trust SHA-256", hex.EncodeToString(p.TrustSHA256))
}

// SetChangeParams: replace the quorum set by Next (whose epoch must be the
// current one + 1).
type SetChangeParams struct {
	Next *Set
}

type setChangeWire struct {
	_    struct{} `cbor:",toarray"`
	Next []byte   // the canonical encoding of the next set
}

func (*SetChangeParams) Kind() Kind { return KindSetChange }
func (p *SetChangeParams) validate() error {
	if p.Next == nil {
		return errors.New("quorum: set change without a next set")
	}
	return p.Next.Validate()
}

// MarshalCBOR encodes the next set as its canonical encoding in a byte
// string, so that its hash is computed over exactly the bytes signed.
func (p *SetChangeParams) MarshalCBOR() ([]byte, error) {
	next, err := p.Next.Encode()
	if err != nil {
		return nil, err
	}
	return marshal(setChangeWire{Next: next})
}

func (p *SetChangeParams) render(b *strings.Builder) {
	h := p.Next.Hash()
	line(b, "next epoch", strconv.FormatUint(p.Next.Epoch, 10))
	line(b, "next set hash", hex.EncodeToString(h[:]))
	b.WriteString("  next officers\n")
	for _, o := range p.Next.canonical().Officers {
		fp := o.Fingerprint()
		fmt.Fprintf(b, "    %s %s\n", fp, strconv.Quote(o.Name))
	}
	b.WriteString("  next thresholds\n")
	for _, k := range Kinds {
		fmt.Fprintf(b, "    %-22s %d of %d\n", k, p.Next.Threshold(k), len(p.Next.Officers))
	}
}

func line(b *strings.Builder, label, value string) {
	fmt.Fprintf(b, "  %-18s %s\n", label, value)
}

// Render is the human-readable text of a proposal that `hsmofficer show`
// prints and `hsmofficer approve` shows before signing. Every string is
// quoted with Go escapes, so nothing in a proposal can move the cursor,
// change colours or hide text.
func (p *Proposal) Render() string {
	enc, err := p.Encode()
	if err != nil {
		return "invalid proposal: " + err.Error() + "\n"
	}
	h := ProposalHash(enc)
	var b strings.Builder
	fmt.Fprintf(&b, "PROPOSAL %s\n", strings.ToUpper(string(p.Kind)))
	line(&b, "proposal hash", hex.EncodeToString(h[:]))
	line(&b, "request id", p.RequestID.String())
	line(&b, "requester", strconv.Quote(p.Requester))
	line(&b, "cluster", strconv.Quote(p.ClusterID))
	line(&b, "target gateway", strconv.Quote(p.Target))
	line(&b, "quorum epoch", strconv.FormatUint(p.Epoch, 10))
	line(&b, "quorum set hash", hex.EncodeToString(p.SetHash[:]))
	line(&b, "valid from", p.NotBefore.UTC().Format(time.RFC3339))
	line(&b, "valid until", fmt.Sprintf("%s (%v)", p.Expiry.UTC().Format(time.RFC3339), p.Expiry.Sub(p.NotBefore)))
	fmt.Fprintf(&b, "OPERATION %s\n", p.Kind)
	p.Params.render(&b)
	fmt.Fprintf(&b, "Approving signs these %d bytes (SHA-256 above) and nothing else.\n", len(enc))
	return b.String()
}
