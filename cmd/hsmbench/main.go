// Command hsmbench measures a KMS for capacity planning: the hsmgate
// gateway or any AWS-KMS-compatible endpoint (hsmbench run), the HSM pool
// directly (hsmbench pool), and from a sweep over pool sizes how many slots
// and gateway nodes a load needs (hsmbench plan). See docs/benchmarking.md.
package main

import (
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/hsmgate/hsmgate/internal/cliexit"
)

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	return cliexit.Run(newApp(stdout, stderr), args, stderr)
}

func newApp(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:  "hsmbench",
		Usage: "measure a KMS (the hsmgate gateway, another KMS endpoint, or the HSM pool) and plan capacity",
		Commands: []*cli.Command{
			{
				Name:   "run",
				Usage:  "drive a KMS endpoint (AWS_ENDPOINT_URL and the other AWS_* variables, as `hsmgate env` sets them)",
				Flags:  append(endpointFlags(), loadFlags()...),
				Action: runEndpoint,
			},
			{
				Name:   "pool",
				Usage:  "drive the HSM pool of an hsmgate data folder directly: the ceiling the gateway is measured against",
				Flags:  append(poolFlags(), loadFlags()...),
				Action: runPool,
			},
			{
				Name:   "cluster",
				Usage:  "how throughput scales from node 1 alone to all N nodes of a cluster (--endpoint per node), and control-plane write latency",
				Flags:  clusterFlags(),
				Action: runCluster,
			},
			{
				Name:   "compare",
				Usage:  "the same workload on two targets in interleaved rounds, and the ratio of every metric",
				Flags:  compareFlags(),
				Action: runCompare,
			},
			{
				Name:  "scenario",
				Usage: "measure the pool while something fails",
				Subcommands: []*cli.Command{{
					Name:   "failover",
					Usage:  "one slot fails mid-run and recovers: errors, throughput and latency before, during and after",
					Flags:  scenarioFlags(),
					Action: runScenario,
				}},
			},
			{
				Name:   "plan",
				Usage:  "fit the Universal Scalability Law to a slot sweep's report and size a target load",
				Flags:  planFlags(),
				Action: runPlan,
			},
		},
		Writer:          stdout,
		ErrWriter:       stderr,
		ExitErrHandler:  func(*cli.Context, error) {},
		HideHelpCommand: true,
		Suggest:         true,
	}
}
