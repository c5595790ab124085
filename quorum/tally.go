package quorum

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Reasons a proposal or an approval is refused. Each error returned by this
// package wraps exactly one of them (test with errors.Is), with the details
// (which officer, which epoch…) in its text.
var (
	// ErrUnknownOfficer: an approval, rejection or proof by a fingerprint
	// that is not in the quorum set.
	ErrUnknownOfficer = errors.New("quorum: not an officer of the current quorum set")
	// ErrDuplicate: a second approval by an officer already counted.
	ErrDuplicate = errors.New("quorum: officer already counted")
	// ErrConflict: an officer who both approved and rejected; the rejection
	// wins.
	ErrConflict = errors.New("quorum: officer both approved and rejected (the rejection counts)")
	// ErrWrongEpoch: a proposal made under another quorum-set epoch (a set
	// change voids every pending proposal), or a set change whose next
	// epoch is not the current one + 1.
	ErrWrongEpoch = errors.New("quorum: wrong quorum-set epoch")
	// ErrSetHash: the proposal's quorum-set hash is not the current set's.
	ErrSetHash = errors.New("quorum: proposal names another quorum set")
	// ErrExpired: now is at or after the proposal's expiry.
	ErrExpired = errors.New("quorum: proposal expired")
	// ErrNotYetValid: now is before the proposal's not-before time.
	ErrNotYetValid = errors.New("quorum: proposal not yet valid")
	// ErrWrongCluster: the proposal is for another cluster.
	ErrWrongCluster = errors.New("quorum: proposal is for another cluster")
	// ErrWrongTarget: the proposal is for another gateway.
	ErrWrongTarget = errors.New("quorum: proposal is for another gateway")
	// ErrWrongKind: a proposal of another kind than the call expects.
	ErrWrongKind = errors.New("quorum: proposal is of another kind")
	// ErrProposalMismatch: an approval or rejection that names another
	// proposal's hash.
	ErrProposalMismatch = errors.New("quorum: approval is for another proposal")
	// ErrThresholdNotMet: fewer valid approvals than the kind's threshold.
	ErrThresholdNotMet = errors.New("quorum: threshold not met")
	// ErrRejected: so many officers rejected that the threshold can no
	// longer be met.
	ErrRejected = errors.New("quorum: rejected by officers; the threshold can no longer be met")
	// ErrMissingPossession: a set change adds a key without its proof of
	// possession.
	ErrMissingPossession = errors.New("quorum: no proof of possession for a new officer key")
	// ErrBadPossession: a proof of possession that does not verify or is
	// for another set.
	ErrBadPossession = errors.New("quorum: proof of possession does not verify")
)

// Scope is where the verifier runs: a proposal counts only in its own
// cluster and on its own target gateway.
type Scope struct {
	ClusterID string
	Target    string
}

// Invalid is one approval or rejection that was not counted, and why.
type Invalid struct {
	// Index is its position among those added (approvals and rejections
	// share the count).
	Index   int
	Officer Fingerprint
	Err     error
}

// Decision is the result of a tally.
type Decision struct {
	ProposalHash [32]byte
	RequestID    RequestID
	Kind         Kind
	Epoch        uint64
	Threshold    int
	Officers     int
	// Approvals are the distinct officers whose approvals counted, sorted.
	Approvals []Fingerprint
	// Rejections are the distinct officers whose rejections counted, sorted.
	Rejections []Fingerprint
	// Invalid lists everything not counted.
	Invalid []Invalid
}

// Met reports whether the threshold is met.
func (d *Decision) Met() bool { return len(d.Approvals) >= d.Threshold }

// Tally counts approvals and rejections of one proposal against one set.
// It is not safe for concurrent use.
type Tally struct {
	set       *Set
	proposal  *Proposal
	raw       []byte
	hash      [32]byte
	scope     Scope
	threshold int
	added     int
	approved  map[Fingerprint]bool
	rejected  map[Fingerprint]bool
	invalid   []Invalid
}

// NewTally decodes proposal (its exact bytes) and checks it against set,
// scope and now: ErrWrongEpoch, ErrSetHash, ErrWrongCluster,
// ErrWrongTarget, ErrNotYetValid, ErrExpired, or a decoding error.
func NewTally(set *Set, proposal []byte, scope Scope, now time.Time) (*Tally, error) {
	if err := set.Validate(); err != nil {
		return nil, err
	}
	p, err := DecodeProposal(proposal)
	if err != nil {
		return nil, err
	}
	if p.Epoch != set.Epoch {
		return nil, fmt.Errorf("%w: the proposal is for epoch %d, the quorum set is at epoch %d", ErrWrongEpoch, p.Epoch, set.Epoch)
	}
	if h := set.Hash(); p.SetHash != h {
		return nil, fmt.Errorf("%w: the proposal names set %x…, the current set is %x…", ErrSetHash, p.SetHash[:8], h[:8])
	}
	if p.ClusterID != scope.ClusterID {
		return nil, fmt.Errorf("%w: the proposal is for cluster %q, this is %q", ErrWrongCluster, p.ClusterID, scope.ClusterID)
	}
	if p.Target != scope.Target {
		return nil, fmt.Errorf("%w: the proposal is for gateway %q, this is %q", ErrWrongTarget, p.Target, scope.Target)
	}
	if err := checkTime(p, now); err != nil {
		return nil, err
	}
	return &Tally{
		set: set, proposal: p, raw: bytes.Clone(proposal), hash: ProposalHash(proposal), scope: scope,
		threshold: set.Threshold(p.Kind),
		approved:  map[Fingerprint]bool{},
		rejected:  map[Fingerprint]bool{},
	}, nil
}

func checkTime(p *Proposal, now time.Time) error {
	if now.Before(p.NotBefore) {
		return fmt.Errorf("%w: valid from %s, it is %s", ErrNotYetValid, p.NotBefore.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if !now.Before(p.Expiry) {
		return fmt.Errorf("%w: valid until %s, it is %s", ErrExpired, p.Expiry.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return nil
}

// Proposal is the decoded proposal.
func (t *Tally) Proposal() *Proposal { return t.proposal }

func (t *Tally) fail(fp Fingerprint, err error) error {
	t.invalid = append(t.invalid, Invalid{Index: t.added - 1, Officer: fp, Err: err})
	return err
}

func (t *Tally) officer(hash, officer []byte) (Fingerprint, OfficerPublicKey, error) {
	var fp Fingerprint
	copy(fp[:], officer)
	if !bytes.Equal(hash, t.hash[:]) {
		return fp, OfficerPublicKey{}, fmt.Errorf("%w: it names proposal %x…, this is %x…", ErrProposalMismatch, hash[:min(8, len(hash))], t.hash[:8])
	}
	o, ok := t.set.Officer(fp)
	if !ok {
		return fp, OfficerPublicKey{}, fmt.Errorf("%w: %s", ErrUnknownOfficer, fp.Short())
	}
	return fp, o, nil
}

// AddApproval counts a if it is valid and returns nil, or returns why it
// does not count: ErrProposalMismatch, ErrUnknownOfficer, ErrBadSignature,
// ErrDuplicate or ErrConflict.
func (t *Tally) AddApproval(a *Approval) error {
	t.added++
	if a == nil {
		return t.fail(Fingerprint{}, fmt.Errorf("%w: no approval", ErrNonCanonical))
	}
	fp, o, err := t.officer(a.ProposalHash, a.Officer)
	if err != nil {
		return t.fail(fp, err)
	}
	if a.Tag != tagApproval {
		return t.fail(fp, fmt.Errorf("%w: not an approval", ErrNonCanonical))
	}
	if err := o.VerifySignature(ApprovalMessage(t.raw), a.Signature); err != nil {
		return t.fail(fp, fmt.Errorf("approval by %s (%q): %w", fp.Short(), o.Name, err))
	}
	if t.approved[fp] {
		return t.fail(fp, fmt.Errorf("%w: %s (%q) approved more than once", ErrDuplicate, fp.Short(), o.Name))
	}
	if t.rejected[fp] {
		return t.fail(fp, fmt.Errorf("%w: %s (%q)", ErrConflict, fp.Short(), o.Name))
	}
	t.approved[fp] = true
	return nil
}

// AddRejection counts r if it is valid, or returns why not (as AddApproval).
// An officer's valid rejection removes an approval of theirs already counted.
func (t *Tally) AddRejection(r *Rejection) error {
	t.added++
	if r == nil {
		return t.fail(Fingerprint{}, fmt.Errorf("%w: no rejection", ErrNonCanonical))
	}
	fp, o, err := t.officer(r.ProposalHash, r.Officer)
	if err != nil {
		return t.fail(fp, err)
	}
	if r.Tag != tagRejection {
		return t.fail(fp, fmt.Errorf("%w: not a rejection", ErrNonCanonical))
	}
	if err := o.VerifySignature(RejectionMessage(t.raw, r.Reason), r.Signature); err != nil {
		return t.fail(fp, fmt.Errorf("rejection by %s (%q): %w", fp.Short(), o.Name, err))
	}
	if t.rejected[fp] {
		return t.fail(fp, fmt.Errorf("%w: %s (%q) rejected more than once", ErrDuplicate, fp.Short(), o.Name))
	}
	if t.approved[fp] {
		delete(t.approved, fp)
		t.invalid = append(t.invalid, Invalid{Index: t.added - 1, Officer: fp, Err: fmt.Errorf("%w: %s (%q)", ErrConflict, fp.Short(), o.Name)})
	}
	t.rejected[fp] = true
	return nil
}

// Decision reports the tally at now (the proposal must still be valid
// then). The error is nil exactly when the threshold is met; otherwise it
// wraps ErrExpired/ErrNotYetValid, ErrRejected or ErrThresholdNotMet, joined
// with the reason of every approval not counted.
func (t *Tally) Decision(now time.Time) (Decision, error) {
	d := Decision{
		ProposalHash: t.hash, RequestID: t.proposal.RequestID, Kind: t.proposal.Kind, Epoch: t.proposal.Epoch,
		Threshold: t.threshold, Officers: len(t.set.Officers), Invalid: slices.Clone(t.invalid),
	}
	for fp := range t.approved {
		d.Approvals = append(d.Approvals, fp)
	}
	for fp := range t.rejected {
		d.Rejections = append(d.Rejections, fp)
	}
	cmp := func(a, b Fingerprint) int { return bytes.Compare(a[:], b[:]) }
	slices.SortFunc(d.Approvals, cmp)
	slices.SortFunc(d.Rejections, cmp)
	if err := checkTime(t.proposal, now); err != nil {
		return d, err
	}
	if d.Met() {
		return d, nil
	}
	errs := []error{}
	if len(d.Rejections) > d.Officers-d.Threshold {
		errs = append(errs, fmt.Errorf("%w: %d of %d officers rejected, %d approvals are needed", ErrRejected, len(d.Rejections), d.Officers, d.Threshold))
	} else {
		errs = append(errs, fmt.Errorf("%w: %d of the %d approvals needed for %s", ErrThresholdNotMet, len(d.Approvals), d.Threshold, d.Kind))
	}
	for _, inv := range d.Invalid {
		errs = append(errs, inv.Err)
	}
	return d, errors.Join(errs...)
}

// Verify tallies approvals of proposal (its exact bytes) under set at now,
// for a verifier in scope. It returns the decision and nil when a threshold
// of distinct officers approved; otherwise the reason (see NewTally and
// Tally.Decision; errors.Is finds every reason in the joined error).
func Verify(set *Set, proposal []byte, approvals []*Approval, now time.Time, scope Scope) (Decision, error) {
	t, err := NewTally(set, proposal, scope, now)
	if err != nil {
		return Decision{}, err
	}
	for _, a := range approvals {
		_ = t.AddApproval(a) // recorded in the decision
	}
	return t.Decision(now)
}
