package gateway_test

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/gateway/ciphertext"
	"github.com/hsmgate/hsmgate/hsmpool"
)

// wrapOpenSSL wraps material to a DER public key with openssl pkeyutl, as
// AWS's import guide does.
func wrapOpenSSL(t *testing.T, pubDER, material []byte) []byte {
	t.Helper()
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl is not installed (./dev test installs it)")
		}
		t.Skip("openssl is not installed")
	}
	dir := t.TempDir()
	pub, in, out := filepath.Join(dir, "WrappingPublicKey.bin"), filepath.Join(dir, "PlaintextKeyMaterial.bin"), filepath.Join(dir, "EncryptedKeyMaterial.bin")
	if err := os.WriteFile(pub, pubDER, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(in, material, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(openssl, "pkeyutl", "-encrypt", "-in", in, "-out", out, "-inkey", pub, "-keyform", "DER", "-pubin",
		"-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha1")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl pkeyutl: %v\n%s", err, msg)
	}
	wrapped, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return wrapped
}

// wrapGo wraps material with RSAES_OAEP_SHA_1 in Go.
func wrapGo(t *testing.T, pubDER, material []byte) []byte {
	t.Helper()
	pub, err := x509.ParsePKIXPublicKey(pubDER)
	if err != nil {
		t.Fatal(err)
	}
	out, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, pub.(*rsa.PublicKey), material, nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func params(t *testing.T, c *kms.Client, id *string) *kms.GetParametersForImportOutput {
	t.Helper()
	p, err := c.GetParametersForImport(context.Background(), &kms.GetParametersForImportInput{KeyId: id,
		WrappingAlgorithm: types.AlgorithmSpecRsaesOaepSha1, WrappingKeySpec: types.WrappingKeySpecRsa2048})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Bring your own key: material wrapped with openssl and with Go is
// imported through the SDK; data encrypted outside with the same material,
// in hsmgate's ciphertext format, decrypts through the gateway and the
// reverse; re-imports must bring the same material; deletion and expiry
// make the key pending import again.
func TestImportKeyMaterial(t *testing.T) {
	clock := &fakeClock{t: time.Now().UTC()}
	tg := startGateway(t, func(_ *hsmpool.Options, gc *gateway.Config) { gc.Now = clock.Now })
	ctx := context.Background()
	c := tg.mtlsClient(t)

	k, err := c.CreateKey(ctx, &kms.CreateKeyInput{Origin: types.OriginTypeExternal})
	if err != nil {
		t.Fatal(err)
	}
	id := k.KeyMetadata.KeyId
	if k.KeyMetadata.KeyState != types.KeyStatePendingImport || k.KeyMetadata.Origin != types.OriginTypeExternal {
		t.Fatalf("new external key: %+v", k.KeyMetadata)
	}
	_, err = c.Encrypt(ctx, &kms.EncryptInput{KeyId: id, Plaintext: []byte("x")})
	wantCode(t, err, "KMSInvalidStateException")

	// SoftHSM 2.6 can't unwrap with OAEP SHA-256: said, naming the module.
	_, err = c.GetParametersForImport(ctx, &kms.GetParametersForImportInput{KeyId: id,
		WrappingAlgorithm: types.AlgorithmSpecRsaesOaepSha256, WrappingKeySpec: types.WrappingKeySpecRsa2048})
	wantCode(t, err, "UnsupportedOperationException")
	if !strings.Contains(err.Error(), "SoftHSM") {
		t.Errorf("the refusal does not name the module: %v", err)
	}

	material := make([]byte, 32)
	rand.Read(material)
	p := params(t, c, id)
	if p.ParametersValidTo.Sub(clock.Now().Add(24*time.Hour)).Abs() > time.Minute {
		t.Errorf("parameters valid to %v", p.ParametersValidTo)
	}
	if _, err := c.ImportKeyMaterial(ctx, &kms.ImportKeyMaterialInput{KeyId: id, ImportToken: p.ImportToken,
		EncryptedKeyMaterial: wrapOpenSSL(t, p.PublicKey, material)}); err != nil {
		t.Fatal(err)
	}
	d, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: id})
	if err != nil || d.KeyMetadata.KeyState != types.KeyStateEnabled || d.KeyMetadata.ExpirationModel != types.ExpirationModelTypeKeyMaterialDoesNotExpire {
		t.Fatalf("after import: %+v %v", d.KeyMetadata, err)
	}
	// The parameters are used up.
	_, err = c.ImportKeyMaterial(ctx, &kms.ImportKeyMaterialInput{KeyId: id, ImportToken: p.ImportToken, EncryptedKeyMaterial: wrapGo(t, p.PublicKey, material)})
	wantCode(t, err, "InvalidImportTokenException")

	// Outside in: AES-GCM in Go with the known key, in hsmgate's format.
	block, _ := aes.NewCipher(material)
	gcm, _ := cipher.NewGCM(block)
	uuid, _ := hex.DecodeString(strings.ReplaceAll(*id, "-", ""))
	ec := map[string]string{"tenant": "acme"}
	b := &ciphertext.Blob{KeyVersion: 1}
	copy(b.KeyID[:], uuid)
	rand.Read(b.IV[:])
	b.Sealed = gcm.Seal(nil, b.IV[:], []byte("sealed outside"), b.AAD(ec))
	dec, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: b.Marshal(), EncryptionContext: ec})
	if err != nil || string(dec.Plaintext) != "sealed outside" {
		t.Fatalf("decrypting a blob made outside: %q %v", dec.Plaintext, err)
	}
	// Inside out.
	enc, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: id, Plaintext: []byte("sealed inside"), EncryptionContext: ec})
	if err != nil {
		t.Fatal(err)
	}
	got, err := ciphertext.Parse(enc.CiphertextBlob)
	if err != nil {
		t.Fatal(err)
	}
	pt, err := gcm.Open(nil, got.IV[:], got.Sealed, got.AAD(ec))
	if err != nil || string(pt) != "sealed inside" {
		t.Fatalf("opening the gateway's blob outside: %q %v", pt, err)
	}

	// Re-import: other material is refused, the same is taken (now with
	// an expiry); the token of other parameters is refused.
	p = params(t, c, id)
	other := make([]byte, 32)
	rand.Read(other)
	_, err = c.ImportKeyMaterial(ctx, &kms.ImportKeyMaterialInput{KeyId: id, ImportToken: p.ImportToken, EncryptedKeyMaterial: wrapGo(t, p.PublicKey, other)})
	wantCode(t, err, "IncorrectKeyMaterialException")
	_, err = c.ImportKeyMaterial(ctx, &kms.ImportKeyMaterialInput{KeyId: id, ImportToken: p.ImportToken, EncryptedKeyMaterial: []byte("garbage")})
	wantCode(t, err, "InvalidCiphertextException")
	validTo := clock.Now().Add(48 * time.Hour)
	if _, err := c.ImportKeyMaterial(ctx, &kms.ImportKeyMaterialInput{KeyId: id, ImportToken: p.ImportToken,
		EncryptedKeyMaterial: wrapGo(t, p.PublicKey, material), ExpirationModel: types.ExpirationModelTypeKeyMaterialExpires, ValidTo: &validTo}); err != nil {
		t.Fatal(err)
	}

	// Deleted: pending import, nothing decrypts; re-imported: all is back.
	if _, err := c.DeleteImportedKeyMaterial(ctx, &kms.DeleteImportedKeyMaterialInput{KeyId: id}); err != nil {
		t.Fatal(err)
	}
	_, err = c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ec})
	wantCode(t, err, "KMSInvalidStateException")
	p = params(t, c, id)
	if _, err := c.ImportKeyMaterial(ctx, &kms.ImportKeyMaterialInput{KeyId: id, ImportToken: p.ImportToken,
		EncryptedKeyMaterial: wrapGo(t, p.PublicKey, material), ExpirationModel: types.ExpirationModelTypeKeyMaterialExpires, ValidTo: &validTo}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ec}); err != nil {
		t.Fatal(err)
	}

	// Parameters expire after 24 hours; material at its ValidTo.
	p = params(t, c, id)
	clock.Advance(25 * time.Hour)
	_, err = c.ImportKeyMaterial(ctx, &kms.ImportKeyMaterialInput{KeyId: id, ImportToken: p.ImportToken, EncryptedKeyMaterial: wrapGo(t, p.PublicKey, material)})
	wantCode(t, err, "ExpiredImportTokenException")
	if evs := tg.gw.ExpireDue(ctx, clock.Now()); len(evs) != 0 {
		t.Fatalf("expired early: %+v", evs)
	}
	clock.Advance(24 * time.Hour)
	if evs := tg.gw.ExpireDue(ctx, clock.Now()); len(evs) != 1 || evs[0].Err != nil {
		t.Fatalf("ExpireDue: %+v", evs)
	}
	d, err = c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: id})
	if err != nil || d.KeyMetadata.KeyState != types.KeyStatePendingImport {
		t.Fatalf("after expiry: %+v %v", d.KeyMetadata, err)
	}

	// Keys that don't take imports, and automatic rotation, refuse.
	own, err := c.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.GetParametersForImport(ctx, &kms.GetParametersForImportInput{KeyId: own.KeyMetadata.KeyId,
		WrappingAlgorithm: types.AlgorithmSpecRsaesOaepSha1, WrappingKeySpec: types.WrappingKeySpecRsa2048})
	wantCode(t, err, "UnsupportedOperationException")
	_, err = c.EnableKeyRotation(ctx, &kms.EnableKeyRotationInput{KeyId: id})
	wantCode(t, err, "UnsupportedOperationException")
}

// HMAC and EC private key material import.
func TestImportHMACAndECKeys(t *testing.T) {
	tg := startGateway(t, nil)
	ctx := context.Background()
	c := tg.sigv4Client(tg.admin.AccessKeyID, tg.admin.SecretAccessKey)

	hk, err := c.CreateKey(ctx, &kms.CreateKeyInput{Origin: types.OriginTypeExternal, KeySpec: types.KeySpecHmac256, KeyUsage: types.KeyUsageTypeGenerateVerifyMac})
	if err != nil {
		t.Fatal(err)
	}
	secret := make([]byte, 32)
	rand.Read(secret)
	p := params(t, c, hk.KeyMetadata.KeyId)
	if _, err := c.ImportKeyMaterial(ctx, &kms.ImportKeyMaterialInput{KeyId: hk.KeyMetadata.KeyId, ImportToken: p.ImportToken,
		EncryptedKeyMaterial: wrapGo(t, p.PublicKey, secret)}); err != nil {
		t.Fatal(err)
	}
	mac, err := c.GenerateMac(ctx, &kms.GenerateMacInput{KeyId: hk.KeyMetadata.KeyId, MacAlgorithm: types.MacAlgorithmSpecHmacSha256, Message: []byte("msg")})
	if err != nil {
		t.Fatal(err)
	}
	h := hmac.New(sha256.New, secret)
	h.Write([]byte("msg"))
	if !hmac.Equal(mac.Mac, h.Sum(nil)) {
		t.Fatal("the imported HMAC key's MAC differs from Go's")
	}

	ek, err := c.CreateKey(ctx, &kms.CreateKeyInput{Origin: types.OriginTypeExternal, KeySpec: types.KeySpecEccNistP256, KeyUsage: types.KeyUsageTypeSignVerify})
	if err != nil {
		t.Fatal(err)
	}
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	p = params(t, c, ek.KeyMetadata.KeyId)
	if _, err := c.ImportKeyMaterial(ctx, &kms.ImportKeyMaterialInput{KeyId: ek.KeyMetadata.KeyId, ImportToken: p.ImportToken,
		EncryptedKeyMaterial: wrapGo(t, p.PublicKey, der)}); err != nil {
		t.Fatal(err)
	}
	sig, err := c.Sign(ctx, &kms.SignInput{KeyId: ek.KeyMetadata.KeyId, Message: []byte("msg"), SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256})
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("msg"))
	if !ecdsa.VerifyASN1(&priv.PublicKey, digest[:], sig.Signature) {
		t.Fatal("a signature by the imported EC key does not verify with its public key")
	}
	gp, err := c.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: ek.KeyMetadata.KeyId})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if string(gp.PublicKey) != string(want) {
		t.Fatal("GetPublicKey is not the imported key's public key")
	}
}
