package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Gossip is this gateway's membership in its region's gossip pool
// (hashicorp/memberlist): it publishes the node's metadata ([NodeMeta]) and
// keeps a view of every node's state and metadata, from which [Gossip.PickPeer]
// chooses where to forward requests when the local HSM pool can't serve.
//
// The pool is encrypted (AES-GCM with the keyring's primary key; every key
// of the keyring is tried on receipt, which is what makes key rotation
// possible without a split) and labelled: a packet or stream without this
// cluster's label is refused, so two clusters on one network never merge,
// even when they share a key. What the pool carries is a hint, never
// authority: see docs/cluster.md.
type Gossip struct {
	cfg GossipConfig
	log *slog.Logger
	now func() time.Time
	ml  *memberlist.Memberlist

	keyring *memberlist.Keyring
	keyMu   sync.Mutex // serialises keyring changes and their file writes

	view *gossipView

	// meta is what memberlist publishes (the NodeMeta delegate returns it).
	meta        atomic.Pointer[[]byte]
	publishMu   sync.Mutex // serialises publish
	published   *NodeMeta  // last published, under publishMu
	publishedAt time.Time
	badImage    atomic.Bool // the image version was refused once (logged once)
	leaving     atomic.Bool // Leave was called

	probeInterval  time.Duration
	probeTimeout   time.Duration
	leavePropagate time.Duration

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
	stopped  atomic.Bool
}

// GossipConfig configures a Gossip. Fields marked required must be set;
// every other zero value means the default given.
type GossipConfig struct {
	// NodeID is this node's name in the pool (required): 1 to 64 of
	// [A-Za-z0-9._-], unique in the cluster.
	NodeID string
	// Zone is the availability zone this node runs in (required): 1 to 32
	// of [A-Za-z0-9._-]. PickPeer prefers peers in the same zone.
	Zone string
	// APIAddress is where peers reach this node's HTTPS API, host:port
	// (required): the address forwarded requests and attestation requests
	// go to. The host must be in the server certificate.
	APIAddress string
	// BindAddress is the host:port the pool listens on, UDP and TCP
	// (required). Port 0 takes a free port (tests).
	BindAddress string
	// AdvertiseAddress is the host:port peers reach the pool at, when not
	// the bound one (NAT); "" means the bound address (with an unspecified
	// bind host, memberlist picks a private address of the machine).
	AdvertiseAddress string
	// Label is the cluster's label (required, 1 to 255 bytes): nodes with
	// another label can't talk to this pool. Use the same label on every
	// node of one cluster and a different one for each cluster.
	Label string
	// Keys is the gossip keyring (required): AES keys of 16, 24 or 32
	// bytes, the first the primary one, used to encrypt; all are tried to
	// decrypt. LoadGossipKeyring reads a keyring file.
	Keys [][]byte
	// KeyringFile, when set, is rewritten (mode 0600) by InstallKey,
	// UseKey and RemoveKey, so that a restart keeps the rotated keyring.
	KeyringFile string
	// Join are pool addresses (host:port) of other nodes. NewGossip tries
	// them once, and while this node is alone or a node in its view is
	// dead it tries them again every RejoinInterval (so a node started
	// before its peers, or cut off and healed, finds them). Empty means
	// only Join calls join.
	Join []string
	// Status returns this node's current status for its metadata
	// (required). It is called every RefreshInterval and must be quick.
	Status func() LocalStatus
	// RequireAttestation makes PickPeer skip peers that don't report a
	// measured boot; the forwarder then verifies each peer's attestation
	// itself (FailoverConfig.Verifier) before it trusts it.
	RequireAttestation bool
	// Verifier, when set, is the attestation verifier of forwarded
	// requests: PickPeer skips peers it failed to verify lately, and the
	// /cluster view shows its verdicts.
	Verifier *PeerVerifier
	// RefreshInterval is how often Status is read and changes are
	// published. Zero means 1s: a slot failure reaches the peers within
	// about a second plus the gossip delay.
	RefreshInterval time.Duration
	// LoadInterval is the least time between two publications that change
	// only the load figures. Zero means 5s: load moves all the time, and
	// each publication is a broadcast to the whole pool.
	LoadInterval time.Duration
	// RejoinInterval is how often Join is retried while needed. Zero means
	// 30s.
	RejoinInterval time.Duration
	// DeadRetention is how long a dead or departed node stays in the view.
	// Zero means 1h.
	DeadRetention time.Duration
	// Logger receives memberlist's log, at matching levels. Nil means
	// slog.Default().
	Logger *slog.Logger
	// Now is the clock of the view's timestamps; nil means time.Now.
	Now func() time.Time

	// tune adjusts memberlist's configuration: tests shorten its intervals.
	tune func(*memberlist.Config)
}

// LocalStatus is what a node publishes about itself besides its identity:
// GossipConfig.Status returns it.
type LocalStatus struct {
	// ImageVersion is the image or build the node runs; one that does not
	// fit the metadata (over 64 bytes, spaces) is published as "".
	ImageVersion string
	// Attestation is the state of the node's own measured boot.
	Attestation AttestationState
	// Slots is the health of each HSM slot, in pool order
	// (PoolSlotHealth(pool.Status())).
	Slots []SlotHealth
	// InFlight, MaxInFlight and RPS are the node's load (LoadMeter).
	InFlight, MaxInFlight, RPS uint32
}

// Defaults of GossipConfig.
const (
	defaultGossipRefresh   = time.Second
	defaultGossipLoad      = 5 * time.Second
	defaultGossipRejoin    = 30 * time.Second
	defaultGossipRetention = time.Hour
	// gossipUpdateTimeout bounds the wait for a metadata broadcast to leave.
	gossipUpdateTimeout = 2 * time.Second
)

// ErrGossipClosed is returned by operations on a Gossip that was shut down.
var ErrGossipClosed = errors.New("cluster: gossip is shut down")

// NewGossip starts this node's gossip: it listens on BindAddress, publishes
// its metadata, and tries the Join addresses (a failure there is logged,
// not returned: the node may be the first of its cluster). Stop it with
// Leave or Shutdown.
func NewGossip(cfg GossipConfig) (*Gossip, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.RefreshInterval = orDefaultDuration(cfg.RefreshInterval, defaultGossipRefresh)
	cfg.LoadInterval = orDefaultDuration(cfg.LoadInterval, defaultGossipLoad)
	cfg.RejoinInterval = orDefaultDuration(cfg.RejoinInterval, defaultGossipRejoin)
	cfg.DeadRetention = orDefaultDuration(cfg.DeadRetention, defaultGossipRetention)
	cfg.Join = slices.Clone(cfg.Join)
	keys := make([][]byte, len(cfg.Keys))
	for i, k := range cfg.Keys {
		keys[i] = bytes.Clone(k) // memberlist keeps what it is given
	}
	cfg.Keys = nil
	ring, err := memberlist.NewKeyring(keys[1:], keys[0])
	if err != nil {
		return nil, fmt.Errorf("cluster: gossip keyring: %w", err)
	}
	g := &Gossip{
		cfg: cfg, log: cfg.Logger.With("component", "gossip"), now: cfg.Now, keyring: ring,
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	g.view = &gossipView{self: cfg.NodeID, nodes: map[string]*gossipEntry{}, log: g.log}
	first := g.localMeta()
	b, err := first.MarshalBinary()
	if err != nil { // cfg.check vetted every field that can fail
		return nil, fmt.Errorf("cluster: %w", err)
	}
	g.meta.Store(&b)
	g.published, g.publishedAt = first, g.now()

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeID
	host, port, _ := net.SplitHostPort(cfg.BindAddress)
	mc.BindAddr = host
	mc.BindPort, _ = strconv.Atoi(port)
	mc.AdvertisePort = mc.BindPort
	if cfg.AdvertiseAddress != "" {
		host, port, _ := net.SplitHostPort(cfg.AdvertiseAddress)
		mc.AdvertiseAddr = host
		mc.AdvertisePort, _ = strconv.Atoi(port)
	}
	mc.Label = cfg.Label
	mc.Keyring = ring
	mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	d := &gossipDelegate{g: g}
	mc.Delegate, mc.Events, mc.Ping, mc.Conflict = d, d, d, d
	mc.Logger = log.New(&gossipLogWriter{log: g.log}, "", 0)
	if cfg.tune != nil {
		cfg.tune(mc)
	}
	g.probeInterval, g.probeTimeout = mc.ProbeInterval, mc.ProbeTimeout
	g.leavePropagate = max(time.Second, 5*mc.GossipInterval)
	if g.ml, err = memberlist.Create(mc); err != nil {
		return nil, fmt.Errorf("cluster: start gossip on %s: %w", cfg.BindAddress, err)
	}
	if len(cfg.Join) > 0 {
		if n, err := g.ml.Join(cfg.Join); err != nil {
			g.log.Warn("could not join the gossip pool yet; retrying in the background", "join", cfg.Join, "err", err, "every", cfg.RejoinInterval)
		} else {
			g.log.Info("joined the gossip pool", "contacted", n)
		}
	}
	go g.loop()
	return g, nil
}

func (c *GossipConfig) check() error {
	if err := metaCheckString(c.NodeID, 1, MaxNodeIDLen, metaIsIDByte); err != nil {
		return fmt.Errorf("cluster: node id %q: %v", c.NodeID, err)
	}
	if err := metaCheckString(c.Zone, 1, MaxZoneLen, metaIsIDByte); err != nil {
		return fmt.Errorf("cluster: zone %q: %v", c.Zone, err)
	}
	if err := metaCheckString(c.APIAddress, 1, MaxAPIAddressLen, metaIsAddressByte); err != nil {
		return fmt.Errorf("cluster: API address %q: %v", c.APIAddress, err)
	}
	if err := checkHostPort(c.APIAddress, false); err != nil {
		return fmt.Errorf("cluster: API address: %w", err)
	}
	if err := checkHostPort(c.BindAddress, true); err != nil {
		return fmt.Errorf("cluster: gossip bind address: %w", err)
	}
	if c.AdvertiseAddress != "" {
		if err := checkHostPort(c.AdvertiseAddress, false); err != nil {
			return fmt.Errorf("cluster: gossip advertise address: %w", err)
		}
	}
	if c.Label == "" || len(c.Label) > memberlist.LabelMaxSize {
		return fmt.Errorf("cluster: the gossip label must be 1 to %d bytes, got %d", memberlist.LabelMaxSize, len(c.Label))
	}
	if len(c.Keys) == 0 {
		return errors.New("cluster: the gossip keyring is empty: the pool is always encrypted (generate a key with GenerateGossipKey)")
	}
	for i, k := range c.Keys {
		if err := memberlist.ValidateKey(k); err != nil {
			return fmt.Errorf("cluster: gossip key %d: %d bytes, want 16, 24 or 32", i+1, len(k))
		}
	}
	if c.Status == nil {
		return errors.New("cluster: a Status function is required")
	}
	return nil
}

// checkHostPort checks host:port; port 0 is allowed only if zeroPort.
func checkHostPort(addr string, zeroPort bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: %v", addr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 || (p == 0 && !zeroPort) {
		return fmt.Errorf("%q: bad port %q", addr, port)
	}
	if host == "" && !zeroPort {
		return fmt.Errorf("%q: no host", addr)
	}
	return nil
}

func orDefaultDuration(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// NodeID is this node's id.
func (g *Gossip) NodeID() string { return g.cfg.NodeID }

// Zone is this node's zone.
func (g *Gossip) Zone() string { return g.cfg.Zone }

// GossipAddress is the pool address (host:port) this node advertises:
// what other nodes give to Join.
func (g *Gossip) GossipAddress() string {
	g.view.mu.Lock()
	defer g.view.mu.Unlock()
	if e := g.view.nodes[g.cfg.NodeID]; e != nil {
		return e.addr
	}
	return ""
}

// Join contacts the pool at addrs (host:port) and returns how many nodes
// answered. It fails when none did: unreachable, another key, another
// label.
func (g *Gossip) Join(addrs []string) (int, error) {
	if g.stopped.Load() {
		return 0, ErrGossipClosed
	}
	n, err := g.ml.Join(addrs)
	if err != nil {
		return n, fmt.Errorf("cluster: join the gossip pool at %v: %w", addrs, err)
	}
	return n, nil
}

// Leave takes this node out of the pool on purpose: it publishes that it
// is leaving (peers stop forwarding to it at once, and list it as "left",
// not "dead"), tells the pool, waits up to timeout for that to be sent and
// up to a second more for it to spread, then shuts the gossip down.
func (g *Gossip) Leave(timeout time.Duration) error {
	if g.stopped.Load() {
		return nil
	}
	// Announce it in the metadata first: peers then stop picking this
	// node at once, and tell the departure from a failure.
	g.leaving.Store(true)
	if err := g.publish(true); err != nil {
		g.log.Debug("announce leaving", "err", err)
	}
	err := g.ml.Leave(timeout)
	// Leave returns once the message went to one node (perhaps a dead
	// one); give the retransmissions time to reach the others, as serf's
	// LeavePropagateDelay does.
	time.Sleep(min(timeout, g.leavePropagate))
	return errors.Join(err, g.Shutdown())
}

// Shutdown stops gossiping at once, without telling the pool: peers find
// the node dead after their failure detection runs. Safe to call more than
// once.
func (g *Gossip) Shutdown() error {
	var err error
	g.stopOnce.Do(func() {
		g.stopped.Store(true)
		close(g.stop)
		<-g.done
		err = g.ml.Shutdown()
	})
	return err
}

// Refresh reads the local status now and publishes it if it changed (load
// figures included), without waiting for the next RefreshInterval: call it
// when something important changes, a slot failing say.
func (g *Gossip) Refresh() error {
	if g.stopped.Load() {
		return ErrGossipClosed
	}
	return g.publish(true)
}

// Members returns every node in this node's view, itself included, sorted
// by zone and id.
func (g *Gossip) Members() []NodeStatus {
	return g.view.snapshot(g.now(), g.suspectAfter, g.cfg.DeadRetention)
}

// suspectAfter is how long this node may go without hearing from an alive
// peer before calling it suspect: a few rounds of its probes, which visit
// every other node once per round.
func (g *Gossip) suspectAfter(others int) time.Duration {
	return time.Duration(others+3)*g.probeInterval + g.probeTimeout
}

func (g *Gossip) loop() {
	defer close(g.done)
	tick := time.NewTicker(g.cfg.RefreshInterval)
	defer tick.Stop()
	rejoin := time.NewTicker(g.cfg.RejoinInterval)
	defer rejoin.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-tick.C:
			if err := g.publish(false); err != nil {
				g.log.Debug("publish metadata", "err", err)
			}
		case <-rejoin.C:
			g.rejoin()
		}
	}
}

// rejoin tries the Join addresses again while this node is alone or a
// node of its view is dead or suspect.
func (g *Gossip) rejoin() {
	if len(g.cfg.Join) == 0 {
		return
	}
	need, alone := false, true
	for _, m := range g.Members() {
		if m.Self {
			continue
		}
		switch m.State {
		case MemberAlive:
			alone = false
		case MemberDead, MemberSuspect:
			need = true
		}
	}
	if !need && !alone {
		return
	}
	if n, err := g.ml.Join(g.cfg.Join); err != nil {
		g.log.Debug("rejoin the gossip pool", "join", g.cfg.Join, "err", err)
	} else {
		g.log.Debug("rejoined the gossip pool", "contacted", n)
	}
}

// localMeta builds this node's metadata from its status.
func (g *Gossip) localMeta() *NodeMeta {
	st := g.cfg.Status()
	m := &NodeMeta{
		NodeID: g.cfg.NodeID, Zone: g.cfg.Zone, APIAddress: g.cfg.APIAddress,
		ImageVersion: st.ImageVersion, Attestation: st.Attestation, Slots: SummarizeSlots(st.Slots),
		InFlight: st.InFlight, MaxInFlight: st.MaxInFlight, RPS: st.RPS, Leaving: g.leaving.Load(),
	}
	if err := metaCheckString(m.ImageVersion, 0, MaxImageVersionLen, metaIsVersionByte); err != nil {
		if !g.badImage.Swap(true) {
			g.log.Warn("the image version does not fit the gossiped metadata; publishing none", "err", err)
		}
		m.ImageVersion = ""
	}
	if m.Attestation > AttestationFailed {
		m.Attestation = AttestationFailed
	}
	return m
}

// publish publishes the local metadata if it changed: at once when
// anything but the load changed (or force), else once LoadInterval has
// passed since the last publication.
func (g *Gossip) publish(force bool) error {
	g.publishMu.Lock()
	defer g.publishMu.Unlock()
	m := g.localMeta()
	last := g.published
	sameButLoad := func() bool {
		a, b := *m, *last
		a.InFlight, a.MaxInFlight, a.RPS = 0, 0, 0
		b.InFlight, b.MaxInFlight, b.RPS = 0, 0, 0
		return a.ImageVersion == b.ImageVersion && a.Attestation == b.Attestation && a.Leaving == b.Leaving &&
			a.Slots.Healthy == b.Slots.Healthy && a.Slots.Degraded == b.Slots.Degraded && a.Slots.Failed == b.Slots.Failed &&
			slices.Equal(a.Slots.Listed, b.Slots.Listed)
	}
	now := g.now()
	switch {
	case !sameButLoad():
	case m.InFlight == last.InFlight && m.MaxInFlight == last.MaxInFlight && m.RPS == last.RPS:
		return nil
	case !force && now.Sub(g.publishedAt) < g.cfg.LoadInterval:
		return nil
	}
	b, err := m.MarshalBinary()
	if err != nil {
		return err
	}
	g.meta.Store(&b)
	g.published, g.publishedAt = m, now
	if err := g.ml.UpdateNode(gossipUpdateTimeout); err != nil {
		return fmt.Errorf("cluster: publish metadata: %w", err)
	}
	return nil
}

// gossipDelegate is memberlist's view of a Gossip: its Delegate (the
// metadata), EventDelegate (the view), PingDelegate (contact times) and
// ConflictDelegate.
type gossipDelegate struct{ g *Gossip }

// NodeMeta returns the metadata to publish. MarshalBinary never exceeds
// MaxMetaSize, under memberlist's limit; memberlist panics on more, so
// this checks anyway.
func (d *gossipDelegate) NodeMeta(limit int) []byte {
	b := *d.g.meta.Load()
	if len(b) > limit {
		d.g.log.Error("node metadata exceeds memberlist's limit; publishing none", "size", len(b), "limit", limit)
		return nil
	}
	return bytes.Clone(b)
}

func (d *gossipDelegate) NotifyMsg([]byte)                           {}
func (d *gossipDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *gossipDelegate) LocalState(join bool) []byte                { return nil }
func (d *gossipDelegate) MergeRemoteState(buf []byte, join bool)     {}

// The event methods run under memberlist's node lock: they only copy what
// they need into the view.
func (d *gossipDelegate) NotifyJoin(n *memberlist.Node) { d.g.view.update(n, MemberAlive, d.g.now()) }
func (d *gossipDelegate) NotifyUpdate(n *memberlist.Node) {
	d.g.view.update(n, MemberAlive, d.g.now())
}

// NotifyLeave: memberlist tells a departure from a failure only in a field
// it does not pass on (Node.State is not kept), so the view reads the
// node's last metadata: a node that leaves announces it there first.
func (d *gossipDelegate) NotifyLeave(n *memberlist.Node) { d.g.view.update(n, MemberDead, d.g.now()) }

func (d *gossipDelegate) AckPayload() []byte { return nil }
func (d *gossipDelegate) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, _ []byte) {
	d.g.view.contact(other.Name, d.g.now(), rtt)
}

func (d *gossipDelegate) NotifyConflict(existing, other *memberlist.Node) {
	d.g.log.Error("two nodes use the same node id: the second is refused; give each node its own id",
		"node", existing.Name, "address", existing.Address(), "other_address", other.Address())
}

// gossipLogWriter passes memberlist's log lines ("[WARN] memberlist: …") to
// slog at the matching level.
type gossipLogWriter struct{ log *slog.Logger }

func (w *gossipLogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelInfo
	for _, l := range []struct {
		prefix string
		level  slog.Level
	}{{"[DEBUG]", slog.LevelDebug}, {"[INFO]", slog.LevelInfo}, {"[WARN]", slog.LevelWarn}, {"[ERR]", slog.LevelError}} {
		if rest, ok := strings.CutPrefix(line, l.prefix); ok {
			line, level = strings.TrimSpace(rest), l.level
			break
		}
	}
	w.log.Log(context.Background(), level, line)
	return len(p), nil
}

var _ io.Writer = (*gossipLogWriter)(nil)
