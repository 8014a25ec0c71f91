package test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/asn1"
	"encoding/base64"
	"fmt"
	"math/big"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	k1ecdsa "github.com/decred/dcrd/dcrec/secp256k1/v4/ecdsa"
)

// localVerifier checks a KMS signature over a digest with the key's public
// half, outside the service.
type localVerifier func(h crypto.Hash, digest, sig []byte) error

// errBadSignature is what a localVerifier returns for a signature that does
// not verify.
type errBadSignature struct{ what string }

func (e errBadSignature) Error() string { return e.what + " signature does not verify" }

// verifierFor returns a local verifier for a key of spec whose SPKI is der,
// for signing algorithm alg.
func verifierFor(t testing.TB, spec types.KeySpec, alg types.SigningAlgorithmSpec, der []byte) localVerifier {
	t.Helper()
	if bits := rsaBits(string(spec)); bits != 0 {
		pub := rsaPublicKey(t, der, bits)
		if strings.HasPrefix(string(alg), "RSASSA_PSS_") {
			return func(h crypto.Hash, digest, sig []byte) error {
				if len(sig) != bits/8 {
					return errBadSignature{"PSS signature of the wrong length:"}
				}
				return rsa.VerifyPSS(pub, h, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: h})
			}
		}
		return func(h crypto.Hash, digest, sig []byte) error {
			if len(sig) != bits/8 {
				return errBadSignature{"PKCS #1 v1.5 signature of the wrong length:"}
			}
			return rsa.VerifyPKCS1v15(pub, h, digest, sig)
		}
	}
	if curve := curveOf(string(spec)); curve != nil {
		pub := ecdsaPublicKey(t, der, curve)
		return func(_ crypto.Hash, digest, sig []byte) error {
			if err := canonicalDER(sig); err != nil {
				return err
			}
			if !ecdsa.VerifyASN1(pub, digest, sig) {
				return errBadSignature{"ECDSA (DER)"}
			}
			return nil
		}
	}
	pub := k1PublicKey(t, der)
	return func(_ crypto.Hash, digest, sig []byte) error {
		if err := canonicalDER(sig); err != nil {
			return err
		}
		s, err := k1ecdsa.ParseDERSignature(sig)
		if err != nil {
			return err
		}
		if !s.Verify(digest, pub) {
			return errBadSignature{"secp256k1 ECDSA"}
		}
		return nil
	}
}

// canonicalDER checks that an ECDSA signature is exactly the DER of
// SEQUENCE { r INTEGER, s INTEGER } with r and s positive.
func canonicalDER(sig []byte) error {
	var v struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(sig, &v)
	if err != nil {
		return fmt.Errorf("ECDSA signature is not DER: %w", err)
	}
	if len(rest) != 0 {
		return fmt.Errorf("%d bytes after the ECDSA signature", len(rest))
	}
	if v.R.Sign() <= 0 || v.S.Sign() <= 0 {
		return fmt.Errorf("ECDSA signature r=%v s=%v", v.R, v.S)
	}
	if again, err := asn1.Marshal(v); err != nil || !bytes.Equal(again, sig) {
		return fmt.Errorf("ECDSA signature is not canonical DER: %x", sig)
	}
	return nil
}

// signPairs are every key spec and signing algorithm AWS allows together.
func signPairs() []struct {
	spec types.KeySpec
	alg  types.SigningAlgorithmSpec
} {
	var out []struct {
		spec types.KeySpec
		alg  types.SigningAlgorithmSpec
	}
	for _, spec := range []types.KeySpec{types.KeySpecRsa2048, types.KeySpecRsa3072, types.KeySpecRsa4096} {
		for _, alg := range rsaSignAlgs {
			out = append(out, struct {
				spec types.KeySpec
				alg  types.SigningAlgorithmSpec
			}{spec, alg})
		}
	}
	out = append(out, []struct {
		spec types.KeySpec
		alg  types.SigningAlgorithmSpec
	}{
		{types.KeySpecEccNistP256, types.SigningAlgorithmSpecEcdsaSha256},
		{types.KeySpecEccNistP384, types.SigningAlgorithmSpecEcdsaSha384},
		{types.KeySpecEccNistP521, types.SigningAlgorithmSpecEcdsaSha512},
		{types.KeySpecEccSecgP256k1, types.SigningAlgorithmSpecEcdsaSha256},
	}...)
	return out
}

// TestSignVerify signs with every allowed key spec and algorithm, RAW and
// DIGEST, checks each signature outside the service and through Verify, and
// checks the refusals.
func TestSignVerify(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	sv := types.KeyUsageTypeSignVerify
	keys := createKeys(t, c,
		keyReq{"RSA_2048", types.KeySpecRsa2048, sv},
		keyReq{"RSA_3072", types.KeySpecRsa3072, sv},
		keyReq{"RSA_4096", types.KeySpecRsa4096, sv},
		keyReq{"ECC_NIST_P256", types.KeySpecEccNistP256, sv},
		keyReq{"ECC_NIST_P384", types.KeySpecEccNistP384, sv},
		keyReq{"ECC_NIST_P521", types.KeySpecEccNistP521, sv},
		keyReq{"ECC_SECG_P256K1", types.KeySpecEccSecgP256k1, sv},
		keyReq{"rsa-enc", types.KeySpecRsa2048, types.KeyUsageTypeEncryptDecrypt},
		keyReq{"sym", types.KeySpecSymmetricDefault, types.KeyUsageTypeEncryptDecrypt},
		keyReq{"hmac", types.KeySpecHmac256, types.KeyUsageTypeGenerateVerifyMac},
	)
	spki := map[types.KeySpec][]byte{}
	for _, p := range signPairs() {
		if spki[p.spec] == nil {
			spki[p.spec] = getPublicKey(t, c, keys[string(p.spec)].ID).PublicKey
		}
	}
	raw, dig := types.MessageTypeRaw, types.MessageTypeDigest

	t.Run("pairs", func(t *testing.T) {
		for _, p := range signPairs() {
			k := keys[string(p.spec)]
			verify := verifierFor(t, p.spec, p.alg, spki[p.spec])
			h := signHash(p.alg)
			t.Run(string(p.spec)+"/"+string(p.alg), func(t *testing.T) {
				t.Parallel()
				msg := randomBytes(t, 200)
				d := digest(h, msg)
				sign := func(t *testing.T, m []byte, mt types.MessageType) []byte {
					t.Helper()
					out, err := c.Sign(ctxT(t), &kms.SignInput{KeyId: aws.String(k.ID), Message: m, MessageType: mt, SigningAlgorithm: p.alg})
					if err != nil {
						t.Fatalf("Sign %q: %v", mt, err)
					}
					if got := aws.ToString(out.KeyId); got != k.ARN {
						t.Errorf("Sign KeyId %q, want %q", got, k.ARN)
					}
					if out.SigningAlgorithm != p.alg {
						t.Errorf("Sign SigningAlgorithm %q, want %q", out.SigningAlgorithm, p.alg)
					}
					if err := verify(h, d, out.Signature); err != nil {
						t.Errorf("signature (MessageType %q) does not verify outside the service: %v", mt, err)
					}
					return out.Signature
				}
				verifyKMS := func(t *testing.T, m []byte, mt types.MessageType, sig []byte) error {
					t.Helper()
					out, err := c.Verify(ctxT(t), &kms.VerifyInput{KeyId: aws.String(k.ID), Message: m, MessageType: mt, Signature: sig, SigningAlgorithm: p.alg})
					if err != nil {
						return err
					}
					if !out.SignatureValid {
						t.Errorf("Verify succeeded with SignatureValid false")
					}
					if got := aws.ToString(out.KeyId); got != k.ARN {
						t.Errorf("Verify KeyId %q, want %q", got, k.ARN)
					}
					if out.SigningAlgorithm != p.alg {
						t.Errorf("Verify SigningAlgorithm %q, want %q", out.SigningAlgorithm, p.alg)
					}
					return nil
				}

				sigs := map[string][]byte{
					"MessageType omitted": sign(t, msg, ""),
					"RAW":                 sign(t, msg, raw),
					"DIGEST":              sign(t, d, dig),
				}
				for name, sig := range sigs {
					// Verify as RAW over the message and as DIGEST over its hash,
					// whichever way the signature was made.
					if err := verifyKMS(t, msg, raw, sig); err != nil {
						t.Errorf("%s signature: Verify RAW: %v", name, err)
					}
					if err := verifyKMS(t, msg, "", sig); err != nil {
						t.Errorf("%s signature: Verify, MessageType omitted: %v", name, err)
					}
					if err := verifyKMS(t, d, dig, sig); err != nil {
						t.Errorf("%s signature: Verify DIGEST: %v", name, err)
					}
				}
				sig := sigs["RAW"]
				tampered := map[string]struct {
					m   []byte
					mt  types.MessageType
					sig []byte
				}{
					"message bit flipped":          {flip(msg, 7), raw, sig},
					"message one byte longer":      {append(msg, 0), raw, sig},
					"digest bit flipped":           {flip(d, 0), dig, sig},
					"signature last byte flipped":  {msg, raw, flip(sig, len(sig)-1)},
					"signature first half flipped": {msg, raw, flip(sig, len(sig)/2)},
					"signature one byte short":     {msg, raw, sig[:len(sig)-1]},
				}
				for name, tc := range tampered {
					err := verifyKMS(t, tc.m, tc.mt, tc.sig)
					if err == nil {
						t.Errorf("%s: Verify succeeded", name)
						continue
					}
					wantKMSError(t, err, "KMSInvalidSignatureException")
				}
			})
		}
	})

	t.Run("signature made outside", func(t *testing.T) {
		t.Parallel()
		msg := []byte("signed with a key the service does not hold")
		d := sha256Sum(msg)
		rk, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		pkcs1, err := rsa.SignPKCS1v15(rand.Reader, rk, crypto.SHA256, d)
		if err != nil {
			t.Fatal(err)
		}
		pss, err := rsa.SignPSS(rand.Reader, rk, crypto.SHA256, d, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		if err != nil {
			t.Fatal(err)
		}
		ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		p256, err := ecdsa.SignASN1(rand.Reader, ek, d)
		if err != nil {
			t.Fatal(err)
		}
		kk, err := secp256k1.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		k1 := k1ecdsa.Sign(kk, d).Serialize()
		cases := []struct {
			name string
			key  string
			alg  types.SigningAlgorithmSpec
			sig  []byte
		}{
			{"RSA PKCS #1 v1.5", "RSA_2048", types.SigningAlgorithmSpecRsassaPkcs1V15Sha256, pkcs1},
			{"RSA PSS", "RSA_2048", types.SigningAlgorithmSpecRsassaPssSha256, pss},
			{"ECDSA P-256", "ECC_NIST_P256", types.SigningAlgorithmSpecEcdsaSha256, p256},
			{"ECDSA secp256k1", "ECC_SECG_P256K1", types.SigningAlgorithmSpecEcdsaSha256, k1},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				_, err := c.Verify(ctxT(t), &kms.VerifyInput{KeyId: aws.String(keys[tc.key].ID), Message: msg,
					Signature: tc.sig, SigningAlgorithm: tc.alg})
				wantKMSError(t, err, "KMSInvalidSignatureException")
			})
		}
		// The same signatures are good ones: the refusal is for the key.
		if err := rsa.VerifyPKCS1v15(&rk.PublicKey, crypto.SHA256, d, pkcs1); err != nil {
			t.Errorf("local PKCS #1 v1.5 signature: %v", err)
		}
		if !ecdsa.VerifyASN1(&ek.PublicKey, d, p256) {
			t.Error("local P-256 signature does not verify")
		}
	})

	t.Run("malformed ECDSA signature", func(t *testing.T) {
		t.Parallel()
		k := keys["ECC_NIST_P256"]
		msg := []byte("malformed")
		out, err := c.Sign(ctxT(t), &kms.SignInput{KeyId: aws.String(k.ID), Message: msg, SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256})
		if err != nil {
			t.Fatal(err)
		}
		bad := map[string][]byte{
			"SEQUENCE tag changed": flip(out.Signature, 0),
			"truncated":            out.Signature[:len(out.Signature)-1],
			"64 raw bytes":         make([]byte, 64),
		}
		for name, sig := range bad {
			_, err := c.Verify(ctxT(t), &kms.VerifyInput{KeyId: aws.String(k.ID), Message: msg, Signature: sig,
				SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256})
			if err == nil {
				t.Errorf("%s: Verify succeeded", name)
				continue
			}
			wantKMSError(t, err, "KMSInvalidSignatureException")
		}
	})

	t.Run("refused pairs", func(t *testing.T) {
		t.Parallel()
		cases := []struct {
			key string
			alg types.SigningAlgorithmSpec
		}{
			{"ECC_NIST_P256", types.SigningAlgorithmSpecEcdsaSha384},
			{"ECC_NIST_P256", types.SigningAlgorithmSpecEcdsaSha512},
			{"ECC_NIST_P384", types.SigningAlgorithmSpecEcdsaSha256},
			{"ECC_NIST_P521", types.SigningAlgorithmSpecEcdsaSha384},
			{"ECC_SECG_P256K1", types.SigningAlgorithmSpecEcdsaSha512},
			{"ECC_SECG_P256K1", types.SigningAlgorithmSpecEcdsaSha384},
			{"RSA_2048", types.SigningAlgorithmSpecEcdsaSha256},
			{"RSA_4096", types.SigningAlgorithmSpecEcdsaSha512},
			{"ECC_NIST_P256", types.SigningAlgorithmSpecRsassaPssSha256},
			{"ECC_SECG_P256K1", types.SigningAlgorithmSpecRsassaPkcs1V15Sha256},
			{"rsa-enc", types.SigningAlgorithmSpecRsassaPssSha256},
			{"rsa-enc", types.SigningAlgorithmSpecRsassaPkcs1V15Sha256},
			{"sym", types.SigningAlgorithmSpecEcdsaSha256},
			{"sym", types.SigningAlgorithmSpecRsassaPssSha256},
			{"hmac", types.SigningAlgorithmSpecEcdsaSha256},
		}
		msg := []byte("refused")
		for _, tc := range cases {
			t.Run(tc.key+"/"+string(tc.alg), func(t *testing.T) {
				id := keys[tc.key].ID
				_, err := c.Sign(ctxT(t), &kms.SignInput{KeyId: aws.String(id), Message: msg, SigningAlgorithm: tc.alg})
				wantKMSError(t, err, "InvalidKeyUsageException")
				_, err = c.Verify(ctxT(t), &kms.VerifyInput{KeyId: aws.String(id), Message: msg, Signature: make([]byte, 256), SigningAlgorithm: tc.alg})
				wantKMSError(t, err, "InvalidKeyUsageException")
			})
		}
	})

	t.Run("message size", func(t *testing.T) {
		t.Parallel()
		k := keys["ECC_NIST_P256"]
		alg := types.SigningAlgorithmSpecEcdsaSha256
		msg := randomBytes(t, 4096)
		out, err := c.Sign(ctxT(t), &kms.SignInput{KeyId: aws.String(k.ID), Message: msg, SigningAlgorithm: alg})
		if err != nil {
			t.Fatalf("Sign of 4096 bytes: %v", err)
		}
		if _, err := c.Verify(ctxT(t), &kms.VerifyInput{KeyId: aws.String(k.ID), Message: msg, Signature: out.Signature, SigningAlgorithm: alg}); err != nil {
			t.Fatalf("Verify of 4096 bytes: %v", err)
		}
		big := append(msg, 0)
		_, err = c.Sign(ctxT(t), &kms.SignInput{KeyId: aws.String(k.ID), Message: big, SigningAlgorithm: alg})
		wantKMSError(t, err, "ValidationException")
		_, err = c.Verify(ctxT(t), &kms.VerifyInput{KeyId: aws.String(k.ID), Message: big, Signature: out.Signature, SigningAlgorithm: alg})
		wantKMSError(t, err, "ValidationException")
		// An empty message, on the wire (the SDK may drop it).
		r := s.callJSON(t, "TrentService.Sign", map[string]any{"KeyId": k.ID, "Message": "", "SigningAlgorithm": alg})
		r.wantError(t, 400, "ValidationException")
		r = s.callJSON(t, "TrentService.Sign", map[string]any{"KeyId": k.ID, "Message": base64.StdEncoding.EncodeToString(msg)})
		r.wantError(t, 400, "ValidationException")
		r = s.callJSON(t, "TrentService.Sign", map[string]any{"KeyId": k.ID, "Message": base64.StdEncoding.EncodeToString(msg),
			"SigningAlgorithm": alg, "MessageType": "HASHED"})
		r.wantError(t, 400, "ValidationException")
	})

	t.Run("digest length", func(t *testing.T) {
		t.Parallel()
		cases := []struct {
			key string
			alg types.SigningAlgorithmSpec
			n   int
		}{
			{"ECC_NIST_P256", types.SigningAlgorithmSpecEcdsaSha256, 31},
			{"ECC_NIST_P256", types.SigningAlgorithmSpecEcdsaSha256, 33},
			{"ECC_NIST_P384", types.SigningAlgorithmSpecEcdsaSha384, 32},
			{"ECC_NIST_P521", types.SigningAlgorithmSpecEcdsaSha512, 66},
			{"ECC_SECG_P256K1", types.SigningAlgorithmSpecEcdsaSha256, 64},
			{"RSA_2048", types.SigningAlgorithmSpecRsassaPssSha256, 48},
			{"RSA_2048", types.SigningAlgorithmSpecRsassaPkcs1V15Sha512, 32},
		}
		for _, tc := range cases {
			t.Run(tc.key+"/"+string(tc.alg), func(t *testing.T) {
				id := keys[tc.key].ID
				d := randomBytes(t, tc.n)
				want := "Digest is invalid length for algorithm " + string(tc.alg) + "."
				_, err := c.Sign(ctxT(t), &kms.SignInput{KeyId: aws.String(id), Message: d, MessageType: dig, SigningAlgorithm: tc.alg})
				wantMessage(t, wantKMSError(t, err, "ValidationException"), want)
				_, err = c.Verify(ctxT(t), &kms.VerifyInput{KeyId: aws.String(id), Message: d, MessageType: dig,
					Signature: make([]byte, 64), SigningAlgorithm: tc.alg})
				wantMessage(t, wantKMSError(t, err, "ValidationException"), want)
			})
		}
	})

	t.Run("by alias", func(t *testing.T) {
		t.Parallel()
		k := keys["ECC_SECG_P256K1"]
		createAlias(t, c, "alias/e2e-signing", k.ID)
		alg := types.SigningAlgorithmSpecEcdsaSha256
		msg := []byte("signed through an alias")
		for _, ref := range []string{"alias/e2e-signing", aliasARN(mainAccount, "alias/e2e-signing")} {
			out, err := c.Sign(ctxT(t), &kms.SignInput{KeyId: aws.String(ref), Message: msg, SigningAlgorithm: alg})
			if err != nil {
				t.Fatalf("Sign by %s: %v", ref, err)
			}
			if got := aws.ToString(out.KeyId); got != k.ARN {
				t.Errorf("Sign by %s: KeyId %q, want the key ARN %q", ref, got, k.ARN)
			}
			v, err := c.Verify(ctxT(t), &kms.VerifyInput{KeyId: aws.String(ref), Message: msg, Signature: out.Signature, SigningAlgorithm: alg})
			if err != nil {
				t.Fatalf("Verify by %s: %v", ref, err)
			}
			if got := aws.ToString(v.KeyId); got != k.ARN {
				t.Errorf("Verify by %s: KeyId %q, want %q", ref, got, k.ARN)
			}
			if got := aws.ToString(getPublicKey(t, c, ref).KeyId); got != k.ARN {
				t.Errorf("GetPublicKey by %s: KeyId %q, want %q", ref, got, k.ARN)
			}
		}
	})

	t.Run("DryRun", func(t *testing.T) {
		t.Parallel()
		k := keys["ECC_NIST_P256"]
		alg := types.SigningAlgorithmSpecEcdsaSha256
		msg := []byte("dry run")
		_, err := c.Sign(ctxT(t), &kms.SignInput{KeyId: aws.String(k.ID), Message: msg, SigningAlgorithm: alg, DryRun: aws.Bool(true)})
		wantKMSError(t, err, "DryRunOperationException")
		out, err := c.Sign(ctxT(t), &kms.SignInput{KeyId: aws.String(k.ID), Message: msg, SigningAlgorithm: alg})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Verify(ctxT(t), &kms.VerifyInput{KeyId: aws.String(k.ID), Message: msg, Signature: out.Signature, SigningAlgorithm: alg, DryRun: aws.Bool(true)})
		wantKMSError(t, err, "DryRunOperationException")
	})
}

func sha256Sum(b []byte) []byte { return digest(crypto.SHA256, b) }
