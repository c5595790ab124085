package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hsmgate/hsmgate/quorum"
)

var thresholdFlag = &cli.StringSliceFlag{
	Name:  "threshold",
	Usage: "N for every operation kind, or KIND=N for one (kinds: key-export, domain-recovery, firmware-activation, set-change, key-operation); repeat it",
}

// applyThresholds sets th from --threshold values, in order.
func applyThresholds(th map[quorum.Kind]int, specs []string) error {
	for _, spec := range specs {
		kind, n, ok := strings.Cut(spec, "=")
		if !ok {
			n, kind = kind, ""
		}
		v, err := strconv.Atoi(n)
		if err != nil {
			return fmt.Errorf("--threshold %q: want N or KIND=N", spec)
		}
		if kind == "" {
			for _, k := range quorum.Kinds {
				th[k] = v
			}
			continue
		}
		if !quorum.Kind(kind).Valid() {
			return fmt.Errorf("--threshold %q: unknown kind %q", spec, kind)
		}
		th[quorum.Kind(kind)] = v
	}
	return nil
}

func setCommand(t *tool) *cli.Command {
	return &cli.Command{
		Name:  "set",
		Usage: "quorum-set files: make the first one, show one, make the next one, apply an approved change",
		Subcommands: []*cli.Command{
			{
				Name:      "init",
				Usage:     "make the first quorum set (epoch 1) from officers' public key files; each officer then signs a proof of possession (pop) for it",
				ArgsUsage: "PUBLIC-KEY-FILE...",
				Flags:     []cli.Flag{thresholdFlag, &cli.StringFlag{Name: "out", Usage: "set file to write", Required: true}},
				Action: func(c *cli.Context) error {
					s := &quorum.Set{Epoch: 1, Thresholds: map[quorum.Kind]int{}}
					for _, f := range c.Args().Slice() {
						pub, err := readPublic(f)
						if err != nil {
							return err
						}
						s.Officers = append(s.Officers, pub)
					}
					if err := applyThresholds(s.Thresholds, c.StringSlice("threshold")); err != nil {
						return err
					}
					return t.writeSet(s, c.String("out"))
				},
			},
			{
				Name:      "show",
				Usage:     "show a quorum set",
				ArgsUsage: "SET-FILE",
				Action: func(c *cli.Context) error {
					f, err := oneArg(c, "SET-FILE")
					if err != nil {
						return err
					}
					s, err := readSet(f)
					if err != nil {
						return err
					}
					t.printf("%s", s.Render())
					return nil
				},
			},
			{
				Name:      "edit",
				Usage:     "make the next quorum set (epoch + 1): add or remove officers, change thresholds",
				ArgsUsage: "CURRENT-SET-FILE",
				Flags: []cli.Flag{
					&cli.StringSliceFlag{Name: "add", Usage: "public key file of an officer to add (repeat it)"},
					&cli.StringSliceFlag{Name: "remove", Usage: "fingerprint of an officer to remove (repeat it)"},
					thresholdFlag,
					&cli.StringFlag{Name: "out", Usage: "next set file to write", Required: true},
				},
				Action: func(c *cli.Context) error {
					f, err := oneArg(c, "CURRENT-SET-FILE")
					if err != nil {
						return err
					}
					cur, err := readSet(f)
					if err != nil {
						return err
					}
					next := &quorum.Set{Epoch: cur.Epoch + 1, Thresholds: map[quorum.Kind]int{}}
					for k, v := range cur.Thresholds {
						next.Thresholds[k] = v
					}
					remove := map[quorum.Fingerprint]bool{}
					for _, s := range c.StringSlice("remove") {
						fp, err := quorum.ParseFingerprint(s)
						if err != nil {
							return err
						}
						if _, ok := cur.Officer(fp); !ok {
							return fmt.Errorf("--remove %s: not an officer of the current set", s)
						}
						remove[fp] = true
					}
					for _, o := range cur.Officers {
						if !remove[o.Fingerprint()] {
							next.Officers = append(next.Officers, o)
						}
					}
					for _, f := range c.StringSlice("add") {
						pub, err := readPublic(f)
						if err != nil {
							return err
						}
						next.Officers = append(next.Officers, pub)
					}
					if err := applyThresholds(next.Thresholds, c.StringSlice("threshold")); err != nil {
						return err
					}
					if err := t.writeSet(next, c.String("out")); err != nil {
						return err
					}
					t.printf("%s", setDiff(cur, next))
					return nil
				},
			},
			{
				Name:      "apply",
				Usage:     "check an approved set change (approvals by the current set, proofs of possession by new keys) and write the next set",
				ArgsUsage: "PROPOSAL-FILE APPROVAL-FILE...",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "set", Usage: "the current quorum set file", Required: true},
					&cli.StringSliceFlag{Name: "pop", Usage: "proof-of-possession file of a new key (repeat it)"},
					&cli.StringFlag{Name: "cluster", Usage: "cluster id the proposal must name", Required: true},
					&cli.StringFlag{Name: "target", Usage: "gateway the proposal must name", Required: true},
					&cli.StringFlag{Name: "out", Usage: "next set file to write", Required: true},
				},
				Action: func(c *cli.Context) error {
					if c.NArg() < 2 {
						return usageError(c, "the proposal and its approvals are needed")
					}
					return t.applySetChange(c.String("set"), c.Args().First(), c.Args().Tail(), c.StringSlice("pop"),
						quorum.Scope{ClusterID: c.String("cluster"), Target: c.String("target")}, c.String("out"))
				},
			},
		},
	}
}

func (t *tool) writeSet(s *quorum.Set, out string) error {
	enc, err := s.Encode()
	if err != nil {
		return err
	}
	if err := writeNew(out, quorum.Armor(quorum.PEMSet, enc), 0o644); err != nil {
		return err
	}
	t.printf("%squorum set written to %s\n", s.Render(), out)
	return nil
}

func (t *tool) applySetChange(setFile, proposalFile string, approvalFiles, popFiles []string, scope quorum.Scope, out string) error {
	cur, err := readSet(setFile)
	if err != nil {
		return err
	}
	data, _, err := readProposal(proposalFile)
	if err != nil {
		return err
	}
	var approvals []*quorum.Approval
	for _, f := range approvalFiles {
		b, err := readArmored(f, quorum.PEMApproval)
		if err != nil {
			return err
		}
		a, err := quorum.DecodeApproval(b)
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		approvals = append(approvals, a)
	}
	var pops []*quorum.ProofOfPossession
	for _, f := range popFiles {
		b, err := readArmored(f, quorum.PEMPossession)
		if err != nil {
			return err
		}
		p, err := quorum.DecodeProofOfPossession(b)
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		pops = append(pops, p)
	}
	next, _, err := quorum.ApplySetChange(cur, data, approvals, pops, time.Now(), scope)
	if err != nil {
		return cli.Exit("set change refused: "+err.Error(), 1)
	}
	t.printf("%s", setDiff(cur, next))
	return t.writeSet(next, out)
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
