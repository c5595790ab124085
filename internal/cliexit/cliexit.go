// Package cliexit runs an urfave/cli application the way hsmgate's commands
// do: until SIGINT or SIGTERM cancels its context, reporting an error on
// standard error under the program's name, and returning the exit status
// instead of exiting, so that tests can run a command in process.
package cliexit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
)

// Run runs app with args and returns the process exit status: 0, the
// status of a cli.ExitCoder, or 1.
func Run(app *cli.App, args []string, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := app.RunContext(ctx, args)
	if err == nil {
		return 0
	}
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		if msg := err.Error(); msg != "" {
			fmt.Fprintln(stderr, app.Name+":", msg)
		}
		return ec.ExitCode()
	}
	fmt.Fprintln(stderr, app.Name+":", err)
	return 1
}
