package sigv4

import (
	"errors"
	"net/http"
)

// Sentinel errors. Every error returned by [Verifier.Verify] is an [*Error]
// that wraps exactly one of them, so callers can test the cause with
// errors.Is and map it to the AWS error type with [ErrorCode].
var (
	// ErrMissingAuthentication: the request carries no Authorization header.
	// AWS type MissingAuthenticationTokenException.
	ErrMissingAuthentication = errors.New("sigv4: missing authentication token")

	// ErrMalformedAuthorization: the Authorization header (or a header it
	// depends on, such as X-Amz-Date) is not a well-formed SigV4 header-based
	// authorization: wrong algorithm, missing, duplicated or unknown
	// components, a bad credential scope, unsorted or duplicated signed
	// headers, host or the date header not signed, a malformed date, or an
	// attempt to use query-string (presigned) authentication.
	// AWS type IncompleteSignatureException.
	ErrMalformedAuthorization = errors.New("sigv4: malformed authorization")

	// ErrUnknownAccessKey: the access key id is not known. A [Lookup] returns
	// it (possibly wrapped) when the key does not exist or is disabled.
	// AWS type UnrecognizedClientException.
	ErrUnknownAccessKey = errors.New("sigv4: unknown access key")

	// ErrSessionTokenRefused: the request carries X-Amz-Security-Token. This
	// gateway issues no temporary credentials, so no session token can be
	// valid; such requests are refused whether or not the token is signed.
	// AWS type UnrecognizedClientException.
	ErrSessionTokenRefused = errors.New("sigv4: session tokens are not accepted")

	// ErrCredentialScope: the credential scope names another region or
	// service than the verifier's, or a date other than the request's.
	// AWS type InvalidSignatureException.
	ErrCredentialScope = errors.New("sigv4: credential scope mismatch")

	// ErrSignatureExpired: the request time is further than MaxSkew from the
	// verifier's clock (in the past or in the future).
	// AWS type InvalidSignatureException.
	ErrSignatureExpired = errors.New("sigv4: signature expired")

	// ErrSignedHeaderMissing: a header listed in SignedHeaders is not in the
	// request.
	// AWS type InvalidSignatureException.
	ErrSignedHeaderMissing = errors.New("sigv4: signed header missing from request")

	// ErrPayloadHash: X-Amz-Content-Sha256 is present and is not the SHA-256
	// of the body (UNSIGNED-PAYLOAD and streaming payloads included).
	// AWS type InvalidSignatureException.
	ErrPayloadHash = errors.New("sigv4: payload hash mismatch")

	// ErrSignatureMismatch: the signature is not the one the secret produces
	// for this request, or the request's query string is not valid
	// percent-encoding and so has no canonical form.
	// AWS type InvalidSignatureException.
	ErrSignatureMismatch = errors.New("sigv4: signature mismatch")

	// ErrLookupFailed: the [Lookup] failed for a reason other than
	// ErrUnknownAccessKey, or returned unusable credentials. The lookup's
	// error is wrapped too. AWS type InternalFailure (HTTP 500).
	ErrLookupFailed = errors.New("sigv4: credential lookup failed")

	// ErrMisconfigured: the Verifier itself is not usable (no Region, Service
	// or Lookup, negative MaxSkew). AWS type InternalFailure (HTTP 500).
	ErrMisconfigured = errors.New("sigv4: verifier misconfigured")
)

// AWS error type names returned by [ErrorCode].
const (
	CodeMissingAuthenticationToken = "MissingAuthenticationTokenException"
	CodeIncompleteSignature        = "IncompleteSignatureException"
	CodeUnrecognizedClient         = "UnrecognizedClientException"
	CodeInvalidSignature           = "InvalidSignatureException"
	CodeInternalFailure            = "InternalFailure"
)

// codes maps each sentinel to its AWS error type and HTTP status. It is the
// one table the mapping lives in.
var codes = []struct {
	err    error
	code   string
	status int
}{
	{ErrMissingAuthentication, CodeMissingAuthenticationToken, http.StatusBadRequest},
	{ErrMalformedAuthorization, CodeIncompleteSignature, http.StatusBadRequest},
	{ErrUnknownAccessKey, CodeUnrecognizedClient, http.StatusBadRequest},
	{ErrSessionTokenRefused, CodeUnrecognizedClient, http.StatusBadRequest},
	{ErrCredentialScope, CodeInvalidSignature, http.StatusBadRequest},
	{ErrSignatureExpired, CodeInvalidSignature, http.StatusBadRequest},
	{ErrSignedHeaderMissing, CodeInvalidSignature, http.StatusBadRequest},
	{ErrPayloadHash, CodeInvalidSignature, http.StatusBadRequest},
	{ErrSignatureMismatch, CodeInvalidSignature, http.StatusBadRequest},
	{ErrLookupFailed, CodeInternalFailure, http.StatusInternalServerError},
	{ErrMisconfigured, CodeInternalFailure, http.StatusInternalServerError},
}

func classify(err error) (code string, status int) {
	if err == nil {
		return "", 0
	}
	var e *Error
	if errors.As(err, &e) {
		for _, c := range codes {
			if e.Err == c.err {
				return c.code, c.status
			}
		}
	}
	return CodeInternalFailure, http.StatusInternalServerError
}

// ErrorCode returns the AWS error type name ("__type" in the JSON protocol)
// for an error returned by [Verifier.Verify]: one of the Code* constants. It
// returns "" for nil and CodeInternalFailure for an error that did not come
// from this package.
func ErrorCode(err error) string {
	code, _ := classify(err)
	return code
}

// HTTPStatus returns the HTTP status AWS uses with [ErrorCode]'s type: 400 for
// every authentication failure, 500 for InternalFailure, and 0 for nil.
func HTTPStatus(err error) int {
	_, status := classify(err)
	return status
}

// Error is the error type returned by [Verifier.Verify].
//
// Its Message is written to be sent to the client as the AWS error message:
// it never contains the secret, the derived signing key or the signature the
// server expected (which would let the client forge requests). Values taken
// from the request appear in it in single quotes, with control and non-ASCII
// bytes escaped as \xNN, and cut to 64 bytes.
type Error struct {
	// Err is the sentinel this error is an instance of (ErrMalformedAuthorization, ...).
	Err error
	// Message is the AWS-style human-readable message.
	Message string

	// CanonicalRequest and StringToSign are set for ErrSignatureMismatch only:
	// what the server computed from the request, as AWS reports them to help
	// clients debug their signer. Both are derived from the request alone and
	// hold no secret; they may contain any signed header's value, so treat
	// them like the request's headers when logging.
	CanonicalRequest string
	StringToSign     string

	cause error // the Lookup's error, for ErrLookupFailed
}

func (e *Error) Error() string { return e.Message }

// Unwrap returns the sentinel and, for ErrLookupFailed, the Lookup's error.
func (e *Error) Unwrap() []error {
	if e.cause != nil {
		return []error{e.Err, e.cause}
	}
	return []error{e.Err}
}

// AWSMessage returns the message AWS would send for this error: Message and,
// for a signature mismatch, the canonical request and string to sign the
// server computed, in AWS's layout.
func (e *Error) AWSMessage() string {
	if e.Err != ErrSignatureMismatch || e.CanonicalRequest == "" {
		return e.Message
	}
	return e.Message + "\n\nThe Canonical String for this request should have been\n'" +
		e.CanonicalRequest + "'\n\nThe String-to-Sign should have been\n'" + e.StringToSign + "'\n"
}

func newError(sentinel error, msg string) *Error {
	return &Error{Err: sentinel, Message: msg}
}

// quote renders an untrusted value for an error message: Go-quoted (so no
// control characters or newlines reach a log) and cut to a bounded length.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		s = s[:max] + "..."
	}
	b := make([]byte, 0, len(s)+2)
	b = append(b, '\'')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\'' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c >= 0x7f:
			const hexdig = "0123456789abcdef"
			b = append(b, '\\', 'x', hexdig[c>>4], hexdig[c&0xf])
		default:
			b = append(b, c)
		}
	}
	b = append(b, '\'')
	return string(b)
}
