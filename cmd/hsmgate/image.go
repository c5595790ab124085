package main

// hsmgate image: signed firmware image bundles (docs/images.md). The
// release side — keygen, build, sign, trust init, timestamp — runs on a
// release machine; verify and inspect anywhere; stage and list on the
// appliance's data folder. Activation is a quorum operation run by the
// gateway.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/hsmgate/hsmgate/images"
	"github.com/hsmgate/hsmgate/quorum"
)

// imagePassphraseEnv gives an officer key file's passphrase to scripts, as
// for hsmofficer.
const imagePassphraseEnv = "HSMOFFICER_PASSPHRASE"

func imageCommand() *cli.Command {
	trustFlag := &cli.StringFlag{Name: "trust", Usage: "the trust file (hsmgate image trust init): release keys and threshold", Required: true}
	targetFlag := &cli.StringFlag{Name: "target", Usage: "this appliance's hardware target; the image's must be the same", Required: true}
	timestampFlag := &cli.StringFlag{Name: "timestamp", Usage: "a timestamp file (hsmgate image timestamp), for a trust with timestamp keys (freeze protection)"}
	return &cli.Command{
		Name:  "image",
		Usage: "signed firmware image bundles (docs/images.md): make, sign, check, stage and list them",
		Subcommands: []*cli.Command{
			{
				Name:      "keygen",
				Usage:     "make an Ed25519 release (or timestamp) key: a PKCS#8 private key file (mode 0600) and its public key",
				ArgsUsage: " ",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "out", Usage: "the private key file to write", Required: true},
					&cli.StringFlag{Name: "pub", Usage: "the public key file to write (default: --out with .pub for its extension)"},
				},
				Action: func(c *cli.Context) error {
					if err := noArgs(c); err != nil {
						return err
					}
					return runImageKeygen(c.App.Writer, c.String("out"), c.String("pub"))
				},
			},
			{
				Name:      "build",
				Usage:     "make an unsigned bundle of a payload file",
				ArgsUsage: "PAYLOAD",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "out", Usage: "the bundle file to write", Required: true},
					&cli.StringFlag{Name: "name", Usage: "the product name, e.g. hsmgate-appliance", Required: true},
					&cli.Uint64Flag{Name: "version", Usage: "the monotonic release number (1, 2, 3…): anti-rollback compares it", Required: true},
					&cli.StringFlag{Name: "version-string", Usage: "the human version, e.g. 2.4.1: officers see it in the activation proposal", Required: true},
					&cli.StringFlag{Name: "target", Usage: "the hardware target the image runs on, e.g. x86_64-tpm2", Required: true},
					&cli.StringFlag{Name: "builder", Usage: "who or what built it", Required: true},
					&cli.StringFlag{Name: "source-revision", Usage: "the source revision built, e.g. a git commit id", Required: true},
					&cli.StringFlag{Name: "build-time", Usage: "when it was built, RFC 3339 (default: $SOURCE_DATE_EPOCH if set, else now)"},
				},
				Action: func(c *cli.Context) error {
					payload, err := oneArg(c, "PAYLOAD")
					if err != nil {
						return err
					}
					bt, err := imageBuildTime(c.String("build-time"))
					if err != nil {
						return err
					}
					m := images.Manifest{
						Name: c.String("name"), Version: c.Uint64("version"), VersionString: c.String("version-string"), Target: c.String("target"),
						Build: images.BuildInfo{Builder: c.String("builder"), Time: bt, SourceRevision: c.String("source-revision")},
					}
					return runImageBuild(c.App.Writer, payload, c.String("out"), m)
				},
			},
			{
				Name:      "sign",
				Usage:     "add a release signature to a bundle, with an Ed25519 key file or an officer key file (after checking the payload matches the manifest)",
				ArgsUsage: "BUNDLE",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "key", Usage: "an Ed25519 private key file (hsmgate image keygen, PKCS#8 PEM) or an officer key file (hsmofficer keygen; passphrase from the terminal or " + imagePassphraseEnv + ")", Required: true},
					&cli.StringFlag{Name: "out", Usage: "write the signed bundle here (default: sign BUNDLE in place)"},
				},
				Action: func(c *cli.Context) error {
					bundle, err := oneArg(c, "BUNDLE")
					if err != nil {
						return err
					}
					return runImageSign(c.App.Writer, c.App.ErrWriter, bundle, c.String("key"), c.String("out"))
				},
			},
			{
				Name:      "verify",
				Usage:     "verify a bundle completely against a trust file: signatures, target, payload size and SHA-384 (and with freeze protection, the timestamp); exit 1 if refused",
				ArgsUsage: "BUNDLE",
				Flags:     []cli.Flag{trustFlag, targetFlag, timestampFlag},
				Action: func(c *cli.Context) error {
					bundle, err := oneArg(c, "BUNDLE")
					if err != nil {
						return err
					}
					return runImageVerify(c.App.Writer, bundle, c.String("trust"), c.String("target"), c.String("timestamp"))
				},
			},
			{
				Name:      "inspect",
				Usage:     "show a bundle's manifest and signatures, unverified, and the values a firmware-activation proposal names",
				ArgsUsage: "BUNDLE",
				Action: func(c *cli.Context) error {
					bundle, err := oneArg(c, "BUNDLE")
					if err != nil {
						return err
					}
					return runImageInspect(c.App.Writer, bundle)
				},
			},
			{
				Name: "stage",
				Usage: "verify a bundle completely and keep it in the data folder's image store (DATA/images), ready for a quorum-approved activation; a refused bundle leaves nothing behind. " +
					"Without --trust, against the gateway's installed trust and [images] target (through the running gateway, or on its keystore while it is stopped)",
				ArgsUsage: "BUNDLE",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "trust", Usage: "a trust file to verify against instead of the gateway's installed trust"},
					&cli.StringFlag{Name: "target", Usage: "with --trust: this appliance's hardware target"},
					timestampFlag, gatewayListenFlag()},
				Action: func(c *cli.Context) error {
					bundle, err := oneArg(c, "BUNDLE")
					if err != nil {
						return err
					}
					if c.String("trust") == "" {
						return runImageStageOnGateway(newPrincipalCmd(c, "image stage"), bundle, c.String("timestamp"))
					}
					if c.String("target") == "" {
						return errors.New("image stage: --trust needs --target")
					}
					return runImageStage(c.App.Writer, c.String("data"), bundle, c.String("trust"), c.String("target"), c.String("timestamp"))
				},
			},
			{
				Name:      "refresh",
				Usage:     "give the data folder's image store a newer timestamp (freeze protection), e.g. before an activation",
				ArgsUsage: " ",
				Flags:     []cli.Flag{trustFlag, &cli.StringFlag{Name: "timestamp", Usage: "the timestamp file (hsmgate image timestamp)", Required: true}},
				Action: func(c *cli.Context) error {
					if err := noArgs(c); err != nil {
						return err
					}
					return runImageRefresh(c.App.Writer, c.String("data"), c.String("trust"), c.String("timestamp"))
				},
			},
			{
				Name:      "activate",
				Usage:     "propose activating a staged image: a firmware-activation quorum proposal naming its digest and version, which officers approve (hsmofficer)",
				ArgsUsage: "DIGEST",
				Flags:     append(imageProposalFlags(), gatewayListenFlag()),
				Action: func(c *cli.Context) error {
					digest, err := oneArg(c, "DIGEST")
					if err != nil {
						return err
					}
					return runImageActivate(newPrincipalCmd(c, "image activate"), digest, c.String("requester"), c.Duration("valid-for"))
				},
			},
			{
				Name:      "status",
				Usage:     "the gateway's image state: target, installed trust, highest activated version, images",
				ArgsUsage: " ",
				Flags:     []cli.Flag{gatewayListenFlag()},
				Action: func(c *cli.Context) error {
					if err := noArgs(c); err != nil {
						return err
					}
					return runImageStatus(newPrincipalCmd(c, "image status"))
				},
			},
			{
				Name:      "list",
				Usage:     "list the images in the data folder's image store: staged, active and previous",
				ArgsUsage: " ",
				Action: func(c *cli.Context) error {
					if err := noArgs(c); err != nil {
						return err
					}
					return runImageList(c.App.Writer, c.String("data"))
				},
			},
			{
				Name:  "trust",
				Usage: "the trust file: which keys sign releases (and timestamps) and how many must",
				Subcommands: []*cli.Command{
					{
						Name:      "init",
						Usage:     "make a trust file",
						ArgsUsage: " ",
						Flags: []cli.Flag{
							&cli.StringSliceFlag{Name: "key", Usage: "a release key: [NAME=]FILE, an Ed25519 public key (hsmgate image keygen) or an officer public key (hsmofficer keygen); repeat it for more. NAME defaults to the officer's name, or the file name without extension", Required: true},
							&cli.IntFlag{Name: "threshold", Usage: "how many distinct release keys must sign an image", Required: true},
							&cli.StringSliceFlag{Name: "timestamp-key", Usage: "a timestamp key, [NAME=]FILE: turns freeze protection on (repeat it for more)"},
							&cli.IntFlag{Name: "timestamp-threshold", Usage: "how many distinct timestamp keys must sign a timestamp (default 1 with timestamp keys)"},
							&cli.Uint64Flag{Name: "version", Value: 1, Usage: "the trust record's version: 1 for the first, +1 for each change"},
							&cli.StringFlag{Name: "out", Usage: "the trust file to write", Required: true},
						},
						Action: func(c *cli.Context) error {
							if err := noArgs(c); err != nil {
								return err
							}
							return runImageTrustInit(c.App.Writer, c.StringSlice("key"), c.Int("threshold"), c.StringSlice("timestamp-key"),
								c.Int("timestamp-threshold"), c.Uint64("version"), c.String("out"))
						},
					},
					{
						Name:      "install",
						Usage:     "install the gateway's first trust (admins; afterwards it changes only by an approved release-trust proposal)",
						ArgsUsage: "FILE",
						Flags:     []cli.Flag{gatewayListenFlag()},
						Action: func(c *cli.Context) error {
							file, err := oneArg(c, "FILE")
							if err != nil {
								return err
							}
							return runImageTrustInstall(newPrincipalCmd(c, "image trust install"), file)
						},
					},
					{
						Name:      "propose",
						Usage:     "propose replacing the gateway's trust by FILE (version +1): a release-trust quorum proposal",
						ArgsUsage: "FILE",
						Flags:     append(imageProposalFlags(), gatewayListenFlag()),
						Action: func(c *cli.Context) error {
							file, err := oneArg(c, "FILE")
							if err != nil {
								return err
							}
							return runImageTrustPropose(newPrincipalCmd(c, "image trust propose"), file, c.String("requester"), c.Duration("valid-for"))
						},
					},
					{
						Name:      "show",
						Usage:     "show a trust file: its keys, thresholds and hash",
						ArgsUsage: "FILE",
						Action: func(c *cli.Context) error {
							file, err := oneArg(c, "FILE")
							if err != nil {
								return err
							}
							tr, err := readImageTrust(file)
							if err != nil {
								return err
							}
							printImageTrust(c.App.Writer, tr)
							return nil
						},
					},
				},
			},
			{
				Name:      "timestamp",
				Usage:     "sign a timestamp listing the available images (freeze protection): bundle files or image digests",
				ArgsUsage: "BUNDLE-OR-DIGEST...",
				Flags: []cli.Flag{
					&cli.StringSliceFlag{Name: "key", Usage: "a timestamp key file (Ed25519 PKCS#8, or an officer key file); repeat it for more", Required: true},
					&cli.DurationFlag{Name: "expires", Value: 24 * time.Hour, Usage: "how long the timestamp is valid (at most 168h)"},
					&cli.Uint64Flag{Name: "version", Usage: "the timestamp's version, which must grow (default: the Unix time now)"},
					&cli.StringFlag{Name: "out", Usage: "the timestamp file to write", Required: true},
				},
				Action: func(c *cli.Context) error {
					return runImageTimestamp(c.App.Writer, c.App.ErrWriter, c.Args().Slice(), c.StringSlice("key"), c.Duration("expires"), c.Uint64("version"), c.String("out"))
				},
			},
		},
	}
}

// imageBuildTime parses --build-time, or SOURCE_DATE_EPOCH (the
// reproducible-builds convention), or takes the time now.
func imageBuildTime(flag string) (time.Time, error) {
	if flag != "" {
		t, err := time.Parse(time.RFC3339, flag)
		if err != nil {
			return time.Time{}, fmt.Errorf("image build: --build-time: %w", err)
		}
		return t.UTC().Truncate(time.Second), nil
	}
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("image build: SOURCE_DATE_EPOCH %q: not a number of seconds", s)
		}
		return time.Unix(n, 0).UTC(), nil
	}
	return time.Now().UTC().Truncate(time.Second), nil
}

// createExclusive writes data to a new file, refusing to overwrite one.
func createExclusive(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s exists: refusing to overwrite it", path)
		}
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

func runImageKeygen(w io.Writer, out, pub string) error {
	if pub == "" {
		pub = strings.TrimSuffix(out, filepath.Ext(out)) + ".pub"
	}
	if pub == out {
		return fmt.Errorf("image keygen: --pub and --out are the same file")
	}
	priv, public, err := images.GenerateEd25519Key()
	if err != nil {
		return err
	}
	if err := createExclusive(out, priv, 0o600); err != nil {
		return fmt.Errorf("image keygen: %w", err)
	}
	if err := createExclusive(pub, public, 0o644); err != nil {
		return fmt.Errorf("image keygen: %w", err)
	}
	k, _, _ := images.ParsePublicKeyFile(public)
	fmt.Fprintf(w, "wrote %s (private, mode 0600) and %s\nkey id %s (%s)\n", out, pub, k.ID(), k.ID().Short())
	return nil
}

func runImageBuild(w io.Writer, payloadPath, out string, m images.Manifest) error {
	// Report bad flags before reading the payload (Build fills in the
	// payload's digest and size).
	check := m
	check.PayloadSHA384 = make([]byte, 48)
	if err := check.Validate(); err != nil {
		return fmt.Errorf("image build: %w", err)
	}
	payload, err := os.Open(payloadPath)
	if err != nil {
		return fmt.Errorf("image build: %w", err)
	}
	defer payload.Close()
	if _, err := os.Stat(out); err == nil {
		return fmt.Errorf("image build: %s exists: refusing to overwrite it", out)
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return fmt.Errorf("image build: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	built, err := images.Build(tmp, m, payload)
	if err == nil {
		err = tmp.Sync()
	}
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if err == nil {
		err = tmp.Close()
	}
	if err == nil {
		err = os.Link(tmp.Name(), out) // fails if out appeared meanwhile
	}
	if err == nil {
		var dir *os.File
		if dir, err = os.Open(filepath.Dir(out)); err == nil {
			err = dir.Sync()
			dir.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("image build: %w", err)
	}
	d, _ := built.Digest()
	fmt.Fprintf(w, "wrote %s: unsigned bundle of %q version %d (%q) for %q, payload %d bytes\nimage digest %s\n",
		out, built.Name, built.Version, built.VersionString, built.Target, built.PayloadSize, d)
	return nil
}

// imagePassphrase returns HSMOFFICER_PASSPHRASE, or reads the passphrase
// from the terminal without echo.
func imagePassphrase(stderr io.Writer, prompt string) ([]byte, error) {
	if p := os.Getenv(imagePassphraseEnv); p != "" {
		return []byte(p), nil
	}
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return nil, errors.New("no terminal to read the officer key's passphrase from (set " + imagePassphraseEnv + " in scripts)")
	}
	fmt.Fprint(stderr, prompt+": ")
	p, err := term.ReadPassword(fd)
	fmt.Fprintln(stderr)
	if err != nil {
		return nil, err
	}
	if len(p) == 0 {
		return nil, errors.New("empty passphrase")
	}
	return p, nil
}

// loadImageSigner reads a private key file: an Ed25519 PKCS#8 key or an
// officer key file (decrypted with its passphrase).
func loadImageSigner(stderr io.Writer, path string) (images.Signer, error) {
	file, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	typ, data, err := images.Dearmor(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	switch typ {
	case images.PEMPrivateKey:
		k, err := images.ParseEd25519PrivateKey(file)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return images.NewEd25519Signer(k), nil
	case images.PEMOfficerKey:
		pub, err := quorum.KeyFilePublic(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		pass, err := imagePassphrase(stderr, fmt.Sprintf("passphrase for %q (%s)", pub.Name, pub.Fingerprint().Short()))
		if err != nil {
			return nil, err
		}
		k, err := quorum.DecryptKeyFile(data, pass)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return images.NewOfficerSigner(k), nil
	}
	return nil, fmt.Errorf("%s: a %q file is not a signing key (want an Ed25519 %q or an officer key file)", path, typ, images.PEMPrivateKey)
}

func runImageSign(w, stderr io.Writer, bundle, keyFile, out string) error {
	s, err := loadImageSigner(stderr, keyFile)
	if err != nil {
		return fmt.Errorf("image sign: %w", err)
	}
	env, err := images.SignFile(bundle, out, s)
	if err != nil {
		return fmt.Errorf("image sign %s: %w", bundle, err)
	}
	if out == "" {
		out = bundle
	}
	id := s.PublicKey().ID()
	fmt.Fprintf(w, "signed %s with key %s (%s); the bundle has %d signature(s)\nimage digest %s\n",
		out, id.Short(), s.PublicKey().Scheme, len(env.Signatures), images.ManifestDigest(env.Manifest))
	return nil
}

func readImageTrust(path string) (*images.Trust, error) {
	file, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	data, err := images.DearmorType(file, images.PEMTrust)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	tr, err := images.DecodeTrust(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return tr, nil
}

// readImageTimestamp reads a timestamp file ("" means none).
func readImageTimestamp(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	file, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	data, err := images.DearmorType(file, images.PEMTimestamp)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return data, nil
}

func runImageVerify(w io.Writer, bundle, trustFile, target, timestampFile string) error {
	tr, err := readImageTrust(trustFile)
	if err != nil {
		return fmt.Errorf("image verify: %w", err)
	}
	ts, err := readImageTimestamp(timestampFile)
	if err != nil {
		return fmt.Errorf("image verify: %w", err)
	}
	v, err := tr.VerifyFile(bundle, images.VerifyOptions{Target: target})
	if err == nil {
		err = tr.CheckFresh(ts, v.Digest, time.Now())
	}
	if err != nil {
		return fmt.Errorf("REFUSED: image verify %s: %w", bundle, err)
	}
	m := v.Manifest
	fmt.Fprintf(w, "VERIFIED %s\n", bundle)
	printImageManifest(w, m, v.Digest)
	fmt.Fprintf(w, "signatures: %d needed (trust version %d)\n", tr.ReleaseThreshold, tr.Version)
	for _, c := range v.Signatures {
		fmt.Fprintf(w, "  %s\n", c)
	}
	if tr.FreezeProtection() {
		t, _ := tr.VerifyTimestamp(ts, time.Now())
		fmt.Fprintf(w, "timestamp: version %d, valid until %s, lists this image\n", t.Version, t.Expires.Format(time.RFC3339))
	} else {
		fmt.Fprintln(w, "timestamp: not required (the trust has no timestamp keys: freeze protection is off)")
	}
	return nil
}

// printImageManifest shows a manifest for a person: every string quoted
// (and printable ASCII only, as the manifest decoder enforces).
func printImageManifest(w io.Writer, m *images.Manifest, d images.Digest) {
	fmt.Fprintf(w, "  name               %s\n", strconv.Quote(m.Name))
	fmt.Fprintf(w, "  version            %d (%s)\n", m.Version, strconv.Quote(m.VersionString))
	fmt.Fprintf(w, "  hardware target    %s\n", strconv.Quote(m.Target))
	fmt.Fprintf(w, "  payload            %d bytes, SHA-384 %x\n", m.PayloadSize, m.PayloadSHA384)
	fmt.Fprintf(w, "  built by           %s\n", strconv.Quote(m.Build.Builder))
	fmt.Fprintf(w, "  built at           %s\n", m.Build.Time.UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "  source revision    %s\n", strconv.Quote(m.Build.SourceRevision))
	fmt.Fprintf(w, "  image digest       %s\n", d)
}

func runImageInspect(w io.Writer, bundle string) error {
	f, err := os.Open(bundle)
	if err != nil {
		return fmt.Errorf("image inspect: %w", err)
	}
	defer f.Close()
	env, offset, err := images.ReadHeader(f)
	if err != nil {
		return fmt.Errorf("image inspect %s: %w", bundle, err)
	}
	m, err := images.DecodeManifest(env.Manifest)
	if err != nil {
		return fmt.Errorf("image inspect %s: %w", bundle, err)
	}
	d := images.ManifestDigest(env.Manifest)
	fmt.Fprintf(w, "IMAGE BUNDLE %s (NOT VERIFIED: hsmgate image verify checks it)\n", strconv.Quote(bundle))
	printImageManifest(w, m, d)
	if fi, err := f.Stat(); err == nil {
		fmt.Fprintf(w, "  header             %d bytes; payload in the file: %d bytes\n", offset, fi.Size()-offset)
	}
	fmt.Fprintf(w, "SIGNATURES (%d, not verified)\n", len(env.Signatures))
	for i, s := range env.Signatures {
		fmt.Fprintf(w, "  %d  key %s (%s)\n", i+1, s.KeyID, s.KeyID.Short())
	}
	fmt.Fprintf(w, "A firmware-activation proposal for this image names\n  version            %s\n  image SHA-256      %s\n", strconv.Quote(m.VersionString), d)
	return nil
}

// imageStore opens the data folder's image store.
func imageStore(dataDir string, opts images.Options) (*images.Store, error) {
	if fi, err := os.Stat(dataDir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("data folder %s does not exist (--data)", dataDir)
	}
	return images.OpenStore(dataDir, opts)
}

func runImageStage(w io.Writer, dataDir, bundle, trustFile, target, timestampFile string) error {
	tr, err := readImageTrust(trustFile)
	if err != nil {
		return fmt.Errorf("image stage: %w", err)
	}
	ts, err := readImageTimestamp(timestampFile)
	if err != nil {
		return fmt.Errorf("image stage: %w", err)
	}
	s, err := imageStore(dataDir, images.Options{Trust: tr, Target: target})
	if err != nil {
		return fmt.Errorf("image stage: %w", err)
	}
	if ts != nil {
		t, err := s.UpdateTimestamp(ts)
		if err != nil {
			return fmt.Errorf("REFUSED: image stage: %w", err)
		}
		fmt.Fprintf(w, "timestamp version %d kept (valid until %s)\n", t.Version, t.Expires.Format(time.RFC3339))
	}
	img, err := s.Stage(bundle)
	if err != nil {
		return fmt.Errorf("REFUSED: image %w", err)
	}
	fmt.Fprintf(w, "STAGED %s\n", bundle)
	printImageManifest(w, img.Manifest, img.Digest)
	fmt.Fprintf(w, "  kept in            %s\n", img.Dir)
	fmt.Fprintf(w, "To activate it, officers approve a firmware-activation proposal naming\n  version            %s\n  image SHA-256      %s\n",
		strconv.Quote(img.Manifest.VersionString), img.Digest)
	return nil
}

func runImageRefresh(w io.Writer, dataDir, trustFile, timestampFile string) error {
	tr, err := readImageTrust(trustFile)
	if err != nil {
		return fmt.Errorf("image refresh: %w", err)
	}
	ts, err := readImageTimestamp(timestampFile)
	if err != nil {
		return fmt.Errorf("image refresh: %w", err)
	}
	s, err := imageStore(dataDir, images.Options{Trust: tr})
	if err != nil {
		return fmt.Errorf("image refresh: %w", err)
	}
	t, err := s.UpdateTimestamp(ts)
	if err != nil {
		return fmt.Errorf("REFUSED: image refresh: %w", err)
	}
	fmt.Fprintf(w, "timestamp version %d kept (valid until %s, lists %d image(s))\n", t.Version, t.Expires.Format(time.RFC3339), len(t.Images))
	return nil
}

func runImageList(w io.Writer, dataDir string) error {
	if _, err := os.Stat(filepath.Join(dataDir, images.StoreDir)); errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(w, "no image store in %s: nothing staged (hsmgate image stage)\n", dataDir)
		return nil
	}
	s, err := imageStore(dataDir, images.Options{})
	if err != nil {
		return fmt.Errorf("image list: %w", err)
	}
	list, err := s.List()
	if err != nil {
		return fmt.Errorf("image list: %w", err)
	}
	if len(list) == 0 {
		fmt.Fprintln(w, "no images staged (hsmgate image stage)")
	} else {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "STATUS\tVERSION\tNAME\tTARGET\tACTIVATED\tDIGEST")
		for _, img := range list {
			at := "-"
			if !img.ActivatedAt.IsZero() {
				at = img.ActivatedAt.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%d %s\t%s\t%s\t%s\t%s\n", img.Status, img.Manifest.Version, strconv.Quote(img.Manifest.VersionString),
				strconv.Quote(img.Manifest.Name), strconv.Quote(img.Manifest.Target), at, img.Digest)
		}
		tw.Flush()
	}
	if h, err := s.Highest(); err == nil {
		fmt.Fprintf(w, "highest activated version: %d (in the image store's record; the gateway also checks its TPM counter)\n", h)
	}
	if ts, err := s.Timestamp(); err == nil && ts != nil {
		state := "valid"
		if !time.Now().Before(ts.Expires) {
			state = "EXPIRED"
		}
		fmt.Fprintf(w, "timestamp: version %d, %s until %s, lists %d image(s)\n", ts.Version, state, ts.Expires.Format(time.RFC3339), len(ts.Images))
	}
	return nil
}

// parseKeyArg reads a [NAME=]FILE public key argument.
func parseKeyArg(arg string) (images.TrustedKey, error) {
	name, file, named := strings.Cut(arg, "=")
	if !named {
		name, file = "", arg
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return images.TrustedKey{}, err
	}
	k, officer, err := images.ParsePublicKeyFile(data)
	if err != nil {
		return images.TrustedKey{}, fmt.Errorf("%s: %w", file, err)
	}
	switch {
	case name == "" && officer != "":
		name = officer
	case name == "":
		name = strings.TrimSuffix(filepath.Base(file), filepath.Ext(file))
	}
	return images.TrustedKey{Name: name, Key: k}, nil
}

func runImageTrustInit(w io.Writer, keyArgs []string, threshold int, tsArgs []string, tsThreshold int, version uint64, out string) error {
	tr := &images.Trust{Version: version, ReleaseThreshold: threshold, TimestampThreshold: tsThreshold}
	for _, a := range keyArgs {
		k, err := parseKeyArg(a)
		if err != nil {
			return fmt.Errorf("image trust init: --key: %w", err)
		}
		tr.ReleaseKeys = append(tr.ReleaseKeys, k)
	}
	for _, a := range tsArgs {
		k, err := parseKeyArg(a)
		if err != nil {
			return fmt.Errorf("image trust init: --timestamp-key: %w", err)
		}
		tr.TimestampKeys = append(tr.TimestampKeys, k)
	}
	if len(tr.TimestampKeys) > 0 && tsThreshold == 0 {
		tr.TimestampThreshold = 1
	}
	data, err := tr.Encode()
	if err != nil {
		return fmt.Errorf("image trust init: %w", err)
	}
	if err := createExclusive(out, images.Armor(images.PEMTrust, data), 0o644); err != nil {
		return fmt.Errorf("image trust init: %w", err)
	}
	fmt.Fprintf(w, "wrote %s\n", out)
	printImageTrust(w, tr)
	return nil
}

func printImageTrust(w io.Writer, tr *images.Trust) {
	h, _ := tr.Hash()
	fmt.Fprintf(w, "TRUST version %d\n  hash               %x\n", tr.Version, h)
	fmt.Fprintf(w, "RELEASE KEYS: %d of %d must sign an image\n", tr.ReleaseThreshold, len(tr.ReleaseKeys))
	for _, k := range tr.ReleaseKeys {
		fmt.Fprintf(w, "  %s %s %s\n", k.Key.ID(), k.Key.Scheme, strconv.Quote(k.Name))
	}
	if !tr.FreezeProtection() {
		fmt.Fprintln(w, "TIMESTAMP KEYS: none (freeze protection off)")
		return
	}
	fmt.Fprintf(w, "TIMESTAMP KEYS: %d of %d must sign a timestamp (freeze protection on)\n", tr.TimestampThreshold, len(tr.TimestampKeys))
	for _, k := range tr.TimestampKeys {
		fmt.Fprintf(w, "  %s %s %s\n", k.Key.ID(), k.Key.Scheme, strconv.Quote(k.Name))
	}
}

func runImageTimestamp(w, stderr io.Writer, args, keyFiles []string, expires time.Duration, version uint64, out string) error {
	if len(args) == 0 {
		return errors.New("image timestamp: name the available images: bundle files or image digests, after any flags")
	}
	now := time.Now().UTC().Truncate(time.Second)
	ts := &images.Timestamp{Version: version, Issued: now, Expires: now.Add(expires)}
	if ts.Version == 0 {
		ts.Version = uint64(now.Unix())
	}
	for _, a := range args {
		d, err := images.ParseDigest(a)
		if err != nil {
			env, herr := images.ReadBundleHeader(a)
			if herr != nil {
				return fmt.Errorf("image timestamp: %s is neither an image digest nor a bundle: %w", a, herr)
			}
			d = images.ManifestDigest(env.Manifest)
		}
		ts.Images = append(ts.Images, d)
	}
	var signers []images.Signer
	for _, f := range keyFiles {
		s, err := loadImageSigner(stderr, f)
		if err != nil {
			return fmt.Errorf("image timestamp: %w", err)
		}
		signers = append(signers, s)
	}
	data, err := images.SignTimestamp(ts, signers...)
	if err != nil {
		return fmt.Errorf("image timestamp: %w", err)
	}
	if err := createExclusive(out, images.Armor(images.PEMTimestamp, data), 0o644); err != nil {
		return fmt.Errorf("image timestamp: %w", err)
	}
	fmt.Fprintf(w, "wrote %s: timestamp version %d, valid until %s, listing %d image(s)\n", out, ts.Version, ts.Expires.Format(time.RFC3339), len(ts.Images))
	return nil
}
