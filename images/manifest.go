package images

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"time"
)

const tagManifest = "hsmgate/images/manifest/v1"

// Limits on manifest fields.
const (
	// MaxPayloadSize bounds a payload (1 TiB): a sanity bound, far above
	// any firmware image.
	MaxPayloadSize = 1 << 40
	// maxBuildTime is 9999-12-31T23:59:59Z.
	maxBuildTime = 253402300799
)

// Manifest describes one firmware image: what it is, which version, which
// hardware it is for, and the SHA-384 and size of its payload. Release keys
// sign its canonical encoding (Encode); its SHA-256 is the image's Digest.
type Manifest struct {
	// Name names the product (e.g. "hsmgate-appliance"): 1–64 bytes of
	// printable ASCII without spaces.
	Name string
	// Version is the monotonic release number, at least 1. Anti-rollback
	// compares it: an image whose Version is below the highest activated one
	// is refused. Where a TPM counter keeps the highest version, releases
	// must be numbered in small steps (1, 2, 3…; see docs/images.md).
	Version uint64
	// VersionString is the human release name (e.g. "2.4.1"): 1–128 bytes
	// of printable ASCII without spaces. It is what a firmware-activation
	// proposal names as its version.
	VersionString string
	// Target is the hardware target the image runs on (e.g.
	// "x86_64-tpm2"): 1–64 bytes of printable ASCII without spaces. An
	// appliance refuses images for another target.
	Target string
	// PayloadSHA384 is the SHA-384 of the payload (48 bytes).
	PayloadSHA384 []byte
	// PayloadSize is the payload's length in bytes (at most MaxPayloadSize).
	PayloadSize uint64
	// Build says who built the image, when, from what.
	Build BuildInfo
}

// BuildInfo is a manifest's build metadata.
type BuildInfo struct {
	// Builder names who or what built the image (e.g. "release-ci"): 1–128
	// bytes of printable ASCII, spaces only inside.
	Builder string
	// Time is when it was built, to the second (UTC; after 1970, before
	// the year 10000).
	Time time.Time
	// SourceRevision is the source control revision built (e.g. a git
	// commit id): 1–128 bytes of printable ASCII without spaces.
	SourceRevision string
}

// manifestWire is the encoding: a fixed array.
type manifestWire struct {
	_             struct{} `cbor:",toarray"`
	Tag           string
	Name          string
	Version       uint64
	VersionString string
	Target        string
	PayloadSHA384 []byte
	PayloadSize   uint64
	Build         buildWire
}

type buildWire struct {
	_              struct{} `cbor:",toarray"`
	Builder        string
	Time           uint64 // Unix seconds
	SourceRevision string
}

// Validate checks every field against the rules above.
func (m *Manifest) Validate() error {
	if err := checkText("image name", m.Name, 64, false); err != nil {
		return err
	}
	if m.Version < 1 {
		return fmt.Errorf("images: image version must be at least 1")
	}
	if err := checkText("version string", m.VersionString, 128, false); err != nil {
		return err
	}
	if err := checkText("hardware target", m.Target, 64, false); err != nil {
		return err
	}
	if len(m.PayloadSHA384) != sha512.Size384 {
		return fmt.Errorf("%w: payload SHA-384 is %d bytes, want %d", ErrNonCanonical, len(m.PayloadSHA384), sha512.Size384)
	}
	if m.PayloadSize > MaxPayloadSize {
		return fmt.Errorf("images: payload size %d is more than the %d allowed", m.PayloadSize, uint64(MaxPayloadSize))
	}
	if err := checkText("builder", m.Build.Builder, 128, true); err != nil {
		return err
	}
	if s := m.Build.Time.Unix(); s < 1 || s > maxBuildTime || m.Build.Time.Nanosecond() != 0 {
		return fmt.Errorf("images: build time %s must be a whole second between 1970 and 9999", m.Build.Time.UTC().Format(time.RFC3339Nano))
	}
	if err := checkText("source revision", m.Build.SourceRevision, 128, false); err != nil {
		return err
	}
	return nil
}

// Encode returns the canonical encoding of m: deterministic CBOR of
// [tag, name, version, version string, target, payload SHA-384, payload
// size, [builder, build time, source revision]].
func (m *Manifest) Encode() ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return marshal(manifestWire{
		Tag: tagManifest, Name: m.Name, Version: m.Version, VersionString: m.VersionString, Target: m.Target,
		PayloadSHA384: m.PayloadSHA384, PayloadSize: m.PayloadSize,
		Build: buildWire{Builder: m.Build.Builder, Time: uint64(m.Build.Time.Unix()), SourceRevision: m.Build.SourceRevision},
	})
}

// DecodeManifest strictly decodes and validates a canonical manifest
// encoding. It does not verify anything: Trust.Verify decodes a manifest
// only after its signatures checked out.
func DecodeManifest(data []byte) (*Manifest, error) {
	var w manifestWire
	if err := unmarshalStrict(data, &w); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if w.Tag != tagManifest {
		return nil, fmt.Errorf("%w: manifest tag %q", ErrNonCanonical, w.Tag)
	}
	if w.Build.Time > maxBuildTime {
		return nil, fmt.Errorf("images: build time %d out of range", w.Build.Time)
	}
	m := &Manifest{
		Name: w.Name, Version: w.Version, VersionString: w.VersionString, Target: w.Target,
		PayloadSHA384: w.PayloadSHA384, PayloadSize: w.PayloadSize,
		Build: BuildInfo{Builder: w.Build.Builder, Time: time.Unix(int64(w.Build.Time), 0).UTC(), SourceRevision: w.Build.SourceRevision},
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// Digest identifies an image: the SHA-256 of its manifest's canonical
// encoding (ManifestDigest). A firmware-activation proposal names it
// (quorum.FirmwareActivationParams.ImageSHA256), the image store files the
// image under it, and it is what the gateway is to measure as the image
// (attest's KindImage). It covers the
// payload through the manifest's SHA-384.
type Digest [32]byte

// ManifestDigest is the Digest of a canonical manifest encoding.
func ManifestDigest(manifest []byte) Digest { return sha256.Sum256(manifest) }

// Digest returns the digest of m's canonical encoding.
func (m *Manifest) Digest() (Digest, error) {
	b, err := m.Encode()
	if err != nil {
		return Digest{}, err
	}
	return ManifestDigest(b), nil
}

// String is the digest in lower-case hex.
func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// ParseDigest parses 64 hex digits.
func ParseDigest(s string) (Digest, error) {
	var d Digest
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(d) {
		return d, fmt.Errorf("images: image digest %q: want 64 hex digits", s)
	}
	copy(d[:], b)
	return d, nil
}
