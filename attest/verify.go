package attest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"sort"

	"github.com/google/go-tpm/tpm2"
)

// Verify's errors, one per check, in the order Verify makes them. Each
// returned error wraps exactly one of them (errors.Is) and says what failed.
var (
	// ErrMalformed: the document is not a version-1 JSON document.
	ErrMalformed = errors.New("attest: malformed attestation document")
	// ErrEnrollment: the enrollment record's AK is unusable.
	ErrEnrollment = errors.New("attest: bad enrollment record")
	// ErrSignature: the quote is not signed by the enrolled AK.
	ErrSignature = errors.New("attest: quote signature check failed")
	// ErrQuoteType: the signed structure is not a TPM-generated quote.
	ErrQuoteType = errors.New("attest: quote type check failed")
	// ErrNonce: the document answers another nonce (a replayed quote).
	ErrNonce = errors.New("attest: nonce check failed")
	// ErrTLSKey: the document binds another TLS key than the one the
	// verifier sees on its connection.
	ErrTLSKey = errors.New("attest: TLS key binding check failed")
	// ErrExtraData: the quote's extraData does not bind the document's
	// nonce, TLS key hash and manifest (one of them was edited).
	ErrExtraData = errors.New("attest: extraData check failed")
	// ErrPCRDigest: the PCR values do not match the quoted digest, or the
	// quote does not cover the PCRs it must.
	ErrPCRDigest = errors.New("attest: PCR digest check failed")
	// ErrEventLog: an event log is malformed or does not replay to the
	// quoted PCR values.
	ErrEventLog = errors.New("attest: event log replay check failed")
	// ErrGoldenPolicy: the verified measurements are not approved.
	ErrGoldenPolicy = errors.New("attest: golden policy check failed")
)

// GoldenPolicy is what the verifier approves. A digest set that is empty
// approves nothing (fail closed).
type GoldenPolicy struct {
	// PCRs is the PCR allocation the gateway uses; zero means DefaultPCRs.
	PCRs PCRAllocation
	// ImageDigests are the approved image digests (during a planned update:
	// the old and the new).
	ImageDigests [][]byte
	// BinaryDigests are the approved hsmgate binaries.
	BinaryDigests [][]byte
	// ConfigDigests are the approved effective configurations.
	ConfigDigests [][]byte
	// PlatformPCRs optionally pins firmware PCRs (0–7, SHA-256) to exact
	// values, e.g. PCR 7 for the Secure Boot policy. A pinned PCR must be in
	// the quote, which it is when the gateway has a platform event log.
	PlatformPCRs map[int][]byte
}

// BootState is what Verify proves about the gateway's boot.
type BootState struct {
	ImageDigest  []byte
	BinaryDigest []byte
	ConfigDigest []byte
	// Events is the replayed measurement event log.
	Events []Event
	// PCRs are the quoted SHA-256 PCR values.
	PCRs map[int][]byte
	// PlatformEvents is the replayed firmware event log, if any.
	PlatformEvents []PlatformEvent
	Manifest       []byte
	TLSKeyHash     []byte
	// Clock, ResetCount, RestartCount come from the quote's clock info
	// (not obfuscated: the AK is in the endorsement hierarchy). ResetCount
	// identifies the boot.
	Clock        uint64
	ResetCount   uint32
	RestartCount uint32
	AKName       []byte
}

// Verify checks an attestation document against an enrollment record, the
// verifier's fresh nonce, the hash of the TLS public key the verifier saw
// on its connection to the gateway, and the golden policy. It verifies
// before it interprets: nothing in the document but the quote bytes and the
// signature is looked at until the signature by the enrolled AK checks out.
// The checks, in order, each failing with its own error:
//
//  1. signature: Signature is the enrolled AK's over Quote (ErrSignature);
//  2. quote type: Quote is a TPM-generated TPMS_ATTEST of type
//     TPM_ST_ATTEST_QUOTE, SHA-256 bank only (ErrQuoteType);
//  3. nonce: the document's nonce is the verifier's (ErrNonce), its TLS key
//     hash the one seen (ErrTLSKey), and the quote's extraData is
//     ExtraData(nonce, tlsKeyHash, Manifest) (ErrExtraData);
//  4. PCR digest: the PCR values hash to the quoted digest, and the quote
//     covers the allocated PCRs and only the PCRs given (ErrPCRDigest);
//  5. event-log replay: the measurement log (and the platform log, if any)
//     is well-formed and replays to the quoted values (ErrEventLog);
//  6. golden policy: one image, binary and config measurement each, all
//     approved; pinned platform PCRs equal (ErrGoldenPolicy).
func Verify(doc []byte, enrollment Enrollment, nonce, tlsKeyHash []byte, policy GoldenPolicy) (*BootState, error) {
	var d Document
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if d.Version != DocumentVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrMalformed, d.Version, DocumentVersion)
	}
	akPub, akName, err := parseAKPublic(enrollment.AKPublic)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEnrollment, err)
	}
	if !bytes.Equal(akName, enrollment.AKName) {
		return nil, fmt.Errorf("%w: AK name does not match the AK public area", ErrEnrollment)
	}

	// 1. Signature by the enrolled AK, over the raw quote bytes.
	if err := verifySignature(akPub, d.Quote, d.Signature); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSignature, err)
	}

	// 2. Quote type.
	att, err := tpm2.Unmarshal[tpm2.TPMSAttest](d.Quote)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrQuoteType, err)
	}
	if att.Magic != tpm2.TPMGeneratedValue {
		return nil, fmt.Errorf("%w: not TPM-generated (magic %#x)", ErrQuoteType, uint32(att.Magic))
	}
	if att.Type != tpm2.TPMSTAttestQuote {
		return nil, fmt.Errorf("%w: attestation type %#x, want TPM_ST_ATTEST_QUOTE", ErrQuoteType, uint16(att.Type))
	}
	if !bytes.Equal(tpm2.Marshal(*att), d.Quote) {
		return nil, fmt.Errorf("%w: trailing bytes after TPMS_ATTEST", ErrQuoteType)
	}
	qi, err := att.Attested.Quote()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrQuoteType, err)
	}
	order, err := selectedPCRs(qi.PCRSelect)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrQuoteType, err)
	}

	// 3. Nonce, TLS key, extraData.
	if subtle.ConstantTimeCompare(d.Nonce, nonce) != 1 || len(nonce) == 0 {
		return nil, fmt.Errorf("%w: the document answers another nonce (a replayed or foreign quote)", ErrNonce)
	}
	if subtle.ConstantTimeCompare(d.TLSKeyHash, tlsKeyHash) != 1 {
		return nil, fmt.Errorf("%w: the document binds TLS key %x, the connection's is %x", ErrTLSKey, d.TLSKeyHash, tlsKeyHash)
	}
	if !bytes.Equal(att.ExtraData.Buffer, ExtraData(nonce, tlsKeyHash, d.Manifest)) {
		return nil, fmt.Errorf("%w: the quote was not made for this nonce, TLS key and manifest", ErrExtraData)
	}

	// 4. PCR digest.
	alloc := policy.PCRs.orDefault()
	if err := alloc.Validate(); err != nil {
		return nil, fmt.Errorf("%w: policy: %v", ErrPCRDigest, err)
	}
	quoted := map[int]bool{}
	for _, p := range order {
		quoted[p] = true
		if len(d.PCRs[p]) != sha256.Size {
			return nil, fmt.Errorf("%w: no SHA-256 value for quoted PCR %d", ErrPCRDigest, p)
		}
	}
	for p := range d.PCRs {
		if !quoted[p] {
			return nil, fmt.Errorf("%w: PCR %d is in the document but not in the quote", ErrPCRDigest, p)
		}
	}
	for _, p := range alloc.Indices() {
		if !quoted[p] {
			return nil, fmt.Errorf("%w: the quote does not cover PCR %d", ErrPCRDigest, p)
		}
	}
	if !bytes.Equal(pcrDigest(order, d.PCRs), qi.PCRDigest.Buffer) {
		return nil, fmt.Errorf("%w: the PCR values do not hash to the quoted digest", ErrPCRDigest)
	}

	// 5. Event-log replay.
	log, err := ParseEventLog(d.EventLog)
	if err != nil {
		return nil, fmt.Errorf("%w: measurement log: %v", ErrEventLog, err)
	}
	if log.PCRs != alloc {
		return nil, fmt.Errorf("%w: the log uses PCRs %+v, the policy %+v", ErrEventLog, log.PCRs, alloc)
	}
	replayed := log.Replay()
	for _, p := range alloc.Indices() {
		if !bytes.Equal(replayed[p], d.PCRs[p]) {
			kind, _ := alloc.Kind(p)
			return nil, fmt.Errorf("%w: the log replays PCR %d (%s) to %x, quoted %x", ErrEventLog, p, kind, replayed[p], d.PCRs[p])
		}
	}
	var platformEvents []PlatformEvent
	var firmwareQuoted []int
	for _, p := range order {
		if p < 8 {
			firmwareQuoted = append(firmwareQuoted, p)
		}
	}
	if (d.PlatformEventLog != nil) != (len(firmwareQuoted) > 0) {
		return nil, fmt.Errorf("%w: firmware PCRs %v quoted with platform log present=%v; want both or neither", ErrEventLog, firmwareQuoted, d.PlatformEventLog != nil)
	}
	if d.PlatformEventLog != nil {
		platformEvents, err = ParsePlatformEventLog(d.PlatformEventLog)
		if err != nil {
			return nil, fmt.Errorf("%w: platform log: %v", ErrEventLog, err)
		}
		preplayed, err := ReplayPlatformEventLog(platformEvents)
		if err != nil {
			return nil, fmt.Errorf("%w: platform log: %v", ErrEventLog, err)
		}
		for _, p := range firmwareQuoted {
			want := preplayed[p]
			if want == nil {
				want = make([]byte, sha256.Size)
			}
			if !bytes.Equal(want, d.PCRs[p]) {
				return nil, fmt.Errorf("%w: the platform log replays PCR %d to %x, quoted %x", ErrEventLog, p, want, d.PCRs[p])
			}
		}
	}

	// 6. Golden policy.
	st := &BootState{
		Events:         log.Events,
		PCRs:           d.PCRs,
		PlatformEvents: platformEvents,
		Manifest:       d.Manifest,
		TLSKeyHash:     d.TLSKeyHash,
		Clock:          att.ClockInfo.Clock,
		ResetCount:     att.ClockInfo.ResetCount,
		RestartCount:   att.ClockInfo.RestartCount,
		AKName:         akName,
	}
	for _, c := range []struct {
		kind     string
		approved [][]byte
		out      *[]byte
	}{
		{KindImage, policy.ImageDigests, &st.ImageDigest},
		{KindBinary, policy.BinaryDigests, &st.BinaryDigest},
		{KindConfig, policy.ConfigDigests, &st.ConfigDigest},
	} {
		ev, ok := log.Find(c.kind)
		if !ok {
			return nil, fmt.Errorf("%w: no %s measurement", ErrGoldenPolicy, c.kind)
		}
		if !containsDigest(c.approved, ev.Digest) {
			return nil, fmt.Errorf("%w: %s %q digest %x is not approved", ErrGoldenPolicy, c.kind, ev.Name, []byte(ev.Digest))
		}
		*c.out = bytes.Clone(ev.Digest)
	}
	pinned := make([]int, 0, len(policy.PlatformPCRs))
	for p := range policy.PlatformPCRs {
		pinned = append(pinned, p)
	}
	sort.Ints(pinned)
	for _, p := range pinned {
		if !quoted[p] {
			return nil, fmt.Errorf("%w: pinned PCR %d is not quoted", ErrGoldenPolicy, p)
		}
		if !bytes.Equal(policy.PlatformPCRs[p], d.PCRs[p]) {
			return nil, fmt.Errorf("%w: PCR %d is %x, pinned %x", ErrGoldenPolicy, p, d.PCRs[p], policy.PlatformPCRs[p])
		}
	}
	return st, nil
}

func containsDigest(set [][]byte, d []byte) bool {
	for _, s := range set {
		if len(s) > 0 && bytes.Equal(s, d) {
			return true
		}
	}
	return false
}

// verifySignature checks a TPMT_SIGNATURE over msg by the AK.
func verifySignature(akPub *tpm2.TPMTPublic, msg, sigBytes []byte) error {
	sig, err := tpm2.Unmarshal[tpm2.TPMTSignature](sigBytes)
	if err != nil {
		return fmt.Errorf("malformed signature: %v", err)
	}
	if !bytes.Equal(tpm2.Marshal(*sig), sigBytes) {
		return errors.New("malformed signature: trailing bytes")
	}
	key, err := tpm2.Pub(*akPub)
	if err != nil {
		return err
	}
	digest := sha256.Sum256(msg)
	switch k := key.(type) {
	case *ecdsa.PublicKey:
		if sig.SigAlg != tpm2.TPMAlgECDSA {
			return fmt.Errorf("signature algorithm %#x, want ECDSA", uint16(sig.SigAlg))
		}
		e, err := sig.Signature.ECDSA()
		if err != nil {
			return err
		}
		if e.Hash != tpm2.TPMAlgSHA256 {
			return fmt.Errorf("signature hash %#x, want SHA-256", uint16(e.Hash))
		}
		r := new(big.Int).SetBytes(e.SignatureR.Buffer)
		s := new(big.Int).SetBytes(e.SignatureS.Buffer)
		if !ecdsa.Verify(k, digest[:], r, s) {
			return errors.New("ECDSA signature does not verify with the enrolled AK")
		}
		return nil
	case *rsa.PublicKey:
		var rs *tpm2.TPMSSignatureRSA
		switch sig.SigAlg {
		case tpm2.TPMAlgRSASSA:
			rs, err = sig.Signature.RSASSA()
		case tpm2.TPMAlgRSAPSS:
			rs, err = sig.Signature.RSAPSS()
		default:
			return fmt.Errorf("signature algorithm %#x, want RSASSA or RSAPSS", uint16(sig.SigAlg))
		}
		if err != nil {
			return err
		}
		if rs.Hash != tpm2.TPMAlgSHA256 {
			return fmt.Errorf("signature hash %#x, want SHA-256", uint16(rs.Hash))
		}
		if sig.SigAlg == tpm2.TPMAlgRSASSA {
			err = rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], rs.Sig.Buffer)
		} else {
			err = rsa.VerifyPSS(k, crypto.SHA256, digest[:], rs.Sig.Buffer, nil)
		}
		if err != nil {
			return errors.New("RSA signature does not verify with the enrolled AK")
		}
		return nil
	}
	return fmt.Errorf("unsupported AK key type %T", key)
}
