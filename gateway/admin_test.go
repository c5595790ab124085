package gateway_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/gateway/audit"
	"github.com/hsmgate/hsmgate/internal/pki"
)

// adminClient calls the admin API, over mTLS with a client certificate or
// signed with SigV4.
type adminClient struct {
	t      *testing.T
	url    string
	http   *http.Client
	creds  *aws.Credentials // SigV4 when set
	region string
}

func (tg *testGateway) adminMTLS(t *testing.T, url string) *adminClient {
	cert, err := tls.LoadX509KeyPair(tg.admin.ClientCert, tg.admin.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	return &adminClient{t: t, url: url, region: testRegion, http: &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: tg.caPool, Certificates: []tls.Certificate{cert}}}}}
}

func (tg *testGateway) adminSigV4(t *testing.T, url, akid, secret string) *adminClient {
	return &adminClient{t: t, url: url, region: testRegion, creds: &aws.Credentials{AccessKeyID: akid, SecretAccessKey: secret},
		http: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tg.caPool}}}}
}

// call sends op with the request in and decodes a 200 answer into out; it
// returns the exception type ("" on success).
func (c *adminClient) call(op string, in, out any) string {
	c.t.Helper()
	body, err := json.Marshal(in)
	if err != nil {
		c.t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", c.url+"/", bytes.NewReader(body))
	req.Header.Set("X-Amz-Target", "HsmGate."+op)
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	if c.creds != nil {
		sum := sha256.Sum256(body)
		if err := v4.NewSigner().SignHTTP(context.Background(), *c.creds, req, hex.EncodeToString(sum[:]), "kms", c.region, time.Now()); err != nil {
			c.t.Fatal(err)
		}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		var e struct {
			Type    string `json:"__type"`
			Message string `json:"message"`
		}
		if err := json.Unmarshal(raw, &e); err != nil || e.Type == "" || e.Message == "" || resp.Header.Get("x-amzn-ErrorType") != e.Type {
			c.t.Fatalf("%s: %d with a body not in the AWS error shape: %s", op, resp.StatusCode, raw)
		}
		return e.Type
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			c.t.Fatalf("%s: %v: %s", op, err, raw)
		}
	}
	return ""
}

// must is call that fails the test unless op succeeds.
func (c *adminClient) must(op string, in, out any) {
	c.t.Helper()
	if typ := c.call(op, in, out); typ != "" {
		c.t.Fatalf("%s: %s", op, typ)
	}
}

func TestAdminAPI(t *testing.T) {
	tg := startGateway(t, nil)
	ctx := context.Background()
	w, err := gateway.OpenAudit(ctx, tg.pool, tg.store, tg.dir)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.New(gateway.Config{Pool: tg.pool, Store: tg.store, Region: testRegion, Account: testAccount, Audit: w})
	if err != nil {
		t.Fatal(err)
	}
	url, _, stop := startServing(t, ctx, gw, tg.pool, tg.store, tg.dir)
	admin := tg.adminMTLS(t, url)
	var ops []string // the admin calls made, for the audit check
	do := func(c *adminClient, op string, in, out any) string {
		t.Helper()
		ops = append(ops, op)
		return c.call(op, in, out)
	}
	must := func(c *adminClient, op string, in, out any) {
		t.Helper()
		if typ := do(c, op, in, out); typ != "" {
			t.Fatalf("%s: %s", op, typ)
		}
	}

	// The admin creates a role for a service, with tags.
	var created gateway.AdminPrincipalOutput
	must(admin, "CreatePrincipal", gateway.AdminCreatePrincipalInput{PrincipalName: "alice", Kind: "role", Service: "storage",
		Tags: []gateway.AdminTag{{TagKey: "team", TagValue: "core"}, {TagKey: "env", TagValue: "prod"}}}, &created)
	p := created.Principal
	if p.Arn != "arn:aws:iam::"+testAccount+":role/alice" || p.Kind != "role" || p.Service != "storage" || p.Admin ||
		len(p.Tags) != 2 || p.Tags[0] != (gateway.AdminTag{TagKey: "env", TagValue: "prod"}) || len(p.AccessKeys) != 0 {
		t.Fatalf("CreatePrincipal: %+v", p)
	}
	if typ := do(admin, "CreatePrincipal", gateway.AdminCreatePrincipalInput{PrincipalName: "alice"}, nil); typ != "AlreadyExistsException" {
		t.Errorf("a second alice: %s", typ)
	}
	for name, in := range map[string]gateway.AdminCreatePrincipalInput{
		"bad name":     {PrincipalName: "no spaces"},
		"bad kind":     {PrincipalName: "x", Kind: "group"},
		"bad service":  {PrincipalName: "x", Service: "Storage"},
		"reserved tag": {PrincipalName: "x", Tags: []gateway.AdminTag{{TagKey: "aws:team", TagValue: "v"}}},
		"long value":   {PrincipalName: "x", Tags: []gateway.AdminTag{{TagKey: "k", TagValue: strings.Repeat("v", 257)}}},
	} {
		if typ := do(admin, "CreatePrincipal", in, nil); typ != "ValidationException" {
			t.Errorf("%s: %s, want ValidationException", name, typ)
		}
	}

	// Its new access key works at once over SigV4.
	var key gateway.AdminCreateAccessKeyOutput
	must(admin, "CreateAccessKey", gateway.AdminPrincipalInput{PrincipalName: "alice"}, &key)
	akid, secret := key.AccessKey.AccessKeyId, key.AccessKey.SecretAccessKey
	if !strings.HasPrefix(akid, "AKIA") || len(secret) != 40 || key.AccessKey.Status != "Active" || key.AccessKey.PrincipalName != "alice" {
		t.Fatalf("CreateAccessKey: %+v", key.AccessKey)
	}
	alice := kms.New(kms.Options{Region: testRegion, BaseEndpoint: aws.String(url),
		HTTPClient:  &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tg.caPool}}},
		Credentials: staticCreds{akid, secret}, Retryer: aws.NopRetryer{}})
	if _, err := alice.ListKeys(ctx, &kms.ListKeysInput{}); err != nil {
		t.Fatalf("the new access key: %v", err)
	}

	// alice is no admin: every admin operation is refused, even unknown ones.
	aliceAdmin := tg.adminSigV4(t, url, akid, secret)
	for _, op := range []string{"ListPrincipals", "CreateAccessKey", "Nope"} {
		if typ := do(aliceAdmin, op, gateway.AdminPrincipalInput{PrincipalName: "alice"}, nil); typ != "AccessDeniedException" {
			t.Errorf("alice's %s: %s, want AccessDeniedException", op, typ)
		}
	}
	if typ := do(admin, "Nope", struct{}{}, nil); typ != "UnknownOperationException" {
		t.Errorf("an unknown admin operation: %s", typ)
	}

	// Tags, described and listed.
	must(admin, "TagPrincipal", gateway.AdminTagPrincipalInput{PrincipalName: "alice", Tags: []gateway.AdminTag{{TagKey: "Team", TagValue: "infra"}}}, nil)
	must(admin, "UntagPrincipal", gateway.AdminUntagPrincipalInput{PrincipalName: "alice", TagKeys: []string{"env"}}, nil)
	var desc gateway.AdminPrincipalOutput
	must(admin, "DescribePrincipal", gateway.AdminPrincipalInput{PrincipalName: "alice"}, &desc)
	if d := desc.Principal; len(d.Tags) != 1 || d.Tags[0] != (gateway.AdminTag{TagKey: "Team", TagValue: "infra"}) ||
		len(d.AccessKeys) != 1 || d.AccessKeys[0].AccessKeyId != akid || d.AccessKeys[0].SecretAccessKey != "" || d.KeysCreated == nil || *d.KeysCreated != 0 {
		t.Errorf("DescribePrincipal: %+v", d)
	}
	if p, _ := tg.store.Principal("alice"); p.Tags["Team"] != "infra" || len(p.Tags) != 1 || p.Kind != "role" || p.Service != "storage" {
		t.Errorf("the keystore's alice: %+v", p)
	}
	var list gateway.AdminListPrincipalsOutput
	must(admin, "ListPrincipals", struct{}{}, &list)
	if len(list.Principals) != 2 || list.Principals[0].PrincipalName != "admin" || !list.Principals[0].Admin || list.Principals[1].PrincipalName != "alice" {
		t.Errorf("ListPrincipals: %+v", list.Principals)
	}
	if typ := do(admin, "DescribePrincipal", gateway.AdminPrincipalInput{PrincipalName: "nobody"}, nil); typ != "NotFoundException" {
		t.Errorf("DescribePrincipal of nobody: %s", typ)
	}

	// Revoked, the key fails on the very next call.
	var rev gateway.AdminRevokeAccessKeyOutput
	must(admin, "RevokeAccessKey", gateway.AdminRevokeAccessKeyInput{AccessKeyId: akid}, &rev)
	if rev.PrincipalName != "alice" || rev.AlreadyRevoked {
		t.Errorf("RevokeAccessKey: %+v", rev)
	}
	_, err = alice.ListKeys(ctx, &kms.ListKeysInput{})
	wantCode(t, err, "UnrecognizedClientException")
	must(admin, "RevokeAccessKey", gateway.AdminRevokeAccessKeyInput{AccessKeyId: akid}, &rev)
	if !rev.AlreadyRevoked {
		t.Error("a second revocation did not say the key was already revoked")
	}
	if typ := do(admin, "RevokeAccessKey", gateway.AdminRevokeAccessKeyInput{AccessKeyId: "AKIAAAAAAAAAAAAAAAAA"}, nil); typ != "NotFoundException" {
		t.Errorf("revoking an unknown key: %s", typ)
	}

	// A client certificate from a CSR: the key stays here.
	ckey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "admin"}}, ckey)
	if err != nil {
		t.Fatal(err)
	}
	var issued gateway.AdminIssueClientCertificateOutput
	must(admin, "IssueClientCertificate", gateway.AdminIssueClientCertificateInput{PrincipalName: "alice", ValidityDays: 2,
		CertificateSigningRequest: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))}, &issued)
	certs, err := pki.ParseCertsPEM([]byte(issued.Certificate))
	if err != nil || len(certs) != 1 {
		t.Fatalf("IssueClientCertificate: %v %+v", err, issued)
	}
	if name, err := pki.PrincipalFromCert(certs[0]); err != nil || name != "alice" {
		t.Errorf("the certificate names %q (%v), want alice whatever the CSR says", name, err)
	}
	if d := time.Until(certs[0].NotAfter); d < 47*time.Hour || d > 49*time.Hour {
		t.Errorf("the certificate is valid for %v, want 2 days", d)
	}
	aliceTLS := kms.New(kms.Options{Region: testRegion, BaseEndpoint: aws.String(url),
		HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tg.caPool,
			Certificates: []tls.Certificate{{Certificate: [][]byte{certs[0].Raw}, PrivateKey: ckey}}}}},
		Credentials: aws.AnonymousCredentials{}, Retryer: aws.NopRetryer{}})
	if _, err := aliceTLS.ListKeys(ctx, &kms.ListKeysInput{}); err != nil {
		t.Errorf("alice over mTLS: %v", err)
	}
	csr[len(csr)-1] ^= 1 // a broken signature
	if typ := do(admin, "IssueClientCertificate", gateway.AdminIssueClientCertificateInput{PrincipalName: "alice",
		CertificateSigningRequest: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))}, nil); typ != "ValidationException" {
		t.Errorf("a CSR with a bad signature: %s", typ)
	}

	// Removed, alice's certificate is refused too; the admin can't be.
	var del gateway.AdminDeletePrincipalOutput
	must(admin, "DeletePrincipal", gateway.AdminPrincipalInput{PrincipalName: "alice"}, &del)
	_, err = aliceTLS.ListKeys(ctx, &kms.ListKeysInput{})
	wantCode(t, err, "UnrecognizedClientException")
	if typ := do(admin, "DeletePrincipal", gateway.AdminPrincipalInput{PrincipalName: "admin"}, nil); typ != "ValidationException" {
		t.Errorf("deleting the admin: %s", typ)
	}

	// Metrics name the admin operations.
	transport := admin.http.Transport.(*http.Transport)
	mreq, _ := http.NewRequest("GET", url+"/metrics", nil)
	mresp, err := admin.http.Do(mreq)
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if !bytes.Contains(metrics, []byte(`operation="HsmGate.CreatePrincipal",outcome="ok"`)) ||
		!bytes.Contains(metrics, []byte(`operation="HsmGate.ListPrincipals",outcome="AccessDeniedException"`)) {
		t.Error("the metrics do not count admin operations by name")
	}

	// One audit record per admin call, named HsmGate.<Operation>, and no
	// secret anywhere in the log.
	transport.CloseIdleConnections()
	aliceAdmin.http.CloseIdleConnections()
	stop()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	var got []audit.Record
	err = audit.Query(filepath.Join(tg.dir, gateway.AuditDir), audit.Filter{}, func(r audit.Record) error {
		if r.Kind == audit.KindRecord && strings.HasPrefix(r.Operation, "HsmGate.") {
			got = append(got, r)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(ops) {
		t.Fatalf("%d admin audit records for %d admin calls", len(got), len(ops))
	}
	for i, r := range got {
		want := "HsmGate." + ops[i]
		if ops[i] == "Nope" {
			want = "HsmGate.Nope" // unknown: the target as sent
		}
		if r.Operation != want {
			t.Errorf("audit record %d: operation %q, want %q", i, r.Operation, want)
		}
		if r.Principal != "admin" && r.Principal != "alice" {
			t.Errorf("audit record %d: principal %q", i, r.Principal)
		}
		if r.Principal == "alice" && (r.Outcome != audit.OutcomeDenied || r.ErrorCode != "AccessDeniedException") {
			t.Errorf("alice's admin call was audited as %s %s", r.Outcome, r.ErrorCode)
		}
	}
	files, _ := filepath.Glob(filepath.Join(tg.dir, gateway.AuditDir, "*"))
	for _, f := range files {
		raw, _ := os.ReadFile(f)
		if bytes.Contains(raw, []byte(secret)) {
			t.Errorf("%s holds an access key's secret", f)
		}
	}
}
