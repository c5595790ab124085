package pki

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteFileAtomic replaces the file at path with data, so that a reader,
// or the file system after a crash, sees either the old file or the
// complete new one.
//
// It writes a temporary file in path's directory (hidden, named after
// path), sets its mode to perm before writing any data, writes and fsyncs
// it, renames it over path and fsyncs the directory. Unlike os.WriteFile,
// the umask does not apply: the file ends up with exactly perm, and an
// existing file's mode and owner are not kept. If path is a symbolic link,
// the link itself is replaced. On failure the temporary file is removed
// and path is left as it was.
//
// Use 0600 for private keys and 0644 for certificates.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if err := replaceFile(dir, base, path, data, perm); err != nil {
		return fmt.Errorf("pki: WriteFileAtomic %s: %w", path, err)
	}
	// Make the rename itself durable. path already holds the new contents,
	// so a failure here is reported but nothing is undone.
	d, err := os.Open(dir)
	if err == nil {
		err = d.Sync()
		d.Close()
	}
	if err != nil {
		return fmt.Errorf("pki: WriteFileAtomic %s: written, but syncing the directory failed: %w", path, err)
	}
	return nil
}

// replaceFile writes data to a new temporary file in dir and renames it to
// path, removing the temporary file if anything fails.
func replaceFile(dir, base, path string, data []byte, perm os.FileMode) (err error) {
	// CreateTemp creates the file with mode 0600, so it is never wider than
	// that before the Chmod below.
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close() // may already be closed; err is the first failure
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
