package main

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/gateway/xks"
	"github.com/hsmgate/hsmgate/internal/config"
)

// The xks commands manage the external key stores of [[xks.stores]]
// (docs/xks.md): their credentials and the keys marked for them. Like the
// principal commands they work whether the gateway runs or not, through
// the admin API's XKS operations (gateway/admin.go): on the keystore while
// the gateway is stopped, over mutual TLS as the admin while it runs, and
// take effect at once either way.

// xksCommand is the `hsmgate xks` command tree.
func xksCommand() *cli.Command {
	storeFlag := func(required bool) cli.Flag {
		return &cli.StringFlag{Name: "store", Usage: "the external key store: a name of [[xks.stores]]", Required: required}
	}
	usageFlag := &cli.StringSliceFlag{Name: "usage", Usage: "the usages GetKeyMetadata reports, comma-separated: ENCRYPT, DECRYPT, WRAP, UNWRAP (default ENCRYPT,DECRYPT, what AWS KMS needs)"}
	policyFlag := &cli.StringFlag{Name: "policy", Usage: "a file holding a key policy that decides XKS requests on their requestMetadata (actions xks:Encrypt, xks:Decrypt, xks:GetKeyMetadata); none allows every request the store authenticates"}
	externalIDFlag := func(dflt string) cli.Flag {
		return &cli.StringFlag{Name: "external-id", Usage: "the external key id AWS KMS names the key by (1 to 128 of A-Z a-z 0-9 - . _; default " + dflt + ")"}
	}
	action := func(name string, f func(c *cli.Context, xc *xksCmd) error) cli.ActionFunc {
		return func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			return f(c, &xksCmd{newPrincipalCmd(c, name)})
		}
	}
	return &cli.Command{
		Name: "xks",
		Usage: "manage the external key stores AWS KMS uses (docs/xks.md): their credentials and keys; on the keystore while the gateway is stopped, " +
			"through its admin API (mTLS as the admin) while it runs",
		Subcommands: []*cli.Command{
			{
				Name:  "credential",
				Usage: "the SigV4 credentials AWS KMS signs a store's requests with (at most two active, for rotation)",
				Subcommands: []*cli.Command{
					{
						Name:  "new",
						Usage: "create a credential for a store and print the JSON file the AWS KMS console takes (it holds the secret, shown this once)",
						Flags: []cli.Flag{storeFlag(true), gatewayListenFlag()},
						Action: action("xks credential new", func(c *cli.Context, xc *xksCmd) error {
							return xc.credentialNew(c.String("store"))
						}),
					},
					{
						Name:  "list",
						Usage: "list a store's credentials (never their secrets)",
						Flags: []cli.Flag{storeFlag(true), gatewayListenFlag()},
						Action: action("xks credential list", func(c *cli.Context, xc *xksCmd) error {
							return xc.credentialList(c.String("store"))
						}),
					},
					{
						Name:  "remove",
						Usage: "revoke a store's credential for good, at once",
						Flags: []cli.Flag{storeFlag(true), &cli.StringFlag{Name: "access-key-id", Usage: "the credential's access key id", Required: true}, gatewayListenFlag()},
						Action: action("xks credential remove", func(c *cli.Context, xc *xksCmd) error {
							return xc.credentialRemove(c.String("store"), c.String("access-key-id"))
						}),
					},
				},
			},
			{
				Name:  "key",
				Usage: "the keys of the stores: hsmgate keys (AES-256) marked for a store",
				Subcommands: []*cli.Command{
					{
						Name:  "add",
						Usage: "mark an existing symmetric encryption key for a store (again: change its external id, usages or policy)",
						Flags: []cli.Flag{storeFlag(true), &cli.StringFlag{Name: "key", Usage: "the key: key id, key ARN or alias name", Required: true},
							externalIDFlag("the key id"), usageFlag, policyFlag, gatewayListenFlag()},
						Action: action("xks key add", func(c *cli.Context, xc *xksCmd) error {
							in := gateway.AdminSetXKSKeyInput{KeyId: c.String("key"), Store: c.String("store"), ExternalKeyId: c.String("external-id"), Usages: splitUsages(c.StringSlice("usage"))}
							return xc.keyAdd(in, c.String("policy"))
						}),
					},
					{
						Name:  "create",
						Usage: "create a SYMMETRIC_DEFAULT key in the HSMs and mark it for a store",
						Flags: []cli.Flag{storeFlag(true), externalIDFlag("the new key's id"), &cli.StringFlag{Name: "description", Usage: "the key's description"},
							usageFlag, policyFlag, gatewayListenFlag()},
						Action: action("xks key create", func(c *cli.Context, xc *xksCmd) error {
							in := gateway.AdminCreateXKSKeyInput{Store: c.String("store"), ExternalKeyId: c.String("external-id"),
								Description: c.String("description"), Usages: splitUsages(c.StringSlice("usage"))}
							return xc.keyCreate(in, c.String("policy"))
						}),
					},
					{
						Name:  "remove",
						Usage: "unmark a key: its store no longer finds it (the hsmgate key stays)",
						Flags: []cli.Flag{&cli.StringFlag{Name: "key", Usage: "the key: key id, key ARN or alias name", Required: true}, gatewayListenFlag()},
						Action: action("xks key remove", func(c *cli.Context, xc *xksCmd) error {
							return xc.keyRemove(c.String("key"))
						}),
					},
					{
						Name:  "list",
						Usage: "list the keys marked for a store (for every store without --store)",
						Flags: []cli.Flag{storeFlag(false), gatewayListenFlag()},
						Action: action("xks key list", func(c *cli.Context, xc *xksCmd) error {
							return xc.keyList(c.String("store"))
						}),
					},
				},
			},
		},
	}
}

// xksCmd is what an xks command runs with.
type xksCmd struct{ *principalCmd }

// splitUsages reads --usage values, which may be comma-separated, as
// upper-case usages.
func splitUsages(vals []string) []string {
	var out []string
	for _, v := range vals {
		for _, u := range strings.Split(v, ",") {
			if u = strings.TrimSpace(u); u != "" {
				out = append(out, strings.ToUpper(u))
			}
		}
	}
	return out
}

// configuredStore returns the [[xks.stores]] table named name.
func (xc *xksCmd) configuredStore(name string) (*config.XKSStore, error) {
	cfg, err := loadConfig(xc.dataDir, xc.name)
	if err != nil {
		return nil, err
	}
	var names []string
	if cfg.XKS != nil {
		for i := range cfg.XKS.Stores {
			if cfg.XKS.Stores[i].Name == name {
				return &cfg.XKS.Stores[i], nil
			}
			names = append(names, cfg.XKS.Stores[i].Name)
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%s: no external key store %s: %s has no [[xks.stores]] table (see docs/xks.md)", xc.name, name, config.Path(xc.dataDir))
	}
	return nil, fmt.Errorf("%s: no external key store %s in [[xks.stores]] of %s (it has %s)", xc.name, name, config.Path(xc.dataDir), strings.Join(names, ", "))
}

// noteUnconfigured warns on stderr that a store is not configured: list
// and remove still work on what such a store left behind.
func (xc *xksCmd) noteUnconfigured(name string) {
	if _, err := xc.configuredStore(name); err != nil {
		fmt.Fprintf(xc.stderr, "Note: %s.\n", strings.TrimPrefix(err.Error(), xc.name+": "))
	}
}

func (xc *xksCmd) readPolicy(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: --policy: %w", xc.name, err)
	}
	return string(b), nil
}

// credentialNew creates a credential and prints the AWS KMS console's
// configuration file, which holds the secret, to stdout, and a note that
// it does to stderr.
func (xc *xksCmd) credentialNew(store string) error {
	st, err := xc.configuredStore(store)
	if err != nil {
		return err
	}
	// The file needs the store's URI path: check it before a secret that
	// could not be printed is made.
	if err := xks.ValidatePrefix(st.Prefix); err != nil {
		return fmt.Errorf("%s: xks.stores %s: %w", xc.name, store, err)
	}
	xs := &xks.Store{Name: st.Name, Prefix: st.Prefix}
	return xc.withAdmin(true, func(call adminCall) error {
		var out gateway.AdminCreateXKSCredentialOutput
		if err := call("CreateXKSCredential", gateway.AdminXKSStoreInput{Store: store}, &out); err != nil {
			return xc.fail(err, "")
		}
		file, err := xs.ConsoleConfig(xks.Credential{AccessKeyID: out.AccessKeyId, Secret: out.SecretAccessKey})
		if err != nil {
			return fmt.Errorf("%s: credential %s was created, but: %w; remove it with `hsmgate xks credential remove --store %s --access-key-id %s`",
				xc.name, out.AccessKeyId, err, shellWord(store), out.AccessKeyId)
		}
		fmt.Fprintf(xc.stdout, "%s\n", file)
		fmt.Fprintf(xc.stderr, "Note: this JSON holds the secret of credential %s of external key store %s, shown only this once: "+
			"give it to the AWS KMS console (or create-custom-key-store, update-custom-key-store) and keep no other copy.\n", out.AccessKeyId, store)
		return nil
	})
}

func (xc *xksCmd) credentialList(store string) error {
	xc.noteUnconfigured(store)
	return xc.withAdmin(false, func(call adminCall) error {
		var out gateway.AdminListXKSCredentialsOutput
		if err := call("ListXKSCredentials", gateway.AdminXKSStoreInput{Store: store}, &out); err != nil {
			return xc.fail(err, "")
		}
		tw := tabwriter.NewWriter(xc.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ACCESS KEY ID\tSTATUS\tCREATED")
		for _, c := range out.Credentials {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", c.AccessKeyId, strings.ToLower(c.Status), epochString(c.CreateDate))
		}
		return tw.Flush()
	})
}

// credentialRemove revokes a credential of a store, and only one of that
// store: RevokeAccessKey would revoke any access key.
func (xc *xksCmd) credentialRemove(store, akid string) error {
	return xc.withAdmin(false, func(call adminCall) error {
		var list gateway.AdminListXKSCredentialsOutput
		if err := call("ListXKSCredentials", gateway.AdminXKSStoreInput{Store: store}, &list); err != nil {
			return xc.fail(err, "")
		}
		active, found := 0, false
		for _, c := range list.Credentials {
			if c.AccessKeyId == akid {
				found = true
			} else if c.Status == gateway.AccessKeyActive {
				active++
			}
		}
		if !found {
			return fmt.Errorf("%s: %s is no credential of external key store %s (`hsmgate xks credential list --store %s` shows them)",
				xc.name, akid, store, shellWord(store))
		}
		var out gateway.AdminRevokeAccessKeyOutput
		if err := call("RevokeAccessKey", gateway.AdminRevokeAccessKeyInput{AccessKeyId: akid}, &out); err != nil {
			return xc.fail(err, "")
		}
		if out.PrincipalName != gateway.XKSPrincipal(store) { // can't be: the list named it
			return fmt.Errorf("%s: access key %s belongs to %s, not to external key store %s", xc.name, akid, out.PrincipalName, store)
		}
		if out.AlreadyRevoked {
			fmt.Fprintf(xc.stdout, "Credential %s of external key store %s was already removed.\n", akid, store)
			return nil
		}
		fmt.Fprintf(xc.stdout, "Removed credential %s of external key store %s: requests signed with it are refused from now on.\n", akid, store)
		if active == 0 {
			fmt.Fprintf(xc.stderr, "Warning: external key store %s has no active credential left: AWS KMS can't use it until "+
				"`hsmgate xks credential new --store %s` and update-custom-key-store.\n", store, shellWord(store))
		}
		return nil
	})
}

// printXKSKey prints what a key add or create did.
func (xc *xksCmd) printXKSKey(verb string, k gateway.AdminXKSKey) {
	policy := "no XKS policy"
	if k.Policy != "" {
		policy = "an XKS policy"
	}
	fmt.Fprintf(xc.stdout, "%s key %s for external key store %s: external key id %s, usages %s, %s.\n",
		verb, k.KeyId, k.Store, k.ExternalKeyId, strings.Join(k.Usages, ","), policy)
	fmt.Fprintf(xc.stdout, "In AWS KMS: aws kms create-key --origin EXTERNAL_KEY_STORE --custom-key-store-id CKS-ID --xks-key-id %s\n", k.ExternalKeyId)
}

func (xc *xksCmd) keyAdd(in gateway.AdminSetXKSKeyInput, policyFile string) error {
	if _, err := xc.configuredStore(in.Store); err != nil {
		return err
	}
	pol, err := xc.readPolicy(policyFile)
	if err != nil {
		return err
	}
	in.Policy = pol
	return xc.withAdmin(false, func(call adminCall) error {
		var out gateway.AdminXKSKey
		if err := call("SetXKSKey", in, &out); err != nil {
			return xc.fail(err, "")
		}
		xc.printXKSKey("Marked", out)
		return nil
	})
}

// keyCreate creates a key in the HSMs and marks it; on a stopped gateway
// that opens the pool.
func (xc *xksCmd) keyCreate(in gateway.AdminCreateXKSKeyInput, policyFile string) error {
	if _, err := xc.configuredStore(in.Store); err != nil {
		return err
	}
	pol, err := xc.readPolicy(policyFile)
	if err != nil {
		return err
	}
	in.Policy = pol
	return xc.withAdmin(true, func(call adminCall) error {
		var out gateway.AdminXKSKey
		if err := call("CreateXKSKey", in, &out); err != nil {
			return xc.fail(err, "")
		}
		xc.printXKSKey("Created", out)
		return nil
	})
}

func (xc *xksCmd) keyRemove(key string) error {
	return xc.withAdmin(false, func(call adminCall) error {
		var out gateway.AdminXKSKey
		if err := call("RemoveXKSKey", gateway.AdminXKSKeyInput{KeyId: key}, &out); err != nil {
			return xc.fail(err, "")
		}
		fmt.Fprintf(xc.stdout, "Unmarked key %s: external key store %s no longer finds external key id %s (the key itself stays).\n",
			out.KeyId, out.Store, out.ExternalKeyId)
		return nil
	})
}

func (xc *xksCmd) keyList(store string) error {
	if store != "" {
		xc.noteUnconfigured(store)
	}
	return xc.withAdmin(false, func(call adminCall) error {
		var out gateway.AdminListXKSKeysOutput
		if err := call("ListXKSKeys", gateway.AdminXKSStoreInput{Store: store}, &out); err != nil {
			return xc.fail(err, "")
		}
		tw := tabwriter.NewWriter(xc.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "STORE\tEXTERNAL KEY ID\tKEY ID\tSTATE\tUSAGES\tPOLICY\tDESCRIPTION")
		for _, k := range out.Keys {
			policy := "no"
			if k.Policy != "" {
				policy = "yes"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.Store, k.ExternalKeyId, k.KeyId, k.KeyState,
				strings.Join(k.Usages, ","), policy, dash(strings.Join(strings.Fields(k.Description), " ")))
		}
		return tw.Flush()
	})
}
