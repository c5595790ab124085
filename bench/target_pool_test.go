package bench

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/hsmpool"
	"github.com/hsmgate/hsmgate/internal/testenv"
)

// newBenchTestPool opens a pool on n fresh SoftHSM tokens with a domain key.
func newBenchTestPool(t *testing.T, n int) *hsmpool.Pool {
	t.Helper()
	env := testenv.NewSoftHSM(t, n)
	ctx := context.Background()
	p, err := hsmpool.Open(ctx, hsmpool.Options{
		Modules: []hsmpool.ModuleOptions{{Path: env.Module, PIN: hsmpool.PINSource{File: env.PINFile}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("pool close: %v", err)
		}
	})
	dk, err := hsmpool.NewDomainKeyMaterial()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.ProvisionDomainKey(ctx, dk); err != nil {
		t.Fatal(err)
	}
	clear(dk)
	return p
}

func TestPoolTarget(t *testing.T) {
	p := newBenchTestPool(t, 2)
	tgt := NewPoolTarget(p)
	defer tgt.Close()
	if tgt.Name() != "pool" || tgt.Client() != "pool" {
		t.Fatalf("Name %q Client %q", tgt.Name(), tgt.Client())
	}
	exerciseTarget(t, tgt, allOps(32, "", "", ""), 3)
	exerciseTarget(t, tgt, allOps(4096, "ECC_NIST_P521", "", "HMAC_224"), 1)
	exerciseTarget(t, tgt, allOps(1, "RSA_2048", "", "HMAC_512"), 1)
	exerciseTarget(t, tgt, allOps(300, "RSA_2048", "RSASSA_PKCS1_V1_5_SHA_256", "HMAC_384"), 1)

	pt := tgt.(*poolTarget)
	if len(pt.aad) != 23 {
		t.Fatalf("AAD of %d bytes, the gateway's is 23", len(pt.aad))
	}
	// Keys are generated once per spec, however often Prepare runs.
	// AES-256, EC-P256, HMAC-256, EC-P521, HMAC-224, RSA-2048, HMAC-512,
	// HMAC-384: the second RSA-2048 workload reuses the key.
	if n := len(pt.keys); n != 8 {
		t.Fatalf("%d keys generated: %v", n, pt.keys)
	}
}

func TestPoolTargetWrongResults(t *testing.T) {
	p := newBenchTestPool(t, 1)
	tgt := NewPoolTarget(p)
	ctx := context.Background()
	if err := tgt.Prepare(ctx, allOps(48, "", "", "")); err != nil {
		t.Fatal(err)
	}
	pt := tgt.(*poolTarget)

	good := pt.signature
	pt.signature = append([]byte(nil), good...)
	pt.signature[len(good)-2] ^= 0x10
	if err := tgt.Do(ctx, OpVerify, true); ErrorCode(err) != CodeWrongResult || !errors.Is(err, ErrWrongResult) {
		t.Errorf("Verify of a tampered signature, checked: %v (code %q)", err, ErrorCode(err))
	}
	if code := ErrorCode(tgt.Do(ctx, OpVerify, false)); code != "KMSInvalidSignatureException" {
		t.Errorf("Verify of a tampered signature, unchecked: code %q", code)
	}
	pt.signature = good

	payload := pt.payload
	pt.payload = append([]byte(nil), payload...)
	pt.payload[7] ^= 1
	if code := ErrorCode(tgt.Do(ctx, OpDecrypt, true)); code != CodeWrongResult {
		t.Errorf("Decrypt against wrong bytes: code %q", code)
	}
	if err := tgt.Do(ctx, OpDecrypt, false); err != nil {
		t.Errorf("Decrypt unchecked: %v", err)
	}
	pt.payload = payload

	sealed := pt.sealed
	pt.sealed = append([]byte(nil), sealed...)
	pt.sealed[0] ^= 1
	if code := ErrorCode(tgt.Do(ctx, OpDecrypt, true)); code != "InvalidCiphertextException" {
		t.Errorf("Decrypt of a tampered ciphertext: code %q", code)
	}
	if code := ErrorCode(tgt.Do(ctx, OpReEncrypt, true)); code != "InvalidCiphertextException" {
		t.Errorf("ReEncrypt of a tampered ciphertext: code %q", code)
	}
	pt.sealed = sealed

	dead, cancel := context.WithTimeout(ctx, -time.Second)
	defer cancel()
	if code := ErrorCode(tgt.Do(dead, OpSign, false)); code != CodeTimeout {
		t.Errorf("expired context: code %q", code)
	}
	for _, op := range AllOps {
		if err := tgt.Do(ctx, op, true); err != nil {
			t.Errorf("%s after the errors: %v", op, err)
		}
	}

	// An unsupported workload is refused before any key is made.
	if err := tgt.Prepare(ctx, &Workload{SignKeySpec: "ECC_SECG_P256K1"}); err == nil {
		t.Error("Prepare accepted an unknown sign key spec")
	}
}

func TestPoolErrorCodes(t *testing.T) {
	for sentinel, want := range map[error]string{
		hsmpool.ErrThrottled:         "ThrottlingException",
		hsmpool.ErrTimeout:           "DependencyTimeoutException",
		hsmpool.ErrUnavailable:       "DependencyTimeoutException",
		hsmpool.ErrInvalidCiphertext: "InvalidCiphertextException",
		hsmpool.ErrInvalidSignature:  "KMSInvalidSignatureException",
		hsmpool.ErrInvalidMAC:        "KMSInvalidMacException",
		hsmpool.ErrInvalidInput:      "ValidationException",
		hsmpool.ErrUnsupported:       "UnsupportedOperationException",
		hsmpool.ErrInvalidKeyBlob:    "KMSInternalException",
		hsmpool.ErrNotFound:          "NotFoundException",
		hsmpool.ErrClosed:            "KMSInternalException",
	} {
		err := &hsmpool.Error{Op: "encrypt", Err: fmt.Errorf("%w: detail", sentinel)}
		if got := ErrorCode(err); got != want {
			t.Errorf("%v: %q, want %q", sentinel, got, want)
		}
		if got := ErrorCode(callError(context.Background(), "Encrypt", err)); got != want {
			t.Errorf("%v through callError: %q, want %q", sentinel, got, want)
		}
	}
	// The window closing on a call waiting for a session is a timeout,
	// not throttling.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if got := ErrorCode(callError(ctx, "Encrypt", &hsmpool.Error{Err: hsmpool.ErrThrottled})); got != CodeTimeout {
		t.Errorf("throttled after the context ended: %q", got)
	}
}
