// Package testenv sets up the real components hsmgate's tests run against:
// SoftHSM2 tokens in a temporary directory, each test with its own
// configuration, labels and PINs, torn down with t.Cleanup.
//
// When the CI environment variable is "true" a missing component fails the
// test; elsewhere it skips with the exact package to install.
package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// softHSMModules lists where Debian and other distributions install the
// SoftHSM2 PKCS#11 module.
var softHSMModules = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
}

// SoftHSMModule returns the path of the installed SoftHSM2 module, or "".
func SoftHSMModule() string {
	if p := os.Getenv("HSMGATE_SOFTHSM_MODULE"); p != "" {
		return p
	}
	for _, p := range softHSMModules {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

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

// Token is one SoftHSM token made for a test.
type Token struct {
	Label string
	PIN   string
	SOPIN string
}

// SoftHSM is a set of freshly initialised SoftHSM2 tokens private to one test.
type SoftHSM struct {
	Module  string // path of the PKCS#11 module
	Dir     string // token directory
	Conf    string // SOFTHSM2_CONF written for this test
	PIN     string // user PIN shared by every token
	PINFile string // file holding PIN, mode 0600
	Tokens  []Token
}

// Labels returns the tokens' labels in creation order.
func (s *SoftHSM) Labels() []string {
	out := make([]string, len(s.Tokens))
	for i, tk := range s.Tokens {
		out[i] = tk.Label
	}
	return out
}

// NewSoftHSM creates n tokens labelled "<prefix>-0" … "<prefix>-(n-1)" in a
// temporary directory and points SOFTHSM2_CONF at it for the rest of the
// test (so the test must not run in parallel with another using SoftHSM).
func NewSoftHSM(t testing.TB, n int) *SoftHSM {
	t.Helper()
	module := SoftHSMModule()
	util, err := exec.LookPath("softhsm2-util")
	if module == "" || err != nil {
		Missing(t, "SoftHSM2 (libsofthsm2.so and softhsm2-util)", "softhsm2")
	}
	dir := t.TempDir()
	s, err := CreateSoftHSM(util, module, dir, "tok", n)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", s.Conf)
	return s
}

// CreateSoftHSM initialises n tokens under dir with softhsm2-util. It is the
// part of NewSoftHSM that commands (such as hsmgate's dev setup) share.
// The caller sets SOFTHSM2_CONF to s.Conf before loading the module.
func CreateSoftHSM(util, module, dir, prefix string, n int) (*SoftHSM, error) {
	tokDir := filepath.Join(dir, "tokens")
	if err := os.MkdirAll(tokDir, 0o700); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	confText := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokDir)
	if err := os.WriteFile(conf, []byte(confText), 0o600); err != nil {
		return nil, err
	}
	s := &SoftHSM{Module: module, Dir: tokDir, Conf: conf, PIN: randomSecret(), PINFile: filepath.Join(dir, "user.pin")}
	if err := os.WriteFile(s.PINFile, []byte(s.PIN+"\n"), 0o600); err != nil {
		return nil, err
	}
	for i := 0; i < n; i++ {
		tk := Token{Label: fmt.Sprintf("%s-%d", prefix, i), PIN: s.PIN, SOPIN: randomSecret()}
		cmd := exec.Command(util, "--init-token", "--free", "--label", tk.Label, "--pin", tk.PIN, "--so-pin", tk.SOPIN)
		cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+conf)
		out, err := cmd.CombinedOutput()
		if err != nil {
			// The output names the slot and label only; PINs are not echoed.
			return nil, fmt.Errorf("softhsm2-util --init-token %s: %v: %s", tk.Label, err, strings.TrimSpace(string(out)))
		}
		s.Tokens = append(s.Tokens, tk)
	}
	return s, nil
}

func randomSecret() string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
