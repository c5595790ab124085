package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/hsmgate/hsmgate/quorum"
)

// The CLI tests are scripts of what a user types (testdata/script/*.txtar):
// the test binary acts as hsmofficer when run under that name, so each
// command is a real process with its own exit status, stdin and files.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"hsmofficer": func() {
			// Key files from the scripts use cheap Argon2id parameters so the
			// tests stay fast; the production default is in quorum.
			keyFileOptions = []quorum.KeyFileOption{quorum.WithKDFParams(1, 64, 1)}
			os.Exit(run(os.Args, os.Stdin, os.Stdout, os.Stderr))
		},
		// mkshares SET-FILE SECRET-FILE PREFIX: what the gateway will do
		// when it splits a domain key: one encrypted share file per
		// officer, PREFIX-NAME.share.
		"mkshares": func() { os.Exit(mkshares(os.Args[1:])) },
	})
}

func mkshares(args []string) int {
	if len(args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: mkshares SET-FILE SECRET-FILE PREFIX")
		return 2
	}
	set, err := readSet(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	secret, err := os.ReadFile(args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	shares, err := quorum.SplitSecret(secret, set, "domain-key/"+filepath.Base(args[1]))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, s := range shares {
		enc, _ := s.Encode()
		var fp quorum.Fingerprint
		copy(fp[:], s.Officer)
		o, _ := set.Officer(fp)
		name := fmt.Sprintf("%s-%s.share", args[2], o.Name)
		if err := os.WriteFile(name, quorum.Armor(quorum.PEMEncryptedShare, enc), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Printf("%s for %x\n", name, s.Officer)
	}
	return 0
}

func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: filepath.Join("testdata", "script"),
		Setup: func(env *testscript.Env) error {
			// A binary built with -race sleeps a second at exit unless told
			// not to; every script line is a process.
			env.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
			return nil
		},
	})
}
