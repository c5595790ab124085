package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/gateway/kmsapi"
	"github.com/hsmgate/hsmgate/hsmpool"
	"github.com/hsmgate/hsmgate/internal/config"
	"github.com/hsmgate/hsmgate/internal/pki"
)

// The principal commands work whether the gateway runs or not, and print
// the same either way. Each is one or two operations of the admin API
// (gateway/admin.go):
//
//   - gateway stopped: the command opens the keystore itself and runs the
//     operations in-process (gateway.Admin), opening the HSM pool only for
//     those that need it (create-access-key, issue-cert);
//   - gateway running: it holds the keystore's lock (the database allows
//     one process at a time), so the command sends the operations to the
//     gateway's admin API at gateway.listen of the data folder's
//     configuration (or --listen), over mutual TLS as the admin, with the
//     admin's client certificate and the CA of the data folder (admin/ and
//     pki/ca.pem). Changes take effect at once: a revoked access key is
//     refused from the very next request.

// principalCmd is what a principal command runs with.
type principalCmd struct {
	ctx     context.Context
	name    string // "principal add", for errors
	dataDir string
	listen  string // the running gateway's address, when not gateway.listen
	stdout  io.Writer
	stderr  io.Writer
	log     *slog.Logger
}

func newPrincipalCmd(c *cli.Context, name string) *principalCmd {
	return &principalCmd{ctx: c.Context, name: name, dataDir: c.String("data"), listen: c.String("listen"),
		stdout: c.App.Writer, stderr: c.App.ErrWriter, log: newLogger(c)}
}

// gatewayListenFlag is the principal commands' --listen.
func gatewayListenFlag() cli.Flag {
	return &cli.StringFlag{Name: "listen", Usage: "while the gateway runs: the address it listens on, if not gateway.listen (as given to serve --listen)"}
}

// adminCall runs one admin operation ("CreatePrincipal"), its request in
// and its answer decoded into out. An API error is a *kmsapi.Error.
type adminCall func(op string, in, out any) error

// localCaller is who runs the admin operations of a command on a stopped
// gateway's keystore: whoever may read its data folder, an admin. The name
// is no valid principal name, so it can't be confused with one.
const localCaller = "(hsmgate command)"

// withAdmin runs f with a way to call the admin operations: on the
// keystore directly while the gateway is stopped (opening the pool first
// if needPool), else through the running gateway's admin API.
func (pc *principalCmd) withAdmin(needPool bool, f func(call adminCall) error) (err error) {
	cfg, err := loadConfig(pc.dataDir, pc.name)
	if err != nil {
		return err
	}
	opts, err := cfg.GatewayOptions()
	if err != nil {
		return fmt.Errorf("%s: %w", pc.name, err)
	}
	path := filepath.Join(pc.dataDir, gateway.KeystoreFile)
	if keystoreLocked(path) {
		return pc.remote(opts, f)
	}
	store, err := openKeystore(pc.dataDir, pc.name, orWaitForOther)
	if err != nil {
		if keystoreLocked(path) { // a gateway started since we looked
			return pc.remote(opts, f)
		}
		return err
	}
	defer func() {
		if cerr := store.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("%s: close the keystore: %w", pc.name, cerr))
		}
	}()
	ledger, err := filepath.Abs(filepath.Join(pc.dataDir, gateway.QuorumLedgerFile))
	if err != nil {
		return err
	}
	run := func(pool *hsmpool.Pool) error {
		admin := &gateway.Admin{
			Identities:   &gateway.Identities{Store: store, Pool: pool},
			Account:      opts.Account,
			QuorumLedger: ledger,
			CACertificates: func(context.Context) ([]*x509.Certificate, error) {
				return readCerts(filepath.Join(pc.dataDir, gateway.CACertFile))
			},
			Log: pc.log,
		}
		if cfg.Images != nil { // activations run only on the serving gateway (no OnActivated)
			admin.Images = &gateway.ImageService{DataDir: pc.dataDir, Target: cfg.Images.Target}
		}
		caller := kmsapi.Caller{Principal: localCaller, Admin: true}
		return f(func(op string, in, out any) error {
			body, err := json.Marshal(in)
			if err != nil {
				return err
			}
			resp, apiErr := admin.Do(pc.ctx, caller, gateway.AdminTargetPrefix+op, body)
			if apiErr != nil {
				return apiErr
			}
			return json.Unmarshal(resp, out)
		})
	}
	if needPool {
		return withPool(pc.ctx, cfg, pc.name, pc.log, run)
	}
	return run(nil)
}

// keystoreLocked reports, without waiting, whether another process holds
// the keystore's lock: a running gateway (or another command).
func keystoreLocked(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	// bbolt locks the whole file with flock(2), exclusively when writing.
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
	if err == nil {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		return false
	}
	return errors.Is(err, syscall.EWOULDBLOCK)
}

// readCerts reads a PEM certificate file.
func readCerts(path string) ([]*x509.Certificate, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return pki.ParseCertsPEM(raw)
}

// remote runs f with calls to the running gateway's admin API, over
// mutual TLS as the admin.
func (pc *principalCmd) remote(opts config.GatewayOptions, f func(call adminCall) error) error {
	endpoint, client, err := pc.adminHTTPClient(opts, "Stop the gateway to run the command on the keystore directly")
	if err != nil {
		return err
	}
	defer client.CloseIdleConnections()
	pc.log.Debug("the gateway holds the keystore: calling its admin API", "endpoint", endpoint)
	return f(func(op string, in, out any) error {
		body, err := json.Marshal(in)
		if err != nil {
			return err
		}
		req, err := http.NewRequestWithContext(pc.ctx, http.MethodPost, endpoint+"/", bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("%s: %w", pc.name, err)
		}
		req.Header.Set("X-Amz-Target", gateway.AdminTargetPrefix+op)
		req.Header.Set("Content-Type", "application/x-amz-json-1.1")
		req.Header.Set("User-Agent", "hsmgate-cli")
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("%s: the keystore is locked by another process, but the gateway's admin API at %s could not be reached: %w. "+
				"If the gateway listens elsewhere than gateway.listen, pass its address with --listen; if no gateway runs, another hsmgate command "+
				"is using this data folder: wait for it to finish, then try again", pc.name, endpoint, err)
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return fmt.Errorf("%s: read the gateway's answer: %w", pc.name, err)
		}
		if resp.StatusCode != http.StatusOK {
			var e struct {
				Type    string `json:"__type"`
				Message string `json:"message"`
			}
			if json.Unmarshal(raw, &e) == nil && e.Type != "" {
				return &kmsapi.Error{Type: e.Type, Message: e.Message, Status: resp.StatusCode}
			}
			return fmt.Errorf("%s: the gateway at %s answered %s", pc.name, endpoint, resp.Status)
		}
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s: the gateway's answer: %w", pc.name, err)
		}
		return nil
	})
}

// adminHTTPClient returns the running gateway's endpoint (gateway.listen,
// or --listen) and an HTTP client that trusts only the data folder's CA
// and presents the admin's client certificate (mutual TLS as the admin);
// noCert ends the error when that certificate can't be read. Close its
// idle connections when done.
func (pc *principalCmd) adminHTTPClient(opts config.GatewayOptions, noCert string) (endpoint string, client *http.Client, err error) {
	listen := opts.Listen
	if pc.listen != "" {
		if err := config.CheckListen(pc.listen); err != nil {
			return "", nil, fmt.Errorf("%s: --listen %w", pc.name, err)
		}
		listen = pc.listen
	}
	host, port, _ := net.SplitHostPort(listen)
	if port == "0" {
		return "", nil, fmt.Errorf("%s: the gateway listens on %s, a port the system chose at its start: pass the address `hsmgate serve` printed with --listen", pc.name, listen)
	}
	endpoint = endpointURL(host, port, opts.Hosts)
	caPath := filepath.Join(pc.dataDir, gateway.CACertFile)
	certPath := filepath.Join(pc.dataDir, gateway.AdminDir, "client.pem")
	keyPath := filepath.Join(pc.dataDir, gateway.AdminDir, "client.key")
	cas, err := readCerts(caPath)
	if err != nil {
		return "", nil, fmt.Errorf("%s: the gateway is running, and calling it needs the CA certificate %s: %w", pc.name, caPath, err)
	}
	roots := x509.NewCertPool()
	for _, c := range cas {
		roots.AddCert(c)
	}
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return "", nil, fmt.Errorf("%s: the gateway is running, and calling it as the admin needs the admin's client certificate and key (%s, %s): %w. %s",
			pc.name, certPath, keyPath, err, noCert)
	}
	transport := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
	return endpoint, &http.Client{Transport: transport, Timeout: time.Minute}, nil
}

// fail turns an error of an admin call into the command's error; notFound,
// when not empty, replaces the message of a NotFoundException.
func (pc *principalCmd) fail(err error, notFound string) error {
	var ae *kmsapi.Error
	if !errors.As(err, &ae) {
		if strings.HasPrefix(err.Error(), pc.name+":") {
			return err
		}
		return fmt.Errorf("%s: %w", pc.name, err)
	}
	switch ae.Type {
	case kmsapi.ExNotFound:
		if notFound != "" {
			return fmt.Errorf("%s: %s", pc.name, notFound)
		}
		fallthrough
	case kmsapi.ExAlreadyExists, kmsapi.ExValidation, kmsapi.ExLimitExceeded:
		return fmt.Errorf("%s: %s", pc.name, ae.Message)
	}
	return fmt.Errorf("%s: %s: %s", pc.name, ae.Type, ae.Message)
}

// parseTags parses KEY=VALUE arguments.
func parseTags(args []string) ([]gateway.AdminTag, error) {
	var tags []gateway.AdminTag
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("tag %q: want KEY=VALUE", a)
		}
		tags = append(tags, gateway.AdminTag{TagKey: k, TagValue: v})
	}
	return tags, nil
}

func formatTags(tags []gateway.AdminTag, sep string) string {
	var parts []string
	for _, t := range tags {
		parts = append(parts, t.TagKey+"="+t.TagValue)
	}
	return dash(strings.Join(parts, sep))
}

func epochString(e kmsapi.Epoch) string { return time.Time(e).UTC().Format(time.RFC3339) }

func accessKeyState(a gateway.AdminAccessKey) string { return strings.ToLower(a.Status) }

func noPrincipal(name string) string {
	return fmt.Sprintf("no principal %s (add it with `hsmgate principal add %s`)", name, shellWord(name))
}

// runPrincipalAdd adds a principal. It has no credentials yet: see
// runCreateAccessKey.
func runPrincipalAdd(pc *principalCmd, in gateway.AdminCreatePrincipalInput) error {
	return pc.withAdmin(false, func(call adminCall) error {
		var out gateway.AdminPrincipalOutput
		if err := call("CreatePrincipal", in, &out); err != nil {
			return pc.fail(err, "")
		}
		p := out.Principal
		what := "principal"
		if p.Admin {
			what = "admin principal"
		}
		fmt.Fprintf(pc.stdout, "Added %s %s (%s). Give it an access key with: hsmgate principal create-access-key %s\n", what, p.PrincipalName, p.Arn, shellWord(p.PrincipalName))
		return nil
	})
}

// runPrincipalList prints every principal with its access keys.
func runPrincipalList(pc *principalCmd) error {
	return pc.withAdmin(false, func(call adminCall) error {
		var out gateway.AdminListPrincipalsOutput
		if err := call("ListPrincipals", struct{}{}, &out); err != nil {
			return pc.fail(err, "")
		}
		tw := tabwriter.NewWriter(pc.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tADMIN\tKIND\tSERVICE\tTAGS\tCREATED\tACCESS KEYS")
		for _, p := range out.Principals {
			var keys []string
			for _, a := range p.AccessKeys {
				keys = append(keys, a.AccessKeyId+" ("+accessKeyState(a)+")")
			}
			admin := "no"
			if p.Admin {
				admin = "yes"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.PrincipalName, admin, p.Kind, dash(p.Service), formatTags(p.Tags, ","),
				epochString(p.CreationDate), dash(strings.Join(keys, ", ")))
		}
		return tw.Flush()
	})
}

// runPrincipalShow prints one principal: its ARN, whether it is an admin,
// its kind, service and tags, its access keys and how many keys it
// created.
func runPrincipalShow(pc *principalCmd, name string) error {
	return pc.withAdmin(false, func(call adminCall) error {
		var out gateway.AdminPrincipalOutput
		if err := call("DescribePrincipal", gateway.AdminPrincipalInput{PrincipalName: name}, &out); err != nil {
			return pc.fail(err, "no principal "+name)
		}
		p := out.Principal
		created := 0
		if p.KeysCreated != nil {
			created = *p.KeysCreated
		}
		fmt.Fprintf(pc.stdout, "name:     %s\narn:      %s\nadmin:    %v\nkind:     %s\nservice:  %s\ntags:     %s\ncreated:  %s\nkeys:     %d created by it\n",
			p.PrincipalName, p.Arn, p.Admin, p.Kind, dash(p.Service), formatTags(p.Tags, ", "), epochString(p.CreationDate), created)
		for _, a := range p.AccessKeys {
			fmt.Fprintf(pc.stdout, "access key %s (%s, created %s)\n", a.AccessKeyId, accessKeyState(a), epochString(a.CreateDate))
		}
		return nil
	})
}

// runPrincipalRemove deletes a principal and revokes its access keys. The
// keys it created stay, managed by the admin. The admin itself can't be
// removed.
func runPrincipalRemove(pc *principalCmd, name string) error {
	if name == gateway.AdminName {
		return fmt.Errorf("%s: the admin principal can't be removed", pc.name)
	}
	return pc.withAdmin(false, func(call adminCall) error {
		var out gateway.AdminDeletePrincipalOutput
		if err := call("DeletePrincipal", gateway.AdminPrincipalInput{PrincipalName: name}, &out); err != nil {
			return pc.fail(err, "no principal "+name)
		}
		fmt.Fprintf(pc.stdout, "Removed principal %s and revoked its access keys; keys it created stay, for the admin to manage.\n", name)
		return nil
	})
}

// runPrincipalTag sets tags of a principal (replacing the values of tags
// it has).
func runPrincipalTag(pc *principalCmd, name string, tags []gateway.AdminTag) error {
	return pc.withAdmin(false, func(call adminCall) error {
		var out struct{}
		if err := call("TagPrincipal", gateway.AdminTagPrincipalInput{PrincipalName: name, Tags: tags}, &out); err != nil {
			return pc.fail(err, noPrincipal(name))
		}
		fmt.Fprintf(pc.stdout, "Tagged principal %s: %s.\n", name, formatTags(tags, ", "))
		return nil
	})
}

// runPrincipalUntag removes tags from a principal.
func runPrincipalUntag(pc *principalCmd, name string, keys []string) error {
	return pc.withAdmin(false, func(call adminCall) error {
		var out struct{}
		if err := call("UntagPrincipal", gateway.AdminUntagPrincipalInput{PrincipalName: name, TagKeys: keys}, &out); err != nil {
			return pc.fail(err, noPrincipal(name))
		}
		fmt.Fprintf(pc.stdout, "Removed the tags %s from principal %s (those it had).\n", strings.Join(keys, ", "), name)
		return nil
	})
}

// runCreateAccessKey creates a SigV4 access key for a principal and prints
// it to stdout, once, as a shared-credentials profile; the warning that it
// can't be shown again goes to stderr, so that stdout can be appended to a
// credentials file as it is. The keystore keeps the secret only encrypted
// by the HSM, so on a stopped gateway this opens the pool.
func runCreateAccessKey(pc *principalCmd, name string) error {
	return pc.withAdmin(true, func(call adminCall) error {
		var out gateway.AdminCreateAccessKeyOutput
		if err := call("CreateAccessKey", gateway.AdminPrincipalInput{PrincipalName: name}, &out); err != nil {
			return pc.fail(err, noPrincipal(name))
		}
		ak := out.AccessKey
		fmt.Fprintf(pc.stdout, "[%s]\naws_access_key_id = %s\naws_secret_access_key = %s\n", name, ak.AccessKeyId, ak.SecretAccessKey)
		fmt.Fprintf(pc.stderr, "Warning: this is the only time the secret access key of %s is shown: the gateway keeps it only encrypted by the HSM. "+
			"Store it now (for example in the client's ~/.aws/credentials, mode 0600).\n", ak.AccessKeyId)
		return nil
	})
}

// runRevokeAccessKey revokes an access key at once and for good.
func runRevokeAccessKey(pc *principalCmd, akid string) error {
	return pc.withAdmin(false, func(call adminCall) error {
		var out gateway.AdminRevokeAccessKeyOutput
		if err := call("RevokeAccessKey", gateway.AdminRevokeAccessKeyInput{AccessKeyId: akid}, &out); err != nil {
			return pc.fail(err, fmt.Sprintf("no access key %s (`hsmgate principal list` shows them)", akid))
		}
		if out.AlreadyRevoked {
			fmt.Fprintf(pc.stdout, "Access key %s (principal %s) was already revoked.\n", akid, out.PrincipalName)
			return nil
		}
		fmt.Fprintf(pc.stdout, "Revoked access key %s of principal %s: the gateway refuses it from now on.\n", akid, out.PrincipalName)
		return nil
	})
}

// certPublicKey is the ECDSA public key of the only certificate of certs.
func certPublicKey(certs []*x509.Certificate, err error) (*ecdsa.PublicKey, bool) {
	if err != nil || len(certs) != 1 {
		return nil, false
	}
	pub, ok := certs[0].PublicKey.(*ecdsa.PublicKey)
	return pub, ok
}

// runIssueCert issues a client certificate for a principal, signed by the
// gateway's CA inside the HSM pool, for a new P-256 key made here, and
// writes client.pem and client.key (mode 0600) to outDir. Only a
// certificate signing request goes to the gateway: the key is the
// client's own secret, and the gateway never sees it.
func runIssueCert(pc *principalCmd, name, outDir string) error {
	if outDir == "" {
		return fmt.Errorf("%s: --out DIR is required", pc.name)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	if err != nil {
		return fmt.Errorf("%s: %w", pc.name, err)
	}
	return pc.withAdmin(true, func(call adminCall) error {
		in := gateway.AdminIssueClientCertificateInput{
			PrincipalName:             name,
			CertificateSigningRequest: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})),
			ValidityDays:              gateway.DefaultClientCertDays,
		}
		var out gateway.AdminIssueClientCertificateOutput
		if err := call("IssueClientCertificate", in, &out); err != nil {
			return pc.fail(err, noPrincipal(name))
		}
		certs, err := pki.ParseCertsPEM([]byte(out.Certificate))
		if pub, ok := certPublicKey(certs, err); !ok || !pub.Equal(&key.PublicKey) {
			return fmt.Errorf("%s: the gateway answered with no certificate for the key made here", pc.name)
		}
		cert := certs[0]
		keyPEM, err := pki.EncodePrivateKeyPEM(key)
		if err != nil {
			return err
		}
		defer clear(keyPEM)
		if err := os.MkdirAll(outDir, 0o700); err != nil {
			return fmt.Errorf("%s: %w", pc.name, err)
		}
		certPath, keyPath := filepath.Join(outDir, "client.pem"), filepath.Join(outDir, "client.key")
		if err := pki.WriteFileAtomic(certPath, pki.EncodeCertPEM(cert), 0o644); err != nil {
			return fmt.Errorf("%s: %w", pc.name, err)
		}
		if err := pki.WriteFileAtomic(keyPath, keyPEM, 0o600); err != nil {
			return fmt.Errorf("%s: %w", pc.name, err)
		}
		fmt.Fprintf(pc.stdout, "Issued a client certificate for %s, valid until %s:\n  %s\n  %s (the client's private key; the gateway keeps no copy)\n",
			name, cert.NotAfter.Format(time.RFC3339), certPath, keyPath)
		return nil
	})
}
