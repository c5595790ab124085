package cluster

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// TestWaitAppliedWaitsForTheFSM: the raft library counts an entry as
// applied when it hands it to the FSM's goroutine. A reader waiting for a
// position must wait for the FSM to have applied the last command up to
// it, not for the library's count (which once let a follower answer "not
// found" for a key whose create had returned), and must not wait for
// entries the FSM never sees.
func TestWaitAppliedWaitsForTheFSM(t *testing.T) {
	f := &raftFSM{notify: make(chan struct{})}
	f.advance(5)
	dispatched := func() uint64 { return 12 } // the library is ahead
	lastCommand := func(after, upTo uint64) uint64 {
		if after < 10 {
			return 10 // 10 is a command; 11 and 12 are a no-op and a configuration
		}
		return after
	}
	var applied atomic.Bool
	go func() {
		time.Sleep(50 * time.Millisecond)
		applied.Store(true)
		f.advance(10)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if !f.waitApplied(ctx, 12, dispatched, lastCommand) {
		t.Fatal("waitApplied gave up")
	}
	if !applied.Load() {
		t.Fatal("waitApplied returned before the FSM applied command 10")
	}
	// Nothing but non-commands left: no wait.
	short, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	if !f.waitApplied(short, 12, dispatched, lastCommand) {
		t.Fatal("waited for entries the FSM never sees")
	}
	// The library behind: wait, and give up with ctx.
	if f.waitApplied(short, 20, func() uint64 { return 12 }, lastCommand) {
		t.Fatal("returned for a position not yet dispatched")
	}
}
