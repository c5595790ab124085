package images

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"time"
)

const (
	tagTimestamp       = "hsmgate/images/timestamp/v1"
	tagSignedTimestamp = "hsmgate/images/signed-timestamp/v1"
)

// Timestamp limits.
const (
	// MaxTimestampValidity is the longest a timestamp may be valid
	// (Expires - Issued). Timestamps are meant to be short-lived and
	// re-signed often (TUF's timestamp role signs daily); a week is the
	// most an appliance accepts.
	MaxTimestampValidity = 7 * 24 * time.Hour
	// MaxTimestampImages bounds the images one timestamp lists.
	MaxTimestampImages = 1024
	// TimestampClockSkew is how far in the future a timestamp's Issued time
	// may be, for clocks that differ a little.
	TimestampClockSkew = 5 * time.Minute
)

// Timestamp is the freeze-protection record (TUF's timestamp role): the
// set of images currently available, signed by the trust's timestamp keys
// for a short time. An appliance whose trust has timestamp keys stages and
// activates only images listed by an unexpired timestamp, so an attacker
// who withholds new releases (a freeze) or serves an old view is noticed
// when the timestamp runs out, and a withdrawn image (left out of the next
// timestamp) can no longer be staged or activated.
type Timestamp struct {
	// Version increases with every timestamp issued; an image store never
	// goes back to a lower one. hsmgate image timestamp uses the Unix time
	// of issue by default.
	Version uint64
	// Issued and Expires bound the validity, to the second: Issued <
	// Expires ≤ Issued + MaxTimestampValidity.
	Issued  time.Time
	Expires time.Time
	// Images lists the digests of the available images (distinct; encoded
	// in ascending order).
	Images []Digest
}

type timestampWire struct {
	_       struct{} `cbor:",toarray"`
	Tag     string
	Version uint64
	Issued  uint64
	Expires uint64
	Images  []Digest
}

type signedTimestampWire struct {
	_          struct{} `cbor:",toarray"`
	Tag        string
	Timestamp  []byte
	Signatures []Signature
}

// ErrStaleView: freeze protection refuses: no timestamp, an expired one, or
// one that does not list the image. The message says which.
var ErrStaleView = errors.New("images: stale view")

// Validate checks the timestamp's fields.
func (ts *Timestamp) Validate() error {
	if ts.Version < 1 {
		return errors.New("images: timestamp version must be at least 1")
	}
	is, ex := ts.Issued.Unix(), ts.Expires.Unix()
	if is < 1 || ex > maxBuildTime || ts.Issued.Nanosecond() != 0 || ts.Expires.Nanosecond() != 0 {
		return errors.New("images: timestamp times must be whole seconds between 1970 and 9999")
	}
	if ex <= is {
		return errors.New("images: timestamp expires before it is issued")
	}
	if time.Duration(ex-is)*time.Second > MaxTimestampValidity {
		return fmt.Errorf("images: timestamp valid for %v, more than the %v allowed", time.Duration(ex-is)*time.Second, MaxTimestampValidity)
	}
	if len(ts.Images) > MaxTimestampImages {
		return fmt.Errorf("images: timestamp lists %d images, at most %d", len(ts.Images), MaxTimestampImages)
	}
	seen := map[Digest]bool{}
	for _, d := range ts.Images {
		if seen[d] {
			return fmt.Errorf("images: timestamp lists image %s twice", d)
		}
		seen[d] = true
	}
	return nil
}

// Encode returns the canonical encoding of the timestamp: deterministic
// CBOR of [tag, version, issued, expires (Unix seconds), [digests in
// ascending order]].
func (ts *Timestamp) Encode() ([]byte, error) {
	if err := ts.Validate(); err != nil {
		return nil, err
	}
	images := slices.Clone(ts.Images)
	slices.SortFunc(images, func(a, b Digest) int { return bytes.Compare(a[:], b[:]) })
	return marshal(timestampWire{Tag: tagTimestamp, Version: ts.Version, Issued: uint64(ts.Issued.Unix()), Expires: uint64(ts.Expires.Unix()), Images: images})
}

// DecodeTimestamp strictly decodes a canonical timestamp body (unsigned).
func DecodeTimestamp(data []byte) (*Timestamp, error) {
	var w timestampWire
	if err := unmarshalStrict(data, &w); err != nil {
		return nil, fmt.Errorf("timestamp: %w", err)
	}
	if w.Tag != tagTimestamp {
		return nil, fmt.Errorf("%w: timestamp tag %q", ErrNonCanonical, w.Tag)
	}
	if w.Issued > maxBuildTime || w.Expires > maxBuildTime {
		return nil, errors.New("images: timestamp times out of range")
	}
	ts := &Timestamp{Version: w.Version, Issued: time.Unix(int64(w.Issued), 0).UTC(), Expires: time.Unix(int64(w.Expires), 0).UTC(), Images: w.Images}
	again, err := ts.Encode()
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(again, data) {
		return nil, fmt.Errorf("%w: timestamp images are not in ascending order", ErrNonCanonical)
	}
	return ts, nil
}

// Lists reports whether the timestamp lists the image d.
func (ts *Timestamp) Lists(d Digest) bool { return slices.Contains(ts.Images, d) }

// SignedTimestamp is a timestamp body and its signatures, as sent around.
type SignedTimestamp struct {
	// Timestamp is the canonical timestamp encoding (what is signed).
	Timestamp []byte
	// Signatures are timestamp-key signatures over it.
	Signatures []Signature
}

// Encode returns the canonical encoding: deterministic CBOR of [tag,
// timestamp bytes, [[key id, signature]…]].
func (s *SignedTimestamp) Encode() ([]byte, error) {
	if len(s.Signatures) > MaxSignatures {
		return nil, fmt.Errorf("images: %d signatures, at most %d", len(s.Signatures), MaxSignatures)
	}
	return marshal(signedTimestampWire{Tag: tagSignedTimestamp, Timestamp: s.Timestamp, Signatures: s.Signatures})
}

// DecodeSignedTimestamp strictly decodes a signed timestamp. It verifies
// nothing (Trust.VerifyTimestamp does).
func DecodeSignedTimestamp(data []byte) (*SignedTimestamp, error) {
	var w signedTimestampWire
	if err := unmarshalStrict(data, &w); err != nil {
		return nil, fmt.Errorf("signed timestamp: %w", err)
	}
	if w.Tag != tagSignedTimestamp {
		return nil, fmt.Errorf("%w: signed timestamp tag %q", ErrNonCanonical, w.Tag)
	}
	if len(w.Signatures) > MaxSignatures {
		return nil, fmt.Errorf("%w: %d signatures, at most %d", ErrNonCanonical, len(w.Signatures), MaxSignatures)
	}
	return &SignedTimestamp{Timestamp: w.Timestamp, Signatures: w.Signatures}, nil
}

// SignTimestamp encodes ts and signs it with every signer; it returns the
// signed timestamp's encoding (armour it with PEMTimestamp).
func SignTimestamp(ts *Timestamp, signers ...Signer) ([]byte, error) {
	body, err := ts.Encode()
	if err != nil {
		return nil, err
	}
	st := &SignedTimestamp{Timestamp: body}
	seen := map[KeyID]bool{}
	for _, s := range signers {
		sig, err := sign(s, tagTimestampSig, body)
		if err != nil {
			return nil, err
		}
		if !seen[sig.KeyID] {
			seen[sig.KeyID] = true
			st.Signatures = append(st.Signatures, sig)
		}
	}
	return st.Encode()
}

// VerifyTimestamp verifies a signed timestamp against the trust's
// timestamp keys and the time now, verifying before parsing: the signature
// threshold first (*ThresholdError), then the body is decoded, then it must
// be valid now — Issued no later than now + TimestampClockSkew, and now
// before Expires (else ErrStaleView). A trust without timestamp keys
// verifies no timestamp.
func (t *Trust) VerifyTimestamp(data []byte, now time.Time) (*Timestamp, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	if !t.FreezeProtection() {
		return nil, errors.New("images: the trust has no timestamp keys (freeze protection is off)")
	}
	st, err := DecodeSignedTimestamp(data)
	if err != nil {
		return nil, err
	}
	if _, err := countSignatures("timestamp", t.TimestampKeys, t.TimestampThreshold, tagTimestampSig, st.Timestamp, st.Signatures); err != nil {
		return nil, err
	}
	ts, err := DecodeTimestamp(st.Timestamp)
	if err != nil {
		return nil, fmt.Errorf("images: a signed timestamp that does not decode: %w", err)
	}
	if ts.Issued.After(now.Add(TimestampClockSkew)) {
		return nil, fmt.Errorf("%w: the timestamp is issued at %s, in the future (now %s): check the clocks", ErrStaleView,
			ts.Issued.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if !now.Before(ts.Expires) {
		return nil, fmt.Errorf("%w: the timestamp (version %d) expired at %s (now %s): get a fresh one from the release service", ErrStaleView,
			ts.Version, ts.Expires.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return ts, nil
}

// CheckFresh applies freeze protection to the image d: with timestamp
// keys in the trust, the signed timestamp must verify now and list d
// (ErrStaleView if it is missing, expired or leaves d out); without, it
// returns nil whatever the timestamp.
func (t *Trust) CheckFresh(signedTimestamp []byte, d Digest, now time.Time) error {
	if err := t.Validate(); err != nil {
		return err
	}
	if !t.FreezeProtection() {
		return nil
	}
	if len(signedTimestamp) == 0 {
		return fmt.Errorf("%w: freeze protection is on and there is no timestamp (get a fresh one from the release service)", ErrStaleView)
	}
	ts, err := t.VerifyTimestamp(signedTimestamp, now)
	if err != nil {
		return err
	}
	if !ts.Lists(d) {
		return fmt.Errorf("%w: the timestamp (version %d, until %s) does not list image %s: it is not (or no longer) available",
			ErrStaleView, ts.Version, ts.Expires.Format(time.RFC3339), d)
	}
	return nil
}
