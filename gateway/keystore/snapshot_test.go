package keystore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func openTemp(t testing.TB) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "keystore.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func applyAll(t testing.TB, s *Store, cmds ...Command) {
	t.Helper()
	for _, c := range cmds {
		if err := s.Apply(c); err != nil {
			t.Fatalf("%s: %v", c.op(), err)
		}
	}
}

// populated is a store with a record of every kind.
func populated(t testing.TB) *Store {
	s := openTemp(t)
	now := time.Unix(1700000100, 0).UTC()
	applyAll(t, s,
		&CreatePrincipal{Principal{Name: "admin", Admin: true, CreatedAt: now}},
		&CreatePrincipal{Principal{Name: "bob", CreatedAt: now}},
		&SetPrincipal{Name: "bob", Kind: KindRole, Service: "storage", Tags: map[string]string{"team": "blue"}},
		&CreateAccessKey{AccessKey{ID: "AKIA1", Principal: "admin", SecretBlob: []byte("wrapped"), CreatedAt: now}},
		&CreateKey{newKey("k1")},
		&CreateKey{newKey("k2")},
		&TagKey{KeyID: "k1", Tags: map[string]string{"team": "a"}},
		&CreateAlias{Alias{Name: "alias/one", KeyID: "k1", CreatedAt: now, UpdatedAt: now}},
		&CreateGrant{Grant{ID: "g1", KeyID: "k1", GranteePrincipal: "arn:aws:iam::111122223333:role/bob", Operations: []string{"Encrypt"}, CreatedAt: now, TokenNonce: "n"}},
		&SetXKS{KeyID: "k2", XKS: &XKSUse{Store: "main", ExternalID: "ext-2", Usages: []string{"ENCRYPT", "DECRYPT"}}},
		&AddKeyVersion{KeyID: "k1", Version: Version{Number: 2, CreatedAt: now, Blob: []byte("v2")}},
		&SetMeta{Name: "tls", Value: []byte("tls-blob")},
	)
	return s
}

// dump is everything a reader can see of s, as JSON.
func dump(t testing.TB, s *Store) string {
	t.Helper()
	keys, _ := s.Keys("", 1000, nil)
	aliases, _ := s.Aliases("", "", 1000, nil)
	var akeys []*AccessKey
	for _, p := range s.Principals() {
		akeys = append(akeys, s.AccessKeysOf(p.Name)...)
	}
	grantsByKey := map[string][]*Grant{}
	for _, k := range keys {
		grantsByKey[k.ID] = s.GrantsOf(k.ID)
	}
	xks, _ := s.XKSKey("main", "ext-2")
	meta, err := s.Meta("tls")
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(map[string]any{"keys": keys, "aliases": aliases, "principals": s.Principals(),
		"access_keys": akeys, "grants": s.Grants(nil), "grants_by_key": grantsByKey, "xks": xks, "meta": meta})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func snapshotBytes(t testing.TB, s *Store) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := s.Snapshot(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestSnapshotRestore(t *testing.T) {
	src := populated(t)
	want := dump(t, src)
	snap := snapshotBytes(t, src)

	dstPath := filepath.Join(t.TempDir(), "keystore.db")
	dst, err := Open(dstPath)
	if err != nil {
		t.Fatal(err)
	}
	applyAll(t, dst, &CreateKey{newKey("other")}, &CreateAlias{Alias{Name: "alias/other", KeyID: "other"}},
		&SetMeta{Name: "tls", Value: []byte("mine")})
	if dump(t, dst) == want {
		t.Fatal("the stores are equal before the restore")
	}
	if err := dst.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	if got := dump(t, dst); got != want {
		t.Fatalf("after restore:\n got %s\nwant %s", got, want)
	}
	if _, err := dst.Key("other"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a key the snapshot does not have survived the restore: %v", err)
	}
	// The restored store keeps working, and keeps its state across a reopen.
	applyAll(t, dst, &SetDescription{KeyID: "k1", Description: "after"})
	applyAll(t, src, &SetDescription{KeyID: "k1", Description: "after"})
	want = dump(t, src)
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	if dst, err = Open(dstPath); err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if got := dump(t, dst); got != want {
		t.Fatalf("after reopen:\n got %s\nwant %s", got, want)
	}
}

// frame frames db as a snapshot, with a correct checksum.
func frame(db []byte) []byte {
	out := append([]byte(nil), snapshotMagic[:]...)
	out = binary.BigEndian.AppendUint64(out, uint64(len(db)))
	out = append(out, db...)
	sum := sha256.Sum256(out)
	return append(out, sum[:]...)
}

func TestRestoreRefusesDamage(t *testing.T) {
	src := populated(t)
	snap := snapshotBytes(t, src)
	db := snap[snapshotHeader : len(snap)-snapshotTrailer]
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(snap)) }

	// A database page of records overwritten with garbage, and reframed
	// with a valid checksum: bbolt itself must be kept from panicking.
	damagedDB := bytes.Clone(db)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 4096 * 2; i < len(damagedDB); i++ {
		damagedDB[i] = byte(rng.Uint32())
	}

	cases := map[string][]byte{
		"empty":            nil,
		"short header":     snap[:10],
		"wrong magic":      mod(func(b []byte) []byte { b[0] = 'X'; return b }),
		"unknown version":  mod(func(b []byte) []byte { b[7] = '9'; return b }),
		"huge length":      mod(func(b []byte) []byte { binary.BigEndian.PutUint64(b[8:], 1<<62); return b }),
		"flipped db byte":  mod(func(b []byte) []byte { b[snapshotHeader+5000] ^= 1; return b }),
		"flipped checksum": mod(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }),
		"truncated db":     snap[:len(snap)/2],
		"no checksum":      snap[:len(snap)-snapshotTrailer],
		"trailing data":    append(bytes.Clone(snap), 0),
		"garbage database": frame(bytes.Repeat([]byte{0xA5}, 16384)),
		"damaged pages":    frame(damagedDB),
		"empty database":   frame(nil),
	}
	dst := openTemp(t)
	applyAll(t, dst, &CreateKey{newKey("mine")}, &SetMeta{Name: "tls", Value: []byte("mine")})
	before := dump(t, dst)
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			err := dst.Restore(bytes.NewReader(b))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %v, want an error matching ErrInvalid", err)
			}
			if got := dump(t, dst); got != before {
				t.Fatalf("a refused restore changed the store:\n got %s\nwant %s", got, before)
			}
		})
	}
	// The positive twin: the intact snapshot, and the same database reframed.
	for _, b := range [][]byte{snap, frame(db)} {
		if err := dst.Restore(bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		if dump(t, dst) != dump(t, src) {
			t.Fatal("the intact snapshot did not restore")
		}
	}
}

// Readers during a restore see the old state or the new one, never a mix.
func TestRestoreIsAtomicForReaders(t *testing.T) {
	a := openTemp(t)
	b := openTemp(t)
	var aKeys, bKeys []string
	for i := range 20 {
		aKeys = append(aKeys, fmt.Sprintf("a%02d", i))
		bKeys = append(bKeys, fmt.Sprintf("b%02d", i))
		applyAll(t, a, &CreateKey{newKey(aKeys[i])})
		applyAll(t, b, &CreateKey{newKey(bKeys[i])})
	}
	snaps := [][]byte{snapshotBytes(t, a), snapshotBytes(t, b)}
	dst := openTemp(t)
	if err := dst.Restore(bytes.NewReader(snaps[0])); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				keys, _ := dst.Keys("", 100, nil)
				if len(keys) != 20 || keys[0].ID[0] != keys[19].ID[0] {
					ids := make([]string, len(keys))
					for i, k := range keys {
						ids[i] = k.ID
					}
					errc <- fmt.Errorf("a reader saw a mixed state: %v", ids)
					return
				}
			}
		}()
	}
	for i := range 10 {
		if err := dst.Restore(bytes.NewReader(snaps[(i+1)%2])); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	// 10 restores, alternating from a: the last was a's.
	if _, err := dst.Key("a00"); err != nil {
		t.Fatal(err)
	}
}

func TestEmpty(t *testing.T) {
	s := openTemp(t)
	if empty, err := s.Empty(); err != nil || !empty {
		t.Fatalf("a new store: %v, %v", empty, err)
	}
	applyAll(t, s, &SetMeta{Name: "x", Value: []byte{1}})
	if empty, err := s.Empty(); err != nil || empty {
		t.Fatalf("a store with a named value: %v, %v", empty, err)
	}
}

func TestApplyLogEntrySkipsReplays(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keystore.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	enc := func(c Command) []byte {
		b, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	reserve := enc(&ReserveEncryptions{KeyID: "k1", Version: 1, Count: 10})
	reserved := func(s *Store) uint64 {
		k, err := s.Key("k1")
		if err != nil {
			t.Fatal(err)
		}
		return k.Versions[0].GCMReserved
	}
	index := func(s *Store) uint64 {
		n, err := s.AppliedIndex()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if err := s.ApplyLogEntry(1, enc(&CreateKey{newKey("k1")})); err != nil {
		t.Fatal(err)
	}
	if err := s.ApplyLogEntry(2, reserve); err != nil {
		t.Fatal(err)
	}
	if n := index(s); n != 2 {
		t.Fatalf("applied index %d, want 2", n)
	}
	// A replay of entries 1 and 2 (as after a restart) changes nothing.
	for i, b := range [][]byte{enc(&CreateKey{newKey("k1")}), reserve} {
		if err := s.ApplyLogEntry(uint64(i+1), b); err != nil {
			t.Fatalf("replay of entry %d: %v", i+1, err)
		}
	}
	if got := reserved(s); got != 10 {
		t.Fatalf("reserved %d after a replay, want 10", got)
	}
	// Its negative twin: a new position applies.
	if err := s.ApplyLogEntry(3, reserve); err != nil {
		t.Fatal(err)
	}
	if got := reserved(s); got != 20 {
		t.Fatalf("reserved %d, want 20", got)
	}
	// A refused command records nothing.
	err = s.ApplyLogEntry(4, enc(&CreateKey{newKey("k1")}))
	if !errors.Is(err, ErrAlreadyExists) || !Refused(err) {
		t.Fatalf("duplicate CreateKey: %v", err)
	}
	if n := index(s); n != 3 {
		t.Fatalf("applied index %d after a refused command, want 3", n)
	}
	if err := s.ApplyLogEntry(0, reserve); !errors.Is(err, ErrInvalid) {
		t.Fatalf("position 0: %v", err)
	}
	// The position travels with snapshots and survives a reopen.
	sn, err := s.BeginSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	if sn.Index() != 3 {
		t.Fatalf("snapshot index %d, want 3", sn.Index())
	}
	var buf bytes.Buffer
	n, err := sn.WriteTo(&buf)
	if err != nil || n != sn.Size() || int64(buf.Len()) != n {
		t.Fatalf("WriteTo wrote %d (buffer %d), Size %d: %v", n, buf.Len(), sn.Size(), err)
	}
	sn.Close()
	other := openTemp(t)
	if err := other.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if n := index(other); n != 3 {
		t.Fatalf("restored applied index %d, want 3", n)
	}
	s.Close()
	if s, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n := index(s); n != 3 {
		t.Fatalf("applied index %d after reopen, want 3", n)
	}
}

// twoStores is a Replicator for the hook's test: it applies every command to
// a log of two stores, as a consensus log would, and answers with the
// first's result.
type twoStores struct {
	stores [2]*Store
	next   uint64
	down   bool
}

func (r *twoStores) Replicate(ctx context.Context, cmd []byte) error {
	if r.down {
		return fmt.Errorf("%w: no majority", ErrUnavailable)
	}
	r.next++
	err := r.stores[0].ApplyLogEntry(r.next, cmd)
	if err2 := r.stores[1].ApplyLogEntry(r.next, cmd); (err == nil) != (err2 == nil) {
		return fmt.Errorf("the stores disagree: %v, %v", err, err2)
	}
	return err
}

func TestApplyGoesThroughReplicator(t *testing.T) {
	a, b := openTemp(t), openTemp(t)
	r := &twoStores{stores: [2]*Store{a, b}}
	a.SetReplicator(r)
	applyAll(t, a, &CreateKey{newKey("k1")})
	if _, err := b.Key("k1"); err != nil {
		t.Fatalf("the replicated command did not reach the other store: %v", err)
	}
	// A command's refusal comes back through the replicator.
	if err := a.Apply(&CreateKey{newKey("k1")}); !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("duplicate: %v", err)
	}
	r.down = true
	if err := a.Apply(&CreateKey{newKey("k2")}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("with the log down: %v", err)
	}
	if _, err := a.Key("k2"); !errors.Is(err, ErrNotFound) {
		t.Fatal("a command the log refused was applied")
	}
	// Without a replicator, a replica refuses changes of its own; a store
	// that never applied a log takes them.
	a.SetReplicator(nil)
	if err := a.Apply(&CreateKey{newKey("k3")}); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "replica") {
		t.Fatalf("a local change to a replica: %v", err)
	}
	if _, err := a.Key("k3"); !errors.Is(err, ErrNotFound) {
		t.Fatal("a replica took a local change")
	}
	fresh := openTemp(t)
	applyAll(t, fresh, &CreateKey{newKey("k3")})
	// A store marked a replica refuses too, and keeps the mark through a
	// restore of a snapshot that has none.
	snap := snapshotBytes(t, fresh)
	if err := fresh.MarkReplica(); err != nil {
		t.Fatal(err)
	}
	if err := fresh.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	if err := fresh.Apply(&CreateKey{newKey("k4")}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("a local change to a marked replica: %v", err)
	}
	if replica, err := openTemp(t).Replica(); err != nil || replica {
		t.Fatalf("a new store is a replica: %v, %v", replica, err)
	}
}

func FuzzRestore(f *testing.F) {
	s := populated(f)
	snap := snapshotBytes(f, s)
	f.Add(snap[snapshotHeader:len(snap)-snapshotTrailer], true)
	f.Add(snap, false)
	f.Add([]byte("HGKSNAP1"), false)
	f.Fuzz(func(t *testing.T, b []byte, framed bool) {
		if framed {
			b = frame(b)
		}
		dst := openTemp(t)
		if err := dst.Restore(bytes.NewReader(b)); err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("not ErrInvalid: %v", err)
		}
	})
}
