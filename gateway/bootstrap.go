package gateway

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hsmgate/hsmgate/gateway/audit"
	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/hsmpool"
	"github.com/hsmgate/hsmgate/internal/pki"
)

// The gateway's files inside the data folder.
const (
	KeystoreFile   = "keystore.db"
	CACertFile     = "pki/ca.pem"
	ServerCertFile = "pki/server.pem"
	AdminDir       = "admin"
	AdminName      = "admin"
)

// Names of the gateway's own HSM keys in the keystore's meta bucket.
const (
	metaCAKey     = "ca-key"
	metaServerKey = "tls-server-key"
)

const (
	caValidity     = 10 * 365 * 24 * time.Hour
	serverValidity = 2 * 365 * 24 * time.Hour
	clientValidity = 365 * 24 * time.Hour
	signTimeout    = 10 * time.Second
)

// AdminCredentials are what Bootstrap hands the operator: the admin's SigV4
// access key (its secret shown only here), and the paths of the admin's
// client certificate and key and of the CA bundle.
type AdminCredentials struct {
	AccessKeyID     string
	SecretAccessKey string
	ClientCert      string
	ClientKey       string
	CABundle        string
}

// Bootstrap prepares a new gateway's identity in dataDir: a CA and a TLS
// server certificate whose private keys are generated and kept in the HSM
// pool, the admin principal with one access key, and a client certificate
// for the admin. The admin's client key is the client's own credential and
// is written (mode 0600) to dataDir/admin for the operator to take.
func Bootstrap(ctx context.Context, pool *hsmpool.Pool, store *keystore.Store, dataDir string, hosts []string, now time.Time) (*AdminCredentials, error) {
	if _, err := store.Principal(AdminName); err == nil {
		return nil, errors.New("bootstrap: the keystore already has an admin principal")
	}
	caSigner, err := poolSigner(ctx, pool, store, metaCAKey)
	if err != nil {
		return nil, err
	}
	ca, err := pki.NewCA(caSigner, "hsmgate CA", caValidity, now)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: CA: %w", err)
	}
	serverSigner, err := poolSigner(ctx, pool, store, metaServerKey)
	if err != nil {
		return nil, err
	}
	server, err := pki.IssueServer(ca, caSigner, serverSigner.Public(), hosts, serverValidity, now)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: server certificate: %w", err)
	}
	clientKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	client, err := pki.IssueClient(ca, caSigner, &clientKey.PublicKey, AdminName, clientValidity, now)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: admin client certificate: %w", err)
	}
	keyPEM, err := pki.EncodePrivateKeyPEM(clientKey)
	if err != nil {
		return nil, err
	}
	creds := &AdminCredentials{
		ClientCert: filepath.Join(dataDir, AdminDir, "client.pem"),
		ClientKey:  filepath.Join(dataDir, AdminDir, "client.key"),
		CABundle:   filepath.Join(dataDir, CACertFile),
	}
	for _, d := range []string{filepath.Dir(creds.CABundle), filepath.Dir(creds.ClientCert)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	files := []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{creds.CABundle, pki.EncodeCertPEM(ca), 0o644},
		{filepath.Join(dataDir, ServerCertFile), pki.EncodeCertPEM(server, ca), 0o644},
		{creds.ClientCert, pki.EncodeCertPEM(client), 0o644},
		{creds.ClientKey, keyPEM, 0o600},
	}
	for _, f := range files {
		if err := pki.WriteFileAtomic(f.path, f.data, f.mode); err != nil {
			return nil, fmt.Errorf("bootstrap: %w", err)
		}
	}
	clear(keyPEM)
	ids := &Identities{Pool: pool, Store: store, Now: func() time.Time { return now }}
	if err := ids.CreatePrincipal(PrincipalSpec{Name: AdminName, Admin: true}); err != nil {
		return nil, err
	}
	if creds.AccessKeyID, creds.SecretAccessKey, err = ids.CreateAccessKey(ctx, AdminName); err != nil {
		return nil, err
	}
	return creds, nil
}

func poolSigner(ctx context.Context, pool *hsmpool.Pool, store *keystore.Store, name string) (crypto.Signer, error) {
	k, err := LoadOrCreateKey(ctx, pool, store, name, hsmpool.ECP256, hsmpool.UsageSign)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %s: %w", name, err)
	}
	s, err := pool.Signer(k, signTimeout)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// LoadTLS loads the server certificate chain from dataDir with its private
// key in the HSM pool, and the CA that client certificates must chain to.
func LoadTLS(ctx context.Context, pool *hsmpool.Pool, store *keystore.Store, dataDir string) (tls.Certificate, *x509.CertPool, error) {
	var cert tls.Certificate
	raw, err := os.ReadFile(filepath.Join(dataDir, ServerCertFile))
	if err != nil {
		return cert, nil, fmt.Errorf("server certificate: %w", err)
	}
	chain, err := pki.ParseCertsPEM(raw)
	if err != nil {
		return cert, nil, fmt.Errorf("server certificate: %w", err)
	}
	caRaw, err := os.ReadFile(filepath.Join(dataDir, CACertFile))
	if err != nil {
		return cert, nil, fmt.Errorf("CA certificate: %w", err)
	}
	cas, err := pki.ParseCertsPEM(caRaw)
	if err != nil {
		return cert, nil, fmt.Errorf("CA certificate: %w", err)
	}
	if stored, err := store.Meta(metaServerKey); err != nil || stored == nil {
		return cert, nil, errors.New("the keystore holds no TLS server key: run hsmgate init")
	}
	s, err := poolSigner(ctx, pool, store, metaServerKey)
	if err != nil {
		return cert, nil, err
	}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	cert.Leaf = chain[0]
	cert.PrivateKey = s
	clientCAs := x509.NewCertPool()
	for _, c := range cas {
		clientCAs.AddCert(c)
	}
	return cert, clientCAs, nil
}

// IssueClientCert issues a TLS client certificate for an existing principal
// and the public key pub, signed by the gateway's CA key in the pool. It
// refuses when the keystore's CA key does not match dataDir's CA
// certificate (a keystore and data folder from different gateways).
func IssueClientCert(ctx context.Context, pool *hsmpool.Pool, store *keystore.Store, dataDir, principal string, pub crypto.PublicKey, validity time.Duration, now time.Time) (*x509.Certificate, error) {
	if _, err := store.Principal(principal); err != nil {
		return nil, err
	}
	if stored, err := store.Meta(metaCAKey); err != nil || stored == nil {
		return nil, errors.New("the keystore holds no CA key: run hsmgate init")
	}
	raw, err := os.ReadFile(filepath.Join(dataDir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	cas, err := pki.ParseCertsPEM(raw)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	caSigner, err := poolSigner(ctx, pool, store, metaCAKey)
	if err != nil {
		return nil, err
	}
	if !publicKeysEqual(cas[0].PublicKey, caSigner.Public()) {
		return nil, errors.New("the CA certificate in the data folder does not belong to the keystore's CA key")
	}
	return pki.IssueClient(cas[0], caSigner, pub, principal, validity, now)
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}

// AuditDir is where the gateway's audit log lives in the data folder, and
// AuditKeyFile the public key that verifies its checkpoints.
const (
	AuditDir     = "audit"
	AuditKeyFile = "pki/audit-key.pem"
	metaAuditKey = "audit-key"
)

// OpenAudit opens the audit log in dataDir, its checkpoints signed by the
// gateway's audit key (an EC P-256 key of the HSM pool, made on first
// use), and writes that key's public half to dataDir/pki/audit-key.pem for
// `hsmgate audit verify`.
func OpenAudit(ctx context.Context, pool *hsmpool.Pool, store *keystore.Store, dataDir string) (*audit.Writer, error) {
	s, err := poolSigner(ctx, pool, store, metaAuditKey)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(s.Public())
	if err != nil {
		return nil, err
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	path := filepath.Join(dataDir, AuditKeyFile)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if err := pki.WriteFileAtomic(path, pemBytes, 0o644); err != nil {
		return nil, err
	}
	return audit.Open(filepath.Join(dataDir, AuditDir), audit.Options{Signer: s, SignerKeyID: "hsmgate:" + metaAuditKey})
}
