//go:build !(pkcs11 && cgo)

package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

// The pure-Go build says how to get token support instead of failing
// obscurely.
func TestTokenNeedsPKCS11Build(t *testing.T) {
	var out, errb bytes.Buffer
	st := run([]string{"hsmofficer", "keygen", "--name", "dana", "--token", "card", "--out", filepath.Join(t.TempDir(), "k")}, strings.NewReader(""), &out, &errb)
	if st != 1 || !strings.Contains(errb.String(), "-tags pkcs11") {
		t.Fatalf("keygen --token: status %d: %s%s", st, out.String(), errb.String())
	}
}
