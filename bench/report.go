package bench

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// WriteJSON writes the report as indented JSON: the complete record, which
// ReadJSON reads back (to re-plot, re-fit or compare runs later). Durations
// are in nanoseconds, as the field names' _ns suffix says.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("report: writing JSON: %w", err)
	}
	return nil
}

// ReadJSON reads a report written by WriteJSON. Fields it does not know are
// ignored, so that reports from newer versions still read.
func ReadJSON(rd io.Reader) (*Report, error) {
	var r Report
	if err := json.NewDecoder(rd).Decode(&r); err != nil {
		return nil, fmt.Errorf("report: reading JSON: %w", err)
	}
	return &r, nil
}

// CSVHeader is the header row of WriteCSV. Latencies are in milliseconds,
// CPU per successful call in microseconds, rates in calls per second.
var CSVHeader = []string{
	"name", "target", "client", "workload", "shape", "concurrency", "rate", "slots",
	"calls", "errors", "throughput", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms",
	"client_cpu_us", "server_cpu_us", "checked", "check_failures",
}

// WriteCSV writes one row per run under CSVHeader, for spreadsheets and
// for comparing reports with other tools.
func (r *Report) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(CSVHeader); err != nil {
		return fmt.Errorf("report: writing CSV: %w", err)
	}
	f := func(v float64, prec int) string { return strconv.FormatFloat(v, 'f', prec, 64) }
	for _, run := range r.Runs {
		s := run.Summary
		row := []string{
			run.Name, run.Target, run.Client, run.Workload, run.Shape,
			strconv.Itoa(run.Concurrency), f(run.Rate, -1), strconv.Itoa(run.Slots),
			strconv.FormatInt(s.Calls, 10), strconv.FormatInt(s.Errors, 10), f(s.Throughput, 2),
			f(msOf(s.P50), 3), f(msOf(s.P90), 3), f(msOf(s.P99), 3), f(msOf(s.P999), 3), f(msOf(s.Max), 3),
			f(usOf(run.ClientCPUPerOp), 1), f(usOf(run.ServerCPUPerOp), 1),
			strconv.FormatInt(run.Checked, 10), strconv.FormatInt(run.CheckFailures, 10),
		}
		if err := cw.Write(row); err != nil {
			return fmt.Errorf("report: writing CSV: %w", err)
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("report: writing CSV: %w", err)
	}
	return nil
}

func usOf(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// WriteMarkdown writes a summary to read: where and how it was measured, a
// table of the runs, the errors by code, results that failed verification,
// and the USL fit and capacity plan when there are.
func (r *Report) WriteMarkdown(w io.Writer) error {
	return r.writeMarkdown(w, r.Plan, nil)
}

// plotLink is a plot WriteFiles made, for the Markdown to show.
type plotLink struct{ title, file string }

func (r *Report) writeMarkdown(w io.Writer, plan *Plan, plots []plotLink) error {
	var b bytes.Buffer
	b.WriteString("# hsmbench report\n\n")
	if !r.Started.IsZero() {
		fmt.Fprintf(&b, "- Started: %s\n", r.Started.Format(time.RFC3339))
	}
	if r.Host != "" {
		fmt.Fprintf(&b, "- Host: %s\n", mdText(r.Host))
	}
	if r.Command != "" {
		fmt.Fprintf(&b, "- Command: `%s`\n", strings.ReplaceAll(r.Command, "`", "'"))
	}
	fmt.Fprintf(&b, "- Runs: %d\n\n", len(r.Runs))

	if len(r.Runs) > 0 {
		writeRunsTable(&b, r.Runs)
		writeErrors(&b, r.Runs)
		writeChecks(&b, r.Runs)
	}
	if len(plots) > 0 {
		b.WriteString("## Plots\n\n")
		for _, p := range plots {
			fmt.Fprintf(&b, "### %s\n\n![%s](%s)\n\n", p.title, p.title, p.file)
		}
	}
	if r.USL != nil {
		writeUSL(&b, r.USL)
	}
	if plan != nil {
		plan.writeMarkdown(&b)
	}
	_, err := w.Write(b.Bytes())
	return err
}

func writeRunsTable(b *bytes.Buffer, runs []Run) {
	anyCPU := slices.ContainsFunc(runs, func(r Run) bool { return r.ClientCPUPerOp > 0 || r.ServerCPUPerOp > 0 })
	b.WriteString("## Runs\n\n")
	b.WriteString("Latencies are of successful calls, in milliseconds; throughput counts successful calls per second.\n\n")
	head := []string{"run", "target", "client", "workload", "shape", "load", "slots", "calls", "errors", "calls/s", "p50", "p90", "p99", "p99.9", "max"}
	if anyCPU {
		head = append(head, "client CPU/call", "server CPU/call")
	}
	head = append(head, "checked")
	writeRow(b, head)
	sep := make([]string, len(head))
	for i := range sep {
		sep[i] = "---"
		if i >= 5 {
			sep[i] = "---:"
		}
	}
	writeRow(b, sep)
	for _, r := range runs {
		s := r.Summary
		load := ""
		switch {
		case r.Rate > 0 && r.Concurrency > 0:
			load = fmt.Sprintf("%g/s, c=%d", r.Rate, r.Concurrency)
		case r.Rate > 0:
			load = fmt.Sprintf("%g/s", r.Rate)
		case r.Concurrency > 0:
			load = fmt.Sprintf("c=%d", r.Concurrency)
		}
		slots := ""
		if r.Slots > 0 {
			slots = strconv.Itoa(r.Slots)
		}
		errs := strconv.FormatInt(s.Errors, 10)
		if s.Errors > 0 && s.Calls > 0 {
			errs += fmt.Sprintf(" (%.2g%%)", 100*float64(s.Errors)/float64(s.Calls))
		}
		row := []string{
			r.Name, r.Target, r.Client, r.Workload, r.Shape, load, slots,
			strconv.FormatInt(s.Calls, 10), errs, fmt.Sprintf("%.1f", s.Throughput),
			msText(s.P50), msText(s.P90), msText(s.P99), msText(s.P999), msText(s.Max),
		}
		if anyCPU {
			row = append(row, cpuText(r.ClientCPUPerOp), cpuText(r.ServerCPUPerOp))
		}
		checked := strconv.FormatInt(r.Checked, 10)
		if r.CheckFailures > 0 {
			checked += fmt.Sprintf(" (**%d failed**)", r.CheckFailures)
		}
		writeRow(b, append(row, checked))
	}
	b.WriteString("\n")
}

func writeErrors(b *bytes.Buffer, runs []Run) {
	if !slices.ContainsFunc(runs, func(r Run) bool { return r.Summary.Errors > 0 }) {
		b.WriteString("No call failed.\n\n")
		return
	}
	b.WriteString("## Errors by code\n\n")
	writeRow(b, []string{"run", "code", "calls", "share of the run's calls"})
	writeRow(b, []string{"---", "---", "---:", "---:"})
	for _, r := range runs {
		s := r.Summary
		codes := make([]string, 0, len(s.ErrorsByCode))
		for c := range s.ErrorsByCode {
			codes = append(codes, c)
		}
		// Most frequent first, then by name.
		slices.SortFunc(codes, func(a, c string) int {
			if d := s.ErrorsByCode[c] - s.ErrorsByCode[a]; d != 0 {
				return int(max(min(d, 1), -1))
			}
			return strings.Compare(a, c)
		})
		var counted int64
		for _, c := range codes {
			n := s.ErrorsByCode[c]
			counted += n
			writeRow(b, []string{r.Name, c, strconv.FormatInt(n, 10), pctOf(n, s.Calls)})
		}
		if rest := s.Errors - counted; rest > 0 {
			writeRow(b, []string{r.Name, "(no code)", strconv.FormatInt(rest, 10), pctOf(rest, s.Calls)})
		}
	}
	b.WriteString("\n")
}

func writeChecks(b *bytes.Buffer, runs []Run) {
	var failed []Run
	for _, r := range runs {
		if r.CheckFailures > 0 {
			failed = append(failed, r)
		}
	}
	if len(failed) == 0 {
		return
	}
	b.WriteString("## Results that did not verify\n\n")
	b.WriteString("A sample of results is checked (decrypting what was encrypted, verifying what was signed). " +
		"These runs returned wrong answers; their throughput and latency do not count for anything until that is explained.\n\n")
	for _, r := range failed {
		fmt.Fprintf(b, "- %s: %d of %d checked results failed\n", mdText(r.Name), r.CheckFailures, r.Checked)
	}
	b.WriteString("\n")
}

func writeUSL(b *bytes.Buffer, fit *USLFit) {
	b.WriteString("## Scalability: Universal Scalability Law\n\n")
	b.WriteString("X(N) = λN / (1 + σ(N−1) + κN(N−1)): λ is one unit's throughput, σ the serialised share of the work " +
		"(contention, capping throughput at λ/σ), κ the cost of keeping units coherent (which makes throughput fall past a peak).\n\n")
	fmt.Fprintf(b, "- λ = %.4g calls/s\n- σ = %.4g\n- κ = %.4g\n- R² = %.4f\n", fit.Lambda, fit.Sigma, fit.Kappa, fit.R2)
	n, x := fit.Peak()
	switch {
	case math.IsInf(n, 1) && math.IsInf(x, 1):
		b.WriteString("- Peak: none; the fit scales linearly over the measured range\n")
	case math.IsInf(n, 1):
		fmt.Fprintf(b, "- Peak: none; throughput approaches λ/σ = %.0f calls/s\n", x)
	default:
		fmt.Fprintf(b, "- Peak: %.0f calls/s at N* = %.1f\n", x, n)
	}
	if len(fit.Points) > 0 {
		b.WriteString("\n")
		writeRow(b, []string{"N", "measured calls/s", "modelled calls/s", "residual"})
		writeRow(b, []string{"---:", "---:", "---:", "---:"})
		for _, p := range fit.Points {
			m := fit.Throughput(p.N)
			res := ""
			if m > 0 {
				res = fmt.Sprintf("%+.1f%%", 100*(p.X-m)/m)
			}
			writeRow(b, []string{strconv.FormatFloat(p.N, 'g', -1, 64), fmt.Sprintf("%.1f", p.X), fmt.Sprintf("%.1f", m), res})
		}
	}
	b.WriteString("\n")
}

// WriteMarkdown writes the plan as a Markdown section: what to buy, and the
// notes that qualify it.
func (p *Plan) WriteMarkdown(w io.Writer) error {
	var b bytes.Buffer
	p.writeMarkdown(&b)
	_, err := w.Write(b.Bytes())
	return err
}

func (p *Plan) writeMarkdown(b *bytes.Buffer) {
	b.WriteString("## Capacity plan\n\n")
	fmt.Fprintf(b, "- Target: %.0f calls/s with %.0f%% headroom", p.TargetRPS, p.Headroom*100)
	if p.P99Bound > 0 {
		fmt.Fprintf(b, ", p99 ≤ %v", p.P99Bound)
	}
	fmt.Fprintf(b, "\n- **%s on %s** (%d slots per node)\n", countOf(p.Slots, "slot"), countOf(p.Nodes, "node"), p.SlotsPerNode)
	fmt.Fprintf(b, "- Each slot carries %.0f calls/s at that size\n", p.PerSlotRPS)
	if len(p.Notes) > 0 {
		b.WriteString("\nNotes:\n\n")
		for _, n := range p.Notes {
			fmt.Fprintf(b, "- %s\n", mdText(n))
		}
	}
	b.WriteString("\n")
}

func writeRow(b *bytes.Buffer, cells []string) {
	b.WriteString("|")
	for _, c := range cells {
		b.WriteString(" ")
		b.WriteString(mdCell(c))
		b.WriteString(" |")
	}
	b.WriteString("\n")
}

// mdCell makes text safe in a table cell: no line breaks, pipes escaped.
func mdCell(s string) string {
	s = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ", "|", `\|`).Replace(s)
	if s == "" {
		return " "
	}
	return s
}

// mdText keeps text on one line of a list item.
func mdText(s string) string {
	return strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s)
}

func msText(d time.Duration) string {
	if d == 0 {
		return "–"
	}
	return fmt.Sprintf("%.3g", msOf(d))
}

func cpuText(d time.Duration) string {
	if d == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f µs", usOf(d))
}

func pctOf(n, of int64) string {
	if of == 0 {
		return ""
	}
	return fmt.Sprintf("%.2g%%", 100*float64(n)/float64(of))
}

// WriteFiles writes the report into dir (created if need be): report.json,
// report.csv, report.md, and the plots that apply, as PNG:
//
//   - scaling.png (PlotScaling) when at least two runs of the same shape
//     differ in concurrency; the shape "sweep" is preferred, else the one
//     with the most distinct concurrencies;
//   - timeline.png (PlotTimeline) when any run has a per-second series;
//   - usl.png (PlotUSL) when the report has a USL fit.
//
// report.md shows the plots. It returns the paths written. A plot that fails
// does not stop the others or the report: its error is returned, joined
// with any other, alongside the paths that were written.
func (r *Report) WriteFiles(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	var paths []string
	var errs []error
	write := func(name string, f func(io.Writer) error) {
		var b bytes.Buffer
		if err := f(&b); err != nil {
			errs = append(errs, err)
			return
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("report: %w", err))
			return
		}
		paths = append(paths, p)
	}

	var plots []plotLink
	var plotPaths []string
	plotIt := func(title, name string, f func(string) error) {
		p := filepath.Join(dir, name)
		if err := f(p); err != nil {
			errs = append(errs, err)
			return
		}
		plots = append(plots, plotLink{title, name})
		plotPaths = append(plotPaths, p)
	}
	if rs := scalingRuns(r.Runs); rs != nil {
		plotIt("Scaling with concurrency", "scaling.png", func(p string) error { return PlotScaling(rs, p) })
	}
	if slices.ContainsFunc(r.Runs, func(run Run) bool { return len(run.Summary.Series) > 0 }) {
		plotIt("Timeline", "timeline.png", func(p string) error { return PlotTimeline(r.Runs, p) })
	}
	if r.USL != nil {
		plotIt("USL fit", "usl.png", func(p string) error { return PlotUSL(r.USL, p) })
	}

	write("report.json", r.WriteJSON)
	write("report.csv", r.WriteCSV)
	write("report.md", func(w io.Writer) error { return r.writeMarkdown(w, r.Plan, plots) })
	return append(paths, plotPaths...), errors.Join(errs...)
}

// scalingRuns picks the runs of one shape that span at least two
// concurrencies, preferring "sweep"; nil when no shape does.
func scalingRuns(runs []Run) []Run {
	byShape := map[string][]Run{}
	var shapes []string
	for _, r := range runs {
		if r.Concurrency <= 0 || r.Summary.Calls == 0 {
			continue
		}
		if _, ok := byShape[r.Shape]; !ok {
			shapes = append(shapes, r.Shape)
		}
		byShape[r.Shape] = append(byShape[r.Shape], r)
	}
	distinct := func(rs []Run) int {
		seen := map[int]bool{}
		for _, r := range rs {
			seen[r.Concurrency] = true
		}
		return len(seen)
	}
	if distinct(byShape["sweep"]) >= 2 {
		return byShape["sweep"]
	}
	var best []Run
	for _, s := range shapes { // in order of first appearance, for a stable choice
		if rs := byShape[s]; distinct(rs) >= 2 && distinct(rs) > distinct(best) {
			best = rs
		}
	}
	return best
}
