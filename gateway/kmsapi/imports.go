package kmsapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"time"

	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/hsmpool"
)

// Key import (BYOK)
//
// A key created with Origin EXTERNAL has no material until it is imported:
// GetParametersForImport generates an RSA wrapping key pair in the HSMs
// (its private half can only unwrap) and returns its public key and an
// import token; the customer wraps its key material to that public key;
// ImportKeyMaterial unwraps it inside the HSM and re-wraps it under the
// domain key. The material is never in the gateway's memory in plaintext.

const (
	originExternal = "EXTERNAL"
	expires        = "KEY_MATERIAL_EXPIRES"
	expiresNever   = "KEY_MATERIAL_DOES_NOT_EXPIRE"
	// importParamsTTL is how long import parameters stay valid (AWS: 24h).
	importParamsTTL = 24 * time.Hour
	// maxValidTo bounds ValidTo (AWS: 365 days ahead).
	maxValidTo = 365 * 24 * time.Hour
	// maxWrappedMaterial bounds EncryptedKeyMaterial (AWS: 6144 bytes).
	maxWrappedMaterial = 6144
)

// importTokenMagic starts every import token: "HGIT" and a version.
var importTokenMagic = []byte("HGIT\x01")

type getParametersForImportRequest struct {
	KeyId             string
	WrappingAlgorithm string
	WrappingKeySpec   string
}

type getParametersForImportResponse struct {
	KeyId             string
	ImportToken       []byte
	PublicKey         []byte
	ParametersValidTo Epoch
}

type importKeyMaterialRequest struct {
	KeyId                  string
	ImportToken            []byte
	EncryptedKeyMaterial   []byte
	ValidTo                *Epoch
	ExpirationModel        string
	ImportType             string
	KeyMaterialDescription string
	KeyMaterialId          string
}

var wrappingKeySpecs = map[string]hsmpool.KeySpec{
	"RSA_2048": hsmpool.RSA2048, "RSA_3072": hsmpool.RSA3072, "RSA_4096": hsmpool.RSA4096,
}

// importable says whether any import algorithm of the pool can bring
// material of spec.
func (s *Service) importable(spec hsmpool.KeySpec) error {
	caps := s.Pool.Capabilities()
	var last error
	for _, alg := range []hsmpool.ImportAlgorithm{hsmpool.RSAESOAEPSHA1, hsmpool.RSAESOAEPSHA256, hsmpool.RSAAESKeyWrapSHA1, hsmpool.RSAAESKeyWrapSHA256} {
		if last = caps.SupportsImport(alg, spec); last == nil {
			return nil
		}
	}
	return Errorf(ExUnsupported, "Key material of this spec can't be imported into this gateway's HSMs: %v.", last)
}

// externalKey resolves a key that takes imported material.
func (s *Service) externalKey(ctx context.Context, c Caller, action, keyID string) (*keystore.Key, error) {
	k, err := s.resolve(ctx, keyID)
	if err != nil {
		return nil, err
	}
	if err := s.authorize(ctx, c, action, k); err != nil {
		return nil, err
	}
	switch {
	case k.Origin != originExternal || k.Import == nil:
		return nil, Errorf(ExUnsupported, "%s has origin %s; %s works only on keys created with origin EXTERNAL.", s.KeyARN(k.ID), k.Origin, action)
	case k.State == keystore.StatePendingDeletion:
		return nil, Errorf(ExInvalidState, "%s is pending deletion.", s.KeyARN(k.ID))
	}
	return k, nil
}

func (s *Service) getParametersForImport(ctx context.Context, c Caller, req *getParametersForImportRequest) (*getParametersForImportResponse, error) {
	alg, ok := hsmpool.ParseImportAlgorithm(req.WrappingAlgorithm)
	if !ok {
		return nil, Errorf(ExValidation, "WrappingAlgorithm %q is not one of RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256, RSA_AES_KEY_WRAP_SHA_1, RSA_AES_KEY_WRAP_SHA_256.", truncate(req.WrappingAlgorithm, 40))
	}
	wspec, ok := wrappingKeySpecs[req.WrappingKeySpec]
	if !ok {
		return nil, Errorf(ExValidation, "WrappingKeySpec must be RSA_2048, RSA_3072 or RSA_4096.")
	}
	k, err := s.externalKey(ctx, c, "GetParametersForImport", req.KeyId)
	if err != nil {
		return nil, err
	}
	if err := s.Pool.SupportsImport(alg, specs[k.Spec].pool); err != nil {
		return nil, Errorf(ExUnsupported, "%s can't bring %s key material into this gateway's HSMs: %v.", alg, k.Spec, err)
	}
	gen, err := s.Pool.GenerateKey(ctx, wspec, hsmpool.UsageImportWrap)
	if err != nil {
		return nil, err
	}
	var tokenID [32]byte
	if _, err := rand.Read(tokenID[:]); err != nil {
		return nil, err
	}
	validTo := s.now().UTC().Add(importParamsTTL)
	err = s.Store.Apply(&keystore.SetImportParams{KeyID: k.ID, TokenID: fmt.Sprintf("%x", tokenID), WrappingBlob: gen.Blob,
		WrappingPublic: gen.Public, Algorithm: alg.String(), ValidTo: validTo})
	if err != nil {
		return nil, err
	}
	id, _ := keyUUID(k.ID)
	token := append(append(append([]byte{}, importTokenMagic...), id[:]...), tokenID[:]...)
	return &getParametersForImportResponse{KeyId: s.KeyARN(k.ID), ImportToken: token, PublicKey: gen.Public, ParametersValidTo: Epoch(validTo)}, nil
}

func (s *Service) importKeyMaterial(ctx context.Context, c Caller, req *importKeyMaterialRequest) (*empty, error) {
	switch {
	case len(req.EncryptedKeyMaterial) == 0 || len(req.EncryptedKeyMaterial) > maxWrappedMaterial:
		return nil, Errorf(ExValidation, "EncryptedKeyMaterial must be 1 to %d bytes.", maxWrappedMaterial)
	case len(req.ImportToken) == 0:
		return nil, Errorf(ExValidation, "ImportToken is required.")
	case req.ImportType == "NEW_KEY_MATERIAL":
		return nil, Errorf(ExUnsupported, "ImportType NEW_KEY_MATERIAL (rotating imported keys) is not supported; a key's imported material can only be re-imported.")
	case req.ImportType != "" && req.ImportType != "EXISTING_KEY_MATERIAL":
		return nil, Errorf(ExValidation, "ImportType must be EXISTING_KEY_MATERIAL.")
	}
	now := s.now().UTC()
	var validTo time.Time
	switch req.ExpirationModel {
	case "", expiresNever:
		if req.ValidTo != nil {
			return nil, Errorf(ExValidation, "ValidTo must be omitted when the key material does not expire.")
		}
	case expires:
		if req.ValidTo == nil {
			return nil, Errorf(ExValidation, "ValidTo is required when ExpirationModel is KEY_MATERIAL_EXPIRES.")
		}
		validTo = time.Time(*req.ValidTo).UTC()
		if !validTo.After(now) || validTo.After(now.Add(maxValidTo)) {
			return nil, Errorf(ExValidation, "ValidTo must be in the future and at most 365 days from now.")
		}
	default:
		return nil, Errorf(ExValidation, "ExpirationModel must be KEY_MATERIAL_EXPIRES or KEY_MATERIAL_DOES_NOT_EXPIRE.")
	}
	k, err := s.externalKey(ctx, c, "ImportKeyMaterial", req.KeyId)
	if err != nil {
		return nil, err
	}
	imp := k.Import
	id, _ := keyUUID(k.ID)
	tok := req.ImportToken
	if len(tok) != len(importTokenMagic)+16+32 || !bytes.HasPrefix(tok, importTokenMagic) || !bytes.Equal(tok[len(importTokenMagic):len(importTokenMagic)+16], id[:]) {
		return nil, Errorf(ExInvalidImportToken, "The import token is not one GetParametersForImport gave for %s.", s.KeyARN(k.ID))
	}
	if imp.TokenID == "" || subtle.ConstantTimeCompare([]byte(fmt.Sprintf("%x", tok[len(importTokenMagic)+16:])), []byte(imp.TokenID)) != 1 {
		return nil, Errorf(ExInvalidImportToken, "The import token is not the key's current one: call GetParametersForImport again.")
	}
	if !imp.ParamsValidTo.After(now) {
		return nil, Errorf(ExExpiredImportToken, "The import token expired at %s: call GetParametersForImport again.", imp.ParamsValidTo.Format(time.RFC3339))
	}
	alg, _ := hsmpool.ParseImportAlgorithm(imp.Algorithm)
	wk, err := hsmpool.NewKey("import:"+k.ID, 1, imp.WrappingBlob, imp.WrappingPublic)
	if err != nil {
		return nil, err
	}
	gen, kcv, err := s.Pool.ImportKey(ctx, wk, alg, req.EncryptedKeyMaterial, specs[k.Spec].pool, poolUsage[k.Usage])
	if err != nil {
		return nil, err
	}
	if imp.KCV != nil && subtle.ConstantTimeCompare(imp.KCV, kcv) != 1 {
		return nil, Errorf(ExIncorrectMaterial, "The key material is not the material first imported into %s.", s.KeyARN(k.ID))
	}
	v := keystore.Version{Number: 1, CreatedAt: now, Blob: gen.Blob, Public: gen.Public}
	if err := s.Store.Apply(&keystore.ImportMaterial{KeyID: k.ID, Version: v, KCV: kcv, ValidTo: validTo}); err != nil {
		return nil, err
	}
	s.forgetMaterial(k.ID)
	noteVersion(ctx, 1)
	return &empty{}, nil
}

func (s *Service) deleteImportedKeyMaterial(ctx context.Context, c Caller, req *keyIDRequest) (*empty, error) {
	k, err := s.externalKey(ctx, c, "DeleteImportedKeyMaterial", req.KeyId)
	if err != nil {
		return nil, err
	}
	if len(k.Versions) == 0 {
		return nil, Errorf(ExInvalidState, "%s has no key material (it is pending import).", s.KeyARN(k.ID))
	}
	if err := s.Store.Apply(&keystore.DeleteMaterial{KeyID: k.ID}); err != nil {
		return nil, err
	}
	s.forgetMaterial(k.ID)
	return &empty{}, nil
}

// forgetMaterial drops what the service keeps in memory about a key's
// imported material.
func (s *Service) forgetMaterial(id string) {
	s.keys.Delete(keyVersion{id, 1})
	s.gcm.Delete(keyVersion{id, 1})
}

// ExpireDue deletes the imported material whose ValidTo has passed at
// now: the keys become PendingImport until the same material is imported
// again.
func (s *Service) ExpireDue(ctx context.Context, now time.Time) []DeletionEvent {
	due, _ := s.Store.Keys("", 1<<30, func(k *keystore.Key) bool {
		return k.Import != nil && len(k.Versions) > 0 && !k.Import.ValidTo.IsZero() && !k.Import.ValidTo.After(now)
	})
	out := make([]DeletionEvent, 0, len(due))
	for _, k := range due {
		err := s.Store.Apply(&keystore.DeleteMaterial{KeyID: k.ID})
		if err == nil {
			s.forgetMaterial(k.ID)
			if s.Log != nil {
				s.Log.Info("imported key material expired", "key_id", k.ID)
			}
		}
		out = append(out, DeletionEvent{KeyID: k.ID, Err: err})
	}
	return out
}

var errExternalExhausted = errors.New("imported key material reached its AES-GCM encryption limit")
