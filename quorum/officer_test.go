package quorum

import (
	"bytes"
	"errors"
	"testing"
)

// testKDF makes key-file tests fast; production uses DefaultKDFParams.
var testKDF = WithKDFParams(1, 64, 1)

func TestHybridSignature(t *testing.T) {
	ks := officers(t, 2)
	a, b := ks[0], ks[1]
	msg := []byte("the proposal bytes")
	sig, err := a.Sign(msg)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Public().VerifySignature(msg, sig); err != nil {
		t.Fatalf("valid signature: %v", err)
	}
	if err := a.Public().VerifySignature([]byte("other bytes"), sig); !errors.Is(err, ErrBadSignature) {
		t.Errorf("other message: %v, want ErrBadSignature", err)
	}
	if err := b.Public().VerifySignature(msg, sig); !errors.Is(err, ErrBadSignature) {
		t.Errorf("other key: %v, want ErrBadSignature", err)
	}

	// Both halves must verify: splice one half from b's signature.
	sigB, _ := b.Sign(msg)
	var ha, hb HybridSignature
	if err := unmarshalStrict(sig, &ha); err != nil {
		t.Fatal(err)
	}
	if err := unmarshalStrict(sigB, &hb); err != nil {
		t.Fatal(err)
	}
	for name, hs := range map[string]HybridSignature{
		"Ed25519 half":   {Ed25519: hb.Ed25519, MLDSA65: ha.MLDSA65},
		"ML-DSA-65 half": {Ed25519: ha.Ed25519, MLDSA65: hb.MLDSA65},
	} {
		err := a.Public().VerifySignature(msg, mustMarshal(hs))
		if !errors.Is(err, ErrBadSignature) {
			t.Errorf("wrong %s: %v, want ErrBadSignature", name, err)
		}
		t.Logf("wrong %s: %v", name, err)
	}
	// A signature with trailing bytes or another encoding is not accepted.
	if err := a.Public().VerifySignature(msg, append(bytes.Clone(sig), 0)); !errors.Is(err, ErrNonCanonical) {
		t.Errorf("trailing byte: %v, want ErrNonCanonical", err)
	}
}

func TestOfficerPublicKeyEncoding(t *testing.T) {
	k := officers(t, 1)[0]
	enc, err := k.Public().Encode()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := DecodeOfficerPublicKey(enc)
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(k.Public()) || pub.Fingerprint() != k.Fingerprint() {
		t.Fatal("decoded public key differs")
	}
	again, _ := pub.Encode()
	if !bytes.Equal(again, enc) {
		t.Fatal("re-encoding differs")
	}
	bad := k.Public()
	bad.Ed25519 = bad.Ed25519[:31]
	if _, err := bad.Encode(); err == nil {
		t.Error("31-byte Ed25519 key encoded")
	}
	if _, err := DecodeOfficerPublicKey(enc[:len(enc)-1]); err == nil {
		t.Error("truncated public key decoded")
	}
	if _, err := GenerateOfficerKey("bad\x1b[31mname"); err == nil {
		t.Error("name with an escape sequence accepted")
	}
}

func TestKeyFile(t *testing.T) {
	k := officers(t, 1)[0]
	file, err := EncryptKeyFile(k, []byte("correct horse"), testKDF)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecryptKeyFile(file, []byte("correct horse"))
	if err != nil {
		t.Fatal(err)
	}
	if got.Fingerprint() != k.Fingerprint() || got.Name() != k.Name() {
		t.Fatal("decrypted key differs")
	}
	sig, _ := got.Sign([]byte("m"))
	if err := k.Verify([]byte("m"), sig); err != nil {
		t.Fatalf("signature by the decrypted key: %v", err)
	}
	pub, err := KeyFilePublic(file)
	if err != nil || !pub.Equal(k.Public()) {
		t.Fatalf("KeyFilePublic: %v", err)
	}

	if _, err := DecryptKeyFile(file, []byte("wrong horse")); !errors.Is(err, ErrWrongPassphrase) {
		t.Errorf("wrong passphrase: %v, want ErrWrongPassphrase", err)
	}
	if _, err := EncryptKeyFile(k, nil, testKDF); err == nil {
		t.Error("empty passphrase accepted")
	}

	// Any change to the file is refused: to the ciphertext and tag, and to
	// the header (bound as associated data).
	var f keyFile
	if err := unmarshalStrict(file, &f); err != nil {
		t.Fatal(err)
	}
	tamper := map[string]func(f *keyFile){
		"ciphertext": func(f *keyFile) { f.Ciphertext[0] ^= 1 },
		"auth tag":   func(f *keyFile) { f.Ciphertext[len(f.Ciphertext)-1] ^= 1 },
		"nonce":      func(f *keyFile) { f.Nonce[0] ^= 1 },
		"salt":       func(f *keyFile) { f.KDF.Salt[0] ^= 1 },
		"kdf time":   func(f *keyFile) { f.KDF.Time++ },
		"public key": func(f *keyFile) { f.Public = officers(t, 2)[1].Public() },
	}
	for name, change := range tamper {
		t.Run(name, func(t *testing.T) {
			var g keyFile
			_ = unmarshalStrict(bytes.Clone(file), &g)
			g.Ciphertext, g.Nonce, g.KDF.Salt = bytes.Clone(f.Ciphertext), bytes.Clone(f.Nonce), bytes.Clone(f.KDF.Salt)
			change(&g)
			if _, err := DecryptKeyFile(mustMarshal(g), []byte("correct horse")); !errors.Is(err, ErrWrongPassphrase) {
				t.Errorf("tampered %s: %v, want ErrWrongPassphrase", name, err)
			}
		})
	}
	// Not a key file at all, or another version.
	g := f
	g.Tag = "hsmgate/quorum/officer-key-file/v2"
	if _, err := DecryptKeyFile(mustMarshal(g), []byte("correct horse")); err == nil {
		t.Error("v2 key file accepted")
	}
	g = f
	g.KDF.MemoryKiB = 1 << 30
	if _, err := DecryptKeyFile(mustMarshal(g), []byte("correct horse")); err == nil {
		t.Error("key file asking for 1 TiB of memory accepted")
	}
	if _, err := DecryptKeyFile(append(bytes.Clone(file), 0), []byte("correct horse")); !errors.Is(err, ErrNonCanonical) {
		t.Errorf("trailing byte: %v", err)
	}
}

func TestArmor(t *testing.T) {
	data := []byte{1, 2, 3}
	file := Armor(PEMProposal, data)
	got, err := DearmorType(file, PEMProposal)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("round trip: %v", err)
	}
	if _, err := DearmorType(file, PEMApproval); err == nil {
		t.Error("proposal read as approval")
	}
	if _, _, err := Dearmor(append(bytes.Clone(file), file...)); err == nil {
		t.Error("two blocks accepted")
	}
	if _, _, err := Dearmor(append([]byte("hello\n"), file...)); err == nil {
		t.Error("text before the block accepted")
	}
}
