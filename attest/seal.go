package attest

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// MaxSealedSize is the most a sealed object holds (TPM2B_SENSITIVE_DATA,
// MAX_SYM_DATA). Seal a key for anything larger.
const MaxSealedSize = 128

// SealedVersion is the Sealed format version.
const SealedVersion = 1

// Sealed is a secret sealed to PCR values: a TPM keyed-hash object under the
// owner hierarchy's storage root key whose only authorization is
// PolicyPCR(PCRs). Public and Private are the TPM's TPM2B_PUBLIC and
// TPM2B_PRIVATE contents; the private part is encrypted by the SRK, so a
// Sealed is safe to store anywhere (JSON via encoding/json). It loads only
// in the TPM that made it and only until that TPM's owner hierarchy is
// cleared; it unseals only while the PCRs hold the values in PCRs.
type Sealed struct {
	Version int `json:"version"`
	// PCRs are the SHA-256 PCR values the secret is sealed to.
	PCRs         map[int]HexBytes `json:"pcrs"`
	PolicyDigest HexBytes         `json:"policyDigest"`
	Public       []byte           `json:"public"`
	Private      []byte           `json:"private"`
}

// Sealing errors.
var (
	// ErrPCRPolicy: the PCRs do not hold the values the secret is sealed
	// to: this boot measured something else (the error says which PCR).
	ErrPCRPolicy = errors.New("attest: PCRs do not satisfy the sealing policy")
	// ErrSealedUnloadable: the TPM rejects the sealed object: it was made
	// by another TPM, its owner hierarchy was cleared, or it was altered.
	ErrSealedUnloadable = errors.New("attest: sealed object cannot be loaded by this TPM")
)

// sealPolicy returns the PolicyPCR digest for the given PCR values.
func sealPolicy(pcrs map[int][]byte) (tpm2.TPMLPCRSelection, []byte, error) {
	idx := make([]int, 0, len(pcrs))
	for p, v := range pcrs {
		if p < 0 || p > 23 {
			return tpm2.TPMLPCRSelection{}, nil, fmt.Errorf("attest: PCR %d", p)
		}
		if len(v) != sha256.Size {
			return tpm2.TPMLPCRSelection{}, nil, fmt.Errorf("attest: PCR %d value is %d bytes, want %d", p, len(v), sha256.Size)
		}
		idx = append(idx, p)
	}
	if len(idx) == 0 {
		return tpm2.TPMLPCRSelection{}, nil, errors.New("attest: sealing to no PCRs")
	}
	sort.Ints(idx)
	sel := pcrSelection(idx)
	calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		return tpm2.TPMLPCRSelection{}, nil, err
	}
	cmd := tpm2.PolicyPCR{Pcrs: sel, PcrDigest: tpm2.TPM2BDigest{Buffer: pcrDigest(idx, pcrs)}}
	if err := cmd.Update(calc); err != nil {
		return tpm2.TPMLPCRSelection{}, nil, err
	}
	return sel, calc.Hash().Digest, nil
}

// Seal seals secret (at most MaxSealedSize bytes) to the given SHA-256 PCR
// values: the current ones (PCRs), or predicted ones (PredictPCRs) for a
// planned update. The secret travels to the TPM encrypted in a session
// salted with the SRK.
func (t *TPM) Seal(secret []byte, pcrs map[int][]byte) (*Sealed, error) {
	if len(secret) == 0 || len(secret) > MaxSealedSize {
		return nil, fmt.Errorf("attest: sealed secret is %d bytes, want 1 to %d", len(secret), MaxSealedSize)
	}
	_, policy, err := sealPolicy(pcrs)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tpm == nil {
		return nil, errClosed
	}
	srk, err := t.srk()
	if err != nil {
		return nil, err
	}
	defer t.flush(srk.handle)
	rsp, err := tpm2.Create{
		ParentHandle: tpm2.AuthHandle{
			Handle: srk.handle,
			Name:   srk.name,
			Auth: tpm2.HMAC(tpm2.TPMAlgSHA256, 16,
				tpm2.AESEncryption(128, tpm2.EncryptIn),
				tpm2.Salted(srk.handle, srk.public)),
		},
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: secret}),
		}},
		InPublic: tpm2.New2B(tpm2.TPMTPublic{
			Type:    tpm2.TPMAlgKeyedHash,
			NameAlg: tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{
				FixedTPM:        true,
				FixedParent:     true,
				NoDA:            true,
				AdminWithPolicy: true,
				// UserWithAuth clear: the policy is the only way in.
			},
			AuthPolicy: tpm2.TPM2BDigest{Buffer: policy},
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
				Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull},
			}),
		}),
	}.Execute(t.tpm)
	if err != nil {
		return nil, fmt.Errorf("attest: sealing: %w", err)
	}
	s := &Sealed{
		Version:      SealedVersion,
		PCRs:         map[int]HexBytes{},
		PolicyDigest: policy,
		Public:       bytes.Clone(rsp.OutPublic.Bytes()),
		Private:      bytes.Clone(rsp.OutPrivate.Buffer),
	}
	for p, v := range pcrs {
		s.PCRs[p] = bytes.Clone(v)
	}
	return s, nil
}

// SealCurrent seals secret to the current values of the allocated PCRs.
func (t *TPM) SealCurrent(secret []byte) (*Sealed, error) {
	pcrs, err := t.PCRs()
	if err != nil {
		return nil, err
	}
	return t.Seal(secret, pcrs)
}

// Unseal recovers a sealed secret. It fails with ErrPCRPolicy, naming the
// PCRs (and measurement kinds) that differ, when this boot's measurements
// are not those the secret was sealed to, and with ErrSealedUnloadable when
// this TPM cannot load the object. The secret travels back encrypted in a
// session salted with the SRK.
func (t *TPM) Unseal(s *Sealed) ([]byte, error) {
	if s == nil || s.Version != SealedVersion {
		return nil, fmt.Errorf("%w: not a version-%d sealed object", ErrSealedUnloadable, SealedVersion)
	}
	want := map[int][]byte{}
	for p, v := range s.PCRs {
		want[p] = v
	}
	sel, policy, err := sealPolicy(want)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSealedUnloadable, err)
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](s.Public)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSealedUnloadable, err)
	}
	if !bytes.Equal(pub.AuthPolicy.Buffer, policy) || !bytes.Equal(s.PolicyDigest, policy) {
		return nil, fmt.Errorf("%w: its policy does not match its PCR values", ErrSealedUnloadable)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tpm == nil {
		return nil, errClosed
	}
	srk, err := t.srk()
	if err != nil {
		return nil, err
	}
	defer t.flush(srk.handle)
	obj, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: srk.handle, Name: srk.name, Auth: tpm2.PasswordAuth(nil)},
		InPublic:     tpm2.BytesAs2B[tpm2.TPMTPublic](s.Public),
		InPrivate:    tpm2.TPM2BPrivate{Buffer: s.Private},
	}.Execute(t.tpm)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSealedUnloadable, err)
	}
	defer t.flush(obj.ObjectHandle)
	rsp, err := tpm2.Unseal{
		ItemHandle: tpm2.AuthHandle{
			Handle: obj.ObjectHandle,
			Name:   obj.Name,
			Auth: tpm2.Policy(tpm2.TPMAlgSHA256, 16,
				func(tp transport.TPM, h tpm2.TPMISHPolicy, _ tpm2.TPM2BNonce) error {
					// An empty digest makes the TPM use the PCRs' current
					// values; a mismatch then fails the Unseal.
					_, err := tpm2.PolicyPCR{PolicySession: h, Pcrs: sel}.Execute(tp)
					return err
				},
				tpm2.AESEncryption(128, tpm2.EncryptOut),
				tpm2.Salted(srk.handle, srk.public)),
		},
	}.Execute(t.tpm)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCPolicyFail) {
			return nil, t.pcrPolicyError(want, err)
		}
		return nil, fmt.Errorf("attest: unsealing: %w", err)
	}
	return rsp.OutData.Buffer, nil
}

// pcrPolicyError explains an unseal refused by policy: which PCRs differ.
func (t *TPM) pcrPolicyError(want map[int][]byte, cause error) error {
	idx := make([]int, 0, len(want))
	for p := range want {
		idx = append(idx, p)
	}
	sort.Ints(idx)
	cur, err := t.readPCRs(idx)
	if err != nil {
		return fmt.Errorf("%w (%v)", ErrPCRPolicy, cause)
	}
	var diff []string
	for _, p := range idx {
		if !bytes.Equal(cur[p], want[p]) {
			d := fmt.Sprintf("PCR %d", p)
			if k, ok := t.alloc.Kind(p); ok {
				if e, ok := t.log.Find(k); ok {
					d += fmt.Sprintf(" (%s; this boot measured %q %x)", k, e.Name, []byte(e.Digest))
				} else {
					d += fmt.Sprintf(" (%s; not measured in this boot)", k)
				}
			}
			diff = append(diff, d)
		}
	}
	if len(diff) == 0 {
		return fmt.Errorf("%w (%v)", ErrPCRPolicy, cause)
	}
	return fmt.Errorf("%w: these differ from the sealed values: %s", ErrPCRPolicy, strings.Join(diff, ", "))
}

// Marshal encodes a Sealed as JSON.
func (s *Sealed) Marshal() ([]byte, error) { return json.Marshal(s) }

// ParseSealed decodes a Sealed from JSON.
func ParseSealed(b []byte) (*Sealed, error) {
	var s Sealed
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSealedUnloadable, err)
	}
	return &s, nil
}
