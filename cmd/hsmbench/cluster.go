package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hsmgate/hsmgate/bench"
)

// clusterFlags are the endpoint and load flags of `hsmbench run` less those
// that do not apply (one endpoint, the server's pid, the other load
// shapes), with --endpoint repeatable and --concurrency per node.
func clusterFlags() []cli.Flag {
	flags := []cli.Flag{
		&cli.StringSliceFlag{Name: "endpoint", Required: true, Usage: "a node's KMS endpoint URL; repeat it for each node, node 1 first (at least two)"},
		&cli.IntFlag{Name: "concurrency", Aliases: []string{"c"}, Value: 8, Usage: "closed-loop callers per node: c on node 1 alone, then c×N over the N nodes"},
		&cli.IntFlag{Name: "writes", Value: 50, Usage: "sequential control-plane writes to measure, to node 1 and then to the nodes in turn (0: none)"},
		&cli.DurationFlag{Name: "replication-timeout", Value: 10 * time.Second, Usage: "how long a key made on node 1 may take to be usable on the other nodes before they get keys of their own"},
	}
	skip := []string{"endpoint", "server-pid", "concurrency", "sweep", "rate", "max-in-flight", "find-max-p99", "start-rate"}
	for _, f := range append(endpointFlags(), loadFlags()...) {
		if !slices.Contains(skip, f.Names()[0]) {
			flags = append(flags, f)
		}
	}
	return flags
}

// clusterConfig is the configuration every node is reached with: the AWS_*
// variables, overridden by the flags. A cluster's nodes share credentials
// and CA (its keystore and PKI are replicated); for independent gateways,
// the CA bundle can hold each one's CA.
func clusterConfig(c *cli.Context) (bench.KMSConfig, error) {
	cfg := bench.KMSConfigFromEnv()
	for flag, field := range map[string]*string{"region": &cfg.Region, "ca-bundle": &cfg.CABundle, "cert": &cfg.ClientCert, "key": &cfg.ClientKey} {
		if v := c.String(flag); v != "" {
			*field = v
		}
	}
	switch {
	case (cfg.ClientCert == "") != (cfg.ClientKey == ""):
		return cfg, errors.New("--cert and --key go together")
	case cfg.ClientCert != "":
	case cfg.Region == "":
		return cfg, errors.New("no region: set AWS_REGION or pass --region")
	case cfg.AccessKeyID == "" || cfg.SecretAccessKey == "":
		return cfg, errors.New("no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or pass --cert and --key")
	}
	return cfg, nil
}

// runCluster is `hsmbench cluster`: in one run, the workload in a closed
// loop at c callers on node 1 alone, then at c×N callers over all N nodes,
// and the ratio of their throughputs; then the latency of sequential
// control-plane writes, to node 1 and to the nodes in turn.
func runCluster(c *cli.Context) error {
	urls := c.StringSlice("endpoint")
	if len(urls) < 2 {
		return errors.New("hsmbench cluster needs at least two nodes: pass --endpoint once for each, node 1 first")
	}
	for i, u := range urls {
		if slices.Contains(urls[:i], u) {
			return fmt.Errorf("--endpoint %s is given twice", u)
		}
	}
	per, writes := c.Int("concurrency"), c.Int("writes")
	if per < 1 {
		return errors.New("--concurrency must be at least 1")
	}
	if writes < 0 {
		return errors.New("--writes must be 0 or more")
	}
	if c.Duration("replication-timeout") <= 0 {
		return errors.New("--replication-timeout must be positive")
	}
	cfg, err := clusterConfig(c)
	if err != nil {
		return err
	}
	cfg.MaxConns = 2 * per // a node has c calls in flight; some room for connections still closing
	w, err := workload(c)
	if err != nil {
		return err
	}
	var nodes []bench.Target
	closeAll := func() {
		for _, t := range nodes {
			t.Close()
		}
	}
	for _, u := range urls {
		cfg.Endpoint = u
		var t bench.Target
		switch c.String("client") {
		case "lean":
			t, err = bench.NewLeanTarget(cfg)
		case "sdk":
			t, err = bench.NewSDKTarget(cfg)
		default:
			err = fmt.Errorf("--client %q: want lean or sdk", c.String("client"))
		}
		if err != nil {
			closeAll()
			return err
		}
		nodes = append(nodes, t)
	}
	m, err := bench.NewMultiTarget(nodes...)
	if err != nil {
		closeAll()
		return err
	}
	defer m.Close()
	m.ReplicationTimeout = c.Duration("replication-timeout")
	n := len(nodes)
	errw := c.App.ErrWriter
	fmt.Fprintf(errw, "hsmbench: making the workload's keys on node 1 and waiting up to %v for them on the other %d nodes\n", m.ReplicationTimeout, n-1)
	if err := m.Prepare(c.Context, w); err != nil {
		return fmt.Errorf("prepare the workload's keys: %w", err)
	}
	for _, note := range m.Notes() {
		fmt.Fprintf(errw, "hsmbench: %s\n", note)
	}

	report := newReport()
	cr := &bench.ClusterReport{SharedKeystore: m.SharedKeystore(), Notes: m.Notes()}
	for _, t := range nodes {
		cr.Nodes = append(cr.Nodes, t.Name())
	}
	runErr := func() error {
		o := options(c, nil, 0) // client CPU only: the servers are several processes, often elsewhere
		one, err := bench.Closed(c.Context, nodes[0], w, per, o)
		one.Name, one.Shape = fmt.Sprintf("node 1 alone, c=%d", per), "cluster 1 node"
		cr.One = one
		report.Runs = append(report.Runs, one)
		if err != nil {
			return err
		}
		m.ResetCalls()
		all, err := bench.Closed(c.Context, m, w, per*n, o)
		all.Name, all.Shape = fmt.Sprintf("%d nodes, c=%d (%d per node)", n, per*n, per), fmt.Sprintf("cluster %d nodes", n)
		if !m.SharedKeystore() {
			all.Name += ", keys per node"
		}
		cr.All, cr.NodeCalls = all, m.Calls()
		report.Runs = append(report.Runs, all)
		if err != nil {
			return err
		}
		if writes == 0 {
			return nil
		}
		runs, notes, err := m.ControlPlane(c.Context, writes)
		cr.Writes = runs
		cr.Notes = append(cr.Notes, notes...)
		report.Runs = append(report.Runs, runs...)
		return err
	}()
	if ferr := finishCluster(c, report, cr); ferr != nil {
		return errors.Join(runErr, ferr)
	}
	return runErr
}

// finishCluster writes the report files with the cluster summary appended
// to report.md, and prints both.
func finishCluster(c *cli.Context, report *bench.Report, cr *bench.ClusterReport) error {
	var section bytes.Buffer
	if err := cr.WriteMarkdown(&section); err != nil {
		return err
	}
	dir := c.String("out")
	files, err := report.WriteFiles(dir)
	if err != nil {
		return err
	}
	md := filepath.Join(dir, "report.md")
	if slices.Contains(files, md) {
		f, err := os.OpenFile(md, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return err
		}
		_, werr := f.Write(section.Bytes())
		if err := errors.Join(werr, f.Close()); err != nil {
			return fmt.Errorf("report: %w", err)
		}
	}
	if err := report.WriteMarkdown(c.App.Writer); err != nil {
		return err
	}
	if _, err := c.App.Writer.Write(section.Bytes()); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "Report: %s\n", strings.Join(relative(files), ", "))
	return nil
}
