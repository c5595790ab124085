// Package gatewaytest starts a real hsmgate gateway for tests outside the
// gateway package (the benchmark runner's, the commands'): a SoftHSM pool
// with a domain key, a keystore and PKI made by gateway.Bootstrap, served
// over HTTPS on loopback until the test ends.
package gatewaytest

import (
	"context"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/hsmpool"
	"github.com/hsmgate/hsmgate/internal/testenv"
)

// Account is the account id the test gateway names in ARNs.
const Account = "111122223333"

// Gateway is a running test gateway.
type Gateway struct {
	URL     string // https://127.0.0.1:port
	Admin   *gateway.AdminCredentials
	Pool    *hsmpool.Pool
	Store   *keystore.Store
	Gateway *gateway.Gateway
	Dir     string         // its data folder
	CAs     *x509.CertPool // the CA of its server and client certificates
	// Stop stops serving and waits for requests in flight; it runs at the
	// test's end too, and may be called more than once.
	Stop func()
}

// Start runs a gateway for region on n SoftHSM slots until the test ends.
func Start(t testing.TB, n int, region string) *Gateway {
	return StartWith(t, n, region, nil)
}

// StartWith is Start with a chance to change the pool's options (fault
// injection is on) and the gateway's configuration first.
func StartWith(t testing.TB, n int, region string, tweak func(*hsmpool.Options, *gateway.Config)) *Gateway {
	t.Helper()
	env := testenv.NewSoftHSM(t, n)
	ctx := context.Background()
	po := hsmpool.Options{Modules: []hsmpool.ModuleOptions{{Path: env.Module, PIN: hsmpool.PINSource{File: env.PINFile}}}, FaultInjection: true}
	gc := gateway.Config{Region: region, Account: Account, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if tweak != nil {
		tweak(&po, &gc)
	}
	pool, err := hsmpool.Open(ctx, po)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pool.Close(); err != nil {
			t.Errorf("pool close: %v", err)
		}
	})
	dir, store, admin := Provision(t, pool)
	gc.Pool, gc.Store = pool, store
	if gc.QuorumLedger == "" {
		gc.QuorumLedger = filepath.Join(dir, gateway.QuorumLedgerFile)
	}
	gw, err := gateway.New(gc)
	if err != nil {
		t.Fatal(err)
	}
	url, cas, stop := Serve(t, gw, pool, store, dir)
	return &Gateway{URL: url, Admin: admin, Pool: pool, Store: store, Gateway: gw, Dir: dir, CAs: cas, Stop: stop}
}

// Provision gives pool a new domain key and makes a data folder for a
// gateway on it: the keystore (closed when the test ends) and what
// gateway.Bootstrap makes there (the PKI, the admin's credentials).
func Provision(t testing.TB, pool *hsmpool.Pool) (dir string, store *keystore.Store, admin *gateway.AdminCredentials) {
	t.Helper()
	ctx := context.Background()
	dk, _ := hsmpool.NewDomainKeyMaterial()
	err := pool.ProvisionDomainKey(ctx, dk)
	clear(dk)
	if err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	if store, err = keystore.Open(filepath.Join(dir, gateway.KeystoreFile)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	if admin, err = gateway.Bootstrap(ctx, pool, store, dir, []string{"localhost", "127.0.0.1"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	return dir, store, admin
}

// Serve serves gw (with the TLS material of the data folder dir) on a new
// loopback listener until stop is called or the test ends, and returns its
// URL and the CA of its certificates. stop may be called more than once.
func Serve(t testing.TB, gw *gateway.Gateway, pool *hsmpool.Pool, store *keystore.Store, dir string) (url string, cas *x509.CertPool, stop func()) {
	t.Helper()
	ctx := context.Background()
	cert, cas, err := gateway.LoadTLS(ctx, pool, store, dir)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- gw.Serve(sctx, ln, gateway.TLSConfig(cert, cas, 0), 5*time.Second) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return "https://" + ln.Addr().String(), cas, stop
}
