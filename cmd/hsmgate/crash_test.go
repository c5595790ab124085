package main

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/gateway/keystore"
)

// A gateway killed (SIGKILL) while keys are being rotated restarts with
// every key usable and every ciphertext any client was given decryptable:
// a rotation is either wholly recorded or not at all.
func TestKillDuringRotation(t *testing.T) {
	data, endpoint, _ := initGateway(t, 2)
	roots := caPool(t, filepath.Join(data, "pki", "ca.pem"))
	akid, secret := readAdminCredentials(t, data)
	srv := startServe(t, data)
	srv.waitReady(t, endpoint, roots)
	c := kmsClient(endpoint, "us-east-1", akid, secret, roots)
	ctx := context.Background()

	type sealed struct {
		blob      []byte
		plaintext string
	}
	var (
		mu      sync.Mutex
		given   []sealed // every ciphertext a client received
		rotated = map[string]int{}
	)
	const nKeys = 3
	var ids []string
	for i := range nKeys {
		k, err := c.CreateKey(ctx, &kms.CreateKeyInput{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, *k.KeyMetadata.KeyId)
		pt := fmt.Sprintf("key %d before", i)
		out, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: k.KeyMetadata.KeyId, Plaintext: []byte(pt)})
		if err != nil {
			t.Fatal(err)
		}
		given = append(given, sealed{out.CiphertextBlob, pt})
	}

	// Rotate and encrypt on every key at once until the gateway dies.
	var acked atomic.Int32
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 20; n++ {
				if _, err := c.RotateKeyOnDemand(ctx, &kms.RotateKeyOnDemandInput{KeyId: aws.String(id)}); err != nil {
					return
				}
				mu.Lock()
				rotated[id]++
				mu.Unlock()
				acked.Add(1)
				pt := fmt.Sprintf("key %d after rotation %d", i, n+1)
				out, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(id), Plaintext: []byte(pt)})
				if err != nil {
					return
				}
				mu.Lock()
				given = append(given, sealed{out.CiphertextBlob, pt})
				mu.Unlock()
			}
		}()
	}
	deadline := time.Now().Add(30 * time.Second)
	for acked.Load() < 6 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if err := srv.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-srv.done
	wg.Wait()
	if acked.Load() < 6 {
		t.Fatalf("only %d rotations before the kill", acked.Load())
	}

	srv = startServe(t, data)
	srv.waitReady(t, endpoint, roots)
	for _, s := range given {
		out, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: s.blob})
		if err != nil || string(out.Plaintext) != s.plaintext {
			t.Fatalf("after the crash %q does not decrypt: %v", s.plaintext, err)
		}
	}
	for _, id := range ids {
		rl, err := c.ListKeyRotations(ctx, &kms.ListKeyRotationsInput{KeyId: aws.String(id)})
		if err != nil {
			t.Fatal(err)
		}
		// The kill may land after a rotation is recorded and before its
		// answer is sent, never the other way round.
		if got, acknowledged := len(rl.Rotations), rotated[id]; got < acknowledged || got > acknowledged+1 {
			t.Errorf("key %s: %d rotations recorded, %d acknowledged", id, got, acknowledged)
		}
		out, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(id), Plaintext: []byte("after restart")})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: out.CiphertextBlob}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.RotateKeyOnDemand(ctx, &kms.RotateKeyOnDemandInput{KeyId: aws.String(id)}); err != nil {
			t.Fatal(err)
		}
	}
	if code := srv.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("serve exited %d", code)
	}
	// Every version on disk has its material.
	store, err := keystore.Open(filepath.Join(data, gateway.KeystoreFile))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for _, id := range ids {
		k, err := store.Key(id)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range k.Versions {
			if len(v.Blob) == 0 {
				t.Errorf("key %s version %d has no material", id, v.Number)
			}
		}
	}
}
