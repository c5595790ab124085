package attest

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
)

// TCG PC Client event types used by the replay.
const (
	evNoAction = 0x00000003
)

// Algorithm IDs in the TCG event log (TPM_ALG_ID).
const (
	algSHA1   = 0x0004
	algSHA256 = 0x000B
)

// PlatformEvent is one event of the firmware's TCG event log.
type PlatformEvent struct {
	PCR  int    `json:"pcr"`
	Type uint32 `json:"type"`
	// SHA256 is the event's SHA-256 digest (nil for the legacy first
	// event, which carries only SHA-1).
	SHA256 []byte `json:"sha256,omitempty"`
	Data   []byte `json:"data"`
}

// ParsePlatformEventLog parses a TCG PC Client Platform Firmware Profile
// event log in the crypto-agile format (what Linux exposes as
// binary_bios_measurements): a TCG_PCClientPCREvent whose data is the
// "Spec ID Event03" header giving the digest sizes, then TCG_PCR_EVENT2
// records. All integers are little-endian.
func ParsePlatformEventLog(b []byte) ([]PlatformEvent, error) {
	r := bytes.NewReader(b)
	var hdr struct {
		PCR, Type uint32
		SHA1      [20]byte
		Size      uint32
	}
	if err := binary.Read(r, binary.LittleEndian, &hdr); err != nil {
		return nil, fmt.Errorf("event log header: %w", err)
	}
	if hdr.Type != evNoAction || hdr.Size > uint32(r.Len()) {
		return nil, errors.New("event log does not start with a Spec ID event")
	}
	spec := make([]byte, hdr.Size)
	_, _ = r.Read(spec)
	sizes, err := parseSpecID(spec)
	if err != nil {
		return nil, err
	}
	events := []PlatformEvent{{PCR: int(hdr.PCR), Type: hdr.Type, Data: spec}}
	for r.Len() > 0 {
		var h struct{ PCR, Type, Count uint32 }
		if err := binary.Read(r, binary.LittleEndian, &h); err != nil {
			return nil, fmt.Errorf("event %d: %w", len(events), err)
		}
		if h.PCR > 23 {
			return nil, fmt.Errorf("event %d: PCR %d", len(events), h.PCR)
		}
		if h.Count > uint32(len(sizes)) {
			return nil, fmt.Errorf("event %d: %d digests, the header declares %d algorithms", len(events), h.Count, len(sizes))
		}
		ev := PlatformEvent{PCR: int(h.PCR), Type: h.Type}
		for i := uint32(0); i < h.Count; i++ {
			var alg uint16
			if err := binary.Read(r, binary.LittleEndian, &alg); err != nil {
				return nil, fmt.Errorf("event %d: %w", len(events), err)
			}
			size, ok := sizes[alg]
			if !ok {
				return nil, fmt.Errorf("event %d: digest algorithm %#x not in the header", len(events), alg)
			}
			if int(size) > r.Len() {
				return nil, fmt.Errorf("event %d: truncated digest", len(events))
			}
			d := make([]byte, size)
			_, _ = r.Read(d)
			if alg == algSHA256 {
				ev.SHA256 = d
			}
		}
		var size uint32
		if err := binary.Read(r, binary.LittleEndian, &size); err != nil {
			return nil, fmt.Errorf("event %d: %w", len(events), err)
		}
		if size > uint32(r.Len()) {
			return nil, fmt.Errorf("event %d: truncated data", len(events))
		}
		ev.Data = make([]byte, size)
		_, _ = r.Read(ev.Data)
		events = append(events, ev)
	}
	return events, nil
}

// parseSpecID reads the digest sizes out of a TCG_EfiSpecIdEvent.
func parseSpecID(b []byte) (map[uint16]uint16, error) {
	const sig = "Spec ID Event03\x00"
	if len(b) < 24+4 || string(b[:16]) != sig {
		return nil, errors.New("event log is not in the crypto-agile (Spec ID Event03) format")
	}
	// signature[16] platformClass u32, versionMinor, versionMajor, errata,
	// uintnSize u8, numberOfAlgorithms u32, {algId u16, digestSize u16}...
	n := binary.LittleEndian.Uint32(b[24:28])
	if n == 0 || n > 16 || len(b) < 28+int(n)*4 {
		return nil, errors.New("bad algorithm list in the Spec ID event")
	}
	sizes := map[uint16]uint16{}
	for i := 0; i < int(n); i++ {
		o := 28 + 4*i
		sizes[binary.LittleEndian.Uint16(b[o:])] = binary.LittleEndian.Uint16(b[o+2:])
	}
	if sizes[algSHA256] != sha256.Size {
		return nil, errors.New("the event log has no SHA-256 bank")
	}
	return sizes, nil
}

// ReplayPlatformEventLog replays the SHA-256 bank of a parsed TCG log.
// EV_NO_ACTION events are not extended, except that a "StartupLocality"
// one sets PCR 0's initial value to the start-up locality (H-CRTM).
func ReplayPlatformEventLog(events []PlatformEvent) (map[int][]byte, error) {
	pcrs := map[int][]byte{}
	get := func(p int) []byte {
		if v, ok := pcrs[p]; ok {
			return v
		}
		return make([]byte, sha256.Size)
	}
	for i, e := range events {
		if e.Type == evNoAction {
			const loc = "StartupLocality\x00"
			if e.PCR == 0 && len(e.Data) == len(loc)+1 && string(e.Data[:len(loc)]) == loc {
				v := make([]byte, sha256.Size)
				v[sha256.Size-1] = e.Data[len(loc)]
				pcrs[0] = v
			}
			continue
		}
		if len(e.SHA256) != sha256.Size {
			return nil, fmt.Errorf("event %d (PCR %d) has no SHA-256 digest", i, e.PCR)
		}
		h := sha256.New()
		h.Write(get(e.PCR))
		h.Write(e.SHA256)
		pcrs[e.PCR] = h.Sum(nil)
	}
	return pcrs, nil
}

// loadPlatformLog reads the firmware event log named by the config (or the
// Linux default with a TPM device). A missing default is not an error; an
// unreadable or unparsable log is.
func (t *TPM) loadPlatformLog() error {
	path := t.cfg.PlatformEventLog
	if path == "" {
		if t.cfg.Device == "" {
			return nil
		}
		if _, err := os.Stat(DefaultPlatformEventLog); err != nil {
			return nil
		}
		path = DefaultPlatformEventLog
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("attest: platform event log: %w", err)
	}
	events, err := ParsePlatformEventLog(b)
	if err != nil {
		return fmt.Errorf("attest: platform event log %s: %w", path, err)
	}
	if _, err := ReplayPlatformEventLog(events); err != nil {
		return fmt.Errorf("attest: platform event log %s: %w", path, err)
	}
	for _, e := range events {
		if kind, ok := t.alloc.Kind(e.PCR); ok && e.Type != evNoAction {
			return fmt.Errorf("attest: the platform event log %s extends PCR %d, allocated to %s measurements: configure another PCR allocation", path, e.PCR, kind)
		}
	}
	t.platformLog = b
	return nil
}
