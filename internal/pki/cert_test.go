package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestNewCA(t *testing.T) {
	for _, kk := range keyKinds {
		t.Run(kk.name, func(t *testing.T) {
			signer, _ := kk.keys(t)
			ca, err := NewCA(signer, "hsmgate test CA", caValidity, testNow)
			if err != nil {
				t.Fatal(err)
			}
			if _, isKey := crypto.Signer(signer).(*ecdsa.PrivateKey); isKey {
				t.Fatal("test signer must not be an *ecdsa.PrivateKey")
			}
			if n := signer.signs.Load(); n != 1 {
				t.Errorf("signer used %d times, want 1", n)
			}
			if ca.SignatureAlgorithm != kk.sigAlg {
				t.Errorf("SignatureAlgorithm = %v, want %v", ca.SignatureAlgorithm, kk.sigAlg)
			}
			if err := ca.CheckSignatureFrom(ca); err != nil {
				t.Errorf("self-signature: %v", err)
			}
			if !ca.BasicConstraintsValid || !ca.IsCA || ca.MaxPathLen != 0 || !ca.MaxPathLenZero {
				t.Errorf("basic constraints: valid=%v isCA=%v maxPathLen=%d zero=%v, want a CA with MaxPathLen 0",
					ca.BasicConstraintsValid, ca.IsCA, ca.MaxPathLen, ca.MaxPathLenZero)
			}
			if want := x509.KeyUsageCertSign | x509.KeyUsageCRLSign; ca.KeyUsage != want {
				t.Errorf("KeyUsage = %b, want %b", ca.KeyUsage, want)
			}
			if len(ca.ExtKeyUsage) != 0 {
				t.Errorf("ExtKeyUsage = %v, want none", ca.ExtKeyUsage)
			}
			if ca.Subject.CommonName != "hsmgate test CA" || ca.Issuer.CommonName != "hsmgate test CA" {
				t.Errorf("subject %q issuer %q", ca.Subject, ca.Issuer)
			}
			if len(ca.SubjectKeyId) != 20 {
				t.Errorf("SubjectKeyId = %x, want 20 bytes", ca.SubjectKeyId)
			}
			checkSerial(t, ca)
			checkValidity(t, ca, caValidity)
		})
	}
}

func checkSerial(t *testing.T, c *x509.Certificate) {
	t.Helper()
	if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
		t.Errorf("serial %x: want positive, at most 128 bits", c.SerialNumber)
	}
	// 128 random bits have fewer than 100 significant ones with
	// probability 2^-28.
	if c.SerialNumber.BitLen() < 100 {
		t.Errorf("serial %x: only %d bits, not random", c.SerialNumber, c.SerialNumber.BitLen())
	}
}

func checkValidity(t *testing.T, c *x509.Certificate, validity time.Duration) {
	t.Helper()
	wantBefore := testNow.Add(-5 * time.Minute).Truncate(time.Second)
	wantAfter := testNow.Add(validity).Truncate(time.Second)
	if !c.NotBefore.Equal(wantBefore) || !c.NotAfter.Equal(wantAfter) {
		t.Errorf("validity [%s, %s], want [%s, %s]", c.NotBefore, c.NotAfter, wantBefore, wantAfter)
	}
}

func TestNewCASerialsDiffer(t *testing.T) {
	signer := &hsmSigner{key: newECKey(t)}
	a, err := NewCA(signer, "CA", caValidity, testNow)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewCA(signer, "CA", caValidity, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if a.SerialNumber.Cmp(b.SerialNumber) == 0 {
		t.Error("two CAs got the same serial number")
	}
	// The key identifier depends on the key alone, so a CA certificate
	// re-issued for the same HSM key still links to its leaves.
	if !bytes.Equal(a.SubjectKeyId, b.SubjectKeyId) {
		t.Errorf("same key, different SubjectKeyId: %x, %x", a.SubjectKeyId, b.SubjectKeyId)
	}
	c, err := NewCA(&hsmSigner{key: newECKey(t)}, "CA", caValidity, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a.SubjectKeyId, c.SubjectKeyId) {
		t.Error("different keys, same SubjectKeyId")
	}
}

// oddSigner has a public key type x509 cannot put in a certificate.
type oddSigner struct{}

func (oddSigner) Public() crypto.PublicKey                                  { return "not a key" }
func (oddSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) { return nil, nil }

// badSigner returns garbage signatures, like a misbehaving module.
type badSigner struct{ hsmSigner }

func (s *badSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return []byte{0x30, 0x00}, nil
}

// failingSigner fails, like a module that is down.
type failingSigner struct{ hsmSigner }

func (s *failingSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("CKR_DEVICE_ERROR")
}

func TestNewCAErrors(t *testing.T) {
	good := &hsmSigner{key: newECKey(t)}
	tests := []struct {
		name     string
		signer   crypto.Signer
		cn       string
		validity time.Duration
		now      time.Time
		wantErr  string // "" for success
	}{
		{"ok", good, "CA", time.Hour, testNow, ""},
		{"ok 64-byte name", good, strings.Repeat("c", 64), time.Hour, testNow, ""},
		{"nil signer", nil, "CA", time.Hour, testNow, "nil signer"},
		{"empty name", good, "", time.Hour, testNow, "common name"},
		{"65-byte name", good, strings.Repeat("c", 65), time.Hour, testNow, "common name"},
		{"zero validity", good, "CA", 0, testNow, "validity must be positive"},
		{"negative validity", good, "CA", -time.Hour, testNow, "validity must be positive"},
		{"zero now", good, "CA", time.Hour, time.Time{}, "time is zero"},
		{"unsupported key", oddSigner{}, "CA", time.Hour, testNow, "pki: NewCA"},
		{"bad signature", &badSigner{hsmSigner{key: newECKey(t)}}, "CA", time.Hour, testNow, "signature"},
		{"signer fails", &failingSigner{hsmSigner{key: newECKey(t)}}, "CA", time.Hour, testNow, "CKR_DEVICE_ERROR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca, err := NewCA(tt.signer, tt.cn, tt.validity, tt.now)
			checkErr(t, err, tt.wantErr)
			if err == nil && ca == nil {
				t.Error("nil certificate without error")
			}
		})
	}
}

func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case want != "" && err == nil:
		t.Fatalf("no error, want one containing %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Fatalf("error %q does not contain %q", err, want)
	case err != nil:
		t.Log(err)
	}
}

func TestServerChain(t *testing.T) {
	for _, kk := range keyKinds {
		t.Run(kk.name, func(t *testing.T) {
			caSigner, leafSigner := kk.keys(t)
			ca, err := NewCA(caSigner, "hsmgate CA", caValidity, testNow)
			if err != nil {
				t.Fatal(err)
			}
			hosts := []string{"gw.example.test", "127.0.0.1", "::1", "*.kms.example.test"}
			leaf, err := IssueServer(ca, caSigner, leafSigner.Public(), hosts, leafValidity, testNow)
			if err != nil {
				t.Fatal(err)
			}
			if leaf.SignatureAlgorithm != kk.sigAlg {
				t.Errorf("SignatureAlgorithm = %v, want %v", leaf.SignatureAlgorithm, kk.sigAlg)
			}
			if !bytes.Equal(leaf.AuthorityKeyId, ca.SubjectKeyId) {
				t.Errorf("AuthorityKeyId %x != CA SubjectKeyId %x", leaf.AuthorityKeyId, ca.SubjectKeyId)
			}
			if leaf.IsCA || !leaf.BasicConstraintsValid {
				t.Error("leaf must have basic constraints with IsCA false")
			}
			if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
				t.Errorf("ExtKeyUsage = %v, want [ServerAuth]", leaf.ExtKeyUsage)
			}
			if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 || leaf.KeyUsage&x509.KeyUsageCertSign != 0 {
				t.Errorf("KeyUsage = %b", leaf.KeyUsage)
			}
			if leaf.Subject.CommonName != "gw.example.test" {
				t.Errorf("CN = %q, want the first host", leaf.Subject.CommonName)
			}
			if !slices.Equal(leaf.DNSNames, []string{"gw.example.test", "*.kms.example.test"}) {
				t.Errorf("DNSNames = %q", leaf.DNSNames)
			}
			if len(leaf.IPAddresses) != 2 || !leaf.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) || !leaf.IPAddresses[1].Equal(net.IPv6loopback) {
				t.Errorf("IPAddresses = %v", leaf.IPAddresses)
			}
			if len(leaf.URIs) != 0 {
				t.Errorf("URIs = %v, want none", leaf.URIs)
			}
			checkSerial(t, leaf)
			checkValidity(t, leaf, leafValidity)

			other, _ := testCA(t, "hsmgate CA") // same name, different key
			verifyAt := testNow.Add(time.Hour)
			tests := []struct {
				name    string
				host    string
				roots   *x509.CertPool
				usage   x509.ExtKeyUsage
				wantErr bool
			}{
				{"DNS name", "gw.example.test", pool(ca), x509.ExtKeyUsageServerAuth, false},
				{"DNS name, other case", "GW.Example.Test", pool(ca), x509.ExtKeyUsageServerAuth, false},
				{"wildcard", "eu-1.kms.example.test", pool(ca), x509.ExtKeyUsageServerAuth, false},
				{"IPv4", "127.0.0.1", pool(ca), x509.ExtKeyUsageServerAuth, false},
				{"IPv6", "::1", pool(ca), x509.ExtKeyUsageServerAuth, false},
				{"other DNS name", "evil.example.test", pool(ca), x509.ExtKeyUsageServerAuth, true},
				{"wildcard is one label", "a.b.kms.example.test", pool(ca), x509.ExtKeyUsageServerAuth, true},
				{"other IP", "127.0.0.2", pool(ca), x509.ExtKeyUsageServerAuth, true},
				{"client auth", "gw.example.test", pool(ca), x509.ExtKeyUsageClientAuth, true},
				{"other CA with the same name", "gw.example.test", pool(other), x509.ExtKeyUsageServerAuth, true},
				{"both CAs", "gw.example.test", pool(other, ca), x509.ExtKeyUsageServerAuth, false},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					_, err := leaf.Verify(x509.VerifyOptions{
						DNSName:     tt.host,
						Roots:       tt.roots,
						CurrentTime: verifyAt,
						KeyUsages:   []x509.ExtKeyUsage{tt.usage},
					})
					if (err != nil) != tt.wantErr {
						t.Errorf("Verify(%q) error = %v, want error %v", tt.host, err, tt.wantErr)
					}
				})
			}
		})
	}
}

func TestClientChain(t *testing.T) {
	for _, kk := range keyKinds {
		t.Run(kk.name, func(t *testing.T) {
			caSigner, leafSigner := kk.keys(t)
			ca, err := NewCA(caSigner, "hsmgate CA", caValidity, testNow)
			if err != nil {
				t.Fatal(err)
			}
			leaf, err := IssueClient(ca, caSigner, leafSigner.Public(), "alice@example.com", leafValidity, testNow)
			if err != nil {
				t.Fatal(err)
			}
			if leaf.SignatureAlgorithm != kk.sigAlg {
				t.Errorf("SignatureAlgorithm = %v, want %v", leaf.SignatureAlgorithm, kk.sigAlg)
			}
			if !bytes.Equal(leaf.AuthorityKeyId, ca.SubjectKeyId) {
				t.Errorf("AuthorityKeyId %x != CA SubjectKeyId %x", leaf.AuthorityKeyId, ca.SubjectKeyId)
			}
			if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
				t.Errorf("ExtKeyUsage = %v, want [ClientAuth]", leaf.ExtKeyUsage)
			}
			if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
				t.Errorf("KeyUsage = %b, want DigitalSignature", leaf.KeyUsage)
			}
			if leaf.Subject.CommonName != "alice@example.com" {
				t.Errorf("CN = %q", leaf.Subject.CommonName)
			}
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "urn:hsmgate:principal:alice@example.com" {
				t.Errorf("URIs = %v", leaf.URIs)
			}
			if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
				t.Error("client certificate has SANs besides the principal URI")
			}
			if p, err := PrincipalFromCert(leaf); err != nil || p != "alice@example.com" {
				t.Errorf("PrincipalFromCert = %q, %v", p, err)
			}
			checkSerial(t, leaf)
			checkValidity(t, leaf, leafValidity)

			other, _ := testCA(t, "hsmgate CA")
			tests := []struct {
				name    string
				roots   *x509.CertPool
				usage   x509.ExtKeyUsage
				at      time.Time
				wantErr bool
			}{
				{"client auth", pool(ca), x509.ExtKeyUsageClientAuth, testNow, false},
				{"server auth", pool(ca), x509.ExtKeyUsageServerAuth, testNow, true},
				{"other CA", pool(other), x509.ExtKeyUsageClientAuth, testNow, true},
				{"within clock skew", pool(ca), x509.ExtKeyUsageClientAuth, testNow.Add(-4 * time.Minute), false},
				{"before clock skew", pool(ca), x509.ExtKeyUsageClientAuth, testNow.Add(-6 * time.Minute), true},
				{"last second", pool(ca), x509.ExtKeyUsageClientAuth, leaf.NotAfter, false},
				{"expired", pool(ca), x509.ExtKeyUsageClientAuth, leaf.NotAfter.Add(time.Second), true},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					_, err := leaf.Verify(x509.VerifyOptions{Roots: tt.roots, CurrentTime: tt.at, KeyUsages: []x509.ExtKeyUsage{tt.usage}})
					if (err != nil) != tt.wantErr {
						t.Errorf("Verify error = %v, want error %v", err, tt.wantErr)
					}
				})
			}
		})
	}
}

// TestLeafNamedLikeCA checks that a leaf whose subject equals the CA's,
// which x509.CreateCertificate would treat as self-issued, still carries
// the CA's key identifier and verifies.
func TestLeafNamedLikeCA(t *testing.T) {
	ca, caSigner := testCA(t, "gw.example.test")
	leaf, err := IssueServer(ca, caSigner, newECKey(t).Public(), []string{"gw.example.test"}, leafValidity, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(leaf.AuthorityKeyId, ca.SubjectKeyId) {
		t.Errorf("AuthorityKeyId %x != CA SubjectKeyId %x", leaf.AuthorityKeyId, ca.SubjectKeyId)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "gw.example.test", Roots: pool(ca), CurrentTime: testNow}); err != nil {
		t.Error(err)
	}
}

func TestIssueErrors(t *testing.T) {
	ca, caSigner := testCA(t, "CA")
	pub := newECKey(t).Public()
	server, err := IssueServer(ca, caSigner, pub, []string{"gw.example.test"}, leafValidity, testNow)
	if err != nil {
		t.Fatal(err)
	}
	serverSigner := &hsmSigner{key: newECKey(t)} // pretend it is server's key
	otherSigner := &hsmSigner{key: newECKey(t)}
	noCertSign := selfSigned(t, &x509.Certificate{
		BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageCRLSign,
		NotBefore: testNow.Add(-time.Hour), NotAfter: testNow.Add(caValidity),
	})
	// The whole CA lifetime, from the same issuing time, is allowed: the
	// fractional second of testNow must not push the leaf past the CA.
	type call func(ca *x509.Certificate, s crypto.Signer) (*x509.Certificate, error)
	serverCall := func(hosts []string, validity time.Duration) call {
		return func(ca *x509.Certificate, s crypto.Signer) (*x509.Certificate, error) {
			return IssueServer(ca, s, pub, hosts, validity, testNow)
		}
	}
	clientCall := func(name string, validity time.Duration) call {
		return func(ca *x509.Certificate, s crypto.Signer) (*x509.Certificate, error) {
			return IssueClient(ca, s, pub, name, validity, testNow)
		}
	}
	tests := []struct {
		name    string
		ca      *x509.Certificate
		signer  crypto.Signer
		call    call
		wantErr string
	}{
		{"server ok", ca, caSigner, serverCall([]string{"a.example.test"}, leafValidity), ""},
		{"server for the CA's whole life", ca, caSigner, serverCall([]string{"a.example.test"}, caValidity), ""},
		{"server outlives CA", ca, caSigner, serverCall([]string{"a.example.test"}, caValidity+time.Second), "outlive CA"},
		{"client ok", ca, caSigner, clientCall("alice", leafValidity), ""},
		{"client for the CA's whole life", ca, caSigner, clientCall("alice", caValidity), ""},
		{"client outlives CA", ca, caSigner, clientCall("alice", caValidity+time.Second), "outlive CA"},
		{"client invalid principal", ca, caSigner, clientCall("alice smith", leafValidity), "not allowed"},
		{"client empty principal", ca, caSigner, clientCall("", leafValidity), "empty principal"},
		{"server no hosts", ca, caSigner, serverCall(nil, leafValidity), "no hosts"},
		{"server bad host", ca, caSigner, serverCall([]string{"a.example.test", "bad host"}, leafValidity), `"bad host"`},
		{"server zone", ca, caSigner, serverCall([]string{"fe80::1%eth0"}, leafValidity), "zone"},
		{"server brackets", ca, caSigner, serverCall([]string{"[::1]"}, leafValidity), "not allowed"},
		{"server URL", ca, caSigner, serverCall([]string{"https://gw.example.test"}, leafValidity), "not allowed"},
		{"server mistyped IP", ca, caSigner, serverCall([]string{"127.0.0.256"}, leafValidity), "not a valid IP"},
		{"zero validity", ca, caSigner, serverCall([]string{"a.example.test"}, 0), "validity must be positive"},
		{"nil CA", nil, caSigner, clientCall("alice", leafValidity), "nil CA certificate"},
		{"nil signer", ca, nil, clientCall("alice", leafValidity), "nil CA signer"},
		{"leaf as CA", server, serverSigner, clientCall("alice", leafValidity), "not a CA"},
		{"CA without CertSign", noCertSign, otherSigner, clientCall("alice", leafValidity), "CertSign"},
		{"signer of another key", ca, otherSigner, clientCall("alice", leafValidity), "does not match CA"},
		{"signer fails", ca, &failingSigner{hsmSigner{key: caSigner.key}}, clientCall("alice", leafValidity), "CKR_DEVICE_ERROR"},
		{"bad signature", ca, &badSigner{hsmSigner{key: caSigner.key}}, clientCall("alice", leafValidity), "signature"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.call(tt.ca, tt.signer)
			checkErr(t, err, tt.wantErr)
			if err != nil {
				return
			}
			if _, err := c.Verify(x509.VerifyOptions{Roots: pool(ca), CurrentTime: testNow, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				t.Errorf("issued certificate does not verify: %v", err)
			}
		})
	}
	t.Run("nil public key", func(t *testing.T) {
		_, err := IssueClient(ca, caSigner, nil, "alice", leafValidity, testNow)
		checkErr(t, err, "nil public key")
	})
}

func TestServerCommonName(t *testing.T) {
	ca, caSigner := testCA(t, "CA")
	long := strings.Repeat("a", 60) + ".example.test" // 73 bytes: a valid name, too long for a CN
	tests := []struct {
		hosts  []string
		wantCN string
	}{
		{[]string{"gw.example.test", "127.0.0.1"}, "gw.example.test"},
		{[]string{"127.0.0.1", "gw.example.test"}, "127.0.0.1"},
		{[]string{long, "gw.example.test"}, ""},
	}
	for _, tt := range tests {
		c, err := IssueServer(ca, caSigner, newECKey(t).Public(), tt.hosts, leafValidity, testNow)
		if err != nil {
			t.Fatal(err)
		}
		if c.Subject.CommonName != tt.wantCN {
			t.Errorf("hosts %q: CN = %q, want %q", tt.hosts, c.Subject.CommonName, tt.wantCN)
		}
	}
}

func TestValidDNSName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"localhost", true},
		{"gw.example.test", true},
		{"GW-1.Example.test", true},
		{"_kms._tcp.example.test", true},
		{"*.example.test", true},
		{"1.example.test", true},
		{strings.Repeat("a", 63) + ".test", true},
		{strings.Repeat("a.", 126) + "a", true}, // 253 bytes
		{"", false},
		{strings.Repeat("a.", 126) + "ab", false}, // 254 bytes
		{strings.Repeat("a", 64) + ".test", false},
		{"example.test.", false},
		{".example.test", false},
		{"a..test", false},
		{"-a.test", false},
		{"a-.test", false},
		{"*", false},
		{"a.*.test", false},
		{"*a.test", false},
		{"**.test", false},
		{"a b.test", false},
		{"a/b", false},
		{"a:443", false},
		{"ex\u00e4mple.test", false},
		{"10.0.0.1.2", false},
		{"1.2.3", false},
	}
	for _, tt := range tests {
		if err := validDNSName(tt.name); (err == nil) != tt.ok {
			t.Errorf("validDNSName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}
