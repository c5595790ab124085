package quorum

import (
	"errors"

	"github.com/hsmgate/hsmgate/internal/detcbor"
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

var codec = detcbor.New(detcbor.Options{Name: "quorum", ErrNonCanonical: ErrNonCanonical, MaxSize: MaxEncodedSize, MaxNested: 16, MaxMapPairs: 64})

// marshal encodes v as deterministic CBOR.
func marshal(v any) ([]byte, error) { return codec.Marshal(v) }

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
func unmarshalStrict(data []byte, v any) error { return codec.Unmarshal(data, v) }

// PEM block types of the files hsmofficer reads and writes. The armour is
// only transport: what is signed or hashed is always the decoded bytes.
const (
	PEMOfficerKey     = "HSMGATE OFFICER KEY"
	PEMOfficerPublic  = "HSMGATE OFFICER PUBLIC KEY"
	PEMSet            = "HSMGATE QUORUM SET"
	PEMProposal       = "HSMGATE QUORUM PROPOSAL"
	PEMApproval       = "HSMGATE QUORUM APPROVAL"
	PEMRejection      = "HSMGATE QUORUM REJECTION"
	PEMPossession     = "HSMGATE QUORUM PROOF OF POSSESSION"
	PEMEncryptedShare = "HSMGATE QUORUM ENCRYPTED SHARE"
	PEMShare          = "HSMGATE QUORUM SHARE"
	PEMEnvelope       = "HSMGATE HPKE ENVELOPE"
)

// Armor wraps data (any encoded record) in a PEM block of the given type.
func Armor(typ string, data []byte) []byte { return detcbor.Armor(typ, data) }

// Dearmor returns the contents of the single PEM block in file and its type.
// Anything but whitespace around the block, PEM headers, or a second block
// is refused.
func Dearmor(file []byte) (typ string, data []byte, err error) { return codec.Dearmor(file) }

// DearmorType is Dearmor that also checks the block's type.
func DearmorType(file []byte, want string) ([]byte, error) { return codec.DearmorType(file, want) }
