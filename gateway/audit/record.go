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
// names) followed by '\n'. Files are created 0600 in a 0700 directory, are
// only ever appended to, and are never rewritten or truncated by this
// package.
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
// [Writer.Append] returns only once the record is fsynced (group commit). A
// crash (kill -9, power loss) can leave a torn final line — bytes after the
// last '\n' of a file. Such bytes were never acknowledged to any caller. This
// package never rewrites a file to remove them: [Verify] ignores the bytes
// after the last '\n' of a file and counts them in [Report.TornTails], and
// [Open] resumes the chain from the last complete line in a NEW file (the torn
// file is left as it is). The only exception is a newest file that contains
// nothing but a torn fragment (crash during the first write to a fresh file):
// its name is needed for the new file, so Open renames it to
// "<name>.torn" for forensics; Verify ignores *.torn files.
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
	"time"
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
	// Time is when the Writer committed the line (UTC).
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
	GrantID           string            `json:"grant_id,omitempty"`
	Outcome           string            `json:"outcome,omitempty"` // "ok", "denied" or "error"
	ErrorCode         string            `json:"error_code,omitempty"`
	LatencyNS         int64             `json:"latency_ns,omitempty"`

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
func marshalLine(r *Record) ([]byte, error) {
	return json.Marshal(r)
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
			r.EncryptionContext != nil || r.GrantID != "" || r.Outcome != "" ||
			r.ErrorCode != "" || r.LatencyNS != 0 {
			return Record{}, errors.New("checkpoint carries request fields")
		}
	default:
		return Record{}, fmt.Errorf("unknown kind %q", r.Kind)
	}
	return r, nil
}
