package cluster

import (
	"cmp"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// The health view: which peers may take a forwarded request, and this
// node's load as it gossips it.

// PickPeer returns the peer a crypto request should be forwarded to, and
// false when there is none. See PickPeers for the rules; excludeSelf
// leaves this node out (a node forwards only when it can't serve).
func (g *Gossip) PickPeer(excludeSelf bool) (NodeStatus, bool) {
	peers := g.PickPeers(excludeSelf)
	if len(peers) == 0 {
		return NodeStatus{}, false
	}
	return peers[0], true
}

// PickPeers returns every node that may take a forwarded request, best
// first. A node qualifies when it is alive (not suspect, dead or left), its
// metadata decodes, it is not leaving, it reports at least one healthy
// slot, it does not report a failed attestation, and, when the cluster
// requires attestation, it reports a measured boot and the Verifier (if
// any) has not failed to verify it lately. Nodes in this node's zone come
// first, then the others; within each group less loaded nodes (in-flight
// requests against their limit, in steps of a tenth) come first, in random
// order among equals, so that forwarded load spreads instead of piling on
// one peer between two gossip updates.
//
// This is a hint: the forwarder still authenticates the peer over mTLS and,
// when required, verifies its attestation before it sends a request.
func (g *Gossip) PickPeers(excludeSelf bool) []NodeStatus {
	var out []NodeStatus
	for _, n := range g.Members() {
		if (excludeSelf && n.Self) || g.ineligible(n) != "" {
			continue
		}
		out = append(out, n)
	}
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	slices.SortStableFunc(out, func(a, b NodeStatus) int {
		return cmp.Or(
			cmp.Compare(zoneRank(a, g.cfg.Zone), zoneRank(b, g.cfg.Zone)),
			cmp.Compare(loadStep(a.Meta), loadStep(b.Meta)),
		)
	})
	return out
}

// ineligible says why n can't take forwarded requests, "" when it can.
func (g *Gossip) ineligible(n NodeStatus) string {
	switch {
	case n.State != MemberAlive:
		return "not alive (" + n.State.String() + ")"
	case n.Meta == nil:
		return n.MetaError
	case n.Meta.Leaving:
		return "leaving the cluster"
	case n.Meta.Slots.Healthy == 0:
		return "no healthy HSM slot"
	case n.Meta.Attestation == AttestationFailed:
		return "its attestation fails"
	case g.cfg.RequireAttestation && n.Meta.Attestation != AttestationMeasured:
		return "attestation is required and it reports none"
	}
	if g.cfg.RequireAttestation && g.cfg.Verifier != nil && !n.Self {
		if v, ok := g.cfg.Verifier.Verdict(n.ID); ok && v.Err != nil && !v.Expired {
			return "its attestation did not verify: " + v.Err.Error()
		}
	}
	return ""
}

func zoneRank(n NodeStatus, zone string) int {
	if n.Zone() == zone {
		return 0
	}
	return 1
}

// loadStep is a node's load in tenths of its limit (0..10), 0 when it
// reports no limit.
func loadStep(m *NodeMeta) int {
	if m.MaxInFlight == 0 {
		return 0
	}
	return int(min(10, uint64(m.InFlight)*10/uint64(m.MaxInFlight)))
}

// LoadMeter measures a gateway's load for its metadata: requests in
// flight, and requests finished per second over the last
// loadMeterSeconds full seconds. Wrap the gateway's handler with it.
type LoadMeter struct {
	max      uint32
	now      func() time.Time
	inFlight atomic.Int64

	mu      sync.Mutex
	buckets [loadMeterSeconds + 1]loadBucket
}

type loadBucket struct {
	second int64 // unix second the count is for
	count  uint64
}

// loadMeterSeconds is the window RPS is averaged over.
const loadMeterSeconds = 10

// NewLoadMeter returns a meter for a gateway serving at most maxInFlight
// requests at once (reported as MaxInFlight; 0: not reported). now is the
// clock; nil means time.Now.
func NewLoadMeter(maxInFlight int, now func() time.Time) *LoadMeter {
	if now == nil {
		now = time.Now
	}
	return &LoadMeter{max: uint32(max(0, min(maxInFlight, 1<<31))), now: now}
}

// Wrap counts every request next serves.
func (l *LoadMeter) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.Begin()
		defer l.End()
		next.ServeHTTP(w, r)
	})
}

// Begin counts a request starting; End counts it finished.
func (l *LoadMeter) Begin() { l.inFlight.Add(1) }

// End counts a request finished.
func (l *LoadMeter) End() {
	l.inFlight.Add(-1)
	sec := l.now().Unix()
	l.mu.Lock()
	b := &l.buckets[sec%int64(len(l.buckets))]
	if b.second != sec {
		b.second, b.count = sec, 0
	}
	b.count++
	l.mu.Unlock()
}

// Load returns the requests in flight, the limit, and the requests
// finished per second over the last full seconds.
func (l *LoadMeter) Load() (inFlight, maxInFlight, rps uint32) {
	sec := l.now().Unix()
	var sum uint64
	l.mu.Lock()
	for _, b := range l.buckets {
		if b.second < sec && b.second >= sec-loadMeterSeconds {
			sum += b.count
		}
	}
	l.mu.Unlock()
	return uint32(max(0, min(l.inFlight.Load(), 1<<31))), l.max, uint32(min(sum/loadMeterSeconds, 1<<31))
}
