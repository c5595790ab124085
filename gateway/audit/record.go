// Package audit implements hsmgate's tamper-evident, durable audit log.
//
// # What is logged, and what never is
//
// Every KMS request the gateway handles produces one [Record]: who asked
// (Principal, or the access key id of a credential that failed to
// authenticate), from where, which operation on which key version, the
// encryption context, the outcome and the latency. A Record deliberately has
// NO field for plaintext, ciphertext, data keys, key material, passwords,
// session tokens or any other secret, and none must ever be added: the audit
// log is read by operators and shipped to SIEMs, so it must be safe to
// disclose. Encryption context is logged because AWS KMS treats it as
// non-secret, authenticated metadata; callers must not put secrets in it.
//
// # File format
//
// The log is a directory of JSON Lines files named
//
//	audit-<first seq, 20 decimal digits>.log
//
// (for example audit-00000000000000000001.log), so lexical order is sequence
// order. Each line is one JSON object (a Record, see [Record] for the field
// names) followed by '\n'. Files are created 0600 in a 0700 directory. A
// byte of a line, once written, is never changed: lines are only ever added
// after the last one, and this package never rewrites a file or truncates
// one into its lines.
//
// # Preallocated space
//
// The file the [Writer] is writing may end in zero bytes (NUL) after its
// last line: the Writer extends the file with zeros ahead of its lines (1
// MiB at a time) and writes its next lines over them, so that a group
// commit's fdatasync does not also have to commit a change of the file's
// size. When it is done with a file (at rotation and at Close) it truncates
// the zeros away, so a file it has finished holds nothing but lines. A file
// it was writing when the process or machine stopped keeps them. Readers
// ([Verify], [Query], [Open]) take a file's lines to end at the first line
// that has no '\n' or holds a NUL byte (no line the Writer writes does:
// JSON escapes control characters); zero bytes after that are preallocated
// space, not data. A program that tails the current file must stop at the
// first NUL byte likewise, and read again from there later.
//
// # Hash chain
//
// The hash of a line is the lowercase hex SHA-256 of the exact bytes of the
// line, excluding the trailing '\n' ([LineHash]). Every line carries in its
// "prev" field the hash of the line before it; the very first line of the
// first file carries 64 '0' characters ([GenesisHash]), and the first line of
// a later file carries the hash of the last complete line of the file before
// it. Every line (record or checkpoint) also carries a "seq" exactly one
// greater than the line before it; the first line has seq 1.
//
// Editing any byte of a line changes its hash, so the NEXT line's prev no
// longer matches; deleting, inserting or reordering lines breaks seq (and the
// chain). An attacker who can rewrite the whole tail of the log consistently
// (recomputing every later hash) is stopped by checkpoints.
//
// # Checkpoints
//
// A checkpoint is a line with "kind":"checkpoint". It sits in the chain like
// any other line (own seq, prev = hash of the line it follows) and carries a
// signature, made with the gateway's audit signing key (an ECDSA P-256 key in
// the HSM), over
//
//	digest = SHA-256( "hsmgate audit checkpoint v1" || 0x00 ||
//	                  uint64_big_endian(checkpoint seq) ||
//	                  raw 32 bytes of prev )
//
// ([CheckpointDigest]). ECDSA and RSA (PKCS#1 v1.5) keys sign the digest as a
// SHA-256 prehash (crypto.SHA256); Ed25519 keys sign the 32 digest bytes as
// the message. ECDSA signatures are ASN.1 DER. The signature is stored as
// standard base64 in "signature" and the signing key's identifier in
// "sig_key_id" (distinct from "key_id", which names the KMS key a request
// used). Because prev commits to the whole chain before it, one valid
// checkpoint seals every line up to it: rewriting sealed history requires the
// HSM-held signing key. Records written after the last checkpoint are
// "unsealed" (reported by [Verify]); the [Writer] checkpoints every
// CheckpointEvery, at every file rotation and at Close, so the unsealed
// window is small.
//
// The checkpoint's own time and sig_key_id are not inside the signature; they
// are protected by the chain like any other line once a later line exists.
//
// # Durability and crashes
//
// [Writer.Append] returns only once the record is fsynced (group commit),
// together with every line before it. A crash (kill -9, power loss) can
// leave a torn tail after a file's last complete line: part of a line, or,
// after a power loss, the pages of a write that reached the disk while an
// earlier page of the same write did not (so non-zero bytes after a hole of
// zeros). Such bytes were never acknowledged to any caller: everything
// acknowledged is a prefix of complete lines, and no line holds a NUL. This
// package never rewrites a file to remove them: [Verify] ignores a torn tail
// and counts it in [Report.TornTails], and [Open] resumes the chain from the
// last complete line in a NEW file (the torn file is left as it is, zeros
// included). The only exception is a newest file that contains nothing but
// a torn fragment (crash during the first write to a fresh file): its name
// is needed for the new file, so Open renames it to "<name>.torn" for
// forensics; Verify ignores *.torn files. A newest file whose lines are
// followed by zeros only was not torn: Open writes its next line where its
// lines end.
package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// Kinds of line.
const (
	KindRecord     = "record"
	KindCheckpoint = "checkpoint"
)

// Outcomes of a request.
const (
	OutcomeOK     = "ok"
	OutcomeDenied = "denied"
	OutcomeError  = "error"
)

// GenesisHash is the prev of the first line of the log.
const GenesisHash = "0000000000000000000000000000000000000000000000000000000000000000"

// checkpointDomain separates checkpoint signatures from every other use of the
// signing key. Changing the format requires a new version string.
const checkpointDomain = "hsmgate audit checkpoint v1"

// Record is one line of the audit log: either a request record
// (Kind == KindRecord) or a signed checkpoint (Kind == KindCheckpoint).
//
// Callers fill in the request fields and pass the Record to
// [Writer.Append]; Kind, Seq, Time, Prev, Signature and SigKeyID are assigned
// by the Writer and any caller-supplied values are overwritten.
//
// Security: there is intentionally no field for plaintext, ciphertext, key
// material or secrets. Never log them through any of these fields either
// (e.g. never put a ciphertext blob in ErrorCode or UserAgent).
type Record struct {
	// Kind is "record" or "checkpoint".
	Kind string `json:"kind"`
	// Seq is the line's position in the whole log, starting at 1, with no
	// gaps across files and across kinds.
	Seq uint64 `json:"seq"`
	// Time is when the Writer gave the line its place in the log (UTC),
	// just before writing it.
	Time time.Time `json:"time"`

	RequestID string `json:"request_id,omitempty"`
	// Principal is the authenticated caller, or, for a request that failed
	// authentication, the access key id the credential claimed.
	Principal  string `json:"principal,omitempty"`
	SourceIP   string `json:"source_ip,omitempty"`
	UserAgent  string `json:"user_agent,omitempty"`
	Operation  string `json:"operation,omitempty"` // e.g. "Encrypt"
	KeyID      string `json:"key_id,omitempty"`    // KMS key id the request used
	KeyARN     string `json:"key_arn,omitempty"`
	KeyVersion uint32 `json:"key_version,omitempty"`
	// EncryptionContext is non-secret by KMS's contract; logged verbatim.
	EncryptionContext map[string]string `json:"encryption_context,omitempty"`
	// RequestMetadata is what AWS KMS says about an external key store
	// request (who called KMS, on which KMS key, for which operation):
	// non-secret, logged verbatim, for requests served through XKS.
	RequestMetadata map[string]string `json:"request_metadata,omitempty"`
	GrantID         string            `json:"grant_id,omitempty"`
	Outcome         string            `json:"outcome,omitempty"` // "ok", "denied" or "error"
	ErrorCode       string            `json:"error_code,omitempty"`
	LatencyNS       int64             `json:"latency_ns,omitempty"`

	// Prev is the hex SHA-256 of the previous line (see package doc).
	// For a checkpoint it is the hash of the line it seals.
	Prev string `json:"prev"`

	// Signature (checkpoints only) is the base64 signature over
	// CheckpointDigest(Seq, Prev).
	Signature string `json:"signature,omitempty"`
	// SigKeyID (checkpoints only) identifies the audit signing key.
	SigKeyID string `json:"sig_key_id,omitempty"`
}

// LineHash returns the hex SHA-256 of a line's bytes (without its '\n').
func LineHash(line []byte) string {
	sum := sha256.Sum256(line)
	return hex.EncodeToString(sum[:])
}

// CheckpointDigest returns the 32-byte digest a checkpoint signs:
// SHA-256("hsmgate audit checkpoint v1" || 0x00 || uint64be(seq) || prev),
// where prev is the 32 raw bytes of the hex hash of the sealed line.
func CheckpointDigest(seq uint64, prevHex string) ([]byte, error) {
	prev, err := decodeHash(prevHex)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	h.Write([]byte(checkpointDomain))
	h.Write([]byte{0})
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	h.Write(b[:])
	h.Write(prev)
	return h.Sum(nil), nil
}

func decodeHash(s string) ([]byte, error) {
	if len(s) != 64 {
		return nil, fmt.Errorf("hash must be 64 hex characters, got %d", len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return nil, errors.New("hash must be lowercase hex")
		}
	}
	return hex.DecodeString(s)
}

// marshalLine encodes r as one line (no trailing newline). encoding/json is
// deterministic for this struct (fixed field order, sorted map keys), but
// nothing depends on that: hashes are always taken over the bytes as written.
// The Writer encodes request records with appendRecordFields instead, which
// produces the same bytes without reflection (see TestAppendRecordMatchesJSON).
func marshalLine(r *Record) ([]byte, error) {
	return json.Marshal(r)
}

// appendRecordFields appends the request fields of r (those between "time"
// and "prev"), each followed by a comma, exactly as encoding/json would
// write them for a Record: same order, omitempty, sorted map keys and
// encoding/json's string escaping. A request record's line is then
//
//	{"kind":"record","seq":<seq>,"time":"<time>",<fields>"prev":"<prev>"}
func appendRecordFields(b []byte, r *Record) []byte {
	b = appendStringField(b, `"request_id":`, r.RequestID)
	b = appendStringField(b, `"principal":`, r.Principal)
	b = appendStringField(b, `"source_ip":`, r.SourceIP)
	b = appendStringField(b, `"user_agent":`, r.UserAgent)
	b = appendStringField(b, `"operation":`, r.Operation)
	b = appendStringField(b, `"key_id":`, r.KeyID)
	b = appendStringField(b, `"key_arn":`, r.KeyARN)
	if r.KeyVersion != 0 {
		b = append(b, `"key_version":`...)
		b = strconv.AppendUint(b, uint64(r.KeyVersion), 10)
		b = append(b, ',')
	}
	b = appendMapField(b, `"encryption_context":{`, r.EncryptionContext)
	b = appendMapField(b, `"request_metadata":{`, r.RequestMetadata)
	b = appendStringField(b, `"grant_id":`, r.GrantID)
	b = appendStringField(b, `"outcome":`, r.Outcome)
	b = appendStringField(b, `"error_code":`, r.ErrorCode)
	if r.LatencyNS != 0 {
		b = append(b, `"latency_ns":`...)
		b = strconv.AppendInt(b, r.LatencyNS, 10)
		b = append(b, ',')
	}
	return b
}

// appendMapField appends a string map with sorted keys, as encoding/json
// writes it; nothing when the map is empty.
func appendMapField(b []byte, open string, m map[string]string) []byte {
	if len(m) == 0 {
		return b
	}
	b = append(b, open...)
	var stack [8]string
	keys := stack[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k)
		b = append(b, ':')
		b = appendJSONString(b, m[k])
	}
	return append(b, '}', ',')
}

func appendStringField(b []byte, name, v string) []byte {
	if v == "" {
		return b
	}
	b = append(b, name...)
	b = appendJSONString(b, v)
	return append(b, ',')
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string the way encoding/json does
// (with its default HTML escaping): '"' and '\\' and the control characters
// escaped (\b \f \n \r \t short, others as \u00XX), '<' '>' '&' and U+2028,
// U+2029 as \uXXXX, and each byte of invalid UTF-8 as \ufffd.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendRecordLine appends the line of a request record: seq and time, the
// fields already encoded by appendRecordFields, and prev (raw hash bytes).
// It fails only for a time encoding/json cannot encode either (a year
// outside [0,9999]); t must be in UTC.
func appendRecordLine(b []byte, seq uint64, t time.Time, fields []byte, prev *[32]byte) ([]byte, error) {
	if y := t.Year(); y < 0 || y > 9999 {
		return b, fmt.Errorf("time %v: year outside of range [0,9999]", t)
	}
	b = append(b, `{"kind":"record","seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"time":"`...)
	b = t.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"', ',')
	b = append(b, fields...)
	b = append(b, `"prev":"`...)
	b = hex.AppendEncode(b, prev[:])
	return append(b, '"', '}'), nil
}

// ReadRecord parses and structurally validates one log line (without its
// '\n'). It checks syntax and per-line invariants only (known fields, kind,
// seq >= 1, prev is a hash, checkpoints carry a base64 signature and no request
// fields, records carry no signature); chain, sequence and signature checks
// need context and are done by [Verify].
func ReadRecord(line []byte) (Record, error) {
	var r Record
	if len(line) == 0 {
		return r, errors.New("empty line")
	}
	if bytes.IndexByte(line, '\n') >= 0 {
		return r, errors.New("line contains a newline")
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Record{}, fmt.Errorf("invalid JSON: %w", err)
	}
	if dec.More() {
		return Record{}, errors.New("trailing data after JSON object")
	}
	if _, err := dec.Token(); err == nil {
		return Record{}, errors.New("trailing data after JSON object")
	}
	if r.Seq == 0 {
		return Record{}, errors.New("seq must be >= 1")
	}
	if r.Time.IsZero() {
		return Record{}, errors.New("missing time")
	}
	if _, err := decodeHash(r.Prev); err != nil {
		return Record{}, fmt.Errorf("prev: %w", err)
	}
	switch r.Kind {
	case KindRecord:
		if r.Signature != "" || r.SigKeyID != "" {
			return Record{}, errors.New("record carries checkpoint fields")
		}
		switch r.Outcome {
		case "", OutcomeOK, OutcomeDenied, OutcomeError:
		default:
			return Record{}, fmt.Errorf("unknown outcome %q", r.Outcome)
		}
	case KindCheckpoint:
		if r.Signature == "" {
			return Record{}, errors.New("checkpoint without signature")
		}
		if _, err := base64.StdEncoding.DecodeString(r.Signature); err != nil {
			return Record{}, fmt.Errorf("checkpoint signature: %w", err)
		}
		if r.RequestID != "" || r.Principal != "" || r.SourceIP != "" || r.UserAgent != "" ||
			r.Operation != "" || r.KeyID != "" || r.KeyARN != "" || r.KeyVersion != 0 ||
			r.EncryptionContext != nil || r.RequestMetadata != nil || r.GrantID != "" || r.Outcome != "" ||
			r.ErrorCode != "" || r.LatencyNS != 0 {
			return Record{}, errors.New("checkpoint carries request fields")
		}
	default:
		return Record{}, fmt.Errorf("unknown kind %q", r.Kind)
	}
	return r, nil
}
