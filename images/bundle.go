package images

import (
	"bytes"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Magic starts every bundle file: a non-ASCII byte (so a text-mode
// transfer that mangles 8-bit data is noticed), "HGIMG1" (format 1) and a
// newline.
const Magic = "\x89HGIMG1\n"

const tagBundle = "hsmgate/images/bundle/v1"

// MaxHeaderSize bounds a bundle header (the manifest and its signatures).
const MaxHeaderSize = 1 << 20

// prefixSize is the magic plus the 4-byte header length.
const prefixSize = len(Magic) + 4

// ErrMalformed: a bundle that is not a bundle: wrong magic, a header length
// out of range, or a header that does not decode.
var ErrMalformed = errors.New("images: malformed bundle")

// Envelope is a bundle's header: the manifest's canonical bytes, which is
// what release keys sign, and the signatures. Decoding one verifies
// nothing; Trust.Verify does.
type Envelope struct {
	// Manifest is the canonical encoding of the manifest.
	Manifest []byte
	// Signatures are release signatures over the manifest, in any order.
	Signatures []Signature
}

type envelopeWire struct {
	_          struct{} `cbor:",toarray"`
	Tag        string
	Manifest   []byte
	Signatures []Signature
}

// EncodeHeader returns the bundle's header bytes: Magic, the header
// length (uint32, big-endian), and the header, deterministic CBOR of
// [tag, manifest bytes, [[key id, signature]…]]. The payload follows them.
func (e *Envelope) EncodeHeader() ([]byte, error) {
	if len(e.Signatures) > MaxSignatures {
		return nil, fmt.Errorf("images: %d signatures, at most %d", len(e.Signatures), MaxSignatures)
	}
	h, err := marshal(envelopeWire{Tag: tagBundle, Manifest: e.Manifest, Signatures: e.Signatures})
	if err != nil {
		return nil, err
	}
	if len(h) > MaxHeaderSize {
		return nil, fmt.Errorf("images: bundle header of %d bytes is more than the %d allowed", len(h), MaxHeaderSize)
	}
	out := make([]byte, 0, prefixSize+len(h))
	out = append(out, Magic...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(h)))
	return append(out, h...), nil
}

// DecodeHeader strictly decodes exactly one bundle header (as EncodeHeader
// makes it, no payload). Duplicate or unknown signers are kept: they are
// the verifier's to refuse, each with its reason.
func DecodeHeader(data []byte) (*Envelope, error) {
	e, n, err := ReadHeader(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	if n != int64(len(data)) {
		return nil, fmt.Errorf("%w: %d bytes after the header", ErrMalformed, int64(len(data))-n)
	}
	return e, nil
}

// ReadHeader reads a bundle's header from r, leaving r at the first payload
// byte, and returns it with its length in bytes (the payload's offset).
func ReadHeader(r io.Reader) (*Envelope, int64, error) {
	var prefix [prefixSize]byte
	if _, err := io.ReadFull(r, prefix[:]); err != nil {
		return nil, 0, fmt.Errorf("%w: reading the header: %v", ErrMalformed, err)
	}
	if string(prefix[:len(Magic)]) != Magic {
		return nil, 0, fmt.Errorf("%w: not an hsmgate image bundle (wrong magic)", ErrMalformed)
	}
	n := binary.BigEndian.Uint32(prefix[len(Magic):])
	if n < 1 || n > MaxHeaderSize {
		return nil, 0, fmt.Errorf("%w: header length %d out of range", ErrMalformed, n)
	}
	h := make([]byte, n)
	if _, err := io.ReadFull(r, h); err != nil {
		return nil, 0, fmt.Errorf("%w: reading the %d-byte header: %v", ErrMalformed, n, err)
	}
	var w envelopeWire
	if err := unmarshalStrict(h, &w); err != nil {
		return nil, 0, fmt.Errorf("%w: header: %w", ErrMalformed, err)
	}
	if w.Tag != tagBundle {
		return nil, 0, fmt.Errorf("%w: header tag %q", ErrMalformed, w.Tag)
	}
	if len(w.Signatures) > MaxSignatures {
		return nil, 0, fmt.Errorf("%w: %d signatures, at most %d", ErrMalformed, len(w.Signatures), MaxSignatures)
	}
	if len(w.Manifest) == 0 {
		return nil, 0, fmt.Errorf("%w: empty manifest", ErrMalformed)
	}
	return &Envelope{Manifest: w.Manifest, Signatures: w.Signatures}, int64(prefixSize) + int64(n), nil
}

// Sign adds s's release signature over the manifest bytes. A signature by
// the same key is replaced, so signing twice does not add a duplicate.
func (e *Envelope) Sign(s Signer) error {
	sig, err := sign(s, tagReleaseSig, e.Manifest)
	if err != nil {
		return err
	}
	for i := range e.Signatures {
		if e.Signatures[i].KeyID == sig.KeyID {
			e.Signatures[i] = sig
			return nil
		}
	}
	if len(e.Signatures) >= MaxSignatures {
		return fmt.Errorf("images: the bundle already has %d signatures", MaxSignatures)
	}
	e.Signatures = append(e.Signatures, sig)
	return nil
}

// payloadDigest reads r to its end and returns the SHA-384 and size of
// what it read, copying it to sink if sink is not nil. It reads at most
// limit+1 bytes, so an oversized payload is noticed without reading it all.
func payloadDigest(r io.Reader, sink io.Writer, limit uint64) ([]byte, uint64, error) {
	h := sha512.New384()
	var w io.Writer = h
	if sink != nil {
		w = io.MultiWriter(h, sink)
	}
	n, err := io.Copy(w, io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, uint64(n), err
	}
	return h.Sum(nil), uint64(n), nil
}

// Build writes an unsigned bundle of the payload file to w: it fills in
// m's PayloadSHA384 and PayloadSize from the file, writes the header and
// copies the payload, checking that it did not change while it was copied.
// It returns the manifest written.
func Build(w io.Writer, m Manifest, payload *os.File) (*Manifest, error) {
	sum, size, err := payloadDigest(payload, nil, MaxPayloadSize)
	if err != nil {
		return nil, fmt.Errorf("images: reading the payload: %w", err)
	}
	if size > MaxPayloadSize {
		return nil, fmt.Errorf("images: the payload is more than %d bytes", uint64(MaxPayloadSize))
	}
	m.PayloadSHA384, m.PayloadSize = sum, size
	mb, err := m.Encode()
	if err != nil {
		return nil, err
	}
	header, err := (&Envelope{Manifest: mb}).EncodeHeader()
	if err != nil {
		return nil, err
	}
	if _, err := payload.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("images: rewinding the payload: %w", err)
	}
	if _, err := w.Write(header); err != nil {
		return nil, err
	}
	again, size2, err := payloadDigest(payload, w, MaxPayloadSize)
	if err != nil {
		return nil, fmt.Errorf("images: copying the payload: %w", err)
	}
	if size2 != size || !bytes.Equal(again, sum) {
		return nil, errors.New("images: the payload changed while the bundle was built")
	}
	return &m, nil
}

// ReadBundleHeader opens a bundle file and reads its header.
func ReadBundleHeader(path string) (*Envelope, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	e, _, err := ReadHeader(f)
	return e, err
}

// SignFile adds s's release signature to the bundle at path and writes the
// result to out (path itself when out is ""), atomically: a temporary file
// in out's folder, fsynced, renamed over out. Before signing it checks that
// the manifest decodes and that the payload matches the manifest's SHA-384
// and size, so nobody signs a manifest for a payload that is not there. It
// returns the signed envelope.
func SignFile(path, out string, s Signer) (*Envelope, error) {
	if out == "" {
		out = path
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	e, _, err := ReadHeader(f)
	if err != nil {
		return nil, err
	}
	m, err := DecodeManifest(e.Manifest)
	if err != nil {
		return nil, err
	}
	if err := e.Sign(s); err != nil {
		return nil, err
	}
	header, err := e.EncodeHeader()
	if err != nil {
		return nil, err
	}
	err = writeAtomic(out, 0o644, func(w io.Writer) error {
		if _, err := w.Write(header); err != nil {
			return err
		}
		return checkPayload(f, w, m)
	})
	if err != nil {
		return nil, err
	}
	return e, nil
}

// checkPayload copies the rest of r to sink (if not nil) and checks it
// against the manifest's size and SHA-384.
func checkPayload(r io.Reader, sink io.Writer, m *Manifest) error {
	sum, size, err := payloadDigest(r, sink, m.PayloadSize)
	if err != nil {
		return fmt.Errorf("images: reading the payload: %w", err)
	}
	if size != m.PayloadSize {
		more := ""
		if size > m.PayloadSize {
			more = "more than "
		}
		return fmt.Errorf("%w: the payload is %s%d bytes, the manifest says %d", ErrSizeMismatch, more, size, m.PayloadSize)
	}
	if !bytes.Equal(sum, m.PayloadSHA384) {
		return fmt.Errorf("%w: the payload's SHA-384 is %x, the manifest says %x", ErrPayloadDigest, sum, m.PayloadSHA384)
	}
	return nil
}

// writeAtomic writes a file through fill: a temporary file in path's
// folder, fsynced, renamed to path, the folder fsynced. On error nothing is
// left behind.
func writeAtomic(path string, perm os.FileMode, fill func(io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(perm); err != nil {
		return err
	}
	if err = fill(tmp); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
