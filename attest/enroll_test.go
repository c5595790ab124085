package attest_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/hsmgate/hsmgate/attest"
)

// TestCredentialActivation: the right TPM answers the challenge; a TPM
// without the trusted EK cannot, whichever way it is attempted.
func TestCredentialActivation(t *testing.T) {
	_, a := started(t)
	_, b := started(t)
	reqA, err := a.EnrollmentRequest()
	if err != nil {
		t.Fatal(err)
	}
	reqB, err := b.EnrollmentRequest()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(reqA.EKPublic, reqB.EKPublic) || bytes.Equal(reqA.AKName, reqB.AKName) {
		t.Fatal("two swtpms share keys")
	}
	// The AK is re-derived identically.
	again, err := a.EnrollmentRequest()
	if err != nil || !bytes.Equal(again.AKPublic, reqA.AKPublic) || !bytes.Equal(again.EKPublic, reqA.EKPublic) {
		t.Fatalf("EnrollmentRequest is not stable: %v", err)
	}

	t.Run("right EK", func(t *testing.T) {
		ch, pending, err := attest.MakeCredential(reqA.EKPublic, reqA)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := a.ActivateCredential(ch)
		if err != nil {
			t.Fatal(err)
		}
		enr, err := pending.Complete(resp)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(enr.AKName, reqA.AKName) || !bytes.Equal(enr.AKPublic, reqA.AKPublic) || !bytes.Equal(enr.EKPublic, reqA.EKPublic) {
			t.Errorf("enrollment %+v does not bind the EK and AK", enr)
		}
	})

	t.Run("another TPM's EK", func(t *testing.T) {
		// The verifier trusts B's EK; A claims it and asks for a challenge
		// for A's AK. Only B's TPM could decrypt it, and B lacks A's AK.
		forged := *reqA
		forged.EKPublic = reqB.EKPublic
		ch, pending, err := attest.MakeCredential(reqB.EKPublic, &forged)
		if err != nil {
			t.Fatal(err)
		}
		if resp, err := a.ActivateCredential(ch); !errors.Is(err, attest.ErrActivation) {
			t.Fatalf("TPM A activated a credential for B's EK: %x, %v", resp, err)
		}
		if resp, err := b.ActivateCredential(ch); !errors.Is(err, attest.ErrActivation) {
			t.Fatalf("TPM B activated a credential for A's AK: %x, %v", resp, err)
		}
		if _, err := pending.Complete(make([]byte, 32)); !errors.Is(err, attest.ErrActivation) {
			t.Fatalf("Complete accepted a guessed response: %v", err)
		}
	})

	t.Run("request names an untrusted EK", func(t *testing.T) {
		if _, _, err := attest.MakeCredential(reqB.EKPublic, reqA); err == nil {
			t.Fatal("MakeCredential accepted a request with another EK")
		}
	})

	t.Run("response to another challenge", func(t *testing.T) {
		// Each pending enrollment completes only with its own secret: a
		// response B produced for its own challenge does not enroll A's AK.
		_, pendingA, err := attest.MakeCredential(reqA.EKPublic, reqA)
		if err != nil {
			t.Fatal(err)
		}
		chB, _, err := attest.MakeCredential(reqB.EKPublic, reqB)
		if err != nil {
			t.Fatal(err)
		}
		respB, err := b.ActivateCredential(chB)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pendingA.Complete(respB); !errors.Is(err, attest.ErrActivation) {
			t.Fatalf("Complete = %v, want ErrActivation", err)
		}
	})

	t.Run("AK name not matching its public area", func(t *testing.T) {
		bad := *reqA
		bad.AKName = reqB.AKName
		if _, _, err := attest.MakeCredential(reqA.EKPublic, &bad); !errors.Is(err, attest.ErrAKPublic) {
			t.Fatalf("MakeCredential = %v, want ErrAKPublic", err)
		}
	})

	t.Run("AK not a restricted TPM key", func(t *testing.T) {
		pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](reqA.AKPublic)
		if err != nil {
			t.Fatal(err)
		}
		for name, f := range map[string]func(p *tpm2.TPMTPublic){
			"unrestricted":        func(p *tpm2.TPMTPublic) { p.ObjectAttributes.Restricted = false },
			"not fixedTPM":        func(p *tpm2.TPMTPublic) { p.ObjectAttributes.FixedTPM = false },
			"imported":            func(p *tpm2.TPMTPublic) { p.ObjectAttributes.SensitiveDataOrigin = false },
			"decrypt key":         func(p *tpm2.TPMTPublic) { p.ObjectAttributes.Decrypt = true; p.ObjectAttributes.SignEncrypt = false },
			"SHA-1 name":          func(p *tpm2.TPMTPublic) { p.NameAlg = tpm2.TPMAlgSHA1 },
			"keyed hash, no sign": func(p *tpm2.TPMTPublic) { p.Type = tpm2.TPMAlgKeyedHash },
		} {
			mod := *pub
			f(&mod)
			var req attest.EnrollmentRequest
			req.EKPublic = reqA.EKPublic
			func() {
				defer func() {
					if r := recover(); r != nil {
						req.AKPublic = []byte{0, 1}
					}
				}()
				req.AKPublic = tpm2.Marshal(mod)
			}()
			if n, err := tpm2.ObjectName(&mod); err == nil {
				req.AKName = n.Buffer
			}
			if _, _, err := attest.MakeCredential(reqA.EKPublic, &req); !errors.Is(err, attest.ErrAKPublic) {
				t.Errorf("%s: MakeCredential = %v, want ErrAKPublic", name, err)
			}
		}
	})
}
