package hsmpool

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/internal/testenv"
)

func totalOps(p *Pool) (ops, data uint64) {
	for _, st := range p.Status() {
		ops += st.Ops
		data += st.Errors["data"]
	}
	return
}

// A tampered ciphertext is a data error: reported as such, tried on one slot
// only, and the session goes back to the pool.
func TestTamperedCiphertextIsNotRetried(t *testing.T) {
	p, _ := newTestPool(t, 4, nil)
	ctx := context.Background()
	aes := mustKey(t, p, "aes", AES256, UsageEncrypt)
	other := mustKey(t, p, "other", AES256, UsageEncrypt)
	iv, ct, err := p.EncryptGCM(ctx, aes, []byte("attack at dawn"), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	flip := func(b []byte, i int) []byte { c := append([]byte(nil), b...); c[i] ^= 1; return c }
	cases := map[string]func() error{
		"flipped ciphertext byte": func() error { _, err := p.DecryptGCM(ctx, aes, iv, flip(ct, 0), []byte("aad")); return err },
		"flipped tag byte":        func() error { _, err := p.DecryptGCM(ctx, aes, iv, flip(ct, len(ct)-1), []byte("aad")); return err },
		"other AAD":               func() error { _, err := p.DecryptGCM(ctx, aes, iv, ct, []byte("aae")); return err },
		"other IV":                func() error { _, err := p.DecryptGCM(ctx, aes, flip(iv, 5), ct, []byte("aad")); return err },
		"other key":               func() error { _, err := p.DecryptGCM(ctx, other, iv, ct, []byte("aad")); return err },
		"truncated":               func() error { _, err := p.DecryptGCM(ctx, aes, iv, ct[:10], []byte("aad")); return err },
	}
	for name, decrypt := range cases {
		t.Run(name, func(t *testing.T) {
			opsBefore, dataBefore := totalOps(p)
			err := decrypt()
			if !errors.Is(err, ErrInvalidCiphertext) {
				t.Fatalf("got %v, want ErrInvalidCiphertext", err)
			}
			opsAfter, dataAfter := totalOps(p)
			if name != "truncated" && (opsAfter-opsBefore != 1 || dataAfter-dataBefore != 1) {
				t.Errorf("a data error was tried %d times (data errors +%d), want once", opsAfter-opsBefore, dataAfter-dataBefore)
			}
		})
	}
	if p.Healthy() != 4 {
		t.Fatalf("tampered ciphertexts quarantined a slot: %+v", p.Status())
	}
	for _, st := range p.Status() {
		if st.Errors["session"] != 0 || st.Errors["device"] != 0 {
			t.Errorf("slot %s evicted sessions on data errors: %+v", st.Name, st.Errors)
		}
	}
	// And the sessions that saw the errors still work.
	for i := 0; i < 20; i++ {
		if _, err := p.DecryptGCM(ctx, aes, iv, ct, []byte("aad")); err != nil {
			t.Fatal(err)
		}
	}
}

// A wrong PIN is tried once per slot and never again, not even by probes.
func TestWrongPINIsTriedOnce(t *testing.T) {
	env := testenv.NewSoftHSM(t, 2)
	bad := t.TempDir() + "/bad.pin"
	if err := os.WriteFile(bad, []byte("not-the-pin"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := openPool(t, Options{
		Modules:                 []ModuleOptions{{Path: env.Module, PIN: PINSource{File: bad}}},
		QuarantineProbeInterval: 10 * time.Millisecond,
		ProbeInterval:           10 * time.Millisecond,
	})
	for _, name := range env.Labels() {
		if st, err := p.ProbeSlot(name); err != nil || st != StateFailed {
			t.Fatalf("probe %s: %v %v", name, st, err)
		}
	}
	time.Sleep(100 * time.Millisecond) // ten probe intervals: none may log in
	for _, st := range p.Status() {
		if st.State != StateFailed || st.Logins != 1 {
			t.Errorf("slot %s: state %v, %d login attempts (want failed, 1): %s", st.Name, st.State, st.Logins, st.Reason)
		}
		if strings.Contains(st.Reason, "not-the-pin") {
			t.Errorf("reason leaks the PIN: %s", st.Reason)
		}
	}
	if _, err := p.GenerateKey(context.Background(), AES256, UsageEncrypt); !errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrUnsupported) {
		t.Errorf("operation on a pool with no healthy slot: %v", err)
	}
	// The token was not locked: the right PIN still works.
	good := openPool(t, Options{Modules: []ModuleOptions{{Path: env.Module, PIN: PINSource{File: env.PINFile}}}})
	for _, st := range good.Status() {
		if st.State == StateFailed {
			t.Errorf("slot %s locked after one wrong PIN: %s", st.Name, st.Reason)
		}
	}
}

// When every session is busy a caller waits until its deadline, then gets
// ErrThrottled; nothing queues forever.
func TestSessionExhaustionThrottles(t *testing.T) {
	p, _ := newTestPool(t, 1, func(o *Options) { o.SessionsPerSlot = 2 })
	aes := mustKey(t, p, "aes", AES256, UsageEncrypt)
	s := p.slots[0]
	var held []*session
	for i := 0; i < 2; i++ {
		sess, err := s.borrow(time.Now().Add(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, sess)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err := p.EncryptGCM(ctx, aes, []byte("x"), nil)
	waited := time.Since(start)
	if !errors.Is(err, ErrThrottled) {
		t.Fatalf("got %v, want ErrThrottled", err)
	}
	if waited < 100*time.Millisecond || waited > 2*time.Second {
		t.Errorf("waited %v for a session; want about the 150ms deadline", waited)
	}
	if st := p.Status()[0]; st.Throttled == 0 || st.State != StateHealthy {
		t.Errorf("throttling must be counted and must not quarantine: %+v", st)
	}
	for _, sess := range held {
		s.giveBack(sess)
	}
	if _, _, err := p.EncryptGCM(context.Background(), aes, []byte("x"), nil); err != nil {
		t.Fatalf("after sessions were returned: %v", err)
	}
}

// A slot whose token holds another domain key is refused.
func TestDomainKeyMismatchIsRefused(t *testing.T) {
	env := testenv.NewSoftHSM(t, 3)
	open := func(labels ...string) *Pool {
		var sel []TokenSelector
		for _, l := range labels {
			sel = append(sel, TokenSelector{Label: l})
		}
		return openPool(t, Options{Modules: []ModuleOptions{{Path: env.Module, PIN: PINSource{File: env.PINFile}, Tokens: sel}}})
	}
	provision := func(p *Pool) {
		dk, _ := NewDomainKeyMaterial()
		if err := p.ProvisionDomainKey(context.Background(), dk); err != nil {
			t.Fatal(err)
		}
	}
	a := open("tok-0", "tok-1")
	provision(a)
	want := a.DomainKeyCheck()
	a.Close()
	b := open("tok-2")
	provision(b) // another domain key
	b.Close()

	p := openPool(t, Options{
		Modules:        []ModuleOptions{{Path: env.Module, PIN: PINSource{File: env.PINFile}}},
		DomainKeyCheck: want,
	})
	if st := slotStatus(p, "tok-2"); st.State != StateMismatch {
		t.Fatalf("tok-2 with a foreign domain key is %v (%s)", st.State, st.Reason)
	}
	if p.Healthy() != 2 {
		t.Fatalf("healthy = %d, want 2", p.Healthy())
	}
	if err := p.ProvisionDomainKey(context.Background(), make([]byte, 32)); err == nil {
		t.Error("provisioning with no slot lacking a domain key succeeded")
	}
	// Without a configured check value the majority wins.
	p.Close()
	q := openPool(t, Options{Modules: []ModuleOptions{{Path: env.Module, PIN: PINSource{File: env.PINFile}}}})
	if q.DomainKeyCheck() != want || slotStatus(q, "tok-2").State != StateMismatch {
		t.Fatalf("majority rule: pool check %s, tok-2 %v", q.DomainKeyCheck(), slotStatus(q, "tok-2").State)
	}
}

func TestOpenErrors(t *testing.T) {
	env := testenv.NewSoftHSM(t, 1)
	cases := map[string]Options{
		"no module":     {},
		"missing token": {Modules: []ModuleOptions{{Path: env.Module, PIN: PINSource{File: env.PINFile}, Tokens: []TokenSelector{{Label: "nope"}}}}},
		"no PIN":        {Modules: []ModuleOptions{{Path: env.Module}}},
		"bad module":    {Modules: []ModuleOptions{{Path: "/nonexistent/libpkcs11.so", PIN: PINSource{File: env.PINFile}}}},
		"bad check":     {Modules: []ModuleOptions{{Path: env.Module, PIN: PINSource{File: env.PINFile}}}, DomainKeyCheck: "xyz"},
	}
	for name, o := range cases {
		t.Run(name, func(t *testing.T) {
			p, err := Open(context.Background(), o)
			if err == nil {
				p.Close()
				t.Fatal("Open succeeded")
			}
			if strings.Contains(err.Error(), env.PIN) {
				t.Errorf("error leaks the PIN: %v", err)
			}
		})
	}
}

// A slot added later gets the domain key only from the same material (as
// recovered by officers); other material is refused and removed.
func TestProvisionNewSlot(t *testing.T) {
	env := testenv.NewSoftHSM(t, 3)
	ctx := context.Background()
	two := openPool(t, Options{Modules: []ModuleOptions{{Path: env.Module, PIN: PINSource{File: env.PINFile},
		Tokens: []TokenSelector{{Label: "tok-0"}, {Label: "tok-1"}}}}})
	material, _ := NewDomainKeyMaterial()
	if err := two.ProvisionDomainKey(ctx, append([]byte(nil), material...)); err != nil {
		t.Fatal(err)
	}
	want := two.DomainKeyCheck()
	if err := two.Close(); err != nil {
		t.Fatal(err)
	}

	p := openPool(t, Options{Modules: []ModuleOptions{{Path: env.Module, PIN: PINSource{File: env.PINFile}}}, DomainKeyCheck: want})
	if st := slotStatus(p, "tok-2").State; st != StateNoDomainKey {
		t.Fatalf("new token is %v", st)
	}
	other, _ := NewDomainKeyMaterial()
	if err := p.ProvisionDomainKey(ctx, other); err == nil {
		t.Fatal("provisioning a different domain key succeeded")
	}
	if st := slotStatus(p, "tok-2"); st.State != StateNoDomainKey {
		t.Fatalf("after refused material tok-2 is %v (%s)", st.State, st.Reason)
	}
	if err := p.ProvisionDomainKey(ctx, material); err != nil {
		t.Fatal(err)
	}
	if st := slotStatus(p, "tok-2"); st.State != StateHealthy || st.DomainKey != want {
		t.Fatalf("tok-2 after provisioning: %v %s", st.State, st.DomainKey)
	}
}
