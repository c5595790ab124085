package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/internal/config"
	"github.com/hsmgate/hsmgate/internal/swtpmtest"
	"github.com/hsmgate/hsmgate/internal/testenv"
)

// needSwtpm skips (or, with CI=true, fails) the test without swtpm.
func needSwtpm(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("swtpm"); err != nil {
		testenv.Missing(t, "swtpm", "swtpm")
	}
}

// initAttested inits a development gateway, which has hsmgate's own swtpm
// since swtpm is installed.
func initAttested(t *testing.T) (data, endpoint string) {
	t.Helper()
	needSwtpm(t)
	data, endpoint, r := initGateway(t, 1)
	if !strings.Contains(r.stdout, "Attestation: on, with hsmgate's own software TPM") {
		t.Errorf("init's summary does not say attestation is on")
	}
	cfg, err := config.Load(data)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Attest == nil || cfg.Attest.Mode != config.AttestSwtpm || cfg.Attest.Socket != "" {
		t.Fatalf("init wrote [attest] %+v, want mode swtpm", cfg.Attest)
	}
	return data, endpoint
}

// editConfig loads data's configuration, changes it and writes it back.
func editConfig(t *testing.T, data string, f func(*config.Config)) {
	t.Helper()
	cfg, err := config.Load(data)
	if err != nil {
		t.Fatal(err)
	}
	f(cfg)
	if err := cfg.Write(); err != nil {
		t.Fatal(err)
	}
}

// insecureGet GETs endpoint+path without verifying the server certificate
// (a refusing gateway's is a temporary one).
func insecureGet(endpoint, path string) (int, string, error) {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	defer c.CloseIdleConnections()
	resp, err := c.Get(endpoint + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// waitRefusing waits until the gateway answers /readyz with 503, and
// returns the reason it gives.
func (s *server) waitRefusing(t *testing.T, endpoint string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-s.done:
			t.Fatalf("hsmgate serve exited (status %d); it should stay up while refusing:\n%s", s.code, s.stderr)
		default:
		}
		code, body, err := insecureGet(endpoint, "/readyz")
		if err == nil && code == http.StatusServiceUnavailable {
			return body
		}
		if err == nil && code == http.StatusOK {
			t.Fatalf("the gateway is ready; it should refuse to serve")
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway did not answer /readyz within a minute: %v\nstderr:\n%s", err, s.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkRefusing checks what a refusing gateway shows: the reason on
// /readyz, /healthz up, the metric 0, its log, no KMS API over its real CA.
func (s *server) checkRefusing(t *testing.T, data, endpoint string, reasons ...string) {
	t.Helper()
	body := s.waitRefusing(t, endpoint)
	for _, want := range append([]string{"not ready: refusing to serve: "}, reasons...) {
		if !strings.Contains(body, want) {
			t.Errorf("/readyz says %q; want %q in it", body, want)
		}
	}
	if code, _, err := insecureGet(endpoint, "/healthz"); err != nil || code != 200 {
		t.Errorf("/healthz of a refusing gateway: %d %v", code, err)
	}
	if _, metrics, _ := insecureGet(endpoint, "/metrics"); !strings.Contains(metrics, "\nhsmgate_attestation_ok 0\n") {
		t.Error("/metrics lacks hsmgate_attestation_ok 0")
	}
	if !strings.Contains(s.stderr.String(), `"msg":"refusing to serve`) {
		t.Error("the log does not say the gateway refuses to serve")
	}
	if !strings.Contains(s.stdout.String(), "hsmgate is NOT serving the AWS KMS API: ") {
		t.Error("stdout does not say the gateway is not serving")
	}
	// Clients that trust the gateway's CA can't even connect.
	roots := caPool(t, filepath.Join(data, "pki", "ca.pem"))
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	defer c.CloseIdleConnections()
	if _, err := c.Post(endpoint+"/", "application/x-amz-json-1.1", strings.NewReader("{}")); err == nil {
		t.Error("a refusing gateway completed a TLS handshake trusted by the gateway's CA")
	}
	if code := s.stop(t, syscall.SIGTERM); code != 1 {
		t.Errorf("a refusing gateway stopped with exit %d, want 1", code)
	}
}

// The embedded default: init with swtpm, seal the PIN, serve (a KMS call
// works), verify the boot; a harmless configuration change makes the PIN
// unsealable (the swtpm restarts with the gateway: a new boot measuring a
// new configuration) and the gateway refuses to serve until it is sealed
// again.
func TestAttestServe(t *testing.T) {
	data, endpoint := initAttested(t)
	roots := caPool(t, filepath.Join(data, "pki", "ca.pem"))
	dir := t.TempDir()
	enrollment, golden := filepath.Join(dir, "enrollment.json"), filepath.Join(dir, "golden.json")
	attest := func(args ...string) result {
		t.Helper()
		return hsmgate(t, nil, append([]string{"--data", data, "attest"}, args...)...)
	}

	if r := attest("enroll", "--out", enrollment); r.code != 0 || !strings.Contains(r.stderr, "a verifier should check it against the TPM's EK certificate") {
		t.Fatalf("attest enroll: exit %d", r.code)
	}
	r := attest("seal-pins")
	if r.code != 0 || !strings.Contains(r.stdout, "Sealed the PIN of pool.modules[0]") {
		t.Fatalf("attest seal-pins: exit %d", r.code)
	}
	cfg, err := config.Load(data)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Pool.Modules[0].PINSealed; got != "attest/pins/0.sealed" {
		t.Errorf("pin_sealed = %q", got)
	}
	sealed, err := os.ReadFile(filepath.Join(data, "attest", "pins", "0.sealed"))
	if err != nil {
		t.Fatal(err)
	}
	pin, err := os.ReadFile(filepath.Join(data, "softhsm", "user.pin"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, bytes.TrimSpace(pin)) || strings.Contains(r.stdout+r.stderr, string(bytes.TrimSpace(pin))) {
		t.Error("the sealed file or seal-pins' output holds the PIN in plaintext")
	}
	if r := attest("golden", "--out", golden); r.code != 0 {
		t.Fatalf("attest golden: exit %d", r.code)
	}

	// A good boot serves.
	srv := startServe(t, data)
	srv.waitReady(t, endpoint, roots)
	if !strings.Contains(srv.stdout.String(), "Its boot is measured into hsmgate's own swtpm") ||
		!strings.Contains(srv.stdout.String(), "1 of its 1 HSM PINs were unsealed from it") {
		t.Error("serve's notice does not tell of the measured boot and the unsealed PIN")
	}
	mtlsListKeys(t, data, endpoint, roots)
	if r := attest("enroll", "--out", filepath.Join(dir, "again.json")); r.code != 1 || !strings.Contains(r.stderr, "in use by another hsmgate process") {
		t.Errorf("attest enroll while serving: exit %d, want 1: the gateway holds its swtpm", r.code)
	}

	// Verification: the golden policy passes; another one fails, saying why.
	r = attest("verify", "--enrollment", enrollment, "--policy", golden)
	if r.code != 0 || !strings.Contains(r.stdout, "verified: "+endpoint+" runs an approved boot") ||
		!strings.Contains(r.stdout, "image: PKCS#11 module ") {
		t.Fatalf("attest verify: exit %d", r.code)
	}
	var pol map[string]any
	raw, _ := os.ReadFile(golden)
	if err := json.Unmarshal(raw, &pol); err != nil {
		t.Fatal(err)
	}
	pol["configDigests"] = []string{strings.Repeat("00", 32)}
	wrong := filepath.Join(dir, "wrong.json")
	raw, _ = json.Marshal(pol)
	if err := os.WriteFile(wrong, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	r = attest("verify", "--enrollment", enrollment, "--policy", wrong)
	if r.code != 1 || !strings.Contains(r.stderr, "FAILED verification: attest: golden policy check failed: config \"hsmgate.toml\" digest") {
		t.Errorf("attest verify with a wrong golden policy: exit %d", r.code)
	}
	if code := srv.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("serve: exit %d", code)
	}
	r = hsmgate(t, nil, "--data", data, "audit", "query", "--operation", "Attestation")
	if r.code != 0 || strings.Count(r.stdout, `"operation":"Attestation"`) != 2 || !strings.Contains(r.stdout, `"principal":"admin"`) {
		t.Errorf("audit query: exit %d; want two Attestation records by the admin", r.code)
	}

	// A harmless change of the configuration: refused, and it says why.
	editConfig(t, data, func(c *config.Config) { c.Gateway.RequestTimeout = config.Duration{Duration: 11 * time.Second} })
	srv = startServe(t, data)
	srv.checkRefusing(t, data, endpoint, "PCR 15 (config; this boot measured \"hsmgate.toml\"")

	// Sealed again for the new configuration, it serves.
	if r := attest("seal-pins"); r.code != 0 {
		t.Fatalf("attest seal-pins: exit %d", r.code)
	}
	srv = startServe(t, data)
	srv.waitReady(t, endpoint, roots)
	mtlsListKeys(t, data, endpoint, roots)
	if code := srv.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("serve: exit %d", code)
	}
}

// hsmgateExe runs exe (a copy of this test binary) as hsmgate.
func hsmgateExe(t *testing.T, exe string, args ...string) result {
	t.Helper()
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), runMainEnv+"=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s %s: exit %d\nstdout:\n%s\nstderr:\n%s", exe, strings.Join(args, " "), r.code, r.stdout, r.stderr)
	return r
}

// startServeExe is startServe running exe.
func startServeExe(t *testing.T, exe, data string) *server {
	t.Helper()
	s := &server{stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	s.cmd = exec.Command(exe, "--data", data, "serve")
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
		t.Logf("%s serve: exit %d\nstdout:\n%s\nstderr:\n%s", exe, s.code, s.stdout, s.stderr)
	})
	return s
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}

func appendTo(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// A changed image (the PKCS#11 module) or a changed binary is measured
// differently, so the PIN does not unseal and the gateway refuses to serve,
// naming the PCR.
func TestAttestRefusesChangedImageOrBinary(t *testing.T) {
	data, endpoint := initAttested(t)
	roots := caPool(t, filepath.Join(data, "pki", "ca.pem"))
	// Copies of the module and of hsmgate (this test binary) that the test
	// can change.
	cfg, err := config.Load(data)
	if err != nil {
		t.Fatal(err)
	}
	module := filepath.Join(data, "lib", "libsofthsm2.so")
	copyFile(t, cfg.Pool.Modules[0].Path, module, 0o755)
	editConfig(t, data, func(c *config.Config) { c.Pool.Modules[0].Path = "lib/libsofthsm2.so" })
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(t.TempDir(), "hsmgate")
	copyFile(t, self, exe, 0o755)

	if r := hsmgateExe(t, exe, "--data", data, "attest", "seal-pins"); r.code != 0 || !strings.Contains(r.stdout, "binary ") || !strings.Contains(r.stdout, exe) {
		t.Fatalf("attest seal-pins: exit %d", r.code)
	}
	srv := startServeExe(t, exe, data)
	srv.waitReady(t, endpoint, roots)
	if code := srv.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("serve: exit %d", code)
	}

	// The module changes.
	orig, err := os.ReadFile(module)
	if err != nil {
		t.Fatal(err)
	}
	appendTo(t, module, []byte("tampered"))
	srv = startServeExe(t, exe, data)
	srv.checkRefusing(t, data, endpoint, "PCR 12 (image; this boot measured \"pkcs11-modules\"")
	if strings.Contains(srv.stdout.String(), "PCR 13") || strings.Contains(srv.stdout.String(), "PCR 15") {
		t.Error("a changed module was reported as a changed binary or configuration")
	}
	if err := os.WriteFile(module, orig, 0o755); err != nil {
		t.Fatal(err)
	}

	// The binary changes.
	appendTo(t, exe, []byte("tampered"))
	srv = startServeExe(t, exe, data)
	srv.checkRefusing(t, data, endpoint, "PCR 13 (binary; this boot measured \""+exe+"\"")
	if strings.Contains(srv.stdout.String(), "PCR 12") || strings.Contains(srv.stdout.String(), "PCR 15") {
		t.Error("a changed binary was reported as a changed module or configuration")
	}
}

// An external swtpm (like a TPM device, it outlives the gateway process):
// a gateway restarted with a changed configuration, the TPM not reset, can't
// measure the new configuration in this boot and refuses; a TPM reset alone
// does not help (the PIN is sealed to the old configuration); sealed again,
// it serves. `attest measure` is the boot step for such a TPM.
func TestAttestExternalTPM(t *testing.T) {
	needSwtpm(t)
	tpm := swtpmtest.Start(t)
	data, endpoint, _ := initGateway(t, 1)
	roots := caPool(t, filepath.Join(data, "pki", "ca.pem"))
	editConfig(t, data, func(c *config.Config) {
		c.Attest = &config.Attest{Mode: config.AttestSwtpm, Socket: tpm.Socket()}
	})
	attest := func(args ...string) result {
		t.Helper()
		return hsmgate(t, nil, append([]string{"--data", data, "attest"}, args...)...)
	}
	if r := attest("seal-pins"); r.code != 0 || !strings.Contains(r.stdout, "the swtpm at "+tpm.Socket()) {
		t.Fatalf("attest seal-pins: exit %d", r.code)
	}
	if r := attest("measure"); r.code != 0 || strings.Count(r.stdout, "\n  ") != 3 {
		t.Fatalf("attest measure: exit %d", r.code)
	}
	srv := startServe(t, data)
	srv.waitReady(t, endpoint, roots)
	mtlsListKeys(t, data, endpoint, roots)
	if code := srv.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("serve: exit %d", code)
	}

	editConfig(t, data, func(c *config.Config) { c.Gateway.MaxInFlight = 100 })
	srv = startServe(t, data)
	srv.checkRefusing(t, data, endpoint, "already measured differently in this boot: config was measured as \"hsmgate.toml\"",
		"a new config is measured only after a TPM reset")

	tpm.Restart()
	srv = startServe(t, data)
	srv.checkRefusing(t, data, endpoint, "PCR 15 (config;")

	if r := attest("seal-pins"); r.code != 0 {
		t.Fatalf("attest seal-pins: exit %d", r.code)
	}
	srv = startServe(t, data)
	srv.waitReady(t, endpoint, roots)
	mtlsListKeys(t, data, endpoint, roots)
	if code := srv.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("serve: exit %d", code)
	}
}

// The [attest] section's checks, and init's --attest.
func TestAttestConfiguration(t *testing.T) {
	base := "[pool]\n[[pool.modules]]\npath = \"/x.so\"\npin_env = \"P\"\n"
	for name, tc := range map[string]struct{ toml, err string }{
		"off":              {base + "[attest]\nmode = \"off\"\n", ""},
		"device":           {base + "[attest]\nmode = \"device\"\ndevice = \"/dev/tpmrm1\"\npcr_image = 8\npcr_binary = 9\npcr_config = 10\n", ""},
		"sealed":           {base + "pin_sealed = \"attest/pins/0.sealed\"\n[attest]\nmode = \"swtpm\"\n", ""},
		"sealed, no TPM":   {base + "pin_sealed = \"attest/pins/0.sealed\"\n", "pool.modules[0]: pin_sealed needs a TPM: set [attest] mode"},
		"bad mode":         {base + "[attest]\nmode = \"on\"\n", `attest.mode "on": want "off" (the default), "swtpm" or "device"`},
		"device for swtpm": {base + "[attest]\nmode = \"swtpm\"\ndevice = \"/dev/tpmrm0\"\n", `attest.device is set, but attest.mode is not "device"`},
		"socket, device":   {base + "[attest]\nmode = \"device\"\nsocket = \"/tmp/s\"\n", `attest.socket is set, but attest.mode is not "swtpm"`},
		"swtpm, socket":    {base + "[attest]\nmode = \"swtpm\"\nsocket = \"/tmp/s\"\nswtpm = \"/bin/swtpm\"\n", "attest.swtpm is the embedded swtpm's executable"},
		"bad PCRs":         {base + "[attest]\nmode = \"swtpm\"\npcr_image = 16\n", "attest.pcr_image, pcr_binary, pcr_config"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := config.Parse([]byte(tc.toml))
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("Parse: %v, want %q", err, tc.err)
			}
		})
	}
	cfg, err := config.Parse([]byte(base + "pin_sealed = \"p/0.sealed\"\n[attest]\nmode = \"device\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Dir = "/data"
	ao, err := cfg.AttestOptions()
	if err != nil || ao.Device != "/dev/tpmrm0" || ao.StateDir != "/data/attest" || ao.SealedPINs[0] != "/data/p/0.sealed" || ao.PCRs.Config != 15 || ao.Embedded() {
		t.Errorf("AttestOptions: %+v, %v", ao, err)
	}

	needSoftHSM(t)
	if r := hsmgate(t, nil, "--data", filepath.Join(t.TempDir(), "data"), "init", "--attest", "maybe"); r.code != 1 || !strings.Contains(r.stderr, `--attest "maybe": want auto, swtpm or off`) {
		t.Errorf("init --attest maybe: exit %d", r.code)
	}
	data := filepath.Join(t.TempDir(), "data")
	if r := hsmgate(t, nil, "--data", data, "init", "--tokens", "1", "--attest", "off"); r.code != 0 || !strings.Contains(r.stdout, "Attestation: off (--attest off).") {
		t.Fatalf("init --attest off: exit %d", r.code)
	}
	if cfg, err := config.Load(data); err != nil || cfg.Attest != nil {
		t.Errorf("init --attest off wrote [attest] %+v (%v)", cfg.Attest, err)
	}
	if r := hsmgate(t, nil, "--data", data, "attest", "seal-pins"); r.code != 1 || !strings.Contains(r.stderr, "[attest] mode is off") {
		t.Errorf("attest seal-pins without a TPM: exit %d", r.code)
	}
}
