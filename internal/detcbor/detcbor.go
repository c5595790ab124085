// Package detcbor is the strict deterministic CBOR (RFC 8949 §4.2.1, core
// deterministic) and PEM armour that the records of packages quorum and
// images share: encoders are deterministic, and decoders accept only the
// one canonical encoding of a valid value (decode, re-encode, compare),
// refusing indefinite lengths, tags, duplicate map keys, unknown fields and
// trailing bytes. It also holds the printable-text rule for every string
// shown to a person.
package detcbor

import (
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// Codec encodes and strictly decodes one package's records.
type Codec struct {
	name    string // error prefix, e.g. "quorum"
	errNC   error  // the package's ErrNonCanonical
	maxSize int
	enc     cbor.EncMode
	dec     cbor.DecMode
}

// Options configure a Codec.
type Options struct {
	// Name prefixes errors ("quorum: …").
	Name string
	// ErrNonCanonical is wrapped by every decoding error.
	ErrNonCanonical error
	// MaxSize bounds a record; MaxNested and MaxMapPairs bound its shape.
	MaxSize, MaxNested, MaxMapPairs int
}

// New makes a Codec; invalid options panic (they are constants).
func New(o Options) *Codec {
	eo := cbor.CoreDetEncOptions()
	eo.NilContainers = cbor.NilContainerAsEmpty
	eo.TagsMd = cbor.TagsForbidden
	enc, err := eo.EncMode()
	if err != nil {
		panic(err)
	}
	dec, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		UTF8:              cbor.UTF8RejectInvalid,
		FieldNameMatching: cbor.FieldNameMatchingCaseSensitive,
		MaxNestedLevels:   o.MaxNested,
		MaxArrayElements:  4096,
		MaxMapPairs:       o.MaxMapPairs,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return &Codec{name: o.Name, errNC: o.ErrNonCanonical, maxSize: o.MaxSize, enc: enc, dec: dec}
}

// Marshal encodes v as deterministic CBOR.
func (c *Codec) Marshal(v any) ([]byte, error) {
	b, err := c.enc.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%s: encode: %w", c.name, err)
	}
	return b, nil
}

// Unmarshal decodes data into v and checks that re-encoding v gives back
// exactly data.
func (c *Codec) Unmarshal(data []byte, v any) error {
	if len(data) > c.maxSize {
		return fmt.Errorf("%w: %d bytes is more than the %d allowed", c.errNC, len(data), c.maxSize)
	}
	if err := c.dec.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: %v", c.errNC, err)
	}
	again, err := c.enc.Marshal(v)
	if err != nil {
		return fmt.Errorf("%w: %v", c.errNC, err)
	}
	if !bytes.Equal(again, data) {
		return fmt.Errorf("%w: re-encoding differs (non-deterministic CBOR, a missing field or a field of the wrong length or type)", c.errNC)
	}
	return nil
}

// Armor wraps data in a PEM block of type typ.
func Armor(typ string, data []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: data})
}

// Dearmor returns the type and contents of the single PEM block in file
// (at most twice the Codec's record size). Anything but whitespace around
// the block, PEM headers or a second block is refused.
func (c *Codec) Dearmor(file []byte) (typ string, data []byte, err error) {
	if len(file) > 2*c.maxSize {
		return "", nil, fmt.Errorf("%s: file too large (%d bytes)", c.name, len(file))
	}
	trimmed := bytes.TrimSpace(file)
	block, rest := pem.Decode(trimmed)
	if block == nil || !bytes.HasPrefix(trimmed, []byte("-----BEGIN ")) {
		return "", nil, errors.New(c.name + ": not a PEM file")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return "", nil, errors.New(c.name + ": unexpected data after the PEM block")
	}
	if len(block.Headers) != 0 {
		return "", nil, errors.New(c.name + ": PEM headers are not allowed")
	}
	return block.Type, block.Bytes, nil
}

// DearmorType is Dearmor that also checks the block's type.
func (c *Codec) DearmorType(file []byte, want string) ([]byte, error) {
	typ, data, err := c.Dearmor(file)
	if err != nil {
		return nil, err
	}
	if typ != want {
		return nil, fmt.Errorf("%s: this is a %q file, not a %q", c.name, typ, want)
	}
	return data, nil
}

// CheckText accepts 1..max bytes of printable ASCII; spaces only when
// spaces is true, and never leading or trailing. Every string shown to an
// officer or operator passes through it, so that nothing can carry control
// characters, escape sequences or look-alike Unicode.
func (c *Codec) CheckText(what, s string, max int, spaces bool) error {
	if len(s) == 0 || len(s) > max {
		return fmt.Errorf("%s: %s must be 1 to %d bytes, got %d", c.name, what, max, len(s))
	}
	allowed := "printable ASCII without spaces"
	if spaces {
		allowed = "printable ASCII (spaces only inside)"
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch == ' ' && spaces && i != 0 && i != len(s)-1 {
			continue
		}
		if ch < 0x21 || ch > 0x7e {
			return fmt.Errorf("%s: %s %q: only %s is allowed", c.name, what, s, allowed)
		}
	}
	return nil
}

// Decode decodes data into v with the strict decoder's options but without
// the re-encoding check: for a value's own UnmarshalCBOR, whose enclosing
// record Unmarshal checks as a whole.
func (c *Codec) Decode(data []byte, v any) error { return c.dec.Unmarshal(data, v) }
