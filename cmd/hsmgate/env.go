package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/internal/config"
)

// runEnv prints shell exports that point the AWS CLI and SDKs at the
// gateway as its admin: the endpoint, the CA bundle, the admin's access key
// (from <data>/admin/credentials) and the region. Every value is single
// quoted, so the output is safe to eval:
//
//	eval "$(hsmgate --data DIR env)"
//
// listen, when not empty, overrides gateway.listen (as `serve --listen`).
func runEnv(dataDir, listen string, w io.Writer) error {
	cfg, err := loadConfig(dataDir, "env")
	if err != nil {
		return err
	}
	opts, err := cfg.GatewayOptions()
	if err != nil {
		return fmt.Errorf("env: %w", err)
	}
	if listen != "" {
		if err := config.CheckListen(listen); err != nil {
			return fmt.Errorf("env: --listen %w", err)
		}
		opts.Listen = listen
	}
	host, port, _ := net.SplitHostPort(opts.Listen)
	if port == "0" {
		return fmt.Errorf("env: the gateway listens on %s, a port the system chooses at start: pass the address `hsmgate serve` printed with --listen", opts.Listen)
	}
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return fmt.Errorf("env: %w", err)
	}
	ca := filepath.Join(abs, gateway.CACertFile)
	if _, err := os.Stat(ca); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("env: the gateway's CA certificate %s is missing: `hsmgate init` writes it", ca)
	} else if err != nil {
		return fmt.Errorf("env: %w", err)
	}
	akid, secret, err := readCredentials(filepath.Join(abs, adminCredentialsFile))
	if err != nil {
		return fmt.Errorf("env: %w", err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# The hsmgate admin's AWS settings for %s. Use: eval \"$(hsmgate --data %s env)\"\n", abs, shellWord(abs))
	for _, kv := range [][2]string{
		{"AWS_ENDPOINT_URL", endpointURL(host, port, opts.Hosts)},
		{"AWS_CA_BUNDLE", ca},
		{"AWS_ACCESS_KEY_ID", akid},
		{"AWS_SECRET_ACCESS_KEY", secret},
		{"AWS_REGION", opts.Region},
		{"AWS_DEFAULT_REGION", opts.Region},
	} {
		fmt.Fprintf(&b, "export %s=%s\n", kv[0], shellQuote(kv[1]))
	}
	// A session token left from real AWS credentials would be sent with
	// these and make every request fail.
	b.WriteString("unset AWS_SESSION_TOKEN\n")
	_, err = io.WriteString(w, b.String())
	return err
}
