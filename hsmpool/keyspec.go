package hsmpool

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"math/big"

	"github.com/miekg/pkcs11"
)

// PKCS#11 3.0 values that miekg/pkcs11 v1.1.2 does not define.
const (
	ckkECEdwards           = 0x40
	ckmECEdwardsKeyPairGen = 0x1055
	ckmEdDSA               = 0x1057
)

// KeySpec is the type and size of a key the pool generates and uses.
type KeySpec uint8

const (
	AES256 KeySpec = iota + 1
	HMAC224
	HMAC256
	HMAC384
	HMAC512
	RSA2048
	RSA3072
	RSA4096
	ECP256
	ECP384
	ECP521
	Ed25519
)

var keySpecNames = map[KeySpec]string{
	AES256: "AES-256", HMAC224: "HMAC-224", HMAC256: "HMAC-256", HMAC384: "HMAC-384", HMAC512: "HMAC-512",
	RSA2048: "RSA-2048", RSA3072: "RSA-3072", RSA4096: "RSA-4096",
	ECP256: "EC-P256", ECP384: "EC-P384", ECP521: "EC-P521", Ed25519: "Ed25519",
}

func (k KeySpec) String() string {
	if s, ok := keySpecNames[k]; ok {
		return s
	}
	return fmt.Sprintf("KeySpec(%d)", uint8(k))
}

// Valid reports whether k is a known key spec.
func (k KeySpec) Valid() bool { _, ok := keySpecNames[k]; return ok }

// IsAsymmetric reports whether k is a key pair.
func (k KeySpec) IsAsymmetric() bool { return k >= RSA2048 && k <= Ed25519 }

func (k KeySpec) isRSA() bool  { return k >= RSA2048 && k <= RSA4096 }
func (k KeySpec) isEC() bool   { return k >= ECP256 && k <= ECP521 }
func (k KeySpec) isHMAC() bool { return k >= HMAC224 && k <= HMAC512 }

func (k KeySpec) rsaBits() int {
	switch k {
	case RSA2048:
		return 2048
	case RSA3072:
		return 3072
	case RSA4096:
		return 4096
	}
	return 0
}

// hmacKeyLen is the generated key length in bytes: the digest size, as AWS
// does for its HMAC key specs.
func (k KeySpec) hmacKeyLen() int {
	switch k {
	case HMAC224:
		return 28
	case HMAC256:
		return 32
	case HMAC384:
		return 48
	case HMAC512:
		return 64
	}
	return 0
}

// DER-encoded OBJECT IDENTIFIERs used as CKA_EC_PARAMS.
var (
	oidP256    = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}
	oidP384    = []byte{0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22}
	oidP521    = []byte{0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23}
	oidEd25519 = []byte{0x06, 0x03, 0x2b, 0x65, 0x70}
)

func (k KeySpec) ecParams() []byte {
	switch k {
	case ECP256:
		return oidP256
	case ECP384:
		return oidP384
	case ECP521:
		return oidP521
	case Ed25519:
		return oidEd25519
	}
	return nil
}

func (k KeySpec) curve() elliptic.Curve {
	switch k {
	case ECP256:
		return elliptic.P256()
	case ECP384:
		return elliptic.P384()
	case ECP521:
		return elliptic.P521()
	}
	return nil
}

// Usage is what a key may be used for. It is fixed when the key is generated,
// recorded in its blob, and set on every unwrapped copy, so that the HSM
// itself refuses other uses.
type Usage uint8

const (
	// UsageEncrypt: AES-GCM encrypt/decrypt, or RSA-OAEP for an RSA key.
	UsageEncrypt Usage = 1 << iota
	// UsageSign: sign and verify.
	UsageSign
	// UsageMAC: HMAC generate and verify.
	UsageMAC
	// UsageDerive: ECDH key agreement.
	UsageDerive
	// UsageImportWrap: an RSA key pair whose private half may only unwrap
	// key material brought for import (ImportKey); its public half is what
	// AWS's GetParametersForImport hands out.
	UsageImportWrap
)

// allowedUsage says which single usage each spec may have.
func (k KeySpec) allows(u Usage) bool {
	switch {
	case k == AES256:
		return u == UsageEncrypt
	case k.isHMAC():
		return u == UsageMAC
	case k.isRSA():
		return u == UsageEncrypt || u == UsageSign || u == UsageImportWrap
	case k.isEC():
		return u == UsageSign || u == UsageDerive
	case k == Ed25519:
		return u == UsageSign
	}
	return false
}

func (u Usage) String() string {
	switch u {
	case UsageEncrypt:
		return "encrypt"
	case UsageSign:
		return "sign"
	case UsageMAC:
		return "mac"
	case UsageDerive:
		return "derive"
	case UsageImportWrap:
		return "import-wrap"
	}
	return fmt.Sprintf("Usage(%d)", uint8(u))
}

// privateTemplate returns the attributes of the secret or private half, for
// generation (extractable, so it can be wrapped once) and for unwrapping
// (not extractable: a used copy can't be wrapped out again).
func privateTemplate(spec KeySpec, usage Usage, extractable bool) []*pkcs11.Attribute {
	a := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, extractable),
	}
	switch {
	case spec == AES256:
		a = append(a,
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
			pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
			pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true))
	case spec.isHMAC():
		a = append(a,
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
			pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
			pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true))
	default:
		kt := uint(pkcs11.CKK_EC)
		switch {
		case spec.isRSA():
			kt = pkcs11.CKK_RSA
		case spec == Ed25519:
			kt = ckkECEdwards
		}
		a = append(a,
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, kt),
			pkcs11.NewAttribute(pkcs11.CKA_SIGN, usage == UsageSign),
			pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, usage == UsageEncrypt),
			pkcs11.NewAttribute(pkcs11.CKA_DERIVE, usage == UsageDerive))
		if usage == UsageImportWrap {
			// Unwrap only: never decrypt, so the key can't serve as an
			// RSA decryption oracle for what it unwraps.
			a = append(a, pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, true))
		}
	}
	return a
}

// publicGenTemplate is the public half's template for key pair generation.
func publicGenTemplate(spec KeySpec, usage Usage) []*pkcs11.Attribute {
	a := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, usage == UsageSign),
	}
	if spec.isRSA() {
		return append(a,
			pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, usage == UsageEncrypt),
			pkcs11.NewAttribute(pkcs11.CKA_MODULUS_BITS, spec.rsaBits()),
			pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}))
	}
	return append(a, pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, spec.ecParams()))
}

// publicObjectTemplate describes a public key to create as a session object
// (for verify and RSA encrypt inside the HSM).
func publicObjectTemplate(spec KeySpec, usage Usage, pub crypto.PublicKey) ([]*pkcs11.Attribute, error) {
	a := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, usage == UsageSign),
	}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return append(a,
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
			pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, usage == UsageEncrypt),
			pkcs11.NewAttribute(pkcs11.CKA_MODULUS, k.N.Bytes()),
			pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, big.NewInt(int64(k.E)).Bytes())), nil
	case *ecdsa.PublicKey:
		ek, err := k.ECDH()
		if err != nil {
			return nil, err
		}
		point, _ := asn1.Marshal(ek.Bytes())
		return append(a,
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
			pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, spec.ecParams()),
			pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, point)), nil
	case ed25519.PublicKey:
		point, _ := asn1.Marshal([]byte(k))
		return append(a,
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, ckkECEdwards),
			pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, oidEd25519),
			pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, point)), nil
	}
	return nil, fmt.Errorf("%w: public key type %T", ErrInvalidKeyBlob, pub)
}

// ParsePublicKey parses a DER SubjectPublicKeyInfo and checks that it is a
// key of the given spec. It is the pool's decoder of public keys that come
// from outside (a keystore, a peer's ECDH key).
func ParsePublicKey(spec KeySpec, der []byte) (crypto.PublicKey, error) {
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("%w: parse public key: %v", ErrInvalidInput, err)
	}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if spec.isRSA() && k.N.BitLen() == spec.rsaBits() {
			return k, nil
		}
	case *ecdsa.PublicKey:
		if spec.isEC() && k.Curve == spec.curve() {
			return k, nil
		}
	case *ecdh.PublicKey:
		// x509 returns X25519 keys as *ecdh.PublicKey: never one of ours.
	case ed25519.PublicKey:
		if spec == Ed25519 {
			return k, nil
		}
	}
	return nil, fmt.Errorf("%w: public key is not a %s key", ErrInvalidInput, spec)
}

// publicFromAttributes builds the DER SubjectPublicKeyInfo of a generated
// key pair from the public object's attributes.
func publicFromAttributes(spec KeySpec, attrs []*pkcs11.Attribute) ([]byte, error) {
	get := func(t uint) []byte {
		for _, a := range attrs {
			if a.Type == t {
				return a.Value
			}
		}
		return nil
	}
	var pub crypto.PublicKey
	switch {
	case spec.isRSA():
		n, e := get(pkcs11.CKA_MODULUS), get(pkcs11.CKA_PUBLIC_EXPONENT)
		if len(n) == 0 || len(e) == 0 || len(e) > 4 {
			return nil, fmt.Errorf("%w: RSA public key attributes missing", ErrUnavailable)
		}
		pub = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	case spec.isEC():
		point, err := ecPoint(get(pkcs11.CKA_EC_POINT))
		if err != nil {
			return nil, err
		}
		k, err := ecdsaPublicFromPoint(spec, point)
		if err != nil {
			return nil, err
		}
		pub = k
	case spec == Ed25519:
		point, err := ecPoint(get(pkcs11.CKA_EC_POINT))
		if err != nil {
			return nil, err
		}
		if len(point) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%w: Ed25519 point of %d bytes", ErrUnavailable, len(point))
		}
		pub = ed25519.PublicKey(point)
	default:
		return nil, fmt.Errorf("%w: %s has no public key", ErrInvalidInput, spec)
	}
	return x509.MarshalPKIXPublicKey(pub)
}

// ecPoint undoes the DER OCTET STRING that PKCS#11 2.40 puts around
// CKA_EC_POINT; some modules return the raw point instead.
func ecPoint(v []byte) ([]byte, error) {
	var inner []byte
	if rest, err := asn1.Unmarshal(v, &inner); err == nil && len(rest) == 0 {
		return inner, nil
	}
	if len(v) == 0 {
		return nil, fmt.Errorf("%w: empty CKA_EC_POINT", ErrUnavailable)
	}
	return v, nil
}

func ecdsaPublicFromPoint(spec KeySpec, point []byte) (*ecdsa.PublicKey, error) {
	var c ecdh.Curve
	switch spec {
	case ECP256:
		c = ecdh.P256()
	case ECP384:
		c = ecdh.P384()
	case ECP521:
		c = ecdh.P521()
	default:
		return nil, fmt.Errorf("%w: %s is not an EC key", ErrInvalidInput, spec)
	}
	ek, err := c.NewPublicKey(point)
	if err != nil {
		return nil, fmt.Errorf("%w: EC point: %v", ErrInvalidInput, err)
	}
	return ecdsa.ParseUncompressedPublicKey(spec.curve(), ek.Bytes())
}
