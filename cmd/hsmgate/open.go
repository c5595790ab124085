package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/hsmpool"
	"github.com/hsmgate/hsmgate/internal/config"
)

// What the commands share: loading the configuration, and opening the
// keystore and the pool with errors that say what to do.

// loadConfig loads dataDir's configuration; cmd names the command in errors.
func loadConfig(dataDir, cmd string) (*config.Config, error) {
	cfg, err := config.Load(dataDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: no %s in %s: run `hsmgate init` first, or pass --data", cmd, config.FileName, dataDir)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	return cfg, nil
}

// openKeystore opens <data>/keystore.db, which must exist (keystore.Open
// would create an empty one). The keystore's database allows one process
// at a time: while the gateway runs, it holds the lock, and opening fails
// after keystore.Open's timeout with an error saying so; ifLocked finishes
// that error's advice ("stop it, or …").
func openKeystore(dataDir, cmd, ifLocked string) (*keystore.Store, error) {
	path := filepath.Join(dataDir, gateway.KeystoreFile)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %s has no keystore (%s): this data folder was made by an hsmgate init from before the gateway. "+
			"Create a new one with `hsmgate --data NEW-FOLDER init` (a development pool holds nothing worth keeping)",
			cmd, dataDir, gateway.KeystoreFile)
	} else if err != nil {
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	s, err := keystore.Open(path)
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%s: the gateway is running (its keystore is locked): stop it, or %s (%s is locked by another process)", cmd, ifLocked, path)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	return s, nil
}

// orWaitForOther is the advice of a keystore lock for the commands that
// change the keystore while the gateway is stopped.
const orWaitForOther = "wait for the other hsmgate command using this data folder to finish; then try again"

// openPool opens the configured pool and requires a healthy slot in it.
func openPool(ctx context.Context, cfg *config.Config, cmd string, log *slog.Logger) (*hsmpool.Pool, error) {
	opts, err := cfg.PoolOptions(log)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	p, err := hsmpool.Open(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: open the HSM pool: %w", cmd, err)
	}
	if p.Healthy() == 0 {
		sts := p.Status()
		cerr := p.Close()
		return nil, errors.Join(fmt.Errorf("%s: none of the %d HSM slots is healthy: %s. `hsmgate pool check` shows more",
			cmd, len(sts), describeUnhealthy(sts)), cerr)
	}
	return p, nil
}

// withPool runs f on the configured pool (which must have a healthy slot)
// and closes the pool afterwards, reporting a failed close too.
func withPool(ctx context.Context, cfg *config.Config, cmd string, log *slog.Logger, f func(*hsmpool.Pool) error) (err error) {
	pool, err := openPool(ctx, cfg, cmd, log)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := pool.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("%s: close the HSM pool: %w", cmd, cerr))
		}
	}()
	return f(pool)
}
