package cluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hsmgate/hsmgate/gateway/keystore"
)

// raftFSM is the raft state machine: the keystore. Every committed command
// is applied on every node with keystore.Store.ApplyLogEntry, whose result
// (nil, or the command's refusal such as keystore.ErrNotFound) is the
// entry's response, handed back to the writer through the leader's
// ApplyFuture.
type raftFSM struct {
	store *keystore.Store
	log   *slog.Logger
	// failed is called (once per failure, on the FSM goroutine) when the
	// store can't apply a committed entry for a reason of its own (a disk
	// error): this node can't follow the log any more.
	failed func(index uint64, err error)

	mu      sync.Mutex
	applied uint64        // the last log position seen by Apply
	notify  chan struct{} // closed and replaced after each Apply or Restore
}

func newRaftFSM(store *keystore.Store, log *slog.Logger, failed func(uint64, error)) *raftFSM {
	return &raftFSM{store: store, log: log, failed: failed, notify: make(chan struct{})}
}

// Apply applies one committed entry (raft.FSM).
func (f *raftFSM) Apply(l *raft.Log) any {
	var res error
	if l.Type == raft.LogCommand {
		res = f.store.ApplyLogEntry(l.Index, l.Data)
		if res != nil && !keystore.Refused(res) {
			f.log.Error("raft: the keystore could not apply a committed entry; this node stops replicating", "index", l.Index, "err", res)
			f.failed(l.Index, res)
			res = &raftStorageError{index: l.Index, err: res}
		}
	}
	f.advance(l.Index)
	if res == nil {
		return nil
	}
	return res
}

// advance records that log position index was applied and wakes waiters.
func (f *raftFSM) advance(index uint64) {
	f.mu.Lock()
	if index > f.applied {
		f.applied = index
	}
	close(f.notify)
	f.notify = make(chan struct{})
	f.mu.Unlock()
}

// waitApplied waits until the keystore here holds every command up to log
// position index, or ctx ends.
//
// The raft library's own applied index (dispatched) is not enough: it
// counts entries handed to the FSM's goroutine, which may not have applied
// them yet, so a reader trusting it could miss a key a moment after its
// create returned. It is needed all the same, for the entries Apply never
// sees (no-ops, configuration changes): once the library has dispatched
// index, the wait is for the last command at or before index, found in the
// log (lastCommand).
func (f *raftFSM) waitApplied(ctx context.Context, index uint64, dispatched func() uint64, lastCommand func(after, upTo uint64) uint64) bool {
	poll := time.NewTicker(2 * time.Millisecond)
	defer poll.Stop()
	for {
		f.mu.Lock()
		applied, ch := f.applied, f.notify
		f.mu.Unlock()
		if applied >= index {
			return true
		}
		if dispatched() >= index {
			// Everything up to index is with the FSM: only commands
			// change the keystore.
			if cmd := lastCommand(applied, index); applied >= cmd {
				return true
			} else {
				index = cmd
			}
		}
		select {
		case <-ch:
		case <-poll.C: // the library's index moves without telling us
		case <-ctx.Done():
			return false
		}
	}
}

// Snapshot captures the store as it is now (raft.FSM); the copy is written
// later, while commands go on being applied.
func (f *raftFSM) Snapshot() (raft.FSMSnapshot, error) {
	sn, err := f.store.BeginSnapshot()
	if err != nil {
		return nil, err
	}
	return &raftFSMSnapshot{sn: sn}, nil
}

// Restore replaces the store with a snapshot (raft.FSM): another node's
// snapshot, sent by the leader to a node too far behind for the log.
func (f *raftFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if err := f.store.Restore(rc); err != nil {
		return fmt.Errorf("cluster: restore the keystore from a raft snapshot: %w", err)
	}
	f.mu.Lock()
	if idx, err := f.store.AppliedIndex(); err == nil && idx > f.applied {
		f.applied = idx
	}
	close(f.notify)
	f.notify = make(chan struct{})
	f.mu.Unlock()
	return nil
}

type raftFSMSnapshot struct{ sn *keystore.Snapshot }

func (s *raftFSMSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := s.sn.WriteTo(sink); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *raftFSMSnapshot) Release() { s.sn.Close() }

// raftStorageError is a committed entry this node's keystore failed to
// apply (a storage failure, not the command's refusal).
type raftStorageError struct {
	index uint64
	err   error
}

func (e *raftStorageError) Error() string {
	return fmt.Sprintf("the write was committed, but this node's keystore failed to apply it (log entry %d): %v; the node has stopped replicating, restart it", e.index, e.err)
}

func (e *raftStorageError) Unwrap() error { return e.err }
