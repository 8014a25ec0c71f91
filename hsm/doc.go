// Package hsm is hsmkms's PKCS#11 boundary: it loads a module, selects a token
// by label or serial, logs in once, keeps a bounded pool of sessions, generates
// and finds key objects, and runs every operation that touches key material
// inside the token: AES-GCM encrypt/decrypt, RSA/ECDSA signing and
// verification, RSA-OAEP decryption, HMAC, random generation.
//
// It is the only package of hsmkms that imports github.com/miekg/pkcs11 (and,
// later, crypto11). It must not import any other hsmkms package, echo or HTTP
// code. Key material never enters Go memory: keys are generated in the token as
// sensitive, non-extractable objects and are referred to by their handles.
// Unless the token stores new objects atomically (Config.AtomicObjectCreation),
// a key is generated as a session object and copied to the token, so that a
// process killed during creation leaves no half-made, unprotected key object;
// StrayObjects reports whatever an interrupted creation does leave, and
// KeyMaterials describes the key objects hsmkms made (read from their
// attributes only), so that keys whose records were lost can be adopted.
// Info describes the token and the session pool, for an operator.
//
// It recovers from token faults without a restart (docs/ARCHITECTURE.md, decision 6): a
// broken session is discarded; a lost login is restored; a failure that may
// mean the module lost the token's storage is confirmed by a probe and then
// repaired by re-initialising the module, which logs every Token on it in
// again; attempts that keep failing are spaced out. Every PKCS#11 call is
// bounded (Config.CallTimeout): Do's callback runs on a goroutine of its own,
// and when a call does not return in time its caller gets ErrTimeout, the
// token is treated as down until a probe is answered, and the goroutine and
// session stay with the call until it returns (bound.go). Sessions are
// evicted by error class: one that reported its session, login or device
// gone is closed, one that refused an input is kept. Token.Ready checks the
// token end to end, storage included, for readiness probes.
//
// For metrics, Config.Observer is told of every PKCS#11 operation and every
// wait for a session (observe.go), and SessionStats reads the pool without
// waiting for a recovery; hsm knows nothing of what consumes them.
//
// Errors are translated from CKR codes once, in errors.go, into the closed set
// of sentinels declared there (ErrNotFound, ErrInvalidCiphertext, …); callers
// use errors.Is and never look at CKR codes or error text.
package hsm
