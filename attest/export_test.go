package attest

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
)

// AKTemplate lets tests re-derive the AK with raw TPM commands (to make it
// sign something that is not a quote).
var AKTemplate = akTemplate

// EncodePlatformEventLog encodes events (after a SHA-256-only Spec ID
// header) in the crypto-agile TCG format, for tests and tools that
// synthesise a firmware log. The first event of events, if it is the Spec ID
// event, is skipped.
func EncodePlatformEventLog(events []PlatformEvent) []byte {
	var b bytes.Buffer
	le := func(v any) { _ = binary.Write(&b, binary.LittleEndian, v) }
	spec := []byte("Spec ID Event03\x00")
	spec = binary.LittleEndian.AppendUint32(spec, 0) // platform class
	spec = append(spec, 0, 2, 0, 2)                  // version 2.0, errata 0, uintn 2 (64-bit)
	spec = binary.LittleEndian.AppendUint32(spec, 1)
	spec = binary.LittleEndian.AppendUint16(spec, algSHA256)
	spec = binary.LittleEndian.AppendUint16(spec, sha256.Size)
	spec = append(spec, 0) // no vendor info
	le(uint32(0))
	le(uint32(evNoAction))
	b.Write(make([]byte, 20))
	le(uint32(len(spec)))
	b.Write(spec)
	for i, e := range events {
		if i == 0 && e.Type == evNoAction && bytes.HasPrefix(e.Data, []byte("Spec ID Event03")) {
			continue
		}
		le(uint32(e.PCR))
		le(e.Type)
		if e.SHA256 == nil {
			le(uint32(0))
		} else {
			le(uint32(1))
			le(uint16(algSHA256))
			b.Write(e.SHA256)
		}
		le(uint32(len(e.Data)))
		b.Write(e.Data)
	}
	return b.Bytes()
}
