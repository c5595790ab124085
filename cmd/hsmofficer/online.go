package main

// The online commands: the gateway's quorum API (docs/quorum.md), over
// mutual TLS as the principal the officer's key is linked to. The request
// bodies carry the same records as the offline files (their CBOR
// encodings, base64 in JSON). This file does not import the gateway
// package, so hsmofficer stays pure Go; the types mirror gateway/quorum.go.

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hsmgate/hsmgate/attest"
	"github.com/hsmgate/hsmgate/quorum"
)

// onlineFlags are the connection flags of the online commands. --key is
// the TLS client key here (approve and reject use it for the officer key
// only offline, without --endpoint).
func onlineFlags(withKey bool) []cli.Flag {
	fl := []cli.Flag{
		&cli.StringFlag{Name: "endpoint", Usage: "the gateway's URL (https://host:port)", EnvVars: []string{"HSMOFFICER_ENDPOINT"}},
		&cli.StringFlag{Name: "cert", Usage: "your client certificate (PEM), issued by the gateway to your principal", EnvVars: []string{"HSMOFFICER_CERT"}},
		&cli.StringFlag{Name: "ca", Usage: "the gateway's CA certificate (PEM)", EnvVars: []string{"HSMOFFICER_CA"}},
	}
	if withKey {
		fl = append(fl, &cli.StringFlag{Name: "key", Usage: "your client certificate's private key (PEM)", EnvVars: []string{"HSMOFFICER_CLIENT_KEY"}})
	}
	return fl
}

type onlineClient struct {
	endpoint string
	http     *http.Client
}

func newOnlineClient(c *cli.Context) (*onlineClient, error) {
	endpoint, certFile, keyFile, caFile := c.String("endpoint"), c.String("cert"), c.String("key"), c.String("ca")
	if endpoint == "" || certFile == "" || keyFile == "" || caFile == "" {
		return nil, errors.New(c.Command.Name + ": online use needs --endpoint, --cert, --key (the client key) and --ca")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("client certificate: %w", err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s: no certificate", caFile)
	}
	return &onlineClient{endpoint: strings.TrimSuffix(endpoint, "/"), http: &http.Client{Timeout: time.Minute, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}}}, nil
}

// call runs one quorum operation ("QuorumList").
func (o *onlineClient) call(op string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequest(http.MethodPost, o.endpoint+"/", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("X-Amz-Target", "HsmGate."+op)
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("User-Agent", "hsmofficer")
	resp, err := o.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Type    string `json:"__type"`
			Message string `json:"message"`
		}
		if json.Unmarshal(raw, &e) == nil && e.Type != "" {
			return fmt.Errorf("refused by the gateway (%s): %s", e.Type, e.Message)
		}
		return fmt.Errorf("the gateway answered %s", resp.Status)
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

// Wire types (gateway/quorum.go).
type (
	wireOfficer struct{ Name, Fingerprint, Principal string }
	wireStatus  struct {
		Installed  bool
		Epoch      uint64
		SetHash    string
		ClusterId  string
		Target     string
		Officers   []wireOfficer
		Thresholds map[string]int
		Pending    int
		Set        []byte
	}
	wireProposal struct {
		RequestId, ProposalHash, Kind string
		Epoch                         uint64
		Requester, Proposer           string
		Created, Expiry               float64
		Threshold                     int
		Approvals, Rejections         []string
		Status                        string
		NewEpoch                      uint64
		Result                        []byte
		ResultError                   string
		Proposal                      []byte
		Text                          string
	}
)

func (t *tool) printProposalLine(p wireProposal) {
	t.printf("%s %-20s epoch %d  %d of %d approvals, %d rejections  %s  by %s\n", p.RequestId, p.Kind, p.Epoch,
		len(p.Approvals), p.Threshold, len(p.Rejections), p.Status, p.Proposer)
}

func (t *tool) printResult(p wireProposal) {
	switch p.Status {
	case "EXECUTED":
		switch {
		case p.Kind == string(quorum.KindSetChange):
			t.printf("EXECUTED: request %s (%s) with %d approvals; the quorum set is now at epoch %d\n", p.RequestId, p.Kind, len(p.Approvals), p.NewEpoch)
		case p.ResultError != "":
			t.printf("EXECUTED, FAILED: request %s (%s) with %d approvals: %s (the request id is spent: a retry needs a new proposal)\n", p.RequestId, p.Kind, len(p.Approvals), p.ResultError)
		default:
			t.printf("EXECUTED: request %s (%s) with %d approvals; hsmofficer fetch-result %s gets its result\n", p.RequestId, p.Kind, len(p.Approvals), p.RequestId)
		}
	case "REJECTED":
		t.printf("REJECTED: request %s (%s) can no longer be approved (%d rejections)\n", p.RequestId, p.Kind, len(p.Rejections))
	default:
		t.printf("PENDING: request %s (%s): %d of %d approvals, %d rejections\n", p.RequestId, p.Kind, len(p.Approvals), p.Threshold, len(p.Rejections))
	}
}

func (t *tool) onlinePropose(c *cli.Context, file string, popFiles []string) error {
	oc, err := newOnlineClient(c)
	if err != nil {
		return err
	}
	raw, p, err := readProposal(file)
	if err != nil {
		return err
	}
	in := struct {
		Proposal           []byte
		ProofsOfPossession [][]byte
	}{Proposal: raw}
	for _, f := range popFiles {
		pop, err := readArmored(f, quorum.PEMPossession)
		if err != nil {
			return err
		}
		in.ProofsOfPossession = append(in.ProofsOfPossession, pop)
	}
	t.printf("%s", p.Render())
	var out wireProposal
	if err := oc.call("QuorumPropose", in, &out); err != nil {
		return err
	}
	t.printResult(out)
	return nil
}

func (t *tool) onlineList(c *cli.Context) error {
	oc, err := newOnlineClient(c)
	if err != nil {
		return err
	}
	var out struct{ Proposals []wireProposal }
	if err := oc.call("QuorumList", struct{}{}, &out); err != nil {
		return err
	}
	if len(out.Proposals) == 0 {
		t.printf("no pending proposals\n")
	}
	for _, p := range out.Proposals {
		t.printProposalLine(p)
	}
	return nil
}

func (t *tool) onlineStatus(c *cli.Context, setOut string) error {
	oc, err := newOnlineClient(c)
	if err != nil {
		return err
	}
	var st wireStatus
	if err := oc.call("QuorumStatus", struct{}{}, &st); err != nil {
		return err
	}
	if !st.Installed {
		t.printf("no quorum set installed\n")
		return nil
	}
	set, err := quorum.DecodeSet(st.Set)
	if err != nil {
		return fmt.Errorf("the gateway's quorum set: %w", err)
	}
	t.printf("cluster %q, target %q, %d pending proposals\n%s", st.ClusterId, st.Target, st.Pending, set.Render())
	for _, o := range st.Officers {
		if o.Principal != "" {
			t.printf("  %s is principal %s\n", o.Fingerprint, o.Principal)
		}
	}
	if setOut != "" {
		if err := writeNew(setOut, quorum.Armor(quorum.PEMSet, st.Set), 0o644); err != nil {
			return err
		}
		t.printf("quorum set written to %s\n", setOut)
	}
	return nil
}

func (t *tool) onlineShow(c *cli.Context, id, out string) error {
	oc, err := newOnlineClient(c)
	if err != nil {
		return err
	}
	var p wireProposal
	if err := oc.call("QuorumShow", struct{ RequestId string }{id}, &p); err != nil {
		return err
	}
	// Show what the proposal's bytes say, not the gateway's text.
	dp, err := quorum.DecodeProposal(p.Proposal)
	if err != nil {
		return fmt.Errorf("the gateway's proposal: %w", err)
	}
	t.printf("%s", dp.Render())
	t.printResult(p)
	if out != "" {
		if err := writeNew(out, quorum.Armor(quorum.PEMProposal, p.Proposal), 0o644); err != nil {
			return err
		}
		t.printf("proposal written to %s (check it with hsmofficer show --set, approve it offline, submit the approval with approve --endpoint)\n", out)
	}
	return nil
}

// onlineSubmit submits an approval or rejection file.
func (t *tool) onlineSubmit(c *cli.Context, file string, reject bool) error {
	oc, err := newOnlineClient(c)
	if err != nil {
		return err
	}
	typ, op, field := quorum.PEMApproval, "QuorumApprove", "Approval"
	if reject {
		typ, op, field = quorum.PEMRejection, "QuorumReject", "Rejection"
	}
	raw, err := readArmored(file, typ)
	if err != nil {
		return err
	}
	var out wireProposal
	if err := oc.call(op, map[string][]byte{field: raw}, &out); err != nil {
		return err
	}
	t.printResult(out)
	return nil
}

// offlineNeeds checks the flags an offline approve or reject needs.
func offlineNeeds(c *cli.Context, names ...string) error {
	var missing []string
	for _, n := range names {
		if c.String(n) == "" {
			missing = append(missing, "--"+n)
		}
	}
	if len(missing) > 0 {
		return errors.New("required flags not set: " + strings.Join(missing, ", ") + " (or give --endpoint to submit a signed file to the gateway)")
	}
	return nil
}

// fetchResult fetches an executed proposal's result.
func (t *tool) fetchResult(c *cli.Context, id, out string) error {
	oc, err := newOnlineClient(c)
	if err != nil {
		return err
	}
	var p wireProposal
	if err := oc.call("QuorumShow", struct{ RequestId string }{id}, &p); err != nil {
		return err
	}
	if p.Status != "EXECUTED" {
		t.printResult(p)
		return cli.Exit("the proposal has not been executed", 1)
	}
	if p.ResultError != "" {
		t.printResult(p)
		return cli.Exit("the operation failed", 1)
	}
	switch p.Kind {
	case string(quorum.KindKeyExport):
		rec, err := quorum.DecodeExportedKey(p.Result)
		if err != nil {
			return fmt.Errorf("the gateway's export record: %w", err)
		}
		if out == "" {
			return errors.New("--out is needed for an exported key record")
		}
		if err := writeNew(out, quorum.Armor(quorum.PEMExportedKey, p.Result), 0o644); err != nil {
			return err
		}
		t.printf("exported key record for %s version %d (%s, %s) written to %s\nonly the recipient opens it: hsmofficer unwrap-export --key RECIPIENT.key --out KEY %s\n",
			rec.KeyID, rec.KeyVersion, rec.KeySpec, rec.Format, out, out)
	default:
		t.printf("%s\n", p.Result)
	}
	return nil
}

// verifyGateway checks, before an officer trusts a gateway with a
// proposal or an approval, that it runs an approved boot: the same
// verification as `hsmgate attest verify` (attest.VerifyGateway).
func (t *tool) verifyGateway(c *cli.Context, enrollmentFile, policyFile string) error {
	oc, err := newOnlineClient(c)
	if err != nil {
		return err
	}
	defer oc.http.CloseIdleConnections()
	var enr attest.Enrollment
	if err := attest.ReadJSONFile(enrollmentFile, &enr); err != nil {
		return fmt.Errorf("enrollment record: %w", err)
	}
	var pol attest.GoldenPolicyFile
	if err := attest.ReadJSONFile(policyFile, &pol); err != nil {
		return fmt.Errorf("golden policy: %w", err)
	}
	st, err := attest.VerifyGateway(c.Context, oc.http, oc.endpoint, enr, pol.Policy())
	if err != nil {
		return cli.Exit(fmt.Sprintf("NOT VERIFIED: %s: %v", oc.endpoint, err), 1)
	}
	t.printf("VERIFIED: %s runs an approved boot (quoted by AK %x, TPM reset count %d)\n", oc.endpoint, st.AKName, st.ResetCount)
	t.printf("  image  %x\n  binary %x\n  config %x\n  TLS key of this connection: SHA-256 %x\n", st.ImageDigest, st.BinaryDigest, st.ConfigDigest, st.TLSKeyHash)
	return nil
}
