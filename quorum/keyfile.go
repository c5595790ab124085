package quorum

import (
	"crypto/subtle"
	"errors"
	"fmt"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
)

const tagKeyFile = "hsmgate/quorum/officer-key-file/v1"

// KDFParams are the Argon2id (RFC 9106) parameters of a key file.
type KDFParams struct {
	_ struct{} `cbor:",toarray"`
	// Alg is always "argon2id".
	Alg string
	// Time is the number of passes.
	Time uint32
	// MemoryKiB is the memory in KiB.
	MemoryKiB uint32
	// Threads is the degree of parallelism.
	Threads uint8
	// Salt is 16 random bytes, new for every encryption.
	Salt []byte
}

// DefaultKDFParams are used for every key file hsmofficer writes: Argon2id,
// 3 passes over 256 MiB with 4 lanes (RFC 9106 §4's second recommended
// option, with 4× its memory), about a second on an officer's laptop. They
// are recorded in the file, so files stay readable if the default changes.
var DefaultKDFParams = KDFParams{Alg: "argon2id", Time: 3, MemoryKiB: 256 * 1024, Threads: 4}

// Bounds on the parameters read from a key file, so that a crafted file
// cannot make the reader allocate without limit.
const (
	maxKDFMemoryKiB = 4 * 1024 * 1024 // 4 GiB
	maxKDFTime      = 64
)

// keyFile is the on-disk record: everything but the ciphertext is the
// associated data of the AEAD, so the header, the KDF parameters and the
// public key cannot be changed without the passphrase.
type keyFile struct {
	_          struct{} `cbor:",toarray"`
	Tag        string
	KDF        KDFParams
	AEAD       string // "xchacha20-poly1305"
	Public     OfficerPublicKey
	Nonce      []byte // 24 bytes
	Ciphertext []byte // XChaCha20-Poly1305(officerSecret)
}

type keyFileHeader struct {
	_      struct{} `cbor:",toarray"`
	Tag    string
	KDF    KDFParams
	AEAD   string
	Public OfficerPublicKey
	Nonce  []byte
}

const aeadXChaCha = "xchacha20-poly1305"

// ErrWrongPassphrase is returned when a key file does not decrypt: the
// passphrase is wrong, or the file was changed.
var ErrWrongPassphrase = errors.New("quorum: wrong passphrase (or the key file was modified)")

// KeyFileOption changes how EncryptKeyFile encrypts.
type KeyFileOption func(*KDFParams)

// WithKDFParams replaces DefaultKDFParams' cost (time, memory, threads).
// Production code has no reason to call it; tests use it to run fast.
func WithKDFParams(time, memoryKiB uint32, threads uint8) KeyFileOption {
	return func(p *KDFParams) { p.Time, p.MemoryKiB, p.Threads = time, memoryKiB, threads }
}

// EncryptKeyFile encrypts k under passphrase: key = Argon2id(passphrase,
// salt, params) (32 bytes), then XChaCha20-Poly1305 with a random nonce.
// The result is the encoded key file (armour it with PEMOfficerKey).
func EncryptKeyFile(k *OfficerKey, passphrase []byte, opts ...KeyFileOption) ([]byte, error) {
	if len(passphrase) == 0 {
		return nil, errors.New("quorum: empty passphrase")
	}
	p := DefaultKDFParams
	for _, o := range opts {
		o(&p)
	}
	if err := p.check(); err != nil {
		return nil, err
	}
	var err error
	if p.Salt, err = randomBytes(16); err != nil {
		return nil, err
	}
	nonce, err := randomBytes(chacha20poly1305.NonceSizeX)
	if err != nil {
		return nil, err
	}
	h := keyFileHeader{Tag: tagKeyFile, KDF: p, AEAD: aeadXChaCha, Public: k.Public(), Nonce: nonce}
	aad, err := marshal(h)
	if err != nil {
		return nil, err
	}
	plain, err := marshal(k.secret())
	if err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.NewX(p.derive(passphrase))
	if err != nil {
		return nil, err
	}
	return marshal(keyFile{Tag: tagKeyFile, KDF: p, AEAD: aeadXChaCha, Public: h.Public, Nonce: nonce, Ciphertext: aead.Seal(nil, nonce, plain, aad)})
}

func (p KDFParams) check() error {
	if p.Alg != "argon2id" {
		return fmt.Errorf("quorum: key file KDF %q is not supported (want argon2id)", p.Alg)
	}
	if p.Time < 1 || p.Time > maxKDFTime || p.Threads < 1 || p.MemoryKiB < 8*uint32(p.Threads) || p.MemoryKiB > maxKDFMemoryKiB {
		return fmt.Errorf("quorum: key file Argon2id parameters out of range (t=%d, m=%d KiB, p=%d)", p.Time, p.MemoryKiB, p.Threads)
	}
	return nil
}

func (p KDFParams) derive(passphrase []byte) []byte {
	return argon2.IDKey(passphrase, p.Salt, p.Time, p.MemoryKiB, p.Threads, chacha20poly1305.KeySize)
}

// KeyFilePublic returns the public key recorded in a key file without the
// passphrase. It is not authenticated until the file is decrypted.
func KeyFilePublic(data []byte) (OfficerPublicKey, error) {
	f, err := decodeKeyFile(data)
	if err != nil {
		return OfficerPublicKey{}, err
	}
	return f.Public, nil
}

func decodeKeyFile(data []byte) (keyFile, error) {
	var f keyFile
	if err := unmarshalStrict(data, &f); err != nil {
		return keyFile{}, fmt.Errorf("key file: %w", err)
	}
	if f.Tag != tagKeyFile {
		return keyFile{}, fmt.Errorf("quorum: not an officer key file (tag %q)", f.Tag)
	}
	if f.AEAD != aeadXChaCha {
		return keyFile{}, fmt.Errorf("quorum: key file cipher %q is not supported", f.AEAD)
	}
	if err := f.KDF.check(); err != nil {
		return keyFile{}, err
	}
	if len(f.KDF.Salt) != 16 || len(f.Nonce) != chacha20poly1305.NonceSizeX {
		return keyFile{}, errors.New("quorum: key file: bad salt or nonce length")
	}
	if err := f.Public.validate(); err != nil {
		return keyFile{}, err
	}
	return f, nil
}

// DecryptKeyFile opens a key file written by EncryptKeyFile. A wrong
// passphrase, or any change to the file, gives ErrWrongPassphrase.
func DecryptKeyFile(data, passphrase []byte) (*OfficerKey, error) {
	f, err := decodeKeyFile(data)
	if err != nil {
		return nil, err
	}
	aad, err := marshal(keyFileHeader{Tag: f.Tag, KDF: f.KDF, AEAD: f.AEAD, Public: f.Public, Nonce: f.Nonce})
	if err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.NewX(f.KDF.derive(passphrase))
	if err != nil {
		return nil, err
	}
	plain, err := aead.Open(nil, f.Nonce, f.Ciphertext, aad)
	if err != nil {
		return nil, ErrWrongPassphrase
	}
	k, err := decodeSecret(plain)
	if err != nil {
		return nil, err
	}
	a, _ := k.Public().Encode()
	b, _ := f.Public.Encode()
	if subtle.ConstantTimeCompare(a, b) != 1 {
		return nil, errors.New("quorum: key file: the recorded public key does not match the private key")
	}
	return k, nil
}
