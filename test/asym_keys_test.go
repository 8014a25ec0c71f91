package test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

var (
	rsaEncAlgs  = []types.EncryptionAlgorithmSpec{types.EncryptionAlgorithmSpecRsaesOaepSha1, types.EncryptionAlgorithmSpecRsaesOaepSha256}
	rsaSignAlgs = []types.SigningAlgorithmSpec{
		types.SigningAlgorithmSpecRsassaPkcs1V15Sha256, types.SigningAlgorithmSpecRsassaPkcs1V15Sha384,
		types.SigningAlgorithmSpecRsassaPkcs1V15Sha512, types.SigningAlgorithmSpecRsassaPssSha256,
		types.SigningAlgorithmSpecRsassaPssSha384, types.SigningAlgorithmSpecRsassaPssSha512,
	}
)

// specAlgs is what DescribeKey and GetPublicKey must list for a key.
type specAlgs struct {
	enc  []types.EncryptionAlgorithmSpec
	sign []types.SigningAlgorithmSpec
	mac  []types.MacAlgorithmSpec
}

// wantAlgs compares algorithm lists, in order (AWS lists them in a fixed order).
func wantAlgs(t *testing.T, what string, enc []types.EncryptionAlgorithmSpec, sign []types.SigningAlgorithmSpec, mac []types.MacAlgorithmSpec, want specAlgs) {
	t.Helper()
	if !slices.Equal(enc, want.enc) {
		t.Errorf("%s EncryptionAlgorithms %v, want %v", what, enc, want.enc)
	}
	if !slices.Equal(sign, want.sign) {
		t.Errorf("%s SigningAlgorithms %v, want %v", what, sign, want.sign)
	}
	if !slices.Equal(mac, want.mac) {
		t.Errorf("%s MacAlgorithms %v, want %v", what, mac, want.mac)
	}
}

func checkAsymMetadata(t *testing.T, what string, md *types.KeyMetadata, spec types.KeySpec, usage types.KeyUsageType, want specAlgs) {
	t.Helper()
	if md == nil {
		t.Fatalf("%s: no KeyMetadata", what)
	}
	id := aws.ToString(md.KeyId)
	if !canonUUID.MatchString(id) {
		t.Errorf("%s KeyId %q is not a UUID", what, id)
	}
	if got := aws.ToString(md.Arn); got != keyARN(mainAccount, id) {
		t.Errorf("%s Arn %q", what, got)
	}
	if md.KeySpec != spec {
		t.Errorf("%s KeySpec %q, want %q", what, md.KeySpec, spec)
	}
	if string(md.CustomerMasterKeySpec) != string(spec) {
		t.Errorf("%s CustomerMasterKeySpec %q, want %q", what, md.CustomerMasterKeySpec, spec)
	}
	if md.KeyUsage != usage {
		t.Errorf("%s KeyUsage %q, want %q", what, md.KeyUsage, usage)
	}
	if md.KeyState != types.KeyStateEnabled || !md.Enabled {
		t.Errorf("%s KeyState %q Enabled %v", what, md.KeyState, md.Enabled)
	}
	if md.Origin != types.OriginTypeAwsKms || md.KeyManager != types.KeyManagerTypeCustomer {
		t.Errorf("%s Origin %q KeyManager %q", what, md.Origin, md.KeyManager)
	}
	wantAlgs(t, what, md.EncryptionAlgorithms, md.SigningAlgorithms, md.MacAlgorithms, want)
	if len(md.KeyAgreementAlgorithms) != 0 {
		t.Errorf("%s KeyAgreementAlgorithms %v, want none", what, md.KeyAgreementAlgorithms)
	}
}

// TestAsymCreateKey creates a key of every spec and usage hsmkms offers and
// checks what CreateKey, DescribeKey and GetPublicKey say of it.
func TestAsymCreateKey(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	enc, sign, mac := types.KeyUsageTypeEncryptDecrypt, types.KeyUsageTypeSignVerify, types.KeyUsageTypeGenerateVerifyMac
	cases := []struct {
		spec  types.KeySpec
		usage types.KeyUsageType
		want  specAlgs
	}{
		{types.KeySpecRsa2048, enc, specAlgs{enc: rsaEncAlgs}},
		{types.KeySpecRsa3072, enc, specAlgs{enc: rsaEncAlgs}},
		{types.KeySpecRsa4096, enc, specAlgs{enc: rsaEncAlgs}},
		{types.KeySpecRsa2048, sign, specAlgs{sign: rsaSignAlgs}},
		{types.KeySpecRsa3072, sign, specAlgs{sign: rsaSignAlgs}},
		{types.KeySpecRsa4096, sign, specAlgs{sign: rsaSignAlgs}},
		{types.KeySpecEccNistP256, sign, specAlgs{sign: []types.SigningAlgorithmSpec{types.SigningAlgorithmSpecEcdsaSha256}}},
		{types.KeySpecEccNistP384, sign, specAlgs{sign: []types.SigningAlgorithmSpec{types.SigningAlgorithmSpecEcdsaSha384}}},
		{types.KeySpecEccNistP521, sign, specAlgs{sign: []types.SigningAlgorithmSpec{types.SigningAlgorithmSpecEcdsaSha512}}},
		{types.KeySpecEccSecgP256k1, sign, specAlgs{sign: []types.SigningAlgorithmSpec{types.SigningAlgorithmSpecEcdsaSha256}}},
		{types.KeySpecHmac224, mac, specAlgs{mac: []types.MacAlgorithmSpec{types.MacAlgorithmSpecHmacSha224}}},
		{types.KeySpecHmac256, mac, specAlgs{mac: []types.MacAlgorithmSpec{types.MacAlgorithmSpecHmacSha256}}},
		{types.KeySpecHmac384, mac, specAlgs{mac: []types.MacAlgorithmSpec{types.MacAlgorithmSpecHmacSha384}}},
		{types.KeySpecHmac512, mac, specAlgs{mac: []types.MacAlgorithmSpec{types.MacAlgorithmSpecHmacSha512}}},
		{types.KeySpecSymmetricDefault, enc, specAlgs{enc: []types.EncryptionAlgorithmSpec{types.EncryptionAlgorithmSpecSymmetricDefault}}},
	}
	for _, tc := range cases {
		t.Run(string(tc.spec)+"/"+string(tc.usage), func(t *testing.T) {
			t.Parallel()
			out, err := c.CreateKey(ctxT(t), &kms.CreateKeyInput{KeySpec: tc.spec, KeyUsage: tc.usage})
			if err != nil {
				t.Fatalf("CreateKey: %v", err)
			}
			checkAsymMetadata(t, "CreateKey", out.KeyMetadata, tc.spec, tc.usage, tc.want)
			id, arn := aws.ToString(out.KeyMetadata.KeyId), aws.ToString(out.KeyMetadata.Arn)
			d, err := c.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: aws.String(id)})
			if err != nil {
				t.Fatalf("DescribeKey: %v", err)
			}
			checkAsymMetadata(t, "DescribeKey", d.KeyMetadata, tc.spec, tc.usage, tc.want)
			if aws.ToString(d.KeyMetadata.KeyId) != id {
				t.Errorf("DescribeKey KeyId %q, want %q", aws.ToString(d.KeyMetadata.KeyId), id)
			}

			symmetric := tc.spec == types.KeySpecSymmetricDefault
			bits := rsaBits(string(tc.spec))
			curve := curveOf(string(tc.spec))
			switch {
			case bits != 0 || curve != nil || tc.spec == types.KeySpecEccSecgP256k1:
				// GetPublicKey by id and by ARN.
				for _, ref := range []string{id, arn} {
					pk := getPublicKey(t, c, ref)
					if got := aws.ToString(pk.KeyId); got != arn {
						t.Errorf("GetPublicKey(%s) KeyId %q, want %q", ref, got, arn)
					}
					if pk.KeySpec != tc.spec || string(pk.CustomerMasterKeySpec) != string(tc.spec) {
						t.Errorf("GetPublicKey KeySpec %q CustomerMasterKeySpec %q, want %q", pk.KeySpec, pk.CustomerMasterKeySpec, tc.spec)
					}
					if pk.KeyUsage != tc.usage {
						t.Errorf("GetPublicKey KeyUsage %q, want %q", pk.KeyUsage, tc.usage)
					}
					wantAlgs(t, "GetPublicKey", pk.EncryptionAlgorithms, pk.SigningAlgorithms, nil, tc.want)
					switch {
					case bits != 0:
						rsaPublicKey(t, pk.PublicKey, bits)
					case curve != nil:
						ecdsaPublicKey(t, pk.PublicKey, curve)
					default:
						k1PublicKey(t, pk.PublicKey)
					}
				}
			default:
				_, err := c.GetPublicKey(ctxT(t), &kms.GetPublicKeyInput{KeyId: aws.String(id)})
				wantAPIError(t, err, "UnsupportedOperationException", 400)
				wantType[*types.UnsupportedOperationException](t, err)
			}

			// Rotation is for symmetric encryption keys only.
			if symmetric {
				return
			}
			_, err = c.EnableKeyRotation(ctxT(t), &kms.EnableKeyRotationInput{KeyId: aws.String(id)})
			wantAPIError(t, err, "UnsupportedOperationException", 400)
			_, err = c.DisableKeyRotation(ctxT(t), &kms.DisableKeyRotationInput{KeyId: aws.String(id)})
			wantAPIError(t, err, "UnsupportedOperationException", 400)
			_, err = c.RotateKeyOnDemand(ctxT(t), &kms.RotateKeyOnDemandInput{KeyId: aws.String(id)})
			wantAPIError(t, err, "UnsupportedOperationException", 400)
			wantType[*types.UnsupportedOperationException](t, err)
			// The AWS documentation of GetKeyRotationStatus (2022-2023
			// editions) says "The key rotation status of these KMS keys is
			// always false"; Terraform reads it for every aws_kms_key.
			t.Run("GetKeyRotationStatus is false", func(t *testing.T) {
				st, err := c.GetKeyRotationStatus(ctxT(t), &kms.GetKeyRotationStatusInput{KeyId: aws.String(id)})
				if err != nil {
					t.Fatalf("GetKeyRotationStatus: %v", err)
				}
				if st.KeyRotationEnabled {
					t.Error("GetKeyRotationStatus says rotation is enabled")
				}
			})
		})
	}
}

// TestAsymCreateKeyRefusals checks the KeySpec/KeyUsage combinations AWS
// refuses (ValidationException) and those hsmkms does not offer
// (UnsupportedOperationException), and that no refusal leaves a key behind.
func TestAsymCreateKeyRefusals(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	cases := []struct {
		name  string
		spec  types.KeySpec
		usage types.KeyUsageType
		code  string
	}{
		{"ECC_NIST_P256 for ENCRYPT_DECRYPT", types.KeySpecEccNistP256, types.KeyUsageTypeEncryptDecrypt, "ValidationException"},
		{"ECC_SECG_P256K1 for ENCRYPT_DECRYPT", types.KeySpecEccSecgP256k1, types.KeyUsageTypeEncryptDecrypt, "ValidationException"},
		{"HMAC_256 for SIGN_VERIFY", types.KeySpecHmac256, types.KeyUsageTypeSignVerify, "ValidationException"},
		{"HMAC_512 for ENCRYPT_DECRYPT", types.KeySpecHmac512, types.KeyUsageTypeEncryptDecrypt, "ValidationException"},
		{"RSA_2048 for GENERATE_VERIFY_MAC", types.KeySpecRsa2048, types.KeyUsageTypeGenerateVerifyMac, "ValidationException"},
		{"RSA_4096 for KEY_AGREEMENT", types.KeySpecRsa4096, types.KeyUsageTypeKeyAgreement, "ValidationException"},
		{"SYMMETRIC_DEFAULT for SIGN_VERIFY", types.KeySpecSymmetricDefault, types.KeyUsageTypeSignVerify, "ValidationException"},
		{"SYMMETRIC_DEFAULT for GENERATE_VERIFY_MAC", types.KeySpecSymmetricDefault, types.KeyUsageTypeGenerateVerifyMac, "ValidationException"},
		{"ECC_SECG_P256K1 for KEY_AGREEMENT", types.KeySpecEccSecgP256k1, types.KeyUsageTypeKeyAgreement, "ValidationException"},
		{"ECC_NIST_P384 for GENERATE_VERIFY_MAC", types.KeySpecEccNistP384, types.KeyUsageTypeGenerateVerifyMac, "ValidationException"},
		{"RSA_2048 without KeyUsage", types.KeySpecRsa2048, "", "ValidationException"},
		{"ECC_NIST_P256 without KeyUsage", types.KeySpecEccNistP256, "", "ValidationException"},
		{"ECC_SECG_P256K1 without KeyUsage", types.KeySpecEccSecgP256k1, "", "ValidationException"},
		{"HMAC_256 without KeyUsage", types.KeySpecHmac256, "", "ValidationException"},
		{"SM2 for SIGN_VERIFY", types.KeySpecSm2, types.KeyUsageTypeSignVerify, "UnsupportedOperationException"},
		{"SM2 for ENCRYPT_DECRYPT", types.KeySpecSm2, types.KeyUsageTypeEncryptDecrypt, "UnsupportedOperationException"},
		{"ML_DSA_44 for SIGN_VERIFY", types.KeySpecMlDsa44, types.KeyUsageTypeSignVerify, "UnsupportedOperationException"},
		{"ECC_NIST_EDWARDS25519 for SIGN_VERIFY", types.KeySpecEccNistEdwards25519, types.KeyUsageTypeSignVerify, "UnsupportedOperationException"},
		{"ECC_NIST_P256 for KEY_AGREEMENT", types.KeySpecEccNistP256, types.KeyUsageTypeKeyAgreement, "UnsupportedOperationException"},
		{"ECC_NIST_P384 for KEY_AGREEMENT", types.KeySpecEccNistP384, types.KeyUsageTypeKeyAgreement, "UnsupportedOperationException"},
		{"ECC_NIST_P521 for KEY_AGREEMENT", types.KeySpecEccNistP521, types.KeyUsageTypeKeyAgreement, "UnsupportedOperationException"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := c.CreateKey(ctxT(t), &kms.CreateKeyInput{KeySpec: tc.spec, KeyUsage: tc.usage})
			wantAPIError(t, err, tc.code, 400)
			if tc.code == "UnsupportedOperationException" {
				wantType[*types.UnsupportedOperationException](t, err)
			}
		})
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := c.ListKeys(ctx, &kms.ListKeysInput{})
		if err != nil {
			t.Errorf("ListKeys: %v", err)
			return
		}
		if len(out.Keys) != 0 {
			t.Errorf("every CreateKey was refused but ListKeys shows %d keys", len(out.Keys))
		}
	})
}

// TestAsymKeyStates checks that disabled and pending-deletion RSA, ECC and
// HMAC keys refuse every operation on them, and that re-enabled keys work.
func TestAsymKeyStates(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	keys := createKeys(t, c,
		keyReq{"rsa-enc", types.KeySpecRsa2048, types.KeyUsageTypeEncryptDecrypt},
		keyReq{"rsa-sign", types.KeySpecRsa2048, types.KeyUsageTypeSignVerify},
		keyReq{"ecc", types.KeySpecEccNistP256, types.KeyUsageTypeSignVerify},
		keyReq{"k1", types.KeySpecEccSecgP256k1, types.KeyUsageTypeSignVerify},
		keyReq{"hmac", types.KeySpecHmac256, types.KeyUsageTypeGenerateVerifyMac},
		keyReq{"ecc-pending", types.KeySpecEccNistP384, types.KeyUsageTypeSignVerify},
		keyReq{"hmac-pending", types.KeySpecHmac384, types.KeyUsageTypeGenerateVerifyMac},
	)
	msg := []byte("key state message")
	oaep := types.EncryptionAlgorithmSpecRsaesOaepSha256

	// Material made while the keys are enabled.
	ct, err := c.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(keys["rsa-enc"].ID), Plaintext: msg, EncryptionAlgorithm: oaep})
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	sigs := map[string][]byte{}
	algOf := map[string]types.SigningAlgorithmSpec{
		"rsa-sign": types.SigningAlgorithmSpecRsassaPssSha256, "ecc": types.SigningAlgorithmSpecEcdsaSha256,
		"k1": types.SigningAlgorithmSpecEcdsaSha256, "ecc-pending": types.SigningAlgorithmSpecEcdsaSha384,
	}
	for name, alg := range algOf {
		out, err := c.Sign(ctxT(t), &kms.SignInput{KeyId: aws.String(keys[name].ID), Message: msg, SigningAlgorithm: alg})
		if err != nil {
			t.Fatalf("Sign %s: %v", name, err)
		}
		sigs[name] = out.Signature
	}
	macAlgOf := map[string]types.MacAlgorithmSpec{"hmac": types.MacAlgorithmSpecHmacSha256, "hmac-pending": types.MacAlgorithmSpecHmacSha384}
	macs := map[string][]byte{}
	for name, alg := range macAlgOf {
		out, err := c.GenerateMac(ctxT(t), &kms.GenerateMacInput{KeyId: aws.String(keys[name].ID), Message: msg, MacAlgorithm: alg})
		if err != nil {
			t.Fatalf("GenerateMac %s: %v", name, err)
		}
		macs[name] = out.Mac
	}

	// ops are every operation on the keys, each returning its error.
	type op struct {
		name string
		key  string
		call func() error
	}
	var ops []op
	for _, name := range []string{"rsa-enc"} {
		id := keys[name].ID
		ops = append(ops,
			op{"Encrypt", name, func() error {
				_, err := c.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(id), Plaintext: msg, EncryptionAlgorithm: oaep})
				return err
			}},
			op{"Decrypt", name, func() error {
				_, err := c.Decrypt(ctxT(t), &kms.DecryptInput{KeyId: aws.String(id), CiphertextBlob: ct.CiphertextBlob, EncryptionAlgorithm: oaep})
				return err
			}},
		)
	}
	for name, alg := range algOf {
		id, sig := keys[name].ID, sigs[name]
		ops = append(ops,
			op{"Sign", name, func() error {
				_, err := c.Sign(ctxT(t), &kms.SignInput{KeyId: aws.String(id), Message: msg, SigningAlgorithm: alg})
				return err
			}},
			op{"Verify", name, func() error {
				_, err := c.Verify(ctxT(t), &kms.VerifyInput{KeyId: aws.String(id), Message: msg, Signature: sig, SigningAlgorithm: alg})
				return err
			}},
		)
	}
	for _, name := range []string{"rsa-enc", "rsa-sign", "ecc", "k1", "ecc-pending"} {
		id := keys[name].ID
		ops = append(ops, op{"GetPublicKey", name, func() error {
			_, err := c.GetPublicKey(ctxT(t), &kms.GetPublicKeyInput{KeyId: aws.String(id)})
			return err
		}})
	}
	for name, alg := range macAlgOf {
		id, mac := keys[name].ID, macs[name]
		ops = append(ops,
			op{"GenerateMac", name, func() error {
				_, err := c.GenerateMac(ctxT(t), &kms.GenerateMacInput{KeyId: aws.String(id), Message: msg, MacAlgorithm: alg})
				return err
			}},
			op{"VerifyMac", name, func() error {
				_, err := c.VerifyMac(ctxT(t), &kms.VerifyMacInput{KeyId: aws.String(id), Message: msg, Mac: mac, MacAlgorithm: alg})
				return err
			}},
		)
	}
	pending := func(name string) bool { return name == "ecc-pending" || name == "hmac-pending" }

	for _, o := range ops {
		if err := o.call(); err != nil {
			t.Fatalf("%s with enabled %s: %v", o.name, o.key, err)
		}
	}
	for name, k := range keys {
		if pending(name) {
			_, err := c.ScheduleKeyDeletion(ctxT(t), &kms.ScheduleKeyDeletionInput{KeyId: aws.String(k.ID), PendingWindowInDays: aws.Int32(7)})
			if err != nil {
				t.Fatalf("ScheduleKeyDeletion %s: %v", name, err)
			}
			continue
		}
		disableKey(t, c, k.ID)
	}
	t.Run("refused", func(t *testing.T) {
		for _, o := range ops {
			t.Run(o.key+"/"+o.name, func(t *testing.T) {
				err := o.call()
				if pending(o.key) {
					wantAPIError(t, err, "KMSInvalidStateException", 400)
					wantType[*types.KMSInvalidStateException](t, err)
					return
				}
				wantAPIError(t, err, "DisabledException", 400)
				wantType[*types.DisabledException](t, err)
			})
		}
	})
	for name, k := range keys {
		if pending(name) {
			continue
		}
		if _, err := c.EnableKey(ctxT(t), &kms.EnableKeyInput{KeyId: aws.String(k.ID)}); err != nil {
			t.Fatalf("EnableKey %s: %v", name, err)
		}
	}
	t.Run("enabled again", func(t *testing.T) {
		for _, o := range ops {
			if pending(o.key) {
				continue
			}
			if err := o.call(); err != nil {
				t.Errorf("%s with re-enabled %s: %v", o.name, o.key, err)
			}
		}
	})
}

// TestAsymOtherAccount checks that another account can use none of the
// asymmetric and HMAC keys: by ARN it is denied, by bare id the key is not
// found in its own account.
func TestAsymOtherAccount(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c, o := s.client(), s.other()
	keys := createKeys(t, c,
		keyReq{"rsa", types.KeySpecRsa2048, types.KeyUsageTypeEncryptDecrypt},
		keyReq{"ecc", types.KeySpecEccNistP256, types.KeyUsageTypeSignVerify},
		keyReq{"hmac", types.KeySpecHmac256, types.KeyUsageTypeGenerateVerifyMac},
		keyReq{"sym", types.KeySpecSymmetricDefault, types.KeyUsageTypeEncryptDecrypt},
	)
	msg := []byte("not yours")
	oaep := types.EncryptionAlgorithmSpecRsaesOaepSha256
	ecdsa256 := types.SigningAlgorithmSpecEcdsaSha256
	hmac256 := types.MacAlgorithmSpecHmacSha256
	ct := encryptRSA(t, c, keys["rsa"].ID, oaep, msg)
	sig, err := c.Sign(ctxT(t), &kms.SignInput{KeyId: aws.String(keys["ecc"].ID), Message: msg, SigningAlgorithm: ecdsa256})
	if err != nil {
		t.Fatal(err)
	}
	mac, err := c.GenerateMac(ctxT(t), &kms.GenerateMacInput{KeyId: aws.String(keys["hmac"].ID), Message: msg, MacAlgorithm: hmac256})
	if err != nil {
		t.Fatal(err)
	}
	ops := []struct {
		name string
		key  string
		call func(ref string) error
	}{
		{"GetPublicKey", "rsa", func(ref string) error {
			_, err := o.GetPublicKey(ctxT(t), &kms.GetPublicKeyInput{KeyId: aws.String(ref)})
			return err
		}},
		{"Encrypt", "rsa", func(ref string) error {
			_, err := o.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(ref), Plaintext: msg, EncryptionAlgorithm: oaep})
			return err
		}},
		{"Decrypt", "rsa", func(ref string) error {
			_, err := o.Decrypt(ctxT(t), &kms.DecryptInput{KeyId: aws.String(ref), CiphertextBlob: ct, EncryptionAlgorithm: oaep})
			return err
		}},
		{"Sign", "ecc", func(ref string) error {
			_, err := o.Sign(ctxT(t), &kms.SignInput{KeyId: aws.String(ref), Message: msg, SigningAlgorithm: ecdsa256})
			return err
		}},
		{"Verify", "ecc", func(ref string) error {
			_, err := o.Verify(ctxT(t), &kms.VerifyInput{KeyId: aws.String(ref), Message: msg, Signature: sig.Signature, SigningAlgorithm: ecdsa256})
			return err
		}},
		{"GenerateMac", "hmac", func(ref string) error {
			_, err := o.GenerateMac(ctxT(t), &kms.GenerateMacInput{KeyId: aws.String(ref), Message: msg, MacAlgorithm: hmac256})
			return err
		}},
		{"VerifyMac", "hmac", func(ref string) error {
			_, err := o.VerifyMac(ctxT(t), &kms.VerifyMacInput{KeyId: aws.String(ref), Message: msg, Mac: mac.Mac, MacAlgorithm: hmac256})
			return err
		}},
		{"GenerateDataKeyPair", "sym", func(ref string) error {
			_, err := o.GenerateDataKeyPair(ctxT(t), &kms.GenerateDataKeyPairInput{KeyId: aws.String(ref), KeyPairSpec: types.DataKeyPairSpecEccNistP256})
			return err
		}},
	}
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			t.Parallel()
			k := keys[op.key]
			wantAPIError(t, op.call(k.ARN), "AccessDeniedException", 400)
			wantKMSError(t, op.call(k.ID), "NotFoundException")
		})
	}
}
