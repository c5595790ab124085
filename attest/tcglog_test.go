package attest_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hsmgate/hsmgate/attest"
)

// firmware is a synthetic firmware boot: events for PCRs 0 and 7.
var firmware = []attest.PlatformEvent{
	{PCR: 0, Type: 0x80000008, SHA256: digest("platform firmware blob"), Data: []byte("FV")},
	{PCR: 7, Type: 0x800000e0, SHA256: digest("SecureBoot=1"), Data: []byte("SecureBoot")},
	{PCR: 0, Type: 0x00000004, SHA256: digest("separator"), Data: []byte{0, 0, 0, 0}},
	{PCR: 7, Type: 0x00000004, SHA256: digest("separator"), Data: []byte{0, 0, 0, 0}},
}

func replayed(t testing.TB, events []attest.PlatformEvent) map[int][]byte {
	t.Helper()
	r, err := attest.ReplayPlatformEventLog(events)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestPlatformEventLog: with the firmware's TCG log, PCRs 0–7 are quoted
// and replayed too, and can be pinned by the golden policy.
func TestPlatformEventLog(t *testing.T) {
	sw := swtpmStart(t)
	tp := raw(t, sw)
	for _, e := range firmware {
		rawExtend(t, tp, e.PCR, e.SHA256)
	}
	logPath := filepath.Join(sw.Dir, "binary_bios_measurements")
	if err := os.WriteFile(logPath, attest.EncodePlatformEventLog(firmware), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := sw.Config()
	cfg.PlatformEventLog = logPath
	tpm := open(t, cfg)
	goodBoot.measure(t, tpm)
	enr := enroll(t, tpm)

	n := nonce(t)
	doc := attestJSON(t, tpm, n)
	pcr7 := replayed(t, firmware)[7]
	policy := goodBoot.policy()
	policy.PlatformPCRs = map[int][]byte{7: pcr7}
	st, err := attest.Verify(doc, *enr, n, tlsKeyHash, policy)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if len(st.PCRs) != 11 || len(st.PlatformEvents) != len(firmware)+1 {
		t.Errorf("boot state has %d PCRs and %d platform events", len(st.PCRs), len(st.PlatformEvents))
	}

	// Negative twins.
	tampered := append([]attest.PlatformEvent{}, firmware...)
	tampered[1] = attest.PlatformEvent{PCR: 7, Type: 0x800000e0, SHA256: digest("SecureBoot=0"), Data: []byte("SecureBoot")}
	for _, c := range []struct {
		name   string
		doc    []byte
		policy attest.GoldenPolicy
		want   error
	}{
		{"tampered platform log", editDoc(t, doc, func(d *attest.Document) { d.PlatformEventLog = attest.EncodePlatformEventLog(tampered) }), policy, attest.ErrEventLog},
		{"platform log dropped", editDoc(t, doc, func(d *attest.Document) { d.PlatformEventLog = nil }), policy, attest.ErrEventLog},
		{"platform log garbage", editDoc(t, doc, func(d *attest.Document) { d.PlatformEventLog = []byte("junk") }), policy, attest.ErrEventLog},
		{"pinned PCR differs", doc, func() attest.GoldenPolicy {
			p := goodBoot.policy()
			p.PlatformPCRs = map[int][]byte{7: replayed(t, tampered)[7]}
			return p
		}(), attest.ErrGoldenPolicy},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := attest.Verify(c.doc, *enr, n, tlsKeyHash, c.policy); !errors.Is(err, c.want) {
				t.Fatalf("Verify = %v, want %v", err, c.want)
			}
		})
	}
}

// TestPlatformLogClaimsOurPCR: a firmware log with events in an allocated
// PCR makes Open fail with advice to move the allocation.
func TestPlatformLogClaimsOurPCR(t *testing.T) {
	sw := swtpmStart(t)
	logPath := filepath.Join(sw.Dir, "log")
	events := append([]attest.PlatformEvent{}, firmware...)
	events = append(events, attest.PlatformEvent{PCR: 12, Type: 0xd, SHA256: digest("cmdline")})
	if err := os.WriteFile(logPath, attest.EncodePlatformEventLog(events), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := sw.Config()
	cfg.PlatformEventLog = logPath
	if tp, err := attest.Open(cfg); err == nil || !strings.Contains(err.Error(), "PCR 12") {
		if tp != nil {
			tp.Close()
		}
		t.Fatalf("Open = %v, want an error about PCR 12", err)
	}
}

func TestParsePlatformEventLog(t *testing.T) {
	b := attest.EncodePlatformEventLog(firmware)
	events, err := attest.ParsePlatformEventLog(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != len(firmware)+1 {
		t.Fatalf("%d events", len(events))
	}
	for i, e := range firmware {
		g := events[i+1]
		if g.PCR != e.PCR || g.Type != e.Type || !bytes.Equal(g.SHA256, e.SHA256) || !bytes.Equal(g.Data, e.Data) {
			t.Errorf("event %d = %+v, want %+v", i+1, g, e)
		}
	}
	r := replayed(t, events)
	want := make([]byte, 32)
	for _, e := range firmware {
		if e.PCR == 0 {
			s := sha256.Sum256(append(want, e.SHA256...))
			want = s[:]
		}
	}
	if !bytes.Equal(r[0], want) {
		t.Errorf("PCR 0 replays to %x, want %x", r[0], want)
	}

	// H-CRTM: a StartupLocality event sets PCR 0's starting value.
	loc := append([]attest.PlatformEvent{{PCR: 0, Type: 3, Data: []byte("StartupLocality\x00\x03")}}, firmware...)
	events, err = attest.ParsePlatformEventLog(attest.EncodePlatformEventLog(loc))
	if err != nil {
		t.Fatal(err)
	}
	start := make([]byte, 32)
	start[31] = 3
	s := sha256.Sum256(append(start, firmware[0].SHA256...))
	if got := replayed(t, events[:3]); !bytes.Equal(got[0], s[:]) {
		t.Errorf("PCR 0 with start-up locality 3 = %x, want %x", got[0], s[:])
	}

	for name, bad := range map[string][]byte{
		"empty":     nil,
		"truncated": b[:len(b)-3],
		"SHA-1 log": append(make([]byte, 32), 0),
	} {
		if _, err := attest.ParsePlatformEventLog(bad); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}
