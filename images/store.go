package images

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hsmgate/hsmgate/quorum"
)

// The image store's files, under <data>/images.
const (
	// StoreDir is the store's folder in the data folder.
	StoreDir      = "images"
	stagedDir     = "staged"
	stateFile     = "state.json"
	timestampFile = "timestamp"
	lockFile      = "lock"
	envelopeFile  = "envelope"
	payloadFile   = "payload"
	tmpPrefix     = ".tmp-"
	stateFormat   = "hsmgate-image-store/v1"
	maxHistory    = 64
)

// VersionCounter keeps the highest activated version where the platform
// can make it monotonic: attest.Counter (a TPM NV counter) implements it.
type VersionCounter interface {
	// Read returns the counter's value.
	Read() (uint64, error)
	// IncrementTo raises the counter to at least v and returns its value;
	// a counter at or above v is left alone.
	IncrementTo(v uint64) (uint64, error)
}

// Options configure a Store.
type Options struct {
	// Trust verifies what is staged and activated. Nil: Stage, Activate,
	// CheckActivation, Verify and UpdateTimestamp refuse (ErrNoTrust); List,
	// Active, Highest and Timestamp work.
	Trust *Trust
	// Target is this appliance's hardware target, required like Trust
	// (but for UpdateTimestamp).
	Target string
	// Counter, if not nil, also keeps the highest activated version
	// (normally an attest.Counter in the TPM). Nil: the store's file alone.
	Counter VersionCounter
	// Now is the clock for timestamps and activation times; nil means
	// time.Now.
	Now func() time.Time
}

// Store errors.
var (
	// ErrNoTrust: the store was opened without a trust or target.
	ErrNoTrust = errors.New("images: no trust or hardware target configured for the image store")
	// ErrRollback: the image's version is below the highest activated one
	// (kept in the store's state and, where there is one, in the TPM
	// counter).
	ErrRollback = errors.New("images: rollback refused")
	// ErrNotStaged: no staged image has that digest.
	ErrNotStaged = errors.New("images: image not staged")
	// ErrNoActiveImage: no image was ever activated.
	ErrNoActiveImage = errors.New("images: no active image")
	// ErrVersionMismatch: the version an activation names is not the
	// image's.
	ErrVersionMismatch = errors.New("images: version does not match the image")
	// ErrTimestampRollback: a timestamp older than the one the store has.
	ErrTimestampRollback = errors.New("images: timestamp older than the stored one")
	// ErrActivationInterrupted: an activation was recorded but the
	// counter could not be raised to its version; it is completed when
	// the store is next opened.
	ErrActivationInterrupted = errors.New("images: activation interrupted")
	// ErrStoreCorrupt: the store's files disagree with themselves.
	ErrStoreCorrupt = errors.New("images: image store damaged")
)

// Status is an image's place in the store.
type Status string

const (
	// StatusStaged: verified and kept, never active.
	StatusStaged Status = "staged"
	// StatusActive: the image the appliance runs (or runs at its next
	// start).
	StatusActive Status = "active"
	// StatusPrevious: active once, replaced since.
	StatusPrevious Status = "previous"
)

// Image is a staged image.
type Image struct {
	// Digest is the manifest digest, the image's name everywhere.
	Digest Digest
	// Manifest was verified when the image was staged (and is verified
	// again by Activate and Verify).
	Manifest *Manifest
	// ManifestBytes is the manifest's canonical encoding: Digest is its
	// SHA-256 (what an attestation document carries beside the image
	// measurement).
	ManifestBytes []byte
	// Status is staged, active or previous.
	Status Status
	// ActivatedAt is when the image was last activated (zero if never).
	ActivatedAt time.Time
	// Dir is the image's folder; PayloadPath holds the payload (exactly
	// Manifest.PayloadSize bytes) and EnvelopePath the bundle header (the
	// manifest and its signatures).
	Dir, PayloadPath, EnvelopePath string
}

// ActivationParams are the parameters of the firmware-activation proposal
// that activates img: its version string and digest.
func (img *Image) ActivationParams() *quorum.FirmwareActivationParams {
	return &quorum.FirmwareActivationParams{Version: img.Manifest.VersionString, ImageSHA256: bytes.Clone(img.Digest[:])}
}

// Store is the on-disk image store of an appliance, in <data>/images:
//
//	images/
//	  lock              flock(2) taken by every change
//	  state.json        active image, earlier ones, highest activated version
//	  timestamp         newest verified timestamp (freeze protection)
//	  staged/<digest>/  one folder per staged image, made whole by one rename:
//	    envelope        the bundle header (manifest and signatures)
//	    payload         the payload
//
// Every write is a temporary file or folder, fsynced, renamed into place,
// its folder fsynced. Its methods are safe for concurrent use, also by
// several processes.
type Store struct {
	dir  string
	opts Options
	mu   sync.Mutex
}

// OpenStore opens (creating it if needed) the image store in
// dataDir/images. It removes what an interrupted Stage left behind,
// completes an interrupted activation (raising the counter to its
// version), and raises a counter that is behind the store's highest
// activated version to it.
func OpenStore(dataDir string, opts Options) (*Store, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Store{dir: filepath.Join(dataDir, StoreDir), opts: opts}
	if err := os.MkdirAll(filepath.Join(s.dir, stagedDir), 0o700); err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	err := s.locked(func() error {
		entries, err := os.ReadDir(filepath.Join(s.dir, stagedDir))
		if err != nil {
			return err
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), tmpPrefix) {
				if err := os.RemoveAll(filepath.Join(s.dir, stagedDir, e.Name())); err != nil {
					return err
				}
			}
		}
		st, err := s.loadState()
		if err != nil {
			return err
		}
		if st.Pending != nil {
			return s.completePending(st)
		}
		if s.opts.Counter != nil {
			// A counter behind the store's record (a new or cleared TPM,
			// or an activation completed by a process without the
			// counter) is brought up to it. Best effort: if the TPM
			// refuses, the store's record still counts, and a TPM that
			// fails is reported by the first check that reads it.
			if c, err := s.opts.Counter.Read(); err == nil && c < st.HighestVersion {
				_, _ = s.opts.Counter.IncrementTo(st.HighestVersion)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Dir is the store's folder.
func (s *Store) Dir() string { return s.dir }

// locked runs f holding the store's lock (in this process and across
// processes).
func (s *Store) locked(f func() error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	lf, err := os.OpenFile(filepath.Join(s.dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("images: %w", err)
	}
	defer lf.Close()
	for {
		err = unix.Flock(int(lf.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("images: locking the image store: %w", err)
	}
	defer unix.Flock(int(lf.Fd()), unix.LOCK_UN)
	return f()
}

// state is state.json.
type state struct {
	Format string `json:"format"`
	// HighestVersion is the highest version ever activated.
	HighestVersion uint64 `json:"highestVersion"`
	// Active is the active image, nil before the first activation.
	Active *activation `json:"active,omitempty"`
	// Pending is an activation under way: recorded, counter being raised.
	Pending *activation `json:"pending,omitempty"`
	// History lists the images active before, oldest first.
	History []activation `json:"history,omitempty"`
}

type activation struct {
	Digest        string    `json:"digest"`
	Version       uint64    `json:"version"`
	VersionString string    `json:"versionString"`
	ActivatedAt   time.Time `json:"activatedAt"`
}

func (s *Store) loadState() (*state, error) {
	data, err := os.ReadFile(filepath.Join(s.dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return &state{Format: stateFormat}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	var st state
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil || st.Format != stateFormat {
		return nil, fmt.Errorf("%w: %s: not an image store state (%v)", ErrStoreCorrupt, filepath.Join(s.dir, stateFile), err)
	}
	entries := slices.Clone(st.History)
	if st.Active != nil {
		entries = append(entries, *st.Active)
	}
	for _, a := range entries {
		if _, err := ParseDigest(a.Digest); err != nil || a.Version > st.HighestVersion {
			return nil, fmt.Errorf("%w: %s: bad entry %+v", ErrStoreCorrupt, filepath.Join(s.dir, stateFile), a)
		}
	}
	if st.Pending != nil {
		if _, err := ParseDigest(st.Pending.Digest); err != nil {
			return nil, fmt.Errorf("%w: %s: bad pending entry %+v", ErrStoreCorrupt, filepath.Join(s.dir, stateFile), *st.Pending)
		}
	}
	return &st, nil
}

func (s *Store) saveState(st *state) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := writeAtomic(filepath.Join(s.dir, stateFile), 0o600, func(w io.Writer) error {
		_, err := w.Write(append(data, '\n'))
		return err
	}); err != nil {
		return fmt.Errorf("images: writing the image store state: %w", err)
	}
	return nil
}

// highest is the highest activated version: the larger of the state's and
// the counter's.
func (s *Store) highest(st *state) (uint64, string, error) {
	h, from := st.HighestVersion, "the image store"
	if s.opts.Counter != nil {
		c, err := s.opts.Counter.Read()
		if err != nil {
			return 0, "", fmt.Errorf("images: reading the version counter: %w", err)
		}
		if c > h {
			h, from = c, "the TPM counter"
		}
	}
	return h, from, nil
}

// Highest returns the highest activated version: the larger of the
// store's record and the counter's value.
func (s *Store) Highest() (uint64, error) {
	var h uint64
	err := s.locked(func() error {
		st, err := s.loadState()
		if err != nil {
			return err
		}
		h, _, err = s.highest(st)
		return err
	})
	return h, err
}

func (s *Store) checkRollback(st *state, m *Manifest) error {
	h, from, err := s.highest(st)
	if err != nil {
		return err
	}
	if m.Version < h {
		return fmt.Errorf("%w: image %q %s has version %d, below the highest activated version %d (recorded in %s)",
			ErrRollback, m.Name, m.VersionString, m.Version, h, from)
	}
	return nil
}

func (s *Store) needTrust() error {
	if s.opts.Trust == nil || s.opts.Target == "" {
		return ErrNoTrust
	}
	return nil
}

// checkFresh applies the trust's freeze protection with the stored
// timestamp.
func (s *Store) checkFresh(d Digest) error {
	ts, err := os.ReadFile(filepath.Join(s.dir, timestampFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("images: %w", err)
	}
	if len(ts) > 0 {
		if ts, err = DearmorType(ts, PEMTimestamp); err != nil {
			return fmt.Errorf("%w: stored timestamp: %v", ErrStoreCorrupt, err)
		}
	}
	return s.opts.Trust.CheckFresh(ts, d, s.opts.Now())
}

func (s *Store) imageDir(d Digest) string { return filepath.Join(s.dir, stagedDir, d.String()) }

// Stage verifies the bundle at bundlePath completely and keeps it: its
// signatures, the manifest, the hardware target, the payload's size and
// SHA-384 (Trust.Verify), then that its version is not below the highest
// activated (ErrRollback) and, with freeze protection, that the stored
// timestamp is fresh and lists it (ErrStaleView). The bundle is read once:
// the payload is copied to a temporary folder while it is hashed, and
// that folder becomes staged/<digest> by one rename once everything
// checked out. A refused bundle leaves nothing behind. Staging an image
// already staged returns it.
func (s *Store) Stage(bundlePath string) (*Image, error) {
	if err := s.needTrust(); err != nil {
		return nil, err
	}
	var img *Image
	err := s.locked(func() error {
		f, err := os.Open(bundlePath)
		if err != nil {
			return err
		}
		defer f.Close()
		tmp, err := os.MkdirTemp(filepath.Join(s.dir, stagedDir), tmpPrefix)
		if err != nil {
			return fmt.Errorf("images: %w", err)
		}
		keep := false
		defer func() {
			if !keep {
				os.RemoveAll(tmp)
			}
		}()
		payload, err := os.OpenFile(filepath.Join(tmp, payloadFile), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("images: %w", err)
		}
		defer payload.Close()
		v, err := s.opts.Trust.Verify(f, VerifyOptions{Target: s.opts.Target, PayloadTo: payload})
		if err != nil {
			return err
		}
		st, err := s.loadState()
		if err != nil {
			return err
		}
		if err := s.checkRollback(st, v.Manifest); err != nil {
			return err
		}
		if err := s.checkFresh(v.Digest); err != nil {
			return err
		}
		final := s.imageDir(v.Digest)
		if _, err := os.Stat(final); err == nil {
			img, err = s.image(st, v.Digest)
			return err
		}
		header, err := v.Envelope.EncodeHeader()
		if err != nil {
			return err
		}
		if err := writeFileSync(filepath.Join(tmp, envelopeFile), header); err != nil {
			return err
		}
		if err := payload.Sync(); err != nil {
			return fmt.Errorf("images: %w", err)
		}
		if err := syncDir(tmp); err != nil {
			return fmt.Errorf("images: %w", err)
		}
		if err := os.Rename(tmp, final); err != nil {
			return fmt.Errorf("images: %w", err)
		}
		keep = true
		if err := syncDir(filepath.Dir(final)); err != nil {
			return fmt.Errorf("images: %w", err)
		}
		img, err = s.image(st, v.Digest)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("stage %s: %w", bundlePath, err)
	}
	return img, nil
}

func writeFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("images: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("images: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("images: %w", err)
	}
	return f.Close()
}

// image reads the staged image d's manifest (as verified when it was
// staged) and its status.
func (s *Store) image(st *state, d Digest) (*Image, error) {
	dir := s.imageDir(d)
	img := &Image{Digest: d, Status: StatusStaged, Dir: dir, PayloadPath: filepath.Join(dir, payloadFile), EnvelopePath: filepath.Join(dir, envelopeFile)}
	env, err := ReadBundleHeader(img.EnvelopePath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotStaged, d)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrStoreCorrupt, img.EnvelopePath, err)
	}
	if ManifestDigest(env.Manifest) != d {
		return nil, fmt.Errorf("%w: %s holds another image's manifest", ErrStoreCorrupt, dir)
	}
	img.ManifestBytes = env.Manifest
	if img.Manifest, err = DecodeManifest(env.Manifest); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrStoreCorrupt, img.EnvelopePath, err)
	}
	hex := d.String()
	for _, a := range st.History {
		if a.Digest == hex {
			img.Status, img.ActivatedAt = StatusPrevious, a.ActivatedAt
		}
	}
	if st.Active != nil && st.Active.Digest == hex {
		img.Status, img.ActivatedAt = StatusActive, st.Active.ActivatedAt
	}
	return img, nil
}

// List returns every staged image (active and previous ones included),
// highest version first. The manifests are those verified at staging; use
// Verify to check an image's files again.
func (s *Store) List() ([]*Image, error) {
	var out []*Image
	err := s.locked(func() error {
		st, err := s.loadState()
		if err != nil {
			return err
		}
		entries, err := os.ReadDir(filepath.Join(s.dir, stagedDir))
		if err != nil {
			return fmt.Errorf("images: %w", err)
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") {
				continue
			}
			d, err := ParseDigest(e.Name())
			if err != nil {
				return fmt.Errorf("%w: unexpected %s in %s", ErrStoreCorrupt, e.Name(), filepath.Join(s.dir, stagedDir))
			}
			img, err := s.image(st, d)
			if err != nil {
				return err
			}
			out = append(out, img)
		}
		return nil
	})
	slices.SortFunc(out, func(a, b *Image) int {
		if a.Manifest.Version != b.Manifest.Version {
			if a.Manifest.Version > b.Manifest.Version {
				return -1
			}
			return 1
		}
		return bytes.Compare(a.Digest[:], b.Digest[:])
	})
	return out, err
}

// Verify checks the staged image d again, completely: its stored bundle
// against the store's trust and target, as Stage did (not rollback or
// freshness). The boot step can run it on the active image.
func (s *Store) Verify(d Digest) (*Image, error) {
	if err := s.needTrust(); err != nil {
		return nil, err
	}
	var img *Image
	err := s.locked(func() error {
		st, err := s.loadState()
		if err != nil {
			return err
		}
		img, err = s.verify(st, d)
		return err
	})
	return img, err
}

func (s *Store) verify(st *state, d Digest) (*Image, error) {
	img, err := s.image(st, d)
	if err != nil {
		return nil, err
	}
	env, err := os.Open(img.EnvelopePath)
	if err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	defer env.Close()
	payload, err := os.Open(img.PayloadPath)
	if err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	defer payload.Close()
	v, err := s.opts.Trust.Verify(io.MultiReader(env, payload), VerifyOptions{Target: s.opts.Target})
	if err != nil {
		return nil, fmt.Errorf("staged image %s: %w", d, err)
	}
	if v.Digest != d {
		return nil, fmt.Errorf("%w: %s holds another image", ErrStoreCorrupt, img.Dir)
	}
	img.Manifest = v.Manifest
	return img, nil
}

// CheckActivation runs every check Activate makes, changing nothing: the
// image d is staged and verifies again under the store's trust and target,
// version is its version string (what a firmware-activation proposal
// names), its version is not below the highest activated (ErrRollback),
// and with freeze protection the stored timestamp is fresh and lists it
// (ErrStaleView). The gateway runs it when a firmware-activation proposal
// is made, so that a proposal for a rollback is refused at once.
func (s *Store) CheckActivation(d Digest, version string) (*Image, error) {
	if err := s.needTrust(); err != nil {
		return nil, err
	}
	var img *Image
	err := s.locked(func() error {
		st, err := s.loadState()
		if err != nil {
			return err
		}
		img, err = s.checkActivation(st, d, version)
		return err
	})
	return img, err
}

func (s *Store) checkActivation(st *state, d Digest, version string) (*Image, error) {
	if st.Pending != nil {
		if err := s.completePending(st); err != nil {
			return nil, err
		}
	}
	img, err := s.verify(st, d)
	if err != nil {
		return nil, err
	}
	if img.Manifest.VersionString != version {
		return nil, fmt.Errorf("%w: image %s is version %q, not %q", ErrVersionMismatch, d, img.Manifest.VersionString, version)
	}
	if err := s.checkRollback(st, img.Manifest); err != nil {
		return nil, err
	}
	if err := s.checkFresh(d); err != nil {
		return nil, err
	}
	return img, nil
}

// Activate makes the staged image d the active one, after every check of
// CheckActivation, and records its version as the highest activated, in
// the store's state and in the counter. It is meant to run once a
// firmware-activation proposal naming d and version was approved; the
// image runs from the appliance's next start.
//
// The change is made in three durable steps: the activation is recorded as
// pending, the counter is raised to the version, the image becomes active.
// If the counter cannot be raised and did not move, the pending record is
// dropped and Activate fails, changing nothing. If it moved part-way (a
// failing TPM), the error is ErrActivationInterrupted and OpenStore (or
// the next Activate) completes the activation. Activating the active image
// again changes nothing.
func (s *Store) Activate(d Digest, version string) (*Image, error) {
	if err := s.needTrust(); err != nil {
		return nil, err
	}
	var img *Image
	err := s.locked(func() error {
		st, err := s.loadState()
		if err != nil {
			return err
		}
		if img, err = s.checkActivation(st, d, version); err != nil {
			return err
		}
		if st.Active != nil && st.Active.Digest == d.String() {
			img.Status = StatusActive
			return nil
		}
		st.Pending = &activation{Digest: d.String(), Version: img.Manifest.Version, VersionString: img.Manifest.VersionString, ActivatedAt: s.opts.Now().UTC().Truncate(time.Second)}
		if err := s.saveState(st); err != nil {
			return err
		}
		if err := s.completePending(st); err != nil {
			return err
		}
		img.Status, img.ActivatedAt = StatusActive, st.Active.ActivatedAt
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("activate image %s: %w", d, err)
	}
	return img, nil
}

// completePending raises the counter to the pending activation's version
// and makes it active. If the counter cannot be raised and has not moved
// above the highest version recorded, the activation is dropped.
func (s *Store) completePending(st *state) error {
	p := st.Pending
	if s.opts.Counter != nil {
		if _, err := s.opts.Counter.IncrementTo(p.Version); err != nil {
			c, rerr := s.opts.Counter.Read()
			if rerr == nil && c <= st.HighestVersion {
				st.Pending = nil
				if serr := s.saveState(st); serr != nil {
					return serr
				}
				return fmt.Errorf("images: raising the version counter to %d (image %s): %w", p.Version, p.Digest, err)
			}
			return fmt.Errorf("%w: image %s version %d is recorded as pending, but raising the version counter failed: %w",
				ErrActivationInterrupted, p.Digest, p.Version, err)
		}
	}
	if st.Active != nil {
		st.History = append(st.History, *st.Active)
		if len(st.History) > maxHistory {
			st.History = st.History[len(st.History)-maxHistory:]
		}
	}
	st.Active, st.Pending = p, nil
	st.HighestVersion = max(st.HighestVersion, p.Version)
	return s.saveState(st)
}

// Active returns the active image, refusing it (ErrRollback) if its
// version is below the highest activated version, in the store's state or
// in the counter: a restored old state file, or a counter raised past it.
// An interrupted activation is completed first (or ErrActivationInterrupted
// returned while the counter still fails). It does not hash the payload;
// Verify does.
func (s *Store) Active() (*Image, error) {
	var img *Image
	err := s.locked(func() error {
		st, err := s.loadState()
		if err != nil {
			return err
		}
		if st.Pending != nil {
			if err := s.completePending(st); err != nil {
				return err
			}
		}
		if st.Active == nil {
			return ErrNoActiveImage
		}
		d, err := ParseDigest(st.Active.Digest)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrStoreCorrupt, err)
		}
		if img, err = s.image(st, d); err != nil {
			return err
		}
		if img.Manifest.Version != st.Active.Version {
			return fmt.Errorf("%w: active image %s is recorded as version %d but its manifest says %d", ErrStoreCorrupt, d, st.Active.Version, img.Manifest.Version)
		}
		return s.checkRollback(st, img.Manifest)
	})
	if err != nil {
		return nil, err
	}
	return img, nil
}

// UpdateTimestamp verifies a signed timestamp (Trust.VerifyTimestamp) and
// keeps it as the store's timestamp, unless it is older than the one kept
// (a lower version, or the same version with other contents:
// ErrTimestampRollback). It returns the timestamp.
func (s *Store) UpdateTimestamp(signed []byte) (*Timestamp, error) {
	if s.opts.Trust == nil {
		return nil, ErrNoTrust
	}
	ts, err := s.opts.Trust.VerifyTimestamp(signed, s.opts.Now())
	if err != nil {
		return nil, err
	}
	err = s.locked(func() error {
		old, oldRaw, err := s.storedTimestamp()
		if err != nil {
			return err
		}
		if old != nil {
			if ts.Version < old.Version || ts.Version == old.Version && !bytes.Equal(oldRaw, signed) {
				return fmt.Errorf("%w: version %d, the store has version %d", ErrTimestampRollback, ts.Version, old.Version)
			}
			if bytes.Equal(oldRaw, signed) {
				return nil
			}
		}
		return writeAtomic(filepath.Join(s.dir, timestampFile), 0o600, func(w io.Writer) error {
			_, err := w.Write(Armor(PEMTimestamp, signed))
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("update timestamp: %w", err)
	}
	return ts, nil
}

// storedTimestamp returns the kept timestamp (as verified when it was
// kept) and its signed encoding, or nil.
func (s *Store) storedTimestamp() (*Timestamp, []byte, error) {
	file, err := os.ReadFile(filepath.Join(s.dir, timestampFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("images: %w", err)
	}
	raw, err := DearmorType(file, PEMTimestamp)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: stored timestamp: %v", ErrStoreCorrupt, err)
	}
	st, err := DecodeSignedTimestamp(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: stored timestamp: %v", ErrStoreCorrupt, err)
	}
	ts, err := DecodeTimestamp(st.Timestamp)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: stored timestamp: %v", ErrStoreCorrupt, err)
	}
	return ts, raw, nil
}

// Timestamp returns the store's timestamp (nil if it has none), as
// verified when it was kept; it may have expired since.
func (s *Store) Timestamp() (*Timestamp, error) {
	var ts *Timestamp
	err := s.locked(func() error {
		var err error
		ts, _, err = s.storedTimestamp()
		return err
	})
	return ts, err
}
