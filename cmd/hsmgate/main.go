// Command hsmgate is the HSM gateway and its local administration tool.
//
//	hsmgate init               create a development gateway: a pool of SoftHSM2
//	                           tokens, its domain key, the gateway's CA and TLS
//	                           certificate (keys in the HSM) and the admin
//	hsmgate serve              serve the AWS KMS API over HTTPS until SIGINT/SIGTERM
//	hsmgate env                shell exports pointing the AWS CLI at the gateway
//	hsmgate principal …        principals and their access keys (gateway stopped)
//	hsmgate pool check         show every slot and run a round trip on each
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
				},
				Action: func(c *cli.Context) error {
					return runInit(c.Context, c.String("data"), c.Int("tokens"), c.StringSlice("host"), c.App.Writer, newLogger(c))
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
			{
				Name:  "principal",
				Usage: "manage principals and their access keys (while the gateway is stopped)",
				Subcommands: []*cli.Command{
					{
						Name:      "add",
						Usage:     "add a principal",
						ArgsUsage: "NAME",
						Flags:     []cli.Flag{&cli.BoolFlag{Name: "admin", Usage: "the principal may use every key"}},
						Action: func(c *cli.Context) error {
							name, err := oneArg(c, "NAME")
							if err != nil {
								return err
							}
							return runPrincipalAdd(c.String("data"), name, c.Bool("admin"), c.App.Writer)
						},
					},
					{
						Name:  "list",
						Usage: "list the principals and their access keys",
						Action: func(c *cli.Context) error {
							if err := noArgs(c); err != nil {
								return err
							}
							return runPrincipalList(c.String("data"), c.App.Writer)
						},
					},
					{
						Name:      "create-access-key",
						Usage:     "create a SigV4 access key for a principal and print its secret, once",
						ArgsUsage: "NAME",
						Action: func(c *cli.Context) error {
							name, err := oneArg(c, "NAME")
							if err != nil {
								return err
							}
							return runCreateAccessKey(c.Context, c.String("data"), name, c.App.Writer, c.App.ErrWriter, newLogger(c))
						},
					},
					{
						Name:      "show",
						Usage:     "show a principal: its ARN, access keys and how many keys it created",
						ArgsUsage: "NAME",
						Action: func(c *cli.Context) error {
							name, err := oneArg(c, "NAME")
							if err != nil {
								return err
							}
							return runPrincipalShow(c.String("data"), name, c.App.Writer)
						},
					},
					{
						Name:      "rm",
						Usage:     "remove a principal and revoke its access keys (its keys stay, for the admin)",
						ArgsUsage: "NAME",
						Action: func(c *cli.Context) error {
							name, err := oneArg(c, "NAME")
							if err != nil {
								return err
							}
							return runPrincipalRemove(c.String("data"), name, c.App.Writer)
						},
					},
					{
						Name:      "issue-cert",
						Usage:     "issue a TLS client certificate for a principal from the gateway's CA (its key is in the HSMs)",
						ArgsUsage: "NAME",
						Flags:     []cli.Flag{&cli.StringFlag{Name: "out", Usage: "folder to write client.pem and client.key to", Required: true}},
						Action: func(c *cli.Context) error {
							name, err := oneArg(c, "NAME")
							if err != nil {
								return err
							}
							return runIssueCert(c.Context, c.String("data"), name, c.String("out"), c.App.Writer, newLogger(c))
						},
					},
					{
						Name:      "revoke-access-key",
						Usage:     "revoke an access key for good",
						ArgsUsage: "ACCESS-KEY-ID",
						Action: func(c *cli.Context) error {
							akid, err := oneArg(c, "ACCESS-KEY-ID")
							if err != nil {
								return err
							}
							return runRevokeAccessKey(c.String("data"), akid, c.App.Writer)
						},
					},
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
