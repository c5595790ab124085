package kmsapi

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/gateway/keystore"
)

// The audit record of a request a grant allowed names the grant; one the
// key policy allowed names none.
func TestInfoNamesTheGrant(t *testing.T) {
	s, ids := newTestService(t)
	ctx := context.Background()
	if err := s.Store.Apply(&keystore.CreatePrincipal{Principal: keystore.Principal{Name: "bob", CreatedAt: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	bob := Caller{Principal: "bob"}
	body := []byte(`{"KeyId":"` + ids["sym"] + `","Plaintext":"aGVsbG8=","EncryptionContext":{"a":"b"}}`)
	if _, apiErr := s.Do(ctx, bob, TargetPrefix+"Encrypt", body, &Info{}); apiErr == nil || apiErr.Type != ExAccessDenied {
		t.Fatalf("before the grant: %v", apiErr)
	}
	out, apiErr := s.Do(ctx, admin, TargetPrefix+"CreateGrant", []byte(`{"KeyId":"`+ids["sym"]+`","GranteePrincipal":"arn:aws:iam::111122223333:user/bob","Operations":["Encrypt"],"Constraints":{"EncryptionContextEquals":{"a":"b"}}}`), &Info{})
	if apiErr != nil {
		t.Fatal(apiErr)
	}
	var g createGrantResponse
	if err := json.Unmarshal(out, &g); err != nil {
		t.Fatal(err)
	}
	var info Info
	if _, apiErr := s.Do(ctx, bob, TargetPrefix+"Encrypt", body, &info); apiErr != nil {
		t.Fatal(apiErr)
	}
	if info.GrantID != g.GrantId || info.KeyID != ids["sym"] {
		t.Fatalf("info %+v, grant %s", info, g.GrantId)
	}
	// EncryptionContextEquals: one more pair and the grant doesn't apply.
	more := []byte(`{"KeyId":"` + ids["sym"] + `","Plaintext":"aGVsbG8=","EncryptionContext":{"a":"b","c":"d"}}`)
	if _, apiErr := s.Do(ctx, bob, TargetPrefix+"Encrypt", more, &Info{}); apiErr == nil || apiErr.Type != ExAccessDenied {
		t.Fatalf("outside EncryptionContextEquals: %v", apiErr)
	}
	info = Info{}
	if _, apiErr := s.Do(ctx, admin, TargetPrefix+"Encrypt", body, &info); apiErr != nil || info.GrantID != "" {
		t.Fatalf("admin: %v, info %+v", apiErr, info)
	}
}

// A key version stops at its AES-GCM limit: the key rotates by itself and
// every ciphertext, before and after, decrypts; the encryptions are
// counted durably, in reserved blocks.
func TestGCMLimitRotates(t *testing.T) {
	s, ids := newTestService(t)
	s.GCMLimit, s.GCMReserve = 10, 4
	var events []RotationEvent
	s.OnRotation = func(_ context.Context, ev RotationEvent) { events = append(events, ev) }
	ctx := context.Background()
	var blobs [][]byte
	for i := 0; i < 12; i++ {
		out, apiErr := s.Do(ctx, admin, TargetPrefix+"Encrypt", []byte(`{"KeyId":"`+ids["sym"]+`","Plaintext":"aGVsbG8="}`), nil)
		if apiErr != nil {
			t.Fatal(apiErr)
		}
		var r encryptResponse
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatal(err)
		}
		blobs = append(blobs, r.CiphertextBlob)
	}
	k, err := s.Store.Key(ids["sym"])
	if err != nil {
		t.Fatal(err)
	}
	// Blocks of 4 within a limit of 10: version 1 gets 8 encryptions, the
	// ninth would pass the limit, so version 2 takes the rest.
	if len(k.Versions) != 2 || k.Versions[0].GCMReserved != 8 || k.Versions[1].GCMReserved != 4 || k.Versions[1].RotationType != keystore.RotationAutomatic {
		t.Fatalf("versions after 12 encryptions: %+v", k.Versions)
	}
	if len(events) != 1 || events[0].Reason != "gcm-limit" || events[0].Version != 2 {
		t.Fatalf("rotation events %+v", events)
	}
	for i, b := range blobs {
		body, _ := json.Marshal(map[string]any{"CiphertextBlob": b})
		if _, apiErr := s.Do(ctx, admin, TargetPrefix+"Decrypt", body, nil); apiErr != nil {
			t.Fatalf("ciphertext %d: %v", i, apiErr)
		}
	}
}
