package main

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/smithy-go"
)

// The principal commands work against a running gateway, through its
// admin API, and take effect at once.
func TestPrincipalCommandsWhileServing(t *testing.T) {
	data, endpoint, _ := initGateway(t, 2)
	roots := caPool(t, filepath.Join(data, "pki", "ca.pem"))
	srv := startServe(t, data)
	srv.waitReady(t, endpoint, roots)
	run := func(args ...string) result {
		t.Helper()
		return hsmgate(t, nil, append([]string{"--data", data, "principal"}, args...)...)
	}

	r := run("add", "--role", "--service", "storage", "--tag", "team=core", "--tag", "env=prod", "bob")
	if r.code != 0 || !strings.Contains(r.stdout, "Added principal bob (arn:aws:iam::111122223333:role/bob)") {
		t.Fatalf("principal add while serving: exit %d", r.code)
	}
	if r := run("add", "bob"); r.code != 1 || !strings.Contains(r.stderr, "principal bob: already exists") {
		t.Errorf("principal add of an existing name: exit %d", r.code)
	}
	if r := run("add", "--service", "Not_A_Label", "carol"); r.code != 1 || !strings.Contains(r.stderr, "lowercase DNS label") {
		t.Errorf("principal add with a bad service: exit %d", r.code)
	}
	r = run("create-access-key", "bob")
	m := regexp.MustCompile(`^\[bob\]\naws_access_key_id = (AKIA[A-Z2-7]{16})\naws_secret_access_key = (\S{40})\n$`).FindStringSubmatch(r.stdout)
	if r.code != 0 || m == nil || !strings.Contains(r.stderr, "only time") {
		t.Fatalf("create-access-key while serving: exit %d", r.code)
	}
	bobID, bobSecret := m[1], m[2]
	if r := run("create-access-key", "nobody"); r.code != 1 || !strings.Contains(r.stderr, "no principal nobody") {
		t.Errorf("create-access-key for nobody: exit %d", r.code)
	}

	// The new key works at once, without a restart.
	bob := kmsClient(endpoint, "us-east-1", bobID, bobSecret, roots)
	if ids := listKeyIDs(t, bob); len(ids) != 0 {
		t.Errorf("bob lists %v", ids)
	}

	// Tags, and what show and list say.
	if r := run("tag", "bob", "team=infra", "tier=1"); r.code != 0 {
		t.Errorf("principal tag: exit %d", r.code)
	}
	if r := run("untag", "bob", "env"); r.code != 0 {
		t.Errorf("principal untag: exit %d", r.code)
	}
	r = run("show", "bob")
	for _, want := range []string{"arn:      arn:aws:iam::111122223333:role/bob\n", "kind:     role\n", "service:  storage\n",
		"tags:     team=infra, tier=1\n", "access key " + bobID + " (active"} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("principal show: exit %d, lacks %q", r.code, want)
		}
	}
	r = run("list")
	if r.code != 0 || !regexp.MustCompile(`(?m)^bob +no +role +storage +team=infra,tier=1 +\S+ +`+bobID+` \(active\)$`).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^admin +yes +user +- +- +\S+ +AKIA`).MatchString(r.stdout) {
		t.Errorf("principal list: exit %d", r.code)
	}
	if strings.Contains(r.stdout, bobSecret) {
		t.Error("principal list showed a secret")
	}

	// A client certificate, its key made by the command.
	bobDir := filepath.Join(t.TempDir(), "bob")
	if r := run("issue-cert", "--out", bobDir, "bob"); r.code != 0 {
		t.Fatalf("issue-cert while serving: exit %d", r.code)
	}
	bobCert, err := tls.LoadX509KeyPair(filepath.Join(bobDir, "client.pem"), filepath.Join(bobDir, "client.key"))
	if err != nil {
		t.Fatal(err)
	}
	bobTLS := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{bobCert}}}}
	req, _ := http.NewRequest("POST", endpoint+"/", strings.NewReader("{}"))
	req.Header.Set("X-Amz-Target", "TrentService.ListKeys")
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	if resp, err := bobTLS.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("bob over mTLS: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	bobTLS.CloseIdleConnections()

	// Revoked, the key fails on the very next call.
	if r := run("revoke", bobID); r.code != 0 || !strings.Contains(r.stdout, "Revoked access key "+bobID+" of principal bob") {
		t.Fatalf("principal revoke while serving: exit %d", r.code)
	}
	_, err = bob.ListKeys(context.Background(), &kms.ListKeysInput{})
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "UnrecognizedClientException" {
		t.Errorf("ListKeys right after the revocation: %v, want UnrecognizedClientException", err)
	}
	if r := run("revoke-access-key", bobID); r.code != 0 || !strings.Contains(r.stdout, "was already revoked") {
		t.Errorf("revoke-access-key (the old name) of a revoked key: exit %d", r.code)
	}
	if r := run("revoke", "AKIAAAAAAAAAAAAAAAAA"); r.code != 1 || !strings.Contains(r.stderr, "no access key") {
		t.Errorf("revoke of an unknown key: exit %d", r.code)
	}
	if r := run("rm", "bob"); r.code != 0 {
		t.Errorf("principal rm while serving: exit %d", r.code)
	}
	if r := run("show", "bob"); r.code != 1 || !strings.Contains(r.stderr, "no principal bob") {
		t.Errorf("principal show of a removed principal: exit %d", r.code)
	}

	// The keystore is locked but nothing answers where --listen says.
	if r := run("list", "--listen", freeAddr(t)); r.code != 1 || !strings.Contains(r.stderr, "could not be reached") {
		t.Errorf("principal list with a wrong --listen: exit %d", r.code)
	}

	if code := srv.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("serve: exit %d", code)
	}
	if strings.Contains(srv.stdout.String()+srv.stderr.String(), bobSecret) {
		t.Error("the gateway logged a secret")
	}
	// Each change left an audit record as the admin, without the secret.
	for op, n := range map[string]int{"HsmGate.CreatePrincipal": 3, "HsmGate.CreateAccessKey": 2, "HsmGate.RevokeAccessKey": 3,
		"HsmGate.IssueClientCertificate": 1, "HsmGate.TagPrincipal": 1, "HsmGate.UntagPrincipal": 1, "HsmGate.DeletePrincipal": 1} {
		r := hsmgate(t, nil, "--data", data, "audit", "query", "--operation", op)
		if r.code != 0 || strings.Count(r.stdout, `"operation":"`+op+`"`) != n || strings.Count(r.stdout, `"principal":"admin"`) != n {
			t.Errorf("audit query --operation %s: exit %d, want %d records by the admin", op, r.code, n)
		}
		if strings.Contains(r.stdout, bobSecret) {
			t.Errorf("the audit log holds bob's secret")
		}
	}
	// Stopped, the commands work on the keystore and see the same.
	if r := run("show", "bob"); r.code != 1 || !strings.Contains(r.stderr, "no principal bob") {
		t.Errorf("principal show with the gateway stopped: exit %d", r.code)
	}
}
