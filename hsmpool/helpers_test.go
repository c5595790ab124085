package hsmpool

import (
	"context"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/internal/testenv"
)

// newTestPool creates n SoftHSM tokens, opens a pool on them with the
// domain key provisioned, and at cleanup closes it and fails the test if
// any session is still borrowed.
func newTestPool(t testing.TB, n int, tweak func(*Options)) (*Pool, *testenv.SoftHSM) {
	t.Helper()
	env := testenv.NewSoftHSM(t, n)
	o := Options{
		Modules:                 []ModuleOptions{{Path: env.Module, PIN: PINSource{File: env.PINFile}}},
		QuarantineProbeInterval: 50 * time.Millisecond,
		FaultInjection:          true,
	}
	if tweak != nil {
		tweak(&o)
	}
	p, err := Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	if p.Healthy() == 0 && p.Status()[0].State == StateNoDomainKey {
		dk, err := NewDomainKeyMaterial()
		if err != nil {
			t.Fatal(err)
		}
		if err := p.ProvisionDomainKey(context.Background(), dk); err != nil {
			t.Fatal(err)
		}
		clear(dk)
	}
	if got := p.Healthy(); got != n {
		t.Fatalf("healthy slots = %d, want %d: %+v", got, n, p.Status())
	}
	return p, env
}

func mustKey(t testing.TB, p *Pool, id string, spec KeySpec, usage Usage) *Key {
	t.Helper()
	g, err := p.GenerateKey(context.Background(), spec, usage)
	if err != nil {
		t.Fatalf("generate %s %s: %v", spec, usage, err)
	}
	k, err := NewKey(id, 1, g.Blob, g.Public)
	if err != nil {
		t.Fatalf("load %s: %v", spec, err)
	}
	return k
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func slotStatus(p *Pool, name string) SlotStatus {
	for _, s := range p.Status() {
		if s.Name == name {
			return s
		}
	}
	return SlotStatus{}
}

// singleSlotPool opens a second pool on the same module restricted to one
// token, so a test can make sure an operation runs on that very slot.
func singleSlotPool(t testing.TB, env *testenv.SoftHSM, label, kcv string) *Pool {
	t.Helper()
	p, err := Open(context.Background(), Options{
		Modules:        []ModuleOptions{{Path: env.Module, PIN: PINSource{File: env.PINFile}, Tokens: []TokenSelector{{Label: label}}}},
		DomainKeyCheck: kcv,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close %s: %v", label, err)
		}
	})
	if p.Healthy() != 1 {
		t.Fatalf("single-slot pool on %s not healthy: %+v", label, p.Status())
	}
	return p
}

// openPool opens a pool and closes it at cleanup, even when the test fails
// first: a pool left open would keep the module initialised with this
// test's SoftHSM configuration and break the tests after it.
func openPool(t testing.TB, o Options) *Pool {
	t.Helper()
	p, err := Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return p
}
