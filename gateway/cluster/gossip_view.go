package cluster

import (
	"bytes"
	"cmp"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// MemberState is a node's membership state in this node's view.
type MemberState uint8

const (
	// MemberAlive: the node is a member and answers.
	MemberAlive MemberState = 1 + iota
	// MemberSuspect: the pool still lists the node, but this node has not
	// heard from it (a metadata update or an answered probe of its own)
	// for a few probe rounds: it is failing, or the link to it is. (The
	// pool's own suspicion is short-lived and memberlist does not report
	// it; this is this node's reading of the same symptom.)
	MemberSuspect
	// MemberDead: the pool declared the node failed.
	MemberDead
	// MemberLeft: the node left the pool on purpose (it announced it in
	// its metadata before it went).
	MemberLeft
)

func (s MemberState) String() string {
	switch s {
	case MemberAlive:
		return "alive"
	case MemberSuspect:
		return "suspect"
	case MemberDead:
		return "dead"
	case MemberLeft:
		return "left"
	}
	return fmt.Sprintf("MemberState(%d)", uint8(s))
}

// MarshalText writes the state's name, for JSON.
func (s MemberState) MarshalText() ([]byte, error) {
	if s < MemberAlive || s > MemberLeft {
		return nil, fmt.Errorf("cluster: unknown member state %d", uint8(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText reads a state's name.
func (s *MemberState) UnmarshalText(b []byte) error {
	for m := MemberAlive; m <= MemberLeft; m++ {
		if m.String() == string(b) {
			*s = m
			return nil
		}
	}
	return fmt.Errorf("cluster: unknown member state %q", b)
}

// NodeStatus is one node as this node's gossip view sees it.
type NodeStatus struct {
	// ID is the node's name in the pool.
	ID string
	// Self is true for this node.
	Self bool
	// GossipAddress is the node's pool address, host:port.
	GossipAddress string
	// State is its membership state.
	State MemberState
	// Meta is its metadata; nil when it published none that decodes
	// (MetaError says why).
	Meta *NodeMeta
	// MetaError is why the node's metadata was refused: "" when Meta is
	// set. A node with invalid metadata is never a forwarding target.
	MetaError string
	// Updated is when this node last learnt something of it: a join, a
	// metadata change, a departure.
	Updated time.Time
	// LastContact is when it last answered a probe of this node, and RTT
	// how long that probe took; zero when it never did (and for Self).
	LastContact time.Time
	RTT         time.Duration
}

// Zone is the node's zone, "" when its metadata is invalid.
func (n NodeStatus) Zone() string {
	if n.Meta == nil {
		return ""
	}
	return n.Meta.Zone
}

// gossipView is the nodes this node knows, fed by memberlist's events.
type gossipView struct {
	mu    sync.Mutex
	self  string
	log   *slog.Logger
	nodes map[string]*gossipEntry
}

type gossipEntry struct {
	id      string
	addr    string
	state   MemberState // alive, dead or left: suspect is derived
	raw     []byte      // the metadata as received
	decoded bool        // raw was decoded into meta or metaErr
	meta    *NodeMeta
	metaErr string
	updated time.Time
	contact time.Time
	rtt     time.Duration
}

// update records a join, metadata update or departure. It runs under
// memberlist's lock, so it copies n's fields and never calls back.
func (v *gossipView) update(n *memberlist.Node, st MemberState, now time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	e := v.nodes[n.Name]
	if e == nil {
		e = &gossipEntry{id: n.Name}
		v.nodes[n.Name] = e
	}
	e.addr, e.state, e.updated = n.Address(), st, now
	if !e.decoded || !bytes.Equal(e.raw, n.Meta) {
		e.raw, e.decoded = bytes.Clone(n.Meta), true
		e.meta, e.metaErr = decodePeerMeta(n.Name, e.raw)
		if e.metaErr != "" {
			v.log.Warn("a node published metadata this node can't accept: it is never a forwarding target", "node", n.Name, "address", e.addr, "err", e.metaErr)
		}
	}
	if st == MemberDead && e.meta != nil && e.meta.Leaving {
		e.state = MemberLeft // it said it was leaving
	}
}

// decodePeerMeta decodes a node's metadata and checks it names the node.
func decodePeerMeta(name string, raw []byte) (*NodeMeta, string) {
	if len(raw) == 0 {
		return nil, "invalid metadata: none published"
	}
	m, err := DecodeNodeMeta(raw)
	if err != nil {
		return nil, "invalid metadata: " + err.Error()
	}
	if m.NodeID != name {
		return nil, fmt.Sprintf("invalid metadata: it names node %q, but the node's pool name is %q", m.NodeID, name)
	}
	return m, ""
}

// contact records an answered probe.
func (v *gossipView) contact(name string, now time.Time, rtt time.Duration) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if e := v.nodes[name]; e != nil {
		e.contact, e.rtt = now, rtt
	}
}

// snapshot returns the view at now: suspect derived from each alive
// peer's last news, departed nodes older than retention dropped.
func (v *gossipView) snapshot(now time.Time, suspectAfter func(others int) time.Duration, retention time.Duration) []NodeStatus {
	v.mu.Lock()
	defer v.mu.Unlock()
	others := 0
	for id, e := range v.nodes {
		switch {
		case e.state != MemberAlive && now.Sub(e.updated) > retention:
			delete(v.nodes, id)
		case e.state == MemberAlive && id != v.self:
			others++
		}
	}
	limit := suspectAfter(others)
	out := make([]NodeStatus, 0, len(v.nodes))
	for id, e := range v.nodes {
		s := NodeStatus{
			ID: id, Self: id == v.self, GossipAddress: e.addr, State: e.state, Meta: e.meta, MetaError: e.metaErr,
			Updated: e.updated, LastContact: e.contact, RTT: e.rtt,
		}
		if e.meta != nil {
			m := *e.meta
			m.Slots.Listed = slices.Clone(m.Slots.Listed)
			s.Meta = &m
		}
		if !s.Self && s.State == MemberAlive && now.Sub(latest(e.updated, e.contact)) > limit {
			s.State = MemberSuspect
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b NodeStatus) int {
		return cmp.Or(cmp.Compare(a.Zone(), b.Zone()), cmp.Compare(a.ID, b.ID))
	})
	return out
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
