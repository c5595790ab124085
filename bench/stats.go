package bench

import (
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// Stats records the outcome of every call of one measurement window and
// condenses them into a [Summary]: counts, errors by code, throughput, latency
// percentiles and a per-second series for timeline plots.
//
// # How latencies are kept
//
// Latencies go into HDR histograms (github.com/HdrHistogram/hdrhistogram-go)
// at microsecond resolution from 1 µs to 60 s with 3 significant digits: any
// reported percentile is within 0.1% of a latency that was really recorded,
// whatever the number of calls, in constant memory. Latencies are rounded to
// the nearest microsecond; those under 1 µs count as 1 µs and those over 60 s
// count as 60 s in the percentiles. A percentile is reported as the top of
// its histogram bucket, but never above Max, which is exact.
//
// Only successful calls enter the latency percentiles and Max. A failed call
// is counted in Calls, in Errors and under its code in ErrorsByCode, but its
// latency is dropped: a fast rejection ("throttled", "connection refused")
// would otherwise make an overloaded system look quick.
//
// # Concurrency
//
// Record is called by every load-generating goroutine after every call, so
// it must not become the bottleneck it measures. Stats keeps a fixed array of
// shards (one per P, GOMAXPROCS rounded up to a power of two), each with its
// own mutex, counters and histogram. Record locks the shard its P used last
// (handed back by a sync.Pool, so the shard stays in that CPU's cache and
// the lock is almost never contended) and Summary merges them all. A Record
// costs well under 100 ns with every P recording; see BenchmarkStatsRecord.
//
// # The per-second series
//
// Each sample is also counted in the second of the window its Start falls in,
// with a coarser histogram per second (2 significant digits, 1%) from which
// the second's p99 is read. Shards keep the last few seconds locally and hand
// them to a shared per-second table when they move on. So that a long soak
// run does not keep one histogram per second for hours, a second older than
// two minutes (older than the 60 s histogram range, with margin) is settled:
// its p99 is computed once and its histogram reused. A call recorded after
// its second settled (it must have taken over two minutes) still counts in
// that second's Calls and Errors but not in its p99.
//
// Make one with NewStats. The zero Stats also works: its window starts at
// the Start of the first sample recorded.
type Stats struct {
	once   sync.Once
	start  time.Time
	shards []shard
	mask   uint32
	pool   sync.Pool     // of *shard: each P tends to get back the shard it used last
	next   atomic.Uint32 // round robin for shards the pool has none of

	// nextSweep is the second from which the next Record triggers a sweep
	// that settles old seconds; sweeping makes sure only one runs.
	nextSweep atomic.Int64
	sweeping  atomic.Bool
	maxSec    atomic.Int64 // the latest second a sample fell in

	mu      sync.Mutex // guards the fields below; taken after a shard's mutex, never before
	secs    map[int64]*secBucket
	settled int64 // seconds below this are settled
	free    []*hdr.Histogram
}

// Histogram geometry, in microseconds.
const (
	histLowest       = 1
	histHighest      = 60_000_000 // 60 s
	histDigits       = 3          // whole-window percentiles: 0.1%
	secDigits        = 2          // per-second p99: 1%
	ringLen          = 4          // seconds a shard keeps locally
	settleLag        = 120        // seconds behind the latest before a second settles
	sweepEvery       = 30         // seconds between sweeps
	maxShards        = 256
	maxSeriesSeconds = 31 * 24 * 3600
	cacheLinePad     = 64
	secondDuration   = int64(time.Second)
)

// shard is one independently locked part of a Stats.
type shard struct {
	mu     sync.Mutex
	calls  int64
	errors int64
	byCode map[string]int64
	hist   *hdr.Histogram // successful latencies, µs; nil until the first success
	max    time.Duration
	ring   [ringLen]slot
	_      [cacheLinePad]byte // keep neighbouring shards' mutexes off this cache line
}

// slot is one second as a shard holds it before handing it over.
type slot struct {
	sec    int64 // -1 when unused
	calls  int64
	errors int64
	hist   *hdr.Histogram // nil until the first success
}

// secBucket is one second in the shared table.
type secBucket struct {
	calls   int64
	errors  int64
	hist    *hdr.Histogram // nil when no success yet, or once settled
	p99     time.Duration  // once settled
	settled bool
}

// NewStats returns an empty Stats for a window beginning at start: the
// per-second series counts seconds from there.
func NewStats(start time.Time) *Stats {
	s := &Stats{}
	s.once.Do(func() { s.init(start) })
	return s
}

func (s *Stats) init(start time.Time) {
	n := 1
	for n < runtime.GOMAXPROCS(0) && n < maxShards {
		n <<= 1
	}
	s.start = start
	s.shards = make([]shard, n)
	s.mask = uint32(n - 1)
	s.secs = make(map[int64]*secBucket)
	for i := range s.shards {
		for j := range s.shards[i].ring {
			s.shards[i].ring[j].sec = -1
		}
	}
	s.nextSweep.Store(settleLag + sweepEvery)
	s.maxSec.Store(-1)
}

// toMicros converts a latency to the histogram's unit, rounded to the nearest
// microsecond and clamped to the histogram's range.
func toMicros(d time.Duration) int64 {
	us := (int64(d) + 500) / 1000
	return min(max(us, histLowest), histHighest)
}

// secondOf says which second of the window t falls in; times before the
// start count in second 0.
func (s *Stats) secondOf(t time.Time) int64 {
	d := t.Sub(s.start)
	if d < 0 {
		return 0
	}
	return int64(d) / secondDuration
}

// Record adds one call's outcome. It is safe for concurrent use.
func (s *Stats) Record(sm Sample) {
	s.once.Do(func() { s.init(sm.Start) })
	us := toMicros(sm.Latency)
	failed := sm.Err != ""
	sec := s.secondOf(sm.Start)

	sh := s.lockShard()
	sh.calls++
	if failed {
		sh.errors++
		if sh.byCode == nil {
			sh.byCode = make(map[string]int64)
		}
		sh.byCode[sm.Err]++
	} else {
		if sh.hist == nil {
			sh.hist = hdr.New(histLowest, histHighest, histDigits)
		}
		_ = sh.hist.RecordValue(us) // us is within range: cannot fail
		sh.max = max(sh.max, sm.Latency)
	}
	sl := &sh.ring[sec%ringLen]
	switch {
	case sl.sec == sec:
		sl.add(failed, us)
	case sl.sec < sec: // unused, or holding an older second: hand it over and reuse
		if sl.sec >= 0 {
			s.flush(sl)
		}
		sl.sec = sec
		sl.add(failed, us)
	default: // older than the seconds this shard keeps: straight to the table
		s.mu.Lock()
		b := s.bucket(sec)
		b.calls++
		if failed {
			b.errors++
		} else if !b.settled {
			if b.hist == nil {
				b.hist = s.newSecHist()
			}
			_ = b.hist.RecordValue(us)
		}
		s.mu.Unlock()
	}
	sh.mu.Unlock()
	s.pool.Put(sh)

	if sec > s.maxSec.Load() {
		s.raiseMaxSec(sec)
	}
	if sec >= s.nextSweep.Load() {
		s.sweep()
	}
}

// lockShard returns a locked shard, preferably the one this P used last,
// whose memory is still in this CPU's cache. sync.Pool keeps one per P; when
// it has none (the first calls, or after a garbage collection emptied it)
// the next shard in turn is handed out. Two goroutines can hold the same
// shard pointer, which is why it has a mutex: the pool only makes them rare.
func (s *Stats) lockShard() *shard {
	sh, _ := s.pool.Get().(*shard)
	if sh == nil {
		sh = &s.shards[s.next.Add(1)&s.mask]
	}
	sh.mu.Lock()
	return sh
}

func (s *Stats) raiseMaxSec(sec int64) {
	for {
		cur := s.maxSec.Load()
		if sec <= cur || s.maxSec.CompareAndSwap(cur, sec) {
			return
		}
	}
}

func (sl *slot) add(failed bool, us int64) {
	sl.calls++
	if failed {
		sl.errors++
		return
	}
	if sl.hist == nil {
		sl.hist = hdr.New(histLowest, histHighest, secDigits)
	}
	_ = sl.hist.RecordValue(us)
}

// flush moves a shard's slot into the shared table and empties it. The
// caller holds the shard's mutex.
func (s *Stats) flush(sl *slot) {
	s.mu.Lock()
	b := s.bucket(sl.sec)
	b.calls += sl.calls
	b.errors += sl.errors
	if sl.hist != nil && sl.hist.TotalCount() > 0 && !b.settled {
		if b.hist == nil {
			b.hist = s.newSecHist()
		}
		b.hist.Merge(sl.hist)
	}
	s.mu.Unlock()
	sl.sec, sl.calls, sl.errors = -1, 0, 0
	if sl.hist != nil {
		sl.hist.Reset()
	}
}

// bucket returns the table's entry for sec, creating it. The caller holds s.mu.
func (s *Stats) bucket(sec int64) *secBucket {
	b := s.secs[sec]
	if b == nil {
		b = &secBucket{settled: sec < s.settled}
		s.secs[sec] = b
	}
	return b
}

// newSecHist returns an empty per-second histogram. The caller holds s.mu.
func (s *Stats) newSecHist() *hdr.Histogram {
	if n := len(s.free); n > 0 {
		h := s.free[n-1]
		s.free = s.free[:n-1]
		return h
	}
	return hdr.New(histLowest, histHighest, secDigits)
}

// sweep settles the seconds more than settleLag behind the latest one seen
// (and behind the clock, so that a Start in the future cannot settle the
// present early): it flushes what shards still hold of them, computes their
// p99 and recycles their histograms.
func (s *Stats) sweep() {
	if !s.sweeping.CompareAndSwap(false, true) {
		return
	}
	defer s.sweeping.Store(false)
	latest := min(s.maxSec.Load(), s.secondOf(time.Now()))
	limit := latest - settleLag
	s.nextSweep.Store(s.maxSec.Load() + sweepEvery)
	if limit <= 0 {
		return
	}
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for j := range sh.ring {
			if sl := &sh.ring[j]; sl.sec >= 0 && sl.sec < limit {
				s.flush(sl)
			}
		}
		sh.mu.Unlock()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if limit <= s.settled {
		return
	}
	for sec, b := range s.secs {
		if sec >= limit || b.settled {
			continue
		}
		b.settled = true
		if b.hist != nil {
			b.p99 = time.Duration(b.hist.ValueAtQuantile(99)) * time.Microsecond
			b.hist.Reset()
			s.free = append(s.free, b.hist)
			b.hist = nil
		}
	}
	s.settled = limit
}

// Summary condenses what was recorded between the start given to NewStats
// and end. It may be called more than once, also while Records go on; each
// call sees every Record that returned before it began.
//
// Calls counts every call and Errors the failed ones, also by code.
// Throughput is successful calls per second of the window. The percentiles
// and Max are of successful calls only (see [Stats]); they are 0 when none
// succeeded.
//
// Series has one [Second] per elapsed second, the window's length rounded to
// whole seconds (at least one when the window is not empty): the last entry
// covers the remainder, between half a second and a second and a half, and
// its throughput is per second of that remainder. Samples that started
// before the window count in its first second, those that started after its
// end in its last. A window longer than 31 days has no Series (it would
// take more memory than it is worth); its other fields are complete.
func (s *Stats) Summary(end time.Time) Summary {
	s.once.Do(func() { s.init(end) })
	total := hdr.New(histLowest, histHighest, histDigits)
	sum := Summary{Duration: max(end.Sub(s.start), 0)}
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		sum.Calls += sh.calls
		sum.Errors += sh.errors
		for code, n := range sh.byCode {
			if sum.ErrorsByCode == nil {
				sum.ErrorsByCode = make(map[string]int64)
			}
			sum.ErrorsByCode[code] += n
		}
		if sh.hist != nil {
			total.Merge(sh.hist)
		}
		sum.Max = max(sum.Max, sh.max)
		for j := range sh.ring {
			if sl := &sh.ring[j]; sl.sec >= 0 {
				s.flush(sl)
			}
		}
		sh.mu.Unlock()
	}
	if total.TotalCount() > 0 {
		q := total.ValueAtPercentilesSlice([]float64{50, 90, 99, 99.9})
		sum.P50 = time.Duration(q[0]) * time.Microsecond
		sum.P90 = time.Duration(q[1]) * time.Microsecond
		sum.P99 = time.Duration(q[2]) * time.Microsecond
		sum.P999 = time.Duration(q[3]) * time.Microsecond
		// A percentile is reported as the top of its histogram bucket, which
		// can lie just above the largest latency seen; Max is exact.
		sum.P50, sum.P90, sum.P99, sum.P999 = min(sum.P50, sum.Max), min(sum.P90, sum.Max), min(sum.P99, sum.Max), min(sum.P999, sum.Max)
	}
	if secs := sum.Duration.Seconds(); secs > 0 {
		sum.Throughput = float64(sum.Calls-sum.Errors) / secs
	}
	sum.Series = s.series(sum.Duration)
	return sum
}

// series builds the per-second entries of a window of length d.
func (s *Stats) series(d time.Duration) []Second {
	if d <= 0 {
		return nil
	}
	n := max(int64(math.Round(d.Seconds())), 1)
	if n > maxSeriesSeconds {
		return nil
	}
	out := make([]Second, n)
	hists := make([]*hdr.Histogram, n) // where several table entries fold into one
	settledP99 := make([]time.Duration, n)

	s.mu.Lock()
	for sec, b := range s.secs {
		i := min(sec, n-1)
		out[i].Calls += b.calls
		out[i].Errors += b.errors
		switch {
		case b.settled:
			settledP99[i] = max(settledP99[i], b.p99)
		case b.hist != nil && b.hist.TotalCount() > 0:
			if hists[i] == nil {
				hists[i] = hdr.New(histLowest, histHighest, secDigits)
			}
			hists[i].Merge(b.hist)
		}
	}
	s.mu.Unlock()

	for i := range out {
		out[i].At = time.Duration(i) * time.Second
		p99 := settledP99[i]
		if h := hists[i]; h != nil {
			p99 = max(p99, time.Duration(h.ValueAtQuantile(99))*time.Microsecond)
		}
		out[i].P99 = p99
		width := time.Second
		if int64(i) == n-1 {
			width = d - out[i].At
		}
		out[i].Throughput = float64(out[i].Calls-out[i].Errors) / width.Seconds()
	}
	return out
}
