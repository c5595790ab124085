package quorum

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// The fuzz targets check non-malleability: whatever a decoder accepts
// re-encodes to exactly the input, so one value has one encoding and an
// approval's signature covers the only bytes that mean that proposal.
// Seeds: testdata/fuzz/<target>/ (regenerate with go test -run Seed -update)
// plus those added below at run time.

func FuzzDecodeProposal(f *testing.F) {
	for _, seed := range proposalSeeds(f) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := DecodeProposal(data)
		if err != nil {
			return
		}
		enc, err := p.Encode()
		if err != nil {
			t.Fatalf("accepted proposal does not encode: %v", err)
		}
		if !bytes.Equal(enc, data) {
			t.Fatalf("accepted a non-canonical proposal:\n in  %x\n out %x", data, enc)
		}
		p2, err := DecodeProposal(enc)
		if err != nil {
			t.Fatalf("re-encoding does not decode: %v", err)
		}
		if enc2, _ := p2.Encode(); !bytes.Equal(enc2, enc) {
			t.Fatal("second round trip differs")
		}
		_ = p.Render()
	})
}

func FuzzDecodeApproval(f *testing.F) {
	for _, seed := range approvalSeeds(f) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if a, err := DecodeApproval(data); err == nil {
			enc, err := a.Encode()
			if err != nil || !bytes.Equal(enc, data) {
				t.Fatalf("accepted a non-canonical approval (%v):\n in  %x\n out %x", err, data, enc)
			}
			if _, err := DecodeRejection(data); err == nil {
				t.Fatal("the same bytes are an approval and a rejection")
			}
		}
		if r, err := DecodeRejection(data); err == nil {
			enc, err := r.Encode()
			if err != nil || !bytes.Equal(enc, data) {
				t.Fatalf("accepted a non-canonical rejection (%v):\n in  %x\n out %x", err, data, enc)
			}
		}
	})
}

func proposalSeeds(t testing.TB) [][]byte {
	ks := officers(t, 3)
	set := newSet(t, 1, ks, 2)
	rcpt, _ := ks[0].Public().Recipient(KEMX25519)
	fixed, _ := fixedProposal().Encode()
	seeds := [][]byte{fixed, append(bytes.Clone(fixed), 0), fixed[:len(fixed)/2], {0x8b}, {}}
	for _, params := range []Params{
		&KeyExportParams{KeyID: "alias/k", KeyVersion: 1, Recipient: rcpt},
		&DomainRecoveryParams{DomainKeyID: "d", SplitID: make([]byte, 16), Recipient: rcpt},
		firmwareParams(),
		&SetChangeParams{Next: newSet(t, 2, ks[:2], 2)},
		&KeyOperationParams{KeyID: "alias/k", Operation: "Decrypt", Request: []byte("{}")},
		&ReleaseTrustParams{Version: 2, TrustSHA256: make([]byte, 32)},
	} {
		p, err := NewProposal(set, params, header())
		if err != nil {
			t.Fatal(err)
		}
		b, _ := p.Encode()
		seeds = append(seeds, b)
	}
	return seeds
}

func approvalSeeds(t testing.TB) [][]byte {
	ks := officers(t, 2)
	set := newSet(t, 1, ks, 2)
	prop := propose(t, set)
	a, _ := approve(t, ks[0], prop).Encode()
	r, _ := ks[1].Reject(prop, "no change window")
	renc, _ := r.Encode()
	return [][]byte{a, renc, a[:100], append(bytes.Clone(a), 0), {0x84}}
}

// TestSeedCorpus writes the committed seed corpus with -update and checks
// that it is there (the fuzz targets run every seed in plain go test).
func TestSeedCorpus(t *testing.T) {
	for name, seeds := range map[string][][]byte{
		"FuzzDecodeProposal":          proposalSeeds(t),
		"FuzzDecodeApproval":          approvalSeeds(t),
		"FuzzDecodeExportedKey":       exportSeeds(t),
		"FuzzDecodeRecoveryShare":     recoveryShareSeeds(t),
		"FuzzDecodeSet":               setSeeds(t),
		"FuzzDecodeOfficerPublicKey":  officerKeySeeds(t),
		"FuzzDecodeProofOfPossession": possessionSeeds(t),
		"FuzzDecodeEnvelope":          envelopeSeeds(t),
		"FuzzDecodeShare":             shareSeeds(t),
	} {
		dir := filepath.Join("testdata", "fuzz", name)
		if *update {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			for i, s := range seeds {
				file := filepath.Join(dir, fmt.Sprintf("seed-%02d", i))
				if err := os.WriteFile(file, fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", s), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		entries, err := os.ReadDir(dir)
		if err != nil || len(entries) == 0 {
			t.Fatalf("no seed corpus in %s (run go test -run SeedCorpus -update): %v", dir, err)
		}
	}
}
