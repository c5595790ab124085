// Command hsmgate is the HSM gateway and its local administration tool.
//
// Today it sets up a development pool of SoftHSM2 tokens (hsmgate init) and
// checks every slot of the configured pool (hsmgate pool check). The
// configuration lives in the data folder (--data, default ./data); see
// docs/configuration.md.
//
// This file only wires the commands together; each command's work is in a
// file named after it.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
)

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

// run runs the command line args and returns the process exit status. It
// never calls os.Exit itself, so tests can run it in-process too.
func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := newApp(stdout, stderr).RunContext(ctx, args)
	if err == nil {
		return 0
	}
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		if msg := err.Error(); msg != "" {
			fmt.Fprintln(stderr, "hsmgate:", msg)
		}
		return ec.ExitCode()
	}
	fmt.Fprintln(stderr, "hsmgate:", err)
	return 1
}

func newApp(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:  "hsmgate",
		Usage: "HSM gateway: a self-hosted KMS over a pool of PKCS#11 slots",
		Flags: []cli.Flag{
			&cli.StringFlag{
				Name:    "data",
				Usage:   "data folder holding hsmgate.toml (and, for a dev pool, its SoftHSM2 tokens)",
				EnvVars: []string{"HSMGATE_DATA"},
				Value:   "./data",
			},
			&cli.BoolFlag{
				Name:    "verbose",
				Aliases: []string{"v"},
				Usage:   "log slot state changes and other detail to stderr",
			},
		},
		Commands: []*cli.Command{
			{
				Name:  "init",
				Usage: "create a development pool of SoftHSM2 tokens in the data folder and provision its domain key",
				Flags: []cli.Flag{
					&cli.IntFlag{Name: "tokens", Value: 4, Usage: "number of SoftHSM2 tokens (slots) to create"},
				},
				Action: func(c *cli.Context) error {
					return runInit(c.Context, c.String("data"), c.Int("tokens"), c.App.Writer, newLogger(c))
				},
			},
			{
				Name:  "pool",
				Usage: "inspect the HSM pool",
				Subcommands: []*cli.Command{
					{
						Name:  "check",
						Usage: "show every slot and run an encrypt/decrypt and sign/verify round trip on each healthy one",
						Action: func(c *cli.Context) error {
							return runPoolCheck(c.Context, c.String("data"), c.App.Writer, newLogger(c))
						},
					},
				},
			},
		},
		Writer:    stdout,
		ErrWriter: stderr,
		// run reports errors and chooses the exit status; urfave/cli must
		// not exit the process on its own.
		ExitErrHandler:  func(*cli.Context, error) {},
		HideHelpCommand: true,
		Suggest:         true,
	}
}

// newLogger logs to the app's stderr: warnings only, unless --verbose.
func newLogger(c *cli.Context) *slog.Logger {
	level := slog.LevelWarn
	if c.Bool("verbose") {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(c.App.ErrWriter, &slog.HandlerOptions{Level: level}))
}
