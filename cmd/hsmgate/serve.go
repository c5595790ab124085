package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strconv"

	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/gateway/cluster"
	"github.com/hsmgate/hsmgate/hsmpool"
	"github.com/hsmgate/hsmgate/internal/config"
)

// runServe runs the gateway on dataDir until ctx ends (SIGINT or SIGTERM),
// then shuts down gracefully: it stops accepting connections, lets the
// requests in flight finish (up to gateway.shutdown_grace), closes the
// keystore, and closes the pool. listen, when not empty, overrides
// gateway.listen.
//
// With [attest] on, it first measures this boot into the TPM and unseals
// the sealed PINs (attestBoot); if that fails it opens no HSM and only
// answers /healthz, /readyz (503, with the reason) and /metrics until it
// is stopped (serveRefusing), then exits with an error.
//
// It refuses to start when no slot of the pool is healthy, naming each
// slot's state and reason: a gateway that can only fail every request
// should not look up. Slots that recover later are put back in service by
// the pool's probes.
//
// stdout gets one short notice of where the gateway listens and how to call
// it; the log (JSON lines) goes to the logger.
func runServe(ctx context.Context, dataDir, listen string, stdout io.Writer, log *slog.Logger) (err error) {
	cfg, err := loadConfig(dataDir, "serve")
	if err != nil {
		return err
	}
	opts, err := cfg.GatewayOptions()
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if listen != "" {
		if err := config.CheckListen(listen); err != nil {
			return fmt.Errorf("serve: --listen %w", err)
		}
		opts.Listen = listen
		cfg.Gateway.Listen = listen // the effective configuration, as measured
	}
	ao, err := cfg.AttestOptions()
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}

	// The keystore first: if another gateway holds it, say so before
	// logging in to any HSM.
	store, err := openKeystore(dataDir, "serve",
		"serve another data folder")
	if err != nil {
		return err
	}
	var pool *hsmpool.Pool
	defer func() { // after serving: the keystore, then the pool
		if cerr := store.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("serve: close the keystore: %w", cerr))
		}
		if pool != nil {
			if cerr := pool.Close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("serve: close the HSM pool: %w", cerr))
			}
		}
	}()

	// With a TPM: measure this boot and unseal the PINs before any HSM is
	// touched. If that fails, the pool stays closed and the gateway only
	// says why (attest.go).
	poolCfg, forgetPINs := cfg, func() {}
	var boot *bootAttestation
	if ao.On() {
		if boot, err = attestBoot(cfg, ao, log); err != nil {
			return serveRefusing(ctx, opts, err, stdout, log)
		}
		defer boot.tpm.Close()
		poolCfg, forgetPINs = boot.poolConfig(cfg)
	}
	// The active firmware image must still verify against the installed
	// trust (and, with a TPM, not be below its version counter).
	imgSvc, err := boot.imageService(cfg, ao)
	if err == nil {
		err = checkActiveImage(cfg, store, imgSvc)
	}
	if err != nil {
		forgetPINs()
		if boot != nil {
			boot.tpm.Close()
		}
		return serveRefusing(ctx, opts, fmt.Errorf("firmware image: %w", err), stdout, log)
	}
	pool, err = openPool(ctx, poolCfg, "serve: refusing to serve", log)
	forgetPINs() // the pool has read them
	if err != nil {
		return err
	}
	if sts := pool.Status(); pool.Healthy() < len(sts) {
		log.Warn("serving with slots out of service", "healthy", pool.Healthy(), "slots", len(sts), "unhealthy", describeUnhealthy(sts))
	}
	// With [cluster], the keystore is replicated through raft, and only the
	// leader runs the rotation and deletion scheduler (cluster.go).
	raftNode, err := startReplication(ctx, cfg, store, log, clusterCatchUpWait)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if raftNode != nil {
		defer func() {
			if cerr := raftNode.Shutdown(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("serve: stop the replicated keystore: %w", cerr))
			}
		}()
	}

	// Every request is recorded, durably, before it is answered.
	auditLog, err := gateway.OpenAudit(ctx, pool, store, dataDir)
	if err != nil {
		return fmt.Errorf("serve: open the audit log: %w", err)
	}
	defer func() {
		if cerr := auditLog.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("serve: close the audit log: %w", cerr))
		}
	}()
	cert, clientCAs, err := gateway.LoadTLS(ctx, pool, store, dataDir)
	if err != nil {
		return fmt.Errorf("serve: TLS: %w", err)
	}
	// With [cluster] gossip: membership, health and failover to peers.
	gossip, err := startGossip(cfg, opts, pool, boot, log)
	if err != nil {
		return fmt.Errorf("serve: cluster gossip: %w", err)
	}
	var wrap func(http.Handler) http.Handler
	var fleet func() []gateway.FleetMember
	var clusterStatus http.Handler
	var gossipKeys gateway.GossipKeyring
	var forwarded func(*http.Request) (*gateway.ForwardedRequest, error)
	if gossip != nil {
		defer gossip.close()
		wrap, fleet, clusterStatus, gossipKeys, forwarded = gossip.wrap, gossip.fleet, cluster.StatusHandler(gossip.gossip), gossip.gossip, gossip.forwarded
	}
	var attestation *gateway.AttestationOptions
	if boot != nil {
		attestation = boot.options(cert.Leaf)
	}
	quorumLedger, err := filepath.Abs(filepath.Join(dataDir, gateway.QuorumLedgerFile))
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	gw, err := gateway.New(gateway.Config{
		Pool:           pool,
		Store:          store,
		Region:         opts.Region,
		Account:        opts.Account,
		Logger:         log,
		RequestTimeout: opts.RequestTimeout,
		MaxInFlight:    opts.MaxInFlight,
		Audit:          auditLog,
		XKS:            xksOptions(cfg),
		Attestation:    attestation,
		Images:         imgSvc,
		QuorumLedger:   quorumLedger,
		RunSchedule:    leaderOnly(raftNode),
		Wrap:           wrap,
		Fleet:          fleet,
		ClusterStatus:  clusterStatus,
		GossipKeys:     gossipKeys,
		Forwarded:      forwarded,
	})
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	for _, h := range opts.Hosts {
		if cert.Leaf != nil && cert.Leaf.VerifyHostname(h) != nil {
			log.Warn("gateway.hosts names a host the server certificate does not cover (hsmgate init issued it; changing hosts does not reissue it): clients calling it by that name will fail TLS verification",
				"host", h, "certificate_dns_names", cert.Leaf.DNSNames, "certificate_ips", cert.Leaf.IPAddresses)
		}
	}

	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return fmt.Errorf("serve: listen on %s: %w", opts.Listen, err)
	}
	listenHost, _, _ := net.SplitHostPort(opts.Listen)
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	endpoint := endpointURL(listenHost, port, opts.Hosts)
	tlsVersion := "1.3"
	if opts.MinTLS == tls.VersionTLS12 {
		tlsVersion = "1.2"
	}
	log.Info("gateway serving", "address", ln.Addr().String(), "endpoint", endpoint, "region", opts.Region, "account", opts.Account,
		"min_tls", tlsVersion, "healthy_slots", pool.Healthy(), "slots", len(pool.Status()))
	printServing(stdout, dataDir, opts.Listen, net.JoinHostPort(listenHost, port), endpoint, pool)
	if boot != nil {
		sealing := "its HSM PINs are not sealed (`hsmgate attest seal-pins` seals them)"
		if boot.unsealed > 0 {
			sealing = fmt.Sprintf("%d of its %d HSM PINs were unsealed from it", boot.unsealed, len(boot.pins))
		}
		fmt.Fprintf(stdout, "Its boot is measured into %s, and %s; `hsmgate attest verify` checks it.\n", boot.tpm.what, sealing)
	}

	stopLog := context.AfterFunc(ctx, func() {
		log.Info("stopping: no new connections; finishing the requests in flight", "grace", opts.ShutdownGrace.String())
	})
	defer stopLog()
	err = gw.Serve(ctx, ln, gateway.TLSConfig(cert, clientCAs, opts.MinTLS), opts.ShutdownGrace)
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("serve: requests still in flight after the %v shutdown grace (gateway.shutdown_grace) were cut off", opts.ShutdownGrace)
	}
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("gateway stopped")
	return nil
}

// endpointURL is the URL clients call: the listen host, or, when the
// gateway listens on every address, the first of the certificate's hosts.
func endpointURL(listenHost, port string, hosts []string) string {
	host := listenHost
	if a, err := netip.ParseAddr(host); host == "" || err == nil && a.IsUnspecified() {
		host = hosts[0]
	}
	return "https://" + net.JoinHostPort(host, port)
}

// printServing tells the operator where the gateway listens and how to call
// it, with the AWS CLI (through `hsmgate env`) and with curl and the admin's
// client certificate.
func printServing(w io.Writer, dataDir, configured, actual, endpoint string, pool *hsmpool.Pool) {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		abs = dataDir
	}
	data := shellWord(abs)
	env := selfCommand() + " --data " + data + " env"
	if actual != configured {
		env += " --listen " + shellWord(actual)
	}
	fmt.Fprintf(w, "hsmgate is serving the AWS KMS API on %s (%d of %d HSM slots healthy); Ctrl-C or SIGTERM stops it.\n",
		endpoint, pool.Healthy(), len(pool.Status()))
	fmt.Fprintf(w, "Call it from another shell with the AWS CLI (as the admin):\n")
	fmt.Fprintf(w, "  eval \"$(%s)\"\n", env)
	fmt.Fprintf(w, "  aws kms list-keys --endpoint-url \"$AWS_ENDPOINT_URL\"\n")
	fmt.Fprintf(w, "or with curl and the admin's client certificate:\n")
	fmt.Fprintf(w, "  curl --cacert %s --cert %s --key %s -H 'X-Amz-Target: TrentService.ListKeys' -H 'Content-Type: application/x-amz-json-1.1' -d '{}' %s/\n",
		shellWord(filepath.Join(abs, gateway.CACertFile)),
		shellWord(filepath.Join(abs, gateway.AdminDir, "client.pem")),
		shellWord(filepath.Join(abs, gateway.AdminDir, "client.key")),
		endpoint)
}

// xksOptions are the gateway's external key stores from the [xks] section.
func xksOptions(cfg *config.Config) *gateway.XKSOptions {
	if cfg.XKS == nil || len(cfg.XKS.Stores) == 0 {
		return nil
	}
	o := &gateway.XKSOptions{FleetSize: cfg.XKS.FleetSize, Timeout: cfg.XKS.Timeout.Duration}
	for _, st := range cfg.XKS.Stores {
		o.Stores = append(o.Stores, gateway.XKSStore{Name: st.Name, Prefix: st.Prefix, Regions: st.Regions,
			MaxInFlight: st.MaxInFlight, RateLimit: st.RateLimit, Burst: st.Burst})
	}
	return o
}
