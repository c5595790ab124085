package hsmpool

import (
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"
)

// Sentinel errors that callers branch on (and the gateway maps to its wire
// errors). Every error the pool returns from an operation wraps exactly one of
// them; errors.Is finds it.
var (
	// ErrInvalidCiphertext: the ciphertext (or its IV, tag or AAD) does not
	// authenticate under the key. Never retried.
	ErrInvalidCiphertext = errors.New("invalid ciphertext")
	// ErrInvalidSignature: the signature does not verify. Never retried.
	ErrInvalidSignature = errors.New("invalid signature")
	// ErrInvalidMAC: the MAC does not verify. Never retried.
	ErrInvalidMAC = errors.New("invalid MAC")
	// ErrInvalidInput: the request itself is wrong for the key or mechanism
	// (a plaintext too long for RSA-OAEP, a digest of the wrong length, a
	// peer public key on another curve). Never retried.
	ErrInvalidInput = errors.New("invalid input")
	// ErrInvalidKeyBlob: a wrapped key blob is malformed or does not unwrap
	// under this pool's domain key.
	ErrInvalidKeyBlob = errors.New("invalid wrapped key blob")
	// ErrInvalidImport: key material brought for import does not unwrap
	// under the wrapping key (wrong wrapping key or algorithm, corrupted),
	// or is not a key of the requested spec (wrong length, curve or
	// modulus size). Never retried, and never held against the slot.
	ErrInvalidImport = errors.New("invalid imported key material")
	// ErrUnsupported: the module lacks the mechanism (detected at start, or
	// refused by the module). The pool never falls back to software.
	ErrUnsupported = errors.New("unsupported by the HSM module")
	// ErrThrottled: no session became free before the caller's deadline.
	ErrThrottled = errors.New("throttled: all HSM sessions busy")
	// ErrTimeout: the HSM did not answer within the deadline.
	ErrTimeout = errors.New("HSM call timed out")
	// ErrUnavailable: no healthy slot can serve the request.
	ErrUnavailable = errors.New("HSM unavailable")
	// ErrNotFound: a named slot, token or object does not exist.
	ErrNotFound = errors.New("not found")
	// ErrClosed: the pool has been closed.
	ErrClosed = errors.New("pool closed")
)

// Class is what a failed PKCS#11 call means for the pool.
type Class int

const (
	// ClassData: the input was bad. The session goes back to the pool and
	// the call is not retried.
	ClassData Class = iota + 1
	// ClassUnsupported: the module can't do this. Not retried.
	ClassUnsupported
	// ClassSession: the session is unusable (closed, invalid, busy). It is
	// evicted and the call is retried once on another slot.
	ClassSession
	// ClassDevice: the token or module failed. The slot is quarantined,
	// reset and probed back to health; the call is retried once elsewhere.
	ClassDevice
	// ClassAuth: the PIN was refused. The slot is marked failed and never
	// logged in again by itself, to avoid locking the token.
	ClassAuth
)

func (c Class) String() string {
	switch c {
	case ClassData:
		return "data"
	case ClassUnsupported:
		return "unsupported"
	case ClassSession:
		return "session"
	case ClassDevice:
		return "device"
	case ClassAuth:
		return "auth"
	}
	return "unknown"
}

// opKind tells the classifier what the failed call was doing: the same CK_RV
// can mean different things (SoftHSM answers a GCM tag mismatch with
// CKR_GENERAL_ERROR).
type opKind int

const (
	opOther opKind = iota
	opDecrypt
	opVerify
	opVerifyMAC
	opUnwrap
	opImport // C_UnwrapKey of key material from outside (ImportKey)
)

// classify maps one CK_RV to its class and sentinel. It is the only place in
// the project that interprets PKCS#11 return values.
func classify(rv uint, op opKind) (Class, error) {
	switch rv {
	// Data errors: the request was wrong for the key.
	case pkcs11.CKR_ENCRYPTED_DATA_INVALID, pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE:
		switch op {
		case opUnwrap:
			return ClassData, ErrInvalidKeyBlob
		case opImport:
			return ClassData, ErrInvalidImport
		}
		return ClassData, ErrInvalidCiphertext
	case pkcs11.CKR_WRAPPED_KEY_INVALID, pkcs11.CKR_WRAPPED_KEY_LEN_RANGE:
		if op == opImport {
			return ClassData, ErrInvalidImport
		}
		return ClassData, ErrInvalidKeyBlob
	case pkcs11.CKR_SIGNATURE_INVALID, pkcs11.CKR_SIGNATURE_LEN_RANGE:
		if op == opVerifyMAC {
			return ClassData, ErrInvalidMAC
		}
		return ClassData, ErrInvalidSignature
	case pkcs11.CKR_DATA_INVALID, pkcs11.CKR_DATA_LEN_RANGE:
		switch op {
		case opDecrypt:
			return ClassData, ErrInvalidCiphertext
		case opImport:
			return ClassData, ErrInvalidImport
		}
		return ClassData, ErrInvalidInput
	case pkcs11.CKR_ARGUMENTS_BAD, pkcs11.CKR_KEY_SIZE_RANGE, pkcs11.CKR_KEY_TYPE_INCONSISTENT,
		pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED, pkcs11.CKR_ATTRIBUTE_VALUE_INVALID,
		pkcs11.CKR_ATTRIBUTE_TYPE_INVALID, pkcs11.CKR_TEMPLATE_INCOMPLETE,
		pkcs11.CKR_TEMPLATE_INCONSISTENT, pkcs11.CKR_DOMAIN_PARAMS_INVALID,
		pkcs11.CKR_BUFFER_TOO_SMALL:
		switch op {
		case opUnwrap:
			return ClassData, ErrInvalidKeyBlob
		case opImport:
			return ClassData, ErrInvalidImport
		}
		return ClassData, ErrInvalidInput
	case pkcs11.CKR_CURVE_NOT_SUPPORTED:
		if op == opImport {
			// The material names a curve other than the spec's.
			return ClassData, ErrInvalidImport
		}
		return ClassUnsupported, ErrUnsupported
	case pkcs11.CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT, pkcs11.CKR_UNWRAPPING_KEY_SIZE_RANGE:
		if op == opImport {
			// The wrapping key does not suit the mechanism on this module.
			return ClassUnsupported, ErrUnsupported
		}
		return ClassDevice, ErrUnavailable
	case pkcs11.CKR_MECHANISM_INVALID, pkcs11.CKR_MECHANISM_PARAM_INVALID,
		pkcs11.CKR_KEY_NOT_WRAPPABLE, pkcs11.CKR_KEY_UNEXTRACTABLE,
		pkcs11.CKR_FUNCTION_NOT_SUPPORTED:
		return ClassUnsupported, ErrUnsupported

	// Session errors: evict the session, retry elsewhere.
	case pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED, pkcs11.CKR_SESSION_COUNT,
		pkcs11.CKR_OPERATION_ACTIVE, pkcs11.CKR_OPERATION_NOT_INITIALIZED,
		pkcs11.CKR_KEY_HANDLE_INVALID, pkcs11.CKR_OBJECT_HANDLE_INVALID,
		pkcs11.CKR_SESSION_READ_ONLY:
		return ClassSession, ErrUnavailable

	// Login refused: never try again by ourselves.
	case pkcs11.CKR_PIN_INCORRECT, pkcs11.CKR_PIN_LOCKED, pkcs11.CKR_PIN_EXPIRED,
		pkcs11.CKR_PIN_INVALID, pkcs11.CKR_PIN_LEN_RANGE:
		return ClassAuth, ErrUnavailable

	// A tag mismatch in SoftHSM (and some other modules) is reported as a
	// generic failure. On a decrypt it is the ciphertext's fault; the slot's
	// health probe tells a real device failure apart.
	case pkcs11.CKR_GENERAL_ERROR, pkcs11.CKR_FUNCTION_FAILED:
		switch op {
		case opDecrypt:
			return ClassData, ErrInvalidCiphertext
		case opUnwrap:
			return ClassData, ErrInvalidKeyBlob
		case opImport:
			// SoftHSM reports an OAEP decoding failure (a wrong wrapping
			// key, a corrupted ciphertext) and an unparsable PKCS#8 so.
			return ClassData, ErrInvalidImport
		}
		return ClassDevice, ErrUnavailable
	}
	// Everything else (CKR_DEVICE_ERROR, CKR_DEVICE_REMOVED,
	// CKR_TOKEN_NOT_PRESENT, CKR_CRYPTOKI_NOT_INITIALIZED,
	// CKR_USER_NOT_LOGGED_IN, memory errors, unknown vendor codes) is a
	// device failure: quarantine, reset, probe.
	return ClassDevice, ErrUnavailable
}

// Error is the detailed error of a failed pool operation. It unwraps to one of
// the sentinel errors above. It never holds key material or PINs.
type Error struct {
	Op    string // what the pool was doing, e.g. "decrypt", "unwrap key k1 v2"
	Key   string // the key id, "" when no key was involved
	Slot  string // the slot's name (token label), "" when no slot was chosen
	RV    uint   // the PKCS#11 return value, 0 when the failure was not a CK_RV
	Class Class  // how the pool treated it
	Err   error  // a sentinel
}

func (e *Error) Error() string {
	var where string
	if e.Key != "" {
		where = " with key " + e.Key
	}
	if e.Slot != "" {
		where += " on slot " + e.Slot
	}
	if e.RV != 0 {
		return fmt.Sprintf("hsmpool: %s%s: %v (%s)", e.Op, where, e.Err, pkcs11.Error(e.RV).Error())
	}
	return fmt.Sprintf("hsmpool: %s%s: %v", e.Op, where, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// wrapRV turns an error returned by a Cryptoki call into an *Error.
func wrapRV(err error, op opKind, what string, slot string) *Error {
	if err == nil {
		return nil
	}
	var pe *Error
	if errors.As(err, &pe) {
		return pe
	}
	rv := rvOf(err)
	if rv == 0 {
		return &Error{Op: what, Slot: slot, Class: ClassDevice, Err: fmt.Errorf("%w: %v", ErrUnavailable, err)}
	}
	class, sentinel := classify(rv, op)
	return &Error{Op: what, Slot: slot, RV: rv, Class: class, Err: sentinel}
}

// classOf returns the class of err for routing decisions. Errors that are
// not *Error (context expiry, say) count as data errors: not retried.
func classOf(err error) Class {
	var pe *Error
	if errors.As(err, &pe) {
		return pe.Class
	}
	return ClassData
}
