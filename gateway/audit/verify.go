package audit

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

const (
	filePrefix = "audit-"
	fileSuffix = ".log"
	seqDigits  = 20
)

// FileName returns the base name of the log file whose first line has seq.
func FileName(firstSeq uint64) string {
	return fmt.Sprintf("%s%0*d%s", filePrefix, seqDigits, firstSeq, fileSuffix)
}

// parseFileName returns the first seq encoded in a log file name.
func parseFileName(name string) (uint64, bool) {
	if !strings.HasPrefix(name, filePrefix) || !strings.HasSuffix(name, fileSuffix) {
		return 0, false
	}
	digits := name[len(filePrefix) : len(name)-len(fileSuffix)]
	if len(digits) != seqDigits {
		return 0, false
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(digits, 10, 64)
	if err != nil {
		return 0, false
	}
	return n, true
}

type logFileInfo struct {
	name     string
	firstSeq uint64
}

// listFiles returns the log files of dir in sequence order. Other files
// (including *.torn) are ignored.
func listFiles(dir string) ([]logFileInfo, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []logFileInfo
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		if seq, ok := parseFileName(e.Name()); ok {
			out = append(out, logFileInfo{name: e.Name(), firstSeq: seq})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].firstSeq < out[j].firstSeq })
	return out, nil
}

// splitLines splits the content of a log file into its complete lines
// (without '\n'), its torn tail and the offset where its lines end (where
// the Writer would write the next one).
//
// The lines end at the first line that has no '\n' or holds a NUL byte (no
// line the Writer writes does: JSON escapes control characters). What
// follows is the tail. A tail of NUL bytes only is preallocated space (see
// the package doc): torn is nil. Any other tail is torn: bytes of a write
// that never completed its fsync, possibly with holes (NULs) where the
// crash lost some of its pages.
func splitLines(data []byte) (lines [][]byte, torn []byte, end int) {
	for end < len(data) {
		rest := data[end:]
		i := bytes.IndexByte(rest, '\n')
		if i < 0 || bytes.IndexByte(rest[:i], 0) >= 0 {
			break
		}
		lines = append(lines, rest[:i])
		end += i + 1
	}
	for _, c := range data[end:] {
		if c != 0 {
			return lines, data[end:], end
		}
	}
	return lines, nil, end
}

// Report summarises a successfully verified log.
type Report struct {
	Files             int    // log files read
	Records           int    // request records
	Checkpoints       int    // checkpoints, all with valid signatures
	LastSeq           uint64 // seq of the last complete line (0 if empty)
	LastCheckpointSeq uint64 // seq of the last checkpoint (0 if none)
	// Unsealed is the number of records after the last checkpoint. They are
	// chained but not signed: anyone with write access to the directory
	// could have removed or rewritten them. Expect a small number after a
	// crash; a large number, or a LastSeq lower than one previously seen,
	// deserves investigation.
	Unsealed int
	// TornTails is the number of files ending in a torn tail (bytes of an
	// incomplete line, or after a hole of NUL bytes, after the last
	// complete line), the footprint of a crash mid-write. Those bytes were
	// never acknowledged and are not counted or trusted. See the package
	// doc.
	TornTails int
}

// VerifyError names the first problem Verify found.
type VerifyError struct {
	File   string // base name of the file
	Line   int    // 1-based line number in File (0: the file as a whole)
	Seq    uint64 // seq the line should have had (expected position)
	Reason string
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("audit: verify %s line %d (seq %d): %s", e.File, e.Line, e.Seq, e.Reason)
}

// Verify checks the whole log in dir against the audit signing public key
// pub (*ecdsa.PublicKey, ed25519.PublicKey or *rsa.PublicKey):
//
//   - files are read in seq order; each file's name must equal the seq of its
//     first line, and the first file must start at seq 1;
//   - every complete line must parse ([ReadRecord]);
//   - seq increases by exactly 1 per line, across files;
//   - every line's prev equals the hash of the previous complete line (the
//     genesis hash for the first);
//   - every checkpoint's signature verifies with pub over
//     [CheckpointDigest](seq, prev).
//
// A file's lines end at its first line without '\n' or holding a NUL byte.
// NUL bytes after them are preallocated space and are ignored. Any other
// bytes after them (a torn tail from a crash) are skipped and counted in
// Report.TornTails; the next file, if any, must chain to the last complete
// line before them. If it does not, the file was truncated and Verify
// reports Reason "truncated".
//
// On success Verify returns the Report and a nil error. On failure it returns
// a nil Report and a *VerifyError for the FIRST problem, or another error for
// I/O problems: no partially verified state is ever returned.
//
// What Verify cannot prove: that lines after the last checkpoint were not
// removed or rewritten (see Report.Unsealed), or that whole trailing files
// were not deleted after the last checkpoint. Compare LastSeq and
// LastCheckpointSeq with values recorded elsewhere (metrics, SIEM) to close
// that gap.
func Verify(dir string, pub crypto.PublicKey) (*Report, error) {
	if pub == nil {
		return nil, errors.New("audit: verify: nil public key")
	}
	files, err := listFiles(dir)
	if err != nil {
		return nil, fmt.Errorf("audit: verify: %w", err)
	}
	rep := &Report{Files: len(files)}
	expect := uint64(1)
	prev := GenesisHash
	prevTorn := "" // file name whose torn tail precedes the next line
	for _, fi := range files {
		fail := func(line int, reason string) (*Report, error) {
			return nil, &VerifyError{File: fi.name, Line: line, Seq: expect, Reason: reason}
		}
		if fi.firstSeq != expect {
			if prevTorn != "" {
				return nil, &VerifyError{File: prevTorn, Seq: expect, Reason: "truncated"}
			}
			return fail(0, fmt.Sprintf("file name says first seq %d, want %d", fi.firstSeq, expect))
		}
		data, err := os.ReadFile(filepath.Join(dir, fi.name))
		if err != nil {
			return nil, fmt.Errorf("audit: verify: %w", err)
		}
		lines, torn, _ := splitLines(data)
		for i, line := range lines {
			r, err := ReadRecord(line)
			if err != nil {
				return fail(i+1, "malformed: "+err.Error())
			}
			if r.Seq != expect {
				return fail(i+1, fmt.Sprintf("seq %d, want %d", r.Seq, expect))
			}
			if r.Prev != prev {
				if prevTorn != "" {
					return nil, &VerifyError{File: prevTorn, Seq: expect, Reason: "truncated"}
				}
				return fail(i+1, "hash chain broken: prev does not match the previous line")
			}
			prevTorn = ""
			if r.Kind == KindCheckpoint {
				if err := verifyCheckpoint(pub, &r); err != nil {
					return fail(i+1, "bad checkpoint signature: "+err.Error())
				}
				rep.Checkpoints++
				rep.LastCheckpointSeq = r.Seq
				rep.Unsealed = 0
			} else {
				rep.Records++
				rep.Unsealed++
			}
			rep.LastSeq = r.Seq
			prev = LineHash(line)
			expect++
		}
		if len(torn) > 0 {
			rep.TornTails++
			prevTorn = fi.name
		}
	}
	return rep, nil
}

func verifyCheckpoint(pub crypto.PublicKey, r *Record) error {
	digest, err := CheckpointDigest(r.Seq, r.Prev)
	if err != nil {
		return err
	}
	sig, err := base64.StdEncoding.DecodeString(r.Signature)
	if err != nil {
		return err
	}
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, digest, sig) {
			return errors.New("ecdsa verification failed")
		}
	case ed25519.PublicKey:
		if !ed25519.Verify(k, digest, sig) {
			return errors.New("ed25519 verification failed")
		}
	case *rsa.PublicKey:
		if err := rsa.VerifyPKCS1v15(k, crypto.SHA256, digest, sig); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unsupported public key type %T", pub)
	}
	return nil
}

// signCheckpoint signs CheckpointDigest(seq, prev) with s (see the package
// doc for the per-algorithm convention).
func signCheckpoint(s crypto.Signer, seq uint64, prev string) (string, error) {
	digest, err := CheckpointDigest(seq, prev)
	if err != nil {
		return "", err
	}
	var opts crypto.SignerOpts = crypto.SHA256
	if _, ok := s.Public().(ed25519.PublicKey); ok {
		opts = crypto.Hash(0)
	}
	sig, err := s.Sign(rand.Reader, digest, opts)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}
