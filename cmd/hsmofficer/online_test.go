package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/gateway/kmsapi"
	"github.com/hsmgate/hsmgate/internal/gatewaytest"
	"github.com/hsmgate/hsmgate/quorum"
)

// TestOnline runs the online commands against a real gateway, over mutual
// TLS with client certificates the gateway issued to the officers'
// principals.
func TestOnline(t *testing.T) {
	g := gatewaytest.Start(t, 1, "us-east-1")
	ctx := context.Background()
	dir := t.TempDir()
	caFile := filepath.Join(g.Dir, gateway.CACertFile)
	admin := &gateway.Admin{Identities: &gateway.Identities{Store: g.Store, Pool: g.Pool}, Account: gatewaytest.Account,
		CACertificates: func(context.Context) ([]*x509.Certificate, error) {
			raw, err := os.ReadFile(caFile)
			if err != nil {
				return nil, err
			}
			b, _ := pem.Decode(raw)
			c, err := x509.ParseCertificate(b.Bytes)
			return []*x509.Certificate{c}, err
		}}
	do := func(op string, in, out any) {
		t.Helper()
		body, _ := json.Marshal(in)
		resp, apiErr := admin.Do(ctx, kmsapi.Caller{Principal: "(test)", Admin: true}, "HsmGate."+op, body)
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
	principal := func(name string) []string {
		do("CreatePrincipal", gateway.AdminCreatePrincipalInput{PrincipalName: name}, nil)
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
		var out gateway.AdminIssueClientCertificateOutput
		do("IssueClientCertificate", gateway.AdminIssueClientCertificateInput{PrincipalName: name,
			CertificateSigningRequest: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))}, &out)
		der, _ := x509.MarshalECPrivateKey(key)
		certFile, keyFile := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
		os.WriteFile(certFile, []byte(out.Certificate), 0o600)
		os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
		return []string{"--endpoint", g.URL, "--cert", certFile, "--key", keyFile, "--ca", caFile}
	}
	hsmofficer := func(wantStatus int, args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if st := run(append([]string{"hsmofficer"}, args...), strings.NewReader(""), &out, &errb); st != wantStatus {
			t.Fatalf("hsmofficer %s: status %d, want %d\n%s%s", strings.Join(args, " "), st, wantStatus, out.String(), errb.String())
		}
		return out.String() + errb.String()
	}
	cmdline := func(cmd string, fl []string, rest ...string) []string {
		return append(append([]string{cmd}, fl...), rest...)
	}
	file := func(name, typ string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, quorum.Armor(typ, data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	enc := func(v interface{ Encode() ([]byte, error) }) []byte {
		b, err := v.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	names := []string{"alice", "bob", "carol", "dave"}
	keys, flags := map[string]*quorum.OfficerKey{}, map[string][]string{}
	for _, n := range names {
		keys[n], _ = quorum.GenerateOfficerKey(n)
		flags[n] = principal(n)
	}
	mallory := principal("mallory")
	th := func(n int) map[quorum.Kind]int {
		m := map[quorum.Kind]int{}
		for _, k := range quorum.Kinds {
			m[k] = n
		}
		return m
	}
	set1 := &quorum.Set{Epoch: 1, Thresholds: th(2), Officers: []quorum.OfficerPublicKey{keys["alice"].Public(), keys["bob"].Public(), keys["carol"].Public()}}
	in := gateway.QuorumInitInput{Set: enc(set1), ClusterId: "prod", Target: "gw-1", Ledger: filepath.Join(g.Dir, gateway.QuorumLedgerFile)}
	for _, n := range names[:3] {
		pop, _ := keys[n].ProvePossession(set1)
		in.ProofsOfPossession = append(in.ProofsOfPossession, enc(pop))
	}
	do("QuorumInit", in, nil)
	for _, n := range names {
		do("QuorumLinkOfficer", gateway.QuorumLinkOfficerInput{PrincipalName: n, Fingerprint: keys[n].Fingerprint().String()}, nil)
	}

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
