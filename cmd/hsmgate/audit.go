package main

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/gateway/audit"
)

// runAuditVerify checks the audit log's hash chain and checkpoint
// signatures with only the audit key's public half, and names the first
// record that was altered, inserted, deleted or truncated.
func runAuditVerify(dataDir, dir, keyFile string, w io.Writer) error {
	if dir == "" {
		dir = filepath.Join(dataDir, gateway.AuditDir)
	}
	if keyFile == "" {
		keyFile = filepath.Join(dataDir, gateway.AuditKeyFile)
	}
	raw, err := os.ReadFile(keyFile)
	if err != nil {
		return fmt.Errorf("audit verify: the audit key: %w", err)
	}
	block, _ := pem.Decode(raw)
	if block == nil || block.Type != "PUBLIC KEY" {
		return fmt.Errorf("audit verify: %s holds no PEM public key", keyFile)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return fmt.Errorf("audit verify: the audit key: %w", err)
	}
	rep, err := audit.Verify(dir, pub)
	if err != nil {
		var ve *audit.VerifyError
		if errors.As(err, &ve) {
			return fmt.Errorf("audit verify: FAILED at %s line %d (seq %d): %s", ve.File, ve.Line, ve.Seq, ve.Reason)
		}
		return fmt.Errorf("audit verify: %w", err)
	}
	fmt.Fprintf(w, "audit log verified: %d records and %d signed checkpoints in %d files, last seq %d, last checkpoint at seq %d",
		rep.Records, rep.Checkpoints, rep.Files, rep.LastSeq, rep.LastCheckpointSeq)
	if rep.Unsealed > 0 {
		fmt.Fprintf(w, "; %d records after the last checkpoint are chained but not yet signed", rep.Unsealed)
	}
	if rep.TornTails > 0 {
		fmt.Fprintf(w, "; %d torn tails from crashes (incomplete last lines, never acknowledged)", rep.TornTails)
	}
	fmt.Fprintln(w)
	return nil
}

// runAuditQuery prints the records that match, as JSON lines.
func runAuditQuery(dataDir string, f audit.Filter, w io.Writer) error {
	enc := json.NewEncoder(w)
	return audit.Query(filepath.Join(dataDir, gateway.AuditDir), f, func(r audit.Record) error {
		if r.Kind != audit.KindRecord {
			return nil
		}
		return enc.Encode(r)
	})
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	return time.Parse(time.RFC3339, s)
}
