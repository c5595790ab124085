package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hsmgate/hsmgate/bench"
)

func loadFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "mix", Value: "Encrypt=1", Usage: "operations and weights, e.g. Encrypt=3,Decrypt=1 (Encrypt, Decrypt, GenerateDataKey, ReEncrypt, Sign, Verify, GenerateMac)"},
		&cli.StringFlag{Name: "workload", Usage: "a workload file (TOML; see docs/benchmarking.md); overrides --mix and the payload and key flags"},
		&cli.IntFlag{Name: "payload", Value: 32, Usage: "plaintext or message size in bytes (1 to 4096)"},
		&cli.StringFlag{Name: "sign-key-spec", Value: "ECC_NIST_P256", Usage: "key spec for Sign and Verify"},
		&cli.StringFlag{Name: "mac-key-spec", Value: "HMAC_256", Usage: "key spec for GenerateMac"},
		&cli.IntFlag{Name: "check-every", Value: 100, Usage: "verify the result of one call in this many"},
		&cli.IntFlag{Name: "concurrency", Aliases: []string{"c"}, Value: 8, Usage: "closed loop: concurrent callers"},
		&cli.IntFlag{Name: "sweep", Usage: "closed loop at 1, 2, 4 … up to this many callers"},
		&cli.Float64Flag{Name: "rate", Usage: "open loop: arrivals per second (latency counted from when each call was due)"},
		&cli.IntFlag{Name: "max-in-flight", Value: 256, Usage: "open loop: most calls outstanding at once"},
		&cli.DurationFlag{Name: "find-max-p99", Usage: "find the highest arrival rate whose p99 stays under this bound"},
		&cli.Float64Flag{Name: "start-rate", Value: 500, Usage: "find-max: the first rate tried"},
		&cli.DurationFlag{Name: "warmup", Value: 2 * time.Second, Usage: "warm-up before each measured window"},
		&cli.DurationFlag{Name: "duration", Aliases: []string{"d"}, Value: 10 * time.Second, Usage: "each measured window"},
		&cli.StringFlag{Name: "out", Value: "hsmbench-report", Usage: "folder for report.json, report.csv, report.md and plots"},
		&cli.BoolFlag{Name: "no-progress", Usage: "no live progress on standard error"},
	}
}

// workload builds the workload from the flags or the workload file.
func workload(c *cli.Context) (*bench.Workload, error) {
	if path := c.String("workload"); path != "" {
		return bench.LoadWorkload(path)
	}
	mix, err := bench.ParseMix(c.String("mix"))
	if err != nil {
		return nil, err
	}
	w := &bench.Workload{Mix: mix, PayloadSize: c.Int("payload"), SignKeySpec: c.String("sign-key-spec"),
		MacKeySpec: c.String("mac-key-spec"), CheckEvery: c.Int("check-every")}
	return w, w.Defaults()
}

// options builds the load options, with live progress on standard error.
func options(c *cli.Context, cpu *bench.CPUProbe, slots int) bench.Options {
	o := bench.Options{Warmup: c.Duration("warmup"), Duration: c.Duration("duration"), CPU: cpu, Slots: slots}
	if !c.Bool("no-progress") {
		o.Progress = newProgress(c.App.ErrWriter)
	}
	return o
}

// execute runs the load shape the flags ask for.
func execute(ctx context.Context, c *cli.Context, t bench.Target, w *bench.Workload, o bench.Options) ([]bench.Run, error) {
	switch {
	case c.Duration("find-max-p99") > 0:
		best, runs, err := bench.FindMax(ctx, t, w, c.Duration("find-max-p99"), c.Float64("start-rate"), c.Int("max-in-flight"), 4, o)
		if err == nil {
			fmt.Fprintf(c.App.Writer, "Highest rate with p99 under %v and under 1%% errors: %.0f/s\n", c.Duration("find-max-p99"), best)
		}
		return runs, err
	case c.Float64("rate") > 0:
		r, err := bench.Open(ctx, t, w, c.Float64("rate"), c.Int("max-in-flight"), o)
		return []bench.Run{r}, err
	case c.Int("sweep") > 0:
		return bench.Sweep(ctx, t, w, bench.Levels(c.Int("sweep")), o)
	}
	r, err := bench.Closed(ctx, t, w, c.Int("concurrency"), o)
	return []bench.Run{r}, err
}

// finish writes the report files and prints the summary.
func finish(c *cli.Context, report *bench.Report) error {
	dir := c.String("out")
	files, err := report.WriteFiles(dir)
	if err != nil {
		return err
	}
	if err := report.WriteMarkdown(c.App.Writer); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "\nReport: %s\n", strings.Join(relative(files), ", "))
	return nil
}

func relative(paths []string) []string {
	wd, _ := os.Getwd()
	out := make([]string, len(paths))
	for i, p := range paths {
		if r, err := filepath.Rel(wd, p); err == nil && !strings.HasPrefix(r, "..") {
			p = r
		}
		out[i] = p
	}
	return out
}

func newReport() *bench.Report {
	host, _ := os.Hostname()
	return &bench.Report{Started: time.Now().UTC(), Host: hostDescription(host), Command: strings.Join(os.Args, " ")}
}

func hostDescription(name string) string {
	cpus := "?"
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		cpus = fmt.Sprint(strings.Count(string(raw), "\nprocessor") + 1)
	}
	return fmt.Sprintf("%s, %s CPUs", name, cpus)
}

var _ io.Writer = os.Stdout
