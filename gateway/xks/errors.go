package xks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/hsmgate/hsmgate/hsmpool"
)

// Error names, as the specification's "Error Codes" section lists them.
// They travel in the "errorName" member of an error response's body.
const (
	ErrNameValidation           = "ValidationException"
	ErrNameInvalidState         = "InvalidStateException"
	ErrNameInvalidCiphertext    = "InvalidCiphertextException"
	ErrNameInvalidKeyUsage      = "InvalidKeyUsageException"
	ErrNameAuthenticationFailed = "AuthenticationFailedException"
	ErrNameAccessDenied         = "AccessDeniedException"
	ErrNameKeyNotFound          = "KeyNotFoundException"
	ErrNameInvalidURIPath       = "InvalidUriPathException"
	ErrNameThrottling           = "ThrottlingException"
	ErrNameUnsupportedOperation = "UnsupportedOperationException"
	ErrNameDependencyTimeout    = "DependencyTimeoutException"
	ErrNameInternal             = "InternalException"
)

// errNameMethodNotAllowed names, in audit events only, a request refused
// with 405 Method Not Allowed ("API Operations": any method but POST at an
// API's URI). The specification gives that answer no error name, so the
// response carries none.
const errNameMethodNotAllowed = "MethodNotAllowed"

// Statuses is the HTTP status of each error name, from the table of the
// specification's "Error Codes" section. It is the one place they live.
var Statuses = map[string]int{
	ErrNameValidation:           http.StatusBadRequest,
	ErrNameInvalidState:         http.StatusBadRequest,
	ErrNameInvalidCiphertext:    http.StatusBadRequest,
	ErrNameInvalidKeyUsage:      http.StatusBadRequest,
	ErrNameAuthenticationFailed: http.StatusUnauthorized,
	ErrNameAccessDenied:         http.StatusForbidden,
	ErrNameKeyNotFound:          http.StatusNotFound,
	ErrNameInvalidURIPath:       http.StatusNotFound,
	ErrNameThrottling:           http.StatusTooManyRequests,
	ErrNameUnsupportedOperation: http.StatusNotImplemented,
	ErrNameDependencyTimeout:    http.StatusServiceUnavailable,
	ErrNameInternal:             http.StatusInternalServerError,
}

// Sentinel errors that a [Keys] implementation, a [Key] and an
// [Authorizer] return (possibly wrapped) to have a request refused with the
// matching error name. Any other error is an InternalException, except
// context.DeadlineExceeded (DependencyTimeoutException).
var (
	// ErrKeyNotFound: no external key of that id in the key store.
	// KeyNotFoundException (404).
	ErrKeyNotFound = errors.New("xks: external key not found")
	// ErrInvalidState: the key or the key store is disabled, pending
	// deletion, or otherwise blocked. InvalidStateException (400).
	ErrInvalidState = errors.New("xks: external key or key store is not in a usable state")
	// ErrAccessDenied: the secondary authorization refuses the request.
	// AccessDeniedException (403).
	ErrAccessDenied = errors.New("xks: access denied")
	// ErrKeyVersionNotFound: the key version a ciphertextMetadata names
	// does not exist (any more). InvalidCiphertextException (400).
	ErrKeyVersionNotFound = errors.New("xks: key version not found")
)

// Error is an answer of the XKS API that is not a success: an error name,
// its HTTP status and a message for the errorMessage member. Messages hold
// no secret and no request data beyond sizes and names.
type Error struct {
	Name    string
	Message string
	Status  int

	cause error // the internal error, logged (never sent)
}

func (e *Error) Error() string { return e.Name + ": " + e.Message }

func apiErrorf(name, format string, args ...any) *Error {
	st, ok := Statuses[name]
	if !ok {
		name, st = ErrNameInternal, http.StatusInternalServerError
	}
	return &Error{Name: name, Message: fmt.Sprintf(format, args...), Status: st}
}

// errorTable maps internal errors to the wire, first match wins. It is the
// one table from internal errors to error names; every operation returns
// through toAPI. hsmpool wraps a deadline as ErrTimeout and
// context.DeadlineExceeded at once, so ErrTimeout comes first.
var errorTable = []struct {
	err  error
	name string
	msg  string
}{
	{ErrKeyNotFound, ErrNameKeyNotFound, "The external key was not found in this external key store."},
	{ErrInvalidState, ErrNameInvalidState, "The external key or its key store is disabled, pending deletion or blocked."},
	{ErrAccessDenied, ErrNameAccessDenied, "The proxy's authorization policy denied this operation on this key."},
	{ErrKeyVersionNotFound, ErrNameInvalidCiphertext, "The ciphertext metadata names a key version this key does not have."},
	{hsmpool.ErrInvalidCiphertext, ErrNameInvalidCiphertext, "The ciphertext, initialization vector, additional authenticated data, ciphertext metadata or authentication tag is corrupted or invalid."},
	{hsmpool.ErrThrottled, ErrNameThrottling, "Every HSM session is busy. Retry with backoff."},
	{hsmpool.ErrTimeout, ErrNameDependencyTimeout, "The HSM did not answer in time."},
	{context.DeadlineExceeded, ErrNameDependencyTimeout, "The HSM did not answer in time."},
	{hsmpool.ErrUnsupported, ErrNameUnsupportedOperation, "The HSM does not support this operation."},
	{hsmpool.ErrInvalidInput, ErrNameValidation, "The HSM refused the input as invalid for this key."},
	{hsmpool.ErrUnavailable, ErrNameInternal, "No HSM slot is available to serve the request."},
	{hsmpool.ErrInvalidKeyBlob, ErrNameInternal, "The key's stored material could not be used."},
	{hsmpool.ErrClosed, ErrNameInternal, "The HSM pool is closed."},
}

// toAPI maps an error from the pool, the key store or the authorizer to
// the wire.
func toAPI(err error) *Error {
	var apiErr *Error
	if errors.As(err, &apiErr) {
		return apiErr
	}
	e := apiErrorf(ErrNameInternal, "Internal error.")
	for _, m := range errorTable {
		if errors.Is(err, m.err) {
			e = apiErrorf(m.name, "%s", m.msg)
			break
		}
	}
	e.cause = err
	return e
}

// maxMessage bounds errorMessage: the specification's "Error Codes" section
// requires fewer than 512 characters, all printable ASCII.
const maxMessage = 511

// errorBody is the JSON body of an error response.
func errorBody(e *Error) []byte {
	b, _ := json.Marshal(struct {
		Name    string `json:"errorName"`
		Message string `json:"errorMessage,omitempty"`
	}{e.Name, printableASCII(e.Message, maxMessage)})
	return b
}

// printableASCII returns s with every byte outside 0x20..0x7e replaced by
// '?', cut to at most n bytes.
func printableASCII(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	return string(b)
}
