// Command hsmofficer is the security officer's tool for hsmgate's quorum
// (package quorum): it makes and keeps an officer key, shows proposals in
// plain text, approves or rejects them offline (on an air-gapped machine
// if need be), tallies approvals, and unwraps the officer's share of a
// split secret. It is pure Go (no cgo), so officers can build it for their
// own machines.
//
//	hsmofficer keygen --out FILE      new officer key, encrypted under a passphrase
//	hsmofficer pubkey --key FILE      the officer's public key record
//	hsmofficer show PROPOSAL          a proposal as text, before signing it
//	hsmofficer approve …              sign a proposal file, write an approval file
//	hsmofficer reject …               sign a refusal with a reason
//	hsmofficer verify …               tally approval files against a quorum set
//	hsmofficer pop …                  proof of possession for a new quorum set
//	hsmofficer set init|show|edit|apply   build, show, change quorum-set files
//	hsmofficer draft firmware|set-change  make a proposal file offline
//	hsmofficer unwrap-share …         decrypt the officer's share of a split secret
//	hsmofficer combine …              recover a secret from enough shares
//
// and online, against the gateway's quorum API over mutual TLS as the
// officer's principal (online.go):
//
//	hsmofficer propose --endpoint URL --cert C --key K --ca CA [--pop F] PROPOSAL-FILE
//	hsmofficer list|status …                      pending proposals, the quorum set
//	hsmofficer show --endpoint … [--out F] REQUEST-ID   a pending proposal (and its file)
//	hsmofficer approve|reject --endpoint … FILE   submit an approval or rejection file
//
// Passphrases are read from the terminal, or from HSMOFFICER_PASSPHRASE
// for scripts.
package main

import (
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/hsmgate/hsmgate/internal/cliexit"
	"github.com/hsmgate/hsmgate/quorum"
)

// keyFileOptions are passed to quorum.EncryptKeyFile. Empty: the
// production Argon2id parameters. Tests lower them.
var keyFileOptions []quorum.KeyFileOption

func main() {
	os.Exit(run(os.Args, os.Stdin, os.Stdout, os.Stderr))
}

// run runs the command line and returns the exit status, so tests can run
// it in-process.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return cliexit.Run(newApp(stdin, stdout, stderr), args, stderr)
}

// passphraseEnv names the variable that supplies the passphrase to scripts.
const passphraseEnv = "HSMOFFICER_PASSPHRASE"

func newApp(stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	tl := &tool{in: stdin, out: stdout, err: stderr}
	keyFlag := &cli.StringFlag{Name: "key", Usage: "the officer's key file (from keygen)", Required: true}
	outFlag := &cli.StringFlag{Name: "out", Usage: "file to write (refused if it exists)", Required: true}
	// approve and reject: offline, the officer key and the file to write;
	// online (--endpoint), --key is the TLS client key and there is no --out.
	dualKeyFlag := &cli.StringFlag{Name: "key", Usage: "offline: the officer's key file (from keygen); online: your client certificate's key"}
	dualOutFlag := &cli.StringFlag{Name: "out", Usage: "offline: file to write (refused if it exists)"}
	return &cli.App{
		Name:            "hsmofficer",
		Usage:           "security officer's tool for hsmgate's quorum: keys, offline approvals, shares",
		Reader:          stdin,
		Writer:          stdout,
		ErrWriter:       stderr,
		HideHelpCommand: true,
		// cliexit.Run reports errors and returns the status; the default
		// handler would exit the process (and a test running it in-process).
		ExitErrHandler: func(*cli.Context, error) {},
		Commands: []*cli.Command{
			{
				Name:  "keygen",
				Usage: "make a new officer key (Ed25519 + ML-DSA-65, and HPKE keys) encrypted under a passphrase",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "out", Usage: "key file to write (mode 0600; refused if it exists)", Required: true},
					&cli.StringFlag{Name: "name", Usage: "the officer's name as others will see it (printable ASCII), default user@host"},
					&cli.StringFlag{Name: "pub", Usage: "also write the public key record to this file"},
					&cli.StringFlag{Name: "token", Usage: "make the Ed25519 half in this PKCS#11 token (by label; module from " + pkcs11ModuleEnv + ", PIN from " + tokenPINEnv + " or the terminal; needs hsmofficer built with -tags pkcs11)"},
					&cli.StringFlag{Name: "token-key-label", Value: "hsmgate-officer", Usage: "with --token: the label of the key made in the token"},
				},
				Action: func(c *cli.Context) error {
					return tl.keygen(c.String("out"), c.String("name"), c.String("pub"), c.String("token"), c.String("token-key-label"))
				},
			},
			{
				Name:  "pubkey",
				Usage: "print (or write) the officer's public key record, after checking the passphrase",
				Flags: []cli.Flag{keyFlag, &cli.StringFlag{Name: "out", Usage: "write it to this file instead of standard output"}},
				Action: func(c *cli.Context) error {
					return tl.pubkey(c.String("key"), c.String("out"))
				},
			},
			{
				Name:      "show",
				Usage:     "show a proposal (or any hsmofficer file) as text",
				ArgsUsage: "FILE",
				Flags: append([]cli.Flag{&cli.StringFlag{Name: "set", Usage: "the current quorum set: check the proposal against it and show a set change as a difference"},
					&cli.StringFlag{Name: "out", Usage: "online: also write the proposal file"}}, onlineFlags(true)...),
				Action: func(c *cli.Context) error {
					file, err := oneArg(c, "FILE (online: REQUEST-ID)")
					if err != nil {
						return err
					}
					if c.String("endpoint") != "" {
						return tl.onlineShow(c, file, c.String("out"))
					}
					return tl.show(file, c.String("set"))
				},
			},
			{
				Name:      "approve",
				Usage:     "show a proposal, ask, and sign it: writes an approval file (offline)",
				ArgsUsage: "PROPOSAL-FILE",
				Flags: append([]cli.Flag{dualKeyFlag, dualOutFlag,
					&cli.StringFlag{Name: "set", Usage: "the current quorum set: refuse a proposal made for another"},
					&cli.BoolFlag{Name: "yes", Usage: "do not ask for confirmation (the proposal is still shown)"},
				}, onlineFlags(false)...),
				Action: func(c *cli.Context) error {
					file, err := oneArg(c, "PROPOSAL-FILE (online: APPROVAL-FILE)")
					if err != nil {
						return err
					}
					if c.String("endpoint") != "" {
						return tl.onlineSubmit(c, file, false)
					}
					if err := offlineNeeds(c, "key", "out"); err != nil {
						return err
					}
					return tl.approve(file, c.String("key"), c.String("out"), c.String("set"), c.Bool("yes"))
				},
			},
			{
				Name:      "reject",
				Usage:     "sign a refusal of a proposal, with a reason: writes a rejection file",
				ArgsUsage: "PROPOSAL-FILE",
				Flags: append([]cli.Flag{dualKeyFlag, dualOutFlag,
					&cli.StringFlag{Name: "reason", Usage: "why (printable ASCII, one line)"},
				}, onlineFlags(false)...),
				Action: func(c *cli.Context) error {
					file, err := oneArg(c, "PROPOSAL-FILE (online: REJECTION-FILE)")
					if err != nil {
						return err
					}
					if c.String("endpoint") != "" {
						return tl.onlineSubmit(c, file, true)
					}
					if err := offlineNeeds(c, "key", "out", "reason"); err != nil {
						return err
					}
					return tl.reject(file, c.String("key"), c.String("out"), c.String("reason"))
				},
			},
			{
				Name:      "verify",
				Usage:     "tally approval (and rejection) files of a proposal against a quorum set; exit status 0 only if the threshold is met",
				ArgsUsage: "PROPOSAL-FILE APPROVAL-FILE...",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "set", Usage: "the quorum set file", Required: true},
					&cli.StringFlag{Name: "cluster", Usage: "the cluster id the proposal must name (default: the proposal's, unchecked)"},
					&cli.StringFlag{Name: "target", Usage: "the gateway the proposal must name (default: the proposal's, unchecked)"},
					&cli.TimestampFlag{Name: "at", Layout: "2006-01-02T15:04:05Z07:00", Usage: "tally as of this RFC 3339 time instead of now"},
				},
				Action: func(c *cli.Context) error {
					if c.NArg() < 1 {
						return usageError(c, "PROPOSAL-FILE and the approval files are needed")
					}
					return tl.verify(c.String("set"), c.Args().First(), c.Args().Tail(), c.String("cluster"), c.String("target"), c.Timestamp("at"))
				},
			},
			{
				Name:  "pop",
				Usage: "sign a proof of possession of your key for a (new) quorum set that includes it",
				Flags: []cli.Flag{keyFlag, outFlag, &cli.StringFlag{Name: "set", Usage: "the new quorum set file", Required: true}},
				Action: func(c *cli.Context) error {
					return tl.pop(c.String("key"), c.String("set"), c.String("out"))
				},
			},
			setCommand(tl),
			draftCommand(tl),
			{
				Name:      "propose",
				Usage:     "online: submit a proposal file (from draft) to the gateway, with the proofs of possession of keys a set change adds",
				ArgsUsage: "PROPOSAL-FILE",
				Flags:     append([]cli.Flag{&cli.StringSliceFlag{Name: "pop", Usage: "a proof of possession file (repeat it)"}}, onlineFlags(true)...),
				Action: func(c *cli.Context) error {
					file, err := oneArg(c, "PROPOSAL-FILE")
					if err != nil {
						return err
					}
					return tl.onlinePropose(c, file, c.StringSlice("pop"))
				},
			},
			{
				Name:      "list",
				Usage:     "online: list the gateway's pending proposals",
				ArgsUsage: " ",
				Flags:     onlineFlags(true),
				Action:    func(c *cli.Context) error { return tl.onlineList(c) },
			},
			{
				Name:      "status",
				Usage:     "online: show the gateway's quorum set (and write it to a file with --set-out)",
				ArgsUsage: " ",
				Flags:     append([]cli.Flag{&cli.StringFlag{Name: "set-out", Usage: "write the quorum set file"}}, onlineFlags(true)...),
				Action:    func(c *cli.Context) error { return tl.onlineStatus(c, c.String("set-out")) },
			},
			{
				Name:      "verify-gateway",
				Usage:     "check the gateway's TPM attestation (fresh nonce, this connection's TLS key) against its enrollment record and the golden policy, before trusting it",
				ArgsUsage: " ",
				Flags: append([]cli.Flag{
					&cli.StringFlag{Name: "enrollment", Usage: "the gateway TPM's enrollment record (hsmgate attest enroll)", Required: true},
					&cli.StringFlag{Name: "policy", Usage: "the golden policy file (hsmgate attest golden)", Required: true},
				}, onlineFlags(true)...),
				Action: func(c *cli.Context) error { return tl.verifyGateway(c, c.String("enrollment"), c.String("policy")) },
			},
			{
				Name:      "unwrap-share",
				Usage:     "decrypt your share of a split secret (for a recovery ceremony); the output is secret",
				ArgsUsage: "ENCRYPTED-SHARE-FILE",
				Flags:     []cli.Flag{keyFlag, &cli.StringFlag{Name: "out", Usage: "plain share file to write (mode 0600)", Required: true}},
				Action: func(c *cli.Context) error {
					file, err := oneArg(c, "ENCRYPTED-SHARE-FILE")
					if err != nil {
						return err
					}
					return tl.unwrapShare(file, c.String("key"), c.String("out"))
				},
			},
			{
				Name:      "recovery-share",
				Usage:     "for a domain-key recovery: decrypt your share and seal it to the recovering gateway named by the approved proposal",
				ArgsUsage: "ENCRYPTED-SHARE-FILE",
				Flags: []cli.Flag{keyFlag,
					&cli.StringFlag{Name: "proposal", Usage: "the domain-recovery proposal file", Required: true},
					&cli.StringFlag{Name: "set", Usage: "the current quorum set: refuse a proposal made for another"},
					&cli.StringFlag{Name: "out", Usage: "recovery share file to write (only the recovering gateway can open it)", Required: true}},
				Action: func(c *cli.Context) error {
					file, err := oneArg(c, "ENCRYPTED-SHARE-FILE")
					if err != nil {
						return err
					}
					return tl.recoveryShare(file, c.String("key"), c.String("proposal"), c.String("set"), c.String("out"))
				},
			},
			{
				Name:      "fetch-result",
				Usage:     "fetch what an executed proposal produced: an exported key record, or a key operation's response",
				ArgsUsage: "REQUEST-ID",
				Flags:     append([]cli.Flag{&cli.StringFlag{Name: "out", Usage: "file to write the exported key record to (key exports)"}}, onlineFlags(true)...),
				Action: func(c *cli.Context) error {
					id, err := oneArg(c, "REQUEST-ID")
					if err != nil {
						return err
					}
					return tl.fetchResult(c, id, c.String("out"))
				},
			},
			{
				Name:      "unwrap-export",
				Usage:     "open a key exported to you; the output is the key itself (raw bytes, or a PKCS#8 PEM for key pairs): secret",
				ArgsUsage: "EXPORTED-KEY-FILE",
				Flags:     []cli.Flag{keyFlag, &cli.StringFlag{Name: "out", Usage: "file for the key (mode 0600)", Required: true}},
				Action: func(c *cli.Context) error {
					file, err := oneArg(c, "EXPORTED-KEY-FILE")
					if err != nil {
						return err
					}
					return tl.unwrapExport(file, c.String("key"), c.String("out"))
				},
			},
			{
				Name:      "combine",
				Usage:     "recover a split secret from enough plain shares (on the recovery machine)",
				ArgsUsage: "SHARE-FILE...",
				Flags:     []cli.Flag{&cli.StringFlag{Name: "out", Usage: "file for the secret (mode 0600)", Required: true}},
				Action: func(c *cli.Context) error {
					if c.NArg() < 1 {
						return usageError(c, "share files are needed")
					}
					return tl.combine(c.Args().Slice(), c.String("out"))
				},
			},
		},
	}
}

func oneArg(c *cli.Context, name string) (string, error) {
	if c.NArg() != 1 {
		return "", usageError(c, "exactly one "+name+" is needed")
	}
	return c.Args().First(), nil
}

func usageError(c *cli.Context, msg string) error {
	return cli.Exit("usage: hsmofficer "+c.Command.Name+" "+c.Command.ArgsUsage+": "+msg, 2)
}
