package xks

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// FuzzRequest feeds arbitrary bodies to the request decoder of each
// operation: it must never panic, must answer a specification error name
// with its status, and what it accepts must respect every limit. Seeds are
// in testdata/fuzz/FuzzRequest.
func FuzzRequest(f *testing.F) {
	f.Add(OpEncrypt, []byte(`{"requestMetadata":{"awsPrincipalArn":"a","kmsKeyArn":"k","kmsOperation":"Encrypt","kmsRequestId":"r"},"plaintext":"SGVsbG8=","encryptionAlgorithm":"AES_GCM"}`))
	f.Add(OpGetHealthStatus, []byte(`{"requestMetadata":{"kmsOperation":"KmsHealthCheck","kmsRequestId":"r"}}`))
	f.Fuzz(func(t *testing.T, op string, body []byte) {
		switch op {
		case OpGetKeyMetadata, OpEncrypt, OpDecrypt, OpGetHealthStatus:
		default:
			op = OpDecrypt
		}
		req, e := decodeRequest(op, body)
		if req == nil {
			t.Fatal("decodeRequest returned no request")
		}
		if e != nil {
			if st, ok := Statuses[e.Name]; !ok || st != e.Status {
				t.Fatalf("error %q with status %d", e.Name, e.Status)
			}
			var out struct{ ErrorName, ErrorMessage string }
			if err := json.Unmarshal(errorBody(e), &out); err != nil || out.ErrorName != e.Name || len(out.ErrorMessage) > maxMessage {
				t.Fatalf("error body %s: %v", errorBody(e), err)
			}
			return
		}
		md := &req.Metadata
		for _, name := range required[op] {
			if md.Map()[name] == "" {
				t.Fatalf("accepted without requestMetadata.%s", name)
			}
		}
		if len(md.Extra) > MaxExtraMetadata {
			t.Fatalf("%d extra metadata fields", len(md.Extra))
		}
		for k, v := range md.Map() {
			if len(v) > MaxMetadataValue || len(k) > maxExtraMetadataKey {
				t.Fatalf("metadata %q of %d bytes", k, len(v))
			}
		}
		switch op {
		case OpEncrypt:
			if len(req.Plaintext) == 0 || len(req.Plaintext) > MaxPlaintext || len(req.AAD) > MaxAAD {
				t.Fatalf("accepted plaintext %d, AAD %d", len(req.Plaintext), len(req.AAD))
			}
		case OpDecrypt:
			if len(req.Ciphertext) == 0 || len(req.Ciphertext) > MaxCiphertext || len(req.AAD) > MaxAAD ||
				len(req.CiphertextMetadata) > MaxCiphertextMetadata || req.IV == nil || req.Tag == nil {
				t.Fatalf("accepted ciphertext %d, AAD %d, metadata %d, IV %v, tag %v",
					len(req.Ciphertext), len(req.AAD), len(req.CiphertextMetadata), req.IV != nil, req.Tag != nil)
			}
			if n := len(hsmAAD(req.AAD, req.CiphertextMetadata)); n != 3+len(req.AAD)+len(req.CiphertextMetadata) {
				t.Fatalf("AAD layout of %d bytes", n)
			}
		}
		// What was accepted survives a re-encoding.
		again, e := decodeRequest(op, reencode(req))
		if e != nil {
			t.Fatalf("re-encoded request refused: %v", e)
		}
		if again.Metadata.Map()["kmsRequestId"] != md.KMSRequestID || string(again.Plaintext) != string(req.Plaintext) ||
			string(again.Ciphertext) != string(req.Ciphertext) || string(again.AAD) != string(req.AAD) {
			t.Fatal("re-encoded request decodes differently")
		}
	})
}

func reencode(r *request) []byte {
	m := map[string]any{"requestMetadata": r.Metadata.Map(), "encryptionAlgorithm": encryptionAlgorithmAESGCM}
	put := func(name string, b []byte, present bool) {
		if present {
			m[name] = b64.EncodeToString(b)
		}
	}
	put("plaintext", r.Plaintext, r.Plaintext != nil)
	put("additionalAuthenticatedData", r.AAD, r.AAD != nil)
	put("ciphertext", r.Ciphertext, r.Ciphertext != nil)
	put("ciphertextMetadata", r.CiphertextMetadata, r.HasCiphertextMetadata)
	put("initializationVector", r.IV, r.IV != nil)
	put("authenticationTag", r.Tag, r.Tag != nil)
	if r.CDIV {
		m["ciphertextDataIntegrityValueAlgorithm"] = cdivAlgorithmSHA256
	}
	b, _ := json.Marshal(m)
	return b
}

// The routes, without a server.
func TestRoute(t *testing.T) {
	h := &Handler{}
	h.byPrefix = map[string]*store{"": {Store: &Store{Name: "root"}}, "/p": {Store: &Store{Name: "p"}}}
	type want struct{ store, op, id string }
	for path, w := range map[string]want{
		"/kms/xks/v1/health":                  {"root", OpGetHealthStatus, ""},
		"/p/kms/xks/v1/health":                {"p", OpGetHealthStatus, ""},
		"/p/kms/xks/v1/keys/a.b_c-d/metadata": {"p", OpGetKeyMetadata, "a.b_c-d"},
		"/p/kms/xks/v1/keys/k/encrypt":        {"p", OpEncrypt, "k"},
		"/p/kms/xks/v1/keys/k/decrypt":        {"p", OpDecrypt, "k"},
		"/p/kms/xks/v1/keys//decrypt":         {"p", OpDecrypt, ""}, // ValidationException later
		"/q/kms/xks/v1/health":                {},
		"/p/kms/xks/v1/keys/k/encrypt/":       {},
		"/p/kms/xks/v1/keys/k%2Fx/encrypt":    {},
		"/p/kms/xks/v1/keys/k/x/encrypt":      {},
		"/p/kms/xks/v1/key/k/encrypt":         {},
		"/p/kms/xks/v1/health/":               {},
		"/p/kms/xks/v1":                       {},
		"":                                    {},
	} {
		rt, e := h.route(path)
		var got want
		if e == nil {
			got = want{rt.st.Name, rt.op, rt.keyID}
		} else if e.Name != ErrNameInvalidURIPath || e.Status != http.StatusNotFound {
			t.Errorf("route(%q) error %v", path, e)
		}
		if got != w {
			t.Errorf("route(%q) = %+v, want %+v", path, got, w)
		}
	}
}

func TestTokenBucket(t *testing.T) {
	t0 := time.Unix(1000, 0)
	b := newTokenBucket(2, 3, t0)
	for i := 0; i < 3; i++ {
		if !b.take(t0) {
			t.Fatalf("burst refused at %d", i)
		}
	}
	if b.take(t0) {
		t.Fatal("past the burst")
	}
	if !b.take(t0.Add(500*time.Millisecond)) || b.take(t0.Add(500*time.Millisecond)) {
		t.Fatal("refill of 2 a second")
	}
	if b.take(t0) {
		t.Fatal("a clock going backwards refilled")
	}
	// Burst 0 means max(1, rate).
	if b := newTokenBucket(0.5, 0, t0); !b.take(t0) || b.take(t0) {
		t.Fatal("default burst")
	}
}

func TestPrintableASCII(t *testing.T) {
	if got := printableASCII("a\x00b\xffc\n", 100); got != "a?b?c?" {
		t.Errorf("printableASCII = %q", got)
	}
	if got := printableASCII(strings.Repeat("x", 600), maxMessage); len(got) != maxMessage {
		t.Errorf("cut to %d", len(got))
	}
}
