package hsmpool

import (
	"crypto/elliptic"
	"crypto/x509"
)

func ellipticP256() elliptic.Curve { return elliptic.P256() }

func marshalPKIX(pub any) ([]byte, error) { return x509.MarshalPKIXPublicKey(pub) }
