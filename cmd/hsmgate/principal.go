package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/hsmpool"
	"github.com/hsmgate/hsmgate/internal/pki"
)

// The principal commands change the keystore directly, so they run while
// the gateway is stopped: the keystore's database allows one process at a
// time, and a running gateway holds it (openKeystore says so).

// withKeystore opens the data folder's keystore, runs f on it and closes it.
func withKeystore(dataDir, cmd string, f func(*keystore.Store) error) (err error) {
	if _, err := loadConfig(dataDir, cmd); err != nil {
		return err
	}
	store, err := openKeystore(dataDir, cmd, orWaitForOther)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := store.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("%s: close the keystore: %w", cmd, cerr))
		}
	}()
	return f(store)
}

// runPrincipalAdd adds a principal, an admin if admin is set. It has no
// credentials yet: see runCreateAccessKey.
func runPrincipalAdd(dataDir, name string, admin bool, w io.Writer) error {
	const cmd = "principal add"
	return withKeystore(dataDir, cmd, func(store *keystore.Store) error {
		ids := &gateway.Identities{Store: store}
		if err := ids.CreatePrincipal(name, admin); err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
		kind := "principal"
		if admin {
			kind = "admin principal"
		}
		fmt.Fprintf(w, "Added %s %s. Give it an access key with: hsmgate principal create-access-key %s\n", kind, name, shellWord(name))
		return nil
	})
}

// runPrincipalList prints every principal with its access keys.
func runPrincipalList(dataDir string, w io.Writer) error {
	return withKeystore(dataDir, "principal list", func(store *keystore.Store) error {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tADMIN\tCREATED\tACCESS KEYS")
		for _, p := range store.Principals() {
			var keys []string
			for _, a := range store.AccessKeysOf(p.Name) {
				state := "active"
				if a.Revoked {
					state = "revoked"
				}
				keys = append(keys, a.ID+" ("+state+")")
			}
			admin := "no"
			if p.Admin {
				admin = "yes"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Name, admin, p.CreatedAt.UTC().Format(time.RFC3339), dash(strings.Join(keys, ", ")))
		}
		return tw.Flush()
	})
}

// runCreateAccessKey creates a SigV4 access key for a principal and prints
// it to stdout, once, as a shared-credentials profile; the warning that it
// can't be shown again goes to stderr, so that stdout can be appended to a
// credentials file as it is. The keystore keeps the secret only encrypted
// by the HSM, so this opens the pool.
func runCreateAccessKey(ctx context.Context, dataDir, name string, stdout, stderr io.Writer, log *slog.Logger) error {
	const cmd = "principal create-access-key"
	cfg, err := loadConfig(dataDir, cmd)
	if err != nil {
		return err
	}
	return withKeystore(dataDir, cmd, func(store *keystore.Store) (err error) {
		if _, err := store.Principal(name); err != nil {
			return fmt.Errorf("%s: no principal %s (add it with `hsmgate principal add %s`)", cmd, name, shellWord(name))
		}
		return withPool(ctx, cfg, cmd, log, func(pool *hsmpool.Pool) error {
			ids := &gateway.Identities{Pool: pool, Store: store}
			akid, secret, err := ids.CreateAccessKey(ctx, name)
			if err != nil {
				return fmt.Errorf("%s: %w", cmd, err)
			}
			fmt.Fprintf(stdout, "[%s]\naws_access_key_id = %s\naws_secret_access_key = %s\n", name, akid, secret)
			fmt.Fprintf(stderr, "Warning: this is the only time the secret access key of %s is shown: the gateway keeps it only encrypted by the HSM. "+
				"Store it now (for example in the client's ~/.aws/credentials, mode 0600).\n", akid)
			return nil
		})
	})
}

// runRevokeAccessKey revokes an access key at once and for good.
func runRevokeAccessKey(dataDir, akid string, w io.Writer) error {
	const cmd = "principal revoke-access-key"
	return withKeystore(dataDir, cmd, func(store *keystore.Store) error {
		a, err := store.AccessKey(akid)
		if err != nil {
			return fmt.Errorf("%s: no access key %s (`hsmgate principal list` shows them)", cmd, akid)
		}
		if a.Revoked {
			fmt.Fprintf(w, "Access key %s (principal %s) was already revoked.\n", akid, a.Principal)
			return nil
		}
		if err := (&gateway.Identities{Store: store}).RevokeAccessKey(akid); err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
		fmt.Fprintf(w, "Revoked access key %s of principal %s: it is refused from the gateway's next start.\n", akid, a.Principal)
		return nil
	})
}

// clientCertValidity is how long a client certificate from issue-cert lasts.
const clientCertValidity = 365 * 24 * time.Hour

// runIssueCert issues a client certificate for a principal, signed by the
// gateway's CA inside the HSM pool, with a new P-256 key made here, and
// writes client.pem and client.key (mode 0600) to outDir. The key is the
// client's own secret: the gateway keeps no copy.
func runIssueCert(ctx context.Context, dataDir, name, outDir string, w io.Writer, log *slog.Logger) error {
	const cmd = "principal issue-cert"
	if outDir == "" {
		return fmt.Errorf("%s: --out DIR is required", cmd)
	}
	cfg, err := loadConfig(dataDir, cmd)
	if err != nil {
		return err
	}
	return withKeystore(dataDir, cmd, func(store *keystore.Store) (err error) {
		if _, err := store.Principal(name); err != nil {
			return fmt.Errorf("%s: no principal %s (add it with `hsmgate principal add %s`)", cmd, name, shellWord(name))
		}
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		var cert *x509.Certificate
		err = withPool(ctx, cfg, cmd, log, func(pool *hsmpool.Pool) (err error) {
			cert, err = gateway.IssueClientCert(ctx, pool, store, cfg.Dir, name, &key.PublicKey, clientCertValidity, time.Now())
			return err
		})
		if err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
		keyPEM, err := pki.EncodePrivateKeyPEM(key)
		if err != nil {
			return err
		}
		defer clear(keyPEM)
		if err := os.MkdirAll(outDir, 0o700); err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
		certPath, keyPath := filepath.Join(outDir, "client.pem"), filepath.Join(outDir, "client.key")
		if err := pki.WriteFileAtomic(certPath, pki.EncodeCertPEM(cert), 0o644); err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
		if err := pki.WriteFileAtomic(keyPath, keyPEM, 0o600); err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
		fmt.Fprintf(w, "Issued a client certificate for %s, valid until %s:\n  %s\n  %s (the client's private key; the gateway keeps no copy)\n",
			name, cert.NotAfter.Format(time.RFC3339), certPath, keyPath)
		return nil
	})
}

// runPrincipalShow prints one principal: its ARN, whether it is the admin,
// its access keys and how many keys it created.
func runPrincipalShow(dataDir, name string, w io.Writer) error {
	const cmd = "principal show"
	cfg, err := loadConfig(dataDir, cmd)
	if err != nil {
		return err
	}
	opts, err := cfg.GatewayOptions()
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	return withKeystore(dataDir, cmd, func(store *keystore.Store) error {
		p, err := store.Principal(name)
		if err != nil {
			return fmt.Errorf("%s: no principal %s", cmd, name)
		}
		owned, _ := store.Keys("", 1<<30, func(k *keystore.Key) bool { return k.Owner == name })
		fmt.Fprintf(w, "name:     %s\narn:      arn:aws:iam::%s:user/%s\nadmin:    %v\ncreated:  %s\nkeys:     %d created by it\n",
			p.Name, opts.Account, p.Name, p.Admin, p.CreatedAt.Format(time.RFC3339), len(owned))
		for _, a := range store.AccessKeysOf(name) {
			state := "active"
			if a.Revoked {
				state = "revoked"
			}
			fmt.Fprintf(w, "access key %s (%s, created %s)\n", a.ID, state, a.CreatedAt.Format(time.RFC3339))
		}
		return nil
	})
}

// runPrincipalRemove deletes a principal and revokes its access keys. The
// keys it created stay, managed by the admin. The admin itself can't be
// removed.
func runPrincipalRemove(dataDir, name string, w io.Writer) error {
	const cmd = "principal rm"
	if name == gateway.AdminName {
		return fmt.Errorf("%s: the admin principal can't be removed", cmd)
	}
	return withKeystore(dataDir, cmd, func(store *keystore.Store) error {
		if _, err := store.Principal(name); err != nil {
			return fmt.Errorf("%s: no principal %s", cmd, name)
		}
		if err := store.Apply(&keystore.DeletePrincipal{Name: name}); err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
		fmt.Fprintf(w, "Removed principal %s and revoked its access keys; keys it created stay, for the admin to manage.\n", name)
		return nil
	})
}
