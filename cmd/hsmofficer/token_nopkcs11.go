//go:build !(pkcs11 && cgo)

package main

import (
	"crypto"
	"errors"

	"github.com/hsmgate/hsmgate/quorum"
)

var errNoPKCS11 = errors.New("this hsmofficer was built without PKCS#11 token support: build it with `CGO_ENABLED=1 go build -tags pkcs11 ./cmd/hsmofficer`")

func (t *tool) openTokenKey(quorum.TokenRef) (crypto.Signer, error) { return nil, errNoPKCS11 }

func (t *tool) generateTokenKey(string, string) (crypto.Signer, quorum.TokenRef, error) {
	return nil, quorum.TokenRef{}, errNoPKCS11
}
