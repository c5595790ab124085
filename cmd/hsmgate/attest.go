package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/urfave/cli/v2"

	"github.com/hsmgate/hsmgate/attest"
	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/internal/config"
	"github.com/hsmgate/hsmgate/internal/pki"
)

// The gateway's TPM (docs/attestation.md): what `hsmgate serve` measures
// and unseals at start, what it does when that fails, and the `hsmgate
// attest` commands.
//
// What is measured, in this order, before the HSM pool is opened:
//
//	image   "pkcs11-modules"  SHA-256 of the image manifest: until hsmgate
//	                          has firmware images, the PKCS#11 modules the
//	                          pool loads (each one's path and SHA-256)
//	binary  <executable path> SHA-256 of the running hsmgate executable
//	config  "hsmgate.toml"    SHA-256 of the effective configuration,
//	                          re-encoded canonically (canonicalConfig)
//
// The same function (measureBoot) computes them for `serve`, `attest
// golden` and `attest seal-pins`, which seals the PINs to the PCR values a
// boot measuring exactly these produces (attest.PredictPCRs from an empty
// log), so sealing needs no particular TPM state and may be done before
// the change it approves takes effect.

const (
	// imageManifestFormat names the stand-in image manifest's format.
	imageManifestFormat = "hsmgate-image-manifest/v0"
	// imageEventName is the name the image measurement is logged under.
	imageEventName = "pkcs11-modules"
	// unsealedPINEnv prefixes the process environment variables through
	// which serve hands unsealed PINs to the pool (hsmpool reads a PIN from
	// a file or a variable); they are unset as soon as the pool is open.
	unsealedPINEnv = "HSMGATE_UNSEALED_PIN_"
	// swtpmStartTimeout bounds the embedded swtpm's start.
	swtpmStartTimeout = 10 * time.Second
	// swtpmLockFile, in the attestation state folder, is held by the one
	// process running the embedded swtpm.
	swtpmLockFile = "swtpm.lock"
)

// imageManifest stands in for the firmware image manifest when no image is
// active: the PKCS#11 modules the pool loads, which are what the gateway
// runs its keys on.
type imageManifest struct {
	Format  string           `json:"format"`
	Note    string           `json:"note"`
	Modules []manifestModule `json:"modules"`
}

type manifestModule struct {
	Path   string          `json:"path"`
	SHA256 attest.HexBytes `json:"sha256"`
}

const manifestNote = "no firmware image is active: the image measured is the set of PKCS#11 modules the HSM pool loads"

// bootMeasurements are what a boot measures, in measurement order, and
// the image manifest (whose SHA-256 is the image digest).
type bootMeasurements struct {
	events   []attest.Event // Kind, Name and Digest set
	manifest []byte
}

// measureBoot computes the measurements of a gateway running binary ("" for
// this executable) with cfg, the effective configuration (serve's --listen
// applied).
func measureBoot(cfg *config.Config, binary string) (*bootMeasurements, error) {
	po, err := cfg.PoolOptions(slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	man := imageManifest{Format: imageManifestFormat, Note: manifestNote}
	for _, m := range po.Modules {
		d, err := fileSHA256(m.Path)
		if err != nil {
			return nil, fmt.Errorf("measure the PKCS#11 module: %w", err)
		}
		man.Modules = append(man.Modules, manifestModule{Path: m.Path, SHA256: d})
	}
	manifest, err := json.Marshal(man)
	if err != nil {
		return nil, err
	}
	imageName := imageEventName
	if img, err := activeImage(cfg); err != nil {
		return nil, err
	} else if img != nil {
		// The active firmware image is what this appliance runs.
		manifest, imageName = img.ManifestBytes, activeImageEventName(img)
	}
	if binary == "" {
		if binary, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("measure the hsmgate executable: %w", err)
		}
	}
	if binary, err = filepath.Abs(binary); err != nil {
		return nil, err
	}
	if resolved, err := filepath.EvalSymlinks(binary); err == nil {
		binary = resolved
	}
	binDigest, err := fileSHA256(binary)
	if err != nil {
		return nil, fmt.Errorf("measure the hsmgate executable: %w", err)
	}
	conf, err := canonicalConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("measure the configuration: %w", err)
	}
	imageDigest := sha256.Sum256(manifest)
	confDigest := sha256.Sum256(conf)
	return &bootMeasurements{
		events: []attest.Event{
			{Kind: attest.KindImage, Name: imageName, Digest: imageDigest[:]},
			{Kind: attest.KindBinary, Name: binary, Digest: binDigest},
			{Kind: attest.KindConfig, Name: config.FileName, Digest: confDigest[:]},
		},
		manifest: manifest,
	}, nil
}

// canonicalConfig is the configuration as measured: re-encoded from what
// was loaded (so comments, order and spacing in the file don't count), the
// data folder's path left out. It holds no secrets: PINs are only named
// (a file, a variable, a sealed file), never written in the configuration.
func canonicalConfig(cfg *config.Config) ([]byte, error) {
	var buf bytes.Buffer
	enc := toml.NewEncoder(&buf)
	enc.Indent = ""
	if err := enc.Encode(cfg); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func fileSHA256(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// predictPCRs are the PCR values a boot that measures m reaches.
func (m *bootMeasurements) predictPCRs(alloc attest.PCRAllocation) (map[int][]byte, error) {
	empty := &attest.EventLog{Format: attest.LogFormat, Hash: "sha256", PCRs: alloc, Events: []attest.Event{}}
	return attest.PredictPCRs(empty, m.events...)
}

// policy is the golden policy approving exactly m.
func (m *bootMeasurements) policy(alloc attest.PCRAllocation) goldenPolicy {
	p := goldenPolicy{PCRs: &alloc}
	for _, e := range m.events {
		switch e.Kind {
		case attest.KindImage:
			p.ImageDigests = append(p.ImageDigests, e.Digest)
		case attest.KindBinary:
			p.BinaryDigests = append(p.BinaryDigests, e.Digest)
		case attest.KindConfig:
			p.ConfigDigests = append(p.ConfigDigests, e.Digest)
		}
	}
	return p
}

// tpmHandle is an open TPM, and the embedded swtpm behind it if hsmgate
// runs its own.
type tpmHandle struct {
	*attest.TPM
	what   string        // for messages: "the TPM /dev/tpmrm0", …
	sw     *attest.Swtpm // the embedded swtpm, or nil
	lock   *os.File      // held while sw runs
	tmpDir string        // the embedded swtpm's socket folder, when temporary
}

// openTPM opens the configured TPM. For the embedded swtpm it takes the
// state folder's lock (one process at a time runs that TPM: the gateway
// while it serves, or one command) and starts swtpm, which is a TPM reset:
// its PCRs start from zero.
func openTPM(o config.AttestOptions) (_ *tpmHandle, err error) {
	h := &tpmHandle{}
	defer func() {
		if err != nil {
			h.Close()
		}
	}()
	ac := attest.Config{StateDir: o.StateDir, PCRs: o.PCRs}
	switch {
	case o.Mode == config.AttestDevice:
		ac.Device, h.what = o.Device, "the TPM "+o.Device
	case o.Socket != "":
		ac.Socket, h.what = o.Socket, "the swtpm at "+o.Socket
	default:
		state := filepath.Join(o.StateDir, "swtpm")
		h.what = "hsmgate's own swtpm (state in " + state + ")"
		if err := os.MkdirAll(o.StateDir, 0o700); err != nil {
			return nil, err
		}
		if h.lock, err = lockSwtpm(filepath.Join(o.StateDir, swtpmLockFile)); err != nil {
			return nil, err
		}
		abs, err := filepath.Abs(o.StateDir)
		if err != nil {
			return nil, err
		}
		sockDir := filepath.Join(abs, "run")
		if len(filepath.Join(sockDir, "ctrl.sock")) > 100 { // unix socket paths are short
			if sockDir, err = os.MkdirTemp("", "hsmgate-swtpm-"); err != nil {
				return nil, err
			}
			h.tmpDir = sockDir
		}
		sw, err := attest.NewSwtpm(o.Swtpm, state, sockDir)
		if err != nil {
			return nil, err
		}
		if err := sw.Start(swtpmStartTimeout); err != nil {
			return nil, err
		}
		h.sw = sw
		ac.Socket = sw.Socket
	}
	if h.TPM, err = attest.Open(ac); err != nil {
		return nil, fmt.Errorf("%s: %w", h.what, err)
	}
	return h, nil
}

// Close closes the TPM, stops the embedded swtpm and releases its lock.
func (h *tpmHandle) Close() error {
	var errs []error
	if h.TPM != nil {
		errs = append(errs, h.TPM.Close())
	}
	if h.sw != nil {
		errs = append(errs, h.sw.Stop())
	}
	if h.tmpDir != "" {
		errs = append(errs, os.RemoveAll(h.tmpDir))
	}
	if h.lock != nil {
		errs = append(errs, h.lock.Close()) // releases the flock
	}
	return errors.Join(errs...)
}

// errSwtpmBusy: another process runs the embedded swtpm.
var errSwtpmBusy = errors.New("hsmgate's own swtpm is in use by another hsmgate process (the running gateway?): stop it, then try again")

func lockSwtpm(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w (%s is locked)", errSwtpmBusy, path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}

// bootAttestation is a serving gateway's measured boot: its TPM, what it
// measured, and the PINs it unsealed (one per module, "" where the
// module's PIN is not sealed).
type bootAttestation struct {
	tpm      *tpmHandle
	meas     *bootMeasurements
	pins     []string
	unsealed int // how many PINs were unsealed
}

// attestBoot measures this boot into the TPM and unseals the sealed PINs.
// Any failure means the gateway must not open the pool: a measurement that
// differs from the one already made in this boot (attest.ErrAlreadyMeasured),
// PCRs the log does not explain (attest.ErrMeasurementState), a PIN sealed
// to other measurements (attest.ErrPCRPolicy) or by another TPM
// (attest.ErrSealedUnloadable), a TPM that can't be reached.
func attestBoot(cfg *config.Config, ao config.AttestOptions, log *slog.Logger) (b *bootAttestation, err error) {
	meas, err := measureBoot(cfg, "")
	if err != nil {
		return nil, err
	}
	h, err := openTPM(ao)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			h.Close()
		}
	}()
	for _, e := range meas.events {
		if _, err := h.Measure(e.Kind, e.Name, e.Digest); err != nil {
			if errors.Is(err, attest.ErrAlreadyMeasured) {
				return nil, fmt.Errorf("%w; a new %s is measured only after a TPM reset (a reboot; for an swtpm, its restart)", err, e.Kind)
			}
			return nil, fmt.Errorf("measure the %s into %s: %w", e.Kind, h.what, err)
		}
	}
	b = &bootAttestation{tpm: h, meas: meas, pins: make([]string, len(ao.SealedPINs))}
	for i, path := range ao.SealedPINs {
		if path == "" {
			continue
		}
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("pool.modules[%d]: the sealed PIN %s is missing: run `hsmgate attest seal-pins`", i, path)
		}
		pin, err := unsealWithNext(h.TPM, path)
		if err != nil {
			clear(b.pins)
			return nil, fmt.Errorf("pool.modules[%d]: unseal the PIN %s: %w", i, path, err)
		}
		b.pins[i] = string(pin)
		b.unsealed++
		clear(pin)
	}
	args := []any{"tpm", h.what}
	for _, e := range meas.events {
		args = append(args, e.Kind, fmt.Sprintf("%s %x", e.Name, []byte(e.Digest)))
	}
	log.Info("boot measured", args...)
	if b.unsealed > 0 {
		log.Info("HSM PINs unsealed", "modules", b.unsealed)
	} else {
		log.Warn("the HSM PINs are not sealed to the TPM: a gateway with other measurements could use the HSMs too. `hsmgate attest seal-pins` seals them")
	}
	return b, nil
}

// poolConfig is cfg with each sealed module's PIN taken from a process
// environment variable holding its unsealed PIN; restore unsets them and
// forgets the PINs, once the pool has read them.
func (b *bootAttestation) poolConfig(cfg *config.Config) (*config.Config, func()) {
	c := *cfg
	c.Pool.Modules = append([]config.Module(nil), cfg.Pool.Modules...)
	var set []string
	for i, pin := range b.pins {
		if pin == "" {
			continue
		}
		name := unsealedPINEnv + strconv.Itoa(i)
		os.Setenv(name, pin)
		set = append(set, name)
		c.Pool.Modules[i].PINFile, c.Pool.Modules[i].PINEnv = "", name
	}
	return &c, func() {
		for _, name := range set {
			os.Unsetenv(name)
		}
		clear(b.pins)
	}
}

// check is the serving gateway's readiness check: the TPM answers and its
// PCRs are still this boot's measurements.
func (b *bootAttestation) check() error {
	pcrs, err := b.tpm.PCRs()
	if err != nil {
		return fmt.Errorf("%s does not answer: %v", b.tpm.what, err)
	}
	want := b.tpm.EventLog().Replay()
	for _, p := range b.tpm.PCRAllocation().Indices() {
		if !bytes.Equal(pcrs[p], want[p]) {
			return fmt.Errorf("PCR %d of %s no longer holds this boot's measurements: the TPM was reset, or something else extended it, while the gateway ran", p, b.tpm.what)
		}
	}
	return nil
}

func (b *bootAttestation) options(tlsCert *x509.Certificate) *gateway.AttestationOptions {
	return &gateway.AttestationOptions{
		TPM:        b.tpm.TPM,
		Manifest:   b.meas.manifest,
		TLSKeyHash: gateway.TLSKeyHash(tlsCert),
		Check:      b.check,
	}
}

// serveRefusing is serve when the boot's attestation failed: the pool
// stays closed and no key is used, but the gateway stays up, answering
// /healthz, /readyz (503, with the reason) and /metrics
// (hsmgate_attestation_ok 0) until it is stopped, so that an operator and
// the monitoring see why. The gateway's TLS key is in the HSM pool, so it
// serves these over TLS with a temporary certificate made in memory
// (gateway.TemporaryCertificate), which clients verifying the gateway's
// CA reject. It returns an error once stopped: the gateway never served.
func serveRefusing(ctx context.Context, opts config.GatewayOptions, reason error, stdout io.Writer, log *slog.Logger) error {
	log.Error("refusing to serve: the boot's attestation failed, so the HSM pool stays closed; /healthz, /readyz and /metrics answer until the gateway is stopped",
		"reason", reason.Error())
	cert, err := gateway.TemporaryCertificate(opts.Hosts, time.Now())
	if err != nil {
		return fmt.Errorf("serve: refusing to serve: %w; and no temporary certificate could be made for the health endpoints: %v", reason, err)
	}
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return fmt.Errorf("serve: refusing to serve: %w; and listen on %s: %v", reason, opts.Listen, err)
	}
	log.Warn("serving the health endpoints over TLS with a temporary self-signed certificate: the gateway's TLS key is in the HSM pool, which stays closed",
		"address", ln.Addr().String())
	fmt.Fprintf(stdout, "hsmgate is NOT serving the AWS KMS API: %v\n", reason)
	fmt.Fprintf(stdout, "It answers /healthz, /readyz (503, with this reason) and /metrics on %s, with a temporary self-signed certificate, until Ctrl-C or SIGTERM.\n",
		ln.Addr().String())
	srv := &http.Server{
		Handler:           gateway.RefusalHandler(reason.Error()),
		TLSConfig:         &tls.Config{MinVersion: opts.MinTLS, Certificates: []tls.Certificate{cert}},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		// Clients that verify the CA fail every handshake: not news.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: refusing to serve: %w; and the health endpoints failed: %v", reason, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	<-errc
	log.Info("gateway stopped; it had refused to serve")
	return fmt.Errorf("serve: refused to serve: %w", reason)
}

// attestOptions loads the configuration's [attest] section for an attest
// command, which needs a TPM.
func attestOptions(dataDir, cmd string) (*config.Config, config.AttestOptions, error) {
	cfg, err := loadConfig(dataDir, cmd)
	if err != nil {
		return nil, config.AttestOptions{}, err
	}
	ao, err := cfg.AttestOptions()
	if err != nil {
		return nil, ao, fmt.Errorf("%s: %w", cmd, err)
	}
	if !ao.On() {
		return nil, ao, fmt.Errorf("%s: [attest] mode is off in %s: set mode = %q (or %q) first (docs/configuration.md)",
			cmd, config.Path(dataDir), config.AttestSwtpm, config.AttestDevice)
	}
	return cfg, ao, nil
}

// effective applies serve's --listen to cfg, as serve does before it
// measures the configuration.
func effective(cfg *config.Config, listen, cmd string) error {
	if listen == "" {
		return nil
	}
	if err := config.CheckListen(listen); err != nil {
		return fmt.Errorf("%s: --listen %w", cmd, err)
	}
	cfg.Gateway.Listen = listen
	return nil
}

// runAttestSealPINs seals each module's PIN, read from its pin_file or
// pin_env, to the PCR values a boot of binary ("" for this executable) with
// this configuration reaches, and writes it to the module's pin_sealed
// file, which it sets (in the state folder's pins/) where absent.
func runAttestSealPINs(dataDir, listen, binary string, w io.Writer, log *slog.Logger) error {
	const cmd = "attest seal-pins"
	cfg, ao, err := attestOptions(dataDir, cmd)
	if err != nil {
		return err
	}
	po, err := cfg.PoolOptions(log)
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	pins := make([][]byte, len(po.Modules))
	defer func() {
		for _, p := range pins {
			clear(p)
		}
	}()
	for i, m := range po.Modules {
		if pins[i], err = readPlainPIN(m.PIN.File, m.PIN.Env); err != nil {
			return fmt.Errorf("%s: pool.modules[%d]: %w (seal-pins reads the PIN from pin_file or pin_env)", cmd, i, err)
		}
		if len(pins[i]) > attest.MaxSealedSize {
			return fmt.Errorf("%s: pool.modules[%d]: the PIN is longer than the %d bytes a TPM seals", cmd, i, attest.MaxSealedSize)
		}
	}
	changed := false
	for i := range cfg.Pool.Modules {
		if cfg.Pool.Modules[i].PINSealed == "" {
			cfg.Pool.Modules[i].PINSealed = relToData(cfg.Dir, filepath.Join(ao.StateDir, "pins", strconv.Itoa(i)+".sealed"))
			changed = true
		}
	}
	if changed {
		if err := cfg.Write(); err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
		fmt.Fprintf(w, "Set pin_sealed in %s\n", config.Path(dataDir))
		// Measure the file as serve will load it.
		if cfg, ao, err = attestOptions(dataDir, cmd); err != nil {
			return err
		}
	}
	if err := effective(cfg, listen, cmd); err != nil {
		return err
	}
	meas, err := measureBoot(cfg, binary)
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	pcrs, err := meas.predictPCRs(ao.PCRs)
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	h, err := openTPM(ao)
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	defer h.Close()
	for i, path := range ao.SealedPINs {
		sealed, err := h.Seal(pins[i], pcrs)
		if err != nil {
			return fmt.Errorf("%s: pool.modules[%d]: %w", cmd, i, err)
		}
		raw, err := sealed.Marshal()
		if err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
		if err := pki.WriteFileAtomic(path, raw, 0o600); err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
		fmt.Fprintf(w, "Sealed the PIN of pool.modules[%d] (%s) to %s in %s\n", i, po.Modules[i].Path, h.what, path)
	}
	fmt.Fprintf(w, "They unseal only in a boot that measures exactly:\n")
	printEvents(w, meas.events)
	resealDomainKeyCopy(h, cfg, ao, pcrs, w)
	fmt.Fprintf(w, "A change to any of these makes serve refuse until you seal again. `serve` now takes the PINs only from the sealed files;\n"+
		"pin_file or pin_env is needed again only to seal again (and by the commands that open the pool while the gateway is stopped).\n")
	return nil
}

// readPlainPIN reads a PIN as hsmpool does: a file (white space trimmed)
// or an environment variable. Errors name the source, never the value.
func readPlainPIN(file, env string) ([]byte, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("read PIN file: %w", err)
		}
		pin := bytes.TrimSpace(b)
		if len(pin) == 0 {
			return nil, fmt.Errorf("PIN file %s is empty", file)
		}
		out := bytes.Clone(pin)
		clear(b)
		return out, nil
	}
	pin := os.Getenv(env)
	if pin == "" {
		return nil, fmt.Errorf("PIN environment variable %s is empty or unset", env)
	}
	return []byte(pin), nil
}

// relToData writes path relative to the data folder when it is inside it.
func relToData(dataDir, path string) string {
	rel, err := filepath.Rel(dataDir, path)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return path
	}
	return filepath.ToSlash(rel)
}

func printEvents(w io.Writer, events []attest.Event) {
	for _, e := range events {
		fmt.Fprintf(w, "  %-6s %x  %s\n", e.Kind, []byte(e.Digest), e.Name)
	}
}

// goldenPolicy is the golden policy file (attest.GoldenPolicyFile).
type goldenPolicy = attest.GoldenPolicyFile

// writeOutput writes b to the file out, or to w when out is "" or "-".
func writeOutput(out string, b []byte, w io.Writer) error {
	if out == "" || out == "-" {
		_, err := w.Write(b)
		return err
	}
	return pki.WriteFileAtomic(out, b, 0o644)
}

// runAttestGolden prints the golden policy that approves what a boot of
// binary ("" for this executable) with this configuration measures.
func runAttestGolden(dataDir, listen, binary, out string, w io.Writer) error {
	const cmd = "attest golden"
	cfg, ao, err := attestOptions(dataDir, cmd)
	if err != nil {
		return err
	}
	if err := effective(cfg, listen, cmd); err != nil {
		return err
	}
	meas, err := measureBoot(cfg, binary)
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	b, err := json.MarshalIndent(meas.policy(ao.PCRs), "", "  ")
	if err != nil {
		return err
	}
	return writeOutput(out, append(b, '\n'), w)
}

// runAttestEnroll enrolls the gateway's TPM on the gateway's host: it runs
// both sides of credential activation, the verifier's trusting the EK
// public key the TPM reports, and writes the enrollment record.
func runAttestEnroll(dataDir, out string, w, stderr io.Writer) error {
	const cmd = "attest enroll"
	_, ao, err := attestOptions(dataDir, cmd)
	if err != nil {
		return err
	}
	h, err := openTPM(ao)
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	defer h.Close()
	req, err := h.EnrollmentRequest()
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	// The verifier's side. A verifier elsewhere checks the EK (its
	// certificate, or the EK recorded at provisioning) before this step.
	ch, pending, err := attest.MakeCredential(req.EKPublic, req)
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	resp, err := h.ActivateCredential(ch)
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	enr, err := pending.Complete(resp)
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	b, err := json.MarshalIndent(enr, "", "  ")
	if err != nil {
		return err
	}
	if err := writeOutput(out, append(b, '\n'), w); err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	ekSum := sha256.Sum256(req.EKPublic)
	fmt.Fprintf(stderr, "Enrolled %s: attestation key %x, endorsement key (SHA-256 of its public area) %x.\n"+
		"The EK was trusted as the TPM reported it: a verifier should check it against the TPM's EK certificate (or the EK recorded at provisioning).\n",
		h.what, enr.AKName, ekSum)
	return nil
}

// runAttestMeasure measures this boot into the TPM, as serve does at
// start: the boot step of a machine whose TPM outlives the gateway
// process (a device, an external swtpm).
func runAttestMeasure(dataDir, listen string, w io.Writer) error {
	const cmd = "attest measure"
	cfg, ao, err := attestOptions(dataDir, cmd)
	if err != nil {
		return err
	}
	if ao.Embedded() {
		return fmt.Errorf("%s: hsmgate's own swtpm runs only while `hsmgate serve` does, and serve measures at start: nothing to do", cmd)
	}
	if err := effective(cfg, listen, cmd); err != nil {
		return err
	}
	meas, err := measureBoot(cfg, "")
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	h, err := openTPM(ao)
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	defer h.Close()
	for _, e := range meas.events {
		if _, err := h.Measure(e.Kind, e.Name, e.Digest); err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
	}
	fmt.Fprintf(w, "Measured into %s (event log %s):\n", h.what, filepath.Join(ao.StateDir, "eventlog.json"))
	printEvents(w, h.EventLog().Events)
	return nil
}

// verifyFlags are `attest verify`'s inputs.
type verifyFlags struct {
	endpoint, enrollment, policy, ca, cert, key string
}

// runAttestVerify fetches a fresh attestation document from the gateway
// over mutual TLS and verifies it (attest.Verify) against the enrollment
// record and the golden policy, binding it to the TLS key the connection
// presented.
func runAttestVerify(ctx context.Context, dataDir string, f verifyFlags, w io.Writer) error {
	const cmd = "attest verify"
	if f.endpoint == "" {
		cfg, err := loadConfig(dataDir, cmd)
		if err != nil {
			return err
		}
		opts, err := cfg.GatewayOptions()
		if err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
		host, port, _ := net.SplitHostPort(opts.Listen)
		if port == "0" {
			return fmt.Errorf("%s: the gateway listens on a port the system chooses: give its URL with --endpoint", cmd)
		}
		f.endpoint = endpointURL(host, port, opts.Hosts)
	}
	f.endpoint = strings.TrimSuffix(f.endpoint, "/")
	or := func(v, def string) string {
		if v == "" {
			return filepath.Join(dataDir, def)
		}
		return v
	}
	f.ca, f.cert, f.key = or(f.ca, gateway.CACertFile), or(f.cert, filepath.Join(gateway.AdminDir, "client.pem")), or(f.key, filepath.Join(gateway.AdminDir, "client.key"))

	var enr attest.Enrollment
	if err := attest.ReadJSONFile(f.enrollment, &enr); err != nil {
		return fmt.Errorf("%s: enrollment record: %w", cmd, err)
	}
	var pol goldenPolicy
	if err := attest.ReadJSONFile(f.policy, &pol); err != nil {
		return fmt.Errorf("%s: golden policy: %w", cmd, err)
	}
	cas, err := readCerts(f.ca)
	if err != nil {
		return fmt.Errorf("%s: CA certificate: %w", cmd, err)
	}
	roots := x509.NewCertPool()
	for _, c := range cas {
		roots.AddCert(c)
	}
	clientCert, err := tls.LoadX509KeyPair(f.cert, f.key)
	if err != nil {
		return fmt.Errorf("%s: client certificate: %w", cmd, err)
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{clientCert}, MinVersion: tls.VersionTLS12},
	}}
	defer client.CloseIdleConnections()

	st, err := attest.VerifyGateway(ctx, client, f.endpoint, enr, pol.Policy())
	if err != nil {
		var unknownCA x509.UnknownAuthorityError
		if errors.As(err, &unknownCA) {
			return fmt.Errorf("%s: %w (a gateway that refuses to serve presents a temporary certificate; its /readyz says why)", cmd, err)
		}
		if errors.Is(err, attest.ErrNotServed) {
			return fmt.Errorf("%s: %w", cmd, err)
		}
		return fmt.Errorf("%s: %s FAILED verification: %w", cmd, f.endpoint, err)
	}
	tlsKeyHash := st.TLSKeyHash
	fmt.Fprintf(w, "verified: %s runs an approved boot (quoted by AK %x, TPM reset count %d)\n", f.endpoint, st.AKName, st.ResetCount)
	printEvents(w, st.Events)
	var man imageManifest
	if json.Unmarshal(st.Manifest, &man) == nil && man.Format == imageManifestFormat {
		for _, m := range man.Modules {
			fmt.Fprintf(w, "  image: PKCS#11 module %s (SHA-256 %x)\n", m.Path, []byte(m.SHA256))
		}
	}
	fmt.Fprintf(w, "  TLS key of this connection: SHA-256 %x\n", tlsKeyHash)
	return nil
}

// attestCommand is `hsmgate attest …`.
func attestCommand() *cli.Command {
	listenFlag := &cli.StringFlag{Name: "listen", Usage: "the address serve is started with by --listen, if any: it is part of the configuration measured"}
	binaryFlag := &cli.StringFlag{Name: "binary", Usage: "the hsmgate executable the gateway will run (default: this one), to approve an update ahead"}
	return &cli.Command{
		Name:  "attest",
		Usage: "the gateway's TPM: measured boot, sealed PINs, enrollment and verification (docs/attestation.md)",
		Subcommands: []*cli.Command{
			{
				Name: "seal-pins",
				Usage: "seal each HSM module's PIN (read from its pin_file or pin_env) to the measurements of this binary, configuration and PKCS#11 modules; " +
					"serve then takes the PINs only by unsealing them",
				Flags: []cli.Flag{listenFlag, binaryFlag},
				Action: func(c *cli.Context) error {
					if err := noArgs(c); err != nil {
						return err
					}
					return runAttestSealPINs(c.String("data"), c.String("listen"), c.String("binary"), c.App.Writer, newLogger(c))
				},
			},
			{
				Name:  "golden",
				Usage: "print the golden policy (JSON) approving the measurements of this binary, configuration and PKCS#11 modules",
				Flags: []cli.Flag{listenFlag, binaryFlag, &cli.StringFlag{Name: "out", Usage: "write it to this file instead of stdout"}},
				Action: func(c *cli.Context) error {
					if err := noArgs(c); err != nil {
						return err
					}
					return runAttestGolden(c.String("data"), c.String("listen"), c.String("binary"), c.String("out"), c.App.Writer)
				},
			},
			{
				Name: "enroll",
				Usage: "enroll the gateway's TPM by credential activation, on the gateway's host, trusting the EK the TPM reports; " +
					"writes the enrollment record (JSON) that verify needs. With hsmgate's own swtpm, run it while the gateway is stopped",
				Flags: []cli.Flag{&cli.StringFlag{Name: "out", Usage: "write the record to this file instead of stdout"}},
				Action: func(c *cli.Context) error {
					if err := noArgs(c); err != nil {
						return err
					}
					return runAttestEnroll(c.String("data"), c.String("out"), c.App.Writer, c.App.ErrWriter)
				},
			},
			{
				Name:  "verify",
				Usage: "fetch a fresh attestation document from the running gateway (mTLS, as the admin by default) and verify it against the enrollment record and the golden policy",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "endpoint", Usage: "the gateway's URL (default: from the configuration, as `hsmgate env` prints it)"},
					&cli.StringFlag{Name: "enrollment", Required: true, Usage: "the enrollment record `attest enroll` wrote"},
					&cli.StringFlag{Name: "policy", Required: true, Usage: "the golden policy (`attest golden` prints one)"},
					&cli.StringFlag{Name: "ca", Usage: "the gateway's CA certificate (default DATA/pki/ca.pem)"},
					&cli.StringFlag{Name: "cert", Usage: "the client certificate (default DATA/admin/client.pem)"},
					&cli.StringFlag{Name: "key", Usage: "the client certificate's key (default DATA/admin/client.key)"},
				},
				Action: func(c *cli.Context) error {
					if err := noArgs(c); err != nil {
						return err
					}
					return runAttestVerify(c.Context, c.String("data"), verifyFlags{
						endpoint: c.String("endpoint"), enrollment: c.String("enrollment"), policy: c.String("policy"),
						ca: c.String("ca"), cert: c.String("cert"), key: c.String("key"),
					}, c.App.Writer)
				},
			},
			{
				Name:  "measure",
				Usage: "measure this boot (PKCS#11 modules, binary, configuration) into the TPM as serve does at start: a boot step for a TPM device or an external swtpm",
				Flags: []cli.Flag{listenFlag},
				Action: func(c *cli.Context) error {
					if err := noArgs(c); err != nil {
						return err
					}
					return runAttestMeasure(c.String("data"), c.String("listen"), c.App.Writer)
				},
			},
		},
	}
}
