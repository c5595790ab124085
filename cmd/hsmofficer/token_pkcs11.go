//go:build pkcs11 && cgo

package main

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/miekg/pkcs11"

	"github.com/hsmgate/hsmgate/quorum"
)

// PKCS#11 3.0 names miekg/pkcs11 lacks.
const (
	ckkECEdwards           = 0x40
	ckmECEdwardsKeyPairGen = 0x1055
	ckmEdDSA               = 0x1057
)

// oidEd25519 is CKA_EC_PARAMS for Ed25519: the DER OID 1.3.101.112.
var oidEd25519 = []byte{0x06, 0x03, 0x2b, 0x65, 0x70}

// tokenSession is a logged-in session on the token an officer key uses.
// It lives as long as the process (hsmofficer runs one command).
type tokenSession struct {
	ctx  *pkcs11.Ctx
	sess pkcs11.SessionHandle
	mu   sync.Mutex
}

func (t *tool) openTokenSession(label string) (*tokenSession, error) {
	module := os.Getenv(pkcs11ModuleEnv)
	if module == "" {
		return nil, errors.New("set " + pkcs11ModuleEnv + " to the token's PKCS#11 module (e.g. /usr/lib/x86_64-linux-gnu/opensc-pkcs11.so)")
	}
	ctx := pkcs11.New(module)
	if ctx == nil {
		return nil, fmt.Errorf("can't load the PKCS#11 module %s", module)
	}
	if err := ctx.Initialize(); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		return nil, fmt.Errorf("%s: C_Initialize: %w", module, err)
	}
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		return nil, fmt.Errorf("%s: C_GetSlotList: %w", module, err)
	}
	for _, slot := range slots {
		info, err := ctx.GetTokenInfo(slot)
		if err != nil || strings.TrimRight(info.Label, " \x00") != label {
			continue
		}
		sess, err := ctx.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
		if err != nil {
			return nil, fmt.Errorf("token %q: C_OpenSession: %w", label, err)
		}
		pin, err := t.secret(tokenPINEnv, "token PIN", fmt.Sprintf("PIN of PKCS#11 token %q", label), false)
		if err != nil {
			ctx.CloseSession(sess)
			return nil, err
		}
		// Log in afresh, so the PIN is checked even if this process
		// logged in before (PKCS#11 logins are per application).
		_ = ctx.Logout(sess)
		err = ctx.Login(sess, pkcs11.CKU_USER, string(pin))
		clear(pin)
		if err != nil {
			ctx.CloseSession(sess)
			return nil, fmt.Errorf("token %q: log in: %w", label, err)
		}
		return &tokenSession{ctx: ctx, sess: sess}, nil
	}
	return nil, fmt.Errorf("no PKCS#11 token labelled %q in %s", label, module)
}

// tokenSigner is an Ed25519 private key in a token, as a crypto.Signer.
type tokenSigner struct {
	ts  *tokenSession
	key pkcs11.ObjectHandle
	pub ed25519.PublicKey
}

func (s *tokenSigner) Public() crypto.PublicKey { return s.pub }

// Sign signs msg with CKM_EDDSA (pure Ed25519: opts must be crypto.Hash(0)).
func (s *tokenSigner) Sign(_ io.Reader, msg []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts.HashFunc() != 0 {
		return nil, errors.New("token Ed25519 keys sign messages, not digests")
	}
	s.ts.mu.Lock()
	defer s.ts.mu.Unlock()
	if err := s.ts.ctx.SignInit(s.ts.sess, []*pkcs11.Mechanism{pkcs11.NewMechanism(ckmEdDSA, nil)}, s.key); err != nil {
		return nil, fmt.Errorf("C_SignInit: %w", err)
	}
	return s.ts.ctx.Sign(s.ts.sess, msg)
}

// publicFromPoint reads an Ed25519 CKA_EC_POINT: a DER OCTET STRING (the
// standard form) or the 32 raw bytes.
func publicFromPoint(v []byte) (ed25519.PublicKey, error) {
	var inner []byte
	if rest, err := asn1.Unmarshal(v, &inner); err == nil && len(rest) == 0 {
		v = inner
	}
	if len(v) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("the token's Ed25519 public key is %d bytes", len(v))
	}
	return ed25519.PublicKey(v), nil
}

func (t *tool) generateTokenKey(token, label string) (crypto.Signer, quorum.TokenRef, error) {
	ts, err := t.openTokenSession(token)
	if err != nil {
		return nil, quorum.TokenRef{}, err
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return nil, quorum.TokenRef{}, err
	}
	pubH, privH, err := ts.ctx.GenerateKeyPair(ts.sess, []*pkcs11.Mechanism{pkcs11.NewMechanism(ckmECEdwardsKeyPairGen, nil)},
		[]*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
			pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, oidEd25519),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
			pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		},
		[]*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
			pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
			pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		})
	if err != nil {
		return nil, quorum.TokenRef{}, fmt.Errorf("C_GenerateKeyPair (Ed25519): %w", err)
	}
	attrs, err := ts.ctx.GetAttributeValue(ts.sess, pubH, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil)})
	if err != nil {
		return nil, quorum.TokenRef{}, fmt.Errorf("read the public key: %w", err)
	}
	pub, err := publicFromPoint(attrs[0].Value)
	if err != nil {
		return nil, quorum.TokenRef{}, err
	}
	return &tokenSigner{ts: ts, key: privH, pub: pub}, quorum.TokenRef{Token: token, Label: label, ID: id}, nil
}

func (t *tool) openTokenKey(ref quorum.TokenRef) (crypto.Signer, error) {
	ts, err := t.openTokenSession(ref.Token)
	if err != nil {
		return nil, err
	}
	find := func(class uint) (pkcs11.ObjectHandle, error) {
		if err := ts.ctx.FindObjectsInit(ts.sess, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, ckkECEdwards),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, ref.Label),
			pkcs11.NewAttribute(pkcs11.CKA_ID, ref.ID),
		}); err != nil {
			return 0, err
		}
		objs, _, err := ts.ctx.FindObjects(ts.sess, 2)
		ts.ctx.FindObjectsFinal(ts.sess)
		if err != nil {
			return 0, err
		}
		if len(objs) != 1 {
			return 0, fmt.Errorf("%d keys labelled %q with the recorded id in the token, want 1", len(objs), ref.Label)
		}
		return objs[0], nil
	}
	priv, err := find(pkcs11.CKO_PRIVATE_KEY)
	if err != nil {
		return nil, err
	}
	pubH, err := find(pkcs11.CKO_PUBLIC_KEY)
	if err != nil {
		return nil, err
	}
	attrs, err := ts.ctx.GetAttributeValue(ts.sess, pubH, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil)})
	if err != nil {
		return nil, fmt.Errorf("read the public key: %w", err)
	}
	pub, err := publicFromPoint(attrs[0].Value)
	if err != nil {
		return nil, err
	}
	return &tokenSigner{ts: ts, key: priv, pub: pub}, nil
}
