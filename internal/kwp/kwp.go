// Package kwp is AES key wrap with padding (RFC 5649), the wrapping PKCS#11
// calls CKM_AES_KEY_WRAP_PAD. The HSMs do the wrapping on the gateway; this
// package exists for the other side: tools that wrap material for import,
// check values computed outside a token, and recipients of exported keys,
// which unwrap in software. It is pure Go.
package kwp

import (
	"crypto/aes"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// ErrUnwrap means a wrapped key did not unwrap: the wrong key-encryption
// key, or altered or truncated input. RFC 5649 does not say which.
var ErrUnwrap = errors.New("kwp: integrity check failed (wrong key or altered input)")

const aivPrefix = 0xa65959a6

// Wrap wraps plaintext (1 to 2^32−1 bytes) under kek (16, 24 or 32 bytes).
// It is deterministic.
func Wrap(kek, plaintext []byte) ([]byte, error) {
	b, err := aes.NewCipher(kek)
	if err != nil {
		return nil, fmt.Errorf("kwp: %w", err)
	}
	if len(plaintext) == 0 || uint64(len(plaintext)) > math.MaxUint32 {
		return nil, fmt.Errorf("kwp: can't wrap %d bytes", len(plaintext))
	}
	n := (len(plaintext) + 7) / 8
	out := make([]byte, 8+8*n) // A || R[1..n]
	copy(out[8:], plaintext)
	aiv := uint64(aivPrefix)<<32 | uint64(len(plaintext))
	if n == 1 {
		binary.BigEndian.PutUint64(out, aiv)
		b.Encrypt(out, out)
		return out, nil
	}
	a := aiv
	var blk [16]byte
	for j := 0; j < 6; j++ {
		for i := 1; i <= n; i++ {
			binary.BigEndian.PutUint64(blk[:8], a)
			copy(blk[8:], out[8*i:8*i+8])
			b.Encrypt(blk[:], blk[:])
			a = binary.BigEndian.Uint64(blk[:8]) ^ uint64(n*j+i)
			copy(out[8*i:], blk[8:])
		}
	}
	binary.BigEndian.PutUint64(out, a)
	clear(blk[:])
	return out, nil
}

// Unwrap reverses Wrap. Any failure (a length that is not a whole number of
// 8-byte blocks, a bad integrity check value, a bad length or non-zero
// padding) is ErrUnwrap; no partial plaintext is returned.
func Unwrap(kek, wrapped []byte) ([]byte, error) {
	b, err := aes.NewCipher(kek)
	if err != nil {
		return nil, fmt.Errorf("kwp: %w", err)
	}
	if len(wrapped) < 16 || len(wrapped)%8 != 0 {
		return nil, ErrUnwrap
	}
	n := len(wrapped)/8 - 1
	out := make([]byte, len(wrapped))
	var a uint64
	if n == 1 {
		b.Decrypt(out, wrapped)
		a = binary.BigEndian.Uint64(out)
	} else {
		copy(out, wrapped)
		a = binary.BigEndian.Uint64(out)
		var blk [16]byte
		for j := 5; j >= 0; j-- {
			for i := n; i >= 1; i-- {
				binary.BigEndian.PutUint64(blk[:8], a^uint64(n*j+i))
				copy(blk[8:], out[8*i:8*i+8])
				b.Decrypt(blk[:], blk[:])
				a = binary.BigEndian.Uint64(blk[:8])
				copy(out[8*i:], blk[8:])
			}
		}
		clear(blk[:])
	}
	// Check the alternative initial value, the length and the padding
	// without branching on secret bytes beyond the final verdict.
	mli := uint32(a)
	ok := subtle.ConstantTimeEq(int32(a>>32^aivPrefix), 0)
	inRange := uint64(mli) > uint64(8*(n-1)) && uint64(mli) <= uint64(8*n)
	plen := 0
	if inRange {
		plen = int(mli)
		var pad byte
		for _, c := range out[8+plen:] {
			pad |= c
		}
		ok &= subtle.ConstantTimeByteEq(pad, 0)
	} else {
		ok = 0
	}
	if ok != 1 {
		clear(out)
		return nil, ErrUnwrap
	}
	res := make([]byte, plen)
	copy(res, out[8:8+plen])
	clear(out)
	return res, nil
}
