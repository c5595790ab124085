package gateway_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"

	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/hsmpool"
	"github.com/hsmgate/hsmgate/internal/gatewaytest"
)

const (
	testRegion  = "eu-west-1"
	testAccount = "111122223333"
)

// testGateway is a gateway serving HTTPS on loopback with a 4-token SoftHSM
// pool, its PKI made by Bootstrap.
type testGateway struct {
	pool   *hsmpool.Pool
	store  *keystore.Store
	gw     *gateway.Gateway
	url    string
	dir    string
	admin  *gateway.AdminCredentials
	caPool *x509.CertPool
	stop   func()
}

func startGateway(t *testing.T, tweak func(*hsmpool.Options, *gateway.Config)) *testGateway {
	t.Helper()
	g := gatewaytest.StartWith(t, 4, testRegion, func(po *hsmpool.Options, gc *gateway.Config) {
		gc.Logger = nil // the default logger: a failing test shows what happened
		if tweak != nil {
			tweak(po, gc)
		}
	})
	return &testGateway{pool: g.Pool, store: g.Store, gw: g.Gateway, url: g.URL, dir: g.Dir, admin: g.Admin, caPool: g.CAs, stop: g.Stop}
}

// sigv4Client is aws-sdk-go-v2's KMS client with static credentials.
func (tg *testGateway) sigv4Client(akid, secret string) *kms.Client {
	return kms.New(kms.Options{
		Region:       testRegion,
		BaseEndpoint: aws.String(tg.url),
		HTTPClient:   &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tg.caPool}}},
		Credentials:  aws.NewCredentialsCache(staticCreds{akid, secret}),
		Retryer:      aws.NopRetryer{},
	})
}

// mtlsClient is the SDK's KMS client authenticating with the admin's client
// certificate and no SigV4 signature.
func (tg *testGateway) mtlsClient(t *testing.T) *kms.Client {
	cert, err := tls.LoadX509KeyPair(tg.admin.ClientCert, tg.admin.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	return kms.New(kms.Options{
		Region:       testRegion,
		BaseEndpoint: aws.String(tg.url),
		HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: tg.caPool, Certificates: []tls.Certificate{cert}}}},
		Credentials: aws.AnonymousCredentials{},
		Retryer:     aws.NopRetryer{},
	})
}

type staticCreds struct{ id, secret string }

func (s staticCreds) Retrieve(context.Context) (aws.Credentials, error) {
	return aws.Credentials{AccessKeyID: s.id, SecretAccessKey: s.secret, Source: "test"}, nil
}

// apiError returns the AWS error code of err, or fails the test.
func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("want %s, got %v", code, err)
	}
	if ae.ErrorCode() != code {
		t.Fatalf("want %s, got %s: %s", code, ae.ErrorCode(), ae.ErrorMessage())
	}
}

func TestKMSWithSDK(t *testing.T) {
	tg := startGateway(t, nil)
	ctx := context.Background()
	for name, c := range map[string]*kms.Client{
		"sigv4": tg.sigv4Client(tg.admin.AccessKeyID, tg.admin.SecretAccessKey),
		"mtls":  tg.mtlsClient(t),
	} {
		t.Run(name, func(t *testing.T) { exerciseAll(t, ctx, c) })
	}
}

func exerciseAll(t *testing.T, ctx context.Context, c *kms.Client) {
	// Symmetric key: create, describe, alias, encrypt, decrypt, re-encrypt,
	// data keys.
	created, err := c.CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String("e2e"),
		Tags: []types.Tag{{TagKey: aws.String("team"), TagValue: aws.String("core")}}})
	if err != nil {
		t.Fatal(err)
	}
	md := created.KeyMetadata
	if md.KeySpec != types.KeySpecSymmetricDefault || md.KeyUsage != types.KeyUsageTypeEncryptDecrypt || !md.Enabled ||
		*md.Arn != "arn:aws:kms:"+testRegion+":"+testAccount+":key/"+*md.KeyId {
		t.Fatalf("CreateKey metadata %+v", md)
	}
	keyID := *md.KeyId
	alias := "alias/e2e-" + keyID[:8]
	if _, err := c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String(alias), TargetKeyId: aws.String(keyID)}); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{keyID, *md.Arn, alias, "arn:aws:kms:" + testRegion + ":" + testAccount + ":" + alias} {
		d, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(ref)})
		if err != nil || *d.KeyMetadata.KeyId != keyID || *d.KeyMetadata.Description != "e2e" {
			t.Fatalf("DescribeKey(%s): %+v %v", ref, d, err)
		}
	}
	ec := map[string]string{"purpose": "e2e"}
	enc, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(alias), Plaintext: []byte("hello hsm"), EncryptionContext: ec})
	if err != nil {
		t.Fatal(err)
	}
	dec, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ec})
	if err != nil || string(dec.Plaintext) != "hello hsm" || *dec.KeyId != *md.Arn {
		t.Fatalf("Decrypt: %+v %v", dec, err)
	}
	_, err = c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: map[string]string{"purpose": "other"}})
	wantCode(t, err, "InvalidCiphertextException")
	tampered := append([]byte(nil), enc.CiphertextBlob...)
	tampered[len(tampered)-1] ^= 1
	_, err = c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: tampered, EncryptionContext: ec})
	wantCode(t, err, "InvalidCiphertextException")

	other, err := c.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ec, KeyId: other.KeyMetadata.KeyId})
	wantCode(t, err, "IncorrectKeyException")
	re, err := c.ReEncrypt(ctx, &kms.ReEncryptInput{CiphertextBlob: enc.CiphertextBlob, SourceEncryptionContext: ec,
		DestinationKeyId: other.KeyMetadata.KeyId})
	if err != nil {
		t.Fatal(err)
	}
	dec2, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: re.CiphertextBlob})
	if err != nil || string(dec2.Plaintext) != "hello hsm" || *dec2.KeyId != *other.KeyMetadata.Arn {
		t.Fatalf("Decrypt after ReEncrypt: %v", err)
	}
	dk, err := c.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(keyID), KeySpec: types.DataKeySpecAes256})
	if err != nil || len(dk.Plaintext) != 32 {
		t.Fatalf("GenerateDataKey: %v", err)
	}
	dkd, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: dk.CiphertextBlob})
	if err != nil || !bytes.Equal(dkd.Plaintext, dk.Plaintext) {
		t.Fatalf("Decrypt data key: %v", err)
	}
	dkw, err := c.GenerateDataKeyWithoutPlaintext(ctx, &kms.GenerateDataKeyWithoutPlaintextInput{KeyId: aws.String(keyID), NumberOfBytes: aws.Int32(64)})
	if err != nil || len(dkw.CiphertextBlob) == 0 {
		t.Fatalf("GenerateDataKeyWithoutPlaintext: %v", err)
	}
	if d, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: dkw.CiphertextBlob}); err != nil || len(d.Plaintext) != 64 {
		t.Fatalf("Decrypt of a data key without plaintext: %v", err)
	}

	// Management.
	if _, err := c.UpdateKeyDescription(ctx, &kms.UpdateKeyDescriptionInput{KeyId: aws.String(keyID), Description: aws.String("changed")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.TagResource(ctx, &kms.TagResourceInput{KeyId: aws.String(keyID), Tags: []types.Tag{{TagKey: aws.String("env"), TagValue: aws.String("test")}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UntagResource(ctx, &kms.UntagResourceInput{KeyId: aws.String(keyID), TagKeys: []string{"team"}}); err != nil {
		t.Fatal(err)
	}
	tags, err := c.ListResourceTags(ctx, &kms.ListResourceTagsInput{KeyId: aws.String(keyID)})
	if err != nil || len(tags.Tags) != 1 || *tags.Tags[0].TagKey != "env" {
		t.Fatalf("ListResourceTags: %+v %v", tags, err)
	}
	_, err = c.TagResource(ctx, &kms.TagResourceInput{KeyId: aws.String(keyID), Tags: []types.Tag{{TagKey: aws.String("aws:reserved"), TagValue: aws.String("x")}}})
	wantCode(t, err, "TagException")
	if _, err := c.UpdateAlias(ctx, &kms.UpdateAliasInput{AliasName: aws.String(alias), TargetKeyId: other.KeyMetadata.KeyId}); err != nil {
		t.Fatal(err)
	}
	al, err := c.ListAliases(ctx, &kms.ListAliasesInput{KeyId: other.KeyMetadata.KeyId})
	if err != nil || len(al.Aliases) != 1 || *al.Aliases[0].AliasName != alias {
		t.Fatalf("ListAliases: %+v %v", al, err)
	}
	_, err = c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String(alias), TargetKeyId: aws.String(keyID)})
	wantCode(t, err, "AlreadyExistsException")
	if _, err := c.DeleteAlias(ctx, &kms.DeleteAliasInput{AliasName: aws.String(alias)}); err != nil {
		t.Fatal(err)
	}
	_, err = c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(alias)})
	wantCode(t, err, "NotFoundException")
	if _, err := c.DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(keyID)}); err != nil {
		t.Fatal(err)
	}
	_, err = c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(keyID), Plaintext: []byte("x")})
	wantCode(t, err, "DisabledException")
	if _, err := c.EnableKey(ctx, &kms.EnableKeyInput{KeyId: aws.String(keyID)}); err != nil {
		t.Fatal(err)
	}
	// Paging through ListKeys one key at a time finds both keys.
	seen := map[string]bool{}
	var marker *string
	for i := 0; i < 100; i++ {
		page, err := c.ListKeys(ctx, &kms.ListKeysInput{Limit: aws.Int32(1), Marker: marker})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range page.Keys {
			seen[*k.KeyId] = true
		}
		if !page.Truncated {
			break
		}
		marker = page.NextMarker
	}
	if !seen[keyID] || !seen[*other.KeyMetadata.KeyId] {
		t.Fatalf("ListKeys paging missed keys: %v", seen)
	}

	// HMAC.
	mk, err := c.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: types.KeySpecHmac256, KeyUsage: types.KeyUsageTypeGenerateVerifyMac})
	if err != nil {
		t.Fatal(err)
	}
	mac, err := c.GenerateMac(ctx, &kms.GenerateMacInput{KeyId: mk.KeyMetadata.KeyId, Message: []byte("m"), MacAlgorithm: types.MacAlgorithmSpecHmacSha256})
	if err != nil {
		t.Fatal(err)
	}
	vm, err := c.VerifyMac(ctx, &kms.VerifyMacInput{KeyId: mk.KeyMetadata.KeyId, Message: []byte("m"), Mac: mac.Mac, MacAlgorithm: types.MacAlgorithmSpecHmacSha256})
	if err != nil || !vm.MacValid {
		t.Fatalf("VerifyMac: %v", err)
	}
	_, err = c.VerifyMac(ctx, &kms.VerifyMacInput{KeyId: mk.KeyMetadata.KeyId, Message: []byte("n"), Mac: mac.Mac, MacAlgorithm: types.MacAlgorithmSpecHmacSha256})
	wantCode(t, err, "KMSInvalidMacException")
	_, err = c.GenerateMac(ctx, &kms.GenerateMacInput{KeyId: mk.KeyMetadata.KeyId, Message: []byte("m"), MacAlgorithm: types.MacAlgorithmSpecHmacSha512})
	wantCode(t, err, "InvalidKeyUsageException")
	_, err = c.Encrypt(ctx, &kms.EncryptInput{KeyId: mk.KeyMetadata.KeyId, Plaintext: []byte("x")})
	wantCode(t, err, "InvalidKeyUsageException")

	// ECC signing, checked with Go's crypto against GetPublicKey.
	sk, err := c.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: types.KeySpecEccNistP256, KeyUsage: types.KeyUsageTypeSignVerify})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := c.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: sk.KeyMetadata.KeyId})
	if err != nil {
		t.Fatal(err)
	}
	pk, err := x509.ParsePKIXPublicKey(pub.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("sign me")
	sig, err := c.Sign(ctx, &kms.SignInput{KeyId: sk.KeyMetadata.KeyId, Message: msg, SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256})
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256(msg)
	if !ecdsa.VerifyASN1(pk.(*ecdsa.PublicKey), d[:], sig.Signature) {
		t.Fatal("Go does not accept the gateway's ECDSA signature")
	}
	sigD, err := c.Sign(ctx, &kms.SignInput{KeyId: sk.KeyMetadata.KeyId, Message: d[:], MessageType: types.MessageTypeDigest, SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256})
	if err != nil || !ecdsa.VerifyASN1(pk.(*ecdsa.PublicKey), d[:], sigD.Signature) {
		t.Fatalf("Sign DIGEST: %v", err)
	}
	v, err := c.Verify(ctx, &kms.VerifyInput{KeyId: sk.KeyMetadata.KeyId, Message: msg, Signature: sig.Signature, SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256})
	if err != nil || !v.SignatureValid {
		t.Fatalf("Verify: %v", err)
	}
	_, err = c.Verify(ctx, &kms.VerifyInput{KeyId: sk.KeyMetadata.KeyId, Message: []byte("other"), Signature: sig.Signature, SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256})
	wantCode(t, err, "KMSInvalidSignatureException")
	_, err = c.Sign(ctx, &kms.SignInput{KeyId: sk.KeyMetadata.KeyId, Message: msg, SigningAlgorithm: types.SigningAlgorithmSpecRsassaPssSha256})
	wantCode(t, err, "InvalidKeyUsageException")
	_, err = c.Sign(ctx, &kms.SignInput{KeyId: sk.KeyMetadata.KeyId, Message: []byte("short"), MessageType: types.MessageTypeDigest, SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256})
	wantCode(t, err, "ValidationException")
	_, err = c.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: aws.String(keyID)})
	wantCode(t, err, "UnsupportedOperationException")

	// RSA: signing and OAEP as the module allows.
	rk, err := c.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: types.KeySpecRsa2048, KeyUsage: types.KeyUsageTypeEncryptDecrypt})
	if err != nil {
		t.Fatal(err)
	}
	renc, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: rk.KeyMetadata.KeyId, Plaintext: []byte("rsa"), EncryptionAlgorithm: types.EncryptionAlgorithmSpecRsaesOaepSha1})
	if err != nil {
		t.Fatal(err)
	}
	rdec, err := c.Decrypt(ctx, &kms.DecryptInput{KeyId: rk.KeyMetadata.KeyId, CiphertextBlob: renc.CiphertextBlob, EncryptionAlgorithm: types.EncryptionAlgorithmSpecRsaesOaepSha1})
	if err != nil || string(rdec.Plaintext) != "rsa" {
		t.Fatalf("RSA decrypt: %v", err)
	}

	// Unsupported by SoftHSM 2.6, detected: Ed25519 keys can't be wrapped.
	_, err = c.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: types.KeySpecEccNistEdwards25519, KeyUsage: types.KeyUsageTypeSignVerify})
	wantCode(t, err, "UnsupportedOperationException")
	_, err = c.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: types.KeySpecEccNistP256})
	wantCode(t, err, "ValidationException")

	rnd, err := c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(48)})
	if err != nil || len(rnd.Plaintext) != 48 {
		t.Fatalf("GenerateRandom: %v", err)
	}
	_, err = c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(2048)})
	wantCode(t, err, "ValidationException")
	_, err = c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("00000000-0000-4000-8000-000000000000")})
	wantCode(t, err, "NotFoundException")
}

func slogTo(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startServing serves gw until stop is called or the test ends.
func startServing(t *testing.T, _ context.Context, gw *gateway.Gateway, pool *hsmpool.Pool, store *keystore.Store, dir string) (url string, cas *x509.CertPool, stop func()) {
	return gatewaytest.Serve(t, gw, pool, store, dir)
}
