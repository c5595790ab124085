package audit

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
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

// preallocChunk is the step in which the Writer extends a file with zero
// bytes past the end of its lines (see the package doc, "Preallocated
// space").
const preallocChunk = 1 << 20

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
	// least this many bytes of lines (default 64 MiB). Rotation happens
	// between lines, before the record that would go past the limit, so a
	// file may exceed it by one line plus a checkpoint.
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

// logFile is the part of *os.File the Writer uses. Preallocation and
// fdatasync are used only when it is an *os.File (the Writer then calls
// pwritev(2) and fdatasync(2) on its descriptor).
type logFile interface {
	WriteAt(p []byte, off int64) (int, error)
	Sync() error
	Truncate(size int64) error
	Close() error
}

func osOpenFile(path string) (logFile, error) {
	// Not O_APPEND: the Writer writes at the end of its lines, which is
	// before the end of the file when space is preallocated.
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
}

// waiter is an Append waiting for its record to be durable.
type waiter struct {
	seq  uint64
	done chan error // buffered (1): the flusher never blocks on it
}

var waiterPool = sync.Pool{New: func() any { return &waiter{done: make(chan error, 1)} }}

// fieldsPool holds buffers for appendRecordFields.
var fieldsPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// Writer appends records to the audit log in a directory. It is safe for
// concurrent use.
//
// Append encodes its record and gives it its place in the chain (seq, time,
// prev) itself, under a short lock, and adds it to the pending lines. One
// background goroutine, the flusher, owns the file: it takes every pending
// line at once (group commit), writes them with one write, fdatasyncs once
// and then releases all their callers. Lines that arrive while it syncs are
// encoded meanwhile and form the next group, so many concurrent requests
// share one fsync and the flusher never waits for encoding.
//
// If a write or fsync fails, the Writer becomes failed: every waiting Append
// and every later one returns the error, and nothing more is written. The
// gateway must then refuse requests rather than serve them unaudited. The
// failed state is permanent; restart (Open again) after fixing the cause.
type Writer struct {
	dir  string
	opts Options
	sync bool

	kick chan struct{} // buffered (1): pending lines or a rotation for the flusher
	quit chan struct{}
	done chan struct{}

	mu       sync.Mutex
	rotated  sync.Cond // on mu: broadcast when a rotation ends
	closeErr error     // set by the flusher before done is closed

	// Guarded by mu: the chain and the lines not yet taken by the flusher.
	closed    bool
	err       error
	idle      bool // the flusher waits for a kick
	rotating  bool // the flusher rotates next; Append waits for it
	nextSeq   uint64
	lastHash  [32]byte
	unsealed  bool      // records since the last checkpoint
	fileStart time.Time // time of the first line of the file lines go to; zero if none
	fileBytes int64     // bytes of lines in that file, pending ones included
	pend      []byte    // encoded lines, each with its '\n'
	pendW     []*waiter // the callers of the records in pend, in order

	// Owned by the flusher (and by Open before it starts).
	f        logFile
	fileName string
	off      int64  // end of the lines in f: where the next write goes
	size     int64  // size of f; bytes from off to size are preallocated zeros
	zeros    []byte // preallocChunk zero bytes, for extending the file
	spare    []byte
	spareW   []*waiter
}

// Open opens (creating if needed, mode 0700) the audit log in dir and
// starts the writer goroutine.
//
// It resumes the chain after the last complete line of the newest file: it
// reads that line back, takes its seq and hash, and writes after it in the
// same file (over the file's preallocated space, if any). If the newest
// file ends in a torn tail (a crash mid-write), Open leaves it untouched and
// starts a new file chaining to the last complete line; a newest file
// holding only a torn fragment is renamed to "<name>.torn" (see the package
// doc). A complete last line that does not parse is an error: the operator
// must investigate (run Verify) before the gateway runs again.
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
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	w := &Writer{
		dir:     dir,
		opts:    opts,
		sync:    !opts.NoSync,
		kick:    make(chan struct{}, 1),
		quit:    make(chan struct{}),
		done:    make(chan struct{}),
		idle:    true,
		nextSeq: 1,
	}
	w.rotated.L = &w.mu
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
		lines, torn, end := splitLines(data)
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
			// Empty file, or only preallocated space (crash before the
			// first write): reuse it once the tail of the previous file is
			// known.
			if len(files) > 1 {
				if err := w.tailOf(files[len(files)-2]); err != nil {
					return err
				}
			}
			if w.nextSeq != fi.firstSeq {
				return fmt.Errorf("empty file %s does not follow seq %d", fi.name, w.nextSeq-1)
			}
			return w.openCurrent(fi.name, 0, int64(len(data)), time.Time{})
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
		w.lastHash = sha256.Sum256(lines[len(lines)-1])
		w.unsealed = last.Kind == KindRecord
		if len(torn) > 0 {
			return w.openCurrent(FileName(w.nextSeq), 0, 0, time.Time{})
		}
		return w.openCurrent(fi.name, int64(end), int64(len(data)), first.Time)
	}
	return w.openCurrent(FileName(1), 0, 0, time.Time{})
}

// tailOf loads nextSeq/lastHash from the last complete line of fi.
func (w *Writer) tailOf(fi logFileInfo) error {
	data, err := os.ReadFile(filepath.Join(w.dir, fi.name))
	if err != nil {
		return err
	}
	lines, _, _ := splitLines(data)
	if len(lines) == 0 {
		return fmt.Errorf("%s has no complete line", fi.name)
	}
	last, err := ReadRecord(lines[len(lines)-1])
	if err != nil {
		return fmt.Errorf("%s line %d: %w", fi.name, len(lines), err)
	}
	w.nextSeq = last.Seq + 1
	w.lastHash = sha256.Sum256(lines[len(lines)-1])
	w.unsealed = last.Kind == KindRecord
	return nil
}

// openCurrent opens the file lines go to: off is where its lines end, size
// its size and start the time of its first line (zero if it has none).
func (w *Writer) openCurrent(name string, off, size int64, start time.Time) error {
	f, err := w.opts.openFile(filepath.Join(w.dir, name))
	if err != nil {
		return err
	}
	w.f, w.fileName, w.off, w.size = f, name, off, size
	w.fileStart, w.fileBytes = start, off
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
// If ctx has ended when Append is called, nothing is written and ctx's
// error is returned. If it ends while Append waits, Append returns ctx's
// error but the record may still be written: treat any error as "not known
// to be audited" and fail the request.
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
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	// Encode the request's own fields before taking the lock.
	fb := fieldsPool.Get().(*[]byte)
	fields := appendRecordFields((*fb)[:0], &r)
	wt := waiterPool.Get().(*waiter)

	w.mu.Lock()
	err := w.addRecordLocked(fields, wt)
	w.mu.Unlock()
	*fb = fields
	fieldsPool.Put(fb)
	if err != nil {
		waiterPool.Put(wt)
		return 0, err
	}
	select {
	case err := <-wt.done:
		seq := wt.seq
		waiterPool.Put(wt)
		return seq, err
	case <-ctx.Done():
		// wt stays with the flusher, which will still answer it.
		return 0, ctx.Err()
	}
}

// addRecordLocked gives a record its place in the chain, adds its line to
// the pending lines and wt to their waiters, and wakes the flusher if it is
// idle. A rotation that is due is done first (by the flusher; Append waits).
func (w *Writer) addRecordLocked(fields []byte, wt *waiter) error {
	for {
		if w.closed {
			return ErrClosed
		}
		if w.err != nil {
			return w.err
		}
		if w.rotating {
			w.rotated.Wait()
			continue
		}
		now := w.opts.Now().UTC()
		if w.fileBytes > 0 && (w.fileBytes >= w.opts.MaxFileBytes || w.tooOld(now)) {
			w.rotating = true
			w.wakeLocked()
			continue
		}
		start := len(w.pend)
		var err error
		w.pend, err = appendRecordLine(w.pend, w.nextSeq, now, fields, &w.lastHash)
		if err != nil {
			// A record that cannot be encoded fails the writer: silently
			// dropping audit records is never acceptable.
			w.pend = w.pend[:start]
			w.failLocked(fmt.Errorf("audit: %w", err))
			return w.err
		}
		w.lastHash = sha256.Sum256(w.pend[start:])
		w.pend = append(w.pend, '\n')
		wt.seq = w.nextSeq
		w.nextSeq++
		w.pendW = append(w.pendW, wt)
		w.unsealed = true
		if w.fileStart.IsZero() {
			w.fileStart = now
		}
		w.fileBytes += int64(len(w.pend) - start)
		w.wakeLocked()
		return nil
	}
}

// wakeLocked kicks the flusher if it is waiting for work. A kick may
// already be buffered (the flusher also flushes on its ticker and at
// Close, and then marks itself idle): one is enough, as the flusher looks
// at the pending lines, under mu, after taking it.
func (w *Writer) wakeLocked() {
	if w.idle {
		w.idle = false
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
}

func (w *Writer) tooOld(now time.Time) bool {
	return !w.fileStart.IsZero() && now.Sub(w.fileStart) >= w.opts.MaxFileAge
}

// Err returns the error that failed the Writer, or nil.
func (w *Writer) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Close stops accepting records, commits those already appended, writes a
// final checkpoint (if any record is unsealed), removes the file's
// preallocated space, syncs and closes the file. It returns the Writer's
// failure error, if any. Close is idempotent.
func (w *Writer) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		<-w.done
		return w.closeErr
	}
	// Every Append that got a place in the chain is in pend now; later
	// ones get ErrClosed.
	w.closed = true
	w.mu.Unlock()
	close(w.quit)
	<-w.done
	return w.closeErr
}

// failLocked makes the Writer failed and answers every pending record.
func (w *Writer) failLocked(err error) {
	if w.err == nil {
		w.err = err
	}
	for i, wt := range w.pendW {
		wt.done <- w.err
		w.pendW[i] = nil
	}
	w.pendW = w.pendW[:0]
	w.pend = w.pend[:0]
	w.rotating = false
	w.rotated.Broadcast()
}

func (w *Writer) fail(err error) {
	w.mu.Lock()
	w.failLocked(err)
	w.mu.Unlock()
}

func (w *Writer) run() {
	defer close(w.done)
	ticker := time.NewTicker(w.opts.CheckpointEvery)
	defer ticker.Stop()
	for {
		select {
		case <-w.kick:
			w.flushAll()
		case <-ticker.C:
			w.mu.Lock()
			if w.err == nil && (w.unsealed || w.tooOld(w.opts.Now())) {
				if w.tooOld(w.opts.Now()) {
					w.rotating = true
				} else if err := w.addCheckpointLocked(); err != nil {
					w.failLocked(err)
				}
			}
			w.mu.Unlock()
			w.flushAll()
		case <-w.quit:
			// Close has set closed: pend holds everything appended.
			w.flushAll()
			w.mu.Lock()
			err := w.err
			if err == nil && w.unsealed {
				err = w.addCheckpointLocked()
			}
			w.mu.Unlock()
			if err == nil {
				err = w.flushAll()
			}
			if err == nil {
				err = w.trim()
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

// flushAll writes and syncs pending lines, one group at a time, until none
// is left, doing a requested rotation after the group before it; then it
// marks the flusher idle. It returns the Writer's error.
func (w *Writer) flushAll() error {
	for released := false; ; {
		w.mu.Lock()
		if w.err != nil || len(w.pend) == 0 && !w.rotating {
			w.idle = true
			err := w.err
			w.mu.Unlock()
			return err
		}
		if released {
			// The callers just released are runnable on this goroutine's
			// P. Let them run before the next fdatasync blocks this
			// thread with the P still attached to it: otherwise they may
			// wait for the whole fsync (until another P steals them or
			// the runtime retakes the P).
			w.mu.Unlock()
			runtime.Gosched()
			released = false
			continue
		}
		buf, waiters := w.pend, w.pendW
		w.pend, w.pendW = w.spare[:0], w.spareW[:0]
		rotate := w.rotating
		w.mu.Unlock()

		err := w.writeSync(buf)
		if err != nil {
			err = fmt.Errorf("audit: %w", err)
			for _, wt := range waiters {
				wt.done <- err
			}
		} else {
			for _, wt := range waiters {
				wt.done <- nil
			}
		}
		released = len(waiters) > 0
		clear(waiters)
		w.spare, w.spareW = buf, waiters
		if err == nil && rotate {
			w.mu.Lock()
			err = w.rotateLocked()
			w.rotating = false
			w.rotated.Broadcast()
			w.mu.Unlock()
		}
		if err != nil {
			w.fail(err)
		}
	}
}

// writeSync writes b at the end of the lines of the file and fdatasyncs.
//
// When b reaches past the end of the file, the same write also extends the
// file with zero bytes up to the next multiple of preallocChunk (one
// pwritev(2), one fdatasync). The groups that follow then overwrite blocks
// that are already allocated and written, in a file whose size does not
// change, so their fdatasync has no metadata to commit to the filesystem's
// journal: on ext4 that is measurably faster, and cheaper in CPU, than
// appending (and than fallocate(2), whose unwritten blocks must still be
// converted, through the journal, when first written).
func (w *Writer) writeSync(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	var n int
	var err error
	end := w.off + int64(len(b))
	if osf, ok := w.f.(*os.File); ok && end > w.size {
		if w.zeros == nil {
			w.zeros = make([]byte, preallocChunk)
		}
		pad := (end/preallocChunk+1)*preallocChunk - end
		for {
			n, err = unix.Pwritev(int(osf.Fd()), [][]byte{b, w.zeros[:pad]}, w.off)
			if err != unix.EINTR {
				break
			}
		}
		if n > len(b) {
			w.size = w.off + int64(n) // the zeros written
			n = len(b)
		}
		n = max(n, 0)
	} else {
		n, err = w.f.WriteAt(b, w.off)
	}
	w.off += int64(n)
	if w.off > w.size {
		w.size = w.off
	}
	if err == nil && n != len(b) {
		err = errors.New("short write")
	}
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

// trim removes the preallocated space after the lines (the file's size
// becomes the end of its last line) and syncs, so that a file the Writer is
// done with holds nothing but lines.
func (w *Writer) trim() error {
	if w.size <= w.off {
		return nil
	}
	if err := w.f.Truncate(w.off); err != nil {
		return fmt.Errorf("truncate %s: %w", w.fileName, err)
	}
	w.size = w.off
	if w.sync {
		if err := datasync(w.f); err != nil {
			return fmt.Errorf("fsync %s: %w", w.fileName, err)
		}
	}
	return nil
}

// addCheckpointLocked signs a checkpoint sealing the chain so far and adds
// it to the pending lines.
func (w *Writer) addCheckpointLocked() error {
	sig, err := signCheckpoint(w.opts.Signer, w.nextSeq, hex.EncodeToString(w.lastHash[:]))
	if err != nil {
		return fmt.Errorf("audit: sign checkpoint: %w", err)
	}
	now := w.opts.Now().UTC()
	cp := Record{Kind: KindCheckpoint, Seq: w.nextSeq, Time: now, Prev: hex.EncodeToString(w.lastHash[:]),
		Signature: sig, SigKeyID: w.opts.SignerKeyID}
	line, err := marshalLine(&cp)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	w.pend = append(w.pend, line...)
	w.pend = append(w.pend, '\n')
	w.lastHash = sha256.Sum256(line)
	w.nextSeq++
	w.unsealed = false
	if w.fileStart.IsZero() {
		w.fileStart = now
	}
	w.fileBytes += int64(len(line) + 1)
	return nil
}

// rotateLocked seals the current file with a checkpoint, makes it durable,
// removes its preallocated space, closes it and starts the next file, named
// after the next seq. The flusher calls it with every pending line written
// and Append waiting (rotating is set), so nothing is pending.
func (w *Writer) rotateLocked() error {
	if err := w.addCheckpointLocked(); err != nil {
		return err
	}
	buf := w.pend
	w.pend = w.spare[:0]
	w.spare = buf[:0]
	if err := w.writeSync(buf); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if err := w.trim(); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if err := w.openCurrent(FileName(w.nextSeq), 0, 0, time.Time{}); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
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
