package quorum

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"testing"
	"time"
)

// A token-held Ed25519 half (here a software crypto.Signer standing in for
// the token; cmd/hsmofficer tests a real SoftHSM token) signs with the
// ML-DSA half from the key file; the key file records only a reference.
func TestTokenOfficerKey(t *testing.T) {
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	ref := TokenRef{Token: "officer-card", Label: "hsmgate-officer", ID: []byte{1, 2}}
	k, err := GenerateTokenOfficerKey("dana", ref, edPriv)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := k.Sign([]byte("message"))
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Public().VerifySignature([]byte("message"), sig); err != nil {
		t.Fatal(err)
	}
	file, err := EncryptKeyFile(k, []byte("pw"), WithKDFParams(1, 64, 1))
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := DecryptKeyFile(file, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Token() == nil || loaded.Token().Label != "hsmgate-officer" || loaded.Fingerprint() != k.Fingerprint() {
		t.Fatalf("loaded key: token %+v, fingerprint %s vs %s", loaded.Token(), loaded.Fingerprint(), k.Fingerprint())
	}
	if _, err := loaded.Sign([]byte("message")); !errors.Is(err, ErrTokenNotAttached) {
		t.Fatalf("signing without the token: %v", err)
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	if err := loaded.AttachTokenSigner(other); err == nil {
		t.Fatal("attached another Ed25519 key")
	}
	if err := loaded.AttachTokenSigner(edPriv); err != nil {
		t.Fatal(err)
	}
	set := newSet(t, 1, append(officers(t, 2), loaded), 2)
	prop := propose(t, set)
	a, err := loaded.Approve(prop)
	if err != nil {
		t.Fatal(err)
	}
	tally, err := NewTally(set, prop, scope, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := tally.AddApproval(a); err != nil {
		t.Fatalf("an approval by the token key does not count: %v", err)
	}
	// A software key can't take a token signer.
	if err := officers(t, 1)[0].AttachTokenSigner(edPriv); err == nil {
		t.Fatal("a software key took a token signer")
	}
}
