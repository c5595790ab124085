package attest

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/google/go-tpm/tpm2"
)

// Measurement kinds. Each kind has its own PCR (PCRAllocation) and is
// measured at most once per boot.
const (
	// KindImage is the active firmware image: the digest of its manifest
	// or image file, as the images package defines it.
	KindImage = "image"
	// KindBinary is the hsmgate executable that will run.
	KindBinary = "binary"
	// KindConfig is the effective configuration.
	KindConfig = "config"
)

// Kinds lists the measurement kinds in measurement order.
var Kinds = []string{KindImage, KindBinary, KindConfig}

// LogFormat identifies the measurement event log format.
const LogFormat = "hsmgate-measurement-log/v1"

// eventTag domain-separates the value extended for an event.
const eventTag = "hsmgate.attest.event.v1\x00"

// PCRAllocation says which SHA-256 PCR each measurement kind is extended
// into. See the package documentation for why DefaultPCRs are 12, 13, 15.
type PCRAllocation struct {
	Image  int `json:"image"`
	Binary int `json:"binary"`
	Config int `json:"config"`
}

// DefaultPCRs is the default allocation: image 12, binary 13, config 15.
var DefaultPCRs = PCRAllocation{Image: 12, Binary: 13, Config: 15}

func (a PCRAllocation) orDefault() PCRAllocation {
	if a == (PCRAllocation{}) {
		return DefaultPCRs
	}
	return a
}

// PCR returns the PCR of a measurement kind.
func (a PCRAllocation) PCR(kind string) (int, bool) {
	switch kind {
	case KindImage:
		return a.Image, true
	case KindBinary:
		return a.Binary, true
	case KindConfig:
		return a.Config, true
	}
	return 0, false
}

// Kind returns the measurement kind allocated to a PCR.
func (a PCRAllocation) Kind(pcr int) (string, bool) {
	for _, k := range Kinds {
		if p, _ := a.PCR(k); p == pcr {
			return k, true
		}
	}
	return "", false
}

// Indices returns the allocated PCRs, ascending.
func (a PCRAllocation) Indices() []int {
	out := []int{a.Image, a.Binary, a.Config}
	sort.Ints(out)
	return out
}

// Validate checks that the PCRs are distinct and in 8–15: 0–7 belong to the
// firmware, 16 and 23 can be reset by software (so a reset and a replay of
// good values would go unnoticed), 17–22 are dynamic-root PCRs that locality
// 0 cannot extend.
func (a PCRAllocation) Validate() error {
	seen := map[int]bool{}
	for _, k := range Kinds {
		p, _ := a.PCR(k)
		if p < 8 || p > 15 {
			return fmt.Errorf("attest: PCR %d for %s is outside 8–15", p, k)
		}
		if seen[p] {
			return fmt.Errorf("attest: PCR %d allocated twice", p)
		}
		seen[p] = true
	}
	return nil
}

// HexBytes is a byte string that JSON-encodes as lower-case hex.
type HexBytes []byte

// MarshalText implements encoding.TextMarshaler.
func (h HexBytes) MarshalText() ([]byte, error) {
	return []byte(hex.EncodeToString(h)), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (h *HexBytes) UnmarshalText(b []byte) error {
	d, err := hex.DecodeString(string(b))
	if err != nil {
		return err
	}
	*h = d
	return nil
}

// Event is one measurement: Digest (a SHA-256 digest of the measured thing)
// recorded under Kind and Name and extended into PCR.
type Event struct {
	Seq    int      `json:"seq"`
	PCR    int      `json:"pcr"`
	Kind   string   `json:"kind"`
	Name   string   `json:"name"`
	Digest HexBytes `json:"digest"`
}

// ExtendDigest is the value extended into the PCR for this event:
//
//	SHA-256("hsmgate.attest.event.v1\x00" ||
//	        u32be(len(kind)) || kind || u32be(len(name)) || name ||
//	        u32be(len(digest)) || digest)
//
// so the kind and name are bound as well as the digest: editing any field of
// a logged event breaks the replay.
func (e Event) ExtendDigest() []byte {
	h := sha256.New()
	h.Write([]byte(eventTag))
	for _, f := range [][]byte{[]byte(e.Kind), []byte(e.Name), e.Digest} {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(f)))
		h.Write(n[:])
		h.Write(f)
	}
	return h.Sum(nil)
}

// BootID identifies a TPM boot cycle: the TPM's reset counter (incremented
// at every TPM Reset, i.e. every reboot or swtpm restart) and restart
// counter.
type BootID struct {
	ResetCount   uint32 `json:"resetCount"`
	RestartCount uint32 `json:"restartCount"`
}

// EventLog is the gateway's measurement event log for one boot. Its JSON
// form is the file StateDir/eventlog.json and the "eventLog" member of an
// attestation Document.
type EventLog struct {
	Format string        `json:"format"` // LogFormat
	Hash   string        `json:"hash"`   // "sha256": the PCR bank
	PCRs   PCRAllocation `json:"pcrs"`
	Boot   BootID        `json:"boot"`
	Events []Event       `json:"events"`
}

func newEventLog(alloc PCRAllocation, boot BootID) *EventLog {
	return &EventLog{Format: LogFormat, Hash: "sha256", PCRs: alloc, Boot: boot, Events: []Event{}}
}

// Clone returns a deep copy.
func (l *EventLog) Clone() *EventLog {
	c := *l
	c.Events = make([]Event, len(l.Events))
	for i, e := range l.Events {
		e.Digest = bytes.Clone(e.Digest)
		c.Events[i] = e
	}
	return &c
}

// Replay computes the PCR values the log's events produce from a TPM reset
// (all-zero PCRs): for every allocated PCR and every PCR an event names.
func (l *EventLog) Replay() map[int][]byte {
	return replayEvents(l.PCRs, l.Events)
}

func replayEvents(alloc PCRAllocation, events []Event) map[int][]byte {
	out := map[int][]byte{}
	for _, p := range alloc.Indices() {
		out[p] = make([]byte, sha256.Size)
	}
	for _, e := range events {
		cur, ok := out[e.PCR]
		if !ok {
			cur = make([]byte, sha256.Size)
		}
		h := sha256.New()
		h.Write(cur)
		h.Write(e.ExtendDigest())
		out[e.PCR] = h.Sum(nil)
	}
	return out
}

// Validate checks the log's structure: format, bank, allocation, sequence
// numbers 0,1,2…, each event in its kind's PCR, SHA-256 digests, and at most
// one event per kind.
func (l *EventLog) Validate() error {
	if l.Format != LogFormat {
		return fmt.Errorf("format %q, want %q", l.Format, LogFormat)
	}
	if l.Hash != "sha256" {
		return fmt.Errorf("hash %q, want sha256", l.Hash)
	}
	if err := l.PCRs.Validate(); err != nil {
		return err
	}
	seen := map[string]bool{}
	for i, e := range l.Events {
		if e.Seq != i {
			return fmt.Errorf("event %d has sequence number %d", i, e.Seq)
		}
		p, ok := l.PCRs.PCR(e.Kind)
		if !ok {
			return fmt.Errorf("event %d has unknown kind %q", i, e.Kind)
		}
		if e.PCR != p {
			return fmt.Errorf("event %d (%s) is in PCR %d, the allocation says %d", i, e.Kind, e.PCR, p)
		}
		if len(e.Digest) != sha256.Size {
			return fmt.Errorf("event %d digest is %d bytes, want %d", i, len(e.Digest), sha256.Size)
		}
		if seen[e.Kind] {
			return fmt.Errorf("event %d measures %s a second time", i, e.Kind)
		}
		seen[e.Kind] = true
	}
	return nil
}

// ParseEventLog decodes and validates a JSON event log.
func ParseEventLog(b []byte) (*EventLog, error) {
	var l EventLog
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("trailing data after event log")
	}
	if l.Events == nil {
		l.Events = []Event{}
	}
	if err := l.Validate(); err != nil {
		return nil, err
	}
	return &l, nil
}

// Find returns the event of a kind, if measured.
func (l *EventLog) Find(kind string) (Event, bool) {
	for _, e := range l.Events {
		if e.Kind == kind {
			return e, true
		}
	}
	return Event{}, false
}

// PredictPCRs computes the PCR values a boot would reach if it measured what
// log records, except that each replacement takes the place of the logged
// event of the same Kind (with the replacement's Name and Digest; Seq and
// PCR are kept). A replacement for a kind the log lacks is appended. Use it
// to seal to the PCRs of an approved update before rebooting into it.
func PredictPCRs(log *EventLog, replacements ...Event) (map[int][]byte, error) {
	if err := log.Validate(); err != nil {
		return nil, fmt.Errorf("attest: PredictPCRs: %w", err)
	}
	events := log.Clone().Events
	for _, r := range replacements {
		p, ok := log.PCRs.PCR(r.Kind)
		if !ok {
			return nil, fmt.Errorf("attest: PredictPCRs: unknown kind %q", r.Kind)
		}
		if len(r.Digest) != sha256.Size {
			return nil, fmt.Errorf("attest: PredictPCRs: %s digest is %d bytes, want %d", r.Kind, len(r.Digest), sha256.Size)
		}
		replaced := false
		for i := range events {
			if events[i].Kind == r.Kind {
				events[i].Name, events[i].Digest = r.Name, bytes.Clone(r.Digest)
				replaced = true
			}
		}
		if !replaced {
			events = append(events, Event{Seq: len(events), PCR: p, Kind: r.Kind, Name: r.Name, Digest: bytes.Clone(r.Digest)})
		}
	}
	return replayEvents(log.PCRs, events), nil
}

// ErrAlreadyMeasured reports a second, different measurement of a kind in
// the same boot. PCRs cannot be un-extended: measuring something else needs
// a TPM reset (reboot).
var ErrAlreadyMeasured = errors.New("attest: already measured differently in this boot")

// EventLog returns a copy of this boot's measurement event log.
func (t *TPM) EventLog() *EventLog {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.log.Clone()
}

// Measure records a measurement: digest (SHA-256 of the measured thing) of
// the given kind, under a descriptive name (a file name, version, path…;
// it is bound into the PCR too). The event is appended to the log on disk
// first, then extended into the kind's PCR (write-ahead: a crash in
// between is completed by the next Open).
//
// Measurements are idempotent per boot: measuring a kind again with the
// same name and digest returns the logged event and extends nothing (so a
// gateway process restarted without a reboot can run its start-up
// measurement again); a different name or digest fails with
// ErrAlreadyMeasured.
func (t *TPM) Measure(kind, name string, digest []byte) (Event, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tpm == nil {
		return Event{}, errClosed
	}
	if t.broken != nil {
		return Event{}, t.broken
	}
	pcr, ok := t.alloc.PCR(kind)
	if !ok {
		return Event{}, fmt.Errorf("attest: unknown measurement kind %q", kind)
	}
	if len(digest) != sha256.Size {
		return Event{}, fmt.Errorf("attest: %s digest is %d bytes, want a SHA-256 digest", kind, len(digest))
	}
	if prev, ok := t.log.Find(kind); ok {
		if prev.Name == name && bytes.Equal(prev.Digest, digest) {
			return prev, nil
		}
		return Event{}, fmt.Errorf("%w: %s was measured as %q %x, now %q %x", ErrAlreadyMeasured, kind, prev.Name, []byte(prev.Digest), name, digest)
	}
	ev := Event{Seq: len(t.log.Events), PCR: pcr, Kind: kind, Name: name, Digest: bytes.Clone(digest)}
	next := t.log.Clone()
	next.Events = append(next.Events, ev)
	if err := writeFileAtomic(t.logPath, next); err != nil {
		return Event{}, fmt.Errorf("attest: writing event log: %w", err)
	}
	if err := t.extend(ev); err != nil {
		// The log on disk now has an event the PCR lacks. Put the old log
		// back; if even that fails, the next Open completes the extension.
		if werr := writeFileAtomic(t.logPath, t.log); werr != nil {
			t.broken = fmt.Errorf("%w: extend failed (%v) and the log could not be rolled back (%v)", ErrMeasurementState, err, werr)
		}
		return Event{}, fmt.Errorf("attest: extending PCR %d: %w", pcr, err)
	}
	t.log = next
	return ev, nil
}

func (t *TPM) extend(e Event) error {
	_, err := tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(e.PCR), Auth: tpm2.PasswordAuth(nil)},
		Digests: tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{
			HashAlg: tpm2.TPMAlgSHA256,
			Digest:  e.ExtendDigest(),
		}}},
	}.Execute(t.tpm)
	return err
}

// loadLog establishes this boot's event log (see the package doc):
//
//   - the stored log is of this boot (same reset counter) and replays to the
//     PCRs: keep it (the process restarted, the TPM did not);
//   - it replays to the PCRs without its last event: a crash came between
//     writing and extending that event; extend it now;
//   - the allocated PCRs are all zero: a new boot; start an empty log;
//   - otherwise: ErrMeasurementState.
func (t *TPM) loadLog() error {
	boot, err := t.bootID()
	if err != nil {
		return err
	}
	pcrs, err := t.readPCRs(t.alloc.Indices())
	if err != nil {
		return err
	}
	var stored *EventLog
	var why string
	if b, err := os.ReadFile(t.logPath); err == nil {
		if stored, err = ParseEventLog(b); err != nil {
			why = fmt.Sprintf("the stored event log is invalid (%v)", err)
			stored = nil
		} else if stored.PCRs != t.alloc {
			why = fmt.Sprintf("the stored event log uses PCRs %+v, configured %+v", stored.PCRs, t.alloc)
			stored = nil
		} else if stored.Boot.ResetCount != boot.ResetCount {
			why = fmt.Sprintf("the stored event log is of an earlier boot (reset count %d, now %d)", stored.Boot.ResetCount, boot.ResetCount)
			stored = nil
		}
	} else if errors.Is(err, os.ErrNotExist) {
		why = "there is no stored event log"
	} else {
		return fmt.Errorf("attest: reading event log: %w", err)
	}

	if stored != nil {
		if samePCRs(stored.Replay(), pcrs) {
			t.log = stored
			return nil
		}
		if n := len(stored.Events); n > 0 {
			last := stored.Events[n-1]
			if samePCRs(replayEvents(stored.PCRs, stored.Events[:n-1]), pcrs) {
				if err := t.extend(last); err != nil {
					return fmt.Errorf("attest: completing the interrupted measurement of %s: %w", last.Kind, err)
				}
				t.log = stored
				return nil
			}
		}
		why = "the stored event log of this boot does not replay to the PCRs"
	}

	var extended []int
	for _, p := range t.alloc.Indices() {
		if !allZero(pcrs[p]) {
			extended = append(extended, p)
		}
	}
	if len(extended) > 0 {
		return fmt.Errorf("%w: PCRs %v are already extended in this boot and %s: another component extends them, or the log was lost or edited; only a TPM reset (reboot) clears this", ErrMeasurementState, extended, why)
	}
	t.log = newEventLog(t.alloc, boot)
	return writeFileAtomic(t.logPath, t.log)
}

func samePCRs(a, b map[int][]byte) bool {
	for p, v := range b {
		if !bytes.Equal(a[p], v) {
			return false
		}
	}
	for p := range a {
		if _, ok := b[p]; !ok {
			return false
		}
	}
	return true
}

// writeFileAtomic writes v as JSON to path via a synced temporary file and a
// rename, so a crash leaves either the old or the new file.
func writeFileAtomic(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
