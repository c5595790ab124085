package bench

import (
	"errors"
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// The plots are drawn with gonum.org/v1/plot. Each function writes one
// file whose format follows its extension: .png (rendered at 144 dpi, for
// reading on screen and pasting anywhere), .svg (vector, for the web), and
// also .pdf, .eps, .jpg/.jpeg and .tif/.tiff.

const (
	plotWidth   = 8 * vg.Inch
	panelHeight = 3 * vg.Inch
	pngDPI      = 144
)

// PlotScaling draws throughput and p99 latency against concurrency, one
// above the other on a shared x axis: the knee where throughput stops
// growing is where latency starts climbing (Little's law). It is meant for
// a concurrency sweep: runs without a concurrency or without calls are
// left out, and runs that differ in target, client, workload, shape or slot
// count are drawn as separate lines. The x axis is logarithmic when the
// concurrencies span a factor of 8 or more. It needs at least two distinct
// concurrencies.
func PlotScaling(runs []Run, path string) error {
	var rs []Run
	for _, r := range runs {
		if r.Concurrency > 0 && r.Summary.Calls > 0 {
			rs = append(rs, r)
		}
	}
	conc := map[int]bool{}
	for _, r := range rs {
		conc[r.Concurrency] = true
	}
	if len(conc) < 2 {
		return fmt.Errorf("plot scaling: need runs at 2 or more distinct concurrencies, have %d", len(conc))
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for c := range conc {
		lo, hi = math.Min(lo, float64(c)), math.Max(hi, float64(c))
	}
	logX := hi/lo >= 8

	groups, labels := groupRuns(rs)
	tp := newPlot("Throughput and p99 latency against concurrency", "", "successful calls/s")
	lat := newPlot("", "concurrency (calls in flight)", "p99 latency (ms)")
	for i, g := range groups {
		slices.SortStableFunc(g, func(a, b Run) int { return a.Concurrency - b.Concurrency })
		xt, xl := make(plotter.XYs, len(g)), make(plotter.XYs, len(g))
		for j, r := range g {
			xt[j] = plotter.XY{X: float64(r.Concurrency), Y: r.Summary.Throughput}
			xl[j] = plotter.XY{X: float64(r.Concurrency), Y: msOf(r.Summary.P99)}
		}
		if err := addLinePoints(tp, xt, i, labels[i]); err != nil {
			return fmt.Errorf("plot scaling: %w", err)
		}
		if err := addLinePoints(lat, xl, i, ""); err != nil { // one legend, on the top panel, is enough
			return fmt.Errorf("plot scaling: %w", err)
		}
	}
	for _, p := range []*plot.Plot{tp, lat} {
		p.Y.Min = 0
		if logX {
			p.X.Scale = plot.LogScale{}
			p.X.Tick.Marker = pow2Ticks{}
		}
	}
	// Throughput rises with concurrency: the bottom right is free.
	tp.Legend.Top, tp.Legend.Left = false, false
	tp.Legend.XOffs, tp.Legend.YOffs = -vg.Points(6), vg.Points(6)
	return savePanels(path, tp, lat)
}

// PlotTimeline draws p99 latency (top) and throughput (bottom) second by
// second, for the runs that have a Series, one after another in the order
// given: a failover scenario's "before", "during" and "after" windows read
// as one story. Each run has its own colour and the boundaries between runs
// are marked with vertical dashed lines. Failed calls per second are drawn
// dashed under the throughput, so an outage shows as errors replacing
// successes.
func PlotTimeline(runs []Run, path string) error {
	var rs []Run
	for _, r := range runs {
		if len(r.Summary.Series) > 0 {
			rs = append(rs, r)
		}
	}
	if len(rs) == 0 {
		return errors.New("plot timeline: no run has a per-second series")
	}
	lat := newPlot("Latency and throughput over time", "", "p99 latency (ms)")
	tp := newPlot("", "time since the first run began (s)", "calls/s")
	var bounds []float64
	var offset time.Duration
	anyErrors := false
	for _, r := range rs {
		anyErrors = anyErrors || r.Summary.Errors > 0
	}
	for i, r := range rs {
		if i > 0 {
			bounds = append(bounds, offset.Seconds())
		}
		xl := make(plotter.XYs, len(r.Summary.Series))
		xt := make(plotter.XYs, len(r.Summary.Series))
		xe := make(plotter.XYs, len(r.Summary.Series))
		for j, s := range r.Summary.Series {
			x := (offset + s.At).Seconds() + 0.5 // the middle of the second
			xl[j] = plotter.XY{X: x, Y: msOf(s.P99)}
			xt[j] = plotter.XY{X: x, Y: s.Throughput}
			xe[j] = plotter.XY{X: x, Y: float64(s.Errors)} // per second, as the series is
		}
		name := r.Name
		if name == "" {
			name = fmt.Sprintf("run %d", i+1)
		}
		if err := addLine(lat, xl, i, name, false); err != nil {
			return fmt.Errorf("plot timeline: %w", err)
		}
		if err := addLine(tp, xt, i, "", false); err != nil {
			return fmt.Errorf("plot timeline: %w", err)
		}
		if anyErrors {
			if err := addLine(tp, xe, i, "", true); err != nil {
				return fmt.Errorf("plot timeline: %w", err)
			}
		}
		offset += max(r.Summary.Duration, time.Duration(len(r.Summary.Series))*time.Second)
	}
	if anyErrors {
		// A legend entry for the dashed style, in a neutral colour.
		tp.Legend.Add("failed calls/s (dashed)", &plotter.Line{LineStyle: lineStyled(color.Gray{Y: 90}, true)})
	}
	for _, p := range []*plot.Plot{lat, tp} {
		p.Y.Min = 0
		p.Y.Max *= 1.35 // room for the legend above the lines
		p.X.Min = 0
		p.X.Max = math.Max(p.X.Max, offset.Seconds())
		if len(bounds) > 0 {
			p.Add(vMarkers{xs: bounds})
		}
	}
	return savePanels(path, lat, tp)
}

// PlotUSL draws the measured points of a Universal Scalability Law fit, the
// fitted curve, the linear scaling λN that no contention would give (the
// gap between the two is what σ and κ cost), and the peak N* when the fit
// has one within sight of the data.
func PlotUSL(fit *USLFit, path string) error {
	if fit == nil || len(fit.Points) == 0 {
		return errors.New("plot usl: no fit or no points")
	}
	maxN, maxX := 0.0, 0.0
	pts := make(plotter.XYs, len(fit.Points))
	for i, pt := range fit.Points {
		pts[i] = plotter.XY{X: pt.N, Y: pt.X}
		maxN, maxX = math.Max(maxN, pt.N), math.Max(maxX, pt.X)
	}
	peakN, peakX := fit.Peak()
	end := maxN * 1.25
	showPeak := !math.IsInf(peakN, 0) && peakN <= maxN*4
	if showPeak {
		end = math.Max(end, peakN*1.25)
	}
	ceiling := math.Max(maxX, fit.Throughput(end))
	if showPeak {
		ceiling = math.Max(ceiling, peakX)
	}
	ceiling *= 1.15

	title := fmt.Sprintf("USL fit: λ=%.4g/s σ=%.3g κ=%.3g R²=%.3f", fit.Lambda, fit.Sigma, fit.Kappa, fit.R2)
	p := newPlot(title, "N (HSM slots, or calls in flight)", "throughput (calls/s)")
	const steps = 200
	curve := make(plotter.XYs, 0, steps+1)
	ideal := make(plotter.XYs, 0, steps+1)
	for i := range steps + 1 {
		n := 1 + (end-1)*float64(i)/steps
		curve = append(curve, plotter.XY{X: n, Y: fit.Throughput(n)})
		if x := fit.Lambda * n; x <= ceiling {
			ideal = append(ideal, plotter.XY{X: n, Y: x})
		}
	}
	if len(ideal) >= 2 {
		if err := addLine(p, ideal, 2, "linear scaling λN", true); err != nil {
			return fmt.Errorf("plot usl: %w", err)
		}
	}
	if err := addLine(p, curve, 0, "fitted X(N)", false); err != nil {
		return fmt.Errorf("plot usl: %w", err)
	}
	sc, err := plotter.NewScatter(pts)
	if err != nil {
		return fmt.Errorf("plot usl: %w", err)
	}
	sc.GlyphStyle.Color = plotutil.Color(1)
	sc.GlyphStyle.Radius = vg.Points(3.5)
	sc.GlyphStyle.Shape = draw.CircleGlyph{}
	p.Add(sc)
	p.Legend.Add("measured", sc)
	if showPeak {
		m := vMarkers{xs: []float64{peakN}}
		p.Add(m)
		p.Legend.Add(fmt.Sprintf("peak %.0f/s at N*=%.1f", peakX, peakN), m)
	}
	p.X.Min, p.Y.Min = 0, 0
	p.Y.Max = math.Max(p.Y.Max, ceiling)
	// The curve rises from the bottom left: the bottom right is free.
	p.Legend.Top, p.Legend.Left = false, false
	p.Legend.XOffs, p.Legend.YOffs = -vg.Points(6), vg.Points(6)
	return savePanels(path, p)
}

// newPlot returns a plot with the titles and a grid.
func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = x
	p.Y.Label.Text = y
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.XOffs = vg.Points(6)
	p.X.Tick.Marker = niceTicks{}
	p.Y.Tick.Marker = niceTicks{}
	p.Add(plotter.NewGrid())
	return p
}

// niceTicks labels a linear axis every 1, 2 or 5 × 10ᵏ units, about six
// labels along it, with a minor tick half-way.
type niceTicks struct{}

func (niceTicks) Ticks(lo, hi float64) []plot.Tick {
	if !(hi > lo) || math.IsInf(hi-lo, 0) {
		return []plot.Tick{{Value: lo, Label: strconv.FormatFloat(lo, 'g', 4, 64)}}
	}
	raw := (hi - lo) / 6
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := 10 * mag
	for _, m := range []float64{1, 2, 5} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	decimals := max(0, int(-math.Floor(math.Log10(step)+1e-9)))
	var ts []plot.Tick
	first := math.Ceil(lo/step) * step
	for i := 0; ; i++ {
		v := first + float64(i)*step
		if v > hi+step*1e-9 {
			break
		}
		ts = append(ts, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', decimals, 64)})
		if m := v + step/2; m <= hi {
			ts = append(ts, plot.Tick{Value: m})
		}
	}
	if m := first - step/2; m >= lo {
		ts = append(ts, plot.Tick{Value: m})
	}
	return ts
}

// pow2Ticks labels a logarithmic axis at powers of two (1, 2, 4, 8 …), as
// concurrency sweeps usually step, thinning the labels on wide ranges.
type pow2Ticks struct{}

func (pow2Ticks) Ticks(lo, hi float64) []plot.Tick {
	if !(lo > 0) || !(hi >= lo) || math.IsInf(hi, 0) {
		return nil
	}
	a, b := int(math.Floor(math.Log2(lo))), int(math.Ceil(math.Log2(hi)))
	every := max(1, (b-a+9)/10)
	var ts []plot.Tick
	for k := a; k <= b; k++ {
		v := math.Exp2(float64(k))
		if v < lo || v > hi {
			continue
		}
		t := plot.Tick{Value: v}
		if k%every == 0 {
			t.Label = strconv.FormatFloat(v, 'g', -1, 64)
		}
		ts = append(ts, t)
	}
	return ts
}

func lineStyled(c color.Color, dashed bool) draw.LineStyle {
	st := draw.LineStyle{Color: c, Width: vg.Points(1.5)}
	if dashed {
		st.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
	}
	return st
}

// addLine adds a line in colour i, with a legend entry when name is set.
func addLine(p *plot.Plot, xys plotter.XYs, i int, name string, dashed bool) error {
	l, err := plotter.NewLine(xys)
	if err != nil {
		return err
	}
	l.LineStyle = lineStyled(plotutil.Color(i), dashed)
	p.Add(l)
	if name != "" {
		p.Legend.Add(name, l)
	}
	return nil
}

// addLinePoints adds a line with a marker at each point, in colour and
// shape i, with a legend entry when name is set.
func addLinePoints(p *plot.Plot, xys plotter.XYs, i int, name string) error {
	l, s, err := plotter.NewLinePoints(xys)
	if err != nil {
		return err
	}
	l.LineStyle = lineStyled(plotutil.Color(i), false)
	s.GlyphStyle.Color = plotutil.Color(i)
	s.GlyphStyle.Shape = plotutil.Shape(i)
	s.GlyphStyle.Radius = vg.Points(3)
	p.Add(l, s)
	if name != "" {
		p.Legend.Add(name, l, s)
	}
	return nil
}

// vMarkers draws vertical dashed lines across a plot's data area: run
// boundaries, or a peak. It also serves as its own legend thumbnail.
type vMarkers struct{ xs []float64 }

var markerStyle = draw.LineStyle{Color: color.Gray{Y: 80}, Width: vg.Points(1), Dashes: []vg.Length{vg.Points(2), vg.Points(2)}}

func (m vMarkers) Plot(c draw.Canvas, p *plot.Plot) {
	trX, _ := p.Transforms(&c)
	for _, x := range m.xs {
		px := trX(x)
		c.StrokeLine2(markerStyle, px, c.Min.Y, px, c.Max.Y)
	}
}

// DataRange widens the x axis to the markers and leaves y alone.
func (m vMarkers) DataRange() (xmin, xmax, ymin, ymax float64) {
	xmin, xmax = math.Inf(1), math.Inf(-1)
	for _, x := range m.xs {
		xmin, xmax = math.Min(xmin, x), math.Max(xmax, x)
	}
	return xmin, xmax, math.Inf(1), math.Inf(-1)
}

// Thumbnail draws the legend icon.
func (m vMarkers) Thumbnail(c *draw.Canvas) {
	x := (c.Min.X + c.Max.X) / 2
	c.StrokeLine2(markerStyle, x, c.Min.Y, x, c.Max.Y)
}

// groupRuns splits runs into lines by what tells them apart, and labels each
// line with only the fields that differ between the runs.
func groupRuns(runs []Run) ([][]Run, []string) {
	differs := func(f func(Run) string) bool {
		for _, r := range runs[1:] {
			if f(r) != f(runs[0]) {
				return true
			}
		}
		return false
	}
	fields := []func(Run) string{
		func(r Run) string { return r.Target },
		func(r Run) string { return r.Client },
		func(r Run) string { return r.Workload },
		func(r Run) string { return r.Shape },
		func(r Run) string {
			if r.Slots == 0 {
				return ""
			}
			return countOf(r.Slots, "slot")
		},
	}
	// A slot count that changes along with the concurrency is a covariate
	// of one sweep, not a line of its own: split by slots only when some
	// slot count was measured at two or more concurrencies.
	concBySlots := map[int]map[int]bool{}
	repeated := false
	for _, r := range runs {
		if concBySlots[r.Slots] == nil {
			concBySlots[r.Slots] = map[int]bool{}
		}
		concBySlots[r.Slots][r.Concurrency] = true
		repeated = repeated || len(concBySlots[r.Slots]) > 1
	}
	var used []func(Run) string
	for i, f := range fields {
		if differs(f) && (i != len(fields)-1 || repeated) {
			used = append(used, f)
		}
	}
	var groups [][]Run
	var labels []string
	index := map[string]int{}
	for _, r := range runs {
		var parts []string
		for _, f := range used {
			if v := f(r); v != "" {
				parts = append(parts, v)
			}
		}
		label := strings.Join(parts, " ")
		if label == "" {
			label = "measured"
		}
		i, ok := index[label]
		if !ok {
			i = len(groups)
			index[label] = i
			groups = append(groups, nil)
			labels = append(labels, label)
		}
		groups[i] = append(groups[i], r)
	}
	return groups, labels
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// savePanels draws plots stacked top to bottom, aligned on their axes, into
// the file at path in the format its extension names.
func savePanels(path string, panels ...*plot.Plot) (err error) {
	format := strings.TrimPrefix(strings.ToLower(filepath.Ext(path)), ".")
	if format == "" {
		return fmt.Errorf("plot %s: no extension to tell the format (.png, .svg, .pdf …)", path)
	}
	h := panelHeight * vg.Length(len(panels))
	if len(panels) == 1 {
		h = 4.5 * vg.Inch
	}
	var c vg.CanvasWriterTo
	if format == "png" {
		c = vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(plotWidth, h), vgimg.UseDPI(pngDPI))}
	} else if c, err = draw.NewFormattedCanvas(plotWidth, h, format); err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	rows := make([][]*plot.Plot, len(panels))
	for i, p := range panels {
		rows[i] = []*plot.Plot{p}
	}
	if err := recoverDraw(func() {
		canvases := plot.Align(rows, draw.Tiles{
			Rows: len(panels), Cols: 1,
			PadTop: vg.Points(6), PadBottom: vg.Points(6), PadLeft: vg.Points(6), PadRight: vg.Points(12),
			PadY: vg.Points(10),
		}, draw.New(c))
		for i, p := range panels {
			p.Draw(canvases[i][0])
		}
	}); err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	_, err = c.WriteTo(f)
	return err
}

// recoverDraw runs f and turns a panic into an error: the plotting library
// panics on some degenerate inputs (a log axis reaching 0, a canvas with no
// size), and a report must not die of a plot.
func recoverDraw(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("drawing failed: %v", r)
		}
	}()
	f()
	return nil
}
