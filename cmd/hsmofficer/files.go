package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/hsmgate/hsmgate/quorum"
)

// tool holds the command's standard streams.
type tool struct {
	in       io.Reader
	out, err io.Writer
	lines    *bufio.Reader
}

func (t *tool) printf(format string, args ...any) { fmt.Fprintf(t.out, format, args...) }

// readArmored reads a PEM file of the given type.
func readArmored(path, typ string) ([]byte, error) {
	file, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	data, err := quorum.DearmorType(file, typ)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return data, nil
}

// readRecord reads a PEM file of the given type and decodes its record;
// errors name the file.
func readRecord[T any](path, typ string, decode func([]byte) (T, error)) (T, error) {
	var zero T
	data, err := readArmored(path, typ)
	if err != nil {
		return zero, err
	}
	v, err := decode(data)
	if err != nil {
		return zero, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

// writeNew writes data to a file that must not exist yet.
func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return cli.Exit(fmt.Sprintf("%s exists: refusing to overwrite it", path), 1)
		}
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func readSet(path string) (*quorum.Set, error) {
	data, err := readArmored(path, quorum.PEMSet)
	if err != nil {
		return nil, err
	}
	s, err := quorum.DecodeSet(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

func readProposal(path string) ([]byte, *quorum.Proposal, error) {
	data, err := readArmored(path, quorum.PEMProposal)
	if err != nil {
		return nil, nil, err
	}
	p, err := quorum.DecodeProposal(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return data, p, nil
}

// passphrase returns HSMOFFICER_PASSPHRASE if it is set and not empty, or
// reads the passphrase from the terminal without echo (twice when confirm).
func (t *tool) passphrase(prompt string, confirm bool) ([]byte, error) {
	return t.secret(passphraseEnv, "passphrase", prompt, confirm)
}

// secret returns the environment variable env if it is set and not
// empty, or reads what (a passphrase, a PIN) from the terminal without
// echo (twice when confirm).
func (t *tool) secret(env, what, prompt string, confirm bool) ([]byte, error) {
	if p := os.Getenv(env); p != "" {
		return []byte(p), nil
	}
	f, ok := t.in.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil, errors.New("no terminal to read the " + what + " from (set " + env + " in scripts)")
	}
	fmt.Fprint(t.err, prompt+": ")
	p, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(t.err)
	if err != nil {
		return nil, err
	}
	if len(p) == 0 {
		return nil, errors.New("empty " + what)
	}
	if confirm {
		fmt.Fprint(t.err, "again: ")
		again, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(t.err)
		if err != nil {
			return nil, err
		}
		if string(again) != string(p) {
			return nil, errors.New("the " + what + "s differ")
		}
	}
	return p, nil
}

// loadKey reads and decrypts a key file.
func (t *tool) loadKey(path string) (*quorum.OfficerKey, error) {
	data, err := readArmored(path, quorum.PEMOfficerKey)
	if err != nil {
		return nil, err
	}
	pub, err := quorum.KeyFilePublic(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	pass, err := t.passphrase(fmt.Sprintf("passphrase for %q (%s)", pub.Name, pub.Fingerprint().Short()), false)
	if err != nil {
		return nil, err
	}
	k, err := quorum.DecryptKeyFile(data, pass)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if ref := k.Token(); ref != nil {
		signer, err := t.openTokenKey(*ref)
		if err != nil {
			return nil, fmt.Errorf("%s: the Ed25519 half is key %q in PKCS#11 token %q: %w", path, ref.Label, ref.Token, err)
		}
		if err := k.AttachTokenSigner(signer); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// ask prints question on stderr and reads one line of the answer.
func (t *tool) ask(question string) (string, error) {
	fmt.Fprint(t.err, question)
	if t.lines == nil {
		t.lines = bufio.NewReader(t.in)
	}
	line, err := t.lines.ReadString('\n')
	if err != nil && (err != io.EOF || line == "") {
		return "", errors.New("no answer (use --yes to sign without being asked)")
	}
	return strings.TrimSpace(line), nil
}
