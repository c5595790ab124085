package kmsapi

import (
	"math"
	"strconv"
	"time"
)

// Epoch is a timestamp on the wire: seconds since 1970 as a JSON number, as
// the AWS JSON 1.1 protocol sends them.
type Epoch time.Time

func (e Epoch) MarshalJSON() ([]byte, error) {
	t := time.Time(e)
	return strconv.AppendFloat(nil, float64(t.UnixMilli())/1000, 'f', -1, 64), nil
}

func (e *Epoch) UnmarshalJSON(b []byte) error {
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return errBadTimestamp
	}
	sec, frac := math.Modf(f)
	*e = Epoch(time.Unix(int64(sec), int64(frac*1e9)).UTC())
	return nil
}

// Tag is a key tag on the wire.
type Tag struct {
	TagKey   string
	TagValue string
}

// KeyMetadata is DescribeKey's and CreateKey's description of a key.
type KeyMetadata struct {
	AWSAccountId           string
	KeyId                  string
	Arn                    string
	CreationDate           Epoch
	Enabled                bool
	Description            string
	KeyUsage               string
	KeyState               string
	Origin                 string
	KeyManager             string
	CustomerMasterKeySpec  string
	KeySpec                string
	EncryptionAlgorithms   []string `json:",omitempty"`
	SigningAlgorithms      []string `json:",omitempty"`
	MacAlgorithms          []string `json:",omitempty"`
	KeyAgreementAlgorithms []string `json:",omitempty"`
	MultiRegion            bool
	// Set while the key is pending deletion.
	DeletionDate                *Epoch `json:",omitempty"`
	PendingDeletionWindowInDays *int   `json:",omitempty"`
	// Set for keys with imported material.
	ExpirationModel string `json:",omitempty"`
	ValidTo         *Epoch `json:",omitempty"`
}

type createKeyRequest struct {
	Description                    string
	KeyUsage                       string
	KeySpec                        string
	CustomerMasterKeySpec          string
	Origin                         string
	Tags                           []Tag
	Policy                         *string
	MultiRegion                    bool
	CustomKeyStoreId               string
	XksKeyId                       string
	BypassPolicyLockoutSafetyCheck bool
}

type keyMetadataResponse struct {
	KeyMetadata KeyMetadata
}

type keyIDRequest struct {
	KeyId       string
	GrantTokens []string
}

type listRequest struct {
	KeyId  string
	Limit  *int
	Marker string
}

type keyListEntry struct {
	KeyId  string
	KeyArn string
}

type listKeysResponse struct {
	Keys       []keyListEntry
	NextMarker string `json:",omitempty"`
	Truncated  bool
}

type updateDescriptionRequest struct {
	KeyId       string
	Description *string
}

type aliasRequest struct {
	AliasName   string
	TargetKeyId string
}

type aliasEntry struct {
	AliasName       string
	AliasArn        string
	TargetKeyId     string `json:",omitempty"`
	CreationDate    Epoch
	LastUpdatedDate Epoch
}

type listAliasesResponse struct {
	Aliases    []aliasEntry
	NextMarker string `json:",omitempty"`
	Truncated  bool
}

type tagResourceRequest struct {
	KeyId string
	Tags  []Tag
}

type untagResourceRequest struct {
	KeyId   string
	TagKeys []string
}

type listTagsResponse struct {
	Tags       []Tag
	NextMarker string `json:",omitempty"`
	Truncated  bool
}

type encryptRequest struct {
	KeyId               string
	Plaintext           []byte
	EncryptionContext   map[string]string
	EncryptionAlgorithm string
	GrantTokens         []string
	DryRun              bool
}

type encryptResponse struct {
	CiphertextBlob      []byte
	KeyId               string
	EncryptionAlgorithm string
}

type decryptRequest struct {
	CiphertextBlob      []byte
	EncryptionContext   map[string]string
	KeyId               string
	EncryptionAlgorithm string
	GrantTokens         []string
	DryRun              bool
	Recipient           *struct{}
}

type decryptResponse struct {
	KeyId               string
	Plaintext           []byte
	EncryptionAlgorithm string
}

type reEncryptRequest struct {
	CiphertextBlob                 []byte
	SourceEncryptionContext        map[string]string
	SourceKeyId                    string
	DestinationKeyId               string
	DestinationEncryptionContext   map[string]string
	SourceEncryptionAlgorithm      string
	DestinationEncryptionAlgorithm string
	GrantTokens                    []string
	DryRun                         bool
}

type reEncryptResponse struct {
	CiphertextBlob                 []byte
	SourceKeyId                    string
	KeyId                          string
	SourceEncryptionAlgorithm      string
	DestinationEncryptionAlgorithm string
}

type generateDataKeyRequest struct {
	KeyId             string
	KeySpec           string
	NumberOfBytes     *int
	EncryptionContext map[string]string
	GrantTokens       []string
	DryRun            bool
	Recipient         *struct{}
}

type generateDataKeyResponse struct {
	CiphertextBlob []byte
	Plaintext      []byte `json:",omitempty"`
	KeyId          string
}

type macRequest struct {
	KeyId        string
	Message      []byte
	MacAlgorithm string
	Mac          []byte
	GrantTokens  []string
	DryRun       bool
}

type generateMacResponse struct {
	Mac          []byte
	MacAlgorithm string
	KeyId        string
}

type verifyMacResponse struct {
	KeyId        string
	MacValid     bool
	MacAlgorithm string
}

type signRequest struct {
	KeyId            string
	Message          []byte
	MessageType      string
	SigningAlgorithm string
	Signature        []byte
	GrantTokens      []string
	DryRun           bool
}

type signResponse struct {
	KeyId            string
	Signature        []byte
	SigningAlgorithm string
}

type verifyResponse struct {
	KeyId            string
	SignatureValid   bool
	SigningAlgorithm string
}

type getPublicKeyResponse struct {
	KeyId                  string
	PublicKey              []byte
	CustomerMasterKeySpec  string
	KeySpec                string
	KeyUsage               string
	EncryptionAlgorithms   []string `json:",omitempty"`
	SigningAlgorithms      []string `json:",omitempty"`
	KeyAgreementAlgorithms []string `json:",omitempty"`
}

type generateRandomRequest struct {
	NumberOfBytes    *int
	CustomKeyStoreId string
	Recipient        *struct{}
}

type generateRandomResponse struct {
	Plaintext []byte
}

type empty struct{}

// tokens returns a request's grant tokens (see [validGrantTokens]).
func (r *keyIDRequest) tokens() []string           { return r.GrantTokens }
func (r *encryptRequest) tokens() []string         { return r.GrantTokens }
func (r *decryptRequest) tokens() []string         { return r.GrantTokens }
func (r *reEncryptRequest) tokens() []string       { return r.GrantTokens }
func (r *generateDataKeyRequest) tokens() []string { return r.GrantTokens }
func (r *macRequest) tokens() []string             { return r.GrantTokens }
func (r *signRequest) tokens() []string            { return r.GrantTokens }
