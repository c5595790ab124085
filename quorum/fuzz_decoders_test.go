package quorum

import (
	"bytes"
	"testing"

	"github.com/cloudflare/circl/hpke"
)

// More decoders of what officers and gateways hand each other: sets,
// officer public keys, proofs of possession, HPKE envelopes and Shamir
// shares. As for proposals and approvals, whatever a decoder accepts must
// re-encode to exactly the input.

// roundTrip fails t unless enc, the re-encoding of what decoding data
// gave, is data.
func roundTrip(t *testing.T, what string, data, enc []byte, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("accepted %s does not encode: %v", what, err)
	}
	if !bytes.Equal(enc, data) {
		t.Fatalf("accepted a non-canonical %s:\n in  %x\n out %x", what, data, enc)
	}
}

// variants adds, for each seed, a truncated copy and one with a byte
// appended.
func variants(seeds ...[]byte) [][]byte {
	var out [][]byte
	for _, s := range seeds {
		out = append(out, s, s[:len(s)/2], append(bytes.Clone(s), 0))
	}
	return append(out, []byte{})
}

func setSeeds(t testing.TB) [][]byte {
	ks := officers(t, 3)
	a, _ := newSet(t, 1, ks, 2).Encode()
	b, _ := newSet(t, 7, ks[:2], 1).Encode()
	return variants(a, b)
}

func officerKeySeeds(t testing.TB) [][]byte {
	ks := officers(t, 2)
	a, _ := ks[0].Public().Encode()
	b, _ := ks[1].Public().Encode()
	return variants(a, b)
}

func possessionSeeds(t testing.TB) [][]byte {
	ks := officers(t, 2)
	pop, err := ks[1].ProvePossession(newSet(t, 2, ks, 2))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := pop.Encode()
	return variants(a)
}

func envelopeSeeds(t testing.TB) [][]byte {
	ks := officers(t, 1)
	var seeds [][]byte
	for _, kem := range []hpke.KEM{KEMX25519, KEMXWing} {
		rcpt, err := ks[0].Public().Recipient(kem)
		if err != nil {
			t.Fatal(err)
		}
		e, err := SealTo(rcpt, []byte("transport key"), []byte("info"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := e.Encode()
		seeds = append(seeds, b)
	}
	return variants(seeds...)
}

func shareSeeds(t testing.TB) [][]byte {
	ks := officers(t, 3)
	enc, err := SplitSecret(bytes.Repeat([]byte{7}, 32), newSet(t, 1, ks, 2), "domain-key")
	if err != nil {
		t.Fatal(err)
	}
	e, _ := enc[0].Encode()
	// Shares go to the officers in the set's canonical order.
	var sh *Share
	for _, k := range ks {
		if fp := k.Fingerprint(); bytes.Equal(fp[:], enc[0].Officer) {
			if sh, err = k.DecryptShare(enc[0]); err != nil {
				t.Fatal(err)
			}
		}
	}
	if sh == nil {
		t.Fatal("the first share is for none of the officers")
	}
	s, _ := sh.Encode()
	return variants(e, s)
}

func FuzzDecodeSet(f *testing.F) {
	for _, s := range setSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := DecodeSet(data)
		if err != nil {
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("decoded set does not validate: %v", err)
		}
		enc, err := s.Encode()
		roundTrip(t, "set", data, enc, err)
	})
}

func FuzzDecodeOfficerPublicKey(f *testing.F) {
	for _, s := range officerKeySeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := DecodeOfficerPublicKey(data)
		if err != nil {
			return
		}
		enc, err := k.Encode()
		roundTrip(t, "officer public key", data, enc, err)
		_ = k.Fingerprint()
		if err := k.VerifySignature([]byte("m"), make([]byte, 8)); err == nil {
			t.Fatal("a junk signature verified")
		}
	})
}

func FuzzDecodeProofOfPossession(f *testing.F) {
	for _, s := range possessionSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := DecodeProofOfPossession(data)
		if err != nil {
			return
		}
		enc, err := p.Encode()
		roundTrip(t, "proof of possession", data, enc, err)
	})
}

func FuzzDecodeEnvelope(f *testing.F) {
	for _, s := range envelopeSeeds(f) {
		f.Add(s)
	}
	k := officers(f, 1)[0]
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := DecodeEnvelope(data)
		if err != nil {
			return
		}
		enc, err := e.Encode()
		roundTrip(t, "envelope", data, enc, err)
		// Opening a changed envelope fails cleanly (or, for an unchanged
		// seed, gives the plaintext).
		if pt, err := k.Open(e, []byte("info")); err == nil && string(pt) != "transport key" {
			t.Fatalf("opened to %q", pt)
		}
	})
}

func FuzzDecodeShare(f *testing.F) {
	for _, s := range shareSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if e, err := DecodeEncryptedShare(data); err == nil {
			enc, err := e.Encode()
			roundTrip(t, "encrypted share", data, enc, err)
		}
		if s, err := DecodeShare(data); err == nil {
			enc, err := s.Encode()
			roundTrip(t, "share", data, enc, err)
			if _, err := Combine([]*Share{s}, int(s.Split.Threshold)); err == nil && s.Split.Threshold > 1 {
				t.Fatalf("one share combined under threshold %d", s.Split.Threshold)
			}
		}
	})
}
