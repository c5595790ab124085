package main

// Officer keys with the Ed25519 half in a PKCS#11 token (quorum.TokenRef).
// Loading a PKCS#11 module needs cgo, and hsmofficer's default build is
// pure Go so that officers can build it anywhere: token support is in the
// build with -tags pkcs11 (token_pkcs11.go); the default build says how to
// get it (token_nopkcs11.go).

// Environment: the PKCS#11 module to load, and the token's user PIN (else
// read from the terminal).
const (
	pkcs11ModuleEnv = "HSMOFFICER_PKCS11_MODULE"
	tokenPINEnv     = "HSMOFFICER_TOKEN_PIN"
)
