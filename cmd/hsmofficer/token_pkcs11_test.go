//go:build pkcs11 && cgo

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/internal/testenv"
	"github.com/hsmgate/hsmgate/quorum"
)

// An officer key whose Ed25519 half is made in, and signs in, a SoftHSM
// token: keygen, a proof of possession and an approval all verify, and
// the key file alone (without the token's PIN) signs nothing.
func TestTokenOfficerKeyInSoftHSM(t *testing.T) {
	env := testenv.NewSoftHSM(t, 1)
	dir := t.TempDir()
	t.Setenv(pkcs11ModuleEnv, env.Module)
	t.Setenv(tokenPINEnv, env.PIN)
	t.Setenv(passphraseEnv, "officer passphrase")
	keyFileOptions = []quorum.KeyFileOption{quorum.WithKDFParams(1, 64, 1)}
	t.Cleanup(func() { keyFileOptions = nil })
	hsmofficer := func(want int, args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if st := run(append([]string{"hsmofficer"}, args...), strings.NewReader(""), &out, &errb); st != want {
			t.Fatalf("hsmofficer %s: status %d, want %d\n%s%s", strings.Join(args, " "), st, want, out.String(), errb.String())
		}
		return out.String() + errb.String()
	}
	label := env.Tokens[0].Label
	keyFile, pubFile := filepath.Join(dir, "dana.key"), filepath.Join(dir, "dana.pub")
	out := hsmofficer(0, "keygen", "--name", "dana", "--token", label, "--out", keyFile, "--pub", pubFile)
	if !strings.Contains(out, `in PKCS#11 token "`+label+`"`) {
		t.Fatalf("keygen: %s", out)
	}
	pub, err := readPublic(pubFile)
	if err != nil {
		t.Fatal(err)
	}
	// The key file holds no Ed25519 seed: only the reference.
	raw, _ := os.ReadFile(keyFile)
	data, _ := quorum.DearmorType(raw, quorum.PEMOfficerKey)
	k, err := quorum.DecryptKeyFile(data, []byte("officer passphrase"))
	if err != nil {
		t.Fatal(err)
	}
	if k.Token() == nil || k.Token().Token != label {
		t.Fatalf("key file token reference: %+v", k.Token())
	}

	// A set with dana and two software officers; dana proves possession
	// and approves with the token.
	alice, _ := quorum.GenerateOfficerKey("alice")
	bob, _ := quorum.GenerateOfficerKey("bob")
	th := map[quorum.Kind]int{}
	for _, kind := range quorum.Kinds {
		th[kind] = 2
	}
	set := &quorum.Set{Epoch: 1, Thresholds: th, Officers: []quorum.OfficerPublicKey{alice.Public(), bob.Public(), pub}}
	setRaw, _ := set.Encode()
	setFile := filepath.Join(dir, "quorum.set")
	os.WriteFile(setFile, quorum.Armor(quorum.PEMSet, setRaw), 0o644)
	popFile := filepath.Join(dir, "dana.pop")
	hsmofficer(0, "pop", "--key", keyFile, "--set", setFile, "--out", popFile)
	popArm, _ := os.ReadFile(popFile)
	popRaw, _ := quorum.DearmorType(popArm, quorum.PEMPossession)
	pop, err := quorum.DecodeProofOfPossession(popRaw)
	if err != nil {
		t.Fatal(err)
	}
	if err := quorum.VerifyPossession(set, []quorum.OfficerPublicKey{pub}, []*quorum.ProofOfPossession{pop}); err != nil {
		t.Fatalf("the token key's proof of possession: %v", err)
	}
	now := time.Now()
	p, _ := quorum.NewProposal(set, &quorum.FirmwareActivationParams{Version: "1.0", ImageSHA256: make([]byte, 32)},
		quorum.Header{ClusterID: "prod", Target: "gw-1", Requester: "ops", NotBefore: now.Add(-time.Minute), Expiry: now.Add(time.Hour)})
	pRaw, _ := p.Encode()
	propFile := filepath.Join(dir, "fw.proposal")
	os.WriteFile(propFile, quorum.Armor(quorum.PEMProposal, pRaw), 0o644)
	apFile := filepath.Join(dir, "dana.approval")
	hsmofficer(0, "approve", "--key", keyFile, "--set", setFile, "--yes", "--out", apFile, propFile)
	aAlice, _ := alice.Approve(pRaw)
	aAliceRaw, _ := aAlice.Encode()
	aliceFile := filepath.Join(dir, "alice.approval")
	os.WriteFile(aliceFile, quorum.Armor(quorum.PEMApproval, aAliceRaw), 0o644)
	if out := hsmofficer(0, "verify", "--set", setFile, propFile, apFile, aliceFile); !strings.Contains(out, "APPROVED") {
		t.Fatalf("verify: %s", out)
	}

	// Without the token's PIN, or with a wrong one, nothing is signed.
	t.Setenv(tokenPINEnv, "wrong-pin")
	if out := hsmofficer(1, "pop", "--key", keyFile, "--set", setFile, "--out", filepath.Join(dir, "again.pop")); !strings.Contains(out, "log in") {
		t.Fatalf("pop with a wrong token PIN: %s", out)
	}
}
