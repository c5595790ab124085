package sigv4

import (
	"strings"
	"testing"
)

// FuzzParseAuthorization checks that the parser never panics, that what it
// accepts satisfies its invariants, and that formatting what it accepted
// and parsing again gives the same value (round trip).
func FuzzParseAuthorization(f *testing.F) {
	f.Add(validAuth)
	f.Add("AWS4-HMAC-SHA256 Credential=A/20261127/r/s/aws4_request,SignedHeaders=host,Signature=" + strings.Repeat("0", 64))
	f.Add("AWS4-HMAC-SHA256 Signature=" + validSig + ", Credential=AKIDEXAMPLE/20261127/us-east-1/kms/aws4_request, SignedHeaders=content-type;host;x-amz-date")
	f.Add("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261127/us-east-1/kms/aws4_request, Credential=x, Signature=" + validSig)
	f.Add("AWS4-HMAC-SHA256")
	f.Add("")
	f.Add("Basic YWxhZGRpbjpvcGVuc2VzYW1l")
	f.Fuzz(func(t *testing.T, h string) {
		a, err := parseAuthorization(h)
		if err != nil {
			if a != (authorization{}) {
				t.Fatalf("error %v with a non-zero value %+v", err, a)
			}
			if err.Err != ErrMalformedAuthorization || err.Message == "" {
				t.Fatalf("error %+v", err)
			}
			if strings.ContainsAny(err.Message, "\n\r") {
				t.Fatalf("message carries a line break: %q", err.Message)
			}
			return
		}
		if !strings.HasPrefix(h, algorithm+" ") {
			t.Fatalf("accepted %q without the algorithm", h)
		}
		if !isLowerHex(a.signature, 64) || !isDate(a.date) || a.accessKeyID == "" || a.region == "" || a.service == "" {
			t.Fatalf("accepted invalid fields %+v", a)
		}
		names := a.appendSignedHeaders(nil)
		if len(names) != a.nSigned {
			t.Fatalf("nSigned %d, names %q", a.nSigned, names)
		}
		var flags signedFlags
		for i, n := range names {
			if n == "" || n != strings.ToLower(n) || (i > 0 && names[i-1] >= n) {
				t.Fatalf("signed headers %q not lowercase, sorted and unique", names)
			}
			flags |= map[string]signedFlags{"host": signsHost, "x-amz-date": signsAmzDate, "date": signsDate}[n]
		}
		if flags != a.signed {
			t.Fatalf("flags %b for %q", a.signed, names)
		}
		formatted := a.String()
		b, err := parseAuthorization(formatted)
		if err != nil {
			t.Fatalf("formatted %q does not parse: %v", formatted, err)
		}
		if a != b {
			t.Fatalf("round trip: %+v != %+v", a, b)
		}
		if b.String() != formatted {
			t.Fatalf("format is not stable: %q != %q", b.String(), formatted)
		}
	})
}

// FuzzVerify feeds arbitrary Authorization, X-Amz-Date, path, query and
// body values to Verify: it must not panic, must return exactly one of
// result and error, and must refuse everything that is not the one valid
// request it was seeded with.
func FuzzVerify(f *testing.F) {
	r0, body0 := signedServerRequest(f, defaultSign(cliHeaders))
	f.Add(r0.Header.Get("Authorization"), r0.Header.Get("X-Amz-Date"), "/", "", string(body0))
	f.Add(r0.Header.Get("Authorization"), "20261127T120000Z", "/a%2Fb/../c", "a=1&b=%zz&X-Amz-Signature", "")
	f.Add("AWS4-HMAC-SHA256 Credential=AKIDHSMGATETEST01/20261127/us-east-1/kms/aws4_request, SignedHeaders=date;host, Signature="+validSig,
		"", "/", "q=+", "{}")
	v := newTestVerifier()
	f.Fuzz(func(t *testing.T, authz, amzDate, path, query, body string) {
		r, _ := signedServerRequest(t, defaultSign(cliHeaders))
		r.Header.Set("Authorization", authz)
		if amzDate == "" {
			r.Header.Del("X-Amz-Date")
			r.Header.Set("Date", "Fri, 27 Nov 2026 12:00:00 GMT")
		} else {
			r.Header.Set("X-Amz-Date", amzDate)
		}
		r.URL.Path, r.URL.RawPath, r.URL.RawQuery = path, "", query
		res, err := v.Verify(r, []byte(body))
		if (res == nil) == (err == nil) {
			t.Fatalf("result %v, error %v", res, err)
		}
		if err != nil && ErrorCode(err) == CodeInternalFailure {
			t.Fatalf("internal failure for a client error: %v", err)
		}
		if res != nil && (authz != r0.Header.Get("Authorization") || body != string(body0) || (path != "/" && path != "") || query != "") {
			t.Fatalf("accepted a modified request: %q %q %q %q %q", authz, amzDate, path, query, body)
		}
	})
}
