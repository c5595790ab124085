package main

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/images"
	"github.com/hsmgate/hsmgate/quorum"
)

// The image commands that act on the gateway (through its admin API while
// it runs, on its keystore while it is stopped): the installed trust,
// staging against it, and the quorum proposals of activations and trust
// changes.

func imageProposalFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "requester", Usage: "who asks (shown to the officers)", Value: "hsmgate-admin"},
		&cli.DurationFlag{Name: "valid-for", Value: 24 * time.Hour, Usage: "how long officers have to approve it (at most 720h)"},
	}
}

func runImageTrustInstall(pc *principalCmd, file string) error {
	tr, err := readImageTrust(file)
	if err != nil {
		return fmt.Errorf("%s: %w", pc.name, err)
	}
	raw, err := tr.Encode()
	if err != nil {
		return err
	}
	return pc.withAdmin(false, func(call adminCall) error {
		var st gateway.ImageStatusOutput
		if err := call("ImageTrustInstall", gateway.ImageTrustInstallInput{Trust: raw}, &st); err != nil {
			return pc.fail(err, "")
		}
		fmt.Fprintf(pc.stdout, "image trust version %d installed (SHA-256 %s) for target %q\n", st.TrustVersion, st.TrustSHA256, st.Target)
		return nil
	})
}

func runImageStatus(pc *principalCmd) error {
	return pc.withAdmin(false, func(call adminCall) error {
		var st gateway.ImageStatusOutput
		if err := call("ImageStatus", struct{}{}, &st); err != nil {
			return pc.fail(err, "")
		}
		fmt.Fprintf(pc.stdout, "target %q\n", st.Target)
		if st.Trust == nil {
			fmt.Fprintln(pc.stdout, "no image trust installed (hsmgate image trust install)")
			return nil
		}
		fmt.Fprintf(pc.stdout, "trust version %d (SHA-256 %s)\nhighest activated version %d\n", st.TrustVersion, st.TrustSHA256, st.Highest)
		for _, img := range st.Images {
			fmt.Fprintf(pc.stdout, "  %-8s %s %s %d %s\n", img.Status, img.Digest, img.Name, img.Version, strconv.Quote(img.VersionString))
		}
		return nil
	})
}

func runImageStageOnGateway(pc *principalCmd, bundle, timestampFile string) error {
	abs, err := filepath.Abs(bundle)
	if err != nil {
		return err
	}
	ts, err := readImageTimestamp(timestampFile)
	if err != nil {
		return fmt.Errorf("%s: %w", pc.name, err)
	}
	return pc.withAdmin(false, func(call adminCall) error {
		if ts != nil {
			if err := call("ImageRefresh", gateway.ImageRefreshInput{Timestamp: ts}, &struct{}{}); err != nil {
				return pc.fail(err, "")
			}
		}
		var img gateway.ImageInfo
		if err := call("ImageStage", gateway.ImageStageInput{Path: abs}, &img); err != nil {
			return pc.fail(fmt.Errorf("REFUSED: %w", err), "")
		}
		fmt.Fprintf(pc.stdout, "STAGED %s: %s %s (release %d) for %s\n  image SHA-256      %s\nNext: hsmgate image activate %s\n",
			bundle, img.Name, strconv.Quote(img.VersionString), img.Version, img.Target, img.Digest, img.Digest)
		return nil
	})
}

// propose builds a proposal under the gateway's current quorum set and
// submits it.
func (pc *principalCmd) propose(call adminCall, params quorum.Params, requester string, validFor time.Duration, attachment []byte) error {
	var qs gateway.QuorumStatusOutput
	if err := call("QuorumStatus", struct{}{}, &qs); err != nil {
		return pc.fail(err, "")
	}
	set, err := quorum.DecodeSet(qs.Set)
	if err != nil {
		return fmt.Errorf("%s: the gateway's quorum set: %w", pc.name, err)
	}
	now := time.Now()
	p, err := quorum.NewProposal(set, params, quorum.Header{ClusterID: qs.ClusterId, Target: qs.Target, Requester: requester,
		NotBefore: now.Add(-time.Minute), Expiry: now.Add(validFor)})
	if err != nil {
		return fmt.Errorf("%s: %w", pc.name, err)
	}
	raw, err := p.Encode()
	if err != nil {
		return err
	}
	var out gateway.QuorumProposalOutput
	if err := call("QuorumPropose", gateway.QuorumProposeInput{Proposal: raw, Attachment: attachment}, &out); err != nil {
		return pc.fail(fmt.Errorf("REFUSED: %w", err), "")
	}
	file := filepath.Join(os.TempDir(), "hsmgate-"+p.RequestID.String()+".proposal")
	if err := os.WriteFile(file, quorum.Armor(quorum.PEMProposal, raw), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(pc.stdout, "%sPROPOSED: request %s, %d of %d approvals needed; the proposal file is %s\nOfficers review and approve it with hsmofficer (show, approve, approve --endpoint).\n",
		p.Render(), p.RequestID, out.Threshold, len(set.Officers), file)
	return nil
}

func runImageActivate(pc *principalCmd, digest, requester string, validFor time.Duration) error {
	d, err := images.ParseDigest(digest)
	if err != nil {
		return fmt.Errorf("%s: %w", pc.name, err)
	}
	st, err := images.OpenStore(pc.dataDir, images.Options{})
	if err != nil {
		return fmt.Errorf("%s: %w", pc.name, err)
	}
	list, err := st.List()
	if err != nil {
		return fmt.Errorf("%s: %w", pc.name, err)
	}
	var params *quorum.FirmwareActivationParams
	for _, img := range list {
		if img.Digest == d {
			params = img.ActivationParams()
		}
	}
	if params == nil {
		return fmt.Errorf("%s: image %s is not staged (hsmgate image stage)", pc.name, d)
	}
	return pc.withAdmin(false, func(call adminCall) error {
		return pc.propose(call, params, requester, validFor, nil)
	})
}

func runImageTrustPropose(pc *principalCmd, file, requester string, validFor time.Duration) error {
	tr, err := readImageTrust(file)
	if err != nil {
		return fmt.Errorf("%s: %w", pc.name, err)
	}
	raw, err := tr.Encode()
	if err != nil {
		return err
	}
	sum := sha256.Sum256(raw)
	return pc.withAdmin(false, func(call adminCall) error {
		return pc.propose(call, &quorum.ReleaseTrustParams{Version: tr.Version, TrustSHA256: sum[:]}, requester, validFor, raw)
	})
}
