package main

import (
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
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/hsmgate/hsmgate/internal/config"
)

// consoleConfig is the JSON file `xks credential new` prints.
type consoleConfig struct {
	XksProxyUriPath                  string
	XksProxyAuthenticationCredential struct{ AccessKeyId, RawSecretAccessKey string }
}

// xksRequest posts an XKS request to endpoint+path, signed with a store's
// credential as AWS KMS signs them, and returns the status and body.
func xksRequest(t *testing.T, roots *x509.CertPool, endpoint, path, akid, secret, body string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	defer c.CloseIdleConnections()
	req, err := http.NewRequest("POST", endpoint+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	sum := sha256.Sum256([]byte(body))
	if err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: akid, SecretAccessKey: secret}, req,
		hex.EncodeToString(sum[:]), "kms-xks-proxy", "eu-west-1", time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

const xksHealthBody = `{"requestMetadata":{"kmsOperation":"CreateCustomKeyStore","kmsRequestId":"x"}}`

// The xks commands against a running gateway, through its admin API, and
// on the keystore once it is stopped.
func TestXKSCommands(t *testing.T) {
	data, endpoint, _ := initGateway(t, 2)
	cfg, err := config.Load(data)
	if err != nil {
		t.Fatal(err)
	}
	const prefix = "/xks/prod"
	cfg.XKS = &config.XKS{Stores: []config.XKSStore{{Name: "prod", Prefix: prefix}}}
	if err := cfg.Write(); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) result {
		t.Helper()
		return hsmgate(t, nil, append([]string{"--data", data, "xks"}, args...)...)
	}
	roots := caPool(t, filepath.Join(data, "pki", "ca.pem"))
	srv := startServe(t, data)
	srv.waitReady(t, endpoint, roots)

	// A credential, printed as the AWS KMS console's file, works at once.
	r := run("credential", "new", "--store", "prod")
	var file consoleConfig
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &file) != nil || !strings.Contains(r.stderr, "secret") || strings.Count(r.stderr, "\n") != 1 {
		t.Fatalf("credential new while serving: exit %d", r.code)
	}
	akid, secret := file.XksProxyAuthenticationCredential.AccessKeyId, file.XksProxyAuthenticationCredential.RawSecretAccessKey
	if file.XksProxyUriPath != prefix+"/kms/xks/v1" || len(akid) < 20 || len(secret) < 43 {
		t.Fatalf("credential new printed %+v", file)
	}
	if code, body := xksRequest(t, roots, endpoint, file.XksProxyUriPath+"/health", akid, secret, xksHealthBody); code != 200 {
		t.Fatalf("health with the new credential: %d %s", code, body)
	}
	if r := run("credential", "new", "--store", "nope"); r.code != 1 || !strings.Contains(r.stderr, "no external key store nope in [[xks.stores]]") {
		t.Errorf("credential new for a store not configured: exit %d", r.code)
	}
	r = run("credential", "list", "--store", "prod")
	if r.code != 0 || !regexp.MustCompile(`(?m)^`+akid+` +active +\S+$`).MatchString(r.stdout) || strings.Contains(r.stdout, secret) {
		t.Errorf("credential list: exit %d", r.code)
	}
	// remove takes only the store's credentials: not the admin's access key.
	adminID, adminSecret := readAdminCredentials(t, data)
	if r := run("credential", "remove", "--store", "prod", "--access-key-id", adminID); r.code != 1 || !strings.Contains(r.stderr, "is no credential of external key store prod") {
		t.Errorf("credential remove of the admin's access key: exit %d", r.code)
	}
	admin := kmsClient(endpoint, "us-east-1", adminID, adminSecret, roots)
	listKeyIDs(t, admin) // still works

	// Keys: one made for the store, one marked, an external id taken twice.
	r = run("key", "create", "--store", "prod", "--external-id", "ext-1", "--description", "for KMS")
	m := regexp.MustCompile(`^Created key (\S+) for external key store prod: external key id ext-1, usages ENCRYPT,DECRYPT, no XKS policy\.\n`).FindStringSubmatch(r.stdout)
	if r.code != 0 || m == nil {
		t.Fatalf("key create while serving: exit %d", r.code)
	}
	created := m[1]
	out, err := admin.CreateKey(context.Background(), &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	marked := *out.KeyMetadata.KeyId
	policyFile := filepath.Join(t.TempDir(), "policy.json")
	os.WriteFile(policyFile, []byte(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"xks:*","Resource":"*"}]}`), 0o600)
	r = run("key", "add", "--store", "prod", "--key", marked, "--usage", "encrypt,decrypt", "--usage", "WRAP", "--policy", policyFile)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "Marked key "+marked+" for external key store prod: external key id "+marked+", usages ENCRYPT,DECRYPT,WRAP, an XKS policy.\n") {
		t.Errorf("key add while serving: exit %d", r.code)
	}
	if r := run("key", "add", "--store", "prod", "--key", marked, "--external-id", "ext-1"); r.code != 1 || !strings.Contains(r.stderr, "already has a key with external key id ext-1") {
		t.Errorf("key add with an external id in use: exit %d", r.code)
	}
	meta := `{"requestMetadata":{"awsPrincipalArn":"arn:aws:iam::123456789012:user/u","kmsOperation":"DescribeKey","kmsRequestId":"y"}}`
	if code, body := xksRequest(t, roots, endpoint, file.XksProxyUriPath+"/keys/ext-1/metadata", akid, secret, meta); code != 200 || !strings.Contains(body, `"keyStatus":"ENABLED"`) {
		t.Errorf("GetKeyMetadata of the created key: %d %s", code, body)
	}
	r = run("key", "list", "--store", "prod")
	if r.code != 0 || !regexp.MustCompile(`(?m)^prod +ext-1 +`+created+` +Enabled +ENCRYPT,DECRYPT +no +for KMS$`).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^prod +`+marked+` +`+marked+` +Enabled +ENCRYPT,DECRYPT,WRAP +yes +-$`).MatchString(r.stdout) {
		t.Errorf("key list while serving: exit %d", r.code)
	}
	if r := run("key", "remove", "--key", marked); r.code != 0 || !strings.Contains(r.stdout, "Unmarked key "+marked) {
		t.Errorf("key remove: exit %d", r.code)
	}
	if code, _ := xksRequest(t, roots, endpoint, file.XksProxyUriPath+"/keys/"+marked+"/metadata", akid, secret, meta); code != 404 {
		t.Errorf("GetKeyMetadata of an unmarked key: %d, want 404", code)
	}

	// Removed, the credential fails on the very next request.
	r = run("credential", "remove", "--store", "prod", "--access-key-id", akid)
	if r.code != 0 || !strings.Contains(r.stdout, "Removed credential "+akid) || !strings.Contains(r.stderr, "no active credential left") {
		t.Errorf("credential remove: exit %d", r.code)
	}
	if code, _ := xksRequest(t, roots, endpoint, file.XksProxyUriPath+"/health", akid, secret, xksHealthBody); code != 401 {
		t.Errorf("health with a removed credential: %d, want 401", code)
	}

	if code := srv.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("serve: exit %d", code)
	}
	if strings.Contains(srv.stdout.String()+srv.stderr.String(), secret) {
		t.Error("the gateway logged a credential's secret")
	}
	for op, n := range map[string]int{"HsmGate.CreateXKSCredential": 1, "HsmGate.CreateXKSKey": 1, "HsmGate.SetXKSKey": 2, "HsmGate.RemoveXKSKey": 1} {
		r := hsmgate(t, nil, "--data", data, "audit", "query", "--operation", op)
		if r.code != 0 || strings.Count(r.stdout, `"operation":"`+op+`"`) != n || strings.Contains(r.stdout, secret) {
			t.Errorf("audit query --operation %s: exit %d, want %d records", op, r.code, n)
		}
	}

	// Stopped, the commands work on the keystore directly.
	r = run("key", "list", "--store", "prod")
	if r.code != 0 || !strings.Contains(r.stdout, created) || strings.Contains(r.stdout, marked) {
		t.Errorf("key list with the gateway stopped: exit %d", r.code)
	}
	r = run("credential", "new", "--store", "prod")
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &file) != nil || file.XksProxyUriPath != prefix+"/kms/xks/v1" {
		t.Errorf("credential new with the gateway stopped: exit %d", r.code)
	}
	r = run("key", "create", "--store", "prod")
	if m := regexp.MustCompile(`^Created key (\S+) for external key store prod: external key id (\S+),`).FindStringSubmatch(r.stdout); r.code != 0 || m == nil || m[1] != m[2] {
		t.Errorf("key create with the gateway stopped: exit %d", r.code)
	}
	if r := run("credential", "list", "--store", "prod"); r.code != 0 || strings.Count(r.stdout, " active ") != 1 || strings.Count(r.stdout, " revoked ") != 1 {
		t.Errorf("credential list with the gateway stopped: exit %d", r.code)
	}
}
