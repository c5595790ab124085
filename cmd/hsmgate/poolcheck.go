package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/hsmgate/hsmgate/hsmpool"
	"github.com/hsmgate/hsmgate/internal/config"
)

// runPoolCheck opens the configured pool, prints every slot's status, then
// proves each healthy slot works by running a round trip on it alone (see
// checkSlot). It prints one PASS or FAIL line per slot and a summary, and
// fails (exit status 1) when any slot fails or none is healthy.
//
// A slot that is not healthy counts as failed: a pool check that passed
// while a slot was out of service would hide the very thing it is for. Such
// a slot is not opened again, so a wrong PIN is tried once only, never into
// a lock-out.
func runPoolCheck(ctx context.Context, dataDir string, w io.Writer, log *slog.Logger) (err error) {
	cfg, err := config.Load(dataDir)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("pool check: no %s in %s: run `hsmgate init` first, or pass --data", config.FileName, dataDir)
	}
	if err != nil {
		return fmt.Errorf("pool check: %w", err)
	}
	opts, err := cfg.PoolOptions(log)
	if err != nil {
		return fmt.Errorf("pool check: %w", err)
	}
	p, err := hsmpool.Open(ctx, opts)
	if err != nil {
		return fmt.Errorf("pool check: open pool: %w", err)
	}
	// The pool stays open while each slot is checked on its own: its
	// sessions keep the module loaded and the tokens logged in.
	defer func() {
		if cerr := p.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("pool check: close pool: %w", cerr))
		}
	}()

	statuses := p.Status()
	if err := printSlotTable(w, statuses); err != nil {
		return fmt.Errorf("pool check: print slot table: %w", err)
	}
	if cfg.Pool.DomainKeyCheck == "" {
		fmt.Fprintln(w, "Note: no pool.domain_key_check is configured; the pool trusts the domain key most slots agree on.")
	}
	fmt.Fprintln(w)

	var failed []string
	healthy := 0
	for _, st := range statuses {
		if st.State != hsmpool.StateHealthy {
			reason := st.State.String()
			if st.Reason != "" {
				reason += ": " + st.Reason
			}
			fmt.Fprintf(w, "FAIL slot %s: not healthy (%s)\n", st.Name, reason)
			failed = append(failed, st.Name)
			continue
		}
		healthy++
		res, err := checkSlot(ctx, opts, st)
		if err != nil {
			fmt.Fprintf(w, "FAIL slot %s: %v\n", st.Name, err)
			failed = append(failed, st.Name)
			continue
		}
		fmt.Fprintf(w, "PASS slot %s: %s\n", st.Name, res)
	}

	switch {
	case healthy == 0:
		fmt.Fprintf(w, "pool check FAILED: none of %d slots is healthy\n", len(statuses))
		return cli.Exit("", 1)
	case len(failed) > 0:
		fmt.Fprintf(w, "pool check FAILED: %d of %d slots failed (%s)\n", len(failed), len(statuses), strings.Join(failed, ", "))
		return cli.Exit("", 1)
	}
	fmt.Fprintf(w, "pool check passed: all %d slots work\n", len(statuses))
	return nil
}

// printSlotTable prints one row per slot, then each distinct mechanism list
// with the slots that have it (the lists are too long for a column).
func printSlotTable(w io.Writer, statuses []hsmpool.SlotStatus) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tSERIAL\tMODEL\tSTATE\tREASON\tDOMAIN KEY\tMAX SESSIONS\tMECHANISMS")
	for _, st := range statuses {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\n",
			st.Name, dash(st.Serial), dash(st.Model), st.State, dash(st.Reason), dash(st.DomainKey), st.MaxSessions, len(st.Mechanisms))
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	type group struct {
		mechs string
		slots []string
	}
	var groups []*group
	for _, st := range statuses {
		mechs := strings.Join(st.Mechanisms, ", ")
		if mechs == "" {
			mechs = "(not detected)"
		}
		var g *group
		for _, x := range groups {
			if x.mechs == mechs {
				g = x
			}
		}
		if g == nil {
			g = &group{mechs: mechs}
			groups = append(groups, g)
		}
		g.slots = append(g.slots, st.Name)
	}
	for _, g := range groups {
		fmt.Fprintf(w, "\nMechanisms of %s:\n%s\n", strings.Join(g.slots, ", "), wrap(g.mechs, 100, "  "))
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// wrap breaks a comma-separated list into indented lines of at most width
// characters (a single longer item gets a line of its own).
func wrap(list string, width int, indent string) string {
	var b, line strings.Builder
	for _, word := range strings.Fields(list) {
		if line.Len() > 0 && line.Len()+1+len(word) > width-len(indent) {
			b.WriteString(indent + line.String() + "\n")
			line.Reset()
		}
		if line.Len() > 0 {
			line.WriteByte(' ')
		}
		line.WriteString(word)
	}
	if line.Len() > 0 {
		b.WriteString(indent + line.String())
	}
	return b.String()
}
