// Package quorum implements hsmgate's M-of-N officer approvals: no single
// person, and no compromised gateway, may export a key, recover a domain
// key, activate firmware, change the quorum set or run a quorum-protected
// key operation.
//
// # Officers
//
// An officer key (OfficerKey, made with GenerateOfficerKey or `hsmofficer
// keygen`) is a hybrid signature key, Ed25519 (crypto/ed25519) plus
// ML-DSA-65 (circl sign/mldsa/mldsa65): a signature is the canonical pair
// of both over the same message, and both must verify. Each officer also
// has two HPKE (RFC 9180) key pairs, DHKEM(X25519) and X-Wing (X25519 +
// ML-KEM-768), for shares and exports encrypted to them. The public record,
// OfficerPublicKey, holds all four public keys and a name; its Fingerprint
// is SHA-256 of its canonical encoding, and approvals are counted by
// distinct fingerprint.
//
// Key files (EncryptKeyFile) are encrypted with XChaCha20-Poly1305 under a
// key from Argon2id (DefaultKDFParams: t=3, m=256 MiB, p=4, 16-byte salt),
// the header and public key being the associated data.
//
// # Encodings
//
// Every record is deterministic CBOR (RFC 8949 §4.2.1, core deterministic;
// github.com/fxamacker/cbor/v2 with CoreDetEncOptions) of a fixed array
// whose first element is a domain tag such as
// "hsmgate/quorum/proposal/v1". Decoders are strict: the input must be the
// canonical encoding of a valid value, checked by decoding and re-encoding
// (so no two byte strings mean the same proposal or approval), with
// duplicate map keys, indefinite lengths, tags, unknown fields and
// trailing bytes refused. Hashes are plain SHA-256 of the encodings; the
// embedded tags separate their domains. Files add a PEM armour
// (Armor/Dearmor) for transport only.
//
// # Proposals and approvals
//
// A Proposal carries its domain tag, the operation Kind and its Params
// (one fixed array per kind), cluster id, target gateway, the quorum set's
// epoch and hash, a random 16-byte request id, the requester and a validity
// window (NotBefore ≤ now < Expiry, at most MaxValidity). An Approval is a
// hybrid signature over "hsmgate/quorum/approval/v1" || 0x00 || the
// proposal bytes; a Rejection signs a reason. Verify (or a Tally) counts
// approvals by distinct fingerprint and refuses, each with its own error,
// unknown officers, duplicates, signatures over other bytes, approvals of
// another proposal, and proposals for another epoch, set, cluster or
// gateway, expired or not yet valid. An Executor consumes the request id in
// a durable Ledger (BoltLedger: bbolt, fsync on commit) before it runs the
// operation, so an operation runs at most once and a replay gets
// ErrReplay.
//
// # The quorum set
//
// A Set holds the officers, a threshold per kind and an epoch. Set changes
// need at least 2 and more than half of the officers; other kinds between
// 1 and all. ProposeSetChange / ApplySetChange change it: a set-change
// threshold of the current set approves, every key new to the next set
// proves possession (ProofOfPossession, a signature over the next set's
// hash), and the next epoch is the current one + 1, which voids every
// proposal made under the current set.
//
// # Secrets
//
// SplitSecret encrypts a secret under a key derived from a random
// Ristretto255 scalar, splits the scalar with Shamir's scheme (circl
// secretsharing) with the set's domain-recovery threshold and Feldman
// commitments, and HPKE-encrypts (X-Wing) each share to one officer.
// OfficerKey.DecryptShare and Combine recover it, naming any share that
// does not match the commitments. SealTo and OpenEnvelope / OfficerKey.Open
// are the HPKE envelope used for exports.
//
// See docs/quorum.md for the officer's guide and the threat model.
package quorum
