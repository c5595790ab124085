package gateway

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cloudflare/circl/kem"

	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/hsmpool"
	"github.com/hsmgate/hsmgate/quorum"
)

// Domain-key recovery (docs/quorum.md, "Recovery ceremony").
//
// When a gateway is initialised with a quorum set, its new domain key is
// split among the officers before the Go copy is zeroed
// (SplitDomainKey): Shamir shares of the set's domain-recovery
// threshold, each HPKE-encrypted to one officer. The encrypted shares are
// kept in the keystore (meta record "domain-split") and written to
// <data>/quorum/shares/ for the officers; they are not secret.
//
// A Recovery rebuilds the domain key on the gateway machine to provision
// slots that lack it (a replaced or added HSM): it draws an in-memory
// X-Wing key pair, makes a domain-recovery proposal naming it, and takes
// the officers' approvals and their shares, re-sealed to that key
// (quorum.SealRecoveryShare). When a threshold approved and enough shares
// arrived, Complete consumes the request id in the replay ledger, combines
// the shares, checks the result's check value against the split's,
// provisions every slot that lacks the domain key, and zeroes it.

const metaDomainSplit = "domain-split"

// DomainSplit is the stored split of the domain key.
type DomainSplit struct {
	KCV    string   // the domain key's check value
	Epoch  uint64   // the quorum set epoch it was split to
	Shares [][]byte // quorum.EncryptedShare encodings, one per officer
}

// SplitDomainKey splits domain key material (with check value kcv) among
// set's officers.
func SplitDomainKey(material []byte, set *quorum.Set, kcv string) (*DomainSplit, error) {
	got, err := hsmpool.KCVOf(material)
	if err != nil {
		return nil, err
	}
	if got.String() != kcv {
		return nil, fmt.Errorf("split the domain key: the material's check value %s is not the pool's %s", got, kcv)
	}
	shares, err := quorum.SplitSecret(material, set, "domain-key/"+kcv)
	if err != nil {
		return nil, err
	}
	ds := &DomainSplit{KCV: kcv, Epoch: set.Epoch}
	for _, s := range shares {
		b, err := s.Encode()
		if err != nil {
			return nil, err
		}
		ds.Shares = append(ds.Shares, b)
	}
	return ds, nil
}

// SaveDomainSplit stores ds in the keystore.
func SaveDomainSplit(store *keystore.Store, ds *DomainSplit) error {
	raw, err := json.Marshal(ds)
	if err != nil {
		return err
	}
	return store.Apply(&keystore.SetMeta{Name: metaDomainSplit, Value: raw})
}

// LoadDomainSplit returns the stored split, or nil if the domain key was
// never split.
func LoadDomainSplit(store *keystore.Store) (*DomainSplit, error) {
	raw, err := store.Meta(metaDomainSplit)
	if err != nil || len(raw) == 0 {
		return nil, err
	}
	ds := &DomainSplit{}
	if err := json.Unmarshal(raw, ds); err != nil {
		return nil, fmt.Errorf("domain split: %w", err)
	}
	if len(ds.Shares) == 0 {
		return nil, errors.New("domain split: no shares")
	}
	return ds, nil
}

// Officer shares of ds, decoded, with the officer each is for.
func (ds *DomainSplit) Decoded() ([]*quorum.EncryptedShare, error) {
	var out []*quorum.EncryptedShare
	for i, b := range ds.Shares {
		es, err := quorum.DecodeEncryptedShare(b)
		if err != nil {
			return nil, fmt.Errorf("domain split share %d: %w", i+1, err)
		}
		out = append(out, es)
	}
	return out, nil
}

// Recovery is one domain-key recovery ceremony.
type Recovery struct {
	set      *quorum.Set
	scope    quorum.Scope
	ledger   string
	split    *DomainSplit
	splitOf  quorum.Split
	proposal []byte
	p        *quorum.Proposal
	hash     [32]byte
	sk       kem.PrivateKey
	tally    *quorum.Tally
	approved []*quorum.Approval
	shares   map[uint64]*quorum.Share
	done     bool
}

// ErrNoDomainSplit: the gateway's domain key was never split among
// officers, so officers can't recover it.
var ErrNoDomainSplit = errors.New("the domain key was never split among officers (split at `hsmgate init --quorum-set`)")

// BeginRecovery starts a ceremony on the keystore of a stopped gateway:
// the proposal (Proposal) is valid from now for validFor.
func BeginRecovery(store *keystore.Store, requester string, validFor time.Duration, now time.Time) (*Recovery, error) {
	a := &Admin{Identities: &Identities{Store: store}}
	st, set, err := a.loadQuorum()
	if err != nil {
		return nil, err
	}
	ds, err := LoadDomainSplit(store)
	if err != nil {
		return nil, err
	}
	if ds == nil {
		return nil, ErrNoDomainSplit
	}
	shares, err := ds.Decoded()
	if err != nil {
		return nil, err
	}
	rcpt, sk, err := quorum.NewRecipientKey(quorum.KEMXWing)
	if err != nil {
		return nil, err
	}
	params := &quorum.DomainRecoveryParams{DomainKeyID: ds.KCV, SplitID: shares[0].Split.ID, Recipient: rcpt}
	p, err := quorum.NewProposal(set, params, quorum.Header{ClusterID: st.ClusterID, Target: st.Target, Requester: requester,
		NotBefore: now.Add(-time.Minute), Expiry: now.Add(validFor)})
	if err != nil {
		return nil, err
	}
	raw, err := p.Encode()
	if err != nil {
		return nil, err
	}
	r := &Recovery{set: set, scope: st.scope(), ledger: st.Ledger, split: ds, splitOf: shares[0].Split, proposal: raw, p: p,
		hash: quorum.ProposalHash(raw), sk: sk, shares: map[uint64]*quorum.Share{}}
	if r.tally, err = quorum.NewTally(set, raw, r.scope, now); err != nil {
		return nil, err
	}
	return r, nil
}

// Proposal is the encoded domain-recovery proposal officers approve.
func (r *Recovery) Proposal() []byte { return r.proposal }

// RequestID is the proposal's request id.
func (r *Recovery) RequestID() quorum.RequestID { return r.p.RequestID }

// SharesNeeded is the split's threshold.
func (r *Recovery) SharesNeeded() int { return int(r.splitOf.Threshold) }

// SharesHeld is how many distinct valid shares arrived.
func (r *Recovery) SharesHeld() int { return len(r.shares) }

// AddApproval counts an encoded approval.
func (r *Recovery) AddApproval(raw []byte) error {
	a, err := quorum.DecodeApproval(raw)
	if err != nil {
		return err
	}
	if err := r.tally.AddApproval(a); err != nil {
		return err
	}
	r.approved = append(r.approved, a)
	return nil
}

// AddRejection counts an encoded rejection.
func (r *Recovery) AddRejection(raw []byte) error {
	x, err := quorum.DecodeRejection(raw)
	if err != nil {
		return err
	}
	return r.tally.AddRejection(x)
}

// AddShare opens an encoded recovery share sealed to this ceremony's key
// and checks it against the split's commitments. It returns the share's
// index.
func (r *Recovery) AddShare(raw []byte) (uint64, error) {
	rs, err := quorum.DecodeRecoveryShare(raw)
	if err != nil {
		return 0, err
	}
	if !bytes.Equal(rs.ProposalHash, r.hash[:]) {
		return 0, fmt.Errorf("a recovery share for another proposal (%x…), not this ceremony's %x…", rs.ProposalHash[:8], r.hash[:8])
	}
	sh, err := quorum.OpenRecoveryShare(r.sk, rs)
	if err != nil {
		return 0, err
	}
	if !bytes.Equal(sh.Split.ID, r.splitOf.ID) {
		clear(sh.Value)
		return 0, fmt.Errorf("%w: a share of split %x, not %x", quorum.ErrBadShare, sh.Split.ID, r.splitOf.ID)
	}
	if old, ok := r.shares[sh.Index]; ok {
		clear(old.Value)
	}
	r.shares[sh.Index] = sh
	return sh.Index, nil
}

// Decision is the tally so far.
func (r *Recovery) Decision(now time.Time) (quorum.Decision, error) { return r.tally.Decision(now) }

// Ready reports whether Complete can run: approved, with enough shares.
func (r *Recovery) Ready(now time.Time) bool {
	d, err := r.tally.Decision(now)
	return err == nil && d.Met() && len(r.shares) >= r.SharesNeeded()
}

// Close zeroes the shares held.
func (r *Recovery) Close() {
	for _, sh := range r.shares {
		clear(sh.Value)
	}
	r.shares = map[uint64]*quorum.Share{}
}

// Complete runs the approved recovery once: the request id is consumed,
// the domain key rebuilt from the shares, checked, provisioned on every
// slot of pool that lacks it, and zeroed. When the quorum set changed
// since the split, the key is split again to the current set, and the new
// split is returned (the caller saves it and hands out its shares).
func (r *Recovery) Complete(ctx context.Context, pool *hsmpool.Pool, now time.Time) (quorum.Decision, *DomainSplit, error) {
	if r.done {
		return quorum.Decision{}, nil, errors.New("this recovery ran already")
	}
	d, err := r.tally.Decision(now)
	if err != nil {
		return d, nil, err
	}
	var approvals []*quorum.Approval
	for _, a := range r.approved {
		if slices.Contains(d.Approvals, a.Fingerprint()) { // not withdrawn by a rejection
			approvals = append(approvals, a)
		}
	}
	var shares []*quorum.Share
	for _, sh := range r.shares {
		shares = append(shares, sh)
	}
	l, err := quorum.OpenBoltLedger(r.ledger)
	if err != nil {
		return d, nil, err
	}
	defer l.Close()
	var resplit *DomainSplit
	ex := &quorum.Executor{Ledger: l, Scope: r.scope, Now: func() time.Time { return now }}
	_, err = ex.Execute(r.set, r.proposal, approvals, func(*quorum.Proposal) error {
		r.done = true
		material, err := quorum.Combine(shares, int(r.splitOf.Threshold))
		if err != nil {
			return err
		}
		defer clear(material)
		kcv, err := hsmpool.KCVOf(material)
		if err != nil {
			return err
		}
		if kcv.String() != r.split.KCV {
			return fmt.Errorf("the combined shares give a key with check value %s, not the domain key's %s: nothing was provisioned", kcv, r.split.KCV)
		}
		if err := pool.ProvisionDomainKey(ctx, material); err != nil {
			return err
		}
		if r.split.Epoch != r.set.Epoch {
			h := r.set.Hash()
			if resplit, err = SplitDomainKey(material, r.set, r.split.KCV); err != nil {
				return fmt.Errorf("provisioned, but splitting the domain key again to the quorum set of epoch %d (%s) failed: %w", r.set.Epoch, hex.EncodeToString(h[:8]), err)
			}
		}
		return nil
	})
	r.Close()
	return d, resplit, err
}
