package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/hsmpool"
	"github.com/hsmgate/hsmgate/internal/config"
)

// runInitConfigured initialises a gateway on the pool an operator has
// already described in <data>/hsmgate.toml (real HSMs, say): it provisions
// a new domain key when every slot lacks one, or adopts the domain key the
// slots already share; then it creates the keystore and the gateway's
// identity as a development init does, and records the domain key check
// value in the configuration.
//
// It refuses a data folder that already has a keystore: that gateway exists.
func runInitConfigured(ctx context.Context, dataDir string, hosts []string, qf quorumFlags, w io.Writer, log *slog.Logger) (err error) {
	cfg, err := config.Load(dataDir)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	q, err := loadInitQuorum(qf.set, qf.pops, qf.cluster, qf.target, cfg)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	defer q.forget()
	created := []string{
		filepath.Join(dataDir, gateway.KeystoreFile), filepath.Join(dataDir, filepath.Dir(gateway.CACertFile)),
		filepath.Join(dataDir, gateway.AdminDir), filepath.Join(dataDir, filepath.Dir(gateway.QuorumLedgerFile)),
	}
	for _, p := range created {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("init: %s already exists: this data folder already holds a gateway, and init never replaces one", p)
		}
	}
	defer func() {
		if err != nil {
			for _, p := range created {
				_ = os.RemoveAll(p)
			}
		}
	}()
	if len(hosts) > 0 {
		cfg.Gateway.Hosts = hosts
	}
	gw, err := cfg.GatewayOptions()
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	opts, err := cfg.PoolOptions(log)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	p, err := hsmpool.Open(ctx, opts)
	if err != nil {
		return fmt.Errorf("init: open the configured pool: %w", err)
	}
	defer func() {
		if cerr := p.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("init: close the pool: %w", cerr))
		}
	}()
	sts := p.Status()
	lacking, healthy := 0, 0
	for _, st := range sts {
		switch st.State {
		case hsmpool.StateNoDomainKey:
			lacking++
		case hsmpool.StateHealthy:
			healthy++
		}
	}
	switch {
	case lacking == len(sts):
		kcv, err := provisionDomainKey(ctx, p, len(sts), q)
		if err != nil {
			return fmt.Errorf("init: %w", err)
		}
		fmt.Fprintf(w, "Provisioned a new domain key on %d slots (check value %s)\n", len(sts), kcv)
	case healthy == len(sts):
		fmt.Fprintf(w, "Every slot already holds the same domain key (check value %s); using it\n", p.DomainKeyCheck())
	default:
		return fmt.Errorf("init: the configured slots are in mixed states (%s); init provisions a domain key only when every slot lacks one, and adopts one only when every slot holds it",
			describeUnhealthy(sts))
	}
	cfg.Pool.DomainKeyCheck = p.DomainKeyCheck()
	admin, err := bootstrapGateway(ctx, p, dataDir, gw.Hosts)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	if err := q.install(ctx, dataDir, cfg, w); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	if err := cfg.Write(); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	q.sealCopy(dataDir, w)
	fmt.Fprintf(w, "Created the gateway's CA and TLS server certificate (for %s); their private keys are in the HSM pool\n", strings.Join(gw.Hosts, ", "))
	fmt.Fprintf(w, "Created the admin principal, with access key %s; its client credentials are in %s\n",
		admin.AccessKeyID, filepath.Join(dataDir, gateway.AdminDir))
	if ao, err := cfg.AttestOptions(); err == nil && ao.On() {
		fmt.Fprintf(w, "[attest] is on: seal the HSM PINs to this boot's measurements with `%s --data %s attest seal-pins` before serving (docs/attestation.md)\n",
			selfCommand(), shellWord(dataDir))
	}
	fmt.Fprintf(w, "Next: %s --data %s serve\n", selfCommand(), shellWord(dataDir))
	return nil
}
