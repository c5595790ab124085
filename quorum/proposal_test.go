package quorum

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden and the fuzz seed corpus")

// fixedProposal has no random part, so its encoding is pinned by a golden
// file: a change to the format shows up as a diff.
func fixedProposal() *Proposal {
	p := &Proposal{
		Domain:    ProposalDomain,
		Kind:      KindFirmwareActivation,
		Params:    &FirmwareActivationParams{Version: "2.4.1", ImageSHA256: bytes.Repeat([]byte{0xab}, 32)},
		ClusterID: "prod-eu",
		Target:    "gw-1",
		Epoch:     3,
		Requester: "ops@example.com",
		NotBefore: t0,
		Expiry:    t0.Add(24 * time.Hour),
	}
	copy(p.SetHash[:], bytes.Repeat([]byte{0x5e}, 32))
	copy(p.RequestID[:], []byte("0123456789abcdef"))
	return p
}

func TestProposalGolden(t *testing.T) {
	enc, err := fixedProposal().Encode()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "proposal-firmware.golden")
	if *update {
		if err := os.WriteFile(path, []byte(hex.EncodeToString(enc)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(enc); got != strings.TrimSpace(string(want)) {
		t.Fatalf("encoding changed:\n got %s\nwant %s", got, want)
	}
	p, err := DecodeProposal(enc)
	if err != nil {
		t.Fatal(err)
	}
	if !p.NotBefore.Equal(t0) || p.Epoch != 3 || p.Params.(*FirmwareActivationParams).Version != "2.4.1" {
		t.Fatalf("decoded %+v", p)
	}
}

func TestProposalRoundTripEveryKind(t *testing.T) {
	ks := officers(t, 3)
	set := newSet(t, 1, ks, 2)
	next := newSet(t, 2, ks, 3)
	rcpt, _ := ks[0].Public().Recipient(KEMXWing)
	for _, params := range []Params{
		&KeyExportParams{KeyID: "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", KeyVersion: 1, Recipient: rcpt},
		&DomainRecoveryParams{DomainKeyID: "domain/prod-eu", SplitID: bytes.Repeat([]byte{1}, 16), Recipient: rcpt},
		firmwareParams(),
		&SetChangeParams{Next: next},
		&KeyOperationParams{KeyID: "alias/payments", Operation: "ScheduleKeyDeletion", Request: []byte(`{"KeyId":"alias/payments","PendingWindowInDays":7}`)},
		&KeyOperationParams{KeyID: "alias/payments", Operation: "Decrypt", Request: []byte{0xff, 0x00}},
	} {
		t.Run(string(params.Kind()), func(t *testing.T) {
			p, err := NewProposal(set, params, header())
			if err != nil {
				t.Fatal(err)
			}
			enc, err := p.Encode()
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeProposal(enc)
			if err != nil {
				t.Fatal(err)
			}
			again, _ := got.Encode()
			if !bytes.Equal(again, enc) {
				t.Fatal("re-encoding differs")
			}
			text := got.Render()
			h := ProposalHash(enc)
			for _, want := range []string{hex.EncodeToString(h[:]), p.RequestID.String(), `"prod-eu"`, `"gw-1"`, `"ops@example.com"`, "2026-11-25T10:00:00Z", "2026-11-26T10:00:00Z", string(params.Kind())} {
				if !strings.Contains(text, want) {
					t.Errorf("Render lacks %q:\n%s", want, text)
				}
			}
			t.Log("\n" + text)
		})
	}
}

func TestProposalRefusals(t *testing.T) {
	ks := officers(t, 3)
	set := newSet(t, 1, ks, 2)
	good := fixedProposal()
	enc, _ := good.Encode()

	// Hand-made variations of the wire form.
	wire := func(change func(w *proposalWire)) []byte {
		var w proposalWire
		if err := unmarshalStrict(enc, &w); err != nil {
			t.Fatal(err)
		}
		change(&w)
		b, err := marshal(w)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for name, data := range map[string][]byte{
		"trailing byte":    append(bytes.Clone(enc), 0),
		"truncated":        enc[:len(enc)-1],
		"empty":            {},
		"long-form epoch":  bytes.Replace(enc, []byte{0x03, 0x58, 0x20}, []byte{0x18, 0x03, 0x58, 0x20}, 1),
		"indefinite array": append([]byte{0x9f}, append(bytes.Clone(enc[1:]), 0xff)...),
		"other domain":     wire(func(w *proposalWire) { w.Domain = "hsmgate/quorum/proposal/v2" }),
		"unknown kind":     wire(func(w *proposalWire) { w.Kind = "format-disk" }),
		"kind/params":      wire(func(w *proposalWire) { w.Kind = KindKeyOperation }),
		"short set hash":   wire(func(w *proposalWire) { w.SetHash = w.SetHash[:31] }),
		"long request id":  wire(func(w *proposalWire) { w.RequestID = append(w.RequestID, 0) }),
		"zero request id":  wire(func(w *proposalWire) { w.RequestID = make([]byte, 16) }),
		"expiry first":     wire(func(w *proposalWire) { w.Expiry = w.NotBefore - 1 }),
		"valid 31 days":    wire(func(w *proposalWire) { w.Expiry = w.NotBefore + 31*24*3600 }),
		"epoch 0":          wire(func(w *proposalWire) { w.Epoch = 0 }),
		"escape in target": wire(func(w *proposalWire) { w.Target = "gw-1\x1b[2K" }),
		"newline":          wire(func(w *proposalWire) { w.Requester = "ops\nkind: nothing" }),
		"bidi override":    wire(func(w *proposalWire) { w.ClusterID = "prod\u202eue" }),
	} {
		if _, err := DecodeProposal(data); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	if !bytes.Contains(enc, []byte{0x03, 0x58, 0x20}) {
		t.Fatal("test assumes epoch 3 is followed by the 32-byte set hash")
	}
	if _, err := DecodeProposal(bytes.Replace(enc, []byte{0x03, 0x58, 0x20}, []byte{0x18, 0x03, 0x58, 0x20}, 1)); !errors.Is(err, ErrNonCanonical) {
		t.Errorf("long-form integer: %v, want ErrNonCanonical", err)
	}

	// NewProposal checks the same rules.
	h := header()
	h.Expiry = h.NotBefore.Add(MaxValidity + time.Second)
	if _, err := NewProposal(set, firmwareParams(), h); err == nil {
		t.Error("proposal valid for more than MaxValidity")
	}
	h = header()
	h.Target = "gw 1"
	if _, err := NewProposal(set, firmwareParams(), h); err == nil {
		t.Error("target with a space")
	}
	if _, err := NewProposal(set, &FirmwareActivationParams{Version: "1", ImageSHA256: []byte{1}}, header()); err == nil {
		t.Error("1-byte image hash")
	}
	// Two proposals of the same operation differ by request id.
	a, _ := NewProposal(set, firmwareParams(), header())
	b, _ := NewProposal(set, firmwareParams(), header())
	if a.RequestID == b.RequestID {
		t.Fatal("request ids repeat")
	}
}
