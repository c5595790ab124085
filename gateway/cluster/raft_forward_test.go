package cluster

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/hsmgate/hsmgate/gateway/keystore"
)

// Errors cross the internal API with their meaning: what the leader
// refused for a command's own reason is that reason on the follower.
func TestRaftWireErrorsRoundTrip(t *testing.T) {
	cases := []struct {
		err  error
		want []error
	}{
		{errors.Join(errors.New("key k1"), keystore.ErrAlreadyExists), []error{keystore.ErrAlreadyExists}},
		{keystore.ErrNotFound, []error{keystore.ErrNotFound}},
		{keystore.ErrInvalid, []error{keystore.ErrInvalid}},
		{keystore.ErrLimit, []error{keystore.ErrLimit}},
		{keystore.ErrMismatch, []error{keystore.ErrMismatch}},
		{fmt.Errorf("%w: quorum-state", keystore.ErrConflict), []error{keystore.ErrConflict}},
		{&NoQuorumError{Reachable: 1, Voters: 3, InFlight: true}, []error{ErrNoQuorum, keystore.ErrUnavailable}},
		{ErrWriteOutcomeUnknown, []error{ErrWriteOutcomeUnknown, keystore.ErrUnavailable}},
		{errRaftRetry, []error{errRaftRetry}},
	}
	for _, tc := range cases {
		got := fromWire("10.0.0.1:8300", toWire(tc.err))
		for _, w := range tc.want {
			if !errors.Is(got, w) {
				t.Errorf("%v crossed as %v, which is not %v", tc.err, got, w)
			}
		}
		if errors.Is(got, keystore.ErrNotFound) != errors.Is(tc.err, keystore.ErrNotFound) {
			t.Errorf("%v crossed as %v", tc.err, got)
		}
	}
	var nq *NoQuorumError
	if got := fromWire("a", toWire(&NoQuorumError{Reachable: 1, Voters: 3, InFlight: true})); !errors.As(got, &nq) || nq.Reachable != 1 || nq.Voters != 3 || !nq.InFlight {
		t.Fatalf("no quorum crossed as %#v", got)
	}
	// Anything else is the peer's message, meaning nothing more.
	got := fromWire("a", toWire(errors.New("disk on fire")))
	if keystore.Refused(got) || errors.Is(got, keystore.ErrUnavailable) || !strings.Contains(got.Error(), "disk on fire") {
		t.Fatalf("an unknown error crossed as %v", got)
	}
}

func TestDecodeRaftAnswer(t *testing.T) {
	var res raftApplyResponse
	if _, err := decodeRaftAnswer("a", "200 OK", strings.NewReader(`{"result":{"index":42}}`), &res); err != nil || res.Index != 42 {
		t.Fatalf("%+v, %v", res, err)
	}
	leader, err := decodeRaftAnswer("a", "421", strings.NewReader(`{"error":{"code":"not_leader"},"leader":"b:1"}`), nil)
	if leader != "b:1" || !errors.Is(err, errRaftRetry) {
		t.Fatalf("not leader: %q, %v", leader, err)
	}
	for _, body := range []string{``, `{`, `[]`, `{"result":"x"}`, `{"error":{"code":7}}`} {
		if _, err := decodeRaftAnswer("a", "200 OK", strings.NewReader(body), &res); err == nil {
			t.Errorf("%q decoded", body)
		}
	}
}

// A peer's answer, whatever its bytes, decodes or fails with an error.
func FuzzRaftAnswer(f *testing.F) {
	for _, s := range []string{`{"result":{"index":42}}`, `{"error":{"code":"no_quorum","reachable":1,"voters":3}}`,
		`{"error":{"code":"not_leader"},"leader":"10.0.0.1:8300"}`, `{"error":{"code":"already_exists","message":"key k"}}`,
		`{"result":{"node_id":"n1","servers":[{"id":"n1","address":"a","voter":true}]}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var res raftApplyResponse
		decodeRaftAnswer("a", "200 OK", strings.NewReader(string(b)), &res)
		var st RaftStatus
		_, err := decodeRaftAnswer("a", "200 OK", strings.NewReader(string(b)), &st)
		if err != nil && err.Error() == "" {
			t.Fatal("an error without a message")
		}
	})
}
