package test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

// checkPair asserts that priv (PKCS#8 DER) is a private key of spec whose
// public half is pub (SPKI DER).
func checkPair(t *testing.T, spec types.DataKeyPairSpec, priv, pub []byte) {
	t.Helper()
	if spec == types.DataKeyPairSpecEccSecgP256k1 {
		sk := k1PrivateKey(t, priv)
		pk := k1PublicKey(t, pub)
		if !sk.PubKey().IsEqual(pk) {
			t.Error("the private key's public half is not PublicKey")
		}
		return
	}
	k, err := x509.ParsePKCS8PrivateKey(priv)
	if err != nil {
		t.Fatalf("ParsePKCS8PrivateKey: %v", err)
	}
	if bits := rsaBits(string(spec)); bits != 0 {
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			t.Fatalf("private key is a %T, want *rsa.PrivateKey", k)
		}
		if err := rk.Validate(); err != nil {
			t.Errorf("RSA private key: %v", err)
		}
		if !rk.PublicKey.Equal(rsaPublicKey(t, pub, bits)) {
			t.Error("the private key's public half is not PublicKey")
		}
		return
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		t.Fatalf("private key is a %T, want *ecdsa.PrivateKey", k)
	}
	if !ek.PublicKey.Equal(ecdsaPublicKey(t, pub, curveOf(string(spec)))) {
		t.Error("the private key's public half is not PublicKey")
	}
}

// TestDataKeyPair covers GenerateDataKeyPair and
// GenerateDataKeyPairWithoutPlaintext for every KeyPairSpec.
func TestDataKeyPair(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	keys := createKeys(t, c,
		keyReq{"sym", types.KeySpecSymmetricDefault, types.KeyUsageTypeEncryptDecrypt},
		keyReq{"rsa-enc", types.KeySpecRsa2048, types.KeyUsageTypeEncryptDecrypt},
		keyReq{"ecc", types.KeySpecEccNistP256, types.KeyUsageTypeSignVerify},
		keyReq{"hmac", types.KeySpecHmac256, types.KeyUsageTypeGenerateVerifyMac},
	)
	sym := keys["sym"]
	ec := map[string]string{"purpose": "data key pair"}

	cases := []struct {
		spec       types.DataKeyPairSpec
		withoutToo bool // also GenerateDataKeyPairWithoutPlaintext (RSA_4096 is slow to make)
	}{
		{types.DataKeyPairSpecRsa2048, true},
		{types.DataKeyPairSpecRsa3072, true},
		{types.DataKeyPairSpecRsa4096, false},
		{types.DataKeyPairSpecEccNistP256, true},
		{types.DataKeyPairSpecEccNistP384, true},
		{types.DataKeyPairSpecEccNistP521, true},
		{types.DataKeyPairSpecEccSecgP256k1, true},
	}
	for _, tc := range cases {
		t.Run(string(tc.spec), func(t *testing.T) {
			t.Parallel()
			out, err := c.GenerateDataKeyPair(ctxT(t), &kms.GenerateDataKeyPairInput{KeyId: aws.String(sym.ID), KeyPairSpec: tc.spec, EncryptionContext: ec})
			if err != nil {
				t.Fatalf("GenerateDataKeyPair: %v", err)
			}
			if out.KeyPairSpec != tc.spec {
				t.Errorf("KeyPairSpec %q, want %q", out.KeyPairSpec, tc.spec)
			}
			if got := aws.ToString(out.KeyId); got != sym.ARN {
				t.Errorf("KeyId %q, want %q", got, sym.ARN)
			}
			checkPair(t, tc.spec, out.PrivateKeyPlaintext, out.PublicKey)
			dec := decrypt(t, c, out.PrivateKeyCiphertextBlob, ec)
			if !bytes.Equal(dec.Plaintext, out.PrivateKeyPlaintext) {
				t.Error("PrivateKeyCiphertextBlob does not decrypt to PrivateKeyPlaintext")
			}
			if got := aws.ToString(dec.KeyId); got != sym.ARN {
				t.Errorf("the blob decrypts under %q, want %q", got, sym.ARN)
			}
			_, err = c.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: out.PrivateKeyCiphertextBlob})
			wantKMSError(t, err, "InvalidCiphertextException")

			if !tc.withoutToo {
				return
			}
			wo, err := c.GenerateDataKeyPairWithoutPlaintext(ctxT(t), &kms.GenerateDataKeyPairWithoutPlaintextInput{
				KeyId: aws.String(sym.ARN), KeyPairSpec: tc.spec, EncryptionContext: ec})
			if err != nil {
				t.Fatalf("GenerateDataKeyPairWithoutPlaintext: %v", err)
			}
			if wo.KeyPairSpec != tc.spec {
				t.Errorf("WithoutPlaintext KeyPairSpec %q, want %q", wo.KeyPairSpec, tc.spec)
			}
			if got := aws.ToString(wo.KeyId); got != sym.ARN {
				t.Errorf("WithoutPlaintext KeyId %q, want %q", got, sym.ARN)
			}
			priv := decrypt(t, c, wo.PrivateKeyCiphertextBlob, ec).Plaintext
			checkPair(t, tc.spec, priv, wo.PublicKey)
			if bytes.Equal(wo.PublicKey, out.PublicKey) || bytes.Equal(priv, out.PrivateKeyPlaintext) {
				t.Error("two calls gave the same key pair")
			}
		})
	}

	t.Run("WithoutPlaintext has no plaintext", func(t *testing.T) {
		t.Parallel()
		rc, rec := s.recordingClient()
		_, err := rc.GenerateDataKeyPairWithoutPlaintext(ctxT(t), &kms.GenerateDataKeyPairWithoutPlaintextInput{
			KeyId: aws.String(sym.ID), KeyPairSpec: types.DataKeyPairSpecEccNistP256})
		if err != nil {
			t.Fatal(err)
		}
		x := rec.last(t, "TrentService.GenerateDataKeyPairWithoutPlaintext")
		if bytes.Contains(x.Response, []byte("PrivateKeyPlaintext")) {
			t.Errorf("response has a PrivateKeyPlaintext member: %s", x.Response)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		t.Parallel()
		cases := []struct {
			name string
			key  string
			spec types.DataKeyPairSpec
			code string
		}{
			{"asymmetric ENCRYPT_DECRYPT key", "rsa-enc", types.DataKeyPairSpecEccNistP256, "UnsupportedOperationException"},
			{"SIGN_VERIFY key", "ecc", types.DataKeyPairSpecEccNistP256, "InvalidKeyUsageException"},
			{"HMAC key", "hmac", types.DataKeyPairSpecEccNistP256, "InvalidKeyUsageException"},
			{"KeyPairSpec RSA_1024", "sym", types.DataKeyPairSpec("RSA_1024"), "ValidationException"},
			{"KeyPairSpec SYMMETRIC_DEFAULT", "sym", types.DataKeyPairSpec("SYMMETRIC_DEFAULT"), "ValidationException"},
			{"KeyPairSpec HMAC_256", "sym", types.DataKeyPairSpec("HMAC_256"), "ValidationException"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				id := keys[tc.key].ID
				_, err := c.GenerateDataKeyPair(ctxT(t), &kms.GenerateDataKeyPairInput{KeyId: aws.String(id), KeyPairSpec: tc.spec})
				wantKMSError(t, err, tc.code)
				_, err = c.GenerateDataKeyPairWithoutPlaintext(ctxT(t), &kms.GenerateDataKeyPairWithoutPlaintextInput{KeyId: aws.String(id), KeyPairSpec: tc.spec})
				wantKMSError(t, err, tc.code)
			})
		}
		// KeyPairSpec is required; the SDK checks it, so send it raw.
		r := s.callJSON(t, "TrentService.GenerateDataKeyPair", map[string]any{"KeyId": sym.ID})
		r.wantError(t, 400, "ValidationException")

		// GenerateDataKey needs a symmetric key.
		_, err := c.GenerateDataKey(ctxT(t), &kms.GenerateDataKeyInput{KeyId: aws.String(keys["rsa-enc"].ID), KeySpec: types.DataKeySpecAes256})
		wantKMSError(t, err, "InvalidKeyUsageException")
		_, err = c.GenerateDataKeyWithoutPlaintext(ctxT(t), &kms.GenerateDataKeyWithoutPlaintextInput{KeyId: aws.String(keys["rsa-enc"].ID), KeySpec: types.DataKeySpecAes256})
		wantKMSError(t, err, "InvalidKeyUsageException")
	})

	t.Run("DryRun", func(t *testing.T) {
		t.Parallel()
		_, err := c.GenerateDataKeyPair(ctxT(t), &kms.GenerateDataKeyPairInput{KeyId: aws.String(sym.ID),
			KeyPairSpec: types.DataKeyPairSpecEccNistP256, DryRun: aws.Bool(true)})
		wantKMSError(t, err, "DryRunOperationException")
		_, err = c.GenerateDataKeyPairWithoutPlaintext(ctxT(t), &kms.GenerateDataKeyPairWithoutPlaintextInput{KeyId: aws.String(sym.ID),
			KeyPairSpec: types.DataKeyPairSpecEccNistP256, DryRun: aws.Bool(true)})
		wantKMSError(t, err, "DryRunOperationException")
	})
}
