package hsmpool

import (
	"context"
	"crypto"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"time"
)

// Signer returns a crypto.Signer whose private key stays in the pool: the
// TLS and CA keys of the gateway use it. Sign takes a digest and
// crypto.SignerOpts as crypto.Signer does (rsa.PSSOptions select PSS, with
// the salt length of the hash); ECDSA signatures are DER-encoded. Each call
// is bounded by timeout.
func (p *Pool) Signer(k *Key, timeout time.Duration) (crypto.Signer, error) {
	if k.blob.Usage != UsageSign || k.public == nil {
		return nil, fmt.Errorf("hsmpool: key %s is not a signing key pair", k.ID)
	}
	return &signer{p: p, k: k, timeout: timeout}, nil
}

type signer struct {
	p       *Pool
	k       *Key
	timeout time.Duration
}

func (s *signer) Public() crypto.PublicKey { return s.k.public }

func (s *signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	alg, err := signAlgorithmFor(s.k.blob.Spec, opts)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	// For Ed25519 (hash 0) "digest" is the message, as crypto/ed25519 has it.
	return s.p.SignDigest(ctx, s.k, alg, digest)
}

func signAlgorithmFor(spec KeySpec, opts crypto.SignerOpts) (SignAlgorithm, error) {
	h := opts.HashFunc()
	_, pss := opts.(*rsa.PSSOptions)
	if pss {
		if o := opts.(*rsa.PSSOptions); o.SaltLength != rsa.PSSSaltLengthEqualsHash && o.SaltLength != h.Size() && o.SaltLength != rsa.PSSSaltLengthAuto {
			return 0, errors.New("hsmpool: PSS signatures use a salt as long as the hash")
		}
	}
	for _, a := range []SignAlgorithm{ECDSAWithSHA256, ECDSAWithSHA384, ECDSAWithSHA512, RSAPKCS1v15WithSHA256,
		RSAPKCS1v15WithSHA384, RSAPKCS1v15WithSHA512, RSAPSSWithSHA256, RSAPSSWithSHA384, RSAPSSWithSHA512, Ed25519Pure} {
		isPSS := a >= RSAPSSWithSHA256 && a <= RSAPSSWithSHA512
		if a.fits(spec) && a.Hash() == h && isPSS == pss {
			return a, nil
		}
	}
	return 0, fmt.Errorf("hsmpool: no signature algorithm for a %s key with hash %v", spec, h)
}
