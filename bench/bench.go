// Package bench measures a KMS: the hsmgate gateway, any other
// AWS-KMS-compatible endpoint, or the HSM pool directly (the ceiling the
// gateway is measured against), and turns the measurements into reports and
// a capacity plan. cmd/hsmbench is its command line.
//
// A run drives a [Target] with a [Workload] (a weighted mix of operations)
// in a load shape (closed loop at a fixed concurrency, a concurrency sweep,
// an open loop at a fixed arrival rate, or a search for the highest rate
// that keeps p99 under a bound), records every call in [Stats], and checks a
// sample of the results (decrypting what was encrypted, verifying what was
// signed) so that a fast wrong answer can't pass.
package bench

import (
	"context"
	"time"
)

// Op is one kind of KMS operation.
type Op string

// The operations a workload can mix.
const (
	OpEncrypt         Op = "Encrypt"
	OpDecrypt         Op = "Decrypt"
	OpGenerateDataKey Op = "GenerateDataKey"
	OpReEncrypt       Op = "ReEncrypt"
	OpSign            Op = "Sign"
	OpVerify          Op = "Verify"
	OpGenerateMac     Op = "GenerateMac"
)

// AllOps lists every operation, in a stable order.
var AllOps = []Op{OpEncrypt, OpDecrypt, OpGenerateDataKey, OpReEncrypt, OpSign, OpVerify, OpGenerateMac}

// Target runs operations. Implementations: the aws-sdk-go-v2 KMS client,
// a lean net/http client with its own SigV4 signing, and the pool.
type Target interface {
	// Name says what is measured, e.g. "https://127.0.0.1:8443" or "pool".
	Name() string
	// Client says which client runs the calls: "sdk", "lean" or "pool".
	Client() string
	// Prepare creates the keys the workload needs and the inputs of the
	// operations that consume earlier results (a ciphertext to decrypt, a
	// signature to verify).
	Prepare(ctx context.Context, w *Workload) error
	// Do runs one operation. When check is set it also verifies the
	// result (decrypts what it encrypted, verifies what it signed, …) and
	// returns ErrWrongResult if it does not hold.
	Do(ctx context.Context, op Op, check bool) error
	// Close releases the target's connections.
	Close() error
}

// Sample is one call's outcome.
type Sample struct {
	Start   time.Time     // when the call was due (open loop) or began (closed loop)
	Latency time.Duration // from Start to the answer
	Op      Op
	Err     string // "" for success, else an error code (see ErrorCode)
}

// Weighted is one operation of a mix and its share.
type Weighted struct {
	Op     Op
	Weight int
}

// Workload is what a run sends: a weighted mix of operations and their
// inputs. The zero value of each field means the default named beside it.
type Workload struct {
	Mix              []Weighted // default Encrypt only
	PayloadSize      int        // plaintext or message bytes; default 32 (1 to 4096)
	SignKeySpec      string     // key spec for Sign and Verify; default ECC_NIST_P256
	SigningAlgorithm string     // default the spec's first algorithm (ECDSA_SHA_256 for P-256)
	MacKeySpec       string     // key spec for GenerateMac; default HMAC_256
	CheckEvery       int        // verify the result of one call in this many; default 100
}

// Summary is what a Stats made of one measurement window.
type Summary struct {
	Calls        int64            `json:"calls"`
	Errors       int64            `json:"errors"`
	ErrorsByCode map[string]int64 `json:"errors_by_code,omitempty"`
	Duration     time.Duration    `json:"duration_ns"`
	Throughput   float64          `json:"throughput_per_s"` // successful calls per second
	P50          time.Duration    `json:"p50_ns"`
	P90          time.Duration    `json:"p90_ns"`
	P99          time.Duration    `json:"p99_ns"`
	P999         time.Duration    `json:"p999_ns"`
	Max          time.Duration    `json:"max_ns"`
	Series       []Second         `json:"series,omitempty"` // one entry per second of the window
}

// Second is one second of a run: for latency-over-time plots.
type Second struct {
	At         time.Duration `json:"at_ns"` // since the window began
	Calls      int64         `json:"calls"`
	Errors     int64         `json:"errors"`
	P99        time.Duration `json:"p99_ns"`
	Throughput float64       `json:"throughput_per_s"`
}

// Run is one measured window of one load shape against one target.
type Run struct {
	Name        string  `json:"name"` // e.g. "closed c=8", "rate 2000/s", "sweep c=4", "failover: during"
	Target      string  `json:"target"`
	Client      string  `json:"client"`
	Workload    string  `json:"workload"` // the mix as text, e.g. "Encrypt=3,Decrypt=1"
	Shape       string  `json:"shape"`    // "closed", "open", "sweep", "find-max", "scenario"
	Concurrency int     `json:"concurrency,omitempty"`
	Rate        float64 `json:"rate_per_s,omitempty"` // open loop: the arrival rate asked for
	Slots       int     `json:"slots,omitempty"`      // pool size, when known
	Summary     Summary `json:"summary"`
	// CPU per successful call, where it could be seen (0 when not).
	ClientCPUPerOp time.Duration `json:"client_cpu_per_op_ns,omitempty"`
	ServerCPUPerOp time.Duration `json:"server_cpu_per_op_ns,omitempty"`
	Checked        int64         `json:"checked"`        // results verified
	CheckFailures  int64         `json:"check_failures"` // results that did not verify
}

// Report is everything one hsmbench invocation measured.
type Report struct {
	Started time.Time `json:"started"`
	Host    string    `json:"host"` // machine description: CPUs, OS
	Command string    `json:"command"`
	Runs    []Run     `json:"runs"`
	USL     *USLFit   `json:"usl,omitempty"`
	Plan    *Plan     `json:"plan,omitempty"`
}
