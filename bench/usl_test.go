package bench

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// uslPoints samples the law at ns with multiplicative noise of the given
// relative standard deviation (0 for none), from a fixed seed.
func uslPoints(lambda, sigma, kappa float64, ns []float64, noise float64, seed uint64) []USLPoint {
	truth := USLFit{Lambda: lambda, Sigma: sigma, Kappa: kappa}
	r := rand.New(rand.NewPCG(seed, 1))
	pts := make([]USLPoint, len(ns))
	for i, n := range ns {
		pts[i] = USLPoint{N: n, X: truth.Throughput(n) * (1 + noise*r.NormFloat64())}
	}
	return pts
}

func closeTo(got, want, rel, abs float64) bool {
	return math.Abs(got-want) <= rel*math.Abs(want)+abs
}

func TestUSLRecoversParameters(t *testing.T) {
	ns := []float64{1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64}
	cases := []struct {
		name                 string
		lambda, sigma, kappa float64
	}{
		{"contention and coherency", 1000, 0.05, 0.0005},
		{"strong coherency", 250, 0.02, 0.004},
		{"contention only", 500, 0.1, 0},
		{"linear", 800, 0, 0},
		{"hsm slots", 1800, 0.03, 0.0002},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fit, err := FitUSL(uslPoints(c.lambda, c.sigma, c.kappa, ns, 0, 1))
			if err != nil {
				t.Fatal(err)
			}
			if !closeTo(fit.Lambda, c.lambda, 1e-3, 0) || !closeTo(fit.Sigma, c.sigma, 1e-2, 1e-5) || !closeTo(fit.Kappa, c.kappa, 1e-2, 1e-7) {
				t.Errorf("fit λ=%g σ=%g κ=%g, want %g %g %g", fit.Lambda, fit.Sigma, fit.Kappa, c.lambda, c.sigma, c.kappa)
			}
			if fit.R2 < 0.99999 {
				t.Errorf("R² = %g on exact data", fit.R2)
			}
			if c.sigma == 0 && fit.Sigma != 0 || c.kappa == 0 && fit.Kappa != 0 {
				t.Errorf("zero parameter not snapped to 0: σ=%g κ=%g", fit.Sigma, fit.Kappa)
			}
		})
	}
}

func TestUSLNoisy(t *testing.T) {
	// 2% noise on 3 measurements per point, as a sweep would give.
	var ns []float64
	for _, n := range []float64{1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64} {
		ns = append(ns, n, n, n)
	}
	const lambda, sigma, kappa = 1000.0, 0.05, 0.0005
	truth := USLFit{Lambda: lambda, Sigma: sigma, Kappa: kappa}
	wantN, wantX := truth.Peak()
	for seed := uint64(1); seed <= 5; seed++ {
		fit, err := FitUSL(uslPoints(lambda, sigma, kappa, ns, 0.02, seed))
		if err != nil {
			t.Fatal(err)
		}
		if !closeTo(fit.Lambda, lambda, 0.05, 0) || !closeTo(fit.Sigma, sigma, 0.3, 0.005) || !closeTo(fit.Kappa, kappa, 0.3, 0) {
			t.Errorf("seed %d: λ=%g σ=%g κ=%g, want ≈ %g %g %g", seed, fit.Lambda, fit.Sigma, fit.Kappa, lambda, sigma, kappa)
		}
		n, x := fit.Peak()
		if !closeTo(n, wantN, 0.15, 0) || !closeTo(x, wantX, 0.03, 0) {
			t.Errorf("seed %d: peak %g at N=%g, want %g at %g", seed, x, n, wantX, wantN)
		}
		if fit.R2 < 0.95 {
			t.Errorf("seed %d: R² = %g", seed, fit.R2)
		}
	}
}

func TestUSLDegenerate(t *testing.T) {
	cases := []struct {
		name string
		pts  []USLPoint
		want string
	}{
		{"none", nil, "at least 3 points"},
		{"two", []USLPoint{{1, 10}, {2, 20}}, "at least 3 points"},
		{"repeated N", []USLPoint{{1, 10}, {2, 20}, {2, 21}, {1, 9}}, "distinct"},
		{"zero N", []USLPoint{{0, 10}, {2, 20}, {3, 30}}, "N must be"},
		{"NaN X", []USLPoint{{1, 10}, {2, math.NaN()}, {3, 30}}, "X must be"},
		{"negative X", []USLPoint{{1, 10}, {2, -1}, {3, 30}}, "X must be"},
		{"infinite N", []USLPoint{{1, 10}, {math.Inf(1), 1}, {3, 30}}, "N must be"},
		{"all zero", []USLPoint{{1, 0}, {2, 0}, {3, 0}}, "every throughput is 0"},
	}
	for _, c := range cases {
		fit, err := FitUSL(c.pts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: FitUSL = %+v, %v; want error containing %q", c.name, fit, err, c.want)
		}
	}
}

func TestUSLFlatAndRetrograde(t *testing.T) {
	// Flat: one unit's throughput whatever N (fully serialised, σ = 1).
	fit, err := FitUSL([]USLPoint{{1, 100}, {2, 100}, {4, 100}, {8, 100}})
	if err != nil {
		t.Fatal(err)
	}
	if n, x := fit.Peak(); !closeTo(x, 100, 1e-3, 0) || math.IsInf(n, 0) {
		t.Errorf("flat: peak %g at %g, fit %+v", x, n, fit)
	}
	// Input order does not matter; Points come back sorted.
	fit, err = FitUSL(uslPoints(1000, 0.05, 0.0005, []float64{64, 1, 16, 4, 32, 2, 8}, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(fit.Points); i++ {
		if fit.Points[i].N < fit.Points[i-1].N {
			t.Fatalf("points not sorted: %v", fit.Points)
		}
	}
}

func TestUSLThroughputAndPeak(t *testing.T) {
	u := &USLFit{Lambda: 100, Sigma: 0.1, Kappa: 0.01}
	if got := u.Throughput(1); got != 100 {
		t.Errorf("X(1) = %g, want λ", got)
	}
	n, x := u.Peak()
	if want := math.Sqrt(0.9 / 0.01); math.Abs(n-want) > 1e-9 {
		t.Errorf("N* = %g, want %g", n, want)
	}
	if x < u.Throughput(n-0.5) || x < u.Throughput(n+0.5) {
		t.Errorf("peak %g is not a maximum", x)
	}
	for _, bad := range []float64{0, -1, math.NaN()} {
		if got := u.Throughput(bad); got != 0 {
			t.Errorf("X(%g) = %g, want 0", bad, got)
		}
	}
	if n, x := (&USLFit{Lambda: 100, Sigma: 0.25}).Peak(); !math.IsInf(n, 1) || x != 400 {
		t.Errorf("κ=0 peak = %g at %g, want λ/σ=400 at +Inf", x, n)
	}
	if n, x := (&USLFit{Lambda: 100}).Peak(); !math.IsInf(n, 1) || !math.IsInf(x, 1) {
		t.Errorf("linear peak = %g at %g, want +Inf", x, n)
	}
	var nilFit *USLFit
	if nilFit.Throughput(3) != 0 {
		t.Error("nil fit throughput")
	}
	if n, x := nilFit.Peak(); n != 0 || x != 0 {
		t.Error("nil fit peak")
	}
}
