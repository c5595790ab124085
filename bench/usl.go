package bench

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"gonum.org/v1/gonum/optimize"
)

// USLFit is Neil Gunther's Universal Scalability Law fitted to measured
// throughput. The law models the throughput X of a system at load or size N
// (concurrency, or here usually the number of HSM slots) as
//
//	X(N) = λN / (1 + σ(N−1) + κN(N−1))
//
// λ (Lambda) is the throughput of one unit alone, in calls per second: with
// σ = κ = 0 throughput would grow linearly as λN. σ (Sigma) is contention:
// the share of the work that is serialised (a lock, a single queue), which
// caps throughput at λ/σ however large N grows (Amdahl's law). κ (Kappa) is
// coherency or crosstalk: the cost of the units keeping each other
// consistent, which grows with the number of pairs N(N−1) and makes
// throughput fall again past a peak at N* = √((1−σ)/κ). Both are ≥ 0.
//
// R2 is the coefficient of determination of the fit on X (1 is a perfect
// fit, 0 no better than the mean), and Points the measurements it was made
// from, sorted by N.
type USLFit struct {
	Lambda float64    `json:"lambda"`
	Sigma  float64    `json:"sigma"`
	Kappa  float64    `json:"kappa"`
	R2     float64    `json:"r2"`
	Points []USLPoint `json:"points"`
}

// USLPoint is one measurement: throughput X (calls per second) at N.
type USLPoint struct {
	N float64 `json:"n"`
	X float64 `json:"x"`
}

// FitUSL fits the Universal Scalability Law to points by nonlinear least
// squares on X, with λ > 0 and σ, κ ≥ 0.
//
// The model is linear in λ, so for any (σ, κ) the best λ has a closed form;
// the fit therefore only searches (σ, κ) ("variable projection"). A
// logarithmic grid over the plausible range of both finds the right basin,
// whatever the scale of N, and Nelder–Mead (gonum's optimize package) then
// refines it; finally a σ or κ that does not measurably improve the fit is
// set to exactly 0, so that linear data reads as linear.
//
// It needs at least 3 points with distinct N, every N ≥ 1, every X ≥ 0 and
// finite, and some X > 0; it returns an error otherwise.
func FitUSL(points []USLPoint) (*USLFit, error) {
	if len(points) < 3 {
		return nil, fmt.Errorf("usl: need at least 3 points, have %d", len(points))
	}
	pts := slices.Clone(points)
	slices.SortStableFunc(pts, func(a, b USLPoint) int {
		switch {
		case a.N < b.N:
			return -1
		case a.N > b.N:
			return 1
		}
		return 0
	})
	distinct, anyX := 0, false
	for i, p := range pts {
		if math.IsNaN(p.N) || math.IsInf(p.N, 0) || p.N < 1 {
			return nil, fmt.Errorf("usl: N must be a finite number ≥ 1, have %v", p.N)
		}
		if math.IsNaN(p.X) || math.IsInf(p.X, 0) || p.X < 0 {
			return nil, fmt.Errorf("usl: X must be a finite number ≥ 0, have %v at N=%v", p.X, p.N)
		}
		if i == 0 || p.N != pts[i-1].N {
			distinct++
		}
		anyX = anyX || p.X > 0
	}
	if distinct < 3 {
		return nil, fmt.Errorf("usl: need at least 3 distinct values of N, have %d", distinct)
	}
	if !anyX {
		return nil, errors.New("usl: every throughput is 0: nothing to fit")
	}

	m := uslModel{pts: pts}
	maxN := pts[len(pts)-1].N

	// Grid: σ and κ on logarithmic scales (plus 0), κ's range set by maxN so
	// that the peak N* = √(1/κ) sweeps from far below to far beyond the data.
	sigmas := append([]float64{0}, logspace(1e-4/maxN, 2, 49)...)
	kappas := append([]float64{0}, logspace(1e-3/(maxN*maxN), 1, 61)...)
	best := [2]float64{0, 0}
	bestSSE := math.Inf(1)
	for _, s := range sigmas {
		for _, k := range kappas {
			if sse, _ := m.sse(s, k); sse < bestSSE {
				bestSSE, best = sse, [2]float64{s, k}
			}
		}
	}

	// Refine with Nelder–Mead in scaled square-root coordinates: σ = (u·sσ)²
	// and κ = (v·sκ)² keep both ≥ 0 without bounds and make both
	// coordinates of order 1 at the start.
	scale := func(v, smallest float64) (s, start float64) {
		if v > 0 {
			return math.Sqrt(v), 1
		}
		return math.Sqrt(smallest), 0
	}
	sS, u0 := scale(best[0], sigmas[1])
	sK, v0 := scale(best[1], kappas[1])
	params := func(x []float64) (float64, float64) {
		return (x[0] * sS) * (x[0] * sS), (x[1] * sK) * (x[1] * sK)
	}
	res, err := optimize.Minimize(optimize.Problem{
		Func: func(x []float64) float64 {
			sse, _ := m.sse(params(x))
			return sse
		},
	}, []float64{u0, v0}, &optimize.Settings{
		FuncEvaluations: 4000,
		Converger: &optimize.FunctionConverge{
			Absolute:   1e-12 * (bestSSE + 1e-300),
			Relative:   1e-12,
			Iterations: 200,
		},
	}, &optimize.NelderMead{})
	sigma, kappa := best[0], best[1]
	if err == nil && res != nil && res.F <= bestSSE {
		sigma, kappa = params(res.X)
		bestSSE = res.F
	}

	// Prefer exact zeros where they cost nothing measurable.
	tol := bestSSE*1e-6 + 1e-12*m.sumSq()
	if sse, _ := m.sse(sigma, 0); kappa > 0 && sse <= bestSSE+tol {
		kappa = 0
	}
	if sse, _ := m.sse(0, kappa); sigma > 0 && sse <= bestSSE+tol {
		sigma = 0
	}
	sse, lambda := m.sse(sigma, kappa)
	if !(lambda > 0) || math.IsNaN(sse) {
		return nil, errors.New("usl: the fit did not converge to a positive λ")
	}
	return &USLFit{
		Lambda: lambda,
		Sigma:  sigma,
		Kappa:  kappa,
		R2:     m.r2(sse),
		Points: pts,
	}, nil
}

// uslModel holds the data of a fit.
type uslModel struct{ pts []USLPoint }

// sse returns the sum of squared residuals at (σ, κ) with the best λ for
// them, and that λ.
func (m uslModel) sse(sigma, kappa float64) (sse, lambda float64) {
	var gx, gg float64
	for _, p := range m.pts {
		g := p.N / (1 + sigma*(p.N-1) + kappa*p.N*(p.N-1))
		gx += g * p.X
		gg += g * g
	}
	if gg == 0 {
		return math.Inf(1), 0
	}
	lambda = gx / gg
	for _, p := range m.pts {
		r := p.X - lambda*p.N/(1+sigma*(p.N-1)+kappa*p.N*(p.N-1))
		sse += r * r
	}
	return sse, lambda
}

func (m uslModel) sumSq() float64 {
	var s float64
	for _, p := range m.pts {
		s += p.X * p.X
	}
	return s
}

// r2 is 1 − SSE/SST. With all X equal (SST = 0) it is 1 for an exact fit
// and 0 otherwise.
func (m uslModel) r2(sse float64) float64 {
	var mean float64
	for _, p := range m.pts {
		mean += p.X
	}
	mean /= float64(len(m.pts))
	var sst float64
	for _, p := range m.pts {
		sst += (p.X - mean) * (p.X - mean)
	}
	if sst == 0 {
		if sse <= 1e-12*m.sumSq() {
			return 1
		}
		return 0
	}
	return 1 - sse/sst
}

// logspace returns n values from lo to hi evenly spaced on a log scale.
func logspace(lo, hi float64, n int) []float64 {
	out := make([]float64, n)
	a, b := math.Log(lo), math.Log(hi)
	for i := range out {
		out[i] = math.Exp(a + (b-a)*float64(i)/float64(n-1))
	}
	return out
}

// Throughput is the modelled throughput at n: λn / (1 + σ(n−1) + κn(n−1)).
// It is 0 for n ≤ 0, NaN n or a nil fit.
func (u *USLFit) Throughput(n float64) float64 {
	if u == nil || !(n > 0) {
		return 0
	}
	if math.IsInf(n, 1) {
		switch {
		case u.Kappa > 0:
			return 0
		case u.Sigma > 0:
			return u.Lambda / u.Sigma
		}
		return math.Inf(1)
	}
	d := 1 + u.Sigma*(n-1) + u.Kappa*n*(n-1)
	if d <= 0 {
		return 0
	}
	return u.Lambda * n / d
}

// Peak returns where the modelled throughput is highest and that throughput.
//
// With κ > 0 throughput rises to a peak at N* = √((1−σ)/κ) and falls after
// it: adding units past N* makes the system slower. With σ ≥ 1 it never
// rises above one unit's, so the peak is at N = 1. With κ = 0 it rises for
// ever, towards λ/σ (σ > 0) or without bound (σ = 0): Peak returns N = +Inf
// and that limit.
func (u *USLFit) Peak() (n, x float64) {
	switch {
	case u == nil:
		return 0, 0
	case u.Sigma >= 1:
		return 1, u.Throughput(1)
	case u.Kappa > 0:
		n = max(math.Sqrt((1-u.Sigma)/u.Kappa), 1)
		return n, u.Throughput(n)
	case u.Sigma > 0:
		return math.Inf(1), u.Lambda / u.Sigma
	}
	return math.Inf(1), math.Inf(1)
}
