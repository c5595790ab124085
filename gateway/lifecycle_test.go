package gateway_test

import (
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/gateway/audit"
	"github.com/hsmgate/hsmgate/gateway/ciphertext"
	"github.com/hsmgate/hsmgate/hsmpool"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

const day = 24 * time.Hour

func versionOf(t *testing.T, blob []byte) uint32 {
	t.Helper()
	b, err := ciphertext.Parse(blob)
	if err != nil {
		t.Fatal(err)
	}
	return b.KeyVersion
}

// Rotation (on demand and scheduled, with a fake clock), old versions
// decrypting, ReEncrypt moving data to the newest version, and scheduled
// deletion with its cancellation. The admin calls over mTLS, since SigV4
// would refuse requests dated by the real clock.
func TestKeyLifecycle(t *testing.T) {
	clock := &fakeClock{t: time.Now().UTC()}
	tg := startGateway(t, func(_ *hsmpool.Options, gc *gateway.Config) { gc.Now = clock.Now })
	ctx := context.Background()
	c := tg.mtlsClient(t)
	k, err := c.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	id := k.KeyMetadata.KeyId
	ct1, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: id, Plaintext: []byte("v1 data")})
	if err != nil {
		t.Fatal(err)
	}

	st, err := c.GetKeyRotationStatus(ctx, &kms.GetKeyRotationStatusInput{KeyId: id})
	if err != nil || st.KeyRotationEnabled {
		t.Fatalf("rotation status of a new key: %+v %v", st, err)
	}
	_, err = c.EnableKeyRotation(ctx, &kms.EnableKeyRotationInput{KeyId: id, RotationPeriodInDays: aws.Int32(30)})
	wantCode(t, err, "ValidationException")
	if _, err := c.EnableKeyRotation(ctx, &kms.EnableKeyRotationInput{KeyId: id, RotationPeriodInDays: aws.Int32(90)}); err != nil {
		t.Fatal(err)
	}
	st, err = c.GetKeyRotationStatus(ctx, &kms.GetKeyRotationStatusInput{KeyId: id})
	if err != nil || !st.KeyRotationEnabled || aws.ToInt32(st.RotationPeriodInDays) != 90 ||
		st.NextRotationDate.Sub(clock.Now().Add(90*day)).Abs() > time.Minute {
		t.Fatalf("rotation status: %+v %v", st, err)
	}

	if _, err := c.RotateKeyOnDemand(ctx, &kms.RotateKeyOnDemandInput{KeyId: id}); err != nil {
		t.Fatal(err)
	}
	ct2, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: id, Plaintext: []byte("v2 data")})
	if err != nil {
		t.Fatal(err)
	}
	if v := versionOf(t, ct2.CiphertextBlob); v != 2 {
		t.Fatalf("after RotateKeyOnDemand Encrypt used version %d", v)
	}

	// Not due yet; then due: rotated once, however often the check runs.
	if rots := tg.gw.RotateDue(ctx, clock.Now()); len(rots) != 0 {
		t.Fatalf("rotated early: %+v", rots)
	}
	clock.Advance(91 * day)
	for range 2 {
		tg.gw.RotateDue(ctx, clock.Now())
	}
	rl, err := c.ListKeyRotations(ctx, &kms.ListKeyRotationsInput{KeyId: id})
	if err != nil || len(rl.Rotations) != 2 || rl.Rotations[0].RotationType != types.RotationTypeOnDemand ||
		rl.Rotations[1].RotationType != types.RotationTypeAutomatic {
		t.Fatalf("ListKeyRotations: %+v %v", rl, err)
	}
	page, err := c.ListKeyRotations(ctx, &kms.ListKeyRotationsInput{KeyId: id, Limit: aws.Int32(1)})
	if err != nil || len(page.Rotations) != 1 || !page.Truncated {
		t.Fatalf("first page: %+v %v", page, err)
	}
	page, err = c.ListKeyRotations(ctx, &kms.ListKeyRotationsInput{KeyId: id, Limit: aws.Int32(1), Marker: page.NextMarker})
	if err != nil || len(page.Rotations) != 1 || page.Truncated || page.Rotations[0].RotationType != types.RotationTypeAutomatic {
		t.Fatalf("second page: %+v %v", page, err)
	}
	// Every version still decrypts; ReEncrypt moves data to the newest.
	for _, ct := range [][]byte{ct1.CiphertextBlob, ct2.CiphertextBlob} {
		if _, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: ct}); err != nil {
			t.Fatal(err)
		}
	}
	re, err := c.ReEncrypt(ctx, &kms.ReEncryptInput{CiphertextBlob: ct1.CiphertextBlob, DestinationKeyId: id})
	if err != nil || versionOf(t, re.CiphertextBlob) != 3 {
		t.Fatalf("ReEncrypt: %v", err)
	}
	out, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: re.CiphertextBlob})
	if err != nil || string(out.Plaintext) != "v1 data" {
		t.Fatalf("decrypt re-encrypted: %q %v", out.Plaintext, err)
	}

	// Asymmetric keys don't rotate.
	ecc, err := c.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: types.KeySpecEccNistP256, KeyUsage: types.KeyUsageTypeSignVerify})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.EnableKeyRotation(ctx, &kms.EnableKeyRotationInput{KeyId: ecc.KeyMetadata.KeyId})
	wantCode(t, err, "UnsupportedOperationException")
	_, err = c.RotateKeyOnDemand(ctx, &kms.RotateKeyOnDemandInput{KeyId: ecc.KeyMetadata.KeyId})
	wantCode(t, err, "UnsupportedOperationException")
	if _, err := c.DisableKeyRotation(ctx, &kms.DisableKeyRotationInput{KeyId: id}); err != nil {
		t.Fatal(err)
	}

	// Scheduled deletion: refused windows, the pending state, cancel.
	if _, err := c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/doomed"), TargetKeyId: id}); err != nil {
		t.Fatal(err)
	}
	_, err = c.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: id, PendingWindowInDays: aws.Int32(3)})
	wantCode(t, err, "ValidationException")
	del, err := c.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: id, PendingWindowInDays: aws.Int32(7)})
	if err != nil || del.KeyState != types.KeyStatePendingDeletion || aws.ToInt32(del.PendingWindowInDays) != 7 ||
		del.DeletionDate.Sub(clock.Now().Add(7*day)).Abs() > time.Minute {
		t.Fatalf("ScheduleKeyDeletion: %+v %v", del, err)
	}
	d, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: id})
	if err != nil || d.KeyMetadata.KeyState != types.KeyStatePendingDeletion || d.KeyMetadata.DeletionDate == nil {
		t.Fatalf("DescribeKey while pending: %+v %v", d, err)
	}
	_, err = c.Encrypt(ctx, &kms.EncryptInput{KeyId: id, Plaintext: []byte("x")})
	wantCode(t, err, "KMSInvalidStateException")
	_, err = c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: ct1.CiphertextBlob})
	wantCode(t, err, "KMSInvalidStateException")
	_, err = c.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: id})
	wantCode(t, err, "KMSInvalidStateException")
	if _, err := c.CancelKeyDeletion(ctx, &kms.CancelKeyDeletionInput{KeyId: id}); err != nil {
		t.Fatal(err)
	}
	d, err = c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: id})
	if err != nil || d.KeyMetadata.KeyState != types.KeyStateDisabled {
		t.Fatalf("after CancelKeyDeletion: %+v %v", d, err)
	}
	_, err = c.CancelKeyDeletion(ctx, &kms.CancelKeyDeletionInput{KeyId: id})
	wantCode(t, err, "KMSInvalidStateException")
	if _, err := c.EnableKey(ctx, &kms.EnableKeyInput{KeyId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: ct1.CiphertextBlob}); err != nil {
		t.Fatal(err)
	}

	// The window ends: the key and its alias are gone.
	if _, err := c.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: id, PendingWindowInDays: aws.Int32(7)}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(6 * day)
	if dels := tg.gw.DeleteDue(ctx, clock.Now()); len(dels) != 0 {
		t.Fatalf("deleted early: %+v", dels)
	}
	clock.Advance(2 * day)
	if dels := tg.gw.DeleteDue(ctx, clock.Now()); len(dels) != 1 || dels[0].Err != nil {
		t.Fatalf("DeleteDue: %+v", dels)
	}
	_, err = c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: id})
	wantCode(t, err, "NotFoundException")
	_, err = c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("alias/doomed")})
	wantCode(t, err, "NotFoundException")
	_, err = c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: ct1.CiphertextBlob})
	wantCode(t, err, "InvalidCiphertextException")
}

// GenerateDataKeyPair and DeriveSharedSecret, checked with Go's crypto.
func TestKeyPairsAndAgreement(t *testing.T) {
	tg := startGateway(t, nil)
	ctx := context.Background()
	c := tg.sigv4Client(tg.admin.AccessKeyID, tg.admin.SecretAccessKey)
	k, err := c.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	ec := map[string]string{"purpose": "pairs"}
	for _, spec := range []types.DataKeyPairSpec{types.DataKeyPairSpecRsa2048, types.DataKeyPairSpecEccNistP256, types.DataKeyPairSpecEccNistP384} {
		p, err := c.GenerateDataKeyPair(ctx, &kms.GenerateDataKeyPairInput{KeyId: k.KeyMetadata.KeyId, KeyPairSpec: spec, EncryptionContext: ec})
		if err != nil {
			t.Fatal(spec, err)
		}
		priv, err := x509.ParsePKCS8PrivateKey(p.PrivateKeyPlaintext)
		if err != nil {
			t.Fatal(err)
		}
		pub, err := x509.ParsePKIXPublicKey(p.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		if !priv.(crypto.Signer).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
			t.Fatalf("%s: the public key is not the private key's", spec)
		}
		switch priv.(type) {
		case *rsa.PrivateKey, *ecdsa.PrivateKey:
		default:
			t.Fatalf("%s: private key %T", spec, priv)
		}
		dec, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: p.PrivateKeyCiphertextBlob, EncryptionContext: ec})
		if err != nil || string(dec.Plaintext) != string(p.PrivateKeyPlaintext) {
			t.Fatalf("%s: the encrypted private key does not decrypt to the plaintext one: %v", spec, err)
		}
	}
	np, err := c.GenerateDataKeyPairWithoutPlaintext(ctx, &kms.GenerateDataKeyPairWithoutPlaintextInput{KeyId: k.KeyMetadata.KeyId, KeyPairSpec: types.DataKeyPairSpecEccNistP521})
	if err != nil || len(np.PublicKey) == 0 || len(np.PrivateKeyCiphertextBlob) == 0 {
		t.Fatalf("WithoutPlaintext: %v", err)
	}
	_, err = c.GenerateDataKeyPair(ctx, &kms.GenerateDataKeyPairInput{KeyId: k.KeyMetadata.KeyId, KeyPairSpec: "RSA_1024"})
	wantCode(t, err, "ValidationException")

	for _, tc := range []struct {
		spec  types.KeySpec
		curve ecdh.Curve
	}{{types.KeySpecEccNistP256, ecdh.P256()}, {types.KeySpecEccNistP384, ecdh.P384()}, {types.KeySpecEccNistP521, ecdh.P521()}} {
		ka, err := c.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: tc.spec, KeyUsage: types.KeyUsageTypeKeyAgreement})
		if err != nil {
			t.Fatal(err)
		}
		gp, err := c.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: ka.KeyMetadata.KeyId})
		if err != nil {
			t.Fatal(err)
		}
		kpub, err := x509.ParsePKIXPublicKey(gp.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		kECDH, err := kpub.(*ecdsa.PublicKey).ECDH()
		if err != nil {
			t.Fatal(err)
		}
		peer, err := tc.curve.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		peerDER, err := x509.MarshalPKIXPublicKey(peer.PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.DeriveSharedSecret(ctx, &kms.DeriveSharedSecretInput{KeyId: ka.KeyMetadata.KeyId,
			KeyAgreementAlgorithm: types.KeyAgreementAlgorithmSpecEcdh, PublicKey: peerDER})
		if err != nil {
			t.Fatal(err)
		}
		want, err := peer.ECDH(kECDH)
		if err != nil {
			t.Fatal(err)
		}
		if string(got.SharedSecret) != string(want) {
			t.Fatalf("%s: DeriveSharedSecret differs from crypto/ecdh", tc.spec)
		}
	}
	// A signing key does not agree.
	sk, err := c.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: types.KeySpecEccNistP256, KeyUsage: types.KeyUsageTypeSignVerify})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.DeriveSharedSecret(ctx, &kms.DeriveSharedSecretInput{KeyId: sk.KeyMetadata.KeyId, KeyAgreementAlgorithm: types.KeyAgreementAlgorithmSpecEcdh, PublicKey: []byte{0x30}})
	wantCode(t, err, "InvalidKeyUsageException")
}

// Every rotation is an audit record, on demand and scheduled alike.
func TestRotationsAreAudited(t *testing.T) {
	tg := startGateway(t, nil)
	ctx := context.Background()
	gw, w, url, stop := tg.serveAudited(t, nil)
	transport := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tg.caPool}}
	c := kms.New(kms.Options{Region: testRegion, BaseEndpoint: aws.String(url), HTTPClient: &http.Client{Transport: transport},
		Credentials: staticCreds{tg.admin.AccessKeyID, tg.admin.SecretAccessKey}, Retryer: aws.NopRetryer{}})
	k, err := c.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.RotateKeyOnDemand(ctx, &kms.RotateKeyOnDemandInput{KeyId: k.KeyMetadata.KeyId}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.EnableKeyRotation(ctx, &kms.EnableKeyRotationInput{KeyId: k.KeyMetadata.KeyId}); err != nil {
		t.Fatal(err)
	}
	if rots := gw.RotateDue(ctx, time.Now().AddDate(1, 0, 1)); len(rots) != 1 {
		t.Fatalf("RotateDue: %+v", rots)
	}
	transport.CloseIdleConnections()
	stop()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	versions := map[uint32]string{}
	err = audit.Query(filepath.Join(tg.dir, gateway.AuditDir), audit.Filter{KeyID: *k.KeyMetadata.KeyId}, func(r audit.Record) error {
		if r.Operation == "RotateKey" && r.Outcome == audit.OutcomeOK {
			versions[r.KeyVersion] = r.Principal
		}
		return nil
	})
	if err != nil || len(versions) != 2 || versions[2] != gateway.AdminName || versions[3] != gateway.SchedulerPrincipal {
		t.Fatalf("rotation records by version: %v (%v)", versions, err)
	}
}
