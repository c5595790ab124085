package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// syntheticSamples returns n samples over the first `secs` seconds after
// start with log-normal latencies (median 2 ms, a long tail) and about 5%
// failures, whose latencies are tiny so that counting them would show.
func syntheticSamples(start time.Time, n int, secs float64, seed uint64) []Sample {
	r := rand.New(rand.NewPCG(seed, 2))
	out := make([]Sample, n)
	for i := range out {
		sm := Sample{
			Start:   start.Add(time.Duration(r.Float64() * secs * float64(time.Second))),
			Latency: time.Duration(2e6 * math.Exp(1.2*r.NormFloat64())),
			Op:      OpEncrypt,
		}
		if r.IntN(20) == 0 {
			sm.Err = []string{"ThrottlingException", "KMSInternalException"}[r.IntN(2)]
			sm.Latency = time.Duration(r.IntN(50)) * time.Microsecond
		}
		out[i] = sm
	}
	return out
}

// checkQuantile checks an HDR percentile against the brute-force sorted
// latencies: it must lie between the neighbouring ranks' values, widened by
// the histogram's precision (rel) and the microsecond rounding.
func checkQuantile(t *testing.T, name string, got time.Duration, sorted []time.Duration, q, rel float64) {
	t.Helper()
	rank := int(math.Ceil(q * float64(len(sorted)))) // nearest rank, 1-based
	lo := sorted[max(rank-2, 0)]
	hi := sorted[min(rank, len(sorted)-1)]
	slack := func(d time.Duration) time.Duration { return time.Duration(float64(d)*rel) + time.Microsecond }
	if got < lo-slack(lo) || got > hi+slack(hi) {
		t.Errorf("%s = %v, brute force %v (neighbours %v..%v)", name, got, sorted[rank-1], lo, hi)
	}
}

func successLatencies(samples []Sample) []time.Duration {
	var ok []time.Duration
	for _, sm := range samples {
		if sm.Err == "" {
			ok = append(ok, sm.Latency)
		}
	}
	slices.Sort(ok)
	return ok
}

func TestStatsPercentilesMatchBruteForce(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	samples := syntheticSamples(start, 100_000, 10, 1)
	s := NewStats(start)
	for _, sm := range samples {
		s.Record(sm)
	}
	sum := s.Summary(start.Add(10 * time.Second))

	ok := successLatencies(samples)
	byCode := map[string]int64{}
	for _, sm := range samples {
		if sm.Err != "" {
			byCode[sm.Err]++
		}
	}
	if sum.Calls != int64(len(samples)) || sum.Errors != int64(len(samples)-len(ok)) {
		t.Errorf("calls %d errors %d, want %d %d", sum.Calls, sum.Errors, len(samples), len(samples)-len(ok))
	}
	if len(sum.ErrorsByCode) != len(byCode) {
		t.Errorf("errors by code %v, want %v", sum.ErrorsByCode, byCode)
	}
	for code, n := range byCode {
		if sum.ErrorsByCode[code] != n {
			t.Errorf("errors %s = %d, want %d", code, sum.ErrorsByCode[code], n)
		}
	}
	if want := float64(len(ok)) / 10; math.Abs(sum.Throughput-want) > 1e-9 {
		t.Errorf("throughput %g, want %g", sum.Throughput, want)
	}
	if sum.Duration != 10*time.Second {
		t.Errorf("duration %v", sum.Duration)
	}
	checkQuantile(t, "p50", sum.P50, ok, 0.50, 1e-3)
	checkQuantile(t, "p90", sum.P90, ok, 0.90, 1e-3)
	checkQuantile(t, "p99", sum.P99, ok, 0.99, 1e-3)
	checkQuantile(t, "p99.9", sum.P999, ok, 0.999, 1e-3)
	if want := ok[len(ok)-1]; sum.Max != want {
		t.Errorf("max %v, want exactly %v", sum.Max, want)
	}
	// The failures were all under 50 µs: had they counted, p50 would be lower
	// than every successful latency's median. A cheap sanity check on top of
	// the brute-force comparison, which excluded them.
	if sum.P50 < time.Millisecond {
		t.Errorf("p50 %v: failed calls leaked into the percentiles", sum.P50)
	}
}

func TestStatsErrorsOnly(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	s := NewStats(start)
	for i := range 10 {
		s.Record(Sample{Start: start.Add(time.Duration(i) * 100 * time.Millisecond), Latency: time.Second, Err: "AccessDeniedException"})
	}
	sum := s.Summary(start.Add(time.Second))
	if sum.Calls != 10 || sum.Errors != 10 || sum.ErrorsByCode["AccessDeniedException"] != 10 {
		t.Errorf("counts %+v", sum)
	}
	if sum.P50 != 0 || sum.P99 != 0 || sum.Max != 0 || sum.Throughput != 0 {
		t.Errorf("failures leaked into latency or throughput: %+v", sum)
	}
	if len(sum.Series) != 1 || sum.Series[0].Errors != 10 || sum.Series[0].P99 != 0 || sum.Series[0].Throughput != 0 {
		t.Errorf("series %+v", sum.Series)
	}
}

func TestStatsEmpty(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	s := NewStats(start)
	sum := s.Summary(start) // zero-length window
	if sum.Calls != 0 || sum.Throughput != 0 || sum.Series != nil || sum.ErrorsByCode != nil {
		t.Errorf("empty summary %+v", sum)
	}
	sum = s.Summary(start.Add(-time.Second)) // end before start: no panic, nothing
	if sum.Duration != 0 || sum.Series != nil {
		t.Errorf("negative window %+v", sum)
	}
	sum = s.Summary(start.Add(3 * time.Second))
	if len(sum.Series) != 3 || sum.Series[2].Calls != 0 {
		t.Errorf("idle window series %+v", sum.Series)
	}
}

func TestStatsConcurrentRecord(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	samples := syntheticSamples(start, 40_000, 5, 3)
	seq := NewStats(start)
	for _, sm := range samples {
		seq.Record(sm)
	}
	par := NewStats(start)
	const workers = 8
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(samples); i += workers {
				par.Record(samples[i])
			}
		})
	}
	// Summaries taken while recording goes on must not race or lose data.
	for range 3 {
		_ = par.Summary(start.Add(5 * time.Second))
	}
	wg.Wait()
	end := start.Add(5 * time.Second)
	a, b := seq.Summary(end), par.Summary(end)
	// Histograms merge exactly, so the order and the goroutine of each
	// Record cannot change anything.
	if a.Calls != b.Calls || a.Errors != b.Errors || a.P50 != b.P50 || a.P99 != b.P99 || a.P999 != b.P999 || a.Max != b.Max {
		t.Errorf("sequential %+v\nconcurrent %+v", a, b)
	}
	if !slices.Equal(a.Series, b.Series) {
		t.Errorf("series differ:\n%v\n%v", a.Series, b.Series)
	}
}

func TestStatsSeriesBucketing(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	const d = 4*time.Second + 300*time.Millisecond // rounds to 4 seconds; the last covers 3 s .. 4.3 s
	s := NewStats(start)
	type want struct {
		calls, errors int64
		lat           []time.Duration
	}
	wants := make([]want, 4)
	add := func(at time.Duration, lat time.Duration, errCode string) {
		s.Record(Sample{Start: start.Add(at), Latency: lat, Err: errCode})
		i := min(max(int(at/time.Second), 0), 3)
		wants[i].calls++
		if errCode != "" {
			wants[i].errors++
		} else {
			wants[i].lat = append(wants[i].lat, lat)
		}
	}
	r := rand.New(rand.NewPCG(4, 4))
	for sec := range 4 {
		for range 500 * (sec + 1) {
			at := time.Duration(sec)*time.Second + time.Duration(r.Int64N(int64(time.Second)))
			add(at, time.Duration(sec+1)*time.Millisecond+time.Duration(r.Int64N(int64(time.Millisecond))), "")
		}
		add(time.Duration(sec)*time.Second, time.Hour, "Timeout") // excluded from p99 and throughput
	}
	add(-2*time.Second, 5*time.Millisecond, "")         // before the window: first second
	add(4200*time.Millisecond, 7*time.Millisecond, "")  // in the remainder: last second
	add(9*time.Second, 8*time.Millisecond, "")          // after the end: last second
	add(500*time.Millisecond, 10*time.Second, "")       // a slow outlier in second 0
	add(500*time.Millisecond, 2*time.Minute, "")        // beyond the histogram's range: 60 s in percentiles
	add(1500*time.Millisecond, 100*time.Nanosecond, "") // below it: 1 µs

	sum := s.Summary(start.Add(d))
	if len(sum.Series) != 4 {
		t.Fatalf("series has %d seconds, want 4: %+v", len(sum.Series), sum.Series)
	}
	for i, sec := range sum.Series {
		w := wants[i]
		if sec.At != time.Duration(i)*time.Second || sec.Calls != w.calls || sec.Errors != w.errors {
			t.Errorf("second %d: %+v, want calls %d errors %d", i, sec, w.calls, w.errors)
		}
		width := 1.0
		if i == 3 {
			width = 1.3
		}
		if want := float64(len(w.lat)) / width; math.Abs(sec.Throughput-want) > 1e-6 {
			t.Errorf("second %d: throughput %g, want %g", i, sec.Throughput, want)
		}
		slices.Sort(w.lat)
		for j := range w.lat {
			w.lat[j] = min(w.lat[j], 60*time.Second)
		}
		checkQuantile(t, "second p99", sec.P99, w.lat, 0.99, 1e-2)
	}
	if sum.Max != 2*time.Minute {
		t.Errorf("max %v, want the exact 2m", sum.Max)
	}
}

func TestStatsSettlesOldSeconds(t *testing.T) {
	// A soak run: 400 s of samples, recorded as fast as the test can. The
	// window began 400 s ago so the clock agrees that these seconds are past.
	const secs = 400
	start := time.Now().Add(-secs * time.Second)
	s := NewStats(start)
	lat := func(sec, i int) time.Duration {
		return time.Duration(sec+1)*time.Millisecond + time.Duration(i)*time.Microsecond
	}
	for sec := range secs {
		for i := range 100 {
			// Slightly out of order across seconds, as in-flight calls are.
			at := time.Duration(sec)*time.Second + time.Duration(i)*10*time.Millisecond
			s.Record(Sample{Start: start.Add(at), Latency: lat(sec, i)})
		}
	}
	// A call that started in second 5 and is recorded long after it settled.
	s.Record(Sample{Start: start.Add(5 * time.Second), Latency: 59 * time.Second})

	s.mu.Lock()
	settled := s.settled
	s.mu.Unlock()
	if settled < secs-settleLag-sweepEvery {
		t.Errorf("settled below %d, want at least %d", settled, secs-settleLag-sweepEvery)
	}
	sum := s.Summary(start.Add(secs * time.Second))
	if len(sum.Series) != secs {
		t.Fatalf("%d seconds", len(sum.Series))
	}
	for sec, got := range sum.Series {
		want := int64(100)
		if sec == 5 {
			want = 101
		}
		if got.Calls != want {
			t.Errorf("second %d: %d calls, want %d", sec, got.Calls, want)
		}
		var ls []time.Duration
		for i := range 100 {
			ls = append(ls, lat(sec, i))
		}
		checkQuantile(t, "settled p99", got.P99, ls, 0.99, 1e-2)
	}
	if sum.Calls != secs*100+1 {
		t.Errorf("calls %d", sum.Calls)
	}
}

// BenchmarkStatsRecord measures Record with every P recording at once, as
// the load generator's workers do. Start comes from the clock (read once
// every 256 calls, to measure Record rather than time.Now), so that the
// workers move through the seconds together as real ones do.
func BenchmarkStatsRecord(b *testing.B) {
	s := NewStats(time.Now())
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(rand.Uint64(), 0))
		var i int
		now := time.Now()
		for pb.Next() {
			i++
			if i%256 == 0 {
				now = time.Now()
			}
			sm := Sample{Start: now, Latency: time.Duration(500+r.IntN(5000)) * time.Microsecond, Op: OpEncrypt}
			if i%100 == 0 {
				sm.Err = "ThrottlingException"
			}
			s.Record(sm)
		}
	})
}

func TestStatsZeroValueAndHugeWindow(t *testing.T) {
	var s Stats
	start := time.Unix(1_700_000_000, 0)
	s.Record(Sample{Start: start.Add(500 * time.Millisecond), Latency: time.Millisecond})
	s.Record(Sample{Start: start.Add(1500 * time.Millisecond), Latency: 2 * time.Millisecond})
	sum := s.Summary(start.Add(2500 * time.Millisecond))
	if sum.Calls != 2 || sum.Duration != 2*time.Second || len(sum.Series) != 2 || sum.Series[0].Calls != 1 {
		t.Errorf("zero Stats: %+v", sum)
	}
	// An end far in the future must not allocate a series for it.
	sum = s.Summary(start.Add(100 * 365 * 24 * time.Hour))
	if sum.Calls != 2 || sum.Series != nil {
		t.Errorf("century-long window: calls %d, %d seconds of series", sum.Calls, len(sum.Series))
	}
	var empty Stats
	if sum := empty.Summary(time.Now()); sum.Calls != 0 || sum.Series != nil {
		t.Errorf("empty zero Stats: %+v", sum)
	}
}
