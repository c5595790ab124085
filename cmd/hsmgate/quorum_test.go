package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hsmgate/hsmgate/quorum"
)

// hsmgate quorum init installs the first set (with every officer's proof
// of possession) on a stopped gateway; link and status work on a stopped
// and a running one.
func TestQuorumInit(t *testing.T) {
	data, endpoint, _ := initGateway(t, 1)
	dir := t.TempDir()
	write := func(name, typ string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, quorum.Armor(typ, b), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	th := map[quorum.Kind]int{}
	for _, k := range quorum.Kinds {
		th[k] = 2
	}
	set := &quorum.Set{Epoch: 1, Thresholds: th}
	var keys []*quorum.OfficerKey
	for _, n := range []string{"alice", "bob", "carol"} {
		k, err := quorum.GenerateOfficerKey(n)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
		set.Officers = append(set.Officers, k.Public())
	}
	raw, err := set.Encode()
	if err != nil {
		t.Fatal(err)
	}
	setFile := write("quorum.set", quorum.PEMSet, raw)
	var pops []string
	for i, k := range keys {
		pop, _ := k.ProvePossession(set)
		b, _ := pop.Encode()
		pops = append(pops, "--pop", write(set.Officers[i].Name+".pop", quorum.PEMPossession, b))
	}
	run := func(args ...string) result {
		t.Helper()
		return hsmgate(t, nil, append([]string{"--data", data, "quorum"}, args...)...)
	}
	if r := run(append([]string{"init", "--set", setFile, "--cluster", "prod", "--target", "gw-1"}, pops[:4]...)...); r.code != 1 || !strings.Contains(r.stderr, "no proof of possession") {
		t.Fatalf("init without carol's proof: exit %d: %s", r.code, r.stderr)
	}
	if r := run(append([]string{"init", "--set", setFile}, pops...)...); r.code != 1 || !strings.Contains(r.stderr, "[quorum]") {
		t.Fatalf("init without a scope: exit %d: %s", r.code, r.stderr)
	}
	if r := run(append([]string{"init", "--set", setFile, "--cluster", "prod", "--target", "gw-1"}, pops...)...); r.code != 0 || !strings.Contains(r.stdout, "quorum set epoch 1") {
		t.Fatalf("init: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(data, "quorum", "ledger.db")); err != nil {
		t.Fatal(err)
	}
	if r := run(append([]string{"init", "--set", setFile, "--cluster", "prod", "--target", "gw-1"}, pops...)...); r.code != 1 || !strings.Contains(r.stderr, "installed already") {
		t.Fatalf("second init: exit %d: %s", r.code, r.stderr)
	}
	if r := hsmgate(t, nil, "--data", data, "principal", "add", "alice"); r.code != 0 {
		t.Fatalf("principal add: %s", r.stderr)
	}
	if r := run("link", "alice", keys[0].Fingerprint().String()); r.code != 0 {
		t.Fatalf("link: exit %d: %s", r.code, r.stderr)
	}

	// While the gateway runs, through its admin API.
	roots := caPool(t, filepath.Join(data, "pki", "ca.pem"))
	srv := startServe(t, data)
	srv.waitReady(t, endpoint, roots)
	r := run("status")
	if r.code != 0 || !strings.Contains(r.stdout, "quorum set epoch 1") || !strings.Contains(r.stdout, "principal alice") || !strings.Contains(r.stdout, `cluster "prod", target "gw-1"`) {
		t.Fatalf("status while serving: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
}
