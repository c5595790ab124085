package gateway_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/gateway/kmsapi"
)

// FuzzAdminDo: the admin API (HsmGate.*) decodes JSON from admins, and the
// officers' quorum operations from officers. Whatever the body, an
// operation answers JSON or an error of the protocol's own kinds, never
// panics, and a bad request is the caller's error: KMSInternalException
// only for the operations that need the HSM pool, which this Admin lacks.
// Seeds: testdata/fuzz/FuzzAdminDo plus those added here.
func FuzzAdminDo(f *testing.F) {
	ops := gateway.AdminOperations()
	dir := f.TempDir()
	store, err := keystore.Open(filepath.Join(dir, gateway.KeystoreFile))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { store.Close() })
	a := &gateway.Admin{Identities: &gateway.Identities{Store: store}, Account: testAccount,
		QuorumLedger: filepath.Join(dir, gateway.QuorumLedgerFile)}
	ctx := context.Background()
	admin := kmsapi.Caller{Principal: gateway.AdminName, Admin: true}
	if _, apiErr := a.Do(ctx, admin, gateway.AdminTargetPrefix+"CreatePrincipal", []byte(`{"PrincipalName":"alice"}`)); apiErr != nil {
		f.Fatal(apiErr)
	}
	seeds := []string{
		``, `{}`, `null`, `[]`, `"x"`, `{"PrincipalName":"alice"}`, `{"PrincipalName":"bob","Role":true,"Service":"s3","Tags":{"team":"a"}}`,
		`{"PrincipalName":"alice","Tags":{"k":"v"}}`, `{"PrincipalName":"alice","TagKeys":["k"]}`,
		`{"AccessKeyId":"AKIAHSMGATE000000000"}`, `{"PrincipalName":"alice","CertificateSigningRequest":"-----BEGIN CERTIFICATE REQUEST-----\nAA==\n-----END CERTIFICATE REQUEST-----\n","ValidityDays":-1}`,
		`{"Store":"s1"}`, `{"Store":"s1","KeyId":"k","KmsKeyId":"x"}`,
		`{"Set":"AA==","ProofsOfPossession":["AA=="],"ClusterId":"c","Target":"t"}`,
		`{"PrincipalName":"alice","Fingerprint":"00"}`, `{"Proposal":"AA==","ProofsOfPossession":[]}`,
		`{"ProposalHash":"zz"}`, `{"Approval":"AA=="}`, `{"Trust":"AA=="}`, `{"Bundle":"AA=="}`,
		`{"Key":"AA==","Primary":true}`, `{"Limit":-1,"Marker":"\u0000"}`,
	}
	for i := range ops {
		for _, s := range seeds {
			f.Add(uint8(i), []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, opIndex uint8, body []byte) {
		op := ops[int(opIndex)%len(ops)]
		for _, caller := range []kmsapi.Caller{admin, {Principal: "alice"}} {
			out, apiErr := a.Do(ctx, caller, gateway.AdminTargetPrefix+op, body)
			if apiErr == nil {
				if !json.Valid(out) {
					t.Fatalf("%s answered invalid JSON: %q", op, out)
				}
				continue
			}
			if apiErr.Type == "" || apiErr.Message == "" {
				t.Fatalf("%s: an error without a type or message: %+v", op, apiErr)
			}
			if apiErr.Type == kmsapi.ExInternal && !gateway.AdminNeedsPool(op) {
				t.Fatalf("%s answered %s to a bad request: %s", op, apiErr.Type, apiErr.Message)
			}
		}
	})
}
