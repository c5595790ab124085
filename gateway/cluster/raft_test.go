package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/gateway/keystore"
)

// A command applied on one node is visible on all; a write on a follower
// is forwarded to the leader, and the writer reads it back at once from the
// node it wrote through; a command's refusal reaches the writer wherever it
// wrote.
func TestRaftReplicatesCommands(t *testing.T) {
	p := newRaftTestPKI(t)
	nodes := startRaftTestCluster(t, p, 3, nil)
	leader := waitRaftLeader(t, nodes)
	follower := raftFollowers(nodes, leader)[0]

	if err := leader.store.Apply(&keystore.CreateKey{Key: raftTestKey("k-leader")}); err != nil {
		t.Fatal(err)
	}
	if err := follower.store.Apply(&keystore.CreateKey{Key: raftTestKey("k-follower")}); err != nil {
		t.Fatalf("a write on a follower: %v", err)
	}
	if !follower.hasKey("k-follower") {
		t.Fatal("the follower's own write is not readable on it when Apply returns")
	}
	for _, n := range nodes {
		raftWaitFor(t, 20*time.Second, "both keys on "+n.id, func() bool { return n.hasKey("k-leader") && n.hasKey("k-follower") })
	}
	// Refusals come back, with their meaning, through either path.
	for _, n := range []*raftTestNode{leader, follower} {
		err := n.store.Apply(&keystore.CreateKey{Key: raftTestKey("k-leader")})
		if !errors.Is(err, keystore.ErrAlreadyExists) || !strings.Contains(err.Error(), "k-leader") {
			t.Errorf("duplicate key through %s: %v", n.id, err)
		}
		err = n.store.Apply(&keystore.SetKeyState{KeyID: "nope", State: keystore.StateDisabled})
		if !errors.Is(err, keystore.ErrNotFound) {
			t.Errorf("unknown key through %s: %v", n.id, err)
		}
	}
	// A conditional write is a compare-and-set across the nodes: of two
	// nodes that read the same value, the second to write loses, wherever
	// it wrote.
	absent := keystore.MetaSHA256(nil)
	if err := leader.store.Apply(&keystore.SetMeta{Name: "cas", Value: []byte("leader"), IfSHA256: absent[:]}); err != nil {
		t.Fatal(err)
	}
	if err := follower.store.Apply(&keystore.SetMeta{Name: "cas", Value: []byte("follower"), IfSHA256: absent[:]}); !errors.Is(err, keystore.ErrConflict) {
		t.Fatalf("a stale conditional write through a follower: %v, want ErrConflict", err)
	}
	read := keystore.MetaSHA256([]byte("leader"))
	if err := follower.store.Apply(&keystore.SetMeta{Name: "cas", Value: []byte("follower"), IfSHA256: read[:]}); err != nil {
		t.Fatalf("a current conditional write through a follower: %v", err)
	}
	if v, _ := follower.store.Meta("cas"); string(v) != "follower" {
		t.Fatalf("the follower reads %q", v)
	}
	// The same command, applied on every node, leaves the same state.
	if err := follower.store.Apply(&keystore.ReserveEncryptions{KeyID: "k-leader", Version: 1, Count: 7}); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		raftWaitFor(t, 20*time.Second, "the reservation on "+n.id, func() bool {
			k, err := n.store.Key("k-leader")
			return err == nil && k.Versions[0].GCMReserved == 7
		})
	}
	st := follower.node.Status()
	if st.State != "Follower" || st.LeaderID != leader.id || len(st.Servers) != 3 || st.AppliedIndex == 0 {
		t.Fatalf("follower status %+v", st)
	}
}

// Killing the leader under a write load elects a new leader, and no
// acknowledged write is lost: every acknowledged command's effect is on
// every survivor.
func TestRaftLeaderFailoverLosesNoAcknowledgedWrite(t *testing.T) {
	p := newRaftTestPKI(t)
	nodes := startRaftTestCluster(t, p, 3, nil)
	leader := waitRaftLeader(t, nodes)
	survivors := raftFollowers(nodes, leader)

	var (
		mu       sync.Mutex
		acked    []string
		failures atomic.Int64
		stop     atomic.Bool
		seq      atomic.Int64
		wg       sync.WaitGroup
	)
	ackedCount := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	for _, n := range nodes { // writers on every node, the leader's included
		for w := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !stop.Load() {
					id := fmt.Sprintf("%s-w%d-%d", n.id, w, seq.Add(1))
					if err := n.store.Apply(&keystore.CreateKey{Key: raftTestKey(id)}); err != nil {
						failures.Add(1)
						if errors.Is(err, ErrRaftStopped) {
							return // the killed node
						}
						continue
					}
					mu.Lock()
					acked = append(acked, id)
					mu.Unlock()
				}
			}()
		}
	}
	raftWaitFor(t, 30*time.Second, "writes before the kill", func() bool { return ackedCount() >= 30 })
	before := ackedCount()
	if err := leader.node.Shutdown(); err != nil {
		t.Fatal(err)
	}
	newLeader := waitRaftLeader(t, survivors)
	if newLeader == leader {
		t.Fatal("the killed node is still the leader")
	}
	raftWaitFor(t, 30*time.Second, "writes after the new leader's election", func() bool { return ackedCount() >= before+30 })
	stop.Store(true)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d writes acknowledged (%d before the kill), %d refused", len(acked), before, failures.Load())
	for _, n := range survivors {
		raftWaitFor(t, 30*time.Second, "every acknowledged write on "+n.id, func() bool {
			for _, id := range acked {
				if !n.hasKey(id) {
					return false
				}
			}
			return true
		})
	}
}

// A partitioned follower refuses writes at once with the clear error,
// keeps serving reads, and catches up when healed; a partitioned leader
// loses its leadership and refuses writes too, while the majority elects
// a new leader and goes on.
func TestRaftPartition(t *testing.T) {
	p := newRaftTestPKI(t)
	nodes := startRaftTestCluster(t, p, 3, nil)
	leader := waitRaftLeader(t, nodes)
	if err := leader.store.Apply(&keystore.CreateKey{Key: raftTestKey("before")}); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		raftWaitFor(t, 20*time.Second, "the first key on "+n.id, func() bool { return n.hasKey("before") })
	}

	for _, which := range []string{"follower", "leader"} {
		t.Run(which, func(t *testing.T) {
			leader := waitRaftLeader(t, nodes)
			cut := leader
			if which == "follower" {
				cut = raftFollowers(nodes, leader)[0]
			}
			rest := raftFollowers(nodes, cut)
			cut.faults.Partition()

			start := time.Now()
			err := cut.store.Apply(&keystore.CreateKey{Key: raftTestKey("refused-" + which)})
			took := time.Since(start)
			var nq *NoQuorumError
			if !errors.As(err, &nq) || !errors.Is(err, ErrNoQuorum) || !errors.Is(err, keystore.ErrUnavailable) {
				t.Fatalf("a write on the partitioned %s: %v", which, err)
			}
			if nq.Reachable != 1 || nq.Voters != 3 || !strings.Contains(err.Error(), "can reach 1 of 3 voters") {
				t.Fatalf("the refusal does not say what the node reaches: %v", err)
			}
			// A refusal, not a write that hung until its 30s deadline.
			if took > 15*time.Second {
				t.Fatalf("the refusal took %v", took)
			}
			if _, err := cut.store.Key("before"); err != nil {
				t.Fatalf("reads on the partitioned node: %v", err)
			}
			// The majority goes on.
			newLeader := waitRaftLeader(t, rest)
			key := "during-" + which
			if err := newLeader.store.Apply(&keystore.CreateKey{Key: raftTestKey(key)}); err != nil {
				t.Fatalf("a write on the majority: %v", err)
			}
			if cut.hasKey(key) {
				t.Fatal("the partitioned node got a write")
			}
			// A second refused write is refused again, not applied later.
			if err := cut.store.Apply(&keystore.CreateKey{Key: raftTestKey("refused2-" + which)}); !errors.Is(err, ErrNoQuorum) {
				t.Fatalf("second write on the partitioned node: %v", err)
			}

			cut.faults.Heal()
			raftWaitFor(t, 30*time.Second, "the healed node to catch up", func() bool { return cut.hasKey(key) })
			raftWaitFor(t, 30*time.Second, "writes through the healed node", func() bool {
				return cut.store.Apply(&keystore.CreateKey{Key: raftTestKey("after-" + which)}) == nil
			})
			waitRaftLeader(t, nodes)
			for _, n := range nodes {
				raftWaitFor(t, 20*time.Second, "the write after healing on "+n.id, func() bool { return n.hasKey("after-" + which) })
				if n.hasKey("refused2-" + which) {
					t.Fatalf("%s applied a write that was refused", n.id)
				}
			}
		})
	}
}

// A forced snapshot truncates the log, and a node added later is brought
// up to date from it; a node that lost its keystore rebuilds it from its
// snapshot and log; a restarted node does not apply replayed entries twice.
func TestRaftSnapshotRestore(t *testing.T) {
	p := newRaftTestPKI(t)
	small := func(c *RaftConfig) { c.TrailingLogs = 2; c.SnapshotThreshold = 1 << 20; c.SnapshotInterval = time.Hour }
	nodes := startRaftTestCluster(t, p, 3, small)
	leader := waitRaftLeader(t, nodes)
	for i := range 20 {
		if err := leader.store.Apply(&keystore.CreateKey{Key: raftTestKey(fmt.Sprintf("k%02d", i))}); err != nil {
			t.Fatal(err)
		}
	}
	// Non-idempotent commands: applied twice, the count would show it.
	for range 5 {
		if err := leader.store.Apply(&keystore.ReserveEncryptions{KeyID: "k00", Version: 1, Count: 10}); err != nil {
			t.Fatal(err)
		}
	}
	if err := leader.node.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if err := leader.store.Apply(&keystore.CreateKey{Key: raftTestKey("after-snapshot")}); err != nil {
		t.Fatal(err)
	}

	// A new node: the leader no longer has the early entries, so it sends
	// its snapshot, then the entries after it.
	n4 := startRaftTestNode(t, p, "n4", "", false, small)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n4.node.Join(ctx, raftFollowers(nodes, leader)[0].node.Address()); err != nil {
		t.Fatal(err)
	}
	reserved := func(n *raftTestNode) uint64 {
		k, err := n.store.Key("k00")
		if err != nil {
			return 0
		}
		return k.Versions[0].GCMReserved
	}
	raftWaitFor(t, 30*time.Second, "the new node to have every key", func() bool {
		return n4.hasKey("k00") && n4.hasKey("k19") && n4.hasKey("after-snapshot") && reserved(n4) == 50
	})
	if n4.node.Stats()["last_snapshot_index"] == "0" {
		t.Fatal("the new node was not brought up to date from a snapshot")
	}

	// A follower restarts on its data: replayed entries are skipped.
	f := raftFollowers(nodes, leader)[0]
	raftWaitFor(t, 20*time.Second, "the follower to have everything", func() bool { return f.hasKey("after-snapshot") })
	f.stop(t)
	f2 := startRaftTestNode(t, p, f.id, f.dir, false, sameAddress(f, small))
	if err := leader.store.Apply(&keystore.CreateKey{Key: raftTestKey("after-restart")}); err != nil {
		t.Fatal(err)
	}
	raftWaitFor(t, 30*time.Second, "the restarted follower to catch up", func() bool { return f2.hasKey("after-restart") })
	if got := reserved(f2); got != 50 {
		t.Fatalf("the restarted follower reserved %d encryptions, want 50: an entry was applied twice", got)
	}

	// The other follower loses its keystore: it restores its snapshot and
	// replays the log after it.
	g := raftFollowers(nodes, leader)[1]
	raftWaitFor(t, 20*time.Second, "the other follower to have everything", func() bool { return g.hasKey("after-restart") })
	if err := g.node.Snapshot(); err != nil {
		t.Fatal(err)
	}
	g.stop(t)
	if err := os.Remove(g.dir + "/keystore.db"); err != nil {
		t.Fatal(err)
	}
	g2 := startRaftTestNode(t, p, g.id, g.dir, false, sameAddress(g, small))
	raftWaitFor(t, 30*time.Second, "the rebuilt keystore", func() bool {
		return g2.hasKey("k00") && g2.hasKey("after-restart") && reserved(g2) == 50
	})
}

// sameAddress is tweak, binding to n's address: a restarted node keeps the
// address the cluster knows it by.
func sameAddress(n *raftTestNode, tweak func(*RaftConfig)) func(*RaftConfig) {
	addr := n.node.Address()
	return func(c *RaftConfig) {
		tweak(c)
		c.BindAddress = addr
	}
}

// Join, leave and remove-peer change the configuration, through any node.
func TestRaftMembership(t *testing.T) {
	p := newRaftTestPKI(t)
	nodes := startRaftTestCluster(t, p, 3, nil)
	leader := waitRaftLeader(t, nodes)
	for _, n := range nodes {
		raftWaitFor(t, 20*time.Second, "three voters in "+n.id+"'s configuration", func() bool {
			s, err := n.node.Servers()
			return err == nil && len(s) == 3
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Remove a dead node, through a follower (forwarded to the leader).
	dead := raftFollowers(nodes, leader)[0]
	alive := raftFollowers(nodes, leader)[1]
	dead.node.Shutdown()
	if err := alive.node.RemovePeer(ctx, dead.id); err != nil {
		t.Fatal(err)
	}
	raftWaitFor(t, 20*time.Second, "two voters", func() bool {
		s, err := leader.node.Servers()
		return err == nil && len(s) == 2
	})
	if err := alive.node.RemovePeer(ctx, "nobody"); err == nil || !strings.Contains(err.Error(), "nobody") {
		t.Fatalf("removing an unknown node: %v", err)
	}
	// A node joins through a follower.
	n4 := startRaftTestNode(t, p, "n4", "", false, nil)
	if err := n4.node.Join(ctx, alive.node.Address()); err != nil {
		t.Fatal(err)
	}
	if err := n4.node.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	live := []*raftTestNode{leader, alive, n4}
	waitRaftLeader(t, live)
	if err := n4.store.Apply(&keystore.CreateKey{Key: raftTestKey("via-n4")}); err != nil {
		t.Fatal(err)
	}
	// The leader leaves: the others elect a new one and go on.
	if err := leader.node.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	rest := []*raftTestNode{alive, n4}
	newLeader := waitRaftLeader(t, rest)
	raftWaitFor(t, 20*time.Second, "the leaving node out of the configuration", func() bool {
		s, err := newLeader.node.Servers()
		return err == nil && len(s) == 2
	})
	raftWaitFor(t, 20*time.Second, "the leaving node's raft to stop", func() bool { return leader.node.State() == "Shutdown" })
	if err := leader.store.Apply(&keystore.CreateKey{Key: raftTestKey("from-the-departed")}); !errors.Is(err, ErrRaftStopped) {
		t.Fatalf("a write on a node that left: %v", err)
	}
	if err := alive.store.Apply(&keystore.CreateKey{Key: raftTestKey("after-leave")}); err != nil {
		t.Fatal(err)
	}
	// The last two: one leaves, and the sole voter can't.
	other := n4
	if newLeader == n4 {
		other = alive
	}
	if err := other.node.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	raftWaitFor(t, 20*time.Second, "a cluster of one", func() bool {
		s, err := newLeader.node.Servers()
		return err == nil && len(s) == 1 && newLeader.node.IsLeader()
	})
	if err := newLeader.node.Leave(ctx); err == nil || !strings.Contains(err.Error(), "only voter") {
		t.Fatalf("the sole voter leaving: %v", err)
	}
	if err := newLeader.store.Apply(&keystore.CreateKey{Key: raftTestKey("alone")}); err != nil {
		t.Fatalf("a cluster of one writes alone: %v", err)
	}
}

// Only nodes of the cluster CA, with a node certificate, get in.
func TestRaftRefusesStrangers(t *testing.T) {
	p := newRaftTestPKI(t)
	nodes := startRaftTestCluster(t, p, 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// Another CA: the TLS handshake fails both ways.
	stranger := startRaftTestNode(t, newRaftTestPKI(t), "n2", "", false, nil)
	if err := stranger.node.Join(ctx, nodes[0].node.Address()); err == nil {
		t.Fatal("a node of another CA joined")
	}
	// The cluster CA, but a certificate AuthorizePeer refuses.
	refused := startRaftTestNode(t, p, "n3", "", false, func(c *RaftConfig) {
		c.TLS = p.nodeTLS(t, "n3")
		client := issueRaftClientCert(t, p, "someone")
		c.TLS.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return client, nil }
	})
	if err := refused.node.Join(ctx, nodes[0].node.Address()); err == nil {
		t.Fatal("a non-node certificate joined")
	}
	// The positive twin: a node certificate of the cluster CA joins.
	good := startRaftTestNode(t, p, "n4", "", false, nil)
	if err := good.node.Join(ctx, nodes[0].node.Address()); err != nil {
		t.Fatal(err)
	}
	s, err := nodes[0].node.Servers()
	if err != nil || len(s) != 2 {
		t.Fatalf("configuration %+v, %v", s, err)
	}
}

// The configuration is checked before anything starts.
func TestRaftConfigRefused(t *testing.T) {
	p := newRaftTestPKI(t)
	store, err := keystore.Open(t.TempDir() + "/keystore.db")
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	good := RaftConfig{NodeID: "n1", BindAddress: "127.0.0.1:0", DataDir: t.TempDir(), TLS: p.nodeTLS(t, "n1"), Store: store, Logger: raftTestLogger()}
	cases := map[string]func(*RaftConfig){
		"no id":         func(c *RaftConfig) { c.NodeID = "" },
		"no address":    func(c *RaftConfig) { c.BindAddress = "" },
		"no data":       func(c *RaftConfig) { c.DataDir = "" },
		"no store":      func(c *RaftConfig) { c.Store = nil },
		"no TLS":        func(c *RaftConfig) { c.TLS = nil },
		"no CA":         func(c *RaftConfig) { c.TLS = c.TLS.Clone(); c.TLS.RootCAs = nil },
		"unspecified":   func(c *RaftConfig) { c.BindAddress = "0.0.0.0:0" },
		"bad address":   func(c *RaftConfig) { c.BindAddress = "nowhere" },
		"bad advertise": func(c *RaftConfig) { c.AdvertiseAddress = "::::" },
	}
	for name, edit := range cases {
		t.Run(name, func(t *testing.T) {
			c := good
			edit(&c)
			if n, err := NewRaftNode(c); err == nil {
				n.Shutdown()
				t.Fatal("accepted")
			}
		})
	}
	// The positive twin.
	n, err := NewRaftNode(good)
	if err != nil {
		t.Fatal(err)
	}
	n.Shutdown()
}

// A cluster bootstrapped from a keystore that already holds records (as
// `hsmgate init` leaves it) hands them to every node that joins; a node
// that would join with records of its own is refused.
func TestRaftBootstrapFromExistingKeystore(t *testing.T) {
	p := newRaftTestPKI(t)
	dir := t.TempDir()
	pre, err := keystore.Open(dir + "/keystore.db")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []keystore.Command{
		&keystore.CreatePrincipal{Principal: keystore.Principal{Name: "admin", Admin: true}},
		&keystore.CreateKey{Key: raftTestKey("pre-existing")},
		&keystore.SetMeta{Name: "tls server key", Value: []byte("blob")},
	} {
		if err := pre.Apply(c); err != nil {
			t.Fatal(err)
		}
	}
	pre.Close()
	n1 := startRaftTestNode(t, p, "n1", dir, true, nil)
	nodes := []*raftTestNode{n1}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, id := range []string{"n2", "n3"} {
		n := startRaftTestNode(t, p, id, "", false, nil)
		if err := n.node.Join(ctx, n1.node.Address()); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	if err := n1.store.Apply(&keystore.CreateKey{Key: raftTestKey("replicated")}); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		raftWaitFor(t, 30*time.Second, "the keystore's first content on "+n.id, func() bool {
			v, _ := n.store.Meta("tls server key")
			_, perr := n.store.Principal("admin")
			return n.hasKey("pre-existing") && n.hasKey("replicated") && string(v) == "blob" && perr == nil
		})
	}

	// A joining node with records of its own.
	dir4 := t.TempDir()
	own, err := keystore.Open(dir4 + "/keystore.db")
	if err != nil {
		t.Fatal(err)
	}
	if err := own.Apply(&keystore.CreateKey{Key: raftTestKey("mine")}); err != nil {
		t.Fatal(err)
	}
	_, err = NewRaftNode(RaftConfig{NodeID: "n4", BindAddress: "127.0.0.1:0", DataDir: dir4 + "/raft",
		TLS: p.nodeTLS(t, "n4"), Store: own, Logger: raftTestLogger()})
	own.Close()
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("a joiner with its own records: %v", err)
	}
}

// A backup restored on the leader replaces every node's keystore.
func TestRaftRestoreBackup(t *testing.T) {
	p := newRaftTestPKI(t)
	nodes := startRaftTestCluster(t, p, 3, nil)
	leader := waitRaftLeader(t, nodes)
	for i := range 5 {
		if err := leader.store.Apply(&keystore.CreateKey{Key: raftTestKey(fmt.Sprintf("b%d", i))}); err != nil {
			t.Fatal(err)
		}
	}
	f := raftFollowers(nodes, leader)[0]
	raftWaitFor(t, 20*time.Second, "the keys on a follower", func() bool { return f.hasKey("b4") })
	var backup bytes.Buffer
	if err := f.store.Snapshot(&backup); err != nil { // a backup, taken on any node
		t.Fatal(err)
	}
	if err := leader.store.Apply(&keystore.CreateKey{Key: raftTestKey("after-backup")}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Refused: on a follower, and a damaged backup (which changes nothing).
	if err := f.node.RestoreBackup(ctx, bytes.NewReader(backup.Bytes())); err == nil || !strings.Contains(err.Error(), "leader") {
		t.Fatalf("a restore on a follower: %v", err)
	}
	damaged := bytes.Clone(backup.Bytes())
	damaged[len(damaged)/2] ^= 1
	if err := leader.node.RestoreBackup(ctx, bytes.NewReader(damaged)); !errors.Is(err, keystore.ErrInvalid) {
		t.Fatalf("a damaged backup: %v", err)
	}
	if !leader.hasKey("after-backup") {
		t.Fatal("a refused restore changed the keystore")
	}

	if err := leader.node.RestoreBackup(ctx, &backup); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		raftWaitFor(t, 30*time.Second, "the backup's state on "+n.id, func() bool { return n.hasKey("b4") && !n.hasKey("after-backup") })
	}
	// The cluster goes on writing after the restore, everywhere.
	if err := f.store.Apply(&keystore.CreateKey{Key: raftTestKey("after-restore")}); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		raftWaitFor(t, 30*time.Second, "a write after the restore on "+n.id, func() bool { return n.hasKey("after-restore") })
	}
}

// A node whose keystore fails to apply a committed entry (a storage
// failure, not the command's refusal) stops replicating and says why,
// rather than serve a keystore that skipped a change; the others go on.
func TestRaftStorageFailureStopsTheNode(t *testing.T) {
	p := newRaftTestPKI(t)
	nodes := startRaftTestCluster(t, p, 3, nil)
	leader := waitRaftLeader(t, nodes)
	broken := raftFollowers(nodes, leader)[0]
	if err := broken.store.Close(); err != nil { // its database goes away
		t.Fatal(err)
	}
	if err := leader.store.Apply(&keystore.CreateKey{Key: raftTestKey("k1")}); err != nil {
		t.Fatal(err)
	}
	raftWaitFor(t, 20*time.Second, "the broken node to stop", func() bool {
		st := broken.node.Status()
		return st.State == "Shutdown" && strings.Contains(st.Failure, "failed to apply")
	})
	if err := broken.store.Apply(&keystore.CreateKey{Key: raftTestKey("k2")}); !errors.Is(err, ErrRaftStopped) || !strings.Contains(err.Error(), "failed to apply") {
		t.Fatalf("a write on the broken node: %v", err)
	}
	if err := leader.store.Apply(&keystore.CreateKey{Key: raftTestKey("k3")}); err != nil {
		t.Fatalf("the majority after losing a node: %v", err)
	}
}
