package hsmpool

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/pkcs11"
)

// State is a slot's health as the pool sees it.
type State int32

const (
	// StateHealthy: serving requests.
	StateHealthy State = iota + 1
	// StateQuarantined: a device error or a timeout took the slot out of
	// rotation; the prober resets and probes it until it answers again.
	StateQuarantined
	// StateFailed: login was refused (wrong or locked PIN). The pool does
	// not log in again by itself, to avoid locking the token; fix the PIN
	// and restart.
	StateFailed
	// StateNoDomainKey: the token holds no domain key yet (see
	// Pool.ProvisionDomainKey).
	StateNoDomainKey
	// StateMismatch: the token's domain key differs from the pool's (or it
	// holds several); the slot is refused.
	StateMismatch
)

func (s State) String() string {
	switch s {
	case StateHealthy:
		return "healthy"
	case StateQuarantined:
		return "quarantined"
	case StateFailed:
		return "failed"
	case StateNoDomainKey:
		return "no-domain-key"
	case StateMismatch:
		return "domain-key-mismatch"
	}
	return "unknown"
}

// session is one PKCS#11 operation session, used by one goroutine at a time.
// Its calls run on a worker goroutine of its own, so that a caller can stop
// waiting for a call that overruns its deadline (a cgo call can't be
// interrupted). The worker keeps a grown stack from call to call, which a
// goroutine per call would not.
type session struct {
	h       pkcs11.SessionHandle
	gen     uint64 // the slot generation it was opened in
	jobs    chan *job
	cur     atomic.Pointer[job] // the call its caller waits for, for the watchdog
	running atomic.Pointer[job] // the call in the module, for the watchdog
}

// job is one call handed to a session's worker.
type job struct {
	fn        func() error
	done      chan error
	deadline  atomic.Int64 // unix nanoseconds: when the caller stops waiting
	slowAfter int64        // unix nanoseconds: past this the slot is suspect
	state     atomic.Int32 // 0 running, 1 answered, 2 overran its deadline
	abandoned func()       // run by the worker if the caller gave up
	inline    bool         // run on the caller's goroutine (Options.InlineCalls)
}

func (s *slot) newSession(h pkcs11.SessionHandle, gen uint64) *session {
	sess := &session{h: h, gen: gen}
	if !s.p.opts.InlineCalls {
		sess.jobs = make(chan *job)
		go sess.work()
	}
	s.sessMu.Lock()
	s.sessions[sess] = struct{}{}
	s.sessMu.Unlock()
	return sess
}

// work runs the session's calls until the session is closed, or until a
// call outlives its caller: then the session is disposed of and the worker
// ends with it.
func (sess *session) work() {
	for j := range sess.jobs {
		sess.running.Store(j)
		err := j.fn()
		sess.running.Store(nil)
		if j.state.CompareAndSwap(0, 1) {
			j.done <- err
			continue
		}
		j.abandoned()
		return
	}
}

// exec runs fn on the session's worker and waits for its answer, or for the
// pool's watchdog to give up on it once deadline has passed (then it
// returns errTimeout and abandoned runs on the worker when fn returns). A
// watchdog rather than a timer per call keeps the hot path to one channel
// hand-off each way.
//
// With Options.InlineCalls fn runs on the caller's goroutine instead; the
// watchdog still notices an overrun and quarantines the slot, but the caller
// waits for the module. overran then reports that the session must not be
// reused.
func (sess *session) exec(deadline, slowAfter time.Time, fn func() error, abandoned func()) (overran bool, err error) {
	// A job is never reused: the watchdog may still hold a pointer to an
	// earlier one, and must not be able to act on a later call through it.
	j := &job{inline: sess.jobs == nil, slowAfter: slowAfter.UnixNano()}
	j.deadline.Store(deadline.UnixNano())
	if j.inline {
		sess.cur.Store(j)
		sess.running.Store(j)
		err = fn()
		sess.running.Store(nil)
		sess.cur.Store(nil)
		return !j.state.CompareAndSwap(0, 1), err
	}
	j.fn, j.abandoned, j.done = fn, abandoned, make(chan error, 1)
	sess.cur.Store(j)
	sess.jobs <- j
	err = <-j.done
	sess.cur.Store(nil)
	// Exactly one answer arrives: the worker's (it won the race to state 1)
	// or the watchdog's errTimeout (it won the race to state 2, and the
	// worker now owns the session). fn never returns errTimeout.
	return err == errTimeout, err
}

// expire gives up on the session's call if its caller's deadline has
// passed, and reports whether the call in the module has run past the
// point where the slot is suspect (op_timeout, or a key generation's own).
func (sess *session) expire(now int64) (slow bool) {
	if j := sess.cur.Load(); j != nil && now >= j.deadline.Load() && j.state.CompareAndSwap(0, 2) && !j.inline {
		j.done <- errTimeout
	}
	r := sess.running.Load()
	return r != nil && now >= r.slowAfter
}

// close closes the PKCS#11 session and ends its worker. Not for a session
// whose call was abandoned: its worker disposes of it.
func (s *slot) closeSession(sess *session) {
	s.forget(sess)
	if sess.jobs != nil {
		close(sess.jobs)
	}
	_ = s.mod.ck.CloseSession(sess.h)
}

func (s *slot) forget(sess *session) {
	s.sessMu.Lock()
	delete(s.sessions, sess)
	s.sessMu.Unlock()
}

// expireCalls abandons every call on the slot's sessions whose deadline has
// passed. The pool's watchdog runs it every few milliseconds.
func (s *slot) expireCalls(now int64) {
	s.sessMu.Lock()
	slow := 0
	for sess := range s.sessions {
		if sess.expire(now) {
			slow++
		}
	}
	s.sessMu.Unlock()
	if slow > 0 {
		// A caller's deadline alone says nothing about the slot; a call
		// still in the module past op_timeout does.
		s.quarantine(fmt.Sprintf("%d calls ran past the operation timeout", slow))
	}
}

// control is the slot's persistent logged-in session. It holds the login
// for the whole token, owns the unwrapped key objects (session objects die
// with the session that made them) and runs probes. lock is a channel so
// that taking it can wait with a deadline.
type control struct {
	lock chan struct{}
	h    pkcs11.SessionHandle
	dk   pkcs11.ObjectHandle
	// retired is set when a reset replaced this control session while a
	// call on it was still running; that call closes it when it returns.
	retired atomic.Bool
}

func (c *control) acquire(deadline time.Time) bool {
	select {
	case c.lock <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case c.lock <- struct{}{}:
		return true
	case <-t.C:
		return false
	}
}

func (c *control) release() { <-c.lock }

type slot struct {
	p      *Pool
	mod    *module
	id     uint
	name   string // token label: the slot's name everywhere
	serial string
	model  string
	pin    string

	mechs       *Mechanisms
	maxSessions int

	// sem holds one token per open operation session (borrowed or
	// abandoned); idle holds the sessions ready for reuse.
	sem    chan struct{}
	idleMu sync.Mutex
	idle   []*session

	sessMu   sync.Mutex
	sessions map[*session]struct{} // every open operation session

	gen       atomic.Uint64 // bumped by every reset
	state     atomic.Int32
	reason    atomic.Pointer[string]
	ctl       atomic.Pointer[control]
	kcv       atomic.Pointer[KCV]
	cache     *keyCache
	kick      chan struct{}
	resetMu   sync.Mutex // one reset or probe at a time
	logins    atomic.Uint64
	inflight  atomic.Int64
	borrowed  atomic.Int64
	abandoned atomic.Int64
	latency   ewma
	ops       atomic.Uint64
	errs      [ClassAuth + 1]atomic.Uint64
	timeouts  atomic.Uint64
	throttled atomic.Uint64
}

func (s *slot) State() State { return State(s.state.Load()) }

func (s *slot) setState(st State, reason string) {
	old := State(s.state.Swap(int32(st)))
	s.reason.Store(&reason)
	switch {
	case old == 0:
		s.p.log.Info("hsm slot opened", "slot", s.name, "state", st.String(), "reason", reason)
	case old != st:
		s.p.log.Info("hsm slot state", "slot", s.name, "from", old.String(), "to", st.String(), "reason", reason)
	}
}

// quarantine takes a healthy slot out of rotation and wakes its prober.
func (s *slot) quarantine(reason string) {
	if s.state.CompareAndSwap(int32(StateHealthy), int32(StateQuarantined)) {
		s.reason.Store(&reason)
		s.p.log.Warn("hsm slot quarantined", "slot", s.name, "reason", reason)
	}
	s.wake()
}

func (s *slot) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// call runs fn, which makes PKCS#11 calls, and waits for it until deadline.
// A cgo call can't be interrupted: on timeout the caller gets ErrTimeout at
// once and fn goes on in its goroutine; when it returns, abandoned runs
// there to dispose of what fn was using (never to reuse it).
func call(deadline time.Time, fn func() error, abandoned func()) error {
	c := callPool.Get().(*callState)
	c.state.Store(0)
	go func() {
		err := fn()
		if c.state.CompareAndSwap(0, 1) {
			c.done <- err
			return
		}
		abandoned()
		callPool.Put(c)
	}()
	t := time.NewTimer(time.Until(deadline))
	select {
	case err := <-c.done:
		t.Stop()
		callPool.Put(c)
		return err
	case <-t.C:
		if c.state.CompareAndSwap(0, 2) {
			return errTimeout
		}
		err := <-c.done
		callPool.Put(c)
		return err
	}
}

type callState struct {
	state atomic.Int32 // 0 running, 1 answered, 2 abandoned
	done  chan error
}

var callPool = sync.Pool{New: func() any { return &callState{done: make(chan error, 1)} }}

var errTimeout = errors.New("deadline passed")

// borrow takes an operation session, opening one if the slot has room,
// waiting at most until deadline.
func (s *slot) borrow(deadline time.Time) (*session, *Error) {
	select {
	case s.sem <- struct{}{}:
	default:
		t := time.NewTimer(time.Until(deadline))
		select {
		case s.sem <- struct{}{}:
			t.Stop()
		case <-t.C:
			s.throttled.Add(1)
			return nil, &Error{Op: "borrow session", Slot: s.name, Err: ErrThrottled}
		}
	}
	s.borrowed.Add(1)
	gen := s.gen.Load()
	s.idleMu.Lock()
	for n := len(s.idle); n > 0; n = len(s.idle) {
		sess := s.idle[n-1]
		s.idle = s.idle[:n-1]
		if sess.gen == gen {
			s.idleMu.Unlock()
			return sess, nil
		}
		s.closeSession(sess) // from before a reset
	}
	s.idleMu.Unlock()
	var h pkcs11.SessionHandle
	start := time.Now()
	err := call(deadline, func() (err error) {
		h, err = s.mod.ck.OpenSession(s.id, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
		return err
	}, func() {
		if h != 0 {
			_ = s.mod.ck.CloseSession(h)
		}
		s.borrowed.Add(-1)
		s.abandoned.Add(-1)
		<-s.sem
	})
	if err != nil {
		if err == errTimeout {
			s.abandoned.Add(1)
			s.timeouts.Add(1)
			if time.Since(start) >= s.p.opts.OpTimeout {
				s.quarantine("C_OpenSession timed out")
			}
			return nil, &Error{Op: "open session", Slot: s.name, Class: ClassDevice, Err: ErrTimeout}
		}
		s.borrowed.Add(-1)
		<-s.sem
		e := wrapRV(err, opOther, "open session", s.name)
		s.errs[e.Class].Add(1)
		if e.Class == ClassDevice {
			s.quarantine(e.Error())
		}
		return nil, e
	}
	return s.newSession(h, gen), nil
}

// giveBack returns a healthy session to the idle list.
func (s *slot) giveBack(sess *session) {
	if sess.gen != s.gen.Load() {
		s.evict(sess)
		return
	}
	s.idleMu.Lock()
	s.idle = append(s.idle, sess)
	s.idleMu.Unlock()
	s.borrowed.Add(-1)
	<-s.sem
}

// evict closes a session that must not be reused.
func (s *slot) evict(sess *session) {
	s.closeSession(sess)
	s.borrowed.Add(-1)
	<-s.sem
}

// run borrows a session, runs fn on it within deadline, and settles the
// session according to the outcome's class. fn returns raw PKCS#11 errors.
func (s *slot) run(deadline time.Time, op opKind, what string, fn func(h pkcs11.SessionHandle) error) *Error {
	sess, perr := s.borrow(deadline)
	if perr != nil {
		return perr
	}
	start := time.Now()
	slowAfter := start.Add(s.p.opts.OpTimeout)
	if deadline.After(slowAfter) {
		slowAfter = deadline // a key generation has a longer budget
	}
	overran, err := sess.exec(deadline, slowAfter, func() error { return fn(sess.h) }, func() {
		// The worker runs this, then ends: the session must not be reused.
		s.forget(sess)
		_ = s.mod.ck.CloseSession(sess.h)
		s.abandoned.Add(-1)
		s.borrowed.Add(-1)
		<-s.sem
	})
	if overran && err != errTimeout {
		// An inline call that the watchdog gave up on: it answered late, so
		// keep the answer but not the session.
		s.timeouts.Add(1)
		s.evict(sess)
		if err == nil {
			return nil
		}
		return wrapRV(err, op, what, s.name)
	}
	if err == nil {
		s.ops.Add(1)
		s.latency.observe(time.Since(start))
		s.giveBack(sess)
		return nil
	}
	if err == errTimeout {
		// The session stays borrowed until its call returns. The watchdog
		// quarantines the slot if the call is still in the module past
		// op_timeout; a caller that could not wait so long is no sign of a
		// failing slot. Either way another slot may take a retry.
		s.abandoned.Add(1)
		s.timeouts.Add(1)
		return &Error{Op: what, Slot: s.name, Class: ClassDevice, Err: ErrTimeout}
	}
	e := wrapRV(err, op, what, s.name)
	s.errs[e.Class].Add(1)
	switch e.Class {
	case ClassData, ClassUnsupported:
		s.ops.Add(1)
		s.giveBack(sess)
		if e.RV == pkcs11.CKR_GENERAL_ERROR || e.RV == pkcs11.CKR_FUNCTION_FAILED {
			// Probably a bad tag; a probe tells a failing device apart.
			s.wake()
		}
	case ClassSession:
		s.evict(sess)
	case ClassDevice:
		s.evict(sess)
		s.quarantine(e.Error())
	case ClassAuth:
		s.evict(sess)
		s.setState(StateFailed, e.Error())
	}
	return e
}

// onControl runs fn on the control session, waiting for its lock and for the
// call at most until deadline.
func (s *slot) onControl(deadline time.Time, op opKind, what string, fn func(c *control) error) *Error {
	c := s.ctl.Load()
	if c == nil {
		return &Error{Op: what, Slot: s.name, Class: ClassDevice, Err: ErrUnavailable}
	}
	if !c.acquire(deadline) {
		s.throttled.Add(1)
		return &Error{Op: what, Slot: s.name, Err: ErrThrottled}
	}
	start := time.Now()
	err := call(deadline, func() error { return fn(c) }, func() { s.releaseControl(c) })
	if err == nil {
		s.releaseControl(c)
		return nil
	}
	if err == errTimeout {
		s.timeouts.Add(1)
		if time.Since(start) >= s.p.opts.OpTimeout {
			s.quarantine(what + " timed out")
		}
		return &Error{Op: what, Slot: s.name, Class: ClassDevice, Err: ErrTimeout}
	}
	s.releaseControl(c)
	e := wrapRV(err, op, what, s.name)
	s.errs[e.Class].Add(1)
	switch e.Class {
	case ClassDevice, ClassSession:
		// A broken control session breaks the slot: reset it.
		e.Class = ClassDevice
		s.quarantine(e.Error())
	case ClassAuth:
		s.setState(StateFailed, e.Error())
	}
	return e
}

// connect opens and logs in a new control session, finds the domain key and
// computes its check value. It replaces (and retires) the old control
// session. It returns the state the slot should be in.
func (s *slot) connect(deadline time.Time) (State, string) {
	ck := s.mod.ck
	c := &control{lock: make(chan struct{}, 1)}
	var kcv KCV
	var state State
	var reason string
	err := call(deadline, func() error {
		h, err := ck.OpenSession(s.id, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
		if err != nil {
			return fmt.Errorf("C_OpenSession: %w", err)
		}
		c.h = h
		s.logins.Add(1)
		if err := ck.Login(h, pkcs11.CKU_USER, s.pin); err != nil && rvOf(err) != pkcs11.CKR_USER_ALREADY_LOGGED_IN {
			return fmt.Errorf("C_Login: %w", err)
		}
		dks, err := findObjects(ck, h, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, s.p.opts.DomainKeyLabel),
		})
		if err != nil {
			return fmt.Errorf("find domain key: %w", err)
		}
		switch len(dks) {
		case 0:
			state, reason = StateNoDomainKey, "no domain key on the token"
			return nil
		case 1:
		default:
			state, reason = StateMismatch, fmt.Sprintf("%d objects labelled %q on the token", len(dks), s.p.opts.DomainKeyLabel)
			return nil
		}
		c.dk = dks[0]
		kcv, err = computeKCV(ck, h, c.dk)
		if err != nil {
			return fmt.Errorf("domain key check value: %w", err)
		}
		state = StateHealthy
		return nil
	}, func() {
		if c.h != 0 {
			_ = ck.CloseSession(c.h)
		}
	})
	if err == errTimeout {
		s.timeouts.Add(1)
		return StateQuarantined, "connect timed out"
	}
	if err != nil {
		if c.h != 0 {
			_ = ck.CloseSession(c.h)
		}
		class, _ := classify(rvOf(errors.Unwrap(err)), opOther)
		if class == ClassAuth {
			return StateFailed, err.Error() + " (not retried, to avoid locking the token)"
		}
		return StateQuarantined, err.Error()
	}
	if state == StateHealthy {
		s.kcv.Store(&kcv)
		if want := s.p.expectedKCV(); want != nil && *want != kcv {
			state, reason = StateMismatch, fmt.Sprintf("domain key check value %s, want %s", kcv, want)
		}
	}
	if old := s.ctl.Swap(c); old != nil {
		s.retire(old)
	}
	return state, reason
}

// releaseControl ends a call on c. A control session retired by a reset
// meanwhile is closed, and its lock kept so that nothing uses it again.
func (s *slot) releaseControl(c *control) {
	if c.retired.Load() {
		_ = s.mod.ck.CloseSession(c.h)
		return
	}
	c.release()
}

// retire closes an old control session, or leaves that to the call still
// running on it.
func (s *slot) retire(c *control) {
	c.retired.Store(true)
	// A call running on c either ends within the timeout, and then the lock
	// is ours to close c, or is hung, and then it closes c when it returns
	// (it reads retired after we set it).
	if c.acquire(time.Now().Add(s.p.opts.OpTimeout)) {
		_ = s.mod.ck.CloseSession(c.h)
		// Keep the lock: nothing may use a closed control session.
	}
}

// reset throws away everything the slot built on its module (sessions,
// unwrapped keys, the control session) and connects afresh.
func (s *slot) reset(deadline time.Time) (State, string) {
	s.gen.Add(1)
	s.cache.purge()
	s.idleMu.Lock()
	idle := s.idle
	s.idle = nil
	s.idleMu.Unlock()
	for _, sess := range idle {
		s.closeSession(sess)
	}
	return s.connect(deadline)
}

// probe checks a slot: a cheap call on the control session and the domain
// key's check value. A quarantined slot is reset first.
func (s *slot) probe() {
	s.resetMu.Lock()
	defer s.resetMu.Unlock()
	deadline := time.Now().Add(s.p.opts.OpTimeout)
	switch s.State() {
	case StateHealthy:
		want := s.kcv.Load()
		err := s.onControl(deadline, opOther, "health probe", func(c *control) error {
			if _, err := s.mod.ck.GetSessionInfo(c.h); err != nil {
				return err
			}
			got, err := computeKCV(s.mod.ck, c.h, c.dk)
			if err != nil {
				return err
			}
			if want == nil || got != *want {
				return errKCVChanged
			}
			return nil
		})
		if err != nil {
			s.quarantine("health probe: " + err.Error())
		}
	case StateQuarantined:
		st, reason := s.reset(deadline)
		if st == StateHealthy {
			s.setState(StateHealthy, "probe passed after reset")
			return
		}
		if st != StateQuarantined {
			s.setState(st, reason)
		} else {
			s.reason.Store(&reason)
		}
	}
}

var errKCVChanged = &Error{Op: "health probe", Class: ClassDevice, Err: fmt.Errorf("%w: domain key check value changed", ErrUnavailable)}

// prober probes the slot on a timer, sooner when woken, until stop closes.
func (s *slot) prober(stop <-chan struct{}, done *sync.WaitGroup) {
	defer done.Done()
	t := time.NewTimer(s.p.opts.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		case <-s.kick:
		}
		switch s.State() {
		case StateHealthy, StateQuarantined:
			s.probe()
		}
		next := s.p.opts.ProbeInterval
		if s.State() == StateQuarantined {
			next = s.p.opts.QuarantineProbeInterval
		}
		t.Reset(next)
	}
}

// kcvKey is the fixed, public AES-256 key whose wrap under the domain key is
// the domain key's check value. It reveals nothing: it is a known plaintext.
var kcvKey = sha256.Sum256([]byte("hsmgate domain key check value v1"))

// computeKCV wraps kcvKey under the domain key (deterministic with RFC 5649)
// and hashes the result.
func computeKCV(ck Cryptoki, h pkcs11.SessionHandle, dk pkcs11.ObjectHandle) (KCV, error) {
	var kcv KCV
	obj, err := ck.CreateObject(h, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, false),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE, kcvKey[:]),
	})
	if err != nil {
		return kcv, err
	}
	defer ck.DestroyObject(h, obj)
	wrapped, err := ck.WrapKey(h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP_PAD, nil)}, dk, obj)
	if err != nil {
		return kcv, err
	}
	sum := sha256.Sum256(append([]byte("hsmgate-kcv"), wrapped...))
	copy(kcv[:], sum[:])
	return kcv, nil
}

func findObjects(ck Cryptoki, h pkcs11.SessionHandle, tmpl []*pkcs11.Attribute) ([]pkcs11.ObjectHandle, error) {
	if err := ck.FindObjectsInit(h, tmpl); err != nil {
		return nil, err
	}
	var out []pkcs11.ObjectHandle
	for {
		objs, _, err := ck.FindObjects(h, 16)
		if err != nil {
			_ = ck.FindObjectsFinal(h)
			return nil, err
		}
		out = append(out, objs...)
		if len(objs) == 0 || len(out) > 64 {
			break
		}
	}
	return out, ck.FindObjectsFinal(h)
}

// ewma is an exponentially weighted moving average of latency in
// nanoseconds, updated without locks. Methods take a pointer: a copy would
// never see an update.
type ewma struct{ bits atomic.Uint64 }

const ewmaWeight = 0.1

func (e *ewma) observe(d time.Duration) {
	for {
		old := e.bits.Load()
		v := math.Float64frombits(old)
		if v == 0 {
			v = float64(d)
		} else {
			v += ewmaWeight * (float64(d) - v)
		}
		if e.bits.CompareAndSwap(old, math.Float64bits(v)) {
			return
		}
	}
}

func (e *ewma) value() time.Duration { return time.Duration(math.Float64frombits(e.bits.Load())) }
