package bench

import (
	"math"
	"strings"
	"testing"
	"time"
)

// smallestN is the brute-force answer a plan must match.
func smallestN(fit *USLFit, need float64) int {
	for n := 1; n < 1<<20; n++ {
		if fit.Throughput(float64(n)) >= need {
			return n
		}
	}
	return -1
}

func syntheticFit(lambda, sigma, kappa float64, maxN float64) *USLFit {
	f := &USLFit{Lambda: lambda, Sigma: sigma, Kappa: kappa, R2: 0.998}
	for n := 1.0; n <= maxN; n *= 2 {
		f.Points = append(f.Points, USLPoint{N: n, X: f.Throughput(n)})
	}
	return f
}

func TestPlanSmallestPool(t *testing.T) {
	fit := syntheticFit(1000, 0.05, 0.0005, 64) // peak ≈ 10.7k/s at N ≈ 44
	for _, target := range []float64{100, 800, 1000, 5000, 8000} {
		p, err := MakePlan(fit, target, 0, nil, 4)
		if err != nil {
			t.Fatalf("target %g: %v", target, err)
		}
		want := smallestN(fit, target*1.2)
		if p.Slots != want {
			t.Errorf("target %g: %d slots, want %d", target, p.Slots, want)
		}
		if p.Nodes != (want+3)/4 {
			t.Errorf("target %g: %d nodes for %d slots at 4 per node", target, p.Nodes, want)
		}
		if got := p.PerSlotRPS * float64(p.Slots); math.Abs(got-fit.Throughput(float64(want))) > 1e-6 {
			t.Errorf("per slot %g × %d ≠ X(N)", p.PerSlotRPS, p.Slots)
		}
		if p.Headroom != DefaultHeadroom || p.TargetRPS != target || p.SlotsPerNode != 4 || p.Fit != fit {
			t.Errorf("plan fields %+v", p)
		}
		if len(p.Notes) == 0 || !strings.Contains(p.Notes[0], "slot") {
			t.Errorf("notes %q", p.Notes)
		}
	}
}

func TestPlanHeadroomField(t *testing.T) {
	fit := syntheticFit(1000, 0, 0, 16) // linear: N = ⌈need / λ⌉
	for _, c := range []struct {
		headroom float64
		want     int
	}{{0, 10}, {0.2, 12}, {0.5, 15}} {
		p, err := Planner{Headroom: c.headroom}.Make(fit, 10_000, 0, nil, 8)
		if err != nil {
			t.Fatal(err)
		}
		if p.Slots != c.want || p.Headroom != c.headroom || p.Nodes != (c.want+7)/8 {
			t.Errorf("headroom %g: %d slots on %d nodes, want %d", c.headroom, p.Slots, p.Nodes, c.want)
		}
	}
}

func TestPlanRefusesAbovePeak(t *testing.T) {
	fit := syntheticFit(1000, 0.05, 0.0005, 64)
	_, peak := fit.Peak()
	_, err := MakePlan(fit, peak*1.01, 0, nil, 4)
	if err == nil || !strings.Contains(err.Error(), "above the model's peak") || !strings.Contains(err.Error(), "no pool size") {
		t.Errorf("above peak: %v", err)
	}
	// Reachable, but not with 20% headroom.
	_, err = MakePlan(fit, peak*0.9, 0, nil, 4)
	if err == nil || !strings.Contains(err.Error(), "headroom") || !strings.Contains(err.Error(), "peak") {
		t.Errorf("headroom above peak: %v", err)
	}
	if p, err := (Planner{}).Make(fit, peak*0.9, 0, nil, 4); err != nil || p.Slots != smallestN(fit, peak*0.9) {
		t.Errorf("no headroom: %+v %v", p, err)
	}
	// Contention only: λ/σ = 5000 is approached, never reached.
	capped := syntheticFit(500, 0.1, 0, 64)
	if _, err := (Planner{}).Make(capped, 5000, 0, nil, 4); err == nil || !strings.Contains(err.Error(), "λ/σ") {
		t.Errorf("at the asymptote: %v", err)
	}
	if p, err := (Planner{}).Make(capped, 4900, 0, nil, 4); err != nil || p.Slots != smallestN(capped, 4900) {
		t.Errorf("near the asymptote: %+v %v", p, err)
	}
	// Fully serialised.
	flat := &USLFit{Lambda: 100, Sigma: 1}
	if _, err := MakePlan(flat, 101, 0, nil, 1); err == nil || !strings.Contains(err.Error(), "serialised") {
		t.Errorf("flat: %v", err)
	}
}

func TestPlanNotes(t *testing.T) {
	fit := syntheticFit(1000, 0.05, 0.0005, 8)
	runs := []Run{
		{Name: "s1 c=8", Slots: 1, Summary: Summary{Calls: 100, P99: 5 * time.Millisecond}},
		{Name: "s2 c=16", Slots: 2, Summary: Summary{Calls: 100, P99: 8 * time.Millisecond}},
		{Name: "s8 c=16", Slots: 8, Summary: Summary{Calls: 100, P99: 12 * time.Millisecond}},
		{Name: "s8 c=64", Slots: 8, Summary: Summary{Calls: 100, P99: 31 * time.Millisecond}},
		{Name: "no slots", Summary: Summary{Calls: 100, P99: time.Second}},
		{Name: "all failed", Slots: 4, Summary: Summary{Calls: 100, Errors: 100}},
	}
	p, err := MakePlan(fit, 8000, 20*time.Millisecond, runs, 4)
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(p.Notes, "\n")
	for _, want := range []string{
		"held at 1 slot", "held at 2 slots", "exceeded at 8 slots in 1 of 2 runs", `"s8 c=64"`,
		"beyond the largest pool measured (8)", "no run measured " + countOf(p.Slots, "slot"),
	} {
		if !strings.Contains(all, want) {
			t.Errorf("notes lack %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, "no slots") || strings.Contains(all, "all failed") {
		t.Errorf("notes use runs without slots or successes:\n%s", all)
	}

	p, err = MakePlan(fit, 1000, 0, runs, 4)
	if err != nil || !strings.Contains(strings.Join(p.Notes, "\n"), "no p99 bound") {
		t.Errorf("no bound: %v %q", err, p.Notes)
	}
	p, err = MakePlan(fit, 1000, time.Millisecond, nil, 4)
	if err != nil || !strings.Contains(strings.Join(p.Notes, "\n"), "was not checked") {
		t.Errorf("no runs: %v %q", err, p.Notes)
	}
	poor := *fit
	poor.R2 = 0.5
	p, err = MakePlan(&poor, 1000, 0, nil, 4)
	if err != nil || !strings.Contains(strings.Join(p.Notes, "\n"), "poor") {
		t.Errorf("poor fit: %v %q", err, p.Notes)
	}
}

func TestPlanBadInput(t *testing.T) {
	fit := syntheticFit(1000, 0.05, 0.0005, 64)
	cases := []struct {
		name string
		pl   Planner
		fit  *USLFit
		rps  float64
		p99  time.Duration
		spn  int
		want string
	}{
		{"nil fit", Planner{}, nil, 100, 0, 1, "no USL fit"},
		{"zero λ", Planner{}, &USLFit{}, 100, 0, 1, "λ"},
		{"negative σ", Planner{}, &USLFit{Lambda: 1, Sigma: -1}, 100, 0, 1, "σ and κ"},
		{"NaN κ", Planner{}, &USLFit{Lambda: 1, Kappa: math.NaN()}, 100, 0, 1, "σ and κ"},
		{"zero target", Planner{}, fit, 0, 0, 1, "target rate"},
		{"NaN target", Planner{}, fit, math.NaN(), 0, 1, "target rate"},
		{"infinite target", Planner{}, fit, math.Inf(1), 0, 1, "target rate"},
		{"negative headroom", Planner{Headroom: -0.1}, fit, 100, 0, 1, "headroom"},
		{"no slots per node", Planner{}, fit, 100, 0, 0, "slots per node"},
		{"negative p99", Planner{}, fit, 100, -1, 1, "p99"},
	}
	for _, c := range cases {
		p, err := c.pl.Make(c.fit, c.rps, c.p99, nil, c.spn)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %+v, %v; want error containing %q", c.name, p, err, c.want)
		}
	}
}

func TestPlanWriteText(t *testing.T) {
	fit := syntheticFit(1000, 0.05, 0.0005, 64)
	p, err := MakePlan(fit, 5000, 20*time.Millisecond, nil, 4)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := p.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{countOf(p.Slots, "slot") + " on " + countOf(p.Nodes, "node"), "20% headroom", "p99 ≤ 20ms", "λ=1000", "peak", p.Notes[0]} {
		if !strings.Contains(out, want) {
			t.Errorf("text lacks %q:\n%s", want, out)
		}
	}
}

// A linear fit plans anything, but a plan far past the measured pools is
// refused rather than extrapolated; within reach it is made, with a note.
func TestPlanRefusesFarExtrapolation(t *testing.T) {
	linear := &USLFit{Lambda: 1000, Points: []USLPoint{{N: 1, X: 1000}, {N: 2, X: 2000}, {N: 4, X: 4000}}}
	if _, err := (Planner{}).Make(linear, 1e12, 0, nil, 4); err == nil || !strings.Contains(err.Error(), "largest pool measured") {
		t.Fatalf("a plan for 1e12 calls/s from pools of 1 to 4 slots: %v", err)
	}
	p, err := (Planner{}).Make(linear, 40_000, 0, nil, 4)
	if err != nil || p.Slots != 40 || !strings.Contains(strings.Join(p.Notes, " "), "beyond the largest pool measured") {
		t.Fatalf("a plan 10 times past the measurements: %+v %v", p, err)
	}
}
