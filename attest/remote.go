package attest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
)

// Verifying a gateway from outside: what `hsmgate attest verify`, the
// officers' `hsmofficer verify-gateway` and peer gateways all run, so that
// every verifier checks the same things in the same order.

// TLSKeyHash is the hash an attestation document binds: SHA-256 of the
// certificate's DER SubjectPublicKeyInfo. A verifier computes it from the
// certificate its own TLS connection to the gateway presented.
func TLSKeyHash(cert *x509.Certificate) []byte {
	h := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return h[:]
}

// GoldenPolicyFile is the golden policy as a JSON file (what `hsmgate
// attest golden` writes): the approved digests in hex. An empty list
// approves nothing.
type GoldenPolicyFile struct {
	PCRs          *PCRAllocation   `json:"pcrs,omitempty"`
	ImageDigests  []HexBytes       `json:"imageDigests"`
	BinaryDigests []HexBytes       `json:"binaryDigests"`
	ConfigDigests []HexBytes       `json:"configDigests"`
	PlatformPCRs  map[int]HexBytes `json:"platformPCRs,omitempty"`
}

// Policy is the file's GoldenPolicy.
func (p GoldenPolicyFile) Policy() GoldenPolicy {
	g := GoldenPolicy{}
	if p.PCRs != nil {
		g.PCRs = *p.PCRs
	}
	for _, d := range p.ImageDigests {
		g.ImageDigests = append(g.ImageDigests, d)
	}
	for _, d := range p.BinaryDigests {
		g.BinaryDigests = append(g.BinaryDigests, d)
	}
	for _, d := range p.ConfigDigests {
		g.ConfigDigests = append(g.ConfigDigests, d)
	}
	if len(p.PlatformPCRs) > 0 {
		g.PlatformPCRs = map[int][]byte{}
		for i, v := range p.PlatformPCRs {
			g.PlatformPCRs[i] = v
		}
	}
	return g
}

// ReadJSONFile decodes a JSON file strictly (unknown fields refused): an
// enrollment record or a golden policy file.
func ReadJSONFile(path string, v any) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// ErrNotServed: the gateway answered /attestation with an error (it has no
// TPM, or refuses to serve; its /readyz says why).
var ErrNotServed = errors.New("attest: the gateway did not serve an attestation document")

// maxDocument bounds an attestation document (its event logs included).
const maxDocument = 4 << 20

// VerifyGateway asks the gateway at endpoint (https://host:port) for an
// attestation document bound to a fresh nonce and to the TLS key of this
// very connection, and verifies it (Verify) with the enrollment record and
// the golden policy; then it checks that the image manifest sent is the
// image measured. client must speak TLS to the gateway, with a client
// certificate the gateway accepts (its /attestation is for authenticated
// callers). A document relayed from another gateway binds another TLS key
// and fails.
func VerifyGateway(ctx context.Context, client *http.Client, endpoint string, enr Enrollment, policy GoldenPolicy) (*BootState, error) {
	nonce := make([]byte, 32)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	endpoint = strings.TrimSuffix(endpoint, "/")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+"/attestation?nonce="+hex.EncodeToString(nonce), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "hsmgate-attest-verifier")
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	doc, err := io.ReadAll(io.LimitReader(resp.Body, maxDocument+1))
	if err != nil {
		return nil, fmt.Errorf("read the attestation document: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: %s answered %s: %s", ErrNotServed, endpoint, resp.Status, bytes.TrimSpace(doc[:min(len(doc), 512)]))
	}
	if len(doc) > maxDocument {
		return nil, fmt.Errorf("%w: the document is larger than %d bytes", ErrMalformed, maxDocument)
	}
	if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 {
		return nil, fmt.Errorf("attest: %s is not TLS: a document can only be bound to a TLS key", endpoint)
	}
	st, err := Verify(doc, enr, nonce, TLSKeyHash(resp.TLS.PeerCertificates[0]), policy)
	if err != nil {
		return nil, err
	}
	if d := sha256.Sum256(st.Manifest); !bytes.Equal(d[:], st.ImageDigest) {
		return nil, fmt.Errorf("%w: the manifest sent is not the measured image (its SHA-256 is %x, the image measured %x)", ErrGoldenPolicy, d, st.ImageDigest)
	}
	return st, nil
}
