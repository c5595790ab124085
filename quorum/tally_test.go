package quorum

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// TestVerifyRejections has one case per rejection reason, each with its
// positive twin: the same setup with the one fault fixed must pass.
func TestVerifyRejections(t *testing.T) {
	ks := officers(t, 4)
	a, b, c, outsider := ks[0], ks[1], ks[2], ks[3]
	set := newSet(t, 1, ks[:3], 2)
	prop := propose(t, set)
	other := propose(t, set) // same content, another request id
	valid := t0.Add(time.Hour)

	type input struct {
		set        *Set
		approvals  []*Approval
		rejections []*Rejection
		now        time.Time
		scope      Scope
	}
	base := func() input {
		return input{set: set, approvals: []*Approval{approve(t, a, prop)}, now: valid, scope: scope}
	}
	reject := func(k *OfficerKey) *Rejection {
		r, err := k.Reject(prop, "not scheduled")
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// overOtherBytes: b's approval of another proposal, relabelled with this
	// proposal's hash: a signature over other bytes.
	overOtherBytes := func() *Approval {
		x := approve(t, b, other)
		h := ProposalHash(prop)
		x.ProposalHash = h[:]
		return x
	}
	epoch2 := newSet(t, 2, ks[:3], 2)
	otherThresholds := newSet(t, 1, ks[:3], 2)
	otherThresholds.Thresholds[KindKeyExport] = 3

	for _, tc := range []struct {
		name  string
		want  error
		fault func(in *input) // the case
		fix   func(in *input) // its positive twin
	}{
		{"unknown officer", ErrUnknownOfficer,
			func(in *input) { in.approvals = append(in.approvals, approve(t, outsider, prop)) },
			func(in *input) { in.approvals = append(in.approvals, approve(t, b, prop)) }},
		{"duplicate", ErrDuplicate,
			func(in *input) { in.approvals = append(in.approvals, approve(t, a, prop)) },
			func(in *input) { in.approvals = append(in.approvals, approve(t, b, prop)) }},
		{"same approval twice", ErrDuplicate,
			func(in *input) { in.approvals = append(in.approvals, in.approvals[0]) },
			func(in *input) { in.approvals = append(in.approvals, approve(t, c, prop)) }},
		{"wrong epoch", ErrWrongEpoch,
			func(in *input) { in.set = epoch2; in.approvals = append(in.approvals, approve(t, b, prop)) },
			func(in *input) { in.approvals = append(in.approvals, approve(t, b, prop)) }},
		{"set hash", ErrSetHash,
			func(in *input) { in.set = otherThresholds; in.approvals = append(in.approvals, approve(t, b, prop)) },
			func(in *input) { in.approvals = append(in.approvals, approve(t, b, prop)) }},
		{"expired", ErrExpired,
			func(in *input) {
				in.now = t0.Add(24 * time.Hour)
				in.approvals = append(in.approvals, approve(t, b, prop))
			},
			func(in *input) {
				in.now = t0.Add(24*time.Hour - time.Second)
				in.approvals = append(in.approvals, approve(t, b, prop))
			}},
		{"not yet valid", ErrNotYetValid,
			func(in *input) {
				in.now = t0.Add(-time.Second)
				in.approvals = append(in.approvals, approve(t, b, prop))
			},
			func(in *input) { in.now = t0; in.approvals = append(in.approvals, approve(t, b, prop)) }},
		{"signature over other bytes", ErrBadSignature,
			func(in *input) { in.approvals = append(in.approvals, overOtherBytes()) },
			func(in *input) { in.approvals = append(in.approvals, approve(t, b, prop)) }},
		{"approval of another proposal", ErrProposalMismatch,
			func(in *input) { in.approvals = append(in.approvals, approve(t, b, other)) },
			func(in *input) { in.approvals = append(in.approvals, approve(t, b, prop)) }},
		{"claims another officer", ErrBadSignature,
			func(in *input) {
				x := approve(t, b, prop)
				fp := c.Fingerprint()
				x.Officer = fp[:]
				in.approvals = append(in.approvals, x)
			},
			func(in *input) { in.approvals = append(in.approvals, approve(t, c, prop)) }},
		{"wrong cluster", ErrWrongCluster,
			func(in *input) {
				in.scope.ClusterID = "prod-us"
				in.approvals = append(in.approvals, approve(t, b, prop))
			},
			func(in *input) { in.approvals = append(in.approvals, approve(t, b, prop)) }},
		{"wrong target", ErrWrongTarget,
			func(in *input) { in.scope.Target = "gw-2"; in.approvals = append(in.approvals, approve(t, b, prop)) },
			func(in *input) { in.approvals = append(in.approvals, approve(t, b, prop)) }},
		{"threshold not met", ErrThresholdNotMet,
			func(in *input) {},
			func(in *input) { in.approvals = append(in.approvals, approve(t, b, prop)) }},
		{"rejected", ErrRejected,
			func(in *input) { in.rejections = []*Rejection{reject(b), reject(c)} },
			func(in *input) {
				in.rejections = []*Rejection{reject(c)}
				in.approvals = append(in.approvals, approve(t, b, prop))
			}},
		{"approved and rejected", ErrConflict,
			func(in *input) {
				in.approvals = append(in.approvals, approve(t, b, prop))
				in.rejections = []*Rejection{reject(b)}
			},
			func(in *input) {
				in.approvals = append(in.approvals, approve(t, b, prop))
				in.rejections = []*Rejection{reject(c)}
			}},
	} {
		run := func(in input) (Decision, error) {
			tally, err := NewTally(in.set, prop, in.scope, in.now)
			if err != nil {
				return Decision{}, err
			}
			for _, x := range in.approvals {
				_ = tally.AddApproval(x)
			}
			for _, x := range in.rejections {
				_ = tally.AddRejection(x)
			}
			return tally.Decision(in.now)
		}
		t.Run(tc.name, func(t *testing.T) {
			in := base()
			tc.fault(&in)
			d, err := run(in)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if d.Met() && d.Threshold > 0 {
				t.Fatalf("decision met despite %v", err)
			}
			t.Logf("refused: %v", err)

			in = base()
			tc.fix(&in)
			d, err = run(in)
			if err != nil {
				t.Fatalf("positive twin: %v", err)
			}
			if !d.Met() || len(d.Approvals) != 2 {
				t.Fatalf("positive twin: %d approvals of %d", len(d.Approvals), d.Threshold)
			}
			// Verify (approvals only) agrees when there are no rejections.
			if len(in.rejections) == 0 {
				if _, err := Verify(in.set, prop, in.approvals, in.now, in.scope); err != nil {
					t.Fatalf("Verify on the positive twin: %v", err)
				}
			}
		})
	}
}

func TestTallyReasonsPerApproval(t *testing.T) {
	ks := officers(t, 4)
	set := newSet(t, 1, ks[:3], 2)
	prop := propose(t, set)
	tally, err := NewTally(set, prop, scope, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := tally.AddApproval(approve(t, ks[3], prop)); !errors.Is(err, ErrUnknownOfficer) {
		t.Errorf("outsider: %v", err)
	}
	if err := tally.AddApproval(approve(t, ks[0], prop)); err != nil {
		t.Errorf("officer 0: %v", err)
	}
	if err := tally.AddApproval(approve(t, ks[0], prop)); !errors.Is(err, ErrDuplicate) {
		t.Errorf("officer 0 again: %v", err)
	}
	d, err := tally.Decision(t0)
	if !errors.Is(err, ErrThresholdNotMet) || !errors.Is(err, ErrUnknownOfficer) || !errors.Is(err, ErrDuplicate) {
		t.Fatalf("decision error %v should name every reason", err)
	}
	if len(d.Invalid) != 2 || d.Invalid[0].Index != 0 || d.Invalid[1].Index != 2 {
		t.Fatalf("invalid = %+v", d.Invalid)
	}
	if err := tally.AddApproval(approve(t, ks[1], prop)); err != nil {
		t.Fatal(err)
	}
	if _, err := tally.Decision(t0); err != nil {
		t.Fatalf("2 of 3 with extra invalid approvals: %v", err)
	}
	// Still valid at approval time, expired at decision time.
	if _, err := tally.Decision(t0.Add(48 * time.Hour)); !errors.Is(err, ErrExpired) {
		t.Fatalf("decision after expiry: %v", err)
	}
}

func TestExecutorRunsOnceAndRefusesReplay(t *testing.T) {
	ks := officers(t, 3)
	set := newSet(t, 1, ks, 2)
	prop := propose(t, set)
	approvals := []*Approval{approve(t, ks[0], prop), approve(t, ks[2], prop)}
	bolt, err := OpenBoltLedger(t.TempDir() + "/ledger.db")
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	for name, ledger := range map[string]Ledger{"memory": &MemoryLedger{}, "bbolt": bolt} {
		t.Run(name, func(t *testing.T) {
			e := &Executor{Ledger: ledger, Scope: scope, Now: func() time.Time { return t0.Add(time.Minute) }}
			runs := 0
			op := func(p *Proposal) error {
				runs++
				// The request id is consumed before the operation runs.
				if err := ledger.Consume(p.RequestID); !errors.Is(err, ErrReplay) {
					t.Errorf("request id not consumed before the operation: %v", err)
				}
				return nil
			}
			if _, err := e.Execute(set, prop, approvals, op); err != nil {
				t.Fatal(err)
			}
			// The same approvals again, and a fresh set of approvals of the
			// same proposal: both replays.
			if _, err := e.Execute(set, prop, approvals, op); !errors.Is(err, ErrReplay) {
				t.Fatalf("replay: %v, want ErrReplay", err)
			}
			fresh := []*Approval{approve(t, ks[1], prop), approve(t, ks[0], prop)}
			if _, err := e.Execute(set, prop, fresh, op); !errors.Is(err, ErrReplay) {
				t.Fatalf("replay with new approvals: %v, want ErrReplay", err)
			}
			if runs != 1 {
				t.Fatalf("operation ran %d times", runs)
			}
			// Without a quorum nothing is consumed.
			p2 := propose(t, set)
			if _, err := e.Execute(set, p2, []*Approval{approve(t, ks[0], p2)}, op); !errors.Is(err, ErrThresholdNotMet) {
				t.Fatalf("1 of 2: %v", err)
			}
			if _, err := e.Execute(set, p2, []*Approval{approve(t, ks[0], p2), approve(t, ks[1], p2)}, op); err != nil {
				t.Fatalf("p2 with a quorum after a refused attempt: %v", err)
			}
			// A failing operation still consumes its request id.
			p3 := propose(t, set)
			a3 := []*Approval{approve(t, ks[0], p3), approve(t, ks[1], p3)}
			boom := errors.New("HSM unplugged")
			if _, err := e.Execute(set, p3, a3, func(*Proposal) error { return boom }); !errors.Is(err, boom) {
				t.Fatalf("failing op: %v", err)
			}
			if _, err := e.Execute(set, p3, a3, op); !errors.Is(err, ErrReplay) {
				t.Fatalf("retry after failure: %v, want ErrReplay", err)
			}
		})
	}
}

func TestBoltLedgerDurableAndExclusive(t *testing.T) {
	path := t.TempDir() + "/ledger.db"
	l, err := OpenBoltLedger(path)
	if err != nil {
		t.Fatal(err)
	}
	id := RequestID{1, 2, 3}
	// Concurrent consumers: exactly one wins.
	const n = 8
	errs := make(chan error, n)
	for range n {
		go func() { errs <- l.Consume(id) }()
	}
	wins := 0
	for range n {
		if err := <-errs; err == nil {
			wins++
		} else if !errors.Is(err, ErrReplay) {
			t.Fatal(err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d concurrent Consume calls succeeded", wins)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// After a restart the id is still consumed.
	l, err = OpenBoltLedger(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Consume(id); !errors.Is(err, ErrReplay) {
		t.Fatalf("after reopen: %v, want ErrReplay", err)
	}
	if ok, at, err := l.Consumed(id); err != nil || !ok || at.IsZero() {
		t.Fatalf("Consumed = %v %v %v", ok, at, err)
	}
	if err := l.Consume(RequestID{9}); err != nil {
		t.Fatal(err)
	}
}

func TestApprovalEncoding(t *testing.T) {
	ks := officers(t, 1)
	set := newSet(t, 1, officers(t, 2), 2)
	prop := propose(t, set)
	a := approve(t, ks[0], prop)
	enc, err := a.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeApproval(enc)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := got.Encode(); !bytes.Equal(again, enc) {
		t.Fatal("approval re-encoding differs")
	}
	if got.Fingerprint() != ks[0].Fingerprint() {
		t.Fatal("fingerprint")
	}
	// Rejection.
	r, err := ks[0].Reject(prop, "wrong image hash")
	if err != nil {
		t.Fatal(err)
	}
	renc, _ := r.Encode()
	if _, err := DecodeRejection(renc); err != nil {
		t.Fatal(err)
	}
	// The approval of a proposal is not a rejection, nor the other way round.
	if _, err := DecodeRejection(enc); err == nil {
		t.Error("approval decoded as a rejection")
	}
	if _, err := DecodeApproval(renc); err == nil {
		t.Error("rejection decoded as an approval")
	}
	// Officers only sign canonical proposals.
	if _, err := ks[0].Approve(append(bytes.Clone(prop), 0)); err == nil {
		t.Error("approved a non-canonical proposal")
	}
	if _, err := ks[0].Reject(prop, "line\nbreak"); err == nil {
		t.Error("rejection reason with a newline accepted")
	}
}
