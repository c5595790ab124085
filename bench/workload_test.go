package bench

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseMix(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []Weighted
	}{
		{"Encrypt=3,Decrypt=1", []Weighted{{OpEncrypt, 3}, {OpDecrypt, 1}}},
		{"Sign", []Weighted{{OpSign, 1}}},
		{" GenerateMac = 2 , Verify=10", []Weighted{{OpGenerateMac, 2}, {OpVerify, 10}}},
		{"Encrypt=1,Decrypt=1,GenerateDataKey=1,ReEncrypt=1,Sign=1,Verify=1,GenerateMac=1",
			[]Weighted{{OpEncrypt, 1}, {OpDecrypt, 1}, {OpGenerateDataKey, 1}, {OpReEncrypt, 1}, {OpSign, 1}, {OpVerify, 1}, {OpGenerateMac, 1}}},
	} {
		got, err := ParseMix(tc.in)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseMix(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", " ", "encrypt=1", "Encrypt=0", "Encrypt=-2", "Encrypt=x", "Encrypt=1,Encrypt=2",
		"Encrypt=1,", "Frobnicate=1", "Encrypt=1.5"} {
		if got, err := ParseMix(bad); err == nil {
			t.Errorf("ParseMix(%q) = %v, want an error", bad, got)
		}
	}
}

func TestMixStringRoundTrip(t *testing.T) {
	if got := (Workload{}).MixString(); got != "Encrypt=1" {
		t.Fatalf("empty mix: %q", got)
	}
	w := Workload{Mix: []Weighted{{OpSign, 3}, {OpEncrypt, 1}, {OpGenerateMac, 12}}}
	s := w.MixString()
	if s != "Sign=3,Encrypt=1,GenerateMac=12" {
		t.Fatalf("MixString = %q", s)
	}
	back, err := ParseMix(s)
	if err != nil || !reflect.DeepEqual(back, w.Mix) {
		t.Fatalf("round trip: %v %v", back, err)
	}
}

func TestWorkloadDefaults(t *testing.T) {
	var w Workload
	if err := w.Defaults(); err != nil {
		t.Fatal(err)
	}
	want := Workload{Mix: []Weighted{{OpEncrypt, 1}}, PayloadSize: 32, SignKeySpec: "ECC_NIST_P256",
		SigningAlgorithm: "ECDSA_SHA_256", MacKeySpec: "HMAC_256", CheckEvery: 100}
	if !reflect.DeepEqual(w, want) {
		t.Fatalf("defaults: %+v", w)
	}
	if w.MacAlgorithm() != "HMAC_SHA_256" {
		t.Fatal(w.MacAlgorithm())
	}
	for spec, alg := range map[string]string{"ECC_NIST_P384": "ECDSA_SHA_384", "ECC_NIST_P521": "ECDSA_SHA_512",
		"RSA_2048": "RSASSA_PSS_SHA_256", "RSA_3072": "RSASSA_PSS_SHA_256", "RSA_4096": "RSASSA_PSS_SHA_256"} {
		w := Workload{SignKeySpec: spec}
		if err := w.Defaults(); err != nil || w.SigningAlgorithm != alg {
			t.Errorf("%s: algorithm %q, %v; want %s", spec, w.SigningAlgorithm, err, alg)
		}
	}
	w = Workload{SignKeySpec: "RSA_2048", SigningAlgorithm: "RSASSA_PKCS1_V1_5_SHA_512", MacKeySpec: "HMAC_512", PayloadSize: 4096}
	if err := w.Defaults(); err != nil || w.MacAlgorithm() != "HMAC_SHA_512" {
		t.Fatalf("explicit fields: %v", err)
	}
	for name, bad := range map[string]Workload{
		"payload too big":      {PayloadSize: 4097},
		"payload negative":     {PayloadSize: -1},
		"unknown op":           {Mix: []Weighted{{"Frobnicate", 1}}},
		"zero weight":          {Mix: []Weighted{{OpEncrypt, 0}}},
		"duplicate op":         {Mix: []Weighted{{OpEncrypt, 1}, {OpEncrypt, 2}}},
		"unknown sign spec":    {SignKeySpec: "ECC_SECG_P256K1"},
		"symmetric sign spec":  {SignKeySpec: "SYMMETRIC_DEFAULT"},
		"ECDSA hash mismatch":  {SignKeySpec: "ECC_NIST_P256", SigningAlgorithm: "ECDSA_SHA_384"},
		"ECDSA with RSA key":   {SignKeySpec: "RSA_2048", SigningAlgorithm: "ECDSA_SHA_256"},
		"RSA with EC key":      {SignKeySpec: "ECC_NIST_P384", SigningAlgorithm: "RSASSA_PSS_SHA_384"},
		"unknown MAC spec":     {MacKeySpec: "HMAC_128"},
		"negative check_every": {CheckEvery: -1},
	} {
		if err := bad.Defaults(); err == nil {
			t.Errorf("%s: no error for %+v", name, bad)
		}
	}
}

func writeWorkload(t *testing.T, doc string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "w.toml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadWorkload(t *testing.T) {
	w, err := LoadWorkload(writeWorkload(t, `
mix = "Encrypt=3,Decrypt=1"
payload_size = 1024
sign_key_spec = "RSA_3072"
signing_algorithm = "RSASSA_PKCS1_V1_5_SHA_256"
mac_key_spec = "HMAC_384"
check_every = 7
`))
	if err != nil {
		t.Fatal(err)
	}
	want := &Workload{Mix: []Weighted{{OpEncrypt, 3}, {OpDecrypt, 1}}, PayloadSize: 1024, SignKeySpec: "RSA_3072",
		SigningAlgorithm: "RSASSA_PKCS1_V1_5_SHA_256", MacKeySpec: "HMAC_384", CheckEvery: 7}
	if !reflect.DeepEqual(w, want) {
		t.Fatalf("got %+v", w)
	}

	// A [mix] table keeps the file's order; missing keys get defaults.
	w, err = LoadWorkload(writeWorkload(t, "[mix]\nVerify = 2\nEncrypt = 5\nSign = 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if w.MixString() != "Verify=2,Encrypt=5,Sign=1" || w.PayloadSize != 32 || w.SigningAlgorithm != "ECDSA_SHA_256" || w.CheckEvery != 100 {
		t.Fatalf("table mix: %+v", w)
	}
	w, err = LoadWorkload(writeWorkload(t, "mix = { GenerateMac = 4, Decrypt = 1 }\n"))
	if err != nil || w.MixString() != "GenerateMac=4,Decrypt=1" {
		t.Fatalf("inline table mix: %+v %v", w, err)
	}
	w, err = LoadWorkload(writeWorkload(t, "payload_size = 64\n"))
	if err != nil || w.MixString() != "Encrypt=1" || w.PayloadSize != 64 {
		t.Fatalf("no mix: %+v %v", w, err)
	}

	for name, doc := range map[string]string{
		"unknown key":          "mix = \"Encrypt=1\"\npayload = 32\n",
		"unknown table":        "[load]\nrate = 3\n",
		"unknown op in table":  "[mix]\nencrypt = 1\n",
		"zero weight in table": "[mix]\nEncrypt = 0\n",
		"float weight":         "[mix]\nEncrypt = 1.5\n",
		"string weight":        "[mix]\nEncrypt = \"1\"\n",
		"empty table":          "[mix]\n",
		"mix of wrong type":    "mix = 3\n",
		"bad mix string":       "mix = \"Encrypt=\"\n",
		"invalid payload":      "payload_size = 0\npayload_size = 5000\n",
		"too large payload":    "payload_size = 5000\n",
		"bad sign spec":        "sign_key_spec = \"DSA\"\n",
		"not TOML":             "mix = [\n",
	} {
		if w, err := LoadWorkload(writeWorkload(t, doc)); err == nil {
			t.Errorf("%s: no error, got %+v", name, w)
		} else if name == "unknown key" && !strings.Contains(err.Error(), "payload") {
			t.Errorf("unknown key: the error does not name it: %v", err)
		}
	}
	if _, err := LoadWorkload(filepath.Join(t.TempDir(), "missing.toml")); err == nil {
		t.Error("missing file: no error")
	}
}

func TestPickerFollowsWeights(t *testing.T) {
	mix := []Weighted{{OpEncrypt, 6}, {OpDecrypt, 3}, {OpSign, 1}}
	p := NewPicker(mix)
	r := rand.New(rand.NewPCG(1, 2))
	const n = 200_000
	counts := map[Op]int{}
	for range n {
		counts[p.Pick(r)]++
	}
	for _, e := range mix {
		want := float64(n) * float64(e.Weight) / 10
		if got := float64(counts[e.Op]); got < want*0.97 || got > want*1.03 {
			t.Errorf("%s picked %v times, want about %v", e.Op, got, want)
		}
	}
	if len(counts) != 3 {
		t.Errorf("picked %v", counts)
	}
	if allocs := testing.AllocsPerRun(1000, func() { p.Pick(r) }); allocs != 0 {
		t.Errorf("Pick allocates %v times", allocs)
	}
}

func TestPickerDefaultsAndSingle(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	if op := NewPicker(nil).Pick(r); op != OpEncrypt {
		t.Fatalf("empty mix picked %s", op)
	}
	if op := NewPicker([]Weighted{{OpSign, 0}}).Pick(r); op != OpEncrypt {
		t.Fatalf("all-zero mix picked %s", op)
	}
	p := NewPicker([]Weighted{{OpVerify, 5}})
	for range 100 {
		if op := p.Pick(r); op != OpVerify {
			t.Fatalf("single mix picked %s", op)
		}
	}
	// Zero weights are left out.
	p = NewPicker([]Weighted{{OpSign, 0}, {OpDecrypt, 1}})
	for range 100 {
		if op := p.Pick(r); op != OpDecrypt {
			t.Fatalf("picked %s, a zero-weight op", op)
		}
	}
}

func BenchmarkPicker(b *testing.B) {
	p := NewPicker([]Weighted{{OpEncrypt, 3}, {OpDecrypt, 1}, {OpGenerateDataKey, 1}, {OpSign, 2}})
	r := rand.New(rand.NewPCG(5, 6))
	b.ReportAllocs()
	for b.Loop() {
		p.Pick(r)
	}
}
