package gateway

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/hsmgate/hsmgate/gateway/audit"
	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/gateway/policy"
	"github.com/hsmgate/hsmgate/gateway/xks"
	"github.com/hsmgate/hsmgate/hsmpool"
)

// XKSOptions turn on the External Key Store proxy API (docs/xks.md): one
// or more stores, each under its own path prefix, served from the same
// pool and keystore as the KMS API.
type XKSOptions struct {
	// FleetSize is the number of gateways serving these stores, reported
	// by GetHealthStatus; zero means 1.
	FleetSize int
	// Timeout bounds each XKS request's work; zero means 2s.
	Timeout time.Duration
	Stores  []XKSStore
}

// XKSStore is one external key store's settings. Its credentials are kept
// in the keystore (Identities.CreateXKSCredential) and its keys are
// keystore keys marked for it (keystore.SetXKS).
type XKSStore struct {
	Name        string
	Prefix      string   // path prefix, "" for none
	Regions     []string // accepted SigV4 regions; empty accepts any
	MaxInFlight int
	RateLimit   float64
	Burst       int
}

// newXKS builds the XKS handler of a gateway.
func (g *Gateway) newXKS(o *XKSOptions) (*xks.Handler, error) {
	h := &xks.Handler{
		Pool: g.cfg.Pool, Now: g.cfg.Now, Log: g.log, Timeout: o.Timeout, FleetSize: o.FleetSize,
		Audit: g.auditXKS,
	}
	if g.cfg.Fleet != nil {
		h.Fleet = func() []xks.FleetNode {
			var out []xks.FleetNode
			for _, m := range g.cfg.Fleet() {
				out = append(out, xks.FleetNode{ID: m.ID, Usable: m.Usable})
			}
			return out
		}
	}
	for _, st := range o.Stores {
		name := st.Name
		h.Stores = append(h.Stores, &xks.Store{
			Name: name, Prefix: st.Prefix, Regions: st.Regions,
			Credentials: func() []xks.Credential { return g.identities.XKSCredentials(name) },
			Keys:        xksKeys{g}, Authorize: g.xksAuthorize,
			MaxInFlight: st.MaxInFlight, RateLimit: st.RateLimit, Burst: st.Burst,
		})
	}
	if err := h.Validate(); err != nil {
		return nil, fmt.Errorf("gateway: external key stores: %w", err)
	}
	return h, nil
}

// serveAll routes XKS paths to the XKS handler and everything else to the
// KMS API's mux.
func (g *Gateway) serveAll(w http.ResponseWriter, r *http.Request) {
	if g.xks.Match(r.URL.Path) {
		g.xks.ServeHTTP(w, r)
		return
	}
	g.mux.ServeHTTP(w, r)
}

// xksKeys finds the keys marked for a store.
type xksKeys struct{ g *Gateway }

func (x xksKeys) Lookup(_ context.Context, store, externalID string) (xks.Key, error) {
	k, err := x.g.cfg.Store.XKSKey(store, externalID)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", xks.ErrKeyNotFound, externalID)
	}
	switch {
	case k.State == keystore.StatePendingDeletion, k.State == keystore.StatePendingImport, len(k.Versions) == 0:
		return nil, fmt.Errorf("%w: key %s is %s", xks.ErrInvalidState, k.ID, k.State)
	}
	return &xksKey{g: x.g, k: k}, nil
}

// xksKey is a keystore key as the XKS handler uses it: a snapshot taken at
// lookup.
type xksKey struct {
	g *Gateway
	k *keystore.Key
}

func (x *xksKey) ID() string       { return x.k.XKS.ExternalID }
func (x *xksKey) Usages() []string { return x.k.XKS.Usages }
func (x *xksKey) Enabled() bool    { return x.k.State == keystore.StateEnabled }

// EncryptKey counts the encryption against the current version's AES-GCM
// limit (rotating at the limit), as every encryption of the KMS API does.
func (x *xksKey) EncryptKey(ctx context.Context) (*hsmpool.Key, error) {
	k, v, err := x.g.service.EncryptionVersion(ctx, x.k)
	if err != nil {
		return nil, err
	}
	return x.g.service.PoolKey(k, v)
}

func (x *xksKey) DecryptKey(_ context.Context, version uint32) (*hsmpool.Key, error) {
	v := x.k.Current()
	if version != 0 {
		if v = x.k.Version(version); v == nil {
			return nil, xks.ErrKeyVersionNotFound
		}
	}
	return x.g.service.PoolKey(x.k, v)
}

// xksPolicies caches parsed XKS policies by their text.
var xksPolicies sync.Map // string -> *policy.Policy

// xksAuthorize is the secondary authorization: the key's XKS policy, if
// it has one, decides on the request's requestMetadata (actions
// xks:Encrypt, xks:Decrypt, xks:GetKeyMetadata; principal awsPrincipalArn).
func (g *Gateway) xksAuthorize(_ context.Context, r *xks.AuthzRequest) error {
	xk, ok := r.Key.(*xksKey)
	if !ok || xk.k.XKS.Policy == "" {
		return nil
	}
	text := xk.k.XKS.Policy
	var p *policy.Policy
	if v, ok := xksPolicies.Load(text); ok {
		p = v.(*policy.Policy)
	} else {
		parsed, err := policy.Parse([]byte(text))
		if err != nil {
			return fmt.Errorf("the XKS policy of key %s does not parse: %w", xk.k.ID, err)
		}
		xksPolicies.Store(text, parsed)
		p = parsed
	}
	var principals []string
	if r.Metadata != nil && r.Metadata.AWSPrincipalARN != "" {
		principals = []string{r.Metadata.AWSPrincipalARN}
	}
	var ctx policy.MapContext
	if r.Metadata != nil {
		ctx = policy.MapContext(r.Metadata.Conditions())
	}
	d := p.Evaluate(&policy.Request{
		Principals: principals, Account: g.cfg.Account, Action: "xks:" + r.Operation,
		Resource: g.service.KeyARN(xk.k.ID), Context: ctx,
	})
	if d != policy.Allow {
		return fmt.Errorf("%w: the XKS policy of key %s gives %s for xks:%s", xks.ErrAccessDenied, xk.k.ID, d, r.Operation)
	}
	return nil
}

// auditXKS writes an XKS request's audit record.
func (g *Gateway) auditXKS(ctx context.Context, ev xks.Event) error {
	if g.cfg.Audit == nil {
		return nil
	}
	rec := audit.Record{
		RequestID: ev.RequestID, SourceIP: ev.SourceIP, UserAgent: ev.UserAgent,
		Operation: "XKS." + ev.Operation, KeyVersion: ev.KeyVersion, Outcome: ev.Outcome, ErrorCode: ev.ErrorName,
		LatencyNS: int64(ev.Latency), RequestMetadata: ev.Metadata.Map(),
	}
	if ev.Operation == "" {
		rec.Operation = "XKS"
	}
	if ev.Store != "" {
		rec.Principal = "xks:" + ev.Store + "/" + ev.AccessKeyID
	} else if ev.AccessKeyID != "" {
		rec.Principal = "xks:/" + ev.AccessKeyID
	}
	if xk, ok := ev.Key.(*xksKey); ok && xk != nil {
		rec.KeyID = xk.k.ID
		rec.KeyARN = g.service.KeyARN(xk.k.ID)
	}
	if rec.RequestMetadata == nil {
		rec.RequestMetadata = map[string]string{}
	}
	if ev.Store != "" {
		rec.RequestMetadata["xks:store"] = ev.Store
	}
	if ev.ExternalKeyID != "" {
		rec.RequestMetadata["xks:externalKeyId"] = ev.ExternalKeyID
	}
	if len(rec.RequestMetadata) == 0 {
		rec.RequestMetadata = nil
	}
	if err := g.cfg.Audit.Append(ctx, rec); err != nil {
		g.log.Error("audit log write failed; refusing the XKS request", "request_id", ev.RequestID, "err", err)
		return err
	}
	return nil
}
