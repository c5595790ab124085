package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/gateway/cluster"
	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/internal/config"
	"github.com/hsmgate/hsmgate/internal/pki"
)

// clusterTestCA writes nodes' TLS material, as an operator would give it.
type clusterTestCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newClusterTestCA(t *testing.T) *clusterTestCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.NewCA(key, "test cluster CA", 24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &clusterTestCA{cert: cert, key: key, pem: pki.EncodeCertPEM(cert)}
}

// writeNode writes a data folder for node id: the CA, a server certificate
// for 127.0.0.1, a client certificate, their keys (0600) and an
// hsmgate.toml whose [cluster] section has raft address addr and joins
// through join.
func (ca *clusterTestCA) writeNode(t *testing.T, id, addr string, join []string) string {
	t.Helper()
	dir := t.TempDir()
	ca.writeCerts(t, dir, id)
	cfg := &config.Config{Dir: dir,
		Pool: config.Pool{Modules: []config.Module{{Path: "/nonexistent/module.so", PINFile: "pin"}}},
		Cluster: &config.Cluster{NodeID: id, RaftAddress: addr, RaftJoin: join,
			TLSCA: "ca.pem", TLSCert: "node.pem", TLSKey: "node.key", TLSClientCert: "client.pem", TLSClientKey: "client.key"},
	}
	if err := cfg.Write(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// writeCerts writes node id's cluster TLS material into dir: ca.pem, a
// server certificate for 127.0.0.1 (node.pem), a client certificate
// naming principal "node.<id>" (client.pem) and their keys (0600).
func (ca *clusterTestCA) writeCerts(t *testing.T, dir, id string) {
	t.Helper()
	write := func(name string, b []byte, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(dir, name), b, mode); err != nil {
			t.Fatal(err)
		}
	}
	for _, client := range []bool{false, true} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		var cert *x509.Certificate
		name := "node"
		if client {
			name = "client"
			cert, err = pki.IssueClient(ca.cert, ca.key, key.Public(), "node."+id, time.Hour, time.Now())
		} else {
			cert, err = pki.IssueServer(ca.cert, ca.key, key.Public(), []string{"127.0.0.1"}, time.Hour, time.Now())
		}
		if err != nil {
			t.Fatal(err)
		}
		kp, err := pki.EncodePrivateKeyPEM(key)
		if err != nil {
			t.Fatal(err)
		}
		write(name+".pem", pki.EncodeCertPEM(cert), 0o644)
		write(name+".key", kp, 0o600)
	}
	write("ca.pem", ca.pem, 0o644)
}

// startClusterTestNode runs node id's raft in this process, with the TLS
// material of its data folder read as serve reads it.
func startClusterTestNode(t *testing.T, dir string, bootstrap bool) (*cluster.RaftNode, *keystore.Store) {
	t.Helper()
	cfg, err := config.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	o, _, err := cfg.ClusterOptions()
	if err != nil {
		t.Fatal(err)
	}
	tc, err := clusterTLS(o)
	if err != nil {
		t.Fatal(err)
	}
	store, err := keystore.Open(filepath.Join(dir, "keystore.db"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := cluster.NewRaftNode(cluster.RaftConfig{NodeID: o.NodeID, BindAddress: o.RaftAddress, DataDir: o.RaftDir,
		Bootstrap: bootstrap, TLS: tc, Store: store, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Shutdown(); store.Close() })
	return n, store
}

// freeAddress is a loopback address nothing listens on now.
func freeAddress(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func voters(t *testing.T, n *cluster.RaftNode) []string {
	t.Helper()
	s, err := n.Servers()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, v := range s {
		ids = append(ids, v.ID)
	}
	return ids
}

func waitClusterCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// `hsmgate cluster join | raft | remove-peer | leave`, as an operator types
// them, against nodes of a real raft cluster.
func TestClusterMembershipCommands(t *testing.T) {
	ca := newClusterTestCA(t)
	a1, a2, a3 := freeAddress(t), freeAddress(t), freeAddress(t)
	d1 := ca.writeNode(t, "n1", a1, nil)
	d2 := ca.writeNode(t, "n2", a2, nil)
	d3 := ca.writeNode(t, "n3", a3, []string{a1})
	n1, s1 := startClusterTestNode(t, d1, true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n1.WaitForLeader(ctx); err != nil {
		t.Fatal(err)
	}
	n2, _ := startClusterTestNode(t, d2, false)
	n3, _ := startClusterTestNode(t, d3, false)

	// join through a member named on the command line, and through raft_join.
	if r := hsmgate(t, nil, "--data", d2, "cluster", "join", a1); r.code != 0 || !strings.Contains(r.stdout, "Node n2") {
		t.Fatalf("cluster join: exit %d: %s", r.code, r.stderr)
	}
	if r := hsmgate(t, nil, "--data", d3, "cluster", "join"); r.code != 0 {
		t.Fatalf("cluster join (raft_join): exit %d: %s", r.code, r.stderr)
	}
	// A new node's data folder gets its empty keystore from join, even
	// when no member answers yet.
	d4 := ca.writeNode(t, "n4", freeAddress(t), []string{freeAddress(t)})
	if r := hsmgate(t, nil, "--data", d4, "cluster", "join"); r.code == 0 || !strings.Contains(r.stdout, "Created an empty keystore") {
		t.Fatalf("cluster join on a new node, no member up: exit %d: %s", r.code, r.stderr)
	}
	s4, err := keystore.Open(filepath.Join(d4, "keystore.db"))
	if err != nil {
		t.Fatal(err)
	}
	if empty, err := s4.Empty(); err != nil || !empty {
		t.Fatalf("the new node's keystore: empty %v, %v", empty, err)
	}
	s4.Close()
	for _, n := range []*cluster.RaftNode{n2, n3} {
		if err := n.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	r := hsmgate(t, nil, "--data", d3, "cluster", "raft")
	if r.code != 0 || !strings.Contains(r.stdout, "node n3") || !strings.Contains(r.stdout, "leader n1") ||
		!strings.Contains(r.stdout, "n2") || strings.Count(r.stdout, " yes ") < 3 {
		t.Fatalf("cluster raft: exit %d:\n%s%s", r.code, r.stdout, r.stderr)
	}

	// backup from one node, restore through another (forwarded to the
	// leader): a key created after the backup is gone everywhere.
	backup := filepath.Join(t.TempDir(), "keystore.backup")
	if r := hsmgate(t, nil, "--data", d2, "cluster", "backup", backup); r.code != 0 {
		t.Fatalf("cluster backup: exit %d: %s", r.code, r.stderr)
	}
	if st, err := os.Stat(backup); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, %v", st, err)
	}
	if err := s1.Apply(&keystore.SetMeta{Name: "after-backup", Value: []byte{1}}); err != nil {
		t.Fatal(err)
	}
	if r := hsmgate(t, nil, "--data", d3, "cluster", "restore", backup); r.code != 0 {
		t.Fatalf("cluster restore: exit %d: %s", r.code, r.stderr)
	}
	waitClusterCond(t, "the restore on n1", func() bool { v, _ := s1.Meta("after-backup"); return v == nil })

	// remove-peer: a dead node, through another member.
	n2.Shutdown()
	if r := hsmgate(t, nil, "--data", d3, "cluster", "remove-peer", "n2"); r.code != 0 {
		t.Fatalf("cluster remove-peer: exit %d: %s", r.code, r.stderr)
	}
	waitClusterCond(t, "n2 out of the configuration", func() bool { return len(voters(t, n1)) == 2 })
	if r := hsmgate(t, nil, "--data", d3, "cluster", "remove-peer", "n3"); r.code == 0 || !strings.Contains(r.stderr, "cluster leave") {
		t.Fatalf("remove-peer of this node: exit %d: %s", r.code, r.stderr)
	}
	// leave: this node.
	if r := hsmgate(t, nil, "--data", d3, "cluster", "leave"); r.code != 0 {
		t.Fatalf("cluster leave: exit %d: %s", r.code, r.stderr)
	}
	waitClusterCond(t, "n3 out of the configuration", func() bool { v := voters(t, n1); return len(v) == 1 && v[0] == "n1" })
}

func TestClusterCommandsRefuse(t *testing.T) {
	ca := newClusterTestCA(t)
	// No [cluster] section.
	plain := t.TempDir()
	cfg := &config.Config{Dir: plain, Pool: config.Pool{Modules: []config.Module{{Path: "/nonexistent/module.so", PINFile: "pin"}}}}
	if err := cfg.Write(); err != nil {
		t.Fatal(err)
	}
	if r := hsmgate(t, nil, "--data", plain, "cluster", "join", "127.0.0.1:1"); r.code == 0 || !strings.Contains(r.stderr, "no [cluster] section") {
		t.Fatalf("without [cluster]: exit %d: %s", r.code, r.stderr)
	}
	// A node key other users can read.
	d := ca.writeNode(t, "n1", "127.0.0.1:8300", nil)
	if err := os.Chmod(filepath.Join(d, "node.key"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := hsmgate(t, nil, "--data", d, "cluster", "join", "127.0.0.1:1"); r.code == 0 || !strings.Contains(r.stderr, "chmod 600") {
		t.Fatalf("readable key: exit %d: %s", r.code, r.stderr)
	}
	// A key that is not the certificate's.
	d = ca.writeNode(t, "n1", "127.0.0.1:8300", nil)
	other, err := os.ReadFile(filepath.Join(d, "client.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "node.key"), other, 0o600); err != nil {
		t.Fatal(err)
	}
	if r := hsmgate(t, nil, "--data", d, "cluster", "raft"); r.code == 0 || !strings.Contains(r.stderr, "is not the key of the certificate") {
		t.Fatalf("mismatched key: exit %d: %s", r.code, r.stderr)
	}
	// No member to ask, and a member that is not there.
	d = ca.writeNode(t, "n1", "127.0.0.1:8300", nil)
	if r := hsmgate(t, nil, "--data", d, "cluster", "join"); r.code == 0 || !strings.Contains(r.stderr, "raft_join") {
		t.Fatalf("join with no member: exit %d: %s", r.code, r.stderr)
	}
	if r := hsmgate(t, nil, "--data", d, "cluster", "join", freeAddress(t)); r.code == 0 || !strings.Contains(r.stderr, "cluster join") {
		t.Fatalf("join through nobody: exit %d: %s", r.code, r.stderr)
	}
	if r := hsmgate(t, nil, "--data", d, "cluster", "raft"); r.code == 0 || !strings.Contains(r.stderr, "is its gateway running") {
		t.Fatalf("raft status of a stopped node: exit %d: %s", r.code, r.stderr)
	}
}

// hsmgate cluster certs makes the cluster CA once and each node's raft
// TLS material from it.
func TestClusterCerts(t *testing.T) {
	dir := t.TempDir()
	caDir := filepath.Join(dir, "ca")
	for _, n := range []string{"n1", "n2"} {
		out := filepath.Join(dir, n)
		if r := hsmgate(t, nil, "cluster", "certs", "--ca-dir", caDir, "--node", n, "--host", "10.0.0.1", "--host", "gw.example", "--out", out); r.code != 0 {
			t.Fatalf("cluster certs %s: exit %d: %s", n, r.code, r.stderr)
		}
		for name, mode := range map[string]os.FileMode{"ca.pem": 0o644, "node.pem": 0o644, "node.key": 0o600, "client.pem": 0o644, "client.key": 0o600} {
			if st, err := os.Stat(filepath.Join(out, name)); err != nil || st.Mode().Perm() != mode {
				t.Fatalf("%s/%s: %v, %v", n, name, st, err)
			}
		}
	}
	if st, err := os.Stat(filepath.Join(caDir, "ca.key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("the CA key: %v, %v", st, err)
	}
	caPEM, _ := os.ReadFile(filepath.Join(dir, "n1", "ca.pem"))
	other, _ := os.ReadFile(filepath.Join(dir, "n2", "ca.pem"))
	if string(caPEM) != string(other) {
		t.Fatal("the second node's CA is another CA")
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	read := func(name string) *x509.Certificate {
		raw, _ := os.ReadFile(filepath.Join(dir, "n2", name))
		certs, err := pki.ParseCertsPEM(raw)
		if err != nil {
			t.Fatal(err)
		}
		return certs[0]
	}
	server, client := read("node.pem"), read("client.pem")
	if _, err := server.Verify(x509.VerifyOptions{Roots: roots, DNSName: "gw.example"}); err != nil {
		t.Fatalf("node.pem: %v", err)
	}
	if p, err := pki.PrincipalFromCert(client); err != nil || p != "node.n2" {
		t.Fatalf("client.pem names %q, %v", p, err)
	}
	if r := hsmgate(t, nil, "cluster", "certs", "--ca-dir", caDir, "--node", "bad id!", "--host", "h", "--out", filepath.Join(dir, "x")); r.code != 1 {
		t.Fatalf("a bad node id: exit %d", r.code)
	}
}
