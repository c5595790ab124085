package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/images"
	"github.com/hsmgate/hsmgate/quorum"
)

// draft firmware --image BUNDLE proposes the bundle's manifest digest and
// version string, as the gateway's image store names the image.
func TestDraftFirmwareFromBundle(t *testing.T) {
	dir := t.TempDir()
	payload := filepath.Join(dir, "payload")
	os.WriteFile(payload, []byte("the image"), 0o644)
	pf, _ := os.Open(payload)
	defer pf.Close()
	var buf bytes.Buffer
	m, err := images.Build(&buf, images.Manifest{Name: "hsmgate-appliance", Version: 3, VersionString: "3.1.0", Target: "x86_64-tpm2",
		Build: images.BuildInfo{Builder: "ci", Time: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), SourceRevision: "abc"}}, pf)
	if err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(dir, "v3.bundle")
	os.WriteFile(bundle, buf.Bytes(), 0o644)
	d, _ := m.Digest()

	k, _ := quorum.GenerateOfficerKey("alice")
	th := map[quorum.Kind]int{}
	for _, kind := range quorum.Kinds {
		th[kind] = 1
	}
	th[quorum.KindSetChange] = 2
	k2, _ := quorum.GenerateOfficerKey("bob")
	set := &quorum.Set{Epoch: 1, Thresholds: th, Officers: []quorum.OfficerPublicKey{k.Public(), k2.Public()}}
	raw, _ := set.Encode()
	setFile := filepath.Join(dir, "quorum.set")
	os.WriteFile(setFile, quorum.Armor(quorum.PEMSet, raw), 0o644)
	n := 0
	draft := func(want int, extra ...string) string {
		var out, errb bytes.Buffer
		n++
		args := append([]string{"hsmofficer", "draft", "firmware", "--set", setFile, "--cluster", "prod", "--target", "gw-1", "--out", filepath.Join(dir, fmt.Sprintf("%d.proposal", n))}, extra...)
		if st := run(args, strings.NewReader(""), &out, &errb); st != want {
			t.Fatalf("%v: status %d: %s%s", args, st, out.String(), errb.String())
		}
		return out.String() + errb.String()
	}
	out := draft(0, "--image", bundle)
	if !strings.Contains(out, `"3.1.0"`) || !strings.Contains(out, d.String()) {
		t.Fatalf("draft firmware --image BUNDLE: %s", out)
	}
	if out := draft(1, "--image", bundle, "--version", "3.0.0"); !strings.Contains(out, "not the bundle's version") {
		t.Fatalf("a --version that is not the bundle's: %s", out)
	}
	if out := draft(1, "--image-sha256", d.String()); !strings.Contains(out, "--version is needed") {
		t.Fatalf("a digest without a version: %s", out)
	}
}
