package service

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/hsmkms/hsmkms/blob"
	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/service/policy"
)

func checkDryRunModifiers(v *validation, mods []string) {
	for i := range mods {
		v.enum(&mods[i], fmt.Sprintf("dryRunModifiers.%d.member", i+1), []string{"IGNORE_CIPHERTEXT"})
	}
}

// encryptionKey resolves a KeyId for a cryptographic operation and checks
// the key's state and that it can run op with alg.
func (s *Service) encryptionKey(ctx context.Context, caller Caller, field, keyID, op string, alg *string, action string, c conditions) (*key, error) {
	k, err := s.resolve(ctx, caller, field, keyID, idARNOrAlias, action, c)
	if err != nil {
		return nil, err
	}
	if err := usable(k); err != nil {
		return nil, err
	}
	if err := forEncryption(k, op, alg); err != nil {
		return nil, err
	}
	return k, nil
}

// seal encrypts plaintext under k's current version in session sess, and
// returns the blob and the version used. The encryption is counted against
// the version's AES-GCM limit first (gcmbudget.go).
func seal(sess *hsm.Session, k *key, ec map[string]string, plaintext []byte) ([]byte, uint32, error) {
	if k.gcm == nil {
		return nil, 0, internal(fmt.Errorf("key %s has no AES-GCM counter", k.rec.ID))
	}
	if err := k.gcm.take(); err != nil {
		return nil, 0, err
	}
	h := blob.Header{Version: blob.Version1, KeyID: k.raw, KeyVersion: k.rec.Current().Number}
	if err := sess.IV(h.IV[:]); err != nil {
		return nil, 0, err
	}
	ct, err := sess.EncryptGCM(k.ref(h.KeyVersion), h.IV[:], h.AAD(ec), plaintext)
	if err != nil {
		return nil, 0, err
	}
	b := blob.Blob{Header: h, Ciphertext: ct}
	return b.Marshal(), h.KeyVersion, nil
}

// Encrypt encrypts up to 4096 bytes under a symmetric key, in the token.
func (s *Service) Encrypt(ctx context.Context, caller Caller, in EncryptInput) (*EncryptOutput, error) {
	var v validation
	if in.Plaintext == nil {
		v.null("plaintext")
	}
	v.blobLength(in.Plaintext, in.Plaintext != nil, "plaintext", 1, blob.MaxPlaintextLen)
	v.enum(in.EncryptionAlgorithm, "encryptionAlgorithm", allEncAlgs)
	v.grantTokens(in.GrantTokens)
	if err := v.err(); err != nil {
		return nil, err
	}
	k, err := s.encryptionKey(ctx, caller, "keyId", in.KeyId, "Encrypt", in.EncryptionAlgorithm,
		"kms:Encrypt", encryptionConditions(in.EncryptionContext, in.EncryptionAlgorithm))
	if err != nil {
		return nil, err
	}
	if !k.symmetric() {
		return s.encryptAsymmetric(ctx, k, in)
	}
	if in.DryRun {
		return nil, dryRun()
	}
	var out []byte
	err = s.token.Do(ctx, func(sess *hsm.Session) error {
		var err error
		out, _, err = seal(sess, k, in.EncryptionContext, in.Plaintext)
		return err
	})
	if err != nil {
		return nil, fromToken(err, k.arn)
	}
	return &EncryptOutput{CiphertextBlob: out, KeyId: k.arn, EncryptionAlgorithm: AlgSymmetric}, nil
}

// encryptAsymmetric is Encrypt under an RSA key: raw RSAES-OAEP output, no
// framing, as AWS returns it.
func (s *Service) encryptAsymmetric(ctx context.Context, k *key, in EncryptInput) (*EncryptOutput, error) {
	if err := noContext(k, in.EncryptionContext, "EncryptionContext"); err != nil {
		return nil, err
	}
	pub, err := s.publicKey(ctx, k)
	if err != nil {
		return nil, err
	}
	alg := *in.EncryptionAlgorithm // forEncryption let only RSAES_* through
	if err := oaepFits(pub, k, alg, len(in.Plaintext)); err != nil {
		return nil, err
	}
	if in.DryRun {
		return nil, dryRun()
	}
	ct, err := encryptOAEP(pub, k, alg, in.Plaintext)
	if err != nil {
		return nil, err
	}
	return &EncryptOutput{CiphertextBlob: ct, KeyId: k.arn, EncryptionAlgorithm: alg}, nil
}

// opened is a parsed blob with the key it names, checked against the
// request's KeyId and algorithm and the key's state.
type opened struct {
	b *blob.Blob
	k *key
}

// openBlob parses a symmetric ciphertext blob and finds and checks its key.
// want, if set (the request named a key in keyField), must be the blob's key
// (else IncorrectKeyException). Without it, a ciphertext that names no key of
// ours is InvalidCiphertextException — or, when the request says it was made
// under an RSA key, ValidationException: such ciphertexts need keyField.
//
// The blob's key is authorized for action (with condition keys c) unless
// want, which the caller authorized, is that key.
func (s *Service) openBlob(ctx context.Context, caller Caller, op string, ct []byte, keyField string, want *key, alg *string, action string, c conditions) (*opened, error) {
	b, perr := blob.Parse(ct)
	var k *key
	var err error
	if perr == nil {
		if want != nil && want.rec.ID != blob.FormatKeyID(b.KeyID) {
			return nil, incorrectKey()
		}
		k, err = s.cached(ctx, blob.FormatKeyID(b.KeyID))
	} else {
		err = perr
	}
	if err != nil {
		if want == nil && asymmetricAlg(alg) {
			return nil, Errorf(ExcValidation, "%s is required to decrypt a ciphertext made under an asymmetric KMS key.", keyField)
		}
		// A blob naming no key we know cannot be told apart from a forged one.
		return nil, invalidCiphertext(err)
	}
	id := k.rec.ID
	if want == nil {
		if err := s.authorize(ctx, caller, k, action, "", c); err != nil {
			return nil, err
		}
	}
	if err := usable(k); err != nil {
		return nil, err
	}
	if err := forEncryption(k, op, alg); err != nil {
		return nil, err
	}
	if !k.rec.HasVersion(b.KeyVersion) {
		return nil, invalidCiphertext(fmt.Errorf("blob names version %d of %s, which it does not have", b.KeyVersion, id))
	}
	return &opened{b: b, k: k}, nil
}

func (o *opened) decrypt(sess *hsm.Session, ec map[string]string) ([]byte, error) {
	return sess.DecryptGCM(o.k.ref(o.b.KeyVersion), o.b.IV[:], o.b.AAD(ec), o.b.Ciphertext)
}

// ignoreCiphertext reports a DryRun with the IGNORE_CIPHERTEXT modifier: the
// caller checks its access to a key without having a valid blob at hand.
func ignoreCiphertext(dry bool, mods []string) bool {
	if !dry {
		return false
	}
	for _, m := range mods {
		if m == "IGNORE_CIPHERTEXT" {
			return true
		}
	}
	return false
}

// dryRunKey finishes a DryRun that ignores the ciphertext: the named key
// must exist, be usable and fit the operation.
func (s *Service) dryRunKey(ctx context.Context, caller Caller, op, field string, keyID *string, alg *string, action string, c conditions) error {
	if keyID == nil {
		return Errorf(ExcValidation, "%s is required when DryRunModifiers includes IGNORE_CIPHERTEXT.", field)
	}
	if _, err := s.encryptionKey(ctx, caller, field, *keyID, op, alg, action, c); err != nil {
		return err
	}
	return dryRun()
}

func validateDecrypt(v *validation, ct []byte, field string, alg *string, algField string, grants []string, mods []string) {
	if ct == nil && !ignoreCiphertext(true, mods) {
		v.null(field)
	}
	v.blobLength(ct, ct != nil, field, 1, 6144)
	v.enum(alg, algField, allEncAlgs)
	v.grantTokens(grants)
	checkDryRunModifiers(v, mods)
}

// asymmetricAlg reports an RSA encryption algorithm.
func asymmetricAlg(alg *string) bool { return alg != nil && *alg != AlgSymmetric }

// Decrypt decrypts a ciphertext made by Encrypt, GenerateDataKey or
// ReEncrypt. A symmetric blob names its key; a KeyId, if given, must match
// it. An RSA ciphertext needs the KeyId and its EncryptionAlgorithm.
func (s *Service) Decrypt(ctx context.Context, caller Caller, in DecryptInput) (*DecryptOutput, error) {
	var v validation
	validateDecrypt(&v, in.CiphertextBlob, "ciphertextBlob", in.EncryptionAlgorithm, "encryptionAlgorithm", in.GrantTokens, in.DryRunModifiers)
	if in.KeyId != nil {
		v.length(in.KeyId, "keyId", 1, 2048)
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	if in.Recipient != nil {
		return nil, Errorf(ExcUnsupportedOp, "Recipient (Nitro Enclaves attestation) is not supported by this key service.")
	}
	if ignoreCiphertext(in.DryRun, in.DryRunModifiers) {
		return nil, s.dryRunKey(ctx, caller, "Decrypt", "KeyId", in.KeyId, in.EncryptionAlgorithm,
			"kms:Decrypt", encryptionConditions(in.EncryptionContext, in.EncryptionAlgorithm))
	}
	var want *key
	if in.KeyId != nil {
		var err error
		if want, err = s.resolve(ctx, caller, "keyId", *in.KeyId, idARNOrAlias, "kms:Decrypt",
			encryptionConditions(in.EncryptionContext, in.EncryptionAlgorithm)); err != nil {
			return nil, err
		}
		if !want.symmetric() {
			return s.decryptAsymmetric(ctx, want, in)
		}
	}
	o, err := s.openBlob(ctx, caller, "Decrypt", in.CiphertextBlob, "KeyId", want, in.EncryptionAlgorithm,
		"kms:Decrypt", encryptionConditions(in.EncryptionContext, in.EncryptionAlgorithm))
	if err != nil {
		return nil, err
	}
	if in.DryRun {
		return nil, dryRun()
	}
	var pt []byte
	err = s.token.Do(ctx, func(sess *hsm.Session) error {
		var err error
		pt, err = o.decrypt(sess, in.EncryptionContext)
		return err
	})
	if err != nil {
		return nil, fromToken(err, o.k.arn)
	}
	return &DecryptOutput{KeyId: o.k.arn, Plaintext: pt, EncryptionAlgorithm: AlgSymmetric,
		KeyMaterialId: o.k.materialIDs[o.b.KeyVersion]}, nil
}

// checkAsymmetricSource checks that k can decrypt an RSA ciphertext with alg.
func checkAsymmetricSource(k *key, op string, alg *string, ec map[string]string, ecField string) error {
	if err := usable(k); err != nil {
		return err
	}
	if err := forEncryption(k, op, alg); err != nil {
		return err
	}
	return noContext(k, ec, ecField)
}

// decryptAsymmetric is Decrypt of a raw RSA-OAEP ciphertext, in the token.
func (s *Service) decryptAsymmetric(ctx context.Context, k *key, in DecryptInput) (*DecryptOutput, error) {
	if err := checkAsymmetricSource(k, "Decrypt", in.EncryptionAlgorithm, in.EncryptionContext, "EncryptionContext"); err != nil {
		return nil, err
	}
	if in.DryRun {
		return nil, dryRun()
	}
	alg := *in.EncryptionAlgorithm
	var pt []byte
	err := s.token.Do(ctx, func(sess *hsm.Session) error {
		var err error
		pt, err = sess.DecryptOAEP(k.ref(k.rec.Current().Number), encHashes[alg], in.CiphertextBlob)
		return err
	})
	if err != nil {
		return nil, fromToken(err, k.arn)
	}
	return &DecryptOutput{KeyId: k.arn, Plaintext: pt, EncryptionAlgorithm: alg}, nil
}

// reEncryptConditions returns the condition keys of ReEncrypt's two
// permissions, kms:ReEncryptFrom (source context and algorithm) and
// kms:ReEncryptTo (destination context and algorithm), both with
// kms:ReEncryptOnSameKey. The keys are only looked up here, for that flag;
// they are resolved and authorized in the request's order afterwards.
func (s *Service) reEncryptConditions(ctx context.Context, caller Caller, in ReEncryptInput) (from, to conditions) {
	srcID := ""
	if in.SourceKeyId != nil {
		if k, err := s.lookup(ctx, caller, "sourceKeyId", *in.SourceKeyId, idARNOrAlias, "kms:ReEncryptFrom"); err == nil {
			srcID = k.rec.ID
		}
	} else if b, err := blob.Parse(in.CiphertextBlob); err == nil {
		srcID = blob.FormatKeyID(b.KeyID)
	}
	same := false
	if k, err := s.lookup(ctx, caller, "destinationKeyId", in.DestinationKeyId, idARNOrAlias, "kms:ReEncryptTo"); err == nil {
		same = srcID == k.rec.ID
	}
	onSame := func(c policy.Context) { c.Set("kms:ReEncryptOnSameKey", strconv.FormatBool(same)) }
	from = encryptionConditions(in.SourceEncryptionContext, in.SourceEncryptionAlgorithm).and(onSame)
	to = encryptionConditions(in.DestinationEncryptionContext, in.DestinationEncryptionAlgorithm).and(onSame)
	return from, to
}

// ReEncrypt decrypts a ciphertext under its key and encrypts the plaintext
// under the destination key, on one token session: symmetric and RSA
// decryption run in the token, as does symmetric encryption; encryption to an
// RSA key uses its public key. The plaintext exists in one Go buffer between
// the two steps and is zeroed at once; it is never returned.
func (s *Service) ReEncrypt(ctx context.Context, caller Caller, in ReEncryptInput) (*ReEncryptOutput, error) {
	var v validation
	validateDecrypt(&v, in.CiphertextBlob, "ciphertextBlob", in.SourceEncryptionAlgorithm, "sourceEncryptionAlgorithm", in.GrantTokens, in.DryRunModifiers)
	v.enum(in.DestinationEncryptionAlgorithm, "destinationEncryptionAlgorithm", allEncAlgs)
	if in.SourceKeyId != nil {
		v.length(in.SourceKeyId, "sourceKeyId", 1, 2048)
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	fromConds, toConds := s.reEncryptConditions(ctx, caller, in)
	if ignoreCiphertext(in.DryRun, in.DryRunModifiers) {
		if err := s.dryRunKey(ctx, caller, "ReEncrypt", "SourceKeyId", in.SourceKeyId, in.SourceEncryptionAlgorithm,
			"kms:ReEncryptFrom", fromConds); !isDryRun(err) {
			return nil, err
		}
		if _, err := s.encryptionKey(ctx, caller, "destinationKeyId", in.DestinationKeyId, "ReEncrypt", in.DestinationEncryptionAlgorithm,
			"kms:ReEncryptTo", toConds); err != nil {
			return nil, err
		}
		return nil, dryRun()
	}
	var src *key
	var o *opened
	if in.SourceKeyId != nil {
		var err error
		if src, err = s.resolve(ctx, caller, "sourceKeyId", *in.SourceKeyId, idARNOrAlias, "kms:ReEncryptFrom", fromConds); err != nil {
			return nil, err
		}
	}
	if src != nil && !src.symmetric() {
		if err := checkAsymmetricSource(src, "ReEncrypt", in.SourceEncryptionAlgorithm, in.SourceEncryptionContext, "SourceEncryptionContext"); err != nil {
			return nil, err
		}
	} else {
		var err error
		if o, err = s.openBlob(ctx, caller, "ReEncrypt", in.CiphertextBlob, "SourceKeyId", src, in.SourceEncryptionAlgorithm,
			"kms:ReEncryptFrom", fromConds); err != nil {
			return nil, err
		}
		src = o.k
	}
	dst, err := s.encryptionKey(ctx, caller, "destinationKeyId", in.DestinationKeyId, "ReEncrypt", in.DestinationEncryptionAlgorithm,
		"kms:ReEncryptTo", toConds)
	if err != nil {
		return nil, err
	}
	if err := noContext(dst, in.DestinationEncryptionContext, "DestinationEncryptionContext"); err != nil {
		return nil, err
	}
	var dstPub *publicKey
	if !dst.symmetric() {
		if dstPub, err = s.publicKey(ctx, dst); err != nil {
			return nil, err
		}
	}
	if in.DryRun {
		return nil, dryRun()
	}
	srcAlg, dstAlg := AlgSymmetric, AlgSymmetric
	if in.SourceEncryptionAlgorithm != nil {
		srcAlg = *in.SourceEncryptionAlgorithm
	}
	if in.DestinationEncryptionAlgorithm != nil {
		dstAlg = *in.DestinationEncryptionAlgorithm
	}
	var out []byte
	var dstVersion uint32
	var failedKey string
	err = s.token.Do(ctx, func(sess *hsm.Session) error {
		failedKey = src.arn
		var pt []byte
		var err error
		if o != nil {
			pt, err = o.decrypt(sess, in.SourceEncryptionContext)
		} else {
			pt, err = sess.DecryptOAEP(src.ref(src.rec.Current().Number), encHashes[srcAlg], in.CiphertextBlob)
		}
		if err != nil {
			return err
		}
		defer clear(pt)
		failedKey = dst.arn
		if dstPub != nil {
			out, err = encryptOAEP(dstPub, dst, dstAlg, pt)
			return err
		}
		out, dstVersion, err = seal(sess, dst, in.DestinationEncryptionContext, pt)
		return err
	})
	var se *Error
	if errors.As(err, &se) {
		return nil, se
	}
	if errors.Is(err, hsm.ErrTimeout) {
		// The callback may still run (hsm.Token.Do): failedKey is its.
		return nil, fromToken(err, "")
	}
	if err != nil {
		return nil, fromToken(err, failedKey)
	}
	res := &ReEncryptOutput{
		CiphertextBlob: out, SourceKeyId: src.arn, KeyId: dst.arn,
		SourceEncryptionAlgorithm: srcAlg, DestinationEncryptionAlgorithm: dstAlg,
	}
	if o != nil {
		res.SourceKeyMaterialId = src.materialIDs[o.b.KeyVersion]
	}
	if dstPub == nil {
		res.DestinationKeyMaterialId = dst.materialIDs[dstVersion]
	}
	return res, nil
}

// GenerateDataKey returns a data key from the token's RNG, in plaintext and
// encrypted under the KMS key. withPlaintext false implements
// GenerateDataKeyWithoutPlaintext: the plaintext is zeroed and left out.
func (s *Service) GenerateDataKey(ctx context.Context, caller Caller, in GenerateDataKeyInput, withPlaintext bool) (*GenerateDataKeyOutput, error) {
	op := "GenerateDataKey"
	if !withPlaintext {
		op = "GenerateDataKeyWithoutPlaintext"
	}
	var v validation
	v.intRange(in.NumberOfBytes, "numberOfBytes", 1, 1024)
	v.enum(in.KeySpec, "keySpec", dataKeySpecs)
	v.grantTokens(in.GrantTokens)
	if err := v.err(); err != nil {
		return nil, err
	}
	if (in.NumberOfBytes == nil) == (in.KeySpec == nil) {
		return nil, Errorf(ExcValidation, "Please specify either number of bytes or key spec.")
	}
	if in.Recipient != nil {
		return nil, Errorf(ExcUnsupportedOp, "Recipient (Nitro Enclaves attestation) is not supported by this key service.")
	}
	n := 32
	switch {
	case in.NumberOfBytes != nil:
		n = int(*in.NumberOfBytes)
	case *in.KeySpec == "AES_128":
		n = 16
	}
	k, err := s.encryptionKey(ctx, caller, "keyId", in.KeyId, op, nil, "kms:"+op, encryptionConditions(in.EncryptionContext, nil))
	if err != nil {
		return nil, err
	}
	if in.DryRun {
		return nil, dryRun()
	}
	dk := make([]byte, n)
	var ct []byte
	var version uint32
	err = s.token.Do(ctx, func(sess *hsm.Session) error {
		err := sess.Random(dk)
		if err == nil {
			ct, version, err = seal(sess, k, in.EncryptionContext, dk)
		}
		if err != nil {
			// Here, not after Do: a Do that stopped waiting (ErrTimeout)
			// leaves dk to this callback, which may still be running.
			clear(dk)
		}
		return err
	})
	if err != nil {
		return nil, fromToken(err, k.arn)
	}
	out := &GenerateDataKeyOutput{CiphertextBlob: ct, KeyId: k.arn, KeyMaterialId: k.materialIDs[version]}
	if withPlaintext {
		out.Plaintext = dk
	} else {
		clear(dk)
	}
	return out, nil
}

// GenerateRandom returns random bytes from the token's RNG.
func (s *Service) GenerateRandom(ctx context.Context, caller Caller, in GenerateRandomInput) (*GenerateRandomOutput, error) {
	if in.NumberOfBytes == nil {
		return nil, Errorf(ExcValidation, "NumberOfBytes is required.")
	}
	var v validation
	v.intRange(in.NumberOfBytes, "numberOfBytes", 1, 1024)
	v.length(in.CustomKeyStoreId, "customKeyStoreId", 1, 64)
	if err := v.err(); err != nil {
		return nil, err
	}
	if in.CustomKeyStoreId != nil {
		return nil, Errorf(ExcCustomKeyStoreNF, "Custom key store '%s' does not exist.", *in.CustomKeyStoreId)
	}
	if in.Recipient != nil {
		return nil, Errorf(ExcUnsupportedOp, "Recipient (Nitro Enclaves attestation) is not supported by this key service.")
	}
	if err := s.authorizeAccount(caller, "kms:GenerateRandom"); err != nil {
		return nil, err
	}
	b, err := s.token.Random(ctx, int(*in.NumberOfBytes))
	if err != nil {
		return nil, fromTokenNoKey(err)
	}
	return &GenerateRandomOutput{Plaintext: b}, nil
}
