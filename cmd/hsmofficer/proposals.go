package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hsmgate/hsmgate/images"
	"github.com/hsmgate/hsmgate/quorum"
)

// show prints any hsmofficer file as text.
func (t *tool) show(path, setFile string) error {
	file, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	typ, data, err := quorum.Dearmor(file)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	var set *quorum.Set
	if setFile != "" {
		if set, err = readSet(setFile); err != nil {
			return err
		}
	}
	switch typ {
	case quorum.PEMProposal:
		p, err := quorum.DecodeProposal(data)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		t.printf("%s", p.Render())
		if set != nil {
			t.printf("%s", checkAgainstSet(p, set))
			if sc, ok := p.Params.(*quorum.SetChangeParams); ok {
				t.printf("%s", setDiff(set, sc.Next))
			}
		}
	case quorum.PEMApproval:
		a, err := quorum.DecodeApproval(data)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		t.printf("APPROVAL\n  proposal hash      %x\n  officer            %s\n", a.ProposalHash, a.Fingerprint())
		t.printf("%s", officerName(set, a.Fingerprint()))
	case quorum.PEMRejection:
		r, err := quorum.DecodeRejection(data)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		t.printf("REJECTION\n  proposal hash      %x\n  officer            %s\n  reason             %s\n", r.ProposalHash, r.Fingerprint(), strconv.Quote(r.Reason))
		t.printf("%s", officerName(set, r.Fingerprint()))
	case quorum.PEMSet:
		s, err := quorum.DecodeSet(data)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		t.printf("%s", s.Render())
		if set != nil {
			t.printf("%s", setDiff(set, s))
		}
	case quorum.PEMOfficerPublic:
		pub, err := quorum.DecodeOfficerPublicKey(data)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		t.printf("OFFICER PUBLIC KEY\n  name               %s\n  fingerprint        %s\n  short              %s\n", strconv.Quote(pub.Name), pub.Fingerprint(), pub.Fingerprint().Short())
	case quorum.PEMOfficerKey:
		pub, err := quorum.KeyFilePublic(data)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		t.printf("OFFICER KEY FILE (encrypted)\n  name               %s\n  fingerprint        %s\n", strconv.Quote(pub.Name), pub.Fingerprint())
	case quorum.PEMEncryptedShare:
		es, err := quorum.DecodeEncryptedShare(data)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		t.printf("ENCRYPTED SHARE %d of %d (any %d recover the secret)\n  label              %s\n  split id           %x\n  quorum epoch       %d\n  for officer        %x\n", es.Index, es.Split.Count, es.Split.Threshold, strconv.Quote(es.Split.Label), es.Split.ID, es.Split.Epoch, es.Officer)
	case quorum.PEMPossession:
		p, err := quorum.DecodeProofOfPossession(data)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		t.printf("PROOF OF POSSESSION\n  officer            %x\n  for set            %x\n", p.Officer, p.SetHash)
	default:
		return fmt.Errorf("%s: cannot show a %q file", path, typ)
	}
	return nil
}

func officerName(set *quorum.Set, fp quorum.Fingerprint) string {
	if set == nil {
		return ""
	}
	if o, ok := set.Officer(fp); ok {
		return fmt.Sprintf("  officer name       %s\n", strconv.Quote(o.Name))
	}
	return "  NOT AN OFFICER OF THE GIVEN SET\n"
}

// checkAgainstSet says whether p was made for set.
func checkAgainstSet(p *quorum.Proposal, set *quorum.Set) string {
	h := set.Hash()
	switch {
	case p.Epoch != set.Epoch:
		return fmt.Sprintf("WARNING: made for quorum epoch %d; the given set is epoch %d\n", p.Epoch, set.Epoch)
	case p.SetHash != h:
		return fmt.Sprintf("WARNING: made for quorum set %x, not the given set %x\n", p.SetHash, h)
	}
	return fmt.Sprintf("matches the given quorum set (epoch %d); %s needs %d of %d approvals\n", set.Epoch, p.Kind, set.Threshold(p.Kind), len(set.Officers))
}

// setDiff describes the change from cur to next.
func setDiff(cur, next *quorum.Set) string {
	var b strings.Builder
	fmt.Fprintf(&b, "CHANGE from epoch %d to epoch %d\n", cur.Epoch, next.Epoch)
	changed := false
	for _, o := range next.Officers {
		if _, ok := cur.Officer(o.Fingerprint()); !ok {
			fmt.Fprintf(&b, "  + add officer      %s %s\n", o.Fingerprint(), strconv.Quote(o.Name))
			changed = true
		}
	}
	for _, o := range cur.Officers {
		if _, ok := next.Officer(o.Fingerprint()); !ok {
			fmt.Fprintf(&b, "  - remove officer   %s %s\n", o.Fingerprint(), strconv.Quote(o.Name))
			changed = true
		}
	}
	for _, k := range quorum.Kinds {
		if cur.Threshold(k) != next.Threshold(k) || len(cur.Officers) != len(next.Officers) {
			fmt.Fprintf(&b, "  ~ %-22s %d of %d -> %d of %d\n", k, cur.Threshold(k), len(cur.Officers), next.Threshold(k), len(next.Officers))
			changed = true
		}
	}
	if next.Epoch != cur.Epoch+1 {
		fmt.Fprintf(&b, "WARNING: the next epoch should be %d\n", cur.Epoch+1)
	}
	if !changed {
		b.WriteString("  (no change but the epoch)\n")
	}
	return b.String()
}

func (t *tool) approve(path, keyFile, out, setFile string, yes bool) error {
	data, p, err := readProposal(path)
	if err != nil {
		return err
	}
	t.printf("%s", p.Render())
	if setFile != "" {
		set, err := readSet(setFile)
		if err != nil {
			return err
		}
		if h := set.Hash(); p.Epoch != set.Epoch || p.SetHash != h {
			return cli.Exit(strings.TrimSpace(checkAgainstSet(p, set))+": not signing", 1)
		}
		t.printf("%s", checkAgainstSet(p, set))
		if sc, ok := p.Params.(*quorum.SetChangeParams); ok {
			t.printf("%s", setDiff(set, sc.Next))
		}
	} else {
		t.printf("note: no --set given: the proposal's quorum set is not checked\n")
	}
	now := time.Now()
	if !now.Before(p.Expiry) {
		return cli.Exit(fmt.Sprintf("the proposal expired at %s: not signing", p.Expiry.Format(time.RFC3339)), 1)
	}
	if now.Before(p.NotBefore) {
		t.printf("note: the proposal becomes valid at %s\n", p.NotBefore.Format(time.RFC3339))
	}
	h := quorum.ProposalHash(data)
	if !yes {
		answer, err := t.ask(fmt.Sprintf("Approve proposal %x (%s)? Type yes to sign: ", h[:8], p.Kind))
		if err != nil {
			return err
		}
		if answer != "yes" {
			return cli.Exit("not approved", 1)
		}
	}
	k, err := t.loadKey(keyFile)
	if err != nil {
		return err
	}
	a, err := k.Approve(data)
	if err != nil {
		return err
	}
	enc, _ := a.Encode()
	if err := writeNew(out, quorum.Armor(quorum.PEMApproval, enc), 0o644); err != nil {
		return err
	}
	t.printf("approved by %q (%s): %s\n", k.Name(), k.Fingerprint().Short(), out)
	return nil
}

func (t *tool) reject(path, keyFile, out, reason string) error {
	data, p, err := readProposal(path)
	if err != nil {
		return err
	}
	t.printf("%s", p.Render())
	k, err := t.loadKey(keyFile)
	if err != nil {
		return err
	}
	r, err := k.Reject(data, reason)
	if err != nil {
		return err
	}
	enc, _ := r.Encode()
	if err := writeNew(out, quorum.Armor(quorum.PEMRejection, enc), 0o644); err != nil {
		return err
	}
	t.printf("rejected by %q (%s): %s\n", k.Name(), k.Fingerprint().Short(), out)
	return nil
}

// verify tallies approval and rejection files offline.
func (t *tool) verify(setFile, proposalFile string, files []string, cluster, target string, at *time.Time) error {
	set, err := readSet(setFile)
	if err != nil {
		return err
	}
	data, p, err := readProposal(proposalFile)
	if err != nil {
		return err
	}
	now := time.Now()
	if at != nil {
		now = *at
	}
	scope := quorum.Scope{ClusterID: cluster, Target: target}
	if cluster == "" {
		scope.ClusterID = p.ClusterID
		t.printf("note: cluster %q taken from the proposal, not checked (pass --cluster)\n", p.ClusterID)
	}
	if target == "" {
		scope.Target = p.Target
		t.printf("note: target gateway %q taken from the proposal, not checked (pass --target)\n", p.Target)
	}
	h := quorum.ProposalHash(data)
	t.printf("proposal %x (%s), quorum epoch %d: needs %d of %d approvals\n", h, p.Kind, set.Epoch, set.Threshold(p.Kind), len(set.Officers))
	tally, err := quorum.NewTally(set, data, scope, now)
	if err != nil {
		return cli.Exit("refused: "+err.Error(), 1)
	}
	name := func(fp quorum.Fingerprint) string {
		if o, ok := set.Officer(fp); ok {
			return strconv.Quote(o.Name) + " " + fp.Short()
		}
		return fp.Short()
	}
	for _, f := range files {
		file, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		typ, body, err := quorum.Dearmor(file)
		if err != nil {
			t.printf("  %s: not counted: %v\n", f, err)
			continue
		}
		switch typ {
		case quorum.PEMApproval:
			a, err := quorum.DecodeApproval(body)
			if err == nil {
				err = tally.AddApproval(a)
			}
			if err != nil {
				t.printf("  %s: approval not counted: %v\n", f, err)
			} else {
				t.printf("  %s: approval by %s: counted\n", f, name(a.Fingerprint()))
			}
		case quorum.PEMRejection:
			r, err := quorum.DecodeRejection(body)
			if err == nil {
				err = tally.AddRejection(r)
			}
			if err != nil {
				t.printf("  %s: rejection not counted: %v\n", f, err)
			} else {
				t.printf("  %s: REJECTION by %s: %s\n", f, name(r.Fingerprint()), strconv.Quote(r.Reason))
			}
		default:
			t.printf("  %s: not counted: a %q file is neither an approval nor a rejection\n", f, typ)
		}
	}
	d, err := tally.Decision(now)
	var names []string
	for _, fp := range d.Approvals {
		names = append(names, name(fp))
	}
	slices.Sort(names)
	if err != nil {
		var first error = err
		if u, ok := err.(interface{ Unwrap() []error }); ok && len(u.Unwrap()) > 0 {
			first = u.Unwrap()[0] // the others were printed per file
		}
		return cli.Exit(fmt.Sprintf("NOT APPROVED: %v", first), 1)
	}
	t.printf("APPROVED: %d of %d needed (%s); request id %s\n", len(d.Approvals), d.Threshold, strings.Join(names, ", "), d.RequestID)
	return nil
}

// draft flags shared by the draft subcommands.
var draftFlags = []cli.Flag{
	&cli.StringFlag{Name: "set", Usage: "the current quorum set file", Required: true},
	&cli.StringFlag{Name: "cluster", Usage: "cluster id", Required: true},
	&cli.StringFlag{Name: "target", Usage: "the gateway that is to run it", Required: true},
	&cli.StringFlag{Name: "requester", Usage: "who asks (default user@host)"},
	&cli.DurationFlag{Name: "valid-for", Value: 24 * time.Hour, Usage: "how long approvals can be gathered (at most 720h)"},
	&cli.StringFlag{Name: "out", Usage: "proposal file to write", Required: true},
}

func draftCommand(t *tool) *cli.Command {
	return &cli.Command{
		Name:  "draft",
		Usage: "make a proposal file offline (the gateway makes most proposals; these are for ceremonies)",
		Subcommands: []*cli.Command{
			{
				Name:  "firmware",
				Usage: "propose activating a firmware image",
				Flags: append(slices.Clone(draftFlags),
					&cli.StringFlag{Name: "version", Usage: "firmware version (taken from a bundle given with --image)"},
					&cli.StringFlag{Name: "image", Usage: "the image bundle (hsmgate image build): its manifest digest is proposed; or another file, whose SHA-256 is"},
					&cli.StringFlag{Name: "image-sha256", Usage: "the image's SHA-256 in hex, instead of --image"},
				),
				Action: func(c *cli.Context) error {
					if img := c.String("image"); img != "" {
						if params, ok, err := bundleActivation(img, c.String("version")); ok || err != nil {
							if err != nil {
								return err
							}
							return t.draft(c, params)
						}
					}
					sum, err := imageHash(c.String("image"), c.String("image-sha256"))
					if err != nil {
						return err
					}
					if c.String("version") == "" {
						return errors.New("--version is needed (a bundle given with --image carries its own)")
					}
					return t.draft(c, &quorum.FirmwareActivationParams{Version: c.String("version"), ImageSHA256: sum})
				},
			},
			{
				Name:  "key-export",
				Usage: "propose exporting a key version to a recipient's HPKE key (an officer public key file)",
				Flags: append(slices.Clone(draftFlags),
					&cli.StringFlag{Name: "key-id", Usage: "the key's ARN (or id)", Required: true},
					&cli.Uint64Flag{Name: "version", Usage: "the key version to export (1 is the key's first; each rotation adds one)", Required: true},
					&cli.StringFlag{Name: "recipient", Usage: "the recipient's public key record (hsmofficer keygen --pub)", Required: true},
					&cli.StringFlag{Name: "kem", Value: "xwing", Usage: "the recipient's HPKE KEM: xwing (X25519 + ML-KEM-768) or x25519"},
				),
				Action: func(c *cli.Context) error {
					pub, err := readPublic(c.String("recipient"))
					if err != nil {
						return err
					}
					kemID := quorum.KEMXWing
					switch c.String("kem") {
					case "xwing":
					case "x25519":
						kemID = quorum.KEMX25519
					default:
						return fmt.Errorf("--kem must be xwing or x25519, not %q", c.String("kem"))
					}
					rcpt, err := pub.Recipient(kemID)
					if err != nil {
						return err
					}
					return t.draft(c, &quorum.KeyExportParams{KeyID: c.String("key-id"), KeyVersion: c.Uint64("version"), Recipient: rcpt})
				},
			},
			{
				Name:  "key-operation",
				Usage: "propose running a key-changing KMS operation that the key's policy reserves to a quorum",
				Flags: append(slices.Clone(draftFlags),
					&cli.StringFlag{Name: "key-id", Usage: "the key's ARN (or id)", Required: true},
					&cli.StringFlag{Name: "operation", Usage: "the KMS operation, e.g. ScheduleKeyDeletion or PutKeyPolicy", Required: true},
					&cli.StringFlag{Name: "request", Usage: "the operation's JSON request, as the AWS API takes it (it must name the key)", Required: true},
				),
				Action: func(c *cli.Context) error {
					return t.draft(c, &quorum.KeyOperationParams{KeyID: c.String("key-id"), Operation: c.String("operation"), Request: []byte(c.String("request"))})
				},
			},
			{
				Name:  "set-change",
				Usage: "propose replacing the quorum set by the next one (from set edit)",
				Flags: append(slices.Clone(draftFlags),
					&cli.StringFlag{Name: "next", Usage: "the next quorum set file", Required: true},
				),
				Action: func(c *cli.Context) error {
					next, err := readSet(c.String("next"))
					if err != nil {
						return err
					}
					return t.draft(c, &quorum.SetChangeParams{Next: next})
				},
			},
		},
	}
}

func imageHash(image, sum string) ([]byte, error) {
	switch {
	case image != "" && sum != "":
		return nil, errors.New("give --image or --image-sha256, not both")
	case image != "":
		return fileSHA256(image)
	case sum != "":
		b, err := hex.DecodeString(sum)
		if err != nil || len(b) != 32 {
			return nil, errors.New("--image-sha256 must be 64 hex digits")
		}
		return b, nil
	}
	return nil, errors.New("give --image or --image-sha256")
}

func (t *tool) draft(c *cli.Context, params quorum.Params) error {
	set, err := readSet(c.String("set"))
	if err != nil {
		return err
	}
	req := c.String("requester")
	if req == "" {
		req = defaultName()
	}
	now := time.Now()
	h := quorum.Header{ClusterID: c.String("cluster"), Target: c.String("target"), Requester: req, NotBefore: now, Expiry: now.Add(c.Duration("valid-for"))}
	var p *quorum.Proposal
	if sc, ok := params.(*quorum.SetChangeParams); ok {
		p, err = quorum.ProposeSetChange(set, sc.Next, h)
	} else {
		p, err = quorum.NewProposal(set, params, h)
	}
	if err != nil {
		return err
	}
	enc, err := p.Encode()
	if err != nil {
		return err
	}
	if err := writeNew(c.String("out"), quorum.Armor(quorum.PEMProposal, enc), 0o644); err != nil {
		return err
	}
	t.printf("%sproposal written to %s\n", p.Render(), c.String("out"))
	return nil
}

// bundleActivation reads an image bundle's manifest: the proposal names
// its digest (SHA-256 of the canonical manifest) and version string. ok is
// false when path is not a bundle.
func bundleActivation(path, version string) (params *quorum.FirmwareActivationParams, ok bool, err error) {
	env, err := images.ReadBundleHeader(path)
	if errors.Is(err, images.ErrMalformed) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	m, err := images.DecodeManifest(env.Manifest)
	if err != nil {
		return nil, true, fmt.Errorf("%s: %w", path, err)
	}
	if version != "" && version != m.VersionString {
		return nil, true, fmt.Errorf("--version %q is not the bundle's version %q", version, m.VersionString)
	}
	d := images.ManifestDigest(env.Manifest)
	return &quorum.FirmwareActivationParams{Version: m.VersionString, ImageSHA256: d[:]}, true, nil
}
