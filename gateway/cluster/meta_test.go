package cluster

import (
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/hsmgate/hsmgate/hsmpool"
)

func sampleMeta() *NodeMeta {
	return &NodeMeta{
		NodeID: "gw-a1", Zone: "eu-west-1a", APIAddress: "10.0.1.5:8443", ImageVersion: "2025.06.1",
		Attestation: AttestationMeasured,
		Slots:       SummarizeSlots([]SlotHealth{SlotHealthy, SlotDegraded, SlotHealthy, SlotFailed}),
		InFlight:    7, MaxInFlight: 1024, RPS: 3500,
	}
}

// largestMeta has every field at its longest.
func largestMeta() *NodeMeta {
	slots := make([]SlotHealth, 70000)
	for i := range slots {
		slots[i] = SlotHealth(1 + i%3)
	}
	return &NodeMeta{
		NodeID: strings.Repeat("n", MaxNodeIDLen), Zone: strings.Repeat("z", MaxZoneLen),
		APIAddress: "[" + strings.Repeat("f", MaxAPIAddressLen-7) + "]:8443", ImageVersion: strings.Repeat("v", MaxImageVersionLen),
		Attestation: AttestationFailed, Slots: SummarizeSlots(slots),
		InFlight: 1<<32 - 1, MaxInFlight: 1<<32 - 1, RPS: 1<<32 - 1,
	}
}

// The layout, byte for byte, as docs/cluster.md and meta.go describe it.
func TestNodeMetaLayout(t *testing.T) {
	b, err := sampleMeta().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	want := "01" + "00" + "01" + // version, flags, attestation measured
		"05" + hex.EncodeToString([]byte("gw-a1")) +
		"0a" + hex.EncodeToString([]byte("eu-west-1a")) +
		"0d" + hex.EncodeToString([]byte("10.0.1.5:8443")) +
		"09" + hex.EncodeToString([]byte("2025.06.1")) +
		"0002" + "0001" + "0001" + // healthy, degraded, failed
		"04" + "01020103" + // four listed, in pool order
		"00000007" + "00000400" + "00000dac"
	if got := hex.EncodeToString(b); got != want {
		t.Errorf("encoding\n got %s\nwant %s", got, want)
	}
}

func TestNodeMetaRoundTrip(t *testing.T) {
	for name, m := range map[string]*NodeMeta{
		"sample":  sampleMeta(),
		"largest": largestMeta(),
		"minimal": {NodeID: "a", Zone: "z", APIAddress: "h:1"},
		"leaving": {NodeID: "a", Zone: "z", APIAddress: "h:1", Leaving: true},
	} {
		t.Run(name, func(t *testing.T) {
			b, err := m.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > MaxMetaSize {
				t.Errorf("%d bytes, more than MaxMetaSize %d", len(b), MaxMetaSize)
			}
			got, err := DecodeNodeMeta(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, m) {
				t.Errorf("decoded %+v, want %+v", got, m)
			}
		})
	}
	if b, _ := largestMeta().MarshalBinary(); len(b) != MaxMetaSize {
		t.Errorf("the largest metadata is %d bytes, MaxMetaSize says %d", len(b), MaxMetaSize)
	}
	if MaxMetaSize > 512 {
		t.Errorf("MaxMetaSize %d exceeds memberlist's 512-byte limit", MaxMetaSize)
	}
}

// The slot list is capped deterministically; the counts cover every slot
// (saturating).
func TestSummarizeSlots(t *testing.T) {
	s := SummarizeSlots([]SlotHealth{SlotFailed, SlotHealthy, 0, 9, SlotDegraded})
	want := SlotSummary{Healthy: 1, Degraded: 1, Failed: 3, Listed: []SlotHealth{SlotFailed, SlotHealthy, SlotFailed, SlotFailed, SlotDegraded}}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("SummarizeSlots = %+v, want %+v (unknown health counts as failed)", s, want)
	}
	many := make([]SlotHealth, 100)
	for i := range many {
		many[i] = SlotHealthy
	}
	many[99] = SlotFailed
	s = SummarizeSlots(many)
	if s.Healthy != 99 || s.Failed != 1 || len(s.Listed) != MaxListedSlots {
		t.Errorf("100 slots: %d healthy, %d failed, %d listed; want 99, 1, %d", s.Healthy, s.Failed, len(s.Listed), MaxListedSlots)
	}
	if !reflect.DeepEqual(SummarizeSlots(many), s) {
		t.Error("SummarizeSlots is not deterministic")
	}
	huge := make([]SlotHealth, 70000)
	for i := range huge {
		huge[i] = SlotHealthy
	}
	if s := SummarizeSlots(huge); s.Healthy != 0xffff {
		t.Errorf("70000 healthy slots count %d, want 65535 (saturated)", s.Healthy)
	}
	if got := PoolSlotHealth([]hsmpool.SlotStatus{{State: hsmpool.StateHealthy}, {State: hsmpool.StateQuarantined}, {State: hsmpool.StateFailed},
		{State: hsmpool.StateNoDomainKey}, {State: hsmpool.StateMismatch}}); !reflect.DeepEqual(got, []SlotHealth{SlotHealthy, SlotDegraded, SlotFailed, SlotFailed, SlotFailed}) {
		t.Errorf("PoolSlotHealth = %v", got)
	}
}

// The encoder refuses what does not fit rather than truncate it.
func TestNodeMetaMarshalRefuses(t *testing.T) {
	for name, edit := range map[string]func(*NodeMeta){
		"empty id":            func(m *NodeMeta) { m.NodeID = "" },
		"long id":             func(m *NodeMeta) { m.NodeID = strings.Repeat("a", MaxNodeIDLen+1) },
		"id with space":       func(m *NodeMeta) { m.NodeID = "gw a" },
		"id not ASCII":        func(m *NodeMeta) { m.NodeID = "gw-é" },
		"empty zone":          func(m *NodeMeta) { m.Zone = "" },
		"long zone":           func(m *NodeMeta) { m.Zone = strings.Repeat("z", MaxZoneLen+1) },
		"long address":        func(m *NodeMeta) { m.APIAddress = strings.Repeat("h", MaxAPIAddressLen) + ":1" },
		"address with slash":  func(m *NodeMeta) { m.APIAddress = "h/1:80" },
		"long image version":  func(m *NodeMeta) { m.ImageVersion = strings.Repeat("v", MaxImageVersionLen+1) },
		"image version space": func(m *NodeMeta) { m.ImageVersion = "1 2" },
		"attestation":         func(m *NodeMeta) { m.Attestation = 3 },
		"negative count":      func(m *NodeMeta) { m.Slots.Healthy = -1 },
		"count too big":       func(m *NodeMeta) { m.Slots.Failed = 1 << 16 },
		"list too short":      func(m *NodeMeta) { m.Slots.Listed = m.Slots.Listed[:3] },
		"list inconsistent":   func(m *NodeMeta) { m.Slots.Listed[1] = SlotHealthy },
		"unknown health":      func(m *NodeMeta) { m.Slots.Listed[0] = 0 },
	} {
		t.Run(name, func(t *testing.T) {
			m := sampleMeta()
			edit(m)
			if _, err := m.MarshalBinary(); !errors.Is(err, ErrMetaInvalid) {
				t.Errorf("MarshalBinary: %v, want ErrMetaInvalid", err)
			}
		})
	}
}

// Every way to break an encoding is refused with a MetaError naming the
// field; none panics.
func TestDecodeNodeMetaRejects(t *testing.T) {
	good, err := sampleMeta().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeNodeMeta(good); err != nil {
		t.Fatalf("the good encoding: %v", err)
	}
	set := func(off int, v ...byte) []byte {
		b := bytes.Clone(good)
		copy(b[off:], v)
		return b
	}
	// Offsets in the sample: flags at 1, id length at 3, zone length at 9,
	// address length at 20, image length at 34, counts at 44, listed at 50.
	cases := map[string]struct {
		b     []byte
		field string
	}{
		"empty":              {nil, "version"},
		"version 2":          {set(0, 2), "version"},
		"version 0":          {set(0, 0), "version"},
		"unknown flag":       {set(1, 2), "flags"},
		"attestation 3":      {set(2, 3), "attestation state"},
		"id length 0":        {set(3, 0), "node id"},
		"id length 65":       {set(3, 65), "node id"},
		"id byte":            {set(4, ' '), "node id"},
		"zone byte":          {set(10, 0), "zone"},
		"address byte":       {set(21, '/'), "API address"},
		"image byte":         {set(35, 0x7f), "image version"},
		"listed wrong":       {set(50, 3), "listed slots"},
		"slot health 0":      {set(51, 0), "slot states"},
		"slot health 4":      {set(51, 4), "slot states"},
		"slots inconsistent": {set(52, 1), "slot states"},
		"count vs list":      {set(44, 0, 0), "listed slots"},
		"trailing byte":      {append(bytes.Clone(good), 0), "end"},
		"truncated":          {good[:len(good)-1], "requests per second"},
		"truncated string":   {good[:11], "zone"},
		"oversized":          {make([]byte, MaxMetaSize+1), "metadata"},
		"512 bytes":          {append(bytes.Clone(good), make([]byte, 512-len(good))...), "metadata"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			m, err := DecodeNodeMeta(tc.b)
			var me *MetaError
			if !errors.As(err, &me) || !errors.Is(err, ErrMetaMalformed) {
				t.Fatalf("DecodeNodeMeta = %+v, %v; want a MetaError", m, err)
			}
			if me.Field != tc.field {
				t.Errorf("field %q, want %q (%v)", me.Field, tc.field, err)
			}
			if m != nil {
				t.Errorf("a value came with the error: %+v", m)
			}
		})
	}
}

// FuzzNodeMeta: no input panics the decoder, and whatever decodes
// re-encodes to the same bytes (one encoding per value) and decodes again
// to the same value.
func FuzzNodeMeta(f *testing.F) {
	for _, m := range []*NodeMeta{sampleMeta(), largestMeta(), {NodeID: "a", Zone: "z", APIAddress: "h:1"}} {
		b, err := m.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add([]byte{2, 0, 1, 'a'})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeNodeMeta(b)
		if err != nil {
			if m != nil || !errors.Is(err, ErrMetaMalformed) {
				t.Fatalf("DecodeNodeMeta = %+v, %v", m, err)
			}
			return
		}
		out, err := m.MarshalBinary()
		if err != nil {
			t.Fatalf("a decoded value does not encode: %v (%+v)", err, m)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("re-encoding differs:\n in  %x\n out %x", b, out)
		}
		again, err := DecodeNodeMeta(out)
		if err != nil || !reflect.DeepEqual(again, m) {
			t.Fatalf("decode(encode(m)) = %+v, %v; want %+v", again, err, m)
		}
	})
}
