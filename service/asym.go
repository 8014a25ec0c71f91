package service

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/service/policy"
)

// publicKey is an asymmetric key's public half, read from the token once per
// cached key and kept with it.
type publicKey struct {
	der []byte         // SubjectPublicKeyInfo, as GetPublicKey returns it
	rsa *rsa.PublicKey // for RSA keys, to encrypt
}

// publicKey returns k's public key, from the token on first use.
func (s *Service) publicKey(ctx context.Context, k *key) (*publicKey, error) {
	if p := k.pub.Load(); p != nil {
		return p, nil
	}
	der, err := s.token.PublicKey(ctx, k.ref(k.rec.Current().Number))
	if err != nil {
		return nil, fromToken(err, k.arn)
	}
	p := &publicKey{der: der}
	if k.spec().kind == kindRSA {
		pk, err := x509.ParsePKIXPublicKey(der)
		rp, ok := pk.(*rsa.PublicKey)
		if err != nil || !ok || rp.N.BitLen() != k.spec().bits {
			return nil, internal(fmt.Errorf("public key of %s: %T, %v", k.arn, pk, err))
		}
		p.rsa = rp
	}
	k.pub.Store(p)
	return p, nil
}

// oaepFits checks n bytes of plaintext against alg's limit for k.
func oaepFits(pub *publicKey, k *key, alg string, n int) error {
	h := encHashes[alg]
	if max := pub.rsa.Size() - 2*h.Size() - 2; n > max {
		return Errorf(ExcValidation, "Algorithm %s and key spec %s cannot encrypt data larger than %d bytes.", alg, k.rec.KeySpec, max)
	}
	return nil
}

// encryptOAEP encrypts plaintext with RSAES-OAEP under k's public key. The
// public-key operation runs here: it needs no secret, and SoftHSM2 has no
// OAEP with SHA-256.
func encryptOAEP(pub *publicKey, k *key, alg string, plaintext []byte) ([]byte, error) {
	if err := oaepFits(pub, k, alg, len(plaintext)); err != nil {
		return nil, err
	}
	ct, err := rsa.EncryptOAEP(encHashes[alg].New(), rand.Reader, pub.rsa, plaintext, nil)
	if err != nil {
		return nil, internal(fmt.Errorf("RSA-OAEP under %s: %w", k.arn, err))
	}
	return ct, nil
}

// noContext refuses an encryption context with an asymmetric key: such
// ciphertexts have nothing to bind it to.
func noContext(k *key, ec map[string]string, field string) error {
	if len(ec) > 0 && !k.symmetric() {
		return Errorf(ExcValidation, "%s is not supported with asymmetric KMS keys (%s).", field, k.rec.KeySpec)
	}
	return nil
}

// keyFor resolves a KeyId for a signing or MAC operation and checks the key's
// state, its usage and that its spec allows alg.
func (s *Service) keyFor(ctx context.Context, caller Caller, keyID, op, usage, alg string, c conditions) (*key, error) {
	k, err := s.resolve(ctx, caller, "keyId", keyID, idARNOrAlias, "kms:"+op, c)
	if err != nil {
		return nil, err
	}
	if err := usable(k); err != nil {
		return nil, err
	}
	if k.rec.KeyUsage != usage {
		return nil, Errorf(ExcInvalidKeyUsage, "%s key usage is %s which is not valid for %s.", k.arn, k.rec.KeyUsage, op)
	}
	_, sign, mac := k.algorithms()
	if !contains(sign, alg) && !contains(mac, alg) {
		return nil, Errorf(ExcInvalidKeyUsage, "Algorithm %s is incompatible with key spec %s.", alg, k.rec.KeySpec)
	}
	return k, nil
}

// GetPublicKey returns an asymmetric key's public key as DER
// SubjectPublicKeyInfo, with what it may be used for.
func (s *Service) GetPublicKey(ctx context.Context, caller Caller, in GetPublicKeyInput) (*GetPublicKeyOutput, error) {
	var v validation
	v.grantTokens(in.GrantTokens)
	if err := v.err(); err != nil {
		return nil, err
	}
	k, err := s.resolve(ctx, caller, "keyId", in.KeyId, idARNOrAlias, "kms:GetPublicKey", nil)
	if err != nil {
		return nil, err
	}
	if kind := k.spec().kind; kind != kindRSA && kind != kindEC {
		return nil, Errorf(ExcUnsupportedOp, "%s key spec %s has no public key.", k.arn, k.rec.KeySpec)
	}
	if err := usable(k); err != nil {
		return nil, err
	}
	pub, err := s.publicKey(ctx, k)
	if err != nil {
		return nil, err
	}
	enc, sign, _ := k.algorithms()
	return &GetPublicKeyOutput{
		KeyId: k.arn, PublicKey: pub.der, CustomerMasterKeySpec: k.rec.KeySpec, KeySpec: k.rec.KeySpec,
		KeyUsage: k.rec.KeyUsage, EncryptionAlgorithms: enc, SigningAlgorithms: sign,
	}, nil
}

func validateSigning(v *validation, msg []byte, msgType, alg *string, grants []string) {
	if msg == nil {
		v.null("message")
	}
	v.blobLength(msg, msg != nil, "message", 1, 4096)
	v.enum(msgType, "messageType", allMessageTypes)
	if alg == nil {
		v.null("signingAlgorithm")
	}
	v.enum(alg, "signingAlgorithm", allSignAlgs)
	v.grantTokens(grants)
}

// digestFor returns what the token signs for a message of msgType: its hash
// for RAW, the message itself for DIGEST, whose length must then match.
func digestFor(alg string, msgType *string, msg []byte) ([]byte, error) {
	sa := signAlgs[alg]
	switch {
	case msgType == nil || *msgType == "RAW":
		h := sa.hash.New()
		h.Write(msg)
		return h.Sum(nil), nil
	case *msgType == "DIGEST":
		if len(msg) != sa.hash.Size() {
			return nil, Errorf(ExcValidation, "Digest is invalid length for algorithm %s.", alg)
		}
		return msg, nil
	}
	return nil, Errorf(ExcValidation, "MessageType %s is valid only for ML_DSA keys.", *msgType)
}

// signingRequest checks the key of a Sign or Verify request and returns the
// algorithm and what the token signs or verifies.
func (s *Service) signingRequest(ctx context.Context, caller Caller, keyID, op, alg string, msgType *string, msg []byte) (*key, signAlg, []byte, error) {
	mt := "RAW"
	if msgType != nil {
		mt = *msgType
	}
	k, err := s.keyFor(ctx, caller, keyID, op, UsageSignVerify, alg, func(c policy.Context) {
		c.Set("kms:SigningAlgorithm", alg)
		c.Set("kms:MessageType", mt)
	})
	if err != nil {
		return nil, signAlg{}, nil, err
	}
	digest, err := digestFor(alg, msgType, msg)
	if err != nil {
		return nil, signAlg{}, nil, err
	}
	return k, signAlgs[alg], digest, nil
}

// Sign signs a message, or its digest, with an asymmetric key's private key
// in the token. ECDSA signatures are DER, as AWS returns them.
func (s *Service) Sign(ctx context.Context, caller Caller, in SignInput) (*SignOutput, error) {
	var v validation
	validateSigning(&v, in.Message, in.MessageType, in.SigningAlgorithm, in.GrantTokens)
	if err := v.err(); err != nil {
		return nil, err
	}
	alg := *in.SigningAlgorithm
	k, sa, digest, err := s.signingRequest(ctx, caller, in.KeyId, "Sign", alg, in.MessageType, in.Message)
	if err != nil {
		return nil, err
	}
	if in.DryRun {
		return nil, dryRun()
	}
	var sig []byte
	err = s.token.Do(ctx, func(sess *hsm.Session) error {
		var err error
		sig, err = sess.Sign(k.ref(k.rec.Current().Number), sa.scheme, sa.hash, digest)
		return err
	})
	if err != nil {
		return nil, fromToken(err, k.arn)
	}
	return &SignOutput{KeyId: k.arn, Signature: sig, SigningAlgorithm: alg}, nil
}

// Verify checks a signature with an asymmetric key's public key, in the
// token. A signature that does not verify is KMSInvalidSignatureException.
func (s *Service) Verify(ctx context.Context, caller Caller, in VerifyInput) (*VerifyOutput, error) {
	var v validation
	validateSigning(&v, in.Message, in.MessageType, in.SigningAlgorithm, in.GrantTokens)
	if in.Signature == nil {
		v.null("signature")
	}
	v.blobLength(in.Signature, in.Signature != nil, "signature", 1, 6144)
	if err := v.err(); err != nil {
		return nil, err
	}
	alg := *in.SigningAlgorithm
	k, sa, digest, err := s.signingRequest(ctx, caller, in.KeyId, "Verify", alg, in.MessageType, in.Message)
	if err != nil {
		return nil, err
	}
	if in.DryRun {
		return nil, dryRun()
	}
	err = s.token.Do(ctx, func(sess *hsm.Session) error {
		return sess.Verify(k.ref(k.rec.Current().Number), sa.scheme, sa.hash, digest, in.Signature)
	})
	if errors.Is(err, hsm.ErrInvalidSignature) {
		return nil, &Error{Code: ExcInvalidKMSSignature, Message: "", Cause: err}
	}
	if err != nil {
		return nil, fromToken(err, k.arn)
	}
	return &VerifyOutput{KeyId: k.arn, SignatureValid: true, SigningAlgorithm: alg}, nil
}

func macConditions(alg string) conditions {
	return func(c policy.Context) { c.Set("kms:MacAlgorithm", alg) }
}

func validateMac(v *validation, msg []byte, alg *string, grants []string) {
	if msg == nil {
		v.null("message")
	}
	v.blobLength(msg, msg != nil, "message", 1, 4096)
	if alg == nil {
		v.null("macAlgorithm")
	}
	v.enum(alg, "macAlgorithm", allMacAlgs)
	v.grantTokens(grants)
}

// GenerateMac computes an HMAC of a message in the token.
func (s *Service) GenerateMac(ctx context.Context, caller Caller, in GenerateMacInput) (*GenerateMacOutput, error) {
	var v validation
	validateMac(&v, in.Message, in.MacAlgorithm, in.GrantTokens)
	if err := v.err(); err != nil {
		return nil, err
	}
	alg := *in.MacAlgorithm
	k, err := s.keyFor(ctx, caller, in.KeyId, "GenerateMac", UsageMAC, alg, macConditions(alg))
	if err != nil {
		return nil, err
	}
	if in.DryRun {
		return nil, dryRun()
	}
	var mac []byte
	err = s.token.Do(ctx, func(sess *hsm.Session) error {
		var err error
		mac, err = sess.MAC(k.ref(k.rec.Current().Number), k.spec().macHash, in.Message)
		return err
	})
	if err != nil {
		return nil, fromToken(err, k.arn)
	}
	return &GenerateMacOutput{KeyId: k.arn, Mac: mac, MacAlgorithm: alg}, nil
}

// VerifyMac checks an HMAC in the token. A MAC that does not match is
// KMSInvalidMacException.
func (s *Service) VerifyMac(ctx context.Context, caller Caller, in VerifyMacInput) (*VerifyMacOutput, error) {
	var v validation
	validateMac(&v, in.Message, in.MacAlgorithm, in.GrantTokens)
	if in.Mac == nil {
		v.null("mac")
	}
	v.blobLength(in.Mac, in.Mac != nil, "mac", 1, 6144)
	if err := v.err(); err != nil {
		return nil, err
	}
	alg := *in.MacAlgorithm
	k, err := s.keyFor(ctx, caller, in.KeyId, "VerifyMac", UsageMAC, alg, macConditions(alg))
	if err != nil {
		return nil, err
	}
	if in.DryRun {
		return nil, dryRun()
	}
	err = s.token.Do(ctx, func(sess *hsm.Session) error {
		return sess.VerifyMAC(k.ref(k.rec.Current().Number), k.spec().macHash, in.Message, in.Mac)
	})
	if errors.Is(err, hsm.ErrInvalidSignature) {
		return nil, &Error{Code: ExcInvalidMac, Message: "", Cause: err}
	}
	if err != nil {
		return nil, fromToken(err, k.arn)
	}
	return &VerifyMacOutput{KeyId: k.arn, MacValid: true, MacAlgorithm: alg}, nil
}
