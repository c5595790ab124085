package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Replicate commits an encoded keystore command through raft and returns
// the command's result (keystore.Replicator; keystore.Store.Apply calls
// it). On the leader it appends the command to the log; on a follower it
// sends it to the leader and then waits for its own store to apply it.
//
// A write that can't be committed fails, and matches
// keystore.ErrUnavailable: with a [*NoQuorumError] when this node can't
// reach a majority (at once when no majority is reachable, else after
// RaftConfig.ElectionWait without a leader), ErrWriteOutcomeUnknown when
// the write was sent but its answer lost, or ErrRaftStopped. The wait is
// bounded by ctx and RaftConfig.WriteTimeout.
func (n *RaftNode) Replicate(ctx context.Context, cmd []byte) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.WriteTimeout)
	defer cancel()
	electionDeadline := time.Now().Add(n.cfg.ElectionWait)
	for {
		if err := n.usable(); err != nil {
			return err
		}
		if n.IsLeader() {
			_, err := n.applyAsLeader(ctx, cmd)
			if !errors.Is(err, errRaftRetry) {
				return err
			}
		} else if _, addr := n.Leader(); addr != "" {
			var resp raftApplyResponse
			err := n.apiClient.callLeader(ctx, addr, "/v1/apply", cmd, &resp)
			if err == nil {
				// Read your writes: wait (within ctx) until this node has
				// applied the entry too. Past ctx the write still stands.
				n.waitApplied(ctx, resp.Index)
				return nil
			}
			if !errors.Is(err, errRaftRetry) {
				return err
			}
		}
		// No leader, or none that could be reached, or it just changed:
		// refuse at once without a majority, else wait for an election.
		r := n.reachability(ctx)
		if !r.majority() {
			return &NoQuorumError{Reachable: r.reachable, Voters: r.voters}
		}
		if time.Now().After(electionDeadline) || ctx.Err() != nil {
			return n.noQuorum(ctx, false)
		}
		if err := n.waitLeaderChange(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// errRaftRetry marks a write that was not appended anywhere (this node or
// the one it asked is not the leader, or the leader could not be
// reached): it is safe to send again.
var errRaftRetry = errors.New("cluster: retry the write on the current leader")

// applyAsLeader appends cmd to the log and waits for its result: the
// command's own result once committed and applied, or an error.
func (n *RaftNode) applyAsLeader(ctx context.Context, cmd []byte) (uint64, error) {
	f := n.raft.Apply(cmd, time.Until(deadlineOf(ctx, n.cfg.WriteTimeout)))
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		return 0, fmt.Errorf("%w: no commit before the deadline: %v", ErrWriteOutcomeUnknown, ctx.Err())
	}
	switch {
	case err == nil:
		if res, ok := f.Response().(error); ok && res != nil {
			return f.Index(), res
		}
		return f.Index(), nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return 0, fmt.Errorf("%w: %v", errRaftRetry, err) // never appended
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return 0, fmt.Errorf("%w: the raft log is too busy to take the write: %v", ErrWriteOutcomeUnknown, err)
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrAbortedByRestore):
		return 0, n.noQuorum(ctx, true)
	case errors.Is(err, raft.ErrRaftShutdown):
		return 0, fmt.Errorf("%w: this node's raft shut down before the write committed", ErrWriteOutcomeUnknown)
	}
	return 0, fmt.Errorf("cluster: raft apply: %w", err)
}

// waitLeaderChange waits up to d for a leader to be known, or ctx.
func (n *RaftNode) waitLeaderChange(ctx context.Context, d time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	err := n.WaitForLeader(wctx)
	if errors.Is(err, ErrRaftStopped) {
		return err
	}
	return nil
}

// noQuorum is the error of a write refused for want of a majority.
func (n *RaftNode) noQuorum(ctx context.Context, inFlight bool) error {
	if err := n.usable(); err != nil {
		return err
	}
	r := n.reachability(ctx)
	return &NoQuorumError{Reachable: r.reachable, Voters: r.voters, InFlight: inFlight}
}

// raftReach is how many of the configuration's voters this node reached.
type raftReach struct {
	reachable, voters int
	at                time.Time
}

func (r raftReach) majority() bool { return r.voters > 0 && r.reachable > r.voters/2 }

// raftReachTTL is how long a reachability count is reused: under a write
// load, a node without a leader probes its peers at most this often.
const raftReachTTL = 500 * time.Millisecond

// raftProbeTimeout bounds one probe of a peer.
const raftProbeTimeout = time.Second

// reachability counts the voters this node can reach now, itself
// included: each other voter is asked for its status over the internal
// API, all at once, within raftProbeTimeout.
func (n *RaftNode) reachability(ctx context.Context) raftReach {
	n.reachMu.Lock()
	defer n.reachMu.Unlock()
	if time.Since(n.reach.at) < raftReachTTL {
		return n.reach
	}
	servers, err := n.Servers()
	if err != nil {
		return raftReach{reachable: 1, voters: 1}
	}
	r := raftReach{at: time.Now()}
	pctx, cancel := context.WithTimeout(ctx, raftProbeTimeout)
	defer cancel()
	var reached atomic.Int64
	var wg sync.WaitGroup
	for _, s := range servers {
		if !s.Voter {
			continue
		}
		r.voters++
		if s.ID == n.cfg.NodeID {
			reached.Add(1)
			continue
		}
		wg.Add(1)
		go func(addr string) {
			defer wg.Done()
			var st RaftStatus
			if n.apiClient.get(pctx, addr, "/v1/status", &st) == nil {
				reached.Add(1)
			}
		}(s.Address)
	}
	wg.Wait()
	r.reachable = int(reached.Load())
	n.reach = r
	return r
}

// waitApplied waits until this node's keystore holds every command up to
// log position index (raftFSM.waitApplied), or ctx ends.
func (n *RaftNode) waitApplied(ctx context.Context, index uint64) bool {
	return n.fsm.waitApplied(ctx, index, n.raft.AppliedIndex, n.lastCommand)
}

// lastCommand is the position of the last command entry in (after, upTo]
// of this node's log, or after if there is none. An entry no longer in the
// log was compacted into a snapshot this node holds, and so was applied.
func (n *RaftNode) lastCommand(after, upTo uint64) uint64 {
	for i := upTo; i > after; i-- {
		var l raft.Log
		if err := n.logs.GetLog(i, &l); errors.Is(err, raft.ErrLogNotFound) {
			return after
		} else if err != nil {
			return i // can't tell: wait for the FSM to get there
		}
		if l.Type == raft.LogCommand {
			return i
		}
	}
	return after
}

// CatchUp waits, within ctx, until this node has applied every entry the
// leader had committed when asked: a read barrier. A follower calls it
// before it answers that something does not exist, so that a key made
// through another node a moment ago is found here too (keystore.Store's
// miss hook). On the leader, or without a reachable leader, it returns at
// once: a node cut off answers from what it holds.
func (n *RaftNode) CatchUp(ctx context.Context) error {
	if n.IsLeader() {
		return nil
	}
	_, addr := n.Leader()
	if addr == "" {
		return nil
	}
	var st RaftStatus
	if err := n.apiClient.get(ctx, addr, "/v1/status", &st); err != nil {
		return err
	}
	if !n.waitApplied(ctx, st.CommitIndex) {
		return ctx.Err()
	}
	return nil
}
