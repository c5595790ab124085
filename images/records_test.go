package images_test

import (
	"bytes"
	"crypto/sha512"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/images"
)

func fullManifest(v uint64) *images.Manifest {
	m := manifest(v)
	sum := sha512.Sum384(payloadFor(v))
	m.PayloadSHA384, m.PayloadSize = sum[:], uint64(len(payloadFor(v)))
	return &m
}

func TestManifestRoundTrip(t *testing.T) {
	m := fullManifest(7)
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := images.DecodeManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := got.Encode()
	if !bytes.Equal(again, b) || got.Version != 7 || got.VersionString != "2.7.0" || !got.Build.Time.Equal(t0) {
		t.Fatalf("round trip: %+v", got)
	}
	d, _ := m.Digest()
	if d != images.ManifestDigest(b) {
		t.Error("Digest differs from ManifestDigest")
	}
	if p, err := images.ParseDigest(d.String()); err != nil || p != d {
		t.Errorf("ParseDigest(String()) = %v, %v", p, err)
	}
	for _, bad := range []string{"", "00", strings.Repeat("g", 64), strings.Repeat("0", 66)} {
		if _, err := images.ParseDigest(bad); err == nil {
			t.Errorf("ParseDigest(%q) accepted", bad)
		}
	}
	// Trailing bytes, another record's bytes: refused.
	if _, err := images.DecodeManifest(append(bytes.Clone(b), 0)); !errors.Is(err, images.ErrNonCanonical) {
		t.Errorf("trailing byte: %v", err)
	}
	tr, _ := newTrust(t, 1).Encode()
	if _, err := images.DecodeManifest(tr); err == nil {
		t.Error("a trust record decoded as a manifest")
	}
}

func TestManifestValidation(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(m *images.Manifest)
		says   string
	}{
		{"version 0", func(m *images.Manifest) { m.Version = 0 }, "at least 1"},
		{"name with a space", func(m *images.Manifest) { m.Name = "hsmgate appliance" }, "image name"},
		{"escape in the version", func(m *images.Manifest) { m.VersionString = "2.4.1\x1b[31m" }, "printable ASCII"},
		{"unicode target", func(m *images.Manifest) { m.Target = "x86_64-tрm2" }, "hardware target"},
		{"empty builder", func(m *images.Manifest) { m.Build.Builder = "" }, "builder"},
		{"builder with a leading space", func(m *images.Manifest) { m.Build.Builder = " ci" }, "builder"},
		{"short SHA-384", func(m *images.Manifest) { m.PayloadSHA384 = m.PayloadSHA384[:32] }, "SHA-384"},
		{"huge payload", func(m *images.Manifest) { m.PayloadSize = images.MaxPayloadSize + 1 }, "payload size"},
		{"build time with nanoseconds", func(m *images.Manifest) { m.Build.Time = t0.Add(time.Millisecond) }, "whole second"},
		{"build time before 1970", func(m *images.Manifest) { m.Build.Time = time.Date(1969, 1, 1, 0, 0, 0, 0, time.UTC) }, "whole second"},
		{"long revision", func(m *images.Manifest) { m.Build.SourceRevision = strings.Repeat("a", 129) }, "source revision"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := fullManifest(1)
			tc.change(m)
			_, err := m.Encode()
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("Encode: %v; want an error saying %q", err, tc.says)
			}
		})
	}
	// Builder may have spaces inside.
	m := fullManifest(1)
	m.Build.Builder = "release ci (pipeline 7)"
	if _, err := m.Encode(); err != nil {
		t.Fatal(err)
	}
}

func TestTrustRoundTripAndHash(t *testing.T) {
	tr := withTimestampKey(newTrust(t, 2))
	b, err := tr.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := images.DecodeTrust(b)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := got.Encode()
	if !bytes.Equal(again, b) || got.ReleaseThreshold != 2 || len(got.ReleaseKeys) != 3 || got.TimestampThreshold != 1 || !got.FreezeProtection() {
		t.Fatalf("round trip: %+v", got)
	}
	// The key order given does not matter: the encoding sorts by key id.
	rev := *tr
	rev.ReleaseKeys = []images.TrustedKey{tr.ReleaseKeys[2], tr.ReleaseKeys[0], tr.ReleaseKeys[1]}
	h1, _ := tr.Hash()
	h2, _ := rev.Hash()
	if h1 != h2 {
		t.Error("the hash depends on the order keys were given in")
	}
	// Any change changes the hash.
	next := *tr
	next.Version = 2
	if h3, _ := next.Hash(); h3 == h1 {
		t.Error("a new version has the same hash")
	}
	if _, err := images.DecodeTrust(append(bytes.Clone(b), 0)); !errors.Is(err, images.ErrNonCanonical) {
		t.Errorf("trailing byte: %v", err)
	}
	if (&images.Trust{Version: 1, ReleaseKeys: tr.ReleaseKeys, ReleaseThreshold: 1}).FreezeProtection() {
		t.Error("freeze protection on without timestamp keys")
	}
}

func TestTrustValidation(t *testing.T) {
	base := func() *images.Trust { return withTimestampKey(newTrust(t, 2)) }
	officerKey := images.NewOfficerSigner(officer(t, 0)).PublicKey()
	o, _ := officerKey.Officer()
	for _, tc := range []struct {
		name   string
		change func(tr *images.Trust)
		says   string
	}{
		{"version 0", func(tr *images.Trust) { tr.Version = 0 }, "version"},
		{"threshold 0", func(tr *images.Trust) { tr.ReleaseThreshold = 0 }, "release threshold 0"},
		{"threshold above the keys", func(tr *images.Trust) { tr.ReleaseThreshold = 4 }, "release threshold 4"},
		{"no release keys", func(tr *images.Trust) { tr.ReleaseKeys = nil; tr.ReleaseThreshold = 0 }, "0 release keys"},
		{"a key twice", func(tr *images.Trust) {
			tr.ReleaseKeys = append(tr.ReleaseKeys, images.TrustedKey{Name: "again", Key: tr.ReleaseKeys[0].Key})
		}, "are the same key"},
		{"an Ed25519 key equal to an officer's Ed25519 half", func(tr *images.Trust) {
			tr.ReleaseKeys = append(tr.ReleaseKeys, images.TrustedKey{Name: "officer-0 ed25519", Key: images.PublicKey{Scheme: images.SchemeEd25519, Key: o.Ed25519}})
		}, "share their Ed25519 key"},
		{"a release key as timestamp key", func(tr *images.Trust) {
			tr.TimestampKeys = []images.TrustedKey{{Name: "ts", Key: tr.ReleaseKeys[1].Key}}
		}, "are the same key"},
		{"timestamp threshold without keys", func(tr *images.Trust) { tr.TimestampKeys = nil }, "without timestamp keys"},
		{"timestamp keys without threshold", func(tr *images.Trust) { tr.TimestampThreshold = 0 }, "timestamp threshold 0"},
		{"unknown scheme", func(tr *images.Trust) { tr.ReleaseKeys[0].Key.Scheme = "rsa" }, "unknown key scheme"},
		{"short Ed25519 key", func(tr *images.Trust) { tr.ReleaseKeys[0].Key.Key = tr.ReleaseKeys[0].Key.Key[:31] }, "31 bytes"},
		{"bad name", func(tr *images.Trust) { tr.ReleaseKeys[0].Name = "" }, "key name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := base()
			tr.ReleaseKeys = append([]images.TrustedKey(nil), tr.ReleaseKeys...)
			tc.change(tr)
			err := tr.Validate()
			if !errors.Is(err, images.ErrTrust) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("Validate: %v; want ErrTrust saying %q", err, tc.says)
			}
			if _, err := tr.Encode(); err == nil {
				t.Fatal("Encode accepted an invalid trust")
			}
		})
	}
}

func TestKeyFiles(t *testing.T) {
	priv, pub, err := images.GenerateEd25519Key()
	if err != nil {
		t.Fatal(err)
	}
	k, err := images.ParseEd25519PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pk, name, err := images.ParsePublicKeyFile(pub)
	if err != nil || name != "" {
		t.Fatalf("ParsePublicKeyFile: %v %q", err, name)
	}
	if images.NewEd25519Signer(k).PublicKey().ID() != pk.ID() {
		t.Error("the public key file does not match the private key")
	}
	opub, _ := officer(t, 1).Public().Encode()
	ok, name, err := images.ParsePublicKeyFile(images.Armor(images.PEMOfficerPublic, opub))
	if err != nil || name != "officer-1" || ok.Scheme != images.SchemeOfficer {
		t.Fatalf("officer public key: %v %q %+v", err, name, ok.Scheme)
	}
	if ok.ID() != images.NewOfficerSigner(officer(t, 1)).PublicKey().ID() {
		t.Error("officer key id differs from its signer's")
	}
	for _, bad := range [][]byte{nil, []byte("hello"), pub, images.Armor(images.PEMTrust, []byte{1})} {
		if _, err := images.ParseEd25519PrivateKey(bad); err == nil {
			t.Errorf("ParseEd25519PrivateKey(%q) accepted", bad)
		}
	}
	if _, _, err := images.ParsePublicKeyFile(priv); err == nil {
		t.Error("a private key file parsed as a public key")
	}
}

func TestTimestamp(t *testing.T) {
	tr := withTimestampKey(newTrust(t, 1))
	d1, d2, d3 := images.Digest{1}, images.Digest{2}, images.Digest{3}
	ts := signedTimestamp(t, 5, t0, 24*time.Hour, d2, d1)
	got, err := tr.VerifyTimestamp(ts, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != 5 || !got.Lists(d1) || !got.Lists(d2) || got.Lists(d3) || !got.Expires.Equal(t0.Add(24*time.Hour)) {
		t.Fatalf("verified timestamp %+v", got)
	}
	if err := tr.CheckFresh(ts, d1, t0.Add(time.Hour)); err != nil {
		t.Errorf("CheckFresh of a listed image: %v", err)
	}
	wantErr(t, tr.CheckFresh(ts, d3, t0.Add(time.Hour)), []error{images.ErrStaleView}, "does not list image")
	wantErr(t, tr.CheckFresh(ts, d1, t0.Add(24*time.Hour)), []error{images.ErrStaleView}, "expired at 2026-11-26T10:00:00Z")
	wantErr(t, tr.CheckFresh(nil, d1, t0), []error{images.ErrStaleView}, "no timestamp")
	wantErr(t, tr.CheckFresh(ts, d1, t0.Add(-time.Hour)), []error{images.ErrStaleView}, "in the future")
	if err := tr.CheckFresh(ts, d1, t0.Add(-time.Minute)); err != nil {
		t.Errorf("a minute of clock skew: %v", err)
	}

	// Signed by a release key, not the timestamp key.
	bad, _ := images.SignTimestamp(&images.Timestamp{Version: 6, Issued: t0, Expires: t0.Add(time.Hour), Images: []images.Digest{d1}}, edSigner(0))
	_, err = tr.VerifyTimestamp(bad, t0)
	wantErr(t, err, []error{images.ErrTooFewSignatures, images.ErrUnknownSigner}, "timestamp signatures")
	// A release signature is not a timestamp signature: the domains differ.
	st, _ := images.DecodeSignedTimestamp(ts)
	env := &images.Envelope{Manifest: st.Timestamp}
	env.Sign(edSigner(9))
	st.Signatures = env.Signatures
	forged, _ := st.Encode()
	_, err = tr.VerifyTimestamp(forged, t0)
	wantErr(t, err, []error{images.ErrBadSignature})

	// Freeze protection off: no timestamp needed, none verified.
	off := newTrust(t, 1)
	if err := off.CheckFresh(nil, d3, t0); err != nil {
		t.Errorf("CheckFresh without timestamp keys: %v", err)
	}
	if _, err := off.VerifyTimestamp(ts, t0); err == nil {
		t.Error("VerifyTimestamp without timestamp keys succeeded")
	}

	for _, tc := range []struct {
		name string
		ts   images.Timestamp
	}{
		{"too long", images.Timestamp{Version: 1, Issued: t0, Expires: t0.Add(images.MaxTimestampValidity + time.Second)}},
		{"expires before issued", images.Timestamp{Version: 1, Issued: t0, Expires: t0}},
		{"version 0", images.Timestamp{Version: 0, Issued: t0, Expires: t0.Add(time.Hour)}},
		{"an image twice", images.Timestamp{Version: 1, Issued: t0, Expires: t0.Add(time.Hour), Images: []images.Digest{d1, d1}}},
	} {
		if _, err := images.SignTimestamp(&tc.ts, edSigner(9)); err == nil {
			t.Errorf("%s: signed", tc.name)
		}
	}
}
