package cluster

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/internal/pki"
)

// raftTestPKI is a throwaway cluster CA.
type raftTestPKI struct {
	ca  *x509.Certificate
	key crypto.Signer
}

func newRaftTestPKI(t testing.TB) *raftTestPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.NewCA(key, "hsmgate test cluster CA", 24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &raftTestPKI{ca: ca, key: key}
}

// issueRaftClientCert is a client certificate of the CA for principal.
func issueRaftClientCert(t testing.TB, p *raftTestPKI, principal string) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.IssueClient(p.ca, p.key, key.Public(), principal, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}

// nodeTLS is a node's mutual TLS: a server certificate for 127.0.0.1 and a
// client certificate naming principal "node.<id>", both from the CA.
func (p *raftTestPKI) nodeTLS(t testing.TB, id string) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.IssueServer(p.ca, p.key, key.Public(), []string{"127.0.0.1", "localhost"}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	server := tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
	client := issueRaftClientCert(t, p, "node."+id)
	pool := x509.NewCertPool()
	pool.AddCert(p.ca)
	return &tls.Config{
		Certificates:         []tls.Certificate{server},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return client, nil },
		RootCAs:              pool,
		ClientCAs:            pool,
	}
}

// raftTestLogger discards raft's log unless HSMGATE_TEST_RAFT_LOG is set.
func raftTestLogger() *slog.Logger {
	if os.Getenv("HSMGATE_TEST_RAFT_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// raftTestNode is one node of a test cluster: its keystore and raft.
type raftTestNode struct {
	id     string
	dir    string
	store  *keystore.Store
	node   *RaftNode
	faults *RaftFaults
	cfg    RaftConfig
}

// startRaftTestNode starts a node with its own keystore in dir (a new
// temporary folder when empty), on a loopback port of its own.
func startRaftTestNode(t testing.TB, p *raftTestPKI, id, dir string, bootstrap bool, tweak func(*RaftConfig)) *raftTestNode {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	store, err := keystore.Open(filepath.Join(dir, "keystore.db"))
	if err != nil {
		t.Fatal(err)
	}
	n := &raftTestNode{id: id, dir: dir, store: store, faults: &RaftFaults{}}
	n.cfg = RaftConfig{
		NodeID: id, BindAddress: "127.0.0.1:0", DataDir: filepath.Join(dir, "raft"), Bootstrap: bootstrap,
		TLS: p.nodeTLS(t, id), Store: store, Logger: raftTestLogger().With("test_node", id), Faults: n.faults,
		// Generous for a loaded machine: a write that hangs would still be
		// told apart from a prompt refusal.
		WriteTimeout: 30 * time.Second,
		AuthorizePeer: func(c *x509.Certificate) error {
			if p, err := pki.PrincipalFromCert(c); err != nil || !strings.HasPrefix(p, "node.") {
				return errors.New("not a node certificate")
			}
			return nil
		},
	}
	if tweak != nil {
		tweak(&n.cfg)
	}
	n.node, err = NewRaftNode(n.cfg)
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { n.stop(t) })
	return n
}

// stop shuts the node down and closes its keystore (again harmlessly).
func (n *raftTestNode) stop(t testing.TB) {
	t.Helper()
	if err := n.node.Shutdown(); err != nil && !strings.Contains(err.Error(), "shutdown") {
		t.Errorf("shutdown %s: %v", n.id, err)
	}
	n.store.Close()
}

// startRaftTestCluster starts n nodes: the first bootstraps, the others
// join it, and all agree on a leader.
func startRaftTestCluster(t testing.TB, p *raftTestPKI, count int, tweak func(*RaftConfig)) []*raftTestNode {
	t.Helper()
	nodes := []*raftTestNode{startRaftTestNode(t, p, "n1", "", true, tweak)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := nodes[0].node.WaitForLeader(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 2; i <= count; i++ {
		n := startRaftTestNode(t, p, fmt.Sprintf("n%d", i), "", false, tweak)
		if err := n.node.Join(ctx, nodes[0].node.Address()); err != nil {
			t.Fatalf("join %s: %v", n.id, err)
		}
		nodes = append(nodes, n)
	}
	waitRaftLeader(t, nodes)
	return nodes
}

// waitRaftLeader waits until every node of nodes knows the same leader,
// one of nodes, and the leader's configuration lists them all; it returns
// the leader.
func waitRaftLeader(t testing.TB, nodes []*raftTestNode) *raftTestNode {
	t.Helper()
	var leader *raftTestNode
	raftWaitFor(t, 30*time.Second, "a leader all nodes agree on", func() bool {
		leader = nil
		id, _ := nodes[0].node.Leader()
		for _, n := range nodes {
			if lid, _ := n.node.Leader(); lid != id || id == "" {
				return false
			}
			if n.id == id {
				leader = n
			}
		}
		return leader != nil
	})
	return leader
}

// raftFollowers returns the nodes other than the leader.
func raftFollowers(nodes []*raftTestNode, leader *raftTestNode) []*raftTestNode {
	var out []*raftTestNode
	for _, n := range nodes {
		if n != leader {
			out = append(out, n)
		}
	}
	return out
}

// raftWaitFor polls cond every 20ms until it holds, failing the test after
// timeout.
func raftWaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func raftTestKey(id string) keystore.Key {
	now := time.Unix(1700000000, 0).UTC()
	return keystore.Key{ID: id, CreatedAt: now, State: keystore.StateEnabled, Spec: "SYMMETRIC_DEFAULT",
		Usage: "ENCRYPT_DECRYPT", Origin: "AWS_KMS", Owner: "admin",
		Versions: []keystore.Version{{Number: 1, CreatedAt: now, Blob: []byte("HGK1-test-blob")}}}
}

// hasKey reports whether the node's store holds key id.
func (n *raftTestNode) hasKey(id string) bool {
	_, err := n.store.Key(id)
	return err == nil
}
