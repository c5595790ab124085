package attest

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// A Counter is a monotonic counter kept in a TPM NV index of type
// TPM_NT_COUNTER: the TPM lets it be read and incremented by one, never set
// or decreased. hsmgate keeps the highest activated firmware image version
// in one (package images, anti-rollback), so that rolling the version back
// needs more than editing a file.
//
// # The index
//
// OpenCounter defines the index on first use (TPM2_NV_DefineSpace under the
// owner hierarchy) with exactly these attributes, and on later opens refuses
// an index at that handle that has any others:
//
//	TPM_NT_COUNTER, OWNERWRITE, OWNERREAD, NO_DA; name algorithm SHA-256;
//	8 bytes; no auth value, no policy
//
// It is not ORDERLY: every increment is written to the TPM's non-volatile
// memory at once, so a power loss never loses one (an orderly counter can
// jump forward after a power loss, which would refuse the running image).
// Every read and increment is authorised with the owner hierarchy
// (Config.OwnerAuth).
//
// # What deleting the index does
//
// Whoever holds the owner authorization can delete the index
// (TPM2_NV_UndefineSpace). A TPM never lets a counter go back, though: it
// remembers the largest value any deleted counter had, and a counter
// defined afterwards starts above it (TPM 2.0 Part 1, "NV Counters"). So a
// deleted and re-created counter reads at least what it read before, and
// the rollback it protects against stays refused. The same rule means that
// on a TPM where other software deleted counters earlier, a new counter
// starts above zero; Read tells.
//
// # Value zero
//
// A counter defined but never incremented has no value; Read reports 0
// for it, and the first increment gives it the TPM's starting value
// (normally 1).
type Counter struct {
	t     *TPM
	index tpm2.TPMHandle
}

// DefaultCounterIndex is the NV index hsmgate uses for the firmware
// anti-rollback counter: 0x013F4847 ("?HG"), in the range the TCG reserves
// for indices defined by the TPM owner (0x01000000–0x013FFFFF).
const DefaultCounterIndex uint32 = 0x013F4847

// MaxCounterStep bounds the increments one IncrementTo may make. A TPM
// counter moves by one per command and every increment is an NV write
// (hardware TPMs take milliseconds per write and wear), so versions kept
// in a counter must grow in small steps: number releases 1, 2, 3…, not by
// date. 4096 steps take well under a second on swtpm and a few seconds on
// a hardware TPM.
const MaxCounterStep = 4096

// Counter errors.
var (
	// ErrCounterIndex: the NV index exists with attributes other than a
	// Counter's: something else uses that handle. Choose another index.
	ErrCounterIndex = errors.New("attest: NV index is not an hsmgate counter")
	// ErrCounterStep: IncrementTo was asked to move the counter by more
	// than MaxCounterStep.
	ErrCounterStep = errors.New("attest: counter step too large")
)

// The owner-defined NV index range (TCG Registry of Reserved TPM 2.0
// Handles and Localities).
const (
	ownerNVFirst = 0x01000000
	ownerNVLast  = 0x013FFFFF
)

// counterAttributes are the attributes OpenCounter defines and expects
// (TPMA_NV_WRITTEN aside, which the TPM sets at the first increment).
func counterAttributes() tpm2.TPMANV {
	return tpm2.TPMANV{
		OwnerWrite: true,
		OwnerRead:  true,
		NoDA:       true,
		NT:         tpm2.TPMNTCounter,
	}
}

// OpenCounter opens the monotonic counter at NV index on t, defining it if
// it does not exist. index must be in the owner range
// (0x01000000–0x013FFFFF); DefaultCounterIndex is hsmgate's.
func OpenCounter(t *TPM, index uint32) (*Counter, error) {
	if index < ownerNVFirst || index > ownerNVLast {
		return nil, fmt.Errorf("attest: NV index %#08x is outside the owner range %#08x–%#08x", index, ownerNVFirst, ownerNVLast)
	}
	c := &Counter{t: t, index: tpm2.TPMHandle(index)}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tpm == nil {
		return nil, errClosed
	}
	pub, err := c.readPublic()
	if errors.Is(err, tpm2.TPMRCHandle) {
		_, err = tpm2.NVDefineSpace{
			AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(t.cfg.OwnerAuth)},
			PublicInfo: tpm2.New2B(tpm2.TPMSNVPublic{
				NVIndex:    c.index,
				NameAlg:    tpm2.TPMAlgSHA256,
				Attributes: counterAttributes(),
				DataSize:   8,
			}),
		}.Execute(t.tpm)
		if err != nil {
			return nil, fmt.Errorf("attest: defining NV counter %#08x: %w", index, err)
		}
		pub, err = c.readPublic()
	}
	if err != nil {
		return nil, fmt.Errorf("attest: NV counter %#08x: %w", index, err)
	}
	want := counterAttributes()
	got := pub.Attributes
	got.Written = false
	if got != want || pub.NameAlg != tpm2.TPMAlgSHA256 || pub.DataSize != 8 || len(pub.AuthPolicy.Buffer) != 0 {
		return nil, fmt.Errorf("%w: index %#08x has attributes %#08x (type %d), want a counter with %#08x", ErrCounterIndex, index,
			attrBits(pub.Attributes), pub.Attributes.NT, attrBits(want))
	}
	return c, nil
}

// attrBits is the TPMA_NV bit field, for messages.
func attrBits(a tpm2.TPMANV) uint32 {
	b := tpm2.Marshal(a)
	if len(b) != 4 {
		return 0
	}
	return binary.BigEndian.Uint32(b)
}

// Index is the counter's NV index.
func (c *Counter) Index() uint32 { return uint32(c.index) }

// readPublic reads the index's public area. The caller holds t.mu.
func (c *Counter) readPublic() (*tpm2.TPMSNVPublic, error) {
	rsp, err := tpm2.NVReadPublic{NVIndex: c.index}.Execute(c.t.tpm)
	if err != nil {
		return nil, err
	}
	return rsp.NVPublic.Contents()
}

// Read returns the counter's value (0 if it was never incremented).
func (c *Counter) Read() (uint64, error) {
	c.t.mu.Lock()
	defer c.t.mu.Unlock()
	if c.t.tpm == nil {
		return 0, errClosed
	}
	return c.read()
}

// read is Read with t.mu held.
func (c *Counter) read() (uint64, error) {
	rsp, err := tpm2.NVRead{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(c.t.cfg.OwnerAuth)},
		NVIndex:    c.named(),
		Size:       8,
	}.Execute(c.t.tpm)
	if errors.Is(err, tpm2.TPMRCNVUninitialized) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("attest: reading NV counter %#08x: %w", uint32(c.index), err)
	}
	if len(rsp.Data.Buffer) != 8 {
		return 0, fmt.Errorf("attest: NV counter %#08x: read %d bytes, want 8", uint32(c.index), len(rsp.Data.Buffer))
	}
	return binary.BigEndian.Uint64(rsp.Data.Buffer), nil
}

// named is the index as a command handle. Its name is only used for
// sessions that compute a command hash; password authorization (all this
// file uses) does not.
func (c *Counter) named() tpm2.NamedHandle {
	return tpm2.NamedHandle{Handle: c.index}
}

// increment adds one. The caller holds t.mu.
func (c *Counter) increment() error {
	_, err := tpm2.NVIncrement{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(c.t.cfg.OwnerAuth)},
		NVIndex:    c.named(),
	}.Execute(c.t.tpm)
	if err != nil {
		return fmt.Errorf("attest: incrementing NV counter %#08x: %w", uint32(c.index), err)
	}
	return nil
}

// Increment adds one to the counter and returns the new value.
func (c *Counter) Increment() (uint64, error) {
	c.t.mu.Lock()
	defer c.t.mu.Unlock()
	if c.t.tpm == nil {
		return 0, errClosed
	}
	if err := c.increment(); err != nil {
		return 0, err
	}
	return c.read()
}

// IncrementTo increments the counter until it reads at least v and returns
// its value. A counter already at or above v is left alone (its value,
// possibly above v, is returned: the caller decides whether that is a
// rollback). Moving it by more than MaxCounterStep fails with
// ErrCounterStep before any increment. The first increment of a counter
// that was never written may land above v (see the Counter documentation).
// An error part-way leaves the counter between its old value and v.
func (c *Counter) IncrementTo(v uint64) (uint64, error) {
	c.t.mu.Lock()
	defer c.t.mu.Unlock()
	if c.t.tpm == nil {
		return 0, errClosed
	}
	cur, err := c.read()
	if err != nil {
		return 0, err
	}
	if cur >= v {
		return cur, nil
	}
	if v-cur > MaxCounterStep {
		return cur, fmt.Errorf("%w: NV counter %#08x is at %d; reaching %d needs %d increments, more than the %d allowed", ErrCounterStep,
			uint32(c.index), cur, v, v-cur, MaxCounterStep)
	}
	if cur == 0 {
		// The first increment initialises the counter to the TPM's
		// starting value (above every deleted counter's).
		if err := c.increment(); err != nil {
			return 0, err
		}
		if cur, err = c.read(); err != nil {
			return 0, err
		}
	}
	for ; cur < v; cur++ {
		if err := c.increment(); err != nil {
			return 0, err
		}
	}
	return c.read()
}
