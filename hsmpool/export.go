package hsmpool

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"time"

	"github.com/hsmgate/hsmgate/internal/kwp"
	"github.com/miekg/pkcs11"
)

// Export is a key wrapped for export: Wrapped is the key under Transport,
// a fresh AES-256 key, with RFC 5649 (CKM_AES_KEY_WRAP_PAD). The wrapped
// value is the raw key for AES and HMAC keys, and the private key as
// PKCS#8 PrivateKeyInfo DER for key pairs (what PKCS#11 wrapping of a
// private key yields).
type Export struct {
	Transport []byte // 32 bytes; the caller must encrypt it to the recipient and zero it
	Wrapped   []byte
	Format    string // ExportRaw or ExportPKCS8
}

// Export formats.
const (
	ExportRaw   = "raw"
	ExportPKCS8 = "pkcs8"
)

// ExportKey wraps k for export inside one slot: it unwraps k's blob under
// the domain key into a temporary extractable session object, creates a
// fresh random AES-256 transport key as a session object, wraps the key
// under it, and destroys both objects. The key itself never exists outside
// the HSM in plaintext; the transport key does (it is returned), so the
// caller seals it to the export's recipient at once.
//
// Ordinary use never needs an extractable copy: the copies the pool caches
// for operations are unwrapped non-extractable. Only this call makes one,
// and only for the life of the call.
func (p *Pool) ExportKey(ctx context.Context, k *Key) (*Export, error) {
	if want := p.kcv.Load(); want == nil || *want != k.blob.KCV {
		return nil, &Error{Op: "export key", Key: k.ID, Err: fmt.Errorf("%w: wrapped under domain key %s, not this pool's", ErrInvalidKeyBlob, k.blob.KCV)}
	}
	format := ExportRaw
	if k.blob.Spec.IsAsymmetric() {
		format = ExportPKCS8
	}
	var out *Export
	err := p.do(ctx, "export key", p.opts.OpTimeout, func(s *slot, deadline time.Time) *Error {
		dk := s.ctl.Load().dk
		transport := make([]byte, 32)
		if _, err := rand.Read(transport); err != nil {
			return &Error{Op: "export key", Err: err}
		}
		var wrapped []byte
		e := s.run(deadline, opOther, "export key", func(h pkcs11.SessionHandle) error {
			ck := s.mod.ck
			obj, err := ck.UnwrapKey(h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP_PAD, nil)},
				dk, k.blob.Wrapped, privateTemplate(k.blob.Spec, k.blob.Usage, true))
			if err != nil {
				return fmt.Errorf("unwrap the key as extractable: %w", err)
			}
			defer ck.DestroyObject(h, obj)
			tk, err := ck.CreateObject(h, []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
				pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
				pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
				pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
				pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
				pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
				pkcs11.NewAttribute(pkcs11.CKA_WRAP, true),
				pkcs11.NewAttribute(pkcs11.CKA_VALUE, transport),
			})
			if err != nil {
				return fmt.Errorf("create the transport key: %w", err)
			}
			defer ck.DestroyObject(h, tk)
			wrapped, err = ck.WrapKey(h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP_PAD, nil)}, tk, obj)
			if err != nil {
				return fmt.Errorf("wrap the key under the transport key: %w", err)
			}
			return nil
		})
		if e != nil {
			clear(transport)
			e.Key = k.ID
			return e
		}
		out = &Export{Transport: transport, Wrapped: wrapped, Format: format}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// KCVOf computes the check value of domain key material in software, as
// the slots compute it in the token: for checking material recovered from
// officers' shares before it is provisioned.
func KCVOf(material []byte) (KCV, error) {
	var kcv KCV
	wrapped, err := kwp.Wrap(material, kcvKey[:])
	if err != nil {
		return kcv, fmt.Errorf("hsmpool: %w", err)
	}
	sum := sha256.Sum256(append([]byte("hsmgate-kcv"), wrapped...))
	copy(kcv[:], sum[:])
	return kcv, nil
}
