package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
	"testing"
)

// testChainPEM returns a leaf and its CA, and their PEM encodings.
func testChainPEM(t testing.TB) (leaf, ca *x509.Certificate, leafPEM, caPEM string) {
	t.Helper()
	ca, caSigner := testCA(t, "CA")
	leaf, err := IssueServer(ca, caSigner, newECKey(t).Public(), []string{"gw.example.test"}, leafValidity, testNow)
	if err != nil {
		t.Fatal(err)
	}
	return leaf, ca, string(EncodeCertPEM(leaf)), string(EncodeCertPEM(ca))
}

func TestCertPEMRoundTrip(t *testing.T) {
	leaf, ca, leafPEM, caPEM := testChainPEM(t)
	if got := string(EncodeCertPEM(leaf, ca)); got != leafPEM+caPEM {
		t.Errorf("EncodeCertPEM(leaf, ca) is not the two encodings in order")
	}
	if len(EncodeCertPEM()) != 0 {
		t.Error("EncodeCertPEM() is not empty")
	}
	crlf := strings.ReplaceAll(leafPEM+caPEM, "\n", "\r\n")
	tests := []struct {
		name string
		in   string
		want []*x509.Certificate
	}{
		{"one", leafPEM, []*x509.Certificate{leaf}},
		{"chain", leafPEM + caPEM, []*x509.Certificate{leaf, ca}},
		{"reverse order", caPEM + leafPEM, []*x509.Certificate{ca, leaf}},
		{"white space around and between", "\n \t\n" + leafPEM + "\n\n" + caPEM + "\n  \n", []*x509.Certificate{leaf, ca}},
		{"CRLF", crlf, []*x509.Certificate{leaf, ca}},
		{"no final newline", strings.TrimSuffix(leafPEM, "\n"), []*x509.Certificate{leaf}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCertsPEM([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d certificates, want %d", len(got), len(tt.want))
			}
			for i := range got {
				if !got[i].Equal(tt.want[i]) {
					t.Errorf("certificate %d differs", i)
				}
			}
		})
	}
}

func TestParseCertsPEMRefuses(t *testing.T) {
	_, _, leafPEM, caPEM := testChainPEM(t)
	key, err := EncodePrivateKeyPEM(newECKey(t))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := string(key)
	lines := strings.Split(strings.TrimSuffix(leafPEM, "\n"), "\n")
	body := strings.Join(lines[1:len(lines)-1], "\n")
	withHeader := lines[0] + "\nComment: hello\n\n" + body + "\n" + lines[len(lines)-1] + "\n"
	after := fmt.Sprintf("line %d: ", strings.Count(leafPEM, "\n")+1) // the line after leafPEM
	notDER := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER")}))
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{"empty", "", "no PEM CERTIFICATE block"},
		{"white space only", " \n\t\r\n", "no PEM CERTIFICATE block"},
		{"text", "hello\n", "line 1: unexpected data"},
		{"DER", string(mustParse(t, leafPEM)[0].Raw), "line 1: unexpected data"},
		{"text before", "subject=CN = gw\n" + leafPEM, "line 1: unexpected data"},
		{"text between", leafPEM + "# the CA\n" + caPEM, after + "unexpected data"},
		{"trailing garbage", leafPEM + caPEM + "garbage", "unexpected data"},
		{"trailing NUL", leafPEM + "\x00", after + "unexpected data"},
		{"truncated", leafPEM + caPEM[:len(caPEM)/2], after + "PEM block has no END line"},
		{"END line only", "-----END CERTIFICATE-----\n", "unexpected data"},
		{"bad base64", strings.Replace(leafPEM, lines[2], "!!!!"+lines[2][4:], 1), "line 1: malformed PEM block"},
		{"bad END type", strings.Replace(leafPEM, "END CERTIFICATE", "END PRIVATE KEY", 1), "malformed PEM block"},
		{"garbage after END", strings.Replace(leafPEM, "END CERTIFICATE-----", "END CERTIFICATE-----x", 1), "malformed PEM block"},
		{"BEGIN inside a block", "-----BEGIN X-----\n" + leafPEM, "second BEGIN"},
		{"key", keyPEM, `line 1: "PRIVATE KEY" block`},
		{"certificate and key", leafPEM + keyPEM, after + `"PRIVATE KEY" block`},
		{"trusted certificate", strings.ReplaceAll(leafPEM, "CERTIFICATE", "TRUSTED CERTIFICATE"), `"TRUSTED CERTIFICATE" block`},
		{"headers", withHeader, "PEM headers"},
		{"not DER", leafPEM + notDER, after + "x509:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certs, err := ParseCertsPEM([]byte(tt.in))
			if certs != nil {
				t.Errorf("got %d certificates with the error", len(certs))
			}
			checkErr(t, err, tt.wantErr)
		})
	}
}

func mustParse(t testing.TB, s string) []*x509.Certificate {
	t.Helper()
	certs, err := ParseCertsPEM([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return certs
}

func TestPrivateKeyPEMRoundTrip(t *testing.T) {
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		key  crypto.Signer
	}{
		{"ECDSA", newECKey(t)},
		{"RSA", rsaKey(t, 2)},
		{"Ed25519", edKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := EncodePrivateKeyPEM(tt.key)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(data, []byte("-----BEGIN PRIVATE KEY-----\n")) {
				t.Errorf("not a PKCS #8 block:\n%s", data)
			}
			got, err := ParsePrivateKeyPEM(data)
			if err != nil {
				t.Fatal(err)
			}
			if !got.(interface{ Equal(crypto.PrivateKey) bool }).Equal(tt.key) {
				t.Error("parsed key differs")
			}
		})
	}
}

func TestEncodePrivateKeyPEMRefusesHSMKey(t *testing.T) {
	_, err := EncodePrivateKeyPEM(&hsmSigner{key: newECKey(t)})
	checkErr(t, err, "cannot be exported")
	_, err = EncodePrivateKeyPEM(nil)
	checkErr(t, err, "cannot encode")
}

func TestParsePrivateKeyPEM(t *testing.T) {
	ec := newECKey(t)
	sec1, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	rsaK := rsaKey(t, 2)
	x25519, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	x25519DER, err := x509.MarshalPKCS8PrivateKey(x25519)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := EncodePrivateKeyPEM(ec)
	if err != nil {
		t.Fatal(err)
	}
	enc := func(typ string, der []byte, headers map[string]string) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: typ, Headers: headers, Bytes: der}))
	}
	_, _, certPEM, _ := testChainPEM(t)
	tests := []struct {
		name    string
		in      string
		want    crypto.PublicKey // nil when an error is expected
		wantErr string
	}{
		{"PKCS #8", string(pkcs8), ec.Public(), ""},
		{"PKCS #8 in white space", "\n\n" + string(pkcs8) + "\n", ec.Public(), ""},
		{"SEC 1", enc("EC PRIVATE KEY", sec1, nil), ec.Public(), ""},
		{"PKCS #1", enc("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaK), nil), rsaK.Public(), ""},
		{"empty", "", nil, "found 0 PEM blocks"},
		{"two keys", string(pkcs8) + string(pkcs8), nil, "found 2 PEM blocks"},
		{"certificate", certPEM, nil, `"CERTIFICATE" block`},
		{"key and certificate", string(pkcs8) + certPEM, nil, "found 2 PEM blocks"},
		{"trailing garbage", string(pkcs8) + "x", nil, "unexpected data"},
		{"EC parameters first", enc("EC PARAMETERS", []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}, nil) + enc("EC PRIVATE KEY", sec1, nil), nil, "found 2 PEM blocks"},
		{"encrypted PKCS #8", enc("ENCRYPTED PRIVATE KEY", []byte{0x30, 0}, nil), nil, "encrypted"},
		{"encrypted legacy", enc("EC PRIVATE KEY", sec1, map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00"}), nil, "encrypted"},
		{"headers", enc("PRIVATE KEY", []byte{0x30, 0}, map[string]string{"Comment": "x"}), nil, "PEM headers"},
		{"wrong DER for type", enc("RSA PRIVATE KEY", sec1, nil), nil, "RSA PRIVATE KEY block"},
		{"not DER", enc("PRIVATE KEY", []byte("secret"), nil), nil, "PRIVATE KEY block"},
		{"X25519 cannot sign", enc("PRIVATE KEY", x25519DER, nil), nil, "cannot sign"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePrivateKeyPEM([]byte(tt.in))
			checkErr(t, err, tt.wantErr)
			if err != nil {
				if got != nil {
					t.Error("key returned with the error")
				}
				if strings.Contains(err.Error(), "secret") {
					t.Errorf("error %q shows key bytes", err)
				}
				return
			}
			if !got.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(tt.want) {
				t.Error("parsed key differs")
			}
		})
	}
}
