package quorum

import (
	"bytes"
	"errors"
	"testing"

	"github.com/cloudflare/circl/hpke"
	"github.com/hsmgate/hsmgate/internal/kwp"
)

func exportProposal(t testing.TB, set *Set, rcpt RecipientKey) (*Proposal, [32]byte) {
	t.Helper()
	p, err := NewProposal(set, &KeyExportParams{KeyID: "arn:aws:kms:eu-west-1:111122223333:key/k", KeyVersion: 2, Recipient: rcpt}, header())
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return p, ProposalHash(b)
}

func sealedExport(t testing.TB, p *Proposal, h [32]byte, key []byte) *ExportedKey {
	t.Helper()
	transport := bytes.Repeat([]byte{0x42}, 32)
	wrapped, err := kwp.Wrap(transport, key)
	if err != nil {
		t.Fatal(err)
	}
	e, err := SealExport(p, h, "arn:aws:kms:eu-west-1:111122223333:key/k", "SYMMETRIC_DEFAULT", ExportRaw, transport, wrapped)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestExportedKey(t *testing.T) {
	ks := officers(t, 3)
	set := newSet(t, 1, ks, 2)
	key := bytes.Repeat([]byte{0x17}, 32)
	for _, kemID := range []uint16{uint16(KEMX25519), uint16(KEMXWing)} {
		rcpt, err := ks[0].Public().Recipient(hpke.KEM(kemID))
		if err != nil {
			t.Fatal(err)
		}
		p, h := exportProposal(t, set, rcpt)
		e := sealedExport(t, p, h, key)
		enc, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		back, err := DecodeExportedKey(enc)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ks[0].OpenExport(back)
		if err != nil || !bytes.Equal(got, key) {
			t.Fatalf("%s: opened %x, %v", kemName(kemID), got, err)
		}
		if e.KeyVersion != 2 {
			t.Fatalf("key version %d, want the proposal's 2", e.KeyVersion)
		}
		if _, err := ks[1].OpenExport(back); !errors.Is(err, ErrNotForThisKey) {
			t.Fatalf("another officer opened it: %v", err)
		}
		// Every header field is bound: change one and it no longer opens.
		for name, mutate := range map[string]func(*ExportedKey){
			"proposal hash": func(x *ExportedKey) { x.ProposalHash = bytes.Repeat([]byte{1}, 32) },
			"key id":        func(x *ExportedKey) { x.KeyID += "x" },
			"key version":   func(x *ExportedKey) { x.KeyVersion = 3 },
			"key spec":      func(x *ExportedKey) { x.KeySpec = "HMAC_256" },
			"format":        func(x *ExportedKey) { x.Format = ExportPKCS8 },
			"wrapped":       func(x *ExportedKey) { x.Wrapped = bytes.Clone(x.Wrapped); x.Wrapped[3] ^= 1 },
			"ciphertext": func(x *ExportedKey) {
				x.Transport.Ciphertext = bytes.Clone(x.Transport.Ciphertext)
				x.Transport.Ciphertext[0] ^= 1
			},
		} {
			x := *back
			mutate(&x)
			if _, err := ks[0].OpenExport(&x); !errors.Is(err, ErrDecrypt) {
				t.Errorf("%s changed: %v, want ErrDecrypt", name, err)
			}
		}
	}
	// Not a key-export proposal.
	fw, _ := NewProposal(set, firmwareParams(), header())
	if _, err := SealExport(fw, [32]byte{}, "k", "SYMMETRIC_DEFAULT", ExportRaw, make([]byte, 32), make([]byte, 40)); err == nil {
		t.Fatal("sealed an export for a firmware proposal")
	}
}

func TestRecoveryShare(t *testing.T) {
	ks := officers(t, 3)
	set := newSet(t, 1, ks, 2)
	secret := bytes.Repeat([]byte{0x5a}, 32)
	shares, err := SplitSecret(secret, set, "domain-key/test")
	if err != nil {
		t.Fatal(err)
	}
	rcpt, sk, err := NewRecipientKey(KEMXWing)
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewProposal(set, &DomainRecoveryParams{DomainKeyID: "kcv", SplitID: shares[0].Split.ID, Recipient: rcpt}, header())
	if err != nil {
		t.Fatal(err)
	}
	pb, _ := p.Encode()
	h := ProposalHash(pb)

	var opened []*Share
	for i, es := range shares[:2] {
		sh, err := officerFor(ks, es).DecryptShare(es)
		if err != nil {
			t.Fatal(err)
		}
		rs, err := SealRecoveryShare(p, h, sh)
		if err != nil {
			t.Fatal(err)
		}
		enc, _ := rs.Encode()
		back, err := DecodeRecoveryShare(enc)
		if err != nil {
			t.Fatal(err)
		}
		got, err := OpenRecoveryShare(sk, back)
		if err != nil {
			t.Fatalf("share %d: %v", i, err)
		}
		opened = append(opened, got)

		// Bound to its proposal, officer and index.
		x := *back
		x.ProposalHash = bytes.Repeat([]byte{9}, 32)
		if _, err := OpenRecoveryShare(sk, &x); !errors.Is(err, ErrDecrypt) {
			t.Errorf("another proposal's share opened: %v", err)
		}
		x = *back
		x.Index = x.Index%3 + 1
		if _, err := OpenRecoveryShare(sk, &x); !errors.Is(err, ErrDecrypt) {
			t.Errorf("share with another index opened: %v", err)
		}
		// Only the recovering key opens it.
		_, other, _ := NewRecipientKey(KEMXWing)
		if _, err := OpenRecoveryShare(other, back); !errors.Is(err, ErrNotForThisKey) {
			t.Errorf("another recipient opened it: %v", err)
		}
	}
	got, err := Combine(opened, 2)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("combined %x, %v", got, err)
	}

	// A share of another split is refused before it is sealed.
	otherSplit, _ := SplitSecret(secret, set, "domain-key/other")
	sh, _ := officerFor(ks, otherSplit[0]).DecryptShare(otherSplit[0])
	if _, err := SealRecoveryShare(p, h, sh); !errors.Is(err, ErrBadShare) {
		t.Fatalf("sealed a share of another split: %v", err)
	}
}

func officerFor(ks []*OfficerKey, es *EncryptedShare) *OfficerKey {
	for _, k := range ks {
		fp := k.Fingerprint()
		if bytes.Equal(fp[:], es.Officer) {
			return k
		}
	}
	return nil
}

func exportSeeds(t testing.TB) [][]byte {
	ks := officers(t, 2)
	set := newSet(t, 1, ks, 2)
	rcpt, _ := ks[0].Public().Recipient(KEMX25519)
	p, h := exportProposal(t, set, rcpt)
	e, _ := sealedExport(t, p, h, make([]byte, 32)).Encode()
	return [][]byte{e, e[:len(e)/2], append(bytes.Clone(e), 0), {0x89}}
}

func recoveryShareSeeds(t testing.TB) [][]byte {
	ks := officers(t, 2)
	set := newSet(t, 1, ks, 2)
	shares, err := SplitSecret(make([]byte, 32), set, "d")
	if err != nil {
		t.Fatal(err)
	}
	rcpt, _, _ := NewRecipientKey(KEMX25519)
	p, _ := NewProposal(set, &DomainRecoveryParams{DomainKeyID: "d", SplitID: shares[0].Split.ID, Recipient: rcpt}, header())
	pb, _ := p.Encode()
	sh, _ := officerFor(ks, shares[0]).DecryptShare(shares[0])
	rs, err := SealRecoveryShare(p, ProposalHash(pb), sh)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := rs.Encode()
	return [][]byte{b, b[:40], append(bytes.Clone(b), 1), {0x85}}
}

func FuzzDecodeExportedKey(f *testing.F) {
	for _, s := range exportSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := DecodeExportedKey(data)
		if err != nil {
			return
		}
		enc, err := e.Encode()
		if err != nil || !bytes.Equal(enc, data) {
			t.Fatalf("accepted a non-canonical exported key (%v)", err)
		}
	})
}

func FuzzDecodeRecoveryShare(f *testing.F) {
	for _, s := range recoveryShareSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeRecoveryShare(data)
		if err != nil {
			return
		}
		enc, err := r.Encode()
		if err != nil || !bytes.Equal(enc, data) {
			t.Fatalf("accepted a non-canonical recovery share (%v)", err)
		}
	})
}
