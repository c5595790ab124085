package main

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/attest"
	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/gateway/ciphertext"
	"github.com/hsmgate/hsmgate/gateway/kmsapi"
	"github.com/hsmgate/hsmgate/internal/gatewaytest"
	"github.com/hsmgate/hsmgate/internal/pki"
	"github.com/hsmgate/hsmgate/internal/swtpmtest"
	"github.com/hsmgate/hsmgate/quorum"
)

// onlineEnv is a real gateway with a quorum set of alice, bob and carol
// (threshold 2; dave is linked but not in the set) and mallory, each a
// principal with a client certificate the gateway issued.
type onlineEnv struct {
	t     *testing.T
	g     *gatewaytest.Gateway
	dir   string
	admin *gateway.Admin
	keys  map[string]*quorum.OfficerKey
	flags map[string][]string
	set1  *quorum.Set
	th    func(int) map[quorum.Kind]int
}

func (e *onlineEnv) do(op string, in, out any) {
	t := e.t
	t.Helper()
	body, _ := json.Marshal(in)
	resp, apiErr := e.admin.Do(context.Background(), kmsapi.Caller{Principal: "(test)", Admin: true}, "HsmGate."+op, body)
	if apiErr != nil {
		t.Fatalf("%s: %v", op, apiErr)
	}
	if out != nil {
		if err := json.Unmarshal(resp, out); err != nil {
			t.Fatal(err)
		}
	}
}

// principal makes a principal with a client certificate: its flags.
func (e *onlineEnv) principal(name string) []string {
	e.do("CreatePrincipal", gateway.AdminCreatePrincipalInput{PrincipalName: name}, nil)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	var out gateway.AdminIssueClientCertificateOutput
	e.do("IssueClientCertificate", gateway.AdminIssueClientCertificateInput{PrincipalName: name,
		CertificateSigningRequest: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))}, &out)
	der, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile := filepath.Join(e.dir, name+".pem"), filepath.Join(e.dir, name+".key")
	os.WriteFile(certFile, []byte(out.Certificate), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
	return []string{"--endpoint", e.g.URL, "--cert", certFile, "--key", keyFile, "--ca", filepath.Join(e.g.Dir, gateway.CACertFile)}
}

func (e *onlineEnv) hsmofficer(wantStatus int, args ...string) string {
	t := e.t
	t.Helper()
	var out, errb bytes.Buffer
	if st := run(append([]string{"hsmofficer"}, args...), strings.NewReader(""), &out, &errb); st != wantStatus {
		t.Fatalf("hsmofficer %s: status %d, want %d\n%s%s", strings.Join(args, " "), st, wantStatus, out.String(), errb.String())
	}
	return out.String() + errb.String()
}

func cmdline(cmd string, fl []string, rest ...string) []string {
	return append(append([]string{cmd}, fl...), rest...)
}

func (e *onlineEnv) file(name, typ string, data []byte) string {
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, quorum.Armor(typ, data), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return p
}

func (e *onlineEnv) enc(v interface{ Encode() ([]byte, error) }) []byte {
	b, err := v.Encode()
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

func startOnline(t *testing.T) *onlineEnv {
	g := gatewaytest.Start(t, 1, "us-east-1")
	caFile := filepath.Join(g.Dir, gateway.CACertFile)
	e := &onlineEnv{t: t, g: g, dir: t.TempDir(), keys: map[string]*quorum.OfficerKey{}, flags: map[string][]string{}}
	e.admin = &gateway.Admin{Identities: &gateway.Identities{Store: g.Store, Pool: g.Pool}, Account: gatewaytest.Account,
		QuorumLedger: filepath.Join(g.Dir, gateway.QuorumLedgerFile),
		CACertificates: func(context.Context) ([]*x509.Certificate, error) {
			raw, err := os.ReadFile(caFile)
			if err != nil {
				return nil, err
			}
			b, _ := pem.Decode(raw)
			c, err := x509.ParseCertificate(b.Bytes)
			return []*x509.Certificate{c}, err
		}}
	names := []string{"alice", "bob", "carol", "dave", "mallory"}
	for _, n := range names {
		e.keys[n], _ = quorum.GenerateOfficerKey(n)
		e.flags[n] = e.principal(n)
	}
	e.th = func(n int) map[quorum.Kind]int {
		m := map[quorum.Kind]int{}
		for _, k := range quorum.Kinds {
			m[k] = n
		}
		return m
	}
	e.set1 = &quorum.Set{Epoch: 1, Thresholds: e.th(2), Officers: []quorum.OfficerPublicKey{e.keys["alice"].Public(), e.keys["bob"].Public(), e.keys["carol"].Public()}}
	in := gateway.QuorumInitInput{Set: e.enc(e.set1), ClusterId: "prod", Target: "gw-1"}
	for _, n := range names[:3] {
		pop, _ := e.keys[n].ProvePossession(e.set1)
		in.ProofsOfPossession = append(in.ProofsOfPossession, e.enc(pop))
	}
	e.do("QuorumInit", in, nil)
	for _, n := range names[:4] {
		e.do("QuorumLinkOfficer", gateway.QuorumLinkOfficerInput{PrincipalName: n, Fingerprint: e.keys[n].Fingerprint().String()}, nil)
	}
	return e
}

// TestOnline runs the online commands against a real gateway, over mutual
// TLS with client certificates the gateway issued to the officers'
// principals.
func TestOnline(t *testing.T) {
	e := startOnline(t)
	dir, keys, flags, set1, th := e.dir, e.keys, e.flags, e.set1, e.th
	hsmofficer, file, enc := e.hsmofficer, e.file, e.enc
	mallory := flags["mallory"]

	out := hsmofficer(0, cmdline("status", flags["carol"], "--set-out", filepath.Join(dir, "cur.set"))...)
	if !strings.Contains(out, "epoch 1") {
		t.Fatalf("status: %s", out)
	}
	set2 := &quorum.Set{Epoch: 2, Thresholds: th(3), Officers: append(append([]quorum.OfficerPublicKey{}, set1.Officers...), keys["dave"].Public())}
	now := time.Now()
	prop, _ := quorum.ProposeSetChange(set1, set2, quorum.Header{ClusterID: "prod", Target: "gw-1", Requester: "alice", NotBefore: now.Add(-time.Minute), Expiry: now.Add(time.Hour)})
	propRaw := enc(prop)
	davePop, _ := keys["dave"].ProvePossession(set2)
	out = hsmofficer(0, cmdline("propose", flags["alice"], "--pop", file("dave.pop", quorum.PEMPossession, enc(davePop)), file("change.proposal", quorum.PEMProposal, propRaw))...)
	if !strings.Contains(out, "PENDING: request "+prop.RequestID.String()) {
		t.Fatalf("propose: %s", out)
	}
	out = hsmofficer(0, cmdline("list", flags["bob"])...)
	if !strings.Contains(out, prop.RequestID.String()) || !strings.Contains(out, "0 of 2 approvals") {
		t.Fatalf("list: %s", out)
	}
	got := filepath.Join(dir, "got.proposal")
	hsmofficer(0, cmdline("show", flags["bob"], "--out", got, prop.RequestID.String())...)
	if raw, _ := readArmored(got, quorum.PEMProposal); !bytes.Equal(raw, propRaw) {
		t.Fatal("show --out: another proposal")
	}
	approval := func(n string) string {
		a, _ := keys[n].Approve(propRaw)
		return file(n+".approval", quorum.PEMApproval, enc(a))
	}
	apA, apB := approval("alice"), approval("bob")
	out = hsmofficer(1, cmdline("approve", mallory, apA)...)
	if !strings.Contains(out, "AccessDeniedException") {
		t.Fatalf("mallory approves: %s", out)
	}
	if out = hsmofficer(0, cmdline("approve", flags["alice"], apA)...); !strings.Contains(out, "PENDING") {
		t.Fatalf("approve: %s", out)
	}
	if out = hsmofficer(1, cmdline("approve", flags["alice"], approval("alice"))...); !strings.Contains(out, "officer already counted") {
		t.Fatalf("duplicate approval: %s", out)
	}
	if out = hsmofficer(0, cmdline("approve", flags["bob"], apB)...); !strings.Contains(out, "EXECUTED") || !strings.Contains(out, "epoch 2") {
		t.Fatalf("second approval: %s", out)
	}
	if out = hsmofficer(1, cmdline("approve", flags["alice"], apA)...); !strings.Contains(out, "replay refused") {
		t.Fatalf("replayed approval: %s", out)
	}
	if out = hsmofficer(0, cmdline("status", flags["dave"])...); !strings.Contains(out, "epoch 2") {
		t.Fatalf("status after the change: %s", out)
	}
}

// TestOnlineKeyExport is an export end to end through hsmofficer: drafted
// offline, proposed online, approved by two of three officers, fetched,
// and opened by the recipient, whose key then decrypts what the gateway
// encrypted before.
func TestOnlineKeyExport(t *testing.T) {
	e := startOnline(t)
	ctx := context.Background()
	kms := &kmsapi.Service{Pool: e.g.Pool, Store: e.g.Store, Account: gatewaytest.Account, Region: "us-east-1"}
	call := func(op string, in, out any) {
		t.Helper()
		body, _ := json.Marshal(in)
		resp, apiErr := kms.Do(ctx, kmsapi.Caller{Principal: gateway.AdminName, Admin: true}, kmsapi.TargetPrefix+op, body, nil)
		if apiErr != nil {
			t.Fatalf("%s: %v", op, apiErr)
		}
		if err := json.Unmarshal(resp, out); err != nil {
			t.Fatal(err)
		}
	}
	policy := `{"Version":"2012-10-17","Statement":[
	  {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::` + gatewaytest.Account + `:root"},"Action":"kms:*","Resource":"*"},
	  {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::` + gatewaytest.Account + `:user/alice"},"Action":"hsmgate:ExportKey","Resource":"*"}]}`
	var created struct{ KeyMetadata struct{ Arn string } }
	call("CreateKey", map[string]any{"Policy": policy}, &created)
	arn := created.KeyMetadata.Arn
	var encrypted struct{ CiphertextBlob []byte }
	call("Encrypt", map[string]any{"KeyId": arn, "Plaintext": []byte("escrowed")}, &encrypted)

	// The recipient has a key file of their own.
	recipient, _ := quorum.GenerateOfficerKey("escrow")
	t.Setenv(passphraseEnv, "recipient passphrase")
	kf, err := quorum.EncryptKeyFile(recipient, []byte("recipient passphrase"), quorum.WithKDFParams(1, 64, 1))
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(e.dir, "escrow.key")
	os.WriteFile(keyFile, quorum.Armor(quorum.PEMOfficerKey, kf), 0o600)
	pubFile := e.file("escrow.pub", quorum.PEMOfficerPublic, e.enc(recipient.Public()))
	setFile := e.file("quorum.set", quorum.PEMSet, e.enc(e.set1))

	propFile := filepath.Join(e.dir, "export.proposal")
	out := e.hsmofficer(0, "draft", "key-export", "--set", setFile, "--cluster", "prod", "--target", "gw-1", "--requester", "alice",
		"--key-id", arn, "--version", "1", "--recipient", pubFile, "--out", propFile)
	if !strings.Contains(out, "key version        1") || !strings.Contains(out, "X-Wing") {
		t.Fatalf("draft key-export: %s", out)
	}
	propRaw, p, err := readProposal(propFile)
	if err != nil {
		t.Fatal(err)
	}
	// Bob may not export this key: his proposal is refused up front.
	if out = e.hsmofficer(1, cmdline("propose", e.flags["bob"], propFile)...); !strings.Contains(out, "hsmgate:ExportKey") {
		t.Fatalf("bob proposes: %s", out)
	}
	if out = e.hsmofficer(0, cmdline("propose", e.flags["alice"], propFile)...); !strings.Contains(out, "PENDING") {
		t.Fatalf("propose: %s", out)
	}
	approval := func(n string) string {
		a, _ := e.keys[n].Approve(propRaw)
		return e.file(n+"-export.approval", quorum.PEMApproval, e.enc(a))
	}
	e.hsmofficer(0, cmdline("approve", e.flags["alice"], approval("alice"))...)
	// Before execution there is nothing to fetch.
	e.hsmofficer(1, cmdline("fetch-result", e.flags["carol"], "--out", filepath.Join(e.dir, "early.export"), p.RequestID.String())...)
	if out = e.hsmofficer(0, cmdline("approve", e.flags["carol"], approval("carol"))...); !strings.Contains(out, "EXECUTED: request "+p.RequestID.String()) {
		t.Fatalf("second approval: %s", out)
	}
	exportFile := filepath.Join(e.dir, "key.export")
	if out = e.hsmofficer(0, cmdline("fetch-result", e.flags["bob"], "--out", exportFile, p.RequestID.String())...); !strings.Contains(out, "version 1") {
		t.Fatalf("fetch-result: %s", out)
	}
	// Officers who are not the recipient can't open it.
	wrongKey := filepath.Join(e.dir, "alice.officer")
	akf, _ := quorum.EncryptKeyFile(e.keys["alice"], []byte("recipient passphrase"), quorum.WithKDFParams(1, 64, 1))
	os.WriteFile(wrongKey, quorum.Armor(quorum.PEMOfficerKey, akf), 0o600)
	if out = e.hsmofficer(1, "unwrap-export", "--key", wrongKey, "--out", filepath.Join(e.dir, "nope"), exportFile); !strings.Contains(out, "another key") {
		t.Fatalf("unwrap-export by another key: %s", out)
	}
	keyOut := filepath.Join(e.dir, "key.bin")
	e.hsmofficer(0, "unwrap-export", "--key", keyFile, "--out", keyOut, exportFile)
	key, err := os.ReadFile(keyOut)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(keyOut); fi.Mode().Perm() != 0o600 {
		t.Fatalf("the exported key file has mode %v", fi.Mode().Perm())
	}
	blob, err := ciphertext.Parse(encrypted.CiphertextBlob)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := aes.NewCipher(key)
	g, _ := cipher.NewGCM(b)
	if pt, err := g.Open(nil, blob.IV[:], blob.Sealed, blob.AAD(nil)); err != nil || string(pt) != "escrowed" {
		t.Fatalf("the exported key decrypts %q, %v", pt, err)
	}
	// The approvals can't be replayed.
	if out = e.hsmofficer(1, cmdline("approve", e.flags["bob"], approval("bob"))...); !strings.Contains(out, "replay") {
		t.Fatalf("replayed export: %s", out)
	}
}

// verify-gateway checks the gateway's TPM quote (swtpm) the way hsmgate
// attest verify does: it passes for an approved boot, and fails for a
// golden policy that does not list the measured binary, or another TPM's
// enrollment.
func TestVerifyGateway(t *testing.T) {
	e := startOnline(t)
	sw := swtpmtest.Start(t)
	tpm, err := attest.Open(sw.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer tpm.Close()
	sum := func(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }
	manifest := []byte(`{"image":"test"}`)
	for _, m := range []struct {
		kind, name string
		digest     []byte
	}{{attest.KindImage, "image", sum(string(manifest))}, {attest.KindBinary, "hsmgate", sum("binary")}, {attest.KindConfig, "hsmgate.toml", sum("config")}} {
		if _, err := tpm.Measure(m.kind, m.name, m.digest); err != nil {
			t.Fatal(err)
		}
	}
	enroll := func(tpm *attest.TPM) *attest.Enrollment { return swtpmtest.Enroll(t, tpm) }
	writeJSON := func(name string, v any) string {
		b, _ := json.Marshal(v)
		p := filepath.Join(e.dir, name)
		os.WriteFile(p, b, 0o644)
		return p
	}
	enrFile := writeJSON("enrollment.json", enroll(tpm))
	raw, err := os.ReadFile(filepath.Join(e.g.Dir, gateway.ServerCertFile))
	if err != nil {
		t.Fatal(err)
	}
	chain, err := pki.ParseCertsPEM(raw)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.New(gateway.Config{Pool: e.g.Pool, Store: e.g.Store, Region: "us-east-1", Account: gatewaytest.Account,
		Attestation: &gateway.AttestationOptions{TPM: tpm, Manifest: manifest, TLSKeyHash: attest.TLSKeyHash(chain[0])}})
	if err != nil {
		t.Fatal(err)
	}
	url, _, stop := gatewaytest.Serve(t, gw, e.g.Pool, e.g.Store, e.g.Dir)
	defer stop()
	flags := slices.Clone(e.flags["bob"])
	flags[1] = url // --endpoint
	good := writeJSON("golden.json", attest.GoldenPolicyFile{ImageDigests: []attest.HexBytes{sum(string(manifest))},
		BinaryDigests: []attest.HexBytes{sum("binary")}, ConfigDigests: []attest.HexBytes{sum("config")}})
	out := e.hsmofficer(0, cmdline("verify-gateway", flags, "--enrollment", enrFile, "--policy", good)...)
	if !strings.Contains(out, "VERIFIED: "+url) {
		t.Fatalf("verify-gateway: %s", out)
	}
	stale := writeJSON("stale.json", attest.GoldenPolicyFile{ImageDigests: []attest.HexBytes{sum(string(manifest))},
		BinaryDigests: []attest.HexBytes{sum("old binary")}, ConfigDigests: []attest.HexBytes{sum("config")}})
	if out = e.hsmofficer(1, cmdline("verify-gateway", flags, "--enrollment", enrFile, "--policy", stale)...); !strings.Contains(out, "NOT VERIFIED") || !strings.Contains(out, "golden policy") {
		t.Fatalf("verify-gateway against a stale policy: %s", out)
	}
	other, err := attest.Open(swtpmtest.Start(t).Config())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	otherEnr := writeJSON("other-enrollment.json", enroll(other))
	if out = e.hsmofficer(1, cmdline("verify-gateway", flags, "--enrollment", otherEnr, "--policy", good)...); !strings.Contains(out, "NOT VERIFIED") {
		t.Fatalf("verify-gateway with another TPM's enrollment: %s", out)
	}
}
