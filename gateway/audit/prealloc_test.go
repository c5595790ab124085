package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// requestLine encodes r the way the Writer does.
func requestLine(t testing.TB, r Record) []byte {
	t.Helper()
	prev := sha256.Sum256([]byte("x"))
	line, err := appendRecordLine(nil, r.Seq, r.Time, appendRecordFields(nil, &r), &prev)
	if err != nil {
		t.Fatal(err)
	}
	return line
}

func TestAppendRecordMatchesJSON(t *testing.T) {
	weird := "a\"b\\c\x00\x01\x1f\b\f\n\r\t<>&é€\u2028\u2029\xff\xc3(😀 end"
	tm := time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC)
	records := []Record{
		{},
		rec(1),
		{RequestID: weird, Principal: weird, SourceIP: weird, UserAgent: weird, Operation: weird,
			KeyID: weird, KeyARN: weird, KeyVersion: 1<<32 - 1, GrantID: weird, Outcome: OutcomeError,
			ErrorCode: weird, LatencyNS: -5,
			EncryptionContext: map[string]string{weird: weird, "": "", "b": "1", "a": "2", "\u2028": "x"}},
		{EncryptionContext: map[string]string{}}, // empty: omitted, as encoding/json does
		{RequestMetadata: map[string]string{"awsPrincipalArn": weird, "kmsOperation": "Encrypt"}, EncryptionContext: map[string]string{"a": "b"}},
		{RequestMetadata: map[string]string{}},
		{Principal: "p", LatencyNS: 1 << 62},
	}
	for i, r := range records {
		r.Kind, r.Seq, r.Time = KindRecord, uint64(i)+1, tm
		if i == 1 {
			r.Time = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC) // no fraction
		}
		prev := sha256.Sum256([]byte("x"))
		r.Prev = LineHash([]byte("x"))
		want, err := json.Marshal(&r)
		if err != nil {
			t.Fatal(err)
		}
		got, err := appendRecordLine(nil, r.Seq, r.Time, appendRecordFields(nil, &r), &prev)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("record %d:\n got %s\nwant %s", i, got, want)
		}
		if _, err := ReadRecord(got); err != nil {
			t.Errorf("record %d: %v", i, err)
		}
	}
	// A time encoding/json cannot encode fails, as json.Marshal does.
	var prev [32]byte
	if _, err := appendRecordLine(nil, 1, time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), nil, &prev); err == nil {
		t.Error("year 10000 encoded")
	}
}

func TestAppendRecordAllocs(t *testing.T) {
	r := rec(1)
	fields := make([]byte, 0, 1024)
	line := make([]byte, 0, 1024)
	var prev [32]byte
	tm := time.Now().UTC()
	allocs := testing.AllocsPerRun(100, func() {
		fields = appendRecordFields(fields[:0], &r)
		line, _ = appendRecordLine(line[:0], 1, tm, fields, &prev)
	})
	if allocs > 0 {
		t.Errorf("%v allocations per record", allocs)
	}
}

// fileSize returns the size of path.
func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

func TestPreallocatedSpace(t *testing.T) {
	key := newKey(t)
	dir := t.TempDir()
	path := filepath.Join(dir, FileName(1))
	w := openW(t, dir, key, nil)
	appendN(t, w, 0, 10)
	// While the Writer runs, the file is extended with zeros past its
	// lines: the lines end before the end of the file.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines, torn, end := splitLines(data)
	if len(lines) != 10 || torn != nil || int64(len(data)) != preallocChunk || end >= len(data) {
		t.Fatalf("%d lines, torn %q, lines end at %d of %d bytes", len(lines), torn, end, len(data))
	}
	// Readers see the lines and nothing else.
	if rep := mustVerify(t, dir, &key.PublicKey); rep.Records != 10 || rep.TornTails != 0 || rep.Unsealed != 10 {
		t.Fatalf("report %+v", *rep)
	}
	n := 0
	if err := Query(dir, Filter{}, func(Record) error { n++; return nil }); err != nil || n != 10 {
		t.Fatalf("Query: %d records, %v", n, err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// Close removes the padding: the file ends with its last line.
	data, _ = os.ReadFile(path)
	if lines, _, end := splitLines(data); len(lines) != 11 || end != len(data) || data[len(data)-1] != '\n' {
		t.Fatalf("after Close: %d lines ending at %d of %d bytes", len(lines), end, len(data))
	}
}

// TestResumeOverPadding: after a crash the newest file still holds its
// preallocated zeros; Open writes the next line where the lines end, not
// after the zeros.
func TestResumeOverPadding(t *testing.T) {
	key := newKey(t)
	dir, path := sealedLog(t, key) // 21 lines
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(make([]byte, 5000))
	f.Close()
	if rep := mustVerify(t, dir, &key.PublicKey); rep.LastSeq != 21 || rep.TornTails != 0 {
		t.Fatalf("padded file: report %+v", *rep)
	}
	w := openW(t, dir, key, nil)
	appendN(t, w, 100, 3)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if files := logFiles(t, dir); len(files) != 1 {
		t.Fatalf("%d files, want the same one", len(files))
	}
	data, _ := os.ReadFile(path)
	if bytes.IndexByte(data, 0) >= 0 {
		t.Fatal("zeros left between or after the lines")
	}
	want := Report{Files: 1, Records: 23, Checkpoints: 2, LastSeq: 25, LastCheckpointSeq: 25}
	if rep := mustVerify(t, dir, &key.PublicKey); *rep != want {
		t.Fatalf("report %+v, want %+v", *rep, want)
	}
}

// TestTornTailBeforePadding: bytes of an unacknowledged write before the
// zeros (a torn line, or lines after a hole where a crash lost a page) are
// a torn tail, never malformed lines; Open leaves the file alone and starts
// a new one; cutting the older file afterwards is still detected.
func TestTornTailBeforePadding(t *testing.T) {
	key := newKey(t)
	for _, tc := range []struct {
		name string
		tail func(next []byte) []byte // next: a valid next line with '\n'
	}{
		{"torn line", func(next []byte) []byte { return append(next[:40:40], make([]byte, 3000)...) }},
		{"hole then lines", func(next []byte) []byte {
			tail := append(make([]byte, 4096), next[50:]...)
			tail = append(tail, next...)
			return append(tail, make([]byte, 3000)...)
		}},
		{"line with a hole", func(next []byte) []byte {
			l := bytes.Clone(next)
			copy(l[20:30], make([]byte, 10))
			return append(l, make([]byte, 3000)...)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, path := sealedLog(t, key)
			orig, _ := os.ReadFile(path)
			next := append(requestLine(t, Record{Kind: KindRecord, Seq: 22, Time: time.Now().UTC(), Principal: "p"}), '\n')
			data := append(bytes.Clone(orig), tc.tail(next)...)
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			want := Report{Files: 1, Records: 20, Checkpoints: 1, LastSeq: 21, LastCheckpointSeq: 21, TornTails: 1}
			if rep := mustVerify(t, dir, &key.PublicKey); *rep != want {
				t.Fatalf("report %+v, want %+v", *rep, want)
			}
			w := openW(t, dir, key, nil)
			appendN(t, w, 100, 2)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(after, data) {
				t.Fatal("torn file was rewritten")
			}
			want = Report{Files: 2, Records: 22, Checkpoints: 2, LastSeq: 24, LastCheckpointSeq: 24, TornTails: 1}
			if rep := mustVerify(t, dir, &key.PublicKey); *rep != want {
				t.Fatalf("report %+v, want %+v", *rep, want)
			}
			// Negative twin: the older file loses its last line (the
			// padding and torn bytes stay): the next file no longer chains.
			cut := bytes.LastIndexByte(orig[:len(orig)-1], '\n') + 1
			os.WriteFile(path, append(bytes.Clone(orig[:cut]), data[len(orig):]...), 0o600)
			var ve *VerifyError
			if _, err := Verify(dir, &key.PublicKey); !errors.As(err, &ve) || ve.Reason != "truncated" || ve.File != FileName(1) {
				t.Fatalf("got %v, want truncated in %s", err, FileName(1))
			}
		})
	}
}

// TestOnlyPaddingFileIsReused: a crash right after the first write of a
// new file created its zeros but no complete line; Open reuses the file.
func TestOnlyPaddingFileIsReused(t *testing.T) {
	key := newKey(t)
	dir, _ := sealedLog(t, key) // seq 1..21
	path := filepath.Join(dir, FileName(22))
	if err := os.WriteFile(path, make([]byte, 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	if rep := mustVerify(t, dir, &key.PublicKey); rep.LastSeq != 21 || rep.TornTails != 0 {
		t.Fatalf("report %+v", *rep)
	}
	w := openW(t, dir, key, nil)
	appendN(t, w, 0, 1)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(data), `{"kind":"record","seq":22,`) || bytes.IndexByte(data, 0) >= 0 {
		t.Fatalf("file 22: %.60q", data)
	}
	if rep := mustVerify(t, dir, &key.PublicKey); rep.Files != 2 || rep.LastSeq != 23 || rep.Unsealed != 0 {
		t.Fatalf("report %+v", *rep)
	}
}

// TestAppendSequencing: concurrent appends that pile up while a group is
// being synced go out together, in seq order, each acknowledged only after
// its group's fsync (the file holds it when Append returns).
func TestAppendSequencing(t *testing.T) {
	key := newKey(t)
	dir := t.TempDir()
	w := openW(t, dir, key, nil)
	defer w.Close()
	const n = 50
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			seq, err := w.AppendSeq(context.Background(), rec(i))
			if err == nil {
				// Durable means in the file now, not only queued.
				data, _ := os.ReadFile(filepath.Join(dir, FileName(1)))
				lines, _, _ := splitLines(data)
				if uint64(len(lines)) < seq {
					err = errors.New("acknowledged before it was written")
				}
			}
			errs <- err
		}()
	}
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
