// Package hsmpool serves cryptographic operations from a pool of PKCS#11
// slots, so that any number of goroutines can use any number of HSM tokens
// (of one or several vendors' modules) as one device that keeps working when
// a token fails.
//
// # Keys
//
// Every token of the pool holds the same domain key: an AES-256 token object
// that is sensitive and can never be extracted, created once by
// [Pool.ProvisionDomainKey] and identified by a key check value
// ([Pool.DomainKeyCheck]) that every slot must match. [Pool.GenerateKey]
// makes a key inside one slot and returns it wrapped under the domain key
// with CKM_AES_KEY_WRAP_PAD (RFC 5649) in a small [Blob]; the plaintext key
// never leaves the HSM. To use a key, any slot unwraps the blob into a
// session object and caches it, per slot, by (key id, version) in a bounded
// LRU ([Options.KeyCacheSize]). A slot reset drops the cache: handles are
// never trusted across resets.
//
// # Key import
//
// [Pool.ImportKey] brings in a key's owner's material (AWS KMS's
// GetParametersForImport and ImportKeyMaterial): it is wrapped to the
// public half of an RSA key pair of [UsageImportWrap], whose private half
// can only unwrap, unwrapped inside one slot, checked, wrapped under the
// domain key into an ordinary blob, and destroyed. The material is never
// in the pool's memory in plaintext; a check value computed in the HSM
// identifies it. Which [ImportAlgorithm]s a module can do is probed at
// start ([Capabilities].Import).
//
// # Sessions and routing
//
// Each slot keeps one persistent logged-in control session (it holds the
// login, owns the unwrapped key objects and runs probes) and up to
// [Options.SessionsPerSlot] operation sessions, each used by one goroutine
// at a time. An operation goes to the healthier of two randomly chosen
// healthy slots (fewer requests in flight: "power of two choices"). A caller
// that finds every session busy waits until its context deadline and then
// gets [ErrThrottled]; nothing queues forever.
//
// # Failures
//
// Every CK_RV is classified once, with the operation in mind:
//
//   - data errors (a bad tag, a bad signature, a wrong input) return the
//     session to the pool and are never retried;
//   - session errors evict the session and retry once on another slot;
//   - device errors and timeouts quarantine the slot, evict the session and
//     retry once on another slot; the slot's prober resets it (new sessions,
//     new login, empty key cache) and re-admits it when a probe — a cheap
//     call plus the domain key check value — passes;
//   - a refused PIN marks the slot failed. The pool never logs in with it
//     again, to avoid locking the token.
//
// A PKCS#11 call can't be cancelled. One that overruns its deadline
// ([Options.OpTimeout], or half the caller's remaining time when a retry is
// possible) is abandoned: the caller gets [ErrTimeout] and fails over, the
// session is never reused and is closed when the call finally returns.
//
// # Capabilities
//
// Mechanisms are detected per slot at start (with probes for what a
// mechanism list can't say, such as whether RSA-OAEP takes SHA-256 or
// whether Ed25519 keys can be wrapped), and the pool offers what every slot
// can do ([Pool.Capabilities]). What a module can't do is refused with
// [ErrUnsupported]: the pool never falls back to software with key material.
//
// # Testing
//
// With [Options.FaultInjection] every call passes through a [FaultInjector],
// and [Pool.InjectFault] makes a chosen slot return CKR_DEVICE_ERROR,
// CKR_SESSION_HANDLE_INVALID or CKR_SESSION_COUNT, or hang, from that moment.
package hsmpool
