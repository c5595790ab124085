package images

import (
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"

	"github.com/hsmgate/hsmgate/quorum"
)

// MaxRecordSize bounds every CBOR record this package decodes: a manifest,
// a bundle header, a trust record, a timestamp. The largest legitimate one
// is a trust record of MaxKeys hybrid officer keys (about 3.3 KB each).
const MaxRecordSize = 1 << 20

// ErrNonCanonical is returned by every decoder for input that is not the
// one canonical encoding of the value it decodes to: not deterministic CBOR
// (RFC 8949 §4.2.1, core deterministic), an indefinite length, a tag, a
// duplicate map key, an unknown or missing field, trailing bytes, or a field
// of the wrong length. Whatever a decoder accepts re-encodes to exactly the
// bytes it was given.
var ErrNonCanonical = errors.New("images: not a canonical encoding")

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	eo := cbor.CoreDetEncOptions()
	eo.NilContainers = cbor.NilContainerAsEmpty
	eo.TagsMd = cbor.TagsForbidden
	var err error
	if encMode, err = eo.EncMode(); err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		UTF8:              cbor.UTF8RejectInvalid,
		FieldNameMatching: cbor.FieldNameMatchingCaseSensitive,
		MaxNestedLevels:   8,
		MaxArrayElements:  4096,
		MaxMapPairs:       16,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// marshal encodes v as deterministic CBOR.
func marshal(v any) ([]byte, error) {
	b, err := encMode.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("images: encode: %w", err)
	}
	return b, nil
}

// unmarshalStrict decodes data into v (a toarray struct) and checks that
// re-encoding v gives back exactly data. Trailing bytes are an error of
// Unmarshal.
func unmarshalStrict(data []byte, v any) error {
	if len(data) > MaxRecordSize {
		return fmt.Errorf("%w: %d bytes is more than the %d allowed", ErrNonCanonical, len(data), MaxRecordSize)
	}
	if err := decMode.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: %v", ErrNonCanonical, err)
	}
	again, err := encMode.Marshal(v)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNonCanonical, err)
	}
	if !bytes.Equal(again, data) {
		return fmt.Errorf("%w: re-encoding differs (non-deterministic CBOR, a missing field or a field of the wrong type)", ErrNonCanonical)
	}
	return nil
}

// PEM block types of the text files hsmgate image reads and writes. The
// armour is transport only: what is signed or hashed is the decoded bytes.
// Bundles are binary files (see the package documentation).
const (
	PEMTrust     = "HSMGATE IMAGE TRUST"
	PEMTimestamp = "HSMGATE IMAGE TIMESTAMP"
	// PEMPrivateKey and PEMPublicKey are the standard PKCS#8 and PKIX
	// armours of an Ed25519 release key (as openssl genpkey -algorithm
	// ed25519 and openssl pkey -pubout write them).
	PEMPrivateKey = "PRIVATE KEY"
	PEMPublicKey  = "PUBLIC KEY"
	// PEMOfficerKey and PEMOfficerPublic are package quorum's officer key
	// files (hsmofficer keygen).
	PEMOfficerKey    = quorum.PEMOfficerKey
	PEMOfficerPublic = quorum.PEMOfficerPublic
)

// Armor wraps data in a PEM block of type typ.
func Armor(typ string, data []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: data})
}

// Dearmor returns the type and contents of the single PEM block in file.
// Anything but whitespace around the block, PEM headers or a second block
// is refused.
func Dearmor(file []byte) (typ string, data []byte, err error) {
	if len(file) > 2*MaxRecordSize {
		return "", nil, fmt.Errorf("images: file too large (%d bytes)", len(file))
	}
	trimmed := bytes.TrimSpace(file)
	block, rest := pem.Decode(trimmed)
	if block == nil || !bytes.HasPrefix(trimmed, []byte("-----BEGIN ")) {
		return "", nil, errors.New("images: not a PEM file")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return "", nil, errors.New("images: unexpected data after the PEM block")
	}
	if len(block.Headers) != 0 {
		return "", nil, errors.New("images: PEM headers are not allowed")
	}
	return block.Type, block.Bytes, nil
}

// DearmorType is Dearmor that also checks the block's type.
func DearmorType(file []byte, want string) ([]byte, error) {
	typ, data, err := Dearmor(file)
	if err != nil {
		return nil, err
	}
	if typ != want {
		return nil, fmt.Errorf("images: this is a %q file, not a %q", typ, want)
	}
	return data, nil
}

// checkText accepts 1..max bytes of printable ASCII; spaces only when
// spaces is true, and never leading or trailing. Every string of a manifest
// or trust record passes through it, so that nothing shown to an officer or
// operator can carry control characters, escape sequences or look-alike
// Unicode. The rule for versions matches package quorum's for a
// firmware-activation proposal's version.
func checkText(what, s string, max int, spaces bool) error {
	if len(s) == 0 || len(s) > max {
		return fmt.Errorf("images: %s must be 1 to %d bytes, got %d", what, max, len(s))
	}
	allowed := "printable ASCII without spaces"
	if spaces {
		allowed = "printable ASCII (spaces only inside)"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == ' ' && spaces && i != 0 && i != len(s)-1 {
			continue
		}
		if c < 0x21 || c > 0x7e {
			return fmt.Errorf("images: %s %q: only %s is allowed", what, s, allowed)
		}
	}
	return nil
}
