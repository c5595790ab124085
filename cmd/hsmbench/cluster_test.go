package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/hsmgate/hsmgate/bench"
	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/hsmpool"
	"github.com/hsmgate/hsmgate/internal/gatewaytest"
	"github.com/hsmgate/hsmgate/internal/testenv"
)

// node is one independent gateway of independentGateways.
type node struct {
	url   string
	store *keystore.Store
	admin *gateway.AdminCredentials
}

// independentGateways starts n gateways that share nothing: each has its
// own HSM slot (one SoftHSM token: the module is loaded once per process,
// so in-process gateways can't each have a SoftHSM of their own), its own
// domain key, keystore and PKI. So that one client can reach them all,
// every gateway also trusts gateway 1's CA for client certificates, and
// each has an admin principal, so gateway 1's admin certificate works on
// all. It returns the gateways and a CA bundle that trusts every one.
func independentGateways(t *testing.T, n int, region string) ([]node, string) {
	t.Helper()
	ctx := context.Background()
	env := testenv.NewSoftHSM(t, n)
	nodes := make([]node, n)
	var bundle []byte
	for i := range nodes {
		pool, err := hsmpool.Open(ctx, hsmpool.Options{Modules: []hsmpool.ModuleOptions{{Path: env.Module,
			Tokens: []hsmpool.TokenSelector{{Label: env.Tokens[i].Label}}, PIN: hsmpool.PINSource{File: env.PINFile}}}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pool.Close() })
		dir, store, admin := gatewaytest.Provision(t, pool)
		own, err := os.ReadFile(admin.CABundle)
		if err != nil {
			t.Fatal(err)
		}
		bundle = append(bundle, own...)
		if i > 0 {
			ca1, err := os.ReadFile(nodes[0].admin.CABundle)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(admin.CABundle, append(own, ca1...), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		gw, err := gateway.New(gateway.Config{Region: region, Account: gatewaytest.Account, Pool: pool, Store: store,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		url, _, _ := gatewaytest.Serve(t, gw, pool, store, dir)
		nodes[i] = node{url: url, store: store, admin: admin}
	}
	path := filepath.Join(t.TempDir(), "cas.pem")
	if err := os.WriteFile(path, bundle, 0o644); err != nil {
		t.Fatal(err)
	}
	return nodes, path
}

// hsmbench cluster against three independent gateways: they share no
// keystore, so each node gets keys of its own (and the report says so);
// both phases run without errors, the report has the scaling ratio and the
// control-plane write latencies, and the writes' keys end scheduled for
// deletion.
func TestClusterAgainstIndependentGateways(t *testing.T) {
	const region = "eu-central-1"
	gs, cas := independentGateways(t, 3, region)
	var urls []string
	for _, g := range gs {
		urls = append(urls, g.url)
	}
	for _, k := range []string{"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_KMS", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_CA_BUNDLE"} {
		t.Setenv(k, "")
	}
	out := filepath.Join(t.TempDir(), "report")
	args := []string{"cluster", "--cert", gs[0].admin.ClientCert, "--key", gs[0].admin.ClientKey, "--ca-bundle", cas,
		"--concurrency", "2", "--warmup", "100ms", "--duration", "500ms", "--writes", "5", "--replication-timeout", "1s",
		"--mix", "Decrypt=1,Encrypt=2,Sign=1,GenerateMac=1", "--check-every", "5", "--out", out, "--no-progress"}
	for _, u := range urls {
		args = append(args, "--endpoint", u)
	}
	code, stdout, stderr := hsmbench(t, args...)
	if code != 0 {
		t.Fatalf("hsmbench cluster: exit %d", code)
	}
	if !strings.Contains(stderr, "do not share a keystore") {
		t.Errorf("stderr does not say the nodes got keys of their own")
	}

	f, err := os.Open(filepath.Join(out, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := bench.ReadJSON(f)
	f.Close()
	if err != nil || len(rep.Runs) != 4 {
		t.Fatalf("report: %v, %d runs", err, len(rep.Runs))
	}
	one, all := rep.Runs[0], rep.Runs[1]
	if one.Concurrency != 2 || all.Concurrency != 6 || one.Target != urls[0] || !strings.Contains(all.Target, urls[2]) ||
		!strings.Contains(all.Name, "keys per node") {
		t.Errorf("phases: %q c=%d on %s; %q c=%d on %s", one.Name, one.Concurrency, one.Target, all.Name, all.Concurrency, all.Target)
	}
	for _, r := range rep.Runs[:2] {
		if r.Summary.Calls == 0 || r.Summary.Throughput <= 0 || r.Summary.Errors != 0 || r.Checked == 0 || r.CheckFailures != 0 {
			t.Errorf("%s: %+v, checked %d, failed %d", r.Name, r.Summary, r.Checked, r.CheckFailures)
		}
	}
	for _, r := range rep.Runs[2:] {
		if r.Shape != "control-plane" || r.Summary.Calls != 5 || r.Summary.Errors != 0 || r.Summary.P50 <= 0 || r.Summary.P99 <= 0 || r.Summary.Max <= 0 {
			t.Errorf("%s: %+v", r.Name, r.Summary)
		}
	}

	// The summary, on standard output and in report.md: the ratio, the
	// spread over the nodes, the write latencies.
	md, err := os.ReadFile(filepath.Join(out, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	ratio := regexp.MustCompile(`\*\*Scaling: ([0-9.]+)\*\* = throughput on 3 nodes / throughput on node 1 alone`)
	for name, text := range map[string]string{"stdout": stdout, "report.md": string(md)} {
		m := ratio.FindStringSubmatch(text)
		if m == nil {
			t.Errorf("%s has no scaling ratio", name)
			continue
		}
		got, _ := strconv.ParseFloat(m[1], 64)
		want := all.Summary.Throughput / one.Summary.Throughput
		if got <= 0 || got < want-0.01 || got > want+0.01 {
			t.Errorf("%s: scaling %v, the runs give %.3f", name, got, want)
		}
		for _, s := range []string{"## Cluster scaling", "**not shared**", "Calls per node", "node 3 ", "## Control-plane writes",
			"| control plane: node 1 | 5 | 0 |", "| control plane: 3 nodes in turn | 5 | 0 |", "scheduled for deletion in 7 days"} {
			if !strings.Contains(text, s) {
				t.Errorf("%s lacks %q", name, s)
			}
		}
	}

	// Each node made its own workload key and write key; only the write
	// key is pending deletion, and it was written (node 3 got a
	// description in the writes in turn, the others tags too).
	for i, g := range gs {
		keys, _ := g.store.Keys("", 1000, func(k *keystore.Key) bool { return k.Tags["Purpose"] == "hsmbench" })
		written, _ := g.store.Keys("", 1000, func(k *keystore.Key) bool { return k.State == keystore.StatePendingDeletion })
		if len(keys) != 4 || len(written) != 1 || written[0].State != keystore.StatePendingDeletion ||
			written[0].PendingWindowDays != bench.DeletionWindowDays || !strings.HasPrefix(written[0].Description, "hsmbench write ") {
			t.Errorf("node %d: %d hsmbench keys, written %+v", i+1, len(keys), written)
		} else if i < 2 && written[0].Tags[bench.WriteTag] == "" {
			t.Errorf("node %d: the write key has no %s tag", i+1, bench.WriteTag)
		}
	}
}

func TestClusterRefusesBadArguments(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--endpoint", "https://127.0.0.1:1"}, "at least two"},
		{[]string{"--endpoint", "https://127.0.0.1:1", "--endpoint", "https://127.0.0.1:1"}, "twice"},
		{[]string{"--endpoint", "https://127.0.0.1:1", "--endpoint", "https://127.0.0.1:2", "--concurrency", "0"}, "--concurrency"},
		{[]string{"--endpoint", "https://127.0.0.1:1", "--endpoint", "https://127.0.0.1:2", "--cert", "c.pem"}, "--cert and --key"},
		{[]string{"--endpoint", "https://127.0.0.1:1", "--endpoint", "https://127.0.0.1:2", "--rate", "100"}, "rate"},
	} {
		code, _, stderr := hsmbench(t, append([]string{"cluster", "--no-progress"}, tc.args...)...)
		if code == 0 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want an error about %q", tc.args, code, stderr, tc.want)
		}
	}
}
