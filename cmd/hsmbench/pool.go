package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/hsmgate/hsmgate/bench"
	"github.com/hsmgate/hsmgate/hsmpool"
	"github.com/hsmgate/hsmgate/internal/config"
)

func poolFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "data", EnvVars: []string{"HSMGATE_DATA"}, Value: "./data", Usage: "the hsmgate data folder whose pool to drive (the gateway must be stopped only if its HSM allows one process)"},
		&cli.StringFlag{Name: "slots", Usage: "pool sizes to sweep, e.g. 1,2,4: each run uses the first N configured slots (for `hsmbench plan`)"},
	}
}

// runPool is `hsmbench pool`: the same workloads on the pool itself.
func runPool(c *cli.Context) error {
	cfg, err := config.Load(c.String("data"))
	if err != nil {
		return err
	}
	opts, err := cfg.PoolOptions(nil)
	if err != nil {
		return err
	}
	w, err := workload(c)
	if err != nil {
		return err
	}
	sizes, err := slotCounts(c.String("slots"))
	if err != nil {
		return err
	}
	report := newReport()
	var runErr error
	for _, n := range sizes {
		o := opts
		if n > 0 {
			if o, err = firstSlots(o, n); err != nil {
				return err
			}
		}
		runs, err := poolRuns(c, o, w)
		report.Runs = append(report.Runs, runs...)
		if err != nil {
			runErr = err
			break
		}
	}
	if runErr == nil && len(sizes) >= 3 {
		if fit, err := bench.FitUSL(bench.SlotPoints(report.Runs)); err == nil {
			report.USL = fit
		} else {
			fmt.Fprintf(c.App.ErrWriter, "hsmbench: no scalability fit: %v\n", err)
		}
	}
	if ferr := finish(c, report); ferr != nil {
		return errors.Join(runErr, ferr)
	}
	return runErr
}

func poolRuns(c *cli.Context, o hsmpool.Options, w *bench.Workload) (runs []bench.Run, err error) {
	pool, err := hsmpool.Open(c.Context, o)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, pool.Close()) }()
	if pool.Healthy() == 0 {
		return nil, errors.New("the pool has no healthy slot (`hsmgate pool check` says why)")
	}
	t := bench.NewPoolTarget(pool)
	if err := t.Prepare(c.Context, w); err != nil {
		return nil, err
	}
	runs, err = execute(c.Context, c, t, w, options(c, nil, pool.Healthy()))
	return runs, err
}

func slotCounts(s string) ([]int, error) {
	if s == "" {
		return []int{0}, nil // 0: every configured slot
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("--slots %q: want counts like 1,2,4", s)
		}
		out = append(out, n)
	}
	return out, nil
}

// firstSlots restricts the pool options to the first n configured tokens.
func firstSlots(o hsmpool.Options, n int) (hsmpool.Options, error) {
	if len(o.Modules) != 1 || len(o.Modules[0].Tokens) < n {
		return o, fmt.Errorf("--slots needs one module with at least %d tokens named in the configuration", n)
	}
	m := o.Modules[0]
	m.Tokens = m.Tokens[:n]
	o.Modules = []hsmpool.ModuleOptions{m}
	return o, nil
}
