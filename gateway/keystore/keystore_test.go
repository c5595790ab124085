package keystore

import (
	"errors"
	"path/filepath"
	"testing"
	"time"
)

func newKey(id string) Key {
	return Key{ID: id, CreatedAt: time.Unix(1700000000, 0).UTC(), State: StateEnabled, Spec: "SYMMETRIC_DEFAULT",
		Usage: "ENCRYPT_DECRYPT", Origin: "AWS_KMS", Owner: "admin",
		Versions: []Version{{Number: 1, CreatedAt: time.Unix(1700000000, 0).UTC(), Blob: []byte("HGK1-blob")}}}
}

func TestApplyPersistsAndReloads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keystore.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1700000100, 0).UTC()
	steps := []Command{
		&CreatePrincipal{Principal{Name: "admin", Admin: true, CreatedAt: now}},
		&CreateKey{newKey("k1")},
		&CreateKey{newKey("k2")},
		&SetDescription{KeyID: "k1", Description: "first"},
		&TagKey{KeyID: "k1", Tags: map[string]string{"team": "a", "env": "dev"}},
		&UntagKey{KeyID: "k1", TagKeys: []string{"env"}},
		&SetKeyState{KeyID: "k2", State: StateDisabled},
		&CreateAlias{Alias{Name: "alias/one", KeyID: "k1", CreatedAt: now, UpdatedAt: now}},
		&CreateAlias{Alias{Name: "alias/two", KeyID: "k1", CreatedAt: now, UpdatedAt: now}},
		&UpdateAlias{Name: "alias/two", KeyID: "k2", At: now},
		&DeleteAlias{Name: "alias/one"},
		&CreateAccessKey{AccessKey{ID: "AKIA1", Principal: "admin", SecretBlob: []byte("wrapped"), CreatedAt: now}},
		&RevokeAccessKey{ID: "AKIA1"},
		&SetMeta{Name: "tls", Value: []byte("x")},
		&CreatePrincipal{Principal{Name: "bob", CreatedAt: now}},
		&CreateAccessKey{AccessKey{ID: "AKIA2", Principal: "bob", SecretBlob: []byte("wrapped"), CreatedAt: now}},
		&DeletePrincipal{Name: "bob"},
	}
	for _, c := range steps {
		if err := s.Apply(c); err != nil {
			t.Fatalf("%s: %v", c.op(), err)
		}
	}
	check := func(s *Store) {
		t.Helper()
		k1, err := s.Key("k1")
		if err != nil || k1.Description != "first" || len(k1.Tags) != 1 || k1.Tags["team"] != "a" {
			t.Fatalf("k1 = %+v, %v", k1, err)
		}
		if k2, _ := s.Key("k2"); k2.State != StateDisabled {
			t.Fatalf("k2 state %s", k2.State)
		}
		if _, err := s.Alias("alias/one"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("deleted alias: %v", err)
		}
		if a, _ := s.Alias("alias/two"); a == nil || a.KeyID != "k2" {
			t.Fatalf("alias/two = %+v", a)
		}
		if ak, _ := s.AccessKey("AKIA1"); ak == nil || !ak.Revoked {
			t.Fatalf("access key = %+v", ak)
		}
		if _, err := s.Principal("bob"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("deleted principal: %v", err)
		}
		if ak, _ := s.AccessKey("AKIA2"); ak == nil || !ak.Revoked {
			t.Fatalf("a deleted principal's access key is not revoked: %+v", ak)
		}
		if v, _ := s.Meta("tls"); string(v) != "x" {
			t.Fatalf("meta = %q", v)
		}
		keys, more := s.Keys("", 1, nil)
		if len(keys) != 1 || keys[0].ID != "k1" || !more {
			t.Fatalf("page 1: %v %v", keys, more)
		}
		keys, more = s.Keys("k1", 1, nil)
		if len(keys) != 1 || keys[0].ID != "k2" || more {
			t.Fatalf("page 2: %v %v", keys, more)
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check(s)
}

func TestFailedCommandsChangeNothing(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "ks.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Apply(&CreateKey{newKey("k1")}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	cases := map[string]struct {
		c    Command
		want error
	}{
		"duplicate key":       {&CreateKey{newKey("k1")}, ErrAlreadyExists},
		"state of unknown":    {&SetKeyState{KeyID: "nope", State: StateDisabled}, ErrNotFound},
		"bad state":           {&SetKeyState{KeyID: "k1", State: "Exploded"}, ErrInvalid},
		"alias to unknown":    {&CreateAlias{Alias{Name: "alias/x", KeyID: "nope", CreatedAt: now}}, ErrNotFound},
		"update missing":      {&UpdateAlias{Name: "alias/none", KeyID: "k1", At: now}, ErrNotFound},
		"access key orphan":   {&CreateAccessKey{AccessKey{ID: "A", Principal: "ghost"}}, ErrNotFound},
		"too many tags":       {&TagKey{KeyID: "k1", Tags: manyTags(MaxTags + 1)}, ErrInvalid},
		"key without version": {&CreateKey{Key{ID: "k9"}}, ErrInvalid},
	}
	for name, tc := range cases {
		if err := s.Apply(tc.c); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", name, err, tc.want)
		}
	}
	if k, _ := s.Key("k1"); len(k.Tags) != 0 || k.State != StateEnabled {
		t.Fatalf("a failed command changed k1: %+v", k)
	}
	if _, err := s.Key("k9"); !errors.Is(err, ErrNotFound) {
		t.Fatal("a failed CreateKey left a key")
	}
}

// A published snapshot never changes under a reader's feet.
func TestSnapshotsAreImmutable(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "ks.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_ = s.Apply(&CreateKey{newKey("k1")})
	before, _ := s.Key("k1")
	_ = s.Apply(&TagKey{KeyID: "k1", Tags: map[string]string{"a": "b"}})
	_ = s.Apply(&SetDescription{KeyID: "k1", Description: "changed"})
	if len(before.Tags) != 0 || before.Description != "" {
		t.Fatalf("snapshot changed: %+v", before)
	}
}

func manyTags(n int) map[string]string {
	m := map[string]string{}
	for i := 0; i < n; i++ {
		m[string(rune('a'+i%26))+string(rune('a'+i/26))] = "v"
	}
	return m
}

func FuzzDecode(f *testing.F) {
	for _, c := range []Command{&CreateKey{newKey("k")}, &DeleteAlias{Name: "alias/x"}, &SetMeta{Name: "m", Value: []byte{1}}} {
		b, _ := Encode(c)
		f.Add(b)
	}
	f.Add([]byte(`{"op":"Nope"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatal(err)
			}
			return
		}
		if _, err := Encode(c); err != nil {
			t.Fatal(err)
		}
	})
}

func TestGrantsPoliciesVersions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keystore.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1700000100, 0).UTC()
	grant := func(id, key string) Grant {
		return Grant{ID: id, KeyID: key, GranteePrincipal: "arn:aws:iam::111122223333:user/bob", Operations: []string{"Encrypt"}, CreatedAt: now, TokenNonce: "n"}
	}
	steps := []Command{
		&CreatePrincipal{Principal{Name: "bob", CreatedAt: now}},
		&SetPrincipal{Name: "bob", Kind: KindRole, Service: "storage", Tags: map[string]string{"team": "blue"}},
		&CreateKey{newKey("k1")},
		&CreateKey{newKey("k2")},
		&PutKeyPolicy{KeyID: "k1", Policy: `{"Statement":[]}`},
		&CreateGrant{grant("g1", "k1")},
		&CreateGrant{grant("g2", "k1")},
		&CreateGrant{grant("g3", "k2")},
		&DeleteGrant{ID: "g2"},
		&SetRotation{KeyID: "k1", PeriodDays: 365, Next: now.AddDate(1, 0, 0)},
		&AddKeyVersion{KeyID: "k1", Version: Version{Number: 2, CreatedAt: now, Blob: []byte("v2")}, NextRotation: now.AddDate(2, 0, 0)},
	}
	for _, c := range steps {
		if err := s.Apply(c); err != nil {
			t.Fatalf("%s: %v", c.op(), err)
		}
	}
	for _, bad := range []Command{
		&CreateGrant{grant("g1", "k1")},   // exists
		&CreateGrant{grant("g9", "nope")}, // no key
		&DeleteGrant{ID: "g2"},            // gone
		&AddKeyVersion{KeyID: "k1", Version: Version{Number: 2, Blob: []byte("again")}}, // not the next number
		&AddKeyVersion{KeyID: "k1", Version: Version{Number: 3}},                        // no material
		&SetPrincipal{Name: "bob", Kind: "group"},                                       // unknown kind
		&SetRotation{KeyID: "k1", PeriodDays: 90},                                       // no due time
	} {
		if err := s.Apply(bad); err == nil {
			t.Errorf("%s %+v was applied", bad.op(), bad)
		}
	}
	check := func(s *Store) {
		t.Helper()
		gs := s.GrantsOf("k1")
		if len(gs) != 1 || gs[0].ID != "g1" || len(s.GrantsOf("k2")) != 1 || len(s.GrantsOf("k3")) != 0 {
			t.Fatalf("grants of k1 %+v, k2 %+v", gs, s.GrantsOf("k2"))
		}
		if _, err := s.Grant("g2"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("deleted grant: %v", err)
		}
		k1, _ := s.Key("k1")
		if k1.Policy != `{"Statement":[]}` || len(k1.Versions) != 2 || k1.Current().Number != 2 ||
			k1.RotationPeriodDays != 365 || !k1.NextRotation.Equal(now.AddDate(2, 0, 0)) {
			t.Fatalf("k1 = %+v", k1)
		}
		p, _ := s.Principal("bob")
		if p.ARNKind() != KindRole || p.Service != "storage" || p.Tags["team"] != "blue" {
			t.Fatalf("bob = %+v", p)
		}
	}
	check(s)
	s.Close()
	if s, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check(s)
}
