package hsmpool

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/miekg/pkcs11"
)

// Mechanisms is what one slot's module can do, detected at start from
// C_GetMechanismList and C_GetMechanismInfo plus probes for the parameter
// variants a mechanism list can't show (such as RSA-OAEP with SHA-256).
type Mechanisms struct {
	info map[uint]pkcs11.MechanismInfo
	// OAEPHashes is the set of OAEP hashes the module accepted in a probe.
	oaepSHA1, oaepSHA256 bool
	// unwrappable lists key specs whose generated private keys the module
	// refused to wrap in a probe (SoftHSM 2.6 can't wrap Ed25519 keys).
	unwrappable map[KeySpec]bool
	// imports is what each import algorithm brought in, correctly, in a
	// probe (see probeImport).
	imports map[ImportAlgorithm]ImportSupport
	// module describes the module and token for messages, such as
	// "SoftHSM v2 2.6 by SoftHSM project (libsofthsm2.so)".
	module string
}

// Has reports whether the module lists the mechanism.
func (m *Mechanisms) Has(mech uint) bool {
	if m == nil {
		return false
	}
	_, ok := m.info[mech]
	return ok
}

// Names lists the detected mechanisms the pool knows by name, sorted, then
// any others in hex.
func (m *Mechanisms) Names() []string {
	if m == nil {
		return nil
	}
	var out []string
	for mech := range m.info {
		if n, ok := mechanismNames[mech]; ok {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	if m.oaepSHA256 {
		out = append(out, "CKM_RSA_PKCS_OAEP(SHA-256)")
	}
	for _, a := range importAlgorithms {
		if sup := m.imports[a]; sup.Secret || sup.Private {
			out = append(out, "import:"+a.String()+sup.suffix())
		}
	}
	return out
}

// Capabilities summarises, per kind of operation, whether it can run: the
// intersection over the slots the pool was opened with.
type Capabilities struct {
	KeyGen     map[KeySpec]bool
	AESGCM     bool
	OAEPSHA1   bool
	OAEPSHA256 bool
	RSAPKCS1   bool
	RSAPSS     bool
	ECDSA      bool
	EdDSA      bool
	ECDH       bool
	HMAC       map[KeySpec]bool
	Wrap       bool // CKM_AES_KEY_WRAP_PAD, without which nothing works
	AESCMAC    bool // CKM_AES_CMAC: the check value of imported AES keys
	// Import is what each key import algorithm can bring in, as probed by
	// unwrapping test material wrapped as an AWS client would wrap it.
	Import map[ImportAlgorithm]ImportSupport
}

func (m *Mechanisms) capabilities() Capabilities {
	c := Capabilities{
		KeyGen:     map[KeySpec]bool{},
		HMAC:       map[KeySpec]bool{},
		AESGCM:     m.Has(pkcs11.CKM_AES_GCM),
		OAEPSHA1:   m.oaepSHA1,
		OAEPSHA256: m.oaepSHA256,
		RSAPKCS1:   m.Has(pkcs11.CKM_RSA_PKCS),
		RSAPSS:     m.Has(pkcs11.CKM_RSA_PKCS_PSS),
		ECDSA:      m.Has(pkcs11.CKM_ECDSA),
		EdDSA:      m.Has(ckmEdDSA),
		ECDH:       m.Has(pkcs11.CKM_ECDH1_DERIVE),
		Wrap:       m.Has(pkcs11.CKM_AES_KEY_WRAP_PAD),
		AESCMAC:    m.Has(pkcs11.CKM_AES_CMAC),
		Import:     map[ImportAlgorithm]ImportSupport{},
	}
	for a, sup := range m.imports {
		c.Import[a] = sup
	}
	c.KeyGen[AES256] = m.Has(pkcs11.CKM_AES_KEY_GEN)
	for _, s := range []KeySpec{HMAC224, HMAC256, HMAC384, HMAC512} {
		c.KeyGen[s] = m.Has(pkcs11.CKM_GENERIC_SECRET_KEY_GEN)
		c.HMAC[s] = m.Has(hmacMechanism(s))
	}
	for _, s := range []KeySpec{RSA2048, RSA3072, RSA4096} {
		c.KeyGen[s] = m.keySizeOK(pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, uint(s.rsaBits()))
	}
	for _, s := range []KeySpec{ECP256, ECP384, ECP521} {
		c.KeyGen[s] = m.Has(pkcs11.CKM_EC_KEY_PAIR_GEN)
	}
	c.KeyGen[Ed25519] = m.Has(ckmECEdwardsKeyPairGen)
	for spec := range m.unwrappable {
		c.KeyGen[spec] = false
	}
	return c
}

// keySizeOK checks the mechanism's advertised key size range (in bits for
// RSA). A module that reports no range (0, 0) is taken at its word.
func (m *Mechanisms) keySizeOK(mech, bits uint) bool {
	info, ok := m.info[mech]
	if !ok {
		return false
	}
	if info.MaxKeySize == 0 {
		return true
	}
	return bits >= info.MinKeySize && bits <= info.MaxKeySize
}

func intersect(a, b Capabilities) Capabilities {
	c := Capabilities{
		KeyGen: map[KeySpec]bool{}, HMAC: map[KeySpec]bool{},
		AESGCM: a.AESGCM && b.AESGCM, OAEPSHA1: a.OAEPSHA1 && b.OAEPSHA1, OAEPSHA256: a.OAEPSHA256 && b.OAEPSHA256,
		RSAPKCS1: a.RSAPKCS1 && b.RSAPKCS1, RSAPSS: a.RSAPSS && b.RSAPSS, ECDSA: a.ECDSA && b.ECDSA,
		EdDSA: a.EdDSA && b.EdDSA, ECDH: a.ECDH && b.ECDH, Wrap: a.Wrap && b.Wrap,
		AESCMAC: a.AESCMAC && b.AESCMAC, Import: map[ImportAlgorithm]ImportSupport{},
	}
	for k, v := range a.Import {
		w := b.Import[k]
		c.Import[k] = ImportSupport{Secret: v.Secret && w.Secret, Private: v.Private && w.Private}
	}
	for k, v := range a.KeyGen {
		c.KeyGen[k] = v && b.KeyGen[k]
	}
	for k, v := range a.HMAC {
		c.HMAC[k] = v && b.HMAC[k]
	}
	return c
}

// Supports reports whether keys of spec can be generated and used for usage.
func (c Capabilities) Supports(spec KeySpec, usage Usage) error {
	if !c.Wrap {
		return errors.New("module lacks CKM_AES_KEY_WRAP_PAD, needed to wrap every key under the domain key")
	}
	if !c.KeyGen[spec] {
		return fmt.Errorf("module cannot generate %s keys that can be wrapped under the domain key", spec)
	}
	var ok bool
	var need string
	switch {
	case spec == AES256:
		ok, need = c.AESGCM, "CKM_AES_GCM"
	case spec.isHMAC():
		ok, need = c.HMAC[spec], mechanismNames[hmacMechanism(spec)]
	case spec.isRSA() && usage == UsageSign:
		ok, need = c.RSAPKCS1 || c.RSAPSS, "CKM_RSA_PKCS or CKM_RSA_PKCS_PSS"
	case spec.isRSA() && usage == UsageEncrypt:
		ok, need = c.OAEPSHA1 || c.OAEPSHA256, "CKM_RSA_PKCS_OAEP"
	case spec.isEC() && usage == UsageSign:
		ok, need = c.ECDSA, "CKM_ECDSA"
	case spec.isEC() && usage == UsageDerive:
		ok, need = c.ECDH, "CKM_ECDH1_DERIVE"
	case spec == Ed25519:
		ok, need = c.EdDSA, "CKM_EDDSA"
	case spec.isRSA() && usage == UsageImportWrap:
		for _, sup := range c.Import {
			ok = ok || sup.Secret || sup.Private
		}
		need = "an RSA unwrap mechanism that passed the import probe (CKM_RSA_PKCS_OAEP or CKM_RSA_AES_KEY_WRAP)"
	}
	if !ok {
		return fmt.Errorf("module lacks %s for %s %s keys", need, spec, usage)
	}
	return nil
}

func hmacMechanism(spec KeySpec) uint {
	switch spec {
	case HMAC224:
		return pkcs11.CKM_SHA224_HMAC
	case HMAC256:
		return pkcs11.CKM_SHA256_HMAC
	case HMAC384:
		return pkcs11.CKM_SHA384_HMAC
	case HMAC512:
		return pkcs11.CKM_SHA512_HMAC
	}
	return 0
}

var mechanismNames = map[uint]string{
	pkcs11.CKM_AES_KEY_GEN: "CKM_AES_KEY_GEN", pkcs11.CKM_AES_GCM: "CKM_AES_GCM",
	pkcs11.CKM_AES_KEY_WRAP_PAD: "CKM_AES_KEY_WRAP_PAD", pkcs11.CKM_GENERIC_SECRET_KEY_GEN: "CKM_GENERIC_SECRET_KEY_GEN",
	pkcs11.CKM_SHA224_HMAC: "CKM_SHA224_HMAC", pkcs11.CKM_SHA256_HMAC: "CKM_SHA256_HMAC",
	pkcs11.CKM_SHA384_HMAC: "CKM_SHA384_HMAC", pkcs11.CKM_SHA512_HMAC: "CKM_SHA512_HMAC",
	pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN: "CKM_RSA_PKCS_KEY_PAIR_GEN", pkcs11.CKM_RSA_PKCS: "CKM_RSA_PKCS",
	pkcs11.CKM_RSA_PKCS_PSS: "CKM_RSA_PKCS_PSS", pkcs11.CKM_RSA_PKCS_OAEP: "CKM_RSA_PKCS_OAEP",
	pkcs11.CKM_EC_KEY_PAIR_GEN: "CKM_EC_KEY_PAIR_GEN", pkcs11.CKM_ECDSA: "CKM_ECDSA",
	pkcs11.CKM_ECDH1_DERIVE: "CKM_ECDH1_DERIVE", ckmECEdwardsKeyPairGen: "CKM_EC_EDWARDS_KEY_PAIR_GEN",
	ckmEdDSA: "CKM_EDDSA", pkcs11.CKM_RSA_AES_KEY_WRAP: "CKM_RSA_AES_KEY_WRAP",
	pkcs11.CKM_AES_CMAC: "CKM_AES_CMAC",
}

// detectMechanisms reads the slot's mechanism list and probes what the list
// can't tell. The probes use only public or throwaway objects in session h.
func detectMechanisms(ck Cryptoki, slotID uint, h pkcs11.SessionHandle) (*Mechanisms, error) {
	list, err := ck.GetMechanismList(slotID)
	if err != nil {
		return nil, fmt.Errorf("C_GetMechanismList: %w", err)
	}
	m := &Mechanisms{info: make(map[uint]pkcs11.MechanismInfo, len(list))}
	for _, mech := range list {
		info, err := ck.GetMechanismInfo(slotID, []*pkcs11.Mechanism{pkcs11.NewMechanism(mech.Mechanism, nil)})
		if err != nil {
			continue // listed but not describable: treat as absent
		}
		m.info[mech.Mechanism] = info
	}
	m.unwrappable = map[KeySpec]bool{}
	if m.Has(pkcs11.CKM_AES_KEY_WRAP_PAD) {
		for _, spec := range []KeySpec{ECP256, Ed25519} {
			if m.Has(keyPairMechanism(spec)) && !probeWrap(ck, h, spec) {
				m.unwrappable[spec] = true
				if spec == ECP256 {
					m.unwrappable[ECP384], m.unwrappable[ECP521] = true, true
				}
			}
		}
	}
	if m.Has(pkcs11.CKM_RSA_PKCS_OAEP) {
		m.oaepSHA1 = probeOAEP(ck, h, pkcs11.CKM_SHA_1)
		m.oaepSHA256 = probeOAEP(ck, h, pkcs11.CKM_SHA256)
	}
	m.imports = probeImport(ck, h, m)
	if info, err := ck.GetTokenInfo(slotID); err == nil {
		m.module = fmt.Sprintf("%s %d.%d by %s", info.Model, info.FirmwareVersion.Major, info.FirmwareVersion.Minor, info.ManufacturerID)
	}
	return m, nil
}

// probeOAEP encrypts one byte with RSA-OAEP and the given hash under a fixed
// public key created as a session object. Encryption needs no private key,
// so the probe costs no key generation.
func probeOAEP(ck Cryptoki, h pkcs11.SessionHandle, hash uint) bool {
	modulus := []byte(strings.Repeat("\xff", 256)) // any odd 2048-bit modulus will do
	obj, err := ck.CreateObject(h, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_MODULUS, modulus),
		pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}),
	})
	if err != nil {
		return false
	}
	defer ck.DestroyObject(h, obj)
	if err := ck.EncryptInit(h, []*pkcs11.Mechanism{oaepMechanism(hash)}, obj); err != nil {
		return false
	}
	_, err = ck.Encrypt(h, []byte{1})
	return err == nil
}

// probeWrap generates a throwaway key pair of spec and a throwaway AES key,
// all session objects, and reports whether the module wraps the private key
// with CKM_AES_KEY_WRAP_PAD, as every key version must be.
func probeWrap(ck Cryptoki, h pkcs11.SessionHandle, spec KeySpec) bool {
	wk, err := ck.GenerateKey(h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, true),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32),
	})
	if err != nil {
		return false
	}
	defer ck.DestroyObject(h, wk)
	pub, priv, err := ck.GenerateKeyPair(h, []*pkcs11.Mechanism{pkcs11.NewMechanism(keyPairMechanism(spec), nil)},
		publicGenTemplate(spec, UsageSign), privateTemplate(spec, UsageSign, true))
	if err != nil {
		return false
	}
	defer ck.DestroyObject(h, pub)
	defer ck.DestroyObject(h, priv)
	_, err = ck.WrapKey(h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP_PAD, nil)}, wk, priv)
	return err == nil
}

func keyPairMechanism(spec KeySpec) uint {
	switch {
	case spec.isRSA():
		return pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN
	case spec == Ed25519:
		return ckmECEdwardsKeyPairGen
	}
	return pkcs11.CKM_EC_KEY_PAIR_GEN
}

func oaepMechanism(hash uint) *pkcs11.Mechanism {
	mgf := uint(pkcs11.CKG_MGF1_SHA1)
	switch hash {
	case pkcs11.CKM_SHA256:
		mgf = pkcs11.CKG_MGF1_SHA256
	}
	return pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_OAEP,
		pkcs11.NewOAEPParams(hash, mgf, pkcs11.CKZ_DATA_SPECIFIED, nil))
}
