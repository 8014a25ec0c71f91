package test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"math/big"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

// oaepMax is the largest plaintext AWS encrypts with each RSA key spec and
// OAEP hash: the modulus size less twice the hash size less two.
var oaepMax = map[types.KeySpec]map[types.EncryptionAlgorithmSpec]int{
	types.KeySpecRsa2048: {types.EncryptionAlgorithmSpecRsaesOaepSha1: 214, types.EncryptionAlgorithmSpecRsaesOaepSha256: 190},
	types.KeySpecRsa3072: {types.EncryptionAlgorithmSpecRsaesOaepSha1: 342, types.EncryptionAlgorithmSpecRsaesOaepSha256: 318},
	types.KeySpecRsa4096: {types.EncryptionAlgorithmSpecRsaesOaepSha1: 470, types.EncryptionAlgorithmSpecRsaesOaepSha256: 446},
}

// TestAsymEncryptDecrypt covers Encrypt and Decrypt with RSA
// ENCRYPT_DECRYPT keys: raw OAEP ciphertexts, interoperability with Go's
// RSA-OAEP, the plaintext limits, and every refusal.
func TestAsymEncryptDecrypt(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	keys := createKeys(t, c,
		keyReq{"RSA_2048", types.KeySpecRsa2048, types.KeyUsageTypeEncryptDecrypt},
		keyReq{"RSA_3072", types.KeySpecRsa3072, types.KeyUsageTypeEncryptDecrypt},
		keyReq{"RSA_4096", types.KeySpecRsa4096, types.KeyUsageTypeEncryptDecrypt},
		keyReq{"rsa-sign", types.KeySpecRsa2048, types.KeyUsageTypeSignVerify},
		keyReq{"ecc", types.KeySpecEccNistP256, types.KeyUsageTypeSignVerify},
		keyReq{"hmac", types.KeySpecHmac256, types.KeyUsageTypeGenerateVerifyMac},
		keyReq{"sym", types.KeySpecSymmetricDefault, types.KeyUsageTypeEncryptDecrypt},
	)
	pubs := map[types.KeySpec]*rsa.PublicKey{}
	for _, spec := range []types.KeySpec{types.KeySpecRsa2048, types.KeySpecRsa3072, types.KeySpecRsa4096} {
		pubs[spec] = rsaPublicKey(t, getPublicKey(t, c, keys[string(spec)].ID).PublicKey, rsaBits(string(spec)))
	}
	sha1, sha256 := types.EncryptionAlgorithmSpecRsaesOaepSha1, types.EncryptionAlgorithmSpecRsaesOaepSha256

	for _, spec := range []types.KeySpec{types.KeySpecRsa2048, types.KeySpecRsa3072, types.KeySpecRsa4096} {
		k := keys[string(spec)]
		size := rsaBits(string(spec)) / 8
		for _, alg := range rsaEncAlgs {
			max := oaepMax[spec][alg]
			t.Run(fmt.Sprintf("%s/%s", spec, alg), func(t *testing.T) {
				t.Parallel()
				t.Run("round trip", func(t *testing.T) {
					for _, n := range []int{1, 32, max} {
						pt := randomBytes(t, n)
						out, err := c.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(k.ID), Plaintext: pt, EncryptionAlgorithm: alg})
						if err != nil {
							t.Fatalf("Encrypt %d bytes: %v", n, err)
						}
						if len(out.CiphertextBlob) != size {
							t.Errorf("ciphertext of %d bytes is %d bytes, want the modulus size %d", n, len(out.CiphertextBlob), size)
						}
						// Raw RSA output: an integer below the modulus, no header.
						if new(big.Int).SetBytes(out.CiphertextBlob).Cmp(pubs[spec].N) >= 0 {
							t.Errorf("ciphertext is not below the modulus: not a raw RSA ciphertext")
						}
						if got := aws.ToString(out.KeyId); got != k.ARN {
							t.Errorf("Encrypt KeyId %q, want %q", got, k.ARN)
						}
						if out.EncryptionAlgorithm != alg {
							t.Errorf("Encrypt EncryptionAlgorithm %q, want %q", out.EncryptionAlgorithm, alg)
						}
						// Decrypt names the key by id and by ARN.
						for _, ref := range []string{k.ID, k.ARN} {
							dec, err := c.Decrypt(ctxT(t), &kms.DecryptInput{KeyId: aws.String(ref), CiphertextBlob: out.CiphertextBlob, EncryptionAlgorithm: alg})
							if err != nil {
								t.Fatalf("Decrypt %d bytes with KeyId %s: %v", n, ref, err)
							}
							if !bytes.Equal(dec.Plaintext, pt) {
								t.Fatalf("Decrypt gave %x, want %x", dec.Plaintext, pt)
							}
							if got := aws.ToString(dec.KeyId); got != k.ARN {
								t.Errorf("Decrypt KeyId %q, want %q", got, k.ARN)
							}
							if dec.EncryptionAlgorithm != alg {
								t.Errorf("Decrypt EncryptionAlgorithm %q, want %q", dec.EncryptionAlgorithm, alg)
							}
						}
					}
					// OAEP is randomised: the same plaintext twice gives two ciphertexts.
					a := encryptRSA(t, c, k.ID, alg, []byte("twice"))
					b := encryptRSA(t, c, k.ID, alg, []byte("twice"))
					if bytes.Equal(a, b) {
						t.Error("two encryptions of one plaintext gave the same ciphertext")
					}
				})
				t.Run("made outside", func(t *testing.T) {
					for _, n := range []int{1, max} {
						pt := randomBytes(t, n)
						ct, err := rsa.EncryptOAEP(oaepHash(alg).New(), rand.Reader, pubs[spec], pt, nil)
						if err != nil {
							t.Fatal(err)
						}
						dec, err := c.Decrypt(ctxT(t), &kms.DecryptInput{KeyId: aws.String(k.ID), CiphertextBlob: ct, EncryptionAlgorithm: alg})
						if err != nil {
							t.Fatalf("Decrypt of Go's %d-byte OAEP ciphertext: %v", n, err)
						}
						if !bytes.Equal(dec.Plaintext, pt) {
							t.Fatalf("Decrypt gave %x, want %x", dec.Plaintext, pt)
						}
					}
				})
				t.Run("limit", func(t *testing.T) {
					_, err := c.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(k.ID), Plaintext: make([]byte, max+1), EncryptionAlgorithm: alg})
					ae := wantKMSError(t, err, "ValidationException")
					wantMessage(t, ae, fmt.Sprintf("Algorithm %s and key spec %s cannot encrypt data larger than %d bytes.", alg, spec, max))
				})
			})
		}
	}

	rsa2048 := keys["RSA_2048"]
	pt := []byte("RSA refusal plaintext")
	ct256 := encryptRSA(t, c, rsa2048.ID, sha256, pt)
	ct1 := encryptRSA(t, c, rsa2048.ID, sha1, pt)
	ct3072 := encryptRSA(t, c, keys["RSA_3072"].ID, sha256, pt)
	symBlob := encrypt(t, c, keys["sym"].ID, pt, nil)
	local, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ctLocal, err := rsa.EncryptOAEP(oaepHash(sha256).New(), rand.Reader, &local.PublicKey, pt, nil)
	if err != nil {
		t.Fatal(err)
	}

	encCases := []struct {
		name string
		in   kms.EncryptInput
		code string
		msg  string // checked when not empty
	}{
		{"RSA key without EncryptionAlgorithm", kms.EncryptInput{KeyId: aws.String(rsa2048.ID), Plaintext: pt},
			"InvalidKeyUsageException", "Algorithm SYMMETRIC_DEFAULT is incompatible with key spec RSA_2048."},
		{"RSA key with SYMMETRIC_DEFAULT", kms.EncryptInput{KeyId: aws.String(rsa2048.ID), Plaintext: pt, EncryptionAlgorithm: types.EncryptionAlgorithmSpecSymmetricDefault},
			"InvalidKeyUsageException", "Algorithm SYMMETRIC_DEFAULT is incompatible with key spec RSA_2048."},
		{"symmetric key with RSAES_OAEP_SHA_256", kms.EncryptInput{KeyId: aws.String(keys["sym"].ID), Plaintext: pt, EncryptionAlgorithm: sha256},
			"InvalidKeyUsageException", ""},
		{"symmetric key with RSAES_OAEP_SHA_1", kms.EncryptInput{KeyId: aws.String(keys["sym"].ID), Plaintext: pt, EncryptionAlgorithm: sha1},
			"InvalidKeyUsageException", ""},
		{"RSA SIGN_VERIFY key", kms.EncryptInput{KeyId: aws.String(keys["rsa-sign"].ID), Plaintext: pt, EncryptionAlgorithm: sha256},
			"InvalidKeyUsageException", ""},
		{"RSA SIGN_VERIFY key without EncryptionAlgorithm", kms.EncryptInput{KeyId: aws.String(keys["rsa-sign"].ID), Plaintext: pt},
			"InvalidKeyUsageException", ""},
		{"ECC SIGN_VERIFY key", kms.EncryptInput{KeyId: aws.String(keys["ecc"].ID), Plaintext: pt},
			"InvalidKeyUsageException", ""},
		{"HMAC key", kms.EncryptInput{KeyId: aws.String(keys["hmac"].ID), Plaintext: pt},
			"InvalidKeyUsageException", ""},
		{"HMAC key with RSAES_OAEP_SHA_256", kms.EncryptInput{KeyId: aws.String(keys["hmac"].ID), Plaintext: pt, EncryptionAlgorithm: sha256},
			"InvalidKeyUsageException", ""},
		{"RSA key with EncryptionContext", kms.EncryptInput{KeyId: aws.String(rsa2048.ID), Plaintext: pt, EncryptionAlgorithm: sha256,
			EncryptionContext: map[string]string{"a": "b"}}, "ValidationException", ""},
	}
	t.Run("Encrypt refusals", func(t *testing.T) {
		t.Parallel()
		for _, tc := range encCases {
			t.Run(tc.name, func(t *testing.T) {
				_, err := c.Encrypt(ctxT(t), &tc.in)
				ae := wantKMSError(t, err, tc.code)
				if tc.msg != "" {
					wantMessage(t, ae, tc.msg)
				}
			})
		}
	})

	decCases := []struct {
		name string
		in   kms.DecryptInput
		code string
	}{
		{"SHA_1 ciphertext decrypted with SHA_256", kms.DecryptInput{KeyId: aws.String(rsa2048.ID), CiphertextBlob: ct1, EncryptionAlgorithm: sha256}, "InvalidCiphertextException"},
		{"SHA_256 ciphertext decrypted with SHA_1", kms.DecryptInput{KeyId: aws.String(rsa2048.ID), CiphertextBlob: ct256, EncryptionAlgorithm: sha1}, "InvalidCiphertextException"},
		{"first byte flipped", kms.DecryptInput{KeyId: aws.String(rsa2048.ID), CiphertextBlob: flip(ct256, 0), EncryptionAlgorithm: sha256}, "InvalidCiphertextException"},
		{"middle byte flipped", kms.DecryptInput{KeyId: aws.String(rsa2048.ID), CiphertextBlob: flip(ct256, 128), EncryptionAlgorithm: sha256}, "InvalidCiphertextException"},
		{"last byte flipped", kms.DecryptInput{KeyId: aws.String(rsa2048.ID), CiphertextBlob: flip(ct256, 255), EncryptionAlgorithm: sha256}, "InvalidCiphertextException"},
		{"one byte short", kms.DecryptInput{KeyId: aws.String(rsa2048.ID), CiphertextBlob: ct256[:255], EncryptionAlgorithm: sha256}, "InvalidCiphertextException"},
		{"one byte appended", kms.DecryptInput{KeyId: aws.String(rsa2048.ID), CiphertextBlob: append(bytes.Clone(ct256), 0), EncryptionAlgorithm: sha256}, "InvalidCiphertextException"},
		{"ciphertext for a local RSA key", kms.DecryptInput{KeyId: aws.String(rsa2048.ID), CiphertextBlob: ctLocal, EncryptionAlgorithm: sha256}, "InvalidCiphertextException"},
		{"ciphertext for another KMS key", kms.DecryptInput{KeyId: aws.String(rsa2048.ID), CiphertextBlob: ct3072, EncryptionAlgorithm: sha256}, "InvalidCiphertextException"},
		{"no KeyId, RSAES algorithm", kms.DecryptInput{CiphertextBlob: ct256, EncryptionAlgorithm: sha256}, "ValidationException"},
		{"no KeyId, no algorithm", kms.DecryptInput{CiphertextBlob: ct256}, "InvalidCiphertextException"},
		{"symmetric blob with RSA KeyId and RSAES algorithm", kms.DecryptInput{KeyId: aws.String(rsa2048.ID), CiphertextBlob: symBlob, EncryptionAlgorithm: sha256}, "InvalidCiphertextException"},
		{"RSA SIGN_VERIFY key", kms.DecryptInput{KeyId: aws.String(keys["rsa-sign"].ID), CiphertextBlob: ct256, EncryptionAlgorithm: sha256}, "InvalidKeyUsageException"},
		{"ECC SIGN_VERIFY key", kms.DecryptInput{KeyId: aws.String(keys["ecc"].ID), CiphertextBlob: ct256, EncryptionAlgorithm: sha256}, "InvalidKeyUsageException"},
		{"HMAC key", kms.DecryptInput{KeyId: aws.String(keys["hmac"].ID), CiphertextBlob: ct256, EncryptionAlgorithm: sha256}, "InvalidKeyUsageException"},
		{"symmetric KeyId with RSAES algorithm", kms.DecryptInput{KeyId: aws.String(keys["sym"].ID), CiphertextBlob: symBlob, EncryptionAlgorithm: sha256}, "InvalidKeyUsageException"},
	}
	t.Run("Decrypt refusals", func(t *testing.T) {
		t.Parallel()
		for _, tc := range decCases {
			t.Run(tc.name, func(t *testing.T) {
				_, err := c.Decrypt(ctxT(t), &tc.in)
				wantKMSError(t, err, tc.code)
			})
		}
		// None of the refusals spoiled the ciphertexts.
		for alg, ct := range map[types.EncryptionAlgorithmSpec][]byte{sha1: ct1, sha256: ct256} {
			dec, err := c.Decrypt(ctxT(t), &kms.DecryptInput{KeyId: aws.String(rsa2048.ID), CiphertextBlob: ct, EncryptionAlgorithm: alg})
			if err != nil {
				t.Fatalf("Decrypt %s: %v", alg, err)
			}
			if !bytes.Equal(dec.Plaintext, pt) {
				t.Errorf("Decrypt %s gave %q", alg, dec.Plaintext)
			}
		}
	})
}

// encryptRSA encrypts pt under an RSA key with alg.
func encryptRSA(t testing.TB, c *kms.Client, keyID string, alg types.EncryptionAlgorithmSpec, pt []byte) []byte {
	t.Helper()
	out, err := c.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(keyID), Plaintext: pt, EncryptionAlgorithm: alg})
	if err != nil {
		t.Fatalf("Encrypt with %s: %v", alg, err)
	}
	return out.CiphertextBlob
}
