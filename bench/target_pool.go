package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/hsmgate/hsmgate/hsmpool"
)

// poolSpecs maps the workload's key specs to the pool's.
var poolSpecs = map[string]hsmpool.KeySpec{
	"ECC_NIST_P256": hsmpool.ECP256,
	"ECC_NIST_P384": hsmpool.ECP384,
	"ECC_NIST_P521": hsmpool.ECP521,
	"RSA_2048":      hsmpool.RSA2048,
	"RSA_3072":      hsmpool.RSA3072,
	"RSA_4096":      hsmpool.RSA4096,
	"HMAC_224":      hsmpool.HMAC224,
	"HMAC_256":      hsmpool.HMAC256,
	"HMAC_384":      hsmpool.HMAC384,
	"HMAC_512":      hsmpool.HMAC512,
}

// poolSignAlgorithms maps AWS signing algorithm names to the pool's.
var poolSignAlgorithms = map[string]hsmpool.SignAlgorithm{
	"ECDSA_SHA_256":             hsmpool.ECDSAWithSHA256,
	"ECDSA_SHA_384":             hsmpool.ECDSAWithSHA384,
	"ECDSA_SHA_512":             hsmpool.ECDSAWithSHA512,
	"RSASSA_PKCS1_V1_5_SHA_256": hsmpool.RSAPKCS1v15WithSHA256,
	"RSASSA_PKCS1_V1_5_SHA_384": hsmpool.RSAPKCS1v15WithSHA384,
	"RSASSA_PKCS1_V1_5_SHA_512": hsmpool.RSAPKCS1v15WithSHA512,
	"RSASSA_PSS_SHA_256":        hsmpool.RSAPSSWithSHA256,
	"RSASSA_PSS_SHA_384":        hsmpool.RSAPSSWithSHA384,
	"RSASSA_PSS_SHA_512":        hsmpool.RSAPSSWithSHA512,
}

// poolCode names a pool error as the gateway's exception for it would, ""
// if err is not the pool's.
func poolCode(err error) string {
	switch {
	case errors.Is(err, hsmpool.ErrThrottled):
		return "ThrottlingException"
	case errors.Is(err, hsmpool.ErrTimeout), errors.Is(err, hsmpool.ErrUnavailable):
		return "DependencyTimeoutException"
	case errors.Is(err, hsmpool.ErrInvalidCiphertext):
		return "InvalidCiphertextException"
	case errors.Is(err, hsmpool.ErrInvalidSignature):
		return "KMSInvalidSignatureException"
	case errors.Is(err, hsmpool.ErrInvalidMAC):
		return "KMSInvalidMacException"
	case errors.Is(err, hsmpool.ErrInvalidInput):
		return "ValidationException"
	case errors.Is(err, hsmpool.ErrUnsupported):
		return "UnsupportedOperationException"
	case errors.Is(err, hsmpool.ErrNotFound):
		return "NotFoundException"
	case errors.Is(err, hsmpool.ErrInvalidKeyBlob), errors.Is(err, hsmpool.ErrClosed):
		return "KMSInternalException"
	}
	var pe *hsmpool.Error
	if errors.As(err, &pe) {
		return "KMSInternalException"
	}
	return ""
}

// poolTarget runs the operations on the HSM pool directly: the gateway's
// cryptography without HTTP, TLS, SigV4, JSON or the keystore, the
// ceiling the gateway is measured against.
type poolTarget struct {
	p *hsmpool.Pool

	// Set by Prepare, read-only while Do runs.
	w          Workload
	keys       map[string]*hsmpool.Key // by spec and usage, generated once
	symKey     *hsmpool.Key
	signKey    *hsmpool.Key
	signAlg    hsmpool.SignAlgorithm
	macKey     *hsmpool.Key
	aad        []byte // as the gateway's: version, key id, key version, empty context
	payload    []byte
	iv, sealed []byte // payload under symKey
	signature  []byte // of payload by signKey
}

// NewPoolTarget returns a Target that runs the operations on p itself
// (Name and Client "pool"), as the gateway would run them for each
// request: Encrypt is AES-GCM with a 23-byte AAD, GenerateDataKey is 32
// random bytes from the HSM then an encryption, ReEncrypt a decryption then
// an encryption, and so on. Errors are named as the gateway would name
// them (ErrThrottled is ThrottlingException, ErrTimeout and ErrUnavailable
// DependencyTimeoutException, …). Close leaves the pool open.
func NewPoolTarget(p *hsmpool.Pool) Target { return &poolTarget{p: p} }

func (t *poolTarget) Name() string   { return "pool" }
func (t *poolTarget) Client() string { return "pool" }
func (t *poolTarget) Close() error   { return nil }

// Prepare generates the keys the mix needs in the pool (each once per
// target), a random payload, and the ciphertext and signature that
// Decrypt, ReEncrypt and Verify consume.
func (t *poolTarget) Prepare(ctx context.Context, w *Workload) error {
	wl := *w
	if err := wl.Defaults(); err != nil {
		return err
	}
	t.w = wl
	if t.keys == nil {
		t.keys = map[string]*hsmpool.Key{}
	}
	key := func(spec hsmpool.KeySpec, usage hsmpool.Usage) (*hsmpool.Key, error) {
		name := spec.String() + "/" + usage.String()
		if k, ok := t.keys[name]; ok {
			return k, nil
		}
		g, err := t.p.GenerateKey(ctx, spec, usage)
		if err != nil {
			return nil, callError(ctx, "GenerateKey", err)
		}
		k, err := hsmpool.NewKey("hsmbench-"+name, 1, g.Blob, g.Public)
		if err != nil {
			return nil, &CallError{Call: "GenerateKey", Code: CodeBadResponse, Err: err}
		}
		t.keys[name] = k
		return k, nil
	}
	t.payload = make([]byte, wl.PayloadSize)
	rand.Read(t.payload)
	t.iv, t.sealed, t.signature = nil, nil, nil
	var err error
	if wl.Uses(OpEncrypt, OpDecrypt, OpGenerateDataKey, OpReEncrypt) {
		if t.symKey, err = key(hsmpool.AES256, hsmpool.UsageEncrypt); err != nil {
			return err
		}
		// The gateway's AAD: format version 1, the key's 16-byte id, its
		// 4-byte version 1, and an empty encryption context (0x0000).
		t.aad = make([]byte, 23)
		t.aad[0] = 1
		rand.Read(t.aad[1:17])
		t.aad[20] = 1
		if wl.Uses(OpDecrypt, OpReEncrypt) {
			if t.iv, t.sealed, err = t.p.EncryptGCM(ctx, t.symKey, t.payload, t.aad); err != nil {
				return callError(ctx, "Encrypt", err)
			}
		}
	}
	if wl.Uses(OpSign, OpVerify) {
		t.signAlg = poolSignAlgorithms[wl.SigningAlgorithm]
		if t.signKey, err = key(poolSpecs[wl.SignKeySpec], hsmpool.UsageSign); err != nil {
			return err
		}
		if wl.Uses(OpVerify) {
			if t.signature, err = t.p.SignMessage(ctx, t.signKey, t.signAlg, t.payload); err != nil {
				return callError(ctx, "Sign", err)
			}
			if err := verifyLocally(t.signKey.Public(), wl.SigningAlgorithm, t.payload, t.signature); err != nil {
				return &CallError{Call: "Sign", Code: CodeWrongResult, Err: err}
			}
		}
	}
	if wl.Uses(OpGenerateMac) {
		if t.macKey, err = key(poolSpecs[wl.MacKeySpec], hsmpool.UsageMAC); err != nil {
			return err
		}
	}
	return nil
}

// Do runs one operation and, with check, verifies its result.
func (t *poolTarget) Do(ctx context.Context, op Op, check bool) error {
	call, err := t.do(ctx, op, check)
	if err != nil {
		return callError(ctx, call, err)
	}
	return nil
}

func (t *poolTarget) do(ctx context.Context, op Op, check bool) (call string, err error) {
	call = string(op)
	switch op {
	case OpEncrypt:
		iv, ct, err := t.p.EncryptGCM(ctx, t.symKey, t.payload, t.aad)
		if err != nil || !check {
			return call, err
		}
		return t.checkDecrypt(ctx, iv, ct, t.payload)
	case OpDecrypt:
		pt, err := t.p.DecryptGCM(ctx, t.symKey, t.iv, t.sealed, t.aad)
		if err == nil && check && !bytes.Equal(pt, t.payload) {
			err = wrongResult("decrypt gave other bytes than were encrypted")
		}
		return call, err
	case OpGenerateDataKey:
		dk, err := t.p.Random(ctx, 32)
		if err != nil {
			return call, err
		}
		iv, ct, err := t.p.EncryptGCM(ctx, t.symKey, dk, t.aad)
		if err != nil || !check {
			return call, err
		}
		return t.checkDecrypt(ctx, iv, ct, dk)
	case OpReEncrypt:
		pt, err := t.p.DecryptGCM(ctx, t.symKey, t.iv, t.sealed, t.aad)
		if err != nil {
			return call, err
		}
		iv, ct, err := t.p.EncryptGCM(ctx, t.symKey, pt, t.aad)
		if err != nil || !check {
			return call, err
		}
		return t.checkDecrypt(ctx, iv, ct, t.payload)
	case OpSign:
		sig, err := t.p.SignMessage(ctx, t.signKey, t.signAlg, t.payload)
		if err == nil && check {
			err = verifyLocally(t.signKey.Public(), t.w.SigningAlgorithm, t.payload, sig)
		}
		return call, err
	case OpVerify:
		err := t.p.VerifyMessage(ctx, t.signKey, t.signAlg, t.payload, t.signature)
		if check && errors.Is(err, hsmpool.ErrInvalidSignature) {
			err = fmt.Errorf("%w: a valid signature was refused (%v)", ErrWrongResult, err)
		}
		return call, err
	case OpGenerateMac:
		mac, err := t.p.GenerateMAC(ctx, t.macKey, t.payload)
		if err != nil || !check {
			return call, err
		}
		err = t.p.VerifyMAC(ctx, t.macKey, t.payload, mac)
		if errors.Is(err, hsmpool.ErrInvalidMAC) {
			err = fmt.Errorf("%w: the MAC does not verify (%v)", ErrWrongResult, err)
		}
		return "VerifyMac (check)", err
	}
	return call, fmt.Errorf("bench: unknown operation %q", op)
}

// checkDecrypt decrypts a ciphertext and compares the result with want.
func (t *poolTarget) checkDecrypt(ctx context.Context, iv, ct, want []byte) (string, error) {
	const call = "Decrypt (check)"
	pt, err := t.p.DecryptGCM(ctx, t.symKey, iv, ct, t.aad)
	if errors.Is(err, hsmpool.ErrInvalidCiphertext) {
		return call, fmt.Errorf("%w: the ciphertext does not decrypt (%v)", ErrWrongResult, err)
	}
	if err == nil && !bytes.Equal(pt, want) {
		err = wrongResult("decrypt gave other bytes than were encrypted")
	}
	return call, err
}
