// Package swtpmtest starts a private swtpm (software TPM 2.0) for a test.
//
// Each Start launches
//
//	swtpm socket --tpm2 --server type=unixio,path=… --ctrl type=unixio,path=…
//	      --tpmstate dir=… --flags not-need-init,startup-clear
//
// with its state in the test's temporary directory and its sockets in a
// short-named directory under os.TempDir (unix socket paths are limited to
// 107 bytes; t.TempDir paths carry the test name). Cleanup stops swtpm and
// waits for it.
//
// No swtpm_setup is run: the TPM manufactures itself (fresh seeds) on first
// start and has no EK certificate. Tests trust the EK public key directly,
// which is what a verifier does after it has validated an EK certificate
// chain or recorded the EK at provisioning.
//
// Missing swtpm: under CI=true the test fails, elsewhere it is skipped.
package swtpmtest

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/attest"
)

// TPM is a running swtpm private to one test.
type TPM struct {
	t  testing.TB
	sw *attest.Swtpm
	// Dir is a scratch directory for the test (a gateway state dir, say).
	Dir string
}

const startTimeout = 10 * time.Second

// Start starts a fresh swtpm for t.
func Start(t testing.TB) *TPM {
	t.Helper()
	sockDir, err := os.MkdirTemp("", "swtpm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	dir := t.TempDir()
	sw, err := attest.NewSwtpm("", filepath.Join(dir, "tpmstate"), sockDir)
	if errors.Is(err, attest.ErrNoSwtpm) {
		msg := "swtpm not found: install swtpm swtpm-tools (./dev test does)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := sw.Start(startTimeout); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sw.Stop(); err != nil {
			t.Errorf("stopping swtpm: %v", err)
		}
	})
	return &TPM{t: t, sw: sw, Dir: dir}
}

// Socket is the swtpm data socket, for attest.Config.Socket.
func (s *TPM) Socket() string { return s.sw.Socket }

// StateDir is swtpm's own state directory (the TPM's NV and seeds).
func (s *TPM) StateDir() string { return s.sw.StateDir }

// Config returns an attest.Config for this TPM with the gateway state in
// Dir/gateway.
func (s *TPM) Config() attest.Config {
	return attest.Config{Socket: s.Socket(), StateDir: filepath.Join(s.Dir, "gateway")}
}

// Restart stops swtpm and starts it again on the same state directory: a
// TPM Reset, as at a reboot. Persistent state (seeds, so the EK, AK, SRK and
// sealed objects) survives; PCRs start from zero again.
func (s *TPM) Restart() {
	s.t.Helper()
	if err := s.sw.Restart(startTimeout); err != nil {
		s.t.Fatal(err)
	}
}

// Stop stops swtpm (Restart or cleanup may start/stop it again).
func (s *TPM) Stop() {
	s.t.Helper()
	if err := s.sw.Stop(); err != nil {
		s.t.Fatal(err)
	}
}

// Enroll runs the whole enrollment protocol against tpm, the verifier
// trusting the EK public key the TPM reports (as it would after checking
// its certificate), and returns the enrollment record.
func Enroll(t testing.TB, tpm *attest.TPM) *attest.Enrollment {
	t.Helper()
	req, err := tpm.EnrollmentRequest()
	if err != nil {
		t.Fatalf("EnrollmentRequest: %v", err)
	}
	ch, pending, err := attest.MakeCredential(req.EKPublic, req)
	if err != nil {
		t.Fatalf("MakeCredential: %v", err)
	}
	resp, err := tpm.ActivateCredential(ch)
	if err != nil {
		t.Fatalf("ActivateCredential: %v", err)
	}
	enr, err := pending.Complete(resp)
	if err != nil {
		t.Fatalf("Complete: %v", err)
	}
	return enr
}
