package attest_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/hsmgate/hsmgate/attest"
)

func TestGoodBoot(t *testing.T) {
	_, tpm := started(t)
	goodBoot.measure(t, tpm)
	enr := enroll(t, tpm)

	n := nonce(t)
	st, err := attest.Verify(attestJSON(t, tpm, n), *enr, n, tlsKeyHash, goodBoot.policy())
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !bytes.Equal(st.ImageDigest, digest(goodBoot.image)) ||
		!bytes.Equal(st.BinaryDigest, digest(goodBoot.binary)) ||
		!bytes.Equal(st.ConfigDigest, digest(goodBoot.config)) {
		t.Errorf("boot state digests = %x %x %x", st.ImageDigest, st.BinaryDigest, st.ConfigDigest)
	}
	if len(st.Events) != 3 || string(st.Manifest) != `{"image":"v1"}` {
		t.Errorf("boot state = %+v", st)
	}

	sealed, err := tpm.SealCurrent([]byte("slot PIN 1234"))
	if err != nil {
		t.Fatalf("SealCurrent: %v", err)
	}
	got, err := tpm.Unseal(sealed)
	if err != nil {
		t.Fatalf("Unseal: %v", err)
	}
	if string(got) != "slot PIN 1234" {
		t.Errorf("Unseal = %q", got)
	}
}

// TestConcurrentUse: the TPM's methods may be called from many goroutines
// (run with -race).
func TestConcurrentUse(t *testing.T) {
	_, tpm := started(t)
	goodBoot.measure(t, tpm)
	enr := enroll(t, tpm)
	sealed, err := tpm.SealCurrent(pin)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 16)
	for i := 0; i < 4; i++ {
		go func() {
			n := make([]byte, 16)
			n[0] = byte(i)
			doc, err := tpm.Attest(n, tlsKeyHash, nil)
			if err == nil {
				var b []byte
				if b, err = json.Marshal(doc); err == nil {
					_, err = attest.Verify(b, *enr, n, tlsKeyHash, goodBoot.policy())
				}
			}
			errs <- err
		}()
		go func() {
			got, err := tpm.Unseal(sealed)
			if err == nil && !bytes.Equal(got, pin) {
				err = errors.New("wrong secret")
			}
			errs <- err
		}()
		go func() {
			_, err := tpm.Measure(attest.KindImage, "hsmgate-image", digest(goodBoot.image))
			errs <- err
		}()
		go func() {
			_, err := tpm.PCRs()
			errs <- err
		}()
	}
	for i := 0; i < 16; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
