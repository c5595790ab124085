package audit

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Defaults for Options.
const (
	DefaultMaxFileBytes    = 64 << 20
	DefaultMaxFileAge      = 24 * time.Hour
	DefaultCheckpointEvery = 10 * time.Second
)

// maxBatch bounds how many records one group commit takes.
const maxBatch = 1024

// ErrClosed is returned by Append after Close.
var ErrClosed = errors.New("audit: writer closed")

// Options configure a Writer. The zero value of every field except Signer
// selects the documented default (in particular, fsync is on).
type Options struct {
	// Signer is the audit signing key (ECDSA P-256 from the HSM pool in
	// production; a software key in tests). Required.
	Signer crypto.Signer
	// SignerKeyID identifies Signer; it is written to every checkpoint as
	// sig_key_id so verifiers know which public key to use.
	SignerKeyID string
	// MaxFileBytes rotates to a new file once the current one holds at
	// least this many bytes (default 64 MiB). Rotation happens between
	// lines, so a file may exceed it by one batch's last line plus a
	// checkpoint.
	MaxFileBytes int64
	// MaxFileAge rotates a file this long after its first line (default 24h).
	MaxFileAge time.Duration
	// CheckpointEvery is the checkpoint period while records are being
	// written (default 10s). Checkpoints are also written at every rotation
	// and at Close; an idle log gets no extra checkpoints.
	CheckpointEvery time.Duration
	// Now is the clock for record times (default time.Now).
	Now func() time.Time
	// NoSync turns off the fsync after every group commit (and of the
	// directory after creating a file). Syncing is the default, so it is
	// expressed as a negative flag to keep the zero Options safe. Only for
	// benchmarks and tests: without fsync "durable" only means "handed to
	// the kernel" and a power loss can lose acknowledged records.
	NoSync bool

	// openFile is a test seam for injecting I/O failures.
	openFile func(path string) (logFile, error)
}

// logFile is the part of *os.File the Writer uses.
type logFile interface {
	Write(p []byte) (int, error)
	Sync() error
	Close() error
}

func osOpenFile(path string) (logFile, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
}

type appendReq struct {
	rec  Record
	done chan appendResult
}

type appendResult struct {
	seq uint64
	err error
}

// Writer appends records to the audit log in a directory. It is safe for
// concurrent use. One background goroutine owns the file: Append hands it a
// record and waits; the goroutine takes every record pending at that moment
// (group commit), assigns seq/time/prev, writes them with one write, fsyncs
// once and then releases all their callers. Many concurrent requests
// therefore share one fsync.
//
// If a write or fsync fails, the Writer becomes failed: every waiting Append
// and every later one returns the error, and nothing more is written. The
// gateway must then refuse requests rather than serve them unaudited. The
// failed state is permanent; restart (Open again) after fixing the cause.
type Writer struct {
	dir  string
	opts Options
	sync bool

	reqs chan appendReq
	quit chan struct{}
	done chan struct{}

	// mu guards closed. Append holds it for reading while it hands a record
	// over (possibly blocking on a full queue), so the run goroutine must
	// never take it: that would deadlock against blocked senders.
	mu       sync.RWMutex
	closed   bool
	errMu    sync.Mutex // guards err; never held while blocking
	err      error
	closeErr error

	// Owned by the run goroutine after Open returns.
	f         logFile
	fileName  string
	fileSize  int64
	fileStart time.Time // time of the file's first line; zero if empty
	nextSeq   uint64
	lastHash  string
	unsealed  bool // records written since the last checkpoint
	buf       []byte
}

// Open opens (creating if needed, mode 0700) the audit log in dir and
// starts the writer goroutine.
//
// It resumes the chain after the last complete line of the newest file: it
// reads that line back, takes its seq and hash, and appends to the same file.
// If the newest file ends in a torn line (a crash mid-write), Open leaves it
// untouched and starts a new file chaining to the last complete line; a
// newest file holding only a torn fragment is renamed to "<name>.torn" (see
// the package doc). A complete last line that does not parse is an error:
// the operator must investigate (run Verify) before the gateway runs again.
//
// Open does not verify the whole log; run Verify for that.
func Open(dir string, opts Options) (*Writer, error) {
	if opts.Signer == nil {
		return nil, errors.New("audit: Options.Signer is required")
	}
	if opts.MaxFileBytes <= 0 {
		opts.MaxFileBytes = DefaultMaxFileBytes
	}
	if opts.MaxFileAge <= 0 {
		opts.MaxFileAge = DefaultMaxFileAge
	}
	if opts.CheckpointEvery <= 0 {
		opts.CheckpointEvery = DefaultCheckpointEvery
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.openFile == nil {
		opts.openFile = osOpenFile
	}
	doSync := !opts.NoSync
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	w := &Writer{
		dir:      dir,
		opts:     opts,
		sync:     doSync,
		reqs:     make(chan appendReq, maxBatch),
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
		nextSeq:  1,
		lastHash: GenesisHash,
	}
	if err := w.resume(); err != nil {
		if w.f != nil {
			w.f.Close()
		}
		return nil, fmt.Errorf("audit: open %s: %w", dir, err)
	}
	go w.run()
	return w, nil
}

// resume finds the chain tail and opens the file to append to.
func (w *Writer) resume() error {
	files, err := listFiles(w.dir)
	if err != nil {
		return err
	}
	for len(files) > 0 {
		fi := files[len(files)-1]
		path := filepath.Join(w.dir, fi.name)
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		lines, torn := splitLines(data)
		if len(lines) == 0 && len(torn) > 0 {
			// Only a torn fragment: never acknowledged, and its name is
			// needed for the file that replaces it.
			if err := os.Rename(path, path+".torn"); err != nil {
				return err
			}
			files = files[:len(files)-1]
			continue
		}
		if len(lines) == 0 {
			// Empty file (crash between create and first write): reuse it
			// once the tail of the previous file is known.
			if len(files) > 1 {
				if err := w.tailOf(files[len(files)-2]); err != nil {
					return err
				}
			}
			if w.nextSeq != fi.firstSeq {
				return fmt.Errorf("empty file %s does not follow seq %d", fi.name, w.nextSeq-1)
			}
			return w.openCurrent(fi.name, 0, time.Time{})
		}
		first, err := ReadRecord(lines[0])
		if err != nil {
			return fmt.Errorf("%s line 1: %w", fi.name, err)
		}
		last, err := ReadRecord(lines[len(lines)-1])
		if err != nil {
			return fmt.Errorf("%s line %d: %w", fi.name, len(lines), err)
		}
		if want := fi.firstSeq + uint64(len(lines)) - 1; last.Seq != want || first.Seq != fi.firstSeq {
			return fmt.Errorf("%s: seq numbers do not match the file name and line count", fi.name)
		}
		w.nextSeq = last.Seq + 1
		w.lastHash = LineHash(lines[len(lines)-1])
		w.unsealed = last.Kind == KindRecord
		if len(torn) > 0 {
			return w.openCurrent(FileName(w.nextSeq), 0, time.Time{})
		}
		return w.openCurrent(fi.name, int64(len(data)), first.Time)
	}
	return w.openCurrent(FileName(1), 0, time.Time{})
}

// tailOf loads nextSeq/lastHash from the last complete line of fi.
func (w *Writer) tailOf(fi logFileInfo) error {
	data, err := os.ReadFile(filepath.Join(w.dir, fi.name))
	if err != nil {
		return err
	}
	lines, _ := splitLines(data)
	if len(lines) == 0 {
		return fmt.Errorf("%s has no complete line", fi.name)
	}
	last, err := ReadRecord(lines[len(lines)-1])
	if err != nil {
		return fmt.Errorf("%s line %d: %w", fi.name, len(lines), err)
	}
	w.nextSeq = last.Seq + 1
	w.lastHash = LineHash(lines[len(lines)-1])
	w.unsealed = last.Kind == KindRecord
	return nil
}

func (w *Writer) openCurrent(name string, size int64, start time.Time) error {
	f, err := w.opts.openFile(filepath.Join(w.dir, name))
	if err != nil {
		return err
	}
	w.f, w.fileName, w.fileSize, w.fileStart = f, name, size, start
	if w.sync && size == 0 {
		// Make the new directory entry durable too.
		if err := syncDir(w.dir); err != nil {
			return err
		}
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Append writes r to the log and returns once it is durable (fsynced,
// unless Options disabled Sync). The Writer assigns r's Kind, Seq, Time and
// Prev; r must not be a checkpoint.
//
// If ctx ends before the record is handed to the writer goroutine, nothing
// is written and ctx's error is returned. If it ends afterwards, Append
// returns ctx's error but the record may still be written: treat any error
// as "not known to be audited" and fail the request.
func (w *Writer) Append(ctx context.Context, r Record) error {
	_, err := w.AppendSeq(ctx, r)
	return err
}

// AppendSeq is Append that also returns the seq assigned to the record
// (useful for correlating a request with its audit line).
func (w *Writer) AppendSeq(ctx context.Context, r Record) (uint64, error) {
	if r.Kind != "" && r.Kind != KindRecord {
		return 0, fmt.Errorf("audit: cannot append kind %q", r.Kind)
	}
	req := appendReq{rec: r, done: make(chan appendResult, 1)}
	w.mu.RLock()
	if w.closed {
		w.mu.RUnlock()
		return 0, ErrClosed
	}
	if err := w.Err(); err != nil {
		w.mu.RUnlock()
		return 0, err
	}
	select {
	case w.reqs <- req:
		w.mu.RUnlock()
	case <-ctx.Done():
		w.mu.RUnlock()
		return 0, ctx.Err()
	}
	select {
	case res := <-req.done:
		return res.seq, res.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Err returns the error that failed the Writer, or nil.
func (w *Writer) Err() error {
	w.errMu.Lock()
	defer w.errMu.Unlock()
	return w.err
}

// Close stops accepting records, commits those already handed over, writes a
// final checkpoint (if any record is unsealed), syncs and closes the file. It
// returns the Writer's failure error, if any. Close is idempotent.
func (w *Writer) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		<-w.done
		return w.closeErr
	}
	// After this no Append is between its closed check and its send, so
	// everything sent is already in w.reqs.
	w.closed = true
	w.mu.Unlock()
	close(w.quit)
	<-w.done
	return w.closeErr
}

func (w *Writer) fail(err error) {
	w.errMu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.errMu.Unlock()
}

func (w *Writer) run() {
	defer close(w.done)
	ticker := time.NewTicker(w.opts.CheckpointEvery)
	defer ticker.Stop()
	batch := make([]appendReq, 0, maxBatch)
	for {
		select {
		case req := <-w.reqs:
			batch = append(batch[:0], req)
		drain:
			for len(batch) < maxBatch {
				select {
				case req := <-w.reqs:
					batch = append(batch, req)
				default:
					break drain
				}
			}
			w.commit(batch)
		case <-ticker.C:
			if w.Err() == nil && (w.unsealed || w.tooOld()) {
				if err := w.checkpointAndMaybeRotate(); err != nil {
					w.fail(err)
				}
			}
		case <-w.quit:
			// Close holds no Append in flight: drain what was handed over.
			for len(w.reqs) > 0 {
				batch = batch[:0]
				for len(batch) < maxBatch && len(w.reqs) > 0 {
					batch = append(batch, <-w.reqs)
				}
				w.commit(batch)
			}
			err := w.Err()
			if err == nil && w.unsealed {
				if err = w.addCheckpoint(); err == nil {
					err = w.flush()
				}
			}
			if cerr := w.f.Close(); err == nil && cerr != nil {
				err = cerr
			}
			if err != nil {
				w.fail(err)
			}
			w.closeErr = w.Err()
			return
		}
	}
}

func (w *Writer) tooOld() bool {
	return !w.fileStart.IsZero() && w.opts.Now().Sub(w.fileStart) >= w.opts.MaxFileAge
}

// checkpointAndMaybeRotate writes a periodic checkpoint, rotating first if
// the file is due (rotation writes the checkpoint itself).
func (w *Writer) checkpointAndMaybeRotate() error {
	if w.tooOld() {
		return w.rotate()
	}
	if err := w.addCheckpoint(); err != nil {
		return err
	}
	return w.flush()
}

// commit writes one batch and answers its callers.
func (w *Writer) commit(batch []appendReq) {
	if err := w.Err(); err != nil {
		for _, req := range batch {
			req.done <- appendResult{err: err}
		}
		return
	}
	seqs := make([]uint64, len(batch))
	var err error
	for i := range batch {
		if size := w.fileSize + int64(len(w.buf)); size > 0 && (size >= w.opts.MaxFileBytes || w.tooOld()) {
			if err = w.rotate(); err != nil {
				break
			}
		}
		r := batch[i].rec
		r.Kind = KindRecord
		r.Signature, r.SigKeyID = "", ""
		if seqs[i], err = w.addLine(&r); err != nil {
			// A record that cannot be encoded fails the writer too:
			// silently dropping audit records is never acceptable.
			break
		}
		w.unsealed = true
	}
	if err == nil {
		err = w.flush()
	}
	if err != nil {
		err = fmt.Errorf("audit: %w", err)
		w.fail(err)
		for _, req := range batch {
			req.done <- appendResult{err: err}
		}
		return
	}
	for i, req := range batch {
		req.done <- appendResult{seq: seqs[i]}
	}
}

// addLine assigns seq/time/prev to r, encodes it into w.buf and advances the
// chain state. Nothing is on disk until flush.
func (w *Writer) addLine(r *Record) (uint64, error) {
	r.Seq = w.nextSeq
	r.Time = w.opts.Now().UTC()
	r.Prev = w.lastHash
	line, err := marshalLine(r)
	if err != nil {
		return 0, err
	}
	if w.fileStart.IsZero() {
		w.fileStart = r.Time
	}
	w.buf = append(w.buf, line...)
	w.buf = append(w.buf, '\n')
	w.lastHash = LineHash(line)
	w.nextSeq++
	return r.Seq, nil
}

func (w *Writer) addCheckpoint() error {
	seq := w.nextSeq
	sig, err := signCheckpoint(w.opts.Signer, seq, w.lastHash)
	if err != nil {
		return fmt.Errorf("sign checkpoint: %w", err)
	}
	cp := Record{Kind: KindCheckpoint, Signature: sig, SigKeyID: w.opts.SignerKeyID}
	if _, err := w.addLine(&cp); err != nil {
		return err
	}
	w.unsealed = false
	return nil
}

// flush writes w.buf with one write and fsyncs.
func (w *Writer) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	n, err := w.f.Write(w.buf)
	w.fileSize += int64(n)
	if err == nil && n != len(w.buf) {
		err = errors.New("short write")
	}
	w.buf = w.buf[:0]
	if err != nil {
		return fmt.Errorf("write %s: %w", w.fileName, err)
	}
	if w.sync {
		if err := datasync(w.f); err != nil {
			return fmt.Errorf("fsync %s: %w", w.fileName, err)
		}
	}
	return nil
}

// rotate seals the current file with a checkpoint, makes it durable, closes
// it and starts the next file, named after the next seq.
func (w *Writer) rotate() error {
	if err := w.addCheckpoint(); err != nil {
		return err
	}
	if err := w.flush(); err != nil {
		return err
	}
	if err := w.f.Close(); err != nil {
		return err
	}
	return w.openCurrent(FileName(w.nextSeq), 0, time.Time{})
}

// datasync flushes a file's data and the metadata needed to read it back
// (its size), without the timestamps fsync also writes: fdatasync(2) where
// the file is an *os.File.
func datasync(f logFile) error {
	if osf, ok := f.(*os.File); ok {
		for {
			err := unix.Fdatasync(int(osf.Fd()))
			if err != unix.EINTR {
				return err
			}
		}
	}
	return f.Sync()
}
