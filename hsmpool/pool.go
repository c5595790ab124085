package hsmpool

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/pkcs11"
)

// Pool is a set of PKCS#11 slots that serves cryptographic operations from
// any number of goroutines. It is safe for concurrent use. See the package
// documentation for how it routes, fails over and recovers.
type Pool struct {
	opts    Options
	log     *slog.Logger
	modules []*module
	slots   []*slot
	byName  map[string]*slot
	caps    Capabilities
	kcv     atomic.Pointer[KCV] // the pool's domain key check value
	faults  map[*module]*FaultInjector

	closed atomic.Bool
	stop   chan struct{}
	probes sync.WaitGroup
}

// Open loads the configured modules, logs in to every selected token, checks
// each token's domain key and starts the health probes. A slot that can't
// be used is kept in the pool in a non-healthy state with its reason (see
// Status); Open fails only when the configuration is wrong or a module or a
// selected token can't be found.
func Open(ctx context.Context, o Options) (*Pool, error) {
	o = DefaultOptions(o)
	if len(o.Modules) == 0 {
		return nil, errors.New("hsmpool: no PKCS#11 module configured")
	}
	p := &Pool{opts: o, log: o.Logger, byName: map[string]*slot{}, stop: make(chan struct{}), faults: map[*module]*FaultInjector{}}
	if o.DomainKeyCheck != "" {
		k, err := ParseKCV(o.DomainKeyCheck)
		if err != nil {
			return nil, err
		}
		p.kcv.Store(&k)
	}
	fail := func(err error) (*Pool, error) {
		p.release()
		return nil, err
	}
	for _, mo := range o.Modules {
		pin, err := mo.PIN.read()
		if err != nil {
			return fail(fmt.Errorf("hsmpool: module %s: %w", mo.Path, err))
		}
		m, err := acquireModule(mo.Path)
		if err != nil {
			return fail(fmt.Errorf("hsmpool: %w", err))
		}
		p.modules = append(p.modules, m)
		if o.FaultInjection {
			fi := newFaultInjector(m.ck)
			p.faults[m] = fi
			m.ck = fi
		}
		slots, err := selectTokens(m.ck, mo.Tokens)
		if err != nil {
			return fail(fmt.Errorf("hsmpool: module %s: %w", mo.Path, err))
		}
		for _, sel := range slots {
			s, err := p.newSlot(m, sel.id, sel.info, pin)
			if err != nil {
				return fail(fmt.Errorf("hsmpool: %w", err))
			}
			if _, dup := p.byName[s.name]; dup {
				return fail(fmt.Errorf("hsmpool: two tokens are labelled %q; labels name slots and must be unique", s.name))
			}
			p.slots = append(p.slots, s)
			p.byName[s.name] = s
		}
	}
	if len(p.slots) == 0 {
		return fail(errors.New("hsmpool: no token selected"))
	}
	deadline := time.Now().Add(o.OpTimeout)
	if d, ok := ctx.Deadline(); ok && d.After(deadline) {
		deadline = d
	}
	for _, s := range p.slots {
		st, reason := s.connect(deadline)
		s.setState(st, reason)
		if st == StateHealthy || st == StateNoDomainKey {
			s.detect(detectDeadline(deadline, o.OpTimeout))
		}
	}
	p.settleKCV()
	p.recomputeCaps()
	for _, s := range p.slots {
		p.probes.Add(1)
		go s.prober(p.stop, &p.probes)
	}
	p.probes.Add(1)
	go p.watchdog()
	return p, nil
}

type selectedToken struct {
	id   uint
	info pkcs11.TokenInfo
}

// selectTokens finds the configured tokens by label or serial (all
// initialised tokens when none are named), in the configured order.
func selectTokens(ck Cryptoki, want []TokenSelector) ([]selectedToken, error) {
	ids, err := ck.GetSlotList(true)
	if err != nil {
		return nil, fmt.Errorf("C_GetSlotList: %w", err)
	}
	var all []selectedToken
	for _, id := range ids {
		info, err := ck.GetTokenInfo(id)
		if err != nil {
			return nil, fmt.Errorf("C_GetTokenInfo slot %d: %w", id, err)
		}
		if info.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			continue
		}
		all = append(all, selectedToken{id: id, info: info})
	}
	if len(want) == 0 {
		return all, nil
	}
	var out []selectedToken
	for _, w := range want {
		found := false
		for _, t := range all {
			if (w.Label != "" && t.info.Label == w.Label) || (w.Serial != "" && t.info.SerialNumber == w.Serial) {
				out = append(out, t)
				found = true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("no initialised token with %s (%w)", w, ErrNotFound)
		}
	}
	return out, nil
}

func (p *Pool) newSlot(m *module, id uint, info pkcs11.TokenInfo, pin string) (*slot, error) {
	max := p.opts.SessionsPerSlot
	// Leave room for the control session and for other tools on the token.
	if lim := info.MaxSessionCount; lim != pkcs11.CK_EFFECTIVELY_INFINITE && lim != pkcs11.CK_UNAVAILABLE_INFORMATION {
		if int(lim)-2 < max {
			max = int(lim) - 2
		}
	}
	if max < 1 {
		return nil, fmt.Errorf("token %q allows %d sessions; the pool needs at least 3", info.Label, info.MaxSessionCount)
	}
	s := &slot{
		p: p, mod: m, id: id, name: info.Label, serial: info.SerialNumber, model: info.Model, pin: pin,
		maxSessions: max, sem: make(chan struct{}, max), kick: make(chan struct{}, 1),
		sessions: map[*session]struct{}{},
	}
	s.cache = newKeyCache(p.opts.KeyCacheSize, s.destroyEntry)
	return s, nil
}

// detectDeadline is the deadline of a slot's mechanism detection: its
// probes generate keys (an RSA wrapping key for the import probe), which
// takes far longer than one operation on a loaded machine, so it gets ten
// operation timeouts of its own (or the caller's later deadline).
func detectDeadline(callerDeadline time.Time, opTimeout time.Duration) time.Time {
	d := time.Now().Add(10 * opTimeout)
	if callerDeadline.After(d) {
		return callerDeadline
	}
	return d
}

// detect reads the slot's mechanisms on its control session.
func (s *slot) detect(deadline time.Time) {
	// The closure may outlive a timed-out call, so it writes only its own
	// variable; s.mechs is set here, once the call has answered.
	var found *Mechanisms
	err := s.onControl(deadline, opOther, "detect mechanisms", func(c *control) error {
		m, err := detectMechanisms(s.mod.ck, s.id, c.h)
		if err != nil {
			return err
		}
		m.module = strings.TrimSpace(m.module + " (" + filepath.Base(s.mod.path) + ")")
		found = m
		return nil
	})
	if err != nil {
		s.p.log.Warn("hsm slot mechanism detection failed", "slot", s.name, "err", err)
		return
	}
	s.mechs = found
}

// destroyEntry destroys an unwrapped key object nobody uses any more.
func (s *slot) destroyEntry(e *keyEntry) {
	if e.gen != s.gen.Load() {
		return // died with its control session
	}
	_ = s.onControl(time.Now().Add(s.p.opts.OpTimeout), opOther, "destroy cached key", func(c *control) error {
		return s.mod.ck.DestroyObject(c.h, e.obj)
	})
}

// settleKCV fixes the pool's domain key check value (configured, or the one
// most healthy slots agree on) and refuses the slots that differ.
func (p *Pool) settleKCV() {
	want := p.kcv.Load()
	if want == nil {
		counts := map[KCV]int{}
		for _, s := range p.slots {
			if s.State() == StateHealthy {
				counts[*s.kcv.Load()]++
			}
		}
		best, n, tie := KCV{}, 0, false
		for k, c := range counts {
			switch {
			case c > n:
				best, n, tie = k, c, false
			case c == n:
				tie = true
			}
		}
		if n == 0 {
			return
		}
		if tie {
			for _, s := range p.slots {
				if s.State() == StateHealthy {
					s.setState(StateMismatch, "slots disagree on the domain key and no expected check value is configured")
				}
			}
			return
		}
		p.kcv.Store(&best)
		want = &best
	}
	for _, s := range p.slots {
		if s.State() == StateHealthy && *s.kcv.Load() != *want {
			s.setState(StateMismatch, fmt.Sprintf("domain key check value %s, pool's is %s", s.kcv.Load(), want))
		}
	}
}

func (p *Pool) expectedKCV() *KCV { return p.kcv.Load() }

// recomputeCaps intersects the capabilities of every slot whose mechanisms
// are known.
func (p *Pool) recomputeCaps() {
	var c *Capabilities
	for _, s := range p.slots {
		if s.mechs == nil {
			continue
		}
		sc := s.mechs.capabilities()
		if c == nil {
			c = &sc
		} else {
			x := intersect(*c, sc)
			c = &x
		}
	}
	if c == nil {
		c = &Capabilities{KeyGen: map[KeySpec]bool{}, HMAC: map[KeySpec]bool{}, Import: map[ImportAlgorithm]ImportSupport{}}
	}
	p.caps = *c
}

// Capabilities reports what every slot of the pool can do.
func (p *Pool) Capabilities() Capabilities { return p.caps }

// DomainKeyCheck returns the pool's domain key check value, or "" when no
// slot holds a domain key.
func (p *Pool) DomainKeyCheck() string {
	if k := p.kcv.Load(); k != nil {
		return k.String()
	}
	return ""
}

// ParseKCV parses a domain key check value as printed by KCV.String.
func ParseKCV(s string) (KCV, error) {
	var k KCV
	if len(s) != 2*kcvLen {
		return k, fmt.Errorf("hsmpool: domain key check value %q: want %d hex digits", s, 2*kcvLen)
	}
	for i := 0; i < kcvLen; i++ {
		var b byte
		if _, err := fmt.Sscanf(s[2*i:2*i+2], "%02x", &b); err != nil {
			return k, fmt.Errorf("hsmpool: domain key check value %q: not hex", s)
		}
		k[i] = b
	}
	return k, nil
}

// watchdogTick is how late past its deadline a hung call is given up on.
const watchdogTick = 5 * time.Millisecond

// watchdog gives up on operation calls that overran their deadline, so their
// callers can fail over.
func (p *Pool) watchdog() {
	defer p.probes.Done()
	t := time.NewTicker(watchdogTick)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case now := <-t.C:
			for _, s := range p.slots {
				s.expireCalls(now.UnixNano())
			}
		}
	}
}

// pick chooses a healthy slot other than not: of two chosen at random, the
// one with fewer requests in flight (power of two choices).
func (p *Pool) pick(not *slot) *slot {
	var buf [16]*slot
	healthy := buf[:0]
	for _, s := range p.slots {
		if s != not && s.state.Load() == int32(StateHealthy) {
			healthy = append(healthy, s)
		}
	}
	switch n := len(healthy); n {
	case 0:
		return nil
	case 1:
		return healthy[0]
	default:
		i := mrand.IntN(n)
		j := mrand.IntN(n - 1)
		if j >= i {
			j++
		}
		a, b := healthy[i], healthy[j]
		if b.inflight.Load() < a.inflight.Load() {
			return b
		}
		return a
	}
}

// do runs attempt on a healthy slot and, if it fails with a session or
// device error, a timeout or throttling, once more on another slot. The
// first attempt gets at most half the caller's remaining time so that the
// second has a chance.
func (p *Pool) do(ctx context.Context, what string, timeout time.Duration, attempt func(s *slot, deadline time.Time) *Error) error {
	if p.closed.Load() {
		return &Error{Op: what, Err: ErrClosed}
	}
	var last *Error
	var tried *slot
	for i := 0; i < 2; i++ {
		// ctx.Err() turns non-nil only once the context's timer has run,
		// which on a loaded machine can be late: check the deadline too.
		cerr := ctx.Err()
		if d, ok := ctx.Deadline(); ok && cerr == nil && !time.Now().Before(d) {
			cerr = context.DeadlineExceeded
		}
		if cerr != nil {
			if last != nil {
				return last
			}
			return &Error{Op: what, Err: fmt.Errorf("%w: %w", ErrTimeout, cerr)}
		}
		s := p.pick(tried)
		if s == nil {
			break
		}
		now := time.Now()
		deadline := now.Add(timeout)
		if d, ok := ctx.Deadline(); ok {
			if i == 0 && len(p.slots) > 1 {
				if half := now.Add(d.Sub(now) / 2); half.Before(deadline) {
					deadline = half
				}
			} else if d.Before(deadline) {
				deadline = d
			}
		}
		s.inflight.Add(1)
		err := attempt(s, deadline)
		s.inflight.Add(-1)
		if err == nil {
			return nil
		}
		last = err
		if !retryable(err) {
			return err
		}
		tried = s
	}
	if last != nil {
		return last
	}
	return &Error{Op: what, Err: ErrUnavailable}
}

func retryable(e *Error) bool {
	switch e.Class {
	case ClassSession, ClassDevice, ClassAuth:
		return true
	}
	return errors.Is(e.Err, ErrThrottled)
}

// SlotStatus is a snapshot of one slot.
type SlotStatus struct {
	Name        string
	Serial      string
	Model       string
	Module      string
	SlotID      uint
	State       State
	Reason      string
	InFlight    int64
	Borrowed    int64 // sessions in use, including abandoned ones
	Abandoned   int64 // sessions whose call overran its deadline and has not returned
	Idle        int
	MaxSessions int
	Latency     time.Duration // EWMA of successful calls
	Ops         uint64
	Errors      map[string]uint64 // by class
	Timeouts    uint64
	Throttled   uint64
	Logins      uint64 // C_Login attempts since Open
	CachedKeys  int
	Mechanisms  []string
	DomainKey   string // check value, "" when none was found
}

// Status returns a snapshot of every slot, in configuration order.
func (p *Pool) Status() []SlotStatus {
	out := make([]SlotStatus, 0, len(p.slots))
	for _, s := range p.slots {
		st := SlotStatus{
			Name: s.name, Serial: s.serial, Model: s.model, Module: s.mod.path, SlotID: s.id,
			State: s.State(), InFlight: s.inflight.Load(), Borrowed: s.borrowed.Load(),
			Abandoned: s.abandoned.Load(), MaxSessions: s.maxSessions, Latency: s.latency.value(),
			Ops: s.ops.Load(), Timeouts: s.timeouts.Load(), Throttled: s.throttled.Load(),
			Logins: s.logins.Load(), CachedKeys: s.cache.len(), Mechanisms: s.mechs.Names(),
			Errors: map[string]uint64{},
		}
		if r := s.reason.Load(); r != nil {
			st.Reason = *r
		}
		if k := s.kcv.Load(); k != nil {
			st.DomainKey = k.String()
		}
		s.idleMu.Lock()
		st.Idle = len(s.idle)
		s.idleMu.Unlock()
		for c := ClassData; c <= ClassAuth; c++ {
			if n := s.errs[c].Load(); n > 0 {
				st.Errors[c.String()] = n
			}
		}
		out = append(out, st)
	}
	return out
}

// Healthy returns the number of healthy slots.
func (p *Pool) Healthy() int {
	n := 0
	for _, s := range p.slots {
		if s.State() == StateHealthy {
			n++
		}
	}
	return n
}

func (p *Pool) slot(name string) (*slot, error) {
	s, ok := p.byName[name]
	if !ok {
		return nil, &Error{Op: "find slot " + name, Err: ErrNotFound}
	}
	return s, nil
}

// ProbeSlot probes the named slot now (resetting it first if quarantined)
// and returns its state afterwards.
func (p *Pool) ProbeSlot(name string) (State, error) {
	s, err := p.slot(name)
	if err != nil {
		return 0, err
	}
	s.probe()
	return s.State(), nil
}

// InjectFault makes every call to the named slot's module for that slot
// fail with f from now on (FaultNone clears it). The pool must have been
// opened with Options.FaultInjection.
func (p *Pool) InjectFault(name string, f Fault) error {
	s, err := p.slot(name)
	if err != nil {
		return err
	}
	fi := p.faults[s.mod]
	if fi == nil {
		return errors.New("hsmpool: fault injection is not enabled (Options.FaultInjection)")
	}
	fi.Set(s.id, f)
	return nil
}

// ClearFaults clears every injected fault of the pool at once.
func (p *Pool) ClearFaults() {
	for _, fi := range p.faults {
		fi.ClearAll()
	}
}

// ProvisionDomainKey creates the domain key on every slot that has none, as
// a token object that is sensitive and can never be extracted, and brings
// those slots into service. material must be 32 bytes; the pool keeps no
// copy of it, and the caller should zero it afterwards. It refuses when
// healthy slots already hold a domain key unless material has the same
// check value (so a new slot can be added from the recovered key).
func (p *Pool) ProvisionDomainKey(ctx context.Context, material []byte) error {
	if len(material) != 32 {
		return fmt.Errorf("hsmpool: domain key must be 32 bytes, got %d", len(material))
	}
	deadline := time.Now().Add(p.opts.KeyGenTimeout) // it generates an RSA transport key
	if d, ok := ctx.Deadline(); ok {
		deadline = d
	}
	provisioned := 0
	for _, s := range p.slots {
		if s.State() != StateNoDomainKey {
			continue
		}
		err := s.onControl(deadline, opOther, "provision domain key", func(c *control) error {
			return provisionDK(s.mod.ck, c.h, s.mechs, p.opts.DomainKeyLabel, material)
		})
		if err != nil {
			return fmt.Errorf("hsmpool: %w", err)
		}
		s.resetMu.Lock()
		st, reason := s.reset(deadline)
		if st == StateMismatch {
			// Not the pool's domain key: take it off the token again.
			_ = s.onControl(deadline, opOther, "remove mismatched domain key", func(c *control) error {
				return s.mod.ck.DestroyObject(c.h, c.dk)
			})
			st, reason = s.reset(deadline)
			s.resetMu.Unlock()
			s.setState(st, reason)
			return fmt.Errorf("hsmpool: slot %s: the material's check value differs from the pool's domain key %s; nothing was kept", s.name, p.DomainKeyCheck())
		}
		s.resetMu.Unlock()
		s.setState(st, reason)
		if st == StateHealthy && s.mechs == nil {
			s.detect(detectDeadline(deadline, p.opts.OpTimeout))
		}
		provisioned++
	}
	if provisioned == 0 {
		return errors.New("hsmpool: no slot lacks a domain key")
	}
	p.settleKCV()
	p.recomputeCaps()
	return nil
}

// NewDomainKeyMaterial returns 32 random bytes for ProvisionDomainKey.
func NewDomainKeyMaterial() ([]byte, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	return b, nil
}

// Close stops the probes, closes every session and releases the modules
// (finalising a module no other pool uses). It reports sessions still
// borrowed: an operation in flight, or a call that overran its deadline and
// has not returned.
func (p *Pool) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	close(p.stop)
	p.probes.Wait()
	// Let operations that started before Close finish.
	deadline := time.Now().Add(p.opts.OpTimeout)
	var leaked []string
	for _, s := range p.slots {
		for s.borrowed.Load() > 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if n := s.borrowed.Load(); n > 0 {
			leaked = append(leaked, fmt.Sprintf("%s: %d", s.name, n))
		}
	}
	for _, s := range p.slots {
		s.idleMu.Lock()
		for _, sess := range s.idle {
			s.closeSession(sess)
		}
		s.idle = nil
		s.idleMu.Unlock()
		if c := s.ctl.Load(); c != nil && s.borrowed.Load() == 0 {
			s.retire(c)
		}
	}
	if len(leaked) == 0 {
		p.release()
		return nil
	}
	// A module with calls still running must stay loaded; it is released
	// with the process.
	sort.Strings(leaked)
	return fmt.Errorf("hsmpool: sessions still borrowed at close: %v", leaked)
}

func (p *Pool) release() {
	for _, m := range p.modules {
		if fi := p.faults[m]; fi != nil {
			m.ck = fi.next
		}
		releaseModule(m)
	}
	p.modules = nil
}
