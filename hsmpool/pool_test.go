package hsmpool

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/miekg/pkcs11"
)

// Every key spec generated on one slot must work on every slot, and every
// signature must verify with Go's own crypto.
func TestKeysWorkOnEverySlot(t *testing.T) {
	p, env := newTestPool(t, 4, nil)
	ctx := context.Background()
	type keyCase struct {
		spec  KeySpec
		usage Usage
	}
	cases := []keyCase{
		{AES256, UsageEncrypt},
		{HMAC224, UsageMAC}, {HMAC256, UsageMAC}, {HMAC384, UsageMAC}, {HMAC512, UsageMAC},
		{RSA2048, UsageSign}, {RSA2048, UsageEncrypt},
		{ECP256, UsageSign}, {ECP384, UsageSign}, {ECP521, UsageSign}, {ECP256, UsageDerive},
		{Ed25519, UsageSign},
	}
	if !testing.Short() {
		cases = append(cases, keyCase{RSA3072, UsageSign}, keyCase{RSA4096, UsageSign})
	}
	keys := map[string]*Key{}
	for i, c := range cases {
		id := fmt.Sprintf("k%d-%s-%s", i, c.spec, c.usage)
		if err := p.Capabilities().Supports(c.spec, c.usage); err != nil {
			// Detected as unsupported (SoftHSM 2.6 can't wrap Ed25519
			// keys): the pool must say so, not fail later.
			if _, err := p.GenerateKey(ctx, c.spec, c.usage); !errors.Is(err, ErrUnsupported) {
				t.Errorf("%s: capability says unsupported but GenerateKey gave %v", id, err)
			}
			t.Logf("%s unsupported by this module: %v", id, err)
			continue
		}
		keys[id] = mustKey(t, p, id, c.spec, c.usage)
	}
	// Material made on one slot (any) is used through pools pinned to each.
	aes := keys["k0-AES-256-encrypt"]
	iv, ct, err := p.EncryptGCM(ctx, aes, []byte("secret"), []byte("ctx"))
	if err != nil {
		t.Fatal(err)
	}
	for _, label := range env.Labels() {
		sp := singleSlotPool(t, env, label, p.DomainKeyCheck())
		t.Run(label, func(t *testing.T) {
			pt, err := sp.DecryptGCM(ctx, aes, iv, ct, []byte("ctx"))
			if err != nil || string(pt) != "secret" {
				t.Fatalf("decrypt on %s: %q, %v", label, pt, err)
			}
			for id, k := range keys {
				if err := exercise(ctx, sp, k); err != nil {
					t.Errorf("%s on %s: %v", id, label, err)
				}
			}
			if st := sp.Status()[0]; st.Ops == 0 || st.Name != label {
				t.Errorf("slot %s served nothing: %+v", label, st)
			}
		})
	}
}

// exercise runs every operation k allows and checks the results against
// Go's crypto where the public key allows it.
func exercise(ctx context.Context, p *Pool, k *Key) error {
	msg := []byte("the quick brown fox")
	switch {
	case k.Spec() == AES256:
		iv, ct, err := p.EncryptGCM(ctx, k, msg, []byte("aad"))
		if err != nil {
			return err
		}
		pt, err := p.DecryptGCM(ctx, k, iv, ct, []byte("aad"))
		if err != nil || !bytes.Equal(pt, msg) {
			return fmt.Errorf("GCM round trip: %q %v", pt, err)
		}
	case k.Spec().isHMAC():
		mac, err := p.GenerateMAC(ctx, k, msg)
		if err != nil {
			return err
		}
		if len(mac) != k.Spec().hmacKeyLen() {
			return fmt.Errorf("MAC of %d bytes", len(mac))
		}
		if err := p.VerifyMAC(ctx, k, msg, mac); err != nil {
			return err
		}
		mac[0] ^= 1
		if err := p.VerifyMAC(ctx, k, msg, mac); !errors.Is(err, ErrInvalidMAC) {
			return fmt.Errorf("tampered MAC: %v", err)
		}
	case k.Usage() == UsageSign:
		algs := map[KeySpec][]SignAlgorithm{
			ECP256: {ECDSAWithSHA256}, ECP384: {ECDSAWithSHA384}, ECP521: {ECDSAWithSHA512},
			RSA2048: {RSAPKCS1v15WithSHA256, RSAPSSWithSHA256, RSAPKCS1v15WithSHA512, RSAPSSWithSHA384},
			RSA3072: {RSAPKCS1v15WithSHA384, RSAPSSWithSHA512}, RSA4096: {RSAPSSWithSHA256},
			Ed25519: {Ed25519Pure},
		}[k.Spec()]
		for _, a := range algs {
			sig, err := p.SignMessage(ctx, k, a, msg)
			if err != nil {
				return fmt.Errorf("alg %d: %w", a, err)
			}
			if err := goVerify(k.Public(), a, msg, sig); err != nil {
				return fmt.Errorf("alg %d: Go rejects the HSM's signature: %v", a, err)
			}
			if err := p.VerifyMessage(ctx, k, a, msg, sig); err != nil {
				return fmt.Errorf("alg %d: HSM verify: %w", a, err)
			}
			if err := p.VerifyMessage(ctx, k, a, []byte("another message"), sig); !errors.Is(err, ErrInvalidSignature) {
				return fmt.Errorf("alg %d: verify of another message: %v", a, err)
			}
		}
	case k.Usage() == UsageEncrypt: // RSA-OAEP
		pub := k.Public().(*rsa.PublicKey)
		ct, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, pub, msg, nil)
		if err != nil {
			return err
		}
		pt, err := p.DecryptOAEP(ctx, k, crypto.SHA1, ct)
		if err != nil || !bytes.Equal(pt, msg) {
			return fmt.Errorf("OAEP decrypt of Go's ciphertext: %q %v", pt, err)
		}
		ct, err = p.EncryptOAEP(ctx, k, crypto.SHA1, msg)
		if err != nil {
			return err
		}
		if pt, err = p.DecryptOAEP(ctx, k, crypto.SHA1, ct); err != nil || !bytes.Equal(pt, msg) {
			return fmt.Errorf("OAEP round trip: %q %v", pt, err)
		}
		_, err = p.DecryptOAEP(ctx, k, crypto.SHA256, ct)
		if p.Capabilities().OAEPSHA256 == errors.Is(err, ErrUnsupported) {
			return fmt.Errorf("OAEP SHA-256 detected=%v but got %v", p.Capabilities().OAEPSHA256, err)
		}
	case k.Usage() == UsageDerive:
		pub := k.Public().(*ecdsa.PublicKey)
		hsmPub, err := pub.ECDH()
		if err != nil {
			return err
		}
		mine, err := ecdh.P256().GenerateKey(rand.Reader)
		if err != nil {
			return err
		}
		want, err := mine.ECDH(hsmPub)
		if err != nil {
			return err
		}
		myPub, err := x509MarshalECDH(mine.PublicKey())
		if err != nil {
			return err
		}
		got, err := p.DeriveSharedSecret(ctx, k, myPub)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("ECDH secrets differ")
		}
	}
	return nil
}

func goVerify(pub crypto.PublicKey, a SignAlgorithm, msg, sig []byte) error {
	if a == Ed25519Pure {
		if !ed25519.Verify(pub.(ed25519.PublicKey), msg, sig) {
			return errors.New("ed25519: bad signature")
		}
		return nil
	}
	h := a.Hash().New()
	h.Write(msg)
	d := h.Sum(nil)
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, d, sig) {
			return errors.New("ecdsa: bad signature")
		}
		return nil
	case *rsa.PublicKey:
		if a >= RSAPSSWithSHA256 {
			return rsa.VerifyPSS(k, a.Hash(), d, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		}
		return rsa.VerifyPKCS1v15(k, a.Hash(), d, sig)
	}
	return fmt.Errorf("unexpected key %T", pub)
}

func TestDomainKeyCheck(t *testing.T) {
	p, _ := newTestPool(t, 2, nil)
	if len(p.DomainKeyCheck()) != 16 {
		t.Fatalf("check value %q", p.DomainKeyCheck())
	}
	for _, st := range p.Status() {
		if st.DomainKey != p.DomainKeyCheck() {
			t.Errorf("slot %s check %s, pool %s", st.Name, st.DomainKey, p.DomainKeyCheck())
		}
	}
	// The domain key can't be read or wrapped out of any token.
	for _, s := range p.slots {
		err := s.onControl(time.Now().Add(5*time.Second), opOther, "inspect domain key", func(c *control) error {
			ck := s.mod.ck
			attrs, err := ck.GetAttributeValue(c.h, c.dk, []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil), pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil),
				pkcs11.NewAttribute(pkcs11.CKA_TOKEN, nil), pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, nil),
			})
			if err != nil {
				return err
			}
			if want := []byte{1, 0, 1, 0}; !bytes.Equal([]byte{attrs[0].Value[0], attrs[1].Value[0], attrs[2].Value[0], attrs[3].Value[0]}, want) {
				return fmt.Errorf("sensitive/extractable/token/encrypt = %v, want %v", attrs, want)
			}
			if _, err := ck.GetAttributeValue(c.h, c.dk, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)}); err == nil {
				return errors.New("CKA_VALUE of the domain key is readable")
			}
			if _, err := ck.WrapKey(c.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP_PAD, nil)}, c.dk, c.dk); err == nil {
				return errors.New("the domain key wrapped itself out")
			}
			return nil
		})
		if err != nil {
			t.Errorf("slot %s: %v", s.name, err)
		}
	}
	// A second provisioning is refused: every slot has the key.
	dk, _ := NewDomainKeyMaterial()
	if err := p.ProvisionDomainKey(context.Background(), dk); err == nil {
		t.Fatal("provisioning over an existing domain key succeeded")
	}
}

// A blob wrapped under another pool's domain key is refused before any HSM
// call, with ErrInvalidKeyBlob.
func TestForeignBlob(t *testing.T) {
	p, _ := newTestPool(t, 1, nil)
	k := mustKey(t, p, "k", AES256, UsageEncrypt)
	b, _ := ParseBlob(append([]byte(nil), k.blob.Marshal()...))
	b.KCV[0] ^= 0xff
	foreign, err := NewKey("foreign", 1, b.Marshal(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.EncryptGCM(context.Background(), foreign, []byte("x"), nil); !errors.Is(err, ErrInvalidKeyBlob) {
		t.Fatalf("got %v, want ErrInvalidKeyBlob", err)
	}
	// A blob whose wrapped bytes were changed fails inside the HSM, also as
	// a bad blob, and the slot stays healthy.
	b, _ = ParseBlob(append([]byte(nil), k.blob.Marshal()...))
	b.Wrapped[3] ^= 1
	bad, _ := NewKey("bad", 1, b.Marshal(), nil)
	if _, _, err := p.EncryptGCM(context.Background(), bad, []byte("x"), nil); !errors.Is(err, ErrInvalidKeyBlob) {
		t.Fatalf("got %v, want ErrInvalidKeyBlob", err)
	}
	if p.Healthy() != 1 {
		t.Fatalf("a bad blob quarantined the slot: %+v", p.Status())
	}
}

func TestWrongUsageAndSpec(t *testing.T) {
	p, _ := newTestPool(t, 1, nil)
	ctx := context.Background()
	if _, err := p.GenerateKey(ctx, AES256, UsageSign); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("AES signing key: %v", err)
	}
	ec := mustKey(t, p, "ec", ECP256, UsageSign)
	if _, _, err := p.EncryptGCM(ctx, ec, []byte("x"), nil); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("GCM with an EC key: %v", err)
	}
	if _, err := p.SignMessage(ctx, ec, RSAPSSWithSHA256, []byte("x")); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("PSS with an EC key: %v", err)
	}
	if _, err := p.SignDigest(ctx, ec, ECDSAWithSHA256, []byte("short")); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("short digest: %v", err)
	}
	if err := p.VerifyMessage(ctx, ec, ECDSAWithSHA256, []byte("x"), []byte("not DER")); !errors.Is(err, ErrInvalidSignature) {
		t.Errorf("malformed signature: %v", err)
	}
	if _, err := p.Random(ctx, 0); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("random 0: %v", err)
	}
	r, err := p.Random(ctx, 32)
	if err != nil || len(r) != 32 || bytes.Equal(r, make([]byte, 32)) {
		t.Errorf("random: %x %v", r, err)
	}
}

func x509MarshalECDH(k *ecdh.PublicKey) ([]byte, error) {
	pub, err := ecdsa.ParseUncompressedPublicKey(ellipticP256(), k.Bytes())
	if err != nil {
		return nil, err
	}
	return marshalPKIX(pub)
}

var _ = sha256.New

// The pool's crypto.Signer makes signatures Go's crypto verifies, as TLS
// and x509 need.
func TestSigner(t *testing.T) {
	p, _ := newTestPool(t, 1, nil)
	for _, tc := range []struct {
		spec KeySpec
		opts crypto.SignerOpts
	}{
		{ECP256, crypto.SHA256}, {ECP384, crypto.SHA384},
		{RSA2048, crypto.SHA256}, {RSA2048, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}},
	} {
		k := mustKey(t, p, fmt.Sprintf("signer-%v", tc.opts), tc.spec, UsageSign)
		s, err := p.Signer(k, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		h := tc.opts.HashFunc().New()
		h.Write([]byte("tls transcript"))
		d := h.Sum(nil)
		sig, err := s.Sign(rand.Reader, d, tc.opts)
		if err != nil {
			t.Fatalf("%s: %v", tc.spec, err)
		}
		var ok bool
		switch pub := s.Public().(type) {
		case *ecdsa.PublicKey:
			ok = ecdsa.VerifyASN1(pub, d, sig)
		case *rsa.PublicKey:
			if pss, isPSS := tc.opts.(*rsa.PSSOptions); isPSS {
				ok = rsa.VerifyPSS(pub, crypto.SHA256, d, sig, pss) == nil
			} else {
				ok = rsa.VerifyPKCS1v15(pub, crypto.SHA256, d, sig) == nil
			}
		}
		if !ok {
			t.Errorf("%s: signature does not verify", tc.spec)
		}
		if _, err := s.Sign(rand.Reader, d[:10], tc.opts); err == nil {
			t.Errorf("%s: a short digest was signed", tc.spec)
		}
	}
	aes := mustKey(t, p, "aes", AES256, UsageEncrypt)
	if _, err := p.Signer(aes, time.Second); err == nil {
		t.Error("a signer over an AES key")
	}
}
