package hsmpool

import (
	"context"
	"testing"
)

func TestSmoke(t *testing.T) {
	p, _ := newTestPool(t, 2, nil)
	ctx := context.Background()
	k := mustKey(t, p, "k1", AES256, UsageEncrypt)
	iv, ct, err := p.EncryptGCM(ctx, k, []byte("hello"), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	pt, err := p.DecryptGCM(ctx, k, iv, ct, []byte("aad"))
	if err != nil || string(pt) != "hello" {
		t.Fatal(pt, err)
	}
	for _, st := range p.Status() {
		t.Logf("%+v", st)
	}
}
