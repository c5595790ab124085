package attest_test

import (
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/hsmgate/hsmgate/attest"
	"github.com/hsmgate/hsmgate/internal/swtpmtest"
)

const testIndex = attest.DefaultCounterIndex

func openCounter(t testing.TB, tpm *attest.TPM, index uint32) *attest.Counter {
	t.Helper()
	c, err := attest.OpenCounter(tpm, index)
	if err != nil {
		t.Fatalf("OpenCounter(%#x): %v", index, err)
	}
	return c
}

func readCounter(t testing.TB, c *attest.Counter) uint64 {
	t.Helper()
	v, err := c.Read()
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	return v
}

func TestCounterIncrementsAndNeverGoesBack(t *testing.T) {
	sw := swtpmtest.Start(t)
	tpm := open(t, sw.Config())
	c := openCounter(t, tpm, testIndex)
	if c.Index() != testIndex {
		t.Errorf("Index = %#x", c.Index())
	}
	if v := readCounter(t, c); v != 0 {
		t.Fatalf("a new counter reads %d, want 0", v)
	}
	if v, err := c.IncrementTo(3); err != nil || v != 3 {
		t.Fatalf("IncrementTo(3) = %d, %v; want 3 (swtpm starts counters at 1)", v, err)
	}
	// Asking for less leaves it alone and says where it is.
	if v, err := c.IncrementTo(2); err != nil || v != 3 {
		t.Fatalf("IncrementTo(2) = %d, %v; want 3, unchanged", v, err)
	}
	if v, err := c.Increment(); err != nil || v != 4 {
		t.Fatalf("Increment = %d, %v; want 4", v, err)
	}
	if v, err := c.IncrementTo(4); err != nil || v != 4 {
		t.Fatalf("IncrementTo(4) = %d, %v; want 4", v, err)
	}
	// Opening it again finds the same index and value.
	if v := readCounter(t, openCounter(t, tpm, testIndex)); v != 4 {
		t.Fatalf("reopened counter reads %d, want 4", v)
	}
	// Two indices are two counters.
	other := openCounter(t, tpm, testIndex+1)
	if v, err := other.IncrementTo(2); err != nil || v != 2 {
		t.Fatalf("second counter IncrementTo(2) = %d, %v", v, err)
	}
	if v := readCounter(t, c); v != 4 {
		t.Fatalf("first counter reads %d after the second moved, want 4", v)
	}
}

func TestCounterStepLimit(t *testing.T) {
	sw := swtpmtest.Start(t)
	c := openCounter(t, open(t, sw.Config()), testIndex)
	if _, err := c.IncrementTo(2); err != nil {
		t.Fatal(err)
	}
	v, err := c.IncrementTo(2 + attest.MaxCounterStep + 1)
	if !errors.Is(err, attest.ErrCounterStep) {
		t.Fatalf("IncrementTo far ahead: %d, %v; want ErrCounterStep", v, err)
	}
	if got := readCounter(t, c); got != 2 {
		t.Fatalf("refused IncrementTo moved the counter to %d", got)
	}
	// Exactly the limit is allowed.
	if v, err := c.IncrementTo(2 + attest.MaxCounterStep); err != nil || v != 2+attest.MaxCounterStep {
		t.Fatalf("IncrementTo(+MaxCounterStep) = %d, %v", v, err)
	}
}

// TestCounterPersistsAcrossTPMRestart: a TPM reset (reboot) keeps the
// counter's value.
func TestCounterPersistsAcrossTPMRestart(t *testing.T) {
	sw := swtpmtest.Start(t)
	tpm := open(t, sw.Config())
	if _, err := openCounter(t, tpm, testIndex).IncrementTo(5); err != nil {
		t.Fatal(err)
	}
	tpm.Close()
	sw.Restart()
	tpm2 := open(t, sw.Config())
	c := openCounter(t, tpm2, testIndex)
	if v := readCounter(t, c); v != 5 {
		t.Fatalf("after a TPM restart the counter reads %d, want 5", v)
	}
	if v, err := c.IncrementTo(6); err != nil || v != 6 {
		t.Fatalf("IncrementTo(6) after restart = %d, %v", v, err)
	}
}

// TestCounterDeletedAndRedefinedDoesNotGoBack: deleting the index with owner
// authorization and defining it again does not roll the value back: the TPM
// starts the new counter above every deleted one.
func TestCounterDeletedAndRedefinedDoesNotGoBack(t *testing.T) {
	sw := swtpmtest.Start(t)
	tpm := open(t, sw.Config())
	if _, err := openCounter(t, tpm, testIndex).IncrementTo(7); err != nil {
		t.Fatal(err)
	}
	tp := raw(t, sw)
	if _, err := (tpm2.NVUndefineSpace{
		AuthHandle: tpm2.TPMRHOwner,
		NVIndex:    tpm2.NamedHandle{Handle: tpm2.TPMHandle(testIndex)},
	}).Execute(tp); err != nil {
		t.Fatalf("NV_UndefineSpace: %v", err)
	}
	c := openCounter(t, tpm, testIndex)
	if v := readCounter(t, c); v != 0 {
		t.Fatalf("re-defined counter reads %d before its first increment, want 0 (unwritten)", v)
	}
	v, err := c.IncrementTo(1)
	if err != nil {
		t.Fatal(err)
	}
	if v < 7 {
		t.Fatalf("re-defined counter starts at %d, below the deleted counter's 7", v)
	}
}

// TestCounterRefusesForeignIndex: an NV index at the handle that is not a
// counter with our attributes belongs to someone else and is left alone.
func TestCounterRefusesForeignIndex(t *testing.T) {
	sw := swtpmtest.Start(t)
	tpm := open(t, sw.Config())
	tp := raw(t, sw)
	for i, attrs := range []tpm2.TPMANV{
		{OwnerWrite: true, OwnerRead: true, NoDA: true, NT: tpm2.TPMNTOrdinary},                 // ordinary data
		{OwnerWrite: true, OwnerRead: true, AuthWrite: true, NoDA: true, NT: tpm2.TPMNTCounter}, // also writable with its auth value
	} {
		index := testIndex + uint32(i)
		if _, err := (tpm2.NVDefineSpace{
			AuthHandle: tpm2.TPMRHOwner,
			PublicInfo: tpm2.New2B(tpm2.TPMSNVPublic{NVIndex: tpm2.TPMHandle(index), NameAlg: tpm2.TPMAlgSHA256, Attributes: attrs, DataSize: 8}),
		}).Execute(tp); err != nil {
			t.Fatalf("NV_DefineSpace: %v", err)
		}
		if _, err := attest.OpenCounter(tpm, index); !errors.Is(err, attest.ErrCounterIndex) {
			t.Errorf("OpenCounter on a foreign index %d: %v, want ErrCounterIndex", i, err)
		}
	}
	for _, index := range []uint32{0x01800000, 0x00ffffff, 0x81000001} {
		if _, err := attest.OpenCounter(tpm, index); err == nil {
			t.Errorf("OpenCounter(%#x) outside the owner range succeeded", index)
		}
	}
	tpm.Close()
	if _, err := attest.OpenCounter(tpm, testIndex+5); err == nil {
		t.Error("OpenCounter on a closed TPM succeeded")
	}
}

func BenchmarkCounterIncrement(b *testing.B) {
	sw := swtpmtest.Start(b)
	c := openCounter(b, open(b, sw.Config()), testIndex)
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Increment(); err != nil {
			b.Fatal(err)
		}
	}
}
