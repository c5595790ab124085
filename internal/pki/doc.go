// Package pki is the gateway's small X.509 toolkit: it makes the private
// certificate authority that the gateway's mutual TLS trusts, issues the
// gateway's server certificate and its clients' certificates, maps a client
// certificate to a principal name, and reads and writes PEM files.
//
// It is pure Go (crypto/x509), with no cgo and no openssl.
//
// # The model
//
// One CA, one level deep:
//
//	CA  (self-signed, CertSign|CRLSign, MaxPathLen 0: it can sign only leaves)
//	├── server certificate  (ExtKeyUsageServerAuth; DNS and IP SANs)
//	└── client certificates (ExtKeyUsageClientAuth; one principal URI SAN each)
//
// The gateway's tls.Config trusts the CA for both directions: clients pin it
// as RootCAs to check the server, and the server puts it in ClientCAs with
// tls.RequireAndVerifyClientCert to check clients. Because every issued
// certificate carries exactly one extended key usage, a client certificate
// cannot serve TLS and the server certificate cannot log in as a client.
//
// # Signing with a key that never leaves the HSM
//
// Every function that signs takes a [crypto.Signer], not a private key, so
// the CA key can be an HSM object: pass the pool's signer and only the
// to-be-signed bytes' digest crosses into the module. The signature
// algorithm is chosen by [x509.CreateCertificate] from signer.Public():
// ECDSA P-256 (the default key type) signs with ECDSA-SHA256, P-384 with
// ECDSA-SHA384, RSA with SHA256-RSA (PKCS #1 v1.5). Nothing here
// type-asserts the signer to *ecdsa.PrivateKey or *rsa.PrivateKey, and
// CreateCertificate verifies the returned signature against
// signer.Public() before it returns, so a misbehaving module cannot yield a
// certificate with a bad signature.
//
// The key of an issued certificate is passed as a public key only. For the
// server, that is the public half of another HSM key; for a client, it is
// usually a key the client generated itself, which [EncodePrivateKeyPEM]
// can store in the client's own key file (HSM keys cannot be exported, and
// EncodePrivateKeyPEM refuses them).
//
// # Key identifiers
//
// [NewCA] leaves the CA's SubjectKeyId to Go: since Go 1.25,
// x509.CreateCertificate fills it in for a CA template as the leftmost 160
// bits of the SHA-256 of the subjectPublicKey bits (RFC 7093, section 2,
// method 1; GODEBUG x509sha256skid=0 selects RFC 5280's SHA-1 instead).
// Either way it depends only on the key, so a CA certificate re-issued for
// the same HSM key keeps the same SubjectKeyId and still links to the
// certificates it signed. Issued certificates carry the CA's SubjectKeyId as
// their AuthorityKeyId, which lets verifiers pick the right CA when several
// share a name, for example during a CA rotation.
//
// # Validity
//
// Each certificate is valid from now minus [ClockSkew] (five minutes, so a
// peer whose clock runs a little behind accepts a certificate issued a
// moment ago) until now plus the requested validity, both truncated to whole
// seconds as X.509 stores them. An issued certificate may not outlive its
// CA: such a request fails rather than producing a certificate that would
// stop verifying before its NotAfter. The current time is always passed in,
// so tests and offline tools control the clock. Serial numbers are 128
// random bits from crypto/rand.
//
// # Principals
//
// A client certificate names its principal in a URI SAN of the form
// urn:hsmgate:principal:<name> (see [PrincipalURI]); the Subject CN carries
// the same name for people reading the certificate. [PrincipalFromCert]
// reads the URI, and falls back to the CN only for certificates that have no
// such URI at all, such as ones made by another tool. It does not verify
// anything: call it on tls.ConnectionState.VerifiedChains[0][0], never on a
// certificate that has not been verified. Names are limited to the IAM
// user-name alphabet (see [ValidPrincipalName]) so that the same principal
// can be used in SigV4 credentials and in policies.
//
// # Files
//
// [ParseCertsPEM] and [ParsePrivateKeyPEM] are strict: every byte outside
// PEM blocks must be white space, and a block of an unexpected type is an
// error, so a truncated or concatenated-by-mistake file is reported instead
// of half read. [WriteFileAtomic] replaces a file so that readers see either
// the old or the new contents, never a mix, and a key file is never readable
// with a wider mode than requested, not even while it is being written.
package pki
