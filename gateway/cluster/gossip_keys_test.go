package cluster

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGossipKeyringFile(t *testing.T) {
	k1, k2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 16)
	dir := t.TempDir()
	path := filepath.Join(dir, "gossip.keys")
	if err := WriteGossipKeyring(path, [][]byte{k1, k2}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, %v; want 0600", fi.Mode(), err)
	}
	keys, err := LoadGossipKeyring(path)
	if err != nil || len(keys) != 2 || !bytes.Equal(keys[0], k1) || !bytes.Equal(keys[1], k2) {
		t.Fatalf("LoadGossipKeyring = %x, %v", keys, err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadGossipKeyring(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a group-readable keyring: %v", err)
	}

	b64 := base64.StdEncoding.EncodeToString
	ok := "# comment\n\n  " + b64(k1) + "  \n" + b64(k2) + "\n"
	if keys, err := ParseGossipKeyring([]byte(ok)); err != nil || len(keys) != 2 {
		t.Errorf("comments and blank lines: %d keys, %v", len(keys), err)
	}
	for name, content := range map[string]string{
		"empty":         "",
		"only comments": "# nothing\n",
		"not base64":    "not a key!\n",
		"URL base64":    strings.ReplaceAll(strings.ReplaceAll(b64(bytes.Repeat([]byte{0xfb}, 32)), "+", "-"), "/", "_") + "\n",
		"short key":     b64(make([]byte, 15)) + "\n",
		"long key":      b64(make([]byte, 33)) + "\n",
		"repeated key":  b64(k1) + "\n" + b64(k1) + "\n",
		"huge line":     strings.Repeat("A", 100000) + "\n",
	} {
		t.Run(name, func(t *testing.T) {
			keys, err := ParseGossipKeyring([]byte(content))
			if !errors.Is(err, ErrGossipKeyring) || keys != nil {
				t.Fatalf("ParseGossipKeyring = %d keys, %v; want ErrGossipKeyring", len(keys), err)
			}
			if strings.Contains(err.Error(), b64(k1)) {
				t.Errorf("the error shows a key: %v", err)
			}
		})
	}
	if a, b := GossipKeyFingerprint(k1), GossipKeyFingerprint(k2); len(a) != 16 || a == b || strings.Contains(b64(k1), a) {
		t.Errorf("fingerprints %s %s", a, b)
	}
}

// FuzzGossipKeyring: no keyring file content panics the parser, and what
// parses formats to a file that parses to the same keys.
func FuzzGossipKeyring(f *testing.F) {
	f.Add([]byte(FormatGossipKeyring([][]byte{bytes.Repeat([]byte{7}, 32), bytes.Repeat([]byte{8}, 24)})))
	f.Add([]byte("# c\n\nAAAAAAAAAAAAAAAAAAAAAA==\n"))
	f.Add([]byte("AAAA\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := ParseGossipKeyring(b)
		if err != nil {
			if keys != nil || !errors.Is(err, ErrGossipKeyring) {
				t.Fatalf("ParseGossipKeyring = %x, %v", keys, err)
			}
			return
		}
		again, err := ParseGossipKeyring(FormatGossipKeyring(keys))
		if err != nil || len(again) != len(keys) {
			t.Fatalf("re-parse: %d keys, %v; want %d", len(again), err, len(keys))
		}
		for i := range keys {
			if !bytes.Equal(again[i], keys[i]) {
				t.Fatalf("key %d changed", i)
			}
		}
	})
}
