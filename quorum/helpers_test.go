package quorum

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// Officer keys are costly enough (ML-DSA-65, X-Wing) to make once per
// test binary.
var (
	keysOnce sync.Once
	keys     []*OfficerKey
)

// officers returns n distinct officer keys (n ≤ 8), the same ones on every
// call: "officer-0" … "officer-7".
func officers(t testing.TB, n int) []*OfficerKey {
	t.Helper()
	keysOnce.Do(func() {
		for i := range 8 {
			k, err := GenerateOfficerKey(fmt.Sprintf("officer-%d", i))
			if err != nil {
				panic(err)
			}
			keys = append(keys, k)
		}
	})
	if n > len(keys) {
		t.Fatalf("at most %d test officers", len(keys))
	}
	return keys[:n]
}

func publics(ks []*OfficerKey) []OfficerPublicKey {
	var ps []OfficerPublicKey
	for _, k := range ks {
		ps = append(ps, k.Public())
	}
	return ps
}

// newSet makes a valid set of ks at epoch with threshold t for every kind
// but set changes, which need at least a majority.
func newSet(t testing.TB, epoch uint64, ks []*OfficerKey, threshold int) *Set {
	t.Helper()
	th := map[Kind]int{}
	for _, k := range Kinds {
		th[k] = threshold
	}
	th[KindSetChange] = max(threshold, len(ks)/2+1, 2)
	s := &Set{Epoch: epoch, Officers: publics(ks), Thresholds: th}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	return s
}

var (
	t0    = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	scope = Scope{ClusterID: "prod-eu", Target: "gw-1"}
)

func header() Header {
	return Header{ClusterID: scope.ClusterID, Target: scope.Target, Requester: "ops@example.com", NotBefore: t0, Expiry: t0.Add(24 * time.Hour)}
}

func firmwareParams() *FirmwareActivationParams {
	return &FirmwareActivationParams{Version: "2.4.1", ImageSHA256: make([]byte, 32)}
}

// propose makes and encodes a firmware-activation proposal under set.
func propose(t testing.TB, set *Set) []byte {
	t.Helper()
	p, err := NewProposal(set, firmwareParams(), header())
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func approve(t testing.TB, k *OfficerKey, proposal []byte) *Approval {
	t.Helper()
	a, err := k.Approve(proposal)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
