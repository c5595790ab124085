package main

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/hsmgate/hsmgate/bench"
)

func endpointFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "endpoint", Usage: "the KMS endpoint URL (default $AWS_ENDPOINT_URL)"},
		&cli.StringFlag{Name: "region", Usage: "the region to sign for (default $AWS_REGION or $AWS_DEFAULT_REGION)"},
		&cli.StringFlag{Name: "ca-bundle", Usage: "PEM file of CAs to trust (default $AWS_CA_BUNDLE)"},
		&cli.StringFlag{Name: "cert", Usage: "client certificate (PEM) for mutual TLS instead of SigV4"},
		&cli.StringFlag{Name: "key", Usage: "the client certificate's private key (PEM)"},
		&cli.StringFlag{Name: "client", Value: "lean", Usage: "lean (net/http with its own SigV4) or sdk (aws-sdk-go-v2, what applications run)"},
		&cli.IntFlag{Name: "server-pid", Usage: "the server's process id, for its CPU per call (default: found from the endpoint's port when the server runs here)"},
	}
}

// runEndpoint is `hsmbench run`: credentials and endpoint come from the
// standard AWS environment variables, so `eval "$(hsmgate env)"` is all the
// setup it needs.
func runEndpoint(c *cli.Context) error {
	cfg := bench.KMSConfigFromEnv()
	for flag, field := range map[string]*string{"endpoint": &cfg.Endpoint, "region": &cfg.Region, "ca-bundle": &cfg.CABundle,
		"cert": &cfg.ClientCert, "key": &cfg.ClientKey} {
		if v := c.String(flag); v != "" {
			*field = v
		}
	}
	if cfg.Endpoint == "" {
		return errors.New("no endpoint: set AWS_ENDPOINT_URL (eval \"$(hsmgate env)\" does) or pass --endpoint")
	}
	if cfg.Region == "" {
		return errors.New("no region: set AWS_REGION or pass --region")
	}
	if (cfg.ClientCert == "") != (cfg.ClientKey == "") {
		return errors.New("--cert and --key go together")
	}
	if cfg.ClientCert == "" && (cfg.AccessKeyID == "" || cfg.SecretAccessKey == "") {
		return errors.New("no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or pass --cert and --key")
	}
	w, err := workload(c)
	if err != nil {
		return err
	}
	cfg.MaxConns = max(c.Int("concurrency"), c.Int("sweep"), c.Int("max-in-flight"))
	var t bench.Target
	switch c.String("client") {
	case "lean":
		t, err = bench.NewLeanTarget(cfg)
	case "sdk":
		t, err = bench.NewSDKTarget(cfg)
	default:
		return fmt.Errorf("--client %q: want lean or sdk", c.String("client"))
	}
	if err != nil {
		return err
	}
	defer t.Close()
	if err := t.Prepare(c.Context, w); err != nil {
		return fmt.Errorf("prepare the workload's keys on %s: %w", cfg.Endpoint, err)
	}
	pid := c.Int("server-pid")
	if pid == 0 {
		pid = bench.ServerPID(cfg.Endpoint)
	}
	report := newReport()
	runs, err := execute(c.Context, c, t, w, options(c, &bench.CPUProbe{ServerPID: pid}, 0))
	report.Runs = runs
	if ferr := finish(c, report); ferr != nil {
		return errors.Join(err, ferr)
	}
	return err
}
