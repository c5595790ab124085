package main

import (
	"fmt"
	"os"

	"github.com/hsmgate/hsmgate/quorum"
)

func defaultName() string {
	u := os.Getenv("USER")
	if u == "" {
		u = "officer"
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return u + "@" + h
	}
	return u
}

// keygen makes a key, encrypts it and writes the key file (0600), and the
// public record if asked.
func (t *tool) keygen(out, name, pubOut, token, tokenKeyLabel string) error {
	if name == "" {
		name = defaultName()
	}
	if _, err := os.Stat(out); err == nil {
		return fmt.Errorf("%s exists: refusing to overwrite it", out)
	}
	var k *quorum.OfficerKey
	var err error
	if token != "" {
		signer, ref, gerr := t.generateTokenKey(token, tokenKeyLabel)
		if gerr != nil {
			return fmt.Errorf("generate the Ed25519 key in PKCS#11 token %q: %w", token, gerr)
		}
		k, err = quorum.GenerateTokenOfficerKey(name, ref, signer)
		if err == nil {
			t.printf("the Ed25519 half is key %q in PKCS#11 token %q (sensitive, never extractable); the ML-DSA-65 and HPKE keys are in the key file\n", ref.Label, ref.Token)
		}
	} else {
		k, err = quorum.GenerateOfficerKey(name)
	}
	if err != nil {
		return err
	}
	pass, err := t.passphrase(fmt.Sprintf("new passphrase for %q", name), true)
	if err != nil {
		return err
	}
	file, err := quorum.EncryptKeyFile(k, pass, keyFileOptions...)
	if err != nil {
		return err
	}
	if err := writeNew(out, quorum.Armor(quorum.PEMOfficerKey, file), 0o600); err != nil {
		return err
	}
	if pubOut != "" {
		pub, _ := k.Public().Encode()
		if err := writeNew(pubOut, quorum.Armor(quorum.PEMOfficerPublic, pub), 0o644); err != nil {
			return err
		}
	}
	t.printf("officer key for %q written to %s\nfingerprint %s\n", name, out, k.Fingerprint())
	if pubOut != "" {
		t.printf("public key record written to %s\n", pubOut)
	}
	return nil
}

func (t *tool) pubkey(keyFile, out string) error {
	k, err := t.loadKey(keyFile)
	if err != nil {
		return err
	}
	pub, _ := k.Public().Encode()
	armored := quorum.Armor(quorum.PEMOfficerPublic, pub)
	if out == "" {
		_, err := t.out.Write(armored)
		return err
	}
	if err := writeNew(out, armored, 0o644); err != nil {
		return err
	}
	t.printf("public key record of %q written to %s\nfingerprint %s\n", k.Name(), out, k.Fingerprint())
	return nil
}

func readPublic(path string) (quorum.OfficerPublicKey, error) {
	data, err := readArmored(path, quorum.PEMOfficerPublic)
	if err != nil {
		return quorum.OfficerPublicKey{}, err
	}
	pub, err := quorum.DecodeOfficerPublicKey(data)
	if err != nil {
		return quorum.OfficerPublicKey{}, fmt.Errorf("%s: %w", path, err)
	}
	return pub, nil
}

// pop signs the proof of possession of the officer's key for a set.
func (t *tool) pop(keyFile, setFile, out string) error {
	set, err := readSet(setFile)
	if err != nil {
		return err
	}
	t.printf("%s", set.Render())
	k, err := t.loadKey(keyFile)
	if err != nil {
		return err
	}
	p, err := k.ProvePossession(set)
	if err != nil {
		return err
	}
	enc, _ := p.Encode()
	if err := writeNew(out, quorum.Armor(quorum.PEMPossession, enc), 0o644); err != nil {
		return err
	}
	h := set.Hash()
	t.printf("proof of possession by %q for set %x (epoch %d) written to %s\n", k.Name(), h, set.Epoch, out)
	return nil
}
