package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/hsmgate/hsmgate/attest"
	"github.com/hsmgate/hsmgate/internal/config"
	"github.com/hsmgate/hsmgate/quorum"
)

// adminAs calls the running gateway's admin API signed with SigV4 as a
// principal with an access key, and returns the status and body.
func adminAs(t *testing.T, endpoint, region, akid, secret string, roots *x509.CertPool, op string, in any) (int, []byte) {
	t.Helper()
	body, _ := json.Marshal(in)
	req, _ := http.NewRequest("POST", endpoint+"/", bytes.NewReader(body))
	req.Header.Set("X-Amz-Target", "HsmGate."+op)
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	sum := sha256.Sum256(body)
	if err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: akid, SecretAccessKey: secret}, req, hex.EncodeToString(sum[:]), "kms", region, time.Now()); err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

// An image activation end to end on an attested gateway with sealed PINs:
// staged against the installed trust, proposed, approved by two officers
// over the admin API; the gateway reseals its PINs for the new image, the
// next start measures and attests it (the new golden policy verifies, the
// old one no longer does), and the PIN blob is sealed to the new image's
// measurement only. A rollback proposal is refused.
func TestImageActivationBootsTheNewImage(t *testing.T) {
	needSoftHSM(t)
	needSwtpm(t)
	dir := t.TempDir()
	keys, _, setFile, pops := officerFiles(t, dir)
	data := filepath.Join(dir, "data")
	if r := hsmgate(t, nil, append([]string{"--data", data, "init", "--tokens", "1", "--attest", "swtpm", "--quorum-set", setFile, "--cluster", "prod", "--target", "gw-1"}, pops...)...); r.code != 0 {
		t.Fatalf("init: exit %d", r.code)
	}
	setListen(t, data, freeAddr(t))
	editConfig(t, data, func(c *config.Config) { c.Images = &config.Images{Target: "x86_64-test"} })
	run := func(want int, args ...string) result {
		t.Helper()
		r := hsmgate(t, nil, append([]string{"--data", data}, args...)...)
		if r.code != want {
			t.Fatalf("hsmgate %s: exit %d, want %d: %s%s", strings.Join(args, " "), r.code, want, r.stdout, r.stderr)
		}
		return r
	}
	enrollment := filepath.Join(dir, "enrollment.json")
	run(0, "attest", "enroll", "--out", enrollment)
	run(0, "attest", "seal-pins")
	oldGolden := filepath.Join(dir, "golden-old.json")
	run(0, "attest", "golden", "--out", oldGolden)
	sealedPIN := filepath.Join(data, "attest", "pins", "0.sealed")
	before := readSealed(t, sealedPIN)

	// Release: a key, the trust, two bundles.
	run(0, "image", "keygen", "--out", filepath.Join(dir, "rel.key"))
	trust := filepath.Join(dir, "trust.pem")
	run(0, "image", "trust", "init", "--key", filepath.Join(dir, "rel.pub"), "--threshold", "1", "--out", trust)
	run(0, "image", "trust", "install", trust)
	run(1, "image", "trust", "install", trust)
	bundle := func(version, vs string) string {
		payload := filepath.Join(dir, "payload-"+vs)
		os.WriteFile(payload, []byte("appliance image "+vs), 0o644)
		out := filepath.Join(dir, vs+".bundle")
		run(0, "image", "build", "--name", "hsmgate-appliance", "--version", version, "--version-string", vs, "--target", "x86_64-test",
			"--builder", "ci", "--source-revision", "abc123", "--out", out, payload)
		run(0, "image", "sign", "--key", filepath.Join(dir, "rel.key"), out)
		return out
	}
	b1, b2 := bundle("1", "1.0.0"), bundle("2", "2.0.0")

	// Officers with access keys.
	creds := map[string][2]string{}
	for name, k := range keys {
		run(0, "principal", "add", name)
		r := run(0, "principal", "create-access-key", name)
		m := regexp.MustCompile(`aws_access_key_id = (\S+)\naws_secret_access_key = (\S+)`).FindStringSubmatch(r.stdout)
		creds[name] = [2]string{m[1], m[2]}
		run(0, "quorum", "link", name, k.Fingerprint().String())
	}

	cfg, _ := config.Load(data)
	endpoint := "https://" + cfg.Gateway.Listen
	roots := caPool(t, filepath.Join(data, "pki", "ca.pem"))
	srv := startServe(t, data)
	srv.waitReady(t, endpoint, roots)
	r := run(0, "image", "stage", b2)
	d2 := regexp.MustCompile(`image SHA-256\s+([0-9a-f]{64})`).FindStringSubmatch(r.stdout)[1]
	r = run(0, "image", "stage", b1)
	d1 := regexp.MustCompile(`image SHA-256\s+([0-9a-f]{64})`).FindStringSubmatch(r.stdout)[1]

	approve := func(proposalFile string) map[string]any {
		t.Helper()
		armored, _ := os.ReadFile(proposalFile)
		raw, err := quorum.DearmorType(armored, quorum.PEMProposal)
		if err != nil {
			t.Fatal(err)
		}
		var out map[string]any
		for _, name := range []string{"alice", "bob"} {
			a, _ := keys[name].Approve(raw)
			ab, _ := a.Encode()
			st, body := adminAs(t, endpoint, cfg.Gateway.Region, creds[name][0], creds[name][1], roots, "QuorumApprove", map[string]any{"Approval": ab})
			if st != 200 {
				t.Fatalf("%s approves: %d %s", name, st, body)
			}
			out = map[string]any{}
			json.Unmarshal(body, &out)
		}
		return out
	}
	proposalFile := func(r result) string {
		return regexp.MustCompile(`the proposal file is (\S+)`).FindStringSubmatch(r.stdout)[1]
	}

	// Activate version 2.
	r = run(0, "image", "activate", "--requester", "ops@example.com", d2)
	out := approve(proposalFile(r))
	if out["Status"] != "EXECUTED" || out["ResultError"] != nil {
		t.Fatalf("activation: %v", out)
	}
	if _, err := os.Stat(sealedPIN + ".next"); err != nil {
		t.Fatalf("no PIN sealed for the new image: %v", err)
	}
	// A rollback to version 1 is refused at once.
	r = run(1, "image", "activate", d1)
	if !strings.Contains(r.stderr, "rollback") {
		t.Fatalf("rollback proposal: %s", r.stderr)
	}
	srv.stop(t, syscall.SIGTERM)

	// The next start measures version 2, unseals the PIN sealed for it,
	// and attests with the new golden value.
	srv = startServe(t, data)
	srv.waitReady(t, endpoint, roots)
	newGolden := filepath.Join(data, "attest", "golden-next.json")
	r = run(0, "attest", "verify", "--enrollment", enrollment, "--policy", newGolden)
	if !strings.Contains(r.stdout, "image hsmgate-appliance 2.0.0") {
		t.Fatalf("attest verify: %s", r.stdout)
	}
	r = run(1, "attest", "verify", "--enrollment", enrollment, "--policy", oldGolden)
	if !strings.Contains(r.stderr, "golden policy") {
		t.Fatalf("the old golden policy: %s", r.stderr)
	}
	srv.stop(t, syscall.SIGTERM)
	after := readSealed(t, sealedPIN)
	if _, err := os.Stat(sealedPIN + ".next"); err == nil {
		t.Error("the blob sealed for the new image was not promoted")
	}
	img := attest.DefaultPCRs.Image
	if bytes.Equal(before.PCRs[img], after.PCRs[img]) {
		t.Error("the PIN is still sealed to the previous image's measurement")
	}
	r = run(0, "image", "list")
	if !regexp.MustCompile(`active\s+.*2\.0\.0`).MatchString(r.stdout) {
		t.Errorf("image list: %s", r.stdout)
	}
}

func readSealed(t *testing.T, path string) *attest.Sealed {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := attest.ParseSealed(raw)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
