package hsmpool

import (
	"sync"
	"sync/atomic"

	"github.com/miekg/pkcs11"
)

// Fault is a failure the FaultInjector can make one slot show.
type Fault int

const (
	// FaultNone clears a fault (and releases calls held by FaultHang).
	FaultNone Fault = iota
	// FaultDeviceError: every call returns CKR_DEVICE_ERROR.
	FaultDeviceError
	// FaultSessionInvalid: every call on a session returns
	// CKR_SESSION_HANDLE_INVALID.
	FaultSessionInvalid
	// FaultSessionCount: C_OpenSession returns CKR_SESSION_COUNT.
	FaultSessionCount
	// FaultHang: every call blocks until the fault is cleared, then returns
	// CKR_DEVICE_ERROR without reaching the module (as a wedged network HSM
	// would).
	FaultHang
)

func (f Fault) String() string {
	switch f {
	case FaultNone:
		return "none"
	case FaultDeviceError:
		return "device-error"
	case FaultSessionInvalid:
		return "session-invalid"
	case FaultSessionCount:
		return "session-count"
	case FaultHang:
		return "hang"
	}
	return "unknown"
}

// ParseFault parses a Fault's String form.
func ParseFault(s string) (Fault, bool) {
	for f := FaultNone; f <= FaultHang; f++ {
		if f.String() == s {
			return f, true
		}
	}
	return 0, false
}

// FaultInjector wraps a module's Cryptoki and makes chosen slots fail from
// the moment a fault is set. It sits on the real path: every call that is not
// failed reaches the real module. While no fault is set it costs one atomic
// load per call.
type FaultInjector struct {
	next Cryptoki

	active atomic.Bool // any fault set
	mu     sync.RWMutex
	faults map[uint]Fault
	hang   map[uint]chan struct{} // closed when the slot's hang is cleared
	owner  map[pkcs11.SessionHandle]uint
}

func newFaultInjector(next Cryptoki) *FaultInjector {
	return &FaultInjector{next: next, faults: map[uint]Fault{}, hang: map[uint]chan struct{}{}, owner: map[pkcs11.SessionHandle]uint{}}
}

// Set makes slotID show f from now on; FaultNone clears it.
func (fi *FaultInjector) Set(slotID uint, f Fault) {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	if ch, ok := fi.hang[slotID]; ok && f != FaultHang {
		close(ch)
		delete(fi.hang, slotID)
	}
	if f == FaultNone {
		delete(fi.faults, slotID)
	} else {
		fi.faults[slotID] = f
		if f == FaultHang && fi.hang[slotID] == nil {
			fi.hang[slotID] = make(chan struct{})
		}
	}
	fi.active.Store(len(fi.faults) > 0)
}

// ClearAll clears every slot's fault at once: no call released from a hang
// can meet a fault still set on another slot.
func (fi *FaultInjector) ClearAll() {
	fi.mu.Lock()
	hangs := fi.hang
	fi.faults = map[uint]Fault{}
	fi.hang = map[uint]chan struct{}{}
	fi.active.Store(false)
	fi.mu.Unlock()
	for _, ch := range hangs {
		close(ch)
	}
}

// check returns the error a call on slotID should fail with, after holding
// it while the slot hangs. onSession says whether the call uses a session.
func (fi *FaultInjector) check(slotID uint, onSession, opening bool) error {
	if !fi.active.Load() {
		return nil
	}
	fi.mu.RLock()
	f := fi.faults[slotID]
	ch := fi.hang[slotID]
	fi.mu.RUnlock()
	switch f {
	case FaultDeviceError:
		return pkcs11.Error(pkcs11.CKR_DEVICE_ERROR)
	case FaultSessionInvalid:
		if onSession {
			return pkcs11.Error(pkcs11.CKR_SESSION_HANDLE_INVALID)
		}
	case FaultSessionCount:
		if opening {
			return pkcs11.Error(pkcs11.CKR_SESSION_COUNT)
		}
	case FaultHang:
		<-ch
		return pkcs11.Error(pkcs11.CKR_DEVICE_ERROR)
	}
	return nil
}

func (fi *FaultInjector) slotOf(sh pkcs11.SessionHandle) uint {
	fi.mu.RLock()
	defer fi.mu.RUnlock()
	return fi.owner[sh]
}

func (fi *FaultInjector) sess(sh pkcs11.SessionHandle) error {
	if !fi.active.Load() {
		return nil
	}
	return fi.check(fi.slotOf(sh), true, false)
}

func (fi *FaultInjector) Initialize() error { return fi.next.Initialize() }
func (fi *FaultInjector) Finalize() error   { return fi.next.Finalize() }
func (fi *FaultInjector) GetSlotList(tokenPresent bool) ([]uint, error) {
	return fi.next.GetSlotList(tokenPresent)
}
func (fi *FaultInjector) GetTokenInfo(id uint) (pkcs11.TokenInfo, error) {
	if err := fi.check(id, false, false); err != nil {
		return pkcs11.TokenInfo{}, err
	}
	return fi.next.GetTokenInfo(id)
}
func (fi *FaultInjector) GetMechanismList(id uint) ([]*pkcs11.Mechanism, error) {
	if err := fi.check(id, false, false); err != nil {
		return nil, err
	}
	return fi.next.GetMechanismList(id)
}
func (fi *FaultInjector) GetMechanismInfo(id uint, m []*pkcs11.Mechanism) (pkcs11.MechanismInfo, error) {
	if err := fi.check(id, false, false); err != nil {
		return pkcs11.MechanismInfo{}, err
	}
	return fi.next.GetMechanismInfo(id, m)
}
func (fi *FaultInjector) OpenSession(id uint, flags uint) (pkcs11.SessionHandle, error) {
	if err := fi.check(id, false, true); err != nil {
		return 0, err
	}
	h, err := fi.next.OpenSession(id, flags)
	if err == nil {
		fi.mu.Lock()
		fi.owner[h] = id
		fi.mu.Unlock()
	}
	return h, err
}
func (fi *FaultInjector) CloseSession(sh pkcs11.SessionHandle) error {
	// Closing always reaches the module, so that no fault leaks sessions.
	fi.mu.Lock()
	delete(fi.owner, sh)
	fi.mu.Unlock()
	return fi.next.CloseSession(sh)
}
func (fi *FaultInjector) GetSessionInfo(sh pkcs11.SessionHandle) (pkcs11.SessionInfo, error) {
	if err := fi.sess(sh); err != nil {
		return pkcs11.SessionInfo{}, err
	}
	return fi.next.GetSessionInfo(sh)
}
func (fi *FaultInjector) Login(sh pkcs11.SessionHandle, userType uint, pin string) error {
	if err := fi.sess(sh); err != nil {
		return err
	}
	return fi.next.Login(sh, userType, pin)
}
func (fi *FaultInjector) CreateObject(sh pkcs11.SessionHandle, t []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	if err := fi.sess(sh); err != nil {
		return 0, err
	}
	return fi.next.CreateObject(sh, t)
}
func (fi *FaultInjector) DestroyObject(sh pkcs11.SessionHandle, oh pkcs11.ObjectHandle) error {
	if err := fi.sess(sh); err != nil {
		return err
	}
	return fi.next.DestroyObject(sh, oh)
}
func (fi *FaultInjector) GetAttributeValue(sh pkcs11.SessionHandle, o pkcs11.ObjectHandle, a []*pkcs11.Attribute) ([]*pkcs11.Attribute, error) {
	if err := fi.sess(sh); err != nil {
		return nil, err
	}
	return fi.next.GetAttributeValue(sh, o, a)
}
func (fi *FaultInjector) FindObjectsInit(sh pkcs11.SessionHandle, t []*pkcs11.Attribute) error {
	if err := fi.sess(sh); err != nil {
		return err
	}
	return fi.next.FindObjectsInit(sh, t)
}
func (fi *FaultInjector) FindObjects(sh pkcs11.SessionHandle, max int) ([]pkcs11.ObjectHandle, bool, error) {
	if err := fi.sess(sh); err != nil {
		return nil, false, err
	}
	return fi.next.FindObjects(sh, max)
}
func (fi *FaultInjector) FindObjectsFinal(sh pkcs11.SessionHandle) error {
	if err := fi.sess(sh); err != nil {
		return err
	}
	return fi.next.FindObjectsFinal(sh)
}
func (fi *FaultInjector) GenerateKey(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, t []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	if err := fi.sess(sh); err != nil {
		return 0, err
	}
	return fi.next.GenerateKey(sh, m, t)
}
func (fi *FaultInjector) GenerateKeyPair(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, pub, priv []*pkcs11.Attribute) (pkcs11.ObjectHandle, pkcs11.ObjectHandle, error) {
	if err := fi.sess(sh); err != nil {
		return 0, 0, err
	}
	return fi.next.GenerateKeyPair(sh, m, pub, priv)
}
func (fi *FaultInjector) WrapKey(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, wk, k pkcs11.ObjectHandle) ([]byte, error) {
	if err := fi.sess(sh); err != nil {
		return nil, err
	}
	return fi.next.WrapKey(sh, m, wk, k)
}
func (fi *FaultInjector) UnwrapKey(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, uk pkcs11.ObjectHandle, w []byte, a []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	if err := fi.sess(sh); err != nil {
		return 0, err
	}
	return fi.next.UnwrapKey(sh, m, uk, w, a)
}
func (fi *FaultInjector) DeriveKey(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, bk pkcs11.ObjectHandle, a []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	if err := fi.sess(sh); err != nil {
		return 0, err
	}
	return fi.next.DeriveKey(sh, m, bk, a)
}
func (fi *FaultInjector) EncryptInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, o pkcs11.ObjectHandle) error {
	if err := fi.sess(sh); err != nil {
		return err
	}
	return fi.next.EncryptInit(sh, m, o)
}
func (fi *FaultInjector) Encrypt(sh pkcs11.SessionHandle, msg []byte) ([]byte, error) {
	if err := fi.sess(sh); err != nil {
		return nil, err
	}
	return fi.next.Encrypt(sh, msg)
}
func (fi *FaultInjector) DecryptInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, o pkcs11.ObjectHandle) error {
	if err := fi.sess(sh); err != nil {
		return err
	}
	return fi.next.DecryptInit(sh, m, o)
}
func (fi *FaultInjector) Decrypt(sh pkcs11.SessionHandle, c []byte) ([]byte, error) {
	if err := fi.sess(sh); err != nil {
		return nil, err
	}
	return fi.next.Decrypt(sh, c)
}
func (fi *FaultInjector) SignInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, o pkcs11.ObjectHandle) error {
	if err := fi.sess(sh); err != nil {
		return err
	}
	return fi.next.SignInit(sh, m, o)
}
func (fi *FaultInjector) Sign(sh pkcs11.SessionHandle, msg []byte) ([]byte, error) {
	if err := fi.sess(sh); err != nil {
		return nil, err
	}
	return fi.next.Sign(sh, msg)
}
func (fi *FaultInjector) VerifyInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, k pkcs11.ObjectHandle) error {
	if err := fi.sess(sh); err != nil {
		return err
	}
	return fi.next.VerifyInit(sh, m, k)
}
func (fi *FaultInjector) Verify(sh pkcs11.SessionHandle, data, sig []byte) error {
	if err := fi.sess(sh); err != nil {
		return err
	}
	return fi.next.Verify(sh, data, sig)
}
func (fi *FaultInjector) GenerateRandom(sh pkcs11.SessionHandle, n int) ([]byte, error) {
	if err := fi.sess(sh); err != nil {
		return nil, err
	}
	return fi.next.GenerateRandom(sh, n)
}
