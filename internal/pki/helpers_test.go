package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"io"
	"math/big"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testNow is the issuing time of the tests. It has a fractional second on
// purpose: X.509 stores whole seconds.
var testNow = time.Date(2026, time.March, 1, 12, 0, 0, 123456789, time.UTC)

const (
	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 365 * 24 * time.Hour
)

// hsmSigner is what an HSM-backed key looks like to this package: it
// implements crypto.Signer and nothing else, so it is neither an
// *ecdsa.PrivateKey nor an *rsa.PrivateKey, cannot be marshaled, and has no
// Equal method. It counts its signatures.
type hsmSigner struct {
	key   crypto.Signer
	signs atomic.Int64
}

func (s *hsmSigner) Public() crypto.PublicKey { return s.key.Public() }

func (s *hsmSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	s.signs.Add(1)
	return s.key.Sign(r, digest, opts)
}

var _ crypto.Signer = (*hsmSigner)(nil)

func newECKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// rsaKeys are generated once: RSA key generation is slow, the more so
// under the race detector.
var rsaKeys = sync.OnceValues(func() ([]*rsa.PrivateKey, error) {
	var keys []*rsa.PrivateKey
	for range 3 {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
})

func rsaKey(t testing.TB, i int) *rsa.PrivateKey {
	t.Helper()
	keys, err := rsaKeys()
	if err != nil {
		t.Fatal(err)
	}
	return keys[i]
}

// keyKind selects the key type of a test CA and its leaves.
type keyKind struct {
	name   string
	sigAlg x509.SignatureAlgorithm
	// keys returns HSM-style signers for a CA and a leaf.
	keys func(t testing.TB) (ca, leaf *hsmSigner)
}

var keyKinds = []keyKind{
	{"ECDSA-P256", x509.ECDSAWithSHA256, func(t testing.TB) (*hsmSigner, *hsmSigner) {
		return &hsmSigner{key: newECKey(t)}, &hsmSigner{key: newECKey(t)}
	}},
	{"RSA-2048", x509.SHA256WithRSA, func(t testing.TB) (*hsmSigner, *hsmSigner) {
		return &hsmSigner{key: rsaKey(t, 0)}, &hsmSigner{key: rsaKey(t, 1)}
	}},
}

// testCA makes a CA with an HSM-style ECDSA P-256 signer.
func testCA(t testing.TB, name string) (*x509.Certificate, *hsmSigner) {
	t.Helper()
	s := &hsmSigner{key: newECKey(t)}
	ca, err := NewCA(s, name, caValidity, testNow)
	if err != nil {
		t.Fatal(err)
	}
	return ca, s
}

func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// selfSigned signs an arbitrary template with a fresh key, for tests that
// need certificates this package would not issue.
func selfSigned(t testing.TB, tmpl *x509.Certificate) *x509.Certificate {
	t.Helper()
	k := newECKey(t)
	if tmpl.SerialNumber == nil {
		tmpl.SerialNumber = big.NewInt(1)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
