// Package service implements AWS KMS semantics on top of a PKCS#11 token:
// keys and key states, the cryptographic operations (Encrypt, Decrypt,
// ReEncrypt, GenerateDataKey, …) and the typed KMS errors they return.
//
// It is independent of HTTP: service/api decodes requests into the Input
// types here (whose JSON field names are AWS's) and encodes the Output types.
// It imports hsm, blob and service/store, never echo or service/api.
//
// Every AES-GCM encryption is counted per key version against the 2^32 that
// random IVs allow, with counts reserved in the store in blocks so that a
// crash never loses one (gcmbudget.go); Stats reports them, and the key
// counts, for metrics.
//
// Beyond the KMS operations: reconciliation of the store with the token,
// and adoption (Adopt) of the key versions that a store restored from an
// older backup does not name.
//
// Plaintext handled here (Encrypt input, Decrypt output, data keys, the
// plaintext between the two halves of ReEncrypt) is never logged, never put
// in an error, and is zeroed as soon as it is no longer needed; outputs that
// carry plaintext have a Zero method the caller runs after writing them.
package service
