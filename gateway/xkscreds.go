package gateway

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/gateway/xks"
	"github.com/hsmgate/hsmgate/internal/pki"
)

// An external key store's credentials are access keys of a principal of
// its own, "xks.<store>", marked with the store's name: they are kept like
// every access key (the secret only encrypted by the HSM, in the keystore),
// at most two are active so they can be rotated, revocation takes effect
// on the next request, and they sign only XKS requests to that store. The
// access key ids and secrets have the XKS specification's formats.

// XKSPrincipalPrefix starts the name of every external key store's
// credential holder; other principals may not use it.
const XKSPrincipalPrefix = "xks."

// XKSPrincipal is the name of the principal holding a store's credentials.
func XKSPrincipal(store string) string { return XKSPrincipalPrefix + store }

// CreateXKSCredential issues a credential for an external key store and
// returns it; its secret can't be shown again.
func (id *Identities) CreateXKSCredential(ctx context.Context, store string) (xks.Credential, error) {
	name := XKSPrincipal(store)
	if err := pki.ValidPrincipalName(name); err != nil {
		return xks.Credential{}, fmt.Errorf("%w: store name %q: %v", keystore.ErrInvalid, store, err)
	}
	id.pmu.Lock()
	defer id.pmu.Unlock()
	if p, err := id.Store.Principal(name); err != nil {
		err := id.Store.Apply(&keystore.CreatePrincipal{Principal: keystore.Principal{Name: name, Kind: keystore.KindRole, XKSStore: store, CreatedAt: id.now()}})
		if err != nil {
			return xks.Credential{}, err
		}
	} else if p.XKSStore != store {
		return xks.Credential{}, fmt.Errorf("%w: principal %s exists and is not store %s's", keystore.ErrInvalid, name, store)
	}
	if active := id.activeAccessKeys(name); active >= MaxActiveAccessKeys {
		return xks.Credential{}, fmt.Errorf("external key store %s already has %d active credentials; remove one first: %w", store, active, keystore.ErrInvalid)
	}
	c, err := xks.NewCredential()
	if err != nil {
		return xks.Credential{}, err
	}
	if err := id.storeSecret(ctx, name, c.AccessKeyID, c.Secret); err != nil {
		return xks.Credential{}, err
	}
	return c, nil
}

// XKSCredentials returns the active credentials of an external key store.
// Secrets are decrypted by the HSM once and then kept in memory, as for
// SigV4 access keys.
func (id *Identities) XKSCredentials(store string) []xks.Credential {
	var out []xks.Credential
	for _, a := range id.Store.AccessKeysOf(XKSPrincipal(store)) {
		if a.Revoked {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		creds, err := id.Lookup(ctx, a.ID)
		cancel()
		if err != nil {
			continue // the HSM will be asked again on the next request
		}
		out = append(out, xks.Credential{AccessKeyID: a.ID, Secret: creds.Secret})
	}
	return out
}

// isXKSPrincipal reports whether a principal name is reserved for external
// key stores' credentials.
func isXKSPrincipal(name string) bool { return strings.HasPrefix(name, XKSPrincipalPrefix) }
