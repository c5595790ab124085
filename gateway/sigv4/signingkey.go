package sigv4

import (
	"crypto/hmac"
	"crypto/sha256"
	"strings"
	"sync"
)

// DefaultKeyCacheSize is the number of derived signing keys a Verifier keeps
// when KeyCacheSize is zero.
const DefaultKeyCacheSize = 1024

// deriveSigningKey computes the SigV4 signing key:
//
//	kDate    = HMAC("AWS4" + secret, date)
//	kRegion  = HMAC(kDate, region)
//	kService = HMAC(kRegion, service)
//	kSigning = HMAC(kService, "aws4_request")
func deriveSigningKey(secret, date, region, service string) [32]byte {
	k := make([]byte, 0, 4+len(secret))
	k = append(k, "AWS4"...)
	k = append(k, secret...)
	var key [32]byte
	mac := hmac.New(sha256.New, k)
	clear(k)
	for _, s := range [...]string{date, region, service, terminator} {
		mac.Write([]byte(s))
		mac.Sum(key[:0])
		mac = hmac.New(sha256.New, key[:])
	}
	return key
}

// keyCacheKey identifies a derived key. Region and service are part of it
// although a Verifier has one of each, so a cache entry can never be used
// for a scope it was not derived for.
type keyCacheKey struct {
	accessKeyID, date, region, service string
}

type keyCacheEntry struct {
	secret string // to notice a rotated secret; compared in constant time
	key    [32]byte
}

// keyCache is a bounded map of derived signing keys. Lookups take a read
// lock only. When full, an arbitrary entry (Go's map iteration order is
// randomized) is evicted: keys are per day, so stale entries are never hot,
// and no access order needs updating on the read path.
type keyCache struct {
	mu  sync.RWMutex
	m   map[keyCacheKey]*keyCacheEntry
	max int
}

func newKeyCache(max int) *keyCache {
	if max <= 0 {
		max = DefaultKeyCacheSize
	}
	return &keyCache{m: make(map[keyCacheKey]*keyCacheEntry), max: max}
}

// signingKey returns the signing key for secret and the scope in k, from
// the cache when an entry exists for k and was derived from the same secret.
func (c *keyCache) signingKey(k keyCacheKey, secret string) [32]byte {
	c.mu.RLock()
	e := c.m[k]
	c.mu.RUnlock()
	if e != nil && sameSecret(e.secret, secret) {
		return e.key
	}
	key := deriveSigningKey(secret, k.date, k.region, k.service)
	// The map keys are sub-strings of the request's Authorization header;
	// clone them so the cache does not keep request memory alive.
	k = keyCacheKey{
		accessKeyID: strings.Clone(k.accessKeyID),
		date:        strings.Clone(k.date),
		region:      strings.Clone(k.region),
		service:     strings.Clone(k.service),
	}
	c.mu.Lock()
	if _, ok := c.m[k]; !ok && len(c.m) >= c.max {
		for old := range c.m {
			delete(c.m, old)
			break
		}
	}
	c.m[k] = &keyCacheEntry{secret: secret, key: key}
	c.mu.Unlock()
	return key
}

func (c *keyCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

// sameSecret compares two secrets without an early exit. Both come from the
// server side (the cache and the Lookup), so this is hygiene rather than a
// defence against a timing oracle.
func sameSecret(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	var v byte
	for i := 0; i < len(a); i++ {
		v |= a[i] ^ b[i]
	}
	return v == 0
}
