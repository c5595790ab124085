package xks

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
)

// Size limits. The specification sets the least a proxy must accept
// ("Encrypt", "Decrypt": 4300 bytes of plaintext and ciphertext, 8192
// bytes of additional authenticated data; "API Operations": ARNs of 2048
// characters); a value beyond what this proxy supports, but within what
// the specification allows, is refused with UnsupportedOperationException
// ("Error Codes"), a value the specification forbids with
// ValidationException.
const (
	// MaxPlaintext bounds an Encrypt's plaintext, and MaxCiphertext a
	// Decrypt's ciphertext (without its tag), in bytes.
	MaxPlaintext  = 16 << 10
	MaxCiphertext = MaxPlaintext
	// MaxAAD bounds additionalAuthenticatedData: its length must fit the
	// two bytes the AAD layout of "Encrypt" gives it.
	MaxAAD = 1<<16 - 1
	// MaxCiphertextMetadata is the specification's bound on
	// ciphertextMetadata ("Encrypt", "Decrypt": at most 20 bytes).
	MaxCiphertextMetadata = 20
	// MaxMetadataValue bounds each requestMetadata string (ARNs are at
	// most 2048 characters).
	MaxMetadataValue = 2048
	// MaxExtraMetadata is how many requestMetadata fields beyond the
	// specification's are kept (in name order) for audit and
	// authorization; "Appendix B" says KMS may add fields. Others, and
	// fields whose value is not a string, are ignored, never refused.
	MaxExtraMetadata    = 16
	maxExtraMetadataKey = 128
	// MaxBody bounds a request body; it leaves room for every field at
	// its largest.
	MaxBody = 256 << 10
)

// Values of the specification's enumerations.
const (
	encryptionAlgorithmAESGCM = "AES_GCM" // "Encrypt": the only v1 algorithm
	cdivAlgorithmSHA256       = "SHA_256" // "Encrypt": the only v1 CDIV algorithm
)

// RequestMetadata is the requestMetadata object that AWS KMS sends with
// every request ("GetKeyMetadata", "Encrypt", "Decrypt", "GetHealthStatus").
// Nothing in it is verified beyond the SigV4 signature over the whole body:
// it says what KMS was asked, for audit and for secondary authorization.
type RequestMetadata struct {
	// AWSPrincipalARN is the principal that called KMS (or a service
	// principal, or "AWS Internal"). Required except for GetHealthStatus.
	AWSPrincipalARN string `json:"awsPrincipalArn,omitempty"`
	// AWSSourceVPC and AWSSourceVPCE are set when KMS was called through a
	// VPC endpoint.
	AWSSourceVPC  string `json:"awsSourceVpc,omitempty"`
	AWSSourceVPCE string `json:"awsSourceVpce,omitempty"`
	// KMSKeyARN is the KMS key the call was made on. Required for Encrypt
	// and Decrypt; KMS omits it from GetKeyMetadata during CreateKey.
	KMSKeyARN string `json:"kmsKeyArn,omitempty"`
	// KMSOperation is the KMS API that caused the request (Encrypt,
	// GenerateDataKey, DescribeKey, KmsHealthCheck, ...). Any value is
	// accepted. Required.
	KMSOperation string `json:"kmsOperation,omitempty"`
	// KMSRequestID is KMS's request id, as CloudTrail shows it; an opaque
	// string. Required.
	KMSRequestID string `json:"kmsRequestId,omitempty"`
	// KMSViaService is the AWS service that called KMS for the customer.
	KMSViaService string `json:"kmsViaService,omitempty"`
	// Extra holds further string fields KMS may add ("Appendix B"), at
	// most MaxExtraMetadata of them.
	Extra map[string]string `json:"extra,omitempty"`
}

// Conditions returns the metadata as policy condition keys, named
// "xks:<field>" and lower-cased as gateway/policy's MapContext expects
// (xks:awsprincipalarn, xks:kmskeyarn, xks:kmsoperation, ...). Absent
// fields are absent; Extra fields are included under their own names.
func (m *RequestMetadata) Conditions() map[string][]string {
	out := make(map[string][]string, 8+len(m.Extra))
	add := func(name, v string) {
		if v != "" {
			out["xks:"+strings.ToLower(name)] = []string{v}
		}
	}
	add("awsPrincipalArn", m.AWSPrincipalARN)
	add("awsSourceVpc", m.AWSSourceVPC)
	add("awsSourceVpce", m.AWSSourceVPCE)
	add("kmsKeyArn", m.KMSKeyARN)
	add("kmsOperation", m.KMSOperation)
	add("kmsRequestId", m.KMSRequestID)
	add("kmsViaService", m.KMSViaService)
	for k, v := range m.Extra {
		if _, known := out["xks:"+strings.ToLower(k)]; !known {
			add(k, v)
		}
	}
	return out
}

// Map returns the metadata as field name → value, with the
// specification's field names (for an audit record).
func (m *RequestMetadata) Map() map[string]string {
	out := make(map[string]string, 8+len(m.Extra))
	for k, v := range m.Extra {
		out[k] = v
	}
	set := func(name, v string) {
		if v != "" {
			out[name] = v
		}
	}
	set("awsPrincipalArn", m.AWSPrincipalARN)
	set("awsSourceVpc", m.AWSSourceVPC)
	set("awsSourceVpce", m.AWSSourceVPCE)
	set("kmsKeyArn", m.KMSKeyARN)
	set("kmsOperation", m.KMSOperation)
	set("kmsRequestId", m.KMSRequestID)
	set("kmsViaService", m.KMSViaService)
	return out
}

// request is a decoded and validated request body. Byte fields hold the
// Base64-decoded values.
type request struct {
	Metadata RequestMetadata

	Plaintext             []byte // Encrypt
	CDIV                  bool   // Encrypt: ciphertextDataIntegrityValueAlgorithm given
	AAD                   []byte // Encrypt, Decrypt; nil when absent
	Ciphertext            []byte // Decrypt
	CiphertextMetadata    []byte // Decrypt
	HasCiphertextMetadata bool
	IV                    []byte // Decrypt
	Tag                   []byte // Decrypt
}

// decodeRequest parses and validates the body of a request for op. It
// never panics, whatever body holds (FuzzRequest). The request is returned
// with whatever metadata was read even when validation fails, for the audit
// event.
func decodeRequest(op string, body []byte) (*request, *Error) {
	req := &request{}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return req, validationf("The request body is not a JSON object.")
	}
	raw, ok := top["requestMetadata"]
	if !ok || isNull(raw) {
		return req, validationf("requestMetadata is missing.")
	}
	if e := req.Metadata.decode(op, raw); e != nil {
		return req, e
	}
	switch op {
	case OpEncrypt:
		return req, req.decodeEncrypt(top)
	case OpDecrypt:
		return req, req.decodeDecrypt(top)
	}
	return req, nil
}

// required lists the requestMetadata fields each operation must have.
var required = map[string][]string{
	OpGetKeyMetadata:  {"awsPrincipalArn", "kmsOperation", "kmsRequestId"},
	OpEncrypt:         {"awsPrincipalArn", "kmsKeyArn", "kmsOperation", "kmsRequestId"},
	OpDecrypt:         {"awsPrincipalArn", "kmsKeyArn", "kmsOperation", "kmsRequestId"},
	OpGetHealthStatus: {"kmsOperation", "kmsRequestId"},
}

func (m *RequestMetadata) decode(op string, raw json.RawMessage) *Error {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return validationf("requestMetadata is not a JSON object.")
	}
	known := []struct {
		name string
		dst  *string
	}{
		{"awsPrincipalArn", &m.AWSPrincipalARN},
		{"awsSourceVpc", &m.AWSSourceVPC},
		{"awsSourceVpce", &m.AWSSourceVPCE},
		{"kmsKeyArn", &m.KMSKeyARN},
		{"kmsOperation", &m.KMSOperation},
		{"kmsRequestId", &m.KMSRequestID},
		{"kmsViaService", &m.KMSViaService},
	}
	for _, f := range known {
		s, present, e := stringField(obj, f.name)
		if e != nil {
			return validationf("requestMetadata.%s must be a string.", f.name)
		}
		if len(s) > MaxMetadataValue {
			return validationf("requestMetadata.%s is longer than %d bytes.", f.name, MaxMetadataValue)
		}
		if present {
			*f.dst = s
		}
	}
	for _, name := range required[op] {
		for _, f := range known {
			if f.name == name && *f.dst == "" {
				return validationf("requestMetadata.%s is missing or empty.", name)
			}
		}
	}
	// Fields beyond the specification's: kept when they are strings, up to
	// MaxExtraMetadata of them, never refused.
	var names []string
	for name := range obj {
		isKnown := false
		for _, f := range known {
			isKnown = isKnown || f.name == name
		}
		if !isKnown {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		if len(m.Extra) == MaxExtraMetadata {
			break
		}
		if name == "" || len(name) > maxExtraMetadataKey || !allBytes(name, isNameByte) {
			continue
		}
		var s string
		if json.Unmarshal(obj[name], &s) != nil || s == "" || len(s) > MaxMetadataValue {
			continue
		}
		if m.Extra == nil {
			m.Extra = map[string]string{}
		}
		m.Extra[name] = s
	}
	return nil
}

func isNameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.' || c == ':'
}

func (req *request) decodeEncrypt(top map[string]json.RawMessage) *Error {
	if e := checkAlgorithm(top); e != nil {
		return e
	}
	pt, present, e := base64Field(top, "plaintext", MaxPlaintext, ErrNameUnsupportedOperation)
	switch {
	case e != nil:
		return e
	case !present:
		return validationf("plaintext is missing.")
	case len(pt) == 0:
		return validationf("plaintext is empty.")
	}
	req.Plaintext = pt
	if req.AAD, _, e = base64Field(top, "additionalAuthenticatedData", MaxAAD, ErrNameUnsupportedOperation); e != nil {
		return e
	}
	alg, present, e := stringField(top, "ciphertextDataIntegrityValueAlgorithm")
	switch {
	case e != nil:
		return e
	case present && alg != cdivAlgorithmSHA256:
		return validationf("ciphertextDataIntegrityValueAlgorithm must be %s.", cdivAlgorithmSHA256)
	}
	req.CDIV = present
	return nil
}

func (req *request) decodeDecrypt(top map[string]json.RawMessage) *Error {
	if e := checkAlgorithm(top); e != nil {
		return e
	}
	var e *Error
	var present bool
	if req.Ciphertext, present, e = base64Field(top, "ciphertext", MaxCiphertext, ErrNameUnsupportedOperation); e != nil {
		return e
	}
	if !present {
		return validationf("ciphertext is missing.")
	}
	if len(req.Ciphertext) == 0 {
		return validationf("ciphertext is empty.")
	}
	if req.CiphertextMetadata, req.HasCiphertextMetadata, e = base64Field(top, "ciphertextMetadata", MaxCiphertextMetadata, ErrNameValidation); e != nil {
		return e
	}
	if req.AAD, _, e = base64Field(top, "additionalAuthenticatedData", MaxAAD, ErrNameUnsupportedOperation); e != nil {
		return e
	}
	// The lengths of the IV and the tag are checked by Decrypt: a wrong one
	// is an InvalidCiphertextException ("Error Codes").
	const maxField = 64
	if req.IV, present, e = base64Field(top, "initializationVector", maxField, ErrNameInvalidCiphertext); e != nil {
		return e
	}
	if !present {
		return validationf("initializationVector is missing.")
	}
	if req.Tag, present, e = base64Field(top, "authenticationTag", maxField, ErrNameInvalidCiphertext); e != nil {
		return e
	}
	if !present {
		return validationf("authenticationTag is missing.")
	}
	return nil
}

func checkAlgorithm(top map[string]json.RawMessage) *Error {
	alg, present, e := stringField(top, "encryptionAlgorithm")
	switch {
	case e != nil:
		return e
	case !present:
		return validationf("encryptionAlgorithm is missing.")
	case alg != encryptionAlgorithmAESGCM:
		return validationf("encryptionAlgorithm must be %s.", encryptionAlgorithmAESGCM)
	}
	return nil
}

// stringField reads a string member; absent and null are "not present".
func stringField(obj map[string]json.RawMessage, name string) (string, bool, *Error) {
	raw, ok := obj[name]
	if !ok || isNull(raw) {
		return "", false, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false, validationf("%s must be a string.", name)
	}
	return s, true, nil
}

var stdBase64 = base64.StdEncoding.Strict()

// base64Field reads a member holding standard, padded Base64 (RFC 4648
// section 4, as the specification's "Background" says) of at most max
// bytes; a longer value is refused with tooLarge.
func base64Field(obj map[string]json.RawMessage, name string, max int, tooLarge string) ([]byte, bool, *Error) {
	s, present, e := stringField(obj, name)
	if e != nil || !present {
		return nil, false, e
	}
	if len(s) > base64.StdEncoding.EncodedLen(max) {
		return nil, false, sizeError(tooLarge, name, max)
	}
	// The decoder skips line breaks; a JSON string has no business holding
	// them.
	if strings.ContainsAny(s, "\r\n") {
		return nil, false, validationf("%s is not valid Base64.", name)
	}
	b, err := stdBase64.DecodeString(s)
	if err != nil {
		return nil, false, validationf("%s is not valid Base64.", name)
	}
	if len(b) > max {
		return nil, false, sizeError(tooLarge, name, max)
	}
	return b, true, nil
}

func sizeError(name, field string, max int) *Error {
	switch name {
	case ErrNameUnsupportedOperation:
		return apiErrorf(name, "%s is longer than the %d bytes this proxy supports.", field, max)
	case ErrNameInvalidCiphertext:
		return apiErrorf(name, "%s has an invalid length.", field)
	}
	return apiErrorf(name, "%s is longer than %d bytes.", field, max)
}

func isNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) }

func validationf(format string, args ...any) *Error {
	return apiErrorf(ErrNameValidation, format, args...)
}
