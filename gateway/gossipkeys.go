package gateway

import (
	"context"

	"github.com/hsmgate/hsmgate/gateway/kmsapi"
)

// GossipKeyring is a cluster node's gossip keyring (cluster.Gossip), which
// admins rotate on a running node (docs/cluster.md, "Rotating the gossip
// key"). Keys cross the admin API only inside its TLS, and are named by
// fingerprint everywhere else.
type GossipKeyring interface {
	GossipKeys() []string
	InstallKey(key []byte) error
	UseKey(key []byte) error
	RemoveKey(key []byte) error
}

type (
	GossipKeyInput   struct{ Key []byte }
	GossipKeysOutput struct {
		// Keys are the keys' fingerprints, the primary first.
		Keys []string
	}
)

func (a *Admin) gossipKeyring() (GossipKeyring, error) {
	if a.Gossip == nil {
		return nil, kmsapi.Errorf(kmsapi.ExUnsupported, "This gateway is not a running cluster node with gossip (cluster.gossip_address); with the gateway stopped, edit its keyring file.")
	}
	return a.Gossip, nil
}

func (a *Admin) gossipKeys(_ context.Context, _ *kmsapi.Caller, _ *adminEmpty) (*GossipKeysOutput, error) {
	k, err := a.gossipKeyring()
	if err != nil {
		return nil, err
	}
	return &GossipKeysOutput{Keys: k.GossipKeys()}, nil
}

// gossipKeyOp runs one rotation step and answers the keyring after it.
func (a *Admin) gossipKeyOp(ctx context.Context, caller *kmsapi.Caller, op string, f func(GossipKeyring) error) (*GossipKeysOutput, error) {
	k, err := a.gossipKeyring()
	if err != nil {
		return nil, err
	}
	if err := f(k); err != nil {
		return nil, kmsapi.Errorf(kmsapi.ExValidation, "%s", err.Error())
	}
	keys := k.GossipKeys()
	a.changed(ctx, op, caller, "keys", keys)
	return &GossipKeysOutput{Keys: keys}, nil
}

func (a *Admin) gossipKeyInstall(ctx context.Context, caller *kmsapi.Caller, req *GossipKeyInput) (*GossipKeysOutput, error) {
	defer clear(req.Key)
	return a.gossipKeyOp(ctx, caller, "ClusterGossipKeyInstall", func(k GossipKeyring) error { return k.InstallKey(req.Key) })
}

func (a *Admin) gossipKeyUse(ctx context.Context, caller *kmsapi.Caller, req *GossipKeyInput) (*GossipKeysOutput, error) {
	defer clear(req.Key)
	return a.gossipKeyOp(ctx, caller, "ClusterGossipKeyUse", func(k GossipKeyring) error { return k.UseKey(req.Key) })
}

func (a *Admin) gossipKeyRemove(ctx context.Context, caller *kmsapi.Caller, req *GossipKeyInput) (*GossipKeysOutput, error) {
	defer clear(req.Key)
	return a.gossipKeyOp(ctx, caller, "ClusterGossipKeyRemove", func(k GossipKeyring) error { return k.RemoveKey(req.Key) })
}
