package quorum

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrReplay: a request id that was already consumed.
var ErrReplay = errors.New("quorum: request already executed (replay refused)")

// Ledger durably records consumed request ids. Consume must be atomic
// (two concurrent calls with one id: exactly one succeeds) and durable
// (on disk before it returns) and return ErrReplay for an id already
// consumed.
type Ledger interface {
	Consume(id RequestID) error
}

// MemoryLedger is a Ledger in memory, for tests and dry runs. It is not
// durable.
type MemoryLedger struct {
	mu   sync.Mutex
	used map[RequestID]bool
}

// Consume records id, or returns ErrReplay.
func (l *MemoryLedger) Consume(id RequestID) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.used[id] {
		return fmt.Errorf("%w: request %s", ErrReplay, id)
	}
	if l.used == nil {
		l.used = map[RequestID]bool{}
	}
	l.used[id] = true
	return nil
}

var ledgerBucket = []byte("quorum-consumed-requests")

// BoltLedger is a Ledger in a bbolt file: each Consume is one read-write
// transaction, committed with fsync before it returns.
type BoltLedger struct {
	db *bolt.DB
}

// OpenBoltLedger opens (creating, mode 0600) the ledger file at path.
func OpenBoltLedger(path string) (*BoltLedger, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("quorum: open ledger %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(ledgerBucket)
		return err
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("quorum: ledger %s: %w", path, err)
	}
	return &BoltLedger{db: db}, nil
}

// Consume records id with the time, or returns ErrReplay.
func (l *BoltLedger) Consume(id RequestID) error {
	return l.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(ledgerBucket)
		if b.Get(id[:]) != nil {
			return fmt.Errorf("%w: request %s", ErrReplay, id)
		}
		v := binary.BigEndian.AppendUint64(nil, uint64(time.Now().Unix()))
		return b.Put(id[:], v)
	})
}

// Consumed reports whether id was consumed, and when.
func (l *BoltLedger) Consumed(id RequestID) (bool, time.Time, error) {
	var at time.Time
	var found bool
	err := l.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(ledgerBucket).Get(id[:]); len(v) == 8 {
			found, at = true, time.Unix(int64(binary.BigEndian.Uint64(v)), 0)
		}
		return nil
	})
	return found, at, err
}

// Close closes the file.
func (l *BoltLedger) Close() error { return l.db.Close() }

// Executor runs quorum-approved operations at most once.
type Executor struct {
	Ledger Ledger
	Scope  Scope
	// Now is the clock (time.Now if nil).
	Now func() time.Time
}

// Execute verifies the approvals of proposal under set; when the threshold
// is met it consumes the request id in the ledger (ErrReplay if it was
// already) and only then calls op, once. If op fails the request id stays
// consumed: the operation needs a new proposal (at most once, never twice).
func (e *Executor) Execute(set *Set, proposal []byte, approvals []*Approval, op func(*Proposal) error) (Decision, error) {
	now := time.Now
	if e.Now != nil {
		now = e.Now
	}
	d, err := Verify(set, proposal, approvals, now(), e.Scope)
	if err != nil {
		return d, err
	}
	p, err := DecodeProposal(proposal)
	if err != nil {
		return d, err
	}
	if err := e.Ledger.Consume(p.RequestID); err != nil {
		return d, err
	}
	if err := op(p); err != nil {
		return d, fmt.Errorf("quorum: request %s consumed, operation failed: %w", p.RequestID, err)
	}
	return d, nil
}
