package swtpmtest

import (
	"bytes"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport/linuxudstpm"
)

func readPCR12(t *testing.T, s *TPM) []byte {
	t.Helper()
	tp, err := linuxudstpm.Open(s.Socket())
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	rsp, err := tpm2.PCRRead{PCRSelectionIn: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(12),
	}}}}.Execute(tp)
	if err != nil {
		t.Fatal(err)
	}
	return rsp.PCRValues.Digests[0].Buffer
}

func TestStartRestart(t *testing.T) {
	s := Start(t)
	tp, err := linuxudstpm.Open(s.Socket())
	if err != nil {
		t.Fatal(err)
	}
	_, err = tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: 12, Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: make([]byte, 32)}}},
	}.Execute(tp)
	tp.Close()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(readPCR12(t, s), make([]byte, 32)) {
		t.Fatal("PCR 12 not extended")
	}
	s.Restart()
	if !bytes.Equal(readPCR12(t, s), make([]byte, 32)) {
		t.Fatal("PCR 12 survived a restart")
	}
}

// fakeTB records Skip and Fatal instead of ending the real test.
type fakeTB struct {
	testing.TB
	skipped, failed string
}

func (f *fakeTB) Skip(args ...any)  { f.skipped = fmt.Sprint(args...); runtime.Goexit() }
func (f *fakeTB) Fatal(args ...any) { f.failed = fmt.Sprint(args...); runtime.Goexit() }

func startWithout(t *testing.T, ci string) *fakeTB {
	t.Setenv("PATH", t.TempDir())
	t.Setenv("CI", ci)
	f := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Start(f)
	}()
	<-done
	return f
}

func TestMissingSwtpm(t *testing.T) {
	if f := startWithout(t, ""); !strings.Contains(f.skipped, "install swtpm swtpm-tools") || f.failed != "" {
		t.Errorf("without CI: skipped %q, failed %q", f.skipped, f.failed)
	}
	if f := startWithout(t, "true"); !strings.Contains(f.failed, "install swtpm swtpm-tools (./dev test does)") || f.skipped != "" {
		t.Errorf("CI=true: skipped %q, failed %q", f.skipped, f.failed)
	}
}
