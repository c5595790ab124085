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
