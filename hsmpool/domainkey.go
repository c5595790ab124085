package hsmpool

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"fmt"
	"math/big"

	"github.com/miekg/pkcs11"
)

// dkTemplate is the domain key's template: a token object that is sensitive,
// never extractable, can't be changed, and may only wrap and unwrap.
func dkTemplate(label string) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_MODIFIABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, true),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, true),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
	}
}

// provisionDK writes the domain key into the token of session h.
//
// Where the module can (RSA key generation and RSA-OAEP unwrap), the
// material crosses into the module only encrypted: the slot makes a
// throwaway RSA transport key pair, the material is OAEP-encrypted to its
// public half here, and C_UnwrapKey creates the domain key inside the
// token. Only the ciphertext passes through the PKCS#11 binding's C memory.
// Otherwise it falls back to C_CreateObject with the value, which the
// binding copies through C memory it frees without zeroing.
func provisionDK(ck Cryptoki, h pkcs11.SessionHandle, mechs *Mechanisms, label string, material []byte) error {
	if mechs == nil || !mechs.oaepSHA1 || !mechs.Has(pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN) {
		_, err := ck.CreateObject(h, append(dkTemplate(label), pkcs11.NewAttribute(pkcs11.CKA_VALUE, material)))
		return err
	}
	pub, priv, err := ck.GenerateKeyPair(h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, nil)},
		[]*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
			pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
			pkcs11.NewAttribute(pkcs11.CKA_MODULUS_BITS, 2048),
			pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}),
		},
		[]*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
			pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
			pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, true),
		})
	if err != nil {
		return fmt.Errorf("generate transport key: %w", err)
	}
	defer ck.DestroyObject(h, pub)
	defer ck.DestroyObject(h, priv)
	attrs, err := ck.GetAttributeValue(h, pub, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_MODULUS, nil), pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, nil),
	})
	if err != nil {
		return fmt.Errorf("read transport key: %w", err)
	}
	tk := &rsa.PublicKey{N: new(big.Int).SetBytes(attrs[0].Value), E: int(new(big.Int).SetBytes(attrs[1].Value).Int64())}
	ct, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, tk, material, nil)
	if err != nil {
		return fmt.Errorf("encrypt domain key to the transport key: %w", err)
	}
	// SoftHSM refuses CKA_MODIFIABLE in an unwrap template
	// (CKR_ATTRIBUTE_READ_ONLY); sensitive and non-extractable are one-way
	// anyway.
	var tmpl []*pkcs11.Attribute
	for _, a := range dkTemplate(label) {
		if a.Type != pkcs11.CKA_MODIFIABLE {
			tmpl = append(tmpl, a)
		}
	}
	_, err = ck.UnwrapKey(h, []*pkcs11.Mechanism{oaepMechanism(pkcs11.CKM_SHA_1)}, priv, ct, tmpl)
	if err == nil {
		return nil
	}
	return fmt.Errorf("unwrap domain key under the transport key: %w", err)
}
