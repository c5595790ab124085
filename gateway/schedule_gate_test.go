package gateway_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/hsmpool"
	"github.com/hsmgate/hsmgate/internal/gatewaytest"
)

// Config.RunSchedule gates the scheduled rotation (in a cluster, to the
// raft leader): a due key is not rotated while it says no, and is when it
// says yes.
func TestRunScheduleGatesTheScheduler(t *testing.T) {
	var clock atomic.Pointer[time.Time]
	start := time.Now()
	clock.Store(&start)
	var allow atomic.Bool
	var asked atomic.Int32
	tg := startGateway(t, func(_ *hsmpool.Options, gc *gateway.Config) {
		gc.Now = func() time.Time { return *clock.Load() }
		gc.RunSchedule = func() bool { asked.Add(1); return allow.Load() }
	})
	ctx := context.Background()
	c := tg.sigv4Client(tg.admin.AccessKeyID, tg.admin.SecretAccessKey)
	k, err := c.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.EnableKeyRotation(ctx, &kms.EnableKeyRotationInput{KeyId: k.KeyMetadata.KeyId}); err != nil {
		t.Fatal(err)
	}
	tg.stop()
	due := start.AddDate(1, 0, 2)
	clock.Store(&due)
	versions := func() int {
		key, err := tg.store.Key(*k.KeyMetadata.KeyId)
		if err != nil {
			t.Fatal(err)
		}
		return len(key.Versions)
	}
	// Serving runs the scheduled check at once: refused, it rotates nothing.
	before := asked.Load()
	_, _, stop := gatewaytest.Serve(t, tg.gw, tg.pool, tg.store, tg.dir)
	waitScheduled(t, "the scheduler to ask", func() bool { return asked.Load() > before })
	stop()
	if n := versions(); n != 1 {
		t.Fatalf("a gated scheduler rotated the key: %d versions", n)
	}
	// Allowed, it rotates the due key.
	allow.Store(true)
	_, _, stop = gatewaytest.Serve(t, tg.gw, tg.pool, tg.store, tg.dir)
	waitScheduled(t, "the scheduled rotation", func() bool { return versions() == 2 })
	stop()
}

func waitScheduled(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
