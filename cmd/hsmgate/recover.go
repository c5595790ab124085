package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hsmgate/hsmgate/attest"
	"github.com/hsmgate/hsmgate/gateway"
	"github.com/hsmgate/hsmgate/gateway/audit"
	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/gateway/kmsapi"
	"github.com/hsmgate/hsmgate/hsmpool"
	"github.com/hsmgate/hsmgate/internal/config"
	"github.com/hsmgate/hsmgate/internal/pki"
	"github.com/hsmgate/hsmgate/quorum"
)

// SharesDir is where the officers' encrypted domain-key shares are written
// in a data folder.
var SharesDir = filepath.Join("quorum", "shares")

// quorumFlags are init's --quorum-set, --pop, --cluster and --target.
type quorumFlags struct {
	set     string
	pops    []string
	cluster string
	target  string
}

// initQuorum is the quorum an init installs (--quorum-set): the first set,
// and the split of the new domain key among its officers.
type initQuorum struct {
	setRaw  []byte
	set     *quorum.Set
	pops    [][]byte
	cluster string
	target  string
	split   *gateway.DomainSplit
	// material is a copy of the new domain key, kept until it is sealed
	// to the TPM (sealCopy) and then zeroed (forget).
	material []byte
}

// sealCopy seals the kept domain key to the TPM when the configuration
// has one; a failure is reported, not fatal (the officers' shares remain).
func (q *initQuorum) sealCopy(dataDir string, w io.Writer) {
	if q == nil || q.material == nil {
		return
	}
	if err := sealDomainKeyCopy(dataDir, q.material, w); err != nil {
		fmt.Fprintf(w, "Could not seal a recovery copy of the domain key to the TPM (%v); the officers' shares remain the way to recover it\n", err)
	}
}

// forget zeroes the kept domain key.
func (q *initQuorum) forget() {
	if q != nil {
		clear(q.material)
		q.material = nil
	}
}

// loadInitQuorum reads and checks init's quorum flags before anything is
// created.
func loadInitQuorum(setFile string, popFiles []string, cluster, target string, cfg *config.Config) (*initQuorum, error) {
	if setFile == "" {
		if len(popFiles) > 0 {
			return nil, errors.New("--pop is for --quorum-set")
		}
		return nil, nil
	}
	if cfg != nil && cfg.Quorum != nil {
		cluster = cmp(cluster, cfg.Quorum.ClusterID)
		target = cmp(target, cfg.Quorum.Target)
	}
	if cluster == "" || target == "" {
		return nil, errors.New("--quorum-set needs --cluster and --target (or cluster_id and target in the [quorum] section): proposals must name them")
	}
	q := &initQuorum{cluster: cluster, target: target}
	var err error
	if q.setRaw, err = readQuorumFile(setFile, quorum.PEMSet); err != nil {
		return nil, err
	}
	if q.set, err = quorum.DecodeSet(q.setRaw); err != nil {
		return nil, fmt.Errorf("%s: %w", setFile, err)
	}
	if q.set.Epoch != 1 {
		return nil, fmt.Errorf("%s: the first quorum set must be at epoch 1, not %d", setFile, q.set.Epoch)
	}
	var pops []*quorum.ProofOfPossession
	for _, f := range popFiles {
		raw, err := readQuorumFile(f, quorum.PEMPossession)
		if err != nil {
			return nil, err
		}
		pop, err := quorum.DecodeProofOfPossession(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		q.pops, pops = append(q.pops, raw), append(pops, pop)
	}
	if err := quorum.VerifyPossession(q.set, q.set.Officers, pops); err != nil {
		return nil, err
	}
	return q, nil
}

func cmp(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// keep splits the new domain key material among the officers (called by
// provisionDomainKey before it zeroes the material).
func (q *initQuorum) keep(material []byte, kcv string) error {
	if q == nil {
		return nil
	}
	var err error
	q.split, err = gateway.SplitDomainKey(material, q.set, kcv)
	q.material = bytes.Clone(material)
	return err
}

// install installs the set and the split in the new keystore, writes the
// officers' share files, and records the scope in cfg.
func (q *initQuorum) install(ctx context.Context, dataDir string, cfg *config.Config, w io.Writer) (err error) {
	if q == nil {
		return nil
	}
	store, err := keystore.Open(filepath.Join(dataDir, gateway.KeystoreFile))
	if err != nil {
		return err
	}
	defer func() {
		if cerr := store.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close the keystore: %w", cerr))
		}
	}()
	ledger, err := filepath.Abs(filepath.Join(dataDir, gateway.QuorumLedgerFile))
	if err != nil {
		return err
	}
	call := inProcessAdmin(&gateway.Admin{Identities: &gateway.Identities{Store: store}, Account: cfg.Gateway.Account, QuorumLedger: ledger}, ctx)
	var st gateway.QuorumStatusOutput
	if err := call("QuorumInit", gateway.QuorumInitInput{Set: q.setRaw, ProofsOfPossession: q.pops, ClusterId: q.cluster, Target: q.target}, &st); err != nil {
		return fmt.Errorf("install the quorum set: %w", err)
	}
	cfg.Quorum = &config.Quorum{ClusterID: q.cluster, Target: q.target}
	fmt.Fprintf(w, "Installed the quorum set (epoch 1, %d officers) for cluster %q, target %q; replay ledger %s\n", len(q.set.Officers), q.cluster, q.target, ledger)
	if q.split == nil {
		fmt.Fprintln(w, "The slots already held a domain key (adopted, not made here), so it was not split among the officers: officers can't recover it")
		return nil
	}
	if err := gateway.SaveDomainSplit(store, q.split); err != nil {
		return err
	}
	files, err := writeShareFiles(dataDir, q.split)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "Split the domain key among the officers: any %d of %d recover it. Their encrypted shares (give each officer theirs):\n",
		q.set.Thresholds[quorum.KindDomainRecovery], len(q.set.Officers))
	for _, f := range files {
		fmt.Fprintf(w, "  %s\n", f)
	}
	return nil
}

// writeShareFiles writes one encrypted share file per officer into
// <data>/quorum/shares, replacing older ones, and returns their paths.
func writeShareFiles(dataDir string, ds *gateway.DomainSplit) ([]string, error) {
	dir := filepath.Join(dataDir, SharesDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	shares, err := ds.Decoded()
	if err != nil {
		return nil, err
	}
	var files []string
	for i, es := range shares {
		var fp quorum.Fingerprint
		copy(fp[:], es.Officer)
		name := fmt.Sprintf("domain-key-%s-epoch%d-%s.share", ds.KCV[:12], ds.Epoch, strings.ReplaceAll(fp.Short(), "-", ""))
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, quorum.Armor(quorum.PEMEncryptedShare, ds.Shares[i]), 0o644); err != nil {
			return nil, err
		}
		files = append(files, path)
	}
	return files, nil
}

// inProcessAdmin calls admin operations on a stopped gateway's keystore as
// the admin.
func inProcessAdmin(a *gateway.Admin, ctx context.Context) adminCall {
	caller := kmsapi.Caller{Principal: localCaller, Admin: true}
	return func(op string, in, out any) error {
		body, err := json.Marshal(in)
		if err != nil {
			return err
		}
		resp, apiErr := a.Do(ctx, caller, gateway.AdminTargetPrefix+op, body)
		if apiErr != nil {
			return apiErr
		}
		return json.Unmarshal(resp, out)
	}
}

func recoverCommand() *cli.Command {
	return &cli.Command{
		Name: "recover",
		Usage: "domain-key recovery ceremony, with the gateway stopped: provision the domain key on slots that lack it " +
			"(a replaced or added HSM) from the officers' shares, once a quorum approved",
		ArgsUsage: " ",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "inbox", Usage: "folder where the proposal is written and the officers' approval (.approval), rejection (.rejection) and recovery share (.rshare) files are dropped (not with --sealed)"},
			&cli.StringFlag{Name: "requester", Usage: "who asks for the recovery (shown to the officers)", Value: "hsmgate-recovery"},
			&cli.DurationFlag{Name: "valid-for", Value: 24 * time.Hour, Usage: "how long the proposal can gather approvals"},
			&cli.DurationFlag{Name: "timeout", Value: 24 * time.Hour, Usage: "give up after this long"},
			&cli.BoolFlag{Name: "sealed", Usage: "no officers: provision from the domain key's copy sealed to the TPM at init, which unseals only on a boot of the approved image and binary"},
		},
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			if c.Bool("sealed") != (c.String("inbox") == "") {
				return errors.New("quorum recover: give --inbox (officers' shares) or --sealed (the TPM-sealed copy)")
			}
			return runRecover(c.Context, c.String("data"), c.String("inbox"), c.String("requester"), c.Duration("valid-for"), c.Duration("timeout"), c.Bool("sealed"), c.App.Writer, newLogger(c))
		},
	}
}

// runRecover runs the ceremony: it writes the proposal into the inbox,
// then watches the inbox until the proposal is approved and enough shares
// arrived (or it was rejected, expired, or the timeout passed).
func runRecover(ctx context.Context, dataDir, inbox, requester string, validFor, timeout time.Duration, sealed bool, w io.Writer, log *slog.Logger) (err error) {
	const cmd = "quorum recover"
	cfg, err := loadConfig(dataDir, cmd)
	if err != nil {
		return err
	}
	store, err := openKeystore(dataDir, cmd, "stop the gateway first: recovery runs on a stopped gateway")
	if err != nil {
		return err
	}
	defer func() {
		if cerr := store.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("%s: close the keystore: %w", cmd, cerr))
		}
	}()
	// With a TPM, this boot is measured first, as serve measures it, and
	// sealed PINs are unsealed: a tampered gateway does not get the pool.
	ao, err := cfg.AttestOptions()
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	poolCfg, forgetPINs := cfg, func() {}
	var boot *bootAttestation
	if ao.On() {
		if boot, err = attestBoot(cfg, ao, log); err != nil {
			return fmt.Errorf("%s: this boot does not attest, refusing: %w", cmd, err)
		}
		defer boot.tpm.Close()
		poolCfg, forgetPINs = boot.poolConfig(cfg)
	} else if sealed {
		return fmt.Errorf("%s: --sealed needs a TPM ([attest] in %s)", cmd, config.Path(dataDir))
	}
	opts, err := poolCfg.PoolOptions(log)
	if err != nil {
		forgetPINs()
		return fmt.Errorf("%s: %w", cmd, err)
	}
	pool, err := hsmpool.Open(ctx, opts)
	forgetPINs()
	if err != nil {
		return fmt.Errorf("%s: open the HSM pool: %w", cmd, err)
	}
	defer func() {
		if cerr := pool.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("%s: close the HSM pool: %w", cmd, cerr))
		}
	}()
	var lacking []string
	for _, st := range pool.Status() {
		if st.State == hsmpool.StateNoDomainKey {
			lacking = append(lacking, st.Name)
		}
	}
	if len(lacking) == 0 {
		return fmt.Errorf("%s: no slot lacks the domain key (%s): there is nothing to recover onto", cmd, describeSlots(pool.Status()))
	}
	if sealed {
		if err := recoverSealed(ctx, boot, ao, pool, cfg.Pool.DomainKeyCheck); err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
		auditRecovery(ctx, pool, store, dataDir, quorum.Decision{Kind: quorum.KindDomainRecovery}, "tpm-sealed-copy", nil, log)
		fmt.Fprintf(w, "Recovered from the TPM-sealed copy: the domain key (check value %s) is provisioned; slots: %s\n", pool.DomainKeyCheck(), describeSlots(pool.Status()))
		return nil
	}
	rec, err := gateway.BeginRecovery(store, requester, validFor, time.Now())
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	defer rec.Close()
	if err := os.MkdirAll(inbox, 0o700); err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	propFile := filepath.Join(inbox, "recovery.proposal")
	if err := writeAtomic(propFile, quorum.Armor(quorum.PEMProposal, rec.Proposal())); err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	fmt.Fprintf(w, `Recovery of the domain key onto %s: request %s
Proposal: %s
Each approving officer, on their own machine:
  hsmofficer show --set quorum.set recovery.proposal
  hsmofficer approve --key OFFICER.key --set quorum.set --out NAME.approval recovery.proposal
  hsmofficer recovery-share --key OFFICER.key --set quorum.set --proposal recovery.proposal --out NAME.rshare THEIR-DOMAIN-KEY.share
and drops NAME.approval and NAME.rshare into %s. %d shares are needed.
Waiting (until %s)...
`, strings.Join(lacking, ", "), rec.RequestID(), propFile, inbox, rec.SharesNeeded(), time.Now().Add(timeout).Format(time.RFC3339))

	deadline := time.Now().Add(timeout)
	seen := map[string]bool{}
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%s: stopped: %w", cmd, err)
		}
		entries, err := os.ReadDir(inbox)
		if err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
		names := make([]string, 0, len(entries))
		for _, e := range entries {
			names = append(names, e.Name())
		}
		sort.Strings(names)
		for _, name := range names {
			ext := filepath.Ext(name)
			if seen[name] || (ext != ".approval" && ext != ".rejection" && ext != ".rshare") {
				continue
			}
			seen[name] = true
			path := filepath.Join(inbox, name)
			what, ferr := takeInboxFile(rec, path, ext)
			if ferr != nil {
				fmt.Fprintf(w, "  %s: not counted: %v\n", name, ferr)
				continue
			}
			fmt.Fprintf(w, "  %s: %s\n", name, what)
		}
		now := time.Now()
		d, derr := rec.Decision(now)
		if errors.Is(derr, quorum.ErrRejected) || errors.Is(derr, quorum.ErrExpired) {
			return fmt.Errorf("%s: the proposal can't be approved any more: %w", cmd, derr)
		}
		if rec.Ready(now) {
			fmt.Fprintf(w, "Approved by %d of %d needed; %d shares of %d needed. Recovering.\n", len(d.Approvals), d.Threshold, rec.SharesHeld(), rec.SharesNeeded())
			d, resplit, cerr := rec.Complete(ctx, pool, now)
			auditRecovery(ctx, pool, store, dataDir, d, "officers", cerr, log)
			if cerr != nil {
				return fmt.Errorf("%s: %w", cmd, cerr)
			}
			fmt.Fprintf(w, "Recovered: the domain key (check value %s) is provisioned; slots: %s\n", pool.DomainKeyCheck(), describeSlots(pool.Status()))
			if resplit != nil {
				if err := gateway.SaveDomainSplit(store, resplit); err != nil {
					return fmt.Errorf("%s: save the new split: %w", cmd, err)
				}
				files, err := writeShareFiles(dataDir, resplit)
				if err != nil {
					return fmt.Errorf("%s: %w", cmd, err)
				}
				fmt.Fprintf(w, "The quorum set changed since the last split: the domain key is split again to epoch %d; new shares:\n  %s\n", resplit.Epoch, strings.Join(files, "\n  "))
			}
			return nil
		}
		if now.After(deadline) {
			return fmt.Errorf("%s: timed out: %d of %d approvals, %d of %d shares", cmd, len(d.Approvals), d.Threshold, rec.SharesHeld(), rec.SharesNeeded())
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// takeInboxFile counts one file dropped into the inbox.
func takeInboxFile(rec *gateway.Recovery, path, ext string) (string, error) {
	typ := map[string]string{".approval": quorum.PEMApproval, ".rejection": quorum.PEMRejection, ".rshare": quorum.PEMRecoveryShare}[ext]
	raw, err := readQuorumFile(path, typ)
	if err != nil {
		return "", err
	}
	switch ext {
	case ".approval":
		return "approval counted", rec.AddApproval(raw)
	case ".rejection":
		return "rejection counted", rec.AddRejection(raw)
	}
	i, err := rec.AddShare(raw)
	return fmt.Sprintf("share %d checked against the split's commitments", i), err
}

// auditRecovery records the ceremony in the audit log, once the pool can
// sign again (if it can't, the log says why, and so does the error).
func auditRecovery(ctx context.Context, pool *hsmpool.Pool, store *keystore.Store, dataDir string, d quorum.Decision, source string, failure error, log *slog.Logger) {
	if pool.Healthy() == 0 {
		log.Warn("the recovery can't be audited: no healthy slot to sign the audit log with", "request_id", d.RequestID.String())
		return
	}
	w, err := gateway.OpenAudit(ctx, pool, store, dataDir)
	if err != nil {
		log.Error("open the audit log to record the recovery", "err", err)
		return
	}
	defer w.Close()
	var officers []string
	for _, fp := range d.Approvals {
		officers = append(officers, fp.String())
	}
	id := d.RequestID.String()
	if d.RequestID == (quorum.RequestID{}) {
		id = "sealed-" + time.Now().UTC().Format("20060102T150405Z")
	}
	rec := audit.Record{RequestID: id, Principal: gateway.AdminName, Operation: gateway.AdminTargetPrefix + "QuorumExecute", Outcome: audit.OutcomeOK,
		RequestMetadata: map[string]string{"quorum_request_id": d.RequestID.String(), "quorum_kind": string(d.Kind),
			"quorum_epoch": fmt.Sprint(d.Epoch), "quorum_approvals": strings.Join(officers, ","), "recovery_source": source}}
	if failure != nil {
		rec.Outcome, rec.ErrorCode = audit.OutcomeError, "RecoveryFailed"
	}
	if err := w.Append(ctx, rec); err != nil {
		log.Error("audit the recovery", "err", err)
	}
}

func describeSlots(sts []hsmpool.SlotStatus) string {
	var parts []string
	for _, st := range sts {
		parts = append(parts, st.Name+" "+st.State.String())
	}
	return strings.Join(parts, ", ")
}

// writeAtomic writes a file by renaming a complete temporary one.
func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// SealedDomainKeyFile is the domain key's sealed recovery copy, in the
// attestation state folder.
const SealedDomainKeyFile = "domain-key.sealed"

// sealDomainKeyCopy seals the domain key material to the PCR values a
// boot of this executable with the data folder's configuration reaches,
// when the configuration has a TPM: `hsmgate quorum recover --sealed` can
// then provision a new slot without officers, but only on such a boot.
func sealDomainKeyCopy(dataDir string, material []byte, w io.Writer) error {
	const cmd = "init"
	cfg, ao, err := attestOptions(dataDir, cmd)
	if err != nil || !ao.On() {
		return err
	}
	meas, err := measureBoot(cfg, "")
	if err != nil {
		return err
	}
	pcrs, err := meas.predictPCRs(ao.PCRs)
	if err != nil {
		return err
	}
	h, err := openTPM(ao)
	if err != nil {
		return err
	}
	defer h.Close()
	path := filepath.Join(ao.StateDir, SealedDomainKeyFile)
	if err := writeSealed(h, path, material, softwarePCRs(pcrs, ao.PCRs)); err != nil {
		return err
	}
	fmt.Fprintf(w, "Sealed a recovery copy of the domain key to %s in %s: it unseals only in a boot of this image and binary\n", h.what, path)
	return nil
}

// softwarePCRs keeps the image and binary PCRs of pcrs: the domain key's
// sealed copy is bound to the approved software, not to the
// configuration, since replacing an HSM is itself a configuration change
// (the PINs, sealed to the configuration too, still guard the pool).
func softwarePCRs(pcrs map[int][]byte, alloc attest.PCRAllocation) map[int][]byte {
	return map[int][]byte{alloc.Image: pcrs[alloc.Image], alloc.Binary: pcrs[alloc.Binary]}
}

func writeSealed(h *tpmHandle, path string, secret []byte, pcrs map[int][]byte) error {
	sealed, err := h.Seal(secret, pcrs)
	if err != nil {
		return err
	}
	raw, err := sealed.Marshal()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return pki.WriteFileAtomic(path, raw, 0o600)
}

// resealDomainKeyCopy moves the sealed domain-key copy to the image and
// binary PCR values of pcrs (seal-pins --binary ahead of an update): it
// measures this boot's image and binary into the TPM (as serve would) and
// must unseal the copy first. It reports what it did, or why the copy
// stays as it was.
func resealDomainKeyCopy(h *tpmHandle, cfg *config.Config, ao config.AttestOptions, pcrs map[int][]byte, w io.Writer) {
	path := filepath.Join(ao.StateDir, SealedDomainKeyFile)
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	var material []byte
	if err == nil {
		var now *bootMeasurements
		if now, err = measureBoot(cfg, ""); err == nil {
			for _, e := range now.events {
				if e.Kind == attest.KindConfig {
					continue
				}
				if _, err = h.Measure(e.Kind, e.Name, e.Digest); err != nil {
					break
				}
			}
		}
		var sealed *attest.Sealed
		if err == nil {
			sealed, err = attest.ParseSealed(raw)
		}
		if err == nil {
			material, err = h.Unseal(sealed)
		}
	}
	if err != nil {
		fmt.Fprintf(w, "The sealed domain-key copy %s was NOT resealed: it does not unseal on this boot (%v); it stays sealed to the software it was sealed to\n", path, err)
		return
	}
	defer clear(material)
	if err := writeSealed(h, path, material, softwarePCRs(pcrs, ao.PCRs)); err != nil {
		fmt.Fprintf(w, "The sealed domain-key copy %s was NOT resealed: %v\n", path, err)
		return
	}
	fmt.Fprintf(w, "Resealed the domain-key recovery copy %s to the image and binary measured above\n", path)
}

// recoverSealed provisions the slots that lack the domain key from its
// sealed copy: it unseals only on a boot whose measurements match.
func recoverSealed(ctx context.Context, boot *bootAttestation, ao config.AttestOptions, pool *hsmpool.Pool, wantKCV string) error {
	path := filepath.Join(ao.StateDir, SealedDomainKeyFile)
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("the sealed domain-key copy: %w (it is made by init --quorum-set with a TPM)", err)
	}
	material, err := unsealWithNext(boot.tpm.TPM, path)
	if err != nil {
		return fmt.Errorf("unseal the domain-key copy %s: %w", path, err)
	}
	defer clear(material)
	kcv, err := hsmpool.KCVOf(material)
	if err != nil {
		return err
	}
	if wantKCV != "" && kcv.String() != wantKCV {
		return fmt.Errorf("the sealed copy is of domain key %s, not this gateway's %s: nothing was provisioned", kcv, wantKCV)
	}
	return pool.ProvisionDomainKey(ctx, material)
}
