package attest

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

// DefaultDevice is the Linux kernel's TPM resource manager device.
const DefaultDevice = "/dev/tpmrm0"

// DefaultPlatformEventLog is where Linux exposes the firmware's TCG event log.
const DefaultPlatformEventLog = "/sys/kernel/security/tpm0/binary_bios_measurements"

// logFileName is the measurement event log's file in Config.StateDir.
const logFileName = "eventlog.json"

// Config says which TPM to use and where to keep state.
type Config struct {
	// Device is a TPM character device, normally DefaultDevice
	// (/dev/tpmrm0, the kernel resource manager: never /dev/tpm0, whose
	// transient objects would collide with other users). Exactly one of
	// Device and Socket is set.
	Device string
	// Socket is the unix socket of an swtpm data channel
	// (swtpm socket --tpm2 --server type=unixio,path=Socket). The TPM behind
	// it is taken to be the gateway's own: Open flushes transient objects
	// and sessions left loaded by a process that died.
	Socket string
	// StateDir holds the measurement event log of the current boot
	// (eventlog.json). It is required. Nothing secret is kept there.
	StateDir string
	// PCRs is the PCR allocation; the zero value means DefaultPCRs.
	PCRs PCRAllocation
	// PlatformEventLog is the firmware's TCG PC Client event log
	// (binary, crypto-agile format). Empty means DefaultPlatformEventLog when
	// Device is set and it exists, and none for Socket.
	PlatformEventLog string
	// OwnerAuth and EndorsementAuth are the owner and endorsement hierarchy
	// authorization values (empty on most machines and on swtpm).
	OwnerAuth       []byte
	EndorsementAuth []byte
	// Timeout bounds one TPM command on a Socket (default 30s).
	Timeout time.Duration
}

// TPM is an open TPM with the gateway's measurement state. Its methods are
// safe for concurrent use (they are serialised: a TPM runs one command at a
// time anyway).
type TPM struct {
	mu      sync.Mutex
	tpm     transport.TPMCloser
	cfg     Config
	alloc   PCRAllocation
	logPath string
	log     *EventLog // this boot's measurements
	broken  error     // set when the log and the PCRs may have diverged

	platformLog []byte // the firmware's raw TCG event log, nil if none
}

// ErrMeasurementState reports that the TPM's PCRs and the measurement event
// log disagree in a way the gateway cannot repair within this boot (PCRs
// extended by someone else, or the log lost or edited). Only a TPM reset
// (a reboot; for swtpm, a restart) clears it.
var ErrMeasurementState = errors.New("attest: measurement state inconsistent")

// Open opens the TPM named by cfg and loads (or starts) this boot's
// measurement event log; see the package documentation for the rules.
func Open(cfg Config) (*TPM, error) {
	if (cfg.Device == "") == (cfg.Socket == "") {
		return nil, errors.New("attest: set exactly one of Config.Device and Config.Socket")
	}
	if cfg.StateDir == "" {
		return nil, errors.New("attest: Config.StateDir is required")
	}
	alloc := cfg.PCRs.orDefault()
	if err := alloc.Validate(); err != nil {
		return nil, err
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("attest: %w", err)
	}
	t := &TPM{cfg: cfg, alloc: alloc, logPath: filepath.Join(cfg.StateDir, logFileName)}

	if err := t.loadPlatformLog(); err != nil {
		return nil, err
	}
	if cfg.Device != "" {
		dev, err := linuxtpm.Open(cfg.Device)
		if err != nil {
			return nil, fmt.Errorf("attest: opening %s: %w", cfg.Device, err)
		}
		t.tpm = dev
	} else {
		t.tpm = &streamTPM{path: cfg.Socket, timeout: cfg.Timeout}
		if err := t.flushStale(); err != nil {
			t.tpm.Close()
			return nil, fmt.Errorf("attest: TPM at %s: %w", cfg.Socket, err)
		}
	}
	if err := t.loadLog(); err != nil {
		t.tpm.Close()
		return nil, err
	}
	return t, nil
}

// Close releases the TPM. PCRs and the event log stay as they are.
func (t *TPM) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tpm == nil {
		return nil
	}
	err := t.tpm.Close()
	t.tpm = nil
	return err
}

// PCRAllocation returns the PCR allocation in force.
func (t *TPM) PCRAllocation() PCRAllocation { return t.alloc }

// flushStale flushes transient objects and sessions left in a TPM with no
// resource manager (swtpm) by a process that died before flushing them: the
// reference TPM has only three object slots.
func (t *TPM) flushStale() error {
	for _, ht := range []tpm2.TPMHT{tpm2.TPMHTTransient, tpm2.TPMHTHMACSession, tpm2.TPMHTPolicySession} {
		rsp, err := tpm2.GetCapability{
			Capability:    tpm2.TPMCapHandles,
			Property:      uint32(ht) << 24,
			PropertyCount: 64,
		}.Execute(t.tpm)
		if err != nil {
			return err
		}
		hs, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			return err
		}
		for _, h := range hs.Handle {
			if uint32(h)>>24 != uint32(ht) {
				continue
			}
			_, _ = tpm2.FlushContext{FlushHandle: h}.Execute(t.tpm)
		}
	}
	return nil
}

// object is a loaded TPM object.
type object struct {
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
	public tpm2.TPMTPublic
}

func (o *object) named() tpm2.NamedHandle { return tpm2.NamedHandle{Handle: o.handle, Name: o.name} }

// createPrimary derives a primary key from a hierarchy seed and a template.
// The same template under the same seed always yields the same key, which
// is why the EK, the AK and the SRK are never stored: see the package doc.
func (t *TPM) createPrimary(hierarchy tpm2.TPMHandle, auth []byte, tmpl tpm2.TPMTPublic) (*object, error) {
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: hierarchy, Auth: tpm2.PasswordAuth(auth)},
		InPublic:      tpm2.New2B(tmpl),
	}.Execute(t.tpm)
	if err != nil {
		return nil, err
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		t.flush(rsp.ObjectHandle)
		return nil, err
	}
	return &object{handle: rsp.ObjectHandle, name: rsp.Name, public: *pub}, nil
}

func (t *TPM) flush(h tpm2.TPMHandle) {
	_, _ = tpm2.FlushContext{FlushHandle: h}.Execute(t.tpm)
}

func (t *TPM) ek() (*object, error) {
	o, err := t.createPrimary(tpm2.TPMRHEndorsement, t.cfg.EndorsementAuth, tpm2.ECCEKTemplate)
	if err != nil {
		return nil, fmt.Errorf("attest: creating EK: %w", err)
	}
	return o, nil
}

func (t *TPM) ak() (*object, error) {
	o, err := t.createPrimary(tpm2.TPMRHEndorsement, t.cfg.EndorsementAuth, akTemplate)
	if err != nil {
		return nil, fmt.Errorf("attest: creating AK: %w", err)
	}
	return o, nil
}

func (t *TPM) srk() (*object, error) {
	o, err := t.createPrimary(tpm2.TPMRHOwner, t.cfg.OwnerAuth, tpm2.ECCSRKTemplate)
	if err != nil {
		return nil, fmt.Errorf("attest: creating SRK: %w", err)
	}
	return o, nil
}

// pcrSelection selects PCRs in the SHA-256 bank.
func pcrSelection(pcrs []int) tpm2.TPMLPCRSelection {
	u := make([]uint, len(pcrs))
	for i, p := range pcrs {
		u[i] = uint(p)
	}
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash:      tpm2.TPMAlgSHA256,
		PCRSelect: tpm2.PCClientCompatible.PCRs(u...),
	}}}
}

// selectedPCRs lists a selection's PCRs in TPM order (bank by bank, PCR
// index ascending), failing on any bank other than SHA-256.
func selectedPCRs(sel tpm2.TPMLPCRSelection) ([]int, error) {
	var out []int
	for _, s := range sel.PCRSelections {
		if s.Hash != tpm2.TPMAlgSHA256 {
			if !allZero(s.PCRSelect) {
				return nil, fmt.Errorf("PCR bank %#x selected; only SHA-256 is used", uint16(s.Hash))
			}
			continue
		}
		for i, b := range s.PCRSelect {
			for j := 0; j < 8; j++ {
				if b&(1<<j) != 0 {
					out = append(out, i*8+j)
				}
			}
		}
	}
	return out, nil
}

// readPCRs reads SHA-256 PCR values. A TPM returns at most eight digests per
// PCR_Read, so it loops until every PCR asked for has been returned.
func (t *TPM) readPCRs(pcrs []int) (map[int][]byte, error) {
	want := map[int]bool{}
	for _, p := range pcrs {
		want[p] = true
	}
	out := map[int][]byte{}
	for len(want) > 0 {
		var rest []int
		for p := range want {
			rest = append(rest, p)
		}
		sort.Ints(rest)
		rsp, err := tpm2.PCRRead{PCRSelectionIn: pcrSelection(rest)}.Execute(t.tpm)
		if err != nil {
			return nil, fmt.Errorf("attest: reading PCRs: %w", err)
		}
		got, err := selectedPCRs(rsp.PCRSelectionOut)
		if err != nil {
			return nil, err
		}
		if len(got) == 0 || len(got) != len(rsp.PCRValues.Digests) {
			return nil, fmt.Errorf("attest: TPM returned no SHA-256 values for PCRs %v (is the SHA-256 bank allocated?)", rest)
		}
		for i, p := range got {
			out[p] = rsp.PCRValues.Digests[i].Buffer
			delete(want, p)
		}
	}
	return out, nil
}

// PCRs reads the current values of the allocated PCRs (SHA-256 bank).
func (t *TPM) PCRs() (map[int][]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tpm == nil {
		return nil, errClosed
	}
	return t.readPCRs(t.alloc.Indices())
}

var errClosed = errors.New("attest: TPM closed")

// bootID reads the TPM's reset and restart counters.
func (t *TPM) bootID() (BootID, error) {
	rsp, err := tpm2.ReadClock{}.Execute(t.tpm)
	if err != nil {
		return BootID{}, fmt.Errorf("attest: reading TPM clock: %w", err)
	}
	ci := rsp.CurrentTime.ClockInfo
	return BootID{ResetCount: ci.ResetCount, RestartCount: ci.RestartCount}, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// pcrDigest is the quote's PCR digest: SHA-256 over the values in order.
func pcrDigest(order []int, values map[int][]byte) []byte {
	h := sha256.New()
	for _, p := range order {
		h.Write(values[p])
	}
	return h.Sum(nil)
}
