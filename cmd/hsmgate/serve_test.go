package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/smithy-go"

	"github.com/hsmgate/hsmgate/internal/config"
)

// syncBuffer is a bytes.Buffer a child process writes while the test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// server is `hsmgate serve` running in a child process.
type server struct {
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	done           chan struct{} // closed when the process has exited
	code           int           // its exit status, once done
}

// startServe starts `hsmgate --data data serve args…` in the background. The
// test's cleanup kills it if it is still running.
func startServe(t *testing.T, data string, args ...string) *server {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	s := &server{stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	s.cmd = exec.Command(exe, append([]string{"--data", data, "serve"}, args...)...)
	s.cmd.Env = append(os.Environ(), runMainEnv+"=1")
	s.cmd.Stdout, s.cmd.Stderr = s.stdout, s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := s.cmd.Wait()
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee):
			s.code = ee.ExitCode()
		case err != nil:
			s.code = -1
		}
		close(s.done)
	}()
	t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			s.cmd.Process.Kill()
			<-s.done
		}
		t.Logf("hsmgate serve: exit %d\nstdout:\n%s\nstderr:\n%s", s.code, s.stdout, s.stderr)
	})
	return s
}

// waitReady waits until the gateway answers GET /readyz with 200 over TLS
// verified against its CA.
func (s *server) waitReady(t *testing.T, endpoint string, roots *x509.CertPool) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-s.done:
			t.Fatalf("hsmgate serve exited (status %d) before it was ready:\n%s", s.code, s.stderr)
		default:
		}
		resp, err := c.Get(endpoint + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway was not ready within a minute: %v\nstderr:\n%s", err, s.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends sig and returns the exit status.
func (s *server) stop(t *testing.T, sig os.Signal) int {
	t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.done:
		return s.code
	case <-time.After(60 * time.Second):
		t.Fatal("hsmgate serve did not stop within a minute of the signal")
	}
	return -1
}

// freeAddr returns a loopback address with a port nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// initGateway runs `hsmgate init` in a new data folder and points
// gateway.listen at a free port. It returns the data folder, the endpoint
// URL and the init run.
func initGateway(t *testing.T, tokens int) (data, endpoint string, r result) {
	t.Helper()
	needSoftHSM(t)
	data = filepath.Join(t.TempDir(), "data")
	r = hsmgate(t, nil, "--data", data, "init", "--tokens", strconv.Itoa(tokens))
	if r.code != 0 {
		t.Fatalf("init: exit %d", r.code)
	}
	setListen(t, data, freeAddr(t))
	cfg, err := config.Load(data)
	if err != nil {
		t.Fatal(err)
	}
	return data, "https://" + cfg.Gateway.Listen, r
}

func setListen(t *testing.T, data, addr string) {
	t.Helper()
	cfg, err := config.Load(data)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Gateway.Listen = addr
	if err := cfg.Write(); err != nil {
		t.Fatal(err)
	}
}

func caPool(t *testing.T, path string) *x509.CertPool {
	t.Helper()
	pem, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(pem) {
		t.Fatalf("%s holds no certificate", path)
	}
	return p
}

// parseExports reads `export NAME='value'` lines as a POSIX shell would,
// and checks that every other line is a comment or an unset.
func parseExports(t *testing.T, out string) map[string]string {
	t.Helper()
	line := regexp.MustCompile(`^export ([A-Z_]+)=((?:'[^']*'|\\')+)$`)
	part := regexp.MustCompile(`'([^']*)'|\\(')`)
	env := map[string]string{}
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if strings.HasPrefix(l, "#") || strings.HasPrefix(l, "unset ") {
			continue
		}
		m := line.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("env printed a line that is not a single-quoted export: %q", l)
		}
		var v strings.Builder
		for _, p := range part.FindAllStringSubmatch(m[2], -1) {
			v.WriteString(p[1] + p[2])
		}
		env[m[1]] = v.String()
	}
	return env
}

func readAdminCredentials(t *testing.T, data string) (akid, secret string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(data, "admin", "credentials"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`^\[hsmgate\]\naws_access_key_id = (AKIA[A-Z2-7]{16})\naws_secret_access_key = (\S{40})\n$`).FindStringSubmatch(string(b))
	if m == nil {
		t.Fatalf("admin/credentials is not a shared-credentials file with one [hsmgate] profile:\n%s", b)
	}
	return m[1], m[2]
}

// kmsClient is aws-sdk-go-v2's KMS client signing with SigV4.
func kmsClient(endpoint, region, akid, secret string, roots *x509.CertPool) *kms.Client {
	return kms.New(kms.Options{
		Region:       region,
		BaseEndpoint: aws.String(endpoint),
		HTTPClient:   &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}},
		Credentials:  aws.NewCredentialsCache(staticCredentials{akid, secret}),
		Retryer:      aws.NopRetryer{},
	})
}

type staticCredentials struct{ id, secret string }

func (s staticCredentials) Retrieve(context.Context) (aws.Credentials, error) {
	return aws.Credentials{AccessKeyID: s.id, SecretAccessKey: s.secret, Source: "test"}, nil
}

// mtlsListKeys calls ListKeys with the admin's client certificate, as the
// curl example does, and returns the key ids.
func mtlsListKeys(t *testing.T, data, endpoint string, roots *x509.CertPool) []string {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join(data, "admin", "client.pem"), filepath.Join(data, "admin", "client.key"))
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}}}}
	defer c.CloseIdleConnections()
	req, _ := http.NewRequest("POST", endpoint+"/", strings.NewReader("{}"))
	req.Header.Set("X-Amz-Target", "TrentService.ListKeys")
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("ListKeys over mTLS: %s: %s", resp.Status, body)
	}
	var out struct {
		Keys []struct{ KeyId string }
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("ListKeys over mTLS: %v: %s", err, body)
	}
	var ids []string
	for _, k := range out.Keys {
		ids = append(ids, k.KeyId)
	}
	return ids
}

func listKeyIDs(t *testing.T, c *kms.Client) []string {
	t.Helper()
	out, err := c.ListKeys(context.Background(), &kms.ListKeysInput{})
	if err != nil {
		t.Fatalf("ListKeys with SigV4: %v", err)
	}
	var ids []string
	for _, k := range out.Keys {
		ids = append(ids, *k.KeyId)
	}
	return ids
}

// The whole life of a development gateway: init, serve, call it over mTLS
// and SigV4 with what `env` prints, stop it with SIGTERM; manage principals
// while it is stopped and see the keystore locked while it runs.
func TestServe(t *testing.T) {
	data, endpoint, initRun := initGateway(t, 2)
	ca := filepath.Join(data, "pki", "ca.pem")
	roots := caPool(t, ca)
	adminID, adminSecret := readAdminCredentials(t, data)

	// init: private files, and a summary that names them but never shows
	// the secret.
	for _, f := range []string{"admin/credentials", "admin/client.key"} {
		if fi, err := os.Stat(filepath.Join(data, f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", f, err, fi.Mode())
		}
	}
	for _, want := range []string{ca, filepath.Join(data, "admin", "client.pem"), filepath.Join(data, "admin", "client.key"),
		filepath.Join(data, "admin", "credentials"), adminID} {
		if !strings.Contains(initRun.stdout, want) {
			t.Errorf("init's summary does not mention %s", want)
		}
	}
	if strings.Contains(initRun.stdout+initRun.stderr, adminSecret) {
		t.Error("init printed the admin's secret access key")
	}

	srv := startServe(t, data)
	srv.waitReady(t, endpoint, roots)

	// The notice on stdout: where, and how to call it.
	notice := srv.stdout.String()
	for _, want := range []string{
		"serving the AWS KMS API on " + endpoint,
		`eval "$(`, " --data " + data + ` env)"`,
		`aws kms list-keys --endpoint-url "$AWS_ENDPOINT_URL"`,
		"curl --cacert " + ca + " --cert " + filepath.Join(data, "admin", "client.pem") + " --key " + filepath.Join(data, "admin", "client.key") +
			` -H 'X-Amz-Target: TrentService.ListKeys' -H 'Content-Type: application/x-amz-json-1.1' -d '{}' ` + endpoint + "/",
	} {
		if !strings.Contains(notice, want) {
			t.Errorf("serve's notice lacks %q:\n%s", want, notice)
		}
	}

	// mTLS with the admin's client certificate: a new gateway has its
	// sample key.
	var sampleID string
	if ids := mtlsListKeys(t, data, endpoint, roots); len(ids) != 1 {
		t.Errorf("a new gateway lists keys %v, want only the sample key", ids)
	} else {
		sampleID = ids[0]
	}

	// SigV4 with what `env` prints.
	r := hsmgate(t, nil, "--data", data, "env")
	if r.code != 0 {
		t.Fatalf("env: exit %d", r.code)
	}
	env := parseExports(t, r.stdout)
	for k, want := range map[string]string{
		"AWS_ENDPOINT_URL":      endpoint,
		"AWS_CA_BUNDLE":         ca,
		"AWS_ACCESS_KEY_ID":     adminID,
		"AWS_SECRET_ACCESS_KEY": adminSecret,
		"AWS_REGION":            "us-east-1",
		"AWS_DEFAULT_REGION":    "us-east-1",
	} {
		if env[k] != want {
			t.Errorf("env: %s = %q, want %q", k, env[k], want)
		}
	}
	admin := kmsClient(env["AWS_ENDPOINT_URL"], env["AWS_REGION"], env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], caPool(t, env["AWS_CA_BUNDLE"]))
	created, err := admin.CreateKey(context.Background(), &kms.CreateKeyInput{Description: aws.String("from the test")})
	if err != nil {
		t.Fatalf("CreateKey with SigV4: %v", err)
	}
	keyID := *created.KeyMetadata.KeyId
	sample, err := admin.Encrypt(context.Background(), &kms.EncryptInput{KeyId: aws.String(SampleKeyAlias), Plaintext: []byte("x")})
	if err != nil || !strings.HasSuffix(*sample.KeyId, sampleID) {
		t.Errorf("Encrypt with the sample key %s: %v", SampleKeyAlias, err)
	}
	both := []string{sampleID, keyID}
	slices.Sort(both)
	if ids := listKeyIDs(t, admin); !slices.Equal(ids, both) {
		t.Errorf("ListKeys with SigV4: %v, want %v", ids, both)
	}
	if ids := mtlsListKeys(t, data, endpoint, roots); !slices.Equal(ids, both) {
		t.Errorf("ListKeys over mTLS: %v, want [%s]", ids, keyID)
	}

	// The examples of the notice, run as printed, where the tools exist.
	t.Run("curl example", func(t *testing.T) {
		if _, err := exec.LookPath("curl"); err != nil {
			t.Skip("curl is not installed")
		}
		out := runNoticeLines(t, notice, "  curl ")
		if !strings.Contains(out, keyID) {
			t.Errorf("the curl example's output lacks the key %s", keyID)
		}
	})
	t.Run("aws cli example", func(t *testing.T) {
		if _, err := exec.LookPath("aws"); err != nil {
			t.Skip("the AWS CLI is not installed (Debian package awscli)")
		}
		out := runNoticeLines(t, notice, "  eval ", "  aws ")
		if !strings.Contains(out, keyID) {
			t.Errorf("the AWS CLI example's output lacks the key %s", keyID)
		}
	})

	// While the gateway runs, its keystore is locked: the principal
	// commands go through its admin API (principal_test.go).
	r = hsmgate(t, nil, "--data", data, "principal", "list")
	if r.code != 0 || !strings.Contains(r.stdout, adminID+" (active)") {
		t.Errorf("principal list while serving: exit %d, want the admin's key", r.code)
	}
	r = hsmgate(t, nil, "--data", data, "serve", "--listen", freeAddr(t))
	if r.code != 1 || !strings.Contains(r.stderr, "the gateway is running (its keystore is locked)") {
		t.Errorf("a second serve: exit %d, want 1 and the locked message", r.code)
	}

	if code := srv.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("serve after SIGTERM: exit %d, want 0", code)
	}
	logs := srv.stderr.String()
	for _, want := range []string{`"msg":"gateway serving"`, `"msg":"gateway stopped"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("the gateway's log lacks %s", want)
		}
	}
	pin, err := os.ReadFile(filepath.Join(data, "softhsm", "user.pin"))
	if err != nil {
		t.Fatal(err)
	}
	for name, secret := range map[string]string{"the admin's secret": adminSecret, "the PIN": string(bytes.TrimSpace(pin))} {
		if strings.Contains(srv.stdout.String()+logs, secret) {
			t.Errorf("serve printed %s", name)
		}
	}

	// Stopped: principals and access keys.
	if r := hsmgate(t, nil, "--data", data, "principal", "add", "bob"); r.code != 0 {
		t.Fatalf("principal add: exit %d", r.code)
	}
	if r := hsmgate(t, nil, "--data", data, "principal", "add", "bob"); r.code != 1 || !strings.Contains(r.stderr, "already exists") {
		t.Errorf("principal add of an existing name: exit %d", r.code)
	}
	r = hsmgate(t, nil, "--data", data, "principal", "create-access-key", "bob")
	if r.code != 0 {
		t.Fatalf("create-access-key: exit %d", r.code)
	}
	m := regexp.MustCompile(`^\[bob\]\naws_access_key_id = (AKIA[A-Z2-7]{16})\naws_secret_access_key = (\S{40})\n$`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("create-access-key printed no credentials profile")
	}
	bobID, bobSecret := m[1], m[2]
	if !strings.Contains(r.stderr, "only time") {
		t.Error("create-access-key gave no warning that the secret is shown once")
	}
	r = hsmgate(t, nil, "--data", data, "principal", "list")
	if r.code != 0 || !regexp.MustCompile(`(?m)^admin +yes +user +- +- +\S+ +`+adminID+` \(active\)$`).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^bob +no +user +- +- +\S+ +`+bobID+` \(active\)$`).MatchString(r.stdout) {
		t.Errorf("principal list: exit %d, want admin and bob with their active keys", r.code)
	}
	if strings.Contains(r.stdout, bobSecret) {
		t.Error("principal list showed a secret")
	}

	// bob gets a client certificate too.
	bobDir := filepath.Join(t.TempDir(), "bob")
	if r := hsmgate(t, nil, "--data", data, "principal", "issue-cert", "--out", bobDir, "bob"); r.code != 0 {
		t.Fatalf("issue-cert: exit %d", r.code)
	}
	if fi, err := os.Stat(filepath.Join(bobDir, "client.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("bob's client key: %v %v", fi, err)
	}
	if r := hsmgate(t, nil, "--data", data, "principal", "issue-cert", "--out", bobDir, "nobody"); r.code != 1 {
		t.Errorf("issue-cert for an unknown principal: exit %d", r.code)
	}

	// bob's key works, and sees only bob's keys; so does his certificate.
	srv = startServe(t, data)
	srv.waitReady(t, endpoint, roots)
	bob := kmsClient(endpoint, "us-east-1", bobID, bobSecret, roots)
	if ids := listKeyIDs(t, bob); len(ids) != 0 {
		t.Errorf("bob lists the admin's keys: %v", ids)
	}
	bobCert, err := tls.LoadX509KeyPair(filepath.Join(bobDir, "client.pem"), filepath.Join(bobDir, "client.key"))
	if err != nil {
		t.Fatal(err)
	}
	bobTLS := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{bobCert}}}}
	req, _ := http.NewRequest("POST", endpoint+"/", strings.NewReader("{}"))
	req.Header.Set("X-Amz-Target", "TrentService.ListKeys")
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	resp, err := bobTLS.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"Keys":[]`) {
		t.Errorf("bob over mTLS: %d %s", resp.StatusCode, body)
	}
	if code := srv.stop(t, os.Interrupt); code != 0 {
		t.Fatalf("serve after SIGINT: exit %d, want 0", code)
	}

	r = hsmgate(t, nil, "--data", data, "principal", "show", "bob")
	if r.code != 0 || !strings.Contains(r.stdout, "arn:aws:iam::111122223333:user/bob") || !strings.Contains(r.stdout, bobID+" (active") {
		t.Errorf("principal show: exit %d", r.code)
	}

	// Revoked, it is refused.
	if r := hsmgate(t, nil, "--data", data, "principal", "revoke-access-key", bobID); r.code != 0 {
		t.Fatalf("revoke-access-key: exit %d", r.code)
	}
	if r := hsmgate(t, nil, "--data", data, "principal", "revoke-access-key", "AKIAAAAAAAAAAAAAAAAA"); r.code != 1 || !strings.Contains(r.stderr, "no access key") {
		t.Errorf("revoke-access-key of an unknown key: exit %d", r.code)
	}
	r = hsmgate(t, nil, "--data", data, "principal", "list")
	if !regexp.MustCompile(`(?m)^bob +no +user +- +- +\S+ +` + bobID + ` \(revoked\)$`).MatchString(r.stdout) {
		t.Error("principal list does not show bob's key revoked")
	}
	if r := hsmgate(t, nil, "--data", data, "principal", "rm", "admin"); r.code != 1 {
		t.Errorf("principal rm admin: exit %d, want a refusal", r.code)
	}
	if r := hsmgate(t, nil, "--data", data, "principal", "rm", "bob"); r.code != 0 {
		t.Errorf("principal rm bob: exit %d", r.code)
	}
	if r := hsmgate(t, nil, "--data", data, "principal", "show", "bob"); r.code != 1 {
		t.Errorf("principal show of a removed principal: exit %d", r.code)
	}
	srv = startServe(t, data)
	srv.waitReady(t, endpoint, roots)
	_, err = bob.ListKeys(context.Background(), &kms.ListKeysInput{})
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "UnrecognizedClientException" {
		t.Errorf("ListKeys with a revoked key: %v, want UnrecognizedClientException", err)
	}
	if ids := listKeyIDs(t, admin); !slices.Equal(ids, both) {
		t.Errorf("the admin's ListKeys after a restart: %v, want %v", ids, both)
	}
	if code := srv.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("serve after SIGTERM: exit %d, want 0", code)
	}
}

// runNoticeLines runs, in one sh, the lines of serve's notice that start
// with the prefixes (in that order), and returns their output.
func runNoticeLines(t *testing.T, notice string, prefixes ...string) string {
	t.Helper()
	var script []string
	for _, p := range prefixes {
		i := strings.Index(notice, "\n"+p)
		if i < 0 {
			t.Fatalf("serve's notice has no line starting %q", p)
		}
		line, _, _ := strings.Cut(notice[i+1:], "\n")
		script = append(script, strings.TrimSpace(line))
	}
	cmd := exec.Command("sh", "-ec", strings.Join(script, "\n"))
	// The notice's hsmgate is this test binary, acting as hsmgate. The
	// AWS CLI must find nothing of the machine's own AWS configuration.
	cmd.Env = append(os.Environ(), runMainEnv+"=1", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	return string(out)
}

// No healthy slot: serve refuses, naming every slot's state and reason.
func TestServeRefusesWithoutHealthySlot(t *testing.T) {
	data, _, _ := initGateway(t, 2)
	cfg, err := config.Load(data)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Pool.DomainKeyCheck = "0000000000000000"
	if err := cfg.Write(); err != nil {
		t.Fatal(err)
	}
	r := hsmgate(t, nil, "--data", data, "serve")
	if r.code != 1 {
		t.Errorf("serve: exit %d, want 1", r.code)
	}
	for _, want := range []string{"refusing to serve: none of the 2 HSM slots is healthy",
		"hsmgate-0 is domain-key-mismatch (domain key check value", "hsmgate-1 is domain-key-mismatch ("} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("serve's refusal lacks %q", want)
		}
	}
	if strings.Contains(r.stdout, "serving") {
		t.Error("serve said it was serving")
	}
}

// writeFakeData makes a data folder with a configuration, a CA file and
// admin credentials, but no pool: enough for `env`.
func writeFakeData(t *testing.T, listen, region, secret string) string {
	t.Helper()
	data := t.TempDir()
	cfg := &config.Config{Dir: data,
		Gateway: config.Gateway{Listen: listen, Region: region},
		Pool:    config.Pool{Modules: []config.Module{{Path: "/nonexistent/pkcs11.so", PINEnv: "UNUSED"}}}}
	if err := cfg.Write(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"pki", "admin"} {
		if err := os.Mkdir(filepath.Join(data, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(data, "pki", "ca.pem"), []byte("not checked by env"), 0o644); err != nil {
		t.Fatal(err)
	}
	if secret != "" {
		if err := writeCredentials(filepath.Join(data, "admin", "credentials"), "AKIAEXAMPLEEXAMPLE22", secret); err != nil {
			t.Fatal(err)
		}
	}
	return data
}

// env's output is safe to eval, whatever the values hold.
func TestEnvQuotesForTheShell(t *testing.T) {
	secret := `a'b"c$HOME` + "`id`" + `\n;x`
	data := writeFakeData(t, "[::1]:9443", "eu-west-3", secret)
	r := hsmgate(t, nil, "--data", data, "env")
	if r.code != 0 {
		t.Fatalf("env: exit %d", r.code)
	}
	want := map[string]string{
		"AWS_ENDPOINT_URL":      "https://[::1]:9443",
		"AWS_CA_BUNDLE":         filepath.Join(data, "pki", "ca.pem"),
		"AWS_ACCESS_KEY_ID":     "AKIAEXAMPLEEXAMPLE22",
		"AWS_SECRET_ACCESS_KEY": secret,
		"AWS_REGION":            "eu-west-3",
		"AWS_DEFAULT_REGION":    "eu-west-3",
	}
	got := parseExports(t, r.stdout)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("parsed %s = %q, want %q", k, got[k], v)
		}
	}
	// And as sh reads it.
	cmd := exec.Command("sh", "-ec", r.stdout+`printf '%s\n' "$AWS_ENDPOINT_URL" "$AWS_CA_BUNDLE" "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" "$AWS_REGION" "$AWS_DEFAULT_REGION" "${AWS_SESSION_TOKEN-unset}"`)
	cmd.Env = append(os.Environ(), "AWS_SESSION_TOKEN=stale")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	wantOut := strings.Join([]string{want["AWS_ENDPOINT_URL"], want["AWS_CA_BUNDLE"], want["AWS_ACCESS_KEY_ID"], secret, "eu-west-3", "eu-west-3", "unset"}, "\n") + "\n"
	if string(out) != wantOut {
		t.Errorf("sh read:\n%s\nwant:\n%s", out, wantOut)
	}

	// A gateway listening everywhere is called by its first host name.
	r = hsmgate(t, nil, "--data", data, "env", "--listen", "0.0.0.0:8443")
	if got := parseExports(t, r.stdout)["AWS_ENDPOINT_URL"]; got != "https://localhost:8443" {
		t.Errorf("env --listen 0.0.0.0:8443: AWS_ENDPOINT_URL = %q, want https://localhost:8443", got)
	}
}

func TestEnvErrors(t *testing.T) {
	noCreds := writeFakeData(t, "", "", "")
	r := hsmgate(t, nil, "--data", noCreds, "env")
	if r.code != 1 || !strings.Contains(r.stderr, "credentials file "+filepath.Join(noCreds, "admin", "credentials")+" is missing") {
		t.Errorf("env without credentials: exit %d, want 1 and that the file is missing", r.code)
	}
	if r.stdout != "" {
		t.Errorf("env without credentials printed %q", r.stdout)
	}
	port0 := writeFakeData(t, "127.0.0.1:0", "", "secret")
	if r := hsmgate(t, nil, "--data", port0, "env"); r.code != 1 || !strings.Contains(r.stderr, "--listen") {
		t.Errorf("env with port 0: exit %d, want 1 and advice to pass --listen", r.code)
	}
	if r := hsmgate(t, nil, "--data", t.TempDir(), "env"); r.code != 1 || !strings.Contains(r.stderr, "run `hsmgate init` first") {
		t.Errorf("env without a configuration: exit %d", r.code)
	}
}

// Commands on a data folder without what they need say what to do.
func TestCommandsOnIncompleteDataFolder(t *testing.T) {
	empty := t.TempDir()
	for _, args := range [][]string{{"serve"}, {"principal", "list"}, {"principal", "add", "x"}, {"principal", "create-access-key", "x"}, {"principal", "revoke-access-key", "x"}} {
		r := hsmgate(t, nil, append([]string{"--data", empty}, args...)...)
		if r.code != 1 || !strings.Contains(r.stderr, "run `hsmgate init` first") {
			t.Errorf("%v without a configuration: exit %d, want 1 and advice to run init", args, r.code)
		}
	}
	// A configuration from before the gateway, without a keystore.
	old := writeFakeData(t, "", "", "")
	for _, args := range [][]string{{"serve"}, {"principal", "list"}} {
		r := hsmgate(t, nil, append([]string{"--data", old}, args...)...)
		if r.code != 1 || !strings.Contains(r.stderr, "has no keystore") {
			t.Errorf("%v without a keystore: exit %d, want 1 and that there is no keystore", args, r.code)
		}
	}
	if _, err := os.Stat(filepath.Join(old, "keystore.db")); err == nil {
		t.Error("a command created an empty keystore")
	}
	for _, args := range [][]string{{"serve", "--listen", "8443"}, {"principal", "add"}, {"principal", "add", "a", "--admin"}, {"env", "x"}} {
		if r := hsmgate(t, nil, append([]string{"--data", old}, args...)...); r.code != 1 {
			t.Errorf("%v: exit %d, want 1", args, r.code)
		}
	}
}

// serve writes the audit log; `audit verify` passes on it and names the
// place where it was changed.
func TestAuditVerify(t *testing.T) {
	data, endpoint, _ := initGateway(t, 2)
	roots := caPool(t, filepath.Join(data, "pki", "ca.pem"))
	srv := startServe(t, data)
	srv.waitReady(t, endpoint, roots)
	mtlsListKeys(t, data, endpoint, roots)
	mtlsListKeys(t, data, endpoint, roots)
	if code := srv.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("serve: exit %d", code)
	}
	r := hsmgate(t, nil, "--data", data, "audit", "verify")
	if r.code != 0 || !strings.Contains(r.stdout, "audit log verified") {
		t.Fatalf("audit verify: exit %d", r.code)
	}
	r = hsmgate(t, nil, "--data", data, "audit", "query", "--operation", "ListKeys")
	if r.code != 0 || strings.Count(r.stdout, `"operation":"ListKeys"`) != 2 {
		t.Fatalf("audit query: exit %d, %q", r.code, r.stdout)
	}
	files, _ := filepath.Glob(filepath.Join(data, "audit", "audit-*.log"))
	if len(files) == 0 {
		t.Fatal("no audit file")
	}
	raw, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	edited := bytes.Replace(raw, []byte(`"operation":"ListKeys"`), []byte(`"operation":"ListKeyz"`), 1)
	if err := os.WriteFile(files[0], edited, 0o600); err != nil {
		t.Fatal(err)
	}
	r = hsmgate(t, nil, "--data", data, "audit", "verify")
	if r.code != 1 || !strings.Contains(r.stderr, "FAILED") {
		t.Fatalf("audit verify of an edited log: exit %d", r.code)
	}
}
