package hsmpool

import (
	"context"
	"crypto"
	"crypto/sha256"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/pkcs11"
)

// The benchmarks compare each operation through the pool with the same
// operation made by raw miekg/pkcs11 calls on one dedicated session per
// goroutine (the ceiling), on the same tokens at the same parallelism. Run:
//
//	go test ./hsmpool -run '^$' -bench . -benchtime 2s
//
// and compare Pool with Raw in each group (docs/performance.md).

const benchParallelism = 4 // goroutines per GOMAXPROCS

type benchOp struct {
	name  string
	spec  KeySpec
	usage Usage
	pool  func(ctx context.Context, p *Pool, k *Key) error
	raw   func(ck *pkcs11.Ctx, h pkcs11.SessionHandle, obj pkcs11.ObjectHandle) error
}

var (
	small   = make([]byte, 32)
	large   = make([]byte, 4096)
	digest  = sha256.Sum256([]byte("benchmark"))
	benchIV = make([]byte, 12)
)

func gcmRaw(data []byte) func(ck *pkcs11.Ctx, h pkcs11.SessionHandle, obj pkcs11.ObjectHandle) error {
	return func(ck *pkcs11.Ctx, h pkcs11.SessionHandle, obj pkcs11.ObjectHandle) error {
		params := pkcs11.NewGCMParams(benchIV, nil, 128)
		defer params.Free()
		if err := ck.EncryptInit(h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}, obj); err != nil {
			return err
		}
		_, err := ck.Encrypt(h, data)
		return err
	}
}

func signRaw(mech uint, in []byte) func(ck *pkcs11.Ctx, h pkcs11.SessionHandle, obj pkcs11.ObjectHandle) error {
	return func(ck *pkcs11.Ctx, h pkcs11.SessionHandle, obj pkcs11.ObjectHandle) error {
		if err := ck.SignInit(h, []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)}, obj); err != nil {
			return err
		}
		_, err := ck.Sign(h, in)
		return err
	}
}

var benchOps = []benchOp{
	{"EncryptGCM32", AES256, UsageEncrypt, func(ctx context.Context, p *Pool, k *Key) error {
		_, _, err := p.EncryptGCM(ctx, k, small, nil)
		return err
	}, gcmRaw(small)},
	{"EncryptGCM4K", AES256, UsageEncrypt, func(ctx context.Context, p *Pool, k *Key) error {
		_, _, err := p.EncryptGCM(ctx, k, large, nil)
		return err
	}, gcmRaw(large)},
	{"SignECDSAP256", ECP256, UsageSign, func(ctx context.Context, p *Pool, k *Key) error {
		_, err := p.SignDigest(ctx, k, ECDSAWithSHA256, digest[:])
		return err
	}, signRaw(pkcs11.CKM_ECDSA, digest[:])},
	{"SignRSA2048", RSA2048, UsageSign, func(ctx context.Context, p *Pool, k *Key) error {
		_, err := p.SignDigest(ctx, k, RSAPKCS1v15WithSHA256, digest[:])
		return err
	}, signRaw(pkcs11.CKM_RSA_PKCS, append(append([]byte(nil), digestInfoPrefix[crypto.SHA256]...), digest[:]...))},
	{"HMACSHA256", HMAC256, UsageMAC, func(ctx context.Context, p *Pool, k *Key) error {
		_, err := p.GenerateMAC(ctx, k, small)
		return err
	}, signRaw(pkcs11.CKM_SHA256_HMAC, small)},
}

func BenchmarkOps(b *testing.B) {
	p, _ := newTestPool(b, 4, func(o *Options) { o.FaultInjection = false })
	for _, op := range benchOps {
		k := mustKey(b, p, op.name, op.spec, op.usage)
		b.Run(op.name+"/Pool", func(b *testing.B) { benchPool(b, p, k, op) })
		b.Run(op.name+"/Raw", func(b *testing.B) { benchRaw(b, p, k, op) })
	}
}

// BenchmarkSlots shows that adding slots does not lower throughput: pools of
// 1, 2 and 4 slots on the same tokens run in alternating rounds, and each
// reports its throughput relative to the 1-slot pool. Run with -benchtime 1x.
func BenchmarkSlots(b *testing.B) {
	p, env := newTestPool(b, 4, func(o *Options) { o.FaultInjection = false })
	k := mustKey(b, p, "aes", AES256, UsageEncrypt)
	counts := []int{1, 2, 4}
	pools := make([]*Pool, len(counts))
	for i, n := range counts {
		pools[i] = openPool(b, Options{
			Modules:        []ModuleOptions{{Path: env.Module, PIN: PINSource{File: env.PINFile}, Tokens: selectors(env.Labels()[:n])}},
			DomainKeyCheck: p.DomainKeyCheck(),
		})
	}
	ctx := context.Background()
	workers := benchParallelism * runtime.GOMAXPROCS(0)
	ops := make([]int64, len(counts))
	const rounds, round = 10, 150 * time.Millisecond
	for r := 0; r < rounds; r++ {
		for i, sp := range pools {
			ops[i] += timed(b, workers, round, func(int) (func() error, func()) {
				return func() error { return benchOps[0].pool(ctx, sp, k) }, func() {}
			})
		}
	}
	for i, n := range counts {
		b.Run(fmt.Sprintf("EncryptGCM32/slots=%d", n), func(b *testing.B) {
			b.ReportMetric(float64(ops[i])/(rounds*round).Seconds(), "ops/s")
			b.ReportMetric(float64(ops[i])/float64(ops[0]), "vs-1-slot")
		})
	}
}

func selectors(labels []string) []TokenSelector {
	out := make([]TokenSelector, len(labels))
	for i, l := range labels {
		out[i].Label = l
	}
	return out
}

func benchPool(b *testing.B, p *Pool, k *Key, op benchOp) {
	ctx := context.Background()
	if err := op.pool(ctx, p, k); err != nil { // warm the key caches
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := op.pool(ctx, p, k); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// benchRaw gives each goroutine its own session on the pool's tokens in
// turn, with the key unwrapped into it, and calls miekg/pkcs11 directly.
func benchRaw(b *testing.B, p *Pool, k *Key, op benchOp) {
	ck := p.modules[0].raw
	var next atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		s := p.slots[int(next.Add(1))%len(p.slots)]
		h, err := ck.OpenSession(s.id, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
		if err != nil {
			b.Error(err)
			return
		}
		defer ck.CloseSession(h)
		obj, err := ck.UnwrapKey(h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP_PAD, nil)},
			s.ctl.Load().dk, k.blob.Wrapped, privateTemplate(k.blob.Spec, k.blob.Usage, false))
		if err != nil {
			b.Error(err)
			return
		}
		for pb.Next() {
			if err := op.raw(ck, h, obj); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkPoolVsRaw measures the pool against raw PKCS#11 in alternating
// rounds within one run, so that load from elsewhere on a shared machine
// hits both alike, and reports the throughput ratio (pool/raw: 1.0 means
// the pool costs nothing). b.N is not used; run it with -benchtime 1x.
func BenchmarkPoolVsRaw(b *testing.B) {
	protected, env := newTestPool(b, 4, func(o *Options) { o.FaultInjection = false })
	inline := openPool(b, Options{
		Modules:        []ModuleOptions{{Path: env.Module, PIN: PINSource{File: env.PINFile}}},
		DomainKeyCheck: protected.DomainKeyCheck(),
		InlineCalls:    true,
	})
	const rounds, round = 10, 150 * time.Millisecond
	workers := benchParallelism * runtime.GOMAXPROCS(0)
	for _, op := range benchOps {
		k := mustKey(b, protected, op.name, op.spec, op.usage)
		for _, mode := range []struct {
			name string
			p    *Pool
		}{{"protected", protected}, {"inline", inline}} {
			p := mode.p
			b.Run(op.name+"/"+mode.name, func(b *testing.B) {
				ctx := context.Background()
				if err := op.pool(ctx, p, k); err != nil {
					b.Fatal(err)
				}
				var poolOps, rawOps int64
				for r := 0; r < rounds; r++ {
					rawOps += timed(b, workers, round, func(w int) (func() error, func()) {
						return rawWorker(b, p, k, op, w)
					})
					poolOps += timed(b, workers, round, func(int) (func() error, func()) {
						return func() error { return op.pool(ctx, p, k) }, func() {}
					})
				}
				secs := (rounds * round).Seconds()
				b.ReportMetric(float64(poolOps)/secs, "pool-ops/s")
				b.ReportMetric(float64(rawOps)/secs, "raw-ops/s")
				b.ReportMetric(float64(poolOps)/float64(rawOps), "pool/raw")
			})
		}
	}
}

// timed starts workers goroutines (each set up by setup before the clock
// starts), lets them call their function for d, and returns the calls made.
func timed(b *testing.B, workers int, d time.Duration, setup func(w int) (func() error, func())) int64 {
	var total atomic.Int64
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	var stop atomic.Bool
	for w := 0; w < workers; w++ {
		ready.Add(1)
		done.Add(1)
		go func(w int) {
			defer done.Done()
			fn, cleanup := setup(w)
			defer cleanup()
			ready.Done()
			<-start
			n := int64(0)
			for !stop.Load() {
				if err := fn(); err != nil {
					b.Error(err)
					break
				}
				n++
			}
			total.Add(n)
		}(w)
	}
	ready.Wait()
	close(start)
	time.Sleep(d)
	stop.Store(true)
	done.Wait()
	return total.Load()
}

// rawWorker opens a session on one of the pool's tokens (in turn), unwraps
// the key into it and returns a function making one raw call.
func rawWorker(b *testing.B, p *Pool, k *Key, op benchOp, w int) (func() error, func()) {
	ck := p.modules[0].raw
	s := p.slots[w%len(p.slots)]
	h, err := ck.OpenSession(s.id, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		b.Fatal(err)
	}
	obj, err := ck.UnwrapKey(h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP_PAD, nil)},
		s.ctl.Load().dk, k.blob.Wrapped, privateTemplate(k.blob.Spec, k.blob.Usage, false))
	if err != nil {
		b.Fatal(err)
	}
	return func() error { return op.raw(ck, h, obj) }, func() { ck.CloseSession(h) }
}
