package pki

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// PEM block types.
const (
	pemCertificate   = "CERTIFICATE"
	pemPrivateKey    = "PRIVATE KEY"     // PKCS #8
	pemECPrivateKey  = "EC PRIVATE KEY"  // SEC 1, as openssl ecparam writes
	pemRSAPrivateKey = "RSA PRIVATE KEY" // PKCS #1, as old openssl genrsa writes
)

// EncodeCertPEM returns certs as consecutive PEM "CERTIFICATE" blocks, in
// order: for a chain file, leaf first. Each certificate must have been
// created or parsed (its Raw field holds the DER).
func EncodeCertPEM(certs ...*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		// Encoding to a bytes.Buffer fails only if the block has
		// malformed headers, and this one has none.
		_ = pem.Encode(&buf, &pem.Block{Type: pemCertificate, Bytes: c.Raw})
	}
	return buf.Bytes()
}

// ParseCertsPEM parses one or more PEM "CERTIFICATE" blocks, in file order.
//
// It is strict so that a damaged file is reported rather than half read:
// there must be at least one block, only white space may appear before,
// between and after blocks, every block must be a well-formed CERTIFICATE
// block without headers, and every certificate must parse. Errors give the
// line number of the offending data.
func ParseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	blocks, err := decodePEM(data)
	if err != nil {
		return nil, fmt.Errorf("pki: ParseCertsPEM: %w", err)
	}
	if len(blocks) == 0 {
		return nil, errors.New("pki: ParseCertsPEM: no PEM CERTIFICATE block found")
	}
	certs := make([]*x509.Certificate, 0, len(blocks))
	for _, b := range blocks {
		if b.Type != pemCertificate {
			return nil, fmt.Errorf("pki: ParseCertsPEM: line %d: %q block, want %q", b.line, b.Type, pemCertificate)
		}
		if len(b.Headers) != 0 {
			return nil, fmt.Errorf("pki: ParseCertsPEM: line %d: CERTIFICATE block has PEM headers", b.line)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("pki: ParseCertsPEM: line %d: %w", b.line, err)
		}
		certs = append(certs, c)
	}
	return certs, nil
}

// EncodePrivateKeyPEM returns key as an unencrypted PKCS #8 "PRIVATE KEY"
// PEM block. key must be an in-memory key: *ecdsa.PrivateKey,
// *rsa.PrivateKey or ed25519.PrivateKey. It exists for a client's own key
// file; an HSM-backed signer cannot be exported and is refused. Write the
// result with [WriteFileAtomic] and mode 0600.
func EncodePrivateKeyPEM(key crypto.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pki: EncodePrivateKeyPEM: cannot encode a %T as PKCS #8 (HSM keys cannot be exported): %w", key, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}

// ParsePrivateKeyPEM parses a file holding exactly one unencrypted private
// key block and returns the key as a signer: "PRIVATE KEY" (PKCS #8, what
// [EncodePrivateKeyPEM] writes), or the legacy "EC PRIVATE KEY" (SEC 1) and
// "RSA PRIVATE KEY" (PKCS #1) that openssl writes. As with
// [ParseCertsPEM], only white space may surround the block. Encrypted keys
// are refused; decrypt them first (openssl pkcs8 -topk8 -nocrypt). Error
// messages never contain key material.
func ParsePrivateKeyPEM(data []byte) (crypto.Signer, error) {
	blocks, err := decodePEM(data)
	if err != nil {
		return nil, fmt.Errorf("pki: ParsePrivateKeyPEM: %w", err)
	}
	if len(blocks) != 1 {
		return nil, fmt.Errorf("pki: ParsePrivateKeyPEM: found %d PEM blocks, want exactly one private key", len(blocks))
	}
	b := blocks[0]
	if b.Type == "ENCRYPTED PRIVATE KEY" || b.Headers["Proc-Type"] != "" {
		return nil, errors.New("pki: ParsePrivateKeyPEM: the key is encrypted; decrypt it first (openssl pkcs8 -topk8 -nocrypt)")
	}
	if len(b.Headers) != 0 {
		return nil, fmt.Errorf("pki: ParsePrivateKeyPEM: line %d: key block has PEM headers", b.line)
	}
	var key any
	switch b.Type {
	case pemPrivateKey:
		key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case pemECPrivateKey:
		key, err = x509.ParseECPrivateKey(b.Bytes)
	case pemRSAPrivateKey:
		key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("pki: ParsePrivateKeyPEM: line %d: %q block, want %q", b.line, b.Type, pemPrivateKey)
	}
	if err != nil {
		// The x509 parsers' errors describe structure, not contents.
		return nil, fmt.Errorf("pki: ParsePrivateKeyPEM: %s block: %w", b.Type, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("pki: ParsePrivateKeyPEM: a %T cannot sign", key)
	}
	return signer, nil
}

// block is a decoded PEM block and the line its BEGIN marker is on.
type block struct {
	*pem.Block
	line int
}

var (
	pemBegin = []byte("-----BEGIN ")
	pemEnd   = []byte("-----END ")
)

// decodePEM splits data into PEM blocks, requiring that everything outside
// them be white space and that every block decode.
//
// pem.Decode alone is too forgiving for that: it skips any text before a
// block, and when a block is malformed it silently moves on to the next
// one. So each block is cut out first, from its BEGIN line to the first END
// line after it; the piece must hold no other BEGIN line, and pem.Decode
// must consume all of it.
func decodePEM(data []byte) ([]block, error) {
	var blocks []block
	line := 1 // line number of data[0]
	for {
		trimmed := bytes.TrimLeft(data, " \t\r\n")
		line += bytes.Count(data[:len(data)-len(trimmed)], []byte("\n"))
		data = trimmed
		if len(data) == 0 {
			return blocks, nil
		}
		if !bytes.HasPrefix(data, pemBegin) {
			return nil, fmt.Errorf("line %d: unexpected data outside a PEM block", line)
		}
		end := bytes.Index(data, pemEnd)
		if end < 0 {
			return nil, fmt.Errorf("line %d: PEM block has no END line (truncated file?)", line)
		}
		if nl := bytes.IndexByte(data[end:], '\n'); nl >= 0 {
			end += nl + 1
		} else {
			end = len(data)
		}
		piece := data[:end]
		if bytes.Count(piece, pemBegin) != 1 {
			return nil, fmt.Errorf("line %d: PEM block has a second BEGIN line before its END line", line)
		}
		b, rest := pem.Decode(piece)
		if b == nil || len(bytes.TrimSpace(rest)) != 0 {
			return nil, fmt.Errorf("line %d: malformed PEM block (bad BEGIN/END lines, headers or base64)", line)
		}
		blocks = append(blocks, block{Block: b, line: line})
		line += bytes.Count(piece, []byte("\n"))
		data = data[end:]
	}
}
