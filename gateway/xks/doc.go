// Package xks serves AWS KMS's External Key Store (XKS) proxy API, version 1
// of AWS's "External Key Store Proxy API Specification" (1.0.x), from
// hsmgate's HSM pool, so that hsmgate's AES-256 keys can back KMS keys in
// an external key store. Section names in quotes below are the
// specification's.
//
// # Routes
//
// One [Handler] serves any number of key stores ([Store]), each under its
// own optional path prefix ("API Operations": the XksProxyUriPath given to
// KMS is [/<prefix>]/kms/xks/v1):
//
//	POST {prefix}/kms/xks/v1/keys/{externalKeyId}/metadata   GetKeyMetadata
//	POST {prefix}/kms/xks/v1/keys/{externalKeyId}/encrypt    Encrypt
//	POST {prefix}/kms/xks/v1/keys/{externalKeyId}/decrypt    Decrypt
//	POST {prefix}/kms/xks/v1/health                          GetHealthStatus
//
// Any other method at those URIs gets 405 Method Not Allowed (with Allow:
// POST and no error name, since the specification names none); any other
// path that [Handler.Match] sends here gets InvalidUriPathException (404).
//
// # Order of checks
//
//  1. The path: InvalidUriPathException for anything but the routes above
//     under a configured prefix (a '%' anywhere makes a path invalid: every
//     character the specification allows is unreserved).
//  2. The method: 405 for anything but POST.
//  3. The body, at most [MaxBody] bytes (else UnsupportedOperationException).
//  4. Authentication ("Authentication", "Appendix A"): the optional client
//     certificate ([ClientCertPolicy]), then SigV4 with service
//     kms-xks-proxy and the region KMS signs with (any, or the store's
//     Regions), at most 5 minutes of clock skew, against the store's
//     current credentials (two at once during a rotation, "SigV4
//     Credentials Rotation"). Any failure is AuthenticationFailedException
//     (401); a credential set that is not valid fails closed with
//     InternalException.
//  5. The store's quotas ([Store.MaxInFlight], [Store.RateLimit]):
//     ThrottlingException (429).
//  6. The body's JSON and every field's presence, type, Base64 and size:
//     ValidationException, or UnsupportedOperationException for a size
//     the specification allows but this proxy does not support ([MaxPlaintext],
//     [MaxAAD]).
//  7. The external key id's syntax (ValidationException), the key
//     (KeyNotFoundException), the store's [Authorizer] (AccessDeniedException;
//     never for GetHealthStatus, "GetHealthStatus"), the key's status
//     (InvalidStateException) and usage (InvalidKeyUsageException).
//  8. The HSM: errors mapped by one table (errorTable in errors.go):
//     a failed authentication of AES-GCM is InvalidCiphertextException,
//     busy sessions ThrottlingException, a timeout DependencyTimeoutException
//     (503), no serving slot InternalException (500).
//
// Every request ends in one [Event] passed to [Handler.Audit] before the
// response is written; when that fails the request fails with
// InternalException ("Logging": the request metadata, the outcome and the
// latency are recorded; plaintext never is).
//
// # Cryptography
//
// Encrypt runs AES-256-GCM in the HSM under a 96-bit IV the pool draws at
// random ("Encrypt" allows 12 or 16 bytes), splits the 16-byte tag the
// pool appends from the ciphertext, and returns a 5-byte ciphertextMetadata
// naming the hsmgate key version (format byte 1, then the version as 32
// bits big-endian), so that keys can rotate and old ciphertexts still
// decrypt. The additional data given to the HSM is, as "Encrypt" lays it
// out,
//
//	uint16be(len(AAD)) || AAD || uint8(len(ciphertextMetadata)) || ciphertextMetadata
//
// with zero lengths for absent fields. With
// ciphertextDataIntegrityValueAlgorithm SHA_256, the response carries the
// CDIV of "Appendix C", SHA-256(AAD || ciphertextMetadata || IV ||
// ciphertext || tag), computed before a verifying decrypt of the result.
// Decrypt takes a 12- or 16-byte IV and a 16-byte tag (else
// InvalidCiphertextException) and the version from the ciphertextMetadata.
//
// # Deviations and choices
//
//   - A malformed GetHealthStatus body is a ValidationException, as AWS's
//     XKS test client expects, although the specification's table omits
//     GetHealthStatus from that error.
//   - JSON-level faults of a Decrypt (a missing, non-string or
//     non-Base64 field) are ValidationException; well-formed values that
//     can't be a ciphertext of ours (IV or tag length, foreign
//     ciphertextMetadata, failed authentication) are
//     InvalidCiphertextException.
//   - mTLS is checked per request after the handshake, not by refusing the
//     handshake: the server's TLS configuration must request client
//     certificates and accept the store's roots.
//   - The test key of the health check is generated once per Handler and
//     lives only in memory (a blob under the domain key).
package xks
