// Package attest is hsmgate's measured boot, remote attestation and sealing
// on a TPM 2.0, built on github.com/google/go-tpm's tpm2 ("direct") API.
//
// It proves what a gateway runs, and keeps secrets (the HSM slot PINs) from a
// gateway whose boot was tampered with. A real TPM is used in production
// (Config.Device, /dev/tpmrm0); swtpm in tests and in the embedded default
// (Config.Socket; Swtpm starts one).
//
// # TPM access
//
// Config.Device opens a character device with go-tpm's linuxtpm transport;
// it should be /dev/tpmrm0, the kernel resource manager, which virtualises
// transient objects and sessions per open file. Config.Socket talks to an
// swtpm data channel (swtpm socket --tpm2 --server type=unixio,path=…),
// which speaks raw TPM 2.0 frames: go-tpm's tcp transport expects the
// Microsoft simulator framing and fails against swtpm, so this package uses
// its own stream transport (one connection per command, the response read
// whole by the size in its header). swtpm is started with
// --flags not-need-init,startup-clear, so it is usable without control
// channel commands and starts each run with TPM2_Startup(CLEAR). swtpm has
// no resource manager and only three object slots, so Open flushes
// transient objects and sessions a dead process left behind, and every
// operation here flushes what it loads.
//
// # Keys: nothing stored, nothing in NV
//
// The EK, the AK and the storage root key (SRK) are primary keys, derived by
// TPM2_CreatePrimary from a hierarchy seed and a fixed template: the same
// template under the same seed always gives the same key. So they are
// re-created for each operation and flushed after it — no key blobs on
// disk, no persistent handles (EvictControl) to collide with other software
// on the machine, and they survive a swtpm restart or a reboot unchanged.
//
//   - EK: the TCG EK Credential Profile's ECC P-256 template (go-tpm's
//     ECCEKTemplate), in the endorsement hierarchy; on hardware it matches the
//     EK certificate of that template. ECC rather than RSA-2048 because
//     creating an RSA primary means generating primes each time.
//   - AK: an ECC P-256 restricted signing key (ECDSA, SHA-256), fixedTPM,
//     fixedParent, sensitiveDataOrigin, as a primary of the endorsement
//     hierarchy with an hsmgate-specific unique field. In the endorsement
//     hierarchy because the TPM obfuscates the reset and restart counters
//     in quotes signed by storage-hierarchy keys; here the quote's
//     resetCount identifies the boot.
//   - SRK: the TCG ECC P-256 SRK template (go-tpm's ECCSRKTemplate) in the
//     owner hierarchy; the parent of sealed objects. TPM2_Clear changes the
//     owner seed, after which old sealed objects no longer load
//     (ErrSealedUnloadable).
//
// Config.OwnerAuth and Config.EndorsementAuth carry hierarchy passwords on
// machines that set them.
//
// # Measurement
//
// Three things are measured at start-up, each into its own PCR of the
// SHA-256 bank (PCRAllocation; DefaultPCRs):
//
//	PCR 12  image   the active firmware image (digest of its manifest or file)
//	PCR 13  binary  the hsmgate executable that will run
//	PCR 15  config  the effective configuration
//
// Why these: PCRs 0–7 are the firmware's; 8 and 9 are used by GRUB (and 9
// by the Linux EFI stub for the initrd), 10 by IMA (boot_aggregate whenever
// the kernel has IMA), 11 by systemd-stub for a unified kernel image, and 14
// by shim (MokList, MokListX, MokSBState) on most Secure Boot distributions.
// 12, 13 and 15 are used only by systemd's measured-UKI features (kernel
// command line and credentials, system extensions, machine identity and file
// systems), which an hsmgate appliance does not use. PCRs 16 and 23 are resettable from software
// (locality 0): an attacker could reset them and replay good values. 17–22
// are dynamic-root PCRs that locality 0 cannot extend. PCRAllocation.Validate
// enforces 8–15 and distinct PCRs. Should a platform use one of ours anyway,
// Open notices (its firmware event log names the PCR, or the PCR is already
// extended at the first Open of a boot) and fails rather than produce a log
// that cannot be replayed; configure another allocation.
//
// Measure(kind, name, digest) extends the PCR with
//
//	SHA-256("hsmgate.attest.event.v1\x00" || u32be(len(kind)) || kind ||
//	        u32be(len(name)) || name || u32be(len(digest)) || digest)
//
// (Event.ExtendDigest), binding the kind and the name as well as the digest,
// and appends the event to the measurement event log.
//
// # The measurement event log
//
// A JSON document (EventLog), kept in Config.StateDir/eventlog.json and
// included in every attestation Document:
//
//	{
//	  "format": "hsmgate-measurement-log/v1",
//	  "hash": "sha256",
//	  "pcrs": {"image": 12, "binary": 13, "config": 15},
//	  "boot": {"resetCount": 7, "restartCount": 0},
//	  "events": [
//	    {"seq": 0, "pcr": 12, "kind": "image", "name": "hsmgate-image", "digest": "<hex SHA-256>"},
//	    {"seq": 1, "pcr": 13, "kind": "binary", "name": "/usr/bin/hsmgate", "digest": "<hex>"},
//	    {"seq": 2, "pcr": 15, "kind": "config", "name": "hsmgate.toml", "digest": "<hex>"}
//	  ]
//	}
//
// A verifier replays it (EventLog.Replay): every allocated PCR starts at 32
// zero bytes and each event does PCR = SHA-256(PCR || ExtendDigest). Each
// kind is measured at most once per boot; sequence numbers count from 0.
//
// # Once per boot: the idempotency rule
//
// PCRs cannot be reset by software; only a TPM reset (a reboot, or an swtpm
// restart) clears them. But the gateway process can restart without one, and
// `hsmgate attest measure` may measure before `hsmgate serve` starts. So the log is
// tied to the TPM's boot cycle, the reset counter from TPM2_ReadClock
// (BootID), and Open decides:
//
//   - the stored log is of this boot (same resetCount) and replays to the
//     current PCRs: it is this boot's log; keep it;
//   - it replays to the PCRs without its last event: Measure writes the
//     event to the log before extending (write-ahead), so a crash came in
//     between; extend that event now;
//   - the allocated PCRs are all zero: a new boot; start an empty log
//     (whatever is stored is of an earlier boot, or a TPM Restart);
//   - otherwise (PCRs extended but no log that explains them: another
//     component extended them, or the log was lost or edited): fail with
//     ErrMeasurementState. Nothing short of a reboot repairs this.
//
// Then Measure of a kind already in the log returns the logged event and
// extends nothing if name and digest are the same, and fails with
// ErrAlreadyMeasured if they differ: a different binary or configuration
// needs a reboot to be measured, and until then the old measurements (and
// the secrets sealed to them) stand.
//
// Measurements are only as trustworthy as the code that makes them: the
// gateway measuring itself proves nothing against a gateway binary that
// lies. The component that measures (the `hsmgate attest measure` step, run from the
// image before the gateway binary is executed) must itself be measured by
// the platform, which is what the firmware event log and a Secure Boot PCR 7
// pin in the golden policy cover.
//
// # The platform (firmware) event log
//
// On hardware, Open reads the firmware's TCG event log (Config.
// PlatformEventLog, by default /sys/kernel/security/tpm0/binary_bios_
// measurements when a Device is used) in the TCG PC Client crypto-agile
// format (ParsePlatformEventLog). When there is one, quotes also cover PCRs
// 0–7, the raw log is included in the Document, and Verify replays its
// SHA-256 bank against them (ReplayPlatformEventLog; EV_NO_ACTION events
// are skipped, a StartupLocality event sets PCR 0's starting value).
// GoldenPolicy.PlatformPCRs can pin any of them.
//
// # Enrollment: credential activation
//
// A verifier enrolls a gateway once, knowing which EK to trust (from the EK
// certificate chain, or recorded at provisioning; swtpm in tests has no EK
// certificate, and the tests trust the EK public key directly):
//
//	gateway:  req := tpm.EnrollmentRequest()              // EK, AK public + AK name
//	verifier: ch, pending := MakeCredential(trustedEK, req) // pure Go (tpm2.CreateCredential)
//	gateway:  resp := tpm.ActivateCredential(ch)          // TPM2_ActivateCredential
//	verifier: enrollment := pending.Complete(resp)        // resp == secret?
//
// MakeCredential checks that the AK is a restricted, fixedTPM, TPM-generated
// signing key and binds the challenge to the Name it computes from the AK
// public area; the TPM releases the secret only if it holds the EK's private
// key and has that exact AK loaded. The PendingEnrollment carries the AK, so
// the Enrollment record can only name the AK that was activated, and Verify
// accepts quotes signed by that AK alone (Keylime's CVE-2022-1053 was a quote
// key not tied to the activated one).
//
// # Attestation documents
//
// Attest(nonce, tlsKeyHash, manifest) quotes the PCRs with the AK, with the
// quote's extraData (qualifying data)
//
//	SHA-256("hsmgate.attest.quote.v1\x00" || u32be(len(nonce)) || nonce ||
//	        u32be(len(tlsKeyHash)) || tlsKeyHash || SHA-256(manifest))
//
// (ExtraData): the caller's nonce (16–128 bytes) makes the quote fresh, the
// SHA-256 of the gateway's TLS public key (DER SubjectPublicKeyInfo) ties it
// to the TLS session the client is talking over (so a quote cannot be
// relayed by a man in the middle with another key), and the manifest's hash
// ties the manifest shipped beside it. The Document is JSON:
//
//	{
//	  "version": 1,
//	  "quote": "<base64 TPMS_ATTEST>",
//	  "signature": "<base64 TPMT_SIGNATURE>",
//	  "pcrs": {"12": "<base64>", "13": "<base64>", "15": "<base64>"},
//	  "eventLog": { …the EventLog above… },
//	  "platformEventLog": "<base64 TCG log, when present>",
//	  "manifest": "<base64 manifest bytes>",
//	  "tlsKeyHash": "<base64>",
//	  "nonce": "<base64>"
//	}
//
// # Verification
//
// Verify(doc, enrollment, nonce, tlsKeyHash, policy) verifies before it
// parses: only the quote bytes and the signature are looked at until the
// enrolled AK's signature checks out. Then, in order, each failure with its
// own error: quote type (ErrQuoteType), nonce (ErrNonce; a replayed old
// quote answers an old nonce), TLS key (ErrTLSKey), extraData (ErrExtraData;
// an edited nonce field or swapped manifest), PCR digest (ErrPCRDigest),
// event-log replay (ErrEventLog), golden policy (ErrGoldenPolicy). The
// golden policy lists approved image, binary and configuration digests (sets,
// so an update can approve old and new); an empty set approves nothing. It
// returns a BootState only when every check passes.
//
// # Sealing
//
// Seal(secret, pcrs) creates a keyed-hash object under the SRK whose only
// authorization is TPM2_PolicyPCR over the given SHA-256 PCR values
// (userWithAuth clear); the secret (at most 128 bytes) goes to the TPM
// encrypted in a session salted to the SRK, and Unseal gets it back the same
// way. Sealed holds the TPM's public and private blobs (the private part
// encrypted by the SRK) plus the PCR values, and is stored as JSON anywhere.
// Unseal on a boot whose PCRs differ fails with ErrPCRPolicy naming the PCRs
// and kinds that differ and what this boot measured for them.
//
// A planned image change is resealed ahead of the reboot: PredictPCRs(log,
// Event{Kind: KindImage, Name: …, Digest: newDigest}) replays this boot's log
// with the new image's measurement, Seal(secret, predicted) seals to that;
// the gateway keeps both blobs until it has booted the new image, where
// only the new one opens (and a tampered image opens neither). The name is
// part of the measurement: the prediction must use the name the new boot
// will measure. (A PolicyAuthorize scheme, where a quorum-held key signs
// approved PCR policies, would avoid resealing; it is not implemented.)
package attest
