package hsmpool

import (
	"sync"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/miekg/pkcs11"
)

// cacheKey names one usable object on a slot: a key version's private or
// secret half, or its public half.
type cacheKey struct {
	id      string
	version uint32
	tag     uint64 // digest of the blob
	public  bool
}

// keyEntry is an unwrapped key (a session object of the slot's control
// session). refs counts the calls using it; an entry evicted while in use is
// destroyed by the last of them.
type keyEntry struct {
	obj     pkcs11.ObjectHandle
	gen     uint64
	refs    int
	evicted bool
}

// keyCache is a bounded LRU of unwrapped keys on one slot. It never outlives
// a reset: purge drops every entry (the objects died with the old control
// session), so handles are never trusted across resets.
type keyCache struct {
	mu      sync.Mutex
	lru     *simplelru.LRU[cacheKey, *keyEntry]
	destroy func(*keyEntry) // called without mu, for an evicted entry no one uses
	pending []*keyEntry     // evicted during an Add, to destroy after unlock
}

func newKeyCache(size int, destroy func(*keyEntry)) *keyCache {
	c := &keyCache{destroy: destroy}
	c.lru, _ = simplelru.NewLRU[cacheKey, *keyEntry](size, func(_ cacheKey, e *keyEntry) {
		e.evicted = true
		if e.refs == 0 {
			c.pending = append(c.pending, e)
		}
	})
	return c
}

// get returns the entry for k with a reference taken, or nil.
func (c *keyCache) get(k cacheKey, gen uint64) *keyEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.lru.Get(k)
	if !ok || e.gen != gen {
		return nil
	}
	e.refs++
	return e
}

// add stores a new entry for k with one reference taken (the caller's) and
// returns it; if another caller added k first, obj is handed back for
// destruction and the existing entry is returned instead.
func (c *keyCache) add(k cacheKey, obj pkcs11.ObjectHandle, gen uint64) (e *keyEntry, dup bool) {
	c.mu.Lock()
	if old, ok := c.lru.Get(k); ok && old.gen == gen {
		old.refs++
		c.mu.Unlock()
		return old, true
	}
	e = &keyEntry{obj: obj, gen: gen, refs: 1}
	c.lru.Add(k, e)
	pending := c.pending
	c.pending = nil
	c.mu.Unlock()
	for _, p := range pending {
		c.destroy(p)
	}
	return e, false
}

// release drops a reference.
func (c *keyCache) release(e *keyEntry) {
	c.mu.Lock()
	e.refs--
	last := e.evicted && e.refs == 0
	c.mu.Unlock()
	if last {
		c.destroy(e)
	}
}

// remove evicts k (its handle proved stale).
func (c *keyCache) remove(k cacheKey) {
	c.mu.Lock()
	c.lru.Remove(k)
	pending := c.pending
	c.pending = nil
	c.mu.Unlock()
	for _, p := range pending {
		c.destroy(p)
	}
}

// purge forgets every entry without destroying objects: used by reset, when
// the control session that owned them is being closed.
func (c *keyCache) purge() {
	c.mu.Lock()
	for _, k := range c.lru.Keys() {
		if e, ok := c.lru.Peek(k); ok {
			e.evicted = true
			e.refs = -1 << 30 // never destroyed by release: its session is gone
		}
	}
	c.lru.Purge()
	c.pending = nil
	c.mu.Unlock()
}

func (c *keyCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}
