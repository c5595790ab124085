package gateway

import (
	"context"
	"time"

	"github.com/hsmgate/hsmgate/gateway/audit"
	"github.com/hsmgate/hsmgate/gateway/kmsapi"
)

// ScheduleCheckEvery is how often a serving gateway looks for keys whose
// automatic rotation is due, keys whose pending-deletion window has ended
// and imported material that has expired. Rotation periods and deletion windows are whole days, so an
// hour's delay at most is immaterial; the check also runs when serving
// starts, so what fell due while the gateway was down happens then, once.
const ScheduleCheckEvery = time.Hour

// SchedulerPrincipal is the principal named in the audit records of what
// the gateway does on its own schedule.
const SchedulerPrincipal = "hsmgate:scheduler"

// RotateDue rotates every key whose automatic rotation is due at now. Each
// rotation is written to the audit log (operation "RotateKey").
func (g *Gateway) RotateDue(ctx context.Context, now time.Time) []kmsapi.RotationEvent {
	return g.service.RotateDue(ctx, now)
}

// DeleteDue deletes every key whose pending-deletion window has ended at
// now, writing an audit record (operation "DeleteKey") for each.
func (g *Gateway) DeleteDue(ctx context.Context, now time.Time) []kmsapi.DeletionEvent {
	evs := g.service.DeleteDue(ctx, now)
	for _, ev := range evs {
		g.auditEvent(ctx, "DeleteKey", "", ev.KeyID, 0, ev.Err)
	}
	return evs
}

// ExpireDue deletes imported key material whose ValidTo has passed at
// now, writing an audit record (operation "DeleteImportedKeyMaterial") for
// each key.
func (g *Gateway) ExpireDue(ctx context.Context, now time.Time) []kmsapi.DeletionEvent {
	evs := g.service.ExpireDue(ctx, now)
	for _, ev := range evs {
		g.auditEvent(ctx, "DeleteImportedKeyMaterial", "", ev.KeyID, 0, ev.Err)
	}
	return evs
}

// auditRotation is the service's OnRotation hook: every rotation, whatever
// caused it, is an audit record.
func (g *Gateway) auditRotation(ctx context.Context, ev kmsapi.RotationEvent) {
	g.auditEvent(ctx, "RotateKey", ev.Principal, ev.KeyID, ev.Version, ev.Err)
}

// auditEvent records something done to a key outside a request's own
// record: by the scheduler (principal "") or caused by a principal's request.
func (g *Gateway) auditEvent(ctx context.Context, op, principal, keyID string, version uint32, failure error) {
	if principal == "" {
		principal = SchedulerPrincipal
	}
	if failure != nil {
		g.log.Error("scheduled key operation failed; it will be retried", "operation", op, "key_id", keyID, "err", failure)
	}
	if g.cfg.Audit == nil {
		return
	}
	rec := audit.Record{
		RequestID: newRequestID(), Principal: principal, Operation: op,
		KeyID: keyID, KeyARN: g.service.KeyARN(keyID),
		KeyVersion: version, Outcome: audit.OutcomeOK,
	}
	if failure != nil {
		rec.Outcome, rec.ErrorCode = audit.OutcomeError, kmsapi.ExInternal
	}
	if err := g.cfg.Audit.Append(context.WithoutCancel(ctx), rec); err != nil {
		g.log.Error("audit log write failed for a scheduled key operation", "operation", op, "key_id", keyID, "err", err)
	}
}

// scheduleLoop runs RotateDue, DeleteDue and ExpireDue at start and every
// ScheduleCheckEvery until ctx ends, each time Config.RunSchedule allows.
func (g *Gateway) scheduleLoop(ctx context.Context) {
	t := time.NewTicker(ScheduleCheckEvery)
	defer t.Stop()
	for {
		if g.cfg.RunSchedule == nil || g.cfg.RunSchedule() {
			now := g.now()
			g.RotateDue(ctx, now)
			g.DeleteDue(ctx, now)
			g.ExpireDue(ctx, now)
		}
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
