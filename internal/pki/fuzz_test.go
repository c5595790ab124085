package pki

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzParseCertsPEM checks that ParseCertsPEM never panics, returns either
// certificates or an error, and that what it accepts survives a round trip
// through EncodeCertPEM. Seeds beyond those added here are in
// testdata/fuzz/FuzzParseCertsPEM.
func FuzzParseCertsPEM(f *testing.F) {
	_, _, leafPEM, caPEM := testChainPEM(f)
	for _, s := range []string{
		leafPEM,
		leafPEM + caPEM,
		"\r\n" + strings.ReplaceAll(leafPEM, "\n", "\r\n"),
		leafPEM + "garbage",
		leafPEM[:len(leafPEM)/2],
		"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
		"-----BEGIN X-----\n" + leafPEM,
		"-----END CERTIFICATE-----\n" + leafPEM,
		"-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := ParseCertsPEM(data)
		if err != nil {
			if certs != nil {
				t.Fatalf("certificates returned with error %v", err)
			}
			return
		}
		if len(certs) == 0 {
			t.Fatal("no certificates and no error")
		}
		again, err := ParseCertsPEM(EncodeCertPEM(certs...))
		if err != nil {
			t.Fatalf("re-encoded certificates do not parse: %v", err)
		}
		if len(again) != len(certs) {
			t.Fatalf("round trip: %d certificates, then %d", len(certs), len(again))
		}
		for i := range certs {
			if !bytes.Equal(again[i].Raw, certs[i].Raw) {
				t.Fatalf("round trip changed certificate %d", i)
			}
		}
	})
}
