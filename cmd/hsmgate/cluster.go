package main

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/gateway/cluster"
	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/internal/config"
	"github.com/hsmgate/hsmgate/internal/pki"
)

// `hsmgate cluster …`: this gateway as a node of a cluster ([cluster] in
// hsmgate.toml; docs/cluster.md). The membership commands of the replicated
// keystore talk to the cluster's raft nodes directly, over the raft port's
// mutual TLS, with this node's cluster certificate: they work whether this
// node's gateway runs or not.

// clusterCommandTimeout bounds a membership command.
const clusterCommandTimeout = 30 * time.Second

// clusterCatchUpWait is how long `hsmgate serve` waits for a new node
// (empty keystore) to receive the cluster's keystore.
const clusterCatchUpWait = 2 * time.Minute

// leaderOnly gates the gateway's scheduler to the raft leader; nil (no
// cluster) lets it always run.
func leaderOnly(n *cluster.RaftNode) func() bool {
	if n == nil {
		return nil
	}
	return n.IsLeader
}

// clusterCommand is `hsmgate cluster`.
func clusterCommand() *cli.Command {
	return &cli.Command{
		Name:  "cluster",
		Usage: "this gateway as a node of a cluster: its view of the cluster, and membership of the replicated keystore",
		Subcommands: []*cli.Command{
			clusterStatusCommand(),
			gossipKeyCommand(),
			clusterCertsCommand(),
			{
				Name:      "join",
				Usage:     "ask the cluster to add this node to the replicated keystore, through the members named (default [cluster] raft_join)",
				ArgsUsage: "[MEMBER-RAFT-ADDRESS...]",
				Action: func(c *cli.Context) error {
					return runClusterMembership(c, "cluster join", "join", c.Args().Slice())
				},
			},
			{
				Name:  "leave",
				Usage: "remove this node from the replicated keystore (its raft then stops; the others go on)",
				Action: func(c *cli.Context) error {
					if err := noArgs(c); err != nil {
						return err
					}
					return runClusterMembership(c, "cluster leave", "leave", nil)
				},
			},
			{
				Name:      "remove-peer",
				Usage:     "remove another node, such as a dead one, from the replicated keystore",
				ArgsUsage: "NODE-ID",
				Action: func(c *cli.Context) error {
					id, err := oneArg(c, "NODE-ID")
					if err != nil {
						return err
					}
					return runClusterMembership(c, "cluster remove-peer", id, nil)
				},
			},
			{
				Name:      "backup",
				Usage:     "write a backup of the replicated keystore, as this node's running gateway holds it, to FILE (mode 0600)",
				ArgsUsage: "FILE",
				Action: func(c *cli.Context) error {
					file, err := oneArg(c, "FILE")
					if err != nil {
						return err
					}
					return runClusterBackup(c, file)
				},
			},
			{
				Name:      "restore",
				Usage:     "replace the whole cluster's keystore with a backup (disaster recovery: later changes are lost)",
				ArgsUsage: "FILE",
				Action: func(c *cli.Context) error {
					file, err := oneArg(c, "FILE")
					if err != nil {
						return err
					}
					return runClusterRestore(c, file)
				},
			},
			{
				Name:  "raft",
				Usage: "show the replicated keystore as this node sees it: state, leader, term, log positions, voters",
				Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print the node's JSON document instead of a table"}},
				Action: func(c *cli.Context) error {
					if err := noArgs(c); err != nil {
						return err
					}
					return runClusterRaft(c, c.Bool("json"))
				},
			},
		},
	}
}

// clusterNode is what the cluster commands need of this node's
// configuration.
type clusterNode struct {
	opts config.ClusterOptions
	tls  *tls.Config
}

// loadClusterNode reads the [cluster] section and the node's TLS material.
func loadClusterNode(dataDir, cmd string) (*clusterNode, error) {
	cfg, err := loadConfig(dataDir, cmd)
	if err != nil {
		return nil, err
	}
	o, ok, err := cfg.ClusterOptions()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	if !ok {
		return nil, fmt.Errorf("%s: %s has no [cluster] section: this gateway is not a cluster node (docs/cluster.md)", cmd, config.Path(dataDir))
	}
	tc, err := clusterTLS(o)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	return &clusterNode{opts: o, tls: tc}, nil
}

// raftAddress is the address peers reach this node's raft at.
func (n *clusterNode) raftAddress() string {
	if n.opts.RaftAdvertise != "" {
		return n.opts.RaftAdvertise
	}
	return n.opts.RaftAddress
}

// clusterTLS is the node's mutual TLS from [cluster]: the cluster CA, the
// node's certificate (server, and client unless a separate client pair is
// configured). A private key file readable by other users is refused.
func clusterTLS(o config.ClusterOptions) (*tls.Config, error) {
	raw, err := os.ReadFile(o.TLSCA)
	if err != nil {
		return nil, fmt.Errorf("cluster CA (tls_ca): %w", err)
	}
	cas, err := pki.ParseCertsPEM(raw)
	if err != nil {
		return nil, fmt.Errorf("cluster CA (tls_ca) %s: %w", o.TLSCA, err)
	}
	pool := x509.NewCertPool()
	for _, c := range cas {
		pool.AddCert(c)
	}
	server, err := loadClusterPair(o.TLSCert, o.TLSKey, "tls_cert", "tls_key")
	if err != nil {
		return nil, err
	}
	tc := &tls.Config{Certificates: []tls.Certificate{server}, RootCAs: pool, ClientCAs: pool, MinVersion: tls.VersionTLS13}
	if o.TLSClientCert != "" {
		client, err := loadClusterPair(o.TLSClientCert, o.TLSClientKey, "tls_client_cert", "tls_client_key")
		if err != nil {
			return nil, err
		}
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &client, nil }
	}
	return tc, nil
}

// loadClusterPair loads a PEM certificate chain and its PEM private key.
func loadClusterPair(certPath, keyPath, certKey, keyKey string) (tls.Certificate, error) {
	var pair tls.Certificate
	raw, err := os.ReadFile(certPath)
	if err != nil {
		return pair, fmt.Errorf("node certificate (%s): %w", certKey, err)
	}
	chain, err := pki.ParseCertsPEM(raw)
	if err != nil {
		return pair, fmt.Errorf("node certificate (%s) %s: %w", certKey, certPath, err)
	}
	st, err := os.Stat(keyPath)
	if err != nil {
		return pair, fmt.Errorf("node key (%s): %w", keyKey, err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return pair, fmt.Errorf("node key (%s) %s is readable by other users (mode %04o): it is a credential of the cluster; chmod 600 it", keyKey, keyPath, st.Mode().Perm())
	}
	raw, err = os.ReadFile(keyPath)
	if err != nil {
		return pair, fmt.Errorf("node key (%s): %w", keyKey, err)
	}
	key, err := pki.ParsePrivateKeyPEM(raw)
	clear(raw)
	if err != nil {
		return pair, fmt.Errorf("node key (%s) %s: %w", keyKey, keyPath, err)
	}
	if !publicKeysMatch(chain[0].PublicKey, key.Public()) {
		return pair, fmt.Errorf("node key (%s) %s is not the key of the certificate %s (%s)", keyKey, keyPath, certPath, certKey)
	}
	for _, c := range chain {
		pair.Certificate = append(pair.Certificate, c.Raw)
	}
	pair.Leaf, pair.PrivateKey = chain[0], key
	return pair, nil
}

func publicKeysMatch(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// runClusterMembership runs a membership change: op "join", "leave", or
// the id of a node to remove.
func runClusterMembership(c *cli.Context, cmd, op string, members []string) error {
	n, err := loadClusterNode(c.String("data"), cmd)
	if err != nil {
		return err
	}
	rc, err := cluster.NewRaftClient(n.tls)
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	defer rc.Close()
	ctx, cancel := context.WithTimeout(c.Context, clusterCommandTimeout)
	defer cancel()
	self := n.raftAddress()
	switch op {
	case "join":
		if len(members) == 0 {
			members = n.opts.RaftJoin
		}
		if len(members) == 0 {
			return fmt.Errorf("%s: name a member's raft address, or set [cluster] raft_join", cmd)
		}
		// A new node starts from an empty keystore, which the cluster fills.
		path := filepath.Join(c.String("data"), gateway.KeystoreFile)
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			s, err := keystore.Open(path)
			if err != nil {
				return fmt.Errorf("%s: create the node's empty keystore: %w", cmd, err)
			}
			s.Close()
			fmt.Fprintf(c.App.Writer, "Created an empty keystore, %s, for the cluster's to fill.\n", path)
		}
		if err := rc.AddVoter(ctx, members, n.opts.NodeID, self); err != nil {
			return fmt.Errorf("%s: %w", cmd, clusterHint(err))
		}
		fmt.Fprintf(c.App.Writer, "Node %s (%s) is a voter of the replicated keystore. Its gateway, running or started, receives the cluster's keystore.\n", n.opts.NodeID, self)
	case "leave":
		if err := rc.RemovePeer(ctx, append([]string{self}, n.opts.RaftJoin...), n.opts.NodeID); err != nil {
			return fmt.Errorf("%s: %w", cmd, clusterHint(err))
		}
		fmt.Fprintf(c.App.Writer, "Node %s left the replicated keystore; its raft stops. To come back it needs a new node_id and an empty raft folder and keystore.\n", n.opts.NodeID)
	default:
		if op == n.opts.NodeID {
			return fmt.Errorf("%s: %s is this node: use `hsmgate cluster leave`", cmd, op)
		}
		if err := rc.RemovePeer(ctx, append([]string{self}, n.opts.RaftJoin...), op); err != nil {
			return fmt.Errorf("%s: %w", cmd, clusterHint(err))
		}
		fmt.Fprintf(c.App.Writer, "Node %s was removed from the replicated keystore.\n", op)
	}
	return nil
}

// clusterHint adds what to do to a membership error.
func clusterHint(err error) error {
	if errors.Is(err, keystore.ErrUnavailable) {
		return fmt.Errorf("%w (a membership change needs a majority of the voters up and reachable)", err)
	}
	return err
}

// runClusterRaft prints this node's raft status, read from its running
// gateway's raft port.
func runClusterRaft(c *cli.Context, asJSON bool) error {
	const cmd = "cluster raft"
	n, err := loadClusterNode(c.String("data"), cmd)
	if err != nil {
		return err
	}
	rc, err := cluster.NewRaftClient(n.tls)
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	defer rc.Close()
	ctx, cancel := context.WithTimeout(c.Context, clusterCommandTimeout)
	defer cancel()
	st, err := rc.Status(ctx, n.raftAddress())
	if err != nil {
		return fmt.Errorf("%s: this node's raft at %s did not answer (is its gateway running?): %w", cmd, n.raftAddress(), err)
	}
	if asJSON {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printRaftStatus(c.App.Writer, st)
	return nil
}

// runClusterBackup writes a backup from this node's running gateway to
// file: through a temporary file, renamed into place once complete.
func runClusterBackup(c *cli.Context, file string) (err error) {
	const cmd = "cluster backup"
	n, err := loadClusterNode(c.String("data"), cmd)
	if err != nil {
		return err
	}
	rc, err := cluster.NewRaftClient(n.tls)
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".*")
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("%s: %w", cmd, err)
	}
	err = rc.Backup(c.Context, n.raftAddress(), tmp)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	fmt.Fprintf(c.App.Writer, "Wrote a backup of the keystore, as node %s holds it, to %s.\n", n.opts.NodeID, file)
	return nil
}

// runClusterRestore sends a backup to the cluster's leader.
func runClusterRestore(c *cli.Context, file string) error {
	const cmd = "cluster restore"
	n, err := loadClusterNode(c.String("data"), cmd)
	if err != nil {
		return err
	}
	if _, err := os.Stat(file); err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	rc, err := cluster.NewRaftClient(n.tls)
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	defer rc.Close()
	open := func() (io.ReadCloser, error) { return os.Open(file) }
	if err := rc.Restore(c.Context, append([]string{n.raftAddress()}, n.opts.RaftJoin...), open); err != nil {
		return fmt.Errorf("%s: %w", cmd, clusterHint(err))
	}
	fmt.Fprintf(c.App.Writer, "The cluster's keystore is now the backup %s, on every node.\n", file)
	return nil
}

func printRaftStatus(w io.Writer, st cluster.RaftStatus) {
	leader := "none known"
	if st.LeaderID != "" {
		leader = st.LeaderID + " (" + st.LeaderAddress + ")"
	}
	fmt.Fprintf(w, "node %s (%s): %s, term %d, leader %s\n", st.NodeID, st.Address, strings.ToLower(st.State), st.Term, leader)
	fmt.Fprintf(w, "log: last %d, committed %d, applied %d\n", st.LastIndex, st.CommitIndex, st.AppliedIndex)
	if st.Failure != "" {
		fmt.Fprintf(w, "FAILED: %s\n", st.Failure)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tADDRESS\tVOTER\tLEADER")
	for _, s := range st.Servers {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.ID, s.Address, yesNo(s.Voter), yesNo(s.Leader))
	}
	tw.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// startReplication starts this gateway's raft node when the configuration
// has a [cluster] section (nil, nil when it has none): the keystore's
// writes then go through the cluster. A node with raft_join asks those
// members to add it until one does; a node that starts with an empty
// keystore (a new node) waits, up to wait, until it has received the
// cluster's, since the gateway can't serve without it.
func startReplication(ctx context.Context, cfg *config.Config, store *keystore.Store, log *slog.Logger, wait time.Duration) (*cluster.RaftNode, error) {
	o, ok, err := cfg.ClusterOptions()
	if err != nil || !ok {
		return nil, err
	}
	tc, err := clusterTLS(o)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	empty, err := store.Empty()
	if err != nil {
		return nil, err
	}
	node, err := cluster.NewRaftNode(cluster.RaftConfig{
		NodeID: o.NodeID, BindAddress: o.RaftAddress, AdvertiseAddress: o.RaftAdvertise,
		DataDir: o.RaftDir, Bootstrap: o.Bootstrap, TLS: tc, Store: store, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	if len(o.RaftJoin) > 0 {
		go joinLoop(ctx, node, o.RaftJoin, log)
	}
	if empty && !o.Bootstrap {
		log.Info("cluster: waiting to receive the cluster's keystore", "node", o.NodeID, "join", o.RaftJoin)
		wctx, cancel := context.WithTimeout(ctx, wait)
		err := node.WaitReady(wctx)
		cancel()
		if err != nil {
			node.Shutdown()
			return nil, fmt.Errorf("cluster: this node has an empty keystore and did not receive the cluster's within %v (is it a member? `hsmgate cluster join`, or [cluster] raft_join): %w", wait, err)
		}
	}
	return node, nil
}

// joinLoop asks members to add the node until it is in the configuration,
// every 5 seconds, until ctx ends.
func joinLoop(ctx context.Context, node *cluster.RaftNode, members []string, log *slog.Logger) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		servers, err := node.Servers()
		if err == nil {
			for _, s := range servers {
				if s.ID == node.ID() && s.Address == node.Address() {
					return
				}
			}
		}
		jctx, cancel := context.WithTimeout(ctx, clusterCommandTimeout)
		err = node.Join(jctx, members...)
		cancel()
		if err == nil {
			log.Info("cluster: joined the replicated keystore", "members", members)
			return
		}
		log.Warn("cluster: could not join the replicated keystore yet; retrying", "members", members, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
