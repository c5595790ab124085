package gateway_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/hsmgate/hsmgate/gateway/keystore"
)

// addPrincipal creates a principal with an access key and returns its SDK
// client.
func (tg *testGateway) addPrincipal(t *testing.T, p keystore.Principal) *kms.Client {
	t.Helper()
	p.CreatedAt = time.Now().UTC()
	if err := tg.store.Apply(&keystore.CreatePrincipal{Principal: p}); err != nil {
		t.Fatal(err)
	}
	akid, secret, err := tg.gw.Identities().CreateAccessKey(context.Background(), p.Name)
	if err != nil {
		t.Fatal(err)
	}
	return tg.sigv4Client(akid, secret)
}

func userARN(name string) string { return "arn:aws:iam::" + testAccount + ":user/" + name }

// A principal denied by the key policy gets AccessDeniedException; a grant
// lets it in (only within the grant's operations and constraints); after
// RevokeGrant it is denied again.
func TestGrants(t *testing.T) {
	tg := startGateway(t, nil)
	ctx := context.Background()
	admin := tg.sigv4Client(tg.admin.AccessKeyID, tg.admin.SecretAccessKey)
	bob := tg.addPrincipal(t, keystore.Principal{Name: "bob"})
	carol := tg.addPrincipal(t, keystore.Principal{Name: "carol"})
	k, err := admin.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	id := k.KeyMetadata.KeyId
	ec := map[string]string{"app": "payments", "env": "prod"}

	_, err = bob.Encrypt(ctx, &kms.EncryptInput{KeyId: id, Plaintext: []byte("x"), EncryptionContext: ec})
	wantCode(t, err, "AccessDeniedException")
	if msg := err.Error(); !strings.Contains(msg, userARN("bob")) || !strings.Contains(msg, "kms:Encrypt") || strings.Contains(msg, "Statement") {
		t.Errorf("denial message %q should name the principal and action and not the policy", msg)
	}

	g, err := admin.CreateGrant(ctx, &kms.CreateGrantInput{
		KeyId: id, GranteePrincipal: aws.String(userARN("bob")), RetiringPrincipal: aws.String(userARN("carol")),
		Operations:  []types.GrantOperation{types.GrantOperationEncrypt, types.GrantOperationDecrypt},
		Constraints: &types.GrantConstraints{EncryptionContextSubset: map[string]string{"app": "payments"}},
		Name:        aws.String("payments-app"),
	})
	if err != nil {
		t.Fatal(err)
	}
	// Same name and parameters: the same grant.
	again, err := admin.CreateGrant(ctx, &kms.CreateGrantInput{
		KeyId: id, GranteePrincipal: aws.String(userARN("bob")), RetiringPrincipal: aws.String(userARN("carol")),
		Operations:  []types.GrantOperation{types.GrantOperationDecrypt, types.GrantOperationEncrypt},
		Constraints: &types.GrantConstraints{EncryptionContextSubset: map[string]string{"app": "payments"}},
		Name:        aws.String("payments-app"),
	})
	if err != nil || *again.GrantId != *g.GrantId {
		t.Fatalf("repeated CreateGrant: %v, id %v want %s", err, again.GrantId, *g.GrantId)
	}

	// The token works in the very call that passes it.
	enc, err := bob.Encrypt(ctx, &kms.EncryptInput{KeyId: id, Plaintext: []byte("x"), EncryptionContext: ec, GrantTokens: []string{*g.GrantToken}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ec}); err != nil {
		t.Fatal(err)
	}
	// Outside the constraint, or the operations, the grant doesn't apply.
	_, err = bob.Encrypt(ctx, &kms.EncryptInput{KeyId: id, Plaintext: []byte("x"), EncryptionContext: map[string]string{"app": "billing"}})
	wantCode(t, err, "AccessDeniedException")
	_, err = bob.Encrypt(ctx, &kms.EncryptInput{KeyId: id, Plaintext: []byte("x")})
	wantCode(t, err, "AccessDeniedException")
	_, err = bob.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: id, KeySpec: types.DataKeySpecAes256, EncryptionContext: ec})
	wantCode(t, err, "AccessDeniedException")
	_, err = bob.CreateGrant(ctx, &kms.CreateGrantInput{KeyId: id, GranteePrincipal: aws.String(userARN("bob")),
		Operations: []types.GrantOperation{types.GrantOperationEncrypt}})
	wantCode(t, err, "AccessDeniedException")
	// A forged token is refused.
	_, err = bob.Encrypt(ctx, &kms.EncryptInput{KeyId: id, Plaintext: []byte("x"), EncryptionContext: ec,
		GrantTokens: []string{*g.GrantToken + "0"}})
	wantCode(t, err, "InvalidGrantTokenException")

	// The grant is listed for the key, and for its retiring principal.
	list, err := admin.ListGrants(ctx, &kms.ListGrantsInput{KeyId: id})
	if err != nil || len(list.Grants) != 1 || *list.Grants[0].GrantId != *g.GrantId || *list.Grants[0].GranteePrincipal != userARN("bob") ||
		list.Grants[0].Constraints.EncryptionContextSubset["app"] != "payments" {
		t.Fatalf("ListGrants: %+v %v", list, err)
	}
	ret, err := carol.ListRetirableGrants(ctx, &kms.ListRetirableGrantsInput{RetiringPrincipal: aws.String(userARN("carol"))})
	if err != nil || len(ret.Grants) != 1 {
		t.Fatalf("ListRetirableGrants: %+v %v", ret, err)
	}
	_, err = bob.ListRetirableGrants(ctx, &kms.ListRetirableGrantsInput{RetiringPrincipal: aws.String(userARN("carol"))})
	wantCode(t, err, "AccessDeniedException")
	_, err = bob.ListGrants(ctx, &kms.ListGrantsInput{KeyId: id})
	wantCode(t, err, "AccessDeniedException")
	_, err = bob.RevokeGrant(ctx, &kms.RevokeGrantInput{KeyId: id, GrantId: g.GrantId})
	wantCode(t, err, "AccessDeniedException")

	// Revoked: denied again.
	if _, err := admin.RevokeGrant(ctx, &kms.RevokeGrantInput{KeyId: id, GrantId: g.GrantId}); err != nil {
		t.Fatal(err)
	}
	_, err = bob.Encrypt(ctx, &kms.EncryptInput{KeyId: id, Plaintext: []byte("x"), EncryptionContext: ec})
	wantCode(t, err, "AccessDeniedException")
	_, err = admin.RevokeGrant(ctx, &kms.RevokeGrantInput{KeyId: id, GrantId: g.GrantId})
	wantCode(t, err, "NotFoundException")

	// A grant retired by its retiring principal, with its token.
	g2, err := admin.CreateGrant(ctx, &kms.CreateGrantInput{KeyId: id, GranteePrincipal: aws.String(userARN("bob")),
		RetiringPrincipal: aws.String(userARN("carol")), Operations: []types.GrantOperation{types.GrantOperationEncrypt}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Encrypt(ctx, &kms.EncryptInput{KeyId: id, Plaintext: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	_, err = bob.RetireGrant(ctx, &kms.RetireGrantInput{GrantToken: g2.GrantToken})
	wantCode(t, err, "AccessDeniedException")
	if _, err := carol.RetireGrant(ctx, &kms.RetireGrantInput{GrantToken: g2.GrantToken}); err != nil {
		t.Fatal(err)
	}
	_, err = bob.Encrypt(ctx, &kms.EncryptInput{KeyId: id, Plaintext: []byte("x")})
	wantCode(t, err, "AccessDeniedException")

	// Bad grants are refused.
	for _, in := range []*kms.CreateGrantInput{
		{KeyId: id, GranteePrincipal: aws.String(userARN("nobody")), Operations: []types.GrantOperation{types.GrantOperationEncrypt}},
		{KeyId: id, GranteePrincipal: aws.String(userARN("bob")), Operations: []types.GrantOperation{"Explode"}},
		{KeyId: id, GranteePrincipal: aws.String(userARN("bob")), Operations: []types.GrantOperation{types.GrantOperationSign}},
		{KeyId: id, GranteePrincipal: aws.String(userARN("bob")), Operations: []types.GrantOperation{types.GrantOperationDescribeKey},
			Constraints: &types.GrantConstraints{EncryptionContextEquals: map[string]string{"a": "b"}}},
	} {
		_, err := admin.CreateGrant(ctx, in)
		wantCode(t, err, "ValidationException")
	}
}

// Key policies: conditions on the encryption context, principal tags and
// source address; explicit Deny over Allow; the lockout safety check.
func TestKeyPolicies(t *testing.T) {
	tg := startGateway(t, nil)
	ctx := context.Background()
	admin := tg.sigv4Client(tg.admin.AccessKeyID, tg.admin.SecretAccessKey)
	dan := tg.addPrincipal(t, keystore.Principal{Name: "dan", Tags: map[string]string{"team": "blue"}})
	erin := tg.addPrincipal(t, keystore.Principal{Name: "erin", Tags: map[string]string{"team": "red"}})
	doc := `{
  "Version": "2012-10-17",
  "Statement": [
    {"Sid": "Admins", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::` + testAccount + `:root"}, "Action": "kms:*", "Resource": "*"},
    {"Sid": "TeamBlueFinance", "Effect": "Allow", "Principal": {"AWS": ["` + userARN("dan") + `", "` + userARN("erin") + `"]},
     "Action": ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"], "Resource": "*",
     "Condition": {"StringEquals": {"aws:PrincipalTag/team": "blue", "kms:EncryptionContext:dept": "finance"}}},
    {"Sid": "DescribeForTeams", "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:DescribeKey", "Resource": "*",
     "Condition": {"ForAnyValue:StringLike": {"aws:PrincipalTag/team": ["bl*", "re?"]}}},
    {"Sid": "NoDecryptOffNetwork", "Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "kms:Decrypt", "Resource": "*",
     "Condition": {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}, "StringEquals": {"aws:PrincipalTag/team": "blue"}}}
  ]
}`
	k, err := admin.CreateKey(ctx, &kms.CreateKeyInput{Policy: aws.String(doc)})
	if err != nil {
		t.Fatal(err)
	}
	id := k.KeyMetadata.KeyId
	got, err := admin.GetKeyPolicy(ctx, &kms.GetKeyPolicyInput{KeyId: id})
	if err != nil || *got.Policy != doc || aws.ToString(got.PolicyName) != "default" {
		t.Fatalf("GetKeyPolicy: %v %v", got, err)
	}
	names, err := admin.ListKeyPolicies(ctx, &kms.ListKeyPoliciesInput{KeyId: id})
	if err != nil || len(names.PolicyNames) != 1 || names.PolicyNames[0] != "default" {
		t.Fatalf("ListKeyPolicies: %v %v", names, err)
	}

	fin := map[string]string{"dept": "finance"}
	enc, err := dan.Encrypt(ctx, &kms.EncryptInput{KeyId: id, Plaintext: []byte("x"), EncryptionContext: fin})
	if err != nil {
		t.Fatal(err)
	}
	_, err = dan.Encrypt(ctx, &kms.EncryptInput{KeyId: id, Plaintext: []byte("x"), EncryptionContext: map[string]string{"dept": "hr"}})
	wantCode(t, err, "AccessDeniedException")
	_, err = erin.Encrypt(ctx, &kms.EncryptInput{KeyId: id, Plaintext: []byte("x"), EncryptionContext: fin})
	wantCode(t, err, "AccessDeniedException")
	if _, err := erin.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: id}); err != nil {
		t.Fatalf("erin (team red) may describe: %v", err)
	}
	// Allowed, but denied explicitly: loopback is not in 10.0.0.0/8.
	_, err = dan.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: fin})
	wantCode(t, err, "AccessDeniedException")
	if !strings.Contains(err.Error(), "explicit deny") {
		t.Errorf("explicit deny not said: %v", err)
	}
	if _, err := admin.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: fin}); err != nil {
		t.Fatal(err)
	}
	// Dan sees the key in ListKeys (the policy lets him describe it).
	list, err := dan.ListKeys(ctx, &kms.ListKeysInput{})
	if err != nil || len(list.Keys) != 1 {
		t.Fatalf("dan's ListKeys: %+v %v", list, err)
	}

	// The lockout safety check.
	lockout := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"` + userARN("dan") + `"},"Action":"kms:*","Resource":"*"}]}`
	_, err = admin.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: id, Policy: aws.String(lockout)})
	wantCode(t, err, "MalformedPolicyDocumentException")
	_, err = admin.CreateKey(ctx, &kms.CreateKeyInput{Policy: aws.String(lockout)})
	wantCode(t, err, "MalformedPolicyDocumentException")
	for _, bad := range []string{`{`, `{"Statement":[]}`, `{"Statement":{"Effect":"Maybe","Principal":"*","Action":"kms:*","Resource":"*"}}`,
		`{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"StringEqualz":{"a":"b"}}}}`} {
		_, err = admin.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: id, Policy: aws.String(bad)})
		wantCode(t, err, "MalformedPolicyDocumentException")
	}
	_, err = admin.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: id, Policy: aws.String(lockout), PolicyName: aws.String("other")})
	wantCode(t, err, "NotFoundException")
	_, err = dan.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: id, Policy: aws.String(lockout)})
	wantCode(t, err, "AccessDeniedException")
	// Bypassed on purpose: the admins are out, dan is in.
	if _, err := admin.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: id, Policy: aws.String(lockout), BypassPolicyLockoutSafetyCheck: true}); err != nil {
		t.Fatal(err)
	}
	_, err = admin.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: id})
	wantCode(t, err, "AccessDeniedException")
	if _, err := dan.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: fin}); err != nil {
		t.Fatal(err)
	}
}

// A service's managed key is made on its first use by that service's
// principal, is usable only through that service, can't be changed by
// users, and rotates yearly.
func TestServiceManagedKey(t *testing.T) {
	tg := startGateway(t, nil)
	ctx := context.Background()
	admin := tg.sigv4Client(tg.admin.AccessKeyID, tg.admin.SecretAccessKey)
	storage := tg.addPrincipal(t, keystore.Principal{Name: "storage-svc", Kind: keystore.KindRole, Service: "storage"})
	mail := tg.addPrincipal(t, keystore.Principal{Name: "mail-svc", Kind: keystore.KindRole, Service: "mail"})
	const alias = "alias/managed/storage"

	// Nobody else makes it appear.
	_, err := admin.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(alias), Plaintext: []byte("x")})
	wantCode(t, err, "NotFoundException")
	_, err = mail.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(alias), Plaintext: []byte("x")})
	wantCode(t, err, "NotFoundException")

	dk, err := storage.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(alias), KeySpec: types.DataKeySpecAes256})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := storage.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: dk.CiphertextBlob}); err != nil {
		t.Fatal(err)
	}
	d, err := admin.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(alias)})
	if err != nil || d.KeyMetadata.KeyManager != types.KeyManagerTypeAws {
		t.Fatalf("DescribeKey: %+v %v", d, err)
	}
	keyID := d.KeyMetadata.KeyId
	pol, err := admin.GetKeyPolicy(ctx, &kms.GetKeyPolicyInput{KeyId: keyID})
	if err != nil || !strings.Contains(*pol.Policy, "storage."+testRegion+".amazonaws.com") {
		t.Fatalf("GetKeyPolicy: %v %v", pol, err)
	}
	var parsed map[string]any
	if err := json.Unmarshal([]byte(*pol.Policy), &parsed); err != nil {
		t.Fatal(err)
	}

	// Not directly, not through another service.
	_, err = admin.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(alias), Plaintext: []byte("x")})
	wantCode(t, err, "AccessDeniedException")
	_, err = admin.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: dk.CiphertextBlob})
	wantCode(t, err, "AccessDeniedException")
	_, err = mail.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: dk.CiphertextBlob})
	wantCode(t, err, "AccessDeniedException")

	// Users can't change it.
	_, err = admin.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: keyID, Policy: pol.Policy})
	wantCode(t, err, "AccessDeniedException") // the managed policy doesn't allow kms:PutKeyPolicy at all
	_, err = admin.DisableKey(ctx, &kms.DisableKeyInput{KeyId: keyID})
	wantCode(t, err, "AccessDeniedException")
	_, err = admin.DeleteAlias(ctx, &kms.DeleteAliasInput{AliasName: aws.String(alias)})
	wantCode(t, err, "InvalidAliasNameException")
	own, err := admin.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = admin.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/managed/mail"), TargetKeyId: own.KeyMetadata.KeyId})
	wantCode(t, err, "InvalidAliasNameException")

	// Yearly rotation: not due today, due in a year; old data still opens.
	if rots := tg.gw.RotateDue(ctx, time.Now()); len(rots) != 0 {
		t.Fatalf("rotated too early: %+v", rots)
	}
	rots := tg.gw.RotateDue(ctx, time.Now().AddDate(1, 0, 1))
	if len(rots) != 1 || *keyID != rots[0].KeyID || rots[0].Version != 2 || rots[0].Err != nil {
		t.Fatalf("rotation: %+v", rots)
	}
	if rots := tg.gw.RotateDue(ctx, time.Now().AddDate(1, 0, 2)); len(rots) != 0 {
		t.Fatalf("rotated twice: %+v", rots)
	}
	if _, err := storage.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: dk.CiphertextBlob}); err != nil {
		t.Fatal(err)
	}
	if _, err := storage.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(alias), Plaintext: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	k, err := tg.store.Key(*keyID)
	if err != nil || len(k.Versions) != 2 {
		t.Fatalf("key after rotation: %v %v", k, err)
	}
}
