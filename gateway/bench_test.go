package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/hsmpool"
	"github.com/hsmgate/hsmgate/internal/testenv"
)

// benchEnv is what the benchmark's gateway process needs to start.
type benchEnv struct {
	Module, PINFile, SoftHSMConf, KCV, Dir string
	// Audit turns the audit log on (in Dir/audit). The environment variable
	// HSMGATE_BENCH_AUDIT turns it on for every gateway process instead.
	Audit bool
	// Procs is the gateway process's GOMAXPROCS (0: the Go default, or
	// HSMGATE_BENCH_GOMAXPROCS when that is set).
	Procs int
}

// benchInline reports whether HSMGATE_BENCH_INLINE asks for the pool's
// inline calls; it applies to the gateway processes and to the direct pool
// alike, so that the two are compared in the same configuration.
func benchInline() bool { return os.Getenv("HSMGATE_BENCH_INLINE") != "" }

func TestMain(m *testing.M) {
	if cfg := os.Getenv("HSMGATE_BENCH_SERVER"); cfg != "" {
		os.Exit(benchServer(cfg))
	}
	os.Exit(m.Run())
}

// benchServer runs a gateway in this process (a child of the benchmark)
// until SIGTERM, printing "LISTEN <addr>" once it serves.
func benchServer(cfgPath string) int {
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var env benchEnv
	if err := json.Unmarshal(raw, &env); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	os.Setenv("SOFTHSM2_CONF", env.SoftHSMConf)
	if env.Procs > 0 {
		runtime.GOMAXPROCS(env.Procs)
	} else if n, err := strconv.Atoi(os.Getenv("HSMGATE_BENCH_GOMAXPROCS")); err == nil {
		runtime.GOMAXPROCS(n)
	}
	if prof := os.Getenv("HSMGATE_BENCH_CPUPROFILE"); prof != "" {
		f, err := os.Create(prof)
		if err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	pool, err := hsmpool.Open(ctx, hsmpool.Options{
		Modules:        []hsmpool.ModuleOptions{{Path: env.Module, PIN: hsmpool.PINSource{File: env.PINFile}}},
		DomainKeyCheck: env.KCV,
		InlineCalls:    benchInline(),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer pool.Close()
	store, err := keystore.Open(filepath.Join(env.Dir, gateway.KeystoreFile))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer store.Close()
	gc := gateway.Config{Pool: pool, Store: store, Region: testRegion, Account: testAccount,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if env.Audit || os.Getenv("HSMGATE_BENCH_AUDIT") != "" {
		w, err := gateway.OpenAudit(ctx, pool, store, env.Dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer w.Close()
		gc.Audit = w
	}
	gw, err := gateway.New(gc)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cert, cas, err := gateway.LoadTLS(ctx, pool, store, env.Dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	network, addr := "tcp", "127.0.0.1:0"
	if os.Getenv(benchUnixEnv) != "" {
		// A Unix domain socket instead of loopback TCP, for comparison.
		network, addr = "unix", filepath.Join(env.Dir, "gw.sock")
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("LISTEN %s\n", ln.Addr())
	if err := gw.Serve(ctx, ln, gateway.TLSConfig(cert, cas, 0), 5*time.Second); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// benchGateway is a gateway process started by startBenchGateway.
type benchGateway struct {
	url  string // https://127.0.0.1:port/
	pid  int
	stop func() // SIGTERM, then wait (also done when the benchmark ends)
}

// startBenchGateway starts a gateway process (this test binary in server mode,
// see benchServer) serving env, and stops it with SIGTERM when the benchmark
// ends. env.Dir must not be in use by another process (the keystore file is
// locked).
func startBenchGateway(b *testing.B, env benchEnv) benchGateway {
	b.Helper()
	cfg := filepath.Join(b.TempDir(), "bench.json")
	raw, _ := json.Marshal(env)
	if err := os.WriteFile(cfg, raw, 0o600); err != nil {
		b.Fatal(err)
	}
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), "HSMGATE_BENCH_SERVER="+cfg)
	child.Stderr = os.Stderr
	out, _ := child.StdoutPipe()
	if err := child.Start(); err != nil {
		b.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			child.Process.Signal(syscall.SIGTERM)
			child.Wait()
		})
	}
	b.Cleanup(stop)
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "LISTEN ") {
		b.Fatalf("gateway process: %q %v", line, err)
	}
	addr := strings.TrimSpace(strings.TrimPrefix(line, "LISTEN "))
	if strings.HasPrefix(addr, "/") {
		benchSocket = addr
		addr = "127.0.0.1" // the name the certificate covers; the dialer ignores it
	}
	return benchGateway{url: "https://" + addr + "/", pid: child.Process.Pid, stop: stop}
}

// benchUnixEnv makes the benchmark's gateway listen on a Unix domain
// socket (HSMGATE_BENCH_UNIX=1); benchSocket is its path.
const benchUnixEnv = "HSMGATE_BENCH_UNIX"

var benchSocket string

// benchClient is an HTTPS client with the admin's client certificate that
// keeps up to callers connections open.
func benchClient(b *testing.B, admin *gateway.AdminCredentials, callers int) *http.Client {
	b.Helper()
	cert, err := tls.LoadX509KeyPair(admin.ClientCert, admin.ClientKey)
	if err != nil {
		b.Fatal(err)
	}
	caRaw, _ := os.ReadFile(admin.CABundle)
	t := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: x509CertPool(b, caRaw), Certificates: []tls.Certificate{cert}},
		MaxIdleConnsPerHost: callers, MaxConnsPerHost: callers,
	}
	if benchSocket != "" {
		t.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", benchSocket)
		}
	}
	return &http.Client{Transport: t}
}

// kmsCall returns a function that POSTs one KMS request and checks for 200.
func kmsCall(client *http.Client, url, target string, body []byte) func() error {
	return func() error {
		req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
		req.Header.Set("X-Amz-Target", target)
		req.Header.Set("Content-Type", "application/x-amz-json-1.1")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
}

// leanCall returns a function that sends one KMS request over one of
// callers keep-alive TLS connections with a hand-written HTTP/1.1 request
// and response reader: a load generator that costs the shared CPUs less
// than net/http's client (HSMGATE_BENCH_CLIENT=lean), so that more of the
// latency measured is the gateway's. It checks for 200.
func leanCall(b *testing.B, admin *gateway.AdminCredentials, url, target string, body []byte, callers int) func() error {
	b.Helper()
	cert, err := tls.LoadX509KeyPair(admin.ClientCert, admin.ClientKey)
	if err != nil {
		b.Fatal(err)
	}
	caRaw, _ := os.ReadFile(admin.CABundle)
	cfg := &tls.Config{RootCAs: x509CertPool(b, caRaw), Certificates: []tls.Certificate{cert}, ServerName: "127.0.0.1"}
	host := strings.TrimSuffix(strings.TrimPrefix(url, "https://"), "/")
	req := fmt.Appendf(nil, "POST / HTTP/1.1\r\nHost: %s\r\nX-Amz-Target: %s\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: %d\r\n\r\n%s",
		host, target, len(body), body)
	type conn struct {
		c *tls.Conn
		r *bufio.Reader
	}
	conns := make(chan *conn, callers)
	for range callers {
		network, addr := "tcp", host
		if benchSocket != "" {
			network, addr = "unix", benchSocket
		}
		raw, err := net.Dial(network, addr)
		if err != nil {
			b.Fatal(err)
		}
		c := tls.Client(raw, cfg)
		b.Cleanup(func() { c.Close() })
		conns <- &conn{c: c, r: bufio.NewReaderSize(c, 4096)}
	}
	return func() error {
		c := <-conns
		defer func() { conns <- c }()
		if _, err := c.c.Write(req); err != nil {
			return err
		}
		status, err := c.r.ReadSlice('\n')
		if err != nil {
			return err
		}
		ok := bytes.HasPrefix(status, []byte("HTTP/1.1 200 "))
		length := -1
		for {
			line, err := c.r.ReadSlice('\n')
			if err != nil {
				return err
			}
			if len(line) <= 2 {
				break
			}
			if v, found := bytes.CutPrefix(line, []byte("Content-Length: ")); found {
				length, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
			}
		}
		if length < 0 {
			return fmt.Errorf("response without Content-Length: %q", status)
		}
		if _, err := c.r.Discard(length); err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("status %q", bytes.TrimSpace(status))
		}
		return nil
	}
}

// benchCall is kmsCall, or leanCall with HSMGATE_BENCH_CLIENT=lean.
func benchCall(b *testing.B, client *http.Client, admin *gateway.AdminCredentials, url, target string, body []byte, callers int) func() error {
	if os.Getenv("HSMGATE_BENCH_CLIENT") == "lean" {
		return leanCall(b, admin, url, target, body, callers)
	}
	return kmsCall(client, url, target, body)
}

// copyDir copies the regular files of the folder tree src into dst.
func copyDir(b *testing.B, src, dst string) {
	b.Helper()
	err := filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, info.Mode().Perm())
	})
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkAuditCost measures, in one run, the full-stack Encrypt of 32
// bytes against two gateway processes serving the same keys on the same
// SoftHSM tokens, one with the audit log on and one with it off, at 8, 64,
// 128 and 256 closed-loop callers. The two are driven in alternating rounds
// (10 × 300 ms each, the order flipping every round), so background noise
// on the shared machine hits both alike. It reports each one's calls/s, the
// ratio on/off, the gateway CPU per call (from /proc) and the client's p50
// and p99 latency. b.N is not used: run with -benchtime 1x.
//
//	go test ./gateway -run '^$' -bench AuditCost -benchtime 1x
func BenchmarkAuditCost(b *testing.B) {
	env, pool, store, dir, admin := benchSetup(b, 4)
	symID := benchKey(b, pool, store, hsmpool.AES256, hsmpool.UsageEncrypt, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", map[string]*hsmpool.Key{})
	store.Close()
	// The keystore file is locked by the process that opens it: each
	// gateway gets its own copy of the data folder.
	onDir := filepath.Join(b.TempDir(), "data")
	copyDir(b, dir, onDir)
	base := benchEnv{Module: env.Module, PINFile: env.PINFile, SoftHSMConf: env.Conf, KCV: pool.DomainKeyCheck()}
	offEnv, onEnv := base, base
	offEnv.Dir = dir
	onEnv.Dir, onEnv.Audit = onDir, true
	gws := [2]benchGateway{startBenchGateway(b, offEnv), startBenchGateway(b, onEnv)}
	names := [2]string{"off", "on"}
	body := []byte(`{"KeyId":"` + symID + `","Plaintext":"` + base64.StdEncoding.EncodeToString(make([]byte, 32)) + `"}`)

	const rounds, window = 10, 300 * time.Millisecond
	for _, callers := range []int{8, 64, 128, 256} {
		b.Run(fmt.Sprintf("Encrypt32/callers=%d", callers), func(b *testing.B) {
			var calls [2]func() error
			for i, gw := range gws {
				client := benchClient(b, admin, callers)
				defer client.CloseIdleConnections()
				calls[i] = kmsCall(client, gw.url, "TrentService.Encrypt", body)
				drive(b, callers, time.Second, calls[i]) // warm up connections and caches
			}
			var (
				n    [2]int
				cpu  [2]time.Duration
				wall [2]time.Duration
				lat  [2][]time.Duration
			)
			for r := 0; r < rounds; r++ {
				for j := 0; j < 2; j++ {
					i := j ^ r&1 // off first in even rounds, on first in odd ones
					before, _ := procCPU(gws[i].pid)
					t0 := time.Now()
					k, l := drive(b, callers, window, calls[i])
					wall[i] += time.Since(t0)
					after, _ := procCPU(gws[i].pid)
					n[i] += k
					cpu[i] += after - before
					lat[i] = append(lat[i], l...)
				}
			}
			var rate [2]float64
			for i := range gws {
				sort.Slice(lat[i], func(x, y int) bool { return lat[i][x] < lat[i][y] })
				rate[i] = float64(n[i]) / wall[i].Seconds()
				b.ReportMetric(rate[i], names[i]+"-calls/s")
				b.ReportMetric(float64(cpu[i].Microseconds())/float64(n[i]), names[i]+"-gw-cpu-µs/op")
				b.ReportMetric(float64(lat[i][len(lat[i])*50/100].Microseconds())/1000, names[i]+"-p50-ms")
				b.ReportMetric(float64(lat[i][len(lat[i])*99/100].Microseconds())/1000, names[i]+"-p99-ms")
			}
			b.ReportMetric(rate[1]/rate[0], "on/off")
		})
	}
}

// procCPU returns the user+system CPU time a process has used.
func procCPU(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may contain spaces) start at ") ".
	fields := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+2:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticks, nil
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkGatewayCPU runs the gateway as its own process, drives it over
// TLS with keep-alive from this process at 8 and 64 concurrent callers, and
// measures the gateway's CPU per operation from /proc; in the same run it
// measures the CPU per operation of the same operation called directly on
// a pool in this process, by as many goroutines, with the same pool mode
// (HSMGATE_BENCH_INLINE) and the same GOMAXPROCS as the gateway process.
// Go's scheduler costs differ a lot between one P and several when every
// call blocks in cgo, so both sides run at GOMAXPROCS=1 and at the number
// of CPUs (sub-benchmarks procs=N; HSMGATE_BENCH_GOMAXPROCS picks one).
// b.N is not used: run with -benchtime 1x.
//
//	go test ./gateway -run '^$' -bench GatewayCPU -benchtime 1x
func BenchmarkGatewayCPU(b *testing.B) {
	ctx := context.Background()
	env, pool, store, dir, admin := benchSetup(b, 4)
	// Two keys in the keystore, for the child to serve, and the same keys
	// for the direct pool measurement here.
	keys := map[string]*hsmpool.Key{}
	symID := benchKey(b, pool, store, hsmpool.AES256, hsmpool.UsageEncrypt, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", keys)
	eccID := benchKey(b, pool, store, hsmpool.ECP256, hsmpool.UsageSign, "ECC_NIST_P256", "SIGN_VERIFY", keys)
	store.Close()

	ops := []struct {
		name, target string
		body         []byte
		pool         func(ctx context.Context, k *hsmpool.Key) error
		key          string
	}{
		{"Encrypt32", "TrentService.Encrypt",
			[]byte(`{"KeyId":"` + symID + `","Plaintext":"` + base64.StdEncoding.EncodeToString(make([]byte, 32)) + `"}`),
			func(ctx context.Context, k *hsmpool.Key) error {
				_, _, err := pool.EncryptGCM(ctx, k, make([]byte, 32), make([]byte, 23))
				return err
			}, symID},
		{"SignP256", "TrentService.Sign",
			[]byte(`{"KeyId":"` + eccID + `","Message":"bWVzc2FnZQ==","SigningAlgorithm":"ECDSA_SHA_256"}`),
			func(ctx context.Context, k *hsmpool.Key) error {
				_, err := pool.SignMessage(ctx, k, hsmpool.ECDSAWithSHA256, []byte("message"))
				return err
			}, eccID},
	}
	procsList := []int{1, runtime.NumCPU()}
	if n, err := strconv.Atoi(os.Getenv("HSMGATE_BENCH_GOMAXPROCS")); err == nil && n > 0 {
		procsList = []int{n}
	} else if runtime.NumCPU() == 1 {
		procsList = procsList[:1]
	}
	const window = 3 * time.Second
	for _, procs := range procsList {
		gw := startBenchGateway(b, benchEnv{Module: env.Module, PINFile: env.PINFile, SoftHSMConf: env.Conf,
			KCV: pool.DomainKeyCheck(), Dir: dir, Procs: procs})
		for _, callers := range []int{8, 64} {
			client := benchClient(b, admin, callers)
			for _, op := range ops {
				b.Run(fmt.Sprintf("%s/callers=%d/procs=%d", op.name, callers, procs), func(b *testing.B) {
					call := benchCall(b, client, admin, gw.url, op.target, op.body, callers)
					drive(b, callers, time.Second, call) // warm up connections and caches
					before, _ := procCPU(gw.pid)
					n, lat := drive(b, callers, window, call)
					after, _ := procCPU(gw.pid)
					gwCPU := float64((after - before).Microseconds()) / float64(n)

					k := keys[op.key]
					direct := func() error { return op.pool(ctx, k) }
					defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
					drive(b, callers, time.Second/2, direct)
					cpu0 := selfCPU()
					pn, _ := drive(b, callers, window, direct)
					poolCPU := float64((selfCPU() - cpu0).Microseconds()) / float64(pn)

					b.ReportMetric(gwCPU, "gw-cpu-µs/op")
					b.ReportMetric(poolCPU, "pool-cpu-µs/op")
					b.ReportMetric(gwCPU/poolCPU, "gw/pool-cpu")
					b.ReportMetric(float64(n)/window.Seconds(), "gw-ops/s")
					b.ReportMetric(float64(lat[len(lat)*50/100].Microseconds())/1000, "p50-ms")
					b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
				})
			}
			client.CloseIdleConnections()
		}
		gw.stop()
	}
}

// drive runs call from n goroutines for d and returns the calls made and
// their sorted latencies.
func drive(b *testing.B, n int, d time.Duration, call func() error) (int, []time.Duration) {
	var stop atomic.Bool
	var mu sync.Mutex
	var all []time.Duration
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for !stop.Load() {
				t0 := time.Now()
				if err := call(); err != nil {
					b.Error(err)
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		}()
	}
	time.Sleep(d)
	stop.Store(true)
	wg.Wait()
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	if len(all) == 0 {
		b.Fatal("no call completed")
	}
	return len(all), all
}

func benchKey(b *testing.B, pool *hsmpool.Pool, store *keystore.Store, spec hsmpool.KeySpec, usage hsmpool.Usage, awsSpec, awsUsage string, keys map[string]*hsmpool.Key) string {
	g, err := pool.GenerateKey(context.Background(), spec, usage)
	if err != nil {
		b.Fatal(err)
	}
	id := fmt.Sprintf("00000000-0000-4000-8000-%012d", len(keys)+1)
	now := time.Now().UTC()
	err = store.Apply(&keystore.CreateKey{Key: keystore.Key{ID: id, CreatedAt: now, State: keystore.StateEnabled,
		Spec: awsSpec, Usage: awsUsage, Origin: "AWS_KMS", Owner: gateway.AdminName,
		Versions: []keystore.Version{{Number: 1, CreatedAt: now, Blob: g.Blob, Public: g.Public}}}})
	if err != nil {
		b.Fatal(err)
	}
	if keys[id], err = hsmpool.NewKey(id, 1, g.Blob, g.Public); err != nil {
		b.Fatal(err)
	}
	return id
}

func x509CertPool(b *testing.B, pemData []byte) *x509.CertPool {
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(pemData) {
		b.Fatal("no CA certificate")
	}
	return p
}

// BenchmarkHandler measures the gateway's handler in process, without
// network or TLS, with the caller authenticated by a (verified) client
// certificate: the cost and allocations of everything between the bytes of
// a request and the bytes of its response.
func BenchmarkHandler(b *testing.B) {
	_, pool, store, _, admin := benchSetup(b, 1)
	defer store.Close()
	gw, err := gateway.New(gateway.Config{Pool: pool, Store: store, Region: testRegion, Account: testAccount,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	keys := map[string]*hsmpool.Key{}
	symID := benchKey(b, pool, store, hsmpool.AES256, hsmpool.UsageEncrypt, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", keys)
	pair, err := tls.LoadX509KeyPair(admin.ClientCert, admin.ClientKey)
	if err != nil {
		b.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		b.Fatal(err)
	}
	state := &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf}}}
	body := []byte(`{"KeyId":"` + symID + `","Plaintext":"` + base64.StdEncoding.EncodeToString(make([]byte, 32)) + `"}`)
	h := gw.Handler()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req := httptestRequest(body)
		req.TLS = state
		w := &discardWriter{h: http.Header{}}
		h.ServeHTTP(w, req)
		if w.status != 0 && w.status != 200 {
			b.Fatalf("status %d", w.status)
		}
	}
}

func httptestRequest(body []byte) *http.Request {
	req, _ := http.NewRequest("POST", "https://127.0.0.1/", bytes.NewReader(body))
	req.Header.Set("X-Amz-Target", "TrentService.Encrypt")
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	return req
}

type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(s int)           { w.status = s }

// benchSetup makes n SoftHSM tokens, a pool on them with a domain key, and
// a bootstrapped keystore in a temporary data folder. The pool closes when
// the benchmark ends; closing the store is the caller's.
func benchSetup(b *testing.B, n int) (*testenv.SoftHSM, *hsmpool.Pool, *keystore.Store, string, *gateway.AdminCredentials) {
	b.Helper()
	env := testenv.NewSoftHSM(b, n)
	ctx := context.Background()
	pool, err := hsmpool.Open(ctx, hsmpool.Options{Modules: []hsmpool.ModuleOptions{{Path: env.Module, PIN: hsmpool.PINSource{File: env.PINFile}}},
		InlineCalls: benchInline()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { pool.Close() })
	dk, _ := hsmpool.NewDomainKeyMaterial()
	if err := pool.ProvisionDomainKey(ctx, dk); err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	store, err := keystore.Open(filepath.Join(dir, gateway.KeystoreFile))
	if err != nil {
		b.Fatal(err)
	}
	admin, err := gateway.Bootstrap(ctx, pool, store, dir, []string{"127.0.0.1"}, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	return env, pool, store, dir, admin
}
