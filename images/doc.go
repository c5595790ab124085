// Package images is hsmgate's signed firmware images: the bundle format,
// release signatures counted against a threshold, the appliance's trusted
// state, freeze protection, and the on-disk image store with anti-rollback.
//
// An image may become active only when a threshold of release keys signed
// it, it is for this hardware, its payload is exactly what the manifest
// says, its version is not below the highest ever activated, and (with
// freeze protection) a fresh timestamp lists it. Activation itself is a
// quorum operation of package quorum, run by the gateway; this package
// gives it the checks and the store.
//
// # Manifest
//
// A Manifest names the image (Name), its monotonic release number
// (Version, ≥ 1) and human version (VersionString), the hardware Target,
// the payload's SHA-384 and size, and build metadata (builder, time,
// source revision). Its canonical encoding (Manifest.Encode) is
// deterministic CBOR (RFC 8949 §4.2.1 core deterministic, via
// github.com/fxamacker/cbor/v2) of a fixed array whose first element is the
// domain tag "hsmgate/images/manifest/v1". Every decoder of this package
// is strict: it accepts only the one canonical encoding of a valid value
// (decode, re-encode, compare), and refuses indefinite lengths, tags,
// duplicate map keys, unknown or missing fields and trailing bytes
// (ErrNonCanonical). Strings are printable ASCII (spaces only inside the
// builder), so nothing shown to a person can hide control characters.
//
// The image's Digest is the SHA-256 of the canonical manifest bytes
// (ManifestDigest). It names the image everywhere: the firmware-activation
// proposal (quorum.FirmwareActivationParams.ImageSHA256, with the
// manifest's VersionString as its Version: Image.ActivationParams), the
// store's folders and the timestamp's list, and it is the digest the
// gateway is to measure as the image (attest's KindImage). It covers the
// payload through the manifest's SHA-384.
//
// # Bundles
//
// A bundle is one file:
//
//	Magic "\x89HGIMG1\n" (8 bytes)
//	header length n (uint32, big-endian, 1 ≤ n ≤ MaxHeaderSize)
//	header: deterministic CBOR [ "hsmgate/images/bundle/v1",
//	                             manifest bytes,
//	                             [[key id, signature]…] ]
//	payload: exactly PayloadSize bytes, to the end of the file
//
// Build writes an unsigned bundle; Envelope.Sign and SignFile add release
// signatures. A release signature is made over
// "hsmgate/images/release-signature/v1" || 0x00 || manifest bytes, so it is
// valid in no other role. Keys are Ed25519 (SchemeEd25519; PKCS#8 and
// PKIX PEM files, as openssl writes them) or officers' hybrid keys of
// package quorum (SchemeOfficer; Ed25519 and ML-DSA-65, both must verify).
// A key is identified by its KeyID, the SHA-256 of [tag, scheme, key], so
// a signer knows it from the key alone.
//
// # Trust and verification
//
// Trust is the appliance's trusted state: release keys and their threshold
// (TUF's targets role), optional timestamp keys and threshold (TUF's
// timestamp role), and a version that goes up with every change. It has a
// canonical encoding (Encode, DecodeTrust) and Hash; changing it is a quorum
// operation. Validate refuses a key listed twice, in one role or across
// both, and two keys sharing Ed25519 material (a plain key equal to an
// officer key's Ed25519 half), so that nobody counts twice.
//
// Trust.Verify verifies before it parses: the header's envelope is read,
// then a threshold of distinct trusted keys must have signed the manifest
// bytes (*ThresholdError, which matches ErrTooFewSignatures and each
// uncounted signature's reason: ErrUnknownSigner, ErrDuplicateSigner,
// ErrBadSignature); only then is the manifest decoded, its Target compared
// (ErrWrongTarget), and the payload read and checked for size
// (ErrSizeMismatch) and SHA-384 (ErrPayloadDigest). It returns the
// Verified manifest or an error, nothing in between; nothing in the payload
// is interpreted.
//
// # Freeze protection
//
// With timestamp keys in the trust, an image must also be listed by a
// Timestamp: the digests of the images currently available, a version that
// only goes up, and a short validity (at most MaxTimestampValidity), signed
// over "hsmgate/images/timestamp-signature/v1" || 0x00 || its encoding.
// Trust.CheckFresh refuses (ErrStaleView) when the timestamp is missing,
// expired, or does not list the image: a release service that stops
// re-signing, or an attacker who replays an old view, is noticed within the
// validity, and an image left out of the next timestamp is withdrawn.
// Without timestamp keys nothing is checked.
//
// # The image store
//
// Store keeps staged images under <data>/images (see Store). Stage verifies
// a bundle completely, refuses a rollback (ErrRollback) and a stale view,
// and only then makes the image a folder named by its digest, in one
// rename; a refused bundle leaves nothing behind. Activate (after
// CheckActivation's checks, verifying the stored files again) records the
// active image and the highest activated version durably. The highest
// version is also kept by an optional VersionCounter — attest.Counter, a
// TPM NV counter that can only go up — and the larger of the two counts:
// Active refuses an active image below it, so restoring an old state file
// does not roll the appliance back. List shows staged, active and previous
// images.
//
// See docs/images.md for the operator's guide.
package images
