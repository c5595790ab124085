package bench

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeTarget answers after a fixed delay: enough to test the load shapes'
// scheduling and accounting without a KMS. (End-to-end runs against the
// real gateway and pool are in the e2e test.)
type fakeTarget struct {
	delay   time.Duration
	calls   atomic.Int64
	checked atomic.Int64
	wrong   bool
	mu      sync.Mutex
	sem     chan struct{} // limits concurrent service when set
}

func (f *fakeTarget) Name() string                             { return "fake" }
func (f *fakeTarget) Client() string                           { return "fake" }
func (f *fakeTarget) Prepare(context.Context, *Workload) error { return nil }
func (f *fakeTarget) Close() error                             { return nil }
func (f *fakeTarget) Do(ctx context.Context, op Op, check bool) error {
	if f.sem != nil {
		select {
		case f.sem <- struct{}{}:
			defer func() { <-f.sem }()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.calls.Add(1)
	select {
	case <-time.After(f.delay):
	case <-ctx.Done():
		return ctx.Err()
	}
	if check {
		f.checked.Add(1)
		if f.wrong {
			return ErrWrongResult
		}
	}
	return nil
}

func testWorkload(t *testing.T) *Workload {
	w := &Workload{CheckEvery: 10}
	if err := w.Defaults(); err != nil {
		t.Fatal(err)
	}
	return w
}

func TestScheduleKeepsTheRate(t *testing.T) {
	begin := time.Now()
	var got []time.Time
	n := Schedule(begin, 200, 500*time.Millisecond, func(at time.Time) { got = append(got, at) })
	if n != 100 || len(got) != 100 {
		t.Fatalf("fired %d arrivals in 0.5s at 200/s, want 100", n)
	}
	for i, at := range got {
		if want := begin.Add(time.Duration(i) * 5 * time.Millisecond); !at.Equal(want) {
			t.Fatalf("arrival %d due %v, want %v", i, at.Sub(begin), want.Sub(begin))
		}
	}
	// Falling behind does not drift: a slow fire still gets the due times.
	got = got[:0]
	Schedule(begin, 1000, 20*time.Millisecond, func(at time.Time) {
		got = append(got, at)
		time.Sleep(2 * time.Millisecond)
	})
	if len(got) != 20 || !got[19].Equal(begin.Add(19*time.Millisecond)) {
		t.Fatalf("late arrivals lost their due times: %d arrivals", len(got))
	}
}

func TestClosedCountsAndChecks(t *testing.T) {
	f := &fakeTarget{delay: time.Millisecond}
	run, err := Closed(context.Background(), f, testWorkload(t), 4, Options{Warmup: 50 * time.Millisecond, Duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s := run.Summary
	if s.Calls < 100 || s.Errors != 0 || run.Concurrency != 4 {
		t.Fatalf("closed run: %+v", run)
	}
	if run.Checked == 0 || run.Checked > s.Calls/5 {
		t.Fatalf("checked %d of %d calls, want about one in ten", run.Checked, s.Calls)
	}
	// Four callers at ~1ms each: about 4000/s.
	if s.Throughput < 1000 || s.Throughput > 4500 {
		t.Errorf("throughput %.0f/s", s.Throughput)
	}
	if run.ClientCPUPerOp <= 0 {
		t.Error("client CPU per op not measured")
	}
}

func TestWrongResultsFailTheRun(t *testing.T) {
	f := &fakeTarget{delay: 100 * time.Microsecond, wrong: true}
	run, err := Closed(context.Background(), f, testWorkload(t), 2, Options{Warmup: 10 * time.Millisecond, Duration: 100 * time.Millisecond})
	if err == nil || run.CheckFailures == 0 {
		t.Fatalf("wrong results passed: %v %+v", err, run)
	}
}

// A target slower than the arrival rate shows as growing latency measured
// from when calls were due, and as Overload once the backlog is full.
func TestOpenLoopSeesQueueing(t *testing.T) {
	// Service capacity: one call at a time, 4ms each = 250/s.
	f := &fakeTarget{delay: 4 * time.Millisecond, sem: make(chan struct{}, 1)}
	run, err := Open(context.Background(), f, testWorkload(t), 100, 8, Options{Warmup: 10 * time.Millisecond, Duration: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// No absolute bound on latency (the machine may be busy): under
	// capacity nothing fails, and over it the latency is many times worse.
	if run.Summary.Errors != 0 {
		t.Fatalf("under capacity (100/s of 250/s): p99 %v, errors %d", run.Summary.P99, run.Summary.Errors)
	}
	over, err := Open(context.Background(), f, testWorkload(t), 1000, 8, Options{Warmup: 10 * time.Millisecond, Duration: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if over.Summary.P99 < 50*time.Millisecond {
		t.Fatalf("over capacity (1000/s of 250/s) p99 is only %v: coordinated omission", over.Summary.P99)
	}
	if over.Summary.Throughput > 300 {
		t.Fatalf("throughput %.0f/s above the service's capacity", over.Summary.Throughput)
	}
}

func TestFindMax(t *testing.T) {
	// Capacity: 4 concurrent calls of 2ms = 2000/s; p99 bound 20ms.
	f := &fakeTarget{delay: 2 * time.Millisecond, sem: make(chan struct{}, 4)}
	best, runs, err := FindMax(context.Background(), f, testWorkload(t), 20*time.Millisecond, 200, 64, 3,
		Options{Warmup: 10 * time.Millisecond, Duration: 300 * time.Millisecond})
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if best < 500 || best > 2200 || len(runs) < 3 {
		t.Fatalf("find-max gave %.0f/s after %d runs, want between 500 and 2200", best, len(runs))
	}
	if math.IsNaN(best) {
		t.Fatal("NaN")
	}
}

func TestLevels(t *testing.T) {
	got := Levels(12)
	want := []int{1, 2, 4, 8, 12}
	if len(got) != len(want) {
		t.Fatalf("%v", got)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%v", got)
		}
	}
}
