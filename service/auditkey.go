package service

import (
	"context"
	"crypto"
	"errors"
	"fmt"

	"github.com/hsmkms/hsmkms/hsm"
)

// auditRef names the token's audit signing key: an ECDSA P-256 pair that
// signs audit log checkpoints and nothing else. Its id is not a version-4
// UUID, so no KMS key can ever have it.
var auditRef = hsm.KeyRef{KeyID: [16]byte{'h', 's', 'm', 'k', 'm', 's', '-', 'a', 'u', 'd', 'i', 't', '-', 'k', 'e', 'y'}, Version: 1}

// AuditSigner signs audit checkpoints with the token-resident audit key.
type AuditSigner struct {
	token *hsm.Token
}

// Sign signs a SHA-256 digest; the signature is ASN.1 DER.
func (a AuditSigner) Sign(digest []byte) ([]byte, error) {
	var sig []byte
	err := a.token.Do(context.Background(), func(s *hsm.Session) error {
		var err error
		sig, err = s.Sign(auditRef, hsm.ECDSA, crypto.SHA256, digest)
		return err
	})
	return sig, err
}

// AuditKey returns the signer of audit checkpoints and its public key (SPKI
// DER), generating the key pair in the token the first time.
func (s *Service) AuditKey(ctx context.Context) (AuditSigner, []byte, error) {
	err := s.token.GenerateECKeyPair(ctx, auditRef, hsm.P256)
	if err != nil && !errors.Is(err, hsm.ErrExists) {
		return AuditSigner{}, nil, fmt.Errorf("audit key: %w", err)
	}
	pub, err := s.token.PublicKey(ctx, auditRef)
	if err != nil {
		return AuditSigner{}, nil, fmt.Errorf("audit key: %w", err)
	}
	return AuditSigner{token: s.token}, pub, nil
}
