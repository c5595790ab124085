package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hsmgate/hsmgate/internal/config"
	"github.com/hsmgate/hsmgate/internal/testenv"
)

// runMainEnv makes the test binary act as hsmgate: the tests run the
// commands in a child process, as a user would, so that each run gets its
// own PKCS#11 module initialisation and environment, and its real exit
// status.
const runMainEnv = "HSMGATE_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		os.Exit(run(os.Args, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

type result struct {
	stdout, stderr string
	code           int
}

// hsmgate runs the command with args and the extra environment variables.
func hsmgate(t *testing.T, env []string, args ...string) result {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(append(os.Environ(), runMainEnv+"=1"), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run hsmgate %v: %v", args, err)
	}
	t.Logf("hsmgate %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	return r
}

// needSoftHSM skips (or, with CI=true, fails) the test without SoftHSM2.
func needSoftHSM(t *testing.T) {
	t.Helper()
	if _, _, err := findSoftHSM(); err != nil {
		testenv.Missing(t, "SoftHSM2 (libsofthsm2.so and softhsm2-util)", "softhsm2")
	}
}

func TestInitThenPoolCheck(t *testing.T) {
	needSoftHSM(t)
	data := filepath.Join(t.TempDir(), "data")
	// The data folder comes from HSMGATE_DATA here, from --data below.
	r := hsmgate(t, []string{"HSMGATE_DATA=" + data}, "init", "--tokens", "3")
	if r.code != 0 {
		t.Fatalf("init: exit %d", r.code)
	}
	if fi, err := os.Stat(data); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data folder: %v, mode %v; want 0700", err, fi.Mode())
	}
	pinFile := filepath.Join(data, "softhsm", "user.pin")
	if fi, err := os.Stat(pinFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("PIN file: %v, mode %v; want 0600", err, fi.Mode())
	}
	cfg, err := config.Load(data)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Pool.DomainKeyCheck == "" {
		t.Error("init recorded no domain_key_check")
	}
	if m := cfg.Pool.Modules; len(m) != 1 || len(m[0].Tokens) != 3 || m[0].PINFile == "" || m[0].Env["SOFTHSM2_CONF"] == "" {
		t.Errorf("unexpected configuration: %+v", cfg.Pool)
	}

	r2 := hsmgate(t, nil, "--data", data, "pool", "check")
	if r2.code != 0 {
		t.Fatalf("pool check: exit %d", r2.code)
	}
	for _, name := range []string{"hsmgate-0", "hsmgate-1", "hsmgate-2"} {
		if !strings.Contains(r2.stdout, "\nPASS slot "+name+":") {
			t.Errorf("pool check printed no PASS line for %s", name)
		}
		if !strings.Contains(r2.stdout, "\n"+name+" ") {
			t.Errorf("pool check's table has no row for %s", name)
		}
	}
	if strings.Contains(r2.stdout, "FAIL") || !strings.Contains(r2.stdout, "pool check passed: all 3 slots work") {
		t.Error("pool check did not report that every slot passed")
	}
	if !strings.Contains(r2.stdout, cfg.Pool.DomainKeyCheck) {
		t.Error("pool check did not show the domain key check value")
	}

	// A second init must not touch the configured pool.
	before, _ := os.ReadFile(config.Path(data))
	r3 := hsmgate(t, nil, "--data", data, "init")
	if r3.code != 1 || !strings.Contains(r3.stderr, "already holds a gateway") {
		t.Errorf("second init: exit %d, want 1 with a refusal", r3.code)
	}
	if after, _ := os.ReadFile(config.Path(data)); !bytes.Equal(before, after) {
		t.Error("second init changed the configuration")
	}

	// The PIN is in its own file and nowhere else: not in another file of
	// the data folder, not in anything the commands printed.
	pin, err := os.ReadFile(pinFile)
	if err != nil {
		t.Fatal(err)
	}
	pin = bytes.TrimSpace(pin)
	if len(pin) < 8 {
		t.Fatalf("PIN of %d bytes is too short to search for", len(pin))
	}
	err = filepath.WalkDir(data, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || path == pinFile {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, pin) {
			t.Errorf("%s contains the PIN", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []result{r, r2, r3} {
		if strings.Contains(r.stdout+r.stderr, string(pin)) {
			t.Error("a command printed the PIN")
		}
	}
}

// A slot that is not healthy fails the check, and so the exit status.
func TestPoolCheckFailsOnSlotWithoutDomainKey(t *testing.T) {
	needSoftHSM(t)
	data := filepath.Join(t.TempDir(), "data")
	if r := hsmgate(t, nil, "--data", data, "init", "--tokens", "2"); r.code != 0 {
		t.Fatalf("init: exit %d", r.code)
	}
	// Add a token the domain key was never provisioned on.
	util, _, _ := findSoftHSM()
	pin, err := os.ReadFile(filepath.Join(data, "softhsm", "user.pin"))
	if err != nil {
		t.Fatal(err)
	}
	so := make([]byte, 8)
	rand.Read(so)
	cmd := exec.Command(util, "--init-token", "--free", "--label", "stray",
		"--pin", string(bytes.TrimSpace(pin)), "--so-pin", hex.EncodeToString(so))
	cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+filepath.Join(data, "softhsm", "softhsm2.conf"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util: %v: %s", err, out)
	}
	cfg, err := config.Load(data)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Pool.Modules[0].Tokens = append(cfg.Pool.Modules[0].Tokens, config.Token{Label: "stray"})
	if err := cfg.Write(); err != nil {
		t.Fatal(err)
	}

	r := hsmgate(t, nil, "--data", data, "pool", "check")
	if r.code != 1 {
		t.Errorf("pool check: exit %d, want 1", r.code)
	}
	for _, want := range []string{"PASS slot hsmgate-0:", "PASS slot hsmgate-1:", "FAIL slot stray: not healthy (no-domain-key", "1 of 3 slots failed (stray)"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("pool check output lacks %q", want)
		}
	}
}

func TestPoolCheckWithoutConfig(t *testing.T) {
	r := hsmgate(t, nil, "--data", t.TempDir(), "pool", "check")
	if r.code != 1 || !strings.Contains(r.stderr, "run `hsmgate init` first") {
		t.Errorf("exit %d; want 1 and advice to run init", r.code)
	}
}

func TestInitWithoutSoftHSMSaysHowToInstall(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	r := hsmgate(t, []string{"HSMGATE_SOFTHSM_MODULE=" + filepath.Join(t.TempDir(), "libsofthsm2.so")}, "--data", data, "init")
	if r.code != 1 || !strings.Contains(r.stderr, "\n  apt-get install -y softhsm2\n") {
		t.Errorf("exit %d; want 1 and the install command", r.code)
	}
	if _, err := os.Stat(config.Path(data)); err == nil {
		t.Error("a failed init left a configuration")
	}
}

func TestInitRefusesOpenDataFolder(t *testing.T) {
	needSoftHSM(t)
	data := t.TempDir()
	if err := os.Chmod(data, 0o755); err != nil {
		t.Fatal(err)
	}
	r := hsmgate(t, nil, "--data", data, "init")
	if r.code != 1 || !strings.Contains(r.stderr, "can be opened by other users") {
		t.Errorf("exit %d; want 1 and a refusal", r.code)
	}
}

// init on an operator's configuration (here SoftHSM tokens standing in for
// real HSMs, the PIN from an environment variable) provisions the domain
// key, creates the gateway, records the check value, and refuses to run
// twice.
func TestInitOnConfiguredPool(t *testing.T) {
	needSoftHSM(t)
	env := testenv.NewSoftHSM(t, 2)
	data := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	toml := fmt.Sprintf(`[pool]
[[pool.modules]]
path = %q
pin_env = "TEST_HSM_PIN"
tokens = [{label = "tok-0"}, {label = "tok-1"}]
[pool.modules.env]
SOFTHSM2_CONF = %q
`, env.Module, env.Conf)
	if err := os.WriteFile(config.Path(data), []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	pinEnv := []string{"TEST_HSM_PIN=" + env.PIN}
	r := hsmgate(t, pinEnv, "--data", data, "init")
	if r.code != 0 || !strings.Contains(r.stdout, "Provisioned a new domain key on 2 slots") {
		t.Fatalf("init on a configured pool: exit %d", r.code)
	}
	cfg, err := config.Load(data)
	if err != nil || cfg.Pool.DomainKeyCheck == "" {
		t.Fatalf("domain key check not recorded: %v", err)
	}
	for _, f := range []string{"keystore.db", "pki/ca.pem", "admin/credentials"} {
		if _, err := os.Stat(filepath.Join(data, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	if strings.Contains(r.stdout+r.stderr, env.PIN) {
		t.Error("init printed the PIN")
	}
	r2 := hsmgate(t, pinEnv, "--data", data, "init")
	if r2.code != 1 || !strings.Contains(r2.stderr, "already holds a gateway") {
		t.Fatalf("second init: exit %d", r2.code)
	}
	r3 := hsmgate(t, pinEnv, "--data", data, "pool", "check")
	if r3.code != 0 {
		t.Fatalf("pool check after init: exit %d", r3.code)
	}
}
