package gateway_test

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/gateway/ciphertext"
	"github.com/hsmgate/hsmgate/gateway/kmsapi"
	"github.com/hsmgate/hsmgate/quorum"
)

// officerGateway is a gateway with a quorum of alice, bob and carol
// (threshold 2 for everything), each an officer principal with an access
// key, and an outsider, mallory.
type officerGateway struct {
	tg      *testGateway
	admin   *quorumClient
	keys    map[string]*quorum.OfficerKey
	clients map[string]*quorumClient
	set     *quorum.Set
}

func startOfficerGateway(t *testing.T) *officerGateway {
	t.Helper()
	tg := startGateway(t, nil)
	og := &officerGateway{tg: tg, admin: &quorumClient{t: t, url: tg.url, http: tg.adminMTLS(t, tg.url).http},
		keys: map[string]*quorum.OfficerKey{}, clients: map[string]*quorumClient{}}
	th := map[quorum.Kind]int{}
	for _, k := range quorum.Kinds {
		th[k] = 2
	}
	og.set = &quorum.Set{Epoch: 1, Thresholds: th}
	for _, n := range []string{"alice", "bob", "carol", "mallory"} {
		var p gateway.AdminPrincipalOutput
		og.admin.must("CreatePrincipal", gateway.AdminCreatePrincipalInput{PrincipalName: n}, &p)
		var k gateway.AdminCreateAccessKeyOutput
		og.admin.must("CreateAccessKey", gateway.AdminPrincipalInput{PrincipalName: n}, &k)
		og.clients[n] = &quorumClient{t: t, url: tg.url, creds: &aws.Credentials{AccessKeyID: k.AccessKey.AccessKeyId, SecretAccessKey: k.AccessKey.SecretAccessKey},
			http: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tg.caPool}}}}
		if n == "mallory" {
			continue
		}
		ok, err := quorum.GenerateOfficerKey(n + "@example.com")
		if err != nil {
			t.Fatal(err)
		}
		og.keys[n] = ok
		og.set.Officers = append(og.set.Officers, ok.Public())
	}
	var pops [][]byte
	for _, n := range []string{"alice", "bob", "carol"} {
		pop, err := og.keys[n].ProvePossession(og.set)
		if err != nil {
			t.Fatal(err)
		}
		pops = append(pops, enc(t, pop))
	}
	og.admin.must("QuorumInit", gateway.QuorumInitInput{Set: enc(t, og.set), ProofsOfPossession: pops, ClusterId: "prod", Target: "gw-1"}, nil)
	for n, k := range og.keys {
		og.admin.must("QuorumLinkOfficer", gateway.QuorumLinkOfficerInput{PrincipalName: n, Fingerprint: k.Fingerprint().String()}, nil)
	}
	return og
}

func (og *officerGateway) propose(t *testing.T, params quorum.Params) []byte {
	t.Helper()
	now := time.Now()
	p, err := quorum.NewProposal(og.set, params, quorum.Header{ClusterID: "prod", Target: "gw-1", Requester: "alice",
		NotBefore: now.Add(-time.Minute), Expiry: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return enc(t, p)
}

func (og *officerGateway) approval(t *testing.T, who string, proposal []byte) gateway.QuorumApproveInput {
	t.Helper()
	a, err := og.keys[who].Approve(proposal)
	if err != nil {
		t.Fatal(err)
	}
	return gateway.QuorumApproveInput{Approval: enc(t, a)}
}

// A key whose policy allows alice to export it is exported through two
// approvals: the record opens only with the recipient's key, and the
// recovered key decrypts what the gateway encrypted. The same approvals
// can't run it twice, and a key whose policy does not allow export can't
// even be proposed.
func TestQuorumKeyExport(t *testing.T) {
	og := startOfficerGateway(t)
	ctx := context.Background()
	c := og.tg.mtlsClient(t)
	policy := `{"Version":"2012-10-17","Statement":[
	  {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::` + testAccount + `:root"},"Action":"kms:*","Resource":"*"},
	  {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::` + testAccount + `:user/alice"},"Action":"hsmgate:ExportKey","Resource":"*"}]}`
	k, err := c.CreateKey(ctx, &kms.CreateKeyInput{Policy: aws.String(policy)})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := c.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	ec := map[string]string{"purpose": "escrow"}
	ct, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: k.KeyMetadata.KeyId, Plaintext: []byte("old data"), EncryptionContext: ec})
	if err != nil {
		t.Fatal(err)
	}

	// The recipient: an HPKE key of someone outside the quorum.
	recipient, err := quorum.GenerateOfficerKey("escrow@example.com")
	if err != nil {
		t.Fatal(err)
	}
	rcpt, err := recipient.Public().Recipient(quorum.KEMXWing)
	if err != nil {
		t.Fatal(err)
	}
	alice := og.clients["alice"]

	// Refused up front: a key whose policy does not allow export, a
	// proposer the policy does not name, a version that does not exist.
	alice.refused("QuorumPropose", gateway.QuorumProposeInput{Proposal: og.propose(t, &quorum.KeyExportParams{KeyID: *plain.KeyMetadata.KeyId, KeyVersion: 1, Recipient: rcpt})},
		kmsapi.ExAccessDenied, "hsmgate:ExportKey")
	og.clients["bob"].refused("QuorumPropose", gateway.QuorumProposeInput{Proposal: og.propose(t, &quorum.KeyExportParams{KeyID: *k.KeyMetadata.KeyId, KeyVersion: 1, Recipient: rcpt})},
		kmsapi.ExAccessDenied, "user/bob")
	alice.refused("QuorumPropose", gateway.QuorumProposeInput{Proposal: og.propose(t, &quorum.KeyExportParams{KeyID: *k.KeyMetadata.KeyId, KeyVersion: 2, Recipient: rcpt})},
		kmsapi.ExNotFound, "no version 2")

	prop := og.propose(t, &quorum.KeyExportParams{KeyID: *k.KeyMetadata.KeyId, KeyVersion: 1, Recipient: rcpt})
	var pr gateway.QuorumProposalOutput
	alice.must("QuorumPropose", gateway.QuorumProposeInput{Proposal: prop}, &pr)
	alice.must("QuorumApprove", og.approval(t, "alice", prop), &pr)
	if pr.Status != "PENDING" || pr.Result != nil {
		t.Fatalf("one approval: %+v", pr)
	}
	og.clients["carol"].must("QuorumApprove", og.approval(t, "carol", prop), &pr)
	if pr.Status != "EXECUTED" || pr.ResultError != "" || len(pr.Result) == 0 {
		t.Fatalf("two approvals: status %s, error %q, %d result bytes", pr.Status, pr.ResultError, len(pr.Result))
	}
	// Fetched again later by any officer, the same record.
	var shown gateway.QuorumProposalOutput
	og.clients["bob"].must("QuorumShow", gateway.QuorumRequestInput{RequestId: pr.RequestId}, &shown)
	if shown.Status != "EXECUTED" || string(shown.Result) != string(pr.Result) {
		t.Fatalf("QuorumShow after execution: %+v", shown)
	}
	og.clients["mallory"].refused("QuorumShow", gateway.QuorumRequestInput{RequestId: pr.RequestId}, kmsapi.ExAccessDenied, "neither")

	rec, err := quorum.DecodeExportedKey(pr.Result)
	if err != nil {
		t.Fatal(err)
	}
	if rec.KeyID != *k.KeyMetadata.Arn || rec.KeyVersion != 1 || rec.Format != quorum.ExportRaw || rec.KeySpec != "SYMMETRIC_DEFAULT" {
		t.Fatalf("export record: %s v%d %s %s", rec.KeyID, rec.KeyVersion, rec.Format, rec.KeySpec)
	}
	if _, err := og.keys["alice"].OpenExport(rec); err == nil {
		t.Fatal("an officer who is not the recipient opened the export")
	}
	key, err := recipient.OpenExport(rec)
	if err != nil {
		t.Fatal(err)
	}
	// The recovered key decrypts the gateway's ciphertext (docs/ciphertext-format.md).
	blob, err := ciphertext.Parse(ct.CiphertextBlob)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := aes.NewCipher(key)
	g, _ := cipher.NewGCM(b)
	got, err := g.Open(nil, blob.IV[:], blob.Sealed, blob.AAD(ec))
	if err != nil || string(got) != "old data" {
		t.Fatalf("decrypting with the exported key: %q, %v", got, err)
	}

	// Replays are refused.
	og.clients["bob"].refused("QuorumApprove", og.approval(t, "bob", prop), kmsapi.ExValidation, "replay")
	alice.refused("QuorumPropose", gateway.QuorumProposeInput{Proposal: prop}, kmsapi.ExValidation, "replay")
}

// A key policy reserves ScheduleKeyDeletion to a quorum: the admin's own
// call is denied, the same request approved by two officers runs.
func TestQuorumProtectedKeyOperation(t *testing.T) {
	og := startOfficerGateway(t)
	ctx := context.Background()
	c := og.tg.mtlsClient(t)
	policy := `{"Version":"2012-10-17","Statement":[
	  {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::` + testAccount + `:root"},"Action":"kms:*","Resource":"*"},
	  {"Effect":"Deny","Principal":"*","Action":["kms:ScheduleKeyDeletion","kms:PutKeyPolicy"],"Resource":"*",
	   "Condition":{"Bool":{"hsmgate:QuorumApproved":"false"}}}]}`
	k, err := c.CreateKey(ctx, &kms.CreateKeyInput{Policy: aws.String(policy), BypassPolicyLockoutSafetyCheck: true})
	if err != nil {
		t.Fatal(err)
	}
	id := *k.KeyMetadata.KeyId
	_, err = c.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: &id, PendingWindowInDays: aws.Int32(7)})
	wantCode(t, err, kmsapi.ExAccessDenied)
	if !strings.Contains(err.Error(), "explicit deny") {
		t.Fatalf("direct ScheduleKeyDeletion: %v", err)
	}

	// Proposals are checked before officers see them.
	og.admin.refused("QuorumPropose", gateway.QuorumProposeInput{Proposal: og.propose(t, &quorum.KeyOperationParams{KeyID: id, Operation: "Decrypt", Request: []byte(`{"KeyId":"` + id + `"}`)})},
		kmsapi.ExValidation, "not an operation a quorum proposal can run")
	other, _ := c.CreateKey(ctx, &kms.CreateKeyInput{})
	og.admin.refused("QuorumPropose", gateway.QuorumProposeInput{Proposal: og.propose(t, &quorum.KeyOperationParams{KeyID: id, Operation: "ScheduleKeyDeletion", Request: []byte(`{"KeyId":"` + *other.KeyMetadata.KeyId + `"}`)})},
		kmsapi.ExValidation, "is not the proposal's key")

	req := []byte(`{"KeyId":"` + id + `","PendingWindowInDays":7}`)
	prop := og.propose(t, &quorum.KeyOperationParams{KeyID: id, Operation: "ScheduleKeyDeletion", Request: req})
	var pr gateway.QuorumProposalOutput
	og.admin.must("QuorumPropose", gateway.QuorumProposeInput{Proposal: prop}, &pr) // the admin proposes: the operation runs as the admin
	og.clients["alice"].must("QuorumApprove", og.approval(t, "alice", prop), &pr)
	og.clients["bob"].must("QuorumApprove", og.approval(t, "bob", prop), &pr)
	if pr.Status != "EXECUTED" || pr.ResultError != "" {
		t.Fatalf("approved ScheduleKeyDeletion: %+v", pr)
	}
	var resp struct{ KeyState string }
	if err := json.Unmarshal(pr.Result, &resp); err != nil || resp.KeyState != "PendingDeletion" {
		t.Fatalf("result %s (%v)", pr.Result, err)
	}
	d, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: &id})
	if err != nil || d.KeyMetadata.KeyState != "PendingDeletion" {
		t.Fatalf("after the approved deletion: %v %v", d, err)
	}
	// Cancelling is not protected by this policy, so the admin can.
	if _, err := c.CancelKeyDeletion(ctx, &kms.CancelKeyDeletionInput{KeyId: &id}); err != nil {
		t.Fatal(err)
	}
	og.clients["carol"].refused("QuorumApprove", og.approval(t, "carol", prop), kmsapi.ExValidation, "replay")
}
