package pki

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"strings"
	"testing"
)

func TestValidPrincipalName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"alice", true},
		{"a", true},
		{"Alice.Smith@example.com", true},
		{"svc_backup-01", true},
		{"a+b=c,d", true},
		{strings.Repeat("p", 64), true},
		{"", false},
		{strings.Repeat("p", 65), false},
		{"alice smith", false},
		{"alice:admin", false},
		{"urn:hsmgate:principal:alice", false},
		{"a/b", false},
		{"a%41", false},
		{"a?b", false},
		{"a#b", false},
		{"al\u00efce", false},
		{"alice\n", false},
		{"alice\x00", false},
		{"*", false},
	}
	for _, tt := range tests {
		if err := ValidPrincipalName(tt.name); (err == nil) != tt.ok {
			t.Errorf("ValidPrincipalName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestPrincipalURI(t *testing.T) {
	for _, name := range []string{"alice", "Alice.Smith@example.com", "a+b=c,d_e-f"} {
		u := PrincipalURI(name)
		want := "urn:hsmgate:principal:" + name
		if u.String() != want {
			t.Errorf("PrincipalURI(%q) = %q, want %q", name, u, want)
		}
		// What a certificate parser will see.
		parsed, err := url.Parse(u.String())
		if err != nil || parsed.Scheme != "urn" || parsed.Opaque != "hsmgate:principal:"+name {
			t.Errorf("url.Parse(%q) = %#v, %v", u, parsed, err)
		}
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestPrincipalFromCert(t *testing.T) {
	cn := func(names ...string) pkix.Name {
		var n pkix.Name
		for _, s := range names {
			n.ExtraNames = append(n.ExtraNames, pkix.AttributeTypeAndValue{Type: oidCommonName, Value: s})
		}
		return n
	}
	tests := []struct {
		name    string
		subject pkix.Name
		uris    []string
		want    string // "" for an error
	}{
		{"URI", cn("alice"), []string{"urn:hsmgate:principal:alice"}, "alice"},
		{"URI without CN", cn(), []string{"urn:hsmgate:principal:alice"}, "alice"},
		{"URI wins over CN", cn("mallory"), []string{"urn:hsmgate:principal:alice"}, "alice"},
		{"URI among others", cn("mallory"), []string{"spiffe://example.test/x", "urn:hsmgate:principal:alice", "urn:other:bob"}, "alice"},
		{"URI with other spelling", cn("mallory"), []string{"URN:HSMGATE:Principal:alice"}, "alice"},
		{"CN fallback", cn("bob"), nil, "bob"},
		{"CN fallback with other URIs", cn("bob"), []string{"spiffe://example.test/bob", "urn:hsmgate:role:admin"}, "bob"},
		{"two URIs", cn("alice"), []string{"urn:hsmgate:principal:alice", "urn:hsmgate:principal:bob"}, ""},
		{"two equal URIs", cn("alice"), []string{"urn:hsmgate:principal:alice", "urn:hsmgate:principal:alice"}, ""},
		{"two URIs, other spelling", cn("alice"), []string{"urn:hsmgate:principal:alice", "urn:HSMGATE:principal:bob"}, ""},
		{"URI with empty name", cn("alice"), []string{"urn:hsmgate:principal:"}, ""},
		{"URI with bad name", cn("alice"), []string{"urn:hsmgate:principal:alice:admin"}, ""},
		{"URI with escape", cn("alice"), []string{"urn:hsmgate:principal:al%69ce"}, ""},
		{"URI with query", cn("alice"), []string{"urn:hsmgate:principal:alice?admin"}, ""},
		{"URI with fragment", cn("alice"), []string{"urn:hsmgate:principal:alice#admin"}, ""},
		{"URI with long name", cn("alice"), []string{"urn:hsmgate:principal:" + strings.Repeat("a", 65)}, ""},
		{"no URI, no CN", cn(), nil, ""},
		{"no URI, bad CN", cn("alice smith"), nil, ""},
		{"no URI, two CNs", cn("alice", "mallory"), nil, ""},
		{"no URI, CN too long", cn(strings.Repeat("a", 65)), nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmpl := &x509.Certificate{Subject: tt.subject, NotBefore: testNow, NotAfter: testNow.Add(leafValidity)}
			for _, s := range tt.uris {
				tmpl.URIs = append(tmpl.URIs, mustURL(t, s))
			}
			got, err := PrincipalFromCert(selfSigned(t, tmpl))
			if tt.want == "" {
				if err == nil {
					t.Errorf("PrincipalFromCert = %q, want an error", got)
				}
				t.Log(err)
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("PrincipalFromCert = %q, %v, want %q", got, err, tt.want)
			}
		})
	}
	if _, err := PrincipalFromCert(nil); err == nil {
		t.Error("PrincipalFromCert(nil): no error")
	}
}

// TestPrincipalRoundTrip issues a certificate for every kind of character
// a name may hold and reads the name back.
func TestPrincipalRoundTrip(t *testing.T) {
	ca, caSigner := testCA(t, "CA")
	for _, name := range []string{"alice", "Z", "a+b=c,d.e@f_g-h", strings.Repeat("9", 64)} {
		c, err := IssueClient(ca, caSigner, newECKey(t).Public(), name, leafValidity, testNow)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := PrincipalFromCert(c); err != nil || got != name {
			t.Errorf("PrincipalFromCert = %q, %v, want %q", got, err, name)
		}
	}
}
