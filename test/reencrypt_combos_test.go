package test

import (
	"bytes"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

// TestReEncryptCombos re-encrypts between symmetric and RSA keys in every
// direction, checks each result by decrypting it, and checks the refusals.
func TestReEncryptCombos(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	ed := types.KeyUsageTypeEncryptDecrypt
	keys := createKeys(t, c,
		keyReq{"symA", types.KeySpecSymmetricDefault, ed},
		keyReq{"symB", types.KeySpecSymmetricDefault, ed},
		keyReq{"r1", types.KeySpecRsa2048, ed},
		keyReq{"r2", types.KeySpecRsa2048, ed},
		keyReq{"r3", types.KeySpecRsa3072, ed},
		keyReq{"rsa-sign", types.KeySpecRsa2048, types.KeyUsageTypeSignVerify},
		keyReq{"ecc", types.KeySpecEccNistP256, types.KeyUsageTypeSignVerify},
	)
	symA, symB, r1, r2, r3 := keys["symA"], keys["symB"], keys["r1"], keys["r2"], keys["r3"]
	sha1, sha256 := types.EncryptionAlgorithmSpecRsaesOaepSha1, types.EncryptionAlgorithmSpecRsaesOaepSha256
	symDefault := types.EncryptionAlgorithmSpecSymmetricDefault

	pt := []byte("re-encrypted between key types")
	srcCtx := map[string]string{"side": "source"}
	dstCtx := map[string]string{"side": "destination"}
	symBlob := encrypt(t, c, symA.ID, pt, srcCtx)
	r1Sha1 := encryptRSA(t, c, r1.ID, sha1, pt)
	r1Sha256 := encryptRSA(t, c, r1.ID, sha256, pt)

	cases := []struct {
		name   string
		in     kms.ReEncryptInput
		src    *asymKey
		dst    *asymKey
		srcAlg types.EncryptionAlgorithmSpec
		dstAlg types.EncryptionAlgorithmSpec
		dstCtx map[string]string // the context the result decrypts with
	}{
		{"symmetric to RSA SHA_1",
			kms.ReEncryptInput{CiphertextBlob: symBlob, SourceEncryptionContext: srcCtx, DestinationKeyId: aws.String(r1.ID), DestinationEncryptionAlgorithm: sha1},
			symA, r1, symDefault, sha1, nil},
		{"symmetric to RSA_3072 SHA_256",
			kms.ReEncryptInput{CiphertextBlob: symBlob, SourceEncryptionContext: srcCtx, DestinationKeyId: aws.String(r3.ARN), DestinationEncryptionAlgorithm: sha256},
			symA, r3, symDefault, sha256, nil},
		{"symmetric to RSA with SourceKeyId",
			kms.ReEncryptInput{CiphertextBlob: symBlob, SourceEncryptionContext: srcCtx, SourceKeyId: aws.String(symA.ID),
				DestinationKeyId: aws.String(r1.ID), DestinationEncryptionAlgorithm: sha256},
			symA, r1, symDefault, sha256, nil},
		{"RSA to symmetric",
			kms.ReEncryptInput{CiphertextBlob: r1Sha256, SourceKeyId: aws.String(r1.ID), SourceEncryptionAlgorithm: sha256,
				DestinationKeyId: aws.String(symB.ID), DestinationEncryptionContext: dstCtx},
			r1, symB, sha256, symDefault, dstCtx},
		{"RSA to symmetric, explicit SYMMETRIC_DEFAULT",
			kms.ReEncryptInput{CiphertextBlob: r1Sha1, SourceKeyId: aws.String(r1.ARN), SourceEncryptionAlgorithm: sha1,
				DestinationKeyId: aws.String(symA.ID), DestinationEncryptionAlgorithm: symDefault},
			r1, symA, sha1, symDefault, nil},
		{"RSA to RSA, other key and hash",
			kms.ReEncryptInput{CiphertextBlob: r1Sha1, SourceKeyId: aws.String(r1.ID), SourceEncryptionAlgorithm: sha1,
				DestinationKeyId: aws.String(r3.ID), DestinationEncryptionAlgorithm: sha256},
			r1, r3, sha1, sha256, nil},
		{"RSA to RSA, other key of the same size",
			kms.ReEncryptInput{CiphertextBlob: r1Sha256, SourceKeyId: aws.String(r1.ID), SourceEncryptionAlgorithm: sha256,
				DestinationKeyId: aws.String(r2.ID), DestinationEncryptionAlgorithm: sha1},
			r1, r2, sha256, sha1, nil},
		{"RSA to RSA, same key, other hash",
			kms.ReEncryptInput{CiphertextBlob: r1Sha256, SourceKeyId: aws.String(r1.ID), SourceEncryptionAlgorithm: sha256,
				DestinationKeyId: aws.String(r1.ID), DestinationEncryptionAlgorithm: sha1},
			r1, r1, sha256, sha1, nil},
		{"symmetric to symmetric",
			kms.ReEncryptInput{CiphertextBlob: symBlob, SourceEncryptionContext: srcCtx, DestinationKeyId: aws.String(symB.ID), DestinationEncryptionContext: dstCtx},
			symA, symB, symDefault, symDefault, dstCtx},
	}
	t.Run("combinations", func(t *testing.T) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				out, err := c.ReEncrypt(ctxT(t), &tc.in)
				if err != nil {
					t.Fatalf("ReEncrypt: %v", err)
				}
				if got := aws.ToString(out.SourceKeyId); got != tc.src.ARN {
					t.Errorf("SourceKeyId %q, want %q", got, tc.src.ARN)
				}
				if got := aws.ToString(out.KeyId); got != tc.dst.ARN {
					t.Errorf("KeyId %q, want %q", got, tc.dst.ARN)
				}
				if out.SourceEncryptionAlgorithm != tc.srcAlg {
					t.Errorf("SourceEncryptionAlgorithm %q, want %q", out.SourceEncryptionAlgorithm, tc.srcAlg)
				}
				if out.DestinationEncryptionAlgorithm != tc.dstAlg {
					t.Errorf("DestinationEncryptionAlgorithm %q, want %q", out.DestinationEncryptionAlgorithm, tc.dstAlg)
				}
				var dec *kms.DecryptOutput
				if tc.dstAlg == symDefault {
					dec = decrypt(t, c, out.CiphertextBlob, tc.dstCtx)
				} else {
					if n := rsaBits(string(tc.dst.Spec)) / 8; len(out.CiphertextBlob) != n {
						t.Errorf("RSA ciphertext is %d bytes, want %d", len(out.CiphertextBlob), n)
					}
					dec, err = c.Decrypt(ctxT(t), &kms.DecryptInput{KeyId: aws.String(tc.dst.ID), CiphertextBlob: out.CiphertextBlob, EncryptionAlgorithm: tc.dstAlg})
					if err != nil {
						t.Fatalf("Decrypt of the result: %v", err)
					}
				}
				if !bytes.Equal(dec.Plaintext, pt) {
					t.Fatalf("the result decrypts to %q, want %q", dec.Plaintext, pt)
				}
				if got := aws.ToString(dec.KeyId); got != tc.dst.ARN {
					t.Errorf("the result decrypts under %q, want %q", got, tc.dst.ARN)
				}
			})
		}
	})

	bigBlob := encrypt(t, c, symA.ID, randomBytes(t, 300), nil)
	refusals := []struct {
		name string
		in   kms.ReEncryptInput
		code string
	}{
		{"RSA source without SourceKeyId",
			kms.ReEncryptInput{CiphertextBlob: r1Sha256, SourceEncryptionAlgorithm: sha256, DestinationKeyId: aws.String(symB.ID)},
			"ValidationException"},
		{"RSA source without SourceKeyId or algorithm",
			kms.ReEncryptInput{CiphertextBlob: r1Sha256, DestinationKeyId: aws.String(symB.ID)},
			"InvalidCiphertextException"},
		{"SourceKeyId of another RSA key of the same size",
			kms.ReEncryptInput{CiphertextBlob: r1Sha256, SourceKeyId: aws.String(r2.ID), SourceEncryptionAlgorithm: sha256, DestinationKeyId: aws.String(symB.ID)},
			"InvalidCiphertextException"},
		{"SourceKeyId of an RSA_3072 key",
			kms.ReEncryptInput{CiphertextBlob: r1Sha256, SourceKeyId: aws.String(r3.ID), SourceEncryptionAlgorithm: sha256, DestinationKeyId: aws.String(symB.ID)},
			"InvalidCiphertextException"},
		{"wrong SourceEncryptionAlgorithm",
			kms.ReEncryptInput{CiphertextBlob: r1Sha256, SourceKeyId: aws.String(r1.ID), SourceEncryptionAlgorithm: sha1, DestinationKeyId: aws.String(symB.ID)},
			"InvalidCiphertextException"},
		{"tampered RSA source",
			kms.ReEncryptInput{CiphertextBlob: flip(r1Sha256, 100), SourceKeyId: aws.String(r1.ID), SourceEncryptionAlgorithm: sha256, DestinationKeyId: aws.String(symB.ID)},
			"InvalidCiphertextException"},
		{"symmetric blob, RSA SourceKeyId and RSAES algorithm",
			kms.ReEncryptInput{CiphertextBlob: symBlob, SourceKeyId: aws.String(r1.ID), SourceEncryptionAlgorithm: sha256, DestinationKeyId: aws.String(symB.ID)},
			"InvalidCiphertextException"},
		{"source SIGN_VERIFY key",
			kms.ReEncryptInput{CiphertextBlob: r1Sha256, SourceKeyId: aws.String(keys["rsa-sign"].ID), SourceEncryptionAlgorithm: sha256, DestinationKeyId: aws.String(symB.ID)},
			"InvalidKeyUsageException"},
		{"RSA destination without DestinationEncryptionAlgorithm",
			kms.ReEncryptInput{CiphertextBlob: symBlob, SourceEncryptionContext: srcCtx, DestinationKeyId: aws.String(r1.ID)},
			"InvalidKeyUsageException"},
		{"RSA destination with SYMMETRIC_DEFAULT",
			kms.ReEncryptInput{CiphertextBlob: symBlob, SourceEncryptionContext: srcCtx, DestinationKeyId: aws.String(r1.ID), DestinationEncryptionAlgorithm: symDefault},
			"InvalidKeyUsageException"},
		{"symmetric destination with RSAES algorithm",
			kms.ReEncryptInput{CiphertextBlob: r1Sha256, SourceKeyId: aws.String(r1.ID), SourceEncryptionAlgorithm: sha256,
				DestinationKeyId: aws.String(symB.ID), DestinationEncryptionAlgorithm: sha256},
			"InvalidKeyUsageException"},
		{"DestinationEncryptionContext with an RSA destination",
			kms.ReEncryptInput{CiphertextBlob: symBlob, SourceEncryptionContext: srcCtx, DestinationKeyId: aws.String(r1.ID),
				DestinationEncryptionAlgorithm: sha256, DestinationEncryptionContext: dstCtx},
			"ValidationException"},
		{"RSA SIGN_VERIFY destination",
			kms.ReEncryptInput{CiphertextBlob: symBlob, SourceEncryptionContext: srcCtx, DestinationKeyId: aws.String(keys["rsa-sign"].ID), DestinationEncryptionAlgorithm: sha256},
			"InvalidKeyUsageException"},
		{"ECC SIGN_VERIFY destination",
			kms.ReEncryptInput{CiphertextBlob: symBlob, SourceEncryptionContext: srcCtx, DestinationKeyId: aws.String(keys["ecc"].ID)},
			"InvalidKeyUsageException"},
		{"300-byte plaintext to RSA_2048 SHA_256",
			kms.ReEncryptInput{CiphertextBlob: bigBlob, DestinationKeyId: aws.String(r1.ID), DestinationEncryptionAlgorithm: sha256},
			"ValidationException"},
	}
	t.Run("refusals", func(t *testing.T) {
		for _, tc := range refusals {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				_, err := c.ReEncrypt(ctxT(t), &tc.in)
				wantKMSError(t, err, tc.code)
			})
		}
	})

	// With no SourceEncryptionAlgorithm the algorithm is SYMMETRIC_DEFAULT,
	// which the RSA SourceKeyId cannot use: InvalidKeyUsageException, with
	// the message AWS gives Encrypt in the same situation, before the
	// ciphertext is looked at (so also with a context).
	t.Run("symmetric blob with an RSA SourceKeyId", func(t *testing.T) {
		t.Parallel()
		for name, ec := range map[string]map[string]string{"with its context": srcCtx, "without context": nil} {
			t.Run(name, func(t *testing.T) {
				_, err := c.ReEncrypt(ctxT(t), &kms.ReEncryptInput{CiphertextBlob: symBlob, SourceEncryptionContext: ec,
					SourceKeyId: aws.String(r1.ID), DestinationKeyId: aws.String(symB.ID)})
				ae := wantKMSError(t, err, "InvalidKeyUsageException")
				wantMessage(t, ae, "Algorithm SYMMETRIC_DEFAULT is incompatible with key spec RSA_2048.")
			})
		}
	})

	t.Run("DryRun", func(t *testing.T) {
		t.Parallel()
		yes := aws.Bool(true)
		_, err := c.ReEncrypt(ctxT(t), &kms.ReEncryptInput{CiphertextBlob: symBlob, SourceEncryptionContext: srcCtx,
			DestinationKeyId: aws.String(r1.ID), DestinationEncryptionAlgorithm: sha256, DryRun: yes})
		wantKMSError(t, err, "DryRunOperationException")
		_, err = c.ReEncrypt(ctxT(t), &kms.ReEncryptInput{CiphertextBlob: r1Sha256, SourceKeyId: aws.String(r1.ID),
			SourceEncryptionAlgorithm: sha256, DestinationKeyId: aws.String(symB.ID), DryRun: yes})
		wantKMSError(t, err, "DryRunOperationException")
		_, err = c.ReEncrypt(ctxT(t), &kms.ReEncryptInput{CiphertextBlob: r1Sha256, SourceKeyId: aws.String(r1.ID),
			SourceEncryptionAlgorithm: sha256, DestinationKeyId: aws.String(r3.ID), DestinationEncryptionAlgorithm: sha1, DryRun: yes})
		wantKMSError(t, err, "DryRunOperationException")
	})
}
