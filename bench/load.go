package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Options are common to every load shape.
type Options struct {
	// Warmup runs the load before measuring: connections, sessions and key
	// caches fill. Zero means 2s.
	Warmup time.Duration
	// Duration is the measured window. Zero means 10s.
	Duration time.Duration
	// Progress, when set, is called about once a second while a window runs
	// (warm-up included) with the calls made so far in it.
	Progress func(p Progress)
	// CPU measures client and server CPU around each window; nil measures
	// the client only.
	CPU *CPUProbe
	// Slots is recorded in each Run (the pool size, when the caller knows).
	Slots int
}

// Progress is a live view of a running window.
type Progress struct {
	Run     string
	Phase   string // "warm-up" or "measure"
	Elapsed time.Duration
	Total   time.Duration
	Calls   int64
	Errors  int64
}

func (o *Options) defaults() {
	if o.Warmup <= 0 {
		o.Warmup = 2 * time.Second
	}
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
}

// caller runs one goroutine's calls: it picks operations from the mix and
// checks one result in CheckEvery.
type caller struct {
	t      Target
	picker *Picker
	rng    *rand.Rand
	every  int
	n      int
}

func newCaller(t Target, w *Workload, seed uint64) *caller {
	return &caller{t: t, picker: NewPicker(w.Mix), rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), every: w.CheckEvery}
}

// call runs one operation and reports its op, error code and whether it was
// checked.
func (c *caller) call(ctx context.Context) (Op, string, bool) {
	op := c.picker.Pick(c.rng)
	c.n++
	check := c.every > 0 && c.n%c.every == 0
	err := c.t.Do(ctx, op, check)
	return op, ErrorCode(err), check
}

// window counts what a measured window saw beyond latencies.
type window struct {
	stats    *Stats
	calls    atomic.Int64
	errs     atomic.Int64
	checked  atomic.Int64
	failures atomic.Int64
}

func (w *window) record(start time.Time, op Op, code string, checked bool) {
	lat := time.Since(start)
	w.calls.Add(1)
	if code != "" {
		w.errs.Add(1)
	}
	if checked {
		w.checked.Add(1)
		if code == CodeWrongResult {
			w.failures.Add(1)
		}
	}
	if w.stats != nil {
		w.stats.Record(Sample{Start: start, Latency: lat, Op: op, Err: code})
	}
}

// ticker reports progress about once a second until stop is closed.
func ticker(o *Options, run, phase string, total time.Duration, w *window, stop <-chan struct{}) {
	if o.Progress == nil {
		return
	}
	begin := time.Now()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			o.Progress(Progress{Run: run, Phase: phase, Elapsed: time.Since(begin), Total: total, Calls: w.calls.Load(), Errors: w.errs.Load()})
		}
	}
}

// Closed runs the workload at a fixed concurrency: each of n callers sends
// its next call as soon as the last one answers.
func Closed(ctx context.Context, t Target, w *Workload, n int, o Options) (Run, error) {
	if n < 1 {
		return Run{}, errors.New("bench: concurrency must be at least 1")
	}
	o.defaults()
	name := fmt.Sprintf("closed c=%d", n)
	callers := make([]*caller, n)
	for i := range callers {
		callers[i] = newCaller(t, w, uint64(i+1))
	}
	drive := func(d time.Duration, win *window, phase string) {
		ctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		stop := make(chan struct{})
		go ticker(&o, name, phase, d, win, stop)
		var wg sync.WaitGroup
		for _, c := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !deadlinePassed(ctx) {
					start := time.Now()
					op, code, checked := c.call(ctx)
					if code != "" && deadlinePassed(ctx) {
						return // the window closed on this call: not a result
					}
					win.record(start, op, code, checked)
				}
			}()
		}
		wg.Wait()
		close(stop)
	}
	drive(o.Warmup, &window{}, "warm-up")
	run, err := measure(ctx, t, w, o, name, "closed", func(win *window) { drive(o.Duration, win, "measure") })
	run.Concurrency = n
	return run, err
}

// measure runs drive as the measured window, with CPU probes around it,
// and makes the Run.
func measure(ctx context.Context, t Target, w *Workload, o Options, name, shape string, drive func(*window)) (Run, error) {
	win := &window{}
	start := time.Now()
	win.stats = NewStats(start)
	cpu0, err := o.CPU.read()
	if err != nil {
		return Run{}, err
	}
	drive(win)
	end := time.Now()
	cpu1, err := o.CPU.read()
	if err != nil {
		return Run{}, err
	}
	run := Run{
		Name: name, Target: t.Name(), Client: t.Client(), Workload: w.MixString(), Shape: shape, Slots: o.Slots,
		Summary: win.stats.Summary(end), Checked: win.checked.Load(), CheckFailures: win.failures.Load(),
	}
	if ok := run.Summary.Calls - run.Summary.Errors; ok > 0 {
		run.ClientCPUPerOp = (cpu1.client - cpu0.client) / time.Duration(ok)
		if cpu0.serverSeen && cpu1.serverSeen {
			run.ServerCPUPerOp = (cpu1.server - cpu0.server) / time.Duration(ok)
		}
	}
	if run.CheckFailures > 0 {
		return run, fmt.Errorf("bench: %s: %d of %d checked results were wrong", name, run.CheckFailures, run.Checked)
	}
	return run, ctx.Err()
}

// Sweep runs Closed at each concurrency level in turn.
func Sweep(ctx context.Context, t Target, w *Workload, levels []int, o Options) ([]Run, error) {
	var runs []Run
	for _, n := range levels {
		run, err := Closed(ctx, t, w, n, o)
		run.Shape = "sweep"
		run.Name = fmt.Sprintf("sweep c=%d", n)
		runs = append(runs, run)
		if err != nil {
			return runs, err
		}
	}
	return runs, nil
}

// Levels returns 1, 2, 4 … up to max (and max itself).
func Levels(max int) []int {
	var out []int
	for n := 1; n < max; n *= 2 {
		out = append(out, n)
	}
	return append(out, max)
}

// CodeOverload is the error code of an arrival the open loop could not
// send because every one of its callers was busy: the target is past
// saturation.
const CodeOverload = "Overload"

// Open sends calls at a fixed arrival rate, whatever the answers' latency,
// from at most maxInFlight callers at a time. Latency is measured from when
// a call was due, not when a caller got to it, so a slow target shows as
// latency instead of as fewer calls (no coordinated omission). An arrival
// that finds every caller busy and a second of backlog queued is counted as
// an Overload error.
func Open(ctx context.Context, t Target, w *Workload, rate float64, maxInFlight int, o Options) (Run, error) {
	if rate <= 0 || math.IsInf(rate, 0) || math.IsNaN(rate) {
		return Run{}, errors.New("bench: the arrival rate must be positive")
	}
	if maxInFlight < 1 {
		maxInFlight = 1024
	}
	o.defaults()
	name := fmt.Sprintf("open %.0f/s", rate)
	backlog := int(math.Max(rate, 1)) // about a second of arrivals
	drive := func(d time.Duration, win *window, phase string) {
		ctx, cancel := context.WithTimeout(ctx, d+5*time.Second)
		defer cancel()
		due := make(chan time.Time, backlog)
		stop := make(chan struct{})
		go ticker(&o, name, phase, d, win, stop)
		var wg sync.WaitGroup
		for i := 0; i < maxInFlight; i++ {
			wg.Add(1)
			c := newCaller(t, w, uint64(i+1))
			go func() {
				defer wg.Done()
				for at := range due {
					op, code, checked := c.call(ctx)
					win.record(at, op, code, checked)
				}
			}()
		}
		Schedule(time.Now(), rate, d, func(at time.Time) {
			select {
			case due <- at:
			default:
				win.record(at, "", CodeOverload, false)
			}
		})
		close(due)
		wg.Wait()
		close(stop)
	}
	drive(o.Warmup, &window{}, "warm-up")
	run, err := measure(ctx, t, w, o, name, "open", func(win *window) { drive(o.Duration, win, "measure") })
	run.Rate, run.Concurrency = rate, maxInFlight
	return run, err
}

// Schedule calls fire at the arrival times of a fixed-rate schedule from
// begin for d: begin, begin+1/rate, begin+2/rate … It sleeps until each
// arrival is due, and when it falls behind it fires the late arrivals at
// once with their due times, so the schedule never drifts.
func Schedule(begin time.Time, rate float64, d time.Duration, fire func(due time.Time)) int {
	interval := time.Duration(float64(time.Second) / rate)
	n := 0
	for i := 0; ; i++ {
		at := begin.Add(time.Duration(i) * interval)
		if at.Sub(begin) >= d {
			return n
		}
		if wait := time.Until(at); wait > 0 {
			time.Sleep(wait)
		}
		fire(at)
		n++
	}
}

// FindMax looks for the highest arrival rate whose p99 stays under bound
// with under 1% errors: it raises the rate by half from start until a step
// fails, then bisects between the last good and the first bad rate for
// steps more rounds. Every step is an Open run, returned in order.
func FindMax(ctx context.Context, t Target, w *Workload, bound time.Duration, start float64, maxInFlight, steps int, o Options) (best float64, runs []Run, err error) {
	good := func(r Run) bool {
		s := r.Summary
		return s.Calls > 0 && s.P99 <= bound && float64(s.Errors) <= 0.01*float64(s.Calls)
	}
	try := func(rate float64) (bool, error) {
		r, err := Open(ctx, t, w, rate, maxInFlight, o)
		r.Shape, r.Name = "find-max", fmt.Sprintf("find-max %.0f/s", rate)
		runs = append(runs, r)
		return err == nil && good(r), err
	}
	lo, hi := 0.0, start
	for {
		ok, err := try(hi)
		if err != nil {
			return lo, runs, err
		}
		if !ok {
			break
		}
		lo, hi = hi, hi*1.5
		if len(runs) > 30 {
			return lo, runs, errors.New("bench: find-max did not find a limit in 30 steps")
		}
	}
	for i := 0; i < steps && hi-lo > lo*0.02; i++ {
		mid := (lo + hi) / 2
		ok, err := try(mid)
		if err != nil {
			return lo, runs, err
		}
		if ok {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo, runs, nil
}
