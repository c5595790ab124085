package attest_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/hsmgate/hsmgate/attest"
)

// TestMeasureIdempotentPerBoot: a gateway process that restarts without a
// TPM reset finds this boot's log, re-measures the same things as no-ops,
// and is refused a different measurement.
func TestMeasureIdempotentPerBoot(t *testing.T) {
	sw, tpm := started(t)
	goodBoot.measure(t, tpm)
	before, err := tpm.PCRs()
	if err != nil {
		t.Fatal(err)
	}
	tpm.Close()

	tpm = open(t, sw.Config()) // process restart, same boot
	if n := len(tpm.EventLog().Events); n != 3 {
		t.Fatalf("reopened log has %d events, want 3", n)
	}
	goodBoot.measure(t, tpm) // the start-up measurement runs again
	after, err := tpm.PCRs()
	if err != nil {
		t.Fatal(err)
	}
	for p := range before {
		if !bytes.Equal(before[p], after[p]) {
			t.Errorf("PCR %d changed on an identical re-measurement", p)
		}
	}
	if n := len(tpm.EventLog().Events); n != 3 {
		t.Errorf("log has %d events after re-measuring, want 3", n)
	}

	_, err = tpm.Measure(attest.KindBinary, "/usr/bin/hsmgate", digest("hsmgate v2"))
	if !errors.Is(err, attest.ErrAlreadyMeasured) {
		t.Fatalf("different re-measurement = %v, want ErrAlreadyMeasured", err)
	}
	_, err = tpm.Measure(attest.KindBinary, "/opt/hsmgate", digest(goodBoot.binary))
	if !errors.Is(err, attest.ErrAlreadyMeasured) {
		t.Fatalf("re-measurement under another name = %v, want ErrAlreadyMeasured", err)
	}
	final, _ := tpm.PCRs()
	if !bytes.Equal(final[13], before[13]) {
		t.Error("a refused measurement changed the PCR")
	}

	// The boot still verifies.
	enr := enroll(t, tpm)
	n := nonce(t)
	if _, err := attest.Verify(attestJSON(t, tpm, n), *enr, n, tlsKeyHash, goodBoot.policy()); err != nil {
		t.Fatalf("Verify: %v", err)
	}
}

func TestMeasureRejectsBadInput(t *testing.T) {
	_, tpm := started(t)
	if _, err := tpm.Measure("kernel", "vmlinuz", digest("k")); err == nil {
		t.Error("Measure accepted an unknown kind")
	}
	if _, err := tpm.Measure(attest.KindImage, "img", []byte("not a digest")); err == nil {
		t.Error("Measure accepted a short digest")
	}
}

// TestMeasurementStateRefused: PCRs extended outside the log (or a log lost
// or edited) make Open fail with ErrMeasurementState until a TPM reset.
func TestMeasurementStateRefused(t *testing.T) {
	for _, c := range []struct {
		name  string
		spoil func(t *testing.T, sw interface{ Socket() string }, logPath string)
	}{
		{"PCR extended behind the gateway's back", nil},
		{"log deleted", func(t *testing.T, _ interface{ Socket() string }, logPath string) {
			if err := os.Remove(logPath); err != nil {
				t.Fatal(err)
			}
		}},
		{"log edited", func(t *testing.T, _ interface{ Socket() string }, logPath string) {
			l := readLog(t, logPath)
			l.Events[0].Digest = digest("approved image")
			writeLog(t, logPath, l)
		}},
		{"log truncated", func(t *testing.T, _ interface{ Socket() string }, logPath string) {
			if err := os.WriteFile(logPath, []byte(`{"format":`), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			sw, tpm := started(t)
			cfg := sw.Config()
			logPath := filepath.Join(cfg.StateDir, "eventlog.json")
			goodBoot.measure(t, tpm)
			tpm.Close()
			if c.spoil == nil {
				rawExtend(t, raw(t, sw), 12, digest("intruder"))
			} else {
				c.spoil(t, sw, logPath)
			}
			if tp, err := attest.Open(cfg); !errors.Is(err, attest.ErrMeasurementState) {
				if tp != nil {
					tp.Close()
				}
				t.Fatalf("Open = %v, want ErrMeasurementState", err)
			} else {
				t.Log(err)
			}
			// A TPM reset clears it.
			sw.Restart()
			tpm = open(t, cfg)
			goodBoot.measure(t, tpm)
		})
	}
}

// TestForeignExtensionBeforeFirstMeasurement: a PCR of ours already extended
// at the first Open of a boot (another component uses it) is refused too.
func TestForeignExtensionBeforeFirstMeasurement(t *testing.T) {
	sw := swtpmStart(t)
	rawExtend(t, raw(t, sw), 15, digest("systemd"))
	if tp, err := attest.Open(sw.Config()); !errors.Is(err, attest.ErrMeasurementState) {
		if tp != nil {
			tp.Close()
		}
		t.Fatalf("Open = %v, want ErrMeasurementState", err)
	}
	// The twin: with an allocation avoiding PCR 15 it opens.
	cfg := sw.Config()
	cfg.PCRs = attest.PCRAllocation{Image: 12, Binary: 13, Config: 14}
	open(t, cfg)
}

// TestInterruptedMeasurementCompleted: a crash between writing an event to
// the log and extending it is completed by the next Open.
func TestInterruptedMeasurementCompleted(t *testing.T) {
	sw, tpm := started(t)
	logPath := filepath.Join(sw.Config().StateDir, "eventlog.json")
	for _, k := range []string{attest.KindImage, attest.KindBinary} {
		c := map[string]string{attest.KindImage: goodBoot.image, attest.KindBinary: goodBoot.binary}[k]
		n := map[string]string{attest.KindImage: "hsmgate-image", attest.KindBinary: "/usr/bin/hsmgate"}[k]
		if _, err := tpm.Measure(k, n, digest(c)); err != nil {
			t.Fatal(err)
		}
	}
	tpm.Close()
	l := readLog(t, logPath)
	l.Events = append(l.Events, attest.Event{Seq: 2, PCR: 15, Kind: attest.KindConfig, Name: "hsmgate.toml", Digest: digest(goodBoot.config)})
	writeLog(t, logPath, l)

	tpm = open(t, sw.Config())
	goodBoot.measure(t, tpm) // all three are now no-ops
	pcrs, err := tpm.PCRs()
	if err != nil {
		t.Fatal(err)
	}
	replay := tpm.EventLog().Replay()
	for p, v := range pcrs {
		if !bytes.Equal(v, replay[p]) {
			t.Errorf("PCR %d = %x, log replays %x", p, v, replay[p])
		}
	}
	enr := enroll(t, tpm)
	n := nonce(t)
	if _, err := attest.Verify(attestJSON(t, tpm, n), *enr, n, tlsKeyHash, goodBoot.policy()); err != nil {
		t.Fatalf("Verify: %v", err)
	}
}

// TestEventLogReplayKnownAnswer pins the extend computation.
func TestEventLogReplayKnownAnswer(t *testing.T) {
	e := attest.Event{Seq: 0, PCR: 12, Kind: "image", Name: "img", Digest: digest("x")}
	h := sha256.New()
	h.Write([]byte("hsmgate.attest.event.v1\x00"))
	for _, f := range [][]byte{[]byte("image"), []byte("img"), digest("x")} {
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(f))))
		h.Write(f)
	}
	ext := h.Sum(nil)
	if !bytes.Equal(e.ExtendDigest(), ext) {
		t.Fatalf("ExtendDigest = %x, want %x", e.ExtendDigest(), ext)
	}
	pcr := sha256.Sum256(append(make([]byte, 32), ext...))
	l := &attest.EventLog{Format: attest.LogFormat, Hash: "sha256", PCRs: attest.DefaultPCRs, Events: []attest.Event{e}}
	r := l.Replay()
	if !bytes.Equal(r[12], pcr[:]) || !bytes.Equal(r[13], make([]byte, 32)) || !bytes.Equal(r[15], make([]byte, 32)) || len(r) != 3 {
		t.Fatalf("Replay = %x", r)
	}
	// Predicting a replacement equals replaying the replaced log.
	p, err := attest.PredictPCRs(l, attest.Event{Kind: "image", Name: "img2", Digest: digest("y")})
	if err != nil {
		t.Fatal(err)
	}
	l2 := l.Clone()
	l2.Events[0].Name, l2.Events[0].Digest = "img2", digest("y")
	if !bytes.Equal(p[12], l2.Replay()[12]) || bytes.Equal(p[12], r[12]) {
		t.Error("PredictPCRs disagrees with Replay")
	}
	if !bytes.Equal(l.Events[0].Digest, digest("x")) {
		t.Error("PredictPCRs changed its input log")
	}
	if _, err := attest.PredictPCRs(l, attest.Event{Kind: "kernel", Digest: digest("y")}); err == nil {
		t.Error("PredictPCRs accepted an unknown kind")
	}
	// A kind not yet measured is appended.
	p, err = attest.PredictPCRs(l, attest.Event{Kind: "config", Name: "c", Digest: digest("c")})
	if err != nil || bytes.Equal(p[15], make([]byte, 32)) {
		t.Errorf("PredictPCRs(new kind) = %x, %v", p, err)
	}
}

func TestPCRAllocationValidate(t *testing.T) {
	for _, a := range []attest.PCRAllocation{
		{Image: 12, Binary: 12, Config: 15}, // shared
		{Image: 7, Binary: 13, Config: 15},  // firmware
		{Image: 12, Binary: 16, Config: 15}, // debug, resettable
		{Image: 12, Binary: 13, Config: 23}, // application, resettable
	} {
		if err := a.Validate(); err == nil {
			t.Errorf("%+v validates", a)
		}
	}
	if err := attest.DefaultPCRs.Validate(); err != nil {
		t.Error(err)
	}
}

func TestOpenConfig(t *testing.T) {
	for name, cfg := range map[string]attest.Config{
		"neither device nor socket": {StateDir: t.TempDir()},
		"both":                      {Device: "/dev/tpmrm0", Socket: "/tmp/x", StateDir: t.TempDir()},
		"no state dir":              {Socket: "/tmp/x"},
		"bad allocation":            {Socket: "/tmp/x", StateDir: t.TempDir(), PCRs: attest.PCRAllocation{Image: 1, Binary: 2, Config: 3}},
		"no such socket":            {Socket: filepath.Join(t.TempDir(), "none.sock"), StateDir: t.TempDir()},
	} {
		if tp, err := attest.Open(cfg); err == nil {
			tp.Close()
			t.Errorf("%s: Open succeeded", name)
		}
	}
}

func readLog(t testing.TB, path string) *attest.EventLog {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var l attest.EventLog
	if err := json.Unmarshal(b, &l); err != nil {
		t.Fatal(err)
	}
	return &l
}

func writeLog(t testing.TB, path string, l *attest.EventLog) {
	t.Helper()
	b, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
