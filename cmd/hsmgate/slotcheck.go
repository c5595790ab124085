package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/hsmgate/hsmgate/hsmpool"
)

// checkSlot proves that one slot works on its own. The pool routes each
// operation to whichever healthy slot it likes, so a round trip through the
// full pool could miss a broken slot; instead checkSlot opens a second pool
// restricted to this slot's token (same module, same PIN, same expected
// domain key) and runs, there:
//
//   - AES-256: generate a key (wrapped under the domain key), encrypt a
//     random message in AES-GCM, decrypt it back, and check that a changed
//     ciphertext is refused;
//   - EC P-256: generate a signing key, sign with ECDSA-SHA256, verify in the
//     HSM, check that a signature over another message is refused, and
//     verify the signature again in Go (crypto/ecdsa) against the public key
//     the HSM returned, so that the HSM is not the only judge of its own
//     signatures.
//
// The keys are throwaways: their blobs are never stored.
// It returns a one-line summary of what passed.
func checkSlot(ctx context.Context, all hsmpool.Options, st hsmpool.SlotStatus) (string, error) {
	opts := all
	opts.Modules = nil
	for _, m := range all.Modules {
		if m.Path == st.Module {
			m.Tokens = []hsmpool.TokenSelector{{Label: st.Name}}
			opts.Modules = []hsmpool.ModuleOptions{m}
			break
		}
	}
	if opts.Modules == nil {
		return "", fmt.Errorf("no configured module has path %s", st.Module)
	}
	start := time.Now()
	p, err := hsmpool.Open(ctx, opts)
	if err != nil {
		return "", fmt.Errorf("open the slot on its own: %w", err)
	}
	defer p.Close()
	sts := p.Status()
	if len(sts) != 1 || sts[0].Name != st.Name {
		return "", fmt.Errorf("opening token %q on its own gave %d slots", st.Name, len(sts))
	}
	if sts[0].State != hsmpool.StateHealthy {
		return "", fmt.Errorf("the slot is not healthy when opened on its own: %s", describeUnhealthy(sts))
	}

	msg := make([]byte, 64)
	if _, err := rand.Read(msg); err != nil {
		return "", fmt.Errorf("draw test message: %w", err)
	}
	if err := checkAESGCM(ctx, p, msg, []byte("hsmgate pool check "+st.Name)); err != nil {
		return "", err
	}
	if err := checkECDSA(ctx, p, msg); err != nil {
		return "", err
	}
	if cerr := p.Close(); cerr != nil {
		return "", fmt.Errorf("close the slot: %w", cerr)
	}
	return fmt.Sprintf("AES-256-GCM encrypt/decrypt, EC-P256 ECDSA sign/verify (HSM and Go) in %v",
		time.Since(start).Round(time.Millisecond)), nil
}

func checkAESGCM(ctx context.Context, p *hsmpool.Pool, msg, aad []byte) error {
	g, err := p.GenerateKey(ctx, hsmpool.AES256, hsmpool.UsageEncrypt)
	if err != nil {
		return fmt.Errorf("generate AES-256 key: %w", err)
	}
	k, err := hsmpool.NewKey("pool-check-aes", 1, g.Blob, nil)
	if err != nil {
		return fmt.Errorf("load generated AES-256 key: %w", err)
	}
	iv, ct, err := p.EncryptGCM(ctx, k, msg, aad)
	if err != nil {
		return fmt.Errorf("AES-GCM encrypt: %w", err)
	}
	if bytes.Contains(ct, msg) {
		return errors.New("AES-GCM encrypt: the ciphertext contains the plaintext")
	}
	pt, err := p.DecryptGCM(ctx, k, iv, ct, aad)
	if err != nil {
		return fmt.Errorf("AES-GCM decrypt: %w", err)
	}
	if !bytes.Equal(pt, msg) {
		return errors.New("AES-GCM decrypt: got other bytes than were encrypted")
	}
	bad := bytes.Clone(ct)
	bad[0] ^= 1
	if _, err := p.DecryptGCM(ctx, k, iv, bad, aad); !errors.Is(err, hsmpool.ErrInvalidCiphertext) {
		return fmt.Errorf("AES-GCM decrypt of a changed ciphertext: want %v, got %v", hsmpool.ErrInvalidCiphertext, err)
	}
	return nil
}

func checkECDSA(ctx context.Context, p *hsmpool.Pool, msg []byte) error {
	g, err := p.GenerateKey(ctx, hsmpool.ECP256, hsmpool.UsageSign)
	if err != nil {
		return fmt.Errorf("generate EC P-256 key: %w", err)
	}
	k, err := hsmpool.NewKey("pool-check-ec", 1, g.Blob, g.Public)
	if err != nil {
		return fmt.Errorf("load generated EC P-256 key: %w", err)
	}
	sig, err := p.SignMessage(ctx, k, hsmpool.ECDSAWithSHA256, msg)
	if err != nil {
		return fmt.Errorf("ECDSA sign: %w", err)
	}
	if err := p.VerifyMessage(ctx, k, hsmpool.ECDSAWithSHA256, msg, sig); err != nil {
		return fmt.Errorf("ECDSA verify in the HSM: %w", err)
	}
	other := append(bytes.Clone(msg), 0)
	if err := p.VerifyMessage(ctx, k, hsmpool.ECDSAWithSHA256, other, sig); !errors.Is(err, hsmpool.ErrInvalidSignature) {
		return fmt.Errorf("ECDSA verify in the HSM of another message: want %v, got %v", hsmpool.ErrInvalidSignature, err)
	}

	pub, err := x509.ParsePKIXPublicKey(g.Public)
	if err != nil {
		return fmt.Errorf("parse the public key the HSM returned: %w", err)
	}
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok || ec.Curve != elliptic.P256() {
		return fmt.Errorf("the HSM returned a %T public key, want an ECDSA P-256 one", pub)
	}
	digest := sha256.Sum256(msg)
	if !ecdsa.VerifyASN1(ec, digest[:], sig) {
		return errors.New("ECDSA verify in Go (crypto/ecdsa): the HSM's signature does not verify against its public key")
	}
	return nil
}
