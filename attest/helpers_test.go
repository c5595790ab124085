package attest_test

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxudstpm"

	"github.com/hsmgate/hsmgate/attest"
	"github.com/hsmgate/hsmgate/internal/swtpmtest"
)

func digest(s string) []byte {
	d := sha256.Sum256([]byte(s))
	return d[:]
}

// boot describes what a gateway boot measures.
type boot struct {
	image, binary, config string
}

var goodBoot = boot{image: "image v1", binary: "hsmgate v1", config: "config A"}

func (b boot) measure(t testing.TB, tpm *attest.TPM) {
	t.Helper()
	for _, m := range []struct{ kind, name, content string }{
		{attest.KindImage, "hsmgate-image", b.image},
		{attest.KindBinary, "/usr/bin/hsmgate", b.binary},
		{attest.KindConfig, "hsmgate.toml", b.config},
	} {
		if _, err := tpm.Measure(m.kind, m.name, digest(m.content)); err != nil {
			t.Fatalf("Measure(%s): %v", m.kind, err)
		}
	}
}

func (b boot) policy() attest.GoldenPolicy {
	return attest.GoldenPolicy{
		ImageDigests:  [][]byte{digest(b.image)},
		BinaryDigests: [][]byte{digest(b.binary)},
		ConfigDigests: [][]byte{digest(b.config)},
	}
}

func open(t testing.TB, cfg attest.Config) *attest.TPM {
	t.Helper()
	tpm, err := attest.Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { tpm.Close() })
	return tpm
}

// enroll runs the whole enrollment protocol, the verifier trusting the EK
// public key the TPM reports (as it would after checking its certificate).
func enroll(t testing.TB, tpm *attest.TPM) *attest.Enrollment {
	t.Helper()
	return swtpmtest.Enroll(t, tpm)
}

func nonce(t testing.TB) []byte {
	t.Helper()
	n := make([]byte, 32)
	if _, err := rand.Read(n); err != nil {
		t.Fatal(err)
	}
	return n
}

var tlsKeyHash = digest("gateway TLS public key")

func attestJSON(t testing.TB, tpm *attest.TPM, n []byte) []byte {
	t.Helper()
	doc, err := tpm.Attest(n, tlsKeyHash, []byte(`{"image":"v1"}`))
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func swtpmStart(t testing.TB) *swtpmtest.TPM { return swtpmtest.Start(t) }

// started starts an swtpm and opens it.
func started(t testing.TB) (*swtpmtest.TPM, *attest.TPM) {
	t.Helper()
	sw := swtpmtest.Start(t)
	return sw, open(t, sw.Config())
}

// raw opens a second, raw connection to the swtpm, for what the gateway
// would never do: extend its PCRs behind its back, sign a non-quote.
func raw(t testing.TB, sw *swtpmtest.TPM) transport.TPM {
	t.Helper()
	tp, err := linuxudstpm.Open(sw.Socket())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	return tp
}

func rawExtend(t testing.TB, tp transport.TPM, pcr int, d []byte) {
	t.Helper()
	_, err := tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: d}}},
	}.Execute(tp)
	if err != nil {
		t.Fatalf("extending PCR %d: %v", pcr, err)
	}
}

// editDoc decodes an attestation document, lets f change it, re-encodes.
func editDoc(t testing.TB, b []byte, f func(d *attest.Document)) []byte {
	t.Helper()
	var d attest.Document
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	f(&d)
	out, err := json.Marshal(&d)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// editLog changes the event log inside a document.
func editLog(t testing.TB, d *attest.Document, f func(l *attest.EventLog)) {
	t.Helper()
	var l attest.EventLog
	if err := json.Unmarshal(d.EventLog, &l); err != nil {
		t.Fatal(err)
	}
	f(&l)
	b, err := json.Marshal(&l)
	if err != nil {
		t.Fatal(err)
	}
	d.EventLog = b
}
