package quorum

import (
	"bytes"
	"errors"
	"slices"
	"testing"
)

func TestThresholdValidation(t *testing.T) {
	for _, tc := range []struct {
		kind Kind
		t, n int
		ok   bool
	}{
		// Set changes: at least 2 and more than half.
		{KindSetChange, 1, 1, false},
		{KindSetChange, 1, 3, false},
		{KindSetChange, 2, 2, true},
		{KindSetChange, 2, 3, true},
		{KindSetChange, 3, 3, true},
		{KindSetChange, 4, 3, false},
		{KindSetChange, 2, 4, false}, // exactly half
		{KindSetChange, 3, 4, true},
		{KindSetChange, 3, 5, true},
		{KindSetChange, 3, 6, false},
		{KindSetChange, 0, 3, false},
		{KindSetChange, -1, 3, false},
		// Other kinds: between 1 and n.
		{KindKeyExport, 0, 3, false},
		{KindKeyExport, 1, 3, true},
		{KindKeyExport, 3, 3, true},
		{KindKeyExport, 4, 3, false},
		{KindDomainRecovery, 1, 1, true},
		{KindFirmwareActivation, 2, 5, true},
		{KindKeyOperation, -2, 5, false},
	} {
		err := CheckThreshold(tc.kind, tc.t, tc.n)
		if (err == nil) != tc.ok {
			t.Errorf("%s %d of %d: %v, want ok=%v", tc.kind, tc.t, tc.n, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrThreshold) {
			t.Errorf("%s %d of %d: %v, want ErrThreshold", tc.kind, tc.t, tc.n, err)
		}
	}
}

func TestSetValidate(t *testing.T) {
	ks := officers(t, 4)
	good := func() *Set { return newSet(t, 1, ks[:3], 2) }
	if err := good().Validate(); err != nil {
		t.Fatal(err)
	}
	for name, change := range map[string]func(s *Set){
		"epoch 0":           func(s *Set) { s.Epoch = 0 },
		"no officers":       func(s *Set) { s.Officers = nil },
		"duplicate officer": func(s *Set) { s.Officers = append(s.Officers, s.Officers[0]) },
		"missing kind":      func(s *Set) { delete(s.Thresholds, KindKeyExport) },
		"unknown kind":      func(s *Set) { s.Thresholds["format-disk"] = 1 },
		"set change 1":      func(s *Set) { s.Thresholds[KindSetChange] = 1 },
		"export above n":    func(s *Set) { s.Thresholds[KindKeyExport] = 4 },
		"set change half of 4": func(s *Set) {
			s.Officers = append(s.Officers, ks[3].Public())
		},
		"same Ed25519 key, other name": func(s *Set) {
			o := s.Officers[0]
			o.Name = "mallory"
			s.Officers = append(s.Officers, o)
			s.Thresholds[KindSetChange] = 3
		},
	} {
		s := good()
		change(s)
		if err := s.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

func TestSetEncoding(t *testing.T) {
	ks := officers(t, 3)
	s := newSet(t, 7, ks, 2)
	enc, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	// Officer order does not change the encoding.
	r := &Set{Epoch: 7, Officers: slices.Clone(s.Officers), Thresholds: s.Thresholds}
	slices.Reverse(r.Officers)
	if enc2, _ := r.Encode(); !bytes.Equal(enc, enc2) || r.Hash() != s.Hash() {
		t.Fatal("officer order changes the encoding")
	}
	got, err := DecodeSet(enc)
	if err != nil {
		t.Fatal(err)
	}
	if got.Hash() != s.Hash() || got.Epoch != 7 {
		t.Fatal("decoded set differs")
	}
	// An encoding with the officers out of order is refused.
	w := s.canonical()
	slices.Reverse(w.Officers)
	if _, err := DecodeSet(mustMarshal(w)); !errors.Is(err, ErrNonCanonical) {
		t.Errorf("unsorted officers: %v, want ErrNonCanonical", err)
	}
	// The hash changes with any threshold or the epoch.
	s2 := newSet(t, 7, ks, 2)
	s2.Thresholds[KindKeyExport] = 3
	s3 := newSet(t, 8, ks, 2)
	if s2.Hash() == s.Hash() || s3.Hash() == s.Hash() {
		t.Fatal("hash ignores thresholds or epoch")
	}
	if idx := s.Index(ks[0].Fingerprint()); idx < 0 || idx > 2 {
		t.Fatalf("Index = %d", idx)
	}
	t.Log("\n" + s.Render())
}

// A set made before the release-trust kind existed is still valid, and
// release-trust proposals need its firmware-activation threshold.
func TestSetWithoutReleaseTrustThreshold(t *testing.T) {
	ks := officers(t, 3)
	s := newSet(t, 1, ks, 2)
	delete(s.Thresholds, KindReleaseTrust)
	s.Thresholds[KindFirmwareActivation] = 3
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := s.Threshold(KindReleaseTrust); got != 3 {
		t.Fatalf("release-trust threshold %d, want the firmware-activation threshold 3", got)
	}
	s.Thresholds[KindReleaseTrust] = 1
	if got := s.Threshold(KindReleaseTrust); got != 1 {
		t.Fatalf("an explicit release-trust threshold: %d", got)
	}
	delete(s.Thresholds, KindKeyExport)
	if err := s.Validate(); err == nil {
		t.Fatal("a set without a key-export threshold validated")
	}
}
