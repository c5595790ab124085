package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

// MultiTarget is one Target made of several: the nodes of a gateway
// cluster (or independent gateways), each reached through its own Target
// and its own connections.
//
// Calls go to the node with the fewest calls in flight, ties broken in
// turn (so one caller's calls go round-robin). With c×N closed-loop callers
// over N nodes this keeps exactly c calls in flight on every node, as c
// clients pinned to each node would: a caller whose call a node answered
// sends its next call to that node again, a slow node does not hold the
// callers of the fast ones back, and each node's connections are reused
// rather than spread thinly. (Plain round-robin would make every caller
// wait on every node in turn, so the slowest node would set everyone's
// pace.)
type MultiTarget struct {
	nodes []Target
	// ReplicationTimeout is how long Prepare waits for the keys it made on
	// the first node to be usable on each of the others. Zero means 10s.
	ReplicationTimeout time.Duration

	mu       sync.Mutex
	inFlight []int
	calls    []int64
	next     int

	// Set by Prepare.
	separate []bool // the node's keys were prepared on it, not shared from node 1
	notes    []string
}

// NewMultiTarget returns a MultiTarget over nodes, which it owns: Close
// closes them all.
func NewMultiTarget(nodes ...Target) (*MultiTarget, error) {
	if len(nodes) == 0 {
		return nil, errors.New("bench: a multi-node target needs at least one node")
	}
	for i, n := range nodes {
		if n == nil {
			return nil, fmt.Errorf("bench: node %d is nil", i+1)
		}
	}
	return &MultiTarget{nodes: slices.Clone(nodes), inFlight: make([]int, len(nodes)),
		calls: make([]int64, len(nodes)), separate: make([]bool, len(nodes))}, nil
}

// Nodes returns the node targets, node 1 first.
func (m *MultiTarget) Nodes() []Target { return slices.Clone(m.nodes) }

// Name lists the nodes' names.
func (m *MultiTarget) Name() string {
	names := make([]string, len(m.nodes))
	for i, n := range m.nodes {
		names[i] = n.Name()
	}
	return strings.Join(names, ", ")
}

// Client is the first node's client (all nodes use the same kind).
func (m *MultiTarget) Client() string { return m.nodes[0].Client() }

// Close closes every node and returns their errors, joined.
func (m *MultiTarget) Close() error {
	var errs []error
	for i, n := range m.nodes {
		if err := n.Close(); err != nil {
			errs = append(errs, fmt.Errorf("node %d (%s): %w", i+1, n.Name(), err))
		}
	}
	return errors.Join(errs...)
}

// Do runs op on the node with the fewest calls in flight.
func (m *MultiTarget) Do(ctx context.Context, op Op, check bool) error {
	i := m.acquire()
	err := m.nodes[i].Do(ctx, op, check)
	m.mu.Lock()
	m.inFlight[i]--
	m.mu.Unlock()
	return err
}

// acquire picks the node for the next call and counts the call on it. A
// mutex rather than atomics: the pick must see and update the counts as
// one step, or concurrent callers pile onto the same idle node. It costs
// tens of nanoseconds against calls of tens of microseconds or more.
func (m *MultiTarget) acquire() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := len(m.nodes)
	best := m.next % n
	for k := 1; k < n; k++ {
		if i := (m.next + k) % n; m.inFlight[i] < m.inFlight[best] {
			best = i
		}
	}
	m.next = (best + 1) % n
	m.inFlight[best]++
	m.calls[best]++
	return best
}

// Calls returns how many calls each node was sent since the last
// ResetCalls (or since the start), node 1 first.
func (m *MultiTarget) Calls() []int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.calls)
}

// ResetCalls sets the per-node call counts to zero.
func (m *MultiTarget) ResetCalls() {
	m.mu.Lock()
	clear(m.calls)
	m.mu.Unlock()
}

// PreparedSeparately reports, per node (node 1 first, always false),
// whether Prepare had to make the node its own keys because those made on
// node 1 did not become usable there.
func (m *MultiTarget) PreparedSeparately() []bool { return slices.Clone(m.separate) }

// SharedKeystore reports whether the keys made on node 1 were usable on
// every node (after Prepare).
func (m *MultiTarget) SharedKeystore() bool { return !slices.Contains(m.separate, true) }

// Notes are what Prepare found worth telling: which nodes got keys of
// their own, and why.
func (m *MultiTarget) Notes() []string { return slices.Clone(m.notes) }

// adopter is a Target that can take over the workload another target of
// its kind prepared (the same key ids and inputs): nodes of one cluster
// share a keystore, so keys made through one node are usable through every
// other.
type adopter interface {
	// adopt takes over from's prepared workload; false when from is not of
	// its kind.
	adopt(from Target) bool
	// forget drops what adopt took over, so that Prepare makes the
	// target's own keys.
	forget()
}

// visibilityCodes are the answers of a node that does not (yet) have a key
// made through another node: an unknown key, a ciphertext of an unknown
// key, a key whose state has not caught up.
var visibilityCodes = []string{"NotFoundException", "InvalidCiphertextException", "KMSInvalidStateException"}

func (m *MultiTarget) replicationTimeout() time.Duration {
	if m.ReplicationTimeout > 0 {
		return m.ReplicationTimeout
	}
	return 10 * time.Second
}

// Prepare prepares the workload on node 1, then has every other node use
// the same keys and inputs, as a cluster with a replicated keystore
// allows: it runs each operation of the mix once, checked, on each other
// node until it succeeds, for at most ReplicationTimeout. A node on which
// the keys never become usable (independent gateways, which share no
// keystore) is prepared separately, with keys of its own, and Notes says
// so. A node that fails otherwise (refused credentials, no connection)
// fails Prepare. The other nodes are polled in parallel.
func (m *MultiTarget) Prepare(ctx context.Context, w *Workload) error {
	first := m.nodes[0]
	if err := first.Prepare(ctx, w); err != nil {
		return fmt.Errorf("node 1 (%s): %w", first.Name(), err)
	}
	clear(m.separate)
	m.notes = nil
	notes := make([]string, len(m.nodes))
	errs := make([]error, len(m.nodes))
	var wg sync.WaitGroup
	for i := 1; i < len(m.nodes); i++ {
		wg.Go(func() {
			notes[i], errs[i] = m.prepareNode(ctx, i, w)
		})
	}
	wg.Wait()
	for i := range m.nodes {
		if notes[i] != "" {
			m.separate[i] = true
			m.notes = append(m.notes, notes[i])
		}
	}
	return errors.Join(errs...)
}

// prepareNode makes node i use node 1's keys, or its own (and then says
// why in the note).
func (m *MultiTarget) prepareNode(ctx context.Context, i int, w *Workload) (note string, err error) {
	t := m.nodes[i]
	label := fmt.Sprintf("node %d (%s)", i+1, t.Name())
	a, ok := t.(adopter)
	if !ok || !a.adopt(m.nodes[0]) {
		if err := t.Prepare(ctx, w); err != nil {
			return "", fmt.Errorf("%s: %w", label, err)
		}
		return label + ": its target can't share node 1's keys; prepared its own", nil
	}
	code, err := m.awaitKeys(ctx, t, w)
	if err == nil {
		return "", nil
	}
	if code == "" {
		return "", fmt.Errorf("%s: %w", label, err)
	}
	a.forget()
	if err := t.Prepare(ctx, w); err != nil {
		return "", fmt.Errorf("%s: the keys made on node 1 were not usable there (%s), and making its own failed: %w", label, code, err)
	}
	return fmt.Sprintf("%s: the keys made on node 1 were not usable there within %v (%s), so it got keys of its own: the nodes do not share a keystore",
		label, m.replicationTimeout(), code), nil
}

// awaitKeys runs every operation of the mix, checked, on t until each has
// succeeded once. It retries an answer of visibilityCodes until the
// replication timeout, and then returns its code with the error; any other
// error it returns at once, with code "".
func (m *MultiTarget) awaitKeys(ctx context.Context, t Target, w *Workload) (code string, err error) {
	deadline := time.Now().Add(m.replicationTimeout())
	wait := 20 * time.Millisecond
	var ops []Op
	for _, e := range w.Mix {
		if !slices.Contains(ops, e.Op) {
			ops = append(ops, e.Op)
		}
	}
	if len(ops) == 0 {
		ops = []Op{OpEncrypt}
	}
	for _, op := range ops {
		code, err := retryUntilVisible(ctx, deadline, &wait, func() error {
			actx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			return t.Do(actx, op, true)
		})
		if err != nil {
			return code, err
		}
	}
	return "", nil
}

// retryUntilVisible calls try until it succeeds. An answer of
// visibilityCodes (a node the change has not reached yet) is retried after
// a pause that doubles from *wait up to 500 ms, until deadline, and is then
// returned with its code; any other error is returned at once, with code "".
func retryUntilVisible(ctx context.Context, deadline time.Time, wait *time.Duration, try func() error) (code string, err error) {
	for {
		err := try()
		if err == nil {
			return "", nil
		}
		code := ErrorCode(err)
		if !slices.Contains(visibilityCodes, code) || ctx.Err() != nil {
			return "", err
		}
		if time.Now().After(deadline) {
			return code, err
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(min(*wait, time.Until(deadline)+time.Millisecond)):
		}
		*wait = min(2**wait, 500*time.Millisecond)
	}
}

// --- the KMS targets share their keys -------------------------------------

// adopt takes over another KMS target's keys and inputs; the API client
// (endpoint, credentials, connections) stays this target's own.
func (t *kmsTarget) adopt(from Target) bool {
	f, ok := from.(*kmsTarget)
	if !ok || f == t {
		return false
	}
	t.w = f.w
	t.keys = maps.Clone(f.keys)
	t.symKey, t.signKey, t.signPub, t.macKey = f.symKey, f.signKey, f.signPub, f.macKey
	t.payload, t.ciphertext, t.signature = f.payload, f.ciphertext, f.signature
	return true
}

func (t *kmsTarget) forget() {
	t.keys = nil
	t.symKey, t.signKey, t.signPub, t.macKey = "", "", nil, ""
	t.payload, t.ciphertext, t.signature = nil, nil, nil
}

// --- control-plane writes -------------------------------------------------

// ControlWriter makes the control-plane writes a cluster benchmark
// measures: calls that change a key's metadata, which a cluster commits
// through its consensus log (a follower forwards them to the leader).
// Errors are *CallError, as Target.Do's.
type ControlWriter interface {
	// CreateKey creates a symmetric encryption key tagged
	// Purpose=hsmbench and returns its id.
	CreateKey(ctx context.Context) (keyID string, err error)
	UpdateKeyDescription(ctx context.Context, keyID, description string) error
	// TagResource sets one tag of the key (replacing its value).
	TagResource(ctx context.Context, keyID, tagKey, tagValue string) error
	ScheduleKeyDeletion(ctx context.Context, keyID string, pendingWindowDays int) error
}

// ControlWriterOf returns t's control-plane writer: the KMS targets (lean
// and SDK clients) have one, the pool has none.
func ControlWriterOf(t Target) (ControlWriter, bool) {
	if cw, ok := t.(ControlWriter); ok {
		return cw, true
	}
	if k, ok := t.(*kmsTarget); ok {
		switch k.api.(type) {
		case *leanAPI, *sdkAPI:
			return kmsControl{k.api}, true
		}
	}
	return nil, false
}

// kmsControl makes control-plane writes with a KMS target's client.
type kmsControl struct{ api kmsAPI }

func (k kmsControl) CreateKey(ctx context.Context) (string, error) {
	id, err := k.api.createKey(ctx, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT")
	if err != nil {
		return "", callError(ctx, "CreateKey", err)
	}
	return id, nil
}

func (k kmsControl) UpdateKeyDescription(ctx context.Context, keyID, description string) error {
	var err error
	switch api := k.api.(type) {
	case *leanAPI:
		b := newLeanBody()
		b.open()
		b.str("KeyId", keyID)
		b.str("Description", description)
		err = api.call(ctx, "UpdateKeyDescription", b, &leanResponse{})
	case *sdkAPI:
		_, err = api.c.UpdateKeyDescription(ctx, &kms.UpdateKeyDescriptionInput{KeyId: &keyID, Description: &description})
	}
	if err != nil {
		return callError(ctx, "UpdateKeyDescription", err)
	}
	return nil
}

func (k kmsControl) TagResource(ctx context.Context, keyID, tagKey, tagValue string) error {
	var err error
	switch api := k.api.(type) {
	case *leanAPI:
		b := newLeanBody()
		b.open()
		b.str("KeyId", keyID)
		b.field("Tags")
		b.buf = append(b.buf, `[{"TagKey":`...)
		b.buf = appendJSONString(b.buf, tagKey)
		b.buf = append(b.buf, `,"TagValue":`...)
		b.buf = appendJSONString(b.buf, tagValue)
		b.buf = append(b.buf, "}]"...)
		err = api.call(ctx, "TagResource", b, &leanResponse{})
	case *sdkAPI:
		_, err = api.c.TagResource(ctx, &kms.TagResourceInput{KeyId: &keyID,
			Tags: []types.Tag{{TagKey: aws.String(tagKey), TagValue: aws.String(tagValue)}}})
	}
	if err != nil {
		return callError(ctx, "TagResource", err)
	}
	return nil
}

func (k kmsControl) ScheduleKeyDeletion(ctx context.Context, keyID string, days int) error {
	var err error
	switch api := k.api.(type) {
	case *leanAPI:
		b := newLeanBody()
		b.open()
		b.str("KeyId", keyID)
		b.raw("PendingWindowInDays", strconv.Itoa(days))
		err = api.call(ctx, "ScheduleKeyDeletion", b, &leanResponse{})
	case *sdkAPI:
		_, err = api.c.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: &keyID, PendingWindowInDays: aws.Int32(int32(days))})
	}
	if err != nil {
		return callError(ctx, "ScheduleKeyDeletion", err)
	}
	return nil
}

// The control-plane writes measured, alternately.
const (
	opUpdateKeyDescription Op = "UpdateKeyDescription"
	opTagResource          Op = "TagResource"
)

// WriteTag is the tag key the control-plane writes set.
const WriteTag = "hsmbench-write"

// DeletionWindowDays is the pending window of the keys ControlPlane
// creates and schedules for deletion when it is done.
const DeletionWindowDays = 7

// ControlPlane measures the latency of writes sequential control-plane
// writes twice: all sent to node 1, then sent to the nodes in turn (in a
// cluster a follower forwards each to the leader). The writes alternate
// UpdateKeyDescription and TagResource (tag WriteTag) on one key per
// keystore, so they leave nothing behind but that key: ControlPlane
// creates it on node 1 (and on each node Prepare found not to share node
// 1's keystore), waits until it is usable on the nodes that share it, and
// when done schedules it for deletion in DeletionWindowDays, even if ctx
// has ended. Key creation and deletion are not measured. It returns a Run
// per measurement (shape "control-plane") and notes on the clean-up.
func (m *MultiTarget) ControlPlane(ctx context.Context, writes int) (runs []Run, notes []string, err error) {
	if writes < 1 {
		return nil, nil, errors.New("bench: the number of control-plane writes must be at least 1")
	}
	cws := make([]ControlWriter, len(m.nodes))
	for i, t := range m.nodes {
		cw, ok := ControlWriterOf(t)
		if !ok {
			return nil, nil, fmt.Errorf("bench: node %d (%s, client %s) can't make control-plane writes", i+1, t.Name(), t.Client())
		}
		cws[i] = cw
	}
	type made struct {
		node int
		id   string
	}
	var created []made
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		for _, k := range created {
			if derr := cws[k.node].ScheduleKeyDeletion(cctx, k.id, DeletionWindowDays); derr != nil {
				notes = append(notes, fmt.Sprintf("could not schedule key %s for deletion on node %d: %v", k.id, k.node+1, derr))
			} else {
				notes = append(notes, fmt.Sprintf("key %s (made on node %d for the writes) is scheduled for deletion in %d days",
					k.id, k.node+1, DeletionWindowDays))
			}
		}
	}()
	create := func(i int) (string, error) {
		id, err := cws[i].CreateKey(ctx)
		if err != nil {
			return "", fmt.Errorf("node %d (%s): a key for the control-plane writes: %w", i+1, m.nodes[i].Name(), err)
		}
		created = append(created, made{i, id})
		return id, nil
	}
	keys := make([]string, len(m.nodes))
	if keys[0], err = create(0); err != nil {
		return nil, nil, err
	}
	// A first, unmeasured write on each node: it waits for the key to
	// reach the node, and the node's connection to be open.
	for i := range m.nodes {
		shared := i > 0 && !m.separate[i]
		switch {
		case shared:
			keys[i] = keys[0]
		case i > 0:
			if keys[i], err = create(i); err != nil {
				return nil, nil, err
			}
		}
		code, err := m.awaitWrite(ctx, cws[i], keys[i])
		switch {
		case err == nil:
		case code != "" && shared:
			notes = append(notes, fmt.Sprintf("node %d (%s): the key made on node 1 for the writes was not usable there within %v (%s); it writes to a key of its own",
				i+1, m.nodes[i].Name(), m.replicationTimeout(), code))
			if keys[i], err = create(i); err != nil {
				return nil, nil, err
			}
			if _, err := m.awaitWrite(ctx, cws[i], keys[i]); err != nil {
				return nil, nil, fmt.Errorf("node %d (%s): %w", i+1, m.nodes[i].Name(), err)
			}
		default:
			return nil, nil, fmt.Errorf("node %d (%s): %w", i+1, m.nodes[i].Name(), err)
		}
	}
	one, err := m.measureWrites(ctx, "control plane: node 1", cws, keys, []int{0}, writes)
	runs = append(runs, one)
	if err != nil {
		return runs, notes, err
	}
	all := make([]int, len(m.nodes))
	for i := range all {
		all[i] = i
	}
	name := fmt.Sprintf("control plane: %d nodes in turn", len(m.nodes))
	every, err := m.measureWrites(ctx, name, cws, keys, all, writes)
	runs = append(runs, every)
	return runs, notes, err
}

// awaitWrite makes one unmeasured write of keyID through cw, retrying the
// answers of a node the key has not reached (visibilityCodes) until the
// replication timeout.
func (m *MultiTarget) awaitWrite(ctx context.Context, cw ControlWriter, keyID string) (code string, err error) {
	wait := 20 * time.Millisecond
	return retryUntilVisible(ctx, time.Now().Add(m.replicationTimeout()), &wait, func() error {
		return cw.UpdateKeyDescription(ctx, keyID, "hsmbench control-plane writes")
	})
}

// measureWrites sends n writes, one at a time, to the nodes in order
// (write k to order[k % len(order)]), alternating UpdateKeyDescription and
// TagResource, and makes a Run of their latencies. Failed writes count as
// errors; it fails only when none succeeded.
func (m *MultiTarget) measureWrites(ctx context.Context, name string, cws []ControlWriter, keys []string, order []int, n int) (Run, error) {
	start := time.Now()
	stats := NewStats(start)
	var firstErr error
	ok := 0
	for k := 0; k < n && ctx.Err() == nil; k++ {
		i := order[k%len(order)]
		op := opUpdateKeyDescription
		begin := time.Now()
		var err error
		if k%2 == 0 {
			err = cws[i].UpdateKeyDescription(ctx, keys[i], "hsmbench write "+strconv.Itoa(k+1))
		} else {
			op = opTagResource
			err = cws[i].TagResource(ctx, keys[i], WriteTag, strconv.Itoa(k+1))
		}
		stats.Record(Sample{Start: begin, Latency: time.Since(begin), Op: op, Err: ErrorCode(err)})
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("node %d (%s): %w", i+1, m.nodes[i].Name(), err)
		}
		if err == nil {
			ok++
		}
	}
	targets := make([]string, len(order))
	for j, i := range order {
		targets[j] = m.nodes[i].Name()
	}
	run := Run{Name: name, Target: strings.Join(targets, ", "), Client: m.Client(),
		Workload: string(opUpdateKeyDescription) + "=1," + string(opTagResource) + "=1",
		Shape:    "control-plane", Concurrency: 1, Summary: stats.Summary(time.Now())}
	if ctx.Err() != nil {
		return run, ctx.Err()
	}
	if ok == 0 {
		return run, fmt.Errorf("%s: every write failed; the first: %w", name, firstErr)
	}
	return run, nil
}

// --- the summary ------------------------------------------------------------

// ClusterReport is what `hsmbench cluster` measured: the crypto workload
// on node 1 alone and on every node, and the control-plane writes.
type ClusterReport struct {
	Nodes []string // the nodes' names, node 1 first
	One   Run      // the workload at c callers on node 1
	All   Run      // the workload at c×N callers over all N nodes
	// NodeCalls are the calls each node was sent in the all-nodes phase,
	// warm-up included.
	NodeCalls []int64
	// Writes are the control-plane measurements (ControlPlane's runs).
	Writes []Run
	// SharedKeystore says the workload's keys, made on node 1, were usable
	// on every node.
	SharedKeystore bool
	Notes          []string
}

// Scaling is throughput on all nodes over throughput on node 1 alone; 0
// when node 1 alone managed nothing.
func (r *ClusterReport) Scaling() float64 {
	if r.One.Summary.Throughput <= 0 {
		return 0
	}
	return r.All.Summary.Throughput / r.One.Summary.Throughput
}

// WriteMarkdown writes the summary as Markdown sections: the two phases
// and the scaling ratio, how the calls spread over the nodes, the
// control-plane write latencies, and the notes.
func (r *ClusterReport) WriteMarkdown(w io.Writer) error {
	var b bytes.Buffer
	n := len(r.Nodes)
	b.WriteString("## Cluster scaling\n\n")
	for i, name := range r.Nodes {
		fmt.Fprintf(&b, "- Node %d: %s\n", i+1, mdText(name))
	}
	if r.SharedKeystore {
		b.WriteString("- Keystore: shared (the keys made on node 1 were usable on every node)\n\n")
	} else {
		b.WriteString("- Keystore: **not shared**: some nodes were given keys of their own (see the notes)\n\n")
	}
	writeRow(&b, []string{"phase", "nodes", "callers", "calls", "errors", "calls/s", "p50", "p99", "max"})
	writeRow(&b, []string{"---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:"})
	for _, p := range []struct {
		run   Run
		nodes int
	}{{r.One, 1}, {r.All, n}} {
		s := p.run.Summary
		writeRow(&b, []string{p.run.Name, strconv.Itoa(p.nodes), strconv.Itoa(p.run.Concurrency), strconv.FormatInt(s.Calls, 10),
			strconv.FormatInt(s.Errors, 10), fmt.Sprintf("%.1f", s.Throughput), msText(s.P50), msText(s.P99), msText(s.Max)})
	}
	b.WriteString("\nLatencies in milliseconds.\n\n")
	if sc := r.Scaling(); sc > 0 {
		fmt.Fprintf(&b, "**Scaling: %.2f** = throughput on %d nodes / throughput on node 1 alone (%d would be linear).\n\n", sc, n, n)
	} else {
		b.WriteString("**Scaling: not measured** (node 1 alone completed no call).\n\n")
	}
	var total int64
	for _, c := range r.NodeCalls {
		total += c
	}
	if total > 0 {
		b.WriteString("Calls per node in the all-nodes phase (warm-up included):")
		for i, c := range r.NodeCalls {
			sep := ","
			if i == 0 {
				sep = ""
			}
			fmt.Fprintf(&b, "%s node %d %d (%s)", sep, i+1, c, pctOf(c, total))
		}
		b.WriteString(".\n\n")
	}
	if len(r.Writes) > 0 {
		b.WriteString("## Control-plane writes\n\n")
		b.WriteString("Sequential writes, UpdateKeyDescription and TagResource alternately, each sent when the last answered.\n\n")
		writeRow(&b, []string{"writes to", "writes", "errors", "p50", "p99", "max"})
		writeRow(&b, []string{"---", "---:", "---:", "---:", "---:", "---:"})
		for _, run := range r.Writes {
			s := run.Summary
			writeRow(&b, []string{run.Name, strconv.FormatInt(s.Calls, 10), strconv.FormatInt(s.Errors, 10),
				msText(s.P50), msText(s.P99), msText(s.Max)})
		}
		b.WriteString("\nLatencies in milliseconds.\n\n")
	}
	if len(r.Notes) > 0 {
		b.WriteString("Notes:\n\n")
		for _, note := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", mdText(note))
		}
		b.WriteString("\n")
	}
	_, err := w.Write(b.Bytes())
	return err
}
