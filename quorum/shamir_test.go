package quorum

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

// subsets calls f with every subset of {0..n-1}.
func subsets(n int, f func(idx []int)) {
	for mask := 0; mask < 1<<n; mask++ {
		var idx []int
		for i := range n {
			if mask&(1<<i) != 0 {
				idx = append(idx, i)
			}
		}
		f(idx)
	}
}

func TestShamirAnyThresholdSubset(t *testing.T) {
	ks := officers(t, 5)
	secret := []byte("domain key: 32 bytes of secret!!")
	for _, tc := range []struct{ n, threshold int }{{2, 2}, {3, 2}, {4, 3}, {5, 3}, {5, 5}, {3, 1}} {
		t.Run(fmt.Sprintf("%d of %d", tc.threshold, tc.n), func(t *testing.T) {
			set := newSet(t, 1, ks[:tc.n], 2)
			set.Thresholds[KindDomainRecovery] = tc.threshold
			enc, err := SplitSecret(secret, set, "domain-key/prod-eu")
			if err != nil {
				t.Fatal(err)
			}
			if len(enc) != tc.n {
				t.Fatalf("%d shares", len(enc))
			}
			// Each officer decrypts their own share (shares are in canonical
			// officer order, so find the key by fingerprint).
			plain := make([]*Share, tc.n)
			for i, es := range enc {
				wire, err := es.Encode()
				if err != nil {
					t.Fatal(err)
				}
				es, err = DecodeEncryptedShare(wire)
				if err != nil {
					t.Fatal(err)
				}
				for _, k := range ks[:tc.n] {
					fp := k.Fingerprint()
					if bytes.Equal(es.Officer, fp[:]) {
						if plain[i], err = k.DecryptShare(es); err != nil {
							t.Fatal(err)
						}
					} else if _, err := k.DecryptShare(es); !errors.Is(err, ErrNotForThisKey) {
						t.Fatalf("another officer's share: %v", err)
					}
				}
				if plain[i] == nil {
					t.Fatal("share for nobody")
				}
			}
			subsets(tc.n, func(idx []int) {
				var sub []*Share
				for _, i := range idx {
					sub = append(sub, plain[i])
				}
				got, err := Combine(sub, tc.threshold)
				if len(idx) >= tc.threshold {
					if err != nil || !bytes.Equal(got, secret) {
						t.Fatalf("shares %v: %v", idx, err)
					}
				} else if !errors.Is(err, ErrNotEnoughShares) {
					t.Fatalf("shares %v (fewer than %d): %v, want ErrNotEnoughShares", idx, tc.threshold, err)
				}
			})
		})
	}
}

func TestShamirBadShares(t *testing.T) {
	ks := officers(t, 3)
	set := newSet(t, 1, ks, 2)
	secret := []byte("the secret")
	decryptAll := func(enc []*EncryptedShare) []*Share {
		var out []*Share
		for _, es := range enc {
			for _, k := range ks {
				if sh, err := k.DecryptShare(es); err == nil {
					out = append(out, sh)
				}
			}
		}
		if len(out) != len(enc) {
			t.Fatal("not every share decrypted")
		}
		return out
	}
	enc, err := SplitSecret(secret, set, "label")
	if err != nil {
		t.Fatal(err)
	}
	shares := decryptAll(enc)
	other := decryptAll(must(SplitSecret(secret, set, "label")))

	// The same share twice counts once.
	if _, err := Combine([]*Share{shares[0], shares[0]}, 2); !errors.Is(err, ErrNotEnoughShares) {
		t.Fatalf("one share twice: %v", err)
	}
	// Shares of two splits do not mix.
	if _, err := Combine([]*Share{shares[0], other[1]}, 2); !errors.Is(err, ErrBadShare) {
		t.Fatalf("mixed splits: %v", err)
	}
	// An altered share value is named, not silently combined.
	bad := *shares[1]
	bad.Value = bytes.Clone(other[1].Value)
	if _, err := Combine([]*Share{shares[0], &bad}, 2); !errors.Is(err, ErrBadShare) {
		t.Fatalf("altered share: %v", err)
	}
	// A wrong threshold is refused.
	if _, err := Combine(shares, 3); !errors.Is(err, ErrThreshold) {
		t.Fatalf("wrong threshold: %v", err)
	}
	// Plain shares survive encoding.
	wire, _ := shares[2].Encode()
	back, err := DecodeShare(wire)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Combine([]*Share{back, shares[0]}, 2); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("combine decoded share: %v", err)
	}
	// An encrypted share moved to another index does not decrypt.
	moved := *enc[0]
	moved.Index = 2
	for _, k := range ks {
		if _, err := k.DecryptShare(&moved); err == nil {
			t.Fatal("share decrypted at another index")
		}
	}
}

func TestHPKEEnvelope(t *testing.T) {
	ks := officers(t, 2)
	for _, kem := range []uint16{uint16(KEMX25519), uint16(KEMXWing)} {
		t.Run(kemName(kem), func(t *testing.T) {
			rcpt, err := ks[0].Public().Recipient(KEMX25519)
			if kem == uint16(KEMXWing) {
				rcpt, err = ks[0].Public().Recipient(KEMXWing)
			}
			if err != nil {
				t.Fatal(err)
			}
			env, err := SealTo(rcpt, []byte("key material"), []byte("export of key-1"))
			if err != nil {
				t.Fatal(err)
			}
			wire, _ := env.Encode()
			env, err = DecodeEnvelope(wire)
			if err != nil {
				t.Fatal(err)
			}
			pt, err := ks[0].Open(env, []byte("export of key-1"))
			if err != nil || string(pt) != "key material" {
				t.Fatalf("open: %v", err)
			}
			if _, err := ks[0].Open(env, []byte("export of key-2")); !errors.Is(err, ErrDecrypt) {
				t.Errorf("wrong info: %v", err)
			}
			if _, err := ks[1].Open(env, []byte("export of key-1")); !errors.Is(err, ErrNotForThisKey) {
				t.Errorf("wrong key: %v", err)
			}
			env.Ciphertext[0] ^= 1
			if _, err := ks[0].Open(env, []byte("export of key-1")); !errors.Is(err, ErrDecrypt) {
				t.Errorf("tampered: %v", err)
			}
		})
	}
	if _, err := SealTo(RecipientKey{KEM: 0x10, PublicKey: make([]byte, 65)}, nil, nil); err == nil {
		t.Error("P-256 recipient accepted")
	}
}
