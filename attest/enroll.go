package attest

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// akUnique makes the AK's primary-key derivation specific to hsmgate.
var akUnique = sha256.Sum256([]byte("hsmgate.attest.ak.v1"))

// akTemplate is the attestation key: an ECC P-256 restricted signing key
// (ECDSA with SHA-256), fixedTPM and fixedParent, its private part generated
// in the TPM, derived as a primary key of the endorsement hierarchy (so its
// quotes carry the real reset/restart counters, which the TPM obfuscates for
// storage-hierarchy keys, and it is re-derived identically after a restart
// without any stored blob or NV handle).
var akTemplate = tpm2.TPMTPublic{
	Type:    tpm2.TPMAlgECC,
	NameAlg: tpm2.TPMAlgSHA256,
	ObjectAttributes: tpm2.TPMAObject{
		FixedTPM:            true,
		FixedParent:         true,
		SensitiveDataOrigin: true,
		UserWithAuth:        true,
		NoDA:                true,
		Restricted:          true,
		SignEncrypt:         true,
	},
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
		Scheme: tpm2.TPMTECCScheme{
			Scheme: tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{
				HashAlg: tpm2.TPMAlgSHA256,
			}),
		},
		CurveID: tpm2.TPMECCNistP256,
		KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
	}),
	Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: akUnique[:]},
		Y: tpm2.TPM2BECCParameter{Buffer: make([]byte, 32)},
	}),
}

// EnrollmentRequest is what a gateway sends a verifier to enroll: its EK and
// AK public areas (TPMT_PUBLIC, TPM wire format) and the AK's TPM Name.
type EnrollmentRequest struct {
	EKPublic []byte `json:"ekPublic"`
	AKPublic []byte `json:"akPublic"`
	AKName   []byte `json:"akName"`
}

// Challenge is a credential-activation challenge: a credential encrypted to
// the trusted EK and bound to the AK's Name (TPM2_MakeCredential's
// credentialBlob and secret, made in software).
type Challenge struct {
	CredentialBlob  []byte `json:"credentialBlob"`
	EncryptedSecret []byte `json:"encryptedSecret"`
}

// Enrollment is the verifier's record of an enrolled gateway TPM: the EK it
// trusts and the AK proven (by credential activation) to live in the same
// TPM. Verify accepts quotes signed by this AK and no other — the lesson of
// Keylime's CVE-2022-1053, where a quote key other than the activated one
// was accepted.
type Enrollment struct {
	EKPublic []byte `json:"ekPublic"`
	AKPublic []byte `json:"akPublic"`
	AKName   []byte `json:"akName"`
}

// Enrollment errors.
var (
	// ErrAKPublic: the AK public area is malformed or not a restricted,
	// fixedTPM, TPM-generated signing key.
	ErrAKPublic = errors.New("attest: unacceptable attestation key")
	// ErrActivation: the TPM did not recover the credential: the challenge
	// was not answered by the TPM holding the trusted EK and the named AK.
	ErrActivation = errors.New("attest: credential activation failed")
)

// EnrollmentRequest returns this TPM's EK and AK for enrollment.
func (t *TPM) EnrollmentRequest() (*EnrollmentRequest, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tpm == nil {
		return nil, errClosed
	}
	ek, err := t.ek()
	if err != nil {
		return nil, err
	}
	defer t.flush(ek.handle)
	ak, err := t.ak()
	if err != nil {
		return nil, err
	}
	defer t.flush(ak.handle)
	return &EnrollmentRequest{
		EKPublic: tpm2.Marshal(ek.public),
		AKPublic: tpm2.Marshal(ak.public),
		AKName:   bytes.Clone(ak.name.Buffer),
	}, nil
}

// parseAKPublic parses an AK public area, checks that it is an acceptable
// attestation key and returns it with its Name (computed, never taken from
// the sender).
func parseAKPublic(b []byte) (*tpm2.TPMTPublic, []byte, error) {
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](b)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrAKPublic, err)
	}
	if !bytes.Equal(tpm2.Marshal(*pub), b) {
		return nil, nil, fmt.Errorf("%w: trailing bytes after the public area", ErrAKPublic)
	}
	a := pub.ObjectAttributes
	switch {
	case pub.NameAlg != tpm2.TPMAlgSHA256:
		return nil, nil, fmt.Errorf("%w: name algorithm %#x, want SHA-256", ErrAKPublic, uint16(pub.NameAlg))
	case !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin:
		return nil, nil, fmt.Errorf("%w: not a fixedTPM, fixedParent, TPM-generated key", ErrAKPublic)
	case !a.Restricted || !a.SignEncrypt || a.Decrypt:
		return nil, nil, fmt.Errorf("%w: not a restricted signing key", ErrAKPublic)
	}
	switch pub.Type {
	case tpm2.TPMAlgECC:
		p, err := pub.Parameters.ECCDetail()
		if err != nil || p.CurveID != tpm2.TPMECCNistP256 || p.Scheme.Scheme != tpm2.TPMAlgECDSA {
			return nil, nil, fmt.Errorf("%w: want ECDSA on P-256", ErrAKPublic)
		}
	case tpm2.TPMAlgRSA:
		p, err := pub.Parameters.RSADetail()
		if err != nil || p.KeyBits < 2048 || (p.Scheme.Scheme != tpm2.TPMAlgRSASSA && p.Scheme.Scheme != tpm2.TPMAlgRSAPSS) {
			return nil, nil, fmt.Errorf("%w: want RSASSA or RSAPSS with at least 2048 bits", ErrAKPublic)
		}
	default:
		return nil, nil, fmt.Errorf("%w: key type %#x", ErrAKPublic, uint16(pub.Type))
	}
	if _, err := tpm2.Pub(*pub); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrAKPublic, err)
	}
	name, err := tpm2.ObjectName(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrAKPublic, err)
	}
	return pub, name.Buffer, nil
}

// PendingEnrollment is the verifier's state between MakeCredential and
// Complete: the trusted EK, the AK the challenge was made for, and the
// challenge's secret. It carries the AK itself, so the enrollment record
// can only name the AK the TPM proved it holds. It is JSON-serialisable for
// a verifier that keeps it between requests; Secret must stay with the
// verifier.
type PendingEnrollment struct {
	EKPublic []byte `json:"ekPublic"`
	AKPublic []byte `json:"akPublic"`
	AKName   []byte `json:"akName"`
	Secret   []byte `json:"secret"`
}

// MakeCredential is the verifier's first enrollment step, done in software.
// trustedEK is the EK public area (TPMT_PUBLIC) the verifier trusts for this
// gateway — from its EK certificate or recorded at provisioning; req's own
// EKPublic must equal it. The AK public area is checked (restricted,
// fixedTPM, TPM-generated signing key) and the challenge is bound to the
// Name computed from it. The Challenge goes to the gateway; the
// PendingEnrollment stays with the verifier.
func MakeCredential(trustedEK []byte, req *EnrollmentRequest) (*Challenge, *PendingEnrollment, error) {
	if !bytes.Equal(req.EKPublic, trustedEK) {
		return nil, nil, errors.New("attest: the enrollment request names an EK other than the trusted one")
	}
	ekPub, err := tpm2.Unmarshal[tpm2.TPMTPublic](trustedEK)
	if err != nil {
		return nil, nil, fmt.Errorf("attest: trusted EK: %w", err)
	}
	ek, err := tpm2.ImportEncapsulationKey(ekPub)
	if err != nil {
		return nil, nil, fmt.Errorf("attest: trusted EK: %w", err)
	}
	_, name, err := parseAKPublic(req.AKPublic)
	if err != nil {
		return nil, nil, err
	}
	if !bytes.Equal(name, req.AKName) {
		return nil, nil, fmt.Errorf("%w: the AK name does not match its public area", ErrAKPublic)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, nil, err
	}
	blob, enc, err := tpm2.CreateCredential(rand.Reader, ek, name, secret)
	if err != nil {
		return nil, nil, fmt.Errorf("attest: making credential: %w", err)
	}
	return &Challenge{CredentialBlob: blob, EncryptedSecret: enc},
		&PendingEnrollment{
			EKPublic: bytes.Clone(trustedEK),
			AKPublic: bytes.Clone(req.AKPublic),
			AKName:   name,
			Secret:   secret,
		}, nil
}

// ActivateCredential is the gateway's answer to a Challenge: the TPM
// decrypts the credential with the EK, and releases it only if the AK named
// in the challenge is loaded in the same TPM.
func (t *TPM) ActivateCredential(ch *Challenge) ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tpm == nil {
		return nil, errClosed
	}
	ek, err := t.ek()
	if err != nil {
		return nil, err
	}
	defer t.flush(ek.handle)
	ak, err := t.ak()
	if err != nil {
		return nil, err
	}
	defer t.flush(ak.handle)
	eAuth := t.cfg.EndorsementAuth
	rsp, err := tpm2.ActivateCredential{
		ActivateHandle: tpm2.AuthHandle{Handle: ak.handle, Name: ak.name, Auth: tpm2.PasswordAuth(nil)},
		KeyHandle: tpm2.AuthHandle{Handle: ek.handle, Name: ek.name, Auth: tpm2.Policy(tpm2.TPMAlgSHA256, 16,
			func(tp transport.TPM, s tpm2.TPMISHPolicy, nonce tpm2.TPM2BNonce) error {
				_, err := tpm2.PolicySecret{
					AuthHandle:    tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(eAuth)},
					PolicySession: s,
					NonceTPM:      nonce,
				}.Execute(tp)
				return err
			})},
		CredentialBlob: tpm2.TPM2BIDObject{Buffer: ch.CredentialBlob},
		Secret:         tpm2.TPM2BEncryptedSecret{Buffer: ch.EncryptedSecret},
	}.Execute(t.tpm)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrActivation, err)
	}
	return rsp.CertInfo.Buffer, nil
}

// Complete is the verifier's last step: response is what the gateway's
// ActivateCredential returned. If it is the challenge's secret, the AK of
// this pending enrollment is bound to the trusted EK in the returned
// Enrollment, which the verifier keeps and gives to Verify.
func (p *PendingEnrollment) Complete(response []byte) (*Enrollment, error) {
	if len(p.Secret) == 0 || subtle.ConstantTimeCompare(p.Secret, response) != 1 {
		return nil, fmt.Errorf("%w: the response does not match the challenge", ErrActivation)
	}
	_, name, err := parseAKPublic(p.AKPublic)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(name, p.AKName) {
		return nil, fmt.Errorf("%w: the AK name does not match its public area", ErrAKPublic)
	}
	return &Enrollment{
		EKPublic: bytes.Clone(p.EKPublic),
		AKPublic: bytes.Clone(p.AKPublic),
		AKName:   name,
	}, nil
}
