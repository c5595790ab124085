package gateway_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
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
	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/gateway/xks"
)

// xksCall posts a signed XKS request and returns the status and JSON body.
func xksCall(t *testing.T, client *http.Client, url string, cred xks.Credential, body map[string]any) (int, map[string]any) {
	t.Helper()
	raw, _ := json.Marshal(body)
	req, err := http.NewRequest("POST", url, bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	sum := sha256.Sum256(raw)
	err = v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: cred.AccessKeyID, SecretAccessKey: cred.Secret},
		req, hex.EncodeToString(sum[:]), "kms-xks-proxy", "eu-west-1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	var m map[string]any
	json.Unmarshal(out, &m)
	return resp.StatusCode, m
}

func xksMetadata(op, via string) map[string]any {
	return map[string]any{"awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice", "kmsKeyArn": "arn:aws:kms:eu-west-1:123456789012:key/k",
		"kmsOperation": op, "kmsRequestId": "req-" + op, "kmsViaService": via}
}

// The gateway serves an external key store from its keystore and pool:
// credentials kept in the keystore (revocable at once), keys marked for the
// store, an XKS policy on a key, and an audit record with the request
// metadata; the store's credentials can't call the KMS API.
func TestXKSThroughTheGateway(t *testing.T) {
	tg := startGateway(t, nil)
	ctx := context.Background()
	gw, w, url, stop := tg.serveAudited(t, &gateway.XKSOptions{Stores: []gateway.XKSStore{{Name: "prod", Prefix: "/xks/prod"}}})
	transport := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tg.caPool}}
	client := &http.Client{Transport: transport}
	admin := kms.New(kms.Options{Region: testRegion, BaseEndpoint: aws.String(url), HTTPClient: client,
		Credentials: staticCreds{tg.admin.AccessKeyID, tg.admin.SecretAccessKey}, Retryer: aws.NopRetryer{}})

	cred, err := gw.Identities().CreateXKSCredential(ctx, "prod")
	if err != nil {
		t.Fatal(err)
	}
	k, err := admin.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	id := *k.KeyMetadata.KeyId
	onlyEBS := `{"Version":"2012-10-17","Statement":[{"Sid":"EBSOnly","Effect":"Allow","Principal":{"AWS":"*"},
		"Action":["xks:Encrypt","xks:Decrypt","xks:GetKeyMetadata"],"Resource":"*","Condition":{"StringEquals":{"xks:KmsViaService":"ebs"}}}]}`
	if err := tg.store.Apply(&keystore.SetXKS{KeyID: id, XKS: &keystore.XKSUse{Store: "prod", ExternalID: "ext-1",
		Usages: []string{"ENCRYPT", "DECRYPT"}, Policy: onlyEBS}}); err != nil {
		t.Fatal(err)
	}
	base := url + "/xks/prod/kms/xks/v1"

	code, md := xksCall(t, client, base+"/keys/ext-1/metadata", cred, map[string]any{"requestMetadata": xksMetadata("DescribeKey", "ebs")})
	if code != 200 || md["keySpec"] != "AES_256" || md["keyStatus"] != "ENABLED" {
		t.Fatalf("metadata: %d %v", code, md)
	}
	plaintext := []byte("through the external key store")
	code, enc := xksCall(t, client, base+"/keys/ext-1/encrypt", cred, map[string]any{"requestMetadata": xksMetadata("Encrypt", "ebs"),
		"plaintext": base64.StdEncoding.EncodeToString(plaintext), "encryptionAlgorithm": "AES_GCM"})
	if code != 200 {
		t.Fatalf("encrypt: %d %v", code, enc)
	}
	dec := map[string]any{"requestMetadata": xksMetadata("Decrypt", "ebs"), "encryptionAlgorithm": "AES_GCM",
		"ciphertext": enc["ciphertext"], "initializationVector": enc["initializationVector"], "authenticationTag": enc["authenticationTag"]}
	if cm, ok := enc["ciphertextMetadata"]; ok {
		dec["ciphertextMetadata"] = cm
	}
	code, out := xksCall(t, client, base+"/keys/ext-1/decrypt", cred, dec)
	if code != 200 || out["plaintext"] != base64.StdEncoding.EncodeToString(plaintext) {
		t.Fatalf("decrypt: %d %v", code, out)
	}
	// The key's XKS policy: only through EBS.
	dec["requestMetadata"] = xksMetadata("Decrypt", "s3")
	if code, out := xksCall(t, client, base+"/keys/ext-1/decrypt", cred, dec); code != 403 || out["errorName"] != "AccessDeniedException" {
		t.Fatalf("decrypt via s3: %d %v", code, out)
	}
	// Unknown key; the store's credential on the KMS API.
	if code, out := xksCall(t, client, base+"/keys/nope/metadata", cred, map[string]any{"requestMetadata": xksMetadata("DescribeKey", "ebs")}); code != 404 || out["errorName"] != "KeyNotFoundException" {
		t.Fatalf("unknown key: %d %v", code, out)
	}
	xksAsKMS := tg.sigv4ClientAt(url, cred.AccessKeyID, cred.Secret)
	_, err = xksAsKMS.ListKeys(ctx, &kms.ListKeysInput{})
	wantCode(t, err, "UnrecognizedClientException")

	// Revoked: the very next request is refused.
	if err := gw.Identities().RevokeAccessKey(cred.AccessKeyID); err != nil {
		t.Fatal(err)
	}
	if code, out := xksCall(t, client, base+"/keys/ext-1/metadata", cred, map[string]any{"requestMetadata": xksMetadata("DescribeKey", "ebs")}); code != 401 || out["errorName"] != "AuthenticationFailedException" {
		t.Fatalf("after revocation: %d %v", code, out)
	}

	transport.CloseIdleConnections()
	stop()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	var found bool
	err = audit.Query(filepath.Join(tg.dir, gateway.AuditDir), audit.Filter{KeyID: id}, func(r audit.Record) error {
		if r.Operation == "XKS.Encrypt" && r.Outcome == audit.OutcomeOK && r.RequestMetadata["kmsRequestId"] == "req-Encrypt" &&
			r.RequestMetadata["xks:store"] == "prod" && strings.HasPrefix(r.Principal, "xks:prod/") {
			found = true
		}
		return nil
	})
	if err != nil || !found {
		t.Fatalf("no audit record of the XKS Encrypt with its request metadata (%v)", err)
	}
	files, _ := filepath.Glob(filepath.Join(tg.dir, gateway.AuditDir, "*"))
	for _, f := range files {
		raw, _ := os.ReadFile(f)
		if bytes.Contains(raw, []byte(cred.Secret)) || bytes.Contains(raw, []byte(base64.StdEncoding.EncodeToString(plaintext))) {
			t.Errorf("%s holds a secret or a plaintext", f)
		}
	}
}

// sigv4ClientAt is sigv4Client against another URL.
func (tg *testGateway) sigv4ClientAt(url, akid, secret string) *kms.Client {
	return kms.New(kms.Options{
		Region:       testRegion,
		BaseEndpoint: aws.String(url),
		HTTPClient:   &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tg.caPool}}},
		Credentials:  aws.NewCredentialsCache(staticCreds{akid, secret}),
		Retryer:      aws.NopRetryer{},
	})
}
