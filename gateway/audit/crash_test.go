package audit

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	crashDirEnv = "HSMGATE_AUDIT_CRASH_DIR"
	crashKeyEnv = "HSMGATE_AUDIT_CRASH_KEY"
)

// TestCrashChild is the child half of TestCrashRecovery: it only runs when
// re-executed with crashDirEnv set. It appends from several goroutines
// forever, printing "seq N" after each Append returns (i.e. after the record
// is durable), until the parent kills it with SIGKILL.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("helper process for TestCrashRecovery")
	}
	der, err := hex.DecodeString(os.Getenv(crashKeyEnv))
	if err != nil {
		t.Fatal(err)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		t.Fatal(err)
	}
	w, err := Open(dir, Options{Signer: k.(*ecdsa.PrivateKey), CheckpointEvery: 20 * time.Millisecond, MaxFileBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	for g := 0; ; g++ {
		if g < 8 {
			go func() {
				for i := 0; ; i++ {
					seq, err := w.AppendSeq(context.Background(), rec(g*1_000_000+i))
					if err != nil {
						fmt.Fprintln(os.Stderr, err)
						os.Exit(3)
					}
					mu.Lock()
					fmt.Fprintf(os.Stdout, "seq %d\n", seq)
					mu.Unlock()
				}
			}()
			continue
		}
		time.Sleep(time.Hour)
	}
}

// TestCrashRecovery kills a writing process with SIGKILL and checks that the
// log verifies, that every record the child was told is durable is present,
// and that a new Writer resumes the chain.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a child process")
	}
	key := newKey(t)
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashKeyEnv+"="+hex.EncodeToString(der))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := make(chan []uint64)
	go func() {
		var seqs []uint64
		br := bufio.NewReader(out)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				break // a line cut by the kill has no '\n': ignore it
			}
			if s, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "seq "); ok {
				if n, err := strconv.ParseUint(s, 10, 64); err == nil {
					seqs = append(seqs, n)
				}
			}
		}
		acked <- seqs
	}()
	time.Sleep(200 * time.Millisecond)
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	seqs := <-acked
	_ = cmd.Wait()
	if len(seqs) == 0 {
		t.Fatal("child acknowledged no appends")
	}

	rep := mustVerify(t, dir, &key.PublicKey)
	present := map[uint64]bool{}
	if err := Query(dir, Filter{}, func(r Record) error { present[r.Seq] = true; return nil }); err != nil {
		t.Fatal(err)
	}
	for _, s := range seqs {
		if !present[s] {
			t.Fatalf("acknowledged seq %d missing (log ends at %d)", s, rep.LastSeq)
		}
	}
	t.Logf("child acknowledged %d appends; log: %+v", len(seqs), *rep)

	w := openW(t, dir, key, nil)
	appendN(t, w, 0, 5)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	rep2 := mustVerify(t, dir, &key.PublicKey)
	if rep2.LastSeq != rep.LastSeq+6 || rep2.Unsealed != 0 || rep2.Records != rep.Records+5 {
		t.Fatalf("after resume: %+v (before %+v)", *rep2, *rep)
	}
}
