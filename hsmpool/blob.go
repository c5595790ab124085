package hsmpool

import (
	"bytes"
	"encoding/hex"
	"fmt"
)

// A key blob is what the pool hands out for every key it generates and what
// it takes back to use the key: the key wrapped inside the HSM under the
// domain key with CKM_AES_KEY_WRAP_PAD (RFC 5649), behind a small header.
//
//	offset  size  field
//	0       4     magic "HGK1" (format version 1)
//	4       1     key spec (KeySpec)
//	5       1     usage (Usage)
//	6       8     domain key check value of the key that wrapped it
//	14      n     RFC 5649 wrapped key: a multiple of 8 bytes, at least 16
//
// The header is not authenticated by the wrap: whoever stores blobs must
// keep them with the same integrity as the key's metadata. The HSM still
// enforces the usage the header names on every unwrapped copy.
const (
	blobMagic     = "HGK1"
	blobHeaderLen = 4 + 1 + 1 + kcvLen
	kcvLen        = 8
	// maxWrappedLen bounds the wrapped part: an RSA-4096 PKCS#8 private key
	// is about 2.4 KiB; 16 KiB leaves room for any module's encoding.
	maxWrappedLen = 16 << 10
)

// KCV is a domain key check value: it identifies a domain key without
// revealing anything about it.
type KCV [kcvLen]byte

func (k KCV) String() string { return hex.EncodeToString(k[:]) }

// Blob is a parsed key blob.
type Blob struct {
	Spec    KeySpec
	Usage   Usage
	KCV     KCV
	Wrapped []byte
}

// Marshal encodes b.
func (b *Blob) Marshal() []byte {
	out := make([]byte, 0, blobHeaderLen+len(b.Wrapped))
	out = append(out, blobMagic...)
	out = append(out, byte(b.Spec), byte(b.Usage))
	out = append(out, b.KCV[:]...)
	return append(out, b.Wrapped...)
}

// ParseBlob decodes a key blob, checking everything that can be checked
// without the HSM. The Wrapped field aliases data.
func ParseBlob(data []byte) (*Blob, error) {
	if len(data) < blobHeaderLen {
		return nil, fmt.Errorf("%w: %d bytes is shorter than the header", ErrInvalidKeyBlob, len(data))
	}
	if !bytes.Equal(data[:4], []byte(blobMagic)) {
		return nil, fmt.Errorf("%w: unknown format (magic %x)", ErrInvalidKeyBlob, data[:4])
	}
	b := &Blob{Spec: KeySpec(data[4]), Usage: Usage(data[5])}
	copy(b.KCV[:], data[6:blobHeaderLen])
	b.Wrapped = data[blobHeaderLen:]
	if !b.Spec.Valid() {
		return nil, fmt.Errorf("%w: unknown key spec %d", ErrInvalidKeyBlob, data[4])
	}
	if !b.Spec.allows(b.Usage) {
		return nil, fmt.Errorf("%w: usage %s is not allowed for %s", ErrInvalidKeyBlob, b.Usage, b.Spec)
	}
	if n := len(b.Wrapped); n < 16 || n%8 != 0 || n > maxWrappedLen {
		return nil, fmt.Errorf("%w: wrapped key of %d bytes (want a multiple of 8 from 16 to %d)", ErrInvalidKeyBlob, n, maxWrappedLen)
	}
	return b, nil
}
