// Package config reads and writes the gateway's configuration file,
// <data>/hsmgate.toml, and turns it into the options of the packages it
// configures: hsmpool.Options for the [pool] section, GatewayOptions
// (the gateway's listener, identity and limits) for the [gateway] section,
// and AttestOptions (the TPM, and the modules' sealed PINs) for [attest].
//
// The file is TOML. Every key is documented, with a commented example, in
// docs/configuration.md. Loading is strict: a key this package does not know
// is an error rather than silently ignored, so that a misspelt setting (say
// "op_timout") can't leave a default in force unnoticed.
//
// Paths in the file may be relative. They are resolved against the data
// folder the file was loaded from, never against the working directory, so
// that the same data folder works whoever starts the gateway and from
// where. The Config keeps them as written, so that Write puts back what Load
// read.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/hsmgate/hsmgate/attest"
	"github.com/hsmgate/hsmgate/hsmpool"
)

// FileName is the name of the configuration file inside the data folder.
const FileName = "hsmgate.toml"

// Config is the whole configuration file.
type Config struct {
	// Dir is the data folder the file lives in; relative paths in the file
	// resolve against it. It is not stored in the file: Load sets it, and
	// Write writes to Dir/hsmgate.toml.
	Dir string `toml:"-"`

	// Gateway is the [gateway] section: where the gateway listens, the
	// identity it answers with, and its limits.
	Gateway Gateway `toml:"gateway"`

	// Pool is the [pool] section: the PKCS#11 slots and how they are used.
	Pool Pool `toml:"pool"`

	// XKS is the optional [xks] section: external key stores served to
	// AWS KMS (docs/xks.md).
	XKS *XKS `toml:"xks,omitempty"`

	// Attest is the optional [attest] section: TPM measured boot,
	// attestation and sealed PINs (docs/attestation.md). Absent means off.
	Attest *Attest `toml:"attest,omitempty"`

	// Quorum is the optional [quorum] section: the officer quorum's scope
	// (docs/quorum.md). `hsmgate quorum init` installs it with the first
	// quorum set; proposals must name this cluster and target.
	Quorum *Quorum `toml:"quorum,omitempty"`

	// Images is the optional [images] section: signed firmware images
	// (docs/images.md). Absent means the gateway has no image store, and
	// the image measured is the PKCS#11 modules.
	Images *Images `toml:"images,omitempty"`

	// Cluster is the optional [cluster] section: this gateway as a node of
	// a cluster (cluster.go; docs/cluster.md). Absent means a single
	// gateway.
	Cluster *Cluster `toml:"cluster,omitempty"`
}

// Images is the [images] section.
type Images struct {
	// Target is this appliance's hardware target: images for another are
	// refused.
	Target string `toml:"target"`
}

// Quorum is the [quorum] section.
type Quorum struct {
	// ClusterID is the cluster id proposals must name.
	ClusterID string `toml:"cluster_id,omitempty"`
	// Target is this gateway's name in proposals.
	Target string `toml:"target,omitempty"`
}

// Attest modes ([attest] mode).
const (
	// AttestOff: no TPM; nothing is measured or sealed (the default).
	AttestOff = "off"
	// AttestSwtpm: a software TPM (swtpm): the gateway's own, started by
	// hsmgate with its state in the data folder, or, with socket set, an
	// external one.
	AttestSwtpm = "swtpm"
	// AttestDevice: a TPM character device, /dev/tpmrm0 by default.
	AttestDevice = "device"
)

// DefaultAttestStateDir is [attest] state_dir's default, relative to the
// data folder.
const DefaultAttestStateDir = "attest"

// Attest is the [attest] section.
type Attest struct {
	// Mode is AttestOff (also when empty), AttestSwtpm or AttestDevice.
	Mode string `toml:"mode,omitempty"`
	// Device is the TPM device of mode "device"; default /dev/tpmrm0.
	Device string `toml:"device,omitempty"`
	// Socket is the data socket of an external swtpm (mode "swtpm"); empty
	// means hsmgate runs its own swtpm with its state in StateDir/swtpm.
	Socket string `toml:"socket,omitempty"`
	// Swtpm is the swtpm executable of the embedded swtpm (absolute, or
	// relative to the data folder); empty means the one on PATH.
	Swtpm string `toml:"swtpm,omitempty"`
	// StateDir holds the measurement event log, the sealed PINs and the
	// embedded swtpm's state; default "attest" in the data folder.
	StateDir string `toml:"state_dir,omitempty"`
	// PCRImage, PCRBinary and PCRConfig allocate the measurement PCRs (all
	// three or none; default 12, 13 and 15).
	PCRImage  int `toml:"pcr_image,omitzero"`
	PCRBinary int `toml:"pcr_binary,omitzero"`
	PCRConfig int `toml:"pcr_config,omitzero"`
}

// AttestOptions are the [attest] section's values with defaults filled in
// and paths resolved against the data folder.
type AttestOptions struct {
	// Mode is AttestOff, AttestSwtpm or AttestDevice (never empty).
	Mode string
	// Device is the TPM device (mode "device").
	Device string
	// Socket is an external swtpm's data socket; empty with mode "swtpm"
	// means the embedded swtpm.
	Socket string
	// Swtpm is the embedded swtpm's executable ("" to look it up in PATH).
	Swtpm string
	// StateDir is the attestation state folder.
	StateDir string
	// PCRs is the PCR allocation (attest.DefaultPCRs unless configured).
	PCRs attest.PCRAllocation
	// SealedPINs has one entry per [[pool.modules]] entry: the resolved
	// pin_sealed path, or "" where the module's PIN is not sealed.
	SealedPINs []string
}

// On reports whether a TPM is used.
func (o AttestOptions) On() bool { return o.Mode != AttestOff }

// Embedded reports whether hsmgate runs its own swtpm.
func (o AttestOptions) Embedded() bool { return o.Mode == AttestSwtpm && o.Socket == "" }

// AttestOptions returns the [attest] section with the defaults applied.
func (c *Config) AttestOptions() (AttestOptions, error) {
	if err := c.Validate(); err != nil {
		return AttestOptions{}, fmt.Errorf("configuration: %w", err)
	}
	a := Attest{}
	if c.Attest != nil {
		a = *c.Attest
	}
	o := AttestOptions{
		Mode:     orDefault(a.Mode, AttestOff),
		Swtpm:    c.resolve(a.Swtpm),
		StateDir: c.resolve(orDefault(a.StateDir, DefaultAttestStateDir)),
		PCRs:     attest.DefaultPCRs,
	}
	switch o.Mode {
	case AttestDevice:
		o.Device = c.resolve(orDefault(a.Device, attest.DefaultDevice))
	case AttestSwtpm:
		o.Socket = c.resolve(a.Socket)
	}
	if a.PCRImage != 0 {
		o.PCRs = attest.PCRAllocation{Image: a.PCRImage, Binary: a.PCRBinary, Config: a.PCRConfig}
	}
	for _, m := range c.Pool.Modules {
		o.SealedPINs = append(o.SealedPINs, c.resolve(m.PINSealed))
	}
	return o, nil
}

// validate checks the [attest] section.
func (a *Attest) validate() []error {
	var errs []error
	switch a.Mode {
	case "", AttestOff, AttestSwtpm, AttestDevice:
	default:
		return []error{fmt.Errorf("attest.mode %q: want %q (the default), %q or %q", a.Mode, AttestOff, AttestSwtpm, AttestDevice)}
	}
	if a.Device != "" && a.Mode != AttestDevice {
		errs = append(errs, fmt.Errorf("attest.device is set, but attest.mode is not %q", AttestDevice))
	}
	if a.Socket != "" && a.Mode != AttestSwtpm {
		errs = append(errs, fmt.Errorf("attest.socket is set, but attest.mode is not %q", AttestSwtpm))
	}
	if a.Swtpm != "" && (a.Mode != AttestSwtpm || a.Socket != "") {
		errs = append(errs, fmt.Errorf("attest.swtpm is the embedded swtpm's executable: it needs attest.mode = %q and no attest.socket", AttestSwtpm))
	}
	if a.PCRImage != 0 || a.PCRBinary != 0 || a.PCRConfig != 0 {
		alloc := attest.PCRAllocation{Image: a.PCRImage, Binary: a.PCRBinary, Config: a.PCRConfig}
		if err := alloc.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("attest.pcr_image, pcr_binary, pcr_config (set all three, or none for 12, 13, 15): %w", err))
		}
	}
	return errs
}

// XKS is the [xks] section.
type XKS struct {
	// FleetSize is the number of gateways serving the stores (reported to
	// KMS by GetHealthStatus); 0 means 1.
	FleetSize int `toml:"fleet_size,omitzero"`
	// Timeout bounds one XKS request's work; 0 means 2s.
	Timeout Duration `toml:"timeout,omitempty"`
	// Stores are the external key stores, one [[xks.stores]] table each.
	Stores []XKSStore `toml:"stores"`
}

// XKSStore is one [[xks.stores]] table. Its credentials are kept in the
// keystore (hsmgate xks credential new), never in this file.
type XKSStore struct {
	Name        string   `toml:"name"`
	Prefix      string   `toml:"prefix,omitempty"`
	Regions     []string `toml:"regions,omitempty"`
	MaxInFlight int      `toml:"max_in_flight,omitzero"`
	RateLimit   float64  `toml:"rate_limit,omitzero"`
	Burst       int      `toml:"burst,omitzero"`
}

// Defaults of the [gateway] section, used where a key is absent or zero.
const (
	DefaultListen         = "127.0.0.1:8443"
	DefaultRegion         = "us-east-1"
	DefaultAccount        = "111122223333"
	DefaultMinTLS         = "1.3"
	DefaultRequestTimeout = 10 * time.Second
	DefaultMaxInFlight    = 1024
	DefaultShutdownGrace  = 30 * time.Second
)

// validStoreName checks an external key store's name: it names the
// store's credential holder (principal "xks.<name>") and its audit records.
func validStoreName(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// DefaultHosts are the names and addresses the server certificate covers
// when [gateway] hosts is absent or empty: this machine only.
func DefaultHosts() []string { return []string{"localhost", "127.0.0.1", "::1"} }

// Gateway is the [gateway] section. A zero or absent value means the
// default (the Default… constants and DefaultHosts).
type Gateway struct {
	// Listen is the TCP address the gateway serves HTTPS on, host:port.
	Listen string `toml:"listen,omitempty"`
	// Region is the AWS region the gateway answers as: SigV4 clients sign
	// for it and key ARNs name it.
	Region string `toml:"region,omitempty"`
	// Account is the 12-digit account id in key ARNs.
	Account string `toml:"account,omitempty"`
	// Hosts are the DNS names and IP addresses of the server certificate.
	// `hsmgate init` issues the certificate; changing Hosts afterwards does
	// not reissue it.
	Hosts []string `toml:"hosts,omitempty"`
	// MinTLS is the lowest TLS version accepted: "1.3" or "1.2".
	MinTLS string `toml:"min_tls,omitempty"`
	// RequestTimeout bounds each request's work on the pool.
	RequestTimeout Duration `toml:"request_timeout,omitempty"`
	// MaxInFlight is how many requests are served at once; more are shed
	// with ThrottlingException.
	MaxInFlight int `toml:"max_in_flight,omitzero"`
	// ShutdownGrace is how long requests in flight may take to finish once
	// the gateway is asked to stop.
	ShutdownGrace Duration `toml:"shutdown_grace,omitempty"`
}

// GatewayOptions are the [gateway] section's values with every default
// filled in and the TLS version decoded.
type GatewayOptions struct {
	Listen         string
	Region         string
	Account        string
	Hosts          []string
	MinTLS         uint16 // tls.VersionTLS12 or tls.VersionTLS13
	RequestTimeout time.Duration
	MaxInFlight    int
	ShutdownGrace  time.Duration
}

// TLS protocol versions, as crypto/tls numbers them (kept here so that this
// package need not import crypto/tls for two constants).
const (
	versionTLS12 = 0x0303
	versionTLS13 = 0x0304
)

// GatewayOptions returns the [gateway] section with the defaults applied.
func (c *Config) GatewayOptions() (GatewayOptions, error) {
	if err := c.Validate(); err != nil {
		return GatewayOptions{}, fmt.Errorf("configuration: %w", err)
	}
	g := c.Gateway
	o := GatewayOptions{
		Listen:         orDefault(g.Listen, DefaultListen),
		Region:         orDefault(g.Region, DefaultRegion),
		Account:        orDefault(g.Account, DefaultAccount),
		Hosts:          append([]string(nil), g.Hosts...),
		MinTLS:         versionTLS13,
		RequestTimeout: orDefault(g.RequestTimeout.Duration, DefaultRequestTimeout),
		MaxInFlight:    orDefault(g.MaxInFlight, DefaultMaxInFlight),
		ShutdownGrace:  orDefault(g.ShutdownGrace.Duration, DefaultShutdownGrace),
	}
	if len(o.Hosts) == 0 {
		o.Hosts = DefaultHosts()
	}
	if g.MinTLS == "1.2" {
		o.MinTLS = versionTLS12
	}
	return o, nil
}

// orDefault returns v, or def when v is the zero value.
func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// CheckListen checks a listen address: host:port, the host an IP address,
// a host name or empty (every interface), the port a number up to 65535
// (0 lets the system choose one).
func CheckListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port (an IPv6 address goes in brackets, as in \"[::1]:8443\")", addr)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("%q: the port must be a number from 0 to 65535", addr)
	}
	if host == "" {
		return nil
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if err := checkHostName(host); err != nil {
		return fmt.Errorf("%q: %w", addr, err)
	}
	return nil
}

// CheckHost checks a name or address for the server certificate: an IP
// address without a zone, or a DNS name (optionally with a leading "*."
// wildcard label).
func CheckHost(h string) error {
	if a, err := netip.ParseAddr(h); err == nil {
		if a.Zone() != "" {
			return fmt.Errorf("%q: an IP address in a certificate can't have a zone", h)
		}
		return nil
	}
	name := strings.TrimPrefix(h, "*.")
	if err := checkHostName(name); err != nil {
		return fmt.Errorf("%q: %w", h, err)
	}
	return nil
}

// checkHostName checks a DNS name: dot-separated labels of 1 to 63
// letters, digits, '-' and '_', not starting or ending with '-', at most
// 253 bytes, not all digits (a mistyped IP address).
func checkHostName(name string) error {
	if name == "" || len(name) > 253 {
		return errors.New("not an IP address, and not a host name of 1 to 253 characters")
	}
	allDigits := true
	for _, l := range strings.Split(name, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return errors.New("not an IP address, and not a valid host name (labels of 1 to 63 characters, not starting or ending with '-')")
		}
		for i := 0; i < len(l); i++ {
			switch c := l[i]; {
			case c >= '0' && c <= '9':
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '-', c == '_':
				allDigits = false
			default:
				return fmt.Errorf("not an IP address, and %q is not allowed in a host name", c)
			}
		}
	}
	if allDigits {
		return errors.New("not a valid IP address")
	}
	return nil
}

// validate checks the [gateway] section.
func (g *Gateway) validate() []error {
	var errs []error
	if g.Listen != "" {
		if err := CheckListen(g.Listen); err != nil {
			errs = append(errs, fmt.Errorf("gateway.listen: %w", err))
		}
	}
	if g.Region != "" && !validRegion(g.Region) {
		errs = append(errs, fmt.Errorf("gateway.region %q: want an AWS-style region name of lower-case letters, digits and '-', such as %q", g.Region, DefaultRegion))
	}
	if g.Account != "" && !validAccount(g.Account) {
		errs = append(errs, fmt.Errorf("gateway.account %q: want exactly 12 digits, such as %q", g.Account, DefaultAccount))
	}
	seen := map[string]bool{}
	for i, h := range g.Hosts {
		if err := CheckHost(h); err != nil {
			errs = append(errs, fmt.Errorf("gateway.hosts[%d]: %w", i, err))
		} else if seen[strings.ToLower(h)] {
			errs = append(errs, fmt.Errorf("gateway.hosts[%d]: %q is listed twice", i, h))
		}
		seen[strings.ToLower(h)] = true
	}
	switch g.MinTLS {
	case "", "1.2", "1.3":
	default:
		errs = append(errs, fmt.Errorf("gateway.min_tls %q: want \"1.3\" (the default) or \"1.2\"", g.MinTLS))
	}
	if g.MaxInFlight < 0 {
		errs = append(errs, fmt.Errorf("gateway.max_in_flight is %d; it must be positive (or 0 for the default)", g.MaxInFlight))
	}
	return errs
}

// validRegion accepts 1 to 32 lower-case letters, digits and '-', starting
// with a letter and not ending with '-' (every AWS region has this form;
// SigV4 scopes can't hold '/' or spaces).
func validRegion(r string) bool {
	if len(r) > 32 || r[0] < 'a' || r[0] > 'z' || r[len(r)-1] == '-' {
		return false
	}
	for i := 0; i < len(r); i++ {
		if c := r[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func validAccount(a string) bool {
	if len(a) != 12 {
		return false
	}
	for i := 0; i < len(a); i++ {
		if a[i] < '0' || a[i] > '9' {
			return false
		}
	}
	return true
}

// Pool is the [pool] section. Each field maps onto the hsmpool.Options field
// of the same meaning; a zero or absent value means hsmpool's default.
type Pool struct {
	SessionsPerSlot         int      `toml:"sessions_per_slot,omitzero"`
	OpTimeout               Duration `toml:"op_timeout,omitempty"`
	KeyGenTimeout           Duration `toml:"keygen_timeout,omitempty"`
	ProbeInterval           Duration `toml:"probe_interval,omitempty"`
	QuarantineProbeInterval Duration `toml:"quarantine_probe_interval,omitempty"`
	KeyCacheSize            int      `toml:"key_cache_size,omitzero"`
	DomainKeyLabel          string   `toml:"domain_key_label,omitempty"`
	// DomainKeyCheck is the check value of the domain key recorded by
	// `hsmgate init`. A slot whose domain key differs is refused.
	DomainKeyCheck string `toml:"domain_key_check,omitempty"`
	// InlineCalls runs PKCS#11 calls on the requesting goroutine (faster
	// on SoftHSM; a hung HSM call then holds its caller).
	InlineCalls bool `toml:"inline_calls,omitempty"`

	// Modules are the [[pool.modules]] entries, one per PKCS#11 library.
	Modules []Module `toml:"modules"`
}

// Module is one [[pool.modules]] entry.
type Module struct {
	// Path of the PKCS#11 shared library (absolute, or relative to the data
	// folder).
	Path string `toml:"path"`
	// Tokens to use; empty means every initialised token of the module.
	Tokens []Token `toml:"tokens,omitempty"`
	// PINFile is a file holding the user PIN shared by the module's tokens.
	// A plaintext PIN file is a development convenience; see
	// docs/configuration.md.
	PINFile string `toml:"pin_file,omitempty"`
	// PINEnv names an environment variable holding the user PIN.
	PINEnv string `toml:"pin_env,omitempty"`
	// PINSealed is a file holding the PIN sealed to the TPM's PCRs
	// (`hsmgate attest seal-pins` writes it; [attest] must be on). When it
	// is set, `hsmgate serve` takes the PIN only from it, by unsealing;
	// PINFile or PINEnv is then where seal-pins (and the commands that open
	// the pool without serving) read the PIN.
	PINSealed string `toml:"pin_sealed,omitempty"`
	// Env is set in the process environment before the module is loaded
	// (many modules read their own configuration file from a variable, as
	// SoftHSM2 reads SOFTHSM2_CONF). A value starting with "./" or "../" is
	// a path relative to the data folder.
	Env map[string]string `toml:"env,omitempty"`
}

// Token selects one token by label or by serial number, never both.
type Token struct {
	Label  string `toml:"label,omitempty"`
	Serial string `toml:"serial,omitempty"`
}

// MarshalTOML writes the token as an inline table, {label = "…"}, so that a
// module's tokens read as one line rather than one [[table]] each.
func (t Token) MarshalTOML() ([]byte, error) {
	type plain Token // without this method, so Marshal doesn't recurse
	b, err := toml.Marshal(plain(t))
	if err != nil {
		return nil, err
	}
	// One "key = value" line per set field; TOML strings never hold a raw
	// newline, so splitting on it is safe.
	return []byte("{" + strings.Join(strings.Split(strings.TrimSpace(string(b)), "\n"), ", ") + "}"), nil
}

// Duration is a time.Duration written in the file as a Go duration string
// such as "2s" or "1m30s". A bare number is refused: it would otherwise be
// taken as nanoseconds, which is never what a person means.
type Duration struct{ time.Duration }

// UnmarshalText parses a duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	s := string(b)
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: want a number with a unit, such as \"2s\" or \"500ms\"", s)
	}
	if v < 0 {
		return fmt.Errorf("duration %q is negative", s)
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration in the form UnmarshalText reads.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// Path returns the configuration file's path inside dataDir.
func Path(dataDir string) string { return filepath.Join(dataDir, FileName) }

// Load reads and checks <dataDir>/hsmgate.toml. A missing file gives an
// error that matches fs.ErrNotExist.
func Load(dataDir string) (*Config, error) {
	path := Path(dataDir)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read configuration: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("configuration %s: %w", path, err)
	}
	c.Dir = dataDir
	return c, nil
}

// Parse decodes and checks a configuration. Its Dir is left empty.
func Parse(b []byte) (*Config, error) {
	var c Config
	md, err := toml.Decode(string(b), &c)
	if err != nil {
		return nil, err
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("unknown key(s) %s (see docs/configuration.md for the keys hsmgate knows)", strings.Join(keys, ", "))
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate checks what the TOML types alone can't: required keys, keys that
// exclude each other, and values out of range.
func (c *Config) Validate() error {
	p := &c.Pool
	errs := c.Gateway.validate()
	attestOn := false
	if c.Attest != nil {
		errs = append(errs, c.Attest.validate()...)
		attestOn = c.Attest.Mode != "" && c.Attest.Mode != AttestOff
	}
	if c.Cluster != nil {
		errs = append(errs, c.Cluster.validate()...)
	}
	if c.XKS != nil {
		names := map[string]bool{}
		for i, st := range c.XKS.Stores {
			switch {
			case !validStoreName(st.Name):
				errs = append(errs, fmt.Errorf("xks.stores[%d].name %q: use 1 to 32 of a-z, 0-9 and -", i, st.Name))
			case names[st.Name]:
				errs = append(errs, fmt.Errorf("xks.stores[%d].name %q is used twice", i, st.Name))
			}
			names[st.Name] = true
			if st.MaxInFlight < 0 || st.RateLimit < 0 || st.Burst < 0 {
				errs = append(errs, fmt.Errorf("xks.stores[%d]: max_in_flight, rate_limit and burst can't be negative", i))
			}
		}
		if c.XKS.FleetSize < 0 {
			errs = append(errs, fmt.Errorf("xks.fleet_size is %d; it must be positive (or 0 for 1)", c.XKS.FleetSize))
		}
	}
	if c.Images != nil && strings.TrimSpace(c.Images.Target) == "" {
		errs = append(errs, errors.New("images.target is required in an [images] section: the hardware target images must be built for"))
	}
	if p.SessionsPerSlot < 0 {
		errs = append(errs, fmt.Errorf("pool.sessions_per_slot is %d; it must be positive (or 0 for the default)", p.SessionsPerSlot))
	}
	if p.KeyCacheSize < 0 {
		errs = append(errs, fmt.Errorf("pool.key_cache_size is %d; it must be positive (or 0 for the default)", p.KeyCacheSize))
	}
	if p.DomainKeyCheck != "" {
		if _, err := hsmpool.ParseKCV(p.DomainKeyCheck); err != nil {
			errs = append(errs, fmt.Errorf("pool.domain_key_check: %w", err))
		}
	}
	if len(p.Modules) == 0 {
		errs = append(errs, errors.New("pool.modules: at least one [[pool.modules]] entry is required"))
	}
	for i, m := range p.Modules {
		where := fmt.Sprintf("pool.modules[%d]", i)
		if m.Path == "" {
			errs = append(errs, fmt.Errorf("%s: path is required", where))
		}
		switch {
		case m.PINFile != "" && m.PINEnv != "":
			errs = append(errs, fmt.Errorf("%s: set pin_file or pin_env, not both", where))
		case m.PINFile == "" && m.PINEnv == "":
			errs = append(errs, fmt.Errorf("%s: pin_file or pin_env is required", where))
		}
		if m.PINSealed != "" && !attestOn {
			errs = append(errs, fmt.Errorf("%s: pin_sealed needs a TPM: set [attest] mode", where))
		}
		for j, t := range m.Tokens {
			if (t.Label == "") == (t.Serial == "") {
				errs = append(errs, fmt.Errorf("%s.tokens[%d]: give exactly one of label or serial", where, j))
			}
		}
		for k := range m.Env {
			if k == "" || strings.ContainsAny(k, "=\x00") {
				errs = append(errs, fmt.Errorf("%s.env: %q is not a valid environment variable name", where, k))
			}
		}
	}
	return errors.Join(errs...)
}

// PoolOptions returns the hsmpool.Options the [pool] section describes, with
// relative paths resolved against the data folder. It also sets each
// module's env table in the process environment (os.Setenv), since a module
// reads its variables when the pool loads it: call it before hsmpool.Open,
// and don't use two configurations that set the same variable differently
// in one process.
func (c *Config) PoolOptions(logger *slog.Logger) (hsmpool.Options, error) {
	if err := c.Validate(); err != nil {
		return hsmpool.Options{}, fmt.Errorf("configuration: %w", err)
	}
	p := c.Pool
	o := hsmpool.Options{
		SessionsPerSlot:         p.SessionsPerSlot,
		OpTimeout:               p.OpTimeout.Duration,
		KeyGenTimeout:           p.KeyGenTimeout.Duration,
		ProbeInterval:           p.ProbeInterval.Duration,
		QuarantineProbeInterval: p.QuarantineProbeInterval.Duration,
		KeyCacheSize:            p.KeyCacheSize,
		InlineCalls:             p.InlineCalls,
		DomainKeyLabel:          p.DomainKeyLabel,
		DomainKeyCheck:          p.DomainKeyCheck,
		Logger:                  logger,
	}
	for _, m := range p.Modules {
		for k, v := range m.Env {
			if strings.HasPrefix(v, "./") || strings.HasPrefix(v, "../") {
				v = c.resolve(v)
			}
			if err := os.Setenv(k, v); err != nil {
				return hsmpool.Options{}, fmt.Errorf("set environment variable %s for module %s: %w", k, m.Path, err)
			}
		}
		mo := hsmpool.ModuleOptions{Path: c.resolve(m.Path), PIN: hsmpool.PINSource{Env: m.PINEnv}}
		if m.PINFile != "" {
			mo.PIN.File = c.resolve(m.PINFile)
		}
		for _, t := range m.Tokens {
			mo.Tokens = append(mo.Tokens, hsmpool.TokenSelector{Label: t.Label, Serial: t.Serial})
		}
		o.Modules = append(o.Modules, mo)
	}
	return o, nil
}

// resolve makes a relative path relative to the data folder.
func (c *Config) resolve(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.Dir, p)
}

// header opens every file Write produces.
const header = `# hsmgate configuration. Every key is described in docs/configuration.md.
# Relative paths are relative to this file's folder (the data folder).
# hsmgate rewrites this file (hsmgate init does), so comments here are not kept.

`

// Write checks c and writes it to Dir/hsmgate.toml, mode 0600. It writes a
// temporary file and renames it over the old one, so that a crash leaves
// either the old file or the new one, never half of one.
func (c *Config) Write() error {
	if c.Dir == "" {
		return errors.New("write configuration: no data folder set (Config.Dir)")
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("write configuration: %w", err)
	}
	var buf bytes.Buffer
	buf.WriteString(header)
	enc := toml.NewEncoder(&buf)
	enc.Indent = ""
	if err := enc.Encode(c); err != nil {
		return fmt.Errorf("write configuration: encode: %w", err)
	}
	tmp, err := os.CreateTemp(c.Dir, "."+FileName+".*")
	if err != nil {
		return fmt.Errorf("write configuration: %w", err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write configuration: %w", err)
	}
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Close()
		return fmt.Errorf("write configuration: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write configuration: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write configuration: %w", err)
	}
	if err := os.Rename(tmp.Name(), Path(c.Dir)); err != nil {
		return fmt.Errorf("write configuration: %w", err)
	}
	return nil
}

// Exists reports whether dataDir holds a configuration file.
func Exists(dataDir string) (bool, error) {
	_, err := os.Stat(Path(dataDir))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, fmt.Errorf("look for configuration: %w", err)
}
