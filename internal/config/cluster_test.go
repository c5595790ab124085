package config

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const minimalPool = `
[[pool.modules]]
path = "/usr/lib/softhsm/libsofthsm2.so"
pin_file = "pin"
`

const fullCluster = minimalPool + `
[cluster]
node_id = "gw-a1"
zone = "us-east-1a"
raft_address = "0.0.0.0:8300"
raft_advertise = "10.0.1.5:8300"
raft_join = ["10.0.2.5:8300", "gw-b1.internal:8300"]
bootstrap = true
raft_dir = "/var/lib/hsmgate/raft"
tls_ca = "cluster/ca.pem"
tls_cert = "cluster/node.pem"
tls_key = "cluster/node.key"
tls_client_cert = "cluster/client.pem"
tls_client_key = "cluster/client.key"
gossip_address = "0.0.0.0:7946"
gossip_advertise = "10.0.1.5:7946"
join = ["10.0.2.5:7946"]
gossip_keys = "cluster/gossip.keys"
label = "prod-us-east-1"
`

func TestClusterOptionsMapsEveryKey(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, fullCluster)
	c, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	o, ok, err := c.ClusterOptions()
	if err != nil || !ok {
		t.Fatalf("ClusterOptions: %v, %v", ok, err)
	}
	want := ClusterOptions{
		NodeID: "gw-a1", Zone: "us-east-1a",
		RaftAddress: "0.0.0.0:8300", RaftAdvertise: "10.0.1.5:8300",
		RaftJoin: []string{"10.0.2.5:8300", "gw-b1.internal:8300"}, Bootstrap: true,
		RaftDir: "/var/lib/hsmgate/raft",
		TLSCA:   filepath.Join(dir, "cluster/ca.pem"), TLSCert: filepath.Join(dir, "cluster/node.pem"), TLSKey: filepath.Join(dir, "cluster/node.key"),
		TLSClientCert: filepath.Join(dir, "cluster/client.pem"), TLSClientKey: filepath.Join(dir, "cluster/client.key"),
		GossipAddress: "0.0.0.0:7946", GossipAdvertise: "10.0.1.5:7946", Join: []string{"10.0.2.5:7946"},
		GossipKeys: filepath.Join(dir, "cluster/gossip.keys"), Label: "prod-us-east-1",
	}
	if !reflect.DeepEqual(o, want) {
		t.Fatalf("got  %+v\nwant %+v", o, want)
	}
	// What Write writes, Load reads back the same.
	if err := c.Write(); err != nil {
		t.Fatal(err)
	}
	again, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again.Cluster, c.Cluster) {
		t.Fatalf("round trip: %+v, want %+v", again.Cluster, c.Cluster)
	}
}

func TestClusterAbsentOrDefaults(t *testing.T) {
	c, err := Parse([]byte(minimalPool))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := c.ClusterOptions(); ok || err != nil {
		t.Fatalf("no [cluster]: %v, %v", ok, err)
	}
	c, err = Parse([]byte(minimalPool + `
[cluster]
node_id = "n1"
raft_address = "10.0.0.1:8300"
tls_ca = "ca.pem"
tls_cert = "node.pem"
tls_key = "node.key"
`))
	if err != nil {
		t.Fatal(err)
	}
	c.Dir = "/data"
	o, ok, err := c.ClusterOptions()
	if err != nil || !ok || o.RaftDir != filepath.Join("/data", DefaultRaftDir) || o.Bootstrap || o.RaftAdvertise != "" {
		t.Fatalf("defaults: %+v, %v, %v", o, ok, err)
	}
}

func TestClusterRejects(t *testing.T) {
	base := map[string]string{
		"node_id": `"n1"`, "raft_address": `"10.0.0.1:8300"`,
		"tls_ca": `"ca.pem"`, "tls_cert": `"node.pem"`, "tls_key": `"node.key"`,
	}
	cases := []struct {
		name string
		set  map[string]string // "" deletes the key
		want string
	}{
		{"no node id", map[string]string{"node_id": ""}, "cluster.node_id"},
		{"bad node id", map[string]string{"node_id": `"a b"`}, "cluster.node_id"},
		{"bad zone", map[string]string{"zone": `"zone/1"`}, "cluster.zone"},
		{"no raft address", map[string]string{"raft_address": ""}, "cluster.raft_address is required"},
		{"unspecified without advertise", map[string]string{"raft_address": `"0.0.0.0:8300"`}, "every interface"},
		{"port 0", map[string]string{"raft_address": `"10.0.0.1:0"`}, "fixed port"},
		{"bad advertise", map[string]string{"raft_address": `"0.0.0.0:8300"`, "raft_advertise": `"0.0.0.0:8300"`}, "cluster.raft_advertise"},
		{"bad join", map[string]string{"raft_join": `["nowhere"]`}, "cluster.raft_join[0]"},
		{"no TLS", map[string]string{"tls_key": ""}, "tls_ca, tls_cert and tls_key are required"},
		{"half a client pair", map[string]string{"tls_client_cert": `"c.pem"`}, "tls_client_key together"},
		{"bad gossip address", map[string]string{"gossip_address": `"x"`}, "cluster.gossip_address"},
		{"bad gossip join", map[string]string{"gossip_address": `"10.0.0.1:7946"`, "join": `[":7946"]`}, "cluster.join[0]"},
		{"long label", map[string]string{"label": `"` + strings.Repeat("x", 256) + `"`}, "cluster.label"},
		{"unknown key", map[string]string{"raft_adress": `"10.0.0.1:8300"`}, "cluster.raft_adress"},
	}
	render := func(set map[string]string) string {
		var b strings.Builder
		b.WriteString(minimalPool + "\n[cluster]\n")
		keys := map[string]string{}
		for k, v := range base {
			keys[k] = v
		}
		for k, v := range set {
			keys[k] = v
		}
		for k, v := range keys {
			if v != "" {
				b.WriteString(k + " = " + v + "\n")
			}
		}
		return b.String()
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(render(tc.set)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %q", err, tc.want)
			}
		})
	}
	// The positive twin.
	if _, err := Parse([]byte(render(nil))); err != nil {
		t.Fatal(err)
	}
}
