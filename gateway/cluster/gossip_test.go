package cluster

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// The gossip tests run real memberlist pools on loopback with short
// intervals; every expectation is polled with a generous deadline.

const testLabel = "hsmgate-test-cluster"

// testTune shortens memberlist's intervals for loopback tests.
func testTune(mc *memberlist.Config) {
	mc.ProbeInterval = 300 * time.Millisecond
	mc.ProbeTimeout = 250 * time.Millisecond // generous: loaded machines, -race
	mc.GossipInterval = 50 * time.Millisecond
	mc.PushPullInterval = time.Second
	mc.TCPTimeout = 2 * time.Second
	mc.SuspicionMult = 3
	mc.GossipToTheDeadTime = 2 * time.Second
	mc.IndirectChecks = 1
}

func testKey(t testing.TB) []byte {
	t.Helper()
	k, err := GenerateGossipKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// testNode is a Gossip whose published status a test sets.
type testNode struct {
	*Gossip
	status atomic.Pointer[LocalStatus]
}

func (n *testNode) setStatus(s LocalStatus) { n.status.Store(&s) }

func healthyStatus() LocalStatus {
	return LocalStatus{ImageVersion: "test-1", Slots: []SlotHealth{SlotHealthy, SlotHealthy}, MaxInFlight: 100}
}

// startNode starts a gossip node on a free loopback port; cleanup shuts it
// down.
func startNode(t *testing.T, id, zone string, keys [][]byte, edit ...func(*GossipConfig)) *testNode {
	t.Helper()
	n := &testNode{}
	n.setStatus(healthyStatus())
	cfg := GossipConfig{
		NodeID: id, Zone: zone, APIAddress: "127.0.0.1:" + fmt.Sprint(8000+len(id)), BindAddress: "127.0.0.1:0",
		Label: testLabel, Keys: keys, Status: func() LocalStatus { return *n.status.Load() },
		RefreshInterval: 100 * time.Millisecond, LoadInterval: 200 * time.Millisecond, RejoinInterval: time.Second,
		Logger: slog.New(slog.DiscardHandler), tune: testTune,
	}
	for _, e := range edit {
		e(&cfg)
	}
	g, err := NewGossip(cfg)
	if err != nil {
		t.Fatalf("start %s: %v", id, err)
	}
	t.Cleanup(func() { g.Shutdown() })
	n.Gossip = g
	return n
}

// waitFor polls cond until it holds or 30s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func member(g *Gossip, id string) (NodeStatus, bool) {
	i := slices.IndexFunc(g.Members(), func(n NodeStatus) bool { return n.ID == id })
	if i < 0 {
		return NodeStatus{}, false
	}
	return g.Members()[i], true
}

// sees reports whether g sees every id alive with valid metadata.
func sees(g *Gossip, ids ...string) bool {
	for _, id := range ids {
		n, ok := member(g, id)
		if !ok || n.State != MemberAlive || n.Meta == nil {
			return false
		}
	}
	return true
}

func join(t *testing.T, n *testNode, to *testNode) {
	t.Helper()
	if _, err := n.Join([]string{to.GossipAddress()}); err != nil {
		t.Fatalf("%s joins %s: %v", n.NodeID(), to.NodeID(), err)
	}
}

// Three nodes join and see each other with their metadata; a change of
// metadata reaches the others; PickPeer prefers the same zone and skips
// peers without a healthy slot; a killed node turns suspect then dead, a
// departed one "left"; /cluster shows all of it.
func TestGossipMembership(t *testing.T) {
	key := [][]byte{testKey(t)}
	a := startNode(t, "gw-a", "zone-1", key)
	b := startNode(t, "gw-b", "zone-1", key)
	c := startNode(t, "gw-c", "zone-2", key)
	join(t, b, a)
	join(t, c, a)
	for _, n := range []*testNode{a, b, c} {
		waitFor(t, n.NodeID()+" to see all three", func() bool { return sees(n.Gossip, "gw-a", "gw-b", "gw-c") })
	}
	m, _ := member(b.Gossip, "gw-c")
	if m.Zone() != "zone-2" || m.Meta.APIAddress != "127.0.0.1:8004" || m.Meta.ImageVersion != "test-1" || m.Meta.Slots.Healthy != 2 || m.GossipAddress != c.GossipAddress() {
		t.Errorf("b sees c as %+v (meta %+v)", m, m.Meta)
	}
	self, _ := member(a.Gossip, "gw-a")
	if !self.Self {
		t.Error("a's own entry is not marked Self")
	}

	// Same zone first.
	waitFor(t, "a to pick gw-b (same zone) 20 times in a row", func() bool {
		for range 20 {
			if p, ok := a.PickPeer(true); !ok || p.ID != "gw-b" {
				return false
			}
		}
		return true
	})
	if p, ok := a.PickPeer(false); !ok || (p.ID != "gw-a" && p.ID != "gw-b") {
		t.Errorf("PickPeer(false) = %v %v, want a zone-1 node", p.ID, ok)
	}

	// b's slots fail: the others learn it, and a forwards to c instead.
	b.setStatus(LocalStatus{ImageVersion: "test-1", Slots: []SlotHealth{SlotDegraded, SlotFailed}, MaxInFlight: 100})
	if err := b.Refresh(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a to see b's failed slots", func() bool {
		m, ok := member(a.Gossip, "gw-b")
		return ok && m.Meta != nil && m.Meta.Slots.Healthy == 0 && m.Meta.Slots.Failed == 1 && m.Meta.Slots.Degraded == 1
	})
	if p, ok := a.PickPeer(true); !ok || p.ID != "gw-c" {
		t.Errorf("a picks %v %v, want gw-c: b has no healthy slot", p.ID, ok)
	}
	// Load alone is published too, within LoadInterval.
	c.setStatus(LocalStatus{ImageVersion: "test-1", Slots: []SlotHealth{SlotHealthy}, InFlight: 42, MaxInFlight: 100, RPS: 7})
	waitFor(t, "b to see c's load", func() bool {
		m, ok := member(b.Gossip, "gw-c")
		return ok && m.Meta != nil && m.Meta.InFlight == 42 && m.Meta.RPS == 7
	})

	// /cluster on a.
	srv := httptest.NewServer(StatusHandler(a.Gossip))
	defer srv.Close()
	var last GossipStatus
	waitFor(t, "/cluster on a to show the three nodes", func() bool {
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st GossipStatus
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			t.Fatal(err)
		}
		last = st
		if st.Self != "gw-a" || st.Zone != "zone-1" || len(st.Nodes) != 3 {
			return false
		}
		for _, n := range st.Nodes {
			var ok bool
			switch n.ID {
			case "gw-a":
				ok = n.Self && !n.Forwardable && n.NotForwardable == "this node"
			case "gw-b":
				ok = !n.Forwardable && n.NotForwardable == "no healthy HSM slot" && n.Metadata.Slots.Failed == 1
			case "gw-c":
				ok = n.Forwardable && n.Zone == "zone-2" && n.Attestation == "off" && n.State == MemberAlive && n.LastContact != nil
			}
			if !ok {
				return false
			}
		}
		return true
	})
	t.Logf("/cluster: %+v", last)
	if resp, err := http.Post(srv.URL, "text/plain", nil); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /cluster: %v %v", resp.StatusCode, err)
	}

	// c is killed (no leave): a sees it suspect or dead, and stops picking it.
	if err := c.Shutdown(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a to see c fail", func() bool {
		m, ok := member(a.Gossip, "gw-c")
		return ok && (m.State == MemberSuspect || m.State == MemberDead)
	})
	if p, ok := a.PickPeer(true); ok {
		t.Errorf("a picks %s: b has no healthy slot and c failed", p.ID)
	}
	waitFor(t, "the pool to declare c dead", func() bool {
		m, ok := member(a.Gossip, "gw-c")
		return ok && m.State == MemberDead
	})
	if _, err := c.Join([]string{a.GossipAddress()}); !errors.Is(err, ErrGossipClosed) {
		t.Errorf("Join after Shutdown: %v, want ErrGossipClosed", err)
	}

	// b leaves on purpose.
	if err := b.Leave(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a to see b leave", func() bool {
		m, ok := member(a.Gossip, "gw-b")
		return ok && m.State == MemberLeft
	})
}

// A node with another gossip key, or another label, can't join; with the
// right ones it can.
func TestGossipRefusesWrongKeyOrLabel(t *testing.T) {
	key := testKey(t)
	a := startNode(t, "gw-a", "zone-1", [][]byte{key})
	for name, tc := range map[string]struct {
		keys  [][]byte
		label string
	}{
		"wrong key":               {[][]byte{testKey(t)}, testLabel},
		"wrong label":             {[][]byte{key}, "another-cluster"},
		"wrong key, right second": {[][]byte{testKey(t), key}, testLabel},
	} {
		t.Run(name, func(t *testing.T) {
			x := startNode(t, "gw-x", "zone-1", tc.keys, func(c *GossipConfig) { c.Label = tc.label })
			if _, err := x.Join([]string{a.GossipAddress()}); err == nil {
				t.Fatal("joined")
			}
			if _, ok := member(a.Gossip, "gw-x"); ok {
				t.Error("a lists the refused node")
			}
			if len(x.Members()) != 1 {
				t.Errorf("the refused node lists %d members", len(x.Members()))
			}
		})
	}
	// Positive twin: the right key and label.
	y := startNode(t, "gw-y", "zone-2", [][]byte{key})
	join(t, y, a)
	waitFor(t, "a to see gw-y", func() bool { return sees(a.Gossip, "gw-y") })
}

// Key rotation keeps the pool together: install the new key everywhere,
// make it primary everywhere, remove the old one everywhere.
func TestGossipKeyRotation(t *testing.T) {
	k1, k2 := testKey(t), testKey(t)
	file := filepath.Join(t.TempDir(), "gossip.keys")
	if err := WriteGossipKeyring(file, [][]byte{k1}); err != nil {
		t.Fatal(err)
	}
	a := startNode(t, "gw-a", "zone-1", [][]byte{k1}, func(c *GossipConfig) { c.KeyringFile = file })
	b := startNode(t, "gw-b", "zone-2", [][]byte{k1})
	c := startNode(t, "gw-c", "zone-3", [][]byte{k1})
	join(t, b, a)
	join(t, c, a)
	all := []*testNode{a, b, c}
	for _, n := range all {
		waitFor(t, n.NodeID()+" to see all three", func() bool { return sees(n.Gossip, "gw-a", "gw-b", "gw-c") })
	}
	if err := a.RemoveKey(k1); err == nil {
		t.Error("removed the primary key")
	}
	if err := a.UseKey(k2); err == nil {
		t.Error("used a key not installed")
	}
	for _, n := range all {
		if err := n.InstallKey(k2); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range all {
		if err := n.UseKey(k2); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range all {
		if err := n.RemoveKey(k1); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := a.GossipKeys(), []string{GossipKeyFingerprint(k2)}; !slices.Equal(got, want) {
		t.Errorf("keys %v, want %v", got, want)
	}
	if keys, err := LoadGossipKeyring(file); err != nil || len(keys) != 1 || !bytes.Equal(keys[0], k2) {
		t.Errorf("the keyring file after rotation: %d keys, %v", len(keys), err)
	}
	// Still one pool: a change on c reaches a and b, under the new key.
	c.setStatus(LocalStatus{ImageVersion: "test-2", Slots: []SlotHealth{SlotHealthy}, MaxInFlight: 100})
	for _, n := range []*testNode{a, b} {
		waitFor(t, n.NodeID()+" to see c's new image", func() bool {
			m, ok := member(n.Gossip, "gw-c")
			return ok && m.State == MemberAlive && m.Meta != nil && m.Meta.ImageVersion == "test-2"
		})
	}
	// The old key no longer gets in; the new one does.
	old := startNode(t, "gw-old", "zone-1", [][]byte{k1})
	if _, err := old.Join([]string{a.GossipAddress()}); err == nil {
		t.Error("a node with the removed key joined")
	}
	newer := startNode(t, "gw-new", "zone-1", [][]byte{k2})
	join(t, newer, b)
	waitFor(t, "a to see gw-new", func() bool { return sees(a.Gossip, "gw-new") })
}

// Removing a key that is neither primary nor last keeps the others.
func TestGossipRemoveMiddleKey(t *testing.T) {
	k1, k2, k3 := testKey(t), testKey(t), testKey(t)
	a := startNode(t, "gw-a", "zone-1", [][]byte{k1, k2, k3})
	if err := a.RemoveKey(k2); err != nil {
		t.Fatal(err)
	}
	if got, want := a.GossipKeys(), []string{GossipKeyFingerprint(k1), GossipKeyFingerprint(k3)}; !slices.Equal(got, want) {
		t.Errorf("keys %v, want %v", got, want)
	}
	if err := a.RemoveKey(k2); err == nil {
		t.Error("removed a key twice")
	}
}

// rawMeta is a memberlist delegate publishing whatever bytes a test gives.
type rawMeta struct{ b []byte }

func (r *rawMeta) NodeMeta(limit int) []byte                  { return r.b }
func (r *rawMeta) NotifyMsg([]byte)                           {}
func (r *rawMeta) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (r *rawMeta) LocalState(join bool) []byte                { return nil }
func (r *rawMeta) MergeRemoteState(buf []byte, join bool)     {}

// A peer whose metadata is malformed, oversized, missing or names another
// node is listed with "invalid metadata" and never picked; nothing panics.
func TestGossipRejectsBadPeerMetadata(t *testing.T) {
	key := testKey(t)
	a := startNode(t, "gw-a", "zone-1", [][]byte{key})
	impostor, err := (&NodeMeta{NodeID: "gw-a", Zone: "zone-1", APIAddress: "127.0.0.1:1", Slots: SummarizeSlots([]SlotHealth{SlotHealthy})}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	garbage := make([]byte, 200)
	rand.Read(garbage)
	garbage[0] = MetaVersion
	oversized := bytes.Repeat([]byte{1}, memberlist.MetaMaxSize)
	peers := map[string]struct {
		meta []byte
		want string
	}{
		"raw-garbage":   {garbage, "invalid metadata: malformed node metadata"},
		"raw-oversized": {oversized, "invalid metadata: malformed node metadata: metadata at byte 0: 512 bytes"},
		"raw-none":      {nil, "invalid metadata: none published"},
		"raw-impostor":  {impostor, `invalid metadata: it names node "gw-a"`},
		"raw-version-9": {append([]byte{9}, impostor[1:]...), "invalid metadata: malformed node metadata: version"},
	}
	for name, p := range peers {
		mc := memberlist.DefaultLANConfig()
		testTune(mc)
		mc.Name, mc.BindAddr, mc.BindPort, mc.AdvertisePort = name, "127.0.0.1", 0, 0
		mc.Label = testLabel
		mc.SecretKey = key
		mc.Delegate = &rawMeta{b: p.meta}
		mc.LogOutput = io.Discard
		ml, err := memberlist.Create(mc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ml.Shutdown() })
		if _, err := ml.Join([]string{a.GossipAddress()}); err != nil {
			t.Fatalf("%s joins: %v", name, err)
		}
	}
	for name, p := range peers {
		waitFor(t, "a to list "+name, func() bool {
			m, ok := member(a.Gossip, name)
			return ok && m.MetaError != ""
		})
		m, _ := member(a.Gossip, name)
		if m.Meta != nil || !strings.HasPrefix(m.MetaError, p.want) {
			t.Errorf("%s: meta %+v, error %q; want %q…", name, m.Meta, m.MetaError, p.want)
		}
		if m.Zone() != "" {
			t.Errorf("%s: zone %q from refused metadata", name, m.Zone())
		}
	}
	for range 10 {
		if p, ok := a.PickPeer(true); ok {
			t.Fatalf("a picks %s, a peer with invalid metadata", p.ID)
		}
	}
	st := a.Status()
	for _, n := range st.Nodes {
		if !n.Self && (n.Forwardable || n.MetadataError == "" || n.Metadata != nil) {
			t.Errorf("/cluster lists %s as %+v", n.ID, n)
		}
	}
}

// NewGossip refuses configurations it can't run safely.
func TestGossipConfigRefused(t *testing.T) {
	good := func() GossipConfig {
		return GossipConfig{NodeID: "gw-a", Zone: "z", APIAddress: "127.0.0.1:8443", BindAddress: "127.0.0.1:0", Label: "l",
			Keys: [][]byte{make([]byte, 32)}, Status: healthyStatus, Logger: slog.New(slog.DiscardHandler), tune: testTune}
	}
	for name, edit := range map[string]func(*GossipConfig){
		"no id":            func(c *GossipConfig) { c.NodeID = "" },
		"long id":          func(c *GossipConfig) { c.NodeID = strings.Repeat("a", 65) },
		"id with slash":    func(c *GossipConfig) { c.NodeID = "a/b" },
		"no zone":          func(c *GossipConfig) { c.Zone = "" },
		"API without port": func(c *GossipConfig) { c.APIAddress = "127.0.0.1" },
		"API port 0":       func(c *GossipConfig) { c.APIAddress = "127.0.0.1:0" },
		"bind":             func(c *GossipConfig) { c.BindAddress = "localhost" },
		"advertise":        func(c *GossipConfig) { c.AdvertiseAddress = "10.0.0.1" },
		"no label":         func(c *GossipConfig) { c.Label = "" },
		"long label":       func(c *GossipConfig) { c.Label = strings.Repeat("l", 256) },
		"no key":           func(c *GossipConfig) { c.Keys = nil },
		"short key":        func(c *GossipConfig) { c.Keys = [][]byte{make([]byte, 15)} },
		"no status":        func(c *GossipConfig) { c.Status = nil },
	} {
		t.Run(name, func(t *testing.T) {
			c := good()
			edit(&c)
			if g, err := NewGossip(c); err == nil {
				g.Shutdown()
				t.Fatal("accepted")
			}
		})
	}
	g, err := NewGossip(good())
	if err != nil {
		t.Fatalf("the good configuration: %v", err)
	}
	g.Shutdown()
}

// An image version that does not fit is published as none, not refused.
func TestGossipBadImageVersion(t *testing.T) {
	a := startNode(t, "gw-a", "zone-1", [][]byte{testKey(t)})
	a.setStatus(LocalStatus{ImageVersion: "has space", Slots: []SlotHealth{SlotHealthy}, Attestation: 7})
	if err := a.Refresh(); err != nil {
		t.Fatal(err)
	}
	m, _ := member(a.Gossip, "gw-a")
	if m.Meta == nil || m.Meta.ImageVersion != "" || m.Meta.Attestation != AttestationFailed {
		t.Errorf("self: %+v", m.Meta)
	}
}
