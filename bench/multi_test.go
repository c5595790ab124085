package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/internal/gatewaytest"
)

// fakeStore is a keystore the fake nodes share (a cluster) or have one
// each of (independent gateways).
type fakeStore struct {
	mu   sync.Mutex
	n    int
	keys map[string]*fakeKey
}

type fakeKey struct {
	desc        string
	tags        map[string]string
	pendingDays int
	writes      int
}

func newFakeStore() *fakeStore { return &fakeStore{keys: map[string]*fakeKey{}} }

func (s *fakeStore) create(prefix string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	id := fmt.Sprintf("%s-key-%d", prefix, s.n)
	s.keys[id] = &fakeKey{tags: map[string]string{}}
	return id
}

func (s *fakeStore) key(id string) *fakeKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys[id]
}

// nodeFake is one node: a Target, an adopter and a ControlWriter over a
// fakeStore. Its first lag lookups of a key miss, as on a node the key
// has not reached yet.
type nodeFake struct {
	name   string
	store  *fakeStore
	lag    atomic.Int32
	refuse string // when set, every call fails with this code

	gate     chan struct{} // when set, Do waits for it to close
	inFlight atomic.Int32
	calls    atomic.Int64
	prepares atomic.Int32
	writes   atomic.Int32
	closed   atomic.Bool
	closeErr error

	mu  sync.Mutex
	key string
}

func (f *nodeFake) Name() string   { return f.name }
func (f *nodeFake) Client() string { return "fake" }
func (f *nodeFake) Close() error   { f.closed.Store(true); return f.closeErr }

func (f *nodeFake) Prepare(context.Context, *Workload) error {
	if f.refuse != "" {
		return &CallError{Call: "CreateKey", Code: f.refuse}
	}
	f.prepares.Add(1)
	id := f.store.create(f.name)
	f.mu.Lock()
	f.key = id
	f.mu.Unlock()
	return nil
}

func (f *nodeFake) adopt(from Target) bool {
	o, ok := from.(*nodeFake)
	if !ok {
		return false
	}
	o.mu.Lock()
	k := o.key
	o.mu.Unlock()
	f.mu.Lock()
	f.key = k
	f.mu.Unlock()
	return true
}

func (f *nodeFake) forget() {
	f.mu.Lock()
	f.key = ""
	f.mu.Unlock()
}

func (f *nodeFake) preparedKey() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.key
}

// lookup finds a key as the node sees it.
func (f *nodeFake) lookup(call, id string) (*fakeKey, error) {
	if f.refuse != "" {
		return nil, &CallError{Call: call, Code: f.refuse}
	}
	if f.lag.Add(-1) >= 0 {
		return nil, &CallError{Call: call, Code: "NotFoundException"}
	}
	k := f.store.key(id)
	if k == nil {
		return nil, &CallError{Call: call, Code: "NotFoundException"}
	}
	return k, nil
}

func (f *nodeFake) Do(ctx context.Context, op Op, check bool) error {
	f.calls.Add(1)
	f.inFlight.Add(1)
	defer f.inFlight.Add(-1)
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	_, err := f.lookup(string(op), f.preparedKey())
	return err
}

func (f *nodeFake) CreateKey(context.Context) (string, error) {
	if f.refuse != "" {
		return "", &CallError{Call: "CreateKey", Code: f.refuse}
	}
	return f.store.create(f.name), nil
}

func (f *nodeFake) write(call, id string, change func(k *fakeKey)) error {
	k, err := f.lookup(call, id)
	if err != nil {
		return err
	}
	f.writes.Add(1)
	f.store.mu.Lock()
	k.writes++
	change(k)
	f.store.mu.Unlock()
	return nil
}

func (f *nodeFake) UpdateKeyDescription(_ context.Context, id, desc string) error {
	return f.write("UpdateKeyDescription", id, func(k *fakeKey) { k.desc = desc })
}

func (f *nodeFake) TagResource(_ context.Context, id, tk, tv string) error {
	return f.write("TagResource", id, func(k *fakeKey) { k.tags[tk] = tv })
}

func (f *nodeFake) ScheduleKeyDeletion(_ context.Context, id string, days int) error {
	k := f.store.key(id)
	if k == nil {
		return &CallError{Call: "ScheduleKeyDeletion", Code: "NotFoundException"}
	}
	f.store.mu.Lock()
	k.pendingDays = days
	f.store.mu.Unlock()
	return nil
}

// fakeCluster makes n nodes over one shared store (shared) or a store
// each, and the MultiTarget over them.
func fakeCluster(t *testing.T, n int, shared bool) (*MultiTarget, []*nodeFake) {
	t.Helper()
	store := newFakeStore()
	nodes := make([]*nodeFake, n)
	targets := make([]Target, n)
	for i := range nodes {
		s := store
		if !shared {
			s = newFakeStore()
		}
		nodes[i] = &nodeFake{name: fmt.Sprintf("node%d", i+1), store: s}
		targets[i] = nodes[i]
	}
	m, err := NewMultiTarget(targets...)
	if err != nil {
		t.Fatal(err)
	}
	return m, nodes
}

func TestNewMultiTargetNeedsNodes(t *testing.T) {
	if _, err := NewMultiTarget(); err == nil {
		t.Error("no nodes accepted")
	}
	if _, err := NewMultiTarget(&nodeFake{name: "a"}, nil); err == nil || !strings.Contains(err.Error(), "node 2") {
		t.Errorf("a nil node: %v", err)
	}
}

// One caller's calls go to the nodes in turn.
func TestMultiTargetSpreadsCallsInTurn(t *testing.T) {
	m, nodes := fakeCluster(t, 3, true)
	ctx := context.Background()
	if err := m.Prepare(ctx, testWorkload(t)); err != nil {
		t.Fatal(err)
	}
	var order []string
	for range 30 {
		before := make([]int64, len(nodes))
		for i, n := range nodes {
			before[i] = n.calls.Load()
		}
		if err := m.Do(ctx, OpEncrypt, false); err != nil {
			t.Fatal(err)
		}
		for i, n := range nodes {
			if n.calls.Load() != before[i] {
				order = append(order, n.name)
			}
		}
	}
	for i, name := range order {
		if want := nodes[i%3].name; name != want {
			t.Fatalf("call %d went to %s, want %s (order %v)", i+1, name, want, order)
		}
	}
	if got := m.Calls(); !slices.Equal(got, []int64{10, 10, 10}) {
		t.Errorf("Calls() = %v", got)
	}
	m.ResetCalls()
	if got := m.Calls(); !slices.Equal(got, []int64{0, 0, 0}) {
		t.Errorf("after ResetCalls: %v", got)
	}
}

// c×N concurrent callers keep exactly c calls in flight on each node.
func TestMultiTargetBalancesCallsInFlight(t *testing.T) {
	m, nodes := fakeCluster(t, 3, true)
	ctx := context.Background()
	if err := m.Prepare(ctx, testWorkload(t)); err != nil {
		t.Fatal(err)
	}
	gate := make(chan struct{})
	for _, n := range nodes {
		n.gate = gate
	}
	const perNode = 4
	var wg sync.WaitGroup
	errs := make(chan error, 3*perNode)
	for range 3 * perNode {
		wg.Go(func() { errs <- m.Do(ctx, OpEncrypt, false) })
	}
	inFlight := func() (total int32, each []int32) {
		for _, n := range nodes {
			v := n.inFlight.Load()
			total += v
			each = append(each, v)
		}
		return total, each
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		total, each := inFlight()
		if total == 3*perNode {
			for i, v := range each {
				if v != perNode {
					t.Errorf("node %d has %d calls in flight, want %d (all: %v)", i+1, v, perNode, each)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d calls in flight", total, 3*perNode)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// A node whose call hangs does not get the next calls: they go to the
// nodes that answer.
func TestMultiTargetRoutesAroundABusyNode(t *testing.T) {
	m, nodes := fakeCluster(t, 3, true)
	ctx := context.Background()
	if err := m.Prepare(ctx, testWorkload(t)); err != nil {
		t.Fatal(err)
	}
	gate := make(chan struct{})
	nodes[0].gate = gate
	done := make(chan error, 1)
	go func() { done <- m.Do(ctx, OpEncrypt, false) }() // the first call goes to node 1 and hangs there
	deadline := time.Now().Add(30 * time.Second)
	for nodes[0].inFlight.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the first call did not reach node 1")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for range 20 {
		if err := m.Do(ctx, OpEncrypt, false); err != nil {
			t.Fatal(err)
		}
	}
	close(gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := m.Calls(); !slices.Equal(got, []int64{1, 10, 10}) {
		t.Errorf("calls per node: %v, want [1 10 10]", got)
	}
}

// On a shared keystore the keys are made once, on node 1, and the other
// nodes wait until they see them.
func TestMultiTargetPrepareSharesKeys(t *testing.T) {
	m, nodes := fakeCluster(t, 3, true)
	nodes[1].lag.Store(3)
	nodes[2].lag.Store(5)
	ctx := context.Background()
	if err := m.Prepare(ctx, testWorkload(t)); err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes {
		want := int32(0)
		if i == 0 {
			want = 1
		}
		if n.prepares.Load() != want {
			t.Errorf("node %d prepared %d times, want %d", i+1, n.prepares.Load(), want)
		}
		if n.preparedKey() != nodes[0].preparedKey() {
			t.Errorf("node %d uses key %q, node 1 %q", i+1, n.preparedKey(), nodes[0].preparedKey())
		}
		if err := n.Do(ctx, OpEncrypt, true); err != nil {
			t.Errorf("node %d: %v", i+1, err)
		}
	}
	if !m.SharedKeystore() || len(m.Notes()) != 0 || slices.Contains(m.PreparedSeparately(), true) {
		t.Errorf("shared %v, separately %v, notes %q", m.SharedKeystore(), m.PreparedSeparately(), m.Notes())
	}
	if len(nodes[0].store.keys) != 1 {
		t.Errorf("%d keys made, want 1", len(nodes[0].store.keys))
	}
}

// Independent nodes never see node 1's keys: after the timeout each is
// prepared on its own, and the notes say so.
func TestMultiTargetPrepareFallsBackToEachNode(t *testing.T) {
	m, nodes := fakeCluster(t, 3, false)
	m.ReplicationTimeout = 100 * time.Millisecond
	ctx := context.Background()
	if err := m.Prepare(ctx, testWorkload(t)); err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	for i, n := range nodes {
		if n.prepares.Load() != 1 {
			t.Errorf("node %d prepared %d times", i+1, n.prepares.Load())
		}
		keys[n.preparedKey()] = true
		if err := n.Do(ctx, OpEncrypt, true); err != nil {
			t.Errorf("node %d: %v", i+1, err)
		}
	}
	if len(keys) != 3 {
		t.Errorf("keys %v: want one per node", keys)
	}
	if m.SharedKeystore() || !slices.Equal(m.PreparedSeparately(), []bool{false, true, true}) {
		t.Errorf("shared %v, separately %v", m.SharedKeystore(), m.PreparedSeparately())
	}
	notes := m.Notes()
	if len(notes) != 2 || !strings.Contains(notes[0], "node 2") || !strings.Contains(notes[1], "node 3") ||
		!strings.Contains(notes[0], "do not share a keystore") || !strings.Contains(notes[0], "NotFoundException") {
		t.Errorf("notes: %q", notes)
	}
	// The calls spread over the nodes still work, each with its own key.
	for range 9 {
		if err := m.Do(ctx, OpEncrypt, true); err != nil {
			t.Fatal(err)
		}
	}
}

// A node that fails for another reason than a missing key fails Prepare at
// once, named.
func TestMultiTargetPrepareFailsOnOtherErrors(t *testing.T) {
	m, nodes := fakeCluster(t, 3, true)
	m.ReplicationTimeout = time.Hour // it must not wait for this
	nodes[2].refuse = "AccessDeniedException"
	err := m.Prepare(context.Background(), testWorkload(t))
	if err == nil || !strings.Contains(err.Error(), "node 3") || ErrorCode(err) != "AccessDeniedException" {
		t.Fatalf("err %v (code %q)", err, ErrorCode(err))
	}
	// Node 1 failing fails at once too.
	m, nodes = fakeCluster(t, 2, true)
	nodes[0].refuse = "UnrecognizedClientException"
	if err := m.Prepare(context.Background(), testWorkload(t)); err == nil || !strings.Contains(err.Error(), "node 1") {
		t.Fatalf("err %v", err)
	}
}

// Targets that can't share keys (the pool, load_test's fake) are each
// prepared on their own.
func TestMultiTargetPreparesNonSharingTargets(t *testing.T) {
	a, b := &fakeTarget{}, &fakeTarget{}
	m, err := NewMultiTarget(a, b)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Prepare(context.Background(), testWorkload(t)); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(m.PreparedSeparately(), []bool{false, true}) || len(m.Notes()) != 1 {
		t.Errorf("separately %v, notes %q", m.PreparedSeparately(), m.Notes())
	}
	if _, _, err := m.ControlPlane(context.Background(), 3); err == nil || !strings.Contains(err.Error(), "control-plane") {
		t.Errorf("control plane on targets without a writer: %v", err)
	}
}

func TestMultiTargetCloseClosesEveryNode(t *testing.T) {
	m, nodes := fakeCluster(t, 3, true)
	nodes[1].closeErr = errors.New("boom")
	err := m.Close()
	for i, n := range nodes {
		if !n.closed.Load() {
			t.Errorf("node %d not closed", i+1)
		}
	}
	if err == nil || !strings.Contains(err.Error(), "node 2") || !strings.Contains(err.Error(), "boom") {
		t.Errorf("err %v", err)
	}
}

// Control-plane writes on a shared keystore: one key, written through node
// 1 and then through every node in turn, scheduled for deletion after.
func TestControlPlaneSharedKeystore(t *testing.T) {
	m, nodes := fakeCluster(t, 3, true)
	ctx := context.Background()
	if err := m.Prepare(ctx, testWorkload(t)); err != nil {
		t.Fatal(err)
	}
	nodes[2].lag.Store(4) // the writes' key reaches node 3 late
	runs, notes, err := m.ControlPlane(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 2 || runs[0].Name != "control plane: node 1" || runs[1].Name != "control plane: 3 nodes in turn" {
		t.Fatalf("runs %+v", runs)
	}
	for _, r := range runs {
		if r.Summary.Calls != 5 || r.Summary.Errors != 0 || r.Summary.Max <= 0 || r.Shape != "control-plane" {
			t.Errorf("%s: %+v", r.Name, r.Summary)
		}
	}
	// One unmeasured write per node, 5 on node 1, then 2, 2, 1.
	if got := []int32{nodes[0].writes.Load(), nodes[1].writes.Load(), nodes[2].writes.Load()}; !slices.Equal(got, []int32{1 + 5 + 2, 1 + 2, 1 + 1}) {
		t.Errorf("writes per node %v", got)
	}
	store := nodes[0].store
	var written []*fakeKey
	for _, k := range store.keys {
		if k.writes > 0 {
			written = append(written, k)
		}
	}
	if len(written) != 1 || written[0].pendingDays != DeletionWindowDays || written[0].tags[WriteTag] != "4" ||
		written[0].desc != "hsmbench write 5" {
		t.Fatalf("written keys %+v", written)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "scheduled for deletion in 7 days") {
		t.Errorf("notes %q", notes)
	}
}

// Independent nodes: each writes to a key of its own, and each key is
// scheduled for deletion on its node.
func TestControlPlaneIndependentNodes(t *testing.T) {
	m, nodes := fakeCluster(t, 2, false)
	m.ReplicationTimeout = 50 * time.Millisecond
	ctx := context.Background()
	if err := m.Prepare(ctx, testWorkload(t)); err != nil {
		t.Fatal(err)
	}
	runs, notes, err := m.ControlPlane(ctx, 4)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 2 || runs[1].Summary.Calls != 4 || runs[1].Summary.Errors != 0 {
		t.Fatalf("runs %+v", runs)
	}
	for i, n := range nodes {
		var pending int
		for _, k := range n.store.keys {
			if k.writes > 0 && k.pendingDays == DeletionWindowDays {
				pending++
			}
		}
		if pending != 1 {
			t.Errorf("node %d: %d written keys pending deletion, want 1", i+1, pending)
		}
	}
	if len(notes) != 2 {
		t.Errorf("notes %q", notes)
	}
}

// Failed writes are counted as errors; when none succeeds the measurement
// fails, and the key is still scheduled for deletion.
func TestControlPlaneCountsFailedWrites(t *testing.T) {
	m, nodes := fakeCluster(t, 2, true)
	ctx := context.Background()
	if err := m.Prepare(ctx, testWorkload(t)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.ControlPlane(ctx, 0); err == nil {
		t.Error("0 writes accepted")
	}
	nodes[1].refuse = "AccessDeniedException"
	_, notes, err := m.ControlPlane(ctx, 4)
	if err == nil || !strings.Contains(err.Error(), "node 2") || ErrorCode(err) != "AccessDeniedException" {
		t.Fatalf("err %v", err)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "scheduled for deletion") {
		t.Errorf("notes %q", notes)
	}
	// measureWrites counts a node's failures in the run.
	m.separate = []bool{false, false}
	cws := []ControlWriter{nodes[0], nodes[1]}
	id := nodes[0].store.create("x")
	run, err := m.measureWrites(ctx, "mixed", cws, []string{id, id}, []int{0, 1}, 6)
	if err != nil || run.Summary.Calls != 6 || run.Summary.Errors != 3 || run.Summary.ErrorsByCode["AccessDeniedException"] != 3 {
		t.Fatalf("run %+v, err %v", run.Summary, err)
	}
}

func TestClusterReportMarkdown(t *testing.T) {
	r := &ClusterReport{
		Nodes:     []string{"https://a:8443", "https://b:8443"},
		One:       Run{Name: "1 node", Concurrency: 4, Summary: Summary{Calls: 400, Throughput: 100, P50: time.Millisecond, P99: 3 * time.Millisecond}},
		All:       Run{Name: "2 nodes", Concurrency: 8, Summary: Summary{Calls: 700, Throughput: 175, P50: time.Millisecond}},
		NodeCalls: []int64{30, 10},
		Writes:    []Run{{Name: "control plane: node 1", Summary: Summary{Calls: 50, P50: 2 * time.Millisecond, P99: 9 * time.Millisecond, Max: 12 * time.Millisecond}}},
		Notes:     []string{"node 2: its own keys"},
	}
	if got := r.Scaling(); got != 1.75 {
		t.Errorf("Scaling() = %v", got)
	}
	var b bytes.Buffer
	if err := r.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{"## Cluster scaling", "**Scaling: 1.75**", "2 would be linear", "node 1 30 (75%)", "node 2 10 (25%)",
		"## Control-plane writes", "| control plane: node 1 | 50 | 0 | 2 | 9 | 12 |", "**not shared**", "- node 2: its own keys"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	r.One.Summary.Throughput = 0
	if r.Scaling() != 0 {
		t.Error("a ratio over nothing")
	}
}

// Two KMS targets on the same gateway share its keystore: the keys are
// made once, through the first, and the second uses them; control-plane
// writes go through both to one key, which ends scheduled for deletion.
func TestMultiTargetOnOneGateway(t *testing.T) {
	g := gatewaytest.Start(t, 1, kmsTestRegion)
	cfg := KMSConfig{Endpoint: g.URL, Region: kmsTestRegion, AccessKeyID: g.Admin.AccessKeyID,
		SecretAccessKey: g.Admin.SecretAccessKey, CABundle: g.Admin.CABundle, MaxConns: 4}
	lean, err := NewLeanTarget(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sdk, err := NewSDKTarget(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMultiTarget(lean, sdk)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	countKeys := func() int {
		keys, _ := g.Store.Keys("", 1000, func(k *keystore.Key) bool { return k.Tags["Purpose"] == "hsmbench" })
		return len(keys)
	}
	w := allOps(32, "ECC_NIST_P256", "", "HMAC_256")
	if err := m.Prepare(ctx, w); err != nil {
		t.Fatal(err)
	}
	if !m.SharedKeystore() || len(m.Notes()) != 0 {
		t.Fatalf("shared %v, notes %q", m.SharedKeystore(), m.Notes())
	}
	if n := countKeys(); n != 3 { // symmetric, signing, MAC: once
		t.Errorf("%d keys made, want 3", n)
	}
	for range 2 {
		for _, op := range AllOps {
			if err := m.Do(ctx, op, true); err != nil {
				t.Fatalf("%s: %v", op, err)
			}
		}
	}
	if c := m.Calls(); c[0] != c[1] || c[0] == 0 {
		t.Errorf("calls per node %v", c)
	}
	runs, notes, err := m.ControlPlane(ctx, 4)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range runs {
		if r.Summary.Calls != 4 || r.Summary.Errors != 0 {
			t.Errorf("%s: %+v", r.Name, r.Summary)
		}
	}
	written, _ := g.Store.Keys("", 1000, func(k *keystore.Key) bool { return k.Tags[WriteTag] != "" })
	if len(written) != 1 || written[0].State != keystore.StatePendingDeletion || written[0].PendingWindowDays != DeletionWindowDays ||
		written[0].Description != "hsmbench write 3" || written[0].Tags[WriteTag] != "4" {
		t.Fatalf("written keys: %+v", written)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], written[0].ID) {
		t.Errorf("notes %q", notes)
	}
}
