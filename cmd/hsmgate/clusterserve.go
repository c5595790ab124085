package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/hsmgate/hsmgate/attest"
	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/gateway/cluster"
	"github.com/hsmgate/hsmgate/hsmpool"
	"github.com/hsmgate/hsmgate/internal/config"
	"github.com/hsmgate/hsmgate/internal/pki"
)

// clusterGossip is a serving node's membership, health and failover
// (docs/cluster.md): the gossip pool publishes this node's pool health and
// load, and requests this node can't serve (no healthy HSM slot) go to a
// healthy peer, same zone first.
type clusterGossip struct {
	gossip    *cluster.Gossip
	forwarded func(*http.Request) (*gateway.ForwardedRequest, error)
	failover  *cluster.Failover // nil without an API client certificate
	meter     *cluster.LoadMeter
	verifier  *cluster.PeerVerifier
}

// startGossip starts the gossip when [cluster] has a gossip_address; nil
// otherwise.
func startGossip(cfg *config.Config, opts config.GatewayOptions, pool *hsmpool.Pool, boot *bootAttestation, log *slog.Logger) (*clusterGossip, error) {
	co, ok, err := cfg.ClusterOptions()
	if err != nil || !ok || co.GossipAddress == "" {
		return nil, err
	}
	keys, err := cluster.LoadGossipKeyring(co.GossipKeys)
	if err != nil {
		return nil, fmt.Errorf("the gossip keyring: %w", err)
	}
	api := co.APIAdvertise
	if api == "" {
		host, _, _ := net.SplitHostPort(opts.Listen)
		if a, err := netip.ParseAddr(host); host == "" || err == nil && a.IsUnspecified() {
			return nil, errors.New("cluster.api_advertise is needed: gateway.listen binds every interface, so peers can't tell which address reaches this node")
		}
		api = opts.Listen
	}
	cas, err := readCerts(filepath.Join(cfg.Dir, gateway.CACertFile))
	if err != nil {
		return nil, fmt.Errorf("the gateway's CA (peers' server certificates): %w", err)
	}
	roots := x509.NewCertPool()
	for _, c := range cas {
		roots.AddCert(c)
	}
	c := &clusterGossip{meter: cluster.NewLoadMeter(opts.MaxInFlight, nil)}
	var nodeTLS *tls.Config
	nodes := co.NodePrincipals
	if co.APIClientCert != "" {
		cert, err := tls.LoadX509KeyPair(co.APIClientCert, co.APIClientKey)
		if err != nil {
			return nil, fmt.Errorf("cluster.api_client_cert: %w", err)
		}
		nodeTLS = &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if len(nodes) == 0 {
			leaf, err := x509.ParseCertificate(cert.Certificate[0])
			if err != nil {
				return nil, fmt.Errorf("cluster.api_client_cert: %w", err)
			}
			p, err := pki.PrincipalFromCert(leaf)
			if err != nil {
				return nil, fmt.Errorf("cluster.api_client_cert: %w", err)
			}
			nodes = []string{p}
		}
	}
	// Forwarding headers are honoured only on connections whose client
	// certificate (already verified against the gateway's CA) names a
	// node principal; anyone else sending them is refused.
	c.forwarded = func(r *http.Request) (*gateway.ForwardedRequest, error) {
		fr, err := cluster.TrustForwarded(r, func(chain []*x509.Certificate) bool {
			p, err := pki.PrincipalFromCert(chain[0])
			return err == nil && slices.Contains(nodes, p)
		})
		if err != nil || fr == nil {
			return nil, err
		}
		return &gateway.ForwardedRequest{Principal: fr.Principal, SourceIP: fr.SourceIP}, nil
	}
	if co.RequireAttestation {
		var pol attest.GoldenPolicyFile
		if err := attest.ReadJSONFile(co.GoldenPolicy, &pol); err != nil {
			return nil, fmt.Errorf("cluster.golden_policy: %w", err)
		}
		c.verifier, err = cluster.NewPeerVerifier(cluster.PeerVerifierConfig{TLS: nodeTLS, Policy: pol.Policy(), Logger: log,
			Enrollment: func(id string) (attest.Enrollment, error) {
				var enr attest.Enrollment
				err := attest.ReadJSONFile(filepath.Join(co.PeerEnrollments, id+".json"), &enr)
				return enr, err
			}})
		if err != nil {
			return nil, err
		}
	}
	imageVersion := ""
	if img, err := activeImage(cfg); err == nil && img != nil {
		imageVersion = img.Manifest.VersionString
	}
	c.gossip, err = cluster.NewGossip(cluster.GossipConfig{
		NodeID: co.NodeID, Zone: co.Zone, APIAddress: api, BindAddress: co.GossipAddress, AdvertiseAddress: co.GossipAdvertise,
		Label: co.Label, Keys: keys, KeyringFile: co.GossipKeys, Join: co.Join,
		RequireAttestation: co.RequireAttestation, Verifier: c.verifier, Logger: log,
		Status: func() cluster.LocalStatus {
			in, max, rps := c.meter.Load()
			st := cluster.LocalStatus{ImageVersion: imageVersion, Slots: cluster.PoolSlotHealth(pool.Status()), InFlight: in, MaxInFlight: max, RPS: rps}
			if boot != nil {
				st.Attestation = cluster.AttestationMeasured
				if boot.check() != nil {
					st.Attestation = cluster.AttestationFailed
				}
			}
			return st
		},
	})
	if err != nil {
		return nil, err
	}
	if len(co.Join) > 0 {
		if _, err := c.gossip.Join(co.Join); err != nil {
			log.Warn("could not reach the gossip join addresses yet; retrying in the background", "join", co.Join, "err", err)
		}
	}
	if nodeTLS == nil {
		log.Warn("failover is off: set cluster.api_client_cert and api_client_key (a client certificate of the gateway's CA) to forward requests to peers")
		return c, nil
	}
	c.failover, err = cluster.NewFailover(cluster.FailoverConfig{Gossip: c.gossip, LocalHealthy: func() bool { return pool.Healthy() > 0 },
		TLS: nodeTLS, Verifier: c.verifier, Logger: log, ForwardCertificateCallers: true})
	if err != nil {
		c.gossip.Shutdown()
		return nil, err
	}
	return c, nil
}

// wrap puts load metering and failover in front of the gateway.
func (c *clusterGossip) wrap(h http.Handler) http.Handler {
	if c.failover != nil {
		h = c.failover.Wrap(h)
	}
	return c.meter.Wrap(h)
}

// fleet lists the other nodes for /readyz and the XKS health response.
func (c *clusterGossip) fleet() []gateway.FleetMember {
	usable := map[string]bool{}
	for _, p := range c.gossip.PickPeers(true) {
		usable[p.ID] = true
	}
	var out []gateway.FleetMember
	for _, m := range c.gossip.Members() {
		if m.Self {
			continue
		}
		out = append(out, gateway.FleetMember{ID: m.ID, Zone: m.Zone(), Usable: usable[m.ID]})
	}
	return out
}

// close leaves the pool (so peers stop forwarding at once) and stops.
func (c *clusterGossip) close() {
	if c.failover != nil {
		c.failover.Close()
	}
	if err := c.gossip.Leave(5 * time.Second); err != nil {
		fmt.Fprintln(os.Stderr, "cluster: leave the gossip pool:", err)
	}
	c.gossip.Shutdown()
	if c.verifier != nil {
		c.verifier.Close()
	}
}
