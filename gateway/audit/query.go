package audit

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Filter selects records for Query. Empty string fields and zero times match
// everything; set fields must all match (AND).
type Filter struct {
	KeyID     string    // exact match on Record.KeyID
	Principal string    // exact match on Record.Principal
	Operation string    // exact match on Record.Operation
	From      time.Time // Record.Time >= From (inclusive)
	To        time.Time // Record.Time < To (exclusive)
}

func (f *Filter) match(r *Record) bool {
	return (f.KeyID == "" || r.KeyID == f.KeyID) &&
		(f.Principal == "" || r.Principal == f.Principal) &&
		(f.Operation == "" || r.Operation == f.Operation) &&
		(f.From.IsZero() || !r.Time.Before(f.From)) &&
		(f.To.IsZero() || r.Time.Before(f.To))
}

// Query calls fn, in seq order, for every request record in dir matching f.
// Checkpoints are not passed to fn. If fn returns an error, Query stops and
// returns it.
//
// Query does NOT verify the log: it neither checks the hash chain nor
// checkpoint signatures, so its results are only as trustworthy as the files
// are. It is meant for operators' searches; run Verify first when the answer
// matters (investigations, evidence). A complete line that does not parse is
// an error; a torn tail and preallocated space (see [Verify]) are skipped.
// Query may run while a Writer appends; it sees a prefix of the log.
func Query(dir string, f Filter, fn func(Record) error) error {
	files, err := listFiles(dir)
	if err != nil {
		return fmt.Errorf("audit: query: %w", err)
	}
	for _, fi := range files {
		data, err := os.ReadFile(filepath.Join(dir, fi.name))
		if err != nil {
			return fmt.Errorf("audit: query: %w", err)
		}
		lines, _, _ := splitLines(data)
		for i, line := range lines {
			r, err := ReadRecord(line)
			if err != nil {
				return fmt.Errorf("audit: query: %s line %d: %w", fi.name, i+1, err)
			}
			if r.Kind != KindRecord || !f.match(&r) {
				continue
			}
			if err := fn(r); err != nil {
				return err
			}
		}
	}
	return nil
}
