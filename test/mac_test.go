package test

import (
	"bytes"
	"encoding/base64"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

// TestMac covers GenerateMac and VerifyMac with every HMAC key spec.
func TestMac(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	mac := types.KeyUsageTypeGenerateVerifyMac
	keys := createKeys(t, c,
		keyReq{"HMAC_224", types.KeySpecHmac224, mac},
		keyReq{"HMAC_256", types.KeySpecHmac256, mac},
		keyReq{"HMAC_384", types.KeySpecHmac384, mac},
		keyReq{"HMAC_512", types.KeySpecHmac512, mac},
		keyReq{"HMAC_256 b", types.KeySpecHmac256, mac},
		keyReq{"sym", types.KeySpecSymmetricDefault, types.KeyUsageTypeEncryptDecrypt},
		keyReq{"ecc", types.KeySpecEccNistP256, types.KeyUsageTypeSignVerify},
	)
	generate := func(t *testing.T, id string, alg types.MacAlgorithmSpec, msg []byte) []byte {
		t.Helper()
		out, err := c.GenerateMac(ctxT(t), &kms.GenerateMacInput{KeyId: aws.String(id), Message: msg, MacAlgorithm: alg})
		if err != nil {
			t.Fatalf("GenerateMac: %v", err)
		}
		return out.Mac
	}
	verify := func(t *testing.T, id string, alg types.MacAlgorithmSpec, msg, m []byte) (*kms.VerifyMacOutput, error) {
		t.Helper()
		return c.VerifyMac(ctxT(t), &kms.VerifyMacInput{KeyId: aws.String(id), Message: msg, Mac: m, MacAlgorithm: alg})
	}

	specs := []struct {
		key  string
		alg  types.MacAlgorithmSpec
		size int
	}{
		{"HMAC_224", types.MacAlgorithmSpecHmacSha224, 28},
		{"HMAC_256", types.MacAlgorithmSpecHmacSha256, 32},
		{"HMAC_384", types.MacAlgorithmSpecHmacSha384, 48},
		{"HMAC_512", types.MacAlgorithmSpecHmacSha512, 64},
	}
	for _, sp := range specs {
		k := keys[sp.key]
		t.Run(sp.key, func(t *testing.T) {
			t.Parallel()
			msg := []byte("a message to authenticate")
			out, err := c.GenerateMac(ctxT(t), &kms.GenerateMacInput{KeyId: aws.String(k.ID), Message: msg, MacAlgorithm: sp.alg})
			if err != nil {
				t.Fatalf("GenerateMac: %v", err)
			}
			m := out.Mac
			if len(m) != sp.size {
				t.Errorf("MAC is %d bytes, want %d", len(m), sp.size)
			}
			if got := aws.ToString(out.KeyId); got != k.ARN {
				t.Errorf("GenerateMac KeyId %q, want %q", got, k.ARN)
			}
			if out.MacAlgorithm != sp.alg {
				t.Errorf("GenerateMac MacAlgorithm %q, want %q", out.MacAlgorithm, sp.alg)
			}
			if again := generate(t, k.ARN, sp.alg, msg); !bytes.Equal(again, m) {
				t.Errorf("two MACs of one message differ: %x, %x", m, again)
			}
			if other := generate(t, k.ID, sp.alg, []byte("a message to authenticatE")); bytes.Equal(other, m) {
				t.Error("two messages have the same MAC")
			}
			for _, n := range []int{1, 4096} {
				big := randomBytes(t, n)
				bm := generate(t, k.ID, sp.alg, big)
				if _, err := verify(t, k.ID, sp.alg, big, bm); err != nil {
					t.Errorf("VerifyMac of a %d-byte message: %v", n, err)
				}
			}

			v, err := verify(t, k.ID, sp.alg, msg, m)
			if err != nil {
				t.Fatalf("VerifyMac: %v", err)
			}
			if !v.MacValid {
				t.Error("VerifyMac succeeded with MacValid false")
			}
			if got := aws.ToString(v.KeyId); got != k.ARN {
				t.Errorf("VerifyMac KeyId %q, want %q", got, k.ARN)
			}
			if v.MacAlgorithm != sp.alg {
				t.Errorf("VerifyMac MacAlgorithm %q, want %q", v.MacAlgorithm, sp.alg)
			}

			bad := map[string]struct{ msg, mac []byte }{
				"message bit flipped":  {flip(msg, 0), m},
				"message extended":     {append(bytes.Clone(msg), 'x'), m},
				"MAC first bit":        {msg, flip(m, 0)},
				"MAC last bit":         {msg, flip(m, len(m)-1)},
				"MAC truncated by one": {msg, m[:len(m)-1]},
				"MAC truncated to 16":  {msg, m[:16]},
				"MAC extended":         {msg, append(bytes.Clone(m), 0)},
			}
			for name, tc := range bad {
				_, err := verify(t, k.ID, sp.alg, tc.msg, tc.mac)
				if err == nil {
					t.Errorf("%s: VerifyMac succeeded", name)
					continue
				}
				wantKMSError(t, err, "KMSInvalidMacException")
			}
		})
	}

	t.Run("keys differ", func(t *testing.T) {
		t.Parallel()
		msg := []byte("same message, two keys")
		a := generate(t, keys["HMAC_256"].ID, types.MacAlgorithmSpecHmacSha256, msg)
		b := generate(t, keys["HMAC_256 b"].ID, types.MacAlgorithmSpecHmacSha256, msg)
		if bytes.Equal(a, b) {
			t.Fatal("two HMAC_256 keys give the same MAC")
		}
		_, err := verify(t, keys["HMAC_256 b"].ID, types.MacAlgorithmSpecHmacSha256, msg, a)
		wantKMSError(t, err, "KMSInvalidMacException")
	})

	t.Run("refusals", func(t *testing.T) {
		t.Parallel()
		msg := []byte("refused")
		cases := []struct {
			name string
			key  string
			alg  types.MacAlgorithmSpec
			msg  []byte
			code string
		}{
			{"HMAC_SHA_256 with an HMAC_224 key", "HMAC_224", types.MacAlgorithmSpecHmacSha256, msg, "InvalidKeyUsageException"},
			{"HMAC_SHA_224 with an HMAC_256 key", "HMAC_256", types.MacAlgorithmSpecHmacSha224, msg, "InvalidKeyUsageException"},
			{"HMAC_SHA_512 with an HMAC_384 key", "HMAC_384", types.MacAlgorithmSpecHmacSha512, msg, "InvalidKeyUsageException"},
			{"HMAC_SHA_384 with an HMAC_512 key", "HMAC_512", types.MacAlgorithmSpecHmacSha384, msg, "InvalidKeyUsageException"},
			{"symmetric encryption key", "sym", types.MacAlgorithmSpecHmacSha256, msg, "InvalidKeyUsageException"},
			{"ECC signing key", "ecc", types.MacAlgorithmSpecHmacSha256, msg, "InvalidKeyUsageException"},
			{"message of 4097 bytes", "HMAC_256", types.MacAlgorithmSpecHmacSha256, make([]byte, 4097), "ValidationException"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				id := keys[tc.key].ID
				_, err := c.GenerateMac(ctxT(t), &kms.GenerateMacInput{KeyId: aws.String(id), Message: tc.msg, MacAlgorithm: tc.alg})
				wantKMSError(t, err, tc.code)
				_, err = verify(t, id, tc.alg, tc.msg, make([]byte, 32))
				wantKMSError(t, err, tc.code)
			})
		}
		// Members the SDK itself would refuse, on the wire.
		id := keys["HMAC_256"].ID
		m64 := base64.StdEncoding.EncodeToString(msg)
		for name, body := range map[string]map[string]any{
			"no MacAlgorithm":      {"KeyId": id, "Message": m64},
			"unknown MacAlgorithm": {"KeyId": id, "Message": m64, "MacAlgorithm": "HMAC_SHA_1"},
			"empty Message":        {"KeyId": id, "Message": "", "MacAlgorithm": "HMAC_SHA_256"},
		} {
			r := s.callJSON(t, "TrentService.GenerateMac", body)
			if r.Status == 200 {
				t.Errorf("GenerateMac with %s succeeded", name)
				continue
			}
			r.wantError(t, 400, "ValidationException")
		}
	})

	t.Run("by alias", func(t *testing.T) {
		t.Parallel()
		k := keys["HMAC_384"]
		createAlias(t, c, "alias/e2e-mac", k.ARN)
		alg := types.MacAlgorithmSpecHmacSha384
		msg := []byte("authenticated through an alias")
		want := generate(t, k.ID, alg, msg)
		for _, ref := range []string{"alias/e2e-mac", aliasARN(mainAccount, "alias/e2e-mac")} {
			out, err := c.GenerateMac(ctxT(t), &kms.GenerateMacInput{KeyId: aws.String(ref), Message: msg, MacAlgorithm: alg})
			if err != nil {
				t.Fatalf("GenerateMac by %s: %v", ref, err)
			}
			if !bytes.Equal(out.Mac, want) {
				t.Errorf("GenerateMac by %s gave another MAC than by key id", ref)
			}
			if got := aws.ToString(out.KeyId); got != k.ARN {
				t.Errorf("GenerateMac by %s: KeyId %q, want the key ARN %q", ref, got, k.ARN)
			}
			v, err := verify(t, ref, alg, msg, want)
			if err != nil {
				t.Fatalf("VerifyMac by %s: %v", ref, err)
			}
			if got := aws.ToString(v.KeyId); got != k.ARN {
				t.Errorf("VerifyMac by %s: KeyId %q, want %q", ref, got, k.ARN)
			}
		}
	})

	t.Run("DryRun", func(t *testing.T) {
		t.Parallel()
		k := keys["HMAC_256"]
		msg := []byte("dry run")
		_, err := c.GenerateMac(ctxT(t), &kms.GenerateMacInput{KeyId: aws.String(k.ID), Message: msg,
			MacAlgorithm: types.MacAlgorithmSpecHmacSha256, DryRun: aws.Bool(true)})
		wantKMSError(t, err, "DryRunOperationException")
		m := generate(t, k.ID, types.MacAlgorithmSpecHmacSha256, msg)
		_, err = c.VerifyMac(ctxT(t), &kms.VerifyMacInput{KeyId: aws.String(k.ID), Message: msg, Mac: m,
			MacAlgorithm: types.MacAlgorithmSpecHmacSha256, DryRun: aws.Bool(true)})
		wantKMSError(t, err, "DryRunOperationException")
	})
}
