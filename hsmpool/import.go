package hsmpool

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strings"
	"sync"

	"github.com/hsmgate/hsmgate/internal/kwp"
	"github.com/miekg/pkcs11"
)

// ImportAlgorithm is how key material brought for import (BYOK) is wrapped
// to the public half of a wrapping key pair (UsageImportWrap). The names
// are AWS KMS's wrapping algorithms.
type ImportAlgorithm uint8

const (
	// RSAESOAEPSHA1: the material itself, RSA-OAEP-encrypted with SHA-1 and
	// MGF1-SHA-1, no label (CKM_RSA_PKCS_OAEP).
	RSAESOAEPSHA1 ImportAlgorithm = iota + 1
	// RSAESOAEPSHA256: as RSAESOAEPSHA1 with SHA-256 and MGF1-SHA-256.
	RSAESOAEPSHA256
	// RSAAESKeyWrapSHA1: a fresh 256-bit AES key RSA-OAEP-encrypted (SHA-1)
	// followed by the material wrapped under that AES key with AES key
	// wrap with padding (RFC 5649): CKM_RSA_AES_KEY_WRAP.
	RSAAESKeyWrapSHA1
	// RSAAESKeyWrapSHA256: as RSAAESKeyWrapSHA1 with SHA-256.
	RSAAESKeyWrapSHA256
)

var importAlgorithms = []ImportAlgorithm{RSAESOAEPSHA1, RSAESOAEPSHA256, RSAAESKeyWrapSHA1, RSAAESKeyWrapSHA256}

var importAlgorithmNames = map[ImportAlgorithm]string{
	RSAESOAEPSHA1: "RSAES_OAEP_SHA_1", RSAESOAEPSHA256: "RSAES_OAEP_SHA_256",
	RSAAESKeyWrapSHA1: "RSA_AES_KEY_WRAP_SHA_1", RSAAESKeyWrapSHA256: "RSA_AES_KEY_WRAP_SHA_256",
}

// String returns AWS's name of the algorithm.
func (a ImportAlgorithm) String() string {
	if s, ok := importAlgorithmNames[a]; ok {
		return s
	}
	return fmt.Sprintf("ImportAlgorithm(%d)", uint8(a))
}

// ParseImportAlgorithm parses AWS's name of a wrapping algorithm.
func ParseImportAlgorithm(s string) (ImportAlgorithm, bool) {
	for a, name := range importAlgorithmNames {
		if name == s {
			return a, true
		}
	}
	return 0, false
}

func (a ImportAlgorithm) valid() bool { _, ok := importAlgorithmNames[a]; return ok }

// keyWrap reports whether a is one of the RSA-AES (two-layer) algorithms.
func (a ImportAlgorithm) keyWrap() bool { return a == RSAAESKeyWrapSHA1 || a == RSAAESKeyWrapSHA256 }

func (a ImportAlgorithm) hash() crypto.Hash {
	if a == RSAESOAEPSHA256 || a == RSAAESKeyWrapSHA256 {
		return crypto.SHA256
	}
	return crypto.SHA1
}

func (a ImportAlgorithm) mechanismType() uint {
	if a.keyWrap() {
		return pkcs11.CKM_RSA_AES_KEY_WRAP
	}
	return pkcs11.CKM_RSA_PKCS_OAEP
}

// mechanism returns the PKCS#11 mechanism that unwraps material wrapped
// with a. CK_RSA_AES_KEY_WRAP_PARAMS holds a pointer to the OAEP
// parameters; miekg/pkcs11 (v1.1.2) builds both structures in C memory for
// the duration of each call (its RSAAESKeyWrapParams), so no Go pointer
// reaches the module.
func (a ImportAlgorithm) mechanism() *pkcs11.Mechanism {
	h := a.hash()
	if !a.keyWrap() {
		return oaepMechanism(hashMech[h])
	}
	return pkcs11.NewMechanism(pkcs11.CKM_RSA_AES_KEY_WRAP, &pkcs11.RSAAESKeyWrapParams{
		AESKeyBits: 256,
		OAEPParams: pkcs11.OAEPParams{HashAlg: hashMech[h], MGF: mgfMech[h], SourceType: pkcs11.CKZ_DATA_SPECIFIED},
	})
}

// lack says what a module that failed a's probe lacks.
func (a ImportAlgorithm) lack(m *Mechanisms, private bool) string {
	name := mechanismNames[a.mechanismType()]
	if !m.Has(a.mechanismType()) {
		return "lacks " + name
	}
	what := "unwrap"
	if private {
		what = "unwrap a PKCS#8 private key"
	}
	return fmt.Sprintf("cannot %s with %s using %s", what, name, a.hash())
}

// ImportSupport is what one import algorithm can bring in on a module.
type ImportSupport struct {
	Secret  bool // AES and HMAC key material
	Private bool // PKCS#8 private keys (EC, RSA, Ed25519)
}

func (s ImportSupport) suffix() string {
	switch {
	case s.Secret && s.Private:
		return ""
	case s.Private:
		return "(private keys only)"
	}
	return "(secret keys only)"
}

// SupportsImport reports whether key material of spec wrapped with alg can
// be imported, as far as the modules go. ImportKey also refuses an RSA
// private key with an RSAES_OAEP algorithm (it can't fit), as AWS does.
func (c Capabilities) SupportsImport(alg ImportAlgorithm, spec KeySpec) error {
	if !alg.valid() {
		return fmt.Errorf("unknown import algorithm %d", alg)
	}
	sup := c.Import[alg]
	switch {
	case spec.IsAsymmetric() && !sup.Private:
		return fmt.Errorf("module cannot unwrap PKCS#8 private keys wrapped with %s", alg)
	case !spec.IsAsymmetric() && !sup.Secret:
		return fmt.Errorf("module cannot unwrap key material wrapped with %s", alg)
	case spec == AES256 && !c.AESCMAC:
		return errors.New("module lacks CKM_AES_CMAC, which computes the check value of imported AES keys")
	}
	return nil
}

// importKeyLen is the length range, in bytes, of importable material of a
// secret key spec: AWS's (the digest size to the hash's block size for
// HMAC keys).
func importKeyLen(spec KeySpec) (lo, hi int) {
	switch spec {
	case AES256:
		return 32, 32
	case HMAC224, HMAC256:
		return spec.hmacKeyLen(), 64
	case HMAC384, HMAC512:
		return spec.hmacKeyLen(), 128
	}
	return 0, 0
}

// ImportKCVLen is the length of the check value ImportKey returns.
const ImportKCVLen = 16

// importKCVMessage is the fixed message whose CMAC or HMAC identifies
// imported secret material, and the prefix of the hash that makes the
// check value.
var importKCVMessage = []byte("hsmgate import key check value v1")

// importKCV makes a check value from prf: the CMAC or HMAC of
// importKCVMessage (secret keys), or the DER public key (key pairs).
// Hashing keeps a MAC of a fixed message from ever being shown as such.
func importKCV(prf []byte) []byte {
	h := sha256.New()
	h.Write(importKCVMessage)
	h.Write(prf)
	return h.Sum(nil)[:ImportKCVLen]
}

// ImportKey brings in key material wrapped (by the key's owner) with alg to
// the public half of wrapping, a key pair of UsageImportWrap made by
// GenerateKey. Inside one slot, the material is unwrapped with wrapping's
// private half into a sensitive session object with the attributes spec
// and usage need, checked (length, curve, modulus size, and for a private
// key that it matches its public key), wrapped under the domain key into
// the blob format GenerateKey makes (so NewKey and every operation take
// it), and destroyed. The plaintext material never leaves the HSM.
//
// Secret material is raw bytes: 32 for AES-256; for HMAC keys from the
// digest size up to the hash's block size (28 to 64 bytes for HMAC-224,
// 32 to 64 for HMAC-256, 48 to 128 for HMAC-384, 64 to 128 for HMAC-512),
// as AWS KMS accepts. Private keys are DER PKCS#8; an RSA key needs an
// RSA_AES_KEY_WRAP algorithm. On a module that does not report the length
// of unwrapped keys (SoftHSM), an HMAC key shorter than its minimum by
// less than 8 bytes can't be told apart and is accepted.
//
// The returned check value (ImportKCVLen bytes, computed inside the HSM
// for secret keys) identifies the material without revealing it, so that
// a re-import can be required to bring the same material:
//
//   - AES-256: SHA-256(M || AES-CMAC(K, M)), truncated to 16 bytes;
//   - HMAC: SHA-256(M || HMAC-SHA-x(K, M)) with the spec's hash, truncated;
//   - key pairs: SHA-256(M || DER SubjectPublicKeyInfo), truncated;
//
// where M is the ASCII string "hsmgate import key check value v1".
//
// Material that does not unwrap (another wrapping key or algorithm,
// corrupted) or is not a key of spec gives ErrInvalidImport: a data error,
// tried on one slot only and never held against it. An algorithm or spec
// the modules can't import gives ErrUnsupported naming the module and what
// it lacks.
func (p *Pool) ImportKey(ctx context.Context, wrapping *Key, alg ImportAlgorithm, wrapped []byte, spec KeySpec, usage Usage) (*GeneratedKey, []byte, error) {
	const what = "import key"
	invalid := func(err error, format string, args ...any) (*GeneratedKey, []byte, error) {
		e := &Error{Op: what, Class: ClassData, Err: fmt.Errorf("%w: "+format, append([]any{err}, args...)...)}
		if wrapping != nil {
			e.Key = wrapping.ID
		}
		return nil, nil, e
	}
	switch {
	case wrapping == nil:
		return invalid(ErrInvalidInput, "no wrapping key")
	case !wrapping.blob.Spec.isRSA() || wrapping.blob.Usage != UsageImportWrap:
		return invalid(ErrInvalidInput, "a %s key for %s is not an import wrapping key", wrapping.blob.Spec, wrapping.blob.Usage)
	case !alg.valid():
		return invalid(ErrInvalidInput, "unknown import algorithm %d", alg)
	case !spec.Valid() || usage == UsageImportWrap || !spec.allows(usage):
		return invalid(ErrInvalidInput, "%s keys can't be imported to %s", spec, usage)
	case spec.isRSA() && !alg.keyWrap():
		return invalid(ErrInvalidInput, "an RSA private key can't fit in %s: use RSA_AES_KEY_WRAP_SHA_1 or RSA_AES_KEY_WRAP_SHA_256", alg)
	}
	if err := p.caps.Supports(spec, usage); err != nil {
		return nil, nil, &Error{Op: what, Key: wrapping.ID, Class: ClassUnsupported, Err: fmt.Errorf("%w: %v", ErrUnsupported, err)}
	}
	if err := p.caps.SupportsImport(alg, spec); err != nil {
		return nil, nil, &Error{Op: what, Key: wrapping.ID, Class: ClassUnsupported, Err: fmt.Errorf("%w: %s", ErrUnsupported, p.importLack(alg, spec, err))}
	}
	size := wrapping.public.(*rsa.PublicKey).Size()
	if !alg.keyWrap() && len(wrapped) != size {
		return invalid(ErrInvalidImport, "%d bytes wrapped with %s under a %d-bit wrapping key; want %d", len(wrapped), alg, 8*size, size)
	}
	if n := len(wrapped) - size; alg.keyWrap() && (n < 16 || n%8 != 0 || n > maxWrappedLen+8) {
		return invalid(ErrInvalidImport, "%d bytes wrapped with %s under a %d-bit wrapping key: not an RSA-OAEP block followed by an RFC 5649 wrap", len(wrapped), alg, 8*size)
	}
	wrapped = bytes.Clone(wrapped) // an abandoned attempt may outlive the caller's buffer
	r, err := useKeyOn(p, ctx, wrapping, false, opImport, what, func(s *slot, ck Cryptoki, h pkcs11.SessionHandle, uk pkcs11.ObjectHandle) (importResult, error) {
		return s.importKey(ck, h, uk, alg, wrapped, spec, usage)
	})
	if err != nil {
		return nil, nil, err
	}
	return &r.gen, r.kcv, nil
}

type importResult struct {
	gen GeneratedKey
	kcv []byte
}

// importLack names, per module, what keeps alg from importing spec.
func (p *Pool) importLack(alg ImportAlgorithm, spec KeySpec, capErr error) string {
	var out []string
	seen := map[string]bool{}
	for _, s := range p.slots {
		m := s.mechs
		if m == nil {
			continue
		}
		sup := m.imports[alg]
		var lack string
		switch {
		case spec.IsAsymmetric() && !sup.Private:
			lack = alg.lack(m, true)
		case !spec.IsAsymmetric() && !sup.Secret:
			lack = alg.lack(m, false)
		case spec == AES256 && !m.Has(pkcs11.CKM_AES_CMAC):
			lack = "lacks CKM_AES_CMAC, which computes the check value of imported AES keys"
		default:
			continue
		}
		if msg := strings.TrimSpace(m.module + " " + lack); !seen[msg] {
			seen[msg] = true
			out = append(out, msg)
		}
	}
	if len(out) == 0 {
		return capErr.Error()
	}
	return strings.Join(out, "; ")
}

// importTemplate is the template of the transient copy of imported
// material: the usage's attributes, extractable so that it can be wrapped
// under the domain key, and able to sign: the check value of an AES key is
// a CMAC, and an imported private key proves with a signature that it
// matches its public key. A blob records no attributes: every copy
// unwrapped from it later gets only what the usage allows.
func importTemplate(spec KeySpec, usage Usage) []*pkcs11.Attribute {
	t := privateTemplate(spec, usage, true)
	for _, a := range t {
		if a.Type == pkcs11.CKA_SIGN {
			*a = *pkcs11.NewAttribute(pkcs11.CKA_SIGN, true)
			return t
		}
	}
	return append(t, pkcs11.NewAttribute(pkcs11.CKA_SIGN, true))
}

// importKey runs on one operation session of s: unwrap, check, wrap under
// the domain key, check value. Checks that fail return ClassData errors;
// raw PKCS#11 errors are classified with opImport.
func (s *slot) importKey(ck Cryptoki, h pkcs11.SessionHandle, uk pkcs11.ObjectHandle, alg ImportAlgorithm, wrapped []byte, spec KeySpec, usage Usage) (importResult, error) {
	var res importResult
	bad := func(rv uint, format string, args ...any) error {
		return &Error{Op: "import key", Slot: s.name, RV: rv, Class: ClassData, Err: fmt.Errorf("%w: "+format, append([]any{ErrInvalidImport}, args...)...)}
	}
	c, dkKCV := s.ctl.Load(), s.kcv.Load()
	if c == nil || dkKCV == nil {
		return res, &Error{Op: "import key", Slot: s.name, Class: ClassSession, Err: ErrUnavailable}
	}
	obj, err := ck.UnwrapKey(h, []*pkcs11.Mechanism{alg.mechanism()}, uk, wrapped, importTemplate(spec, usage))
	if err != nil {
		rv := rvOf(err)
		if class, _ := classify(rv, opImport); class == ClassData {
			return res, bad(rv, "it does not unwrap as %s key material with %s under this wrapping key (another wrapping key or algorithm, or corrupted)", spec, alg)
		}
		return res, err
	}
	defer ck.DestroyObject(h, obj)
	blob, err := ck.WrapKey(h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP_PAD, nil)}, c.dk, obj)
	if err != nil {
		return res, err
	}
	var prf []byte
	if spec.IsAsymmetric() {
		pub, perr := s.importedPublic(ck, h, obj, spec, bad)
		if perr != nil {
			return res, perr
		}
		if res.gen.Public, err = x509.MarshalPKIXPublicKey(pub); err != nil {
			return res, bad(0, "public key: %v", err)
		}
		prf = res.gen.Public
	} else {
		if err := secretLenOK(spec, valueLen(ck, h, obj), len(blob)); err != nil {
			return res, bad(0, "%v", err)
		}
		mech := pkcs11.NewMechanism(pkcs11.CKM_AES_CMAC, nil)
		if spec.isHMAC() {
			mech = pkcs11.NewMechanism(hmacMechanism(spec), nil)
		}
		if err = ck.SignInit(h, []*pkcs11.Mechanism{mech}, obj); err == nil {
			prf, err = ck.Sign(h, importKCVMessage)
		}
		if err != nil {
			if class, _ := classify(rvOf(err), opImport); spec == AES256 && (class == ClassData || class == ClassUnsupported) {
				// The pool checked that the module has CKM_AES_CMAC: the
				// material is no AES key (SoftHSM takes 25 to 31 bytes as
				// one and refuses to use it).
				return res, bad(rvOf(err), "not a 32-byte AES key")
			}
			return res, err
		}
		defer clear(prf)
	}
	res.kcv = importKCV(prf)
	res.gen.Blob = (&Blob{Spec: spec, Usage: usage, KCV: *dkKCV, Wrapped: blob}).Marshal()
	return res, nil
}

// valueLen reads CKA_VALUE_LEN of a secret key, 0 when the module does not
// say (SoftHSM 2.6 reports 0 for unwrapped keys).
func valueLen(ck Cryptoki, h pkcs11.SessionHandle, obj pkcs11.ObjectHandle) int {
	a, err := ck.GetAttributeValue(h, obj, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, nil)})
	if err != nil || len(a) != 1 {
		return 0
	}
	var n uint64
	switch v := a[0].Value; len(v) {
	case 8:
		n = binary.NativeEndian.Uint64(v)
	case 4:
		n = uint64(binary.NativeEndian.Uint32(v))
	}
	if n > math.MaxInt32 {
		return 0
	}
	return int(n)
}

// secretLenOK checks the length of imported secret material: exactly when
// the module reports it (valueLen > 0), else from the length of its RFC
// 5649 wrap under the domain key, which fixes it to within 8 bytes.
func secretLenOK(spec KeySpec, valueLen, wrappedLen int) error {
	lo, hi := importKeyLen(spec)
	takes := fmt.Sprintf("%s takes %d to %d bytes", spec, lo, hi)
	if lo == hi {
		takes = fmt.Sprintf("%s takes %d bytes", spec, lo)
	}
	if valueLen > 0 {
		if valueLen < lo || valueLen > hi {
			return fmt.Errorf("%d bytes of key material; %s", valueLen, takes)
		}
		return nil
	}
	padded := wrappedLen - 8
	if padded < 8 || padded%8 != 0 {
		return fmt.Errorf("key material wraps to %d bytes", wrappedLen)
	}
	if padded < lo || padded-7 > hi {
		return fmt.Errorf("%d to %d bytes of key material; %s", padded-7, padded, takes)
	}
	return nil
}

// attribute reads one attribute, nil when the object has none or the
// module refuses.
func attribute(ck Cryptoki, h pkcs11.SessionHandle, obj pkcs11.ObjectHandle, t uint) []byte {
	a, err := ck.GetAttributeValue(h, obj, []*pkcs11.Attribute{pkcs11.NewAttribute(t, nil)})
	if err != nil || len(a) != 1 {
		return nil
	}
	return a[0].Value
}

// edwards25519 as a DER PrintableString, the other CKA_EC_PARAMS form of
// PKCS#11 3.0 for Ed25519.
var ed25519Name = []byte("\x13\x0cedwards25519")

// importedPublic finds the public key of an imported private key and
// checks, where the module can sign, that the two match.
func (s *slot) importedPublic(ck Cryptoki, h pkcs11.SessionHandle, obj pkcs11.ObjectHandle, spec KeySpec, bad func(uint, string, ...any) error) (crypto.PublicKey, error) {
	unsupported := func(format string, args ...any) error {
		return &Error{Op: "import key", Slot: s.name, Class: ClassUnsupported, Err: fmt.Errorf("%w: %s "+format, append([]any{ErrUnsupported, s.mechs.module}, args...)...)}
	}
	sign := func(mech uint, digest []byte) ([]byte, error) {
		if err := ck.SignInit(h, []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)}, obj); err != nil {
			return nil, err
		}
		return ck.Sign(h, digest)
	}
	// What the module may say of the public half (PKCS#11 2.40 lets a
	// private key carry its SubjectPublicKeyInfo; SoftHSM leaves it empty).
	var pub crypto.PublicKey
	if der := attribute(ck, h, obj, pkcs11.CKA_PUBLIC_KEY_INFO); len(der) > 0 {
		pub, _ = ParsePublicKey(spec, der)
	}
	switch {
	case spec.isRSA():
		n, e := attribute(ck, h, obj, pkcs11.CKA_MODULUS), attribute(ck, h, obj, pkcs11.CKA_PUBLIC_EXPONENT)
		if len(e) == 0 || len(e) > 4 {
			return nil, bad(0, "RSA key without a usable public exponent")
		}
		k := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		if k.N.BitLen() != spec.rsaBits() {
			return nil, bad(0, "a %d-bit RSA key, not %s", k.N.BitLen(), spec)
		}
		if k.E < 3 || k.E%2 == 0 {
			return nil, bad(0, "RSA public exponent %d", k.E)
		}
		if s.mechs.Has(pkcs11.CKM_RSA_PKCS) {
			digest := sha256.Sum256(importKCVMessage)
			in := append(append([]byte(nil), digestInfoPrefix[crypto.SHA256]...), digest[:]...)
			sig, err := sign(pkcs11.CKM_RSA_PKCS, in)
			if err != nil {
				return nil, err
			}
			if rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], sig) != nil {
				return nil, bad(0, "the RSA private key does not match its public key")
			}
		}
		return k, nil

	case spec.isEC():
		if params := attribute(ck, h, obj, pkcs11.CKA_EC_PARAMS); !bytes.Equal(params, spec.ecParams()) {
			return nil, bad(0, "an EC key on another curve than %s's", spec)
		}
		if pub == nil {
			if point, err := ecPoint(attribute(ck, h, obj, pkcs11.CKA_EC_POINT)); err == nil {
				pub, _ = ecdsaPublicFromPoint(spec, point)
			}
		}
		if !s.mechs.Has(pkcs11.CKM_ECDSA) {
			if pub == nil {
				return nil, unsupported("neither shows the public key of an imported EC key nor signs with CKM_ECDSA to recover it")
			}
			return pub, nil
		}
		// Two signatures over fixed digests: they give the public key when
		// the module does not (ECDSA public key recovery), and prove that
		// the private key matches it.
		curve := spec.curve()
		size := (curve.Params().BitSize + 7) / 8
		var digests, sigs [2][]byte
		for i := range digests {
			d := sha512.Sum512(append(importKCVMessage, byte(i)))
			digests[i] = d[:min(size, len(d))]
			raw, err := sign(pkcs11.CKM_ECDSA, digests[i])
			if err != nil {
				return nil, err
			}
			if len(raw) != 2*size {
				return nil, &Error{Op: "import key", Slot: s.name, Class: ClassDevice, Err: fmt.Errorf("%w: ECDSA signature of %d bytes", ErrUnavailable, len(raw))}
			}
			sigs[i] = raw
		}
		verifies := func(k *ecdsa.PublicKey) bool {
			for i := range sigs {
				r, ss := new(big.Int).SetBytes(sigs[i][:size]), new(big.Int).SetBytes(sigs[i][size:])
				if !ecdsa.Verify(k, digests[i], r, ss) {
					return false
				}
			}
			return true
		}
		if pub != nil {
			if !verifies(pub.(*ecdsa.PublicKey)) {
				return nil, bad(0, "the EC private key does not match its public key")
			}
			return pub, nil
		}
		for _, k := range recoverECDSAPublic(curve, digests[0], sigs[0]) {
			if verifies(k) {
				// Through the checked decoder, as NewKey will.
				point := make([]byte, 1+2*size)
				point[0] = 4 // uncompressed
				k.X.FillBytes(point[1 : 1+size])
				k.Y.FillBytes(point[1+size:])
				return ecdsaPublicFromPoint(spec, point)
			}
		}
		return nil, bad(0, "no public key matches the EC private key's signatures")

	case spec == Ed25519:
		if params := attribute(ck, h, obj, pkcs11.CKA_EC_PARAMS); !bytes.Equal(params, oidEd25519) && !bytes.Equal(params, ed25519Name) {
			return nil, bad(0, "not an Ed25519 key")
		}
		if pub == nil {
			if point, err := ecPoint(attribute(ck, h, obj, pkcs11.CKA_EC_POINT)); err == nil && len(point) == ed25519.PublicKeySize {
				pub = ed25519.PublicKey(point)
			}
		}
		if pub == nil {
			return nil, unsupported("does not show the public key of an imported Ed25519 key")
		}
		if s.mechs.Has(ckmEdDSA) {
			sig, err := sign(ckmEdDSA, importKCVMessage)
			if err != nil {
				return nil, err
			}
			if !ed25519.Verify(pub.(ed25519.PublicKey), importKCVMessage, sig) {
				return nil, bad(0, "the Ed25519 private key does not match its public key")
			}
		}
		return pub, nil
	}
	return nil, bad(0, "%s keys can't be imported", spec)
}

// recoverECDSAPublic returns the public keys for which sig (raw r || s) is
// a valid signature of digest (SEC 1 v2, 4.1.6). All arithmetic is on
// public values.
func recoverECDSAPublic(curve elliptic.Curve, digest, sig []byte) []*ecdsa.PublicKey {
	params := curve.Params()
	size := len(sig) / 2
	r, s := new(big.Int).SetBytes(sig[:size]), new(big.Int).SetBytes(sig[size:])
	n, p := params.N, params.P
	if r.Sign() <= 0 || s.Sign() <= 0 || r.Cmp(n) >= 0 || s.Cmp(n) >= 0 {
		return nil
	}
	e := hashToInt(digest, n)
	rInv := new(big.Int).ModInverse(r, n)
	if rInv == nil {
		return nil
	}
	// -e·G
	negE := new(big.Int).Sub(n, e)
	negE.Mod(negE, n)
	var out []*ecdsa.PublicKey
	for _, x := range []*big.Int{r, new(big.Int).Add(r, n)} {
		if x.Cmp(p) >= 0 {
			continue
		}
		// y² = x³ - 3x + b
		y2 := new(big.Int).Exp(x, big.NewInt(3), p)
		y2.Sub(y2, new(big.Int).Mul(big.NewInt(3), x))
		y2.Add(y2, params.B)
		y2.Mod(y2, p)
		y := new(big.Int).ModSqrt(y2, p)
		if y == nil {
			continue
		}
		for _, ry := range []*big.Int{y, new(big.Int).Sub(p, y)} {
			// Q = r⁻¹(s·R - e·G), with the generic (deprecated but
			// exact) point arithmetic of crypto/elliptic.
			if !curve.IsOnCurve(x, ry) {
				continue
			}
			sx, sy := curve.ScalarMult(x, ry, s.Bytes())
			ex, ey := curve.ScalarBaseMult(negE.Bytes())
			tx, ty := curve.Add(sx, sy, ex, ey)
			if tx.Sign() == 0 && ty.Sign() == 0 {
				continue // the point at infinity
			}
			qx, qy := curve.ScalarMult(tx, ty, rInv.Bytes())
			if (qx.Sign() == 0 && qy.Sign() == 0) || !curve.IsOnCurve(qx, qy) {
				continue
			}
			out = append(out, &ecdsa.PublicKey{Curve: curve, X: qx, Y: qy})
		}
	}
	return out
}

// hashToInt converts a digest to an integer as ECDSA does: its leftmost
// bits, as many as the group order has.
func hashToInt(digest []byte, n *big.Int) *big.Int {
	bits := n.BitLen()
	if size := (bits + 7) / 8; len(digest) > size {
		digest = digest[:size]
	}
	e := new(big.Int).SetBytes(digest)
	if excess := len(digest)*8 - bits; excess > 0 {
		e.Rsh(e, uint(excess))
	}
	return e
}

// WrapKeyMaterial wraps key material to a wrapping public key with alg, as
// an AWS KMS client does before ImportKeyMaterial (for an RSA_AES
// algorithm: a fresh 256-bit AES key, RSA-OAEP-encrypted, followed by the
// material wrapped under it with RFC 5649). It is for tests and tools that
// stand in for the key's owner; the gateway itself never holds plaintext
// key material.
func WrapKeyMaterial(pub *rsa.PublicKey, alg ImportAlgorithm, material []byte) ([]byte, error) {
	if !alg.valid() {
		return nil, fmt.Errorf("hsmpool: unknown import algorithm %d", alg)
	}
	if len(material) == 0 {
		return nil, errors.New("hsmpool: no key material")
	}
	h := alg.hash().New()
	if !alg.keyWrap() {
		return rsa.EncryptOAEP(h, rand.Reader, pub, material, nil)
	}
	kek := make([]byte, 32)
	defer clear(kek)
	if _, err := rand.Read(kek); err != nil {
		return nil, err
	}
	head, err := rsa.EncryptOAEP(h, rand.Reader, pub, kek, nil)
	if err != nil {
		return nil, err
	}
	tail, err := aesKeyWrapPad(kek, material)
	if err != nil {
		return nil, err
	}
	return append(head, tail...), nil
}

// aesKeyWrapPad is AES key wrap with padding (RFC 5649).
func aesKeyWrapPad(kek, plaintext []byte) ([]byte, error) { return kwp.Wrap(kek, plaintext) }

// probeMaterial is the throwaway, public test material of the import
// probes, made once per process: an RSA-2048 key to unwrap with, a
// random 32-byte secret and an EC P-256 key in PKCS#8.
var probeMaterial = sync.OnceValues(func() (*importProbeMaterial, error) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	p8, err := x509.MarshalPKCS8PrivateKey(ek)
	if err != nil {
		return nil, err
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	return &importProbeMaterial{rsa: rk, ec: ek, p8: p8, secret: secret}, nil
})

type importProbeMaterial struct {
	rsa    *rsa.PrivateKey
	ec     *ecdsa.PrivateKey
	p8     []byte
	secret []byte
}

// probeImport finds which import algorithms the module can really do, by
// unwrapping test material wrapped in Go as a client would (WrapKeyMaterial)
// and checking that what the module made is that material: a secret key
// (read back: the probe's secret is public) and an EC private key in PKCS#8
// (which must sign verifiably). Everything is a session object of h,
// destroyed before it returns.
func probeImport(ck Cryptoki, h pkcs11.SessionHandle, m *Mechanisms) map[ImportAlgorithm]ImportSupport {
	out := map[ImportAlgorithm]ImportSupport{}
	var algs []ImportAlgorithm
	for _, a := range importAlgorithms {
		if m.Has(a.mechanismType()) {
			algs = append(algs, a)
		}
	}
	if len(algs) == 0 {
		return out
	}
	mat, err := probeMaterial()
	if err != nil {
		return out
	}
	uk, pub, err := probeUnwrapKey(ck, h, m, mat.rsa)
	if err != nil {
		return out
	}
	defer ck.DestroyObject(h, uk)
	for _, a := range algs {
		out[a] = ImportSupport{
			Secret:  probeImportSecret(ck, h, uk, pub, a, mat.secret),
			Private: probeImportPrivate(ck, h, m, uk, pub, a, mat),
		}
	}
	return out
}

// probeUnwrapKey makes the probes' RSA unwrapping key: the process's test
// key as a session object, or, where the module refuses to create private
// keys from their values, a generated one.
func probeUnwrapKey(ck Cryptoki, h pkcs11.SessionHandle, m *Mechanisms, rk *rsa.PrivateKey) (pkcs11.ObjectHandle, *rsa.PublicKey, error) {
	uk, err := ck.CreateObject(h, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, true),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_MODULUS, rk.N.Bytes()),
		pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, big.NewInt(int64(rk.E)).Bytes()),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE_EXPONENT, rk.D.Bytes()),
		pkcs11.NewAttribute(pkcs11.CKA_PRIME_1, rk.Primes[0].Bytes()),
		pkcs11.NewAttribute(pkcs11.CKA_PRIME_2, rk.Primes[1].Bytes()),
		pkcs11.NewAttribute(pkcs11.CKA_EXPONENT_1, rk.Precomputed.Dp.Bytes()),
		pkcs11.NewAttribute(pkcs11.CKA_EXPONENT_2, rk.Precomputed.Dq.Bytes()),
		pkcs11.NewAttribute(pkcs11.CKA_COEFFICIENT, rk.Precomputed.Qinv.Bytes()),
	})
	if err == nil {
		return uk, &rk.PublicKey, nil
	}
	if !m.Has(pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN) {
		return 0, nil, err
	}
	pubObj, priv, err := ck.GenerateKeyPair(h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, nil)},
		publicGenTemplate(RSA2048, UsageImportWrap), privateTemplate(RSA2048, UsageImportWrap, false))
	if err != nil {
		return 0, nil, err
	}
	defer ck.DestroyObject(h, pubObj)
	attrs, err := ck.GetAttributeValue(h, pubObj, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_MODULUS, nil), pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, nil),
	})
	if err != nil || len(attrs) != 2 || len(attrs[1].Value) == 0 || len(attrs[1].Value) > 4 {
		ck.DestroyObject(h, priv)
		return 0, nil, fmt.Errorf("read probe key: %v", err)
	}
	return priv, &rsa.PublicKey{N: new(big.Int).SetBytes(attrs[0].Value), E: int(new(big.Int).SetBytes(attrs[1].Value).Int64())}, nil
}

func probeImportSecret(ck Cryptoki, h pkcs11.SessionHandle, uk pkcs11.ObjectHandle, pub *rsa.PublicKey, a ImportAlgorithm, secret []byte) bool {
	wrapped, err := WrapKeyMaterial(pub, a, secret)
	if err != nil {
		return false
	}
	obj, err := ck.UnwrapKey(h, []*pkcs11.Mechanism{a.mechanism()}, uk, wrapped, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, false), // the probe's secret is public
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
	})
	if err != nil {
		return false
	}
	defer ck.DestroyObject(h, obj)
	return bytes.Equal(attribute(ck, h, obj, pkcs11.CKA_VALUE), secret)
}

func probeImportPrivate(ck Cryptoki, h pkcs11.SessionHandle, m *Mechanisms, uk pkcs11.ObjectHandle, pub *rsa.PublicKey, a ImportAlgorithm, mat *importProbeMaterial) bool {
	wrapped, err := WrapKeyMaterial(pub, a, mat.p8)
	if err != nil {
		return false
	}
	obj, err := ck.UnwrapKey(h, []*pkcs11.Mechanism{a.mechanism()}, uk, wrapped, importTemplate(ECP256, UsageSign))
	if err != nil {
		return false
	}
	defer ck.DestroyObject(h, obj)
	if !bytes.Equal(attribute(ck, h, obj, pkcs11.CKA_EC_PARAMS), oidP256) {
		return false
	}
	if !m.Has(pkcs11.CKM_ECDSA) {
		return true
	}
	digest := sha256.Sum256(importKCVMessage)
	if err := ck.SignInit(h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil)}, obj); err != nil {
		return false
	}
	sig, err := ck.Sign(h, digest[:])
	if err != nil || len(sig) != 64 {
		return false
	}
	return ecdsa.Verify(&mat.ec.PublicKey, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
}

// SupportsImport is Capabilities().SupportsImport with, when the answer is
// no, an error wrapping ErrUnsupported that names each module and what it
// lacks, for the operator.
func (p *Pool) SupportsImport(alg ImportAlgorithm, spec KeySpec) error {
	err := p.caps.SupportsImport(alg, spec)
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrUnsupported, p.importLack(alg, spec, err))
}
