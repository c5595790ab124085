package sigv4

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// The example credentials of AWS's SigV4 documentation and test suite.
const (
	exampleAKID   = "AKIDEXAMPLE"
	exampleSecret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
)

// TestSigningKeyVector is the derived-key example of AWS's SigV4
// documentation (IAM, us-east-1, 2012-02-15).
func TestSigningKeyVector(t *testing.T) {
	got := deriveSigningKey(exampleSecret, "20120215", "us-east-1", "iam")
	const want = "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
	if hex.EncodeToString(got[:]) != want {
		t.Fatalf("signing key = %x, want %s", got, want)
	}
}

func exampleVerifier(now time.Time) *Verifier {
	return &Verifier{
		Region: "us-east-1", Service: "service",
		Lookup: staticLookup(exampleAKID, exampleSecret, "example"),
		Now:    func() time.Time { return now },
	}
}

// TestGetVanillaVector is "get-vanilla" from AWS's SigV4 test suite.
func TestGetVanillaVector(t *testing.T) {
	now := time.Date(2015, 8, 30, 12, 36, 0, 0, time.UTC)
	const sig = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
	for _, c := range []struct {
		name, signature string
		want            error
	}{
		{"as published", sig, nil},
		{"last digit changed", sig[:63] + "0", ErrSignatureMismatch},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "http://example.amazonaws.com/", nil)
			r.Header.Set("X-Amz-Date", "20150830T123600Z")
			r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature="+c.signature)
			res, err := exampleVerifier(now).Verify(r, nil)
			checkOutcome(t, outcome{res: res, err: err}, c.want)
		})
	}
}

// TestDateHeaderInsteadOfXAmzDate checks a request dated by the HTTP Date
// header (no X-Amz-Date) against a canonical request and string to sign
// written out by hand and a signature computed with crypto/hmac.
func TestDateHeaderInsteadOfXAmzDate(t *testing.T) {
	now := time.Date(2015, 8, 30, 12, 36, 0, 0, time.UTC)
	const canonical = "GET\n/\n\n" +
		"date:Sun, 30 Aug 2015 12:36:00 GMT\n" +
		"host:example.amazonaws.com\n" +
		"\n" +
		"date;host\n" +
		"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	sum := sha256.Sum256([]byte(canonical))
	sts := "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n" + hex.EncodeToString(sum[:])
	sig := expectedSignature(exampleSecret, sts)

	for _, c := range []struct {
		name          string
		date          string
		signedHeaders string
		want          error
	}{
		{"date signed", "Sun, 30 Aug 2015 12:36:00 GMT", "date;host", nil},
		{"date one second later", "Sun, 30 Aug 2015 12:36:01 GMT", "date;host", ErrSignatureMismatch},
		{"date not signed", "Sun, 30 Aug 2015 12:36:00 GMT", "host", ErrMalformedAuthorization},
		{"date not an HTTP date", "2015-08-30T12:36:00Z", "date;host", ErrMalformedAuthorization},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "http://example.amazonaws.com/", nil)
			r.Header.Set("Date", c.date)
			r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders="+c.signedHeaders+", Signature="+sig)
			res, err := exampleVerifier(now).Verify(r, nil)
			checkOutcome(t, outcome{res: res, err: err}, c.want)
			if c.want == nil && !res.Date.Equal(now) {
				t.Fatalf("Result.Date = %v", res.Date)
			}
		})
	}
}

// TestHeaderValuesUsesCanonicalKey checks that the stack-built key is
// textproto's canonical form for every kind of name SignedHeaders allows.
func TestHeaderValuesUsesCanonicalKey(t *testing.T) {
	names := []string{"host", "x-amz-date", "content-md5", "x-amz-meta-a.b_c", "a", "-x", "x-", "x--y", "www-authenticate",
		"x!#$%&'*+.^_`|~9", "9-lives", strings.Repeat("a-", 40)}
	for c := byte(0); c < 128; c++ {
		if isLowerTokenByte(c) {
			names = append(names, "x-"+string(c)+"y", string(c)+"-z")
		}
	}
	for _, name := range names {
		h := http.Header{}
		h.Add(name, "v") // Add canonicalizes as net/http's server does
		if got := headerValues(h, name); len(got) != 1 || got[0] != "v" {
			t.Errorf("headerValues(%q) = %q; canonical key %q", name, got, textproto.CanonicalMIMEHeaderKey(name))
		}
	}
}

func TestAppendTrimmed(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", ""},
		{"a", "a"},
		{"  a  ", "a"},
		{"a  b", "a b"},
		{"a     b   c", "a b c"},
		{" \t a   b \t ", "a b"},
		{"a\tb", "a\tb"},
		{"a \t b", "a \t b"},
		{"attempt=1; max=3", "attempt=1; max=3"},
	} {
		if got := string(appendTrimmed(nil, c.in)); got != c.want {
			t.Errorf("appendTrimmed(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestCanonicalURI(t *testing.T) {
	for _, c := range []struct{ raw, want string }{
		{"/", "/"},
		{"", "/"},
		{"/a/b", "/a/b"},
		{"/a%20b", "/a%2520b"},               // the wire form is encoded once more
		{"/a%2Fb", "/a%252Fb"},               // an encoded slash stays distinct from '/'
		{"/a/../b/./c//d", "/a/../b/./c//d"}, // no normalization, as aws-sdk-go-v2
		{"/~user/-_.", "/~user/-_."},
		{"/a+b", "/a%2Bb"},
		{"/%C3%BC", "/%25C3%25BC"},
		{"/a:b@c;d=e", "/a%3Ab%40c%3Bd%3De"},
	} {
		u, err := url.Parse("http://h" + c.raw)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(appendCanonicalURI(nil, u)); got != c.want {
			t.Errorf("canonical URI of %q = %q, want %q", c.raw, got, c.want)
		}
	}
}

func TestCanonicalQuery(t *testing.T) {
	for _, c := range []struct{ raw, want string }{
		{"", ""},
		{"a=1", "a=1"},
		{"b=2&a=1", "a=1&b=2"},
		{"a=2&a=1&a=10", "a=1&a=10&a=2"},
		{"a", "a="},
		{"a=", "a="},
		{"a=1&&b=2&", "a=1&b=2"},
		{"q=a+b", "q=a%20b"},
		{"q=a%20b", "q=a%20b"},
		{"q=%7e%2a", "q=~%2A"},
		{"k=v=w", "k=v%3Dw"},
		{"semi=a;b", "semi=a%3Bb"},
		{"%C3%BC=%F0%9F%98%80", "%C3%BC=%F0%9F%98%80"},
		{"B=1&a=1&_=1&~=1&-=1&.=1", "-=1&.=1&B=1&_=1&a=1&~=1"}, // byte order of the encoded names
		{"a%3D=1&a=2", "a=2&a%3D=1"},
	} {
		got, err := appendCanonicalQuery(nil, c.raw)
		if err != nil {
			t.Errorf("%q: %v", c.raw, err)
			continue
		}
		if string(got) != c.want {
			t.Errorf("canonical query of %q = %q, want %q", c.raw, got, c.want)
		}
	}
	for _, bad := range []string{"a=%", "a=%zz", "%g=1"} {
		if _, err := appendCanonicalQuery(nil, bad); err == nil || err.Err != ErrSignatureMismatch {
			t.Errorf("canonical query of %q: err = %v, want a refusal", bad, err)
		}
	}
}

// TestServerHeaderHandling pins down what net/http's server does with the
// headers the verifier relies on, over HTTP/1.1 and HTTP/2: Host moves to
// r.Host with its port, Content-Length stays in r.Header, and a chunked
// body has neither Content-Length nor Transfer-Encoding in r.Header but
// r.TransferEncoding = ["chunked"] over HTTP/1.1.
func TestServerHeaderHandling(t *testing.T) {
	type seen struct {
		host          string
		header        http.Header
		contentLength int64
		te            []string
		proto         int
	}
	for _, mode := range []string{"http", "h2"} {
		t.Run(mode, func(t *testing.T) {
			got := make(chan seen, 1)
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				got <- seen{r.Host, r.Header.Clone(), r.ContentLength, r.TransferEncoding, r.ProtoMajor}
			}))
			if mode == "h2" {
				srv.EnableHTTP2 = true
				srv.StartTLS()
			} else {
				srv.Start()
			}
			defer srv.Close()
			hostport := strings.TrimPrefix(strings.TrimPrefix(srv.URL, "http://"), "https://")

			send := func(chunked bool) seen {
				req, _ := http.NewRequest(http.MethodPost, srv.URL+"/", strings.NewReader("hello"))
				if chunked {
					sendChunked(req)
				}
				resp, err := srv.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				return <-got
			}

			s := send(false)
			if s.host != hostport || s.header.Get("Host") != "" {
				t.Errorf("r.Host = %q (header Host %q), want %q", s.host, s.header.Get("Host"), hostport)
			}
			if s.header.Get("Content-Length") != "5" || s.contentLength != 5 {
				t.Errorf("Content-Length header %q, r.ContentLength %d", s.header.Get("Content-Length"), s.contentLength)
			}

			s = send(true)
			if s.header.Get("Content-Length") != "" || s.header.Get("Transfer-Encoding") != "" || s.contentLength != -1 {
				t.Errorf("chunked: header %v, r.ContentLength %d", s.header, s.contentLength)
			}
			wantTE := map[int]string{1: "chunked", 2: ""}[s.proto]
			if strings.Join(s.te, ",") != wantTE {
				t.Errorf("r.TransferEncoding = %q over HTTP/%d", s.te, s.proto)
			}
			if mode == "http" {
				// A client that signed transfer-encoding gets it back from r.TransferEncoding.
				r := &http.Request{Header: s.header, TransferEncoding: s.te}
				if b, ok := appendHeaderValue(nil, r, "transfer-encoding"); !ok || string(b) != "chunked" {
					t.Errorf("transfer-encoding canonical value = %q, %v", b, ok)
				}
			}
		})
	}
}

// TestSDKSignedVariety signs requests of many shapes (paths, queries,
// header values, methods) with aws-sdk-go-v2's signer, sends them through
// real HTTP/1.1 and HTTP/2 servers and verifies them; each is followed by
// its twin with one signature digit changed.
func TestSDKSignedVariety(t *testing.T) {
	type shape struct {
		method, path, rawPath, query string
		headers                      [][2]string
		body                         string
	}
	shapes := []shape{
		{method: "POST", path: "/"},
		{method: "GET", path: "/", body: ""},
		{method: "PUT", path: "/keys/alias name/x"},
		{method: "POST", path: "/ü/€/😀"},
		{method: "POST", path: "/a/b", rawPath: "/a%2Fb"},
		{method: "POST", path: "/a'b(c)*!", query: "x=1"},
		{method: "POST", path: "/a/./b/../c//d"},
		{method: "GET", path: "/", query: "b=2&a=1&a=0&A=3"},
		{method: "GET", path: "/", query: "q=a+b&r=a%20b&s=%2B&t=~&u=%E2%82%AC"},
		{method: "GET", path: "/", query: "empty=&flag&x=%3D%26"},
		{method: "POST", path: "/", headers: [][2]string{{"X-Custom", "a    b"}, {"X-Custom", " c "}, {"X-Other", "q\"u,o;t=e"}}},
		{method: "POST", path: "/", headers: [][2]string{{"X-Amz-Meta-Under_Score", "x"}, {"X-Empty", ""}}},
		{method: "POST", path: "/", headers: [][2]string{{"X-Utf8", "grüße – 😀"}, {"Content-Encoding", "identity"}}},
		{method: "POST", path: "/", headers: [][2]string{{"X-Amz-Content-Sha256", "auto"}}, body: "payload"},
		{method: "DELETE", path: "/k", body: strings.Repeat("x", 70000)},
	}
	for _, mode := range []string{"http", "h2"} {
		for i, s := range shapes {
			for _, twin := range []bool{false, true} {
				name := fmt.Sprintf("%s/%d-%s%s?%s", mode, i, s.method, s.path, s.query)
				if twin {
					name += "/signature digit changed"
				}
				t.Run(name, func(t *testing.T) {
					v := newTestVerifier()
					v.Now = nil // the real clock
					srv := startVerifyServer(t, v, mode)
					var body io.Reader
					if s.body != "" {
						body = strings.NewReader(s.body)
					}
					req, err := http.NewRequest(s.method, srv.URL, body)
					if err != nil {
						t.Fatal(err)
					}
					req.URL.Path, req.URL.RawPath, req.URL.RawQuery = s.path, s.rawPath, s.query
					for _, h := range s.headers {
						if h[0] == "X-Amz-Content-Sha256" && h[1] == "auto" {
							h[1] = hexSHA([]byte(s.body))
						}
						req.Header.Add(h[0], h[1])
					}
					if err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: testAKID, SecretAccessKey: testSecret},
						req, hexSHA([]byte(s.body)), testService, testRegion, time.Now()); err != nil {
						t.Fatal(err)
					}
					want := error(nil)
					if twin {
						editAuthorization(req, func(h string) string {
							last := h[len(h)-1]
							return h[:len(h)-1] + map[bool]string{true: "1", false: "0"}[last == '0']
						})
						want = ErrSignatureMismatch
					}
					o := srv.do(t, req)
					if want == nil {
						checkIdentity(t, o)
					} else {
						checkOutcome(t, o, want)
					}
				})
			}
		}
	}
}
