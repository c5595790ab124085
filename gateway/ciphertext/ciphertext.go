// Package ciphertext defines hsmgate's symmetric ciphertext blob, the bytes
// the KMS API returns as CiphertextBlob, and the canonical encoding of an
// encryption context that is bound into it.
//
// # Format (version 1)
//
//	offset  size  field
//	0       1     format version: 0x01
//	1       16    key id (the key's UUID, as bytes)
//	17      4     key version, big-endian
//	21      12    AES-GCM IV
//	33      n     AES-GCM ciphertext followed by its 16-byte tag
//
// The additional authenticated data of AES-GCM is the first 21 bytes of the
// header (version, key id, key version) followed by the canonical encoding
// of the encryption context ([AppendCanonicalContext]). The IV is not in
// the AAD: GCM authenticates it by construction, and some HSMs choose the IV
// themselves, so it is only known after the encryption. Changing any header
// byte, the context, the IV or the ciphertext makes decryption fail.
//
// docs/ciphertext-format.md describes the format for operators and
// testdata/vectors.json holds test vectors.
package ciphertext

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"unicode/utf8"
)

const (
	// Version is the only format version this package writes and reads.
	Version = 1
	// HeaderLen is the size of the header.
	HeaderLen = 1 + 16 + 4 + 12
	// AADHeaderLen is the part of the header that is additional data.
	AADHeaderLen = 1 + 16 + 4
	// TagLen is the AES-GCM tag size.
	TagLen = 16
	// IVLen is the AES-GCM IV size.
	IVLen = 12
	// MaxLen bounds a blob: AWS KMS accepts CiphertextBlob of at most 6144
	// bytes.
	MaxLen = 6144
)

// ErrInvalid is returned for any blob that is not a well-formed version 1
// ciphertext. The API answers it with InvalidCiphertextException.
var ErrInvalid = errors.New("invalid ciphertext")

// Blob is a parsed ciphertext.
type Blob struct {
	KeyID      [16]byte
	KeyVersion uint32
	IV         [IVLen]byte
	Sealed     []byte // ciphertext || tag
}

func (b *Blob) putHeader(h []byte) {
	h[0] = Version
	copy(h[1:17], b.KeyID[:])
	binary.BigEndian.PutUint32(h[17:21], b.KeyVersion)
	copy(h[21:33], b.IV[:])
}

// AAD returns the additional data for AES-GCM: version, key id and key
// version, then the canonical context.
func (b *Blob) AAD(context map[string]string) []byte {
	aad := make([]byte, HeaderLen, HeaderLen+64)
	b.putHeader(aad)
	return AppendCanonicalContext(aad[:AADHeaderLen], context)
}

// Marshal encodes b.
func (b *Blob) Marshal() []byte {
	out := make([]byte, HeaderLen+len(b.Sealed))
	b.putHeader(out)
	copy(out[HeaderLen:], b.Sealed)
	return out
}

// Parse decodes a blob. Sealed aliases data.
func Parse(data []byte) (*Blob, error) {
	if len(data) < HeaderLen+TagLen {
		return nil, fmt.Errorf("%w: %d bytes is too short", ErrInvalid, len(data))
	}
	if len(data) > MaxLen {
		return nil, fmt.Errorf("%w: %d bytes is longer than %d", ErrInvalid, len(data), MaxLen)
	}
	if data[0] != Version {
		return nil, fmt.Errorf("%w: unknown format version %d", ErrInvalid, data[0])
	}
	b := &Blob{KeyVersion: binary.BigEndian.Uint32(data[17:21]), Sealed: data[HeaderLen:]}
	copy(b.KeyID[:], data[1:17])
	copy(b.IV[:], data[21:33])
	return b, nil
}

// Limits on an encryption context, as AWS KMS applies them.
const (
	MaxContextPairs = 64
	MaxContextBytes = 8192 // keys and values together, in UTF-8 bytes
)

// ValidateContext checks an encryption context: at most MaxContextPairs
// pairs, MaxContextBytes in all, non-empty keys, valid UTF-8.
func ValidateContext(ctx map[string]string) error {
	if len(ctx) > MaxContextPairs {
		return fmt.Errorf("encryption context has %d pairs, at most %d are allowed", len(ctx), MaxContextPairs)
	}
	total := 0
	for k, v := range ctx {
		if k == "" {
			return errors.New("encryption context keys must not be empty")
		}
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return errors.New("encryption context must be valid UTF-8")
		}
		total += len(k) + len(v)
	}
	if total > MaxContextBytes {
		return fmt.Errorf("encryption context is %d bytes, at most %d are allowed", total, MaxContextBytes)
	}
	return nil
}

// AppendCanonicalContext appends the canonical encoding of an encryption
// context to dst: the pair count as a big-endian uint16, then, sorted by key
// (bytewise), each key and value as a big-endian uint16 length and its UTF-8
// bytes. An absent and an empty context encode the same (0x0000). The caller
// validates the context first (ValidateContext), which keeps every length
// within uint16.
func AppendCanonicalContext(dst []byte, ctx map[string]string) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(ctx)))
	if len(ctx) == 0 {
		return dst
	}
	keys := make([]string, 0, len(ctx))
	for k := range ctx {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := ctx[k]
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(k)))
		dst = append(dst, k...)
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(v)))
		dst = append(dst, v...)
	}
	return dst
}
