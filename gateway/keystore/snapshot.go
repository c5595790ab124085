package keystore

// Snapshots, restore, and what a replicated log needs from the store.
//
// # Snapshot format
//
// A snapshot is a consistent copy of the whole bbolt database, framed so
// that a damaged or truncated copy is refused before bbolt reads it:
//
//	offset  size  field
//	0       8     magic "HGKSNAP1" (format version 1)
//	8       8     n, the database's length in bytes, big-endian
//	16      n     the bbolt database file
//	16+n    32    SHA-256 of the 16+n bytes before it
//
// Nothing in it is secret in plaintext (see the package documentation), but
// it is everything the keystore holds: keep backups with the same care as
// the data folder.
//
// # Log positions
//
// A replicated log replays entries after a restart from its last snapshot,
// while the store is durable on its own: [Store.ApplyLogEntry] records each
// entry's position in the same bbolt transaction as its change, and skips an
// entry at or before the recorded position, so a replayed entry is never
// applied twice.

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
)

// snapshotMagic opens every snapshot; its last byte is the format version.
var snapshotMagic = [8]byte{'H', 'G', 'K', 'S', 'N', 'A', 'P', '1'}

const (
	snapshotHeader  = 16
	snapshotTrailer = sha256.Size
)

// MaxSnapshotSize bounds the database a snapshot may carry (16 GiB):
// Restore refuses a larger length before writing anything.
const MaxSnapshotSize = 16 << 30

var (
	// bucketReplication holds the position of the last log entry applied
	// (key appliedIndexKey, 8 bytes big-endian), and whether the store is
	// a replica (key replicaKey). It is created on first use.
	bucketReplication = []byte("replication")
	appliedIndexKey   = []byte("applied_index")
	replicaKey        = []byte("replica")
)

// MarkReplica records that the store is a replica of a replicated log (a
// cluster node's keystore): from then on Apply without a replicator is
// refused, since a change made here alone would differ from the other
// replicas. Restore keeps the mark.
func (s *Store) MarkReplica() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketReplication)
		if err != nil {
			return err
		}
		return b.Put(replicaKey, []byte{1})
	})
}

// Replica reports whether the store is a replica: marked by MarkReplica,
// or it has applied a replicated log entry.
func (s *Store) Replica() (bool, error) {
	replica := false
	err := s.db.View(func(tx *bolt.Tx) error {
		replica = isReplica(tx)
		return nil
	})
	return replica, err
}

func isReplica(tx *bolt.Tx) bool {
	if b := tx.Bucket(bucketReplication); b != nil && b.Get(replicaKey) != nil {
		return true
	}
	return appliedIndex(tx) > 0
}

// state is everything the store keeps in memory.
type state struct {
	keys       map[string]*Key
	aliases    map[string]*Alias
	principals map[string]*Principal
	accessKeys map[string]*AccessKey
	grants     map[string]*Grant
}

// loadState reads every record of the database.
func loadState(tx *bolt.Tx) (*state, error) {
	st := &state{keys: map[string]*Key{}, aliases: map[string]*Alias{}, principals: map[string]*Principal{},
		accessKeys: map[string]*AccessKey{}, grants: map[string]*Grant{}}
	for _, b := range allBuckets {
		if tx.Bucket(b) == nil {
			return nil, fmt.Errorf("%w: no bucket %q", ErrInvalid, b)
		}
	}
	err := errors.Join(
		load(tx, bucketKeys, st.keys),
		load(tx, bucketAliases, st.aliases),
		load(tx, bucketPrincipals, st.principals),
		load(tx, bucketAccessKeys, st.accessKeys),
		load(tx, bucketGrants, st.grants))
	if err != nil {
		return nil, err
	}
	return st, nil
}

// install makes st the store's published state, with its indexes. The
// caller holds mu for writing, or has the store to itself.
func (s *Store) install(st *state) {
	s.keys, s.aliases, s.principals, s.accessKeys, s.grants = st.keys, st.aliases, st.principals, st.accessKeys, st.grants
	s.indexGrants()
	s.xksKeys = map[string]string{}
	for id, k := range s.keys {
		if k.XKS != nil {
			s.xksKeys[xksIndex(k.XKS.Store, k.XKS.ExternalID)] = id
		}
	}
}

// ApplyLogEntry applies the command b found at position index (> 0) of a
// replicated log: the entry point of a consensus log's state machine. It
// records index with the change; an entry at or before the last recorded
// position has been applied already (a log replayed after a restart) and is
// skipped without error. An entry whose command fails (ErrNotFound, …)
// changes nothing and records nothing: replayed from the same state it fails
// the same way.
func (s *Store) ApplyLogEntry(index uint64, b []byte) error {
	if index == 0 {
		return fmt.Errorf("%w: log position 0", ErrInvalid)
	}
	return s.applyBytes(b, index)
}

// AppliedIndex is the position of the last log entry ApplyLogEntry applied
// (0: none).
func (s *Store) AppliedIndex() (uint64, error) {
	var n uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		n = appliedIndex(tx)
		return nil
	})
	return n, err
}

func appliedIndex(tx *bolt.Tx) uint64 {
	b := tx.Bucket(bucketReplication)
	if b == nil {
		return 0
	}
	v := b.Get(appliedIndexKey)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// appliedBefore reports whether log position index was applied already.
// The caller holds applyMu.
func (s *Store) appliedBefore(index uint64) bool {
	n, err := s.AppliedIndex()
	// An unreadable position is no reason to skip: the commit that follows
	// meets the same storage failure and reports it.
	return err == nil && index <= n
}

// markApplied records log position index (0: none) in tx.
func markApplied(tx *bolt.Tx, index uint64) error {
	if index == 0 {
		return nil
	}
	b, err := tx.CreateBucketIfNotExists(bucketReplication)
	if err != nil {
		return err
	}
	return b.Put(appliedIndexKey, binary.BigEndian.AppendUint64(nil, index))
}

// Empty reports whether the store holds no record at all: no key, alias,
// principal, access key, grant or named value.
func (s *Store) Empty() (bool, error) {
	empty := true
	err := s.db.View(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if k, _ := tx.Bucket(name).Cursor().First(); k != nil {
				empty = false
			}
		}
		return nil
	})
	return empty, err
}

// Refused reports whether err is a command's own refusal (ErrNotFound,
// ErrAlreadyExists, ErrInvalid, ErrLimit, ErrMismatch, ErrConflict): the same on every
// node that applies the same command to the same state. Any other error
// from ApplyBytes or ApplyLogEntry is a storage failure of this node.
func Refused(err error) bool {
	for _, e := range []error{ErrNotFound, ErrAlreadyExists, ErrInvalid, ErrLimit, ErrMismatch, ErrConflict} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Snapshot is a point-in-time copy of the store being read. Changes applied
// after BeginSnapshot are not in it. Close it when done: an open snapshot
// keeps the database from reusing the pages it reads.
type Snapshot struct {
	tx    *bolt.Tx
	index uint64
}

// BeginSnapshot starts a snapshot of the store as it is now.
func (s *Store) BeginSnapshot() (*Snapshot, error) {
	tx, err := s.db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("snapshot the keystore: %w", err)
	}
	return &Snapshot{tx: tx, index: appliedIndex(tx)}, nil
}

// Index is the log position of the last entry applied in the snapshot.
func (sn *Snapshot) Index() uint64 { return sn.index }

// Size is the length of what WriteTo writes.
func (sn *Snapshot) Size() int64 { return snapshotHeader + sn.tx.Size() + snapshotTrailer }

// WriteTo writes the snapshot in the format described above.
func (sn *Snapshot) WriteTo(w io.Writer) (int64, error) {
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(w, h)}
	var hdr [snapshotHeader]byte
	copy(hdr[:], snapshotMagic[:])
	size := sn.tx.Size()
	binary.BigEndian.PutUint64(hdr[8:], uint64(size))
	if _, err := cw.Write(hdr[:]); err != nil {
		return cw.n, fmt.Errorf("write keystore snapshot: %w", err)
	}
	if n, err := sn.tx.WriteTo(cw); err != nil || n != size {
		return cw.n, fmt.Errorf("write keystore snapshot: wrote %d of %d bytes: %w", n, size, err)
	}
	if _, err := w.Write(h.Sum(nil)); err != nil {
		return cw.n, fmt.Errorf("write keystore snapshot: %w", err)
	}
	return cw.n + snapshotTrailer, nil
}

// Close ends the snapshot.
func (sn *Snapshot) Close() error { return sn.tx.Rollback() }

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Snapshot writes a consistent copy of the store to w (a backup; the format
// is described above). Writes may go on meanwhile; they are not in it.
func (s *Store) Snapshot(w io.Writer) error {
	sn, err := s.BeginSnapshot()
	if err != nil {
		return err
	}
	_, err = sn.WriteTo(w)
	return errors.Join(err, sn.Close())
}

// Restore replaces the whole store with a snapshot read from r. The
// snapshot is checked first (framing, checksum, that every record decodes);
// a snapshot that fails a check changes nothing and the error matches
// ErrInvalid. Then its content replaces the database's in one transaction
// and is published to memory at once: readers see the old state or the new
// one, never a mix. Writes wait while it runs.
func (s *Store) Restore(r io.Reader) error {
	tmp, err := os.CreateTemp(filepath.Dir(s.db.Path()), ".keystore-restore-*")
	if err != nil {
		return fmt.Errorf("restore the keystore: %w", err)
	}
	defer os.Remove(tmp.Name())
	err = readSnapshot(r, tmp)
	if cerr := tmp.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("restore the keystore: %w", err)
	}
	return s.restoreFile(tmp.Name())
}

// readSnapshot checks the framing of a snapshot read from r and copies its
// database to f.
func readSnapshot(r io.Reader, f *os.File) error {
	h := sha256.New()
	var hdr [snapshotHeader]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return fmt.Errorf("%w: snapshot header: %v", ErrInvalid, err)
	}
	h.Write(hdr[:])
	if !bytes.Equal(hdr[:8], snapshotMagic[:]) {
		if bytes.Equal(hdr[:7], snapshotMagic[:7]) {
			return fmt.Errorf("%w: snapshot format version %q is not known to this hsmgate (it reads %q)", ErrInvalid, hdr[7], snapshotMagic[7])
		}
		return fmt.Errorf("%w: not a keystore snapshot (no HGKSNAP header)", ErrInvalid)
	}
	size := binary.BigEndian.Uint64(hdr[8:])
	if size > MaxSnapshotSize {
		return fmt.Errorf("%w: snapshot claims a %d-byte database, more than the %d bytes allowed", ErrInvalid, size, uint64(MaxSnapshotSize))
	}
	if n, err := io.CopyN(io.MultiWriter(f, h), r, int64(size)); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: snapshot truncated: %d of %d database bytes", ErrInvalid, n, size)
		}
		return fmt.Errorf("read snapshot: %w", err)
	}
	var sum [snapshotTrailer]byte
	if _, err := io.ReadFull(r, sum[:]); err != nil {
		return fmt.Errorf("%w: snapshot truncated: no checksum: %v", ErrInvalid, err)
	}
	if subtle.ConstantTimeCompare(sum[:], h.Sum(nil)) != 1 {
		return fmt.Errorf("%w: snapshot checksum mismatch: the copy is damaged", ErrInvalid)
	}
	if n, _ := io.ReadFull(r, make([]byte, 1)); n != 0 {
		return fmt.Errorf("%w: data after the snapshot's checksum", ErrInvalid)
	}
	return f.Sync()
}

// restoreFile replaces the store's content with that of the bbolt database
// in path (a file of no other process, checked here first).
func (s *Store) restoreFile(path string) (err error) {
	// The file came from elsewhere: bbolt may panic, or fault on a page
	// pointer past the end of the file, when a damaged database still has
	// valid meta pages. Both become errors here.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("restore the keystore: %w: the snapshot's database is damaged (%v)", ErrInvalid, p)
		}
	}()
	src, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 2 * time.Second})
	if err != nil {
		return fmt.Errorf("restore the keystore: %w: the snapshot's database: %v", ErrInvalid, err)
	}
	defer src.Close()
	stx, err := src.Begin(false)
	if err != nil {
		return fmt.Errorf("restore the keystore: %w: the snapshot's database: %v", ErrInvalid, err)
	}
	defer stx.Rollback()
	st, err := loadState(stx)
	if err != nil {
		return fmt.Errorf("restore the keystore: %w: the snapshot's records: %v", ErrInvalid, err)
	}

	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	err = s.db.Update(func(tx *bolt.Tx) error {
		wasReplica := tx.Bucket(bucketReplication) != nil && tx.Bucket(bucketReplication).Get(replicaKey) != nil
		var old [][]byte
		if err := tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			old = append(old, bytes.Clone(name))
			return nil
		}); err != nil {
			return err
		}
		for _, name := range old {
			if err := tx.DeleteBucket(name); err != nil {
				return err
			}
		}
		err := stx.ForEach(func(name []byte, from *bolt.Bucket) error {
			to, err := tx.CreateBucket(name)
			if err != nil {
				return err
			}
			return copyBucket(to, from)
		})
		if err != nil || !wasReplica {
			return err
		}
		b, err := tx.CreateBucketIfNotExists(bucketReplication)
		if err != nil {
			return err
		}
		return b.Put(replicaKey, []byte{1})
	})
	if err != nil {
		return fmt.Errorf("restore the keystore: %w", err)
	}
	s.mu.Lock()
	s.install(st)
	s.mu.Unlock()
	return nil
}

// copyBucket copies every key and nested bucket of from into to.
func copyBucket(to, from *bolt.Bucket) error {
	return from.ForEach(func(k, v []byte) error {
		if v != nil {
			return to.Put(bytes.Clone(k), bytes.Clone(v))
		}
		nested, err := to.CreateBucket(bytes.Clone(k))
		if err != nil {
			return err
		}
		return copyBucket(nested, from.Bucket(k))
	})
}
