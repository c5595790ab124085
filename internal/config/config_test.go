package config

import (
	"crypto/tls"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/hsmpool"
)

const full = `
[gateway]
listen = "[::1]:9443"
region = "eu-west-3"
account = "123456789012"
hosts = ["kms.example.com", "*.kms.example.com", "10.0.0.7", "::1"]
min_tls = "1.2"
request_timeout = "3s"
max_in_flight = 64
shutdown_grace = "1m"

[pool]
sessions_per_slot = 4
op_timeout = "1500ms"
keygen_timeout = "1m"
probe_interval = "5s"
quarantine_probe_interval = "250ms"
key_cache_size = 64
domain_key_label = "dk"
domain_key_check = "0a1b2c3d4e5f6071"

[[pool.modules]]
path = "/usr/lib/softhsm/libsofthsm2.so"
tokens = [{label = "a"}, {serial = "1234"}]
pin_file = "softhsm/user.pin"
env = { SOFTHSM2_CONF = "./softhsm/softhsm2.conf", OTHER = "plain/value" }

[[pool.modules]]
path = "/opt/vendor/lib.so"
pin_env = "VENDOR_PIN"
`

func writeFile(t *testing.T, dir, text string) {
	t.Helper()
	if err := os.WriteFile(Path(dir), []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestLoadMapsEveryKey(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, full)
	c, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", "")
	t.Setenv("OTHER", "")
	o, err := c.PoolOptions(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := hsmpool.Options{
		SessionsPerSlot:         4,
		OpTimeout:               1500 * time.Millisecond,
		KeyGenTimeout:           time.Minute,
		ProbeInterval:           5 * time.Second,
		QuarantineProbeInterval: 250 * time.Millisecond,
		KeyCacheSize:            64,
		DomainKeyLabel:          "dk",
		DomainKeyCheck:          "0a1b2c3d4e5f6071",
		Modules: []hsmpool.ModuleOptions{
			{
				Path:   "/usr/lib/softhsm/libsofthsm2.so",
				Tokens: []hsmpool.TokenSelector{{Label: "a"}, {Serial: "1234"}},
				PIN:    hsmpool.PINSource{File: filepath.Join(dir, "softhsm/user.pin")},
			},
			{Path: "/opt/vendor/lib.so", PIN: hsmpool.PINSource{Env: "VENDOR_PIN"}},
		},
	}
	if !reflect.DeepEqual(o, want) {
		t.Errorf("PoolOptions:\n got %+v\nwant %+v", o, want)
	}
	if got, want := os.Getenv("SOFTHSM2_CONF"), filepath.Join(dir, "softhsm/softhsm2.conf"); got != want {
		t.Errorf("SOFTHSM2_CONF = %q, want %q (resolved against the data folder)", got, want)
	}
	if got := os.Getenv("OTHER"); got != "plain/value" {
		t.Errorf("OTHER = %q, want it unchanged", got)
	}
}

func TestGatewayOptionsMapsEveryKey(t *testing.T) {
	c, err := Parse([]byte(full))
	if err != nil {
		t.Fatal(err)
	}
	o, err := c.GatewayOptions()
	if err != nil {
		t.Fatal(err)
	}
	want := GatewayOptions{
		Listen:         "[::1]:9443",
		Region:         "eu-west-3",
		Account:        "123456789012",
		Hosts:          []string{"kms.example.com", "*.kms.example.com", "10.0.0.7", "::1"},
		MinTLS:         tls.VersionTLS12,
		RequestTimeout: 3 * time.Second,
		MaxInFlight:    64,
		ShutdownGrace:  time.Minute,
	}
	if !reflect.DeepEqual(o, want) {
		t.Errorf("GatewayOptions:\n got %+v\nwant %+v", o, want)
	}
}

func TestGatewayDefaults(t *testing.T) {
	for name, text := range map[string]string{
		"no section":    "",
		"empty section": "[gateway]\n",
		"zero values":   "[gateway]\nlisten = \"\"\nhosts = []\nmax_in_flight = 0\nrequest_timeout = \"0s\"\n",
	} {
		t.Run(name, func(t *testing.T) {
			c, err := Parse([]byte(text + "\n[[pool.modules]]\npath = \"/lib.so\"\npin_env = \"P\"\n"))
			if err != nil {
				t.Fatal(err)
			}
			o, err := c.GatewayOptions()
			if err != nil {
				t.Fatal(err)
			}
			want := GatewayOptions{
				Listen:         "127.0.0.1:8443",
				Region:         "us-east-1",
				Account:        "111122223333",
				Hosts:          []string{"localhost", "127.0.0.1", "::1"},
				MinTLS:         tls.VersionTLS13,
				RequestTimeout: 10 * time.Second,
				MaxInFlight:    1024,
				ShutdownGrace:  30 * time.Second,
			}
			if !reflect.DeepEqual(o, want) {
				t.Errorf("GatewayOptions:\n got %+v\nwant %+v", o, want)
			}
		})
	}
	// The defaults are handed out as copies.
	DefaultHosts()[0] = "changed"
	if DefaultHosts()[0] != "localhost" {
		t.Error("DefaultHosts returned shared storage")
	}
}

func TestCheckListen(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:8443", ":8443", "0.0.0.0:443", "[::]:8443", "[::1]:0", "localhost:8443", "kms.example.com:65535", "[fe80::1%eth0]:8443"} {
		if err := CheckListen(ok); err != nil {
			t.Errorf("CheckListen(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "8443", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:https", "::1:8443", "bad host:1", "-x:1", "1.2.3:8443"} {
		if err := CheckListen(bad); err == nil {
			t.Errorf("CheckListen(%q) accepted", bad)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, full)
	c, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	c.Dir = out
	if err := c.Write(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(Path(out))
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o600 {
		t.Errorf("written file mode %o, want 600", m)
	}
	b, err := os.ReadFile(Path(out))
	if err != nil {
		t.Fatal(err)
	}
	if want := `tokens = [{label = "a"}, {serial = "1234"}]`; !strings.Contains(string(b), want) {
		t.Errorf("tokens are not written inline as %s:\n%s", want, b)
	}
	again, err := Load(out)
	if err != nil {
		b, _ := os.ReadFile(Path(out))
		t.Fatalf("reload: %v\n%s", err, b)
	}
	if !reflect.DeepEqual(again, c) {
		t.Errorf("round trip changed the configuration:\n got %+v\nwant %+v", again, c)
	}
	// No temporary file is left behind.
	entries, _ := os.ReadDir(out)
	if len(entries) != 1 {
		t.Errorf("data folder holds %d entries after Write, want 1", len(entries))
	}
}

func TestMinimalUsesDefaults(t *testing.T) {
	c, err := Parse([]byte("[[pool.modules]]\npath = \"/lib.so\"\npin_env = \"P\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	o, err := c.PoolOptions(nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.OpTimeout != 0 || o.SessionsPerSlot != 0 || len(o.Modules[0].Tokens) != 0 {
		t.Errorf("absent keys should stay zero (hsmpool's defaults): %+v", o)
	}
}

func TestMissingFile(t *testing.T) {
	_, err := Load(t.TempDir())
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want fs.ErrNotExist", err)
	}
}

func TestRejects(t *testing.T) {
	module := "\n[[pool.modules]]\npath = \"/lib.so\"\npin_env = \"P\"\n"
	for _, tc := range []struct {
		name, text, want string
	}{
		{"unknown pool key", "[pool]\nop_timout = \"2s\"\n" + module, "pool.op_timout"},
		{"unknown section", "[server]\nport = 1\n" + module, "server"},
		{"unknown module key", module + "pin = \"1234\"\n", "pool.modules.pin"},
		{"unknown token key", module + "tokens = [{name = \"x\"}]\n", "pool.modules.tokens.name"},
		{"bare number duration", "[pool]\nop_timeout = 2\n" + module, "want a number with a unit"},
		{"unitless duration", "[pool]\nop_timeout = \"2\"\n" + module, "want a number with a unit"},
		{"bad duration", "[pool]\nprobe_interval = \"soon\"\n" + module, "soon"},
		{"negative duration", "[pool]\nkeygen_timeout = \"-1s\"\n" + module, "negative"},
		{"negative sessions", "[pool]\nsessions_per_slot = -1\n" + module, "sessions_per_slot"},
		{"bad check value", "[pool]\ndomain_key_check = \"xyz\"\n" + module, "domain_key_check"},
		{"no module", "[pool]\nop_timeout = \"2s\"\n", "at least one"},
		{"no path", "[[pool.modules]]\npin_env = \"P\"\n", "path is required"},
		{"no PIN", "[[pool.modules]]\npath = \"/lib.so\"\n", "pin_file or pin_env is required"},
		{"two PINs", module + "pin_file = \"f\"\n", "not both"},
		{"token with both", module + "tokens = [{label = \"a\", serial = \"1\"}]\n", "exactly one of label or serial"},
		{"empty token", module + "tokens = [{}]\n", "exactly one of label or serial"},
		{"not TOML", "[pool\n", "toml"},
		{"unknown gateway key", "[gateway]\nport = 8443\n" + module, "gateway.port"},
		{"listen without port", "[gateway]\nlisten = \"127.0.0.1\"\n" + module, "gateway.listen"},
		{"listen bad port", "[gateway]\nlisten = \"127.0.0.1:99999\"\n" + module, "the port must be a number"},
		{"listen not a string", "[gateway]\nlisten = 8443\n" + module, "listen"},
		{"region upper case", "[gateway]\nregion = \"US-EAST-1\"\n" + module, "gateway.region"},
		{"region with slash", "[gateway]\nregion = \"us/east\"\n" + module, "gateway.region"},
		{"account short", "[gateway]\naccount = \"12345\"\n" + module, "gateway.account \"12345\": want exactly 12 digits"},
		{"account letters", "[gateway]\naccount = \"11112222333a\"\n" + module, "want exactly 12 digits"},
		{"account number", "[gateway]\naccount = 111122223333\n" + module, "account"},
		{"host with space", "[gateway]\nhosts = [\"my host\"]\n" + module, "gateway.hosts[0]"},
		{"host with zone", "[gateway]\nhosts = [\"fe80::1%eth0\"]\n" + module, "zone"},
		{"host digits", "[gateway]\nhosts = [\"localhost\", \"1.2.3\"]\n" + module, "gateway.hosts[1]"},
		{"host twice", "[gateway]\nhosts = [\"localhost\", \"LOCALHOST\"]\n" + module, "listed twice"},
		{"hosts not a list", "[gateway]\nhosts = \"localhost\"\n" + module, "hosts"},
		{"min_tls 1.1", "[gateway]\nmin_tls = \"1.1\"\n" + module, "gateway.min_tls \"1.1\""},
		{"min_tls number", "[gateway]\nmin_tls = 1.3\n" + module, "min_tls"},
		{"request_timeout bare", "[gateway]\nrequest_timeout = 10\n" + module, "want a number with a unit"},
		{"shutdown_grace negative", "[gateway]\nshutdown_grace = \"-1s\"\n" + module, "negative"},
		{"max_in_flight negative", "[gateway]\nmax_in_flight = -5\n" + module, "gateway.max_in_flight is -5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.text))
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestLoadErrorNamesFile(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "[pool]\nbogus = 1\n")
	_, err := Load(dir)
	if err == nil || !strings.Contains(err.Error(), Path(dir)) {
		t.Fatalf("error %v does not name the file", err)
	}
}

func TestExists(t *testing.T) {
	dir := t.TempDir()
	if ok, err := Exists(dir); ok || err != nil {
		t.Fatalf("empty folder: Exists = %v, %v", ok, err)
	}
	writeFile(t, dir, "")
	if ok, err := Exists(dir); !ok || err != nil {
		t.Fatalf("after writing: Exists = %v, %v", ok, err)
	}
}

func TestWriteRefusesInvalid(t *testing.T) {
	c := &Config{Dir: t.TempDir()}
	if err := c.Write(); err == nil {
		t.Fatal("wrote a configuration without modules")
	}
	if _, err := os.Stat(Path(c.Dir)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a refused Write left a file: %v", err)
	}
}
