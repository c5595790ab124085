package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/gateway/kmsapi"
	"github.com/hsmgate/hsmgate/hsmpool"
	"github.com/hsmgate/hsmgate/internal/config"
	"github.com/hsmgate/hsmgate/internal/softhsm"
)

// installSoftHSM is the command that installs SoftHSM2 on Debian.
const installSoftHSM = "apt-get install -y softhsm2"

// maxDevTokens bounds --tokens: a development pool needs a handful.
const maxDevTokens = 64

// runInit creates a development gateway in dataDir:
//
//   - a pool of n SoftHSM2 tokens under <data>/softhsm, their user PIN in
//     <data>/softhsm/user.pin, and one freshly drawn domain key provisioned
//     on every token (its plaintext exists only in this process's memory
//     while it is copied into the tokens; it is never written anywhere);
//   - the gateway's identity (gateway.Bootstrap): the keystore
//     <data>/keystore.db, a CA and a TLS server certificate for hosts whose
//     private keys are generated and kept in the pool, and the admin
//     principal with a client certificate and one SigV4 access key;
//   - the admin's client-side credentials file <data>/admin/credentials;
//   - and last <data>/hsmgate.toml, recording the domain key check value and
//     the [gateway] section.
//
// A plaintext PIN file is a development convenience only: on a production
// gateway the PIN comes from pin_env, and `hsmgate attest seal-pins` seals it
// to the TPM. See docs/configuration.md.
//
// attestMode chooses the [attest] section (initAttest…): with "auto", the
// default, the development gateway gets hsmgate's own swtpm when swtpm is
// installed, and no TPM otherwise. Its boot is then measured and it serves
// /attestation; its PIN stays in the PIN file, unsealed, until `hsmgate
// attest seal-pins` (a development gateway's configuration is edited often,
// and each edit would need a new seal).
//
// When the data folder already has a configuration (an operator describing
// real HSMs), init uses that pool instead (runInitConfigured). It never
// replaces an existing gateway. The configuration is written last, so a
// failed init removes what it created and can simply be run again.
func runInit(ctx context.Context, dataDir string, n int, hosts []string, attestMode string, qf quorumFlags, w io.Writer, log *slog.Logger) (err error) {
	if n < 1 || n > maxDevTokens {
		return fmt.Errorf("init: --tokens %d: want between 1 and %d", n, maxDevTokens)
	}
	switch attestMode {
	case initAttestAuto, initAttestSwtpm, initAttestOff:
	default:
		return fmt.Errorf("init: --attest %q: want %s, %s or %s", attestMode, initAttestAuto, initAttestSwtpm, initAttestOff)
	}
	if len(hosts) == 0 {
		hosts = config.DefaultHosts()
	}
	for _, h := range hosts {
		if err := config.CheckHost(h); err != nil {
			return fmt.Errorf("init: --host %w", err)
		}
	}
	dataDir, err = filepath.Abs(dataDir)
	if err != nil {
		return fmt.Errorf("init: resolve data folder: %w", err)
	}
	if ok, err := config.Exists(dataDir); err != nil {
		return fmt.Errorf("init: %w", err)
	} else if ok {
		// An operator's configuration (real HSMs): initialise on its pool.
		if attestMode != initAttestAuto {
			return fmt.Errorf("init: --attest is for a development gateway; %s exists: set its [attest] section instead (docs/configuration.md)", config.Path(dataDir))
		}
		return runInitConfigured(ctx, dataDir, hosts, qf, w, log)
	}
	q, err := loadInitQuorum(qf.set, qf.pops, qf.cluster, qf.target, nil)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	defer q.forget()
	devAttest, attestNote, err := initAttest(attestMode)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}

	util, module, err := findSoftHSM()
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	if err := prepareDataDir(dataDir); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	softDir := filepath.Join(dataDir, "softhsm")
	// What init creates beside the configuration. Any of it already there
	// (without a configuration) is left over from an init that did not
	// finish, or is something else: either way init must not use or
	// remove it.
	var created []string
	for _, p := range []string{softDir, gateway.KeystoreFile, filepath.Dir(gateway.CACertFile), filepath.Dir(gateway.ServerCertFile), gateway.AdminDir, filepath.Dir(gateway.QuorumLedgerFile)} {
		if p = filepath.Join(dataDir, p); !slices.Contains(created, p) {
			created = append(created, p)
		}
	}
	for _, p := range created {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("init: %s exists but %s does not: an earlier init did not finish. Remove %s and run init again",
				p, config.FileName, p)
		}
	}
	// Until the configuration is written nothing refers to the tokens or
	// the keystore, so a failed init removes them and can be run again.
	defer func() {
		if err != nil {
			for _, p := range created {
				if rmErr := os.RemoveAll(p); rmErr != nil {
					err = errors.Join(err, fmt.Errorf("init: clean up %s: %w", p, rmErr))
				}
			}
		}
	}()

	fmt.Fprintf(w, "Creating %d SoftHSM2 tokens in %s\n", n, softDir)
	soft, err := softhsm.Create(util, module, softDir, "hsmgate", n)
	if err != nil {
		return fmt.Errorf("init: create SoftHSM2 tokens: %w", err)
	}
	cfg, err := devConfig(dataDir, soft)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	cfg.Gateway = config.Gateway{
		Listen:  config.DefaultListen,
		Region:  config.DefaultRegion,
		Account: config.DefaultAccount,
		Hosts:   hosts,
	}
	cfg.Attest = devAttest
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("init: %w", err)
	}

	opts, err := cfg.PoolOptions(log)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	p, err := hsmpool.Open(ctx, opts)
	if err != nil {
		return fmt.Errorf("init: open the new pool: %w", err)
	}
	defer func() {
		if cerr := p.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("init: close the pool: %w", cerr))
		}
	}()
	kcv, err := provisionDomainKey(ctx, p, n, q)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	cfg.Pool.DomainKeyCheck = kcv
	fmt.Fprintf(w, "Provisioned the domain key on %d slots (check value %s)\n", n, kcv)

	admin, err := bootstrapGateway(ctx, p, dataDir, hosts)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	fmt.Fprintf(w, "Created the gateway's CA and TLS server certificate (for %s); their private keys are in the HSM pool\n",
		strings.Join(hosts, ", "))
	fmt.Fprintf(w, "Created the admin principal, with access key %s\n", admin.AccessKeyID)
	sample, err := createSampleKey(ctx, p, dataDir, cfg)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	fmt.Fprintf(w, "Created a sample symmetric key %s, alias %s\n", sample, SampleKeyAlias)
	if err := q.install(ctx, dataDir, cfg, w); err != nil {
		return fmt.Errorf("init: %w", err)
	}

	if err := cfg.Write(); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	fmt.Fprintf(w, "Wrote %s\n", config.Path(dataDir))
	q.sealCopy(dataDir, w)
	fmt.Fprintf(w, "Note: the tokens' user PIN is in plaintext in %s: fine for development, never for production.\n", soft.PINFile)
	fmt.Fprintln(w, attestNote)
	fmt.Fprintf(w, `
The admin's client credentials (a client's own secrets: copy them to the machine that calls the gateway):
  CA bundle:          %s
  client certificate: %s
  client key:         %s
  SigV4 credentials:  %s (AWS shared-credentials file, profile %q)
Next: %s --data %s serve
`, admin.CABundle, admin.ClientCert, admin.ClientKey, filepath.Join(dataDir, adminCredentialsFile), credentialsProfile,
		selfCommand(), shellWord(dataDir))
	return nil
}

// bootstrapGateway creates the keystore in dataDir and the gateway's
// identity in it (gateway.Bootstrap), then writes the admin's SigV4
// credentials to <data>/admin/credentials. The secret is in that file only:
// the keystore keeps it encrypted by the HSM, and it is never printed.
func bootstrapGateway(ctx context.Context, p *hsmpool.Pool, dataDir string, hosts []string) (admin *gateway.AdminCredentials, err error) {
	store, err := keystore.Open(filepath.Join(dataDir, gateway.KeystoreFile))
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := store.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close the keystore: %w", cerr))
		}
	}()
	admin, err = gateway.Bootstrap(ctx, p, store, dataDir, hosts, time.Now())
	if err != nil {
		return nil, err
	}
	if err := writeCredentials(filepath.Join(dataDir, adminCredentialsFile), admin.AccessKeyID, admin.SecretAccessKey); err != nil {
		return nil, err
	}
	admin.SecretAccessKey = "" // in the file now; keep no other copy around
	return admin, nil
}

// findSoftHSM returns the paths of softhsm2-util and of the SoftHSM2 PKCS#11
// module, or an error that says how to install them.
func findSoftHSM() (util, module string, err error) {
	util, err = exec.LookPath("softhsm2-util")
	if err != nil {
		return "", "", fmt.Errorf("softhsm2-util is not on PATH; install SoftHSM2 with:\n  %s", installSoftHSM)
	}
	module = softhsm.Module()
	if module == "" {
		return "", "", fmt.Errorf("the SoftHSM2 PKCS#11 module (libsofthsm2.so) was not found; install SoftHSM2 with:\n  %s", installSoftHSM)
	}
	if _, err := os.Stat(module); err != nil {
		return "", "", fmt.Errorf("the SoftHSM2 PKCS#11 module %s is missing (%w); install SoftHSM2 with:\n  %s", module, err, installSoftHSM)
	}
	return util, module, nil
}

// prepareDataDir creates the data folder with mode 0700, or checks that an
// existing one is a folder no other user can read. It never loosens or
// tightens an existing folder's mode: that folder may be something else.
func prepareDataDir(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create data folder: %w", err)
		}
		// MkdirAll's mode passes through the umask; make sure of 0700.
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("create data folder: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("check data folder: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("data folder %s is not a folder", dir)
	case fi.Mode().Perm()&0o077 != 0:
		return fmt.Errorf("data folder %s can be opened by other users (mode %04o): run `chmod 700 %s` or choose a new folder",
			dir, fi.Mode().Perm(), dir)
	}
	return nil
}

// devConfig describes the SoftHSM2 tokens soft in a configuration whose
// paths are relative to the data folder, so the folder can be used from
// any working directory.
func devConfig(dataDir string, soft *softhsm.Tokens) (*config.Config, error) {
	pinFile, err := filepath.Rel(dataDir, soft.PINFile)
	if err != nil {
		return nil, fmt.Errorf("locate PIN file: %w", err)
	}
	conf, err := filepath.Rel(dataDir, soft.Conf)
	if err != nil {
		return nil, fmt.Errorf("locate SoftHSM2 configuration: %w", err)
	}
	m := config.Module{
		Path:    soft.Module,
		PINFile: pinFile, // development only: see the note on runInit
		// "./" marks the value as a path relative to the data folder.
		Env: map[string]string{"SOFTHSM2_CONF": "./" + filepath.ToSlash(conf)},
	}
	for _, label := range soft.Labels() {
		m.Tokens = append(m.Tokens, config.Token{Label: label})
	}
	return &config.Config{Dir: dataDir, Pool: config.Pool{Modules: []config.Module{m}}}, nil
}

// provisionDomainKey puts one new domain key into every slot of p, a pool
// of n fresh tokens, and returns the pool's check value.
//
// When q is not nil, the new key is split among its officers (q.keep)
// before the Go copy of the material is zeroed.
func provisionDomainKey(ctx context.Context, p *hsmpool.Pool, n int, q *initQuorum) (kcv string, err error) {
	for _, st := range p.Status() {
		if st.State != hsmpool.StateNoDomainKey {
			return "", fmt.Errorf("new slot %s is %s, want %s: %s", st.Name, st.State, hsmpool.StateNoDomainKey, st.Reason)
		}
	}

	dk, err := hsmpool.NewDomainKeyMaterial()
	if err != nil {
		return "", fmt.Errorf("draw domain key: %w", err)
	}
	defer clear(dk) // the tokens hold it now; zero the Go copy
	if err = p.ProvisionDomainKey(ctx, dk); err != nil {
		return "", fmt.Errorf("provision domain key: %w", err)
	}

	if h := p.Healthy(); h != n {
		return "", fmt.Errorf("after provisioning the domain key %d of %d slots are healthy: %s", h, n, describeUnhealthy(p.Status()))
	}
	kcv = p.DomainKeyCheck()
	if kcv == "" {
		return "", errors.New("the pool reports no domain key check value after provisioning")
	}
	if err := q.keep(dk, kcv); err != nil {
		return "", fmt.Errorf("split the domain key among the officers: %w", err)
	}
	return kcv, nil
}

// describeUnhealthy lists the slots that are not healthy, with their reasons.
func describeUnhealthy(sts []hsmpool.SlotStatus) string {
	var out string
	for _, st := range sts {
		if st.State == hsmpool.StateHealthy {
			continue
		}
		if out != "" {
			out += "; "
		}
		out += fmt.Sprintf("%s is %s", st.Name, st.State)
		if st.Reason != "" {
			out += " (" + st.Reason + ")"
		}
	}
	return out
}

// init --attest values.
const (
	initAttestAuto  = "auto"
	initAttestSwtpm = "swtpm"
	initAttestOff   = "off"
)

// initAttest is the [attest] section of a development gateway (nil for
// none), and a line for init's summary.
func initAttest(mode string) (*config.Attest, string, error) {
	_, err := exec.LookPath("swtpm")
	switch {
	case mode == initAttestOff:
		return nil, "Attestation: off (--attest off).", nil
	case err != nil && mode == initAttestSwtpm:
		return nil, "", fmt.Errorf("--attest swtpm: swtpm is not on PATH; install it with:\n  apt-get install -y swtpm swtpm-tools")
	case err != nil:
		return nil, "Attestation: off: swtpm is not installed (apt-get install -y swtpm swtpm-tools, then set [attest] mode = \"swtpm\").", nil
	}
	return &config.Attest{Mode: config.AttestSwtpm},
		"Attestation: on, with hsmgate's own software TPM (swtpm; its state will be in attest/swtpm): serve measures the PKCS#11 module, " +
			"the binary and the configuration into it and serves /attestation. The PIN is not sealed: `hsmgate attest seal-pins` seals it (docs/attestation.md).", nil
}

// SampleKeyAlias names the key a development gateway is created with, so
// that the quick start can encrypt at once.
const SampleKeyAlias = "alias/hsmgate-sample"

// createSampleKey creates a development gateway's sample key (an AES-256
// key generated in the pool, owned by the admin) and its alias, and
// returns the key id.
func createSampleKey(ctx context.Context, p *hsmpool.Pool, dataDir string, cfg *config.Config) (id string, err error) {
	opts, err := cfg.GatewayOptions()
	if err != nil {
		return "", err
	}
	store, err := keystore.Open(filepath.Join(dataDir, gateway.KeystoreFile))
	if err != nil {
		return "", err
	}
	defer func() {
		if cerr := store.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close the keystore: %w", cerr))
		}
	}()
	svc := &kmsapi.Service{Pool: p, Store: store, Region: opts.Region, Account: opts.Account}
	admin := kmsapi.Caller{Principal: gateway.AdminName, Admin: true}
	out, apiErr := svc.Do(ctx, admin, kmsapi.TargetPrefix+"CreateKey",
		[]byte(`{"Description":"Sample key created by hsmgate init for trying the gateway out"}`), nil)
	if apiErr != nil {
		return "", fmt.Errorf("create the sample key: %w", apiErr)
	}
	var created struct{ KeyMetadata struct{ KeyId string } }
	if err := json.Unmarshal(out, &created); err != nil {
		return "", fmt.Errorf("create the sample key: %w", err)
	}
	body, _ := json.Marshal(map[string]string{"AliasName": SampleKeyAlias, "TargetKeyId": created.KeyMetadata.KeyId})
	if _, apiErr := svc.Do(ctx, admin, kmsapi.TargetPrefix+"CreateAlias", body, nil); apiErr != nil {
		return "", fmt.Errorf("alias the sample key: %w", apiErr)
	}
	return created.KeyMetadata.KeyId, nil
}
