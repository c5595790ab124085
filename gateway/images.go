package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/gateway/kmsapi"
	"github.com/hsmgate/hsmgate/images"
	"github.com/hsmgate/hsmgate/quorum"
)

// Firmware images on the gateway (docs/images.md). The image store lives
// in <data>/images (package images); the trusted state (release keys,
// threshold, timestamp keys) is a keystore meta record, installed once by
// an administrator (ImageTrustInstall) and changed only by an approved
// release-trust proposal. Activation is an approved firmware-activation
// proposal: the store records it (anti-rollback in the store and, with a
// TPM, an NV counter), then ImageService.OnActivated reseals the boot
// secrets to the new image's predicted measurements; the gateway measures
// the new image at its next start.

const metaImageTrust = "image-trust"

// ImageService is the gateway's image configuration ([images]).
type ImageService struct {
	// DataDir is the data folder (the store is DataDir/images).
	DataDir string
	// Target is this appliance's hardware target.
	Target string
	// Counter is the TPM NV counter (attest.OpenCounter), or nil.
	Counter images.VersionCounter
	// OnActivated runs once an approved activation is recorded, on the
	// serving gateway: it reseals the boot secrets and records the golden
	// measurement, and reports what it did. Nil means activations can't
	// run here (a command on a stopped gateway).
	OnActivated func(ctx context.Context, img *images.Image) (string, error)
}

// LoadImageTrust returns the installed trust and its encoding, or nil.
func LoadImageTrust(store *keystore.Store) (*images.Trust, []byte, error) {
	raw, err := store.Meta(metaImageTrust)
	if err != nil || len(raw) == 0 {
		return nil, nil, err
	}
	t, err := images.DecodeTrust(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("the installed image trust: %w", err)
	}
	return t, raw, nil
}

func (a *Admin) imageService() (*ImageService, error) {
	if a.Images == nil || a.Images.Target == "" {
		return nil, kmsapi.Errorf(kmsapi.ExUnsupported, "Firmware images are not configured: set target in the [images] section (docs/images.md).")
	}
	return a.Images, nil
}

// imageStore opens the image store with the installed trust.
func (a *Admin) imageStore() (*images.Store, error) {
	svc, err := a.imageService()
	if err != nil {
		return nil, err
	}
	trust, _, err := LoadImageTrust(a.Identities.Store)
	if err != nil {
		return nil, err
	}
	if trust == nil {
		return nil, kmsapi.Errorf(kmsapi.ExInvalidState, "No image trust is installed (hsmgate image trust install).")
	}
	return images.OpenStore(svc.DataDir, images.Options{Trust: trust, Target: svc.Target, Counter: svc.Counter})
}

// Requests and answers of the image operations.
type (
	ImageTrustInstallInput struct{ Trust []byte }
	ImageStageInput        struct{ Path string }
	ImageRefreshInput      struct{ Timestamp []byte }
	ImageInfo              struct {
		Digest        string
		Name          string
		Version       uint64
		VersionString string
		Target        string
		Status        string
	}
	ImageStatusOutput struct {
		Target       string
		TrustVersion uint64
		TrustSHA256  string
		Trust        []byte
		Highest      uint64
		Images       []ImageInfo
	}
)

func imageInfo(img *images.Image) ImageInfo {
	return ImageInfo{Digest: img.Digest.String(), Name: img.Manifest.Name, Version: img.Manifest.Version,
		VersionString: img.Manifest.VersionString, Target: img.Manifest.Target, Status: string(img.Status)}
}

// imageRefused maps the images package's refusals to ValidationException
// with their reason.
func imageRefused(err error) error {
	var apiErr *kmsapi.Error
	if errors.As(err, &apiErr) {
		return err
	}
	return kmsapi.Errorf(kmsapi.ExValidation, "%s", err.Error())
}

func (a *Admin) imageTrustInstall(ctx context.Context, caller *kmsapi.Caller, req *ImageTrustInstallInput) (*ImageStatusOutput, error) {
	if _, err := a.imageService(); err != nil {
		return nil, err
	}
	quorumMu.Lock()
	defer quorumMu.Unlock()
	if cur, _, err := LoadImageTrust(a.Identities.Store); err != nil {
		return nil, err
	} else if cur != nil {
		return nil, kmsapi.Errorf(kmsapi.ExAlreadyExists, "An image trust (version %d) is installed already; change it with a release-trust proposal (hsmgate image trust propose).", cur.Version)
	}
	t, err := images.DecodeTrust(req.Trust)
	if err != nil {
		return nil, imageRefused(err)
	}
	// Only over no trust at all: another node may have installed one since.
	absent := keystore.MetaSHA256(nil)
	if err := a.Identities.Store.Apply(&keystore.SetMeta{Name: metaImageTrust, Value: req.Trust, IfSHA256: absent[:]}); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(req.Trust)
	a.changed(ctx, "ImageTrustInstall", caller, "trust_version", t.Version, "trust_sha256", hex.EncodeToString(sum[:]))
	return a.imageStatus(ctx, caller, &adminEmpty{})
}

func (a *Admin) imageStatus(_ context.Context, caller *kmsapi.Caller, _ *adminEmpty) (*ImageStatusOutput, error) {
	if !caller.Admin {
		if err := a.mayReadQuorum(caller); err != nil {
			return nil, err
		}
	}
	svc, err := a.imageService()
	if err != nil {
		return nil, err
	}
	out := &ImageStatusOutput{Target: svc.Target, Images: []ImageInfo{}}
	t, raw, err := LoadImageTrust(a.Identities.Store)
	if err != nil || t == nil {
		return out, err
	}
	sum := sha256.Sum256(raw)
	out.TrustVersion, out.TrustSHA256, out.Trust = t.Version, hex.EncodeToString(sum[:]), raw
	st, err := a.imageStore()
	if err != nil {
		return nil, err
	}
	if out.Highest, err = st.Highest(); err != nil {
		return nil, err
	}
	list, err := st.List()
	if err != nil {
		return nil, err
	}
	for _, img := range list {
		out.Images = append(out.Images, imageInfo(img))
	}
	return out, nil
}

func (a *Admin) imageStage(ctx context.Context, caller *kmsapi.Caller, req *ImageStageInput) (*ImageInfo, error) {
	st, err := a.imageStore()
	if err != nil {
		return nil, err
	}
	img, err := st.Stage(req.Path)
	if err != nil {
		return nil, imageRefused(err)
	}
	a.changed(ctx, "ImageStage", caller, "digest", img.Digest.String(), "version", img.Manifest.VersionString)
	info := imageInfo(img)
	return &info, nil
}

func (a *Admin) imageRefresh(ctx context.Context, caller *kmsapi.Caller, req *ImageRefreshInput) (*adminEmpty, error) {
	st, err := a.imageStore()
	if err != nil {
		return nil, err
	}
	ts, err := st.UpdateTimestamp(req.Timestamp)
	if err != nil {
		return nil, imageRefused(err)
	}
	a.changed(ctx, "ImageRefresh", caller, "timestamp_version", ts.Version)
	return &adminEmpty{}, nil
}

// mayReadQuorum lets officers of the current set read (as QuorumStatus).
func (a *Admin) mayReadQuorum(caller *kmsapi.Caller) error {
	st, set, err := a.loadQuorum()
	if err != nil {
		return err
	}
	return a.mayRead(st, set, caller)
}

// prepareImage checks a firmware-activation or release-trust proposal and
// returns the function that runs it (see prepare).
// errActivationElsewhere marks why a firmware activation can't run on
// this gateway although it may on another (in a cluster, each node
// activates images into its own store): the image is not staged here, or
// images or the serving gateway's boot hooks are not configured here.
var errActivationElsewhere = errors.New("the firmware activation can't run on this gateway")

func (a *Admin) prepareImage(p *quorum.Proposal, attachment []byte) (func(context.Context) ([]byte, error), error) {
	switch params := p.Params.(type) {
	case *quorum.FirmwareActivationParams:
		svc, err := a.imageService()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errActivationElsewhere, err)
		}
		if svc.OnActivated == nil {
			return nil, fmt.Errorf("%w: %w", errActivationElsewhere,
				kmsapi.Errorf(kmsapi.ExUnsupported, "Firmware activations run on the serving gateway, which reseals its boot secrets to the new image."))
		}
		st, err := a.imageStore()
		if err != nil {
			return nil, err
		}
		var d images.Digest
		copy(d[:], params.ImageSHA256)
		if _, err := st.CheckActivation(d, params.Version); errors.Is(err, images.ErrNotStaged) {
			return nil, fmt.Errorf("%w: %w", errActivationElsewhere, imageRefused(err))
		} else if err != nil {
			return nil, imageRefused(err)
		}
		return func(ctx context.Context) ([]byte, error) {
			img, err := st.Activate(d, params.Version)
			if err != nil {
				return nil, imageRefused(err)
			}
			report, err := svc.OnActivated(ctx, img)
			out, _ := json.Marshal(struct {
				Image  ImageInfo
				Report string
			}{imageInfo(img), report})
			if err != nil {
				return out, fmt.Errorf("image %s (%s) is recorded as active, but preparing its boot failed: %w", img.Digest, img.Manifest.VersionString, err)
			}
			return out, nil
		}, nil
	case *quorum.ReleaseTrustParams:
		if _, err := a.imageService(); err != nil {
			return nil, err
		}
		cur, _, err := LoadImageTrust(a.Identities.Store)
		if err != nil {
			return nil, err
		}
		if cur == nil {
			return nil, kmsapi.Errorf(kmsapi.ExInvalidState, "No image trust is installed: install the first with hsmgate image trust install.")
		}
		if sum := sha256.Sum256(attachment); hex.EncodeToString(sum[:]) != hex.EncodeToString(params.TrustSHA256) {
			return nil, kmsapi.Errorf(kmsapi.ExValidation, "The attached trust record does not have the SHA-256 the proposal names.")
		}
		next, err := images.DecodeTrust(attachment)
		if err != nil {
			return nil, imageRefused(err)
		}
		if next.Version != params.Version || next.Version != cur.Version+1 {
			return nil, kmsapi.Errorf(kmsapi.ExValidation, "The new trust must be version %d (the installed one is %d); it is %d, the proposal says %d.", cur.Version+1, cur.Version, next.Version, params.Version)
		}
		return func(context.Context) ([]byte, error) {
			if err := a.Identities.Store.Apply(&keystore.SetMeta{Name: metaImageTrust, Value: attachment}); err != nil {
				return nil, err
			}
			return json.Marshal(struct{ TrustVersion uint64 }{next.Version})
		}, nil
	}
	return nil, fmt.Errorf("not an image proposal: %s", p.Kind)
}
