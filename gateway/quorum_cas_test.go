package gateway

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/gateway/kmsapi"
	"github.com/hsmgate/hsmgate/quorum"
)

// Two gateways of a cluster share the replicated keystore but each has its
// own ledger file. These tests stand for two nodes with two Admins on one
// store (what raft gives each node is the same sequence of commands).

func casStore(t *testing.T) *keystore.Store {
	t.Helper()
	s, err := keystore.Open(filepath.Join(t.TempDir(), KeystoreFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestClusterLedgerConsumesOnce: the same request id executed on two nodes
// (each with its own local ledger) is consumed once; the second is a
// replay.
func TestClusterLedgerConsumesOnce(t *testing.T) {
	store := casStore(t)
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	nodeA := clusterLedger{store: store, local: &quorum.MemoryLedger{}, now: now}
	nodeB := clusterLedger{store: store, local: &quorum.MemoryLedger{}, now: now}
	var id quorum.RequestID
	id[0] = 7
	if err := nodeA.Consume(id); err != nil {
		t.Fatal(err)
	}
	if err := nodeB.Consume(id); !errors.Is(err, quorum.ErrReplay) {
		t.Fatalf("second node consumed the id again: %v", err)
	}
	var other quorum.RequestID
	other[0] = 8
	if err := nodeB.Consume(other); err != nil {
		t.Fatalf("another id: %v", err)
	}
}

// TestQuorumStateNoLostUpdate: a change saved from a stale read is refused
// (ErrConflict), and updateQuorum redoes its change on the state another
// node saved in between, so both changes survive.
func TestQuorumStateNoLostUpdate(t *testing.T) {
	store := casStore(t)
	a := &Admin{Identities: &Identities{Store: store}}
	b := &Admin{Identities: &Identities{Store: store}}
	ks := make([]*quorum.OfficerKey, 2)
	set := &quorum.Set{Epoch: 1, Thresholds: map[quorum.Kind]int{}}
	for i := range ks {
		k, err := quorum.GenerateOfficerKey([]string{"alice", "bob"}[i])
		if err != nil {
			t.Fatal(err)
		}
		ks[i] = k
		set.Officers = append(set.Officers, k.Public())
	}
	for _, k := range quorum.Kinds {
		set.Thresholds[k] = 2
	}
	raw, err := set.Encode()
	if err != nil {
		t.Fatal(err)
	}
	init := &quorumState{Set: raw, ClusterID: "c", Target: "t", Links: map[string]string{}, Done: map[string]string{},
		loaded: keystore.MetaSHA256(nil)}
	if err := a.saveQuorum(init); err != nil {
		t.Fatal(err)
	}
	// Both nodes read the state; A saves first; B's save is refused.
	stA, _, err := a.loadQuorum()
	if err != nil {
		t.Fatal(err)
	}
	stB, _, err := b.loadQuorum()
	if err != nil {
		t.Fatal(err)
	}
	stA.Links[ks[0].Fingerprint().String()] = "alice"
	if err := a.saveQuorum(stA); err != nil {
		t.Fatal(err)
	}
	stB.Links[ks[1].Fingerprint().String()] = "bob"
	if err := b.saveQuorum(stB); !errors.Is(err, keystore.ErrConflict) {
		t.Fatalf("stale save = %v, want ErrConflict", err)
	}
	// updateQuorum: while B applies its change, A saves another one.
	raced := false
	err = b.updateQuorum(func(st *quorumState, _ *quorum.Set) error {
		if !raced {
			raced = true
			other, _, err := a.loadQuorum()
			if err != nil {
				return err
			}
			other.Done["p1"] = "done on node A"
			if err := a.saveQuorum(other); err != nil {
				return err
			}
		}
		st.Links[ks[1].Fingerprint().String()] = "bob"
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	final, _, err := a.loadQuorum()
	if err != nil {
		t.Fatal(err)
	}
	if final.Links[ks[0].Fingerprint().String()] != "alice" || final.Links[ks[1].Fingerprint().String()] != "bob" || final.Done["p1"] == "" {
		t.Fatalf("a change was lost: links %v, done %v", final.Links, final.Done)
	}
}

// TestFirmwareApprovalOnAnotherNode: in a cluster each node activates
// images into its own store. The approval that would complete a firmware
// activation, sent to a node where the image can't be activated, is
// refused without closing the proposal, recording the approval or
// consuming the request id: sent to the right node, it still runs.
func TestFirmwareApprovalOnAnotherNode(t *testing.T) {
	store := casStore(t)
	dir := t.TempDir()
	a := &Admin{Identities: &Identities{Store: store}, QuorumLedger: filepath.Join(dir, "ledger.db")}
	if err := a.Identities.CreatePrincipal(PrincipalSpec{Name: "ops", Admin: true}); err != nil {
		t.Fatal(err)
	}
	alice, err := quorum.GenerateOfficerKey("alice")
	if err != nil {
		t.Fatal(err)
	}
	bob, err := quorum.GenerateOfficerKey("bob")
	if err != nil {
		t.Fatal(err)
	}
	set := &quorum.Set{Epoch: 1, Officers: []quorum.OfficerPublicKey{alice.Public(), bob.Public()}, Thresholds: map[quorum.Kind]int{}}
	for _, k := range quorum.Kinds {
		set.Thresholds[k] = 2
	}
	rawSet, err := set.Encode()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	p, err := quorum.NewProposal(set, &quorum.FirmwareActivationParams{Version: "2.0.0", ImageSHA256: make([]byte, 32)},
		quorum.Header{ClusterID: "c", Target: "t", Requester: "ops", NotBefore: now.Add(-time.Minute), Expiry: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	rawP, err := p.Encode()
	if err != nil {
		t.Fatal(err)
	}
	first, err := alice.Approve(rawP)
	if err != nil {
		t.Fatal(err)
	}
	rawFirst, _ := first.Encode()
	st := &quorumState{Set: rawSet, ClusterID: "c", Target: "t", Ledger: a.QuorumLedger,
		Links: map[string]string{alice.Fingerprint().String(): "alice", bob.Fingerprint().String(): "bob"},
		Done:  map[string]string{}, loaded: keystore.MetaSHA256(nil),
		Pending: []*pendingProposal{{Proposal: rawP, Proposer: "ops", Created: now.Unix(), Approvals: [][]byte{rawFirst}}}}
	if err := a.saveQuorum(st); err != nil {
		t.Fatal(err)
	}
	second, err := bob.Approve(rawP)
	if err != nil {
		t.Fatal(err)
	}
	rawSecond, _ := second.Encode()
	// This node has no [images]: the activation can't run here.
	_, err = a.quorumApprove(t.Context(), &kmsapi.Caller{Principal: "bob"}, &QuorumApproveInput{Approval: rawSecond})
	var apiErr *kmsapi.Error
	if !errors.As(err, &apiErr) || apiErr.Type != kmsapi.ExInvalidState || !strings.Contains(apiErr.Message, "submit the approval there") {
		t.Fatalf("approval on a node without the image = %v, want a refusal that names where to send it", err)
	}
	after, _, err := a.loadQuorum()
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Pending) != 1 || len(after.Pending[0].Approvals) != 1 || len(after.Done) != 0 {
		t.Fatalf("the proposal changed: %d pending (%d approvals), done %v", len(after.Pending), len(after.Pending[0].Approvals), after.Done)
	}
	if when, _ := store.Meta(consumedMetaPrefix + p.RequestID.String()); when != nil {
		t.Fatal("the request id was consumed")
	}
}
