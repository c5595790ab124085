package images

import (
	"errors"
	"fmt"
	"strings"
)

// Domain tags of the two signed messages. A signature is made over
// tag || 0x00 || the record's canonical bytes, so that a release signature
// is never a valid timestamp signature or anything of package quorum's.
const (
	tagReleaseSig   = "hsmgate/images/release-signature/v1"
	tagTimestampSig = "hsmgate/images/timestamp-signature/v1"
)

// MaxSignatures bounds the signatures on one bundle or timestamp.
const MaxSignatures = 64

// Signature is one signature on a bundle's manifest or a timestamp.
type Signature struct {
	_ struct{} `cbor:",toarray"`
	// KeyID names the key that signed (PublicKey.ID).
	KeyID KeyID
	// Sig is the signature: 64 bytes for Ed25519, an encoded
	// quorum.HybridSignature for an officer key.
	Sig []byte
}

func signedMessage(tag string, body []byte) []byte {
	m := make([]byte, 0, len(tag)+1+len(body))
	m = append(m, tag...)
	m = append(m, 0)
	return append(m, body...)
}

// sign makes s's signature over tag || 0x00 || body.
func sign(s Signer, tag string, body []byte) (Signature, error) {
	k := s.PublicKey()
	if err := k.Validate(); err != nil {
		return Signature{}, err
	}
	sig, err := s.Sign(signedMessage(tag, body))
	if err != nil {
		return Signature{}, fmt.Errorf("images: signing: %w", err)
	}
	return Signature{KeyID: k.ID(), Sig: sig}, nil
}

// Reasons a signature is not counted. Each SignatureCheck carries one.
var (
	// ErrUnknownSigner: the signature names a key that is not trusted for
	// the role.
	ErrUnknownSigner = errors.New("images: signed by a key that is not trusted")
	// ErrDuplicateSigner: a second signature by a key already counted; a
	// key counts once however often it signs.
	ErrDuplicateSigner = errors.New("images: key already counted (a key counts once)")
	// ErrTooFewSignatures: fewer distinct trusted keys signed than the
	// threshold. The error is a *ThresholdError saying why each signature
	// did not count.
	ErrTooFewSignatures = errors.New("images: too few valid signatures")
)

// SignatureCheck is the outcome of one signature.
type SignatureCheck struct {
	// Index is the signature's position in the bundle or timestamp.
	Index int
	// KeyID is the key the signature names.
	KeyID KeyID
	// Name is the trusted key's name ("" for an unknown key).
	Name string
	// Err is nil for a counted signature, else why it was not counted:
	// ErrUnknownSigner, ErrDuplicateSigner or ErrBadSignature.
	Err error
}

func (c SignatureCheck) String() string {
	who := c.KeyID.Short()
	if c.Name != "" {
		who = fmt.Sprintf("%q %s", c.Name, who)
	}
	if c.Err == nil {
		return fmt.Sprintf("signature %d by %s: counted", c.Index+1, who)
	}
	return fmt.Sprintf("signature %d by %s: %v", c.Index+1, who, strings.TrimPrefix(c.Err.Error(), "images: "))
}

// ThresholdError reports fewer valid signatures than a role's threshold.
// errors.Is matches ErrTooFewSignatures and the reason of every signature
// that did not count.
type ThresholdError struct {
	// Role is "release" or "timestamp".
	Role string
	// Valid counts distinct trusted keys whose signature verified.
	Valid int
	// Needed is the role's threshold.
	Needed int
	// Checks has one entry per signature, in order.
	Checks []SignatureCheck
}

func (e *ThresholdError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "images: too few valid %s signatures: %d of %d needed", e.Role, e.Valid, e.Needed)
	if len(e.Checks) == 0 {
		b.WriteString(" (no signatures)")
	}
	for _, c := range e.Checks {
		if c.Err != nil {
			fmt.Fprintf(&b, "; %s", c)
		}
	}
	return b.String()
}

func (e *ThresholdError) Unwrap() []error {
	errs := []error{ErrTooFewSignatures}
	for _, c := range e.Checks {
		if c.Err != nil {
			errs = append(errs, c.Err)
		}
	}
	return errs
}

// countSignatures checks sigs over tag || 0x00 || body against keys and
// returns each signature's outcome, or a *ThresholdError when fewer than
// threshold distinct keys signed. Only trusted keys are ever used to
// verify; a key counts once.
func countSignatures(role string, keys []TrustedKey, threshold int, tag string, body []byte, sigs []Signature) ([]SignatureCheck, error) {
	byID := make(map[KeyID]TrustedKey, len(keys))
	for _, k := range keys {
		byID[k.Key.ID()] = k
	}
	msg := signedMessage(tag, body)
	counted := map[KeyID]bool{}
	checks := make([]SignatureCheck, len(sigs))
	for i, s := range sigs {
		c := SignatureCheck{Index: i, KeyID: s.KeyID}
		k, ok := byID[s.KeyID]
		switch {
		case !ok:
			c.Err = ErrUnknownSigner
		case counted[s.KeyID]:
			c.Name, c.Err = k.Name, ErrDuplicateSigner
		default:
			c.Name, c.Err = k.Name, k.Key.verify(msg, s.Sig)
			if c.Err == nil {
				counted[s.KeyID] = true
			}
		}
		checks[i] = c
	}
	if threshold < 1 || len(counted) < threshold {
		return checks, &ThresholdError{Role: role, Valid: len(counted), Needed: threshold, Checks: checks}
	}
	return checks, nil
}
