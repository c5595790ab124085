// Package softhsm creates SoftHSM2 tokens in a folder of their own, for the
// development pool (hsmgate init) and for tests (internal/testenv).
package softhsm

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// softHSMModules lists where Debian and other distributions install the
// SoftHSM2 PKCS#11 module.
var softHSMModules = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
}

// Module returns the path of the installed SoftHSM2 module, or "". The
// environment variable HSMGATE_SOFTHSM_MODULE overrides the search.
func Module() string {
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

// Token is one SoftHSM token made for a test.
type Token struct {
	Label string
	PIN   string
	SOPIN string
}

// Tokens is a set of freshly initialised SoftHSM2 tokens in a folder of
// their own.
type Tokens struct {
	Module  string // path of the PKCS#11 module
	Dir     string // token directory
	Conf    string // the SOFTHSM2_CONF file for these tokens
	PIN     string // user PIN shared by every token
	PINFile string // file holding PIN, mode 0600
	Tokens  []Token
}

// Labels returns the tokens' labels in creation order.
func (s *Tokens) Labels() []string {
	out := make([]string, len(s.Tokens))
	for i, tk := range s.Tokens {
		out[i] = tk.Label
	}
	return out
}

// Create initialises n tokens labelled "<prefix>-0" … under dir with
// softhsm2-util (at path util), all with one random user PIN written to
// dir/user.pin (mode 0600). The caller sets SOFTHSM2_CONF to s.Conf before
// loading the module.
func Create(util, module, dir, prefix string, n int) (*Tokens, error) {
	tokDir := filepath.Join(dir, "tokens")
	if err := os.MkdirAll(tokDir, 0o700); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	confText := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokDir)
	if err := os.WriteFile(conf, []byte(confText), 0o600); err != nil {
		return nil, err
	}
	s := &Tokens{Module: module, Dir: tokDir, Conf: conf, PIN: randomSecret(), PINFile: filepath.Join(dir, "user.pin")}
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
