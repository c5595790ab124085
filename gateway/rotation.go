package gateway

import (
	"context"
	"time"

	"github.com/hsmgate/hsmgate/gateway/audit"
	"github.com/hsmgate/hsmgate/gateway/kmsapi"
)

// RotationCheckEvery is how often a serving gateway looks for keys whose
// automatic rotation is due. Rotation periods are whole days, so an hour's
// delay at most is immaterial; the check also runs when serving starts, so
// a rotation that fell due while the gateway was down happens then, once.
const RotationCheckEvery = time.Hour

// RotationPrincipal is the principal named in the audit records of
// rotations the gateway makes on its own schedule.
const RotationPrincipal = "hsmgate:scheduler"

// RotateDue rotates every key whose automatic rotation is due at now and
// writes one audit record per rotation (operation "RotateKey"). It returns
// what it did.
func (g *Gateway) RotateDue(ctx context.Context, now time.Time) []kmsapi.Rotation {
	rots := g.service.RotateDue(ctx, now)
	for _, r := range rots {
		if r.Err != nil {
			g.log.Error("automatic key rotation failed; it will be retried", "key_id", r.KeyID, "err", r.Err)
		}
		if g.cfg.Audit == nil {
			continue
		}
		rec := audit.Record{
			RequestID: newRequestID(), Principal: RotationPrincipal, Operation: "RotateKey",
			KeyID: r.KeyID, KeyARN: "arn:aws:kms:" + g.cfg.Region + ":" + g.cfg.Account + ":key/" + r.KeyID,
			KeyVersion: r.Version, Outcome: audit.OutcomeOK,
		}
		if r.Err != nil {
			rec.Outcome, rec.ErrorCode = audit.OutcomeError, kmsapi.ExInternal
		}
		if err := g.cfg.Audit.Append(ctx, rec); err != nil {
			g.log.Error("audit log write failed for a key rotation", "key_id", r.KeyID, "err", err)
		}
	}
	return rots
}

// rotationLoop runs RotateDue at start and every RotationCheckEvery until
// ctx ends.
func (g *Gateway) rotationLoop(ctx context.Context) {
	t := time.NewTicker(RotationCheckEvery)
	defer t.Stop()
	for {
		g.RotateDue(ctx, g.now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (g *Gateway) now() time.Time {
	if g.cfg.Now != nil {
		return g.cfg.Now()
	}
	return time.Now()
}
