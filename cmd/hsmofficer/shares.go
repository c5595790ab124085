package main

import (
	"encoding/pem"
	"fmt"

	"github.com/hsmgate/hsmgate/quorum"
)

func (t *tool) unwrapShare(path, keyFile, out string) error {
	es, err := readRecord(path, quorum.PEMEncryptedShare, quorum.DecodeEncryptedShare)
	if err != nil {
		return err
	}
	k, err := t.loadKey(keyFile)
	if err != nil {
		return err
	}
	sh, err := k.DecryptShare(es)
	if err != nil {
		return err
	}
	enc, _ := sh.Encode()
	if err := writeNew(out, quorum.Armor(quorum.PEMShare, enc), 0o600); err != nil {
		return err
	}
	t.printf("share %d of %d of %q (split %x) decrypted and checked against the split's commitments\nwritten to %s: it is secret, bring it to the recovery machine and delete it after\n",
		sh.Index, sh.Split.Count, sh.Split.Label, sh.Split.ID, out)
	return nil
}

func (t *tool) combine(files []string, out string) error {
	var shares []*quorum.Share
	for _, f := range files {
		sh, err := readRecord(f, quorum.PEMShare, quorum.DecodeShare)
		if err != nil {
			return err
		}
		shares = append(shares, sh)
	}
	secret, err := quorum.Combine(shares, int(shares[0].Split.Threshold))
	if err != nil {
		return err
	}
	if err := writeNew(out, secret, 0o600); err != nil {
		return err
	}
	t.printf("secret %q (%d bytes) recovered from %d shares: %s\n", shares[0].Split.Label, len(secret), len(shares), out)
	return nil
}

// recoveryShare decrypts the officer's share and seals it to the
// recovering gateway named by a domain-recovery proposal.
func (t *tool) recoveryShare(path, keyFile, proposalFile, setFile, out string) error {
	raw, p, err := readProposal(proposalFile)
	if err != nil {
		return err
	}
	params, ok := p.Params.(*quorum.DomainRecoveryParams)
	if !ok {
		return fmt.Errorf("%s is a %s proposal, not a domain-recovery one", proposalFile, p.Kind)
	}
	t.printf("%s", p.Render())
	if setFile != "" {
		set, err := readSet(setFile)
		if err != nil {
			return err
		}
		if msg := checkAgainstSet(p, set); msg != "" {
			return fmt.Errorf("refusing: %s", msg)
		}
	}
	es, err := readRecord(path, quorum.PEMEncryptedShare, quorum.DecodeEncryptedShare)
	if err != nil {
		return err
	}
	if string(es.Split.ID) != string(params.SplitID) {
		return fmt.Errorf("%s is a share of split %x; the proposal recovers split %x", path, es.Split.ID, params.SplitID)
	}
	k, err := t.loadKey(keyFile)
	if err != nil {
		return err
	}
	sh, err := k.DecryptShare(es)
	if err != nil {
		return err
	}
	rs, err := quorum.SealRecoveryShare(p, quorum.ProposalHash(raw), sh)
	clear(sh.Value)
	if err != nil {
		return err
	}
	enc, err := rs.Encode()
	if err != nil {
		return err
	}
	if err := writeNew(out, quorum.Armor(quorum.PEMRecoveryShare, enc), 0o644); err != nil {
		return err
	}
	t.printf("share %d of split %x sealed to the recovering gateway's key for request %s: %s\n(only that gateway can open it, and only for this proposal; give it to the recovery ceremony)\n",
		sh.Index, es.Split.ID, p.RequestID, out)
	return nil
}

// unwrapExport opens an exported key record with the recipient's key.
func (t *tool) unwrapExport(path, keyFile, out string) error {
	rec, err := readRecord(path, quorum.PEMExportedKey, quorum.DecodeExportedKey)
	if err != nil {
		return err
	}
	k, err := t.loadKey(keyFile)
	if err != nil {
		return err
	}
	key, err := k.OpenExport(rec)
	if err != nil {
		return err
	}
	defer clear(key)
	what := fmt.Sprintf("%d raw bytes", len(key))
	if rec.Format == quorum.ExportPKCS8 {
		key = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key})
		what = "a PKCS#8 private key (PEM)"
	}
	if err := writeNew(out, key, 0o600); err != nil {
		return err
	}
	t.printf("key %s version %d (%s), exported by proposal %x: %s written to %s\nit is secret: keep it only as long as you need it\n",
		rec.KeyID, rec.KeyVersion, rec.KeySpec, rec.ProposalHash, what, out)
	return nil
}
