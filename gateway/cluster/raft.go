package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/hsmgate/hsmgate/gateway/keystore"
)

// RaftNode replicates the keystore through hashicorp/raft: every keystore
// command is an entry of the raft log, applied on every node by the
// keystore's own state machine (keystore.Store.ApplyLogEntry).
//
// # Writes
//
// NewRaftNode makes the node the store's replicator, so keystore.Store.Apply
// goes through [RaftNode.Replicate]: on the leader the command is appended
// to the log and Apply returns once a majority has it and the leader has
// applied it, with the command's own result (keystore.ErrNotFound, …); on a
// follower the command is sent to the leader over the internal API
// (raft_forward.go) and Apply returns the leader's result once this node
// has applied the entry too, so a client reads its own writes on the node
// it wrote through.
//
// A node that can't reach a majority refuses writes with a
// [*NoQuorumError] (matching [ErrNoQuorum] and keystore.ErrUnavailable)
// within about a second, or within RaftConfig.ElectionWait while a majority
// is reachable but still electing a leader; it never hangs. Reads are
// served from the local store and keep working: data plane before control
// plane.
//
// # Transport
//
// Raft RPCs and the internal API share one TCP port and mutual TLS 1.3
// (RaftConfig.TLS): both sides present certificates verified by the
// cluster CA, and RaftConfig.AuthorizePeer may restrict which certificates
// count as nodes. [RaftFaults] cuts a node off for tests.
//
// # Durable state
//
// RaftConfig.DataDir holds raft.db (the raft log and term, bbolt through
// raft-boltdb) and snapshots/ (the last two keystore snapshots). The
// keystore itself is durable on its own and records the last log position
// it applied, so a restart replays only what it lacks.
type RaftNode struct {
	cfg    RaftConfig
	log    *slog.Logger
	raft   *raft.Raft
	fsm    *raftFSM
	stream *raftStream
	trans  *raft.NetworkTransport
	logs   *raftboltdb.BoltStore
	snaps  *raft.FileSnapshotStore

	api       *http.Server
	apiDone   chan struct{}
	apiClient *raftAPIClient

	shutdownOnce sync.Once
	shutdownErr  error
	stopped      atomic.Bool
	failure      atomic.Pointer[raftStorageError] // set when the store failed to apply an entry

	reachMu sync.Mutex
	reach   raftReach // cached (see reachability)
}

// RaftConfig configures a RaftNode. Zero durations and counts mean the
// defaults named beside each field.
type RaftConfig struct {
	// NodeID names the node for all time (required): a removed node that
	// comes back must come back under a new id.
	NodeID string
	// BindAddress is the TCP address raft listens on, host:port (required).
	BindAddress string
	// AdvertiseAddress is the address peers dial, host:port; empty means
	// the address the listener got (right for a specific bind address,
	// wrong for 0.0.0.0). The node's TLS certificate must cover its host.
	AdvertiseAddress string
	// DataDir holds the raft log and snapshots (required; created 0700).
	DataDir string
	// Bootstrap starts a new cluster whose only voter is this node, when
	// DataDir holds no raft state yet; ignored otherwise. Exactly one node
	// of a new cluster bootstraps; the others join it.
	Bootstrap bool
	// TLS is the node's mutual TLS (required), used both ways: as a
	// server, Certificates (this node's server certificate) and ClientCAs
	// (the cluster CA); as a client, GetClientCertificate or Certificates
	// (a certificate with client authentication) and RootCAs (the cluster
	// CA). TLS 1.3 is required.
	TLS *tls.Config
	// AuthorizePeer, when set, must accept the verified client
	// certificate of every inbound connection (a peer's raft RPCs and
	// internal API calls); nil accepts any client certificate the cluster
	// CA verifies, so that CA must then issue client certificates to nodes
	// only: a peer can write anything to the keystore. Outbound, a peer's
	// server certificate must be valid for the host of its raft address.
	AuthorizePeer func(cert *x509.Certificate) error
	// Store is the keystore to replicate (required). NewRaftNode sets
	// itself as its replicator and marks the store a replica
	// (keystore.Store.MarkReplica): from then on it refuses changes that
	// don't come through the log, even after Shutdown.
	Store *keystore.Store
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Faults, when set, is the transport's fault-injection switch.
	Faults *RaftFaults

	// WriteTimeout bounds a replicated write; 10s. A write that times out
	// after it was sent may still be applied ([ErrWriteOutcomeUnknown]).
	WriteTimeout time.Duration
	// ElectionWait is how long a write waits for a leader to be elected
	// while a majority is reachable; 5s. With no majority reachable a
	// write is refused at once.
	ElectionWait time.Duration
	// HeartbeatTimeout, ElectionTimeout and LeaderLeaseTimeout are raft's
	// timers: 1s, 1s and 500ms (raft's defaults, for a LAN or a region's
	// zones; raise them for slower links).
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	// SnapshotInterval and SnapshotThreshold: a snapshot is taken, and the
	// log truncated to TrailingLogs entries, when SnapshotThreshold entries
	// were added since the last one, checked every SnapshotInterval; 2m,
	// 8192 and 10240.
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	TrailingLogs      uint64
}

// Errors of the raft node. Errors refusing a write match
// keystore.ErrUnavailable, which the API maps to a retryable error.
var (
	// ErrNoQuorum: this node can't reach a majority of the cluster's
	// voters, so the cluster can't commit its write. [*NoQuorumError]
	// says how many it reaches.
	ErrNoQuorum = fmt.Errorf("%w: control-plane writes need a raft majority", keystore.ErrUnavailable)
	// ErrWriteOutcomeUnknown: the write was handed to the cluster, but the
	// answer was lost (a timeout, or the leader failed): it may or may not
	// have been applied. Read the state before retrying a write that is
	// not idempotent.
	ErrWriteOutcomeUnknown = fmt.Errorf("%w: the write's outcome is unknown (it may have been applied)", keystore.ErrUnavailable)
	// ErrRaftStopped: this node's raft is shut down (or the node left the
	// cluster).
	ErrRaftStopped = fmt.Errorf("%w: this node's raft is shut down", keystore.ErrUnavailable)
)

// NoQuorumError is a write refused for want of a majority.
type NoQuorumError struct {
	// Reachable is how many voters this node reaches, itself included;
	// Voters is how many the cluster has.
	Reachable, Voters int
	// InFlight means a write was already appended when the leader lost
	// its majority: it may still be committed, by a later leader.
	InFlight bool
}

func (e *NoQuorumError) Error() string {
	msg := fmt.Sprintf("control-plane writes need a raft majority; this node can reach %d of %d voters (it needs %d): it serves reads and crypto operations with the keys it holds, and refuses changes until the majority is back", e.Reachable, e.Voters, e.Voters/2+1)
	if e.InFlight {
		msg += "; the write was in flight when the majority was lost and may still be applied"
	}
	return msg
}

// Unwrap makes the error match ErrNoQuorum (and keystore.ErrUnavailable).
func (e *NoQuorumError) Unwrap() error { return ErrNoQuorum }

// raftRestoreTimeout bounds a restore without a deadline of its own: the
// whole keystore is copied, then sent to every node.
const raftRestoreTimeout = 5 * time.Minute

const (
	raftDBFile       = "raft.db"
	raftSnapshotsDir = "snapshots"
	raftRetainSnaps  = 2
)

// raftOr is d, or def when d is not positive.
func raftOr(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// NewRaftNode starts the raft node: it opens (or creates) the raft state in
// cfg.DataDir, listens on cfg.BindAddress, bootstraps a new cluster when
// cfg.Bootstrap says so and there is no state, and makes itself the store's
// replicator. A node that neither bootstraps nor has state waits to be
// added by a member ([RaftNode.Join] from this node, or
// [RaftNode.AddVoter] on any member). Shutdown stops it.
func NewRaftNode(cfg RaftConfig) (*RaftNode, error) {
	switch {
	case cfg.NodeID == "":
		return nil, errors.New("cluster: raft needs a node id")
	case cfg.BindAddress == "":
		return nil, errors.New("cluster: raft needs a bind address")
	case cfg.DataDir == "":
		return nil, errors.New("cluster: raft needs a data folder")
	case cfg.Store == nil:
		return nil, errors.New("cluster: raft needs the keystore")
	case cfg.TLS == nil || (len(cfg.TLS.Certificates) == 0 && cfg.TLS.GetCertificate == nil) ||
		cfg.TLS.RootCAs == nil || cfg.TLS.ClientCAs == nil:
		return nil, errors.New("cluster: raft needs mutual TLS: a TLS configuration with this node's certificate, RootCAs and ClientCAs (the cluster CA)")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.WriteTimeout = raftOr(cfg.WriteTimeout, 10*time.Second)
	cfg.ElectionWait = raftOr(cfg.ElectionWait, 5*time.Second)
	n := &RaftNode{cfg: cfg, log: cfg.Logger.With("component", "raft", "node", cfg.NodeID), apiDone: make(chan struct{})}

	if err := os.MkdirAll(filepath.Join(cfg.DataDir, raftSnapshotsDir), 0o700); err != nil {
		return nil, fmt.Errorf("cluster: raft data folder: %w", err)
	}
	var advertise net.Addr
	if cfg.AdvertiseAddress != "" {
		a, err := net.ResolveTCPAddr("tcp", cfg.AdvertiseAddress)
		if err != nil {
			return nil, fmt.Errorf("cluster: raft advertise address %q: %w", cfg.AdvertiseAddress, err)
		}
		advertise = a
	}

	var err error
	cleanup := func() {
		if n.trans != nil {
			n.trans.Close()
		} else if n.stream != nil {
			n.stream.shutdown()
		}
		if n.logs != nil {
			n.logs.Close()
		}
	}
	n.logs, err = raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.DataDir, raftDBFile)})
	if err != nil {
		return nil, fmt.Errorf("cluster: open the raft log: %w", err)
	}
	hlog := raftLogger(n.log, "raft")
	n.snaps, err = raft.NewFileSnapshotStoreWithLogger(filepath.Join(cfg.DataDir, raftSnapshotsDir), raftRetainSnaps, hlog)
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("cluster: open the raft snapshots: %w", err)
	}
	n.stream, err = newRaftStream(cfg.BindAddress, advertise, cfg.TLS, cfg.AuthorizePeer, cfg.Faults, n.log)
	if err != nil {
		cleanup()
		return nil, err
	}
	if a, ok := n.stream.Addr().(*net.TCPAddr); ok && a.IP.IsUnspecified() {
		cleanup()
		return nil, fmt.Errorf("cluster: raft binds to %s: set an advertise address peers can dial", cfg.BindAddress)
	}
	n.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: n.stream, MaxPool: 3, Timeout: 10 * time.Second, Logger: raftLogger(n.log, "raft-net"),
	})

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = hlog
	rc.HeartbeatTimeout = raftOr(cfg.HeartbeatTimeout, rc.HeartbeatTimeout)
	rc.ElectionTimeout = raftOr(cfg.ElectionTimeout, rc.ElectionTimeout)
	rc.LeaderLeaseTimeout = raftOr(cfg.LeaderLeaseTimeout, rc.LeaderLeaseTimeout)
	// Followers learn that an entry committed from the leader's next
	// append; without a new write that waits for CommitTimeout. A follower
	// that forwarded a write waits to apply it itself (read your writes),
	// so this bounds its write latency: 10ms instead of raft's 50ms, for
	// at most 100 small idle appends a second per follower.
	rc.CommitTimeout = 10 * time.Millisecond
	rc.SnapshotInterval = raftOr(cfg.SnapshotInterval, rc.SnapshotInterval)
	if cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = cfg.SnapshotThreshold
	}
	if cfg.TrailingLogs > 0 {
		rc.TrailingLogs = cfg.TrailingLogs
	}
	// The keystore is durable and knows the last entry it applied: restore
	// the latest snapshot at start only when the store is behind it (a
	// store lost or replaced), and let the log replay the rest.
	applied, err := cfg.Store.AppliedIndex()
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("cluster: read the keystore's log position: %w", err)
	}
	rc.NoSnapshotRestoreOnStart = true
	if metas, err := n.snaps.List(); err == nil && len(metas) > 0 && metas[0].Index > applied {
		rc.NoSnapshotRestoreOnStart = false
		n.log.Info("raft: the keystore is behind the latest snapshot; restoring it", "keystore_index", applied, "snapshot_index", metas[0].Index)
	}
	if err := raft.ValidateConfig(rc); err != nil {
		cleanup()
		return nil, fmt.Errorf("cluster: raft configuration: %w", err)
	}

	n.fsm = newRaftFSM(cfg.Store, n.log, n.storageFailed)
	cache, err := raft.NewLogCache(512, n.logs)
	if err != nil {
		cleanup()
		return nil, err
	}
	hasState, err := raft.HasExistingState(cache, n.logs, n.snaps)
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("cluster: read the raft state: %w", err)
	}
	empty, err := cfg.Store.Empty()
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("cluster: read the keystore: %w", err)
	}
	if !hasState && !cfg.Bootstrap && !empty {
		// The log would be replayed onto state no other node has.
		cleanup()
		return nil, fmt.Errorf("cluster: node %s is new to the cluster (no raft state) and does not bootstrap it, but its keystore is not empty: a joining node starts from an empty keystore and receives the cluster's (move keystore.db aside, or bootstrap a new cluster from it)", cfg.NodeID)
	}
	n.raft, err = raft.NewRaft(rc, n.fsm, cache, n.logs, n.snaps, n.trans)
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("cluster: start raft: %w", err)
	}
	// From now on the keystore changes only through the log.
	if err := cfg.Store.MarkReplica(); err != nil {
		n.raft.Shutdown().Error()
		cleanup()
		return nil, fmt.Errorf("cluster: mark the keystore a replica: %w", err)
	}
	if cfg.Bootstrap && !hasState {
		f := n.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{
			Suffrage: raft.Voter, ID: rc.LocalID, Address: n.trans.LocalAddr(),
		}}})
		if err := f.Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			n.raft.Shutdown().Error()
			cleanup()
			return nil, fmt.Errorf("cluster: bootstrap the raft cluster: %w", err)
		}
		n.log.Info("raft: bootstrapped a new cluster", "address", string(n.trans.LocalAddr()))
	}
	if cfg.Bootstrap && !hasState && !empty {
		// What the keystore held before the cluster existed reaches the
		// nodes that join as a snapshot, never as log entries.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := n.seed(ctx)
		cancel()
		if err != nil {
			n.raft.Shutdown().Error()
			cleanup()
			return nil, err
		}
	}

	n.api = &http.Server{
		Handler:           n.apiHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          log.New(&raftLogWriter{log: n.log}, "", 0),
	}
	go func() {
		defer close(n.apiDone)
		n.api.Serve(n.stream.api)
	}()
	n.apiClient = newRaftAPIClient(func(ctx context.Context, addr string) (net.Conn, error) {
		return n.stream.dial(ctx, addr, raftAPIALPN)
	})
	cfg.Store.SetReplicator(n)
	return n, nil
}

// storageFailed is the FSM's report that the store failed to apply a
// committed entry: this node stops replicating (its raft is shut down) so
// that it never serves or votes on a state that skipped an entry. A restart
// replays the entry.
func (n *RaftNode) storageFailed(index uint64, err error) {
	if n.failure.CompareAndSwap(nil, &raftStorageError{index: index, err: err}) {
		go n.raft.Shutdown() // not on the FSM goroutine: Shutdown waits for it
	}
}

// Shutdown stops the node: raft, its listener and its internal API. The
// store is left open, and keeps refusing writes (ErrRaftStopped) rather
// than applying them locally; clear its replicator to write locally again.
// It is safe to call more than once.
func (n *RaftNode) Shutdown() error {
	n.shutdownOnce.Do(func() {
		n.stopped.Store(true)
		err := n.raft.Shutdown().Error()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n.api.Shutdown(ctx)
		n.trans.Close()
		n.stream.shutdown()
		<-n.apiDone
		n.apiClient.close()
		n.shutdownErr = errors.Join(err, n.logs.Close())
	})
	return n.shutdownErr
}

// ID is the node's id.
func (n *RaftNode) ID() string { return n.cfg.NodeID }

// Address is the address peers reach the node's raft at.
func (n *RaftNode) Address() string { return string(n.trans.LocalAddr()) }

// IsLeader reports whether this node is the leader now. Work only the
// leader does (the rotation and deletion scheduler) checks it.
func (n *RaftNode) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the current leader's id and address as this node knows
// them, or empty strings when it knows none.
func (n *RaftNode) Leader() (id, address string) {
	addr, sid := n.raft.LeaderWithID()
	return string(sid), string(addr)
}

// State is the node's raft state: "Follower", "Candidate", "Leader" or
// "Shutdown".
func (n *RaftNode) State() string { return n.raft.State().String() }

// Stats are raft's own counters and states, by name (for diagnostics).
func (n *RaftNode) Stats() map[string]string { return n.raft.Stats() }

// LeaderChanges returns a channel that receives true when this node becomes
// the leader and false when it stops being the leader. Only the latest
// change is kept when the reader is slow. Call it once and keep the
// channel.
func (n *RaftNode) LeaderChanges() <-chan bool { return n.raft.LeaderCh() }

// WaitForLeader waits until the cluster has a leader this node knows of,
// or ctx ends.
func (n *RaftNode) WaitForLeader(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if id, _ := n.Leader(); id != "" {
			return nil
		}
		if n.stopped.Load() || n.raft.State() == raft.Shutdown {
			return ErrRaftStopped
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: no raft leader yet: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// WaitReady waits until this node is in the cluster's configuration,
// knows its leader and has applied every entry it knows to be committed
// (a node that just joined has received the cluster's keystore), or ctx
// ends.
func (n *RaftNode) WaitReady(ctx context.Context) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if err := n.usable(); err != nil {
			return err
		}
		if n.ready() {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: node %s has not caught up with the cluster: %w", n.cfg.NodeID, ctx.Err())
		case <-t.C:
		}
	}
}

func (n *RaftNode) ready() bool {
	if id, _ := n.Leader(); id == "" {
		return false
	}
	commit := n.raft.CommitIndex()
	if commit == 0 || n.raft.AppliedIndex() < commit {
		return false
	}
	servers, err := n.Servers()
	if err != nil {
		return false
	}
	for _, s := range servers {
		if s.ID == n.cfg.NodeID {
			return true
		}
	}
	return false
}

// RaftServer is one member of the cluster's configuration.
type RaftServer struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Voter   bool   `json:"voter"`
	Leader  bool   `json:"leader,omitempty"`
}

// RaftStatus is a node's view of the replicated keystore.
type RaftStatus struct {
	NodeID        string `json:"node_id"`
	Address       string `json:"address"`
	State         string `json:"state"` // Follower, Candidate, Leader or Shutdown
	LeaderID      string `json:"leader_id,omitempty"`
	LeaderAddress string `json:"leader_address,omitempty"`
	Term          uint64 `json:"term"`
	LastIndex     uint64 `json:"last_index"`
	CommitIndex   uint64 `json:"commit_index"`
	AppliedIndex  uint64 `json:"applied_index"`
	// LastContact is when a follower last heard from the leader (zero on
	// the leader, or before any contact).
	LastContact time.Time    `json:"last_contact,omitzero"`
	Servers     []RaftServer `json:"servers"`
	// Failure, when set, is why the node stopped replicating.
	Failure string `json:"failure,omitempty"`
}

// Status returns the node's view of the cluster.
func (n *RaftNode) Status() RaftStatus {
	leaderID, leaderAddr := n.Leader()
	st := RaftStatus{
		NodeID: n.cfg.NodeID, Address: n.Address(), State: n.State(),
		LeaderID: leaderID, LeaderAddress: leaderAddr,
		Term: n.raft.CurrentTerm(), LastIndex: n.raft.LastIndex(), CommitIndex: n.raft.CommitIndex(), AppliedIndex: n.raft.AppliedIndex(),
	}
	if n.raft.State() == raft.Follower {
		st.LastContact = n.raft.LastContact()
	}
	if servers, err := n.Servers(); err == nil {
		st.Servers = servers
	}
	if f := n.failure.Load(); f != nil {
		st.Failure = f.Error()
	}
	return st
}

// Servers returns the cluster's latest configuration as this node knows it.
func (n *RaftNode) Servers() ([]RaftServer, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("cluster: raft configuration: %w", err)
	}
	leaderID, _ := n.Leader()
	var out []RaftServer
	for _, s := range f.Configuration().Servers {
		out = append(out, RaftServer{ID: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == raft.Voter, Leader: string(s.ID) == leaderID})
	}
	return out, nil
}

// Snapshot makes the node take a raft snapshot now (and truncate its log),
// rather than when SnapshotThreshold says.
func (n *RaftNode) Snapshot() error {
	if err := n.raft.Snapshot().Error(); err != nil {
		return fmt.Errorf("cluster: raft snapshot: %w", err)
	}
	return nil
}

// seed makes the store's present content the cluster's starting state:
// a raft snapshot that every node joining later installs.
func (n *RaftNode) seed(ctx context.Context) error {
	if err := n.WaitForLeader(ctx); err != nil {
		return fmt.Errorf("cluster: seed the new cluster with the keystore: %w", err)
	}
	// raft restores a snapshot only once the bootstrap configuration entry
	// is applied: wait for everything before this point to be.
	if err := n.raft.Barrier(time.Until(deadlineOf(ctx, n.cfg.WriteTimeout))).Error(); err != nil {
		return fmt.Errorf("cluster: seed the new cluster with the keystore: %w", err)
	}
	// Through a file: the store's snapshot must be closed before raft
	// restores it into the same store (an open read transaction would
	// keep the restore from growing the database).
	f, err := os.CreateTemp(n.cfg.DataDir, ".seed-*")
	if err != nil {
		return fmt.Errorf("cluster: seed: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	sn, err := n.cfg.Store.BeginSnapshot()
	if err != nil {
		return err
	}
	size, index := sn.Size(), sn.Index()
	_, err = sn.WriteTo(f)
	sn.Close()
	if err != nil {
		return fmt.Errorf("cluster: seed: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("cluster: seed: %w", err)
	}
	return n.restoreSnapshot(ctx, index, size, f)
}

// restoreSnapshot makes the leader take on a keystore snapshot of size
// bytes read from r, whose own log position is index, and replicate it to
// every node (raft's user restore: the log gets a hole, so followers
// install the snapshot). The log goes on past index, so that no later
// entry looks applied already.
func (n *RaftNode) restoreSnapshot(ctx context.Context, index uint64, size int64, r io.Reader) error {
	if !n.IsLeader() {
		id, _ := n.Leader()
		return fmt.Errorf("cluster: a restore runs on the leader (node %q now)", id)
	}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Index: index, Size: size}
	if err := n.raft.Restore(meta, r, time.Until(deadlineOf(ctx, raftRestoreTimeout))); err != nil {
		return fmt.Errorf("cluster: raft restore: %w", err)
	}
	return nil
}

// RestoreBackup replaces the whole cluster's keystore with a backup (a
// keystore snapshot, as keystore.Store.Snapshot writes it): disaster
// recovery. It runs on the leader. The backup is checked in full first (a
// damaged one changes nothing); then the leader takes it on and every other
// node installs it as a raft snapshot. Writes committed after the backup
// was taken are lost: that is what a restore is.
func (n *RaftNode) RestoreBackup(ctx context.Context, backup io.Reader) error {
	if err := n.usable(); err != nil {
		return err
	}
	if !n.IsLeader() {
		id, _ := n.Leader()
		return fmt.Errorf("cluster: a restore runs on the leader (node %q now)", id)
	}
	// Check it by restoring it into a scratch keystore, whose snapshot is
	// then what the cluster takes on.
	dir, err := os.MkdirTemp(n.cfg.DataDir, ".restore-*")
	if err != nil {
		return fmt.Errorf("cluster: restore: %w", err)
	}
	defer os.RemoveAll(dir)
	scratch, err := keystore.Open(filepath.Join(dir, "keystore.db"))
	if err != nil {
		return fmt.Errorf("cluster: restore: %w", err)
	}
	defer scratch.Close()
	if err := scratch.Restore(backup); err != nil {
		return fmt.Errorf("cluster: restore: the backup: %w", err)
	}
	sn, err := scratch.BeginSnapshot()
	if err != nil {
		return err
	}
	defer sn.Close()
	pr, pw := io.Pipe()
	written := make(chan struct{})
	go func() {
		defer close(written)
		_, err := sn.WriteTo(pw)
		pw.CloseWithError(err)
	}()
	err = n.restoreSnapshot(ctx, sn.Index(), sn.Size(), pr)
	pr.Close()
	<-written
	if err != nil {
		return err
	}
	n.log.Warn("raft: the cluster's keystore was replaced by a backup")
	return nil
}

// usable says why the node can't take writes, or nil.
func (n *RaftNode) usable() error {
	if f := n.failure.Load(); f != nil {
		return fmt.Errorf("%w: %v", ErrRaftStopped, f)
	}
	if n.stopped.Load() || n.raft.State() == raft.Shutdown {
		return ErrRaftStopped
	}
	return nil
}

// AddVoter adds a node to the cluster as a voter, through the leader
// (forwarded when this node is not the leader). Adding a node already in
// the configuration with the same address changes nothing.
func (n *RaftNode) AddVoter(ctx context.Context, id, address string) error {
	if id == "" || address == "" {
		return errors.New("cluster: a node to add needs an id and an address")
	}
	if _, _, err := net.SplitHostPort(address); err != nil {
		return fmt.Errorf("cluster: node address %q: %w", address, err)
	}
	return n.membership(ctx, raftMembershipRequest{Op: "add", ID: id, Address: address})
}

// RemovePeer removes a node from the cluster's configuration, through the
// leader: a dead node, or one leaving. A removed node's raft shuts down
// when it learns of its removal; it can come back only under a new id with
// a fresh data folder.
func (n *RaftNode) RemovePeer(ctx context.Context, id string) error {
	if id == "" {
		return errors.New("cluster: a node to remove needs an id")
	}
	return n.membership(ctx, raftMembershipRequest{Op: "remove", ID: id})
}

// Join asks the cluster, through any of the member addresses given, to add
// this node as a voter. The node must not have bootstrapped a cluster of
// its own.
func (n *RaftNode) Join(ctx context.Context, members ...string) error {
	if len(members) == 0 {
		return errors.New("cluster: join needs the raft address of at least one member")
	}
	var others []string
	for _, m := range members {
		if m != n.Address() {
			others = append(others, m)
		}
	}
	req := raftMembershipRequest{Op: "add", ID: n.cfg.NodeID, Address: n.Address()}
	if err := n.apiClient.callAny(ctx, others, "/v1/membership", req, nil); err != nil {
		return fmt.Errorf("cluster: join: %w", err)
	}
	return nil
}

// Leave removes this node from the cluster (the leader commits the
// change; a leaving leader steps down). The node's raft then shuts down;
// call Shutdown to release the rest.
func (n *RaftNode) Leave(ctx context.Context) error {
	servers, err := n.Servers()
	if err != nil {
		return err
	}
	voters, member := 0, false
	for _, s := range servers {
		if s.Voter {
			voters++
		}
		member = member || s.ID == n.cfg.NodeID
	}
	switch {
	case !member:
		return fmt.Errorf("cluster: node %s is not a member of the cluster", n.cfg.NodeID)
	case voters == 1:
		return errors.New("cluster: this node is the cluster's only voter: it can't leave (shut it down instead)")
	}
	return n.RemovePeer(ctx, n.cfg.NodeID)
}

// membership runs a membership change on the leader, here or forwarded.
func (n *RaftNode) membership(ctx context.Context, req raftMembershipRequest) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.WriteTimeout)
	defer cancel()
	if err := n.usable(); err != nil {
		return err
	}
	if n.IsLeader() {
		return n.membershipAsLeader(ctx, req)
	}
	if err := n.WaitForLeader(ctx); err != nil {
		return n.noQuorum(ctx, false)
	}
	_, addr := n.Leader()
	return n.apiClient.callLeader(ctx, addr, "/v1/membership", req, nil)
}

func (n *RaftNode) membershipAsLeader(ctx context.Context, req raftMembershipRequest) error {
	timeout := time.Until(deadlineOf(ctx, n.cfg.WriteTimeout))
	var f raft.IndexFuture
	switch req.Op {
	case "add":
		servers, err := n.Servers()
		if err != nil {
			return err
		}
		for _, s := range servers {
			if s.ID == req.ID && s.Address == req.Address && s.Voter {
				return nil
			}
		}
		f = n.raft.AddVoter(raft.ServerID(req.ID), raft.ServerAddress(req.Address), 0, timeout)
	case "remove":
		servers, err := n.Servers()
		if err != nil {
			return err
		}
		known := false
		for _, s := range servers {
			known = known || s.ID == req.ID
		}
		if !known {
			return fmt.Errorf("cluster: node %q is not in the cluster's configuration", req.ID)
		}
		f = n.raft.RemoveServer(raft.ServerID(req.ID), 0, timeout)
	default:
		return fmt.Errorf("cluster: unknown membership operation %q", req.Op)
	}
	if err := waitFuture(ctx, f); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return n.noQuorum(ctx, errors.Is(err, raft.ErrLeadershipLost))
		}
		return fmt.Errorf("cluster: %s node %s: %w", req.Op, req.ID, err)
	}
	n.log.Info("raft: membership changed", "op", req.Op, "id", req.ID, "address", req.Address)
	return nil
}

// waitFuture waits for f, or for ctx to end.
func waitFuture(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w: %v", ErrWriteOutcomeUnknown, ctx.Err())
	}
}

// deadlineOf is ctx's deadline, or d from now.
func deadlineOf(ctx context.Context, d time.Duration) time.Time {
	if dl, ok := ctx.Deadline(); ok {
		return dl
	}
	return time.Now().Add(d)
}
