// Command hsmgate is the HSM gateway and its local administration tool.
//
//	hsmgate init               create a development gateway: a pool of SoftHSM2
//	                           tokens, its domain key, the gateway's CA and TLS
//	                           certificate (keys in the HSM) and the admin
//	hsmgate serve              serve the AWS KMS API over HTTPS until SIGINT/SIGTERM
//	hsmgate env                shell exports pointing the AWS CLI at the gateway
//	hsmgate principal …        principals, their access keys and certificates
//	                           (gateway stopped or running)
//	hsmgate pool check         show every slot and run a round trip on each
//	hsmgate xks …              external key stores for AWS KMS: their credentials
//	                           and keys (gateway stopped or running)
//	hsmgate apply FILE         make the running gateway's keys match a TOML
//	                           file (keys as code; --plan shows the changes)
//	hsmgate attest …           the gateway's TPM: seal the HSM PINs to the
//	                           measured boot, enroll, golden policy, verify
//
// Everything lives in the data folder (--data, default ./data); see
// docs/configuration.md.
//
// This file only wires the commands together; each command's work is in a
// file named after it.
package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/hsmgate/hsmgate/internal/cliexit"

	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/gateway/audit"
)

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

// run runs the command line args and returns the process exit status. It
// never calls os.Exit itself, so tests can run it in-process too.
func run(args []string, stdout, stderr io.Writer) int {
	return cliexit.Run(newApp(stdout, stderr), args, stderr)
}

func newApp(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:  "hsmgate",
		Usage: "HSM gateway: a self-hosted KMS over a pool of PKCS#11 slots",
		Flags: []cli.Flag{
			&cli.StringFlag{
				Name:    "data",
				Usage:   "data folder: hsmgate.toml, the keystore, the gateway's certificates and the admin's credentials (and, for a dev pool, its SoftHSM2 tokens)",
				EnvVars: []string{"HSMGATE_DATA"},
				Value:   "./data",
			},
			&cli.BoolFlag{
				Name:    "verbose",
				Aliases: []string{"v"},
				Usage:   "log slot state changes and other detail to stderr",
			},
		},
		Commands: []*cli.Command{
			{
				Name:  "init",
				Usage: "create a development gateway in the data folder: SoftHSM2 tokens, their domain key, the gateway's CA and TLS certificate, and the admin's credentials",
				Flags: []cli.Flag{
					&cli.IntFlag{Name: "tokens", Value: 4, Usage: "number of SoftHSM2 tokens (slots) to create"},
					&cli.StringSliceFlag{Name: "host", Usage: "a DNS name or IP address for the server certificate (repeat it for more; default localhost, 127.0.0.1 and ::1)"},
					&cli.StringFlag{Name: "attest", Value: initAttestAuto, Usage: "TPM attestation of the development gateway: auto (hsmgate's own swtpm if swtpm is installed, else off), swtpm or off"},
					&cli.StringFlag{Name: "quorum-set", Usage: "install this first quorum set (hsmofficer set init) and split the new domain key among its officers"},
					&cli.StringSliceFlag{Name: "pop", Usage: "with --quorum-set: every officer's proof of possession file (hsmofficer pop)"},
					&cli.StringFlag{Name: "cluster", Usage: "with --quorum-set: the cluster id proposals must name (default [quorum] cluster_id)"},
					&cli.StringFlag{Name: "target", Usage: "with --quorum-set: this gateway's name in proposals (default [quorum] target)"},
				},
				Action: func(c *cli.Context) error {
					qf := quorumFlags{set: c.String("quorum-set"), pops: c.StringSlice("pop"), cluster: c.String("cluster"), target: c.String("target")}
					return runInit(c.Context, c.String("data"), c.Int("tokens"), c.StringSlice("host"), c.String("attest"), qf, c.App.Writer, newLogger(c))
				},
			},
			{
				Name:      "serve",
				Usage:     "serve the AWS KMS API over HTTPS (mTLS and SigV4) until SIGINT or SIGTERM",
				ArgsUsage: " ",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "listen", Usage: "address to listen on, host:port (default: gateway.listen of the configuration)"},
				},
				Action: func(c *cli.Context) error {
					if err := noArgs(c); err != nil {
						return err
					}
					return runServe(c.Context, c.String("data"), c.String("listen"), c.App.Writer, newServeLogger(c))
				},
			},
			{
				Name:  "env",
				Usage: `print shell exports that point the AWS CLI and SDKs at the gateway as its admin: eval "$(hsmgate env)"`,
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "listen", Usage: "the address the gateway listens on, if not gateway.listen (as given to serve --listen)"},
				},
				Action: func(c *cli.Context) error {
					if err := noArgs(c); err != nil {
						return err
					}
					return runEnv(c.String("data"), c.String("listen"), c.App.Writer)
				},
			},
			quorumCommand(),
			clusterCommand(),
			{
				Name: "principal",
				Usage: "manage principals, their access keys and client certificates: on the keystore while the gateway is stopped, " +
					"through its admin API (mTLS as the admin) while it runs",
				Subcommands: []*cli.Command{
					{
						Name:      "add",
						Usage:     "add a principal",
						ArgsUsage: "NAME",
						Flags: []cli.Flag{
							&cli.BoolFlag{Name: "admin", Usage: "the principal is an administrator: it may use every key and the admin API"},
							&cli.BoolFlag{Name: "role", Usage: "the principal is a role: its ARN is arn:aws:iam::ACCOUNT:role/NAME, not user/NAME"},
							&cli.StringFlag{Name: "service", Usage: "the principal is this integrated service (a DNS label such as storage): its requests carry kms:ViaService SERVICE.REGION.amazonaws.com"},
							&cli.StringSliceFlag{Name: "tag", Usage: "a tag KEY=VALUE, for aws:PrincipalTag/KEY in key policies (repeat it for more)"},
							gatewayListenFlag(),
						},
						Action: func(c *cli.Context) error {
							name, err := oneArg(c, "NAME")
							if err != nil {
								return err
							}
							tags, err := parseTags(c.StringSlice("tag"))
							if err != nil {
								return fmt.Errorf("principal add: --tag: %w", err)
							}
							in := gateway.AdminCreatePrincipalInput{PrincipalName: name, Admin: c.Bool("admin"), Service: c.String("service"), Tags: tags}
							if c.Bool("role") {
								in.Kind = "role"
							}
							return runPrincipalAdd(newPrincipalCmd(c, "principal add"), in)
						},
					},
					{
						Name:  "list",
						Usage: "list the principals: kind, service, tags and access keys",
						Flags: []cli.Flag{gatewayListenFlag()},
						Action: func(c *cli.Context) error {
							if err := noArgs(c); err != nil {
								return err
							}
							return runPrincipalList(newPrincipalCmd(c, "principal list"))
						},
					},
					{
						Name:      "create-access-key",
						Usage:     "create a SigV4 access key for a principal and print its secret, once",
						ArgsUsage: "NAME",
						Flags:     []cli.Flag{gatewayListenFlag()},
						Action: func(c *cli.Context) error {
							name, err := oneArg(c, "NAME")
							if err != nil {
								return err
							}
							return runCreateAccessKey(newPrincipalCmd(c, "principal create-access-key"), name)
						},
					},
					{
						Name:      "show",
						Usage:     "show a principal: its ARN, kind, service, tags, access keys and how many keys it created",
						ArgsUsage: "NAME",
						Flags:     []cli.Flag{gatewayListenFlag()},
						Action: func(c *cli.Context) error {
							name, err := oneArg(c, "NAME")
							if err != nil {
								return err
							}
							return runPrincipalShow(newPrincipalCmd(c, "principal show"), name)
						},
					},
					{
						Name:      "tag",
						Usage:     "set tags of a principal (a tag it has gets the new value)",
						ArgsUsage: "NAME KEY=VALUE...",
						Flags:     []cli.Flag{gatewayListenFlag()},
						Action: func(c *cli.Context) error {
							if c.NArg() < 2 {
								return fmt.Errorf("principal tag: want NAME and at least one KEY=VALUE, after any flags; got %q", c.Args().Slice())
							}
							tags, err := parseTags(c.Args().Tail())
							if err != nil {
								return fmt.Errorf("principal tag: %w", err)
							}
							return runPrincipalTag(newPrincipalCmd(c, "principal tag"), c.Args().First(), tags)
						},
					},
					{
						Name:      "untag",
						Usage:     "remove tags from a principal",
						ArgsUsage: "NAME KEY...",
						Flags:     []cli.Flag{gatewayListenFlag()},
						Action: func(c *cli.Context) error {
							if c.NArg() < 2 {
								return fmt.Errorf("principal untag: want NAME and at least one KEY, after any flags; got %q", c.Args().Slice())
							}
							return runPrincipalUntag(newPrincipalCmd(c, "principal untag"), c.Args().First(), c.Args().Tail())
						},
					},
					{
						Name:      "rm",
						Usage:     "remove a principal and revoke its access keys (its keys stay, for the admin)",
						ArgsUsage: "NAME",
						Flags:     []cli.Flag{gatewayListenFlag()},
						Action: func(c *cli.Context) error {
							name, err := oneArg(c, "NAME")
							if err != nil {
								return err
							}
							return runPrincipalRemove(newPrincipalCmd(c, "principal rm"), name)
						},
					},
					{
						Name:      "issue-cert",
						Usage:     "issue a TLS client certificate for a principal from the gateway's CA (its key is in the HSMs); the client's key is made here and never sent",
						ArgsUsage: "NAME",
						Flags:     []cli.Flag{&cli.StringFlag{Name: "out", Usage: "folder to write client.pem and client.key to", Required: true}, gatewayListenFlag()},
						Action: func(c *cli.Context) error {
							name, err := oneArg(c, "NAME")
							if err != nil {
								return err
							}
							return runIssueCert(newPrincipalCmd(c, "principal issue-cert"), name, c.String("out"))
						},
					},
					{
						Name:      "revoke",
						Aliases:   []string{"revoke-access-key"},
						Usage:     "revoke an access key for good, at once",
						ArgsUsage: "ACCESS-KEY-ID",
						Flags:     []cli.Flag{gatewayListenFlag()},
						Action: func(c *cli.Context) error {
							akid, err := oneArg(c, "ACCESS-KEY-ID")
							if err != nil {
								return err
							}
							return runRevokeAccessKey(newPrincipalCmd(c, "principal revoke"), akid)
						},
					},
				},
			},
			xksCommand(),
			attestCommand(),
			imageCommand(),
			{
				Name: "apply",
				Usage: "make the running gateway's keys match a TOML file: keys, aliases, descriptions, tags, key policies, rotation, " +
					"state and scheduled deletion (keys as code; see docs/operations.md)",
				ArgsUsage: "FILE",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "plan", Usage: "print what would change, and change nothing"},
					gatewayListenFlag(),
				},
				Action: func(c *cli.Context) error {
					file, err := oneArg(c, "FILE")
					if err != nil {
						return err
					}
					return runApply(newPrincipalCmd(c, "apply"), file, c.Bool("plan"))
				},
			},
			{
				Name:  "audit",
				Usage: "check and search the audit log",
				Subcommands: []*cli.Command{
					{
						Name:  "verify",
						Usage: "check the hash chain and the signed checkpoints; names the first altered, inserted, deleted or truncated record",
						Flags: []cli.Flag{
							&cli.StringFlag{Name: "dir", Usage: "the audit log folder (default DATA/audit)"},
							&cli.StringFlag{Name: "public-key", Usage: "the audit key's public half, PEM (default DATA/pki/audit-key.pem)"},
						},
						Action: func(c *cli.Context) error {
							return runAuditVerify(c.String("data"), c.String("dir"), c.String("public-key"), c.App.Writer)
						},
					},
					{
						Name:  "query",
						Usage: "print the records that match, as JSON lines (unverified: run verify first)",
						Flags: []cli.Flag{
							&cli.StringFlag{Name: "key", Usage: "key id"},
							&cli.StringFlag{Name: "principal"},
							&cli.StringFlag{Name: "operation"},
							&cli.StringFlag{Name: "from", Usage: "RFC 3339 time, inclusive"},
							&cli.StringFlag{Name: "to", Usage: "RFC 3339 time, exclusive"},
						},
						Action: func(c *cli.Context) error {
							from, err := parseTime(c.String("from"))
							if err != nil {
								return fmt.Errorf("--from: %w", err)
							}
							to, err := parseTime(c.String("to"))
							if err != nil {
								return fmt.Errorf("--to: %w", err)
							}
							return runAuditQuery(c.String("data"), audit.Filter{KeyID: c.String("key"), Principal: c.String("principal"),
								Operation: c.String("operation"), From: from, To: to}, c.App.Writer)
						},
					},
				},
			},
			{
				Name:  "pool",
				Usage: "inspect the HSM pool",
				Subcommands: []*cli.Command{
					{
						Name:  "check",
						Usage: "show every slot and run an encrypt/decrypt and sign/verify round trip on each healthy one",
						Action: func(c *cli.Context) error {
							return runPoolCheck(c.Context, c.String("data"), c.App.Writer, newLogger(c))
						},
					},
				},
			},
		},
		Writer:    stdout,
		ErrWriter: stderr,
		// run reports errors and chooses the exit status; urfave/cli must
		// not exit the process on its own.
		ExitErrHandler:  func(*cli.Context, error) {},
		HideHelpCommand: true,
		Suggest:         true,
	}
}

// oneArg returns the command's only argument, named what in errors.
func oneArg(c *cli.Context, what string) (string, error) {
	if c.NArg() != 1 {
		return "", fmt.Errorf("%s: want one argument, %s, after any flags; got %q", strings.TrimPrefix(c.Command.HelpName, c.App.Name+" "), what, c.Args().Slice())
	}
	return c.Args().First(), nil
}

// noArgs refuses arguments to a command that takes none (a flag after an
// argument is an argument to urfave/cli, and would otherwise be ignored).
func noArgs(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("%s takes no arguments; got %q", strings.TrimPrefix(c.Command.HelpName, c.App.Name+" "), c.Args().Slice())
	}
	return nil
}

// newServeLogger is the gateway's log: JSON lines on the app's stderr, at
// info (debug with --verbose).
func newServeLogger(c *cli.Context) *slog.Logger {
	level := slog.LevelInfo
	if c.Bool("verbose") {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewJSONHandler(c.App.ErrWriter, &slog.HandlerOptions{Level: level}))
}

// newLogger logs to the app's stderr: warnings only, unless --verbose.
func newLogger(c *cli.Context) *slog.Logger {
	level := slog.LevelWarn
	if c.Bool("verbose") {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(c.App.ErrWriter, &slog.HandlerOptions{Level: level}))
}
