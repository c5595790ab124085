package images_test

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/images"
)

var update = flag.Bool("update", false, "rewrite the fuzz seed corpus under testdata/fuzz")

// The fuzz targets check non-malleability: whatever a decoder accepts
// re-encodes to exactly its input, so one value has one encoding and a
// signature covers the only bytes that mean that manifest or timestamp.
// They also check that bad input gives an error, never a panic. Seeds:
// testdata/fuzz/<target>/ (go test -run SeedCorpus -update rewrites them)
// plus those added at run time. Fuzz with, e.g.,
//
//	go test ./images/ -run '^$' -fuzz FuzzDecodeManifest

func FuzzDecodeManifest(f *testing.F) {
	for _, s := range manifestSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := images.DecodeManifest(data)
		if err != nil {
			return
		}
		enc, err := m.Encode()
		if err != nil || !bytes.Equal(enc, data) {
			t.Fatalf("accepted a non-canonical manifest (%v):\n in  %x\n out %x", err, data, enc)
		}
		if d, _ := m.Digest(); d != images.ManifestDigest(data) {
			t.Fatal("digest differs")
		}
	})
}

func FuzzDecodeHeader(f *testing.F) {
	for _, s := range headerSeeds(f) {
		f.Add(s)
	}
	tr := newTrust(f, 1)
	f.Fuzz(func(t *testing.T, data []byte) {
		// Whatever the input, verifying it as a bundle gives an error or a
		// verified bundle, never a panic.
		if v, err := tr.Verify(bytes.NewReader(data), images.VerifyOptions{Target: target}); err == nil {
			if _, err := images.DecodeManifest(v.ManifestBytes); err != nil {
				t.Fatalf("verified a bundle whose manifest does not decode: %v", err)
			}
		}
		e, err := images.DecodeHeader(data)
		if err != nil {
			return
		}
		enc, err := e.EncodeHeader()
		if err != nil || !bytes.Equal(enc, data) {
			t.Fatalf("accepted a non-canonical header (%v):\n in  %x\n out %x", err, data, enc)
		}
	})
}

func FuzzDecodeTrust(f *testing.F) {
	for _, s := range trustSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tr, err := images.DecodeTrust(data)
		if err != nil {
			return
		}
		enc, err := tr.Encode()
		if err != nil || !bytes.Equal(enc, data) {
			t.Fatalf("accepted a non-canonical trust (%v):\n in  %x\n out %x", err, data, enc)
		}
		if err := tr.Validate(); err != nil {
			t.Fatalf("decoded an invalid trust: %v", err)
		}
	})
}

func FuzzDecodeTimestamp(f *testing.F) {
	for _, s := range timestampSeeds(f) {
		f.Add(s)
	}
	tr := withTimestampKey(newTrust(f, 1))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = tr.VerifyTimestamp(data, t0)
		if st, err := images.DecodeSignedTimestamp(data); err == nil {
			enc, err := st.Encode()
			if err != nil || !bytes.Equal(enc, data) {
				t.Fatalf("accepted a non-canonical signed timestamp (%v):\n in  %x\n out %x", err, data, enc)
			}
		}
		if ts, err := images.DecodeTimestamp(data); err == nil {
			enc, err := ts.Encode()
			if err != nil || !bytes.Equal(enc, data) {
				t.Fatalf("accepted a non-canonical timestamp (%v):\n in  %x\n out %x", err, data, enc)
			}
		}
	})
}

func manifestSeeds(t testing.TB) [][]byte {
	m, _ := fullManifest(3).Encode()
	return [][]byte{m, append(bytes.Clone(m), 0), m[:len(m)/2], {0x88}, {}}
}

func headerSeeds(t testing.TB) [][]byte {
	dir := t.TempDir()
	signed := bundle(t, dir, manifest(1), []byte("payload"), edSigner(0), images.NewOfficerSigner(officer(t, 0)))
	whole, err := os.ReadFile(signed)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := header(t, signed).EncodeHeader()
	unsigned, _ := (&images.Envelope{Manifest: header(t, signed).Manifest}).EncodeHeader()
	return [][]byte{whole, h, unsigned, h[:len(h)-1], []byte(images.Magic), {}}
}

func trustSeeds(t testing.TB) [][]byte {
	a, _ := newTrust(t, 2).Encode()
	b, _ := withTimestampKey(newTrust(t, 1)).Encode()
	return [][]byte{a, b, append(bytes.Clone(a), 0), a[:100], {0x86}}
}

func timestampSeeds(t testing.TB) [][]byte {
	signed := signedTimestamp(t, 3, t0, time.Hour, images.Digest{1}, images.Digest{2})
	st, _ := images.DecodeSignedTimestamp(signed)
	return [][]byte{signed, st.Timestamp, append(bytes.Clone(signed), 0), signed[:40], {0x85}}
}

// TestSeedCorpus writes the committed seed corpus with -update and checks
// that it is there (the fuzz targets run every seed in plain go test).
func TestSeedCorpus(t *testing.T) {
	for name, seeds := range map[string][][]byte{
		"FuzzDecodeManifest":  manifestSeeds(t),
		"FuzzDecodeHeader":    headerSeeds(t),
		"FuzzDecodeTrust":     trustSeeds(t),
		"FuzzDecodeTimestamp": timestampSeeds(t),
	} {
		dir := filepath.Join("testdata", "fuzz", name)
		if *update {
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
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
