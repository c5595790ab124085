package quorum

import (
	"errors"
	"slices"
	"testing"
	"time"
)

func TestSetChangeVoidsPendingProposals(t *testing.T) {
	ks := officers(t, 4)
	a, b, c, d := ks[0], ks[1], ks[2], ks[3]
	current := newSet(t, 1, ks[:3], 2)
	now := t0.Add(time.Hour)

	// A firmware proposal is pending under epoch 1, with one approval.
	pending := propose(t, current)
	pendingApprovals := []*Approval{approve(t, a, pending)}

	// Add d; set changes now need 3 of 4.
	next := newSet(t, 2, ks, 2)
	next.Thresholds[KindSetChange] = 3
	p, err := ProposeSetChange(current, next, header())
	if err != nil {
		t.Fatal(err)
	}
	prop, err := p.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeProposal(prop); err != nil || got.Params.(*SetChangeParams).Next.Hash() != next.Hash() {
		t.Fatalf("set-change proposal round trip: %v", err)
	}
	t.Log("\n" + p.Render())
	pop, err := d.ProvePossession(next)
	if err != nil {
		t.Fatal(err)
	}
	approvals := []*Approval{approve(t, a, prop), approve(t, c, prop)}
	got, dec, err := ApplySetChange(current, prop, approvals, []*ProofOfPossession{pop}, now, scope)
	if err != nil {
		t.Fatal(err)
	}
	if got.Hash() != next.Hash() || got.Epoch != 2 || len(dec.Approvals) != 2 {
		t.Fatal("applied set differs")
	}

	// The pending proposal now fails, even with enough approvals.
	pendingApprovals = append(pendingApprovals, approve(t, b, pending), approve(t, d, pending))
	if _, err := Verify(got, pending, pendingApprovals, now, scope); !errors.Is(err, ErrWrongEpoch) {
		t.Fatalf("pending proposal after the set change: %v, want ErrWrongEpoch", err)
	}
	// The same set change cannot be applied again to the new set.
	if _, _, err := ApplySetChange(got, prop, approvals, []*ProofOfPossession{pop}, now, scope); !errors.Is(err, ErrWrongEpoch) {
		t.Fatalf("set change replayed on the next set: %v", err)
	}
	// A new proposal under epoch 2 works with the new officer.
	fresh := propose(t, got)
	if _, err := Verify(got, fresh, []*Approval{approve(t, d, fresh), approve(t, b, fresh)}, now, scope); err != nil {
		t.Fatal(err)
	}
}

func TestSetChangeRefusals(t *testing.T) {
	ks := officers(t, 6)
	a, b, c, d, e := ks[0], ks[1], ks[2], ks[3], ks[4]
	current := newSet(t, 1, ks[:3], 2)
	now := t0.Add(time.Hour)
	encode := func(p *Proposal) []byte {
		b, err := p.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// Rotate c's key to e, add d.
	next := newSet(t, 2, []*OfficerKey{a, b, d, e}, 3)
	prop := encode(must(ProposeSetChange(current, next, header())))
	quorum := []*Approval{approve(t, a, prop), approve(t, b, prop)}
	popD, _ := d.ProvePossession(next)
	popE, _ := e.ProvePossession(next)
	otherNext := newSet(t, 2, []*OfficerKey{a, b, d, e}, 4)
	popEOther, _ := e.ProvePossession(otherNext)
	// d's statement signed by e: right statement, wrong key.
	forged := *popD
	forged.Signature, _ = e.Sign(PossessionMessage(next.Hash(), d.Fingerprint()))

	for _, tc := range []struct {
		name      string
		approvals []*Approval
		pops      []*ProofOfPossession
		want      error
	}{
		{"all good", quorum, []*ProofOfPossession{popD, popE}, nil},
		{"pops in any order, with extras", quorum, []*ProofOfPossession{popE, &forged, popD}, nil},
		{"one approval", quorum[:1], []*ProofOfPossession{popD, popE}, ErrThresholdNotMet},
		{"approval by a key being added", []*Approval{quorum[0], approve(t, d, prop)}, []*ProofOfPossession{popD, popE}, ErrUnknownOfficer},
		{"missing proof for the rotated key", quorum, []*ProofOfPossession{popD}, ErrMissingPossession},
		{"missing proof for the added key", quorum, []*ProofOfPossession{popE}, ErrMissingPossession},
		{"proof for another set", quorum, []*ProofOfPossession{popD, popEOther}, ErrBadPossession},
		{"proof signed by another key", quorum, []*ProofOfPossession{&forged, popE}, ErrBadPossession},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := ApplySetChange(current, prop, tc.approvals, tc.pops, now, scope)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if err == nil && got.Hash() != next.Hash() {
				t.Fatal("wrong next set")
			}
			t.Logf("%v", err)
		})
	}

	// Epochs: proposing a skip is refused, and so is applying one made by
	// hand.
	skip := newSet(t, 3, []*OfficerKey{a, b, c}, 2)
	if _, err := ProposeSetChange(current, skip, header()); !errors.Is(err, ErrWrongEpoch) {
		t.Fatalf("propose epoch 1 → 3: %v", err)
	}
	manual := encode(must(NewProposal(current, &SetChangeParams{Next: skip}, header())))
	if _, _, err := ApplySetChange(current, manual, []*Approval{approve(t, a, manual), approve(t, b, manual)}, nil, now, scope); !errors.Is(err, ErrWrongEpoch) {
		t.Fatalf("apply epoch 1 → 3: %v", err)
	}
	// A next set with an invalid set-change threshold cannot be proposed.
	weak := newSet(t, 2, []*OfficerKey{a, b, c, d}, 3)
	weak.Thresholds[KindSetChange] = 2 // half of 4
	if _, err := ProposeSetChange(current, weak, header()); !errors.Is(err, ErrThreshold) {
		t.Fatalf("weak next set: %v", err)
	}
	// A firmware proposal is not a set change.
	fw := propose(t, current)
	if _, _, err := ApplySetChange(current, fw, []*Approval{approve(t, a, fw), approve(t, b, fw)}, nil, now, scope); !errors.Is(err, ErrWrongKind) {
		t.Fatalf("firmware proposal applied as a set change: %v", err)
	}
	// Set-change threshold of the current set: 3 of 3 needed when so set.
	strict := newSet(t, 1, ks[:3], 2)
	strict.Thresholds[KindSetChange] = 3
	next2 := newSet(t, 2, []*OfficerKey{a, b}, 2)
	p2 := encode(must(ProposeSetChange(strict, next2, header())))
	if _, _, err := ApplySetChange(strict, p2, []*Approval{approve(t, a, p2), approve(t, b, p2)}, nil, now, scope); !errors.Is(err, ErrThresholdNotMet) {
		t.Fatalf("2 of 3 where 3 are needed: %v", err)
	}
	// Removing an officer needs no proof of possession.
	got, _, err := ApplySetChange(strict, p2, []*Approval{approve(t, a, p2), approve(t, b, p2), approve(t, c, p2)}, nil, now, scope)
	if err != nil || len(got.Officers) != 2 {
		t.Fatalf("remove c: %v", err)
	}
	// Genesis: every officer proves possession.
	genesis := newSet(t, 1, ks[:3], 2)
	var pops []*ProofOfPossession
	for _, k := range ks[:3] {
		p, err := k.ProvePossession(genesis)
		if err != nil {
			t.Fatal(err)
		}
		pops = append(pops, p)
	}
	if err := VerifyPossession(genesis, genesis.Officers, pops); err != nil {
		t.Fatal(err)
	}
	if err := VerifyPossession(genesis, genesis.Officers, slices.Delete(slices.Clone(pops), 1, 2)); !errors.Is(err, ErrMissingPossession) {
		t.Fatalf("genesis without one proof: %v", err)
	}
	if _, err := e.ProvePossession(genesis); !errors.Is(err, ErrUnknownOfficer) {
		t.Fatalf("proof for a set without the key: %v", err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
