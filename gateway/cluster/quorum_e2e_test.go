package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/quorum"
)

// e2eAdminAPI calls the HsmGate admin API of a node with SigV4 credentials.
type e2eAdminAPI struct {
	t     *testing.T
	url   string
	http  *http.Client
	creds aws.Credentials
}

func newE2EAdminAPI(t *testing.T, url string, roots *x509.CertPool, creds aws.Credentials) *e2eAdminAPI {
	pool := roots.Clone()
	memoryCAs.Lock()
	for _, c := range memoryCAs.list {
		pool.AddCert(c)
	}
	memoryCAs.Unlock()
	return &e2eAdminAPI{t: t, url: url, creds: creds,
		http: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}}
}

// call returns the exception type and message of a refusal, or "" and
// fills out.
func (c *e2eAdminAPI) call(op string, in, out any) (typ, msg string) {
	body, err := json.Marshal(in)
	if err != nil {
		c.t.Error(err)
		return "marshal", err.Error()
	}
	req, _ := http.NewRequest("POST", c.url+"/", bytes.NewReader(body))
	req.Header.Set("X-Amz-Target", gateway.AdminTargetPrefix+op)
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	sum := sha256.Sum256(body)
	if err := v4.NewSigner().SignHTTP(context.Background(), c.creds, req, hex.EncodeToString(sum[:]), "kms", e2eRegion, time.Now()); err != nil {
		c.t.Error(err)
		return "sign", err.Error()
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Error(err)
		return "transport", err.Error()
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		var e struct {
			Type    string `json:"__type"`
			Message string `json:"message"`
		}
		json.Unmarshal(raw, &e)
		return e.Type, e.Message
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			c.t.Errorf("%s: %v: %s", op, err, raw)
		}
	}
	return "", ""
}

func (c *e2eAdminAPI) must(op string, in, out any) {
	c.t.Helper()
	if typ, msg := c.call(op, in, out); typ != "" {
		c.t.Fatalf("%s: %s: %s", op, typ, msg)
	}
}

// TestClusterQuorumApprovalsOnDifferentNodes: officers approve the same
// proposal at the same moment through different nodes. Every approval
// counts (none is lost to the other node's write), and the approved
// proposal runs exactly once in the cluster.
func TestClusterQuorumApprovalsOnDifferentNodes(t *testing.T) {
	nodes, admin, roots := startE2ECluster(t)
	adminCreds := aws.Credentials{AccessKeyID: admin.AccessKeyID, SecretAccessKey: admin.SecretAccessKey}
	api := func(i int, creds aws.Credentials) *e2eAdminAPI {
		return newE2EAdminAPI(t, nodes[i].url, roots, creds)
	}
	ad := api(0, adminCreds)

	names := []string{"alice", "bob", "carol"}
	keys := map[string]*quorum.OfficerKey{}
	creds := map[string]aws.Credentials{}
	set := &quorum.Set{Epoch: 1, Thresholds: map[quorum.Kind]int{}}
	for _, n := range names {
		k, err := quorum.GenerateOfficerKey(n)
		if err != nil {
			t.Fatal(err)
		}
		keys[n] = k
		set.Officers = append(set.Officers, k.Public())
		ad.must("CreatePrincipal", gateway.AdminCreatePrincipalInput{PrincipalName: n}, nil)
		var ak gateway.AdminCreateAccessKeyOutput
		ad.must("CreateAccessKey", gateway.AdminPrincipalInput{PrincipalName: n}, &ak)
		creds[n] = aws.Credentials{AccessKeyID: ak.AccessKey.AccessKeyId, SecretAccessKey: ak.AccessKey.SecretAccessKey}
	}
	for _, k := range quorum.Kinds {
		set.Thresholds[k] = 2
	}
	encode := func(v interface{ Encode() ([]byte, error) }) []byte {
		b, err := v.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	init := gateway.QuorumInitInput{Set: encode(set), ClusterId: "prod", Target: "cluster"}
	for _, n := range names {
		pop, err := keys[n].ProvePossession(set)
		if err != nil {
			t.Fatal(err)
		}
		init.ProofsOfPossession = append(init.ProofsOfPossession, encode(pop))
	}
	ad.must("QuorumInit", init, nil)
	for _, n := range names {
		ad.must("QuorumLinkOfficer", gateway.QuorumLinkOfficerInput{PrincipalName: n, Fingerprint: keys[n].Fingerprint().String()}, nil)
	}

	// propose makes a set change to the next epoch (the same officers) and
	// submits it through node 1.
	propose := func() []byte {
		next := &quorum.Set{Epoch: set.Epoch + 1, Officers: set.Officers, Thresholds: set.Thresholds}
		now := time.Now()
		p, err := quorum.NewProposal(set, &quorum.SetChangeParams{Next: next},
			quorum.Header{ClusterID: "prod", Target: "cluster", Requester: "ops", NotBefore: now.Add(-time.Minute), Expiry: now.Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		raw := encode(p)
		ad.must("QuorumPropose", gateway.QuorumProposeInput{Proposal: raw}, nil)
		set = next
		return raw
	}
	approveAt := func(node int, officer string, proposal []byte) (gateway.QuorumProposalOutput, string) {
		ap, err := keys[officer].Approve(proposal)
		if err != nil {
			t.Fatal(err)
		}
		var out gateway.QuorumProposalOutput
		typ, msg := api(node, creds[officer]).call("QuorumApprove", gateway.QuorumApproveInput{Approval: encode(ap)}, &out)
		if typ != "" {
			return out, typ + ": " + msg
		}
		return out, ""
	}
	// concurrently approves proposal as the officers, each through its
	// node, at once, and returns how many answers said EXECUTED.
	concurrently := func(proposal []byte, officers []string, at []int) int {
		var wg sync.WaitGroup
		outs := make([]gateway.QuorumProposalOutput, len(officers))
		errs := make([]string, len(officers))
		start := make(chan struct{})
		for i := range officers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				outs[i], errs[i] = approveAt(at[i], officers[i], proposal)
			}()
		}
		close(start)
		wg.Wait()
		executed := 0
		for i := range officers {
			switch {
			case errs[i] == "" && outs[i].Status == "EXECUTED":
				executed++
			case errs[i] == "":
			case strings.Contains(errs[i], "executed"):
				// The other node ran it first: a replay of an executed request.
			default:
				t.Errorf("%s's approval through node %d: %s", officers[i], at[i]+1, errs[i])
			}
		}
		return executed
	}
	epochEverywhere := func(want uint64) {
		for i := range nodes {
			var st gateway.QuorumStatusOutput
			api(i, adminCreds).must("QuorumStatus", struct{}{}, &st)
			if st.Epoch != want {
				t.Fatalf("node %d is at quorum epoch %d, want %d", i+1, st.Epoch, want)
			}
		}
	}

	for round := range 3 {
		// Two approvals at once, through two nodes: the threshold is met
		// only if neither is lost.
		p := propose()
		if n := concurrently(p, []string{"alice", "bob"}, []int{1, 2}); n != 1 {
			t.Fatalf("round %d, two approvals at once: %d answers said EXECUTED, want 1", round, n)
		}
		epochEverywhere(set.Epoch)

		// One approval first, then two at once through two nodes: both
		// reach the threshold, the proposal runs once.
		p = propose()
		if _, err := approveAt(0, "alice", p); err != "" {
			t.Fatal(err)
		}
		if n := concurrently(p, []string{"bob", "carol"}, []int{1, 2}); n != 1 {
			t.Fatalf("round %d, two approvals reaching the threshold at once: %d answers said EXECUTED, want 1", round, n)
		}
		epochEverywhere(set.Epoch)
	}
}
