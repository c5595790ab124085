package pki

import (
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// principalPrefix is the part of a principal URI before the name; the URI
// scheme "urn" precedes it.
const principalPrefix = "hsmgate:principal:"

// maxPrincipalLen is the longest principal name, as for IAM user names.
const maxPrincipalLen = 64

// oidCommonName is the X.520 commonName attribute type.
var oidCommonName = asn1.ObjectIdentifier{2, 5, 4, 3}

// ValidPrincipalName reports whether name can name a principal: 1 to 64
// characters, each an ASCII letter or digit or one of + = , . @ _ - (the
// alphabet AWS IAM allows in user names, so a principal can appear in
// SigV4 credentials and policies unchanged). Names are case-sensitive.
//
// The alphabet has no ':', '/', '%' or space, so a name needs no escaping
// inside a URN, a file name or a log line.
func ValidPrincipalName(name string) error {
	if name == "" {
		return errors.New("empty principal name")
	}
	if len(name) > maxPrincipalLen {
		return fmt.Errorf("principal name is %d characters, more than %d", len(name), maxPrincipalLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("+=,.@_-", c) >= 0:
		default:
			return fmt.Errorf("principal name %q: character %q is not allowed (use letters, digits and + = , . @ _ -)", name, c)
		}
	}
	return nil
}

// PrincipalURI returns the URI that names principal in a client
// certificate: urn:hsmgate:principal:<name>. It does not validate the name;
// see [ValidPrincipalName].
func PrincipalURI(name string) *url.URL {
	return &url.URL{Scheme: "urn", Opaque: principalPrefix + name}
}

// PrincipalFromCert returns the principal a client certificate names.
//
// If the certificate has URI SANs in the urn:hsmgate:principal: namespace
// (the "hsmgate:principal:" part compared case-insensitively, so that no
// spelling variant is silently skipped), there must be exactly one, and the
// name is what follows the prefix, taken verbatim: no query, fragment or
// percent-escape is allowed. Other URI SANs are ignored. If there is no
// such URI, the Subject common name is used, for certificates made by other
// tools; the subject must then have exactly one. Either way the name must
// pass [ValidPrincipalName].
//
// PrincipalFromCert trusts cert: call it only on a certificate whose chain
// has been verified for client authentication, such as
// tls.ConnectionState.VerifiedChains[0][0].
func PrincipalFromCert(cert *x509.Certificate) (string, error) {
	if cert == nil {
		return "", errors.New("pki: PrincipalFromCert: nil certificate")
	}
	var name string
	found := 0
	for _, u := range cert.URIs {
		// url.Parse lowercases the scheme; the opaque part is raw.
		if u.Scheme != "urn" || len(u.Opaque) < len(principalPrefix) ||
			!strings.EqualFold(u.Opaque[:len(principalPrefix)], principalPrefix) {
			continue
		}
		found++
		if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.RawFragment != "" {
			return "", fmt.Errorf("pki: PrincipalFromCert: principal URI %q has a query or fragment", u)
		}
		name = u.Opaque[len(principalPrefix):]
	}
	switch {
	case found > 1:
		return "", fmt.Errorf("pki: PrincipalFromCert: certificate has %d principal URIs, want one", found)
	case found == 0:
		cns := 0
		for _, atv := range cert.Subject.Names {
			if atv.Type.Equal(oidCommonName) {
				cns++
			}
		}
		if cns != 1 {
			return "", fmt.Errorf("pki: PrincipalFromCert: certificate has no principal URI and %d subject common names, want one", cns)
		}
		name = cert.Subject.CommonName
	}
	if err := ValidPrincipalName(name); err != nil {
		return "", fmt.Errorf("pki: PrincipalFromCert: %w", err)
	}
	return name, nil
}
