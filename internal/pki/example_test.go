package pki_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log"
	"time"

	"github.com/hsmgate/hsmgate/internal/pki"
)

// The whole life of the gateway's PKI: a CA, the server's certificate, a
// client's certificate, the two tls.Configs, and the principal the server
// sees. The in-memory keys stand in for HSM-backed crypto.Signers, which
// are used the same way.
func Example() {
	now := time.Now()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			log.Fatal(err)
		}
		return k
	}
	caKey, serverKey, clientKey := newKey(), newKey(), newKey()

	ca, err := pki.NewCA(caKey, "hsmgate CA", 10*365*24*time.Hour, now)
	if err != nil {
		log.Fatal(err)
	}
	server, err := pki.IssueServer(ca, caKey, serverKey.Public(), []string{"kms.example.internal", "10.0.0.5"}, 365*24*time.Hour, now)
	if err != nil {
		log.Fatal(err)
	}
	client, err := pki.IssueClient(ca, caKey, clientKey.Public(), "alice", 90*24*time.Hour, now)
	if err != nil {
		log.Fatal(err)
	}

	// The client's files: its chain and its own key (mode 0600).
	chainPEM := pki.EncodeCertPEM(client)
	keyPEM, err := pki.EncodePrivateKeyPEM(clientKey)
	if err != nil {
		log.Fatal(err)
	}

	roots := x509.NewCertPool()
	roots.AddCert(ca)
	serverCfg := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{server.Raw}, PrivateKey: serverKey, Leaf: server}},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    roots,
	}
	clientCert, err := tls.X509KeyPair(chainPEM, keyPEM)
	if err != nil {
		log.Fatal(err)
	}
	clientCfg := &tls.Config{Certificates: []tls.Certificate{clientCert}, RootCAs: roots, ServerName: "kms.example.internal"}
	_, _ = serverCfg, clientCfg // for tls.Listen and tls.Dial

	// After the handshake, the server asks which principal is calling.
	// (Here the chain is verified by hand; in the server it is
	// conn.ConnectionState().VerifiedChains.)
	chains, err := client.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		log.Fatal(err)
	}
	principal, err := pki.PrincipalFromCert(chains[0][0])
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(client.URIs[0])
	fmt.Println(principal)
	// Output:
	// urn:hsmgate:principal:alice
	// alice
}
