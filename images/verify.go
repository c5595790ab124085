package images

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// Verification errors. Each names one way a bundle is refused; the
// signature errors are in signatures.go (ErrTooFewSignatures and the
// reasons a signature does not count).
var (
	// ErrWrongTarget: the image is for another hardware target.
	ErrWrongTarget = errors.New("images: image is for another hardware target")
	// ErrSizeMismatch: the payload is longer or shorter than the manifest
	// says.
	ErrSizeMismatch = errors.New("images: payload size does not match the manifest")
	// ErrPayloadDigest: the payload's SHA-384 is not the manifest's: the
	// payload was altered.
	ErrPayloadDigest = errors.New("images: payload does not match the manifest's SHA-384")
)

// VerifyOptions say what a bundle must match besides the trust.
type VerifyOptions struct {
	// Target is this appliance's hardware target; the manifest's must be
	// equal. Required.
	Target string
	// PayloadTo, if not nil, receives the payload as it is hashed (the
	// image store writes it to a temporary file). Its content is not
	// verified until Verify returns without error: discard it otherwise.
	PayloadTo io.Writer
}

// Verified is a bundle that passed Verify.
type Verified struct {
	// Manifest is the verified manifest.
	Manifest *Manifest
	// ManifestBytes is its canonical encoding (what was signed).
	ManifestBytes []byte
	// Digest is ManifestDigest(ManifestBytes).
	Digest Digest
	// Envelope is the bundle's header as read.
	Envelope *Envelope
	// Signatures has every signature's outcome; a threshold counted.
	// Signatures that did not count (unknown keys, duplicates, bad
	// signatures beyond the threshold) are listed with their reason and do
	// no harm.
	Signatures []SignatureCheck
	// PayloadOffset is where the payload starts in the bundle file.
	PayloadOffset int64
}

// Verify reads a bundle from r and returns it verified, or an error naming
// the first check that failed. It verifies before it parses: in order,
//
//  1. the header is a well-formed bundle header (ErrMalformed);
//  2. a threshold of distinct release keys of t signed the manifest's
//     bytes (*ThresholdError, matching ErrTooFewSignatures and each
//     uncounted signature's reason: ErrUnknownSigner, ErrDuplicateSigner,
//     ErrBadSignature — a tampered manifest fails here);
//  3. only then is the manifest decoded (strictly), and its hardware
//     target must be opts.Target (ErrWrongTarget);
//  4. the payload, read to the end of r, has exactly the manifest's size
//     (ErrSizeMismatch) and SHA-384 (ErrPayloadDigest — a tampered
//     payload fails here).
//
// Nothing of the payload is interpreted at all. Rollback and freshness are
// the image store's checks (Store.Stage, Store.Activate).
func (t *Trust) Verify(r io.Reader, opts VerifyOptions) (*Verified, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	if opts.Target == "" {
		return nil, errors.New("images: verify: no hardware target given")
	}
	env, offset, err := ReadHeader(r)
	if err != nil {
		return nil, err
	}
	checks, err := countSignatures("release", t.ReleaseKeys, t.ReleaseThreshold, tagReleaseSig, env.Manifest, env.Signatures)
	if err != nil {
		return nil, err
	}
	m, err := DecodeManifest(env.Manifest)
	if err != nil {
		return nil, fmt.Errorf("images: a signed manifest that does not decode: %w", err)
	}
	if m.Target != opts.Target {
		return nil, fmt.Errorf("%w: the image %q %s is for %q, this appliance is %q", ErrWrongTarget, m.Name, m.VersionString, m.Target, opts.Target)
	}
	if err := checkPayload(r, opts.PayloadTo, m); err != nil {
		return nil, err
	}
	return &Verified{
		Manifest: m, ManifestBytes: env.Manifest, Digest: ManifestDigest(env.Manifest),
		Envelope: env, Signatures: checks, PayloadOffset: offset,
	}, nil
}

// VerifyFile is Verify of the bundle file at path.
func (t *Trust) VerifyFile(path string, opts VerifyOptions) (*Verified, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return t.Verify(f, opts)
}
