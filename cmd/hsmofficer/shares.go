package main

import (
	"fmt"

	"github.com/hsmgate/hsmgate/quorum"
)

func (t *tool) unwrapShare(path, keyFile, out string) error {
	data, err := readArmored(path, quorum.PEMEncryptedShare)
	if err != nil {
		return err
	}
	es, err := quorum.DecodeEncryptedShare(data)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
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
		data, err := readArmored(f, quorum.PEMShare)
		if err != nil {
			return err
		}
		sh, err := quorum.DecodeShare(data)
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
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
