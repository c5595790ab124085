package pki

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// dirNames lists dir, to check that no temporary file is left behind.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestWriteFileAtomic(t *testing.T) {
	tests := []struct {
		name     string
		existing []byte      // nil: no file before
		oldMode  os.FileMode // of the existing file
		perm     os.FileMode
	}{
		{"new key file", nil, 0, 0o600},
		{"new certificate", nil, 0, 0o644},
		{"replace a world-readable file with a key", []byte("old contents, longer than the new"), 0o644, 0o600},
		{"replace a key with a certificate", []byte("old"), 0o600, 0o644},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "client.key")
			if tt.existing != nil {
				if err := os.WriteFile(path, tt.existing, tt.oldMode); err != nil {
					t.Fatal(err)
				}
			}
			data := []byte("new contents")
			if err := WriteFileAtomic(path, data, tt.perm); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(path)
			if err != nil || string(got) != string(data) {
				t.Errorf("contents %q, %v; want %q", got, err, data)
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode() != tt.perm {
				t.Errorf("mode %v, want %v", fi.Mode(), tt.perm)
			}
			if names := dirNames(t, dir); !slices.Equal(names, []string{"client.key"}) {
				t.Errorf("directory holds %q, want only client.key", names)
			}
		})
	}
}

func TestWriteFileAtomicRelativePath(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := WriteFileAtomic("ca.pem", []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"ca.pem"}) {
		t.Errorf("directory holds %q, want only ca.pem", names)
	}
}

func TestWriteFileAtomicFailure(t *testing.T) {
	dir := t.TempDir()
	// A directory cannot be replaced by a file: the rename fails after the
	// temporary file was written.
	target := filepath.Join(dir, "certs")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(target, []byte("x"), 0o600); err == nil {
		t.Error("replacing a directory: no error")
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"certs"}) {
		t.Errorf("directory holds %q after a failed write, want only certs", names)
	}
	if fi, err := os.Stat(target); err != nil || !fi.IsDir() {
		t.Errorf("target changed: %v, %v", fi, err)
	}

	if err := WriteFileAtomic(filepath.Join(dir, "missing", "ca.pem"), []byte("x"), 0o600); err == nil {
		t.Error("missing directory: no error")
	}
}
