package kmsapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/hsmgate/hsmgate/gateway/ciphertext"
	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/gateway/policy"
	"github.com/hsmgate/hsmgate/hsmpool"
)

// Error is an error in the AWS JSON protocol's shape: an exception type
// name, a message and an HTTP status. Messages never contain key material,
// secrets or the text of what failed to parse.
type Error struct {
	Type    string
	Message string
	Status  int
}

func (e *Error) Error() string { return e.Type + ": " + e.Message }

// The exception types hsmgate answers with, as AWS KMS names them.
const (
	ExNotFound           = "NotFoundException"
	ExDisabled           = "DisabledException"
	ExInvalidState       = "KMSInvalidStateException"
	ExInvalidCiphertext  = "InvalidCiphertextException"
	ExIncorrectKey       = "IncorrectKeyException"
	ExInvalidKeyUsage    = "InvalidKeyUsageException"
	ExInvalidSignature   = "KMSInvalidSignatureException"
	ExInvalidMac         = "KMSInvalidMacException"
	ExValidation         = "ValidationException"
	ExSerialization      = "SerializationException"
	ExAccessDenied       = "AccessDeniedException"
	ExThrottling         = "ThrottlingException"
	ExUnsupported        = "UnsupportedOperationException"
	ExAlreadyExists      = "AlreadyExistsException"
	ExInvalidAliasName   = "InvalidAliasNameException"
	ExTag                = "TagException"
	ExInternal           = "KMSInternalException"
	ExDependencyTimeout  = "DependencyTimeoutException"
	ExUnknownOperation   = "UnknownOperationException"
	ExUnrecognizedClient = "UnrecognizedClientException"
	ExMissingAuthToken   = "MissingAuthenticationTokenException"
	ExDryRun             = "DryRunOperationException"
	ExMalformedPolicy    = "MalformedPolicyDocumentException"
	ExInvalidGrantToken  = "InvalidGrantTokenException"
	ExInvalidGrantID     = "InvalidGrantIdException"
	ExInvalidArn         = "InvalidArnException"
	ExLimitExceeded      = "LimitExceededException"
	ExIncorrectMaterial  = "IncorrectKeyMaterialException"
	ExExpiredImportToken = "ExpiredImportTokenException"
	ExInvalidImportToken = "InvalidImportTokenException"
)

// status is the HTTP status of each exception type: 400 unless listed.
var status = map[string]int{
	ExInternal:          http.StatusInternalServerError,
	ExDependencyTimeout: http.StatusServiceUnavailable,
	ExAccessDenied:      http.StatusBadRequest,
}

// Errorf makes an API error of the given type.
func Errorf(typ, format string, args ...any) *Error {
	st, ok := status[typ]
	if !ok {
		st = http.StatusBadRequest
	}
	return &Error{Type: typ, Message: fmt.Sprintf(format, args...), Status: st}
}

// toAPI maps an internal error to the wire. It is the one table from
// internal errors to AWS exception types; every handler returns through it.
func toAPI(err error) *Error {
	var apiErr *Error
	if errors.As(err, &apiErr) {
		return apiErr
	}
	switch {
	case errors.Is(err, hsmpool.ErrInvalidImport):
		return Errorf(ExInvalidCiphertext, "The encrypted key material could not be unwrapped with the import parameters, or is not key material of the key's spec: %s", inputDetail(err))
	case errors.Is(err, hsmpool.ErrInvalidCiphertext), errors.Is(err, ciphertext.ErrInvalid):
		return Errorf(ExInvalidCiphertext, "The ciphertext is invalid, or was encrypted under another key or encryption context.")
	case errors.Is(err, hsmpool.ErrInvalidSignature):
		return Errorf(ExInvalidSignature, "The signature is not valid.")
	case errors.Is(err, hsmpool.ErrInvalidMAC):
		return Errorf(ExInvalidMac, "The MAC is not valid.")
	case errors.Is(err, hsmpool.ErrInvalidInput):
		return Errorf(ExValidation, "%s", inputDetail(err))
	case errors.Is(err, hsmpool.ErrUnsupported):
		return Errorf(ExUnsupported, "%s", inputDetail(err))
	case errors.Is(err, hsmpool.ErrThrottled):
		return Errorf(ExThrottling, "Rate exceeded: every HSM session is busy. Retry with backoff.")
	case errors.Is(err, hsmpool.ErrTimeout), errors.Is(err, hsmpool.ErrUnavailable),
		errors.Is(err, context.DeadlineExceeded):
		return Errorf(ExDependencyTimeout, "The HSM pool did not answer in time.")
	case errors.Is(err, hsmpool.ErrInvalidKeyBlob):
		return Errorf(ExInternal, "The key's stored material could not be used.")
	case errors.Is(err, keystore.ErrUnavailable):
		// A replicated keystore that can't commit a change now (a node cut
		// off from its cluster's majority): retryable, and it says why.
		return Errorf(ExDependencyTimeout, "%s", inputDetail(err))
	case errors.Is(err, keystore.ErrNotFound):
		return Errorf(ExNotFound, "%s", inputDetail(err))
	case errors.Is(err, keystore.ErrAlreadyExists):
		return Errorf(ExAlreadyExists, "%s", inputDetail(err))
	case errors.Is(err, keystore.ErrInvalid):
		return Errorf(ExValidation, "%s", inputDetail(err))
	case errors.Is(err, keystore.ErrMismatch):
		return Errorf(ExIncorrectMaterial, "The key material is not the material first imported into this key.")
	case errors.Is(err, keystore.ErrLimit):
		return Errorf(ExLimitExceeded, "%s", inputDetail(err))
	}
	var pe *policy.Error
	if errors.As(err, &pe) {
		return Errorf(ExMalformedPolicy, "%s", pe.Msg)
	}
	return Errorf(ExInternal, "Internal error.")
}

// inputDetail is the message of an error whose text is safe to show: it is
// made by our own packages from names, sizes and mechanism names, never from
// key material.
func inputDetail(err error) string {
	var pe *hsmpool.Error
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// ErrorBody is the JSON body of an error response:
// {"__type":"NotFoundException","message":"…"}.
func ErrorBody(e *Error) []byte {
	b, _ := json.Marshal(struct {
		Type    string `json:"__type"`
		Message string `json:"message"`
	}{e.Type, e.Message})
	return b
}
