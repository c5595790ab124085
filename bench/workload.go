package bench

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// Workload defaults and limits (see Workload).
const (
	DefaultPayloadSize = 32
	MaxPayloadSize     = 4096 // the largest plaintext and raw message AWS KMS accepts
	DefaultSignKeySpec = "ECC_NIST_P256"
	DefaultMacKeySpec  = "HMAC_256"
	DefaultCheckEvery  = 100
)

// signSpecs lists the key specs a workload may sign with and, for each, the
// signing algorithms that fit it; the first is the default.
var signSpecs = map[string][]string{
	"ECC_NIST_P256": {"ECDSA_SHA_256"},
	"ECC_NIST_P384": {"ECDSA_SHA_384"},
	"ECC_NIST_P521": {"ECDSA_SHA_512"},
	"RSA_2048":      rsaSigningAlgorithms,
	"RSA_3072":      rsaSigningAlgorithms,
	"RSA_4096":      rsaSigningAlgorithms,
}

var rsaSigningAlgorithms = []string{
	"RSASSA_PSS_SHA_256", "RSASSA_PSS_SHA_384", "RSASSA_PSS_SHA_512",
	"RSASSA_PKCS1_V1_5_SHA_256", "RSASSA_PKCS1_V1_5_SHA_384", "RSASSA_PKCS1_V1_5_SHA_512",
}

// macAlgorithms maps the HMAC key specs to their one MAC algorithm.
var macAlgorithms = map[string]string{
	"HMAC_224": "HMAC_SHA_224",
	"HMAC_256": "HMAC_SHA_256",
	"HMAC_384": "HMAC_SHA_384",
	"HMAC_512": "HMAC_SHA_512",
}

// knownOp reports whether op is one of AllOps.
func knownOp(op Op) bool { return slices.Contains(AllOps, op) }

// ParseMix parses a mix written as "Encrypt=3,Decrypt=1": operation names
// as the Op constants spell them (case-sensitive), each with a weight of at
// least 1. A name alone ("Encrypt") has weight 1. Spaces around names and
// weights are ignored; an operation may appear only once.
func ParseMix(s string) ([]Weighted, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("bench: empty mix: name at least one operation, e.g. Encrypt=1")
	}
	var mix []Weighted
	for part := range strings.SplitSeq(s, ",") {
		name, weight, hasWeight := strings.Cut(part, "=")
		op := Op(strings.TrimSpace(name))
		w := 1
		if hasWeight {
			n, err := strconv.Atoi(strings.TrimSpace(weight))
			if err != nil {
				return nil, fmt.Errorf("bench: mix %q: weight of %q is not a whole number", s, op)
			}
			w = n
		}
		if err := appendWeighted(&mix, op, w); err != nil {
			return nil, fmt.Errorf("bench: mix %q: %w", s, err)
		}
	}
	return mix, nil
}

// appendWeighted checks one entry of a mix and appends it.
func appendWeighted(mix *[]Weighted, op Op, w int) error {
	if !knownOp(op) {
		return fmt.Errorf("unknown operation %q (one of %s)", op, opList())
	}
	if w < 1 {
		return fmt.Errorf("weight of %s is %d, must be at least 1", op, w)
	}
	for _, e := range *mix {
		if e.Op == op {
			return fmt.Errorf("%s appears twice", op)
		}
	}
	*mix = append(*mix, Weighted{Op: op, Weight: w})
	return nil
}

func opList() string {
	names := make([]string, len(AllOps))
	for i, op := range AllOps {
		names[i] = string(op)
	}
	return strings.Join(names, ", ")
}

// MixString writes the mix as ParseMix reads it, e.g. "Encrypt=3,Decrypt=1".
// An empty mix is the default, "Encrypt=1".
func (w Workload) MixString() string {
	if len(w.Mix) == 0 {
		return string(OpEncrypt) + "=1"
	}
	var b strings.Builder
	for i, e := range w.Mix {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(string(e.Op))
		b.WriteByte('=')
		b.WriteString(strconv.Itoa(e.Weight))
	}
	return b.String()
}

// Defaults fills the zero fields of w with their defaults (see Workload)
// and checks the result: known operations with weights of at least 1, a
// payload of 1 to 4096 bytes, a signing key spec (ECC_NIST_P256/P384/P521,
// RSA_2048/3072/4096) and an algorithm that fits it, an HMAC key spec
// (HMAC_224 to HMAC_512), and CheckEvery at least 1.
func (w *Workload) Defaults() error {
	if len(w.Mix) == 0 {
		w.Mix = []Weighted{{Op: OpEncrypt, Weight: 1}}
	}
	if w.PayloadSize == 0 {
		w.PayloadSize = DefaultPayloadSize
	}
	if w.SignKeySpec == "" {
		w.SignKeySpec = DefaultSignKeySpec
	}
	if w.MacKeySpec == "" {
		w.MacKeySpec = DefaultMacKeySpec
	}
	if w.CheckEvery == 0 {
		w.CheckEvery = DefaultCheckEvery
	}
	var seen []Weighted
	for _, e := range w.Mix {
		if err := appendWeighted(&seen, e.Op, e.Weight); err != nil {
			return fmt.Errorf("bench: workload mix: %w", err)
		}
	}
	if w.PayloadSize < 1 || w.PayloadSize > MaxPayloadSize {
		return fmt.Errorf("bench: payload size %d: must be 1 to %d bytes", w.PayloadSize, MaxPayloadSize)
	}
	algs, ok := signSpecs[w.SignKeySpec]
	if !ok {
		return fmt.Errorf("bench: sign key spec %q: one of ECC_NIST_P256, ECC_NIST_P384, ECC_NIST_P521, RSA_2048, RSA_3072, RSA_4096", w.SignKeySpec)
	}
	if w.SigningAlgorithm == "" {
		w.SigningAlgorithm = algs[0]
	}
	if !slices.Contains(algs, w.SigningAlgorithm) {
		return fmt.Errorf("bench: signing algorithm %q does not fit a %s key (one of %s)", w.SigningAlgorithm, w.SignKeySpec, strings.Join(algs, ", "))
	}
	if _, ok := macAlgorithms[w.MacKeySpec]; !ok {
		return fmt.Errorf("bench: MAC key spec %q: one of HMAC_224, HMAC_256, HMAC_384, HMAC_512", w.MacKeySpec)
	}
	if w.CheckEvery < 1 {
		return fmt.Errorf("bench: check_every %d: must be at least 1", w.CheckEvery)
	}
	return nil
}

// MacAlgorithm returns the MAC algorithm of the workload's MAC key spec
// ("HMAC_SHA_256" for HMAC_256), "" for an unknown spec.
func (w *Workload) MacAlgorithm() string { return macAlgorithms[w.MacKeySpec] }

// Uses reports whether the mix has any of ops.
func (w *Workload) Uses(ops ...Op) bool {
	for _, e := range w.Mix {
		if slices.Contains(ops, e.Op) {
			return true
		}
	}
	return false
}

// workloadFile is the TOML form of a Workload.
type workloadFile struct {
	Mix              any    `toml:"mix"`
	PayloadSize      int    `toml:"payload_size"`
	SignKeySpec      string `toml:"sign_key_spec"`
	SigningAlgorithm string `toml:"signing_algorithm"`
	MacKeySpec       string `toml:"mac_key_spec"`
	CheckEvery       int    `toml:"check_every"`
}

// LoadWorkload reads a workload file (TOML):
//
//	mix = "Encrypt=3,Decrypt=1"   # or a [mix] table: Encrypt = 3 …
//	payload_size = 32
//	sign_key_spec = "ECC_NIST_P256"
//	signing_algorithm = "ECDSA_SHA_256"
//	mac_key_spec = "HMAC_256"
//	check_every = 100
//
// Every key is optional; unknown keys are errors. A [mix] table keeps the
// order of the file. The workload returned has its defaults filled in and is
// valid (see Workload.Defaults).
func LoadWorkload(path string) (*Workload, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("bench: workload: %w", err)
	}
	w, err := parseWorkload(string(raw))
	if err != nil {
		return nil, fmt.Errorf("bench: workload %s: %w", path, err)
	}
	if err := w.Defaults(); err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return w, nil
}

func parseWorkload(doc string) (*Workload, error) {
	var f workloadFile
	md, err := toml.Decode(doc, &f)
	if err != nil {
		return nil, err
	}
	var unknown []string
	for _, k := range md.Undecoded() {
		// The [mix] table's entries are read below.
		if len(k) > 0 && k[0] != "mix" {
			unknown = append(unknown, k.String())
		}
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("unknown keys %s (known: mix, payload_size, sign_key_spec, signing_algorithm, mac_key_spec, check_every)", strings.Join(unknown, ", "))
	}
	w := &Workload{PayloadSize: f.PayloadSize, SignKeySpec: f.SignKeySpec, SigningAlgorithm: f.SigningAlgorithm,
		MacKeySpec: f.MacKeySpec, CheckEvery: f.CheckEvery}
	switch m := f.Mix.(type) {
	case nil:
	case string:
		if w.Mix, err = ParseMix(m); err != nil {
			return nil, err
		}
	case map[string]any:
		// Keep the file's order: md.Keys lists keys as they appear.
		for _, k := range md.Keys() {
			if len(k) != 2 || k[0] != "mix" {
				continue
			}
			n, ok := m[k[1]].(int64)
			if !ok {
				return nil, fmt.Errorf("mix: the weight of %s must be a whole number", k[1])
			}
			if n > 1<<31 {
				return nil, fmt.Errorf("mix: the weight of %s is too large", k[1])
			}
			if err := appendWeighted(&w.Mix, Op(k[1]), int(n)); err != nil {
				return nil, fmt.Errorf("mix: %w", err)
			}
		}
		if len(w.Mix) == 0 {
			return nil, errors.New("mix: empty table: name at least one operation")
		}
	default:
		return nil, fmt.Errorf("mix: a string (\"Encrypt=3,Decrypt=1\") or a table of operation = weight, not %T", f.Mix)
	}
	return w, nil
}

// Picker picks operations from a mix in proportion to their weights. It
// holds no state beyond the mix, so one Picker may be shared by goroutines
// that each bring their own random source; Pick does not allocate.
type Picker struct {
	ops   []Op
	cum   []int // cum[i] is the sum of the weights of ops[0..i]
	total int
}

// NewPicker builds a Picker over mix. Entries with a weight below 1 are
// left out; a mix left empty picks Encrypt only, the default mix.
func NewPicker(mix []Weighted) *Picker {
	p := &Picker{}
	for _, e := range mix {
		if e.Weight < 1 {
			continue
		}
		p.total += e.Weight
		p.ops = append(p.ops, e.Op)
		p.cum = append(p.cum, p.total)
	}
	if p.total == 0 {
		p.ops, p.cum, p.total = []Op{OpEncrypt}, []int{1}, 1
	}
	return p
}

// Pick returns an operation, op i with probability Weight_i / ΣWeight.
func (p *Picker) Pick(r *rand.Rand) Op {
	if len(p.ops) == 1 {
		return p.ops[0]
	}
	n := r.IntN(p.total)
	// A mix has at most len(AllOps) entries: a linear scan beats a binary
	// search at that size.
	for i, c := range p.cum {
		if n < c {
			return p.ops[i]
		}
	}
	return p.ops[len(p.ops)-1]
}
