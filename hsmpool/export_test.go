package hsmpool

import (
	"bytes"
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"testing"

	"github.com/hsmgate/hsmgate/internal/kwp"
	"github.com/hsmgate/hsmgate/internal/testenv"
)

// The exported key, unwrapped in software with the transport key, is the
// key the pool used: it opens, verifies and reproduces what the HSM made.
func TestExportKey(t *testing.T) {
	p, _ := newTestPool(t, 1, nil)
	ctx := context.Background()
	open := func(t *testing.T, k *Key, format string) []byte {
		t.Helper()
		ex, err := p.ExportKey(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if ex.Format != format || len(ex.Transport) != 32 {
			t.Fatalf("format %q, transport %d bytes; want %q, 32", ex.Format, len(ex.Transport), format)
		}
		plain, err := kwp.Unwrap(ex.Transport, ex.Wrapped)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(ex.Wrapped, plain) {
			t.Fatal("the wrapped export contains the key")
		}
		// Each export has its own transport key.
		again, err := p.ExportKey(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(again.Transport, ex.Transport) || bytes.Equal(again.Wrapped, ex.Wrapped) {
			t.Fatal("two exports share a transport key")
		}
		return plain
	}

	t.Run("AES-256", func(t *testing.T) {
		k := mustKey(t, p, "aes", AES256, UsageEncrypt)
		iv, ct, err := p.EncryptGCM(ctx, k, []byte("exported secret"), []byte("aad"))
		if err != nil {
			t.Fatal(err)
		}
		raw := open(t, k, ExportRaw)
		b, _ := aes.NewCipher(raw)
		g, _ := cipher.NewGCM(b)
		got, err := g.Open(nil, iv, ct, []byte("aad"))
		if err != nil || string(got) != "exported secret" {
			t.Fatalf("software AES-GCM with the exported key: %q, %v", got, err)
		}
	})
	t.Run("HMAC-256", func(t *testing.T) {
		k := mustKey(t, p, "mac", HMAC256, UsageMAC)
		want, err := p.GenerateMAC(ctx, k, []byte("message"))
		if err != nil {
			t.Fatal(err)
		}
		m := hmac.New(sha256.New, open(t, k, ExportRaw))
		m.Write([]byte("message"))
		if !hmac.Equal(m.Sum(nil), want) {
			t.Fatal("software HMAC with the exported key differs from the HSM's")
		}
	})
	t.Run("ECC P-256", func(t *testing.T) {
		k := mustKey(t, p, "ec", ECP256, UsageSign)
		priv, err := x509.ParsePKCS8PrivateKey(open(t, k, ExportPKCS8))
		if err != nil {
			t.Fatal(err)
		}
		ec, ok := priv.(*ecdsa.PrivateKey)
		if !ok || !ec.PublicKey.Equal(k.Public()) {
			t.Fatalf("exported %T does not match the key's public half", priv)
		}
		digest := sha256.Sum256([]byte("signed in software"))
		sig, err := ecdsa.SignASN1(rand.Reader, ec, digest[:])
		if err != nil {
			t.Fatal(err)
		}
		if err := p.VerifyDigest(ctx, k, ECDSAWithSHA256, digest[:], sig); err != nil {
			t.Fatalf("the HSM refuses a signature by the exported key: %v", err)
		}
	})
	t.Run("RSA-2048", func(t *testing.T) {
		k := mustKey(t, p, "rsa", RSA2048, UsageEncrypt)
		ct, err := p.EncryptOAEP(ctx, k, crypto.SHA1, []byte("for the recipient"))
		if err != nil {
			t.Fatal(err)
		}
		priv, err := x509.ParsePKCS8PrivateKey(open(t, k, ExportPKCS8))
		if err != nil {
			t.Fatal(err)
		}
		got, err := rsa.DecryptOAEP(sha1.New(), nil, priv.(*rsa.PrivateKey), ct, nil)
		if err != nil || string(got) != "for the recipient" {
			t.Fatalf("software RSA-OAEP with the exported key: %q, %v", got, err)
		}
	})
	t.Run("a key of another domain", func(t *testing.T) {
		g, err := p.GenerateKey(ctx, AES256, UsageEncrypt)
		if err != nil {
			t.Fatal(err)
		}
		b, err := ParseBlob(g.Blob)
		if err != nil {
			t.Fatal(err)
		}
		b.KCV[0] ^= 1
		k, err := NewKey("foreign", 1, b.Marshal(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.ExportKey(ctx, k); !errors.Is(err, ErrInvalidKeyBlob) {
			t.Fatalf("exporting a key of another domain: %v, want ErrInvalidKeyBlob", err)
		}
	})
}

// KCVOf computes in software the check value the slots compute in the
// token.
func TestKCVOf(t *testing.T) {
	env := newUnprovisionedPool(t)
	dk, _ := NewDomainKeyMaterial()
	if err := env.ProvisionDomainKey(context.Background(), dk); err != nil {
		t.Fatal(err)
	}
	kcv, err := KCVOf(dk)
	if err != nil {
		t.Fatal(err)
	}
	if kcv.String() != env.DomainKeyCheck() {
		t.Fatalf("KCVOf = %s, the slots say %s", kcv, env.DomainKeyCheck())
	}
	dk[0] ^= 1
	if other, _ := KCVOf(dk); other == kcv {
		t.Fatal("different material, same check value")
	}
}

// newUnprovisionedPool opens a pool on a fresh token without a domain key.
func newUnprovisionedPool(t *testing.T) *Pool {
	t.Helper()
	env := testenv.NewSoftHSM(t, 1)
	p, err := Open(context.Background(), Options{Modules: []ModuleOptions{{Path: env.Module, PIN: PINSource{File: env.PINFile}}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}
