package xks

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"

	"github.com/hsmgate/hsmgate/hsmpool"
)

// Sizes of AES-GCM's parts ("Encrypt": a 12- or 16-byte IV, a 16-byte tag).
const (
	tagLen     = 16
	ivLen      = 12 // what the pool generates
	ivLenLong  = 16 // also accepted by Decrypt
	keySpecAES = "AES_256"
)

// Ciphertext metadata. "Encrypt" lets a proxy return up to 20 bytes of it,
// for example to name the version of rotated key material; it is bound
// into the AES-GCM additional data, so it can't be changed. hsmgate keys
// rotate, so every Encrypt returns 5 bytes: a format byte (1: the AAD
// layout below, the key version follows) and the hsmgate key version,
// 32 bits big-endian. Decrypt decrypts with that version.
const (
	cmFormatV1 = 1
	cmLen      = 5
)

func ciphertextMetadata(version uint32) []byte {
	b := make([]byte, cmLen)
	b[0] = cmFormatV1
	binary.BigEndian.PutUint32(b[1:], version)
	return b
}

// parseCiphertextMetadata returns the key version a ciphertextMetadata
// names, or false when it is not one this proxy made.
func parseCiphertextMetadata(b []byte) (uint32, bool) {
	if len(b) != cmLen || b[0] != cmFormatV1 {
		return 0, false
	}
	v := binary.BigEndian.Uint32(b[1:])
	return v, v != 0
}

// hsmAAD is the additional data given to AES-GCM in the HSM, as "Encrypt"
// lays it out: the 2-byte big-endian length of additionalAuthenticatedData,
// additionalAuthenticatedData, the 1-byte length of ciphertextMetadata,
// ciphertextMetadata; an absent field has length zero. The lengths keep
// metadata passed as AAD (or the reverse) from decrypting.
func hsmAAD(aad, cm []byte) []byte {
	out := make([]byte, 0, 2+len(aad)+1+len(cm))
	out = binary.BigEndian.AppendUint16(out, uint16(len(aad)))
	out = append(out, aad...)
	out = append(out, byte(len(cm)))
	return append(out, cm...)
}

// CDIV is the ciphertext data integrity value of "Appendix C": the
// SHA-256 of additionalAuthenticatedData (as given to Encrypt, absent =
// empty) || ciphertextMetadata || initializationVector || ciphertext ||
// authenticationTag, with no lengths.
func CDIV(aad, cm, iv, ciphertext, tag []byte) [sha256.Size]byte {
	h := sha256.New()
	for _, b := range [][]byte{aad, cm, iv, ciphertext, tag} {
		h.Write(b)
	}
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

// call is one request being served.
type call struct {
	h     *Handler
	st    *store
	op    string
	keyID string
	req   *request
	ev    *Event
}

// key finds the request's key and authorizes the operation on it, before
// anything about the key's state is told.
func (c *call) key(ctx context.Context) (Key, *Error) {
	if !validKeyID(c.keyID) {
		return nil, validationf("The external key id must be 1 to 128 characters A-Z a-z 0-9 - . _.")
	}
	k, err := c.st.Keys.Lookup(ctx, c.st.Name, c.keyID)
	if err != nil {
		return nil, toAPI(err)
	}
	if k == nil {
		return nil, toAPI(ErrKeyNotFound)
	}
	c.ev.Key = k
	if c.st.Authorize != nil {
		err := c.st.Authorize(ctx, &AuthzRequest{Store: c.st.Name, Key: k, Operation: c.op, Metadata: &c.req.Metadata,
			AccessKeyID: c.ev.AccessKeyID, SourceIP: c.ev.SourceIP})
		if err != nil {
			if errors.Is(err, ErrAccessDenied) {
				// "Authorization": log enough to find the policy statement
				// that refused.
				c.h.log().Warn("xks: access denied by secondary authorization", "request_id", c.ev.RequestID, "store", c.st.Name,
					"key", c.keyID, "operation", c.op, "aws_principal_arn", c.req.Metadata.AWSPrincipalARN,
					"kms_operation", c.req.Metadata.KMSOperation, "kms_request_id", c.req.Metadata.KMSRequestID, "reason", err.Error())
			} else {
				c.h.log().Error("xks: authorization failed", "request_id", c.ev.RequestID, "store", c.st.Name, "key", c.keyID, "err", err)
			}
			return nil, toAPI(err)
		}
	}
	return k, nil
}

// usable checks that a key may run the operation.
func usable(k Key, usage string) *Error {
	if !k.Enabled() {
		return apiErrorf(ErrNameInvalidState, "The external key is disabled.")
	}
	if !slices.Contains(k.Usages(), usage) {
		return apiErrorf(ErrNameInvalidKeyUsage, "The external key does not allow %s.", usage)
	}
	return nil
}

// checkPoolKey refuses a pool key that is not an AES-256 encryption key.
func checkPoolKey(pk *hsmpool.Key) *Error {
	if pk == nil {
		return apiErrorf(ErrNameInternal, "The key has no usable version.")
	}
	if pk.Spec() != hsmpool.AES256 || pk.Usage() != hsmpool.UsageEncrypt {
		return apiErrorf(ErrNameInvalidKeyUsage, "The external key is not an AES-256 encryption key.")
	}
	return nil
}

// validUsages reports whether a key's usages can be reported: 1 to 10
// ("GetKeyMetadata": no more than ten) known values, no duplicates.
func validUsages(us []string) bool {
	if len(us) == 0 || len(us) > 10 {
		return false
	}
	for i, u := range us {
		if !slices.Contains(ValidUsages, u) || slices.Contains(us[:i], u) {
			return false
		}
	}
	return true
}

type metadataResponse struct {
	KeySpec   string   `json:"keySpec"`
	KeyUsage  []string `json:"keyUsage"`
	KeyStatus string   `json:"keyStatus"`
}

// getKeyMetadata serves "GetKeyMetadata". A disabled key is reported, not
// refused.
func (c *call) getKeyMetadata(ctx context.Context) ([]byte, *Error) {
	k, e := c.key(ctx)
	if e != nil {
		return nil, e
	}
	us := k.Usages()
	if !validUsages(us) {
		c.h.log().Error("xks: key has invalid usages", "store", c.st.Name, "key", c.keyID, "usages", us)
		return nil, apiErrorf(ErrNameInternal, "The external key's usages are misconfigured.")
	}
	status := "ENABLED"
	if !k.Enabled() {
		status = "DISABLED"
	}
	return marshal(metadataResponse{KeySpec: keySpecAES, KeyUsage: us, KeyStatus: status})
}

type encryptResponse struct {
	Ciphertext                   string `json:"ciphertext"`
	CiphertextMetadata           string `json:"ciphertextMetadata,omitempty"`
	InitializationVector         string `json:"initializationVector"`
	AuthenticationTag            string `json:"authenticationTag"`
	CiphertextDataIntegrityValue string `json:"ciphertextDataIntegrityValue,omitempty"`
}

var b64 = base64.StdEncoding

// encrypt serves "Encrypt": AES-GCM in the HSM under a fresh 96-bit IV the
// pool draws, the ciphertext metadata bound into the additional data, the
// tag the pool appends split off ("Encrypt": a key manager that appends
// the tag must have the proxy separate them), and on request the CDIV,
// computed before a verifying decrypt ("Appendix C").
func (c *call) encrypt(ctx context.Context) ([]byte, *Error) {
	k, e := c.key(ctx)
	if e != nil {
		return nil, e
	}
	if e := usable(k, UsageEncrypt); e != nil {
		return nil, e
	}
	pk, err := k.EncryptKey(ctx)
	if err != nil {
		return nil, toAPI(err)
	}
	if e := checkPoolKey(pk); e != nil {
		return nil, e
	}
	c.ev.KeyVersion = pk.Version
	cm := ciphertextMetadata(pk.Version)
	aad := hsmAAD(c.req.AAD, cm)
	iv, sealed, err := c.h.Pool.EncryptGCM(ctx, pk, c.req.Plaintext, aad)
	if err != nil {
		return nil, toAPI(err)
	}
	if (len(iv) != ivLen && len(iv) != ivLenLong) || len(sealed) != len(c.req.Plaintext)+tagLen {
		c.h.log().Error("xks: the HSM returned an AES-GCM result of unexpected shape", "iv", len(iv), "sealed", len(sealed), "plaintext", len(c.req.Plaintext))
		return nil, apiErrorf(ErrNameInternal, "The HSM returned an unexpected result.")
	}
	ct, tag := sealed[:len(c.req.Plaintext)], sealed[len(c.req.Plaintext):]
	resp := encryptResponse{
		Ciphertext:           b64.EncodeToString(ct),
		CiphertextMetadata:   b64.EncodeToString(cm),
		InitializationVector: b64.EncodeToString(iv),
		AuthenticationTag:    b64.EncodeToString(tag),
	}
	if c.req.CDIV {
		// The CDIV first, then the decrypt: a bit flip between the two is
		// then caught by the decrypt instead of being sealed by the CDIV.
		sum := CDIV(c.req.AAD, cm, iv, ct, tag)
		pt, err := c.h.Pool.DecryptGCM(ctx, pk, iv, sealed, aad)
		if err != nil {
			if errors.Is(err, hsmpool.ErrInvalidCiphertext) {
				err = errors.New("the ciphertext just made does not decrypt")
			}
			c.h.log().Error("xks: CDIV verification decrypt failed", "request_id", c.ev.RequestID, "err", err)
			return nil, toAPI(err)
		}
		same := subtle.ConstantTimeCompare(pt, c.req.Plaintext) == 1
		clear(pt)
		if !same {
			c.h.log().Error("xks: CDIV verification decrypt returned other plaintext", "request_id", c.ev.RequestID)
			return nil, apiErrorf(ErrNameInternal, "The ciphertext could not be verified.")
		}
		resp.CiphertextDataIntegrityValue = b64.EncodeToString(sum[:])
	}
	// The plaintext is not cleared: an attempt the pool abandoned on a
	// timeout may still be reading it.
	return marshal(resp)
}

// decrypt serves "Decrypt": the key version from the ciphertext metadata
// (the current one when there is none), the same AAD layout as encrypt,
// and a 12- or 16-byte IV.
func (c *call) decrypt(ctx context.Context) ([]byte, *Error) {
	k, e := c.key(ctx)
	if e != nil {
		return nil, e
	}
	if e := usable(k, UsageDecrypt); e != nil {
		return nil, e
	}
	invalid := func(what string) *Error {
		return apiErrorf(ErrNameInvalidCiphertext, "%s", what)
	}
	var version uint32
	if c.req.HasCiphertextMetadata {
		v, ok := parseCiphertextMetadata(c.req.CiphertextMetadata)
		if !ok {
			return nil, invalid("The ciphertext metadata was not made by this proxy.")
		}
		version = v
	}
	if n := len(c.req.IV); n != ivLen && n != ivLenLong {
		return nil, invalid("The initialization vector must be 12 or 16 bytes.")
	}
	if len(c.req.Tag) != tagLen {
		return nil, invalid("The authentication tag must be 16 bytes.")
	}
	pk, err := k.DecryptKey(ctx, version)
	if err != nil {
		return nil, toAPI(err)
	}
	if e := checkPoolKey(pk); e != nil {
		return nil, e
	}
	c.ev.KeyVersion = pk.Version
	var cm []byte
	if c.req.HasCiphertextMetadata {
		cm = c.req.CiphertextMetadata
	}
	sealed := append(slices.Clip(c.req.Ciphertext), c.req.Tag...)
	pt, err := c.h.Pool.DecryptGCM(ctx, pk, c.req.IV, sealed, hsmAAD(c.req.AAD, cm))
	if err != nil {
		return nil, toAPI(err)
	}
	defer clear(pt)
	// Encoded by hand, so that no copy of the plaintext is left in an
	// immutable string: ServeHTTP clears the response once written.
	const head, tail = `{"plaintext":"`, `"}`
	out := make([]byte, len(head)+b64.EncodedLen(len(pt))+len(tail))
	copy(out, head)
	b64.Encode(out[len(head):], pt)
	copy(out[len(out)-len(tail):], tail)
	return out, nil
}

// Health statuses of an external key manager ("GetHealthStatus").
const (
	HealthActive      = "ACTIVE"
	HealthDegraded    = "DEGRADED"
	HealthUnavailable = "UNAVAILABLE"
)

// maxFleetDetails is the specification's bound on ekmFleetDetails.
const maxFleetDetails = 10

type healthResponse struct {
	FleetSize    int           `json:"xksProxyFleetSize"`
	ProxyVendor  string        `json:"xksProxyVendor"`
	ProxyModel   string        `json:"xksProxyModel"`
	EKMVendor    string        `json:"ekmVendor"`
	FleetDetails []fleetDetail `json:"ekmFleetDetails"`
}

type fleetDetail struct {
	ID           string `json:"id"`
	Model        string `json:"model"`
	HealthStatus string `json:"healthStatus"`
}

// health serves "GetHealthStatus", a deep check: an AES-GCM round trip
// through the pool with a test key of the proxy's own (never a customer's
// key), and every slot's state, which the pool's probes keep current by
// wrapping with the slot's domain key every ProbeInterval (the
// specification lets a proxy report a check up to a minute old). Each slot
// is one entry of ekmFleetDetails: ACTIVE when healthy, DEGRADED when
// healthy but with calls stuck past their deadline or every session busy,
// UNAVAILABLE when the pool routes nothing to it. The first ten slots are
// reported (the specification's maximum). The check fails, and the answer
// is an error, when no slot serves.
func (h *Handler) health(ctx context.Context) ([]byte, *Error) {
	if err := h.roundTrip(ctx); err != nil {
		h.log().Warn("xks: health check failed", "err", err)
		return nil, toAPI(err)
	}
	slots := h.Pool.Status()
	resp := healthResponse{
		FleetSize:   max(1, h.FleetSize),
		ProxyVendor: or(h.ProxyVendor, "hsmgate"),
		ProxyModel:  or(h.ProxyModel, "hsmgate XKS proxy (API v1)"),
		EKMVendor:   h.EKMVendor,
	}
	var models []string
	for _, s := range slots {
		if m := strings.TrimSpace(s.Model); m != "" && !slices.Contains(models, m) {
			models = append(models, m)
		}
		if len(resp.FleetDetails) == maxFleetDetails {
			continue
		}
		resp.FleetDetails = append(resp.FleetDetails, fleetDetail{
			ID:           printableASCII(s.Name, 128),
			Model:        printableASCII(slotModel(&s), 256),
			HealthStatus: slotHealth(&s),
		})
	}
	if resp.EKMVendor == "" {
		resp.EKMVendor = or(strings.Join(models, ", "), "PKCS#11")
	}
	if h.Fleet != nil {
		peers := h.Fleet()
		resp.FleetSize = max(resp.FleetSize, 1+len(peers))
		for _, p := range peers {
			if len(resp.FleetDetails) == maxFleetDetails {
				break
			}
			status := HealthUnavailable
			if p.Usable {
				status = HealthActive
			}
			resp.FleetDetails = append(resp.FleetDetails, fleetDetail{ID: printableASCII("node "+p.ID, 128), Model: "hsmgate gateway", HealthStatus: status})
		}
	}
	return marshal(resp)
}

func slotHealth(s *hsmpool.SlotStatus) string {
	switch {
	case s.State != hsmpool.StateHealthy:
		return HealthUnavailable
	case s.Abandoned > 0 || (s.MaxSessions > 0 && s.InFlight >= int64(s.MaxSessions)):
		return HealthDegraded
	}
	return HealthActive
}

func slotModel(s *hsmpool.SlotStatus) string {
	var b strings.Builder
	b.WriteString(or(strings.TrimSpace(s.Model), "PKCS#11 token"))
	if s.Serial != "" {
		b.WriteString(", serial " + strings.TrimSpace(s.Serial))
	}
	if s.Module != "" {
		b.WriteString(", module " + filepath.Base(s.Module))
	}
	b.WriteString(", state " + s.State.String())
	return b.String()
}

// healthAAD is the additional data of the health check's round trip.
var healthAAD = []byte("hsmgate xks health check")

// roundTrip encrypts and decrypts random bytes with the health check's
// test key, made on first use (in memory only: a blob under the domain
// key, no object on any token).
func (h *Handler) roundTrip(ctx context.Context) error {
	k, err := h.testKey(ctx)
	if err != nil {
		return err
	}
	msg := make([]byte, 32)
	if _, err := rand.Read(msg); err != nil {
		return err
	}
	iv, sealed, err := h.Pool.EncryptGCM(ctx, k, msg, healthAAD)
	if err != nil {
		return err
	}
	pt, err := h.Pool.DecryptGCM(ctx, k, iv, sealed, healthAAD)
	if err != nil {
		if errors.Is(err, hsmpool.ErrInvalidCiphertext) {
			return errors.New("health check: the HSM did not decrypt what it encrypted")
		}
		return err
	}
	if !bytes.Equal(pt, msg) {
		return errors.New("health check: the HSM decrypted to other bytes")
	}
	return nil
}

func (h *Handler) testKey(ctx context.Context) (*hsmpool.Key, error) {
	h.healthMu.Lock()
	defer h.healthMu.Unlock()
	if h.healthKey != nil {
		return h.healthKey, nil
	}
	g, err := h.Pool.GenerateKey(ctx, hsmpool.AES256, hsmpool.UsageEncrypt)
	if err != nil {
		return nil, err
	}
	k, err := hsmpool.NewKey("xks-health-check", 1, g.Blob, nil)
	if err != nil {
		return nil, err
	}
	h.healthKey = k
	return k, nil
}

func marshal(v any) ([]byte, *Error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, apiErrorf(ErrNameInternal, "Internal error.")
	}
	return b, nil
}

func or(s, dflt string) string {
	if s == "" {
		return dflt
	}
	return s
}
