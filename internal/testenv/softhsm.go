// Package testenv sets up the real components hsmgate's tests run against:
// SoftHSM2 tokens in a temporary directory, each test with its own
// configuration, labels and PINs, torn down with t.Cleanup.
//
// When the CI environment variable is "true" a missing component fails the
// test; elsewhere it skips with the exact package to install.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/hsmgate/hsmgate/internal/softhsm"
)

// Missing reports a missing dependency: a failure under CI=true, a skip
// elsewhere. It never returns.
func Missing(t testing.TB, what, debianPackage string) {
	t.Helper()
	msg := fmt.Sprintf("%s not found: install the Debian package %q (apt-get install -y %s)", what, debianPackage, debianPackage)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// SoftHSM is a set of SoftHSM2 tokens private to one test.
type SoftHSM = softhsm.Tokens

// NewSoftHSM creates n tokens labelled "<prefix>-0" … "<prefix>-(n-1)" in a
// temporary directory and points SOFTHSM2_CONF at it for the rest of the
// test (so the test must not run in parallel with another using SoftHSM).
func NewSoftHSM(t testing.TB, n int) *SoftHSM {
	t.Helper()
	module := softhsm.Module()
	util, err := exec.LookPath("softhsm2-util")
	if module == "" || err != nil {
		Missing(t, "SoftHSM2 (libsofthsm2.so and softhsm2-util)", "softhsm2")
	}
	dir := t.TempDir()
	s, err := softhsm.Create(util, module, dir, "tok", n)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", s.Conf)
	return s
}
