package hsmpool

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// load runs n goroutines doing verified encrypt/decrypt and sign operations
// until stop is closed, and reports every failure.
type load struct {
	ok, failed atomic.Int64
	errs       chan error
	wg         sync.WaitGroup
	stop       chan struct{}
}

func startLoad(t *testing.T, p *Pool, n int, deadline time.Duration, aes, ec *Key) *load {
	l := &load{errs: make(chan error, 64), stop: make(chan struct{})}
	for g := 0; g < n; g++ {
		l.wg.Add(1)
		go func(g int) {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), deadline)
				err := oneVerifiedOp(ctx, p, aes, ec, g, i)
				cancel()
				if err != nil {
					l.failed.Add(1)
					select {
					case l.errs <- err:
					default:
					}
				} else {
					l.ok.Add(1)
				}
			}
		}(g)
	}
	return l
}

func (l *load) finish(t *testing.T) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	close(l.errs)
	for err := range l.errs {
		t.Errorf("request failed under load: %v", err)
	}
	if l.ok.Load() == 0 {
		t.Error("no request succeeded")
	}
}

func oneVerifiedOp(ctx context.Context, p *Pool, aes, ec *Key, g, i int) error {
	msg := []byte(fmt.Sprintf("goroutine %d op %d", g, i))
	if (g+i)%3 == 2 {
		sig, err := p.SignMessage(ctx, ec, ECDSAWithSHA256, msg)
		if err != nil {
			return fmt.Errorf("sign: %w", err)
		}
		d := sha256.Sum256(msg)
		if !ecdsa.VerifyASN1(ec.Public().(*ecdsa.PublicKey), d[:], sig) {
			return errors.New("signature does not verify")
		}
		return nil
	}
	iv, ct, err := p.EncryptGCM(ctx, aes, msg, msg[:4])
	if err != nil {
		return fmt.Errorf("encrypt: %w", err)
	}
	pt, err := p.DecryptGCM(ctx, aes, iv, ct, msg[:4])
	if err != nil {
		return fmt.Errorf("decrypt: %w", err)
	}
	if !bytes.Equal(pt, msg) {
		return errors.New("round trip changed the plaintext")
	}
	return nil
}

func TestConcurrentMixedOperations(t *testing.T) {
	p, _ := newTestPool(t, 4, nil)
	ctx := context.Background()
	aes := mustKey(t, p, "aes", AES256, UsageEncrypt)
	ec := mustKey(t, p, "ec", ECP256, UsageSign)
	hm := mustKey(t, p, "hmac", HMAC256, UsageMAC)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for g := 0; g < 32; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 40; i++ {
				err := oneVerifiedOp(ctx, p, aes, ec, g, i)
				if err == nil && i%5 == 0 {
					var mac []byte
					mac, err = p.GenerateMAC(ctx, hm, []byte{byte(g), byte(i)})
					if err == nil {
						err = p.VerifyMAC(ctx, hm, []byte{byte(g), byte(i)}, mac)
					}
				}
				if err != nil {
					errs <- fmt.Errorf("goroutine %d op %d: %w", g, i, err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var served int
	for _, st := range p.Status() {
		if st.Ops > 0 {
			served++
		}
		if st.InFlight != 0 || st.Borrowed != 0 {
			t.Errorf("slot %s: in flight %d, borrowed %d after the load", st.Name, st.InFlight, st.Borrowed)
		}
		if st.Idle > st.MaxSessions {
			t.Errorf("slot %s: %d idle sessions, cap %d", st.Name, st.Idle, st.MaxSessions)
		}
	}
	if served != 4 {
		t.Errorf("%d of 4 slots served requests: routing does not spread load", served)
	}
}

func TestFailoverOnDeviceError(t *testing.T) {
	p, _ := newTestPool(t, 4, func(o *Options) { o.QuarantineProbeInterval = time.Hour })
	aes := mustKey(t, p, "aes", AES256, UsageEncrypt)
	ec := mustKey(t, p, "ec", ECP256, UsageSign)
	l := startLoad(t, p, 8, 5*time.Second, aes, ec)
	eventually(t, 5*time.Second, "load to reach every slot", func() bool { return slotStatus(p, "tok-1").Ops > 10 })

	if err := p.InjectFault("tok-1", FaultDeviceError); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "tok-1 quarantined", func() bool { return slotStatus(p, "tok-1").State == StateQuarantined })
	okAt := l.ok.Load()
	eventually(t, 5*time.Second, "progress without tok-1", func() bool { return l.ok.Load() > okAt+200 })
	// Still broken: a probe keeps it out.
	if st, _ := p.ProbeSlot("tok-1"); st != StateQuarantined {
		t.Fatalf("probe of a failing slot gave %v", st)
	}
	opsWhileOut := slotStatus(p, "tok-1").Ops

	if err := p.InjectFault("tok-1", FaultNone); err != nil {
		t.Fatal(err)
	}
	if st, _ := p.ProbeSlot("tok-1"); st != StateHealthy {
		t.Fatalf("after the fault cleared, probe gave %v: %+v", st, slotStatus(p, "tok-1"))
	}
	eventually(t, 5*time.Second, "tok-1 serving again", func() bool { return slotStatus(p, "tok-1").Ops > opsWhileOut+10 })
	l.finish(t)
	st := slotStatus(p, "tok-1")
	if st.Errors["device"] == 0 {
		t.Errorf("no device error counted: %+v", st)
	}
	if st.CachedKeys > 2 {
		t.Errorf("cache not rebuilt after reset: %d keys", st.CachedKeys)
	}
}

func TestFailoverOnHang(t *testing.T) {
	p, _ := newTestPool(t, 4, func(o *Options) { o.OpTimeout = 400 * time.Millisecond })
	aes := mustKey(t, p, "aes", AES256, UsageEncrypt)
	ec := mustKey(t, p, "ec", ECP256, UsageSign)
	const deadline = 2 * time.Second
	l := startLoad(t, p, 8, deadline, aes, ec)
	eventually(t, 5*time.Second, "load to reach tok-2", func() bool { return slotStatus(p, "tok-2").Ops > 10 })

	if err := p.InjectFault("tok-2", FaultHang); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "tok-2 quarantined", func() bool { return slotStatus(p, "tok-2").State == StateQuarantined })
	okAt := l.ok.Load()
	eventually(t, 5*time.Second, "progress without tok-2", func() bool { return l.ok.Load() > okAt+200 })
	if st := slotStatus(p, "tok-2"); st.Abandoned == 0 || st.Timeouts == 0 {
		t.Errorf("a hung call should leave an abandoned session: %+v", st)
	}
	// The background prober keeps failing against the hang.
	if st := slotStatus(p, "tok-2"); st.State != StateQuarantined {
		t.Fatalf("hung slot is %v", st.State)
	}

	if err := p.InjectFault("tok-2", FaultNone); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "tok-2 re-admitted by the prober", func() bool { return slotStatus(p, "tok-2").State == StateHealthy })
	eventually(t, 5*time.Second, "abandoned calls to return", func() bool { return slotStatus(p, "tok-2").Abandoned == 0 })
	l.finish(t)
}

func TestSessionErrorsEvictAndRetry(t *testing.T) {
	p, _ := newTestPool(t, 2, nil)
	ctx := context.Background()
	aes := mustKey(t, p, "aes", AES256, UsageEncrypt)
	// Warm both slots' sessions and key caches.
	for i := 0; i < 20; i++ {
		if _, _, err := p.EncryptGCM(ctx, aes, []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.InjectFault("tok-0", FaultSessionInvalid); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		if _, _, err := p.EncryptGCM(ctx, aes, []byte("x"), nil); err != nil {
			t.Fatalf("request %d failed despite a healthy second slot: %v", i, err)
		}
	}
	st := slotStatus(p, "tok-0")
	if st.Errors["session"] == 0 {
		t.Fatalf("no session error counted on tok-0: %+v", st)
	}
	if st.Idle != 0 || st.Borrowed != 0 {
		t.Errorf("tok-0 kept sessions that failed: idle %d borrowed %d", st.Idle, st.Borrowed)
	}
	if err := p.InjectFault("tok-0", FaultNone); err != nil {
		t.Fatal(err)
	}
}

func TestSessionCountIsRetriedElsewhere(t *testing.T) {
	p, _ := newTestPool(t, 2, nil)
	ctx := context.Background()
	// No operation session is open yet (setup uses only the control
	// sessions), so every operation routed to tok-1 must open one.
	if err := p.InjectFault("tok-1", FaultSessionCount); err != nil {
		t.Fatal(err)
	}
	aes := mustKey(t, p, "aes", AES256, UsageEncrypt)
	for i := 0; i < 30; i++ {
		if _, _, err := p.EncryptGCM(ctx, aes, []byte("x"), nil); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if st := slotStatus(p, "tok-1"); st.Errors["session"] == 0 || st.Borrowed != 0 {
		t.Errorf("tok-1: %+v", st)
	}
	_ = p.InjectFault("tok-1", FaultNone)
}

// With InlineCalls a hung call holds its caller, but the watchdog still takes
// the slot out of rotation so that new requests go elsewhere, and the held
// caller fails over once the module answers.
func TestInlineCallsHang(t *testing.T) {
	p, _ := newTestPool(t, 4, func(o *Options) { o.InlineCalls = true; o.OpTimeout = 300 * time.Millisecond })
	aes := mustKey(t, p, "aes", AES256, UsageEncrypt)
	ctx := context.Background()
	if err := p.InjectFault("tok-3", FaultHang); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.InjectFault("tok-3", FaultNone) })
	// Send requests one at a time until one is held by tok-3.
	held := make(chan error, 1)
	for i := 0; slotStatus(p, "tok-3").InFlight == 0; i++ {
		if i == 1000 {
			t.Fatal("no request reached tok-3")
		}
		done := make(chan error, 1)
		go func() {
			_, _, err := p.EncryptGCM(ctx, aes, []byte("x"), nil)
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(50 * time.Millisecond):
			go func() { held <- <-done }()
		}
	}
	eventually(t, 5*time.Second, "watchdog to quarantine tok-3", func() bool { return slotStatus(p, "tok-3").State == StateQuarantined })
	for i := 0; i < 50; i++ {
		if _, _, err := p.EncryptGCM(ctx, aes, []byte("x"), nil); err != nil {
			t.Fatalf("request %d while tok-3 hangs: %v", i, err)
		}
	}
	if err := p.InjectFault("tok-3", FaultNone); err != nil {
		t.Fatal(err)
	}
	if err := <-held; err != nil {
		t.Fatalf("the held request did not fail over: %v", err)
	}
	eventually(t, 10*time.Second, "tok-3 re-admitted", func() bool { return slotStatus(p, "tok-3").State == StateHealthy })
	if st := slotStatus(p, "tok-3"); st.Timeouts == 0 {
		t.Errorf("no overrun counted: %+v", st)
	}
}

// Callers whose deadlines expire at every point of a call's life neither
// hang the pool, nor leak sessions, nor quarantine a healthy slot: a
// caller's short deadline says nothing about the HSM.
func TestShortDeadlines(t *testing.T) {
	p, _ := newTestPool(t, 2, nil)
	aes := mustKey(t, p, "aes", AES256, UsageEncrypt)
	var wg sync.WaitGroup
	done := make(chan struct{})
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				d := time.Duration((g*31+i*17)%400) * time.Microsecond
				ctx, cancel := context.WithTimeout(context.Background(), d)
				_, _, _ = p.EncryptGCM(ctx, aes, []byte("x"), nil)
				cancel()
			}
		}(g)
	}
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("calls with short deadlines hung")
	}
	eventually(t, 5*time.Second, "abandoned calls to finish", func() bool {
		for _, st := range p.Status() {
			if st.Abandoned != 0 || st.Borrowed != 0 {
				return false
			}
		}
		return true
	})
	if p.Healthy() != 2 {
		t.Fatalf("short caller deadlines quarantined a slot: %+v", p.Status())
	}
	if _, _, err := p.EncryptGCM(context.Background(), aes, []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
}
