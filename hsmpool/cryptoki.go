package hsmpool

import (
	"fmt"
	"sync"

	"github.com/miekg/pkcs11"
)

// Cryptoki is the narrow part of the PKCS#11 API that the pool calls. The
// real implementation is miekg/pkcs11's *Ctx; the fault injector wraps it.
// Keeping it small keeps the seam honest: every call the pool makes to a
// module passes through here.
type Cryptoki interface {
	Initialize() error
	Finalize() error
	GetSlotList(tokenPresent bool) ([]uint, error)
	GetTokenInfo(slotID uint) (pkcs11.TokenInfo, error)
	GetMechanismList(slotID uint) ([]*pkcs11.Mechanism, error)
	GetMechanismInfo(slotID uint, m []*pkcs11.Mechanism) (pkcs11.MechanismInfo, error)

	OpenSession(slotID uint, flags uint) (pkcs11.SessionHandle, error)
	CloseSession(sh pkcs11.SessionHandle) error
	GetSessionInfo(sh pkcs11.SessionHandle) (pkcs11.SessionInfo, error)
	Login(sh pkcs11.SessionHandle, userType uint, pin string) error

	CreateObject(sh pkcs11.SessionHandle, temp []*pkcs11.Attribute) (pkcs11.ObjectHandle, error)
	DestroyObject(sh pkcs11.SessionHandle, oh pkcs11.ObjectHandle) error
	GetAttributeValue(sh pkcs11.SessionHandle, o pkcs11.ObjectHandle, a []*pkcs11.Attribute) ([]*pkcs11.Attribute, error)
	FindObjectsInit(sh pkcs11.SessionHandle, temp []*pkcs11.Attribute) error
	FindObjects(sh pkcs11.SessionHandle, max int) ([]pkcs11.ObjectHandle, bool, error)
	FindObjectsFinal(sh pkcs11.SessionHandle) error

	GenerateKey(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, temp []*pkcs11.Attribute) (pkcs11.ObjectHandle, error)
	GenerateKeyPair(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, public, private []*pkcs11.Attribute) (pkcs11.ObjectHandle, pkcs11.ObjectHandle, error)
	WrapKey(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, wrappingKey, key pkcs11.ObjectHandle) ([]byte, error)
	UnwrapKey(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, unwrappingKey pkcs11.ObjectHandle, wrapped []byte, a []*pkcs11.Attribute) (pkcs11.ObjectHandle, error)
	DeriveKey(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, baseKey pkcs11.ObjectHandle, a []*pkcs11.Attribute) (pkcs11.ObjectHandle, error)

	EncryptInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, o pkcs11.ObjectHandle) error
	Encrypt(sh pkcs11.SessionHandle, message []byte) ([]byte, error)
	DecryptInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, o pkcs11.ObjectHandle) error
	Decrypt(sh pkcs11.SessionHandle, cipher []byte) ([]byte, error)
	SignInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, o pkcs11.ObjectHandle) error
	Sign(sh pkcs11.SessionHandle, message []byte) ([]byte, error)
	VerifyInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, key pkcs11.ObjectHandle) error
	Verify(sh pkcs11.SessionHandle, data []byte, signature []byte) error
	GenerateRandom(sh pkcs11.SessionHandle, length int) ([]byte, error)
}

// ctx adapts *pkcs11.Ctx to Cryptoki (its Initialize takes options).
type ctx struct{ *pkcs11.Ctx }

func (c ctx) Initialize() error { return c.Ctx.Initialize() }

// module is one loaded PKCS#11 library. It is initialised once per path per
// process and shared by every pool that names the path; the last Close
// finalises it, so a later Open (for example a test with a new SoftHSM
// configuration) starts clean.
type module struct {
	path string
	raw  *pkcs11.Ctx
	ck   Cryptoki // what the pool calls: raw, or the fault injector around it

	refs int // guarded by modulesMu
}

var (
	modulesMu sync.Mutex
	modules   = map[string]*module{}
)

// acquireModule loads and initialises the module at path, or shares the one
// already loaded. CKR_CRYPTOKI_ALREADY_INITIALIZED (another library in the
// process initialised it) is taken as success.
func acquireModule(path string) (*module, error) {
	modulesMu.Lock()
	defer modulesMu.Unlock()
	if m, ok := modules[path]; ok {
		m.refs++
		return m, nil
	}
	raw := pkcs11.New(path)
	if raw == nil {
		return nil, fmt.Errorf("load PKCS#11 module %s: the library could not be opened or has no C_GetFunctionList", path)
	}
	if err := raw.Initialize(); err != nil && rvOf(err) != pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED {
		raw.Destroy()
		return nil, fmt.Errorf("C_Initialize %s: %w", path, err)
	}
	m := &module{path: path, raw: raw, ck: ctx{raw}, refs: 1}
	modules[path] = m
	return m, nil
}

// releaseModule drops one reference and finalises the module on the last.
func releaseModule(m *module) {
	modulesMu.Lock()
	defer modulesMu.Unlock()
	m.refs--
	if m.refs > 0 {
		return
	}
	delete(modules, m.path)
	_ = m.raw.Finalize()
	m.raw.Destroy()
}

// rvOf returns the CK_RV carried by err, or 0 when err is not a PKCS#11 error.
func rvOf(err error) uint {
	if e, ok := err.(pkcs11.Error); ok {
		return uint(e)
	}
	return 0
}
