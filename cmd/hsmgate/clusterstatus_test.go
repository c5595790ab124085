package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/gateway/cluster"
)

// `hsmgate cluster status` reads GET /cluster over mutual TLS and prints
// it: a real gossip node serves the document.
func TestClusterStatus(t *testing.T) {
	key, err := cluster.GenerateGossipKey()
	if err != nil {
		t.Fatal(err)
	}
	g, err := cluster.NewGossip(cluster.GossipConfig{
		NodeID: "gw-a", Zone: "eu-west-1a", APIAddress: "127.0.0.1:8443", BindAddress: "127.0.0.1:0", Label: "test", Keys: [][]byte{key},
		Status: func() cluster.LocalStatus {
			return cluster.LocalStatus{ImageVersion: "v1.2", Attestation: cluster.AttestationMeasured,
				Slots: []cluster.SlotHealth{cluster.SlotHealthy, cluster.SlotDegraded, cluster.SlotHealthy}, InFlight: 3, MaxInFlight: 1024, RPS: 250}
		},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Shutdown()
	mux := http.NewServeMux()
	mux.Handle("GET /cluster", cluster.StatusHandler(g))
	srv := httptest.NewUnstartedServer(mux)
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	srv.StartTLS()
	defer srv.Close()

	// Without a client certificate the gateway refuses the connection.
	if _, _, err := fetchClusterStatus(context.Background(), srv.Client(), srv.URL); err == nil {
		t.Error("fetched without a client certificate")
	}
	client := srv.Client()
	client.Transport.(*http.Transport).TLSClientConfig.Certificates = srv.TLS.Certificates // any certificate will do here
	st, raw, err := fetchClusterStatus(context.Background(), client, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, []byte(`"self": "gw-a"`)) || st.Self != "gw-a" || len(st.Nodes) != 1 {
		t.Fatalf("status %+v\n%s", st, raw)
	}
	var out strings.Builder
	if err := printClusterStatus(&out, st); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`(?m)^Cluster as gw-a \(zone eu-west-1a\) sees it at \d{4}-`,
		`(?m)^NODE\s+ZONE\s+STATE\s+SLOTS\s+LOAD\s+ATTESTATION\s+IMAGE\s+LAST UPDATE$`,
		`(?m)^gw-a \(this node\)\s+eu-west-1a\s+alive\s+2/3 \(1 degraded\)\s+3/1024 in flight, 250/s\s+measured\s+v1\.2\s+\d+s ago$`,
	} {
		if !regexp.MustCompile(want).MatchString(out.String()) {
			t.Errorf("output does not match %s:\n%s", want, out.String())
		}
	}

	// A gateway without a cluster serves no /cluster.
	plain := httptest.NewTLSServer(http.NotFoundHandler())
	defer plain.Close()
	if _, _, err := fetchClusterStatus(context.Background(), plain.Client(), plain.URL); err == nil || !strings.Contains(err.Error(), "not in a cluster") {
		t.Errorf("without a cluster: %v", err)
	}
}

// The table's notes say why a peer takes no forwarded requests.
func TestPrintClusterStatusNotes(t *testing.T) {
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	meta := &cluster.NodeMeta{NodeID: "gw-b", Zone: "z2", APIAddress: "10.0.0.2:8443", Slots: cluster.SummarizeSlots([]cluster.SlotHealth{cluster.SlotFailed})}
	st := cluster.GossipStatus{Self: "gw-a", Zone: "z1", RequireAttestation: true, Time: now, Nodes: []cluster.GossipNodeStatus{
		{ID: "gw-b", Zone: "z2", State: cluster.MemberAlive, Metadata: meta, Attestation: "unverified: quote signature check failed", NotForwardable: "no healthy HSM slot", LastUpdate: now.Add(-3 * time.Second)},
		{ID: "gw-c", State: cluster.MemberDead, MetadataError: "invalid metadata: none published", LastUpdate: now.Add(-time.Minute)},
	}}
	var out strings.Builder
	if err := printClusterStatus(&out, st); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"forwarding requires a verified attestation",
		"gw-b: attestation unverified: quote signature check failed",
		"gw-b: takes no forwarded requests: no healthy HSM slot",
		"gw-c: invalid metadata: none published",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if !regexp.MustCompile(`(?m)^gw-b\s+z2\s+alive\s+0/1\s+0 in flight, 0/s\s+unverified\s+-\s+3s ago$`).MatchString(out.String()) ||
		!regexp.MustCompile(`(?m)^gw-c\s+-\s+dead\s+-\s+-\s+-\s+-\s+1m0s ago$`).MatchString(out.String()) {
		t.Errorf("table:\n%s", out.String())
	}
}
