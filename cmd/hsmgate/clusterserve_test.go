package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/hsmgate/hsmgate/gateway/cluster"
	"github.com/hsmgate/hsmgate/internal/config"
)

// hsmgate serve as a cluster's first node: raft bootstraps from the
// initialised keystore, the gossip pool publishes the node, writes go
// through raft, and /readyz, /cluster, hsmgate cluster status and raft
// say so.
func TestServeAsClusterNode(t *testing.T) {
	data, endpoint, _ := initGateway(t, 1)
	ca := newClusterTestCA(t)
	ca.writeCerts(t, data, "n1")
	key, err := cluster.GenerateGossipKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "gossip.keys"), cluster.FormatGossipKeyring([][]byte{key}), 0o600); err != nil {
		t.Fatal(err)
	}
	editConfig(t, data, func(c *config.Config) {
		c.Cluster = &config.Cluster{NodeID: "n1", Zone: "z1", RaftAddress: freeAddress(t), Bootstrap: true,
			TLSCA: "ca.pem", TLSCert: "node.pem", TLSKey: "node.key", TLSClientCert: "client.pem", TLSClientKey: "client.key",
			GossipAddress: freeAddress(t), GossipKeys: "gossip.keys", Label: "test-cluster"}
	})
	roots := caPool(t, filepath.Join(data, "pki", "ca.pem"))
	srv := startServe(t, data)
	srv.waitReady(t, endpoint, roots)

	code, body, err := insecureGet(endpoint, "/readyz")
	if err != nil || code != 200 || !strings.Contains(body, "cluster: 0 of 0 other nodes usable") {
		t.Fatalf("/readyz: %d %q %v", code, body, err)
	}
	r := hsmgate(t, nil, "--data", data, "cluster", "status")
	if r.code != 0 || !strings.Contains(r.stdout, "n1") || !strings.Contains(r.stdout, "z1") {
		t.Fatalf("cluster status: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	r = hsmgate(t, nil, "--data", data, "cluster", "raft")
	if r.code != 0 || !strings.Contains(r.stdout, "leader n1") {
		t.Fatalf("cluster raft: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	// A write goes through raft; the admin's credentials were replicated
	// from the initialised keystore.
	akid, secret := readAdminCredentials(t, data)
	cfg, _ := config.Load(data)
	c := kmsClient(endpoint, cfg.Gateway.Region, akid, secret, roots)
	k, err := c.CreateKey(context.Background(), &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Encrypt(context.Background(), &kms.EncryptInput{KeyId: k.KeyMetadata.KeyId, Plaintext: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	// A gossip key rotation on the running node; the keyring file follows.
	gk := func(args ...string) result {
		t.Helper()
		return hsmgate(t, nil, append([]string{"--data", data, "cluster", "gossip-key"}, args...)...)
	}
	newKey := filepath.Join(t.TempDir(), "new.key")
	if r := gk("generate", newKey); r.code != 0 {
		t.Fatalf("gossip-key generate: %s", r.stderr)
	}
	oldKey := filepath.Join(t.TempDir(), "old.key")
	os.WriteFile(oldKey, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600)
	if r := gk("remove", oldKey); r.code != 1 || !strings.Contains(r.stderr, "primary") {
		t.Fatalf("removing the primary key: exit %d: %s", r.code, r.stderr)
	}
	for _, step := range []string{"install", "use"} {
		if r := gk(step, newKey); r.code != 0 {
			t.Fatalf("gossip-key %s: %s", step, r.stderr)
		}
	}
	if r := gk("remove", oldKey); r.code != 0 {
		t.Fatalf("gossip-key remove: %s", r.stderr)
	}
	newRaw, _ := os.ReadFile(newKey)
	nk, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(string(newRaw)))
	r = gk("list")
	if r.code != 0 || strings.TrimSpace(r.stdout) != cluster.GossipKeyFingerprint(nk)+" (primary)" {
		t.Fatalf("gossip-key list after the rotation: %q", r.stdout)
	}
	keys, err := cluster.LoadGossipKeyring(filepath.Join(data, "gossip.keys"))
	if err != nil || len(keys) != 1 || !bytes.Equal(keys[0], nk) {
		t.Fatalf("the keyring file after the rotation: %d keys, %v", len(keys), err)
	}
	if code := srv.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("serve: exit %d", code)
	}
}
