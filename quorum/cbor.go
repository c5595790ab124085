package quorum

import (
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// MaxEncodedSize bounds every record this package decodes. The largest
// legitimate record is a set-change proposal carrying a whole quorum set
// (about 3.3 KB per officer), so 1 MiB leaves room for ~300 officers.
const MaxEncodedSize = 1 << 20

// ErrNonCanonical is returned by every decoder for input that is not the
// one canonical encoding of the value it decodes to: not deterministic CBOR
// (RFC 8949 §4.2.1, "core deterministic"), a duplicate map key, an
// indefinite length, a tag, an unknown field, a missing field, trailing
// bytes, or a field of the wrong length. Decode then re-encode gives
// identical bytes for everything a decoder accepts.
var ErrNonCanonical = errors.New("quorum: not a canonical encoding")

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
		MaxNestedLevels:   16,
		MaxArrayElements:  4096,
		MaxMapPairs:       64,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// marshal encodes v as deterministic CBOR.
func marshal(v any) ([]byte, error) {
	b, err := encMode.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("quorum: encode: %w", err)
	}
	return b, nil
}

// mustMarshal is marshal for values whose encoding cannot fail (fixed
// structs of byte strings, strings and integers).
func mustMarshal(v any) []byte {
	b, err := marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// unmarshalStrict decodes data into v and checks that re-encoding v gives
// back exactly data.
func unmarshalStrict(data []byte, v any) error {
	if len(data) > MaxEncodedSize {
		return fmt.Errorf("%w: %d bytes is more than the %d allowed", ErrNonCanonical, len(data), MaxEncodedSize)
	}
	if err := decMode.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: %v", ErrNonCanonical, err)
	}
	again, err := encMode.Marshal(v)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNonCanonical, err)
	}
	if !bytes.Equal(again, data) {
		return fmt.Errorf("%w: re-encoding differs (non-deterministic CBOR, a missing field or a field of the wrong length)", ErrNonCanonical)
	}
	return nil
}

// PEM block types of the files hsmofficer reads and writes. The armour is
// only transport: what is signed or hashed is always the decoded bytes.
const (
	PEMOfficerKey      = "HSMGATE OFFICER KEY"
	PEMOfficerPublic   = "HSMGATE OFFICER PUBLIC KEY"
	PEMSet             = "HSMGATE QUORUM SET"
	PEMProposal        = "HSMGATE QUORUM PROPOSAL"
	PEMApproval        = "HSMGATE QUORUM APPROVAL"
	PEMRejection       = "HSMGATE QUORUM REJECTION"
	PEMPossession      = "HSMGATE QUORUM PROOF OF POSSESSION"
	PEMEncryptedShare  = "HSMGATE QUORUM ENCRYPTED SHARE"
	PEMShare           = "HSMGATE QUORUM SHARE"
	PEMEnvelope        = "HSMGATE HPKE ENVELOPE"
	pemMaxArmoredBytes = 2 * MaxEncodedSize
)

// Armor wraps der (any encoded record) in a PEM block of the given type.
func Armor(typ string, data []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: data})
}

// Dearmor returns the contents of the single PEM block in file and its type.
// Anything but whitespace around the block, PEM headers, or a second block
// is refused.
func Dearmor(file []byte) (typ string, data []byte, err error) {
	if len(file) > pemMaxArmoredBytes {
		return "", nil, fmt.Errorf("quorum: file too large (%d bytes)", len(file))
	}
	trimmed := bytes.TrimSpace(file)
	block, rest := pem.Decode(trimmed)
	if block == nil || !bytes.HasPrefix(trimmed, []byte("-----BEGIN ")) {
		return "", nil, errors.New("quorum: not a PEM file")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return "", nil, errors.New("quorum: unexpected data after the PEM block")
	}
	if len(block.Headers) != 0 {
		return "", nil, errors.New("quorum: PEM headers are not allowed")
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
		return nil, fmt.Errorf("quorum: this is a %q file, not a %q", typ, want)
	}
	return data, nil
}
