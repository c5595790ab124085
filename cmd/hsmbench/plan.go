package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/hsmgate/hsmgate/bench"
)

func planFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "report", Required: true, Usage: "report.json of a slot sweep (hsmbench pool --slots 1,2,4 …)"},
		&cli.Float64Flag{Name: "target-rps", Required: true, Usage: "the load to plan for, calls per second"},
		&cli.DurationFlag{Name: "p99", Required: true, Usage: "the p99 latency bound"},
		&cli.IntFlag{Name: "slots-per-node", Value: 4, Usage: "HSM slots one gateway node fronts"},
	}
}

// runPlan is `hsmbench plan`: how many slots and gateway nodes a load needs,
// from the Universal Scalability Law fitted to a slot sweep.
func runPlan(c *cli.Context) error {
	f, err := os.Open(c.String("report"))
	if err != nil {
		return err
	}
	defer f.Close()
	report, err := bench.ReadJSON(f)
	if err != nil {
		return err
	}
	fit := report.USL
	if fit == nil {
		if fit, err = bench.FitUSL(bench.SlotPoints(report.Runs)); err != nil {
			return fmt.Errorf("the report has no slot sweep to fit (run hsmbench pool --slots 1,2,4,…): %w", err)
		}
	}
	plan, err := bench.MakePlan(fit, c.Float64("target-rps"), c.Duration("p99"), report.Runs, c.Int("slots-per-node"))
	if err != nil {
		return err
	}
	if plan == nil {
		return errors.New("no plan")
	}
	return plan.WriteText(c.App.Writer)
}
