package gateway

// The officer quorum on the gateway (docs/quorum.md): the installed quorum
// set, the links from officer keys to principals, the pending proposals
// with their approvals and rejections, and the execution of approved
// operations through a quorum.Executor whose ledger is a bbolt file.
//
//	QuorumInit          {Set, ProofsOfPossession, ClusterId, Target} -> QuorumStatus (admins)
//	QuorumLinkOfficer   {PrincipalName, Fingerprint} -> {} (admins)
//	QuorumStatus        {} -> QuorumStatus
//	QuorumPropose       {Proposal, ProofsOfPossession} -> QuorumProposal
//	QuorumList          {} -> {Proposals: [QuorumProposal]}
//	QuorumShow          {RequestId} -> QuorumProposal (with Proposal and Text)
//	QuorumApprove       {Approval} -> QuorumProposal
//	QuorumReject        {Rejection} -> QuorumProposal
//
// Binary fields (Set, Proposal, Approval, Rejection, ProofsOfPossession)
// are the records' canonical CBOR encodings (what the hsmofficer files hold
// inside their PEM armour), base64 in JSON. Apart from QuorumInit and
// QuorumLinkOfficer, the operations are open to admins and to principals
// linked to an officer of the current set; QuorumApprove and QuorumReject
// only to the principal linked to the signing officer. An approval is
// tallied at once and refused with the tally's reason; when the threshold
// is met the operation runs (at most once: the request id is consumed in
// the ledger first). Only set changes are executed so far; proposals of
// other kinds are refused at QuorumPropose.
//
// The state is one keystore meta record (quorumMetaName, JSON), so every
// change (a set installed, an approval added, pending proposals voided) is
// one atomic write, and survives restarts.

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hsmgate/hsmgate/gateway/audit"
	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/gateway/kmsapi"
	"github.com/hsmgate/hsmgate/quorum"
)

// quorumMetaName is the keystore meta record of the quorum state.
const quorumMetaName = "quorum-state"

// QuorumLedgerFile is the ledger's path in a data folder.
var QuorumLedgerFile = filepath.Join("quorum", "ledger.db")

// quorumMu serialises quorum state changes (one gateway per keystore).
var quorumMu sync.Mutex

// quorumState is the stored state.
type quorumState struct {
	Set       []byte // canonical encoding of the current set
	ClusterID string
	Target    string
	Ledger    string            // absolute path of the bbolt ledger
	Links     map[string]string // officer fingerprint (hex) -> principal
	Pending   []*pendingProposal
	// Done: proposals no longer pending, by proposal hash (hex): why.
	Done map[string]string
	// Results of executed proposals other than set changes, by request
	// id (hex): what the officers and the proposer fetch afterwards.
	Results map[string]*quorumResult `json:",omitempty"`

	// loaded is the SHA-256 of the stored state this was read from:
	// saveQuorum writes only over that (keystore.SetMeta.IfSHA256), so
	// two gateways of a cluster changing the state at once can't lose
	// either's change.
	loaded [32]byte
}

// quorumResult is what an executed proposal produced: for a key export
// the sealed export record (quorum.ExportedKey, encrypted to its
// recipient), for a key operation the operation's JSON response.
type quorumResult struct {
	Proposal  []byte
	Proposer  string
	Executed  int64
	Approvals []string
	Output    []byte `json:",omitempty"`
	Error     string `json:",omitempty"`
}

type pendingProposal struct {
	Proposal   []byte
	Proposer   string
	Created    int64
	Approvals  [][]byte
	Rejections [][]byte
	Pops       [][]byte
	Attachment []byte `json:",omitempty"`
}

// Requests and answers of the quorum operations.
type (
	QuorumInitInput struct {
		Set                []byte
		ProofsOfPossession [][]byte
		ClusterId          string
		Target             string
	}
	QuorumLinkOfficerInput struct {
		PrincipalName string
		Fingerprint   string
	}
	QuorumOfficer struct {
		Name        string
		Fingerprint string
		Principal   string `json:",omitempty"`
	}
	QuorumStatusOutput struct {
		Installed  bool
		Epoch      uint64
		SetHash    string
		ClusterId  string
		Target     string
		Officers   []QuorumOfficer
		Thresholds map[string]int
		Pending    int
		Set        []byte
	}
	QuorumProposeInput struct {
		Proposal           []byte
		ProofsOfPossession [][]byte
		// Attachment: what a release-trust proposal installs (the
		// images.Trust encoding whose SHA-256 it names).
		Attachment []byte `json:",omitempty"`
	}
	QuorumRequestInput   struct{ RequestId string }
	QuorumApproveInput   struct{ Approval []byte }
	QuorumRejectInput    struct{ Rejection []byte }
	QuorumProposalOutput struct {
		RequestId    string
		ProposalHash string
		Kind         string
		Epoch        uint64
		Requester    string
		Proposer     string
		Created      kmsapi.Epoch
		Expiry       kmsapi.Epoch
		Threshold    int
		Approvals    []string // officer fingerprints counted
		Rejections   []string
		// Status: PENDING, EXECUTED, REJECTED.
		Status string
		// NewEpoch: the epoch installed by an executed set change.
		NewEpoch uint64 `json:",omitempty"`
		// Result: what an executed key export (the sealed export record)
		// or key operation (its JSON response) produced; ResultError: why
		// it failed after it was consumed.
		Result      []byte `json:",omitempty"`
		ResultError string `json:",omitempty"`
		Proposal    []byte `json:",omitempty"` // QuorumShow
		Text        string `json:",omitempty"` // QuorumShow: quorum.Proposal.Render
	}
	QuorumListOutput struct{ Proposals []QuorumProposalOutput }
)

// quorumOps may be called by officers who are not admins.
var quorumOfficerOps = map[string]bool{
	"QuorumStatus": true, "QuorumPropose": true, "QuorumList": true, "QuorumShow": true,
	"QuorumApprove": true, "QuorumReject": true, "ImageStatus": true,
}

func quorumRefused(err error) error {
	return kmsapi.Errorf(kmsapi.ExValidation, "%s", err.Error())
}

func (a *Admin) now() time.Time {
	if a.Identities != nil && a.Identities.Now != nil {
		return a.Identities.Now()
	}
	return time.Now()
}

func (a *Admin) loadQuorum() (*quorumState, *quorum.Set, error) {
	raw, err := a.Identities.Store.Meta(quorumMetaName)
	if err != nil {
		return nil, nil, err
	}
	if len(raw) == 0 {
		return nil, nil, kmsapi.Errorf(kmsapi.ExInvalidState, "No quorum set is installed (hsmgate quorum init).")
	}
	st := &quorumState{loaded: keystore.MetaSHA256(raw)}
	if err := json.Unmarshal(raw, st); err != nil {
		return nil, nil, fmt.Errorf("quorum state: %w", err)
	}
	set, err := quorum.DecodeSet(st.Set)
	if err != nil {
		return nil, nil, fmt.Errorf("quorum state: %w", err)
	}
	if st.Links == nil {
		st.Links = map[string]string{}
	}
	if st.Done == nil {
		st.Done = map[string]string{}
	}
	return st, set, nil
}

func (a *Admin) saveQuorum(st *quorumState) error {
	raw, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if err := a.Identities.Store.Apply(&keystore.SetMeta{Name: quorumMetaName, Value: raw, IfSHA256: st.loaded[:]}); err != nil {
		return err
	}
	st.loaded = keystore.MetaSHA256(raw)
	return nil
}

// quorumRetries bounds how often a quorum change is redone after another
// writer changed the state first.
const quorumRetries = 8

// updateQuorum applies change to the stored state and saves it, reading
// the state afresh and applying change again when another writer (another
// node of the cluster) saved in between. change must depend only on the
// state it is given.
func (a *Admin) updateQuorum(change func(st *quorumState, set *quorum.Set) error) error {
	for range quorumRetries {
		st, set, err := a.loadQuorum()
		if err != nil {
			return err
		}
		if err := change(st, set); err != nil {
			return err
		}
		if err := a.saveQuorum(st); !errors.Is(err, keystore.ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("the quorum state kept changing under this update: %w", keystore.ErrConflict)
}

// officerOf is the fingerprint of the current set's officer linked to
// principal, if any.
func officerOf(st *quorumState, set *quorum.Set, principal string) (quorum.Fingerprint, bool) {
	for _, o := range set.Officers {
		fp := o.Fingerprint()
		if st.Links[fp.String()] == principal {
			return fp, true
		}
	}
	return quorum.Fingerprint{}, false
}

func (a *Admin) mayRead(st *quorumState, set *quorum.Set, caller *kmsapi.Caller) error {
	if caller.Admin {
		return nil
	}
	if _, ok := officerOf(st, set, caller.Principal); ok {
		return nil
	}
	return kmsapi.Errorf(kmsapi.ExAccessDenied, "Principal %s is neither an administrator nor linked to an officer of the current quorum set.", caller.Principal)
}

func (a *Admin) quorumInit(ctx context.Context, caller *kmsapi.Caller, req *QuorumInitInput) (*QuorumStatusOutput, error) {
	quorumMu.Lock()
	defer quorumMu.Unlock()
	if raw, err := a.Identities.Store.Meta(quorumMetaName); err != nil {
		return nil, err
	} else if len(raw) > 0 {
		return nil, kmsapi.Errorf(kmsapi.ExAlreadyExists, "A quorum set is installed already; change it with a set-change proposal.")
	}
	set, err := quorum.DecodeSet(req.Set)
	if err != nil {
		return nil, quorumRefused(err)
	}
	if set.Epoch != 1 {
		return nil, kmsapi.Errorf(kmsapi.ExValidation, "The first quorum set must be at epoch 1, not %d.", set.Epoch)
	}
	pops, err := decodePops(req.ProofsOfPossession)
	if err != nil {
		return nil, err
	}
	if err := quorum.VerifyPossession(set, set.Officers, pops); err != nil {
		return nil, quorumRefused(err)
	}
	if req.ClusterId == "" || req.Target == "" {
		return nil, kmsapi.Errorf(kmsapi.ExValidation, "ClusterId and Target are required ([quorum] cluster_id and target).")
	}
	ledger := a.QuorumLedger
	if !filepath.IsAbs(ledger) {
		return nil, kmsapi.Errorf(kmsapi.ExUnsupported, "This gateway has no place configured for a quorum replay ledger.")
	}
	l, err := openLedger(ledger)
	if err != nil {
		return nil, err
	}
	if err := l.Close(); err != nil {
		return nil, err
	}
	st := &quorumState{Set: req.Set, ClusterID: req.ClusterId, Target: req.Target, Ledger: ledger,
		Links: map[string]string{}, Done: map[string]string{}, loaded: keystore.MetaSHA256(nil)}
	if err := a.saveQuorum(st); err != nil {
		return nil, err
	}
	h := set.Hash()
	a.changed(ctx, "QuorumInit", caller, "epoch", set.Epoch, "set_hash", hex.EncodeToString(h[:]))
	return quorumStatus(st, set), nil
}

func decodePops(raw [][]byte) ([]*quorum.ProofOfPossession, error) {
	var pops []*quorum.ProofOfPossession
	for i, b := range raw {
		p, err := quorum.DecodeProofOfPossession(b)
		if err != nil {
			return nil, kmsapi.Errorf(kmsapi.ExValidation, "ProofsOfPossession[%d]: %s", i, err)
		}
		pops = append(pops, p)
	}
	return pops, nil
}

func (a *Admin) quorumLinkOfficer(ctx context.Context, caller *kmsapi.Caller, req *QuorumLinkOfficerInput) (*adminEmpty, error) {
	quorumMu.Lock()
	defer quorumMu.Unlock()
	st, _, err := a.loadQuorum()
	if err != nil {
		return nil, err
	}
	fp, err := quorum.ParseFingerprint(req.Fingerprint)
	if err != nil {
		return nil, quorumRefused(err)
	}
	if _, err := a.Identities.Store.Principal(req.PrincipalName); err != nil {
		return nil, err
	}
	st.Links[fp.String()] = req.PrincipalName
	if err := a.saveQuorum(st); err != nil {
		return nil, err
	}
	a.changed(ctx, "QuorumLinkOfficer", caller, "principal", req.PrincipalName, "officer", fp.String())
	return &adminEmpty{}, nil
}

func quorumStatus(st *quorumState, set *quorum.Set) *QuorumStatusOutput {
	h := set.Hash()
	out := &QuorumStatusOutput{Installed: true, Epoch: set.Epoch, SetHash: hex.EncodeToString(h[:]), ClusterId: st.ClusterID,
		Target: st.Target, Thresholds: map[string]int{}, Pending: len(st.Pending), Set: st.Set}
	for _, o := range set.Officers {
		fp := o.Fingerprint()
		out.Officers = append(out.Officers, QuorumOfficer{Name: o.Name, Fingerprint: fp.String(), Principal: st.Links[fp.String()]})
	}
	slices.SortFunc(out.Officers, func(x, y QuorumOfficer) int {
		if x.Fingerprint < y.Fingerprint {
			return -1
		}
		return 1
	})
	for _, k := range quorum.Kinds {
		out.Thresholds[string(k)] = set.Threshold(k)
	}
	return out
}

func (a *Admin) quorumStatus(_ context.Context, caller *kmsapi.Caller, _ *adminEmpty) (*QuorumStatusOutput, error) {
	quorumMu.Lock()
	defer quorumMu.Unlock()
	raw, err := a.Identities.Store.Meta(quorumMetaName)
	if err != nil {
		return nil, err
	}
	if len(raw) == 0 {
		if !caller.Admin {
			return nil, kmsapi.Errorf(kmsapi.ExAccessDenied, "Principal %s is not an administrator.", caller.Principal)
		}
		return &QuorumStatusOutput{}, nil
	}
	st, set, err := a.loadQuorum()
	if err != nil {
		return nil, err
	}
	if err := a.mayRead(st, set, caller); err != nil {
		return nil, err
	}
	return quorumStatus(st, set), nil
}

func (st *quorumState) scope() quorum.Scope {
	return quorum.Scope{ClusterID: st.ClusterID, Target: st.Target}
}

// tally rebuilds the tally of a pending proposal.
func (a *Admin) tally(st *quorumState, set *quorum.Set, p *pendingProposal) (*quorum.Tally, error) {
	t, err := quorum.NewTally(set, p.Proposal, st.scope(), a.now())
	if err != nil {
		return nil, err
	}
	for _, raw := range p.Approvals {
		ap, err := quorum.DecodeApproval(raw)
		if err != nil {
			return nil, err
		}
		_ = t.AddApproval(ap)
	}
	for _, raw := range p.Rejections {
		r, err := quorum.DecodeRejection(raw)
		if err != nil {
			return nil, err
		}
		_ = t.AddRejection(r)
	}
	return t, nil
}

func hexList(fps []quorum.Fingerprint) []string {
	out := []string{}
	for _, fp := range fps {
		out = append(out, fp.String())
	}
	return out
}

func (a *Admin) describeProposal(st *quorumState, set *quorum.Set, p *pendingProposal) QuorumProposalOutput {
	h := quorum.ProposalHash(p.Proposal)
	out := QuorumProposalOutput{ProposalHash: hex.EncodeToString(h[:]), Proposer: p.Proposer,
		Created: kmsapi.Epoch(time.Unix(p.Created, 0)), Status: "PENDING", Approvals: []string{}, Rejections: []string{}}
	dp, err := quorum.DecodeProposal(p.Proposal)
	if err == nil {
		out.RequestId, out.Kind, out.Epoch, out.Requester = dp.RequestID.String(), string(dp.Kind), dp.Epoch, dp.Requester
		out.Expiry = kmsapi.Epoch(dp.Expiry)
		out.Threshold = set.Threshold(dp.Kind)
	}
	if t, err := a.tally(st, set, p); err == nil {
		d, _ := t.Decision(a.now())
		out.Approvals, out.Rejections = hexList(d.Approvals), hexList(d.Rejections)
	}
	return out
}

func (a *Admin) quorumPropose(ctx context.Context, caller *kmsapi.Caller, req *QuorumProposeInput) (*QuorumProposalOutput, error) {
	quorumMu.Lock()
	defer quorumMu.Unlock()
	st, set, err := a.loadQuorum()
	if err != nil {
		return nil, err
	}
	if err := a.mayRead(st, set, caller); err != nil {
		return nil, err
	}
	p, err := quorum.DecodeProposal(req.Proposal)
	if err != nil {
		return nil, quorumRefused(err)
	}
	if err := a.checkNotExecuted(st, p.RequestID); err != nil {
		return nil, err
	}
	h := quorum.ProposalHash(req.Proposal)
	for _, pp := range st.Pending {
		if quorum.ProposalHash(pp.Proposal) == h {
			return nil, kmsapi.Errorf(kmsapi.ExAlreadyExists, "Proposal %x is pending already.", h)
		}
		if q, err := quorum.DecodeProposal(pp.Proposal); err == nil && q.RequestID == p.RequestID {
			return nil, kmsapi.Errorf(kmsapi.ExAlreadyExists, "A proposal with request id %s is pending already.", p.RequestID)
		}
	}
	if _, err := quorum.NewTally(set, req.Proposal, st.scope(), a.now()); err != nil {
		return nil, quorumRefused(err)
	}
	pops, err := decodePops(req.ProofsOfPossession)
	if err != nil {
		return nil, err
	}
	switch params := p.Params.(type) {
	case *quorum.SetChangeParams:
		if err := checkSetChange(set, params.Next, pops); err != nil {
			return nil, quorumRefused(err)
		}
	default:
		// Refuse now what could not run once approved.
		if _, err := a.prepare(ctx, caller.Principal, p, h, req.Attachment); err != nil {
			return nil, err
		}
	}
	pp := &pendingProposal{Proposal: req.Proposal, Proposer: caller.Principal, Created: a.now().Unix(), Pops: req.ProofsOfPossession, Attachment: req.Attachment}
	st.Pending = append(st.Pending, pp)
	if err := a.saveQuorum(st); err != nil {
		return nil, err
	}
	a.changed(ctx, "QuorumPropose", caller, "request_id", p.RequestID.String(), "kind", p.Kind)
	out := a.describeProposal(st, set, pp)
	return &out, nil
}

// checkSetChange checks what ApplySetChange will, apart from the approvals.
func checkSetChange(cur, next *quorum.Set, pops []*quorum.ProofOfPossession) error {
	if next.Epoch != cur.Epoch+1 {
		return fmt.Errorf("%w: the next set's epoch is %d, want %d", quorum.ErrWrongEpoch, next.Epoch, cur.Epoch+1)
	}
	var added []quorum.OfficerPublicKey
	for _, o := range next.Officers {
		if _, ok := cur.Officer(o.Fingerprint()); !ok {
			added = append(added, o)
		}
	}
	return quorum.VerifyPossession(next, added, pops)
}

// ledger is the replay ledger's path: this gateway's, or (for callers
// that don't configure one) the path recorded at QuorumInit.
func (a *Admin) ledger(st *quorumState) string {
	if a.QuorumLedger != "" {
		return a.QuorumLedger
	}
	return st.Ledger
}

// openLedger opens a ledger file, creating it (and its folder) on first
// use: in a cluster, QuorumInit ran on one node only.
func openLedger(path string) (*quorum.BoltLedger, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	return quorum.OpenBoltLedger(path)
}

// checkNotExecuted refuses a request id the ledger consumed.
func (a *Admin) checkNotExecuted(st *quorumState, id quorum.RequestID) error {
	l, err := openLedger(a.ledger(st))
	if err != nil {
		return err
	}
	defer l.Close()
	used, at, err := l.Consumed(id)
	if err != nil {
		return err
	}
	if used {
		return quorumRefused(fmt.Errorf("%w: request %s was executed at %s", quorum.ErrReplay, id, at.UTC().Format(time.RFC3339)))
	}
	if when, err := a.Identities.Store.Meta(consumedMetaPrefix + id.String()); err != nil {
		return err
	} else if when != nil {
		return quorumRefused(fmt.Errorf("%w: request %s was executed at %s (by this or another gateway of the cluster)", quorum.ErrReplay, id, when))
	}
	return nil
}

// consumedMetaPrefix names the keystore record of a consumed request id.
const consumedMetaPrefix = "quorum-consumed/"

// clusterLedger consumes a request id in the keystore, then in this
// gateway's own ledger file. The keystore's write is conditional on the id
// being new and, in a cluster, is applied in one order on every node: of
// two gateways executing the same approved proposal at once, exactly one
// consumes it and the other gets ErrReplay.
type clusterLedger struct {
	store *keystore.Store
	local quorum.Ledger
	now   time.Time
}

func (l clusterLedger) Consume(id quorum.RequestID) error {
	absent := keystore.MetaSHA256(nil)
	err := l.store.Apply(&keystore.SetMeta{Name: consumedMetaPrefix + id.String(),
		Value: []byte(l.now.UTC().Format(time.RFC3339)), IfSHA256: absent[:]})
	if errors.Is(err, keystore.ErrConflict) {
		return fmt.Errorf("%w: request %s (consumed by this or another gateway of the cluster)", quorum.ErrReplay, id)
	}
	if err != nil {
		return err
	}
	return l.local.Consume(id)
}

func (a *Admin) quorumList(_ context.Context, caller *kmsapi.Caller, _ *adminEmpty) (*QuorumListOutput, error) {
	quorumMu.Lock()
	defer quorumMu.Unlock()
	st, set, err := a.loadQuorum()
	if err != nil {
		return nil, err
	}
	if err := a.mayRead(st, set, caller); err != nil {
		return nil, err
	}
	out := &QuorumListOutput{Proposals: []QuorumProposalOutput{}}
	for _, p := range st.Pending {
		out.Proposals = append(out.Proposals, a.describeProposal(st, set, p))
	}
	return out, nil
}

func findPending(st *quorumState, match func(*quorum.Proposal, [32]byte) bool) (int, *pendingProposal) {
	for i, pp := range st.Pending {
		p, err := quorum.DecodeProposal(pp.Proposal)
		if err == nil && match(p, quorum.ProposalHash(pp.Proposal)) {
			return i, pp
		}
	}
	return -1, nil
}

func (a *Admin) quorumShow(_ context.Context, caller *kmsapi.Caller, req *QuorumRequestInput) (*QuorumProposalOutput, error) {
	quorumMu.Lock()
	defer quorumMu.Unlock()
	st, set, err := a.loadQuorum()
	if err != nil {
		return nil, err
	}
	if err := a.mayRead(st, set, caller); err != nil {
		return nil, err
	}
	_, pp := findPending(st, func(p *quorum.Proposal, h [32]byte) bool {
		return p.RequestID.String() == req.RequestId || hex.EncodeToString(h[:]) == req.RequestId
	})
	if pp == nil {
		if out, ok := a.executed(st, set, req.RequestId); ok {
			return out, nil
		}
		return nil, kmsapi.Errorf(kmsapi.ExNotFound, "No pending or executed proposal with request id %q.", truncateRunes(req.RequestId, 64))
	}
	out := a.describeProposal(st, set, pp)
	out.Proposal = pp.Proposal
	if p, err := quorum.DecodeProposal(pp.Proposal); err == nil {
		out.Text = p.Render()
	}
	return &out, nil
}

// vote finds the pending proposal named by hash, checks that the caller is
// the officer fp, and returns it.
func (a *Admin) vote(caller *kmsapi.Caller, hash []byte, fp quorum.Fingerprint) (*quorumState, *quorum.Set, int, *pendingProposal, error) {
	st, set, err := a.loadQuorum()
	if err != nil {
		return nil, nil, 0, nil, err
	}
	mine, ok := officerOf(st, set, caller.Principal)
	if !ok {
		return nil, nil, 0, nil, kmsapi.Errorf(kmsapi.ExAccessDenied, "Principal %s is not linked to an officer of the current quorum set (epoch %d): only officers approve or reject.", caller.Principal, set.Epoch)
	}
	if mine != fp {
		return nil, nil, 0, nil, kmsapi.Errorf(kmsapi.ExAccessDenied, "Principal %s is officer %s, but this is signed by %s: officers submit their own approvals and rejections.", caller.Principal, mine.Short(), fp.Short())
	}
	hx := hex.EncodeToString(hash)
	i, pp := findPending(st, func(_ *quorum.Proposal, h [32]byte) bool { return hex.EncodeToString(h[:]) == hx })
	if pp == nil {
		if why, ok := st.Done[hx]; ok {
			return nil, nil, 0, nil, kmsapi.Errorf(kmsapi.ExValidation, "Proposal %.16s… is no longer pending: %s.", hx, why)
		}
		return nil, nil, 0, nil, kmsapi.Errorf(kmsapi.ExNotFound, "No pending proposal with hash %.16s….", hx)
	}
	return st, set, i, pp, nil
}

func (a *Admin) quorumApprove(ctx context.Context, caller *kmsapi.Caller, req *QuorumApproveInput) (*QuorumProposalOutput, error) {
	quorumMu.Lock()
	defer quorumMu.Unlock()
	ap, err := quorum.DecodeApproval(req.Approval)
	if err != nil {
		return nil, quorumRefused(err)
	}
	st, set, _, pp, err := a.vote(caller, ap.ProposalHash, ap.Fingerprint())
	if err != nil {
		return nil, err
	}
	t, err := a.tally(st, set, pp)
	if err != nil {
		return nil, quorumRefused(err)
	}
	if err := t.AddApproval(ap); err != nil {
		return nil, quorumRefused(err)
	}
	pp.Approvals = append(pp.Approvals, req.Approval)
	d, derr := t.Decision(a.now())
	p := t.Proposal()
	a.changed(ctx, "QuorumApprove", caller, "request_id", p.RequestID.String(), "officer", ap.Fingerprint().String())
	if derr != nil || !d.Met() {
		if err := a.saveQuorum(st); err != nil {
			return nil, err
		}
		out := a.describeProposal(st, set, pp)
		return &out, nil
	}
	return a.execute(ctx, caller, st, set, pp, d)
}

// counted decodes the stored approvals the decision counted.
func counted(pp *pendingProposal, d quorum.Decision) []*quorum.Approval {
	var approvals []*quorum.Approval
	for _, raw := range pp.Approvals {
		ap, err := quorum.DecodeApproval(raw)
		if err == nil && slices.Contains(d.Approvals, ap.Fingerprint()) {
			approvals = append(approvals, ap)
		}
	}
	return approvals
}

// execute runs an approved proposal through the Executor and stores the
// result.
func (a *Admin) execute(ctx context.Context, caller *kmsapi.Caller, st *quorumState, set *quorum.Set, pp *pendingProposal, d quorum.Decision) (*QuorumProposalOutput, error) {
	if d.Kind != quorum.KindSetChange {
		return a.executeOperation(ctx, caller, st, set, pp, d)
	}
	out := a.describeProposal(st, set, pp)
	approvals := counted(pp, d)
	pops, err := decodePops(pp.Pops)
	if err != nil {
		return nil, err
	}
	now := a.now()
	// Check everything before the request id is consumed.
	next, _, err := quorum.ApplySetChange(set, pp.Proposal, approvals, pops, now, st.scope())
	if err != nil {
		return nil, quorumRefused(err)
	}
	hx := hex.EncodeToString(d.ProposalHash[:])
	err = a.consume(ctx, caller, st, set, pp.Proposal, approvals, d, now, nil, func(p *quorum.Proposal) error {
		nextRaw, err := next.Encode()
		if err != nil {
			return err
		}
		voided := fmt.Sprintf("void: the quorum set changed to epoch %d", next.Epoch)
		return a.updateQuorum(func(st *quorumState, _ *quorum.Set) error {
			for _, other := range st.Pending {
				h := quorum.ProposalHash(other.Proposal)
				st.Done[hex.EncodeToString(h[:])] = voided
			}
			st.Done[hx] = fmt.Sprintf("%s: request %s (%s) was executed; the quorum set is now at epoch %d", quorum.ErrReplay, p.RequestID, p.Kind, next.Epoch)
			st.Set, st.Pending = nextRaw, nil
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	a.changed(ctx, "QuorumExecute", caller, "request_id", d.RequestID.String(), "kind", d.Kind, "new_epoch", next.Epoch)
	out.Status, out.NewEpoch = "EXECUTED", next.Epoch
	out.Approvals = hexList(d.Approvals)
	return &out, nil
}

// consume runs op once through the Executor: the request id is consumed
// in the replay ledger before op runs, and a replay is refused. Once op
// ran, OnQuorumExecuted hears how it went (with *opFailure, when given,
// the operation's own failure behind a successful consumption).
func (a *Admin) consume(ctx context.Context, caller *kmsapi.Caller, st *quorumState, set *quorum.Set, proposal []byte, approvals []*quorum.Approval,
	d quorum.Decision, now time.Time, opFailure *error, op func(*quorum.Proposal) error) error {
	l, err := openLedger(a.ledger(st))
	if err != nil {
		return err
	}
	defer l.Close()
	ex := &quorum.Executor{Ledger: clusterLedger{store: a.Identities.Store, local: l, now: now}, Scope: st.scope(), Now: func() time.Time { return now }}
	ran := false // the request id was consumed
	_, err = ex.Execute(set, proposal, approvals, func(p *quorum.Proposal) error {
		ran = true
		return op(p)
	})
	if ran && a.OnQuorumExecuted != nil {
		failure := err
		if opFailure != nil {
			failure = errors.Join(err, *opFailure)
		}
		a.OnQuorumExecuted(ctx, caller.Principal, d, failure)
	}
	if errors.Is(err, quorum.ErrReplay) {
		return quorumRefused(err)
	}
	return err
}

func (a *Admin) quorumReject(ctx context.Context, caller *kmsapi.Caller, req *QuorumRejectInput) (*QuorumProposalOutput, error) {
	quorumMu.Lock()
	defer quorumMu.Unlock()
	r, err := quorum.DecodeRejection(req.Rejection)
	if err != nil {
		return nil, quorumRefused(err)
	}
	st, set, i, pp, err := a.vote(caller, r.ProposalHash, r.Fingerprint())
	if err != nil {
		return nil, err
	}
	t, err := a.tally(st, set, pp)
	if err != nil {
		return nil, quorumRefused(err)
	}
	if err := t.AddRejection(r); err != nil {
		return nil, quorumRefused(err)
	}
	pp.Rejections = append(pp.Rejections, req.Rejection)
	out := a.describeProposal(st, set, pp)
	_, derr := t.Decision(a.now())
	if errors.Is(derr, quorum.ErrRejected) {
		st.Pending = slices.Delete(st.Pending, i, i+1)
		st.Done[out.ProposalHash] = "rejected by officers"
		out.Status = "REJECTED"
	}
	if err := a.saveQuorum(st); err != nil {
		return nil, err
	}
	a.changed(ctx, "QuorumReject", caller, "request_id", out.RequestId, "officer", r.Fingerprint().String(), "status", out.Status)
	return &out, nil
}

// auditQuorumExecution records an executed quorum proposal in the audit
// log, apart from the record of the QuorumApprove request that caused it:
// operation "HsmGate.QuorumExecute", with the proposal's request id, kind,
// epoch and approving officers in request_metadata.
func (g *Gateway) auditQuorumExecution(ctx context.Context, principal string, d quorum.Decision, failure error) {
	if g.cfg.Audit == nil {
		return
	}
	var officers []string
	for _, fp := range d.Approvals {
		officers = append(officers, fp.String())
	}
	rec := audit.Record{
		RequestID: newRequestID(), Principal: principal, Operation: AdminTargetPrefix + "QuorumExecute", Outcome: audit.OutcomeOK,
		RequestMetadata: map[string]string{
			"quorum_request_id": d.RequestID.String(), "quorum_kind": string(d.Kind),
			"quorum_epoch": fmt.Sprint(d.Epoch), "quorum_proposal_hash": hex.EncodeToString(d.ProposalHash[:]),
			"quorum_approvals": strings.Join(officers, ","),
		},
	}
	if failure != nil {
		rec.Outcome, rec.ErrorCode = audit.OutcomeError, kmsapi.ExInternal
	}
	if err := g.cfg.Audit.Append(context.WithoutCancel(ctx), rec); err != nil {
		g.log.Error("audit log write failed for a quorum execution", "request_id", d.RequestID.String(), "err", err)
	}
}

// unlinkOfficer removes a principal's officer links (when the principal
// is deleted). Without an installed quorum there is nothing to do.
func (a *Admin) unlinkOfficer(principal string) error {
	quorumMu.Lock()
	defer quorumMu.Unlock()
	raw, err := a.Identities.Store.Meta(quorumMetaName)
	if err != nil || len(raw) == 0 {
		return err
	}
	return a.updateQuorum(func(st *quorumState, _ *quorum.Set) error {
		for fp, p := range st.Links {
			if p == principal {
				delete(st.Links, fp)
			}
		}
		return nil
	})
}
