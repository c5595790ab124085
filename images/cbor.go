package images

import (
	"errors"

	"github.com/hsmgate/hsmgate/internal/detcbor"
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

var codec = detcbor.New(detcbor.Options{Name: "images", ErrNonCanonical: ErrNonCanonical, MaxSize: MaxRecordSize, MaxNested: 8, MaxMapPairs: 16})

// marshal encodes v as deterministic CBOR.
func marshal(v any) ([]byte, error) { return codec.Marshal(v) }

// unmarshalStrict decodes data into v (a toarray struct) and checks that
// re-encoding v gives back exactly data. Trailing bytes are an error of
// Unmarshal.
func unmarshalStrict(data []byte, v any) error { return codec.Unmarshal(data, v) }

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
func Armor(typ string, data []byte) []byte { return detcbor.Armor(typ, data) }

// Dearmor returns the type and contents of the single PEM block in file.
// Anything but whitespace around the block, PEM headers or a second block
// is refused.
func Dearmor(file []byte) (typ string, data []byte, err error) { return codec.Dearmor(file) }

// DearmorType is Dearmor that also checks the block's type.
func DearmorType(file []byte, want string) ([]byte, error) { return codec.DearmorType(file, want) }

// checkText accepts 1..max bytes of printable ASCII (detcbor.CheckText):
// every string of a manifest or trust record passes through it. The rule
// for versions matches package quorum's for a firmware-activation
// proposal's version.
func checkText(what, s string, max int, spaces bool) error {
	return codec.CheckText(what, s, max, spaces)
}
