package xks

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
)

// Credential is one SigV4 credential AWS KMS signs XKS requests with: an
// access key id and its secret access key. It is not an AWS IAM credential
// ("Appendix A": the two are unrelated).
type Credential struct {
	AccessKeyID string
	Secret      string
}

// MaxCredentials is how many credentials a key store accepts at once: the
// old and the new one during a rotation ("SigV4 Credentials Rotation": at
// least two sets per path prefix).
const MaxCredentials = 2

// Limits on credentials, from "Appendix A" and AWS KMS's
// XksProxyAuthenticationCredentialType: an access key id of 20 to 30
// characters 'A'-'Z' and '2'-'7'; a secret of 43 to 64 characters
// a-z A-Z 0-9 + / =.
const (
	MinAccessKeyIDLen = 20
	MaxAccessKeyIDLen = 30
	MinSecretLen      = 43
	MaxSecretLen      = 64
)

// String redacts the secret, so that a Credential never reaches a log.
func (c Credential) String() string { return "Credential{" + c.AccessKeyID + ", secret redacted}" }

// GoString redacts the secret for %#v.
func (c Credential) GoString() string { return c.String() }

// LogValue redacts the secret for log/slog.
func (c Credential) LogValue() slog.Value {
	return slog.GroupValue(slog.String("access_key_id", c.AccessKeyID), slog.String("secret", "redacted"))
}

// Validate checks the credential against the specification's rules. Its
// errors never contain the secret.
func (c Credential) Validate() error {
	if n := len(c.AccessKeyID); n < MinAccessKeyIDLen || n > MaxAccessKeyIDLen || !allBytes(c.AccessKeyID, isAccessKeyIDByte) {
		return fmt.Errorf("xks: access key id %q: want %d to %d characters A-Z and 2-7", printableASCII(c.AccessKeyID, 40), MinAccessKeyIDLen, MaxAccessKeyIDLen)
	}
	if n := len(c.Secret); n < MinSecretLen || n > MaxSecretLen || !allBytes(c.Secret, isSecretByte) {
		return fmt.Errorf("xks: secret of access key id %s: want %d to %d characters a-z A-Z 0-9 + / =", c.AccessKeyID, MinSecretLen, MaxSecretLen)
	}
	return nil
}

// ValidateCredentials checks a key store's set of credentials: one or two
// (MaxCredentials), each valid, with distinct access key ids. Check a set
// with it before a reload makes it current.
func ValidateCredentials(cs []Credential) error {
	if len(cs) == 0 {
		return errors.New("xks: a key store needs at least one credential")
	}
	if len(cs) > MaxCredentials {
		return fmt.Errorf("xks: %d credentials; a key store accepts at most %d at once (the old and the new during a rotation)", len(cs), MaxCredentials)
	}
	for i, c := range cs {
		if err := c.Validate(); err != nil {
			return err
		}
		for _, d := range cs[:i] {
			if d.AccessKeyID == c.AccessKeyID {
				return fmt.Errorf("xks: access key id %s appears twice; each must name one secret", c.AccessKeyID)
			}
		}
	}
	return nil
}

// NewCredential makes a fresh credential: an access key id of 26
// characters from 128 random bits (base32, 'A'-'Z' '2'-'7') and a secret
// of 44 characters from 256 random bits (base64), as "Appendix A"
// suggests. The id reveals nothing about the secret.
func NewCredential() (Credential, error) {
	var id [16]byte
	var secret [32]byte
	if _, err := rand.Read(id[:]); err != nil {
		return Credential{}, err
	}
	if _, err := rand.Read(secret[:]); err != nil {
		return Credential{}, err
	}
	c := Credential{
		AccessKeyID: base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(id[:]),
		Secret:      base64.StdEncoding.EncodeToString(secret[:]),
	}
	clear(secret[:])
	return c, nil
}

func isAccessKeyIDByte(c byte) bool { return 'A' <= c && c <= 'Z' || '2' <= c && c <= '7' }

func isSecretByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '+' || c == '/' || c == '='
}

func allBytes(s string, ok func(byte) bool) bool {
	for i := 0; i < len(s); i++ {
		if !ok(s[i]) {
			return false
		}
	}
	return true
}

// ClientCertPolicy is the optional mutual TLS check of a key store
// ("Authentication": a proxy that supports mTLS lets the customer set both
// the subject name and the root CA of the client certificate; AWS KMS
// presents CN=cks.kms.<Region>.amazonaws.com chained to Amazon Trust
// Services). The specification has since deprecated mTLS; SigV4 is always
// required in addition.
type ClientCertPolicy struct {
	// Roots are the CAs the client certificate must chain to.
	Roots *x509.CertPool
	// CommonNames are the subject common names accepted, for example
	// "cks.kms.eu-west-1.amazonaws.com".
	CommonNames []string
}
