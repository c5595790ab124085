package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/internal/pki"
)

// The admin's SigV4 credentials, for the client side.
//
// <data>/admin/credentials is an AWS shared-credentials file, like a user's
// ~/.aws/credentials: it is the CLIENT's copy of the admin's access key, in
// plaintext, written once by `hsmgate init` for the operator to take to
// whatever calls the gateway (or to use through `hsmgate env`). The gateway
// itself never reads it: its keystore holds only the HSM-encrypted secret.
const (
	adminCredentialsFile = gateway.AdminDir + "/credentials"
	credentialsProfile   = "hsmgate"
)

// writeCredentials writes an AWS shared-credentials file with one profile,
// "hsmgate", mode 0600.
func writeCredentials(path, akid, secret string) error {
	data := []byte("[" + credentialsProfile + "]\n" +
		"aws_access_key_id = " + akid + "\n" +
		"aws_secret_access_key = " + secret + "\n")
	err := pki.WriteFileAtomic(path, data, 0o600)
	clear(data)
	if err != nil {
		return fmt.Errorf("write the admin's credentials: %w", err)
	}
	return nil
}

// readCredentials reads the "hsmgate" profile of an AWS shared-credentials
// file (comments, blank lines and other profiles are allowed).
func readCredentials(path string) (akid, secret string, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", "", fmt.Errorf("the admin's credentials file %s is missing: `hsmgate init` writes it once, "+
			"when it creates the data folder. If it was moved or deleted, create another access key with "+
			"`hsmgate principal create-access-key %s` and set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY yourself",
			path, gateway.AdminName)
	}
	if err != nil {
		return "", "", fmt.Errorf("read the admin's credentials: %w", err)
	}
	defer clear(data)
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
			continue
		case line[0] == '[' && line[len(line)-1] == ']':
			section = strings.TrimSpace(line[1 : len(line)-1])
			continue
		}
		if section != credentialsProfile {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "aws_access_key_id":
			akid = strings.TrimSpace(v)
		case "aws_secret_access_key":
			secret = strings.TrimSpace(v)
		}
	}
	if akid == "" || secret == "" {
		return "", "", fmt.Errorf("%s has no [%s] profile with aws_access_key_id and aws_secret_access_key", path, credentialsProfile)
	}
	return akid, secret, nil
}

// shellQuote quotes s for a POSIX shell as one word with no expansion: in
// single quotes, each single quote inside closing the quotes, escaped, and
// reopening them:
//
//	it's -> 'it'\''s'
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// shellWord returns s as is when a shell would read it as one plain word,
// else quoted: for the commands hsmgate suggests, which read best bare.
func shellWord(s string) string {
	if s == "" {
		return "''"
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("_-./:@%+=,", c)) {
			return shellQuote(s)
		}
	}
	return s
}

// selfCommand is how to run this hsmgate again from any folder, for the
// commands it suggests: its absolute path when it was started by path
// (bin/hsmgate), else "hsmgate" (found on PATH).
func selfCommand() string {
	if arg0 := os.Args[0]; strings.ContainsRune(arg0, '/') {
		if abs, err := filepath.Abs(arg0); err == nil {
			return shellWord(abs)
		}
	}
	return "hsmgate"
}
