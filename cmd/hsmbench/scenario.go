package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hsmgate/hsmgate/bench"
	"github.com/hsmgate/hsmgate/hsmpool"
	"github.com/hsmgate/hsmgate/internal/config"
)

func scenarioFlags() []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "data", EnvVars: []string{"HSMGATE_DATA"}, Value: "./data", Usage: "the hsmgate data folder whose pool to use"},
		&cli.StringFlag{Name: "slot", Usage: "the slot (token label) that fails; default the first"},
		&cli.StringFlag{Name: "fault", Value: "device-error", Usage: "device-error, session-invalid, session-count or hang"},
		&cli.DurationFlag{Name: "phase", Value: 5 * time.Second, Usage: "length of each phase: before, during and after the failure"},
	}, loadFlags()...)
}

// runScenario is `hsmbench scenario failover`: a closed-loop load on the
// pool while one slot fails and recovers, through the pool's
// fault-injection seam. The report shows errors, throughput and latency
// before, during and after the failure, and a timeline plot.
func runScenario(c *cli.Context) error {
	fault, ok := hsmpool.ParseFault(c.String("fault"))
	if !ok || fault == hsmpool.FaultNone {
		return fmt.Errorf("--fault %q: want device-error, session-invalid, session-count or hang", c.String("fault"))
	}
	cfg, err := config.Load(c.String("data"))
	if err != nil {
		return err
	}
	opts, err := cfg.PoolOptions(nil)
	if err != nil {
		return err
	}
	opts.FaultInjection = true
	if opts.QuarantineProbeInterval <= 0 || opts.QuarantineProbeInterval > 200*time.Millisecond {
		opts.QuarantineProbeInterval = 200 * time.Millisecond // recover within the phase
	}
	if fault == hsmpool.FaultHang && (opts.OpTimeout <= 0 || opts.OpTimeout > 500*time.Millisecond) {
		opts.OpTimeout = 500 * time.Millisecond // a hung call is given up on within the phase
	}
	w, err := workload(c)
	if err != nil {
		return err
	}
	pool, err := hsmpool.Open(c.Context, opts)
	if err != nil {
		return err
	}
	defer pool.Close()
	if pool.Healthy() < 2 {
		return errors.New("a failover scenario needs at least two healthy slots")
	}
	slot := c.String("slot")
	if slot == "" {
		slot = pool.Status()[0].Name
	}
	t := bench.NewPoolTarget(pool)
	if err := t.Prepare(c.Context, w); err != nil {
		return err
	}
	report := newReport()
	o := options(c, nil, pool.Healthy())
	o.Duration = c.Duration("phase")
	phase := func(name string, warmup time.Duration) error {
		o.Warmup = warmup
		r, err := bench.Closed(c.Context, t, w, c.Int("concurrency"), o)
		r.Shape, r.Name = "scenario", "failover: "+name
		report.Runs = append(report.Runs, r)
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
		return nil
	}
	if err := phase("before", c.Duration("warmup")); err != nil {
		return err
	}
	if err := pool.InjectFault(slot, fault); err != nil {
		return err
	}
	fmt.Fprintf(c.App.ErrWriter, "hsmbench: slot %s now fails with %s\n", slot, fault)
	err = phase("during ("+slot+" "+fault.String()+")", time.Millisecond)
	pool.ClearFaults()
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.ErrWriter, "hsmbench: slot %s's fault cleared\n", slot)
	if err := phase("after", time.Millisecond); err != nil {
		return err
	}
	for _, st := range pool.Status() {
		if st.Name == slot {
			fmt.Fprintf(c.App.Writer, "Slot %s at the end: %s (%s)\n", slot, st.State, st.Reason)
		}
	}
	return finish(c, report)
}
