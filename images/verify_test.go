package images_test

import (
	"bytes"
	"crypto/sha512"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/hsmgate/hsmgate/images"
)

func TestVerifyGoodBundle(t *testing.T) {
	dir := t.TempDir()
	tr := newTrust(t, 2)
	payload := payloadFor(3)
	path := bundle(t, dir, manifest(3), payload, edSigner(1), images.NewOfficerSigner(officer(t, 0)))
	var sink bytes.Buffer
	v, err := tr.VerifyFile(path, images.VerifyOptions{Target: target, PayloadTo: &sink})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	want := manifest(3)
	got := v.Manifest
	if got.Name != want.Name || got.Version != 3 || got.VersionString != "2.3.0" || got.Target != target ||
		!got.Build.Time.Equal(t0) || got.Build.Builder != "release-ci" || got.Build.SourceRevision != want.Build.SourceRevision {
		t.Errorf("verified manifest %+v", got)
	}
	sum := sha512.Sum384(payload)
	if got.PayloadSize != uint64(len(payload)) || !bytes.Equal(got.PayloadSHA384, sum[:]) {
		t.Errorf("payload size %d, SHA-384 %x", got.PayloadSize, got.PayloadSHA384)
	}
	if !bytes.Equal(sink.Bytes(), payload) {
		t.Error("PayloadTo did not receive the payload")
	}
	if v.Digest != images.ManifestDigest(v.ManifestBytes) {
		t.Error("Digest is not the manifest digest")
	}
	if d, _ := got.Digest(); d != v.Digest {
		t.Error("Manifest.Digest differs from the verified digest")
	}
	if len(v.Signatures) != 2 || v.Signatures[0].Err != nil || v.Signatures[1].Err != nil || v.Signatures[1].Name != "officer-0" {
		t.Errorf("signature checks %v", v.Signatures)
	}
	data, _ := os.ReadFile(path)
	if v.PayloadOffset != int64(len(data)-len(payload)) {
		t.Errorf("PayloadOffset %d", v.PayloadOffset)
	}
}

// TestVerifyRefusals: each way a bundle can be bad is refused with its own
// reason, and its positive twin (the same bundle before the change)
// verifies.
func TestVerifyRefusals(t *testing.T) {
	tr := newTrust(t, 2)
	other := edSigner(5) // not in the trust
	for _, tc := range []struct {
		name      string
		make      func(t *testing.T, dir string) string
		target    string
		want      []error
		fragments []string
	}{
		{
			name: "tampered payload",
			make: func(t *testing.T, dir string) string {
				p := goodBundle(t, dir, 2)
				data, _ := os.ReadFile(p)
				data[len(data)-10] ^= 1
				os.WriteFile(p, data, 0o644)
				return p
			},
			want: []error{images.ErrPayloadDigest}, fragments: []string{"SHA-384"},
		},
		{
			name: "tampered manifest",
			make: func(t *testing.T, dir string) string {
				p := goodBundle(t, dir, 2)
				env := header(t, p)
				m, _ := images.DecodeManifest(env.Manifest)
				m.Version = 99 // same payload, bigger version
				env.Manifest, _ = m.Encode()
				rewrite(t, p, env)
				return p
			},
			want: []error{images.ErrTooFewSignatures, images.ErrBadSignature}, fragments: []string{"0 of 2 needed", "does not verify"},
		},
		{
			name: "too few signatures",
			make: func(t *testing.T, dir string) string {
				return bundle(t, dir, manifest(2), payloadFor(2), edSigner(0))
			},
			want: []error{images.ErrTooFewSignatures}, fragments: []string{"1 of 2 needed"},
		},
		{
			name: "unsigned",
			make: func(t *testing.T, dir string) string {
				return bundle(t, dir, manifest(2), payloadFor(2))
			},
			want: []error{images.ErrTooFewSignatures}, fragments: []string{"0 of 2 needed (no signatures)"},
		},
		{
			name: "duplicated signer",
			make: func(t *testing.T, dir string) string {
				p := bundle(t, dir, manifest(2), payloadFor(2), edSigner(0))
				env := header(t, p)
				env.Signatures = append(env.Signatures, env.Signatures[0])
				rewrite(t, p, env)
				return p
			},
			want: []error{images.ErrTooFewSignatures, images.ErrDuplicateSigner}, fragments: []string{"1 of 2 needed", "counts once", `"release-0"`},
		},
		{
			name: "unknown signer",
			make: func(t *testing.T, dir string) string {
				return bundle(t, dir, manifest(2), payloadFor(2), edSigner(0), other)
			},
			want: []error{images.ErrTooFewSignatures, images.ErrUnknownSigner}, fragments: []string{"signature 2 by " + other.PublicKey().ID().Short() + ": signed by a key that is not trusted"},
		},
		{
			name: "signature by one key under another's id",
			make: func(t *testing.T, dir string) string {
				p := bundle(t, dir, manifest(2), payloadFor(2), edSigner(0), other)
				env := header(t, p)
				env.Signatures[1].KeyID = edSigner(1).PublicKey().ID()
				rewrite(t, p, env)
				return p
			},
			want: []error{images.ErrTooFewSignatures, images.ErrBadSignature},
		},
		{
			name: "officer signature with its ML-DSA half replaced",
			make: func(t *testing.T, dir string) string {
				p := bundle(t, dir, manifest(2), payloadFor(2), edSigner(0), images.NewOfficerSigner(officer(t, 0)))
				env := header(t, p)
				var hs struct {
					_       struct{} `cbor:",toarray"`
					Ed25519 []byte
					MLDSA65 []byte
				}
				if err := cbor.Unmarshal(env.Signatures[1].Sig, &hs); err != nil {
					t.Fatal(err)
				}
				hs.MLDSA65[0] ^= 1
				em, _ := cbor.CoreDetEncOptions().EncMode()
				env.Signatures[1].Sig, _ = em.Marshal(hs)
				rewrite(t, p, env)
				return p
			},
			want: []error{images.ErrTooFewSignatures, images.ErrBadSignature}, fragments: []string{"ML-DSA-65"},
		},
		{
			name:   "wrong hardware target",
			make:   func(t *testing.T, dir string) string { return goodBundle(t, dir, 2) },
			target: "arm64-tpm2",
			want:   []error{images.ErrWrongTarget}, fragments: []string{`"x86_64-tpm2"`, `"arm64-tpm2"`},
		},
		{
			name: "payload truncated",
			make: func(t *testing.T, dir string) string {
				p := goodBundle(t, dir, 2)
				data, _ := os.ReadFile(p)
				os.WriteFile(p, data[:len(data)-1], 0o644)
				return p
			},
			want: []error{images.ErrSizeMismatch}, fragments: []string{"the manifest says"},
		},
		{
			name: "bytes appended",
			make: func(t *testing.T, dir string) string {
				p := goodBundle(t, dir, 2)
				data, _ := os.ReadFile(p)
				os.WriteFile(p, append(data, 0), 0o644)
				return p
			},
			want: []error{images.ErrSizeMismatch}, fragments: []string{"more than"},
		},
		{
			name: "not a bundle",
			make: func(t *testing.T, dir string) string {
				p := goodBundle(t, dir, 2)
				data, _ := os.ReadFile(p)
				data[1] = 'X'
				os.WriteFile(p, data, 0o644)
				return p
			},
			want: []error{images.ErrMalformed}, fragments: []string{"wrong magic"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tgt := tc.target
			if tgt == "" {
				tgt = target
			}
			var sink bytes.Buffer
			_, err := tr.VerifyFile(tc.make(t, t.TempDir()), images.VerifyOptions{Target: tgt, PayloadTo: &sink})
			wantErr(t, err, tc.want, tc.fragments...)
		})
	}
	// The positive twin.
	if _, err := tr.VerifyFile(goodBundle(t, t.TempDir(), 2), images.VerifyOptions{Target: target}); err != nil {
		t.Fatalf("good bundle: %v", err)
	}
}

// TestVerifyBeforeParse: a bundle whose "manifest" is not a manifest at all
// is refused for its signatures, before anything tries to decode it; and
// the payload of a bundle that fails the signatures is never read.
func TestVerifyBeforeParse(t *testing.T) {
	tr := newTrust(t, 1)
	env := &images.Envelope{Manifest: []byte("\xff\xff not CBOR")}
	h, err := env.EncodeHeader()
	if err != nil {
		t.Fatal(err)
	}
	_, err = tr.Verify(bytes.NewReader(h), images.VerifyOptions{Target: target})
	wantErr(t, err, []error{images.ErrTooFewSignatures})
	if errors.Is(err, images.ErrNonCanonical) {
		t.Error("the manifest was decoded before the signatures were checked")
	}

	dir := t.TempDir()
	p := bundle(t, dir, manifest(1), payloadFor(1), edSigner(5))
	var sink bytes.Buffer
	_, err = tr.VerifyFile(p, images.VerifyOptions{Target: target, PayloadTo: &sink})
	wantErr(t, err, []error{images.ErrUnknownSigner})
	if sink.Len() != 0 {
		t.Errorf("%d payload bytes were read from a bundle whose signatures failed", sink.Len())
	}
}

func TestVerifyCountsEachKeyOnce(t *testing.T) {
	// Threshold 3 of the 3 keys: the officer and both Ed25519 keys, each
	// signing twice in a different order, make exactly 3.
	tr := newTrust(t, 3)
	dir := t.TempDir()
	p := bundle(t, dir, manifest(1), payloadFor(1), edSigner(0), images.NewOfficerSigner(officer(t, 0)), edSigner(1))
	env := header(t, p)
	env.Signatures = append(env.Signatures, env.Signatures[2], env.Signatures[0])
	rewrite(t, p, env)
	v, err := tr.VerifyFile(p, images.VerifyOptions{Target: target})
	if err != nil {
		t.Fatalf("3 distinct signers with repeats: %v", err)
	}
	if !errors.Is(v.Signatures[3].Err, images.ErrDuplicateSigner) || !errors.Is(v.Signatures[4].Err, images.ErrDuplicateSigner) {
		t.Errorf("repeated signatures not reported as duplicates: %v", v.Signatures)
	}
	// A bad signature under a key id does not stop a later good one by the
	// same key from counting.
	env.Signatures = []images.Signature{{KeyID: env.Signatures[0].KeyID, Sig: make([]byte, 64)}, env.Signatures[0], env.Signatures[1], env.Signatures[2]}
	rewrite(t, p, env)
	if _, err := tr.VerifyFile(p, images.VerifyOptions{Target: target}); err != nil {
		t.Fatalf("a bad signature before a good one by the same key: %v", err)
	}
}

func TestVerifyNeedsTarget(t *testing.T) {
	_, err := newTrust(t, 1).VerifyFile(goodBundle(t, t.TempDir(), 1), images.VerifyOptions{})
	if err == nil || !strings.Contains(err.Error(), "no hardware target") {
		t.Fatalf("Verify without a target: %v", err)
	}
}

// TestSignFile: signing checks the payload first, replaces a key's earlier
// signature, and writes a new file when asked to.
func TestSignFile(t *testing.T) {
	dir := t.TempDir()
	p := bundle(t, dir, manifest(1), payloadFor(1), edSigner(0))
	if _, err := images.SignFile(p, "", edSigner(0)); err != nil {
		t.Fatal(err)
	}
	if n := len(header(t, p).Signatures); n != 1 {
		t.Fatalf("signing twice with one key: %d signatures, want 1", n)
	}
	out := p + ".signed"
	if _, err := images.SignFile(p, out, edSigner(1)); err != nil {
		t.Fatal(err)
	}
	if len(header(t, p).Signatures) != 1 || len(header(t, out).Signatures) != 2 {
		t.Fatal("SignFile with an output file changed its input or wrote too few signatures")
	}
	if _, err := newTrust(t, 2).VerifyFile(out, images.VerifyOptions{Target: target}); err != nil {
		t.Fatalf("signed bundle: %v", err)
	}

	data, _ := os.ReadFile(p)
	data[len(data)-1] ^= 1
	os.WriteFile(p, data, 0o644)
	_, err := images.SignFile(p, "", edSigner(1))
	wantErr(t, err, []error{images.ErrPayloadDigest})
	if after, _ := os.ReadFile(p); !bytes.Equal(after, data) {
		t.Error("a refused SignFile changed the bundle")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 3 { // payload file, bundle, signed bundle
		t.Errorf("SignFile left files behind: %v", entries)
	}
}
