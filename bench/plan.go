package bench

import (
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// DefaultHeadroom is the spare capacity MakePlan provisions above the
// target: 0.2 means the planned slots must model 120% of the target rate,
// so that a slot can fail, or the load spike by a fifth, without the pool
// saturating.
const DefaultHeadroom = 0.2

// Plan is a capacity plan: how many HSM slots, and so how many nodes, carry
// a target rate according to a Universal Scalability Law fit of throughput
// against slots.
//
// The plan is only as good as the fit. The model predicts throughput, not
// latency: the p99 bound is checked against what was measured (see Notes),
// never predicted.
type Plan struct {
	TargetRPS    float64       `json:"target_rps"`             // calls per second to carry
	P99Bound     time.Duration `json:"p99_bound_ns,omitempty"` // 0: none given
	SlotsPerNode int           `json:"slots_per_node"`
	Slots        int           `json:"slots"`        // the smallest N with X(N) ≥ TargetRPS × (1 + Headroom)
	Nodes        int           `json:"nodes"`        // ⌈Slots / SlotsPerNode⌉
	PerSlotRPS   float64       `json:"per_slot_rps"` // X(Slots) / Slots: what each slot carries at capacity
	Headroom     float64       `json:"headroom"`     // the fraction provisioned above the target
	Fit          *USLFit       `json:"fit"`
	Notes        []string      `json:"notes,omitempty"` // what to know before trusting the numbers
}

// Planner makes plans with a chosen headroom. The zero Planner plans with
// no headroom at all; MakePlan uses DefaultHeadroom.
// MaxExtrapolation is how far past the largest pool measured a plan may
// go: a plan needing more slots than this many times the largest measured
// pool is refused rather than extrapolated.
const MaxExtrapolation = 100

type Planner struct {
	// Headroom is the fraction of the target provisioned on top of it:
	// the planned slots must model TargetRPS × (1 + Headroom). ≥ 0.
	Headroom float64
}

// MakePlan plans with DefaultHeadroom; see [Planner.Make].
func MakePlan(fit *USLFit, targetRPS float64, p99 time.Duration, runs []Run, slotsPerNode int) (*Plan, error) {
	return Planner{Headroom: DefaultHeadroom}.Make(fit, targetRPS, p99, runs, slotsPerNode)
}

// Make plans for targetRPS from fit, a fit of throughput against the number
// of HSM slots N: it finds the smallest whole N whose modelled throughput
// X(N) is at least targetRPS × (1 + Headroom), and the nodes that hold that
// many slots at slotsPerNode each.
//
// Below its peak the law is increasing, so that N is found by bisection on
// [1, peak]. Past the peak adding slots lowers throughput, so when the
// target (or the target with headroom) is above the peak Make refuses with
// an error that says so: no number of slots reaches it, and what has to
// change is the contention (σ) or coherency (κ) that the fit measured.
//
// runs are the measurements; those with a known slot count (Run.Slots > 0)
// are used to note whether their measured p99 stayed within the p99 bound
// (0 for none). Notes also flag a poor fit and a plan beyond the measured
// range of slots.
func (pl Planner) Make(fit *USLFit, targetRPS float64, p99 time.Duration, runs []Run, slotsPerNode int) (*Plan, error) {
	switch {
	case fit == nil:
		return nil, errors.New("plan: no USL fit")
	case !(fit.Lambda > 0) || math.IsInf(fit.Lambda, 0):
		return nil, fmt.Errorf("plan: the fit's λ must be a positive number, have %v", fit.Lambda)
	case !(fit.Sigma >= 0) || !(fit.Kappa >= 0) || math.IsInf(fit.Sigma, 0) || math.IsInf(fit.Kappa, 0):
		return nil, fmt.Errorf("plan: the fit's σ and κ must be finite and ≥ 0, have %v and %v", fit.Sigma, fit.Kappa)
	case !(targetRPS > 0) || math.IsInf(targetRPS, 0):
		return nil, fmt.Errorf("plan: the target rate must be a positive number, have %v", targetRPS)
	case !(pl.Headroom >= 0) || math.IsInf(pl.Headroom, 0):
		return nil, fmt.Errorf("plan: headroom must be a finite fraction ≥ 0, have %v", pl.Headroom)
	case slotsPerNode < 1:
		return nil, fmt.Errorf("plan: slots per node must be ≥ 1, have %d", slotsPerNode)
	case p99 < 0:
		return nil, fmt.Errorf("plan: the p99 bound must be ≥ 0, have %v", p99)
	}
	need := targetRPS * (1 + pl.Headroom)

	// The highest whole number of slots worth having, and its throughput.
	peakN, _ := fit.Peak()
	hi, hiX := math.Inf(1), math.Inf(1)
	if !math.IsInf(peakN, 1) {
		lo := math.Max(math.Floor(peakN), 1)
		hi, hiX = lo, fit.Throughput(lo)
		if up := math.Ceil(peakN); fit.Throughput(up) > hiX {
			hi, hiX = up, fit.Throughput(up)
		}
	} else if fit.Sigma > 0 {
		hiX = fit.Lambda / fit.Sigma // approached, never reached
	}
	// Can some pool size model v? With κ = 0 < σ, λ/σ is a limit that no
	// finite pool reaches.
	asymptote := math.IsInf(hi, 1) && !math.IsInf(hiX, 1)
	reaches := func(v float64) bool { return v < hiX || v == hiX && !asymptote }
	where := fmt.Sprintf("at %s", countOf(int(min(hi, math.MaxInt32)), "slot"))
	if math.IsInf(hi, 1) {
		where = "(approached as the pool grows, never reached)"
	}
	if !reaches(targetRPS) {
		why := "past the peak more slots make it slower (coherency, κ)"
		switch {
		case asymptote:
			why = "contention (σ) caps throughput at λ/σ however many slots are added"
		case fit.Sigma >= 1:
			why = "with σ ≥ 1 the work is fully serialised and extra slots add nothing"
		}
		return nil, fmt.Errorf("plan: the target %s is above the model's peak of %s %s (λ=%.4g σ=%.3g κ=%.3g): "+
			"%s, so no pool size reaches the target; reduce the contention or coherency cost instead",
			fmtRate(targetRPS), fmtRate(hiX), where, fit.Lambda, fit.Sigma, fit.Kappa, why)
	}
	if !reaches(need) {
		return nil, fmt.Errorf("plan: the target %s with %.0f%% headroom needs %s, above the model's peak of %s %s: "+
			"no pool size gives that headroom; reduce the contention or coherency cost, or accept less headroom",
			fmtRate(targetRPS), pl.Headroom*100, fmtRate(need), fmtRate(hiX), where)
	}

	// Where X is unbounded or only approaches its limit, find a large
	// enough N by doubling.
	if math.IsInf(hi, 1) {
		hi = 1
		for fit.Throughput(hi) < need {
			if hi *= 2; hi > 1<<40 {
				return nil, fmt.Errorf("plan: the target %s needs more than %g slots", fmtRate(need), hi)
			}
		}
	}
	// Bisect for the smallest N in [1, hi] with X(N) ≥ need; X is
	// increasing there.
	lo := 1.0
	if fit.Throughput(lo) < need {
		for hi-lo > 1 {
			mid := math.Floor((lo + hi) / 2)
			if fit.Throughput(mid) >= need {
				hi = mid
			} else {
				lo = mid
			}
		}
		lo = hi
	}
	if lo > math.MaxInt32 {
		return nil, fmt.Errorf("plan: the target %s needs %g slots", fmtRate(need), lo)
	}
	n := int(lo)
	x := fit.Throughput(lo)
	p := &Plan{
		TargetRPS:    targetRPS,
		P99Bound:     p99,
		SlotsPerNode: slotsPerNode,
		Slots:        n,
		Nodes:        (n + slotsPerNode - 1) / slotsPerNode,
		PerSlotRPS:   x / float64(n),
		Headroom:     pl.Headroom,
		Fit:          fit,
	}
	p.Notes = append(p.Notes, fmt.Sprintf("the model gives %s at %s, %.0f%% above the target %s (%.0f%% headroom asked); "+
		"at %d slots per node that is %s",
		fmtRate(x), countOf(n, "slot"), (x/targetRPS-1)*100, fmtRate(targetRPS), pl.Headroom*100,
		slotsPerNode, countOf(p.Nodes, "node")))
	if fit.R2 < 0.9 && len(fit.Points) > 0 {
		p.Notes = append(p.Notes, fmt.Sprintf("the fit is poor (R²=%.2f): the measurements do not follow the law closely, so treat the plan as rough", fit.R2))
	}
	if len(fit.Points) > 0 {
		maxN := fit.Points[0].N
		for _, pt := range fit.Points {
			maxN = math.Max(maxN, pt.N)
		}
		if float64(n) > MaxExtrapolation*maxN {
			return nil, fmt.Errorf("plan: the target %s needs %s by the fit, more than %d times the largest pool measured (%g): "+
				"a fit of %d measurements can't say that much; measure larger pools",
				fmtRate(need), countOf(n, "slot"), MaxExtrapolation, maxN, len(fit.Points))
		}
		if float64(n) > maxN {
			p.Notes = append(p.Notes, fmt.Sprintf("%s is beyond the largest pool measured (%g): the plan extrapolates the fit; measure at %d slots before relying on it",
				countOf(n, "slot"), maxN, n))
		}
	}
	p.Notes = append(p.Notes, p99Notes(p99, runs, n)...)
	return p, nil
}

// WriteText writes the plan for a terminal: the answer first, then the
// model it came from and the notes that qualify it.
func (p *Plan) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s on %s (%d slots per node)\n", countOf(p.Slots, "slot"), countOf(p.Nodes, "node"), p.SlotsPerNode)
	fmt.Fprintf(&b, "  target      %s with %.0f%% headroom", fmtRate(p.TargetRPS), p.Headroom*100)
	if p.P99Bound > 0 {
		fmt.Fprintf(&b, ", p99 ≤ %v", p.P99Bound)
	}
	fmt.Fprintf(&b, "\n  per slot    %s at that size\n", fmtRate(p.PerSlotRPS))
	if f := p.Fit; f != nil {
		fmt.Fprintf(&b, "  model       X(N) = λN / (1 + σ(N−1) + κN(N−1)), λ=%.4g σ=%.4g κ=%.4g R²=%.3f\n", f.Lambda, f.Sigma, f.Kappa, f.R2)
		if n, x := f.Peak(); !math.IsInf(n, 1) {
			fmt.Fprintf(&b, "  peak        %s at N*=%.1f\n", fmtRate(x), n)
		}
	}
	for _, n := range p.Notes {
		fmt.Fprintf(&b, "  - %s\n", n)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// p99Notes says whether the measured p99 stayed within bound, slot count by
// slot count, and what that means for a plan of n slots.
func p99Notes(bound time.Duration, runs []Run, n int) []string {
	if bound == 0 {
		return []string{"no p99 bound was given: latency was not checked"}
	}
	bySlots := map[int][]Run{}
	for _, r := range runs {
		if r.Slots > 0 && r.Summary.Calls > r.Summary.Errors {
			bySlots[r.Slots] = append(bySlots[r.Slots], r)
		}
	}
	if len(bySlots) == 0 {
		return []string{fmt.Sprintf("no run with a known slot count and successful calls: the p99 bound of %v was not checked", bound)}
	}
	slots := make([]int, 0, len(bySlots))
	for s := range bySlots {
		slots = append(slots, s)
	}
	slices.Sort(slots)
	var parts []string
	for _, s := range slots {
		rs := bySlots[s]
		worst, over := rs[0], 0
		for _, r := range rs {
			if r.Summary.P99 > worst.Summary.P99 {
				worst = r
			}
			if r.Summary.P99 > bound {
				over++
			}
		}
		worstP99 := worst.Summary.P99.Round(10 * time.Microsecond)
		if over == 0 {
			parts = append(parts, fmt.Sprintf("held at %s (%s, worst %v in %q)",
				countOf(s, "slot"), countOf(len(rs), "run"), worstP99, worst.Name))
		} else {
			parts = append(parts, fmt.Sprintf("exceeded at %s in %d of %s (worst %v in %q)",
				countOf(s, "slot"), over, countOf(len(rs), "run"), worstP99, worst.Name))
		}
	}
	notes := []string{fmt.Sprintf("p99 bound %v, measured: %s", bound, strings.Join(parts, "; "))}
	if _, ok := bySlots[n]; !ok {
		notes = append(notes, fmt.Sprintf("no run measured %s: the model predicts throughput only, so measure p99 there at the target rate", countOf(n, "slot")))
	}
	return notes
}

// fmtRate formats calls per second.
func fmtRate(x float64) string {
	if math.IsInf(x, 1) {
		return "unbounded calls/s"
	}
	return fmt.Sprintf("%.0f calls/s", x)
}

// countOf formats a count and a noun, adding an s when n is not 1.
func countOf(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
