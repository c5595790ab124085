package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/hsmgate/hsmgate/attest"
	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/images"
	"github.com/hsmgate/hsmgate/internal/config"
	"github.com/hsmgate/hsmgate/internal/pki"
)

// The firmware image a boot measures, and what an approved activation
// does to the boot secrets (docs/images.md, "Activation on the gateway").

// activeImage is the active image of the data folder's image store, or nil
// without [images] or without an active image.
func activeImage(cfg *config.Config) (*images.Image, error) {
	if cfg.Images == nil {
		return nil, nil
	}
	st, err := images.OpenStore(cfg.Dir, images.Options{Target: cfg.Images.Target})
	if err != nil {
		return nil, fmt.Errorf("the image store: %w", err)
	}
	img, err := st.Active()
	if errors.Is(err, images.ErrNoActiveImage) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("the active image: %w", err)
	}
	return img, nil
}

// activeImageEventName is the event log name of an image's measurement.
func activeImageEventName(img *images.Image) string {
	return "image " + img.Manifest.Name + " " + img.Manifest.VersionString
}

// withImage is m with img measured as the image instead.
func (m *bootMeasurements) withImage(img *images.Image) *bootMeasurements {
	n := &bootMeasurements{manifest: img.ManifestBytes}
	for _, e := range m.events {
		if e.Kind == attest.KindImage {
			e = attest.Event{Kind: attest.KindImage, Name: activeImageEventName(img), Digest: img.Digest[:]}
		}
		n.events = append(n.events, e)
	}
	return n
}

// nextSuffix marks a sealed blob made for the next boot: an activated
// image's. Both blobs are kept until the next boot unseals the new one.
const nextSuffix = ".next"

// unsealWithNext unseals path's blob, or, when that fails and a blob
// sealed for the next boot exists, that one, which then replaces the old.
func unsealWithNext(tpm *attest.TPM, path string) ([]byte, error) {
	secret, err := unsealFile(tpm, path)
	if err == nil {
		return secret, nil
	}
	next, nerr := unsealFile(tpm, path+nextSuffix)
	if errors.Is(nerr, fs.ErrNotExist) {
		return nil, err
	}
	if nerr != nil {
		return nil, fmt.Errorf("%w (and the blob sealed for an activated image does not unseal either: %v)", err, nerr)
	}
	if rerr := os.Rename(path+nextSuffix, path); rerr != nil {
		clear(next)
		return nil, rerr
	}
	return next, nil
}

func unsealFile(tpm *attest.TPM, path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	sealed, err := attest.ParseSealed(raw)
	if err != nil {
		return nil, fmt.Errorf("sealed %s: %w", path, err)
	}
	return tpm.Unseal(sealed)
}

// imageService is serve's gateway.ImageService: with a TPM, the NV counter
// keeps the highest activated version, and an activation reseals the
// boot's secrets to the new image.
func (b *bootAttestation) imageService(cfg *config.Config, ao config.AttestOptions) (*gateway.ImageService, error) {
	if cfg.Images == nil {
		return nil, nil
	}
	svc := &gateway.ImageService{DataDir: cfg.Dir, Target: cfg.Images.Target}
	if b == nil {
		svc.OnActivated = func(context.Context, *images.Image) (string, error) {
			return "no TPM: nothing to reseal; the image is measured nowhere", nil
		}
		return svc, nil
	}
	counter, err := attest.OpenCounter(b.tpm.TPM, attest.DefaultCounterIndex)
	if err != nil {
		return nil, fmt.Errorf("the TPM's image version counter: %w", err)
	}
	svc.Counter = counter
	svc.OnActivated = func(_ context.Context, img *images.Image) (string, error) {
		return b.resealForImage(cfg, ao, img)
	}
	return svc, nil
}

// resealForImage seals this boot's secrets (the sealed PINs and the
// domain key's recovery copy) also to the measurements of a boot of img,
// beside the current blobs (".next"), and writes the golden policy of that
// boot, for verifiers, to <state_dir>/golden-next.json.
func (b *bootAttestation) resealForImage(cfg *config.Config, ao config.AttestOptions, img *images.Image) (string, error) {
	next := b.meas.withImage(img)
	pcrs, err := next.predictPCRs(ao.PCRs)
	if err != nil {
		return "", err
	}
	var done []string
	seal := func(path string, pcrs map[int][]byte) error {
		secret, err := unsealFile(b.tpm.TPM, path)
		if err != nil {
			return fmt.Errorf("unseal %s on this boot: %w", path, err)
		}
		defer clear(secret)
		if err := writeSealed(b.tpm, path+nextSuffix, secret, pcrs); err != nil {
			return err
		}
		done = append(done, path+nextSuffix)
		return nil
	}
	for _, path := range ao.SealedPINs {
		if path == "" {
			continue
		}
		if err := seal(path, pcrs); err != nil {
			return "", err
		}
	}
	dk := filepath.Join(ao.StateDir, SealedDomainKeyFile)
	if _, err := os.Stat(dk); err == nil {
		if err := seal(dk, softwarePCRs(pcrs, ao.PCRs)); err != nil {
			return "", err
		}
	}
	golden := filepath.Join(ao.StateDir, "golden-next.json")
	raw, err := jsonIndent(next.policy(ao.PCRs))
	if err != nil {
		return "", err
	}
	if err := pki.WriteFileAtomic(golden, raw, 0o644); err != nil {
		return "", err
	}
	return fmt.Sprintf("sealed for the next boot: %s; its golden policy: %s", strings.Join(done, ", "), golden), nil
}

func jsonIndent(v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	return append(b, '\n'), err
}

// checkActiveImage re-verifies the active image at start: its files
// against the installed trust and target, and its version against the
// counter. No [images], no active image or no trust installed yet: nothing
// to check.
func checkActiveImage(cfg *config.Config, store *keystore.Store, svc *gateway.ImageService) error {
	if svc == nil {
		return nil
	}
	trust, _, err := gateway.LoadImageTrust(store)
	if err != nil || trust == nil {
		return err
	}
	st, err := images.OpenStore(cfg.Dir, images.Options{Trust: trust, Target: svc.Target, Counter: svc.Counter})
	if err != nil {
		return err
	}
	img, err := st.Active()
	if errors.Is(err, images.ErrNoActiveImage) {
		return nil
	}
	if err != nil {
		return err
	}
	_, err = st.Verify(img.Digest)
	return err
}
