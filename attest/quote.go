package attest

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// DocumentVersion is the attestation document format version.
const DocumentVersion = 1

// quoteTag domain-separates the quote's extraData.
const quoteTag = "hsmgate.attest.quote.v1\x00"

// Nonce size limits for Attest.
const (
	MinNonceSize = 16
	MaxNonceSize = 128
)

// Document is an attestation document, the body of GET /attestation. All
// byte strings are base64 in JSON (Go's encoding/json default); PCRs are
// keyed by their decimal index.
type Document struct {
	Version int `json:"version"`
	// Quote is the TPMS_ATTEST the AK signed (TPM wire format).
	Quote []byte `json:"quote"`
	// Signature is the TPMT_SIGNATURE over Quote (TPM wire format).
	Signature []byte `json:"signature"`
	// PCRs are the SHA-256 values of the quoted PCRs.
	PCRs map[int][]byte `json:"pcrs"`
	// EventLog is the measurement event log (EventLog's JSON).
	EventLog json.RawMessage `json:"eventLog"`
	// PlatformEventLog is the firmware's raw TCG event log, if the gateway
	// has one (then PCRs 0–7 are quoted too).
	PlatformEventLog []byte `json:"platformEventLog,omitempty"`
	// Manifest is the active image manifest, as given to Attest.
	Manifest []byte `json:"manifest"`
	// TLSKeyHash is SHA-256 of the gateway's TLS public key (DER
	// SubjectPublicKeyInfo).
	TLSKeyHash []byte `json:"tlsKeyHash"`
	// Nonce is the caller's nonce.
	Nonce []byte `json:"nonce"`
}

// ExtraData is the quote's qualifying data (extraData), binding the
// caller's nonce, the gateway's TLS key and the image manifest:
//
//	SHA-256("hsmgate.attest.quote.v1\x00" ||
//	        u32be(len(nonce)) || nonce || u32be(len(tlsKeyHash)) || tlsKeyHash ||
//	        SHA-256(manifest))
func ExtraData(nonce, tlsKeyHash, manifest []byte) []byte {
	mh := sha256.Sum256(manifest)
	h := sha256.New()
	h.Write([]byte(quoteTag))
	for _, f := range [][]byte{nonce, tlsKeyHash} {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(f)))
		h.Write(n[:])
		h.Write(f)
	}
	h.Write(mh[:])
	return h.Sum(nil)
}

// platformPCRs are quoted when the gateway has the firmware's event log.
var platformPCRs = []int{0, 1, 2, 3, 4, 5, 6, 7}

// quotedPCRs is what Attest quotes: the allocated PCRs, and the firmware
// PCRs 0–7 when there is a platform event log to replay them.
func (t *TPM) quotedPCRs() []int {
	if t.platformLog == nil {
		return t.alloc.Indices()
	}
	return append(append([]int{}, platformPCRs...), t.alloc.Indices()...)
}

// Attest produces an attestation document: a quote by the AK over the
// quoted PCRs with extraData = ExtraData(nonce, tlsKeyHash, manifest), the
// PCR values, the event logs, and the inputs. nonce is the caller's (16 to
// 128 bytes); tlsKeyHash is SHA-256 of the gateway's TLS public key.
func (t *TPM) Attest(nonce, tlsKeyHash, manifest []byte) (*Document, error) {
	if len(nonce) < MinNonceSize || len(nonce) > MaxNonceSize {
		return nil, fmt.Errorf("attest: nonce is %d bytes, want %d to %d", len(nonce), MinNonceSize, MaxNonceSize)
	}
	if len(tlsKeyHash) != sha256.Size {
		return nil, fmt.Errorf("attest: TLS key hash is %d bytes, want a SHA-256 digest", len(tlsKeyHash))
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tpm == nil {
		return nil, errClosed
	}
	if t.broken != nil {
		return nil, t.broken
	}
	logJSON, err := json.Marshal(t.log)
	if err != nil {
		return nil, err
	}
	ak, err := t.ak()
	if err != nil {
		return nil, err
	}
	defer t.flush(ak.handle)

	pcrs := t.quotedPCRs()
	// The PCRs are read after the quote; should something outside this
	// process extend one in between, the digests differ and we retry.
	for attempt := 0; attempt < 3; attempt++ {
		rsp, err := tpm2.Quote{
			SignHandle:     tpm2.AuthHandle{Handle: ak.handle, Name: ak.name, Auth: tpm2.PasswordAuth(nil)},
			QualifyingData: tpm2.TPM2BData{Buffer: ExtraData(nonce, tlsKeyHash, manifest)},
			InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
			PCRSelect:      pcrSelection(pcrs),
		}.Execute(t.tpm)
		if err != nil {
			return nil, fmt.Errorf("attest: quote: %w", err)
		}
		values, err := t.readPCRs(pcrs)
		if err != nil {
			return nil, err
		}
		quoted := rsp.Quoted.Bytes()
		att, err := tpm2.Unmarshal[tpm2.TPMSAttest](quoted)
		if err != nil {
			return nil, fmt.Errorf("attest: parsing own quote: %w", err)
		}
		qi, err := att.Attested.Quote()
		if err != nil {
			return nil, fmt.Errorf("attest: parsing own quote: %w", err)
		}
		order, err := selectedPCRs(qi.PCRSelect)
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(pcrDigest(order, values), qi.PCRDigest.Buffer) {
			continue
		}
		return &Document{
			Version:          DocumentVersion,
			Quote:            bytes.Clone(quoted),
			Signature:        tpm2.Marshal(rsp.Signature),
			PCRs:             values,
			EventLog:         logJSON,
			PlatformEventLog: bytes.Clone(t.platformLog),
			Manifest:         bytes.Clone(manifest),
			TLSKeyHash:       bytes.Clone(tlsKeyHash),
			Nonce:            bytes.Clone(nonce),
		}, nil
	}
	return nil, errors.New("attest: PCRs kept changing while quoting")
}
