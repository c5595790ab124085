package pki

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// handshake runs a TLS handshake over a loopback TCP connection (not
// net.Pipe: its unbuffered writes deadlock when both sides send at once, as
// a TLS 1.2 server rejecting a client's flight does). On success the server
// answers with the principal of the verified client certificate, which
// handshake returns; any failure on either side is returned as an error.
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) (string, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cconn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sconn, err := ln.Accept()
	if err != nil {
		cconn.Close()
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	sconn.SetDeadline(deadline)
	cconn.SetDeadline(deadline)

	serverErr := make(chan error, 1)
	go func() {
		srv := tls.Server(sconn, serverCfg)
		defer srv.Close()
		if err := srv.Handshake(); err != nil {
			serverErr <- err
			return
		}
		st := srv.ConnectionState()
		if len(st.VerifiedChains) == 0 {
			serverErr <- errors.New("server: no verified chain")
			return
		}
		p, err := PrincipalFromCert(st.VerifiedChains[0][0])
		if err != nil {
			serverErr <- err
			return
		}
		_, err = srv.Write([]byte(p))
		serverErr <- err
	}()

	cli := tls.Client(cconn, clientCfg)
	err = cli.Handshake()
	var reply []byte
	if err == nil {
		// In TLS 1.3 the client finishes before the server has checked its
		// certificate; a rejection arrives as an alert on the first read.
		reply, err = io.ReadAll(cli)
	}
	cli.Close()
	if serr := <-serverErr; serr != nil {
		return "", errors.Join(err, serr)
	}
	return string(reply), err
}

func TestTLSHandshake(t *testing.T) {
	for _, kk := range keyKinds {
		t.Run(kk.name, func(t *testing.T) {
			caSigner, serverSigner := kk.keys(t)
			ca, err := NewCA(caSigner, "hsmgate CA", caValidity, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			serverCert, err := IssueServer(ca, caSigner, serverSigner.Public(), []string{"gw.example.test", "127.0.0.1"}, time.Hour, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			// The server's TLS key is an HSM-style signer too.
			server := tls.Certificate{Certificate: [][]byte{serverCert.Raw}, PrivateKey: serverSigner, Leaf: serverCert}

			clientKey := newECKey(t)
			clientCert, err := IssueClient(ca, caSigner, clientKey.Public(), "alice", time.Hour, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			alice := &tls.Certificate{Certificate: [][]byte{clientCert.Raw}, PrivateKey: clientKey}

			// The same principal, from a CA with the same name but
			// another key.
			otherCA, otherSigner := testCA(t, "hsmgate CA")
			otherKey := newECKey(t)
			otherCert, err := IssueClient(otherCA, otherSigner, otherKey.Public(), "alice", time.Hour, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			impostor := &tls.Certificate{Certificate: [][]byte{otherCert.Raw}, PrivateKey: otherKey}

			// The server's own certificate, presented as a client one.
			asClient := &tls.Certificate{Certificate: [][]byte{serverCert.Raw}, PrivateKey: serverSigner}

			serverCfg := &tls.Config{
				Certificates: []tls.Certificate{server},
				ClientAuth:   tls.RequireAndVerifyClientCert,
				ClientCAs:    pool(ca),
				MinVersion:   tls.VersionTLS12,
			}
			tests := []struct {
				name       string
				serverName string
				client     *tls.Certificate
				maxVersion uint16
				wantErr    bool
			}{
				{"TLS 1.3", "gw.example.test", alice, tls.VersionTLS13, false},
				{"TLS 1.2", "gw.example.test", alice, tls.VersionTLS12, false},
				{"IP address", "127.0.0.1", alice, tls.VersionTLS13, false},
				{"client from another CA", "gw.example.test", impostor, tls.VersionTLS13, true},
				{"client from another CA, TLS 1.2", "gw.example.test", impostor, tls.VersionTLS12, true},
				{"no client certificate", "gw.example.test", nil, tls.VersionTLS13, true},
				{"server certificate as client", "gw.example.test", asClient, tls.VersionTLS13, true},
				{"wrong server name", "evil.example.test", alice, tls.VersionTLS13, true},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					clientCfg := &tls.Config{
						RootCAs:    pool(ca),
						ServerName: tt.serverName,
						MaxVersion: tt.maxVersion,
					}
					if tt.client != nil {
						clientCfg.Certificates = []tls.Certificate{*tt.client}
					}
					before := serverSigner.signs.Load()
					principal, err := handshake(t, serverCfg, clientCfg)
					if tt.wantErr {
						if err == nil {
							t.Fatalf("handshake succeeded as %q, want an error", principal)
						}
						t.Log(err)
						return
					}
					if err != nil {
						t.Fatal(err)
					}
					if principal != "alice" {
						t.Errorf("server saw principal %q, want alice", principal)
					}
					if serverSigner.signs.Load() == before {
						t.Error("the server's HSM-style signer was not used")
					}
				})
			}
		})
	}
}
