package kmsapi

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"strings"
	"time"

	"github.com/hsmgate/hsmgate/gateway/ciphertext"
	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/hsmpool"
)

const (
	maxPlaintext = 4096 // Encrypt, GenerateMac, Sign, Verify messages
	maxBlob      = ciphertext.MaxLen
)

func dryRun() error {
	return Errorf(ExDryRun, "The request would have succeeded, but the DryRun option is set.")
}

func checkContext(ec map[string]string) error {
	if err := ciphertext.ValidateContext(ec); err != nil {
		return Errorf(ExValidation, "EncryptionContext: %v.", err)
	}
	return nil
}

// keyUUID is the 16 bytes of a key id as the ciphertext header holds them.
func keyUUID(id string) ([16]byte, bool) {
	var out [16]byte
	h := strings.ReplaceAll(id, "-", "")
	if len(h) != 32 {
		return out, false
	}
	_, err := hex.Decode(out[:], []byte(h))
	return out, err == nil
}

func formatUUID(b [16]byte) string {
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// EncryptionVersion returns the version of k that makes the next AES-GCM
// encryption, having counted that encryption against the version's limit:
// a version that reaches it is rotated at once and the new one returned
// (with k as it is after the rotation). Imported material can't be
// rotated: at the limit it answers LimitExceededException. Every
// encryption, by this API or another (XKS), goes through it.
func (s *Service) EncryptionVersion(ctx context.Context, k *keystore.Key) (*keystore.Key, *keystore.Version, error) {
	v := k.Current()
	for try := 0; ; try++ {
		err := s.takeEncryption(k, v)
		if err == nil {
			return k, v, nil
		}
		if !errors.Is(err, errVersionExhausted) || try == 2 {
			return nil, nil, err
		}
		if k.Origin != "AWS_KMS" {
			return nil, nil, Errorf(ExLimitExceeded, "%s: %v; import new material into a new key.", s.KeyARN(k.ID), errExternalExhausted)
		}
		if _, err := s.rotateLocked(ctx, k.ID, v.Number, keystore.RotationAutomatic, "gcm-limit", time.Time{}); err != nil {
			return nil, nil, err
		}
		if k, err = s.Store.Key(k.ID); err != nil {
			return nil, nil, err
		}
		v = k.Current()
	}
}

// sealSymmetric encrypts plaintext under k's current version into a
// ciphertext blob, counting the encryption (EncryptionVersion).
func (s *Service) sealSymmetric(ctx context.Context, k *keystore.Key, plaintext []byte, ec map[string]string) ([]byte, error) {
	k, v, err := s.EncryptionVersion(ctx, k)
	if err != nil {
		return nil, err
	}
	noteVersion(ctx, v.Number)
	pk, err := s.PoolKey(k, v)
	if err != nil {
		return nil, err
	}
	id, ok := keyUUID(k.ID)
	if !ok {
		return nil, Errorf(ExInternal, "Internal error.")
	}
	b := &ciphertext.Blob{KeyID: id, KeyVersion: v.Number}
	iv, sealed, err := s.Pool.EncryptGCM(ctx, pk, plaintext, b.AAD(ec))
	if err != nil {
		return nil, err
	}
	copy(b.IV[:], iv)
	b.Sealed = sealed
	return b.Marshal(), nil
}

// openSymmetric decrypts a symmetric ciphertext blob. keyID, when given,
// must name the key the blob was made with.
func (s *Service) openSymmetric(ctx context.Context, c Caller, action string, blob []byte, keyID string, ec map[string]string) (*keystore.Key, []byte, error) {
	b, err := ciphertext.Parse(blob)
	if err != nil {
		return nil, nil, err
	}
	id := formatUUID(b.KeyID)
	if keyID != "" {
		named, err := s.resolve(ctx, keyID)
		if err != nil {
			return nil, nil, err
		}
		if named.ID != id {
			return nil, nil, Errorf(ExIncorrectKey, "The key ID in the request does not identify a key that can decrypt the ciphertext.")
		}
	}
	k, err := s.Store.Key(id)
	if err == nil {
		s.noteKey(ctx, k)
	}
	if err != nil {
		// Unknown key id in the header: say so without confirming
		// anything about other accounts' keys.
		return nil, nil, ciphertext.ErrInvalid
	}
	if k.Spec != symmetricDefault {
		return nil, nil, ciphertext.ErrInvalid
	}
	if k, err = s.usable(ctx, c, action, k.ID, UsageEncryptDecrypt); err != nil {
		return nil, nil, err
	}
	v := k.Version(b.KeyVersion)
	if v == nil {
		return nil, nil, ciphertext.ErrInvalid
	}
	noteVersion(ctx, v.Number)
	pk, err := s.PoolKey(k, v)
	if err != nil {
		return nil, nil, err
	}
	pt, err := s.Pool.DecryptGCM(ctx, pk, b.IV[:], b.Sealed, b.AAD(ec))
	if err != nil {
		return nil, nil, err
	}
	return k, pt, nil
}

func (s *Service) encrypt(ctx context.Context, c Caller, req *encryptRequest) (*encryptResponse, error) {
	noteContext(ctx, req.EncryptionContext)
	if len(req.Plaintext) == 0 || len(req.Plaintext) > maxPlaintext {
		return nil, Errorf(ExValidation, "Plaintext must be 1 to %d bytes.", maxPlaintext)
	}
	if err := checkContext(req.EncryptionContext); err != nil {
		return nil, err
	}
	reqOf(ctx).encryptionAlgorithm = req.EncryptionAlgorithm
	if req.EncryptionAlgorithm == "" {
		reqOf(ctx).encryptionAlgorithm = symmetricDefault
	}
	k, err := s.usable(ctx, c, "Encrypt", req.KeyId, UsageEncryptDecrypt)
	if err != nil {
		return nil, err
	}
	alg, err := s.encryptionAlgorithm(k, req.EncryptionAlgorithm, req.EncryptionContext)
	if err != nil {
		return nil, err
	}
	if req.DryRun {
		return nil, dryRun()
	}
	var blob []byte
	if alg == symmetricDefault {
		blob, err = s.sealSymmetric(ctx, k, req.Plaintext, req.EncryptionContext)
	} else {
		blob, err = s.rsaEncrypt(ctx, k, alg, req.Plaintext)
	}
	if err != nil {
		return nil, err
	}
	return &encryptResponse{CiphertextBlob: blob, KeyId: s.KeyARN(k.ID), EncryptionAlgorithm: alg}, nil
}

// encryptionAlgorithm checks the algorithm named for k (defaulting to
// SYMMETRIC_DEFAULT) and returns it.
func (s *Service) encryptionAlgorithm(k *keystore.Key, alg string, ec map[string]string) (string, error) {
	if alg == "" {
		alg = symmetricDefault
	}
	enc, _, _, _ := s.algorithms(k.Spec, k.Usage)
	if !contains(enc, alg) {
		return "", Errorf(ExInvalidKeyUsage, "The encryption algorithm %s is not valid for %s (valid: %s).",
			truncate(alg, 32), s.KeyARN(k.ID), strings.Join(enc, ", "))
	}
	if alg != symmetricDefault && len(ec) > 0 {
		return "", Errorf(ExValidation, "EncryptionContext is not supported with asymmetric keys.")
	}
	return alg, nil
}

func (s *Service) rsaEncrypt(ctx context.Context, k *keystore.Key, alg string, pt []byte) ([]byte, error) {
	pk, err := s.PoolKey(k, k.Current())
	if err != nil {
		return nil, err
	}
	return s.Pool.EncryptOAEP(ctx, pk, oaepHashes[alg], pt)
}

func (s *Service) decrypt(ctx context.Context, c Caller, req *decryptRequest) (*decryptResponse, error) {
	noteContext(ctx, req.EncryptionContext)
	if len(req.CiphertextBlob) == 0 || len(req.CiphertextBlob) > maxBlob {
		return nil, Errorf(ExValidation, "CiphertextBlob must be 1 to %d bytes.", maxBlob)
	}
	if req.Recipient != nil {
		return nil, Errorf(ExUnsupported, "Recipient (attested enclaves) is not supported.")
	}
	if err := checkContext(req.EncryptionContext); err != nil {
		return nil, err
	}
	k, pt, alg, err := s.decryptAny(ctx, c, "Decrypt", req.CiphertextBlob, req.KeyId, req.EncryptionAlgorithm, req.EncryptionContext, req.DryRun)
	if err != nil {
		return nil, err
	}
	return &decryptResponse{KeyId: s.KeyARN(k.ID), Plaintext: pt, EncryptionAlgorithm: alg}, nil
}

// decryptAny decrypts a symmetric blob, or an RSA ciphertext when keyID
// names an RSA key.
func (s *Service) decryptAny(ctx context.Context, c Caller, action string, blob []byte, keyID, alg string, ec map[string]string, dry bool) (*keystore.Key, []byte, string, error) {
	if keyID != "" {
		named, err := s.resolve(ctx, keyID)
		if err != nil {
			return nil, nil, "", err
		}
		if named.Spec != symmetricDefault {
			k, err := s.usable(ctx, c, action, keyID, UsageEncryptDecrypt)
			if err != nil {
				return nil, nil, "", err
			}
			if alg == "" {
				return nil, nil, "", Errorf(ExValidation, "EncryptionAlgorithm is required to decrypt with an asymmetric key.")
			}
			if alg, err = s.encryptionAlgorithm(k, alg, ec); err != nil {
				return nil, nil, "", err
			}
			if dry {
				return nil, nil, "", dryRun()
			}
			pk, err := s.PoolKey(k, k.Current())
			if err != nil {
				return nil, nil, "", err
			}
			pt, err := s.Pool.DecryptOAEP(ctx, pk, oaepHashes[alg], blob)
			return k, pt, alg, err
		}
	}
	if alg != "" && alg != symmetricDefault {
		return nil, nil, "", Errorf(ExInvalidKeyUsage, "The encryption algorithm %s is not valid for a symmetric key.", truncate(alg, 32))
	}
	if dry {
		// Everything short of the HSM call is checked: the key, its state
		// and the caller's access.
		if _, err := ciphertext.Parse(blob); err != nil {
			return nil, nil, "", err
		}
		return nil, nil, "", dryRun()
	}
	k, pt, err := s.openSymmetric(ctx, c, action, blob, keyID, ec)
	return k, pt, symmetricDefault, err
}

func (s *Service) reEncrypt(ctx context.Context, c Caller, req *reEncryptRequest) (*reEncryptResponse, error) {
	noteContext(ctx, req.SourceEncryptionContext)
	if len(req.CiphertextBlob) == 0 || len(req.CiphertextBlob) > maxBlob {
		return nil, Errorf(ExValidation, "CiphertextBlob must be 1 to %d bytes.", maxBlob)
	}
	if err := checkContext(req.SourceEncryptionContext); err != nil {
		return nil, err
	}
	if err := checkContext(req.DestinationEncryptionContext); err != nil {
		return nil, err
	}
	setContext(ctx, req.DestinationEncryptionContext)
	dst, err := s.usable(ctx, c, "ReEncryptTo", req.DestinationKeyId, UsageEncryptDecrypt)
	if err != nil {
		return nil, err
	}
	setContext(ctx, req.SourceEncryptionContext)
	dstAlg, err := s.encryptionAlgorithm(dst, req.DestinationEncryptionAlgorithm, req.DestinationEncryptionContext)
	if err != nil {
		return nil, err
	}
	src, pt, srcAlg, err := s.decryptAny(ctx, c, "ReEncryptFrom", req.CiphertextBlob, req.SourceKeyId,
		req.SourceEncryptionAlgorithm, req.SourceEncryptionContext, req.DryRun)
	if err != nil {
		return nil, err
	}
	defer clear(pt)
	var blob []byte
	if dstAlg == symmetricDefault {
		blob, err = s.sealSymmetric(ctx, dst, pt, req.DestinationEncryptionContext)
	} else {
		blob, err = s.rsaEncrypt(ctx, dst, dstAlg, pt)
	}
	if err != nil {
		return nil, err
	}
	return &reEncryptResponse{CiphertextBlob: blob, SourceKeyId: s.KeyARN(src.ID), KeyId: s.KeyARN(dst.ID),
		SourceEncryptionAlgorithm: srcAlg, DestinationEncryptionAlgorithm: dstAlg}, nil
}

func dataKeyLength(spec string, n *int) (int, error) {
	switch {
	case spec != "" && n != nil:
		return 0, Errorf(ExValidation, "Specify either KeySpec or NumberOfBytes, not both.")
	case spec == "AES_256":
		return 32, nil
	case spec == "AES_128":
		return 16, nil
	case spec != "":
		return 0, Errorf(ExValidation, "KeySpec must be AES_256 or AES_128.")
	case n == nil:
		return 0, Errorf(ExValidation, "Specify either KeySpec or NumberOfBytes.")
	case *n < 1 || *n > 1024:
		return 0, Errorf(ExValidation, "NumberOfBytes must be between 1 and 1024.")
	}
	return *n, nil
}

func (s *Service) dataKey(ctx context.Context, c Caller, action string, req *generateDataKeyRequest) (*generateDataKeyResponse, error) {
	noteContext(ctx, req.EncryptionContext)
	n, err := dataKeyLength(req.KeySpec, req.NumberOfBytes)
	if err != nil {
		return nil, err
	}
	if req.Recipient != nil {
		return nil, Errorf(ExUnsupported, "Recipient (attested enclaves) is not supported.")
	}
	k, err := s.dataKeyProtector(ctx, c, action, req.KeyId, req.EncryptionContext, req.DryRun)
	if err != nil {
		return nil, err
	}
	pt, err := s.Pool.Random(ctx, n)
	if err != nil {
		return nil, err
	}
	blob, err := s.sealSymmetric(ctx, k, pt, req.EncryptionContext)
	if err != nil {
		return nil, err
	}
	return &generateDataKeyResponse{CiphertextBlob: blob, Plaintext: pt, KeyId: s.KeyARN(k.ID)}, nil
}

// dataKeyProtector resolves the symmetric encryption key that is to
// encrypt a data key or a data key pair's private key, with everything a
// DryRun checks.
func (s *Service) dataKeyProtector(ctx context.Context, c Caller, action, keyID string, ec map[string]string, dry bool) (*keystore.Key, error) {
	if err := checkContext(ec); err != nil {
		return nil, err
	}
	k, err := s.usable(ctx, c, action, keyID, UsageEncryptDecrypt)
	if err != nil {
		return nil, err
	}
	if k.Spec != symmetricDefault {
		return nil, Errorf(ExInvalidKeyUsage, "%s is not a symmetric encryption key.", s.KeyARN(k.ID))
	}
	if dry {
		return nil, dryRun()
	}
	return k, nil
}

func (s *Service) generateDataKey(ctx context.Context, c Caller, req *generateDataKeyRequest) (*generateDataKeyResponse, error) {
	return s.dataKey(ctx, c, "GenerateDataKey", req)
}

func (s *Service) generateDataKeyWithoutPlaintext(ctx context.Context, c Caller, req *generateDataKeyRequest) (*generateDataKeyResponse, error) {
	out, err := s.dataKey(ctx, c, "GenerateDataKeyWithoutPlaintext", req)
	if err != nil {
		return nil, err
	}
	clear(out.Plaintext)
	out.Plaintext = nil
	return out, nil
}

func (s *Service) macKey(ctx context.Context, c Caller, action string, req *macRequest) (*keystore.Key, *hsmpool.Key, error) {
	if len(req.Message) == 0 || len(req.Message) > maxPlaintext {
		return nil, nil, Errorf(ExValidation, "Message must be 1 to %d bytes.", maxPlaintext)
	}
	reqOf(ctx).macAlgorithm = req.MacAlgorithm
	k, err := s.usable(ctx, c, action, req.KeyId, UsageGenerateVerifyMac)
	if err != nil {
		return nil, nil, err
	}
	if want := specs[k.Spec].hmac; req.MacAlgorithm != want {
		return nil, nil, Errorf(ExInvalidKeyUsage, "The MAC algorithm %s is not valid for %s (valid: %s).", truncate(req.MacAlgorithm, 32), s.KeyARN(k.ID), want)
	}
	if req.DryRun {
		return nil, nil, dryRun()
	}
	pk, err := s.PoolKey(k, k.Current())
	return k, pk, err
}

func (s *Service) generateMac(ctx context.Context, c Caller, req *macRequest) (*generateMacResponse, error) {
	k, pk, err := s.macKey(ctx, c, "GenerateMac", req)
	if err != nil {
		return nil, err
	}
	mac, err := s.Pool.GenerateMAC(ctx, pk, req.Message)
	if err != nil {
		return nil, err
	}
	return &generateMacResponse{Mac: mac, MacAlgorithm: req.MacAlgorithm, KeyId: s.KeyARN(k.ID)}, nil
}

func (s *Service) verifyMac(ctx context.Context, c Caller, req *macRequest) (*verifyMacResponse, error) {
	if len(req.Mac) == 0 || len(req.Mac) > 6144 {
		return nil, Errorf(ExValidation, "Mac must be 1 to 6144 bytes.")
	}
	k, pk, err := s.macKey(ctx, c, "VerifyMac", req)
	if err != nil {
		return nil, err
	}
	if err := s.Pool.VerifyMAC(ctx, pk, req.Message, req.Mac); err != nil {
		return nil, err
	}
	return &verifyMacResponse{KeyId: s.KeyARN(k.ID), MacValid: true, MacAlgorithm: req.MacAlgorithm}, nil
}

// signInput checks a Sign or Verify request and returns the key, the pool
// algorithm, and whether Message is a digest.
func (s *Service) signInput(ctx context.Context, c Caller, action string, req *signRequest) (*keystore.Key, *hsmpool.Key, hsmpool.SignAlgorithm, bool, error) {
	if len(req.Message) == 0 || len(req.Message) > maxPlaintext {
		return nil, nil, 0, false, Errorf(ExValidation, "Message must be 1 to %d bytes.", maxPlaintext)
	}
	digest := false
	switch req.MessageType {
	case "", "RAW":
	case "DIGEST":
		digest = true
	case "EXTERNAL_MU":
		return nil, nil, 0, false, Errorf(ExUnsupported, "MessageType EXTERNAL_MU is only for ML-DSA keys, which are not offered.")
	default:
		return nil, nil, 0, false, Errorf(ExValidation, "MessageType must be RAW or DIGEST.")
	}
	rq := reqOf(ctx)
	rq.signingAlgorithm, rq.messageType = req.SigningAlgorithm, req.MessageType
	if rq.messageType == "" {
		rq.messageType = "RAW"
	}
	k, err := s.usable(ctx, c, action, req.KeyId, UsageSignVerify)
	if err != nil {
		return nil, nil, 0, false, err
	}
	alg, ok := signingAlgorithms[req.SigningAlgorithm]
	if !ok || !s.signingAllowed(k.Spec, k.Usage, req.SigningAlgorithm) {
		_, valid, _, _ := s.algorithms(k.Spec, k.Usage)
		return nil, nil, 0, false, Errorf(ExInvalidKeyUsage, "The signing algorithm %s is not valid for %s (valid: %s).",
			truncate(req.SigningAlgorithm, 40), s.KeyARN(k.ID), strings.Join(valid, ", "))
	}
	if digest {
		if alg == hsmpool.Ed25519Pure {
			return nil, nil, 0, false, Errorf(ExValidation, "ED25519_SHA_512 signs RAW messages only.")
		}
		if len(req.Message) != alg.Hash().Size() {
			return nil, nil, 0, false, Errorf(ExValidation, "Digest is %d bytes; %s needs %d.", len(req.Message), req.SigningAlgorithm, alg.Hash().Size())
		}
	}
	if req.DryRun {
		return nil, nil, 0, false, dryRun()
	}
	pk, err := s.PoolKey(k, k.Current())
	return k, pk, alg, digest, err
}

func (s *Service) sign(ctx context.Context, c Caller, req *signRequest) (*signResponse, error) {
	k, pk, alg, digest, err := s.signInput(ctx, c, "Sign", req)
	if err != nil {
		return nil, err
	}
	var sig []byte
	if digest {
		sig, err = s.Pool.SignDigest(ctx, pk, alg, req.Message)
	} else {
		sig, err = s.Pool.SignMessage(ctx, pk, alg, req.Message)
	}
	if err != nil {
		return nil, err
	}
	return &signResponse{KeyId: s.KeyARN(k.ID), Signature: sig, SigningAlgorithm: req.SigningAlgorithm}, nil
}

func (s *Service) verify(ctx context.Context, c Caller, req *signRequest) (*verifyResponse, error) {
	if len(req.Signature) == 0 || len(req.Signature) > 6144 {
		return nil, Errorf(ExValidation, "Signature must be 1 to 6144 bytes.")
	}
	k, pk, alg, digest, err := s.signInput(ctx, c, "Verify", req)
	if err != nil {
		return nil, err
	}
	if digest {
		err = s.Pool.VerifyDigest(ctx, pk, alg, req.Message, req.Signature)
	} else {
		err = s.Pool.VerifyMessage(ctx, pk, alg, req.Message, req.Signature)
	}
	if err != nil {
		return nil, err
	}
	return &verifyResponse{KeyId: s.KeyARN(k.ID), SignatureValid: true, SigningAlgorithm: req.SigningAlgorithm}, nil
}

func (s *Service) getPublicKey(ctx context.Context, c Caller, req *keyIDRequest) (*getPublicKeyResponse, error) {
	k, err := s.usable(ctx, c, "GetPublicKey", req.KeyId, "")
	if err != nil {
		return nil, err
	}
	pub := k.Current().Public
	if len(pub) == 0 {
		return nil, Errorf(ExUnsupported, "%s is not an asymmetric key: it has no public key.", s.KeyARN(k.ID))
	}
	if _, err := x509.ParsePKIXPublicKey(pub); err != nil {
		return nil, Errorf(ExInternal, "Internal error.")
	}
	enc, sig, _, agree := s.algorithms(k.Spec, k.Usage)
	return &getPublicKeyResponse{KeyId: s.KeyARN(k.ID), PublicKey: pub, CustomerMasterKeySpec: k.Spec, KeySpec: k.Spec,
		KeyUsage: k.Usage, EncryptionAlgorithms: enc, SigningAlgorithms: sig, KeyAgreementAlgorithms: agree}, nil
}

func (s *Service) generateRandom(ctx context.Context, _ Caller, req *generateRandomRequest) (*generateRandomResponse, error) {
	switch {
	case req.NumberOfBytes == nil || *req.NumberOfBytes < 1 || *req.NumberOfBytes > 1024:
		return nil, Errorf(ExValidation, "NumberOfBytes must be between 1 and 1024.")
	case req.CustomKeyStoreId != "":
		return nil, Errorf(ExUnsupported, "Custom key stores are not supported.")
	case req.Recipient != nil:
		return nil, Errorf(ExUnsupported, "Recipient (attested enclaves) is not supported.")
	}
	b, err := s.Pool.Random(ctx, *req.NumberOfBytes)
	if err != nil {
		return nil, err
	}
	return &generateRandomResponse{Plaintext: b}, nil
}
