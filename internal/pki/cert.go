package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// ClockSkew is how far before the issuing time every certificate's
// NotBefore is set, so that peers whose clocks run slightly behind accept a
// certificate issued a moment ago.
const ClockSkew = 5 * time.Minute

// maxCNLen is the X.520 upper bound on a common name (ub-common-name).
const maxCNLen = 64

// NewCA makes a self-signed CA certificate for signer's key, with the
// Subject CN commonName, valid from now-[ClockSkew] to now+validity.
//
// The certificate is a CA (basic constraints critical, IsCA) with key usage
// CertSign|CRLSign and MaxPathLen 0, so it can sign leaf certificates but no
// intermediate CA. Its SubjectKeyId is derived from the public key by
// x509.CreateCertificate (see the package documentation). signer is
// typically an HSM-backed key; its Public() selects the signature algorithm.
func NewCA(signer crypto.Signer, commonName string, validity time.Duration, now time.Time) (*x509.Certificate, error) {
	if signer == nil {
		return nil, errors.New("pki: NewCA: nil signer")
	}
	if commonName == "" || len(commonName) > maxCNLen {
		return nil, fmt.Errorf("pki: NewCA: common name must be 1 to %d bytes, got %d", maxCNLen, len(commonName))
	}
	notBefore, notAfter, err := validityWindow(validity, now)
	if err != nil {
		return nil, fmt.Errorf("pki: NewCA: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("pki: NewCA: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		// SubjectKeyId is left empty: CreateCertificate derives it from
		// the public key for CA templates.
	}
	cert, err := create(tmpl, tmpl, signer.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("pki: NewCA: %w", err)
	}
	return cert, nil
}

// IssueServer issues a TLS server certificate for pub, signed by ca with
// caSigner, valid from now-[ClockSkew] to now+validity.
//
// hosts lists the names clients will connect to: each is either an IP
// address (IPv4 or IPv6, without zone or brackets), which becomes an IP
// SAN, or a DNS name (letters, digits, '-' and '_', optionally with a
// leading "*." wildcard label), which becomes a DNS SAN. At least one host
// is required; the first also becomes the Subject CN if it fits in 64 bytes
// (verifiers ignore the CN when SANs are present; it is for humans).
//
// The certificate has ExtKeyUsageServerAuth only, and key usage
// DigitalSignature (plus KeyEncipherment for an RSA key).
func IssueServer(ca *x509.Certificate, caSigner crypto.Signer, pub crypto.PublicKey, hosts []string, validity time.Duration, now time.Time) (*x509.Certificate, error) {
	if len(hosts) == 0 {
		return nil, errors.New("pki: IssueServer: no hosts")
	}
	tmpl := &x509.Certificate{
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if _, isRSA := pub.(*rsa.PublicKey); isRSA {
		// TLS 1.2 RSA key exchange encrypts to the server's key.
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	for _, h := range hosts {
		if addr, err := netip.ParseAddr(h); err == nil {
			if addr.Zone() != "" {
				return nil, fmt.Errorf("pki: IssueServer: host %q: an IP address in a certificate cannot have a zone", h)
			}
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(addr.AsSlice()))
			continue
		}
		if err := validDNSName(h); err != nil {
			return nil, fmt.Errorf("pki: IssueServer: host %q: %w", h, err)
		}
		tmpl.DNSNames = append(tmpl.DNSNames, h)
	}
	if len(hosts[0]) <= maxCNLen {
		tmpl.Subject.CommonName = hosts[0]
	}
	cert, err := issue(ca, caSigner, pub, tmpl, validity, now)
	if err != nil {
		return nil, fmt.Errorf("pki: IssueServer: %w", err)
	}
	return cert, nil
}

// IssueClient issues a TLS client certificate for pub naming principal,
// signed by ca with caSigner, valid from now-[ClockSkew] to now+validity.
//
// principal must pass [ValidPrincipalName]. It becomes the Subject CN and,
// as [PrincipalURI], the certificate's only SAN; [PrincipalFromCert] reads
// it back. The certificate has ExtKeyUsageClientAuth only, and key usage
// DigitalSignature.
func IssueClient(ca *x509.Certificate, caSigner crypto.Signer, pub crypto.PublicKey, principal string, validity time.Duration, now time.Time) (*x509.Certificate, error) {
	if err := ValidPrincipalName(principal); err != nil {
		return nil, fmt.Errorf("pki: IssueClient: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: principal},
		URIs:        []*url.URL{PrincipalURI(principal)},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	cert, err := issue(ca, caSigner, pub, tmpl, validity, now)
	if err != nil {
		return nil, fmt.Errorf("pki: IssueClient: %w", err)
	}
	return cert, nil
}

// issue completes a leaf template (names, key usages) with what server and
// client certificates share, checks it against ca, and signs it.
func issue(ca *x509.Certificate, caSigner crypto.Signer, pub crypto.PublicKey, tmpl *x509.Certificate, validity time.Duration, now time.Time) (*x509.Certificate, error) {
	switch {
	case ca == nil:
		return nil, errors.New("nil CA certificate")
	case caSigner == nil:
		return nil, errors.New("nil CA signer")
	case pub == nil:
		return nil, errors.New("nil public key")
	case !ca.BasicConstraintsValid || !ca.IsCA:
		return nil, fmt.Errorf("certificate %q is not a CA", ca.Subject.CommonName)
	case ca.KeyUsage != 0 && ca.KeyUsage&x509.KeyUsageCertSign == 0:
		return nil, fmt.Errorf("CA %q lacks the CertSign key usage", ca.Subject.CommonName)
	}
	if k, ok := caSigner.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(ca.PublicKey) {
		return nil, fmt.Errorf("the CA signer's public key does not match CA %q", ca.Subject.CommonName)
	}
	notBefore, notAfter, err := validityWindow(validity, now)
	if err != nil {
		return nil, err
	}
	if notAfter.After(ca.NotAfter) {
		return nil, fmt.Errorf("validity until %s would outlive CA %q, which expires %s; shorten the validity or renew the CA",
			notAfter.Format(time.RFC3339), ca.Subject.CommonName, ca.NotAfter.UTC().Format(time.RFC3339))
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore, tmpl.NotAfter = notBefore, notAfter
	tmpl.BasicConstraintsValid = true
	tmpl.IsCA = false
	// CreateCertificate copies ca.SubjectKeyId into AuthorityKeyId only when
	// the leaf's subject differs from the CA's; setting it here covers a
	// leaf that happens to share the CA's name.
	tmpl.AuthorityKeyId = ca.SubjectKeyId
	return create(tmpl, ca, pub, caSigner)
}

// create signs tmpl and parses the result.
func create(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// validityWindow returns [now-ClockSkew, now+validity], truncated to whole
// seconds as X.509 encodes them (so that comparing with a parsed CA's
// NotAfter is exact).
func validityWindow(validity time.Duration, now time.Time) (notBefore, notAfter time.Time, err error) {
	if validity <= 0 {
		return time.Time{}, time.Time{}, fmt.Errorf("validity must be positive, got %s", validity)
	}
	if now.IsZero() {
		return time.Time{}, time.Time{}, errors.New("the current time is zero")
	}
	now = now.UTC()
	return now.Add(-ClockSkew).Truncate(time.Second), now.Add(validity).Truncate(time.Second), nil
}

// randomSerial returns a uniformly random, positive 128-bit serial number.
func randomSerial() (*big.Int, error) {
	var b [16]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("serial number: %w", err)
		}
		if n := new(big.Int).SetBytes(b[:]); n.Sign() > 0 {
			return n, nil
		}
	}
}

// validDNSName checks a server host name: dot-separated labels of 1..63
// letters, digits, '-' and '_' (not starting or ending with '-'), at most
// 253 bytes, with an optional leading "*" label. Names whose labels are all
// digits are refused as mistyped IP addresses.
func validDNSName(name string) error {
	if name == "" {
		return errors.New("empty host name")
	}
	if len(name) > 253 {
		return errors.New("host name longer than 253 bytes")
	}
	if strings.HasSuffix(name, ".") {
		return errors.New("host name must not end with a dot")
	}
	labels := strings.Split(name, ".")
	allDigits := true
	for i, l := range labels {
		if l == "*" && i == 0 && len(labels) > 1 {
			allDigits = false
			continue
		}
		if l == "" || len(l) > 63 {
			return errors.New("host name labels must be 1 to 63 bytes")
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return errors.New("host name labels must not start or end with '-'")
		}
		for j := 0; j < len(l); j++ {
			c := l[j]
			switch {
			case c >= '0' && c <= '9':
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '-', c == '_':
				allDigits = false
			case c == '*':
				return errors.New("a wildcard must be the whole first label, as in *.example.com")
			default:
				return fmt.Errorf("not an IP address, and %q is not allowed in a host name", c)
			}
		}
	}
	if allDigits {
		return errors.New("not a valid IP address")
	}
	return nil
}
