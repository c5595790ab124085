package images_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/attest"
	"github.com/hsmgate/hsmgate/images"
	"github.com/hsmgate/hsmgate/internal/swtpmtest"
)

// clock is a settable clock for the store.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

func openStore(t testing.TB, data string, opts images.Options) *images.Store {
	t.Helper()
	if opts.Trust == nil {
		opts.Trust = newTrust(t, 2)
	}
	if opts.Target == "" {
		opts.Target = target
	}
	s, err := images.OpenStore(data, opts)
	if err != nil {
		t.Fatalf("OpenStore: %v", err)
	}
	return s
}

func stage(t testing.TB, s *images.Store, path string) *images.Image {
	t.Helper()
	img, err := s.Stage(path)
	if err != nil {
		t.Fatalf("Stage: %v", err)
	}
	return img
}

func activate(t testing.TB, s *images.Store, img *images.Image) *images.Image {
	t.Helper()
	a, err := s.Activate(img.Digest, img.Manifest.VersionString)
	if err != nil {
		t.Fatalf("Activate: %v", err)
	}
	return a
}

// stagedEntries lists the store's staged folder (temporary entries too).
func stagedEntries(t testing.TB, s *images.Store) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(s.Dir(), "staged"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func statuses(t testing.TB, s *images.Store) string {
	t.Helper()
	list, err := s.List()
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	var parts []string
	for _, img := range list {
		parts = append(parts, fmt.Sprintf("%d:%s", img.Manifest.Version, img.Status))
	}
	return strings.Join(parts, " ")
}

func TestStoreStageListActivate(t *testing.T) {
	dir, data := t.TempDir(), t.TempDir()
	s := openStore(t, data, images.Options{})
	if _, err := s.Active(); !errors.Is(err, images.ErrNoActiveImage) {
		t.Fatalf("Active on a new store: %v", err)
	}
	img1 := stage(t, s, goodBundle(t, dir, 1))
	img2 := stage(t, s, goodBundle(t, dir, 2))
	if img1.Status != images.StatusStaged || img1.Manifest.Version != 1 {
		t.Fatalf("staged %+v", img1)
	}
	if payload, err := os.ReadFile(img2.PayloadPath); err != nil || !bytes.Equal(payload, payloadFor(2)) {
		t.Fatalf("staged payload: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(data, "images")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("store folder mode: %v %v", fi.Mode(), err)
	}
	if got := statuses(t, s); got != "2:staged 1:staged" {
		t.Fatalf("List: %s", got)
	}
	// Staging again is harmless.
	if again := stage(t, s, goodBundle(t, dir, 1)); again.Digest != img1.Digest {
		t.Fatal("restaging gave another digest")
	}

	a1 := activate(t, s, img1)
	if a1.Status != images.StatusActive || a1.ActivatedAt.IsZero() {
		t.Fatalf("Activate returned %+v", a1)
	}
	active, err := s.Active()
	if err != nil || active.Digest != img1.Digest || active.PayloadPath != img1.PayloadPath || images.ManifestDigest(active.ManifestBytes) != img1.Digest {
		t.Fatalf("Active: %+v, %v", active, err)
	}
	activate(t, s, img2)
	if got := statuses(t, s); got != "2:active 1:previous" {
		t.Fatalf("List after two activations: %s", got)
	}
	if h, err := s.Highest(); err != nil || h != 2 {
		t.Fatalf("Highest = %d, %v", h, err)
	}
	// Activating the active image again changes nothing.
	if a, err := s.Activate(img2.Digest, "2.2.0"); err != nil || a.Status != images.StatusActive {
		t.Fatalf("re-activating: %v", err)
	}
	// A fresh Store on the same folder sees the same.
	s2 := openStore(t, data, images.Options{})
	if active, err := s2.Active(); err != nil || active.Digest != img2.Digest || active.Manifest.Version != 2 {
		t.Fatalf("reopened Active: %+v, %v", active, err)
	}
	p := img2.ActivationParams()
	if p.Version != "2.2.0" || !bytes.Equal(p.ImageSHA256, img2.Digest[:]) {
		t.Errorf("ActivationParams %+v", p)
	}
	if _, err := s2.Verify(img1.Digest); err != nil {
		t.Errorf("Verify of a staged image: %v", err)
	}
}

// TestStoreStageRefusesAndKeepsNothing: every bad bundle is refused with
// its reason and leaves nothing in the store.
func TestStoreStageRefusesAndKeepsNothing(t *testing.T) {
	dir, data := t.TempDir(), t.TempDir()
	s := openStore(t, data, images.Options{})
	activate(t, s, stage(t, s, goodBundle(t, dir, 3)))
	before := stagedEntries(t, s)

	for _, tc := range []struct {
		name string
		make func() string
		want []error
	}{
		{"tampered payload", func() string {
			p := goodBundle(t, dir, 4)
			data, _ := os.ReadFile(p)
			data[len(data)-1] ^= 0x20
			os.WriteFile(p, data, 0o644)
			return p
		}, []error{images.ErrPayloadDigest}},
		{"tampered manifest", func() string {
			p := goodBundle(t, dir, 4)
			env := header(t, p)
			m, _ := images.DecodeManifest(env.Manifest)
			m.Build.Builder = "someone else"
			env.Manifest, _ = m.Encode()
			rewrite(t, p, env)
			return p
		}, []error{images.ErrTooFewSignatures, images.ErrBadSignature}},
		{"too few signatures", func() string { return bundle(t, dir, manifest(4), payloadFor(4), edSigner(1)) }, []error{images.ErrTooFewSignatures}},
		{"duplicated signer", func() string {
			p := bundle(t, dir, manifest(4), payloadFor(4), edSigner(1))
			env := header(t, p)
			env.Signatures = append(env.Signatures, env.Signatures[0])
			rewrite(t, p, env)
			return p
		}, []error{images.ErrDuplicateSigner}},
		{"wrong hardware target", func() string {
			m := manifest(4)
			m.Target = "arm64-tpm2"
			return bundle(t, dir, m, payloadFor(4), edSigner(0), edSigner(1))
		}, []error{images.ErrWrongTarget}},
		{"rollback", func() string { return goodBundle(t, dir, 2) }, []error{images.ErrRollback}},
		{"missing file", func() string { return filepath.Join(dir, "nothing.bundle") }, []error{os.ErrNotExist}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Stage(tc.make())
			wantErr(t, err, tc.want)
			if got := stagedEntries(t, s); !slicesEqual(got, before) {
				t.Fatalf("a refused bundle left %v in the store (before: %v)", got, before)
			}
		})
	}
	if got := statuses(t, s); got != "3:active" {
		t.Fatalf("List: %s", got)
	}
	// Equal to the highest version is no rollback.
	stage(t, s, bundle(t, dir, manifest(3), []byte("a rebuilt 3"), edSigner(0), edSigner(1)))
}

func slicesEqual(a, b []string) bool { return strings.Join(a, "\n") == strings.Join(b, "\n") }

func TestStoreActivateRefusals(t *testing.T) {
	dir, data := t.TempDir(), t.TempDir()
	s := openStore(t, data, images.Options{})
	img1 := stage(t, s, goodBundle(t, dir, 1))
	img2 := stage(t, s, goodBundle(t, dir, 2))

	_, err := s.Activate(images.Digest{7}, "2.1.0")
	wantErr(t, err, []error{images.ErrNotStaged})
	_, err = s.Activate(img1.Digest, "2.2.0")
	wantErr(t, err, []error{images.ErrVersionMismatch}, `"2.1.0"`, `"2.2.0"`)
	if _, err := s.CheckActivation(img2.Digest, "2.2.0"); err != nil {
		t.Fatalf("CheckActivation: %v", err)
	}

	activate(t, s, img2)
	_, err = s.CheckActivation(img1.Digest, "2.1.0")
	wantErr(t, err, []error{images.ErrRollback}, "version 1, below the highest activated version 2")
	_, err = s.Activate(img1.Digest, "2.1.0")
	wantErr(t, err, []error{images.ErrRollback})
	if active, _ := s.Active(); active.Digest != img2.Digest {
		t.Fatal("a refused activation changed the active image")
	}

	// A staged file altered on disk is caught when it is activated.
	img3 := stage(t, s, goodBundle(t, dir, 3))
	f, _ := os.OpenFile(img3.PayloadPath, os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte("x"))
	f.Close()
	_, err = s.Activate(img3.Digest, "2.3.0")
	wantErr(t, err, []error{images.ErrSizeMismatch})
	_, err = s.Verify(img3.Digest)
	wantErr(t, err, []error{images.ErrSizeMismatch})

	// Without a trust the store lists but changes nothing.
	ro, err := images.OpenStore(data, images.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ro.Stage(goodBundle(t, dir, 4)); !errors.Is(err, images.ErrNoTrust) {
		t.Errorf("Stage without trust: %v", err)
	}
	if _, err := ro.Activate(img2.Digest, "2.2.0"); !errors.Is(err, images.ErrNoTrust) {
		t.Errorf("Activate without trust: %v", err)
	}
	if active, err := ro.Active(); err != nil || active.Digest != img2.Digest {
		t.Errorf("Active without trust: %v", err)
	}
}

// TestStoreRestoredStateIsCaughtByCounter: restoring an old state file
// rolls back the store's own record; the TPM counter still refuses the old
// image.
func TestStoreRestoredStateIsCaughtByCounter(t *testing.T) {
	sw := swtpmtest.Start(t)
	tpm, err := attest.Open(sw.Config())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tpm.Close() })
	counter, err := attest.OpenCounter(tpm, attest.DefaultCounterIndex)
	if err != nil {
		t.Fatal(err)
	}
	dir, data := t.TempDir(), t.TempDir()
	s := openStore(t, data, images.Options{Counter: counter})
	img1 := stage(t, s, goodBundle(t, dir, 1))
	activate(t, s, img1)
	if v, _ := counter.Read(); v != 1 {
		t.Fatalf("counter after activating version 1: %d", v)
	}
	oldState, err := os.ReadFile(filepath.Join(s.Dir(), "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	activate(t, s, stage(t, s, goodBundle(t, dir, 3)))
	if v, _ := counter.Read(); v != 3 {
		t.Fatalf("counter after activating version 3: %d", v)
	}

	// An attacker puts the old state back: version 1 active again.
	if err := os.WriteFile(filepath.Join(s.Dir(), "state.json"), oldState, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = s.Active()
	wantErr(t, err, []error{images.ErrRollback}, "highest activated version 3 (recorded in the TPM counter)")
	_, err = s.Stage(goodBundle(t, dir, 2))
	wantErr(t, err, []error{images.ErrRollback}, "TPM counter")

	// The counter outlives a reboot (TPM reset).
	tpm.Close()
	sw.Restart()
	tpm2, err := attest.Open(sw.Config())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tpm2.Close() })
	counter2, err := attest.OpenCounter(tpm2, attest.DefaultCounterIndex)
	if err != nil {
		t.Fatal(err)
	}
	s2 := openStore(t, data, images.Options{Counter: counter2})
	_, err = s2.Activate(img1.Digest, "2.1.0")
	wantErr(t, err, []error{images.ErrRollback}, "TPM counter")
	if h, err := s2.Highest(); err != nil || h != 3 {
		t.Fatalf("Highest after a TPM restart = %d, %v", h, err)
	}
}

// failingCounter is the real TPM counter with a fault: its IncrementTo
// moves at most step and then fails.
type failingCounter struct {
	*attest.Counter
	step uint64
}

func (f *failingCounter) IncrementTo(v uint64) (uint64, error) {
	cur, err := f.Read()
	if err != nil {
		return 0, err
	}
	if f.step > 0 {
		if _, err := f.Counter.IncrementTo(min(v, cur+f.step)); err != nil {
			return 0, err
		}
	}
	return 0, errors.New("injected TPM failure")
}

func TestStoreActivateCounterFailures(t *testing.T) {
	sw := swtpmtest.Start(t)
	tpm, err := attest.Open(sw.Config())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tpm.Close() })
	counter, err := attest.OpenCounter(tpm, attest.DefaultCounterIndex)
	if err != nil {
		t.Fatal(err)
	}
	dir, data := t.TempDir(), t.TempDir()
	s := openStore(t, data, images.Options{Counter: counter})
	img1 := stage(t, s, goodBundle(t, dir, 1))
	activate(t, s, img1)

	// A version too far ahead for the TPM counter: refused, nothing
	// changed.
	far := stage(t, s, goodBundle(t, dir, 2+attest.MaxCounterStep))
	_, err = s.Activate(far.Digest, far.Manifest.VersionString)
	wantErr(t, err, []error{attest.ErrCounterStep})
	if active, err := s.Active(); err != nil || active.Digest != img1.Digest {
		t.Fatalf("after a refused activation: %+v, %v", active, err)
	}
	if v, _ := counter.Read(); v != 1 {
		t.Fatalf("counter moved to %d", v)
	}

	// A TPM that fails before moving: refused, nothing changed.
	img5 := stage(t, s, goodBundle(t, dir, 5))
	broken := openStore(t, data, images.Options{Counter: &failingCounter{Counter: counter}})
	_, err = broken.Activate(img5.Digest, "2.5.0")
	if err == nil || errors.Is(err, images.ErrActivationInterrupted) || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("Activate with a failing counter: %v", err)
	}
	if got := statuses(t, s); !strings.Contains(got, "1:active") {
		t.Fatalf("after a failed activation: %s", got)
	}

	// A TPM that fails part-way: the activation is interrupted; the
	// counter is above the old image, which can no longer run, and the
	// next open completes the activation.
	partial := openStore(t, data, images.Options{Counter: &failingCounter{Counter: counter, step: 2}})
	_, err = partial.Activate(img5.Digest, "2.5.0")
	wantErr(t, err, []error{images.ErrActivationInterrupted}, "injected")
	if v, _ := counter.Read(); v != 3 {
		t.Fatalf("counter after a partial raise: %d, want 3", v)
	}
	_, err = partial.Active()
	wantErr(t, err, []error{images.ErrActivationInterrupted})
	healed := openStore(t, data, images.Options{Counter: counter})
	active, err := healed.Active()
	if err != nil || active.Digest != img5.Digest {
		t.Fatalf("after reopening: %+v, %v", active, err)
	}
	if v, _ := counter.Read(); v != 5 {
		t.Fatalf("counter after completion: %d, want 5", v)
	}
	if got := statuses(t, healed); !strings.Contains(got, "5:active") || !strings.Contains(got, "1:previous") {
		t.Fatalf("List: %s", got)
	}
}

func TestStoreFreezeProtection(t *testing.T) {
	dir, data := t.TempDir(), t.TempDir()
	clk := &clock{now: t0.Add(time.Hour)}
	tr := withTimestampKey(newTrust(t, 2))
	s := openStore(t, data, images.Options{Trust: tr, Now: clk.Now})
	b1, b2 := goodBundle(t, dir, 1), goodBundle(t, dir, 2)
	v1, _ := tr.VerifyFile(b1, images.VerifyOptions{Target: target})
	v2, _ := tr.VerifyFile(b2, images.VerifyOptions{Target: target})

	_, err := s.Stage(b1)
	wantErr(t, err, []error{images.ErrStaleView}, "no timestamp")
	if len(stagedEntries(t, s)) != 0 {
		t.Fatal("a stale-view refusal left files behind")
	}

	if _, err := s.UpdateTimestamp(signedTimestamp(t, 10, t0, 24*time.Hour, v1.Digest)); err != nil {
		t.Fatalf("UpdateTimestamp: %v", err)
	}
	img1 := stage(t, s, b1)
	_, err = s.Stage(b2)
	wantErr(t, err, []error{images.ErrStaleView}, "does not list image "+v2.Digest.String())

	// An older timestamp does not replace a newer one; the same one again is
	// fine.
	_, err = s.UpdateTimestamp(signedTimestamp(t, 9, t0, 24*time.Hour, v1.Digest, v2.Digest))
	wantErr(t, err, []error{images.ErrTimestampRollback})
	if _, err := s.UpdateTimestamp(signedTimestamp(t, 10, t0, 24*time.Hour, v1.Digest)); err != nil {
		t.Fatalf("the same timestamp again: %v", err)
	}
	_, err = s.UpdateTimestamp(signedTimestamp(t, 10, t0, 24*time.Hour, v1.Digest, v2.Digest))
	wantErr(t, err, []error{images.ErrTimestampRollback})

	// The view goes stale: activation is refused until a fresh timestamp.
	clk.Set(t0.Add(25 * time.Hour))
	_, err = s.Activate(img1.Digest, "2.1.0")
	wantErr(t, err, []error{images.ErrStaleView}, "expired at")
	_, err = s.UpdateTimestamp(signedTimestamp(t, 11, t0, 24*time.Hour, v1.Digest, v2.Digest))
	wantErr(t, err, []error{images.ErrStaleView}, "expired")
	if _, err := s.UpdateTimestamp(signedTimestamp(t, 12, t0.Add(24*time.Hour), 24*time.Hour, v1.Digest, v2.Digest)); err != nil {
		t.Fatal(err)
	}
	activate(t, s, img1)
	stage(t, s, b2)
	if ts, err := s.Timestamp(); err != nil || ts.Version != 12 {
		t.Fatalf("Timestamp: %+v, %v", ts, err)
	}
	// A withdrawn image (left out of the next timestamp) can no longer be
	// activated.
	if _, err := s.UpdateTimestamp(signedTimestamp(t, 13, t0.Add(24*time.Hour), 24*time.Hour, v1.Digest)); err != nil {
		t.Fatal(err)
	}
	_, err = s.Activate(v2.Digest, "2.2.0")
	wantErr(t, err, []error{images.ErrStaleView}, "does not list")
}

// TestStoreConcurrentStaging: two stores (as two processes would) staging
// at once both succeed and leave one copy.
func TestStoreConcurrentStaging(t *testing.T) {
	dir, data := t.TempDir(), t.TempDir()
	path := goodBundle(t, dir, 1)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := images.OpenStore(data, images.Options{Trust: newTrust(t, 2), Target: target})
			if err == nil {
				_, err = s.Stage(path)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := stagedEntries(t, openStore(t, data, images.Options{})); len(got) != 1 {
		t.Fatalf("staged entries: %v", got)
	}
}

// TestStoreRemovesLeftovers: a Stage interrupted by a crash leaves a
// temporary folder, which the next OpenStore removes.
func TestStoreRemovesLeftovers(t *testing.T) {
	data := t.TempDir()
	s := openStore(t, data, images.Options{})
	left := filepath.Join(s.Dir(), "staged", ".tmp-123")
	if err := os.MkdirAll(left, 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(left, "payload"), []byte("half"), 0o600)
	openStore(t, data, images.Options{})
	if _, err := os.Stat(left); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("leftover not removed: %v", err)
	}
}

// TestStoreCounterCatchesUp: a counter behind the store's record (a new
// TPM, or activations made without it) is raised when the store is opened
// with it.
func TestStoreCounterCatchesUp(t *testing.T) {
	dir, data := t.TempDir(), t.TempDir()
	s := openStore(t, data, images.Options{})
	activate(t, s, stage(t, s, goodBundle(t, dir, 4)))

	sw := swtpmtest.Start(t)
	tpm, err := attest.Open(sw.Config())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tpm.Close() })
	counter, err := attest.OpenCounter(tpm, attest.DefaultCounterIndex)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := counter.Read(); v != 0 {
		t.Fatalf("new counter: %d", v)
	}
	withCounter := openStore(t, data, images.Options{Counter: counter})
	if v, _ := counter.Read(); v != 4 {
		t.Fatalf("counter after opening the store: %d, want 4", v)
	}
	if _, err := withCounter.Active(); err != nil {
		t.Fatal(err)
	}
}
