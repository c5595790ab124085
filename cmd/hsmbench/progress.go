package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/hsmgate/hsmgate/bench"
)

// newProgress shows a window's progress: a bar with live throughput on a
// terminal, one plain line per second elsewhere (CI logs, files).
func newProgress(w io.Writer) func(bench.Progress) {
	f, isFile := w.(*os.File)
	if !isFile || !term.IsTerminal(int(f.Fd())) {
		return func(p bench.Progress) {
			fmt.Fprintf(w, "%s %s %3.0fs/%.0fs: %d calls, %.0f/s, %d errors\n", p.Run, p.Phase,
				p.Elapsed.Seconds(), p.Total.Seconds(), p.Calls, rate(p), p.Errors)
		}
	}
	var bar *progressbar.ProgressBar
	var current string
	return func(p bench.Progress) {
		if key := p.Run + p.Phase; key != current {
			if bar != nil {
				bar.Finish()
				fmt.Fprintln(w)
			}
			current = key
			bar = progressbar.NewOptions64(p.Total.Milliseconds(), progressbar.OptionSetWriter(w),
				progressbar.OptionSetWidth(30), progressbar.OptionClearOnFinish())
		}
		bar.Describe(fmt.Sprintf("%s %s: %d calls, %.0f/s, %d errors", p.Run, p.Phase, p.Calls, rate(p), p.Errors))
		bar.Set64(min(p.Elapsed.Milliseconds(), p.Total.Milliseconds()))
	}
}

func rate(p bench.Progress) float64 {
	if p.Elapsed < time.Millisecond {
		return 0
	}
	return float64(p.Calls) / p.Elapsed.Seconds()
}
