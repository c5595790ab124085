package cluster

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"

	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/hsmpool"
	"github.com/hsmgate/hsmgate/internal/gatewaytest"
	"github.com/hsmgate/hsmgate/internal/pki"
	"github.com/hsmgate/hsmgate/internal/testenv"
)

// A cluster of three real gateways in three zones, in process: each its
// own SoftHSM token holding the one domain key, its keystore replicated
// through raft, gossiping its health, and failing over crypto requests to
// healthy peers.
type e2eNode struct {
	id, zone string
	pool     *hsmpool.Pool
	raft     *raftTestNode
	gossip   *Gossip
	failover *Failover
	url      string
}

const e2eRegion = "eu-west-1"

func startE2ECluster(t testing.TB) ([]*e2eNode, *gateway.AdminCredentials, *x509.CertPool) {
	t.Helper()
	ctx := context.Background()
	env := testenv.NewSoftHSM(t, 3)
	cpki := newRaftTestPKI(t)
	dk, _ := hsmpool.NewDomainKeyMaterial()
	defer clear(dk)
	gossipKey := testKey(t)
	roots := x509.NewCertPool()
	var nodes []*e2eNode
	var admin *gateway.AdminCredentials
	var dir0 string
	for i := range 3 {
		n := &e2eNode{id: fmt.Sprintf("n%d", i+1), zone: fmt.Sprintf("z%d", i+1)}
		// Fault injection wraps the module every pool shares: only the
		// first pool opened may have it (node 1, whose HSM will fail).
		pool, err := hsmpool.Open(ctx, hsmpool.Options{
			Modules:                 []hsmpool.ModuleOptions{{Path: env.Module, Tokens: []hsmpool.TokenSelector{{Label: env.Tokens[i].Label}}, PIN: hsmpool.PINSource{File: env.PINFile}}},
			FaultInjection:          i == 0,
			QuarantineProbeInterval: 100 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pool.Close() })
		if err := pool.ProvisionDomainKey(ctx, dk); err != nil {
			t.Fatal(err)
		}
		n.pool = pool
		dir := t.TempDir()
		if i == 0 {
			// The first node is an initialised gateway; raft starts from
			// its keystore.
			store, err := keystore.Open(filepath.Join(dir, gateway.KeystoreFile))
			if err != nil {
				t.Fatal(err)
			}
			if admin, err = gateway.Bootstrap(ctx, pool, store, dir, []string{"localhost", "127.0.0.1"}, time.Now()); err != nil {
				t.Fatal(err)
			}
			store.Close()
			dir0 = dir
			n.raft = startRaftTestNode(t, cpki, n.id, dir, true, nil)
			if err := n.raft.node.WaitForLeader(ctx); err != nil {
				t.Fatal(err)
			}
		} else {
			// The others join, and copy the gateway's certificates (its TLS
			// key is in the replicated keystore, under the domain key).
			for _, f := range []string{gateway.CACertFile, gateway.ServerCertFile} {
				raw, err := os.ReadFile(filepath.Join(dir0, f))
				if err != nil {
					t.Fatal(err)
				}
				os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o700)
				os.WriteFile(filepath.Join(dir, f), raw, 0o644)
			}
			n.raft = startRaftTestNode(t, cpki, n.id, dir, false, nil)
			jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := n.raft.node.Join(jctx, nodes[0].raft.node.Address())
			cancel()
			if err != nil {
				t.Fatalf("%s joins: %v", n.id, err)
			}
			raftWaitFor(t, 30*time.Second, n.id+" has the gateway's principals", func() bool {
				_, err := n.raft.store.Principal(gateway.AdminName)
				return err == nil
			})
		}
		// The nodes forward with the admin's client certificate (in
		// production, a node principal's): requests on connections
		// presenting it may name the client a node vouches for.
		forwarded := func(r *http.Request) (*gateway.ForwardedRequest, error) {
			fr, err := TrustForwarded(r, func(chain []*x509.Certificate) bool {
				p, err := pki.PrincipalFromCert(chain[0])
				return err == nil && p == gateway.AdminName
			})
			if err != nil || fr == nil {
				return nil, err
			}
			return &gateway.ForwardedRequest{Principal: fr.Principal, SourceIP: fr.SourceIP}, nil
		}
		gw, err := gateway.New(gateway.Config{Pool: pool, Store: n.raft.store, Region: e2eRegion, Account: gatewaytest.Account,
			Logger: slog.New(slog.DiscardHandler), Forwarded: forwarded,
			QuorumLedger: filepath.Join(dir, gateway.QuorumLedgerFile)})
		if err != nil {
			t.Fatal(err)
		}
		cert, cas, err := gateway.LoadTLS(ctx, pool, n.raft.store, dir)
		if err != nil {
			t.Fatalf("%s: TLS from the replicated keystore: %v", n.id, err)
		}
		if i == 0 {
			roots = cas
			// The failing node's TLS key is in its pool, which will be
			// gone: it presents an in-memory certificate of the same CA
			// (docs/cluster.md: without a healthy slot a node completes no
			// new TLS handshake, so only open connections fail over).
			cert = memoryServerCert(t)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		n.url = "https://" + ln.Addr().String()
		meter := NewLoadMeter(1024, nil)
		n.gossip, err = NewGossip(GossipConfig{
			NodeID: n.id, Zone: n.zone, APIAddress: ln.Addr().String(), BindAddress: "127.0.0.1:0", Label: testLabel, Keys: [][]byte{gossipKey},
			Status: func() LocalStatus {
				in, max, rps := meter.Load()
				return LocalStatus{ImageVersion: "test", Slots: PoolSlotHealth(pool.Status()), InFlight: in, MaxInFlight: max, RPS: rps}
			},
			RefreshInterval: 100 * time.Millisecond, LoadInterval: 200 * time.Millisecond, RejoinInterval: time.Second,
			Logger: slog.New(slog.DiscardHandler), tune: testTune,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.gossip.Shutdown() })
		if i > 0 {
			if _, err := n.gossip.Join([]string{nodes[0].gossip.GossipAddress()}); err != nil {
				t.Fatal(err)
			}
		}
		// Requests to peers use mutual TLS with a client certificate of
		// the gateway's CA (here the admin's; docs/cluster.md).
		clientCert, err := tls.LoadX509KeyPair(admin.ClientCert, admin.ClientKey)
		if err != nil {
			t.Fatal(err)
		}
		n.failover, err = NewFailover(FailoverConfig{Gossip: n.gossip, LocalHealthy: func() bool { return pool.Healthy() > 0 },
			TLS: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{clientCert}}, Logger: slog.New(slog.DiscardHandler),
			ForwardCertificateCallers: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(n.failover.Close)
		srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: meter.Wrap(n.failover.Wrap(gw.Handler()))}}
		srv.TLS = gateway.TLSConfig(cert, cas, 0)
		srv.StartTLS()
		t.Cleanup(srv.Close)
		nodes = append(nodes, n)
	}
	for _, n := range nodes {
		waitFor(t, n.id+" sees the cluster", func() bool { return sees(n.gossip, "n1", "n2", "n3") })
	}
	return nodes, admin, roots
}

// memoryServerCert is a server certificate for 127.0.0.1 with its key in
// memory, from a CA of its own that the test's clients trust (the test's
// stand-in for a node whose TLS key survives its HSMs).
func memoryServerCert(t testing.TB) tls.Certificate {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	// One clock reading for both: the leaf must not outlive its CA (two
	// readings a second apart made that flaky).
	now := time.Now()
	ca, err := pki.NewCA(caKey, "test in-memory CA", 2*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf, err := pki.IssueServer(ca, caKey, key.Public(), []string{"127.0.0.1", "localhost"}, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	memoryCAs.Lock()
	memoryCAs.list = append(memoryCAs.list, ca)
	memoryCAs.Unlock()
	return tls.Certificate{Certificate: [][]byte{leaf.Raw, ca.Raw}, PrivateKey: key, Leaf: leaf}
}

var memoryCAs struct {
	sync.Mutex
	list []*x509.Certificate
}

func e2eClient(url string, roots *x509.CertPool, admin *gateway.AdminCredentials) *kms.Client {
	pool := roots.Clone()
	memoryCAs.Lock()
	for _, c := range memoryCAs.list {
		pool.AddCert(c)
	}
	memoryCAs.Unlock()
	return kms.New(kms.Options{
		Region: e2eRegion, BaseEndpoint: aws.String(url),
		HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}},
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: admin.AccessKeyID, SecretAccessKey: admin.SecretAccessKey}, nil
		}),
		Retryer: aws.NopRetryer{},
	})
}

func TestClusterOfGateways(t *testing.T) {
	nodes, admin, roots := startE2ECluster(t)
	ctx := context.Background()
	clients := make([]*kms.Client, len(nodes))
	for i, n := range nodes {
		clients[i] = e2eClient(n.url, roots, admin)
	}

	// A key created through one node (a follower forwards the write to the
	// leader) is usable on the others at once.
	key, err := clients[2].CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String("made on n3")})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := clients[1].Encrypt(ctx, &kms.EncryptInput{KeyId: key.KeyMetadata.KeyId, Plaintext: []byte("across the cluster")})
	if err != nil {
		t.Fatalf("encrypt on n2 with a key made on n3: %v", err)
	}
	dec, err := clients[0].Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
	if err != nil || string(dec.Plaintext) != "across the cluster" {
		t.Fatalf("decrypt on n1: %v", err)
	}

	// n1's HSM fails under a crypto load on n1: its requests are answered
	// by healthy peers (same zone first; here the other zones), and no
	// client sees an error.
	var calls, failures atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				e, err := clients[0].Encrypt(ctx, &kms.EncryptInput{KeyId: key.KeyMetadata.KeyId, Plaintext: []byte("load")})
				if err == nil {
					_, err = clients[0].Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: e.CiphertextBlob})
				}
				calls.Add(1)
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	// A client authenticated by its certificate alone is forwarded too,
	// its principal vouched for by the forwarding node.
	certClient := e2eCertClient(t, nodes[0].url, roots, admin)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			_, err := certClient.Encrypt(ctx, &kms.EncryptInput{KeyId: key.KeyMetadata.KeyId, Plaintext: []byte("mtls")})
			calls.Add(1)
			if err != nil {
				failures.Add(1)
				firstErr.CompareAndSwap(nil, "mTLS client: "+err.Error())
			}
		}
	}()
	waitFor(t, "load before the failure", func() bool { return calls.Load() > 20 })
	for _, st := range nodes[0].pool.Status() {
		if err := nodes[0].pool.InjectFault(st.Name, hsmpool.FaultDeviceError); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "n1's pool to lose its slot", func() bool { return nodes[0].pool.Healthy() == 0 })
	before := nodes[0].failover.Stats().Forwarded
	waitFor(t, "requests answered by peers", func() bool { return nodes[0].failover.Stats().Forwarded > before+20 })
	close(stop)
	wg.Wait()
	nodes[0].pool.ClearFaults()
	if f := failures.Load(); f > 0 {
		t.Fatalf("%d of %d calls failed after n1's HSM failed (first: %v)", f, calls.Load(), firstErr.Load())
	}

	// Forwarding headers from anyone but a node are refused: no one can
	// name a principal they did not authenticate as.
	forged, _ := http.NewRequest(http.MethodPost, nodes[1].url+"/", strings.NewReader("{}"))
	forged.Header.Set("X-Amz-Target", "TrentService.ListKeys")
	forged.Header.Set("Content-Type", "application/x-amz-json-1.1")
	forged.Header.Set(FailoverForwardedHeader, "n1")
	forged.Header.Set(FailoverPrincipalHeader, gateway.AdminName)
	resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}).Do(forged)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "AccessDeniedException") {
		t.Fatalf("a forged forwarding header: %d %s", resp.StatusCode, body)
	}

	// A node cut off from the raft majority keeps serving crypto with the
	// keys it holds and refuses control-plane writes with a clear error;
	// healed, it catches up.
	cut := nodes[2]
	cut.raft.faults.Partition()
	if _, err := clients[2].Encrypt(ctx, &kms.EncryptInput{KeyId: key.KeyMetadata.KeyId, Plaintext: []byte("partitioned")}); err != nil {
		t.Fatalf("crypto on a partitioned node: %v", err)
	}
	_, err = clients[2].CreateKey(ctx, &kms.CreateKeyInput{})
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "DependencyTimeoutException" || !strings.Contains(apiErr.ErrorMessage(), "raft majority") {
		t.Fatalf("a control-plane write on a partitioned node: %v", err)
	}
	other, err := clients[1].CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String("while n3 was cut off")})
	if err != nil {
		t.Fatalf("a write on the majority side: %v", err)
	}
	cut.raft.faults.Heal()
	raftWaitFor(t, 30*time.Second, "n3 catches up", func() bool { return cut.raft.hasKey(*other.KeyMetadata.KeyId) })
	if _, err := clients[2].Encrypt(ctx, &kms.EncryptInput{KeyId: other.KeyMetadata.KeyId, Plaintext: []byte("healed")}); err != nil {
		t.Fatalf("n3 uses the key made while it was cut off: %v", err)
	}
}

// BenchmarkClusterScaling measures, in one run, Encrypt throughput with
// 8 callers on one node of the three-node cluster against 8 callers on
// each of the three nodes, and the latency of a control-plane write
// (TagResource through raft, sent to a follower). Reported as ops/s of
// each phase, their ratio, and write latency percentiles. All three nodes
// share this machine's cores, so the ratio measures the software's
// overhead, not a fleet's capacity (docs/cluster.md).
//
//	go test ./gateway/cluster -run '^$' -bench ClusterScaling -benchtime 1x
func BenchmarkClusterScaling(b *testing.B) {
	nodes, admin, roots := startE2ECluster(b)
	ctx := context.Background()
	clients := make([]*kms.Client, len(nodes))
	for i, n := range nodes {
		clients[i] = e2eClient(n.url, roots, admin)
	}
	key, err := clients[0].CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		b.Fatal(err)
	}
	const callers = 8
	window := 3 * time.Second
	phase := func(targets []*kms.Client) float64 {
		var ops atomic.Int64
		var wg sync.WaitGroup
		deadline := time.Now().Add(window)
		for _, c := range targets {
			for range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for time.Now().Before(deadline) {
						if _, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: key.KeyMetadata.KeyId, Plaintext: []byte("bench")}); err != nil {
							b.Error(err)
							return
						}
						ops.Add(1)
					}
				}()
			}
		}
		wg.Wait()
		return float64(ops.Load()) / window.Seconds()
	}
	b.ResetTimer()
	for range b.N {
		one := phase(clients[:1])
		three := phase(clients)
		b.ReportMetric(one, "ops/s-1node")
		b.ReportMetric(three, "ops/s-3nodes")
		b.ReportMetric(three/one, "scaling")
		// Control-plane writes, to the leader and to a follower (which
		// forwards them and waits until it applied them itself).
		leader := 0
		for i, n := range nodes {
			if n.raft.node.IsLeader() {
				leader = i
			}
		}
		writes := func(c *kms.Client, unit string) {
			var lat []time.Duration
			for i := range 30 {
				start := time.Now()
				if _, err := c.TagResource(ctx, &kms.TagResourceInput{KeyId: key.KeyMetadata.KeyId,
					Tags: []types.Tag{{TagKey: aws.String("bench"), TagValue: aws.String(fmt.Sprint(i))}}}); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "µs-write-p50-"+unit)
			b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "µs-write-max-"+unit)
		}
		writes(clients[leader], "leader")
		writes(clients[(leader+1)%len(clients)], "follower")
	}
}

// e2eCertClient is a KMS client authenticating with the admin's TLS client
// certificate only (no SigV4).
func e2eCertClient(t testing.TB, url string, roots *x509.CertPool, admin *gateway.AdminCredentials) *kms.Client {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(admin.ClientCert, admin.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := roots.Clone()
	memoryCAs.Lock()
	for _, c := range memoryCAs.list {
		pool.AddCert(c)
	}
	memoryCAs.Unlock()
	return kms.New(kms.Options{
		Region: e2eRegion, BaseEndpoint: aws.String(url),
		HTTPClient:  &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}},
		Credentials: aws.AnonymousCredentials{},
		Retryer:     aws.NopRetryer{},
	})
}
