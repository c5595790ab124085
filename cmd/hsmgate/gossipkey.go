package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/gateway/cluster"
	"github.com/hsmgate/hsmgate/internal/pki"
)

// gossipKeyCommand is `hsmgate cluster gossip-key …`: the three rounds of
// a gossip key rotation on a running node (docs/cluster.md), through its
// admin API.
func gossipKeyCommand() *cli.Command {
	step := func(name, usage, op string) *cli.Command {
		return &cli.Command{
			Name: name, Usage: usage, ArgsUsage: "KEY-FILE", Flags: []cli.Flag{gatewayListenFlag()},
			Action: func(c *cli.Context) error {
				file, err := oneArg(c, "KEY-FILE")
				if err != nil {
					return err
				}
				key, err := readGossipKeyFile(file)
				if err != nil {
					return err
				}
				defer clear(key)
				return runGossipKeys(newPrincipalCmd(c, "cluster gossip-key "+name), op, gateway.GossipKeyInput{Key: key})
			},
		}
	}
	return &cli.Command{
		Name:  "gossip-key",
		Usage: "rotate the gossip key of a running node: generate, then install, use and remove on every node in turn (docs/cluster.md)",
		Subcommands: []*cli.Command{
			{
				Name: "generate", Usage: "write a new random gossip key (32 bytes, Base64) to a file, mode 0600", ArgsUsage: "KEY-FILE",
				Action: func(c *cli.Context) error {
					file, err := oneArg(c, "KEY-FILE")
					if err != nil {
						return err
					}
					key, err := cluster.GenerateGossipKey()
					if err != nil {
						return err
					}
					defer clear(key)
					if _, err := os.Stat(file); err == nil {
						return fmt.Errorf("%s exists: refusing to overwrite it", file)
					}
					if err := pki.WriteFileAtomic(file, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "wrote gossip key %s to %s\n", cluster.GossipKeyFingerprint(key), file)
					return nil
				},
			},
			{
				Name: "list", Usage: "the node's gossip keys by fingerprint, the primary first", ArgsUsage: " ", Flags: []cli.Flag{gatewayListenFlag()},
				Action: func(c *cli.Context) error {
					if err := noArgs(c); err != nil {
						return err
					}
					return runGossipKeys(newPrincipalCmd(c, "cluster gossip-key list"), "ClusterGossipKeys", struct{}{})
				},
			},
			step("install", "round 1: add the key (it decrypts from now on)", "ClusterGossipKeyInstall"),
			step("use", "round 2: make the installed key primary (it encrypts from now on)", "ClusterGossipKeyUse"),
			step("remove", "round 3: remove an old key", "ClusterGossipKeyRemove"),
		},
	}
}

func readGossipKeyFile(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	defer clear(raw)
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(bytes.TrimSpace(raw))))
	if err != nil || (len(key) != 16 && len(key) != 24 && len(key) != 32) {
		return nil, fmt.Errorf("%s: not a gossip key (16, 24 or 32 bytes in standard Base64)", path)
	}
	return key, nil
}

func runGossipKeys(pc *principalCmd, op string, in any) error {
	return pc.withAdmin(false, func(call adminCall) error {
		var out gateway.GossipKeysOutput
		if err := call(op, in, &out); err != nil {
			return pc.fail(err, "")
		}
		for i, k := range out.Keys {
			role := ""
			if i == 0 {
				role = " (primary)"
			}
			fmt.Fprintf(pc.stdout, "%s%s\n", k, role)
		}
		return nil
	})
}
