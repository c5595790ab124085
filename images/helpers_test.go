package images_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/images"
	"github.com/hsmgate/hsmgate/quorum"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

const target = "x86_64-tpm2"

// edKey returns the i-th test Ed25519 key, the same on every call.
func edKey(i int) ed25519.PrivateKey {
	seed := sha256.Sum256(fmt.Appendf(nil, "images test key %d", i))
	return ed25519.NewKeyFromSeed(seed[:])
}

func edSigner(i int) *images.Ed25519Signer { return images.NewEd25519Signer(edKey(i)) }

var (
	officersOnce sync.Once
	officerKeys  []*quorum.OfficerKey
)

// officer returns the i-th test officer key (i < 3), made once per test
// binary.
func officer(t testing.TB, i int) *quorum.OfficerKey {
	t.Helper()
	officersOnce.Do(func() {
		for i := range 3 {
			k, err := quorum.GenerateOfficerKey(fmt.Sprintf("officer-%d", i))
			if err != nil {
				panic(err)
			}
			officerKeys = append(officerKeys, k)
		}
	})
	return officerKeys[i]
}

func trusted(name string, s images.Signer) images.TrustedKey {
	return images.TrustedKey{Name: name, Key: s.PublicKey()}
}

// newTrust trusts Ed25519 keys 0 and 1 and officer 0 as release keys with
// the given threshold.
func newTrust(t testing.TB, threshold int) *images.Trust {
	t.Helper()
	tr := &images.Trust{
		Version: 1,
		ReleaseKeys: []images.TrustedKey{
			trusted("release-0", edSigner(0)),
			trusted("release-1", edSigner(1)),
			trusted("officer-0", images.NewOfficerSigner(officer(t, 0))),
		},
		ReleaseThreshold: threshold,
	}
	if err := tr.Validate(); err != nil {
		t.Fatal(err)
	}
	return tr
}

// withTimestampKey adds Ed25519 key 9 as the timestamp key.
func withTimestampKey(tr *images.Trust) *images.Trust {
	c := *tr
	c.TimestampKeys = []images.TrustedKey{trusted("timestamp", edSigner(9))}
	c.TimestampThreshold = 1
	return &c
}

func manifest(version uint64) images.Manifest {
	return images.Manifest{
		Name:          "hsmgate-appliance",
		Version:       version,
		VersionString: fmt.Sprintf("2.%d.0", version),
		Target:        target,
		Build:         images.BuildInfo{Builder: "release-ci", Time: t0, SourceRevision: "0123456789abcdef"},
	}
}

func payloadFor(version uint64) []byte {
	return bytes.Repeat(fmt.Appendf(nil, "firmware image version %d\n", version), 100)
}

// bundle builds a bundle of m with the given payload in dir and signs it
// with each signer; it returns the bundle's path.
func bundle(t testing.TB, dir string, m images.Manifest, payload []byte, signers ...images.Signer) string {
	t.Helper()
	pf := filepath.Join(dir, fmt.Sprintf("payload-%d-%x", m.Version, sha256.Sum256(payload)))
	if err := os.WriteFile(pf, payload, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(pf)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	path := filepath.Join(dir, fmt.Sprintf("%s-%d-%s.bundle", m.Name, m.Version, m.Target))
	for i := 0; ; i++ {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			break
		}
		path = filepath.Join(dir, fmt.Sprintf("%s-%d-%s-%d.bundle", m.Name, m.Version, m.Target, i))
	}
	var b bytes.Buffer
	if _, err := images.Build(&b, m, f); err != nil {
		t.Fatalf("Build: %v", err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, s := range signers {
		if _, err := images.SignFile(path, "", s); err != nil {
			t.Fatalf("SignFile: %v", err)
		}
	}
	return path
}

// goodBundle is version v with payloadFor(v), signed by Ed25519 keys 0
// and 1.
func goodBundle(t testing.TB, dir string, v uint64) string {
	return bundle(t, dir, manifest(v), payloadFor(v), edSigner(0), edSigner(1))
}

// rewrite replaces a bundle's header by env, keeping its payload.
func rewrite(t testing.TB, path string, env *images.Envelope) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	old, err := images.ReadBundleHeader(path)
	if err != nil {
		t.Fatal(err)
	}
	oh, _ := old.EncodeHeader()
	nh, err := env.EncodeHeader()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(nh, data[len(oh):]...), 0o644); err != nil {
		t.Fatal(err)
	}
}

func header(t testing.TB, path string) *images.Envelope {
	t.Helper()
	e, err := images.ReadBundleHeader(path)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// wantErr fails unless err matches every target and mentions each
// fragment.
func wantErr(t testing.TB, err error, targets []error, fragments ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want %v", targets)
	}
	for _, target := range targets {
		if !errors.Is(err, target) {
			t.Errorf("error %q does not match %v", err, target)
		}
	}
	for _, f := range fragments {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error %q does not say %q", err, f)
		}
	}
}

func signedTimestamp(t testing.TB, version uint64, issued time.Time, validity time.Duration, digests ...images.Digest) []byte {
	t.Helper()
	b, err := images.SignTimestamp(&images.Timestamp{Version: version, Issued: issued, Expires: issued.Add(validity), Images: digests}, edSigner(9))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
