package keystore

import (
	"errors"
	"path/filepath"
	"testing"
)

// TestSetMetaConditional: a SetMeta with IfSHA256 writes only over the
// value it names; otherwise it fails with ErrConflict (a refusal, the same
// on every node) and changes nothing.
func TestSetMetaConditional(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "keystore.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	absent := MetaSHA256(nil)
	if err := s.Apply(&SetMeta{Name: "m", Value: []byte("one"), IfSHA256: absent[:]}); err != nil {
		t.Fatalf("create over nothing: %v", err)
	}
	if err := s.Apply(&SetMeta{Name: "m", Value: []byte("other"), IfSHA256: absent[:]}); !errors.Is(err, ErrConflict) || !Refused(err) {
		t.Fatalf("second create = %v, want a refused ErrConflict", err)
	}
	one := MetaSHA256([]byte("one"))
	if err := s.Apply(&SetMeta{Name: "m", Value: []byte("two"), IfSHA256: one[:]}); err != nil {
		t.Fatalf("update over what was read: %v", err)
	}
	// A writer that read "one" before that update loses.
	if err := s.Apply(&SetMeta{Name: "m", Value: []byte("three"), IfSHA256: one[:]}); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale update = %v, want ErrConflict", err)
	}
	if v, _ := s.Meta("m"); string(v) != "two" {
		t.Fatalf("value %q after a refused write, want two", v)
	}
	// Without IfSHA256 the write is unconditional, as before.
	if err := s.Apply(&SetMeta{Name: "m", Value: []byte("four")}); err != nil {
		t.Fatal(err)
	}
	// The condition survives encoding (it travels in the raft log).
	raw, err := Encode(&SetMeta{Name: "m", Value: []byte("five"), IfSHA256: one[:]})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ApplyBytes(raw); !errors.Is(err, ErrConflict) {
		t.Fatalf("encoded stale update = %v, want ErrConflict", err)
	}
}
