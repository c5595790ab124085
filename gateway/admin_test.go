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
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

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
	_, w, url, stop := tg.serveAudited(t, nil)
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
	_, err := alice.ListKeys(ctx, &kms.ListKeysInput{})
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

// adminXKSCall sends an XKS request for the store under prefix, signed with a
// credential, and returns the status and the body.
func adminXKSCall(t *testing.T, client *http.Client, url, prefix, path, akid, secret, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url+prefix+"/kms/xks/v1"+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	sum := sha256.Sum256([]byte(body))
	if err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: akid, SecretAccessKey: secret}, req,
		hex.EncodeToString(sum[:]), "kms-xks-proxy", testRegion, time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

// The external key stores' admin operations, end to end: credentials that
// work at once and are revoked at once, keys marked, refused and unmarked,
// for admins only, and audited without the secrets.
func TestAdminXKS(t *testing.T) {
	tg := startGateway(t, nil)
	ctx := context.Background()
	const prefix = "/xks/prod"
	_, w, url, stop := tg.serveAudited(t, &gateway.XKSOptions{Stores: []gateway.XKSStore{{Name: "prod", Prefix: prefix}, {Name: "test"}}})
	admin := tg.adminMTLS(t, url)
	var ops []string
	do := func(c *adminClient, op string, in, out any) string {
		t.Helper()
		ops = append(ops, op)
		return c.call(op, in, out)
	}
	must := func(op string, in, out any) {
		t.Helper()
		if typ := do(admin, op, in, out); typ != "" {
			t.Fatalf("%s: %s", op, typ)
		}
	}
	xksClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tg.caPool}}}
	defer xksClient.CloseIdleConnections()
	health := `{"requestMetadata":{"kmsOperation":"CreateCustomKeyStore","kmsRequestId":"x"}}`

	// Two credentials; a third is refused until one is revoked.
	var creds []gateway.AdminCreateXKSCredentialOutput
	for range 2 {
		var c gateway.AdminCreateXKSCredentialOutput
		must("CreateXKSCredential", gateway.AdminXKSStoreInput{Store: "prod"}, &c)
		if c.Store != "prod" || len(c.AccessKeyId) < 20 || len(c.SecretAccessKey) < 43 {
			t.Fatalf("CreateXKSCredential: %+v", c)
		}
		creds = append(creds, c)
	}
	if typ := do(admin, "CreateXKSCredential", gateway.AdminXKSStoreInput{Store: "prod"}, nil); typ != "ValidationException" {
		t.Errorf("a third credential: %s, want ValidationException", typ)
	}
	for store, want := range map[string]string{"other": "NotFoundException", "Bad_Name": "ValidationException", "": "ValidationException"} {
		if typ := do(admin, "CreateXKSCredential", gateway.AdminXKSStoreInput{Store: store}, nil); typ != want {
			t.Errorf("a credential of store %q: %s, want %s", store, typ, want)
		}
	}
	// Both work at once; neither signs KMS or admin requests.
	for _, c := range creds {
		if code, body := adminXKSCall(t, xksClient, url, prefix, "/health", c.AccessKeyId, c.SecretAccessKey, health); code != 200 {
			t.Errorf("health with a new credential: %d %s", code, body)
		}
	}
	if code, _ := adminXKSCall(t, xksClient, url, "", "/health", creds[0].AccessKeyId, creds[0].SecretAccessKey, health); code != 401 {
		t.Errorf("store test with prod's credential: %d, want 401", code)
	}
	xksAsAdmin := tg.adminSigV4(t, url, creds[0].AccessKeyId, creds[0].SecretAccessKey)
	if typ := do(xksAsAdmin, "ListXKSKeys", gateway.AdminXKSStoreInput{}, nil); typ != "UnrecognizedClientException" {
		t.Errorf("an XKS credential on the admin API: %s", typ)
	}

	var list gateway.AdminListXKSCredentialsOutput
	must("ListXKSCredentials", gateway.AdminXKSStoreInput{Store: "prod"}, &list)
	if len(list.Credentials) != 2 || list.Credentials[0].Status != "Active" || list.Credentials[1].Status != "Active" {
		t.Fatalf("ListXKSCredentials: %+v", list)
	}
	var rev gateway.AdminRevokeAccessKeyOutput
	must("RevokeAccessKey", gateway.AdminRevokeAccessKeyInput{AccessKeyId: creds[0].AccessKeyId}, &rev)
	if rev.PrincipalName != gateway.XKSPrincipal("prod") {
		t.Errorf("RevokeAccessKey of a credential: %+v", rev)
	}
	if code, body := adminXKSCall(t, xksClient, url, prefix, "/health", creds[0].AccessKeyId, creds[0].SecretAccessKey, health); code != 401 ||
		!strings.Contains(body, "AuthenticationFailedException") {
		t.Errorf("health with a revoked credential: %d %s", code, body)
	}
	must("ListXKSCredentials", gateway.AdminXKSStoreInput{Store: "prod"}, &list)
	states := map[string]string{}
	for _, c := range list.Credentials {
		states[c.AccessKeyId] = c.Status
	}
	if len(states) != 2 || states[creds[0].AccessKeyId] != "Revoked" || states[creds[1].AccessKeyId] != "Active" {
		t.Errorf("ListXKSCredentials after a revocation: %+v", list)
	}
	var third gateway.AdminCreateXKSCredentialOutput
	must("CreateXKSCredential", gateway.AdminXKSStoreInput{Store: "prod"}, &third)
	must("ListXKSCredentials", gateway.AdminXKSStoreInput{Store: "test"}, &list)
	if len(list.Credentials) != 0 {
		t.Errorf("store test's credentials: %+v", list)
	}

	// Keys: marked with the defaults, an external id used twice refused, a
	// signing key refused.
	kc := tg.mtlsClient(t)
	newKey := func(spec types.KeySpec, usage types.KeyUsageType) string {
		t.Helper()
		out, err := kc.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: spec, KeyUsage: usage})
		if err != nil {
			t.Fatal(err)
		}
		return *out.KeyMetadata.KeyId
	}
	k1, k2 := newKey(types.KeySpecSymmetricDefault, types.KeyUsageTypeEncryptDecrypt), newKey(types.KeySpecSymmetricDefault, types.KeyUsageTypeEncryptDecrypt)
	signing := newKey(types.KeySpecEccNistP256, types.KeyUsageTypeSignVerify)
	var marked gateway.AdminXKSKey
	must("SetXKSKey", gateway.AdminSetXKSKeyInput{KeyId: k1, Store: "prod"}, &marked)
	if marked.KeyId != k1 || marked.Store != "prod" || marked.ExternalKeyId != k1 || strings.Join(marked.Usages, ",") != "ENCRYPT,DECRYPT" {
		t.Errorf("SetXKSKey with the defaults: %+v", marked)
	}
	if k, _ := tg.store.XKSKey("prod", k1); k == nil || k.ID != k1 {
		t.Error("the keystore does not find the marked key by its external id")
	}
	meta := `{"requestMetadata":{"awsPrincipalArn":"arn:aws:iam::123456789012:user/u","kmsOperation":"DescribeKey","kmsRequestId":"y"}}`
	if code, body := adminXKSCall(t, xksClient, url, prefix, "/keys/"+k1+"/metadata", third.AccessKeyId, third.SecretAccessKey, meta); code != 200 ||
		!strings.Contains(body, `"keyStatus":"ENABLED"`) {
		t.Errorf("GetKeyMetadata of the marked key: %d %s", code, body)
	}
	if typ := do(admin, "SetXKSKey", gateway.AdminSetXKSKeyInput{KeyId: k2, Store: "prod", ExternalKeyId: k1}, nil); typ != "AlreadyExistsException" {
		t.Errorf("a second key with the same external id: %s", typ)
	}
	if typ := do(admin, "SetXKSKey", gateway.AdminSetXKSKeyInput{KeyId: signing, Store: "prod"}, nil); typ != "ValidationException" {
		t.Errorf("marking a signing key: %s", typ)
	}
	for name, c := range map[string]struct {
		in   gateway.AdminSetXKSKeyInput
		want string
	}{
		"unknown key":    {gateway.AdminSetXKSKeyInput{KeyId: "1234abcd-12ab-34cd-56ef-1234567890ab", Store: "prod"}, "NotFoundException"},
		"unserved store": {gateway.AdminSetXKSKeyInput{KeyId: k2, Store: "other"}, "NotFoundException"},
		"no store":       {gateway.AdminSetXKSKeyInput{KeyId: k2}, "ValidationException"},
		"bad usage":      {gateway.AdminSetXKSKeyInput{KeyId: k2, Store: "prod", Usages: []string{"SIGN"}}, "ValidationException"},
		"usage twice":    {gateway.AdminSetXKSKeyInput{KeyId: k2, Store: "prod", Usages: []string{"ENCRYPT", "ENCRYPT"}}, "ValidationException"},
		"bad ext id":     {gateway.AdminSetXKSKeyInput{KeyId: k2, Store: "prod", ExternalKeyId: "no spaces"}, "ValidationException"},
		"bad policy":     {gateway.AdminSetXKSKeyInput{KeyId: k2, Store: "prod", Policy: `{"Statement":"x"}`}, "MalformedPolicyDocumentException"},
	} {
		if typ := do(admin, "SetXKSKey", c.in, nil); typ != c.want {
			t.Errorf("SetXKSKey, %s: %s, want %s", name, typ, c.want)
		}
	}
	// The same external id in another store, with a policy.
	pol := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"xks:*","Resource":"*"}]}`
	arn := "arn:aws:kms:" + testRegion + ":" + testAccount + ":key/" + k2
	must("SetXKSKey", gateway.AdminSetXKSKeyInput{KeyId: arn, Store: "test", ExternalKeyId: k1, Usages: []string{"ENCRYPT", "DECRYPT", "WRAP"}, Policy: pol}, &marked)
	if marked.KeyId != k2 || marked.Store != "test" || marked.ExternalKeyId != k1 || len(marked.Usages) != 3 || marked.Policy != pol {
		t.Errorf("SetXKSKey by ARN, with a policy: %+v", marked)
	}

	// A key made for the store: AES-256, the admin's, marked.
	var made gateway.AdminXKSKey
	must("CreateXKSKey", gateway.AdminCreateXKSKeyInput{Store: "prod", ExternalKeyId: "made-1", Description: "for XKS"}, &made)
	if k, err := tg.store.Key(made.KeyId); err != nil || k.Spec != "SYMMETRIC_DEFAULT" || k.Owner != "admin" || k.Description != "for XKS" ||
		k.XKS == nil || k.XKS.ExternalID != "made-1" || made.KeyState != "Enabled" {
		t.Errorf("CreateXKSKey: %+v, keystore %+v (%v)", made, k, err)
	}
	if typ := do(admin, "CreateXKSKey", gateway.AdminCreateXKSKeyInput{Store: "prod", ExternalKeyId: "made-1"}, nil); typ != "AlreadyExistsException" {
		t.Errorf("CreateXKSKey with an external id in use: %s", typ)
	}
	var keys gateway.AdminListXKSKeysOutput
	must("ListXKSKeys", gateway.AdminXKSStoreInput{Store: "prod"}, &keys)
	if len(keys.Keys) != 2 || keys.Keys[0].KeyId != k1 && keys.Keys[1].KeyId != k1 {
		t.Errorf("ListXKSKeys of prod: %+v", keys)
	}
	must("ListXKSKeys", gateway.AdminXKSStoreInput{}, &keys)
	if len(keys.Keys) != 3 {
		t.Errorf("ListXKSKeys of every store: %+v", keys)
	}

	// Unmarked, the key is unknown to the store at once.
	var removed gateway.AdminXKSKey
	must("RemoveXKSKey", gateway.AdminXKSKeyInput{KeyId: k1}, &removed)
	if removed.Store != "prod" || removed.ExternalKeyId != k1 {
		t.Errorf("RemoveXKSKey: %+v", removed)
	}
	if code, body := adminXKSCall(t, xksClient, url, prefix, "/keys/"+k1+"/metadata", third.AccessKeyId, third.SecretAccessKey, meta); code != 404 {
		t.Errorf("GetKeyMetadata of an unmarked key: %d %s", code, body)
	}
	if typ := do(admin, "RemoveXKSKey", gateway.AdminXKSKeyInput{KeyId: k1}, nil); typ != "NotFoundException" {
		t.Errorf("RemoveXKSKey of an unmarked key: %s", typ)
	}
	must("ListXKSKeys", gateway.AdminXKSStoreInput{Store: "prod"}, &keys)
	if len(keys.Keys) != 1 || keys.Keys[0].KeyId != made.KeyId {
		t.Errorf("ListXKSKeys after RemoveXKSKey: %+v", keys)
	}
	// The external id is free again.
	must("SetXKSKey", gateway.AdminSetXKSKeyInput{KeyId: k2, Store: "prod", ExternalKeyId: k1}, nil)

	// Admins only.
	must("CreatePrincipal", gateway.AdminCreatePrincipalInput{PrincipalName: "alice"}, nil)
	var key gateway.AdminCreateAccessKeyOutput
	must("CreateAccessKey", gateway.AdminPrincipalInput{PrincipalName: "alice"}, &key)
	alice := tg.adminSigV4(t, url, key.AccessKey.AccessKeyId, key.AccessKey.SecretAccessKey)
	for _, op := range []string{"CreateXKSCredential", "ListXKSCredentials", "SetXKSKey", "CreateXKSKey", "RemoveXKSKey", "ListXKSKeys"} {
		if typ := do(alice, op, map[string]string{"Store": "prod", "KeyId": k2}, nil); typ != "AccessDeniedException" {
			t.Errorf("alice's %s: %s, want AccessDeniedException", op, typ)
		}
	}
	if k, _ := tg.store.Key(k2); k.XKS == nil {
		t.Error("alice unmarked a key")
	}

	// One audit record per call, by name; no secret in the log.
	admin.http.CloseIdleConnections()
	alice.http.CloseIdleConnections()
	xksAsAdmin.http.CloseIdleConnections()
	xksClient.CloseIdleConnections()
	stop()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	var got []string
	err := audit.Query(filepath.Join(tg.dir, gateway.AuditDir), audit.Filter{}, func(r audit.Record) error {
		if r.Kind == audit.KindRecord && strings.HasPrefix(r.Operation, "HsmGate.") {
			got = append(got, r.Operation)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(ops) {
		t.Fatalf("%d admin audit records for %d admin calls", len(got), len(ops))
	}
	for i, op := range got {
		if op != "HsmGate."+ops[i] {
			t.Errorf("audit record %d: %s, want HsmGate.%s", i, op, ops[i])
		}
	}
	files, _ := filepath.Glob(filepath.Join(tg.dir, gateway.AuditDir, "*"))
	for _, f := range files {
		raw, _ := os.ReadFile(f)
		for _, c := range append(creds, third) {
			if bytes.Contains(raw, []byte(c.SecretAccessKey)) {
				t.Errorf("%s holds a credential's secret", f)
			}
		}
	}
}
