package cluster

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/hashicorp/memberlist"

	"github.com/hsmgate/hsmgate/internal/pki"
)

// The gossip keyring: the keys of the pool's encryption, how they are kept
// in a file, and their rotation.
//
// # Keyring file
//
// Text, one key per line in standard Base64 (16, 24 or 32 bytes: AES-128,
// -192 or -256), the primary key first; blank lines and lines starting
// with # are ignored. It must not be readable by group or others (mode
// 0600). For example:
//
//	# hsmgate gossip keyring: the first key encrypts, all decrypt
//	3q2+7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=
//
// # Rotation
//
// Every node must be able to decrypt what any node sends, so a key changes
// in three rounds, each done on every node before the next begins:
//
//  1. InstallKey(new) on every node: all decrypt with old and new;
//  2. UseKey(new) on every node: all encrypt with new;
//  3. RemoveKey(old) on every node.
//
// Each step rewrites GossipConfig.KeyringFile when one is set.

// GenerateGossipKey returns a new random AES-256 gossip key.
func GenerateGossipKey() ([]byte, error) {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	return k, nil
}

// GossipKeyFingerprint names a gossip key without revealing it: the first
// 8 bytes of SHA-256 over a domain tag and the key, in hex.
func GossipKeyFingerprint(key []byte) string {
	h := sha256.New()
	h.Write([]byte("hsmgate.gossip.key.v1\x00"))
	h.Write(key)
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// ErrGossipKeyring wraps every error of ParseGossipKeyring.
var ErrGossipKeyring = errors.New("cluster: bad gossip keyring")

// ParseGossipKeyring parses a keyring file's content: the keys, the
// primary first. Errors name lines, never keys.
func ParseGossipKeyring(b []byte) ([][]byte, error) {
	var keys [][]byte
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 1024), 64<<10)
	line := 0
	for sc.Scan() {
		line++
		s := bytes.TrimSpace(sc.Bytes())
		if len(s) == 0 || s[0] == '#' {
			continue
		}
		k := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
		n, err := base64.StdEncoding.Strict().Decode(k, s)
		if err != nil {
			return nil, fmt.Errorf("%w: line %d is not standard Base64", ErrGossipKeyring, line)
		}
		k = k[:n]
		if memberlist.ValidateKey(k) != nil {
			return nil, fmt.Errorf("%w: line %d: a key of %d bytes, want 16, 24 or 32", ErrGossipKeyring, line, n)
		}
		if slices.ContainsFunc(keys, func(o []byte) bool { return bytes.Equal(o, k) }) {
			return nil, fmt.Errorf("%w: line %d repeats a key", ErrGossipKeyring, line)
		}
		keys = append(keys, k)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: line %d: %v", ErrGossipKeyring, line+1, err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no key", ErrGossipKeyring)
	}
	return keys, nil
}

// LoadGossipKeyring reads a keyring file, which must not be readable by
// group or others.
func LoadGossipKeyring(path string) ([][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("cluster: the gossip keyring %s is readable by others (mode %04o): chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	defer clear(b)
	keys, err := ParseGossipKeyring(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return keys, nil
}

// FormatGossipKeyring is the keyring file content for keys, the primary
// first.
func FormatGossipKeyring(keys [][]byte) []byte {
	var b bytes.Buffer
	b.WriteString("# hsmgate gossip keyring: one Base64 key a line, the first encrypts, all decrypt (docs/cluster.md)\n")
	for _, k := range keys {
		b.WriteString(base64.StdEncoding.EncodeToString(k))
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// WriteGossipKeyring writes a keyring file atomically, mode 0600.
func WriteGossipKeyring(path string, keys [][]byte) error {
	b := FormatGossipKeyring(keys)
	defer clear(b)
	return pki.WriteFileAtomic(path, b, 0o600)
}

// GossipKeys returns the fingerprints of the keyring's keys, the primary
// first.
func (g *Gossip) GossipKeys() []string {
	g.keyMu.Lock()
	defer g.keyMu.Unlock()
	var out []string
	for _, k := range g.keyring.GetKeys() {
		out = append(out, GossipKeyFingerprint(k))
	}
	return out
}

// InstallKey adds a key to the keyring: it decrypts from now on, and
// UseKey can make it the primary.
func (g *Gossip) InstallKey(key []byte) error {
	if err := memberlist.ValidateKey(key); err != nil {
		return fmt.Errorf("cluster: install gossip key: %d bytes, want 16, 24 or 32", len(key))
	}
	g.keyMu.Lock()
	defer g.keyMu.Unlock()
	if err := g.keyring.AddKey(bytes.Clone(key)); err != nil {
		return fmt.Errorf("cluster: install gossip key %s: %w", GossipKeyFingerprint(key), err)
	}
	return g.saveKeysLocked("install gossip key " + GossipKeyFingerprint(key))
}

// UseKey makes an installed key the primary one, which encrypts
// everything this node sends.
func (g *Gossip) UseKey(key []byte) error {
	g.keyMu.Lock()
	defer g.keyMu.Unlock()
	// memberlist keeps the slice it is given as the primary key: give it
	// a copy of its own, never the caller's (which may be zeroed after).
	if err := g.keyring.UseKey(bytes.Clone(key)); err != nil {
		return fmt.Errorf("cluster: use gossip key %s: it is not installed", GossipKeyFingerprint(key))
	}
	return g.saveKeysLocked("use gossip key " + GossipKeyFingerprint(key))
}

// RemoveKey removes a key from the keyring. The primary key can't be
// removed: UseKey another first.
func (g *Gossip) RemoveKey(key []byte) error {
	g.keyMu.Lock()
	defer g.keyMu.Unlock()
	keys := slices.Clone(g.keyring.GetKeys())
	i := slices.IndexFunc(keys, func(k []byte) bool { return bytes.Equal(k, key) })
	switch {
	case i < 0:
		return fmt.Errorf("cluster: remove gossip key %s: it is not installed", GossipKeyFingerprint(key))
	case i == 0:
		return fmt.Errorf("cluster: remove gossip key %s: it is the primary key; make another one primary first (UseKey)", GossipKeyFingerprint(key))
	}
	// memberlist's Keyring.RemoveKey shifts the keys after the removed one
	// in place, under the feet of a decryption iterating them at that
	// moment. Removing the last key shifts nothing, so the keys after it
	// are taken off (from the end) and put back after.
	after := keys[i+1:]
	for j := len(after) - 1; j >= 0; j-- {
		if err := g.keyring.RemoveKey(after[j]); err != nil {
			return fmt.Errorf("cluster: remove gossip key: %w", err)
		}
	}
	if err := g.keyring.RemoveKey(key); err != nil {
		return fmt.Errorf("cluster: remove gossip key %s: %w", GossipKeyFingerprint(key), err)
	}
	for _, k := range after {
		if err := g.keyring.AddKey(k); err != nil {
			return fmt.Errorf("cluster: remove gossip key: put back key %s: %w", GossipKeyFingerprint(k), err)
		}
	}
	return g.saveKeysLocked("remove gossip key " + GossipKeyFingerprint(key))
}

// saveKeysLocked rewrites the keyring file, if any. keyMu is held.
func (g *Gossip) saveKeysLocked(what string) error {
	if g.cfg.KeyringFile == "" {
		g.log.Info(what)
		return nil
	}
	if err := WriteGossipKeyring(g.cfg.KeyringFile, g.keyring.GetKeys()); err != nil {
		return fmt.Errorf("cluster: %s: done in memory, but the keyring file %s could not be written: %w", what, g.cfg.KeyringFile, err)
	}
	g.log.Info(what, "keyring_file", g.cfg.KeyringFile)
	return nil
}
