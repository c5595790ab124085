package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hsmgate/hsmgate/bench"
	"github.com/hsmgate/hsmgate/hsmpool"
	"github.com/hsmgate/hsmgate/internal/config"
)

func compareFlags() []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "a", Required: true, Usage: "the first target: pool:DATA-DIR, env (the endpoint and credentials in the AWS_* variables, lean client), env+sdk, or an endpoint URL (credentials from AWS_*; prefix sdk+ for the SDK client)"},
		&cli.StringFlag{Name: "b", Required: true, Usage: "the second target, in the same forms"},
		&cli.IntFlag{Name: "rounds", Value: 3, Usage: "interleaved rounds: A, B, A, B …"},
	}, loadFlags()...)
}

// openTarget makes a target from a compare spec. close releases it.
func openTarget(c *cli.Context, spec string) (t bench.Target, slots int, close func(), err error) {
	if dir, ok := strings.CutPrefix(spec, "pool:"); ok {
		cfg, err := config.Load(dir)
		if err != nil {
			return nil, 0, nil, err
		}
		opts, err := cfg.PoolOptions(nil)
		if err != nil {
			return nil, 0, nil, err
		}
		p, err := hsmpool.Open(c.Context, opts)
		if err != nil {
			return nil, 0, nil, err
		}
		return bench.NewPoolTarget(p), p.Healthy(), func() { p.Close() }, nil
	}
	cfg := bench.KMSConfigFromEnv()
	cfg.MaxConns = c.Int("concurrency")
	sdk := false
	switch {
	case spec == "env":
	case spec == "env+sdk":
		sdk = true
	default:
		rest, isSDK := strings.CutPrefix(spec, "sdk+")
		sdk = isSDK
		cfg.Endpoint = rest
	}
	if cfg.Endpoint == "" || cfg.Region == "" {
		return nil, 0, nil, fmt.Errorf("target %q: no endpoint or region (set AWS_ENDPOINT_URL and AWS_REGION)", spec)
	}
	if sdk {
		t, err = bench.NewSDKTarget(cfg)
	} else {
		t, err = bench.NewLeanTarget(cfg)
	}
	if err != nil {
		return nil, 0, nil, err
	}
	return t, 0, func() { t.Close() }, nil
}

// runCompare is `hsmbench compare`: the same workload on two targets in
// interleaved rounds (so drifting load on a shared machine hits both
// alike), and the ratio B/A of each metric.
func runCompare(c *cli.Context) error {
	w, err := workload(c)
	if err != nil {
		return err
	}
	type side struct {
		label, spec string
		t           bench.Target
		slots       int
		runs        []bench.Run
	}
	sides := []*side{{label: "A", spec: c.String("a")}, {label: "B", spec: c.String("b")}}
	for _, s := range sides {
		var closeFn func()
		if s.t, s.slots, closeFn, err = openTarget(c, s.spec); err != nil {
			return err
		}
		defer closeFn()
		if err := s.t.Prepare(c.Context, w); err != nil {
			return fmt.Errorf("prepare %s (%s): %w", s.label, s.spec, err)
		}
	}
	report := newReport()
	for r := 1; r <= c.Int("rounds"); r++ {
		for _, s := range sides {
			pid := 0
			if s.slots == 0 {
				pid = bench.ServerPID(s.t.Name())
			}
			run, err := bench.Closed(c.Context, s.t, w, c.Int("concurrency"), options(c, &bench.CPUProbe{ServerPID: pid}, s.slots))
			run.Name = fmt.Sprintf("%s round %d (%s)", s.label, r, s.spec)
			s.runs = append(s.runs, run)
			report.Runs = append(report.Runs, run)
			if err != nil {
				return err
			}
		}
	}
	if err := finish(c, report); err != nil {
		return err
	}
	table := compareTable(sides[0].runs, sides[1].runs, sides[0].spec, sides[1].spec)
	fmt.Fprint(c.App.Writer, "\n"+table)
	path := filepath.Join(c.String("out"), "compare.md")
	if err := os.WriteFile(path, []byte(table), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "Comparison: %s\n", path)
	return nil
}

// compareTable is the Markdown table of each metric's mean over the
// rounds for A and B, and the ratio B/A.
func compareTable(a, b []bench.Run, aSpec, bSpec string) string {
	mean := func(runs []bench.Run, f func(bench.Run) float64) float64 {
		sum := 0.0
		for _, r := range runs {
			sum += f(r)
		}
		return sum / float64(len(runs))
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	metrics := []struct {
		name string
		f    func(bench.Run) float64
	}{
		{"calls/s", func(r bench.Run) float64 { return r.Summary.Throughput }},
		{"p50 (ms)", func(r bench.Run) float64 { return ms(r.Summary.P50) }},
		{"p99 (ms)", func(r bench.Run) float64 { return ms(r.Summary.P99) }},
		{"p99.9 (ms)", func(r bench.Run) float64 { return ms(r.Summary.P999) }},
		{"errors", func(r bench.Run) float64 { return float64(r.Summary.Errors) }},
		{"client CPU/call (µs)", func(r bench.Run) float64 { return us(r.ClientCPUPerOp) }},
		{"server CPU/call (µs)", func(r bench.Run) float64 { return us(r.ServerCPUPerOp) }},
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "## Comparison over %d interleaved rounds\n\nA: `%s`  \nB: `%s`\n\n| metric | A | B | B/A |\n| --- | ---: | ---: | ---: |\n", len(a), aSpec, bSpec)
	for _, m := range metrics {
		va, vb := mean(a, m.f), mean(b, m.f)
		ratio := "–"
		if va > 0 && vb > 0 {
			ratio = fmt.Sprintf("%.3f", vb/va)
		}
		fmt.Fprintf(&sb, "| %s | %.4g | %.4g | %s |\n", m.name, va, vb, ratio)
	}
	return sb.String()
}
