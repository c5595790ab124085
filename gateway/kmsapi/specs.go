package kmsapi

import (
	"crypto"
	"slices"
	"sort"

	"github.com/hsmgate/hsmgate/hsmpool"
)

// Key usages, as AWS KMS names them.
const (
	UsageEncryptDecrypt    = "ENCRYPT_DECRYPT"
	UsageSignVerify        = "SIGN_VERIFY"
	UsageGenerateVerifyMac = "GENERATE_VERIFY_MAC"
	UsageKeyAgreement      = "KEY_AGREEMENT"
)

const symmetricDefault = "SYMMETRIC_DEFAULT"

// specInfo describes one AWS key spec.
type specInfo struct {
	pool   hsmpool.KeySpec
	usages []string // the usages AWS allows for it
	hmac   string   // the one MAC algorithm of an HMAC spec
	ecdsa  string   // the one ECDSA signing algorithm of an EC spec
}

var specs = map[string]specInfo{
	symmetricDefault:        {pool: hsmpool.AES256, usages: []string{UsageEncryptDecrypt}},
	"HMAC_224":              {pool: hsmpool.HMAC224, usages: []string{UsageGenerateVerifyMac}, hmac: "HMAC_SHA_224"},
	"HMAC_256":              {pool: hsmpool.HMAC256, usages: []string{UsageGenerateVerifyMac}, hmac: "HMAC_SHA_256"},
	"HMAC_384":              {pool: hsmpool.HMAC384, usages: []string{UsageGenerateVerifyMac}, hmac: "HMAC_SHA_384"},
	"HMAC_512":              {pool: hsmpool.HMAC512, usages: []string{UsageGenerateVerifyMac}, hmac: "HMAC_SHA_512"},
	"RSA_2048":              {pool: hsmpool.RSA2048, usages: []string{UsageEncryptDecrypt, UsageSignVerify}},
	"RSA_3072":              {pool: hsmpool.RSA3072, usages: []string{UsageEncryptDecrypt, UsageSignVerify}},
	"RSA_4096":              {pool: hsmpool.RSA4096, usages: []string{UsageEncryptDecrypt, UsageSignVerify}},
	"ECC_NIST_P256":         {pool: hsmpool.ECP256, usages: []string{UsageSignVerify, UsageKeyAgreement}, ecdsa: "ECDSA_SHA_256"},
	"ECC_NIST_P384":         {pool: hsmpool.ECP384, usages: []string{UsageSignVerify, UsageKeyAgreement}, ecdsa: "ECDSA_SHA_384"},
	"ECC_NIST_P521":         {pool: hsmpool.ECP521, usages: []string{UsageSignVerify, UsageKeyAgreement}, ecdsa: "ECDSA_SHA_512"},
	"ECC_NIST_EDWARDS25519": {pool: hsmpool.Ed25519, usages: []string{UsageSignVerify}},
}

// unservedSpecs are AWS key specs hsmgate does not offer at all.
var unservedSpecs = map[string]string{
	"ECC_SECG_P256K1": "secp256k1 keys are not offered",
	"SM2":             "SM2 keys are only offered in AWS China regions",
	"ML_DSA_44":       "ML-DSA keys are not offered yet",
	"ML_DSA_65":       "ML-DSA keys are not offered yet",
	"ML_DSA_87":       "ML-DSA keys are not offered yet",
	"ML_KEM_512":      "ML-KEM keys are not offered yet",
	"ML_KEM_768":      "ML-KEM keys are not offered yet",
	"ML_KEM_1024":     "ML-KEM keys are not offered yet",
}

var poolUsage = map[string]hsmpool.Usage{
	UsageEncryptDecrypt:    hsmpool.UsageEncrypt,
	UsageSignVerify:        hsmpool.UsageSign,
	UsageGenerateVerifyMac: hsmpool.UsageMAC,
	UsageKeyAgreement:      hsmpool.UsageDerive,
}

// signing algorithms by AWS name.
var signingAlgorithms = map[string]hsmpool.SignAlgorithm{
	"ECDSA_SHA_256":             hsmpool.ECDSAWithSHA256,
	"ECDSA_SHA_384":             hsmpool.ECDSAWithSHA384,
	"ECDSA_SHA_512":             hsmpool.ECDSAWithSHA512,
	"RSASSA_PKCS1_V1_5_SHA_256": hsmpool.RSAPKCS1v15WithSHA256,
	"RSASSA_PKCS1_V1_5_SHA_384": hsmpool.RSAPKCS1v15WithSHA384,
	"RSASSA_PKCS1_V1_5_SHA_512": hsmpool.RSAPKCS1v15WithSHA512,
	"RSASSA_PSS_SHA_256":        hsmpool.RSAPSSWithSHA256,
	"RSASSA_PSS_SHA_384":        hsmpool.RSAPSSWithSHA384,
	"RSASSA_PSS_SHA_512":        hsmpool.RSAPSSWithSHA512,
	"ED25519_SHA_512":           hsmpool.Ed25519Pure,
}

var oaepHashes = map[string]crypto.Hash{
	"RSAES_OAEP_SHA_1":   crypto.SHA1,
	"RSAES_OAEP_SHA_256": crypto.SHA256,
}

// algorithms lists what a key of this spec and usage can do on this pool,
// in the order AWS lists them.
func (s *Service) algorithms(spec, usage string) (enc, sig, mac, agree []string) {
	info := specs[spec]
	caps := s.Pool.Capabilities()
	switch usage {
	case UsageEncryptDecrypt:
		if spec == symmetricDefault {
			return []string{symmetricDefault}, nil, nil, nil
		}
		if caps.OAEPSHA1 {
			enc = append(enc, "RSAES_OAEP_SHA_1")
		}
		if caps.OAEPSHA256 {
			enc = append(enc, "RSAES_OAEP_SHA_256")
		}
	case UsageSignVerify:
		switch {
		case info.ecdsa != "":
			sig = []string{info.ecdsa}
		case info.pool == hsmpool.Ed25519:
			sig = []string{"ED25519_SHA_512"}
		default:
			if caps.RSAPSS {
				sig = append(sig, "RSASSA_PSS_SHA_256", "RSASSA_PSS_SHA_384", "RSASSA_PSS_SHA_512")
			}
			if caps.RSAPKCS1 {
				sig = append(sig, "RSASSA_PKCS1_V1_5_SHA_256", "RSASSA_PKCS1_V1_5_SHA_384", "RSASSA_PKCS1_V1_5_SHA_512")
			}
		}
	case UsageGenerateVerifyMac:
		mac = []string{info.hmac}
	case UsageKeyAgreement:
		agree = []string{"ECDH"}
	}
	return enc, sig, mac, agree
}

func (s *Service) signingAllowed(spec, usage, alg string) bool {
	_, sig, _, _ := s.algorithms(spec, usage)
	return slices.Contains(sig, alg)
}

// KeySpecs returns the key specs the service offers, sorted, for tools
// that check a request before sending it.
func KeySpecs() []string {
	out := make([]string, 0, len(specs))
	for s := range specs {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// KeyUsages returns the key usages AWS allows for a key spec the service
// offers (the default first, except for RSA keys, whose usage must be
// chosen), and whether the spec is offered.
func KeyUsages(spec string) ([]string, bool) {
	info, ok := specs[spec]
	if !ok {
		return nil, false
	}
	return slices.Clone(info.usages), true
}
