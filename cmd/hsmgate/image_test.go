package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/hsmgate/hsmgate/images"
	"github.com/hsmgate/hsmgate/quorum"
)

// TestImageScripts runs testdata/image/*.txtar: what a release engineer
// and an operator type, each hsmgate command a real process (this test
// binary, run as hsmgate through runMainEnv).
//
// Besides hsmgate, the scripts have commands for what is not a user's
// typing: mkofficer (an officer key file, as hsmofficer keygen makes it, with
// cheap Argon2id parameters), flipbyte and the bundle editors (an attacker's
// tampering), and activate (what the gateway does once officers approved a
// firmware-activation proposal).
func TestImageScripts(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	testscript.Run(t, testscript.Params{
		Dir: filepath.Join("testdata", "image"),
		Setup: func(env *testscript.Env) error {
			env.Setenv(runMainEnv, "1")
			env.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"hsmgate": func(ts *testscript.TestScript, neg bool, args []string) {
				err := ts.Exec(exe, args...)
				if err != nil && !neg {
					ts.Fatalf("hsmgate %s: %v", strings.Join(args, " "), err)
				}
				if err == nil && neg {
					ts.Fatalf("hsmgate %s: unexpected success", strings.Join(args, " "))
				}
			},
			"mkofficer":   cmdMkOfficer,
			"flipbyte":    cmdFlipByte,
			"editbundle":  cmdEditBundle,
			"activate":    cmdActivate,
			"stagedcount": cmdStagedCount,
		},
	})
}

// mkofficer NAME: NAME.key (passphrase $HSMOFFICER_PASSPHRASE) and NAME.pub.
func cmdMkOfficer(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: mkofficer NAME")
	}
	k, err := quorum.GenerateOfficerKey(args[0])
	ts.Check(err)
	kf, err := quorum.EncryptKeyFile(k, []byte(ts.Getenv("HSMOFFICER_PASSPHRASE")), quorum.WithKDFParams(1, 64, 1))
	ts.Check(err)
	pub, err := k.Public().Encode()
	ts.Check(err)
	ts.Check(os.WriteFile(ts.MkAbs(args[0]+".key"), quorum.Armor(quorum.PEMOfficerKey, kf), 0o600))
	ts.Check(os.WriteFile(ts.MkAbs(args[0]+".pub"), quorum.Armor(quorum.PEMOfficerPublic, pub), 0o644))
}

// flipbyte FILE N: flip the low bit of byte N (negative: from the end).
func cmdFlipByte(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: flipbyte FILE N")
	}
	path := ts.MkAbs(args[0])
	data, err := os.ReadFile(path)
	ts.Check(err)
	n, err := strconv.Atoi(args[1])
	ts.Check(err)
	if n < 0 {
		n += len(data)
	}
	data[n] ^= 1
	ts.Check(os.WriteFile(path, data, 0o644))
}

// editbundle FILE version N | dupsig: change the signed manifest's version
// (keeping the signatures), or repeat the first signature.
func cmdEditBundle(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 2 {
		ts.Fatalf("usage: editbundle FILE version N | dupsig")
	}
	path := ts.MkAbs(args[0])
	data, err := os.ReadFile(path)
	ts.Check(err)
	env, err := images.ReadBundleHeader(path)
	ts.Check(err)
	old, err := env.EncodeHeader()
	ts.Check(err)
	switch args[1] {
	case "version":
		m, err := images.DecodeManifest(env.Manifest)
		ts.Check(err)
		m.Version, err = strconv.ParseUint(args[2], 10, 64)
		ts.Check(err)
		env.Manifest, err = m.Encode()
		ts.Check(err)
	case "dupsig":
		env.Signatures = append(env.Signatures, env.Signatures[0])
	default:
		ts.Fatalf("editbundle: unknown edit %q", args[1])
	}
	h, err := env.EncodeHeader()
	ts.Check(err)
	ts.Check(os.WriteFile(path, append(h, data[len(old):]...), 0o644))
}

// activate DATA TRUST TARGET BUNDLE: activate the staged image of BUNDLE in
// DATA's image store, as the gateway does once a firmware-activation
// proposal naming it is approved.
func cmdActivate(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 4 {
		ts.Fatalf("usage: activate DATA TRUST TARGET BUNDLE")
	}
	tr, err := readImageTrust(ts.MkAbs(args[1]))
	ts.Check(err)
	s, err := images.OpenStore(ts.MkAbs(args[0]), images.Options{Trust: tr, Target: args[2]})
	ts.Check(err)
	env, err := images.ReadBundleHeader(ts.MkAbs(args[3]))
	ts.Check(err)
	m, err := images.DecodeManifest(env.Manifest)
	ts.Check(err)
	img, err := s.Activate(images.ManifestDigest(env.Manifest), m.VersionString)
	if err != nil {
		fmt.Fprintf(ts.Stderr(), "%v\n", err)
		if !neg {
			ts.Fatalf("activate: %v", err)
		}
		return
	}
	if neg {
		ts.Fatalf("activate: unexpected success")
	}
	fmt.Fprintf(ts.Stdout(), "activated %s version %d\n", img.Digest, img.Manifest.Version)
}

// stagedcount DATA N: the image store holds exactly N entries (staged
// images and anything a failed staging might have left).
func cmdStagedCount(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: stagedcount DATA N")
	}
	entries, err := os.ReadDir(filepath.Join(ts.MkAbs(args[0]), images.StoreDir, "staged"))
	ts.Check(err)
	if want, _ := strconv.Atoi(args[1]); len(entries) != want {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		ts.Fatalf("image store holds %d entries %v, want %s", len(entries), names, args[1])
	}
}
