package hsmpool

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	_ "crypto/sha256" // register the hashes the sign algorithms use
	_ "crypto/sha512"
	"encoding/asn1"
	"errors"
	"fmt"
	"hash/fnv"
	"math/big"
	"time"

	"github.com/miekg/pkcs11"
)

// Key is one key version the pool can use: its name, for the per-slot cache
// of unwrapped objects, and its blob. (ID, Version) should name one blob for
// the life of the pool; a digest of the blob is part of the cache key too,
// so that a reused name can never pick up another key's object. Build it once with NewKey and reuse it: it
// holds the parsed blob and public key.
type Key struct {
	ID      string
	Version uint32
	blob    *Blob
	tag     uint64           // FNV-1a of the wrapped bytes: part of the cache key
	public  crypto.PublicKey // nil for symmetric keys
	pubTmpl []*pkcs11.Attribute
}

// NewKey parses a key blob and, for key pairs, its DER public key.
func NewKey(id string, version uint32, blob, public []byte) (*Key, error) {
	b, err := ParseBlob(blob)
	if err != nil {
		return nil, err
	}
	h := fnv.New64a()
	h.Write(b.Wrapped)
	k := &Key{ID: id, Version: version, blob: b, tag: h.Sum64()}
	if b.Spec.IsAsymmetric() {
		pub, err := ParsePublicKey(b.Spec, public)
		if err != nil {
			return nil, fmt.Errorf("key %s v%d: %w", id, version, err)
		}
		k.public = pub
		if k.pubTmpl, err = publicObjectTemplate(b.Spec, b.Usage, pub); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// Spec returns the key's spec.
func (k *Key) Spec() KeySpec { return k.blob.Spec }

// Usage returns the key's usage.
func (k *Key) Usage() Usage { return k.blob.Usage }

// Public returns the key pair's public key, nil for a symmetric key.
func (k *Key) Public() crypto.PublicKey { return k.public }

// GeneratedKey is a new key: its blob (wrapped under the domain key) and,
// for key pairs, its public key as DER SubjectPublicKeyInfo.
type GeneratedKey struct {
	Blob   []byte
	Public []byte
}

// GenerateKey creates a key inside one slot, wraps it there under the
// domain key and destroys the slot's copy. Any slot can then use it.
func (p *Pool) GenerateKey(ctx context.Context, spec KeySpec, usage Usage) (*GeneratedKey, error) {
	if !spec.allows(usage) {
		return nil, &Error{Op: "generate key", Err: fmt.Errorf("%w: %s keys can't be used to %s", ErrInvalidInput, spec, usage)}
	}
	if err := p.caps.Supports(spec, usage); err != nil {
		return nil, &Error{Op: "generate key", Class: ClassUnsupported, Err: fmt.Errorf("%w: %v", ErrUnsupported, err)}
	}
	var out *GeneratedKey
	err := p.do(ctx, "generate key", p.opts.KeyGenTimeout, func(s *slot, deadline time.Time) *Error {
		kcv := s.kcv.Load()
		dk := s.ctl.Load().dk
		var res GeneratedKey
		e := s.run(deadline, opOther, "generate "+spec.String()+" key", func(h pkcs11.SessionHandle) error {
			ck := s.mod.ck
			var priv, pub pkcs11.ObjectHandle
			var err error
			switch {
			case spec == AES256:
				priv, err = ck.GenerateKey(h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)},
					append(privateTemplate(spec, usage, true), pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32)))
			case spec.isHMAC():
				priv, err = ck.GenerateKey(h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_GENERIC_SECRET_KEY_GEN, nil)},
					append(privateTemplate(spec, usage, true), pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, spec.hmacKeyLen())))
			default:
				pub, priv, err = ck.GenerateKeyPair(h, []*pkcs11.Mechanism{pkcs11.NewMechanism(keyPairMechanism(spec), nil)},
					publicGenTemplate(spec, usage), privateTemplate(spec, usage, true))
			}
			if err != nil {
				return err
			}
			defer ck.DestroyObject(h, priv)
			if pub != 0 {
				defer ck.DestroyObject(h, pub)
				attrs := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil)}
				if spec.isRSA() {
					attrs = []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_MODULUS, nil), pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, nil)}
				}
				attrs, err = ck.GetAttributeValue(h, pub, attrs)
				if err != nil {
					return err
				}
				if res.Public, err = publicFromAttributes(spec, attrs); err != nil {
					return err
				}
			}
			wrapped, err := ck.WrapKey(h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP_PAD, nil)}, dk, priv)
			if err != nil {
				return err
			}
			res.Blob = (&Blob{Spec: spec, Usage: usage, KCV: *kcv, Wrapped: wrapped}).Marshal()
			return nil
		})
		if e == nil {
			out = &res
		}
		return e
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// useKey runs fn with the key's object (its private/secret half, or its
// public half when public is set) on a slot's session, failing over as do
// does. Each attempt keeps its own result, so that a call abandoned on a
// timeout can never write into the answer of the attempt that replaced it.
func useKey[T any](p *Pool, ctx context.Context, k *Key, public bool, op opKind, what string, fn func(ck Cryptoki, h pkcs11.SessionHandle, obj pkcs11.ObjectHandle) (T, error)) (T, error) {
	return useKeyOn(p, ctx, k, public, op, what, func(_ *slot, ck Cryptoki, h pkcs11.SessionHandle, obj pkcs11.ObjectHandle) (T, error) {
		return fn(ck, h, obj)
	})
}

// useKeyOn is useKey for a fn that needs the slot it runs on (its domain
// key, its name).
func useKeyOn[T any](p *Pool, ctx context.Context, k *Key, public bool, op opKind, what string, fn func(s *slot, ck Cryptoki, h pkcs11.SessionHandle, obj pkcs11.ObjectHandle) (T, error)) (T, error) {
	var out T
	if want := p.kcv.Load(); want == nil || *want != k.blob.KCV {
		return out, &Error{Op: what, Key: k.ID, Err: fmt.Errorf("%w: wrapped under domain key %s, not this pool's", ErrInvalidKeyBlob, k.blob.KCV)}
	}
	err := p.do(ctx, what, p.opts.OpTimeout, func(s *slot, deadline time.Time) *Error {
		e, perr := s.keyObject(deadline, k, public)
		if perr != nil {
			return perr
		}
		var r T
		perr = s.run(deadline, op, what, func(h pkcs11.SessionHandle) (err error) {
			r, err = fn(s, s.mod.ck, h, e.obj)
			return err
		})
		s.cache.release(e)
		if perr != nil {
			perr.Key = k.ID
			if perr.RV == pkcs11.CKR_KEY_HANDLE_INVALID || perr.RV == pkcs11.CKR_OBJECT_HANDLE_INVALID {
				s.cache.remove(cacheKey{k.ID, k.Version, k.tag, public})
			}
			return perr
		}
		out = r
		return nil
	})
	return out, err
}

// keyObject returns the cached object for k on the slot, unwrapping the key
// (or creating its public half) on the control session on a miss.
func (s *slot) keyObject(deadline time.Time, k *Key, public bool) (*keyEntry, *Error) {
	ckey := cacheKey{k.ID, k.Version, k.tag, public}
	gen := s.gen.Load()
	if e := s.cache.get(ckey, gen); e != nil {
		return e, nil
	}
	var hit *keyEntry
	var obj pkcs11.ObjectHandle
	op, what := opUnwrap, "unwrap key"
	if public {
		op, what = opOther, "load public key"
	}
	perr := s.onControl(deadline, op, what, func(c *control) error {
		// Another caller may have loaded it while we waited for the lock.
		if hit = s.cache.get(ckey, gen); hit != nil {
			return nil
		}
		var err error
		if public {
			obj, err = s.mod.ck.CreateObject(c.h, k.pubTmpl)
		} else {
			obj, err = s.mod.ck.UnwrapKey(c.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP_PAD, nil)},
				c.dk, k.blob.Wrapped, privateTemplate(k.blob.Spec, k.blob.Usage, false))
		}
		return err
	})
	if perr != nil {
		perr.Key = k.ID
		return nil, perr
	}
	if hit != nil {
		return hit, nil
	}
	e, dup := s.cache.add(ckey, obj, gen)
	if dup {
		s.destroyEntry(&keyEntry{obj: obj, gen: gen})
	}
	return e, nil
}

// EncryptGCM encrypts plaintext with an AES-256 key in AES-GCM under a fresh
// random 96-bit IV, with aad as additional data. It returns the IV and the
// ciphertext with the 16-byte tag appended.
func (p *Pool) EncryptGCM(ctx context.Context, k *Key, plaintext, aad []byte) (iv, ciphertext []byte, err error) {
	if err := p.check(k, AES256, UsageEncrypt, p.caps.AESGCM, "CKM_AES_GCM", "encrypt"); err != nil {
		return nil, nil, err
	}
	// The closure below may outlive this call (an abandoned attempt), so it
	// captures nothing this function writes afterwards.
	nonce := make([]byte, 12)
	if _, err := rand.Read(nonce); err != nil {
		return nil, nil, err
	}
	type result struct{ iv, ct []byte }
	r, err := useKey(p, ctx, k, false, opOther, "encrypt", func(ck Cryptoki, h pkcs11.SessionHandle, obj pkcs11.ObjectHandle) (result, error) {
		params := pkcs11.NewGCMParams(nonce, aad, 128)
		defer params.Free() // GCM parameters live in C memory
		if err := ck.EncryptInit(h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}, obj); err != nil {
			return result{}, err
		}
		ct, err := ck.Encrypt(h, plaintext)
		return result{params.IV(), ct}, err // some modules choose their own IV
	})
	if err != nil {
		return nil, nil, err
	}
	if len(r.iv) == len(nonce) {
		return r.iv, r.ct, nil
	}
	return nonce, r.ct, nil
}

// DecryptGCM decrypts and authenticates an AES-GCM ciphertext (with its tag
// appended). A wrong key, IV, AAD or a changed byte gives
// ErrInvalidCiphertext.
func (p *Pool) DecryptGCM(ctx context.Context, k *Key, iv, ciphertext, aad []byte) ([]byte, error) {
	if err := p.check(k, AES256, UsageEncrypt, p.caps.AESGCM, "CKM_AES_GCM", "decrypt"); err != nil {
		return nil, err
	}
	if len(iv) != 12 && len(iv) != 16 {
		return nil, &Error{Op: "decrypt", Key: k.ID, Err: fmt.Errorf("%w: IV of %d bytes", ErrInvalidCiphertext, len(iv))}
	}
	if len(ciphertext) < 16 {
		return nil, &Error{Op: "decrypt", Key: k.ID, Err: fmt.Errorf("%w: shorter than the tag", ErrInvalidCiphertext)}
	}
	return useKey(p, ctx, k, false, opDecrypt, "decrypt", func(ck Cryptoki, h pkcs11.SessionHandle, obj pkcs11.ObjectHandle) ([]byte, error) {
		params := pkcs11.NewGCMParams(iv, aad, 128)
		defer params.Free()
		if err := ck.DecryptInit(h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}, obj); err != nil {
			return nil, err
		}
		return ck.Decrypt(h, ciphertext)
	})
}

// check refuses an operation the key or the pool can't do, before any slot
// is involved.
func (p *Pool) check(k *Key, spec KeySpec, usage Usage, supported bool, mech, what string) error {
	if k.blob.Usage != usage || (spec != 0 && k.blob.Spec != spec) {
		return &Error{Op: what, Key: k.ID, Err: fmt.Errorf("%w: a %s key for %s can't %s", ErrInvalidInput, k.blob.Spec, k.blob.Usage, what)}
	}
	if !supported {
		return &Error{Op: what, Key: k.ID, Class: ClassUnsupported, Err: fmt.Errorf("%w: %s", ErrUnsupported, mech)}
	}
	return nil
}

// SignAlgorithm is a signature scheme.
type SignAlgorithm uint8

const (
	ECDSAWithSHA256 SignAlgorithm = iota + 1
	ECDSAWithSHA384
	ECDSAWithSHA512
	RSAPKCS1v15WithSHA256
	RSAPKCS1v15WithSHA384
	RSAPKCS1v15WithSHA512
	RSAPSSWithSHA256 // salt length = digest length
	RSAPSSWithSHA384
	RSAPSSWithSHA512
	Ed25519Pure // over the whole message; no digest form
)

// Hash returns the digest the algorithm signs, 0 for Ed25519Pure.
func (a SignAlgorithm) Hash() crypto.Hash {
	switch a {
	case ECDSAWithSHA256, RSAPKCS1v15WithSHA256, RSAPSSWithSHA256:
		return crypto.SHA256
	case ECDSAWithSHA384, RSAPKCS1v15WithSHA384, RSAPSSWithSHA384:
		return crypto.SHA384
	case ECDSAWithSHA512, RSAPKCS1v15WithSHA512, RSAPSSWithSHA512:
		return crypto.SHA512
	}
	return 0
}

func (a SignAlgorithm) fits(spec KeySpec) bool {
	switch {
	case a >= ECDSAWithSHA256 && a <= ECDSAWithSHA512:
		return spec.isEC()
	case a >= RSAPKCS1v15WithSHA256 && a <= RSAPSSWithSHA512:
		return spec.isRSA()
	case a == Ed25519Pure:
		return spec == Ed25519
	}
	return false
}

func (p *Pool) signSupported(a SignAlgorithm) (bool, string) {
	switch {
	case a >= ECDSAWithSHA256 && a <= ECDSAWithSHA512:
		return p.caps.ECDSA, "CKM_ECDSA"
	case a >= RSAPKCS1v15WithSHA256 && a <= RSAPKCS1v15WithSHA512:
		return p.caps.RSAPKCS1, "CKM_RSA_PKCS"
	case a >= RSAPSSWithSHA256 && a <= RSAPSSWithSHA512:
		return p.caps.RSAPSS, "CKM_RSA_PKCS_PSS"
	}
	return p.caps.EdDSA, "CKM_EDDSA"
}

// mechanism returns the PKCS#11 mechanism and the bytes to sign for a
// digest (the message for Ed25519Pure).
func (a SignAlgorithm) mechanism(digest []byte) (*pkcs11.Mechanism, []byte) {
	switch {
	case a >= ECDSAWithSHA256 && a <= ECDSAWithSHA512:
		return pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil), digest
	case a >= RSAPKCS1v15WithSHA256 && a <= RSAPKCS1v15WithSHA512:
		prefix := digestInfoPrefix[a.Hash()]
		in := make([]byte, 0, len(prefix)+len(digest))
		return pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS, nil), append(append(in, prefix...), digest...)
	case a >= RSAPSSWithSHA256 && a <= RSAPSSWithSHA512:
		h := a.Hash()
		return pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_PSS, pkcs11.NewPSSParams(hashMech[h], mgfMech[h], uint(h.Size()))), digest
	}
	return pkcs11.NewMechanism(ckmEdDSA, nil), digest
}

var (
	// DER DigestInfo prefixes of RFC 8017 section 9.2, note 1.
	digestInfoPrefix = map[crypto.Hash][]byte{
		crypto.SHA256: {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20},
		crypto.SHA384: {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30},
		crypto.SHA512: {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40},
	}
	hashMech = map[crypto.Hash]uint{crypto.SHA1: pkcs11.CKM_SHA_1, crypto.SHA256: pkcs11.CKM_SHA256, crypto.SHA384: pkcs11.CKM_SHA384, crypto.SHA512: pkcs11.CKM_SHA512}
	mgfMech  = map[crypto.Hash]uint{crypto.SHA1: pkcs11.CKG_MGF1_SHA1, crypto.SHA256: pkcs11.CKG_MGF1_SHA256, crypto.SHA384: pkcs11.CKG_MGF1_SHA384, crypto.SHA512: pkcs11.CKG_MGF1_SHA512}
)

func (p *Pool) signCheck(k *Key, a SignAlgorithm, what string) error {
	if !a.fits(k.blob.Spec) {
		return &Error{Op: what, Key: k.ID, Err: fmt.Errorf("%w: algorithm %d does not fit a %s key", ErrInvalidInput, a, k.blob.Spec)}
	}
	ok, mech := p.signSupported(a)
	return p.check(k, 0, UsageSign, ok, mech, what)
}

// digestOf hashes msg for a, or returns msg itself for Ed25519Pure.
func digestOf(a SignAlgorithm, msg []byte) []byte {
	h := a.Hash()
	if h == 0 {
		return msg
	}
	d := h.New()
	d.Write(msg)
	return d.Sum(nil)
}

// SignMessage signs msg: hashed in Go, then signed in the HSM (modules such
// as SoftHSM lack the combined hash-and-sign mechanisms). ECDSA signatures
// are returned DER-encoded, as X.509 and AWS KMS expect.
func (p *Pool) SignMessage(ctx context.Context, k *Key, a SignAlgorithm, msg []byte) ([]byte, error) {
	return p.SignDigest(ctx, k, a, digestOf(a, msg))
}

// SignDigest signs a digest computed by the caller with a.Hash(). For
// Ed25519Pure, which has no digest form, pass the message.
func (p *Pool) SignDigest(ctx context.Context, k *Key, a SignAlgorithm, digest []byte) ([]byte, error) {
	if err := p.signCheck(k, a, "sign"); err != nil {
		return nil, err
	}
	if h := a.Hash(); h != 0 && len(digest) != h.Size() {
		return nil, &Error{Op: "sign", Key: k.ID, Err: fmt.Errorf("%w: digest of %d bytes, want %d", ErrInvalidInput, len(digest), h.Size())}
	}
	mech, input := a.mechanism(digest)
	sig, err := useKey(p, ctx, k, false, opOther, "sign", func(ck Cryptoki, h pkcs11.SessionHandle, obj pkcs11.ObjectHandle) ([]byte, error) {
		if err := ck.SignInit(h, []*pkcs11.Mechanism{mech}, obj); err != nil {
			return nil, err
		}
		return ck.Sign(h, input)
	})
	if err != nil {
		return nil, err
	}
	if a.Hash() != 0 && k.blob.Spec.isEC() {
		return ecdsaRawToDER(sig)
	}
	return sig, nil
}

// VerifyMessage verifies a signature over msg inside the HSM.
func (p *Pool) VerifyMessage(ctx context.Context, k *Key, a SignAlgorithm, msg, sig []byte) error {
	return p.VerifyDigest(ctx, k, a, digestOf(a, msg), sig)
}

// VerifyDigest verifies a signature over a digest inside the HSM, with the
// key's public half. A signature that does not verify gives
// ErrInvalidSignature.
func (p *Pool) VerifyDigest(ctx context.Context, k *Key, a SignAlgorithm, digest, sig []byte) error {
	if err := p.signCheck(k, a, "verify"); err != nil {
		return err
	}
	if h := a.Hash(); h != 0 && len(digest) != h.Size() {
		return &Error{Op: "verify", Key: k.ID, Err: fmt.Errorf("%w: digest of %d bytes, want %d", ErrInvalidInput, len(digest), h.Size())}
	}
	if k.blob.Spec.isEC() {
		raw, err := ecdsaDERToRaw(sig, k.public.(*ecdsa.PublicKey).Curve.Params().BitSize)
		if err != nil {
			return &Error{Op: "verify", Key: k.ID, Err: fmt.Errorf("%w: %v", ErrInvalidSignature, err)}
		}
		sig = raw
	}
	mech, input := a.mechanism(digest)
	_, err := useKey(p, ctx, k, true, opVerify, "verify", func(ck Cryptoki, h pkcs11.SessionHandle, obj pkcs11.ObjectHandle) (struct{}, error) {
		if err := ck.VerifyInit(h, []*pkcs11.Mechanism{mech}, obj); err != nil {
			return struct{}{}, err
		}
		return struct{}{}, ck.Verify(h, input, sig)
	})
	return err
}

type ecdsaSignature struct{ R, S *big.Int }

func ecdsaRawToDER(raw []byte) ([]byte, error) {
	if len(raw) == 0 || len(raw)%2 != 0 {
		return nil, &Error{Op: "sign", Class: ClassDevice, Err: fmt.Errorf("%w: ECDSA signature of %d bytes", ErrUnavailable, len(raw))}
	}
	n := len(raw) / 2
	return asn1.Marshal(ecdsaSignature{new(big.Int).SetBytes(raw[:n]), new(big.Int).SetBytes(raw[n:])})
}

func ecdsaDERToRaw(der []byte, bits int) ([]byte, error) {
	var sig ecdsaSignature
	rest, err := asn1.Unmarshal(der, &sig)
	if err != nil || len(rest) != 0 {
		return nil, errors.New("malformed DER ECDSA signature")
	}
	size := (bits + 7) / 8
	if sig.R == nil || sig.S == nil || sig.R.Sign() <= 0 || sig.S.Sign() <= 0 || sig.R.BitLen() > bits || sig.S.BitLen() > bits {
		return nil, errors.New("ECDSA signature values out of range")
	}
	raw := make([]byte, 2*size)
	sig.R.FillBytes(raw[:size])
	sig.S.FillBytes(raw[size:])
	return raw, nil
}

// GenerateMAC computes the HMAC of msg with an HMAC key, with the hash its
// spec names (HMAC-256 uses SHA-256, and so on).
func (p *Pool) GenerateMAC(ctx context.Context, k *Key, msg []byte) ([]byte, error) {
	if err := p.check(k, 0, UsageMAC, p.caps.HMAC[k.blob.Spec], mechanismNames[hmacMechanism(k.blob.Spec)], "generate MAC"); err != nil {
		return nil, err
	}
	mech := pkcs11.NewMechanism(hmacMechanism(k.blob.Spec), nil)
	return useKey(p, ctx, k, false, opOther, "generate MAC", func(ck Cryptoki, h pkcs11.SessionHandle, obj pkcs11.ObjectHandle) ([]byte, error) {
		if err := ck.SignInit(h, []*pkcs11.Mechanism{mech}, obj); err != nil {
			return nil, err
		}
		return ck.Sign(h, msg)
	})
}

// VerifyMAC checks mac over msg inside the HSM; a mismatch gives
// ErrInvalidMAC.
func (p *Pool) VerifyMAC(ctx context.Context, k *Key, msg, mac []byte) error {
	if err := p.check(k, 0, UsageMAC, p.caps.HMAC[k.blob.Spec], mechanismNames[hmacMechanism(k.blob.Spec)], "verify MAC"); err != nil {
		return err
	}
	if len(mac) != k.blob.Spec.hmacKeyLen() {
		return &Error{Op: "verify MAC", Key: k.ID, Err: fmt.Errorf("%w: MAC of %d bytes", ErrInvalidMAC, len(mac))}
	}
	mech := pkcs11.NewMechanism(hmacMechanism(k.blob.Spec), nil)
	_, err := useKey(p, ctx, k, false, opVerifyMAC, "verify MAC", func(ck Cryptoki, h pkcs11.SessionHandle, obj pkcs11.ObjectHandle) (struct{}, error) {
		if err := ck.VerifyInit(h, []*pkcs11.Mechanism{mech}, obj); err != nil {
			return struct{}{}, err
		}
		return struct{}{}, ck.Verify(h, msg, mac)
	})
	return err
}

func (p *Pool) oaepCheck(k *Key, hash crypto.Hash, what string) error {
	var ok bool
	switch hash {
	case crypto.SHA1:
		ok = p.caps.OAEPSHA1
	case crypto.SHA256:
		ok = p.caps.OAEPSHA256
	default:
		return &Error{Op: what, Key: k.ID, Class: ClassUnsupported, Err: fmt.Errorf("%w: RSA-OAEP with %v", ErrUnsupported, hash)}
	}
	return p.check(k, 0, UsageEncrypt, ok && k.blob.Spec.isRSA(), fmt.Sprintf("CKM_RSA_PKCS_OAEP with %v", hash), what)
}

// EncryptOAEP encrypts with an RSA key's public half in RSA-OAEP (MGF1 with
// the same hash, no label), inside the HSM.
func (p *Pool) EncryptOAEP(ctx context.Context, k *Key, hash crypto.Hash, plaintext []byte) ([]byte, error) {
	if err := p.oaepCheck(k, hash, "encrypt"); err != nil {
		return nil, err
	}
	if max := k.public.(*rsa.PublicKey).Size() - 2*hash.Size() - 2; len(plaintext) > max {
		return nil, &Error{Op: "encrypt", Key: k.ID, Err: fmt.Errorf("%w: plaintext of %d bytes, at most %d", ErrInvalidInput, len(plaintext), max)}
	}
	return useKey(p, ctx, k, true, opOther, "encrypt", func(ck Cryptoki, h pkcs11.SessionHandle, obj pkcs11.ObjectHandle) ([]byte, error) {
		if err := ck.EncryptInit(h, []*pkcs11.Mechanism{oaepMechanism(hashMech[hash])}, obj); err != nil {
			return nil, err
		}
		return ck.Encrypt(h, plaintext)
	})
}

// DecryptOAEP decrypts an RSA-OAEP ciphertext inside the HSM.
func (p *Pool) DecryptOAEP(ctx context.Context, k *Key, hash crypto.Hash, ciphertext []byte) ([]byte, error) {
	if err := p.oaepCheck(k, hash, "decrypt"); err != nil {
		return nil, err
	}
	if len(ciphertext) != k.public.(*rsa.PublicKey).Size() {
		return nil, &Error{Op: "decrypt", Key: k.ID, Err: fmt.Errorf("%w: RSA ciphertext of %d bytes", ErrInvalidCiphertext, len(ciphertext))}
	}
	return useKey(p, ctx, k, false, opDecrypt, "decrypt", func(ck Cryptoki, h pkcs11.SessionHandle, obj pkcs11.ObjectHandle) ([]byte, error) {
		if err := ck.DecryptInit(h, []*pkcs11.Mechanism{oaepMechanism(hashMech[hash])}, obj); err != nil {
			return nil, err
		}
		return ck.Decrypt(h, ciphertext)
	})
}

// DeriveSharedSecret runs ECDH (CKM_ECDH1_DERIVE, no KDF) between an EC key
// for key agreement and a peer's public key (DER SubjectPublicKeyInfo on the
// same curve), and returns the raw shared secret, as AWS KMS's
// DeriveSharedSecret does.
func (p *Pool) DeriveSharedSecret(ctx context.Context, k *Key, peerPublic []byte) ([]byte, error) {
	if err := p.check(k, 0, UsageDerive, p.caps.ECDH && k.blob.Spec.isEC(), "CKM_ECDH1_DERIVE", "derive shared secret"); err != nil {
		return nil, err
	}
	peer, err := ParsePublicKey(k.blob.Spec, peerPublic)
	if err != nil {
		return nil, &Error{Op: "derive shared secret", Key: k.ID, Err: err}
	}
	ek, err := peer.(*ecdsa.PublicKey).ECDH()
	if err != nil {
		return nil, &Error{Op: "derive shared secret", Key: k.ID, Err: fmt.Errorf("%w: %v", ErrInvalidInput, err)}
	}
	params := pkcs11.NewECDH1DeriveParams(pkcs11.CKD_NULL, nil, ek.Bytes())
	return useKey(p, ctx, k, false, opOther, "derive shared secret", func(ck Cryptoki, h pkcs11.SessionHandle, obj pkcs11.ObjectHandle) ([]byte, error) {
		// The derived secret is the operation's output, so it is created
		// extractable and not sensitive, read once and destroyed.
		out, err := ck.DeriveKey(h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDH1_DERIVE, params)}, obj, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, false),
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
		})
		if err != nil {
			return nil, err
		}
		defer ck.DestroyObject(h, out)
		attrs, err := ck.GetAttributeValue(h, out, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
		if err != nil {
			return nil, err
		}
		return attrs[0].Value, nil
	})
}

// Random returns n bytes from a slot's random number generator.
func (p *Pool) Random(ctx context.Context, n int) ([]byte, error) {
	if n < 1 || n > 1024 {
		return nil, &Error{Op: "random", Err: fmt.Errorf("%w: %d bytes (1 to 1024)", ErrInvalidInput, n)}
	}
	var out []byte
	err := p.do(ctx, "random", p.opts.OpTimeout, func(s *slot, deadline time.Time) *Error {
		var r []byte
		e := s.run(deadline, opOther, "random", func(h pkcs11.SessionHandle) (err error) {
			r, err = s.mod.ck.GenerateRandom(h, n)
			return err
		})
		if e == nil {
			out = r
		}
		return e
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
