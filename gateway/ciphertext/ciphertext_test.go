package ciphertext

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json")

// vector is one test vector: a software AES-256-GCM key standing in for the
// HSM-held key version, and the blob the format yields.
type vector struct {
	Name       string            `json:"name"`
	Key        string            `json:"key_hex"`
	KeyID      string            `json:"key_id_hex"`
	KeyVersion uint32            `json:"key_version"`
	IV         string            `json:"iv_hex"`
	Plaintext  string            `json:"plaintext_hex"`
	Context    map[string]string `json:"encryption_context"`
	AAD        string            `json:"aad_hex"`
	Blob       string            `json:"ciphertext_blob_hex"`
}

func seal(t *testing.T, v *vector) []byte {
	t.Helper()
	key, _ := hex.DecodeString(v.Key)
	id, _ := hex.DecodeString(v.KeyID)
	iv, _ := hex.DecodeString(v.IV)
	pt, _ := hex.DecodeString(v.Plaintext)
	b := &Blob{KeyVersion: v.KeyVersion}
	copy(b.KeyID[:], id)
	copy(b.IV[:], iv)
	block, _ := aes.NewCipher(key)
	gcm, _ := cipher.NewGCM(block)
	aad := b.AAD(v.Context)
	v.AAD = hex.EncodeToString(aad)
	b.Sealed = gcm.Seal(nil, iv, pt, aad)
	return b.Marshal()
}

func TestVectors(t *testing.T) {
	raw, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(raw, &vs); err != nil {
		t.Fatal(err)
	}
	if *update {
		for i := range vs {
			vs[i].Blob = hex.EncodeToString(seal(t, &vs[i]))
		}
		out, _ := json.MarshalIndent(vs, "", "  ")
		if err := os.WriteFile("testdata/vectors.json", append(out, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, v := range vs {
		t.Run(v.Name, func(t *testing.T) {
			want, _ := hex.DecodeString(v.Blob)
			wantAAD := v.AAD
			got := seal(t, &v)
			if !bytes.Equal(got, want) {
				t.Fatalf("blob\n got %x\nwant %x", got, want)
			}
			if v.AAD != wantAAD {
				t.Fatalf("aad\n got %s\nwant %s", v.AAD, wantAAD)
			}
			b, err := Parse(want)
			if err != nil {
				t.Fatal(err)
			}
			key, _ := hex.DecodeString(v.Key)
			block, _ := aes.NewCipher(key)
			gcm, _ := cipher.NewGCM(block)
			pt, err := gcm.Open(nil, b.IV[:], b.Sealed, b.AAD(v.Context))
			if err != nil || hex.EncodeToString(pt) != v.Plaintext {
				t.Fatalf("open: %x %v", pt, err)
			}
			// Negative twins: any changed header byte or context fails.
			for i := 0; i < HeaderLen; i++ {
				c := append([]byte(nil), want...)
				c[i] ^= 0x80
				if b2, err := Parse(c); err == nil {
					if _, err := gcm.Open(nil, b2.IV[:], b2.Sealed, b2.AAD(v.Context)); err == nil {
						t.Fatalf("flipping header byte %d still decrypts", i)
					}
				}
			}
			other := map[string]string{"x": "y"}
			for k, val := range v.Context {
				other = map[string]string{k: val + "!"}
			}
			if _, err := gcm.Open(nil, b.IV[:], b.Sealed, b.AAD(other)); err == nil {
				t.Fatal("another context still decrypts")
			}
		})
	}
}

func TestCanonicalContext(t *testing.T) {
	a := AppendCanonicalContext(nil, map[string]string{"b": "2", "a": "1"})
	b := AppendCanonicalContext(nil, map[string]string{"a": "1", "b": "2"})
	if !bytes.Equal(a, b) {
		t.Fatal("order of insertion changes the encoding")
	}
	want := []byte{0, 2, 0, 1, 'a', 0, 1, '1', 0, 1, 'b', 0, 1, '2'}
	if !bytes.Equal(a, want) {
		t.Fatalf("got %x want %x", a, want)
	}
	if !bytes.Equal(AppendCanonicalContext(nil, nil), []byte{0, 0}) || !bytes.Equal(AppendCanonicalContext(nil, map[string]string{}), []byte{0, 0}) {
		t.Fatal("empty context")
	}
	// Length prefixes keep ("ab","c") and ("a","bc") apart.
	if bytes.Equal(AppendCanonicalContext(nil, map[string]string{"ab": "c"}), AppendCanonicalContext(nil, map[string]string{"a": "bc"})) {
		t.Fatal("ambiguous encoding")
	}
}

func TestValidateContext(t *testing.T) {
	big := map[string]string{}
	for i := 0; i < MaxContextPairs+1; i++ {
		big[string(rune('A'+i%26))+string(rune('a'+i/26))] = "v"
	}
	long := map[string]string{"k": string(make([]byte, MaxContextBytes))}
	for name, c := range map[string]map[string]string{"too many": big, "too long": long, "empty key": {"": "v"}, "bad utf8": {"k": "\xff"}} {
		if err := ValidateContext(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := ValidateContext(map[string]string{"purpose": "test", "ü": "ok"}); err != nil {
		t.Error(err)
	}
}

func TestParseRejects(t *testing.T) {
	good := (&Blob{KeyVersion: 1, Sealed: make([]byte, 20)}).Marshal()
	bad := map[string][]byte{
		"empty":    nil,
		"short":    good[:HeaderLen+TagLen-1],
		"version":  append([]byte{2}, good[1:]...),
		"too long": make([]byte, MaxLen+1),
	}
	for name, b := range bad {
		if _, err := Parse(b); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	raw, _ := os.ReadFile("testdata/vectors.json")
	var vs []vector
	_ = json.Unmarshal(raw, &vs)
	for _, v := range vs {
		b, _ := hex.DecodeString(v.Blob)
		f.Add(b)
	}
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatal(err)
			}
			return
		}
		if !bytes.Equal(b.Marshal(), data) {
			t.Fatal("round trip changed the blob")
		}
	})
}
