package hsmpool

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strings"
	"testing"
	"time"

	"github.com/miekg/pkcs11"
)

// One pool of two SoftHSM slots and one wrapping key pair serve every
// import test: an RSA key generation is the slow part.
func TestImport(t *testing.T) {
	p, _ := newTestPool(t, 2, nil)
	ctx := context.Background()
	g, err := p.GenerateKey(ctx, RSA2048, UsageImportWrap)
	if err != nil {
		t.Fatal(err)
	}
	wk, err := NewKey("wk", 1, g.Blob, g.Public)
	if err != nil {
		t.Fatal(err)
	}
	pub := wk.Public().(*rsa.PublicKey)
	if sup := p.Capabilities().Import[RSAESOAEPSHA1]; !sup.Secret {
		t.Fatalf("RSAES_OAEP_SHA_1 not detected (%+v): every module the pool is tested on has it", p.Capabilities().Import)
	}
	t.Logf("detected import algorithms: %+v", p.Capabilities().Import)

	t.Run("wrapping key can only unwrap", func(t *testing.T) { testWrappingKey(t, p, wk, g) })
	t.Run("AES-256", func(t *testing.T) { testImportAES(t, p, wk, pub) })
	t.Run("HMAC", func(t *testing.T) { testImportHMAC(t, p, wk, pub) })
	t.Run("EC private key", func(t *testing.T) { testImportEC(t, p, wk, pub) })
	t.Run("data errors", func(t *testing.T) { testImportDataErrors(t, p, wk, pub) })
	t.Run("unsupported", func(t *testing.T) { testImportUnsupported(t, p, wk, pub) })
	t.Run("input errors", func(t *testing.T) { testImportInputErrors(t, p, wk, pub) })
	t.Run("RFC 5649 wrap matches the HSM's", func(t *testing.T) { testKeyWrapPadAgainstHSM(t, p) })
	if p.Healthy() != 2 {
		t.Fatalf("imports left a slot unhealthy: %+v", p.Status())
	}
	for _, st := range p.Status() {
		if st.Errors["session"] != 0 || st.Errors["device"] != 0 {
			t.Errorf("slot %s had session or device errors: %+v", st.Name, st.Errors)
		}
	}
}

func testWrappingKey(t *testing.T, p *Pool, wk *Key, g *GeneratedKey) {
	if _, err := x509.ParsePKIXPublicKey(g.Public); err != nil {
		t.Fatalf("public key is not DER SPKI: %v", err)
	}
	if wk.Spec() != RSA2048 || wk.Usage() != UsageImportWrap {
		t.Fatalf("blob says %s %s", wk.Spec(), wk.Usage())
	}
	// Every slot's copy: sensitive, not extractable, unwrap only.
	for _, s := range p.slots {
		e, perr := s.keyObject(time.Now().Add(5*time.Second), wk, false)
		if perr != nil {
			t.Fatal(perr)
		}
		var attrs []*pkcs11.Attribute
		err := s.onControl(time.Now().Add(5*time.Second), opOther, "read attributes", func(c *control) (err error) {
			attrs, err = s.mod.ck.GetAttributeValue(c.h, e.obj, []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, nil), pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, nil),
				pkcs11.NewAttribute(pkcs11.CKA_SIGN, nil), pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil),
				pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil), pkcs11.NewAttribute(pkcs11.CKA_DERIVE, nil),
			})
			return err
		})
		s.cache.release(e)
		if err != nil {
			t.Fatal(err)
		}
		want := []bool{true, false, false, true, false, false}
		for i, a := range attrs {
			if got := len(a.Value) == 1 && a.Value[0] == 1; got != want[i] {
				t.Errorf("slot %s: attribute %#x = %v, want %v", s.name, a.Type, got, want[i])
			}
		}
	}
	// The HSM itself refuses to decrypt with it.
	ct, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, wk.Public().(*rsa.PublicKey), []byte("secret"), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = useKey(p, context.Background(), wk, false, opDecrypt, "decrypt", func(ck Cryptoki, h pkcs11.SessionHandle, obj pkcs11.ObjectHandle) ([]byte, error) {
		if err := ck.DecryptInit(h, []*pkcs11.Mechanism{oaepMechanism(pkcs11.CKM_SHA_1)}, obj); err != nil {
			return nil, err
		}
		return ck.Decrypt(h, ct)
	})
	var pe *Error
	if !errors.As(err, &pe) || pe.RV != pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED {
		t.Errorf("decrypt with the wrapping key: %v, want CKR_KEY_FUNCTION_NOT_PERMITTED", err)
	}
	if _, err := p.DecryptOAEP(context.Background(), wk, 0, ct); !errors.Is(err, ErrInvalidInput) && !errors.Is(err, ErrUnsupported) {
		t.Errorf("DecryptOAEP with the wrapping key: %v", err)
	}
	if _, err := p.GenerateKey(context.Background(), ECP256, UsageImportWrap); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("EC wrapping key: %v", err)
	}
}

func testImportAES(t *testing.T, p *Pool, wk *Key, pub *rsa.PublicKey) {
	ctx := context.Background()
	material := random(t, 32)
	imp := func(m []byte) (*Key, []byte, []byte) {
		t.Helper()
		wrapped, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, pub, m, nil)
		if err != nil {
			t.Fatal(err)
		}
		g, kcv, err := p.ImportKey(ctx, wk, RSAESOAEPSHA1, wrapped, AES256, UsageEncrypt)
		if err != nil {
			t.Fatal(err)
		}
		if g.Public != nil {
			t.Errorf("an AES key came with a public key")
		}
		k, err := NewKey("imported-aes", 1, g.Blob, nil)
		if err != nil {
			t.Fatal(err)
		}
		return k, kcv, g.Blob
	}
	k, kcv, blob := imp(material)
	noPlaintext(t, material, blob, kcv)

	// The pool encrypts with the very material: Go decrypts, and back.
	gcm := goGCM(t, material)
	iv, ct, err := p.EncryptGCM(ctx, k, []byte("attack at dawn"), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := gcm.Open(nil, iv, ct, []byte("aad")); err != nil || string(pt) != "attack at dawn" {
		t.Fatalf("Go can't decrypt the pool's ciphertext under the imported key: %q %v", pt, err)
	}
	nonce := random(t, 12)
	ct = gcm.Seal(nil, nonce, []byte("retreat at dusk"), []byte("more aad"))
	if pt, err := p.DecryptGCM(ctx, k, nonce, ct, []byte("more aad")); err != nil || string(pt) != "retreat at dusk" {
		t.Fatalf("the pool can't decrypt Go's ciphertext under the imported key: %q %v", pt, err)
	}

	// The check value is the documented one, stable across imports of the
	// same material and different for other material.
	mac := aesCMAC(t, material, importKCVMessage)
	if want := goKCV(mac); !bytes.Equal(kcv, want) {
		t.Errorf("KCV %x, want SHA-256(M || AES-CMAC(K, M))[:16] = %x", kcv, want)
	}
	_, kcv2, blob2 := imp(material)
	if !bytes.Equal(kcv, kcv2) {
		t.Errorf("KCV of the same material imported twice differs: %x %x", kcv, kcv2)
	}
	if bytes.Equal(blob, blob2) {
		t.Log("note: the module wraps deterministically") // RFC 5649 is deterministic
	}
	_, kcv3, _ := imp(random(t, 32))
	if bytes.Equal(kcv, kcv3) {
		t.Errorf("KCV of other material is the same: %x", kcv)
	}
	// Every slot can use the imported key.
	for _, s := range p.slots {
		e, perr := s.keyObject(time.Now().Add(5*time.Second), k, false)
		if perr != nil {
			t.Fatalf("slot %s can't unwrap the imported key's blob: %v", s.name, perr)
		}
		s.cache.release(e)
	}
}

func testImportHMAC(t *testing.T, p *Pool, wk *Key, pub *rsa.PublicKey) {
	ctx := context.Background()
	cases := []struct {
		spec KeySpec
		n    int
		h    func() hash.Hash
	}{
		{HMAC256, 32, sha256.New}, {HMAC256, 64, sha256.New},
		{HMAC224, 28, sha256.New224}, {HMAC384, 100, sha512.New384}, {HMAC512, 128, sha512.New},
	}
	msg := []byte("the quick brown fox")
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s-%dB", c.spec, c.n), func(t *testing.T) {
			material := random(t, c.n)
			wrapped, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, pub, material, nil)
			if err != nil {
				t.Fatal(err)
			}
			g, kcv, err := p.ImportKey(ctx, wk, RSAESOAEPSHA1, wrapped, c.spec, UsageMAC)
			if err != nil {
				t.Fatal(err)
			}
			noPlaintext(t, material, g.Blob, kcv)
			k, err := NewKey("imported-hmac", 1, g.Blob, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.GenerateMAC(ctx, k, msg)
			if err != nil {
				t.Fatal(err)
			}
			m := hmac.New(c.h, material)
			m.Write(msg)
			want := m.Sum(nil)
			if !bytes.Equal(got, want) {
				t.Fatalf("the pool's HMAC differs from Go's with the imported key")
			}
			if err := p.VerifyMAC(ctx, k, msg, want); err != nil {
				t.Fatalf("the pool rejects Go's HMAC: %v", err)
			}
			m = hmac.New(c.h, material)
			m.Write(importKCVMessage)
			if want := goKCV(m.Sum(nil)); !bytes.Equal(kcv, want) {
				t.Errorf("KCV %x, want SHA-256(M || HMAC(K, M))[:16] = %x", kcv, want)
			}
			wrapped, _ = rsa.EncryptOAEP(sha1.New(), rand.Reader, pub, material, nil)
			if _, kcv2, err := p.ImportKey(ctx, wk, RSAESOAEPSHA1, wrapped, c.spec, UsageMAC); err != nil || !bytes.Equal(kcv, kcv2) {
				t.Errorf("re-import: KCV %x vs %x, %v", kcv2, kcv, err)
			}
		})
	}
}

func testImportEC(t *testing.T, p *Pool, wk *Key, pub *rsa.PublicKey) {
	ctx := context.Background()
	alg := RSAESOAEPSHA1
	if !p.Capabilities().Import[alg].Private {
		t.Fatalf("RSAES_OAEP_SHA_1 private-key import not detected: SoftHSM 2.6.1, the test module, can do it")
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p8, err := x509.MarshalPKCS8PrivateKey(ek)
	if err != nil {
		t.Fatal(err)
	}
	wrapped, err := WrapKeyMaterial(pub, alg, p8)
	if err != nil {
		t.Fatal(err)
	}
	g, kcv, err := p.ImportKey(ctx, wk, alg, wrapped, ECP256, UsageSign)
	if err != nil {
		t.Fatal(err)
	}
	wantPub, _ := x509.MarshalPKIXPublicKey(&ek.PublicKey)
	if !bytes.Equal(g.Public, wantPub) {
		t.Fatalf("public key of the imported EC key is not the key's")
	}
	if want := goKCV(wantPub); !bytes.Equal(kcv, want) {
		t.Errorf("KCV %x, want SHA-256(M || SPKI)[:16] = %x", kcv, want)
	}
	noPlaintext(t, ek.D.FillBytes(make([]byte, 32)), g.Blob, kcv)
	noPlaintext(t, p8, g.Blob, kcv)
	k, err := NewKey("imported-ec", 1, g.Blob, g.Public)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("signed by an imported key")
	sig, err := p.SignMessage(ctx, k, ECDSAWithSHA256, msg)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256(msg)
	if !ecdsa.VerifyASN1(&ek.PublicKey, d[:], sig) {
		t.Fatal("Go rejects the imported key's signature")
	}

	// The same material for key agreement.
	wrapped, _ = WrapKeyMaterial(pub, alg, p8)
	g2, kcv2, err := p.ImportKey(ctx, wk, alg, wrapped, ECP256, UsageDerive)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(kcv, kcv2) {
		t.Errorf("KCV differs by usage: %x %x", kcv, kcv2)
	}
	dk, err := NewKey("imported-ecdh", 1, g2.Blob, g2.Public)
	if err != nil {
		t.Fatal(err)
	}
	peer, _ := ecdh.P256().GenerateKey(rand.Reader)
	peerDER, _ := x509MarshalECDH(peer.PublicKey())
	got, err := p.DeriveSharedSecret(ctx, dk, peerDER)
	if err != nil {
		t.Fatal(err)
	}
	mine, _ := ek.ECDH()
	want, _ := peer.ECDH(mine.PublicKey())
	if !bytes.Equal(got, want) {
		t.Fatal("ECDH with the imported key differs from Go's")
	}

	// A P-384 key is not a P-256 key.
	k384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p8, _ = x509.MarshalPKCS8PrivateKey(k384)
	wrapped, _ = WrapKeyMaterial(pub, alg, p8)
	if _, _, err := p.ImportKey(ctx, wk, alg, wrapped, ECP256, UsageSign); !errors.Is(err, ErrInvalidImport) {
		t.Errorf("P-384 key imported as P-256: %v", err)
	}
}

func testImportDataErrors(t *testing.T, p *Pool, wk *Key, pub *rsa.PublicKey) {
	ctx := context.Background()
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	oaep := func(to *rsa.PublicKey, m []byte) []byte {
		c, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, to, m, nil)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	material := random(t, 32)
	good := oaep(pub, material)
	flip := func(b []byte, i int) []byte { c := bytes.Clone(b); c[i] ^= 0x40; return c }
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p8, _ := x509.MarshalPKCS8PrivateKey(ecKey)
	cases := []struct {
		name     string
		wrapped  []byte
		spec     KeySpec
		usage    Usage
		reachHSM bool
	}{
		{"another wrapping key", oaep(&other.PublicKey, material), AES256, UsageEncrypt, true},
		{"corrupted first byte", flip(good, 0), AES256, UsageEncrypt, true},
		{"corrupted last byte", flip(good, len(good)-1), AES256, UsageEncrypt, true},
		{"truncated", good[:len(good)-1], AES256, UsageEncrypt, false},
		{"empty", nil, AES256, UsageEncrypt, false},
		{"AES-128 as AES-256", oaep(pub, material[:16]), AES256, UsageEncrypt, true},
		{"AES-192 as AES-256", oaep(pub, random(t, 24)), AES256, UsageEncrypt, true},
		{"31 bytes as AES-256", oaep(pub, material[:31]), AES256, UsageEncrypt, true},
		{"33 bytes as AES-256", oaep(pub, random(t, 33)), AES256, UsageEncrypt, true},
		{"16 bytes as HMAC-256", oaep(pub, material[:16]), HMAC256, UsageMAC, true},
		{"65 bytes as HMAC-256", oaep(pub, random(t, 65)), HMAC256, UsageMAC, true},
		{"56 bytes as HMAC-512", oaep(pub, random(t, 56)), HMAC512, UsageMAC, true},
		{"PKCS#8 as AES-256", oaep(pub, p8), AES256, UsageEncrypt, true},
		{"AES key as EC", good, ECP256, UsageSign, true},
		{"garbage as EC", oaep(pub, random(t, 120)), ECP256, UsageSign, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opsBefore, dataBefore := totalOps(p)
			_, kcv, err := p.ImportKey(ctx, wk, RSAESOAEPSHA1, c.wrapped, c.spec, c.usage)
			if !errors.Is(err, ErrInvalidImport) {
				t.Fatalf("got %v, want ErrInvalidImport", err)
			}
			if kcv != nil {
				t.Errorf("a check value came with an error")
			}
			if classOf(err) != ClassData {
				t.Errorf("class %v, want data", classOf(err))
			}
			if strings.Contains(err.Error(), hex.EncodeToString(material[:8])) {
				t.Errorf("error shows key material: %v", err)
			}
			opsAfter, dataAfter := totalOps(p)
			want := uint64(0)
			if c.reachHSM {
				want = 1
			}
			if opsAfter-opsBefore != want || dataAfter-dataBefore != want {
				t.Errorf("tried %d times (data errors +%d), want %d: a data error must not be retried", opsAfter-opsBefore, dataAfter-dataBefore, want)
			}
			t.Logf("%v", err)
		})
	}
	if p.Healthy() != 2 {
		t.Fatalf("bad import material quarantined a slot: %+v", p.Status())
	}
}

func testImportUnsupported(t *testing.T, p *Pool, wk *Key, pub *rsa.PublicKey) {
	ctx := context.Background()
	caps := p.Capabilities()
	module := p.slots[0].mechs.module
	if !strings.Contains(module, "libsofthsm2.so") {
		t.Errorf("module description %q does not name the library", module)
	}
	tried := 0
	for _, alg := range importAlgorithms {
		for _, spec := range []KeySpec{AES256, ECP256} {
			if caps.SupportsImport(alg, spec) == nil {
				continue
			}
			tried++
			usage := UsageEncrypt
			if spec == ECP256 {
				usage = UsageSign
			}
			wrapped := make([]byte, pub.Size()+40) // never looked at
			opsBefore, _ := totalOps(p)
			_, _, err := p.ImportKey(ctx, wk, alg, wrapped, spec, usage)
			if !errors.Is(err, ErrUnsupported) || classOf(err) != ClassUnsupported {
				t.Fatalf("%s %s: got %v, want ErrUnsupported", alg, spec, err)
			}
			if want := alg.lack(p.slots[0].mechs, spec.IsAsymmetric()); !strings.Contains(err.Error(), module) || !strings.Contains(err.Error(), want) {
				t.Errorf("%s %s: message %q does not name the module (%s) and what it lacks (%s)", alg, spec, err, module, want)
			}
			if opsAfter, _ := totalOps(p); opsAfter != opsBefore {
				t.Errorf("%s: an unsupported import reached a slot", alg)
			}
			t.Logf("%s %s: %v", alg, spec, err)
		}
	}
	if tried == 0 {
		t.Log("this module imports with every algorithm")
	}
	// SoftHSM 2.6 has no SHA-256 OAEP: the case the pool must name.
	if !caps.OAEPSHA256 {
		_, _, err := p.ImportKey(ctx, wk, RSAESOAEPSHA256, make([]byte, 256), AES256, UsageEncrypt)
		if !strings.Contains(fmt.Sprint(err), "cannot unwrap with CKM_RSA_PKCS_OAEP using SHA-256") {
			t.Errorf("RSAES_OAEP_SHA_256 on a module without SHA-256 OAEP: %v", err)
		}
	}
}

func testImportInputErrors(t *testing.T, p *Pool, wk *Key, pub *rsa.PublicKey) {
	ctx := context.Background()
	signer := mustKey(t, p, "signer", ECP256, UsageSign)
	wrapped, _ := rsa.EncryptOAEP(sha1.New(), rand.Reader, pub, random(t, 32), nil)
	cases := map[string]func() error{
		"no wrapping key": func() error {
			_, _, err := p.ImportKey(ctx, nil, RSAESOAEPSHA1, wrapped, AES256, UsageEncrypt)
			return err
		},
		"not a wrapping key": func() error {
			_, _, err := p.ImportKey(ctx, signer, RSAESOAEPSHA1, wrapped, AES256, UsageEncrypt)
			return err
		},
		"unknown algorithm": func() error { _, _, err := p.ImportKey(ctx, wk, 0, wrapped, AES256, UsageEncrypt); return err },
		"AES for signing":   func() error { _, _, err := p.ImportKey(ctx, wk, RSAESOAEPSHA1, wrapped, AES256, UsageSign); return err },
		"a wrapping key": func() error {
			_, _, err := p.ImportKey(ctx, wk, RSAESOAEPSHA1, wrapped, RSA2048, UsageImportWrap)
			return err
		},
		"RSA key through OAEP": func() error {
			_, _, err := p.ImportKey(ctx, wk, RSAESOAEPSHA1, wrapped, RSA2048, UsageSign)
			return err
		},
		"unknown spec": func() error { _, _, err := p.ImportKey(ctx, wk, RSAESOAEPSHA1, wrapped, 0, UsageEncrypt); return err },
	}
	for name, f := range cases {
		if err := f(); !errors.Is(err, ErrInvalidInput) {
			t.Errorf("%s: got %v, want ErrInvalidInput", name, err)
		}
	}
	if _, err := WrapKeyMaterial(pub, 0, []byte("x")); err == nil {
		t.Error("WrapKeyMaterial took an unknown algorithm")
	}
	if _, err := WrapKeyMaterial(pub, RSAAESKeyWrapSHA256, nil); err == nil {
		t.Error("WrapKeyMaterial took no material")
	}
	for _, a := range importAlgorithms {
		if got, ok := ParseImportAlgorithm(a.String()); !ok || got != a {
			t.Errorf("ParseImportAlgorithm(%q) = %v, %v", a, got, ok)
		}
	}
	if _, ok := ParseImportAlgorithm("RSAES_PKCS1_V1_5"); ok {
		t.Error("parsed a wrapping algorithm AWS no longer has")
	}
}

// The RSA-AES algorithms' second layer is RFC 5649, which the pool also
// uses for blobs: Go's wrap must match the module's byte for byte. SoftHSM
// 2.6 zero-pads a key to a multiple of 8 bytes before it wraps it (its
// message length indicator then says the padded length), so for other
// lengths it matches Go's wrap of the zero-padded key instead.
func testKeyWrapPadAgainstHSM(t *testing.T, p *Pool) {
	s := p.slots[0]
	kek := random(t, 32)
	for _, n := range []int{1, 7, 8, 20, 32, 65, 138} {
		material := random(t, n)
		want, err := aesKeyWrapPad(kek, material)
		if err != nil {
			t.Fatal(err)
		}
		var got []byte
		perr := s.onControl(time.Now().Add(5*time.Second), opOther, "wrap", func(c *control) error {
			ck := s.mod.ck
			w, err := ck.CreateObject(c.h, []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY), pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
				pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false), pkcs11.NewAttribute(pkcs11.CKA_WRAP, true),
				pkcs11.NewAttribute(pkcs11.CKA_VALUE, kek),
			})
			if err != nil {
				return err
			}
			defer ck.DestroyObject(c.h, w)
			k, err := ck.CreateObject(c.h, []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY), pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
				pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false), pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
				pkcs11.NewAttribute(pkcs11.CKA_VALUE, material),
			})
			if err != nil {
				return err
			}
			defer ck.DestroyObject(c.h, k)
			got, err = ck.WrapKey(c.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP_PAD, nil)}, w, k)
			return err
		})
		if perr != nil {
			t.Fatal(perr)
		}
		if bytes.Equal(got, want) {
			continue
		}
		padded, _ := aesKeyWrapPad(kek, append(material, make([]byte, (8-n%8)%8)...))
		if n%8 == 0 || !bytes.Equal(got, padded) {
			t.Errorf("%d bytes: Go wraps to %x, the module to %x", n, want, got)
		} else {
			t.Logf("%d bytes: the module wraps the key zero-padded to %d bytes", n, len(padded)-8)
		}
	}
}

// RFC 5649, section 6.
func TestAESKeyWrapPadVectors(t *testing.T) {
	kek, _ := hex.DecodeString("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8")
	for _, v := range []struct{ key, wrapped string }{
		{"c37b7e6492584340bed12207808941155068f738", "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a"},
		{"466f7250617369", "afbeb0f07dfbf5419200f2ccb50bb24f"},
	} {
		key, _ := hex.DecodeString(v.key)
		got, err := aesKeyWrapPad(kek, key)
		if err != nil {
			t.Fatal(err)
		}
		if hex.EncodeToString(got) != v.wrapped {
			t.Errorf("wrap(%s) = %x, want %s", v.key, got, v.wrapped)
		}
	}
	if _, err := aesKeyWrapPad(kek, nil); err == nil {
		t.Error("wrapped nothing")
	}
}

func TestRecoverECDSAPublic(t *testing.T) {
	for _, curve := range []elliptic.Curve{elliptic.P256(), elliptic.P384(), elliptic.P521()} {
		k, err := ecdsa.GenerateKey(curve, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		size := (curve.Params().BitSize + 7) / 8
		for i := 0; i < 4; i++ {
			d := sha512.Sum512([]byte{byte(i)})
			digest := d[:min(size, 64)]
			r, s, err := ecdsa.Sign(rand.Reader, k, digest)
			if err != nil {
				t.Fatal(err)
			}
			sig := append(r.FillBytes(make([]byte, size)), s.FillBytes(make([]byte, size))...)
			found := false
			for _, c := range recoverECDSAPublic(curve, digest, sig) {
				found = found || c.Equal(&k.PublicKey)
			}
			if !found {
				t.Fatalf("%s: the signer's key is not among the recovered ones", curve.Params().Name)
			}
		}
		if got := recoverECDSAPublic(curve, []byte{1}, make([]byte, 2*size)); got != nil {
			t.Errorf("%s: recovered keys from a zero signature", curve.Params().Name)
		}
	}
}

func TestSecretLenOK(t *testing.T) {
	cases := []struct {
		spec         KeySpec
		valueLen, wl int
		ok           bool
	}{
		{AES256, 32, 0, true}, {AES256, 31, 0, false}, {AES256, 0, 40, true}, {AES256, 0, 32, false}, {AES256, 0, 48, false},
		{HMAC256, 32, 0, true}, {HMAC256, 64, 0, true}, {HMAC256, 65, 0, false}, {HMAC256, 31, 0, false},
		{HMAC256, 0, 72, true}, {HMAC256, 0, 80, false}, {HMAC256, 0, 32, false},
		{HMAC512, 0, 136, true}, {HMAC512, 0, 144, false}, {HMAC512, 0, 64, false}, {HMAC224, 28, 0, true},
		{AES256, 0, 7, false}, {AES256, 0, 41, false},
	}
	for _, c := range cases {
		if err := secretLenOK(c.spec, c.valueLen, c.wl); (err == nil) != c.ok {
			t.Errorf("secretLenOK(%s, %d, %d) = %v, want ok=%v", c.spec, c.valueLen, c.wl, err, c.ok)
		}
	}
}

func random(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func goGCM(t testing.TB, key []byte) cipher.AEAD {
	t.Helper()
	b, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func goKCV(prf []byte) []byte {
	h := sha256.Sum256(append(append([]byte(nil), "hsmgate import key check value v1"...), prf...))
	return h[:ImportKCVLen]
}

// noPlaintext fails if any 8 bytes of the material appear in what the
// pool returned.
func noPlaintext(t testing.TB, material []byte, outputs ...[]byte) {
	t.Helper()
	for _, out := range outputs {
		for i := 0; i+8 <= len(material); i++ {
			if bytes.Contains(out, material[i:i+8]) {
				t.Fatalf("bytes %d..%d of the plaintext key material appear in the pool's output", i, i+8)
			}
		}
	}
}

// aesCMAC is AES-CMAC (RFC 4493), to check the documented check value.
func aesCMAC(t testing.TB, key, msg []byte) []byte {
	t.Helper()
	b, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	dbl := func(in []byte) []byte {
		out := make([]byte, 16)
		carry := in[0] >> 7
		for i := 0; i < 15; i++ {
			out[i] = in[i]<<1 | in[i+1]>>7
		}
		out[15] = in[15] << 1
		if carry == 1 {
			out[15] ^= 0x87
		}
		return out
	}
	l := make([]byte, 16)
	b.Encrypt(l, l)
	k1 := dbl(l)
	k2 := dbl(k1)
	n := (len(msg) + 15) / 16
	last := make([]byte, 16)
	if n > 0 && len(msg)%16 == 0 {
		copy(last, msg[16*(n-1):])
		for i := range last {
			last[i] ^= k1[i]
		}
	} else {
		if n == 0 {
			n = 1
		}
		rest := msg[16*(n-1):]
		copy(last, rest)
		last[len(rest)] = 0x80
		for i := range last {
			last[i] ^= k2[i]
		}
	}
	x := make([]byte, 16)
	for i := 0; i < n-1; i++ {
		for j := 0; j < 16; j++ {
			x[j] ^= msg[16*i+j]
		}
		b.Encrypt(x, x)
	}
	for j := range x {
		x[j] ^= last[j]
	}
	b.Encrypt(x, x)
	return x
}

// RFC 4493's examples, for the test's own CMAC.
func TestAESCMACVectors(t *testing.T) {
	key, _ := hex.DecodeString("2b7e151628aed2a6abf7158809cf4f3c")
	msg, _ := hex.DecodeString("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411")
	for _, v := range []struct {
		n    int
		want string
	}{{0, "bb1d6929e95937287fa37d129b756746"}, {16, "070a16b46b4d4144f79bdd9dd04a287c"}, {40, "dfa66747de9ae63030ca32611497c827"}} {
		if got := hex.EncodeToString(aesCMAC(t, key, msg[:v.n])); got != v.want {
			t.Errorf("CMAC of %d bytes = %s, want %s", v.n, got, v.want)
		}
	}
}
