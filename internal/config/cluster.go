package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// Cluster is the optional [cluster] section: this gateway as a node of a
// cluster (docs/cluster.md). Absent means a single gateway, with no cluster
// setup. The replicated keystore (raft) and the membership gossip both read
// it.
type Cluster struct {
	// NodeID names this node in the cluster for all time (required): 1 to
	// 64 letters, digits, '.', '_' and '-'. A node removed from the
	// cluster comes back under a new id, with a fresh raft folder.
	NodeID string `toml:"node_id"`
	// Zone is the availability zone the node runs in (a name such as
	// "us-east-1a"); requests are forwarded to peers of the same zone first.
	Zone string `toml:"zone,omitempty"`

	// RaftAddress is where the replicated keystore listens, host:port
	// (required). Peers dial it too, unless RaftAdvertise is set; it must
	// then name this machine as peers reach it (not 0.0.0.0).
	RaftAddress string `toml:"raft_address"`
	// RaftAdvertise is the raft address peers dial, when it differs from
	// RaftAddress (a NAT, or RaftAddress binding every interface).
	RaftAdvertise string `toml:"raft_advertise,omitempty"`
	// RaftJoin are raft addresses of members. On start a node that is not
	// yet in the cluster asks them to add it; a member already added is
	// left as it is.
	RaftJoin []string `toml:"raft_join,omitempty"`
	// Bootstrap makes this node start a new cluster, alone, if its raft
	// folder is empty. Set it on exactly one node of a new cluster; the
	// others join. It has no effect once the node has raft state.
	Bootstrap bool `toml:"bootstrap,omitempty"`
	// RaftDir holds the raft log and snapshots; default "raft" in the data
	// folder.
	RaftDir string `toml:"raft_dir,omitempty"`

	// TLSCA is the cluster CA's certificate (PEM): every node's
	// certificates must be issued by it, and it must issue node
	// certificates only (a node may change the replicated keystore).
	TLSCA string `toml:"tls_ca"`
	// TLSCert and TLSKey are this node's certificate chain and private key
	// (PEM). The certificate is presented to peers both as a server (it
	// must cover the host of RaftAdvertise, or RaftAddress) and as a
	// client, unless TLSClientCert and TLSClientKey give a separate client
	// certificate. The key file is a credential: mode 0600.
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
	// TLSClientCert and TLSClientKey are an optional separate client
	// certificate and key (both or neither).
	TLSClientCert string `toml:"tls_client_cert,omitempty"`
	TLSClientKey  string `toml:"tls_client_key,omitempty"`

	// GossipAddress is where the membership gossip listens, host:port
	// (UDP and TCP).
	GossipAddress string `toml:"gossip_address,omitempty"`
	// GossipAdvertise is the gossip address peers use, when it differs.
	GossipAdvertise string `toml:"gossip_advertise,omitempty"`
	// Join are gossip addresses of members to join on start (and to retry
	// while the node is alone).
	Join []string `toml:"join,omitempty"`
	// GossipKeys is the gossip keyring file (the first key encrypts, every
	// key decrypts).
	GossipKeys string `toml:"gossip_keys,omitempty"`
	// Label names the cluster on the wire: gossip from a pool with another
	// label is refused, so two clusters never merge.
	Label string `toml:"label,omitempty"`

	// APIAdvertise is the KMS API address (host:port) peers forward
	// requests to; default gateway.listen when that names a host. The
	// gateway's server certificate must cover its host.
	APIAdvertise string `toml:"api_advertise,omitempty"`
	// APIClientCert and APIClientKey are the client certificate (issued by
	// the gateway's CA to a non-admin principal: hsmgate principal
	// issue-cert) this node presents when it forwards requests to peers or
	// asks them for attestation. Without them, failover is off.
	APIClientCert string `toml:"api_client_cert,omitempty"`
	APIClientKey  string `toml:"api_client_key,omitempty"`
	// NodePrincipals are the principals of the nodes' API client
	// certificates: a request whose connection presents one of them may
	// carry forwarding headers, and name the client a node vouches for.
	// Default: the principal of this node's api_client_cert.
	NodePrincipals []string `toml:"node_principals,omitempty"`
	// RequireAttestation forwards only to peers whose TPM attestation
	// verified (attest.VerifyGateway) against PeerEnrollments (a folder of
	// <node_id>.json enrollment records) and GoldenPolicy.
	RequireAttestation bool   `toml:"require_attestation,omitempty"`
	PeerEnrollments    string `toml:"peer_enrollments,omitempty"`
	GoldenPolicy       string `toml:"golden_policy,omitempty"`
}

// DefaultRaftDir is [cluster] raft_dir's default, relative to the data
// folder.
const DefaultRaftDir = "raft"

// ClusterOptions are the [cluster] section's values with defaults filled in
// and paths resolved against the data folder.
type ClusterOptions struct {
	NodeID, Zone                                        string
	RaftAddress, RaftAdvertise                          string
	RaftJoin                                            []string
	Bootstrap                                           bool
	RaftDir                                             string
	TLSCA, TLSCert, TLSKey, TLSClientCert, TLSClientKey string
	GossipAddress, GossipAdvertise, GossipKeys, Label   string
	Join                                                []string // gossip addresses
	APIAdvertise, APIClientCert, APIClientKey           string
	NodePrincipals                                      []string
	RequireAttestation                                  bool
	PeerEnrollments, GoldenPolicy                       string
}

// ClusterOptions returns the [cluster] section with the defaults applied,
// and false when there is none (a single gateway).
func (c *Config) ClusterOptions() (ClusterOptions, bool, error) {
	if err := c.Validate(); err != nil {
		return ClusterOptions{}, false, fmt.Errorf("configuration: %w", err)
	}
	if c.Cluster == nil {
		return ClusterOptions{}, false, nil
	}
	k := c.Cluster
	return ClusterOptions{
		NodeID: k.NodeID, Zone: k.Zone,
		RaftAddress: k.RaftAddress, RaftAdvertise: k.RaftAdvertise,
		RaftJoin:  append([]string(nil), k.RaftJoin...),
		Bootstrap: k.Bootstrap,
		RaftDir:   c.resolve(orDefault(k.RaftDir, DefaultRaftDir)),
		TLSCA:     c.resolve(k.TLSCA), TLSCert: c.resolve(k.TLSCert), TLSKey: c.resolve(k.TLSKey),
		TLSClientCert: c.resolve(k.TLSClientCert), TLSClientKey: c.resolve(k.TLSClientKey),
		GossipAddress: k.GossipAddress, GossipAdvertise: k.GossipAdvertise,
		Join:       append([]string(nil), k.Join...),
		GossipKeys: c.resolve(k.GossipKeys), Label: k.Label,
		APIAdvertise: k.APIAdvertise, APIClientCert: c.resolve(k.APIClientCert), APIClientKey: c.resolve(k.APIClientKey),
		NodePrincipals:     append([]string(nil), k.NodePrincipals...),
		RequireAttestation: k.RequireAttestation, PeerEnrollments: c.resolve(k.PeerEnrollments), GoldenPolicy: c.resolve(k.GoldenPolicy),
	}, true, nil
}

// validNodeID accepts 1 to 64 letters, digits, '.', '_' and '-'.
func validNodeID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// checkPeerAddress checks an address peers dial: host:port with a host
// (not every interface) and a port from 1.
func checkPeerAddress(addr string) error {
	if err := CheckListen(addr); err != nil {
		return err
	}
	host, port, _ := net.SplitHostPort(addr)
	if a, err := netip.ParseAddr(host); host == "" || err == nil && a.IsUnspecified() {
		return fmt.Errorf("%q: peers can't dial every interface: name this machine's address", addr)
	}
	if port == "0" {
		return fmt.Errorf("%q: peers need a fixed port, not 0", addr)
	}
	return nil
}

// validate checks the [cluster] section.
func (k *Cluster) validate() []error {
	var errs []error
	if !validNodeID(k.NodeID) {
		errs = append(errs, fmt.Errorf("cluster.node_id %q: use 1 to 64 letters, digits, '.', '_' and '-'", k.NodeID))
	}
	if k.Zone != "" && (len(k.Zone) > 32 || !validNodeID(k.Zone)) {
		errs = append(errs, fmt.Errorf("cluster.zone %q: use 1 to 32 letters, digits, '.', '_' and '-'", k.Zone))
	}
	switch {
	case k.RaftAddress == "":
		errs = append(errs, errors.New("cluster.raft_address is required (host:port the replicated keystore listens on)"))
	case k.RaftAdvertise != "":
		if err := CheckListen(k.RaftAddress); err != nil {
			errs = append(errs, fmt.Errorf("cluster.raft_address: %w", err))
		}
		if err := checkPeerAddress(k.RaftAdvertise); err != nil {
			errs = append(errs, fmt.Errorf("cluster.raft_advertise: %w", err))
		}
	default:
		if err := checkPeerAddress(k.RaftAddress); err != nil {
			errs = append(errs, fmt.Errorf("cluster.raft_address (also the address peers dial, as raft_advertise is not set): %w", err))
		}
	}
	for i, j := range k.RaftJoin {
		if err := checkPeerAddress(j); err != nil {
			errs = append(errs, fmt.Errorf("cluster.raft_join[%d]: %w", i, err))
		}
	}
	if k.TLSCA == "" || k.TLSCert == "" || k.TLSKey == "" {
		errs = append(errs, errors.New("cluster: tls_ca, tls_cert and tls_key are required: nodes talk over mutual TLS only"))
	}
	if (k.TLSClientCert == "") != (k.TLSClientKey == "") {
		errs = append(errs, errors.New("cluster: set tls_client_cert and tls_client_key together, or neither"))
	}
	if k.GossipAddress != "" {
		if err := CheckListen(k.GossipAddress); err != nil {
			errs = append(errs, fmt.Errorf("cluster.gossip_address: %w", err))
		}
	}
	if k.GossipAdvertise != "" {
		if err := checkPeerAddress(k.GossipAdvertise); err != nil {
			errs = append(errs, fmt.Errorf("cluster.gossip_advertise: %w", err))
		}
	}
	for i, j := range k.Join {
		if err := checkPeerAddress(j); err != nil {
			errs = append(errs, fmt.Errorf("cluster.join[%d]: %w", i, err))
		}
	}
	if k.APIAdvertise != "" {
		if err := checkPeerAddress(k.APIAdvertise); err != nil {
			errs = append(errs, fmt.Errorf("cluster.api_advertise: %w", err))
		}
	}
	if (k.APIClientCert == "") != (k.APIClientKey == "") {
		errs = append(errs, errors.New("cluster: set api_client_cert and api_client_key together, or neither"))
	}
	if k.RequireAttestation && (k.PeerEnrollments == "" || k.GoldenPolicy == "" || k.APIClientCert == "") {
		errs = append(errs, errors.New("cluster.require_attestation needs peer_enrollments, golden_policy and api_client_cert/api_client_key"))
	}
	if k.GossipAddress != "" && k.Zone == "" {
		errs = append(errs, errors.New("cluster.zone is required with gossip_address: peers prefer their own zone"))
	}
	if len(k.Label) > 255 { // memberlist's limit
		errs = append(errs, fmt.Errorf("cluster.label is %d bytes; at most 255", len(k.Label)))
	}
	return errs
}
