package attest_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hsmgate/hsmgate/attest"
)

var pin = []byte("user PIN of slot 0")

// TestUnsealRefusedAfterChangedMeasurement seals a PIN in a good boot, then
// reboots (restarts swtpm) into a boot that measures one thing differently:
// the PIN stays sealed and the error names the PCR and kind. The twin in
// each case reboots into the good boot again and unseals.
func TestUnsealRefusedAfterChangedMeasurement(t *testing.T) {
	for _, c := range []struct {
		name string
		boot boot
		kind string
	}{
		{"good boot again", goodBoot, ""},
		{"changed image", boot{image: "tampered image", binary: goodBoot.binary, config: goodBoot.config}, attest.KindImage},
		{"changed binary", boot{image: goodBoot.image, binary: "tampered hsmgate", config: goodBoot.config}, attest.KindBinary},
		{"changed config", boot{image: goodBoot.image, binary: goodBoot.binary, config: "config B"}, attest.KindConfig},
	} {
		t.Run(c.name, func(t *testing.T) {
			sw, tpm := started(t)
			goodBoot.measure(t, tpm)
			sealed, err := tpm.SealCurrent(pin)
			if err != nil {
				t.Fatal(err)
			}
			tpm.Close()

			sw.Restart()
			tpm = open(t, sw.Config())
			c.boot.measure(t, tpm)
			got, err := tpm.Unseal(sealed)
			if c.kind == "" {
				if err != nil || !bytes.Equal(got, pin) {
					t.Fatalf("Unseal = %q, %v", got, err)
				}
				return
			}
			if !errors.Is(err, attest.ErrPCRPolicy) {
				t.Fatalf("Unseal = %q, %v; want ErrPCRPolicy", got, err)
			}
			if !strings.Contains(err.Error(), "("+c.kind+";") {
				t.Errorf("error %q does not name %s", err, c.kind)
			}
			t.Log(err)
		})
	}
}

// TestUnsealRefusedBeforeMeasurement: a gateway that has not measured (or
// not finished measuring) cannot unseal.
func TestUnsealRefusedBeforeMeasurement(t *testing.T) {
	sw, tpm := started(t)
	goodBoot.measure(t, tpm)
	sealed, err := tpm.SealCurrent(pin)
	if err != nil {
		t.Fatal(err)
	}
	tpm.Close()
	sw.Restart()
	tpm = open(t, sw.Config())
	if _, err := tpm.Unseal(sealed); !errors.Is(err, attest.ErrPCRPolicy) {
		t.Fatalf("Unseal before measuring = %v, want ErrPCRPolicy", err)
	}
	if _, err := tpm.Measure(attest.KindImage, "hsmgate-image", digest(goodBoot.image)); err != nil {
		t.Fatal(err)
	}
	if _, err := tpm.Unseal(sealed); !errors.Is(err, attest.ErrPCRPolicy) || !strings.Contains(err.Error(), "not measured") {
		t.Fatalf("Unseal half-measured = %v, want ErrPCRPolicy naming what is not measured", err)
	}
}

// TestStatePersistsAcrossTPMRestart: after a TPM reset the sealed blob (kept
// as bytes on disk) reloads, the AK is the same (the old enrollment still
// verifies), the event log starts over and the PCRs are re-measured.
func TestStatePersistsAcrossTPMRestart(t *testing.T) {
	sw, tpm := started(t)
	goodBoot.measure(t, tpm)
	enr := enroll(t, tpm)
	sealed, err := tpm.SealCurrent(pin)
	if err != nil {
		t.Fatal(err)
	}
	blob, err := sealed.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	blobPath := filepath.Join(sw.Dir, "pin.sealed")
	if err := os.WriteFile(blobPath, blob, 0o600); err != nil {
		t.Fatal(err)
	}
	before := tpm.EventLog()
	tpm.Close()

	sw.Restart()
	tpm = open(t, sw.Config())
	after := tpm.EventLog()
	if len(after.Events) != 0 {
		t.Fatalf("new boot starts with %d events", len(after.Events))
	}
	if after.Boot.ResetCount == before.Boot.ResetCount {
		t.Errorf("reset count %d did not change across a TPM restart", after.Boot.ResetCount)
	}
	pcrs, err := tpm.PCRs()
	if err != nil {
		t.Fatal(err)
	}
	for p, v := range pcrs {
		if !bytes.Equal(v, make([]byte, 32)) {
			t.Errorf("PCR %d = %x after TPM reset", p, v)
		}
	}
	goodBoot.measure(t, tpm)

	b, err := os.ReadFile(blobPath)
	if err != nil {
		t.Fatal(err)
	}
	reloaded, err := attest.ParseSealed(b)
	if err != nil {
		t.Fatal(err)
	}
	got, err := tpm.Unseal(reloaded)
	if err != nil || !bytes.Equal(got, pin) {
		t.Fatalf("Unseal after restart = %q, %v", got, err)
	}
	n := nonce(t)
	st, err := attest.Verify(attestJSON(t, tpm, n), *enr, n, tlsKeyHash, goodBoot.policy())
	if err != nil {
		t.Fatalf("Verify with the pre-restart enrollment: %v", err)
	}
	if st.ResetCount != after.Boot.ResetCount {
		t.Errorf("quote reset count %d, log %d", st.ResetCount, after.Boot.ResetCount)
	}
}

// TestPlannedUpdateReseal: before an approved image update the PIN is
// resealed to the PCR values predicted for the new image. The update boots
// and unseals it; the old seal no longer opens; a tampered update does not
// open the new seal.
func TestPlannedUpdateReseal(t *testing.T) {
	sw, tpm := started(t)
	goodBoot.measure(t, tpm)
	current, err := tpm.SealCurrent(pin)
	if err != nil {
		t.Fatal(err)
	}
	update := attest.Event{Kind: attest.KindImage, Name: "hsmgate-image", Digest: digest("image v2")}
	predicted, err := attest.PredictPCRs(tpm.EventLog(), update)
	if err != nil {
		t.Fatal(err)
	}
	next, err := tpm.Seal(pin, predicted)
	if err != nil {
		t.Fatal(err)
	}
	// Still in the old boot: only the current seal opens.
	if _, err := tpm.Unseal(next); !errors.Is(err, attest.ErrPCRPolicy) {
		t.Fatalf("Unseal(next) before the update = %v, want ErrPCRPolicy", err)
	}
	tpm.Close()

	// The approved update boots.
	v2 := boot{image: "image v2", binary: goodBoot.binary, config: goodBoot.config}
	sw.Restart()
	tpm = open(t, sw.Config())
	v2.measure(t, tpm)
	pcrs, err := tpm.PCRs()
	if err != nil {
		t.Fatal(err)
	}
	for p, v := range predicted {
		if !bytes.Equal(pcrs[p], v) {
			t.Errorf("PCR %d = %x, predicted %x", p, pcrs[p], v)
		}
	}
	if got, err := tpm.Unseal(next); err != nil || !bytes.Equal(got, pin) {
		t.Fatalf("Unseal(next) after the approved update = %q, %v", got, err)
	}
	if _, err := tpm.Unseal(current); !errors.Is(err, attest.ErrPCRPolicy) {
		t.Fatalf("Unseal(old seal) after the update = %v, want ErrPCRPolicy", err)
	}
	tpm.Close()

	// A tampered update (another image digest) does not.
	sw.Restart()
	tpm = open(t, sw.Config())
	boot{image: "image v2 with a backdoor", binary: goodBoot.binary, config: goodBoot.config}.measure(t, tpm)
	if _, err := tpm.Unseal(next); !errors.Is(err, attest.ErrPCRPolicy) {
		t.Fatalf("Unseal(next) after a tampered update = %v, want ErrPCRPolicy", err)
	}
}

func TestSealedBlobOfAnotherTPM(t *testing.T) {
	_, a := started(t)
	_, b := started(t)
	goodBoot.measure(t, a)
	goodBoot.measure(t, b)
	sealed, err := a.SealCurrent(pin)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := b.Unseal(sealed); !errors.Is(err, attest.ErrSealedUnloadable) {
		t.Fatalf("another TPM unsealed: %q, %v", got, err)
	}
	// The twin: the TPM that sealed it unseals.
	if got, err := a.Unseal(sealed); err != nil || !bytes.Equal(got, pin) {
		t.Fatalf("Unseal = %q, %v", got, err)
	}
}

func TestSealedBlobTampered(t *testing.T) {
	_, tpm := started(t)
	goodBoot.measure(t, tpm)
	sealed, err := tpm.SealCurrent(pin)
	if err != nil {
		t.Fatal(err)
	}
	// Claiming other PCR values does not help: the policy is in the public
	// area, which the TPM checks against the private part.
	forged := *sealed
	forged.PCRs = map[int]attest.HexBytes{12: make([]byte, 32)}
	if _, err := tpm.Unseal(&forged); !errors.Is(err, attest.ErrSealedUnloadable) {
		t.Errorf("Unseal(forged PCRs) = %v, want ErrSealedUnloadable", err)
	}
	flipped := *sealed
	flipped.Private = bytes.Clone(sealed.Private)
	flipped.Private[len(flipped.Private)-1] ^= 1
	if _, err := tpm.Unseal(&flipped); !errors.Is(err, attest.ErrSealedUnloadable) {
		t.Errorf("Unseal(flipped private) = %v, want ErrSealedUnloadable", err)
	}
	if _, err := tpm.Seal(make([]byte, attest.MaxSealedSize+1), map[int][]byte{12: make([]byte, 32)}); err == nil {
		t.Error("Seal accepted an oversized secret")
	}
}
