package main

// hsmgate quorum: install the first officer quorum set, link officers to
// principals, show the quorum's state (docs/quorum.md). Like the principal
// commands, each works on the keystore while the gateway is stopped and
// through its admin API (as the admin) while it runs.

import (
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/quorum"
)

func quorumCommand() *cli.Command {
	return &cli.Command{
		Name: "quorum",
		Usage: "the officer quorum (docs/quorum.md): install the first quorum set, link officers to principals, show the state; " +
			"on the keystore while the gateway is stopped, through its admin API while it runs",
		Subcommands: []*cli.Command{
			{
				Name:      "init",
				Usage:     "install the first quorum set (epoch 1), with every officer's proof of possession",
				ArgsUsage: " ",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "set", Usage: "the quorum set file (hsmofficer set init)", Required: true},
					&cli.StringSliceFlag{Name: "pop", Usage: "proof of possession files (hsmofficer pop), one per officer", Required: true},
					&cli.StringFlag{Name: "cluster", Usage: "cluster id proposals must name (default [quorum] cluster_id)"},
					&cli.StringFlag{Name: "target", Usage: "this gateway's name in proposals (default [quorum] target)"},
					gatewayListenFlag(),
				},
				Action: func(c *cli.Context) error {
					if err := noArgs(c); err != nil {
						return err
					}
					return runQuorumInit(newPrincipalCmd(c, "quorum init"), c.String("set"), c.StringSlice("pop"), c.String("cluster"), c.String("target"))
				},
			},
			{
				Name:      "link",
				Usage:     "link an officer key (by fingerprint) to a principal, which may then act as that officer on the admin API",
				ArgsUsage: "PRINCIPAL FINGERPRINT",
				Flags:     []cli.Flag{gatewayListenFlag()},
				Action: func(c *cli.Context) error {
					if c.NArg() != 2 {
						return fmt.Errorf("quorum link: want PRINCIPAL FINGERPRINT")
					}
					pc := newPrincipalCmd(c, "quorum link")
					return pc.withAdmin(false, func(call adminCall) error {
						in := gateway.QuorumLinkOfficerInput{PrincipalName: c.Args().Get(0), Fingerprint: c.Args().Get(1)}
						if err := call("QuorumLinkOfficer", in, &struct{}{}); err != nil {
							return pc.fail(err, noPrincipal(in.PrincipalName))
						}
						fmt.Fprintf(pc.stdout, "officer %s linked to principal %s\n", in.Fingerprint, in.PrincipalName)
						return nil
					})
				},
			},
			recoverCommand(),
			{
				Name:      "status",
				Usage:     "show the installed quorum set and the number of pending proposals",
				ArgsUsage: " ",
				Flags:     []cli.Flag{gatewayListenFlag()},
				Action: func(c *cli.Context) error {
					if err := noArgs(c); err != nil {
						return err
					}
					pc := newPrincipalCmd(c, "quorum status")
					return pc.withAdmin(false, func(call adminCall) error {
						var st gateway.QuorumStatusOutput
						if err := call("QuorumStatus", struct{}{}, &st); err != nil {
							return pc.fail(err, "")
						}
						printQuorumStatus(pc.stdout, st)
						return nil
					})
				},
			},
		},
	}
}

func readQuorumFile(path, typ string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	data, err := quorum.DearmorType(raw, typ)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return data, nil
}

func runQuorumInit(pc *principalCmd, setFile string, popFiles []string, cluster, target string) error {
	cfg, err := loadConfig(pc.dataDir, pc.name)
	if err != nil {
		return err
	}
	if cfg.Quorum != nil {
		if cluster == "" {
			cluster = cfg.Quorum.ClusterID
		}
		if target == "" {
			target = cfg.Quorum.Target
		}
	}
	if cluster == "" || target == "" {
		return fmt.Errorf("%s: give --cluster and --target, or set cluster_id and target in the [quorum] section of hsmgate.toml", pc.name)
	}
	in := gateway.QuorumInitInput{ClusterId: cluster, Target: target}
	if in.Set, err = readQuorumFile(setFile, quorum.PEMSet); err != nil {
		return fmt.Errorf("%s: %w", pc.name, err)
	}
	for _, f := range popFiles {
		pop, err := readQuorumFile(f, quorum.PEMPossession)
		if err != nil {
			return fmt.Errorf("%s: %w", pc.name, err)
		}
		in.ProofsOfPossession = append(in.ProofsOfPossession, pop)
	}
	return pc.withAdmin(false, func(call adminCall) error {
		var st gateway.QuorumStatusOutput
		if err := call("QuorumInit", in, &st); err != nil {
			return pc.fail(err, "")
		}
		fmt.Fprintln(pc.stdout, "quorum set installed")
		printQuorumStatus(pc.stdout, st)
		fmt.Fprintf(pc.stdout, "link each officer to a principal: hsmgate quorum link PRINCIPAL FINGERPRINT\n")
		return nil
	})
}

func printQuorumStatus(w io.Writer, st gateway.QuorumStatusOutput) {
	if !st.Installed {
		fmt.Fprintln(w, "no quorum set installed (hsmgate quorum init)")
		return
	}
	fmt.Fprintf(w, "quorum set epoch %d, hash %s\ncluster %q, target %q\n", st.Epoch, st.SetHash, st.ClusterId, st.Target)
	fmt.Fprintln(w, "officers")
	for _, o := range st.Officers {
		fmt.Fprintf(w, "  %s %q principal %s\n", o.Fingerprint, o.Name, dash(o.Principal))
	}
	fmt.Fprintln(w, "thresholds")
	for _, k := range quorum.Kinds {
		fmt.Fprintf(w, "  %-22s %d of %d\n", k, st.Thresholds[string(k)], len(st.Officers))
	}
	fmt.Fprintf(w, "pending proposals: %d\n", st.Pending)
}
