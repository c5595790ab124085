package attest_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/hsmgate/hsmgate/attest"
)

// TestVerifyRejects runs every Verify check against a document that fails
// exactly that check; its positive twin is the first case.
func TestVerifyRejects(t *testing.T) {
	sw, tpm := started(t)
	goodBoot.measure(t, tpm)
	enr := enroll(t, tpm)

	// Another TPM, enrolled in its own right, measuring the same boot.
	_, other := started(t)
	goodBoot.measure(t, other)
	otherEnr := enroll(t, other)

	n := nonce(t)
	doc := attestJSON(t, tpm, n)
	oldNonce := nonce(t)
	oldDoc := attestJSON(t, tpm, oldNonce)
	otherDoc := attestJSON(t, other, n)

	// A TPMS_ATTEST of another type (a certification of the AK by itself),
	// signed by the enrolled AK with the right extraData.
	certifyDoc := func() []byte {
		tp := raw(t, sw)
		ak, err := tpm2.CreatePrimary{
			PrimaryHandle: tpm2.TPMRHEndorsement,
			InPublic:      tpm2.New2B(attest.AKTemplate),
		}.Execute(tp)
		if err != nil {
			t.Fatal(err)
		}
		defer tpm2.FlushContext{FlushHandle: ak.ObjectHandle}.Execute(tp)
		h := tpm2.AuthHandle{Handle: ak.ObjectHandle, Name: ak.Name, Auth: tpm2.PasswordAuth(nil)}
		rsp, err := tpm2.Certify{
			ObjectHandle:   h,
			SignHandle:     h,
			QualifyingData: tpm2.TPM2BData{Buffer: attest.ExtraData(n, tlsKeyHash, []byte(`{"image":"v1"}`))},
			InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		}.Execute(tp)
		if err != nil {
			t.Fatal(err)
		}
		return editDoc(t, doc, func(d *attest.Document) {
			d.Quote = rsp.CertifyInfo.Bytes()
			d.Signature = tpm2.Marshal(rsp.Signature)
		})
	}()

	policy := goodBoot.policy()
	for _, c := range []struct {
		name   string
		doc    []byte
		enr    *attest.Enrollment
		nonce  []byte
		tls    []byte
		policy *attest.GoldenPolicy
		want   error // nil: must verify
	}{
		{name: "good", doc: doc},
		{name: "malformed document", doc: []byte(`{"version":1,`), want: attest.ErrMalformed},
		{name: "unknown version", doc: editDoc(t, doc, func(d *attest.Document) { d.Version = 2 }), want: attest.ErrMalformed},
		// 1. signature
		{name: "other AK", doc: doc, enr: otherEnr, want: attest.ErrSignature},
		{name: "quote of another TPM", doc: otherDoc, want: attest.ErrSignature},
		{name: "flipped quote bit", doc: editDoc(t, doc, func(d *attest.Document) { d.Quote[len(d.Quote)-1] ^= 1 }), want: attest.ErrSignature},
		{name: "flipped signature bit", doc: editDoc(t, doc, func(d *attest.Document) { d.Signature[len(d.Signature)-1] ^= 1 }), want: attest.ErrSignature},
		{name: "no signature", doc: editDoc(t, doc, func(d *attest.Document) { d.Signature = nil }), want: attest.ErrSignature},
		// 2. quote type
		{name: "certify instead of quote", doc: certifyDoc, want: attest.ErrQuoteType},
		// 3. nonce / TLS key / extraData
		{name: "wrong nonce", doc: doc, nonce: nonce(t), want: attest.ErrNonce},
		{name: "replayed old quote", doc: oldDoc, want: attest.ErrNonce},
		{name: "replayed old quote with nonce field rewritten", doc: editDoc(t, oldDoc, func(d *attest.Document) { d.Nonce = n }), want: attest.ErrExtraData},
		{name: "other TLS key", doc: doc, tls: digest("a man in the middle's key"), want: attest.ErrTLSKey},
		{name: "TLS key field rewritten", doc: editDoc(t, doc, func(d *attest.Document) { d.TLSKeyHash = digest("x") }), tls: digest("x"), want: attest.ErrExtraData},
		{name: "swapped manifest", doc: editDoc(t, doc, func(d *attest.Document) { d.Manifest = []byte(`{"image":"v0"}`) }), want: attest.ErrExtraData},
		// 4. PCR digest
		{name: "altered PCR", doc: editDoc(t, doc, func(d *attest.Document) { d.PCRs[12][0] ^= 1 }), want: attest.ErrPCRDigest},
		{name: "missing PCR", doc: editDoc(t, doc, func(d *attest.Document) { delete(d.PCRs, 13) }), want: attest.ErrPCRDigest},
		{name: "unquoted PCR added", doc: editDoc(t, doc, func(d *attest.Document) { d.PCRs[9] = make([]byte, 32) }), want: attest.ErrPCRDigest},
		{name: "PCR allocation not quoted", doc: doc, policy: &attest.GoldenPolicy{
			PCRs: attest.PCRAllocation{Image: 12, Binary: 13, Config: 14}, ImageDigests: policy.ImageDigests,
			BinaryDigests: policy.BinaryDigests, ConfigDigests: policy.ConfigDigests,
		}, want: attest.ErrPCRDigest},
		// 5. event log replay
		{name: "event digest changed", doc: editDoc(t, doc, func(d *attest.Document) {
			editLog(t, d, func(l *attest.EventLog) { l.Events[0].Digest = digest("approved image") })
		}), policy: &attest.GoldenPolicy{ImageDigests: [][]byte{digest("approved image")}, BinaryDigests: policy.BinaryDigests, ConfigDigests: policy.ConfigDigests},
			want: attest.ErrEventLog},
		{name: "event name changed", doc: editDoc(t, doc, func(d *attest.Document) {
			editLog(t, d, func(l *attest.EventLog) { l.Events[1].Name = "/opt/other" })
		}), want: attest.ErrEventLog},
		{name: "event dropped", doc: editDoc(t, doc, func(d *attest.Document) {
			editLog(t, d, func(l *attest.EventLog) { l.Events = l.Events[:2] })
		}), want: attest.ErrEventLog},
		{name: "events reordered", doc: editDoc(t, doc, func(d *attest.Document) {
			editLog(t, d, func(l *attest.EventLog) { l.Events[0], l.Events[1] = l.Events[1], l.Events[0] })
		}), want: attest.ErrEventLog},
		{name: "event moved to another PCR", doc: editDoc(t, doc, func(d *attest.Document) {
			editLog(t, d, func(l *attest.EventLog) { l.Events[2].PCR = 14 })
		}), want: attest.ErrEventLog},
		{name: "event log not JSON", doc: editDoc(t, doc, func(d *attest.Document) { d.EventLog = json.RawMessage(`"x"`) }), want: attest.ErrEventLog},
		{name: "platform log smuggled in", doc: editDoc(t, doc, func(d *attest.Document) {
			d.PlatformEventLog = attest.EncodePlatformEventLog(nil)
		}), want: attest.ErrEventLog},
		// 6. golden policy
		{name: "unapproved image", doc: doc, policy: &attest.GoldenPolicy{ImageDigests: [][]byte{digest("image v2")}, BinaryDigests: policy.BinaryDigests, ConfigDigests: policy.ConfigDigests}, want: attest.ErrGoldenPolicy},
		{name: "unapproved binary", doc: doc, policy: &attest.GoldenPolicy{ImageDigests: policy.ImageDigests, BinaryDigests: [][]byte{digest("hsmgate v2")}, ConfigDigests: policy.ConfigDigests}, want: attest.ErrGoldenPolicy},
		{name: "unapproved config", doc: doc, policy: &attest.GoldenPolicy{ImageDigests: policy.ImageDigests, BinaryDigests: policy.BinaryDigests, ConfigDigests: [][]byte{digest("config B")}}, want: attest.ErrGoldenPolicy},
		{name: "empty policy approves nothing", doc: doc, policy: &attest.GoldenPolicy{}, want: attest.ErrGoldenPolicy},
		{name: "one of several approved images", doc: doc, policy: &attest.GoldenPolicy{ImageDigests: [][]byte{digest("image v2"), digest("image v1")}, BinaryDigests: policy.BinaryDigests, ConfigDigests: policy.ConfigDigests}},
		{name: "pinned firmware PCR not quoted", doc: doc, policy: &attest.GoldenPolicy{ImageDigests: policy.ImageDigests, BinaryDigests: policy.BinaryDigests, ConfigDigests: policy.ConfigDigests, PlatformPCRs: map[int][]byte{7: make([]byte, 32)}}, want: attest.ErrGoldenPolicy},
		// The order of the checks: the first failing one is reported.
		{name: "wrong nonce before altered PCR", doc: editDoc(t, doc, func(d *attest.Document) { d.PCRs[12][0] ^= 1 }), nonce: nonce(t), want: attest.ErrNonce},
		{name: "other AK before wrong nonce", doc: doc, enr: otherEnr, nonce: nonce(t), want: attest.ErrSignature},
		{name: "altered PCR before tampered log", doc: editDoc(t, doc, func(d *attest.Document) {
			d.PCRs[15][0] ^= 1
			editLog(t, d, func(l *attest.EventLog) { l.Events[2].Name = "x" })
		}), want: attest.ErrPCRDigest},
		{name: "tampered log before policy", doc: editDoc(t, doc, func(d *attest.Document) {
			editLog(t, d, func(l *attest.EventLog) { l.Events[2].Name = "x" })
		}), policy: &attest.GoldenPolicy{}, want: attest.ErrEventLog},
		{name: "bad enrollment record", doc: doc, enr: &attest.Enrollment{AKPublic: enr.AKPublic, AKName: otherEnr.AKName}, want: attest.ErrEnrollment},
	} {
		t.Run(c.name, func(t *testing.T) {
			e, nn, tls, p := enr, n, tlsKeyHash, policy
			if c.enr != nil {
				e = c.enr
			}
			if c.nonce != nil {
				nn = c.nonce
			}
			if c.tls != nil {
				tls = c.tls
			}
			if c.policy != nil {
				p = *c.policy
			}
			st, err := attest.Verify(c.doc, *e, nn, tls, p)
			if c.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if st == nil {
					t.Fatal("Verify returned no boot state")
				}
				return
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("Verify error = %v, want %v", err, c.want)
			}
			if st != nil {
				t.Error("Verify returned a boot state along with an error")
			}
			for _, other := range allVerifyErrors {
				if other != c.want && errors.Is(err, other) {
					t.Errorf("error %v also matches %v", err, other)
				}
			}
			t.Log(err)
		})
	}
}

var allVerifyErrors = []error{
	attest.ErrMalformed, attest.ErrEnrollment, attest.ErrSignature, attest.ErrQuoteType,
	attest.ErrNonce, attest.ErrTLSKey, attest.ErrExtraData, attest.ErrPCRDigest,
	attest.ErrEventLog, attest.ErrGoldenPolicy,
}

// TestVerifyMissingMeasurement: a boot that skipped its config measurement
// verifies as far as the log goes but is refused by the golden policy.
func TestVerifyMissingMeasurement(t *testing.T) {
	_, tpm := started(t)
	for _, k := range []string{attest.KindImage, attest.KindBinary} {
		if _, err := tpm.Measure(k, k, digest(map[string]string{attest.KindImage: goodBoot.image, attest.KindBinary: goodBoot.binary}[k])); err != nil {
			t.Fatal(err)
		}
	}
	enr := enroll(t, tpm)
	n := nonce(t)
	_, err := attest.Verify(attestJSON(t, tpm, n), *enr, n, tlsKeyHash, goodBoot.policy())
	if !errors.Is(err, attest.ErrGoldenPolicy) {
		t.Fatalf("Verify = %v, want ErrGoldenPolicy", err)
	}
}

func TestExtraDataBindsEachInput(t *testing.T) {
	base := attest.ExtraData([]byte("nonce-0123456789"), tlsKeyHash, []byte("m"))
	if len(base) != sha256.Size {
		t.Fatalf("len = %d", len(base))
	}
	for name, d := range map[string][]byte{
		"nonce":    attest.ExtraData([]byte("nonce-0123456788"), tlsKeyHash, []byte("m")),
		"tls":      attest.ExtraData([]byte("nonce-0123456789"), digest("other"), []byte("m")),
		"manifest": attest.ExtraData([]byte("nonce-0123456789"), tlsKeyHash, []byte("n")),
		// Length prefixes: moving a byte from nonce to key hash changes it.
		"boundary": attest.ExtraData([]byte("nonce-012345678"), append([]byte("9"), tlsKeyHash...), []byte("m")),
	} {
		if bytes.Equal(d, base) {
			t.Errorf("%s does not change extraData", name)
		}
	}
}

func TestAttestRejectsBadInputs(t *testing.T) {
	_, tpm := started(t)
	if _, err := tpm.Attest(make([]byte, 8), tlsKeyHash, nil); err == nil {
		t.Error("Attest accepted an 8-byte nonce")
	}
	if _, err := tpm.Attest(nonce(t), []byte("short"), nil); err == nil {
		t.Error("Attest accepted a TLS key hash that is not SHA-256")
	}
}
