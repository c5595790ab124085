package gateway_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/gateway/kmsapi"
	"github.com/hsmgate/hsmgate/hsmpool"
	"github.com/hsmgate/hsmgate/internal/testenv"
	"github.com/hsmgate/hsmgate/quorum"
)

// recoverySetup is a stopped gateway's keystore with a quorum of three
// (threshold 2) and a domain key split among them, and a pool of one fresh
// token that lacks the domain key.
func recoverySetup(t *testing.T) (*keystore.Store, *hsmpool.Pool, []*quorum.OfficerKey, []*quorum.EncryptedShare, []byte) {
	t.Helper()
	dir := t.TempDir()
	store, err := keystore.Open(filepath.Join(dir, "keystore.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	th := map[quorum.Kind]int{}
	for _, k := range quorum.Kinds {
		th[k] = 2
	}
	set := &quorum.Set{Epoch: 1, Thresholds: th}
	var keys []*quorum.OfficerKey
	for _, n := range []string{"alice", "bob", "carol"} {
		k, _ := quorum.GenerateOfficerKey(n)
		keys = append(keys, k)
		set.Officers = append(set.Officers, k.Public())
	}
	in := gateway.QuorumInitInput{Set: enc(t, set), ClusterId: "prod", Target: "gw-1"}
	for _, k := range keys {
		pop, _ := k.ProvePossession(set)
		in.ProofsOfPossession = append(in.ProofsOfPossession, enc(t, pop))
	}
	body, _ := json.Marshal(in)
	a := &gateway.Admin{Identities: &gateway.Identities{Store: store}, Account: testAccount, QuorumLedger: filepath.Join(dir, "ledger.db")}
	if _, apiErr := a.Do(context.Background(), kmsapi.Caller{Principal: "(test)", Admin: true}, "HsmGate.QuorumInit", body); apiErr != nil {
		t.Fatal(apiErr)
	}
	material, _ := hsmpool.NewDomainKeyMaterial()
	kcv, _ := hsmpool.KCVOf(material)
	ds, err := gateway.SplitDomainKey(material, set, kcv.String())
	if err != nil {
		t.Fatal(err)
	}
	if err := gateway.SaveDomainSplit(store, ds); err != nil {
		t.Fatal(err)
	}
	shares, err := ds.Decoded()
	if err != nil {
		t.Fatal(err)
	}
	env := testenv.NewSoftHSM(t, 1)
	pool, err := hsmpool.Open(context.Background(), hsmpool.Options{Modules: []hsmpool.ModuleOptions{{Path: env.Module, PIN: hsmpool.PINSource{File: env.PINFile}}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	if pool.Status()[0].State != hsmpool.StateNoDomainKey {
		t.Fatalf("the fresh token is %s", pool.Status()[0].State)
	}
	return store, pool, keys, shares, material
}

// recoveryShareOf is officer k's share among shares, sealed to r.
func recoveryShareOf(t *testing.T, r *gateway.Recovery, k *quorum.OfficerKey, shares []*quorum.EncryptedShare) []byte {
	t.Helper()
	var es *quorum.EncryptedShare
	fp := k.Fingerprint()
	for _, s := range shares {
		if string(s.Officer) == string(fp[:]) {
			es = s
		}
	}
	p, err := quorum.DecodeProposal(r.Proposal())
	if err != nil {
		t.Fatal(err)
	}
	sh, err := k.DecryptShare(es)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := quorum.SealRecoveryShare(p, quorum.ProposalHash(r.Proposal()), sh)
	if err != nil {
		t.Fatal(err)
	}
	return enc(t, rs)
}

func TestRecoveryCeremony(t *testing.T) {
	store, pool, keys, shares, material := recoverySetup(t)
	ctx := context.Background()
	now := time.Now()
	r, err := gateway.BeginRecovery(store, "ops", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	approve := func(k *quorum.OfficerKey) {
		a, err := k.Approve(r.Proposal())
		if err != nil {
			t.Fatal(err)
		}
		if err := r.AddApproval(enc(t, a)); err != nil {
			t.Fatal(err)
		}
	}

	// Shares for another ceremony, or garbage, are refused.
	other, _ := gateway.BeginRecovery(store, "ops", time.Hour, now)
	if _, err := r.AddShare(recoveryShareOf(t, other, keys[0], shares)); err == nil || !strings.Contains(err.Error(), "another proposal") {
		t.Fatalf("a share for another ceremony: %v", err)
	}
	if _, err := r.AddShare([]byte("junk")); err == nil {
		t.Fatal("junk accepted as a share")
	}
	// One approval and one share: not ready.
	approve(keys[0])
	if _, err := r.AddShare(recoveryShareOf(t, r, keys[0], shares)); err != nil {
		t.Fatal(err)
	}
	if r.Ready(now) {
		t.Fatal("ready with one approval and one share")
	}
	// A second share without a second approval: still not ready.
	if _, err := r.AddShare(recoveryShareOf(t, r, keys[1], shares)); err != nil {
		t.Fatal(err)
	}
	if r.Ready(now) {
		t.Fatal("ready with one approval")
	}
	approve(keys[2])
	if !r.Ready(now) {
		t.Fatal("not ready with two approvals and two shares")
	}
	if _, _, err := r.Complete(ctx, pool, now); err != nil {
		t.Fatal(err)
	}
	want, _ := hsmpool.KCVOf(material)
	if pool.Healthy() != 1 || pool.DomainKeyCheck() != want.String() {
		t.Fatalf("after recovery: %d healthy, check value %s, want %s", pool.Healthy(), pool.DomainKeyCheck(), want)
	}
	if _, _, err := r.Complete(ctx, pool, now); err == nil {
		t.Fatal("a recovery ran twice")
	}
}

// Shares that combine to a key with another check value than the split's
// provision nothing, and the request id is spent.
func TestRecoveryRefusesWrongKey(t *testing.T) {
	store, pool, keys, shares, _ := recoverySetup(t)
	ds, _ := gateway.LoadDomainSplit(store)
	ds.KCV = strings.Repeat("0", len(ds.KCV))
	if err := gateway.SaveDomainSplit(store, ds); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	r, err := gateway.BeginRecovery(store, "ops", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		a, _ := keys[i].Approve(r.Proposal())
		if err := r.AddApproval(enc(t, a)); err != nil {
			t.Fatal(err)
		}
		if _, err := r.AddShare(recoveryShareOf(t, r, keys[i], shares)); err != nil {
			t.Fatal(err)
		}
	}
	_, _, err = r.Complete(context.Background(), pool, now)
	if err == nil || !strings.Contains(err.Error(), "nothing was provisioned") {
		t.Fatalf("Complete: %v", err)
	}
	if pool.Healthy() != 0 {
		t.Fatal("a slot was provisioned with the wrong key")
	}
	if _, _, err := r.Complete(context.Background(), pool, now); err == nil {
		t.Fatal("ran again")
	}
}
