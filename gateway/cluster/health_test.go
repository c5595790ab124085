package cluster

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// fakeGossip is a Gossip whose view holds the given nodes, all alive and
// just heard from, without a memberlist pool: for the rules that read the
// view.
func fakeGossip(t *testing.T, requireAttestation bool, self *NodeMeta, peers ...*NodeMeta) *Gossip {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	g := &Gossip{
		cfg: GossipConfig{NodeID: self.NodeID, Zone: self.Zone, APIAddress: self.APIAddress, RequireAttestation: requireAttestation, DeadRetention: time.Hour},
		log: log, now: time.Now, probeInterval: time.Second, probeTimeout: time.Second,
	}
	g.view = &gossipView{self: self.NodeID, nodes: map[string]*gossipEntry{}, log: log}
	for i, m := range append([]*NodeMeta{self}, peers...) {
		raw, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		g.view.update(&memberlist.Node{Name: m.NodeID, Addr: net.IPv4(127, 0, 0, 1), Port: uint16(7000 + i), Meta: raw}, MemberAlive, time.Now())
	}
	return g
}

func peerMeta(id, zone string, healthy int, att AttestationState) *NodeMeta {
	slots := make([]SlotHealth, 0, healthy+1)
	for range healthy {
		slots = append(slots, SlotHealthy)
	}
	slots = append(slots, SlotFailed)
	return &NodeMeta{NodeID: id, Zone: zone, APIAddress: "127.0.0.1:1", Attestation: att, Slots: SummarizeSlots(slots), MaxInFlight: 100}
}

func ids(ns []NodeStatus) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.ID)
	}
	return out
}

func TestPickPeers(t *testing.T) {
	self := peerMeta("a1", "a", 1, AttestationMeasured)
	t.Run("same zone first", func(t *testing.T) {
		g := fakeGossip(t, false, self, peerMeta("b1", "b", 1, AttestationOff), peerMeta("a2", "a", 1, AttestationOff), peerMeta("c1", "c", 1, AttestationOff))
		for range 50 {
			got := ids(g.PickPeers(true))
			if len(got) != 3 || got[0] != "a2" {
				t.Fatalf("PickPeers = %v, want a2 first then b1 and c1", got)
			}
		}
		if p, ok := g.PickPeer(true); !ok || p.ID != "a2" {
			t.Errorf("PickPeer = %v %v", p.ID, ok)
		}
		if got := ids(g.PickPeers(false)); len(got) != 4 || (got[0] != "a1" && got[0] != "a2") {
			t.Errorf("PickPeers(false) = %v, want this node among the zone's first", got)
		}
	})
	t.Run("skips a peer without a healthy slot", func(t *testing.T) {
		g := fakeGossip(t, false, self, peerMeta("a2", "a", 0, AttestationOff), peerMeta("b1", "b", 2, AttestationOff))
		if got := ids(g.PickPeers(true)); len(got) != 1 || got[0] != "b1" {
			t.Errorf("PickPeers = %v, want [b1]", got)
		}
	})
	t.Run("none", func(t *testing.T) {
		g := fakeGossip(t, false, self, peerMeta("a2", "a", 0, AttestationOff))
		if p, ok := g.PickPeer(true); ok {
			t.Errorf("PickPeer = %s", p.ID)
		}
	})
	t.Run("less loaded first", func(t *testing.T) {
		busy, idle := peerMeta("a2", "a", 1, AttestationOff), peerMeta("a3", "a", 1, AttestationOff)
		busy.InFlight, idle.InFlight = 95, 5
		g := fakeGossip(t, false, self, busy, idle)
		for range 20 {
			if got := ids(g.PickPeers(true)); len(got) != 2 || got[0] != "a3" {
				t.Fatalf("PickPeers = %v, want a3 (5%% busy) before a2 (95%%)", got)
			}
		}
	})
	t.Run("spreads among equals", func(t *testing.T) {
		g := fakeGossip(t, false, self, peerMeta("a2", "a", 1, AttestationOff), peerMeta("a3", "a", 1, AttestationOff))
		seen := map[string]bool{}
		for range 200 {
			p, _ := g.PickPeer(true)
			seen[p.ID] = true
		}
		if !seen["a2"] || !seen["a3"] {
			t.Errorf("200 picks among two equal peers chose only %v", seen)
		}
	})
	t.Run("skips suspect, dead, leaving and invalid", func(t *testing.T) {
		leaving := peerMeta("a5", "a", 1, AttestationOff)
		leaving.Leaving = true
		g := fakeGossip(t, false, self, peerMeta("a2", "a", 1, AttestationOff), peerMeta("a3", "a", 1, AttestationOff), peerMeta("a4", "a", 1, AttestationOff), leaving, peerMeta("b1", "b", 1, AttestationOff))
		g.view.nodes["a2"].updated = time.Now().Add(-time.Minute) // silent: suspect
		g.view.nodes["a3"].state = MemberDead
		g.view.nodes["a4"].meta, g.view.nodes["a4"].metaErr = nil, "invalid metadata: test"
		if got := ids(g.PickPeers(true)); len(got) != 1 || got[0] != "b1" {
			t.Errorf("PickPeers = %v, want [b1]", got)
		}
		states := map[string]MemberState{}
		for _, m := range g.Members() {
			states[m.ID] = m.State
		}
		if states["a2"] != MemberSuspect || states["a3"] != MemberDead || states["a1"] != MemberAlive {
			t.Errorf("states %v", states)
		}
		// A probe answered lately keeps a quiet node alive.
		g.view.contact("a2", time.Now(), time.Millisecond)
		if got := ids(g.PickPeers(true)); len(got) != 2 || got[0] != "a2" {
			t.Errorf("after a2 answered a probe: PickPeers = %v, want a2 first", got)
		}
	})
	t.Run("dead nodes are forgotten after the retention", func(t *testing.T) {
		g := fakeGossip(t, false, self, peerMeta("a2", "a", 1, AttestationOff))
		g.view.nodes["a2"].state = MemberDead
		g.view.nodes["a2"].updated = time.Now().Add(-2 * time.Hour)
		if len(g.Members()) != 1 {
			t.Errorf("members %v, want only a1", ids(g.Members()))
		}
	})
	t.Run("attestation", func(t *testing.T) {
		peers := []*NodeMeta{peerMeta("a2", "a", 1, AttestationOff), peerMeta("a3", "a", 1, AttestationFailed), peerMeta("b1", "b", 1, AttestationMeasured), peerMeta("b2", "b", 1, AttestationMeasured)}
		// A failed attestation is never picked; off is picked only when
		// attestation is not required.
		if got := ids(fakeGossip(t, false, self, peers...).PickPeers(true)); len(got) != 3 || got[0] != "a2" {
			t.Errorf("attestation not required: PickPeers = %v, want a2, then b1 and b2", got)
		}
		g := fakeGossip(t, true, self, peers...)
		if got := ids(g.PickPeers(true)); len(got) != 2 || got[0] == "a2" || got[1] == "a2" {
			t.Errorf("attestation required: PickPeers = %v, want b1 and b2", got)
		}
		// A peer the verifier failed to verify lately is skipped, until
		// the failure expires.
		v, err := NewPeerVerifier(PeerVerifierConfig{TLS: clientTLS(t), Enrollment: noEnrollment, RetryAfter: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		g.cfg.Verifier = v
		v.verdicts["b1"] = &PeerVerdict{NodeID: "b1", Address: "127.0.0.1:1", At: time.Now(), Err: errors.New("test")}
		if got := ids(g.PickPeers(true)); len(got) != 1 || got[0] != "b2" {
			t.Errorf("b1 failed verification: PickPeers = %v, want [b2]", got)
		}
		st := g.Status()
		for _, n := range st.Nodes {
			if n.ID == "b1" && (n.Forwardable || n.Attestation != "unverified: test") {
				t.Errorf("/cluster b1: %+v", n)
			}
		}
		v.verdicts["b1"].At = time.Now().Add(-2 * time.Minute)
		if got := ids(g.PickPeers(true)); len(got) != 2 {
			t.Errorf("b1's failure expired: PickPeers = %v, want b1 and b2", got)
		}
		v.verdicts["b2"] = &PeerVerdict{NodeID: "b2", Address: "127.0.0.1:1", At: time.Now()}
		for _, n := range g.Status().Nodes {
			if n.ID == "b2" && n.Attestation != "verified" {
				t.Errorf("/cluster b2: attestation %q, want verified", n.Attestation)
			}
		}
	})
}

func TestLoadMeter(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).Unix())
	clock := func() time.Time { return time.Unix(now.Load(), 0) }
	l := NewLoadMeter(64, clock)
	release := make(chan struct{})
	started := make(chan struct{})
	h := l.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			<-release
		}
	}))
	go h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/slow", nil))
	<-started
	if in, max, _ := l.Load(); in != 1 || max != 64 {
		t.Errorf("in flight %d of %d, want 1 of 64", in, max)
	}
	close(release)
	// 50 requests in each of 10 seconds, then the window moves on.
	for s := range 10 {
		for range 50 {
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
		}
		if s < 9 {
			now.Add(1)
		}
	}
	now.Add(1)
	waitFor(t, "the slow request to end", func() bool { in, _, _ := l.Load(); return in == 0 })
	// The slow request finished in the first second too: 501 requests in
	// 10 seconds.
	if _, _, rps := l.Load(); rps != 50 {
		t.Errorf("rps %d, want 50", rps)
	}
	now.Add(5)
	if _, _, rps := l.Load(); rps != 25 {
		t.Errorf("5s later: rps %d, want 25", rps)
	}
	now.Add(60)
	if _, _, rps := l.Load(); rps != 0 {
		t.Errorf("a minute later: rps %d, want 0", rps)
	}
}
