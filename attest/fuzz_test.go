package attest_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/hsmgate/hsmgate/attest"
)

// FuzzParsePlatformEventLog: the firmware's TCG log is binary input the
// gateway reads from the kernel and a verifier receives in an attestation
// document. Whatever it is given, the parser returns events or an error,
// never panics, and what it accepts replays without panicking and encodes
// back to a log that parses to the same events.
func FuzzParsePlatformEventLog(f *testing.F) {
	f.Add(attest.EncodePlatformEventLog(firmware))
	f.Add(attest.EncodePlatformEventLog(append([]attest.PlatformEvent{{PCR: 0, Type: 3, Data: []byte("StartupLocality\x00\x03")}}, firmware...)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		events, err := attest.ParsePlatformEventLog(b)
		if err != nil {
			return
		}
		if len(events) == 0 {
			t.Fatal("a parsed log has no Spec ID event")
		}
		if _, err := attest.ReplayPlatformEventLog(events); err != nil {
			return
		}
		// Re-encoded with a SHA-256-only header, the events keep their
		// PCR, type, SHA-256 digest and data.
		again, err := attest.ParsePlatformEventLog(attest.EncodePlatformEventLog(events))
		if err != nil {
			t.Fatalf("re-encoded log does not parse: %v", err)
		}
		if len(again) != len(events) {
			t.Fatalf("re-encoded log has %d events, want %d", len(again), len(events))
		}
		for i := 1; i < len(events); i++ {
			a, g := events[i], again[i]
			if a.PCR != g.PCR || a.Type != g.Type || !bytes.Equal(a.SHA256, g.SHA256) || !bytes.Equal(a.Data, g.Data) {
				t.Fatalf("event %d = %+v after re-encoding, want %+v", i, g, a)
			}
		}
	})
}

// FuzzParseEventLog: the measurement log is JSON that a verifier receives
// in an attestation document and the gateway reads back from its state
// folder. What parses is valid (Validate passes) and can be used to
// predict PCRs.
func FuzzParseEventLog(f *testing.F) {
	valid := attest.EventLog{Format: attest.LogFormat, Hash: "sha256",
		PCRs:   attest.PCRAllocation{Image: 12, Binary: 13, Config: 15},
		Boot:   attest.BootID{ResetCount: 3, RestartCount: 1},
		Events: []attest.Event{{Seq: 0, PCR: 12, Kind: attest.KindImage, Name: "pkcs11-modules", Digest: digest("image")}},
	}
	raw, err := json.Marshal(valid)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add([]byte(`{"format":"` + attest.LogFormat + `","hash":"sha256","pcrs":{"image":12,"binary":13,"config":15},"boot":{"resetCount":0,"restartCount":0},"events":[]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := attest.ParseEventLog(b)
		if err != nil {
			return
		}
		if err := l.Validate(); err != nil {
			t.Fatalf("ParseEventLog accepted a log that Validate refuses: %v", err)
		}
		if _, err := attest.PredictPCRs(l); err != nil {
			t.Fatalf("PredictPCRs on a parsed log: %v", err)
		}
	})
}
