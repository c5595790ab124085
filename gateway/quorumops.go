package gateway

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hsmgate/hsmgate/gateway/kmsapi"
	"github.com/hsmgate/hsmgate/hsmpool"
	"github.com/hsmgate/hsmgate/quorum"
)

// The quorum-gated operations other than set changes (docs/quorum.md):
//
//   - key-export: the proposer must be allowed hsmgate:ExportKey by the
//     key's policy, at proposal and again at execution. The HSM wraps the
//     key under a fresh AES-256 transport key (hsmpool.Pool.ExportKey), the
//     transport key is sealed to the proposal's HPKE recipient
//     (quorum.SealExport) and zeroed; the sealed record is the result.
//   - key-operation: a KMS operation that changes a key, run as the
//     proposer with hsmgate:QuorumApproved = true, so that a key policy can
//     reserve it to a quorum (a Deny when hsmgate:QuorumApproved is false).
//     The operation's JSON response is the result.
//
// Domain-key recovery runs on the gateway machine with the gateway
// stopped (`hsmgate quorum recover`), and firmware activation with the
// images (docs/images.md); proposals of those kinds are refused here.

// prepare checks that an operation proposal can run as proposed by
// proposer, and returns the function that runs it.
func (a *Admin) prepare(ctx context.Context, proposer string, p *quorum.Proposal, hash [32]byte, attachment []byte) (func(context.Context) ([]byte, error), error) {
	kms := a.kms()
	caller, err := a.callerOf(proposer)
	if err != nil {
		return nil, err
	}
	switch params := p.Params.(type) {
	case *quorum.KeyExportParams:
		k, v, err := kms.ExportableKey(ctx, caller, params.KeyID, params.KeyVersion)
		if err != nil {
			return nil, err
		}
		pk, err := kms.PoolKey(k, v)
		if err != nil {
			return nil, err
		}
		arn := kms.KeyARN(k.ID)
		return func(ctx context.Context) ([]byte, error) {
			ex, err := kms.Pool.ExportKey(ctx, pk)
			if errors.Is(err, hsmpool.ErrUnsupported) {
				return nil, kmsapi.Errorf(kmsapi.ExUnsupported, "The HSMs can't export %s (%s): %v", arn, k.Spec, err)
			}
			if err != nil {
				return nil, kmsapi.Errorf(kmsapi.ExInternal, "The HSMs did not export %s: %v", arn, err)
			}
			defer clear(ex.Transport)
			rec, err := quorum.SealExport(p, hash, arn, k.Spec, ex.Format, ex.Transport, ex.Wrapped)
			if err != nil {
				return nil, err
			}
			return rec.Encode()
		}, nil
	case *quorum.KeyOperationParams:
		if _, err := kms.QuorumOperationKey(ctx, params.KeyID, params.Operation, params.Request); err != nil {
			return nil, err
		}
		caller.QuorumApproved = true
		return func(ctx context.Context) ([]byte, error) {
			out, apiErr := kms.Do(ctx, caller, kmsapi.TargetPrefix+params.Operation, params.Request, nil)
			if apiErr != nil {
				return nil, apiErr
			}
			return out, nil
		}, nil
	case *quorum.DomainRecoveryParams:
		return nil, kmsapi.Errorf(kmsapi.ExUnsupported, "Domain-key recovery runs on the gateway machine with the gateway stopped: `hsmgate quorum recover` makes its proposal and takes the officers' approvals and shares.")
	case *quorum.FirmwareActivationParams, *quorum.ReleaseTrustParams:
		return a.prepareImage(p, attachment)
	}
	return nil, kmsapi.Errorf(kmsapi.ExUnsupported, "The gateway does not run %s operations.", p.Kind)
}

// callerOf is the caller a proposal runs as: its proposer, as the
// keystore knows the principal now.
func (a *Admin) callerOf(name string) (kmsapi.Caller, error) {
	p, err := a.Identities.Store.Principal(name)
	if err != nil {
		return kmsapi.Caller{}, kmsapi.Errorf(kmsapi.ExAccessDenied, "The proposer %q is no longer a principal of this gateway.", name)
	}
	return kmsapi.Caller{Principal: p.Name, Admin: p.Admin, Kind: p.Kind, Service: p.Service, Tags: p.Tags}, nil
}

// executeOperation runs an approved key export or key operation: checked
// again, then its request id consumed, then run once; the result is kept
// for QuorumShow.
func (a *Admin) executeOperation(ctx context.Context, caller *kmsapi.Caller, st *quorumState, set *quorum.Set, pp *pendingProposal, d quorum.Decision) (*QuorumProposalOutput, error) {
	out := a.describeProposal(st, set, pp)
	hx := hex.EncodeToString(d.ProposalHash[:])
	p, err := quorum.DecodeProposal(pp.Proposal)
	if err != nil {
		return nil, quorumRefused(err)
	}
	// drop closes the proposal on the stored state as it is now (another
	// gateway of the cluster may have changed it since it was read).
	drop := func(why string, res *quorumResult) error {
		return a.updateQuorum(func(st *quorumState, _ *quorum.Set) error {
			st.Pending = slices.DeleteFunc(st.Pending, func(x *pendingProposal) bool {
				h := quorum.ProposalHash(x.Proposal)
				return hex.EncodeToString(h[:]) == hx
			})
			st.Done[hx] = why
			if res != nil {
				if st.Results == nil {
					st.Results = map[string]*quorumResult{}
				}
				st.Results[p.RequestID.String()] = res
			}
			return nil
		})
	}
	// The policy or the key may have changed since the proposal: a
	// proposal that can no longer run is closed without consuming it.
	run, err := a.prepare(ctx, pp.Proposer, p, d.ProposalHash, pp.Attachment)
	if errors.Is(err, errActivationElsewhere) {
		// Another gateway (the one being upgraded) can run it: refuse this
		// approval, record nothing, and leave the proposal pending.
		return nil, kmsapi.Errorf(kmsapi.ExInvalidState, "This approval completes proposal %s, but it can't run on this gateway (%s). A firmware activation runs on the gateway it upgrades, where its image is staged: submit the approval there. Nothing was recorded here.",
			d.RequestID, errorText(err))
	}
	if err != nil {
		if serr := drop("approved, but could not run: "+errorText(err), nil); serr != nil {
			return nil, serr
		}
		a.changed(ctx, "QuorumExecute", caller, "request_id", d.RequestID.String(), "kind", d.Kind, "refused", errorText(err))
		return nil, err
	}
	now := a.now()
	res := &quorumResult{Proposal: pp.Proposal, Proposer: pp.Proposer, Executed: now.Unix(), Approvals: hexList(d.Approvals)}
	var runErr error
	err = a.consume(ctx, caller, st, set, pp.Proposal, counted(pp, d), d, now, &runErr, func(p *quorum.Proposal) error {
		res.Output, runErr = run(context.WithoutCancel(ctx))
		why := fmt.Sprintf("%s: request %s (%s) was executed", quorum.ErrReplay, p.RequestID, p.Kind)
		if runErr != nil {
			res.Error = errorText(runErr)
			why += " and failed: " + res.Error
		}
		return drop(why, res)
	})
	if err != nil {
		return nil, err
	}
	a.changed(ctx, "QuorumExecute", caller, "request_id", d.RequestID.String(), "kind", d.Kind, "failed", runErr != nil)
	out.Status, out.Approvals = "EXECUTED", res.Approvals
	out.Result, out.ResultError = res.Output, res.Error
	return &out, nil
}

// errorText is an error's message for a stored result: an API error's
// message without its type.
func errorText(err error) string {
	var apiErr *kmsapi.Error
	if errors.As(err, &apiErr) {
		return apiErr.Type + ": " + apiErr.Message
	}
	return err.Error()
}

// executed describes an executed proposal by request id or proposal hash.
func (a *Admin) executed(st *quorumState, set *quorum.Set, id string) (*QuorumProposalOutput, bool) {
	for rid, res := range st.Results {
		h := quorum.ProposalHash(res.Proposal)
		if rid != id && hex.EncodeToString(h[:]) != id {
			continue
		}
		p, err := quorum.DecodeProposal(res.Proposal)
		if err != nil {
			return nil, false
		}
		out := QuorumProposalOutput{
			RequestId: rid, ProposalHash: hex.EncodeToString(h[:]), Kind: string(p.Kind), Epoch: p.Epoch,
			Requester: p.Requester, Proposer: res.Proposer, Expiry: kmsapi.Epoch(p.Expiry), Created: kmsapi.Epoch(time.Unix(res.Executed, 0)),
			Threshold: set.Threshold(p.Kind), Approvals: res.Approvals, Status: "EXECUTED",
			Result: res.Output, ResultError: res.Error, Proposal: res.Proposal, Text: p.Render(),
		}
		return &out, true
	}
	return nil, false
}
