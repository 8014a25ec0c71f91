package service

import "github.com/hsmkms/hsmkms/hsm"

// readinessRef names the token's readiness canary: an AES key that each
// readiness check encrypts and decrypts with, as a token object, so that the
// check fails when the token's storage is gone (hsm.Token.Ready). Its id is
// not a version-4 UUID, so no KMS key can ever have it.
var readinessRef = hsm.KeyRef{KeyID: [16]byte{'h', 's', 'm', 'k', 'm', 's', '-', 'r', 'e', 'a', 'd', 'i', 'n', 'e', 's', 's'}, Version: 1}
