package hsmpool

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"
)

// Options configures a Pool. The zero value of every field but Modules means
// "use the default" named beside it; DefaultOptions fills them in.
type Options struct {
	// Modules are the PKCS#11 libraries and the tokens to use on each.
	// At least one is required.
	Modules []ModuleOptions

	// SessionsPerSlot caps the operation sessions opened on each slot
	// (beside the one persistent login session). Zero means 8: enough to
	// keep a hardware HSM's cores busy from one gateway; it is further
	// capped below the token's own limit (ulMaxSessionCount - 2).
	SessionsPerSlot int

	// OpTimeout bounds one attempt of a cryptographic operation on one slot.
	// Zero means 2s. A call that overruns it quarantines its session and
	// the slot (a cgo call can't be cancelled, so the session is never
	// reused), and the operation fails over to another slot.
	OpTimeout time.Duration

	// KeyGenTimeout bounds key generation (RSA-4096 takes seconds on real
	// HSMs). Zero means 60s.
	KeyGenTimeout time.Duration

	// ProbeInterval is how often a healthy slot is probed. Zero means 10s.
	ProbeInterval time.Duration

	// QuarantineProbeInterval is how often a quarantined slot is reset and
	// probed. Zero means 1s.
	QuarantineProbeInterval time.Duration

	// KeyCacheSize is the number of unwrapped key versions kept per slot as
	// session objects. Zero means 1024.
	KeyCacheSize int

	// DomainKeyLabel is the CKA_LABEL of the domain key object on every
	// token. Empty means "hsmgate-domain-key".
	DomainKeyLabel string

	// DomainKeyCheck is the expected key check value of the domain key (as
	// returned by Pool.DomainKeyCheck, recorded at init). Empty means the
	// value most slots agree on; a slot that differs is refused either way.
	DomainKeyCheck string

	// InlineCalls runs each PKCS#11 call on the calling goroutine instead of
	// handing it to the session's worker goroutine. It saves the hand-off
	// (about 10% of SoftHSM's throughput on 2 cores, see
	// docs/performance.md; little against a network HSM's latency), at a
	// price: a call that hangs in the module holds its caller until the
	// module returns. The watchdog still quarantines the slot, so new calls
	// go elsewhere. False (the default) bounds every call by its deadline.
	InlineCalls bool

	// FaultInjection wraps every module in a FaultInjector, so that
	// InjectFault works. For tests and the benchmark's failover scenario.
	FaultInjection bool

	// Logger receives slot state changes. Nil means slog.Default(). The pool
	// never logs PINs or key material.
	Logger *slog.Logger
}

// ModuleOptions names one PKCS#11 library and the tokens the pool uses on it.
type ModuleOptions struct {
	// Path of the PKCS#11 shared library.
	Path string
	// Tokens to use, each by label or by serial number. Empty means every
	// initialised token the module shows. Tokens are never chosen by slot
	// number: slot ids are not stable across restarts on many modules.
	Tokens []TokenSelector
	// PIN is where the user PIN comes from; every token of this module
	// shares it.
	PIN PINSource
}

// TokenSelector picks one token by label or by serial number (one of them).
type TokenSelector struct {
	Label  string
	Serial string
}

func (t TokenSelector) String() string {
	if t.Label != "" {
		return "label " + t.Label
	}
	return "serial " + t.Serial
}

// PINSource says where a PIN is read from. PINs are never taken from a
// command-line argument, where other users of the machine could read them.
type PINSource struct {
	// File holds the PIN (surrounding white space is trimmed). It should be
	// mode 0600 or stricter.
	File string
	// Env is the name of an environment variable holding the PIN.
	Env string
}

// read returns the PIN. Errors name the source, never the value.
func (s PINSource) read() (string, error) {
	switch {
	case s.File != "" && s.Env != "":
		return "", errors.New("PIN source: set a file or an environment variable, not both")
	case s.File != "":
		b, err := os.ReadFile(s.File)
		if err != nil {
			return "", fmt.Errorf("read PIN file: %w", err)
		}
		pin := strings.TrimSpace(string(b))
		if pin == "" {
			return "", fmt.Errorf("PIN file %s is empty", s.File)
		}
		return pin, nil
	case s.Env != "":
		pin := os.Getenv(s.Env)
		if pin == "" {
			return "", fmt.Errorf("PIN environment variable %s is empty or unset", s.Env)
		}
		return pin, nil
	}
	return "", errors.New("PIN source: no file or environment variable configured")
}

// DefaultOptions returns o with every zero field set to its default.
func DefaultOptions(o Options) Options {
	if o.SessionsPerSlot <= 0 {
		o.SessionsPerSlot = 8
	}
	if o.OpTimeout <= 0 {
		o.OpTimeout = 2 * time.Second
	}
	if o.KeyGenTimeout <= 0 {
		o.KeyGenTimeout = 60 * time.Second
	}
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = 10 * time.Second
	}
	if o.QuarantineProbeInterval <= 0 {
		o.QuarantineProbeInterval = time.Second
	}
	if o.KeyCacheSize <= 0 {
		o.KeyCacheSize = 1024
	}
	if o.DomainKeyLabel == "" {
		o.DomainKeyLabel = "hsmgate-domain-key"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}
