package hsmpool

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"testing"
)

// FuzzParseBlob: any input either parses into a blob that marshals back to
// the same bytes, or is refused with ErrInvalidKeyBlob. Never a panic.
func FuzzParseBlob(f *testing.F) {
	good := (&Blob{Spec: AES256, Usage: UsageEncrypt, KCV: KCV{1, 2, 3, 4, 5, 6, 7, 8}, Wrapped: make([]byte, 40)}).Marshal()
	f.Add(good)
	f.Add((&Blob{Spec: RSA2048, Usage: UsageSign, Wrapped: make([]byte, 1232)}).Marshal())
	f.Add(good[:13])
	f.Add([]byte("HGK1"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := ParseBlob(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidKeyBlob) {
				t.Fatalf("error %v does not wrap ErrInvalidKeyBlob", err)
			}
			return
		}
		if !bytes.Equal(b.Marshal(), data) {
			t.Fatalf("round trip changed the blob")
		}
		if !b.Spec.allows(b.Usage) {
			t.Fatalf("accepted usage %s for %s", b.Usage, b.Spec)
		}
	})
}

// FuzzParsePublicKey: DER from outside (a keystore, a peer's ECDH key) is
// accepted only as a key of the asked spec.
func FuzzParsePublicKey(f *testing.F) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	edDER, _ := x509.MarshalPKIXPublicKey(edPub)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsaDER, _ := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	for _, der := range [][]byte{ecDER, edDER, rsaDER} {
		for _, spec := range []KeySpec{ECP256, Ed25519, RSA2048, ECP384} {
			f.Add(uint8(spec), der)
		}
	}
	f.Add(uint8(ECP256), []byte{0x30, 0x03, 0x02, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, spec uint8, der []byte) {
		pub, err := ParsePublicKey(KeySpec(spec), der)
		if err != nil {
			if !errors.Is(err, ErrInvalidInput) {
				t.Fatalf("error %v does not wrap ErrInvalidInput", err)
			}
			return
		}
		if _, err := publicObjectTemplate(KeySpec(spec), UsageSign, pub); err != nil {
			t.Fatalf("accepted key can't be loaded: %v", err)
		}
	})
}

// FuzzECDSASignature: DER signatures from callers convert to the raw form
// the HSM takes, or are refused; accepted ones convert back unchanged.
func FuzzECDSASignature(f *testing.F) {
	good, _ := ecdsaRawToDER(bytes.Repeat([]byte{0x7f}, 64))
	f.Add(good, 256)
	f.Add([]byte{0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01}, 521)
	f.Add([]byte{0x30, 0x80}, 384)
	f.Fuzz(func(t *testing.T, der []byte, bits int) {
		if bits != 256 && bits != 384 && bits != 521 {
			return
		}
		raw, err := ecdsaDERToRaw(der, bits)
		if err != nil {
			return
		}
		if len(raw) != 2*((bits+7)/8) {
			t.Fatalf("raw signature of %d bytes for %d bits", len(raw), bits)
		}
		again, err := ecdsaRawToDER(raw)
		if err != nil {
			t.Fatal(err)
		}
		raw2, err := ecdsaDERToRaw(again, bits)
		if err != nil || !bytes.Equal(raw, raw2) {
			t.Fatalf("DER round trip changed the signature")
		}
	})
}
