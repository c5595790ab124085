package main

import (
	"context"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/hsmgate/hsmgate/internal/config"
	"github.com/hsmgate/hsmgate/internal/softhsm"
	"github.com/hsmgate/hsmgate/quorum"
)

// officerFiles makes alice, bob and carol, a first quorum set with
// threshold 2 for every kind, and its files: the set and --pop flags.
func officerFiles(t *testing.T, dir string) (keys map[string]*quorum.OfficerKey, set *quorum.Set, setFile string, popFlags []string) {
	t.Helper()
	th := map[quorum.Kind]int{}
	for _, k := range quorum.Kinds {
		th[k] = 2
	}
	set = &quorum.Set{Epoch: 1, Thresholds: th}
	keys = map[string]*quorum.OfficerKey{}
	names := []string{"alice", "bob", "carol"}
	for _, n := range names {
		k, err := quorum.GenerateOfficerKey(n)
		if err != nil {
			t.Fatal(err)
		}
		keys[n] = k
		set.Officers = append(set.Officers, k.Public())
	}
	raw, err := set.Encode()
	if err != nil {
		t.Fatal(err)
	}
	setFile = filepath.Join(dir, "quorum.set")
	os.WriteFile(setFile, quorum.Armor(quorum.PEMSet, raw), 0o644)
	for _, n := range names {
		pop, _ := keys[n].ProvePossession(set)
		b, _ := pop.Encode()
		f := filepath.Join(dir, n+".pop")
		os.WriteFile(f, quorum.Armor(quorum.PEMPossession, b), 0o644)
		popFlags = append(popFlags, "--pop", f)
	}
	return keys, set, setFile, popFlags
}

// The domain key split at init is rebuilt by two of three officers onto a
// fresh token that replaced the gateway's only HSM, which then decrypts
// what was encrypted before.
func TestRecoverDomainKeyOntoFreshToken(t *testing.T) {
	needSoftHSM(t)
	dir := t.TempDir()
	keys, _, setFile, pops := officerFiles(t, dir)
	data := filepath.Join(dir, "data")

	if r := hsmgate(t, nil, append([]string{"--data", data, "init", "--tokens", "1", "--quorum-set", setFile, "--cluster", "prod"}, pops...)...); r.code != 1 || !strings.Contains(r.stderr, "--cluster and --target") {
		t.Fatalf("init without a target: exit %d: %s", r.code, r.stderr)
	}
	if r := hsmgate(t, nil, append([]string{"--data", data, "init", "--tokens", "1", "--quorum-set", setFile, "--cluster", "prod", "--target", "gw-1"}, pops[:4]...)...); r.code != 1 || !strings.Contains(r.stderr, "proof of possession") {
		t.Fatalf("init without carol's proof: exit %d: %s", r.code, r.stderr)
	}
	r := hsmgate(t, nil, append([]string{"--data", data, "init", "--tokens", "1", "--quorum-set", setFile, "--cluster", "prod", "--target", "gw-1"}, pops...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "any 2 of 3 recover it") {
		t.Fatalf("init: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	shareFiles, _ := filepath.Glob(filepath.Join(data, SharesDir, "*.share"))
	if len(shareFiles) != 3 {
		t.Fatalf("share files: %v", shareFiles)
	}
	if r := hsmgate(t, nil, "--data", data, "quorum", "status"); r.code != 0 || !strings.Contains(r.stdout, `cluster "prod", target "gw-1"`) {
		t.Fatalf("quorum status: %s%s", r.stdout, r.stderr)
	}

	// Data encrypted under the sample key.
	sg := serveData(t, data)
	enc := sg.encryptSample(t, "written before the HSM died")

	// The HSM is replaced: the configuration names only a fresh token.
	replaceToken(t, data)

	// The ceremony, with officers dropping files into the inbox.
	inbox := filepath.Join(dir, "inbox")
	exe, _ := os.Executable()
	cmd := exec.Command(exe, "--data", data, "quorum", "recover", "--inbox", inbox, "--requester", "ops@example.com", "--timeout", "3m")
	cmd.Env = append(os.Environ(), runMainEnv+"=1")
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	propFile := filepath.Join(inbox, "recovery.proposal")
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(propFile); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no proposal in the inbox: %s", out.String())
		}
		select {
		case err := <-done:
			t.Fatalf("recover exited early (%v): %s", err, out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	propArmored, _ := os.ReadFile(propFile)
	propRaw, err := quorum.DearmorType(propArmored, quorum.PEMProposal)
	if err != nil {
		t.Fatal(err)
	}
	p, err := quorum.DecodeProposal(propRaw)
	if err != nil {
		t.Fatal(err)
	}
	if p.Kind != quorum.KindDomainRecovery || p.Requester != "ops@example.com" {
		t.Fatalf("proposal: %s", p.Render())
	}
	drop := func(name, typ string, b []byte) {
		tmp := filepath.Join(dir, name)
		os.WriteFile(tmp, quorum.Armor(typ, b), 0o644)
		if err := os.Rename(tmp, filepath.Join(inbox, name)); err != nil {
			t.Fatal(err)
		}
	}
	drop("junk.rshare", quorum.PEMRecoveryShare, []byte("not a share"))
	for _, n := range []string{"alice", "carol"} {
		k := keys[n]
		a, _ := k.Approve(propRaw)
		ab, _ := a.Encode()
		drop(n+".approval", quorum.PEMApproval, ab)
		var es *quorum.EncryptedShare
		for _, f := range shareFiles {
			raw, _ := os.ReadFile(f)
			b, _ := quorum.DearmorType(raw, quorum.PEMEncryptedShare)
			if s, err := quorum.DecodeEncryptedShare(b); err == nil {
				fp := k.Fingerprint()
				if string(s.Officer) == string(fp[:]) {
					es = s
				}
			}
		}
		if es == nil {
			t.Fatalf("no share file for %s", n)
		}
		sh, err := k.DecryptShare(es)
		if err != nil {
			t.Fatal(err)
		}
		rs, err := quorum.SealRecoveryShare(p, quorum.ProposalHash(propRaw), sh)
		if err != nil {
			t.Fatal(err)
		}
		rb, _ := rs.Encode()
		drop(n+".rshare", quorum.PEMRecoveryShare, rb)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("recover: %v\n%s", err, out.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("recover did not finish:\n%s", out.String())
	}
	log := out.String()
	for _, want := range []string{"junk.rshare: not counted", "alice.approval: approval counted", "carol.rshare: share", "Recovered: the domain key"} {
		if !strings.Contains(log, want) {
			t.Errorf("recover output lacks %q:\n%s", want, log)
		}
	}

	// The replacement token serves the old data.
	if r := hsmgate(t, nil, "--data", data, "pool", "check"); r.code != 0 {
		t.Fatalf("pool check after recovery: %s%s", r.stdout, r.stderr)
	}
	sg.wantDecrypt(t, enc, "written before the HSM died")

	// Nothing left to recover onto.
	if r := hsmgate(t, nil, "--data", data, "quorum", "recover", "--inbox", inbox, "--timeout", "1s"); r.code != 1 || !strings.Contains(r.stderr, "no slot lacks the domain key") {
		t.Fatalf("second recover: exit %d: %s", r.code, r.stderr)
	}
}

// replaceToken points data's configuration at one fresh SoftHSM token
// instead of its tokens, as after an HSM was replaced.
func replaceToken(t *testing.T, data string) {
	t.Helper()
	util, module, err := findSoftHSM()
	if err != nil {
		t.Fatal(err)
	}
	soft, err := softhsm.Create(util, module, filepath.Join(data, "softhsm-new"), "replacement", 1)
	if err != nil {
		t.Fatal(err)
	}
	editConfig(t, data, func(cfg *config.Config) {
		cfg.Pool.Modules[0].Tokens = []config.Token{{Label: soft.Tokens[0].Label}}
		cfg.Pool.Modules[0].PINFile = soft.PINFile
		cfg.Pool.Modules[0].Env = map[string]string{"SOFTHSM2_CONF": soft.Conf}
	})
}

// With a TPM, init also seals a copy of the domain key to the image and
// binary; recover --sealed provisions a replacement token from it without
// officers, but not when run by another binary.
func TestRecoverFromSealedCopy(t *testing.T) {
	needSoftHSM(t)
	needSwtpm(t)
	dir := t.TempDir()
	_, _, setFile, pops := officerFiles(t, dir)
	data := filepath.Join(dir, "data")
	r := hsmgate(t, nil, append([]string{"--data", data, "init", "--tokens", "1", "--attest", "swtpm", "--quorum-set", setFile, "--cluster", "prod", "--target", "gw-1"}, pops...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "Sealed a recovery copy of the domain key") {
		t.Fatalf("init: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	if r := hsmgate(t, nil, "--data", data, "quorum", "recover", "--sealed"); r.code != 1 || !strings.Contains(r.stderr, "no slot lacks the domain key") {
		t.Fatalf("recover with nothing to do: exit %d: %s", r.code, r.stderr)
	}
	sg := serveData(t, data)
	enc := sg.encryptSample(t, "sealed away")
	replaceToken(t, data)

	// Another binary: the copy does not unseal, nothing is provisioned.
	exe, _ := os.Executable()
	other := filepath.Join(dir, "bin", "hsmgate")
	copyFile(t, exe, other, 0o755)
	appendTo(t, other, []byte("tampered"))
	if r := hsmgateExe(t, other, "--data", data, "quorum", "recover", "--sealed"); r.code != 1 || !strings.Contains(r.stderr, "unseal the domain-key copy") {
		t.Fatalf("recover --sealed by another binary: exit %d: %s", r.code, r.stderr)
	}
	if r := hsmgate(t, nil, "--data", data, "pool", "check"); r.code != 1 {
		t.Fatalf("pool check after a refused recovery: exit %d", r.code)
	}
	r = hsmgate(t, nil, "--data", data, "quorum", "recover", "--sealed")
	if r.code != 0 || !strings.Contains(r.stdout, "Recovered from the TPM-sealed copy") {
		t.Fatalf("recover --sealed: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	sg.wantDecrypt(t, enc, "sealed away")
}

// servedData serves a data folder when asked, as its admin's client.
type servedData struct {
	data, endpoint string
	roots          *x509.CertPool
	c              *kms.Client
}

// serveData gives data a free port and a client for its admin.
func serveData(t *testing.T, data string) *servedData {
	t.Helper()
	setListen(t, data, freeAddr(t))
	cfg, err := config.Load(data)
	if err != nil {
		t.Fatal(err)
	}
	sd := &servedData{data: data, endpoint: "https://" + cfg.Gateway.Listen, roots: caPool(t, filepath.Join(data, "pki", "ca.pem"))}
	akid, secret := readAdminCredentials(t, data)
	sd.c = kmsClient(sd.endpoint, cfg.Gateway.Region, akid, secret, sd.roots)
	return sd
}

// encryptSample serves the gateway, encrypts plaintext under the sample
// key, stops it and returns the ciphertext.
func (sd *servedData) encryptSample(t *testing.T, plaintext string) []byte {
	t.Helper()
	srv := startServe(t, sd.data)
	srv.waitReady(t, sd.endpoint, sd.roots)
	enc, err := sd.c.Encrypt(context.Background(), &kms.EncryptInput{KeyId: aws.String(SampleKeyAlias), Plaintext: []byte(plaintext)})
	if err != nil {
		t.Fatal(err)
	}
	srv.stop(t, syscall.SIGTERM)
	return enc.CiphertextBlob
}

// wantDecrypt serves the gateway and checks that ciphertext decrypts to
// plaintext (on the replacement token).
func (sd *servedData) wantDecrypt(t *testing.T, ciphertext []byte, plaintext string) {
	t.Helper()
	srv := startServe(t, sd.data)
	srv.waitReady(t, sd.endpoint, sd.roots)
	dec, err := sd.c.Decrypt(context.Background(), &kms.DecryptInput{CiphertextBlob: ciphertext})
	if err != nil || string(dec.Plaintext) != plaintext {
		t.Fatalf("decrypt on the replacement token: %v", err)
	}
	srv.stop(t, syscall.SIGTERM)
}
