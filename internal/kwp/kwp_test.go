package kwp

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
)

func unhex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// RFC 5649 §6 test vectors.
func TestRFC5649Vectors(t *testing.T) {
	kek := unhex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8")
	for _, v := range []struct{ key, wrapped string }{
		{"c37b7e6492584340bed12207808941155068f738", "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a"},
		{"466f7250617369", "afbeb0f07dfbf5419200f2ccb50bb24f"},
	} {
		got, err := Wrap(kek, unhex(v.key))
		if err != nil {
			t.Fatal(err)
		}
		if hex.EncodeToString(got) != v.wrapped {
			t.Errorf("Wrap(%s) = %x, want %s", v.key, got, v.wrapped)
		}
		back, err := Unwrap(kek, got)
		if err != nil || !bytes.Equal(back, unhex(v.key)) {
			t.Errorf("Unwrap = %x, %v; want %s", back, err, v.key)
		}
	}
}

func TestRoundTripAndRefusals(t *testing.T) {
	kek := bytes.Repeat([]byte{7}, 32)
	for n := 1; n <= 70; n++ {
		p := bytes.Repeat([]byte{byte(n)}, n)
		w, err := Wrap(kek, p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Unwrap(kek, w)
		if err != nil || !bytes.Equal(got, p) {
			t.Fatalf("%d bytes: round trip gave %x, %v", n, got, err)
		}
		for i := range w {
			bad := bytes.Clone(w)
			bad[i] ^= 0x01
			if _, err := Unwrap(kek, bad); !errors.Is(err, ErrUnwrap) {
				t.Fatalf("%d bytes, byte %d flipped: %v, want ErrUnwrap", n, i, err)
			}
		}
		if _, err := Unwrap(bytes.Repeat([]byte{8}, 32), w); !errors.Is(err, ErrUnwrap) {
			t.Fatalf("%d bytes under another key: %v", n, err)
		}
		if len(w) > 16 {
			if _, err := Unwrap(kek, w[:len(w)-8]); !errors.Is(err, ErrUnwrap) {
				t.Fatalf("%d bytes truncated: %v", n, err)
			}
		}
	}
	for _, bad := range [][]byte{nil, make([]byte, 8), make([]byte, 17), make([]byte, 23)} {
		if _, err := Unwrap(kek, bad); !errors.Is(err, ErrUnwrap) {
			t.Errorf("Unwrap(%d bytes) = %v", len(bad), err)
		}
	}
	if _, err := Wrap(kek, nil); err == nil {
		t.Error("Wrap of nothing succeeded")
	}
	if _, err := Wrap(kek[:5], []byte{1}); err == nil {
		t.Error("Wrap with a 5-byte key succeeded")
	}
}

func FuzzUnwrap(f *testing.F) {
	kek := bytes.Repeat([]byte{9}, 32)
	w, _ := Wrap(kek, []byte("a 32-byte key for the fuzz seed!"))
	f.Add(w)
	f.Add(make([]byte, 16))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Unwrap(kek, data)
		if err != nil {
			return
		}
		again, err := Wrap(kek, p)
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("Unwrap accepted %x but it does not re-wrap to itself", data)
		}
	})
}
