package quorum

import (
	"bytes"
	"fmt"
	"time"
)

// ProposeSetChange makes a set-change proposal from current to next. next
// must be valid and its epoch current's + 1.
func ProposeSetChange(current, next *Set, h Header) (*Proposal, error) {
	if err := next.Validate(); err != nil {
		return nil, fmt.Errorf("next set: %w", err)
	}
	if next.Epoch != current.Epoch+1 {
		return nil, fmt.Errorf("%w: the next set's epoch must be %d, not %d", ErrWrongEpoch, current.Epoch+1, next.Epoch)
	}
	return NewProposal(current, &SetChangeParams{Next: next}, h)
}

// ApplySetChange checks a set change and returns the next set. It needs:
// the set-change threshold of current's officers approving proposal (as
// Verify, in scope at now), next.Epoch == current.Epoch + 1, and a valid
// proof of possession (for the next set's hash) from every key in next
// that is not in current. Proposals made under current fail with
// ErrWrongEpoch against the result.
//
// The caller runs it through an Executor (or its own ledger) like any
// operation, and then replaces the current set durably.
func ApplySetChange(current *Set, proposal []byte, approvals []*Approval, pops []*ProofOfPossession, now time.Time, scope Scope) (*Set, Decision, error) {
	d, err := Verify(current, proposal, approvals, now, scope)
	if err != nil {
		return nil, d, err
	}
	p, err := DecodeProposal(proposal)
	if err != nil {
		return nil, d, err
	}
	params, ok := p.Params.(*SetChangeParams)
	if !ok {
		return nil, d, fmt.Errorf("%w: %s, not %s", ErrWrongKind, p.Kind, KindSetChange)
	}
	next := params.Next
	if next.Epoch != current.Epoch+1 {
		return nil, d, fmt.Errorf("%w: the next set's epoch is %d, want %d", ErrWrongEpoch, next.Epoch, current.Epoch+1)
	}
	var added []OfficerPublicKey
	for _, o := range next.Officers {
		if _, ok := current.Officer(o.Fingerprint()); !ok {
			added = append(added, o)
		}
	}
	if err := VerifyPossession(next, added, pops); err != nil {
		return nil, d, err
	}
	return next, d, nil
}

// VerifyPossession checks that each of officers (members of set) has a
// valid proof of possession over set's hash among pops. Use it with all of
// a genesis set's officers before trusting that set.
func VerifyPossession(set *Set, officers []OfficerPublicKey, pops []*ProofOfPossession) error {
	h := set.Hash()
	for _, o := range officers {
		fp := o.Fingerprint()
		if _, ok := set.Officer(fp); !ok {
			return fmt.Errorf("%w: %s is not in the set", ErrUnknownOfficer, fp.Short())
		}
		var err error = fmt.Errorf("%w: %s (%q)", ErrMissingPossession, fp.Short(), o.Name)
		for _, pop := range pops {
			if pop == nil || !bytes.Equal(pop.Officer, fp[:]) {
				continue
			}
			if err = pop.verify(h, o); err == nil {
				break
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}
