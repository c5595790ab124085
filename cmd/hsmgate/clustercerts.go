package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hsmgate/hsmgate/internal/pki"
)

// clusterCertsCommand is `hsmgate cluster certs`: the cluster CA (made on
// first use) and one node's raft TLS material, as [cluster] tls_ca,
// tls_cert, tls_key, tls_client_cert and tls_client_key name them.
func clusterCertsCommand() *cli.Command {
	return &cli.Command{
		Name: "certs",
		Usage: "make the cluster CA (once, in --ca-dir; keep its key offline) and a node's certificates for the replicated keystore's " +
			"mutual TLS: ca.pem, node.pem/node.key (server, for --host) and client.pem/client.key (principal node.<id>)",
		ArgsUsage: " ",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "ca-dir", Usage: "folder of the cluster CA (ca.pem, ca.key); made if absent", Required: true},
			&cli.StringFlag{Name: "node", Usage: "the node's id ([cluster] node_id)", Required: true},
			&cli.StringSliceFlag{Name: "host", Usage: "a DNS name or IP address of the node's raft address (repeat it)", Required: true},
			&cli.StringFlag{Name: "out", Usage: "folder to write the node's files into (e.g. DATA/cluster)", Required: true},
			&cli.DurationFlag{Name: "validity", Value: 2 * 365 * 24 * time.Hour, Usage: "how long the node's certificates are valid"},
		},
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			return runClusterCerts(c.App.Writer, c.String("ca-dir"), c.String("node"), c.StringSlice("host"), c.String("out"), c.Duration("validity"))
		},
	}
}

func runClusterCerts(w io.Writer, caDir, node string, hosts []string, out string, validity time.Duration) error {
	const cmd = "cluster certs"
	if err := pki.ValidPrincipalName("node." + node); err != nil {
		return fmt.Errorf("%s: --node: %w", cmd, err)
	}
	now := time.Now()
	caCert, caKey, err := loadOrMakeClusterCA(caDir, now, w)
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	if err := os.MkdirAll(out, 0o700); err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	for _, kind := range []string{"node", "client"} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		var cert *x509.Certificate
		if kind == "node" {
			cert, err = pki.IssueServer(caCert, caKey, key.Public(), hosts, validity, now)
		} else {
			cert, err = pki.IssueClient(caCert, caKey, key.Public(), "node."+node, validity, now)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
		kp, err := pki.EncodePrivateKeyPEM(key)
		if err != nil {
			return err
		}
		if err := pki.WriteFileAtomic(filepath.Join(out, kind+".key"), kp, 0o600); err != nil {
			return err
		}
		if err := pki.WriteFileAtomic(filepath.Join(out, kind+".pem"), pki.EncodeCertPEM(cert), 0o644); err != nil {
			return err
		}
	}
	if err := pki.WriteFileAtomic(filepath.Join(out, "ca.pem"), pki.EncodeCertPEM(caCert), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(w, "wrote %s: ca.pem, node.pem/node.key (server for %v), client.pem/client.key (principal node.%s)\n", out, hosts, node)
	return nil
}

// loadOrMakeClusterCA reads caDir's CA, or makes one there.
func loadOrMakeClusterCA(caDir string, now time.Time, w io.Writer) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPath, keyPath := filepath.Join(caDir, "ca.pem"), filepath.Join(caDir, "ca.key")
	if raw, err := os.ReadFile(certPath); err == nil {
		certs, err := pki.ParseCertsPEM(raw)
		if err != nil || len(certs) != 1 {
			return nil, nil, fmt.Errorf("%s: not one certificate", certPath)
		}
		kraw, err := os.ReadFile(keyPath)
		if err != nil {
			return nil, nil, err
		}
		signer, err := pki.ParsePrivateKeyPEM(kraw)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", keyPath, err)
		}
		key, ok := signer.(*ecdsa.PrivateKey)
		if !ok {
			return nil, nil, fmt.Errorf("%s: not an EC key", keyPath)
		}
		return certs[0], key, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, err
	}
	if err := os.MkdirAll(caDir, 0o700); err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	cert, err := pki.NewCA(key, "hsmgate cluster CA", 10*365*24*time.Hour, now)
	if err != nil {
		return nil, nil, err
	}
	kp, err := pki.EncodePrivateKeyPEM(key)
	if err != nil {
		return nil, nil, err
	}
	if err := pki.WriteFileAtomic(keyPath, kp, 0o600); err != nil {
		return nil, nil, err
	}
	if err := pki.WriteFileAtomic(certPath, pki.EncodeCertPEM(cert), 0o644); err != nil {
		return nil, nil, err
	}
	fmt.Fprintf(w, "made the cluster CA in %s (ca.pem; its key ca.key is the power to add nodes: keep it offline)\n", caDir)
	return cert, key, nil
}
