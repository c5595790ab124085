package gateway_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/gateway/audit"
	"github.com/hsmgate/hsmgate/gateway/kmsapi"
	"github.com/hsmgate/hsmgate/quorum"
)

// quorumClient calls the admin API and returns the exception type and
// message ("" on success).
type quorumClient struct {
	t     *testing.T
	url   string
	http  *http.Client
	creds *aws.Credentials
}

func (c *quorumClient) call(op string, in, out any) (typ, msg string) {
	c.t.Helper()
	body, err := json.Marshal(in)
	if err != nil {
		c.t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", c.url+"/", bytes.NewReader(body))
	req.Header.Set("X-Amz-Target", "HsmGate."+op)
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	if c.creds != nil {
		sum := sha256.Sum256(body)
		if err := v4.NewSigner().SignHTTP(context.Background(), *c.creds, req, hex.EncodeToString(sum[:]), "kms", testRegion, time.Now()); err != nil {
			c.t.Fatal(err)
		}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		var e struct {
			Type    string `json:"__type"`
			Message string `json:"message"`
		}
		if err := json.Unmarshal(raw, &e); err != nil || e.Type == "" {
			c.t.Fatalf("%s: %d: %s", op, resp.StatusCode, raw)
		}
		return e.Type, e.Message
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			c.t.Fatalf("%s: %v: %s", op, err, raw)
		}
	}
	return "", ""
}

func (c *quorumClient) must(op string, in, out any) {
	c.t.Helper()
	if typ, msg := c.call(op, in, out); typ != "" {
		c.t.Fatalf("%s: %s: %s", op, typ, msg)
	}
}

// refused checks that op fails with typ and a message containing want.
func (c *quorumClient) refused(op string, in any, typ, want string) {
	c.t.Helper()
	gotTyp, msg := c.call(op, in, nil)
	if gotTyp != typ || !strings.Contains(msg, want) {
		c.t.Fatalf("%s: got %s %q, want %s containing %q", op, gotTyp, msg, typ, want)
	}
}

func enc(t *testing.T, v interface{ Encode() ([]byte, error) }) []byte {
	t.Helper()
	b, err := v.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestQuorumSetChangeOnline(t *testing.T) {
	tg := startGateway(t, nil)
	ctx := context.Background()
	_, _, url, _ := tg.serveAudited(t, nil)
	ac := tg.adminMTLS(t, url)
	admin := &quorumClient{t: t, url: url, http: ac.http}

	// Officers and a bystander are principals with access keys.
	client := func(name string) *quorumClient {
		var p gateway.AdminPrincipalOutput
		admin.must("CreatePrincipal", gateway.AdminCreatePrincipalInput{PrincipalName: name}, &p)
		var k gateway.AdminCreateAccessKeyOutput
		admin.must("CreateAccessKey", gateway.AdminPrincipalInput{PrincipalName: name}, &k)
		return &quorumClient{t: t, url: url, creds: &aws.Credentials{AccessKeyID: k.AccessKey.AccessKeyId, SecretAccessKey: k.AccessKey.SecretAccessKey},
			http: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tg.caPool}}}}
	}
	names := []string{"alice", "bob", "carol", "dave"}
	keys := map[string]*quorum.OfficerKey{}
	clients := map[string]*quorumClient{}
	for _, n := range names {
		k, err := quorum.GenerateOfficerKey(n + "@example.com")
		if err != nil {
			t.Fatal(err)
		}
		keys[n], clients[n] = k, client(n)
	}
	mallory := client("mallory")
	thresholds := func(n int) map[quorum.Kind]int {
		m := map[quorum.Kind]int{}
		for _, k := range quorum.Kinds {
			m[k] = n
		}
		return m
	}
	set1 := &quorum.Set{Epoch: 1, Thresholds: thresholds(2),
		Officers: []quorum.OfficerPublicKey{keys["alice"].Public(), keys["bob"].Public(), keys["carol"].Public()}}
	var pops [][]byte
	for _, n := range names[:3] {
		pop, err := keys[n].ProvePossession(set1)
		if err != nil {
			t.Fatal(err)
		}
		pops = append(pops, enc(t, pop))
	}
	init := gateway.QuorumInitInput{Set: enc(t, set1), ClusterId: "prod", Target: "gw-1", ProofsOfPossession: pops[:2]}
	// Every officer must prove possession; officers can't install a set.
	admin.refused("QuorumInit", init, kmsapi.ExValidation, "no proof of possession")
	init.ProofsOfPossession = pops
	clients["alice"].refused("QuorumInit", init, kmsapi.ExAccessDenied, "not an administrator")
	var st gateway.QuorumStatusOutput
	// Where the replay ledger lives is the gateway's choice: a path in the
	// request (older clients sent one) is ignored.
	elsewhere := filepath.Join(t.TempDir(), "elsewhere", "ledger.db")
	admin.must("QuorumInit", struct {
		gateway.QuorumInitInput
		Ledger string
	}{init, elsewhere}, &st)
	if st.Epoch != 1 || len(st.Officers) != 3 {
		t.Fatalf("QuorumInit: %+v", st)
	}
	if _, err := os.Stat(filepath.Dir(elsewhere)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("QuorumInit made the caller's ledger folder (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(tg.dir, gateway.QuorumLedgerFile)); err != nil {
		t.Errorf("no ledger in the gateway's data folder: %v", err)
	}
	admin.refused("QuorumInit", init, kmsapi.ExAlreadyExists, "installed already")
	for _, n := range names {
		admin.must("QuorumLinkOfficer", gateway.QuorumLinkOfficerInput{PrincipalName: n, Fingerprint: keys[n].Fingerprint().String()}, nil)
	}
	mallory.refused("QuorumStatus", struct{}{}, kmsapi.ExAccessDenied, "neither an administrator nor linked")
	clients["dave"].refused("QuorumList", struct{}{}, kmsapi.ExAccessDenied, "neither an administrator nor linked")

	// Alice proposes adding dave, with dave's proof of possession for the
	// next set.
	set2 := &quorum.Set{Epoch: 2, Thresholds: thresholds(3), Officers: append(append([]quorum.OfficerPublicKey{}, set1.Officers...), keys["dave"].Public())}
	now := time.Now()
	hdr := quorum.Header{ClusterID: "prod", Target: "gw-1", Requester: "alice", NotBefore: now.Add(-time.Minute), Expiry: now.Add(time.Hour)}
	prop, err := quorum.ProposeSetChange(set1, set2, hdr)
	if err != nil {
		t.Fatal(err)
	}
	propRaw := enc(t, prop)
	davePop, err := keys["dave"].ProvePossession(set2)
	if err != nil {
		t.Fatal(err)
	}
	clients["alice"].refused("QuorumPropose", gateway.QuorumProposeInput{Proposal: propRaw}, kmsapi.ExValidation, "no proof of possession")
	wrongScope := hdr
	wrongScope.Target = "gw-2"
	other, _ := quorum.ProposeSetChange(set1, set2, wrongScope)
	clients["alice"].refused("QuorumPropose", gateway.QuorumProposeInput{Proposal: enc(t, other), ProofsOfPossession: [][]byte{enc(t, davePop)}},
		kmsapi.ExValidation, "another gateway")
	var pr gateway.QuorumProposalOutput
	clients["alice"].must("QuorumPropose", gateway.QuorumProposeInput{Proposal: propRaw, ProofsOfPossession: [][]byte{enc(t, davePop)}}, &pr)
	if pr.Status != "PENDING" || pr.RequestId != prop.RequestID.String() || pr.Threshold != 2 || pr.Kind != "set-change" {
		t.Fatalf("QuorumPropose: %+v", pr)
	}
	// A second, competing proposal (by carol) that the change will void.
	set2b := &quorum.Set{Epoch: 2, Thresholds: thresholds(2), Officers: set1.Officers}
	prop2, _ := quorum.ProposeSetChange(set1, set2b, hdr)
	prop2Raw := enc(t, prop2)
	clients["carol"].must("QuorumPropose", gateway.QuorumProposeInput{Proposal: prop2Raw}, nil)

	approve := func(n string, raw []byte) []byte {
		a, err := keys[n].Approve(raw)
		if err != nil {
			t.Fatal(err)
		}
		return enc(t, a)
	}
	apA, apB := approve("alice", propRaw), approve("bob", propRaw)

	// Non-officers can't approve, nor submit another officer's approval.
	mallory.refused("QuorumApprove", gateway.QuorumApproveInput{Approval: apA}, kmsapi.ExAccessDenied, "not linked to an officer")
	clients["dave"].refused("QuorumApprove", gateway.QuorumApproveInput{Approval: approve("dave", propRaw)}, kmsapi.ExAccessDenied, "not linked to an officer")
	clients["carol"].refused("QuorumApprove", gateway.QuorumApproveInput{Approval: apA}, kmsapi.ExAccessDenied, "submit their own")

	// One approval: pending.
	clients["alice"].must("QuorumApprove", gateway.QuorumApproveInput{Approval: apA}, &pr)
	if pr.Status != "PENDING" || len(pr.Approvals) != 1 {
		t.Fatalf("first approval: %+v", pr)
	}
	// A duplicate: refused with the tally's reason.
	clients["alice"].refused("QuorumApprove", gateway.QuorumApproveInput{Approval: approve("alice", propRaw)}, kmsapi.ExValidation, quorum.ErrDuplicate.Error())

	// The pending state is in the keystore: an in-process Admin on the same
	// store (as after a restart) sees it.
	local := &gateway.Admin{Identities: &gateway.Identities{Store: tg.store}, Account: testAccount}
	resp, apiErr := local.Do(ctx, kmsapi.Caller{Principal: "(test)", Admin: true}, "HsmGate.QuorumList", nil)
	if apiErr != nil {
		t.Fatal(apiErr)
	}
	var list gateway.QuorumListOutput
	if err := json.Unmarshal(resp, &list); err != nil || len(list.Proposals) != 2 || len(list.Proposals[0].Approvals) != 1 {
		t.Fatalf("QuorumList in process: %v %s", err, resp)
	}
	var shown gateway.QuorumProposalOutput
	clients["bob"].must("QuorumShow", gateway.QuorumRequestInput{RequestId: pr.RequestId}, &shown)
	if !bytes.Equal(shown.Proposal, propRaw) || !strings.Contains(shown.Text, "next epoch") {
		t.Fatalf("QuorumShow: %+v", shown)
	}

	// The second approval meets the threshold: the new set is installed.
	clients["bob"].must("QuorumApprove", gateway.QuorumApproveInput{Approval: apB}, &pr)
	if pr.Status != "EXECUTED" || pr.NewEpoch != 2 || len(pr.Approvals) != 2 {
		t.Fatalf("second approval: %+v", pr)
	}
	clients["dave"].must("QuorumStatus", struct{}{}, &st)
	if st.Epoch != 2 || len(st.Officers) != 4 || st.Pending != 0 || st.Thresholds["set-change"] != 3 {
		t.Fatalf("QuorumStatus after the change: %+v", st)
	}

	// Replays: the same approvals, the same proposal.
	clients["alice"].refused("QuorumApprove", gateway.QuorumApproveInput{Approval: apA}, kmsapi.ExValidation, "replay refused")
	clients["bob"].refused("QuorumApprove", gateway.QuorumApproveInput{Approval: apB}, kmsapi.ExValidation, "replay refused")
	clients["alice"].refused("QuorumPropose", gateway.QuorumProposeInput{Proposal: propRaw, ProofsOfPossession: [][]byte{enc(t, davePop)}},
		kmsapi.ExValidation, "replay refused")
	// The competing proposal was voided; a new one at the old epoch is refused.
	clients["alice"].refused("QuorumApprove", gateway.QuorumApproveInput{Approval: approve("alice", prop2Raw)}, kmsapi.ExValidation, "void")
	old, _ := quorum.ProposeSetChange(set1, set2b, hdr)
	clients["carol"].refused("QuorumPropose", gateway.QuorumProposeInput{Proposal: enc(t, old)}, kmsapi.ExValidation, quorum.ErrWrongEpoch.Error())

	// Rejections: at epoch 2 (3 of 4 for set changes), two rejections kill
	// a proposal.
	set3 := &quorum.Set{Epoch: 3, Thresholds: thresholds(3), Officers: set2.Officers[:3]}
	prop3, _ := quorum.ProposeSetChange(set2, set3, hdr)
	prop3Raw := enc(t, prop3)
	admin.must("QuorumPropose", gateway.QuorumProposeInput{Proposal: prop3Raw}, nil)
	reject := func(n string) []byte {
		r, err := keys[n].Reject(prop3Raw, "no")
		if err != nil {
			t.Fatal(err)
		}
		return enc(t, r)
	}
	clients["carol"].must("QuorumReject", gateway.QuorumRejectInput{Rejection: reject("carol")}, &pr)
	if pr.Status != "PENDING" || len(pr.Rejections) != 1 {
		t.Fatalf("first rejection: %+v", pr)
	}
	clients["dave"].must("QuorumReject", gateway.QuorumRejectInput{Rejection: reject("dave")}, &pr)
	if pr.Status != "REJECTED" {
		t.Fatalf("second rejection: %+v", pr)
	}
	clients["alice"].refused("QuorumApprove", gateway.QuorumApproveInput{Approval: approve("alice", prop3Raw)}, kmsapi.ExValidation, "rejected")

	// Deleting an officer's principal drops its link: a new principal of
	// the same name inherits nothing.
	admin.must("DeletePrincipal", map[string]string{"PrincipalName": "dave"}, &struct{}{})
	var after gateway.QuorumStatusOutput // fresh: decoding into st would keep old fields
	admin.must("QuorumStatus", struct{}{}, &after)
	for _, o := range after.Officers {
		if o.Principal == "dave" {
			t.Fatalf("dave's officer link survived the principal's deletion: %+v", after.Officers)
		}
	}
	if len(after.Officers) != 4 {
		t.Fatalf("officers after deleting dave's principal: %+v", after.Officers)
	}

	// The audit log names each step.
	seen := map[string]int{}
	err = audit.Query(filepath.Join(tg.dir, gateway.AuditDir), audit.Filter{}, func(r audit.Record) error {
		if r.Kind == audit.KindRecord && strings.HasPrefix(r.Operation, "HsmGate.Quorum") {
			seen[r.Operation+"/"+r.Outcome]++
			if r.Operation == "HsmGate.QuorumExecute" && (r.Principal != "bob" || r.RequestMetadata["quorum_request_id"] != prop.RequestID.String()) {
				t.Errorf("execution record: %+v", r)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen["HsmGate.QuorumExecute/ok"] != 1 || seen["HsmGate.QuorumApprove/ok"] != 2 || seen["HsmGate.QuorumPropose/ok"] != 3 ||
		seen["HsmGate.QuorumReject/ok"] != 2 || seen["HsmGate.QuorumApprove/denied"] != 3 {
		t.Fatalf("audit: %v", seen)
	}
}
