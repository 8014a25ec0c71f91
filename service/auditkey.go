package service

import (
	"context"
	"crypto"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hsmkms/hsmkms/audit"
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
	if err != nil {
		return nil, err // sig may still be written by a callback Do stopped waiting for
	}
	return sig, nil
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

// OpenAuditLog opens the audit log cfg describes with the token-resident
// audit key as its signer (cfg's Signer and PublicKey are set here), creating
// the log's directory, and writes the key's public key as PEM to
// publicKeyPath for `hsmkms audit verify`.
func (s *Service) OpenAuditLog(ctx context.Context, cfg audit.Config, publicKeyPath string) (*audit.Writer, error) {
	signer, pub, err := s.AuditKey(ctx)
	if err != nil {
		return nil, err
	}
	if cfg.File != "" {
		if err := os.MkdirAll(filepath.Dir(cfg.File), 0o700); err != nil {
			return nil, fmt.Errorf("audit log directory: %w", err)
		}
	}
	if err := os.WriteFile(publicKeyPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
		return nil, fmt.Errorf("audit public key: %w", err)
	}
	cfg.Signer, cfg.PublicKey = signer, pub
	w, err := audit.Open(cfg)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	return w, nil
}
