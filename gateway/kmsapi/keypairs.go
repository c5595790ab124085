package kmsapi

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
)

type dataKeyPairRequest struct {
	KeyId             string
	KeyPairSpec       string
	EncryptionContext map[string]string
	GrantTokens       []string
	DryRun            bool
	Recipient         *struct{}
}

func (r *dataKeyPairRequest) tokens() []string { return r.GrantTokens }

type dataKeyPairResponse struct {
	KeyId                    string
	KeyPairSpec              string
	PrivateKeyCiphertextBlob []byte
	PrivateKeyPlaintext      []byte `json:",omitempty"`
	PublicKey                []byte
}

// dataKeyPairSpecs are the key pair specs GenerateDataKeyPair serves, with
// a generator each. ECC_SECG_P256K1 and SM2 are not offered (as for keys).
var dataKeyPairSpecs = map[string]func() (any, error){
	"RSA_2048":      func() (any, error) { return rsa.GenerateKey(rand.Reader, 2048) },
	"RSA_3072":      func() (any, error) { return rsa.GenerateKey(rand.Reader, 3072) },
	"RSA_4096":      func() (any, error) { return rsa.GenerateKey(rand.Reader, 4096) },
	"ECC_NIST_P256": func() (any, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) },
	"ECC_NIST_P384": func() (any, error) { return ecdsa.GenerateKey(elliptic.P384(), rand.Reader) },
	"ECC_NIST_P521": func() (any, error) { return ecdsa.GenerateKey(elliptic.P521(), rand.Reader) },
}

// dataKeyPair makes a key pair for the caller to use outside the gateway,
// and returns its private key encrypted under a symmetric key (and, for
// GenerateDataKeyPair, in plaintext). Like a data key, the pair is the
// caller's to hold, so it is generated in the gateway process (Go's
// crypto/rsa and crypto/ecdsa, seeded by the kernel's random source); only
// its encryption happens in the HSM.
func (s *Service) dataKeyPair(ctx context.Context, c Caller, action string, req *dataKeyPairRequest) (*dataKeyPairResponse, error) {
	noteContext(ctx, req.EncryptionContext)
	gen, ok := dataKeyPairSpecs[req.KeyPairSpec]
	switch {
	case req.KeyPairSpec == "":
		return nil, Errorf(ExValidation, "KeyPairSpec is required.")
	case !ok && (req.KeyPairSpec == "ECC_SECG_P256K1" || req.KeyPairSpec == "SM2"):
		return nil, Errorf(ExUnsupported, "KeyPairSpec %s is not offered.", req.KeyPairSpec)
	case !ok:
		return nil, Errorf(ExValidation, "KeyPairSpec %q is not a valid key pair spec.", truncate(req.KeyPairSpec, 32))
	case req.Recipient != nil:
		return nil, Errorf(ExUnsupported, "Recipient (attested enclaves) is not supported.")
	}
	k, err := s.dataKeyProtector(ctx, c, action, req.KeyId, req.EncryptionContext, req.DryRun)
	if err != nil {
		return nil, err
	}
	priv, err := gen()
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(priv.(crypto.Signer).Public())
	if err != nil {
		clear(der)
		return nil, err
	}
	blob, err := s.sealSymmetric(ctx, k, der, req.EncryptionContext)
	if err != nil {
		clear(der)
		return nil, err
	}
	return &dataKeyPairResponse{KeyId: s.KeyARN(k.ID), KeyPairSpec: req.KeyPairSpec, PrivateKeyCiphertextBlob: blob, PrivateKeyPlaintext: der, PublicKey: pub}, nil
}

func (s *Service) generateDataKeyPair(ctx context.Context, c Caller, req *dataKeyPairRequest) (*dataKeyPairResponse, error) {
	return s.dataKeyPair(ctx, c, "GenerateDataKeyPair", req)
}

func (s *Service) generateDataKeyPairWithoutPlaintext(ctx context.Context, c Caller, req *dataKeyPairRequest) (*dataKeyPairResponse, error) {
	out, err := s.dataKeyPair(ctx, c, "GenerateDataKeyPairWithoutPlaintext", req)
	if err != nil {
		return nil, err
	}
	clear(out.PrivateKeyPlaintext)
	out.PrivateKeyPlaintext = nil
	return out, nil
}

type deriveSharedSecretRequest struct {
	KeyId                 string
	KeyAgreementAlgorithm string
	PublicKey             []byte
	GrantTokens           []string
	DryRun                bool
	Recipient             *struct{}
}

func (r *deriveSharedSecretRequest) tokens() []string { return r.GrantTokens }

type deriveSharedSecretResponse struct {
	KeyId                 string
	SharedSecret          []byte
	KeyAgreementAlgorithm string
	KeyOrigin             string
}

// maxPublicKey bounds a peer public key (DER SubjectPublicKeyInfo): AWS's
// limit is 8192 bytes.
const maxPublicKey = 8192

func (s *Service) deriveSharedSecret(ctx context.Context, c Caller, req *deriveSharedSecretRequest) (*deriveSharedSecretResponse, error) {
	switch {
	case req.KeyAgreementAlgorithm != "ECDH":
		return nil, Errorf(ExValidation, "KeyAgreementAlgorithm must be ECDH.")
	case len(req.PublicKey) == 0 || len(req.PublicKey) > maxPublicKey:
		return nil, Errorf(ExValidation, "PublicKey must be 1 to %d bytes of DER SubjectPublicKeyInfo.", maxPublicKey)
	case req.Recipient != nil:
		return nil, Errorf(ExUnsupported, "Recipient (attested enclaves) is not supported.")
	}
	k, err := s.usable(ctx, c, "DeriveSharedSecret", req.KeyId, UsageKeyAgreement)
	if err != nil {
		return nil, err
	}
	if req.DryRun {
		return nil, dryRun()
	}
	v := k.Current()
	noteVersion(ctx, v.Number)
	pk, err := s.PoolKey(k, v)
	if err != nil {
		return nil, err
	}
	secret, err := s.Pool.DeriveSharedSecret(ctx, pk, req.PublicKey)
	if err != nil {
		return nil, err
	}
	return &deriveSharedSecretResponse{KeyId: s.KeyARN(k.ID), SharedSecret: secret, KeyAgreementAlgorithm: "ECDH", KeyOrigin: k.Origin}, nil
}
