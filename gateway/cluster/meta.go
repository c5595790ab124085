package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/hsmgate/hsmgate/hsmpool"
)

// Node metadata: what every gateway tells the gossip pool about itself,
// carried in memberlist's node meta field (at most 512 bytes, memberlist's
// MetaMaxSize) and re-sent whenever it changes.
//
// # Encoding (version 1)
//
// A fixed layout, big-endian, each string preceded by its length in one
// byte:
//
//	size   field
//	1      format version: 1
//	1      flags: bit 0 leaving (the node is leaving the cluster), the
//	       other bits 0
//	1      attestation state: 0 off, 1 measured, 2 failed
//	1+n    node id         n = 1..64, [A-Za-z0-9._-]
//	1+n    zone            n = 1..32, [A-Za-z0-9._-]
//	1+n    API address     n = 1..128, host:port, printable ASCII
//	1+n    image version   n = 0..64, printable ASCII without space
//	2      healthy slots   u16
//	2      degraded slots  u16
//	2      failed slots    u16
//	1      listed slots    n = min(healthy+degraded+failed, 64)
//	n      slot states     1 healthy, 2 degraded, 3 failed; pool order
//	4      in flight       u32, requests being served
//	4      max in flight   u32, the gateway's limit
//	4      requests/s      u32, requests finished per second, recently
//
// The largest encoding is [MaxMetaSize] (378) bytes. Decoding is strict:
// every field must be in range, strings in their alphabets, the slot list
// as long as the rule says and consistent with the counts, and nothing may
// follow the last field. So a byte string decodes to at most one NodeMeta
// and re-encodes to itself: there is one encoding of each value.
//
// A decoder accepts its own version only. A later layout gets a new version
// number, and during a rolling upgrade the new nodes keep publishing the old
// version until every node reads the new one.

// MetaVersion is the version of the metadata layout this package writes and
// reads.
const MetaVersion = 1

// Limits of the metadata fields.
const (
	MaxNodeIDLen       = 64
	MaxZoneLen         = 32
	MaxAPIAddressLen   = 128
	MaxImageVersionLen = 64
	// MaxListedSlots caps the per-slot list: a pool with more slots lists
	// its first MaxListedSlots, in configuration order; the counts always
	// cover every slot.
	MaxListedSlots = 64
	// MaxMetaSize is the largest encoded NodeMeta, well under memberlist's
	// 512-byte limit.
	MaxMetaSize = 3 + (1 + MaxNodeIDLen) + (1 + MaxZoneLen) + (1 + MaxAPIAddressLen) +
		(1 + MaxImageVersionLen) + 3*2 + 1 + MaxListedSlots + 3*4
)

// ErrMetaMalformed is wrapped by every error of DecodeNodeMeta.
var ErrMetaMalformed = errors.New("malformed node metadata")

// ErrMetaInvalid is wrapped by every error of NodeMeta.MarshalBinary: a
// field is out of range.
var ErrMetaInvalid = errors.New("invalid node metadata")

// MetaError says which field of an encoded NodeMeta is wrong and why. It
// wraps ErrMetaMalformed.
type MetaError struct {
	Offset int    // byte offset where the field starts
	Field  string // "zone", "slot states", …
	Reason string
}

func (e *MetaError) Error() string {
	return fmt.Sprintf("%v: %s at byte %d: %s", ErrMetaMalformed, e.Field, e.Offset, e.Reason)
}

func (e *MetaError) Unwrap() error { return ErrMetaMalformed }

// AttestationState is what a gateway reports about its own measured boot.
// It is a claim, not proof: a gateway that forwards requests to a peer
// verifies the peer's attestation itself ([PeerVerifier]).
type AttestationState uint8

const (
	// AttestationOff: the gateway has no TPM attestation.
	AttestationOff AttestationState = iota
	// AttestationMeasured: its boot was measured into a TPM, it serves
	// /attestation, and its attestation check holds.
	AttestationMeasured
	// AttestationFailed: it has a TPM, but its attestation check fails (the
	// TPM was reset or its PCRs changed under it).
	AttestationFailed
)

func (a AttestationState) String() string {
	switch a {
	case AttestationOff:
		return "off"
	case AttestationMeasured:
		return "measured"
	case AttestationFailed:
		return "failed"
	}
	return fmt.Sprintf("AttestationState(%d)", uint8(a))
}

// MarshalText writes the state's name, for JSON.
func (a AttestationState) MarshalText() ([]byte, error) {
	if a > AttestationFailed {
		return nil, fmt.Errorf("%w: attestation state %d", ErrMetaInvalid, uint8(a))
	}
	return []byte(a.String()), nil
}

// UnmarshalText reads a state's name.
func (a *AttestationState) UnmarshalText(b []byte) error {
	for s := AttestationOff; s <= AttestationFailed; s++ {
		if s.String() == string(b) {
			*a = s
			return nil
		}
	}
	return fmt.Errorf("unknown attestation state %q", b)
}

// SlotHealth is one HSM slot's health as gossiped: coarser than
// hsmpool.State, which it is derived from (SlotHealthOf).
type SlotHealth uint8

const (
	// SlotHealthy: the slot serves requests.
	SlotHealthy SlotHealth = 1 + iota
	// SlotDegraded: the slot is quarantined; the pool's prober is resetting
	// it and it may come back on its own.
	SlotDegraded
	// SlotFailed: the slot is out until an operator acts (login refused, no
	// or the wrong domain key).
	SlotFailed
)

func (s SlotHealth) String() string {
	switch s {
	case SlotHealthy:
		return "healthy"
	case SlotDegraded:
		return "degraded"
	case SlotFailed:
		return "failed"
	}
	return fmt.Sprintf("SlotHealth(%d)", uint8(s))
}

// MarshalText writes the health's name, for JSON.
func (s SlotHealth) MarshalText() ([]byte, error) {
	if s < SlotHealthy || s > SlotFailed {
		return nil, fmt.Errorf("%w: slot health %d", ErrMetaInvalid, uint8(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText reads a health's name.
func (s *SlotHealth) UnmarshalText(b []byte) error {
	for h := SlotHealthy; h <= SlotFailed; h++ {
		if h.String() == string(b) {
			*s = h
			return nil
		}
	}
	return fmt.Errorf("unknown slot health %q", b)
}

// SlotHealthOf maps a pool slot state to its gossiped health.
func SlotHealthOf(s hsmpool.State) SlotHealth {
	switch s {
	case hsmpool.StateHealthy:
		return SlotHealthy
	case hsmpool.StateQuarantined:
		return SlotDegraded
	}
	return SlotFailed
}

// PoolSlotHealth is the health of every slot of a pool status, in its
// order: SlotHealthOf each pool.Status() entry.
func PoolSlotHealth(status []hsmpool.SlotStatus) []SlotHealth {
	out := make([]SlotHealth, len(status))
	for i, s := range status {
		out[i] = SlotHealthOf(s.State)
	}
	return out
}

// SlotSummary is a pool's health: counts of every slot by health, and the
// health of the first MaxListedSlots slots in configuration order.
type SlotSummary struct {
	Healthy  int          `json:"healthy"`
	Degraded int          `json:"degraded"`
	Failed   int          `json:"failed"`
	Listed   []SlotHealth `json:"listed,omitempty"`
}

// Total is the number of slots.
func (s SlotSummary) Total() int { return s.Healthy + s.Degraded + s.Failed }

// SummarizeSlots counts slots by health and lists the first
// MaxListedSlots. Counts saturate at 65535, the most the encoding holds.
// An unknown health counts as failed.
func SummarizeSlots(slots []SlotHealth) SlotSummary {
	var s SlotSummary
	listed := 0
	for _, h := range slots {
		if h < SlotHealthy || h > SlotFailed {
			h = SlotFailed
		}
		var c *int
		switch h {
		case SlotHealthy:
			c = &s.Healthy
		case SlotDegraded:
			c = &s.Degraded
		default:
			c = &s.Failed
		}
		if *c == 0xffff {
			continue // saturated: neither counted nor listed
		}
		*c++
		if listed < MaxListedSlots {
			s.Listed = append(s.Listed, h)
			listed++
		}
	}
	return s
}

// NodeMeta is a gateway's gossiped metadata.
type NodeMeta struct {
	// NodeID is the node's name in the pool: unique in the cluster.
	NodeID string `json:"nodeId"`
	// Zone is the availability zone the node runs in.
	Zone string `json:"zone"`
	// APIAddress is where peers reach the node's HTTPS API (host:port):
	// forwarded requests and attestation.
	APIAddress string `json:"apiAddress"`
	// ImageVersion is the firmware image (or build) the node runs; "" when
	// unknown.
	ImageVersion string `json:"imageVersion,omitempty"`
	// Attestation is the node's own claim about its measured boot.
	Attestation AttestationState `json:"attestation"`
	// Slots is the node's HSM pool health.
	Slots SlotSummary `json:"slots"`
	// InFlight is how many requests the node is serving, MaxInFlight its
	// limit (0: not reported), RPS how many it finished per second lately.
	InFlight    uint32 `json:"inFlight"`
	MaxInFlight uint32 `json:"maxInFlight"`
	RPS         uint32 `json:"rps"`
	// Leaving is set by a node about to leave the cluster: it takes no
	// more forwarded requests, and its departure is not a failure.
	Leaving bool `json:"leaving,omitempty"`
}

// metaFlagLeaving is the flags bit of NodeMeta.Leaving.
const metaFlagLeaving = 1

// MarshalBinary encodes m (version 1). It refuses a field out of range
// rather than truncate it, except the slot list, which SummarizeSlots
// caps; the result is never longer than MaxMetaSize.
func (m *NodeMeta) MarshalBinary() ([]byte, error) {
	if err := metaCheckString(m.NodeID, 1, MaxNodeIDLen, metaIsIDByte); err != nil {
		return nil, fmt.Errorf("%w: node id: %v", ErrMetaInvalid, err)
	}
	if err := metaCheckString(m.Zone, 1, MaxZoneLen, metaIsIDByte); err != nil {
		return nil, fmt.Errorf("%w: zone: %v", ErrMetaInvalid, err)
	}
	if err := metaCheckString(m.APIAddress, 1, MaxAPIAddressLen, metaIsAddressByte); err != nil {
		return nil, fmt.Errorf("%w: API address: %v", ErrMetaInvalid, err)
	}
	if err := metaCheckString(m.ImageVersion, 0, MaxImageVersionLen, metaIsVersionByte); err != nil {
		return nil, fmt.Errorf("%w: image version: %v", ErrMetaInvalid, err)
	}
	if m.Attestation > AttestationFailed {
		return nil, fmt.Errorf("%w: attestation state %d", ErrMetaInvalid, uint8(m.Attestation))
	}
	if err := m.Slots.check(); err != nil {
		return nil, fmt.Errorf("%w: slots: %v", ErrMetaInvalid, err)
	}
	b := make([]byte, 0, MaxMetaSize)
	var flags byte
	if m.Leaving {
		flags |= metaFlagLeaving
	}
	b = append(b, MetaVersion, flags, byte(m.Attestation))
	for _, s := range []string{m.NodeID, m.Zone, m.APIAddress, m.ImageVersion} {
		b = append(b, byte(len(s)))
		b = append(b, s...)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(m.Slots.Healthy))
	b = binary.BigEndian.AppendUint16(b, uint16(m.Slots.Degraded))
	b = binary.BigEndian.AppendUint16(b, uint16(m.Slots.Failed))
	b = append(b, byte(len(m.Slots.Listed)))
	for _, h := range m.Slots.Listed {
		b = append(b, byte(h))
	}
	b = binary.BigEndian.AppendUint32(b, m.InFlight)
	b = binary.BigEndian.AppendUint32(b, m.MaxInFlight)
	b = binary.BigEndian.AppendUint32(b, m.RPS)
	return b, nil
}

// check is the rule both the encoder and the decoder enforce on a summary.
func (s *SlotSummary) check() error {
	for _, c := range []int{s.Healthy, s.Degraded, s.Failed} {
		if c < 0 || c > 0xffff {
			return fmt.Errorf("a count of %d is out of range 0..65535", c)
		}
	}
	want := min(s.Total(), MaxListedSlots)
	if len(s.Listed) != want {
		return fmt.Errorf("%d slots listed, want %d (the first %d of %d)", len(s.Listed), want, want, s.Total())
	}
	var n [4]int
	for i, h := range s.Listed {
		if h < SlotHealthy || h > SlotFailed {
			return fmt.Errorf("slot %d: unknown health %d", i, uint8(h))
		}
		n[h]++
	}
	if n[SlotHealthy] > s.Healthy || n[SlotDegraded] > s.Degraded || n[SlotFailed] > s.Failed {
		return fmt.Errorf("the listed slots (%d healthy, %d degraded, %d failed) exceed the counts (%d, %d, %d)",
			n[SlotHealthy], n[SlotDegraded], n[SlotFailed], s.Healthy, s.Degraded, s.Failed)
	}
	return nil
}

// DecodeNodeMeta decodes metadata a peer published. Any error wraps
// ErrMetaMalformed (and is a *MetaError); it never panics, whatever b is.
func DecodeNodeMeta(b []byte) (*NodeMeta, error) {
	if len(b) > MaxMetaSize {
		return nil, &MetaError{Offset: 0, Field: "metadata", Reason: fmt.Sprintf("%d bytes, more than the %d a version %d encoding can be", len(b), MaxMetaSize, MetaVersion)}
	}
	d := metaDecoder{b: b}
	if v := d.byte("version"); d.err == nil && v != MetaVersion {
		return nil, &MetaError{Offset: 0, Field: "version", Reason: fmt.Sprintf("version %d, this node reads version %d", v, MetaVersion)}
	}
	m := &NodeMeta{}
	off := d.off
	if f := d.byte("flags"); d.err == nil {
		if f&^metaFlagLeaving != 0 {
			return nil, &MetaError{Offset: off, Field: "flags", Reason: fmt.Sprintf("unknown flags 0x%02x", f&^metaFlagLeaving)}
		}
		m.Leaving = f&metaFlagLeaving != 0
	}
	off = d.off
	if a := d.byte("attestation state"); d.err == nil {
		if AttestationState(a) > AttestationFailed {
			return nil, &MetaError{Offset: off, Field: "attestation state", Reason: fmt.Sprintf("unknown state %d", a)}
		}
		m.Attestation = AttestationState(a)
	}
	m.NodeID = d.string("node id", 1, MaxNodeIDLen, metaIsIDByte)
	m.Zone = d.string("zone", 1, MaxZoneLen, metaIsIDByte)
	m.APIAddress = d.string("API address", 1, MaxAPIAddressLen, metaIsAddressByte)
	m.ImageVersion = d.string("image version", 0, MaxImageVersionLen, metaIsVersionByte)
	m.Slots.Healthy = int(d.uint16("healthy slots"))
	m.Slots.Degraded = int(d.uint16("degraded slots"))
	m.Slots.Failed = int(d.uint16("failed slots"))
	off = d.off
	if n := int(d.byte("listed slots")); d.err == nil {
		if want := min(m.Slots.Total(), MaxListedSlots); n != want {
			return nil, &MetaError{Offset: off, Field: "listed slots", Reason: fmt.Sprintf("%d listed, want %d", n, want)}
		}
		off = d.off
		raw := d.bytes("slot states", n)
		if d.err == nil && n > 0 {
			m.Slots.Listed = make([]SlotHealth, n)
			for i, h := range raw {
				m.Slots.Listed[i] = SlotHealth(h)
			}
			if err := m.Slots.check(); err != nil {
				return nil, &MetaError{Offset: off, Field: "slot states", Reason: err.Error()}
			}
		}
	}
	m.InFlight = d.uint32("in flight")
	m.MaxInFlight = d.uint32("max in flight")
	m.RPS = d.uint32("requests per second")
	if d.err != nil {
		return nil, d.err
	}
	if d.off != len(b) {
		return nil, &MetaError{Offset: d.off, Field: "end", Reason: fmt.Sprintf("%d bytes follow the last field", len(b)-d.off)}
	}
	return m, nil
}

// metaDecoder reads fields in order; after the first error every read
// returns a zero value and the error stays.
type metaDecoder struct {
	b   []byte
	off int
	err *MetaError
}

func (d *metaDecoder) bytes(field string, n int) []byte {
	if d.err != nil {
		return nil
	}
	if n > len(d.b)-d.off {
		d.err = &MetaError{Offset: d.off, Field: field, Reason: fmt.Sprintf("needs %d bytes, %d left", n, len(d.b)-d.off)}
		return nil
	}
	out := d.b[d.off : d.off+n]
	d.off += n
	return out
}

func (d *metaDecoder) byte(field string) byte {
	if b := d.bytes(field, 1); b != nil {
		return b[0]
	}
	return 0
}

func (d *metaDecoder) uint16(field string) uint16 {
	if b := d.bytes(field, 2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (d *metaDecoder) uint32(field string) uint32 {
	if b := d.bytes(field, 4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (d *metaDecoder) string(field string, minLen, maxLen int, ok func(byte) bool) string {
	off := d.off
	n := int(d.byte(field + " length"))
	if d.err != nil {
		return ""
	}
	if n < minLen || n > maxLen {
		d.err = &MetaError{Offset: off, Field: field, Reason: fmt.Sprintf("length %d, want %d..%d", n, minLen, maxLen)}
		return ""
	}
	raw := d.bytes(field, n)
	if d.err != nil {
		return ""
	}
	if i := slices.IndexFunc(raw, func(c byte) bool { return !ok(c) }); i >= 0 {
		d.err = &MetaError{Offset: off + 1 + i, Field: field, Reason: fmt.Sprintf("byte 0x%02x is not allowed", raw[i])}
		return ""
	}
	return string(raw)
}

// metaCheckString is the encoder's check of a string field.
func metaCheckString(s string, minLen, maxLen int, ok func(byte) bool) error {
	if len(s) < minLen || len(s) > maxLen {
		return fmt.Errorf("%d bytes, want %d..%d", len(s), minLen, maxLen)
	}
	for i := 0; i < len(s); i++ {
		if !ok(s[i]) {
			return fmt.Errorf("character %q is not allowed", s[i])
		}
	}
	return nil
}

// metaIsIDByte is the alphabet of node ids and zones.
func metaIsIDByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

// metaIsAddressByte allows host:port with a DNS name, an IPv4 address or a
// bracketed IPv6 address (with a zone after %).
func metaIsAddressByte(c byte) bool {
	return metaIsIDByte(c) || c == ':' || c == '[' || c == ']' || c == '%'
}

// metaIsVersionByte is printable ASCII without space.
func metaIsVersionByte(c byte) bool { return c > ' ' && c < 0x7f }
