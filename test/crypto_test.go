package test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/google/uuid"
)

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestEncryptDecrypt(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	md := createKey(t, c)
	id, arn := aws.ToString(md.KeyId), aws.ToString(md.Arn)
	other := createKey(t, c)

	t.Run("round trip", func(t *testing.T) {
		t.Parallel()
		for _, n := range []int{1, 16, 4096} {
			pt := randomBytes(t, n)
			out, err := c.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(id), Plaintext: pt})
			if err != nil {
				t.Fatalf("Encrypt %d bytes: %v", n, err)
			}
			if got := aws.ToString(out.KeyId); got != arn {
				t.Errorf("Encrypt KeyId %q, want the key ARN %q", got, arn)
			}
			if out.EncryptionAlgorithm != types.EncryptionAlgorithmSpecSymmetricDefault {
				t.Errorf("Encrypt EncryptionAlgorithm %q", out.EncryptionAlgorithm)
			}
			if bytes.Contains(out.CiphertextBlob, pt) && n >= 16 {
				t.Errorf("the ciphertext blob contains the plaintext")
			}
			dec := decrypt(t, c, out.CiphertextBlob, nil)
			if !bytes.Equal(dec.Plaintext, pt) {
				t.Fatalf("%d bytes: decrypted %x, want %x", n, dec.Plaintext, pt)
			}
			if got := aws.ToString(dec.KeyId); got != arn {
				t.Errorf("Decrypt KeyId %q, want %q", got, arn)
			}
			if dec.EncryptionAlgorithm != types.EncryptionAlgorithmSpecSymmetricDefault {
				t.Errorf("Decrypt EncryptionAlgorithm %q", dec.EncryptionAlgorithm)
			}
			if got, want := aws.ToString(dec.KeyMaterialId), aws.ToString(md.CurrentKeyMaterialId); got != want {
				t.Errorf("Decrypt KeyMaterialId %q, DescribeKey says %q", got, want)
			}
		}
	})

	t.Run("encrypt by ARN", func(t *testing.T) {
		t.Parallel()
		blob := encrypt(t, c, arn, []byte("by arn"), nil)
		if got := decrypt(t, c, blob, nil).Plaintext; string(got) != "by arn" {
			t.Errorf("got %q", got)
		}
	})

	t.Run("4097 bytes refused", func(t *testing.T) {
		t.Parallel()
		_, err := c.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(id), Plaintext: make([]byte, 4097)})
		ae := wantAPIError(t, err, "ValidationException", 400)
		wantMessage(t, ae, "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: Member must have length less than or equal to 4096")
	})

	t.Run("empty plaintext refused", func(t *testing.T) {
		t.Parallel()
		_, err := c.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(id), Plaintext: []byte{}})
		if err == nil {
			t.Fatal("Encrypt of an empty plaintext succeeded")
		}
		// Whatever the SDK does, the server must refuse it on the wire.
		r := s.call(t, "TrentService.Encrypt", []byte(`{"KeyId":"`+id+`","Plaintext":""}`))
		r.wantError(t, 400, "ValidationException")
		r = s.call(t, "TrentService.Encrypt", []byte(`{"KeyId":"`+id+`"}`))
		r.wantError(t, 400, "ValidationException")
	})

	t.Run("random IV", func(t *testing.T) {
		t.Parallel()
		pt := []byte("same plaintext twice")
		a := encrypt(t, c, id, pt, nil)
		b := encrypt(t, c, id, pt, nil)
		if bytes.Equal(a, b) {
			t.Fatal("two encryptions of the same plaintext gave the same blob")
		}
		if bytes.Equal(a[21:33], b[21:33]) {
			t.Error("two encryptions used the same IV")
		}
	})

	t.Run("encryption context", func(t *testing.T) {
		t.Parallel()
		ec := map[string]string{"purpose": "e2e", "tenant": "42"}
		pt := []byte("bound to context")
		blob := encrypt(t, c, id, pt, ec)
		// Same pairs in another order (a map built the other way round).
		reordered := map[string]string{}
		reordered["tenant"] = "42"
		reordered["purpose"] = "e2e"
		if got := decrypt(t, c, blob, reordered).Plaintext; !bytes.Equal(got, pt) {
			t.Fatalf("decrypt with context gave %q", got)
		}
		// The order of pairs on the wire does not matter either.
		for _, body := range []string{
			`{"CiphertextBlob":"` + base64.StdEncoding.EncodeToString(blob) + `","EncryptionContext":{"purpose":"e2e","tenant":"42"}}`,
			`{"CiphertextBlob":"` + base64.StdEncoding.EncodeToString(blob) + `","EncryptionContext":{"tenant":"42","purpose":"e2e"}}`,
		} {
			r := s.call(t, "TrentService.Decrypt", []byte(body))
			if r.Status != 200 {
				t.Fatalf("raw Decrypt with context %s: %d %s", body, r.Status, r.Body)
			}
		}
		bad := map[string]map[string]string{
			"missing":         nil,
			"empty":           {},
			"different value": {"purpose": "e2e", "tenant": "43"},
			"different key":   {"purpose": "e2e", "tenant2": "42"},
			"one pair fewer":  {"purpose": "e2e"},
			"extra pair":      {"purpose": "e2e", "tenant": "42", "extra": "x"},
			"values swapped":  {"purpose": "42", "tenant": "e2e"},
		}
		for name, ec := range bad {
			_, err := c.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: blob, EncryptionContext: ec})
			ae := wantAPIError(t, err, "InvalidCiphertextException", 400)
			wantType[*types.InvalidCiphertextException](t, err)
			if ae.ErrorMessage() != "" {
				t.Errorf("%s context: InvalidCiphertextException message %q, want empty", name, ae.ErrorMessage())
			}
		}
		// A blob made without context does not decrypt with one.
		plain := encrypt(t, c, id, pt, nil)
		_, err := c.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: plain, EncryptionContext: map[string]string{"a": "b"}})
		wantAPIError(t, err, "InvalidCiphertextException", 400)
	})

	t.Run("tampered blob", func(t *testing.T) {
		t.Parallel()
		pt := []byte("sixteen byte msg")
		blob := encrypt(t, c, id, pt, nil)
		if len(blob) != 33+len(pt)+16 {
			t.Fatalf("blob is %d bytes, want %d", len(blob), 33+len(pt)+16)
		}
		positions := map[string]int{
			"version":            0,
			"key id first byte":  1,
			"key id last byte":   16,
			"key version high":   17,
			"key version low":    20,
			"IV first byte":      21,
			"IV last byte":       32,
			"ciphertext first":   33,
			"ciphertext last":    33 + len(pt) - 1,
			"tag first byte":     len(blob) - 16,
			"tag last byte":      len(blob) - 1,
			"tag middle, flip 7": len(blob) - 8,
		}
		for name, pos := range positions {
			bad := bytes.Clone(blob)
			bad[pos] ^= 0x01
			if name == "tag middle, flip 7" {
				bad[pos] ^= 0x81
			}
			_, err := c.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: bad})
			if err == nil {
				t.Errorf("%s (byte %d) flipped: Decrypt succeeded", name, pos)
				continue
			}
			ae := wantAPIError(t, err, "InvalidCiphertextException", 400)
			if ae.ErrorMessage() != "" {
				t.Errorf("%s: message %q, want empty", name, ae.ErrorMessage())
			}
		}
		for _, n := range []int{1, 32, 33, 49, len(blob) - 1} {
			_, err := c.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: blob[:n]})
			if err == nil {
				t.Errorf("blob truncated to %d bytes: Decrypt succeeded", n)
				continue
			}
			wantAPIError(t, err, "InvalidCiphertextException", 400)
		}
		// Bytes appended after the tag.
		_, err := c.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: append(bytes.Clone(blob), 0)})
		wantAPIError(t, err, "InvalidCiphertextException", 400)
		// The untouched blob still decrypts.
		if got := decrypt(t, c, blob, nil).Plaintext; !bytes.Equal(got, pt) {
			t.Errorf("untouched blob gave %q", got)
		}
	})

	t.Run("ciphertext of 6145 bytes refused", func(t *testing.T) {
		t.Parallel()
		_, err := c.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: make([]byte, 6145)})
		wantAPIError(t, err, "ValidationException", 400)
	})

	t.Run("KeyId in Decrypt", func(t *testing.T) {
		t.Parallel()
		blob := encrypt(t, c, id, []byte("which key"), nil)
		for _, ref := range []string{id, arn} {
			out, err := c.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: blob, KeyId: aws.String(ref)})
			if err != nil {
				t.Fatalf("Decrypt with the right KeyId %s: %v", ref, err)
			}
			if string(out.Plaintext) != "which key" || aws.ToString(out.KeyId) != arn {
				t.Errorf("Decrypt with KeyId %s: %q %q", ref, out.Plaintext, aws.ToString(out.KeyId))
			}
		}
		for _, ref := range []string{aws.ToString(other.KeyId), aws.ToString(other.Arn)} {
			_, err := c.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: blob, KeyId: aws.String(ref)})
			ae := wantAPIError(t, err, "IncorrectKeyException", 400)
			wantType[*types.IncorrectKeyException](t, err)
			wantMessage(t, ae, "The key ID in the request does not identify a CMK that can perform this operation.")
		}
		_, err := c.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: blob, KeyId: aws.String(uuid.NewString())})
		wantAPIError(t, err, "NotFoundException", 400)
	})

	t.Run("asymmetric algorithm on a symmetric key", func(t *testing.T) {
		t.Parallel()
		_, err := c.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(id), Plaintext: []byte("x"),
			EncryptionAlgorithm: types.EncryptionAlgorithmSpecRsaesOaepSha256})
		wantAPIError(t, err, "InvalidKeyUsageException", 400)
		wantType[*types.InvalidKeyUsageException](t, err)
		blob := encrypt(t, c, id, []byte("x"), nil)
		_, err = c.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: blob,
			EncryptionAlgorithm: types.EncryptionAlgorithmSpecRsaesOaepSha256})
		wantAPIError(t, err, "InvalidKeyUsageException", 400)
		// The explicit symmetric algorithm is fine.
		if _, err := c.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: blob,
			EncryptionAlgorithm: types.EncryptionAlgorithmSpecSymmetricDefault}); err != nil {
			t.Errorf("Decrypt with SYMMETRIC_DEFAULT: %v", err)
		}
	})

	t.Run("unknown key", func(t *testing.T) {
		t.Parallel()
		u := uuid.NewString()
		_, err := c.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(u), Plaintext: []byte("x")})
		ae := wantAPIError(t, err, "NotFoundException", 400)
		wantMessage(t, ae, "Key '"+keyARN(mainAccount, u)+"' does not exist")
		_, err = c.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String("alias/nope"), Plaintext: []byte("x")})
		wantAPIError(t, err, "NotFoundException", 400)
	})

	t.Run("another account", func(t *testing.T) {
		t.Parallel()
		o := s.other()
		blob := encrypt(t, c, id, []byte("not yours"), nil)
		_, err := o.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: blob})
		wantAPIError(t, err, "AccessDeniedException", 400)
		_, err = o.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(arn), Plaintext: []byte("x")})
		wantAPIError(t, err, "AccessDeniedException", 400)
		_, err = o.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(id), Plaintext: []byte("x")})
		wantAPIError(t, err, "NotFoundException", 400)
	})
}

func TestDryRun(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	a, b := createKey(t, c), createKey(t, c)
	aID, bID := aws.ToString(a.KeyId), aws.ToString(b.KeyId)
	blob := encrypt(t, c, aID, []byte("dry"), nil)
	yes := aws.Bool(true)

	check := func(t *testing.T, name string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s DryRun succeeded", name)
			return
		}
		wantAPIError(t, err, "DryRunOperationException", 0)
		wantType[*types.DryRunOperationException](t, err)
	}
	_, err := c.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(aID), Plaintext: []byte("x"), DryRun: yes})
	check(t, "Encrypt", err)
	_, err = c.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: blob, DryRun: yes})
	check(t, "Decrypt", err)
	_, err = c.ReEncrypt(ctxT(t), &kms.ReEncryptInput{CiphertextBlob: blob, DestinationKeyId: aws.String(bID), DryRun: yes})
	check(t, "ReEncrypt", err)
	_, err = c.GenerateDataKey(ctxT(t), &kms.GenerateDataKeyInput{KeyId: aws.String(aID), KeySpec: types.DataKeySpecAes256, DryRun: yes})
	check(t, "GenerateDataKey", err)
	_, err = c.GenerateDataKeyWithoutPlaintext(ctxT(t), &kms.GenerateDataKeyWithoutPlaintextInput{KeyId: aws.String(aID), KeySpec: types.DataKeySpecAes256, DryRun: yes})
	check(t, "GenerateDataKeyWithoutPlaintext", err)

	// A DryRun still checks the request: a bad blob is not a dry-run success.
	_, err = c.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: blob[:20], DryRun: yes})
	wantAPIError(t, err, "InvalidCiphertextException", 400)
	_, err = c.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(uuid.NewString()), Plaintext: []byte("x"), DryRun: yes})
	wantAPIError(t, err, "NotFoundException", 400)

	// DryRun with a disabled key reports the key state, not dry-run success.
	if _, err := c.DisableKey(ctxT(t), &kms.DisableKeyInput{KeyId: aws.String(aID)}); err != nil {
		t.Fatal(err)
	}
	_, err = c.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(aID), Plaintext: []byte("x"), DryRun: yes})
	wantAPIError(t, err, "DisabledException", 400)
	_, err = c.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: blob, DryRun: yes})
	wantAPIError(t, err, "DisabledException", 400)
	_, err = c.GenerateDataKey(ctxT(t), &kms.GenerateDataKeyInput{KeyId: aws.String(aID), KeySpec: types.DataKeySpecAes256, DryRun: yes})
	wantAPIError(t, err, "DisabledException", 400)
	blobB := encrypt(t, c, bID, []byte("b"), nil)
	_, err = c.ReEncrypt(ctxT(t), &kms.ReEncryptInput{CiphertextBlob: blobB, DestinationKeyId: aws.String(aID), DryRun: yes})
	wantAPIError(t, err, "DisabledException", 400)
}

func TestReEncrypt(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c, rec := s.recordingClient()
	a, b := createKey(t, c), createKey(t, c)
	aID, aARN := aws.ToString(a.KeyId), aws.ToString(a.Arn)
	bID, bARN := aws.ToString(b.KeyId), aws.ToString(b.Arn)
	pt := []byte("ReEncrypt secret payload 0123456789 abcdefghijklmnopqrstuvwxyz")
	srcCtx := map[string]string{"stage": "source"}
	dstCtx := map[string]string{"stage": "destination", "n": "2"}
	blobA := encrypt(t, c, aID, pt, srcCtx)

	out, err := c.ReEncrypt(ctxT(t), &kms.ReEncryptInput{
		CiphertextBlob: blobA, SourceEncryptionContext: srcCtx,
		DestinationKeyId: aws.String(bID), DestinationEncryptionContext: dstCtx,
	})
	if err != nil {
		t.Fatalf("ReEncrypt A->B: %v", err)
	}
	if got := aws.ToString(out.SourceKeyId); got != aARN {
		t.Errorf("SourceKeyId %q, want %q", got, aARN)
	}
	if got := aws.ToString(out.KeyId); got != bARN {
		t.Errorf("KeyId %q, want %q", got, bARN)
	}
	if out.SourceEncryptionAlgorithm != types.EncryptionAlgorithmSpecSymmetricDefault ||
		out.DestinationEncryptionAlgorithm != types.EncryptionAlgorithmSpecSymmetricDefault {
		t.Errorf("algorithms %q / %q", out.SourceEncryptionAlgorithm, out.DestinationEncryptionAlgorithm)
	}
	if got, want := aws.ToString(out.SourceKeyMaterialId), aws.ToString(a.CurrentKeyMaterialId); got != want {
		t.Errorf("SourceKeyMaterialId %q, want A's %q", got, want)
	}
	if got, want := aws.ToString(out.DestinationKeyMaterialId), aws.ToString(b.CurrentKeyMaterialId); got != want {
		t.Errorf("DestinationKeyMaterialId %q, want B's %q", got, want)
	}
	blobB := out.CiphertextBlob

	// The new blob decrypts under B, with the destination context only.
	dec := decrypt(t, c, blobB, dstCtx)
	if !bytes.Equal(dec.Plaintext, pt) {
		t.Fatalf("re-encrypted blob decrypts to %q", dec.Plaintext)
	}
	if got := aws.ToString(dec.KeyId); got != bARN {
		t.Errorf("Decrypt KeyId %q, want B %q", got, bARN)
	}
	for name, ec := range map[string]map[string]string{"no context": nil, "source context": srcCtx} {
		_, err := c.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: blobB, EncryptionContext: ec})
		if err == nil {
			t.Errorf("re-encrypted blob decrypts with %s", name)
			continue
		}
		wantAPIError(t, err, "InvalidCiphertextException", 400)
	}
	_, err = c.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: blobB, EncryptionContext: dstCtx, KeyId: aws.String(aID)})
	wantAPIError(t, err, "IncorrectKeyException", 400)

	// The plaintext is never in a ReEncrypt response.
	b64 := base64.StdEncoding.EncodeToString(pt)
	for _, x := range rec.byTarget("TrentService.ReEncrypt") {
		if bytes.Contains(x.Response, pt) || bytes.Contains(x.Response, []byte(b64)) ||
			bytes.Contains(x.Response, []byte(b64[:len(b64)-4])) {
			t.Errorf("a ReEncrypt response holds the plaintext: %s", x.Response)
		}
		var m map[string]any
		if err := json.Unmarshal(x.Response, &m); err != nil {
			t.Errorf("ReEncrypt response is not JSON: %v", err)
		} else if _, ok := m["Plaintext"]; ok {
			t.Errorf("ReEncrypt response has a Plaintext member")
		}
	}

	t.Run("SourceKeyId", func(t *testing.T) {
		for _, ref := range []string{aID, aARN} {
			_, err := c.ReEncrypt(ctxT(t), &kms.ReEncryptInput{CiphertextBlob: blobA, SourceEncryptionContext: srcCtx,
				SourceKeyId: aws.String(ref), DestinationKeyId: aws.String(bID)})
			if err != nil {
				t.Errorf("ReEncrypt with SourceKeyId %s: %v", ref, err)
			}
		}
		_, err := c.ReEncrypt(ctxT(t), &kms.ReEncryptInput{CiphertextBlob: blobA, SourceEncryptionContext: srcCtx,
			SourceKeyId: aws.String(bID), DestinationKeyId: aws.String(bID)})
		ae := wantAPIError(t, err, "IncorrectKeyException", 400)
		wantMessage(t, ae, "The key ID in the request does not identify a CMK that can perform this operation.")
	})

	t.Run("source context checked", func(t *testing.T) {
		for _, ec := range []map[string]string{nil, {"stage": "other"}, dstCtx} {
			_, err := c.ReEncrypt(ctxT(t), &kms.ReEncryptInput{CiphertextBlob: blobA, SourceEncryptionContext: ec,
				DestinationKeyId: aws.String(bID)})
			ae := wantAPIError(t, err, "InvalidCiphertextException", 400)
			if ae.ErrorMessage() != "" {
				t.Errorf("message %q, want empty", ae.ErrorMessage())
			}
		}
	})

	t.Run("same key, new context", func(t *testing.T) {
		newCtx := map[string]string{"rotated": "context"}
		out, err := c.ReEncrypt(ctxT(t), &kms.ReEncryptInput{CiphertextBlob: blobA, SourceEncryptionContext: srcCtx,
			DestinationKeyId: aws.String(aARN), DestinationEncryptionContext: newCtx})
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToString(out.KeyId) != aARN || aws.ToString(out.SourceKeyId) != aARN {
			t.Errorf("KeyId %q SourceKeyId %q, want both %q", aws.ToString(out.KeyId), aws.ToString(out.SourceKeyId), aARN)
		}
		if bytes.Equal(out.CiphertextBlob, blobA) {
			t.Error("same-key ReEncrypt returned the input blob")
		}
		if got := decrypt(t, c, out.CiphertextBlob, newCtx).Plaintext; !bytes.Equal(got, pt) {
			t.Errorf("decrypts to %q", got)
		}
		_, err = c.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: out.CiphertextBlob, EncryptionContext: srcCtx})
		wantAPIError(t, err, "InvalidCiphertextException", 400)
	})

	t.Run("destination key", func(t *testing.T) {
		u := uuid.NewString()
		_, err := c.ReEncrypt(ctxT(t), &kms.ReEncryptInput{CiphertextBlob: blobA, SourceEncryptionContext: srcCtx,
			DestinationKeyId: aws.String(u)})
		ae := wantAPIError(t, err, "NotFoundException", 400)
		wantMessage(t, ae, "Key '"+keyARN(mainAccount, u)+"' does not exist")
		_, err = c.ReEncrypt(ctxT(t), &kms.ReEncryptInput{CiphertextBlob: blobA, SourceEncryptionContext: srcCtx,
			DestinationKeyId: aws.String("not-a-key")})
		wantAPIError(t, err, "NotFoundException", 400)
		// The SDK refuses a missing DestinationKeyId itself; on the wire it is a ValidationException.
		r := s.callJSON(t, "TrentService.ReEncrypt", map[string]any{
			"CiphertextBlob": blobA, "SourceEncryptionContext": srcCtx,
		})
		r.wantError(t, 400, "ValidationException")
		r = s.callJSON(t, "TrentService.ReEncrypt", map[string]any{
			"CiphertextBlob": blobA, "SourceEncryptionContext": srcCtx, "DestinationKeyId": "",
		})
		r.wantError(t, 400, "ValidationException")
		_, err = c.ReEncrypt(ctxT(t), &kms.ReEncryptInput{CiphertextBlob: blobA, SourceEncryptionContext: srcCtx,
			DestinationKeyId: aws.String(bID), DestinationEncryptionAlgorithm: types.EncryptionAlgorithmSpecRsaesOaepSha1})
		wantAPIError(t, err, "InvalidKeyUsageException", 400)
	})
}

func TestGenerateDataKey(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c, rec := s.recordingClient()
	md := createKey(t, c)
	id, arn := aws.ToString(md.KeyId), aws.ToString(md.Arn)

	sizes := []struct {
		name string
		in   kms.GenerateDataKeyInput
		n    int
	}{
		{"AES_256", kms.GenerateDataKeyInput{KeySpec: types.DataKeySpecAes256}, 32},
		{"AES_128", kms.GenerateDataKeyInput{KeySpec: types.DataKeySpecAes128}, 16},
		{"1 byte", kms.GenerateDataKeyInput{NumberOfBytes: aws.Int32(1)}, 1},
		{"1024 bytes", kms.GenerateDataKeyInput{NumberOfBytes: aws.Int32(1024)}, 1024},
	}
	for _, tc := range sizes {
		in := tc.in
		in.KeyId = aws.String(id)
		out, err := c.GenerateDataKey(ctxT(t), &in)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if len(out.Plaintext) != tc.n {
			t.Errorf("%s: Plaintext is %d bytes, want %d", tc.name, len(out.Plaintext), tc.n)
		}
		if aws.ToString(out.KeyId) != arn {
			t.Errorf("%s: KeyId %q, want %q", tc.name, aws.ToString(out.KeyId), arn)
		}
		if got, want := aws.ToString(out.KeyMaterialId), aws.ToString(md.CurrentKeyMaterialId); got != want {
			t.Errorf("%s: KeyMaterialId %q, want %q", tc.name, got, want)
		}
		if got := decrypt(t, c, out.CiphertextBlob, nil).Plaintext; !bytes.Equal(got, out.Plaintext) {
			t.Errorf("%s: the blob decrypts to another key", tc.name)
		}
		if tc.n >= 16 && bytes.Equal(out.Plaintext, make([]byte, tc.n)) {
			t.Errorf("%s: data key is all zeros", tc.name)
		}
	}

	t.Run("two data keys differ", func(t *testing.T) {
		in := &kms.GenerateDataKeyInput{KeyId: aws.String(id), KeySpec: types.DataKeySpecAes256}
		x, err := c.GenerateDataKey(ctxT(t), in)
		if err != nil {
			t.Fatal(err)
		}
		y, err := c.GenerateDataKey(ctxT(t), in)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(x.Plaintext, y.Plaintext) {
			t.Error("two data keys are equal")
		}
	})

	t.Run("parameter checks", func(t *testing.T) {
		bad := []struct {
			name string
			in   kms.GenerateDataKeyInput
		}{
			{"KeySpec and NumberOfBytes", kms.GenerateDataKeyInput{KeySpec: types.DataKeySpecAes256, NumberOfBytes: aws.Int32(32)}},
			{"neither", kms.GenerateDataKeyInput{}},
			{"NumberOfBytes 0", kms.GenerateDataKeyInput{NumberOfBytes: aws.Int32(0)}},
			{"NumberOfBytes 1025", kms.GenerateDataKeyInput{NumberOfBytes: aws.Int32(1025)}},
			{"KeySpec not in the enum", kms.GenerateDataKeyInput{KeySpec: types.DataKeySpec("AES_512")}},
		}
		for _, tc := range bad {
			in := tc.in
			in.KeyId = aws.String(id)
			_, err := c.GenerateDataKey(ctxT(t), &in)
			if err == nil {
				t.Errorf("%s: succeeded", tc.name)
				continue
			}
			wantAPIError(t, err, "ValidationException", 400)
		}
		_, err := c.GenerateDataKey(ctxT(t), &kms.GenerateDataKeyInput{KeyId: aws.String(id), NumberOfBytes: aws.Int32(1025)})
		ae := wantAPIError(t, err, "ValidationException", 400)
		wantMessage(t, ae, "1 validation error detected: Value '1025' at 'numberOfBytes' failed to satisfy constraint: Member must have value less than or equal to 1024")
		_, err = c.GenerateDataKey(ctxT(t), &kms.GenerateDataKeyInput{KeyId: aws.String(uuid.NewString()), KeySpec: types.DataKeySpecAes256})
		wantAPIError(t, err, "NotFoundException", 400)
	})

	t.Run("context bound", func(t *testing.T) {
		ec := map[string]string{"file": "report.pdf"}
		out, err := c.GenerateDataKey(ctxT(t), &kms.GenerateDataKeyInput{KeyId: aws.String(id), KeySpec: types.DataKeySpecAes256, EncryptionContext: ec})
		if err != nil {
			t.Fatal(err)
		}
		if got := decrypt(t, c, out.CiphertextBlob, ec).Plaintext; !bytes.Equal(got, out.Plaintext) {
			t.Error("blob with context decrypts to another key")
		}
		_, err = c.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: out.CiphertextBlob})
		wantAPIError(t, err, "InvalidCiphertextException", 400)
	})

	t.Run("without plaintext", func(t *testing.T) {
		ec := map[string]string{"k": "v"}
		out, err := c.GenerateDataKeyWithoutPlaintext(ctxT(t), &kms.GenerateDataKeyWithoutPlaintextInput{
			KeyId: aws.String(arn), KeySpec: types.DataKeySpecAes256, EncryptionContext: ec})
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToString(out.KeyId) != arn {
			t.Errorf("KeyId %q, want %q", aws.ToString(out.KeyId), arn)
		}
		raw := rec.last(t, "TrentService.GenerateDataKeyWithoutPlaintext")
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw.Response, &m); err != nil {
			t.Fatalf("response is not JSON: %v", err)
		}
		if _, ok := m["Plaintext"]; ok {
			t.Errorf("GenerateDataKeyWithoutPlaintext response has a Plaintext member: %s", raw.Response)
		}
		if _, ok := m["CiphertextBlob"]; !ok {
			t.Errorf("response has no CiphertextBlob: %s", raw.Response)
		}
		dk := decrypt(t, c, out.CiphertextBlob, ec).Plaintext
		if len(dk) != 32 {
			t.Errorf("blob decrypts to %d bytes, want 32", len(dk))
		}
		for _, bad := range []kms.GenerateDataKeyWithoutPlaintextInput{
			{KeyId: aws.String(id)},
			{KeyId: aws.String(id), KeySpec: types.DataKeySpecAes128, NumberOfBytes: aws.Int32(16)},
		} {
			_, err := c.GenerateDataKeyWithoutPlaintext(ctxT(t), &bad)
			wantAPIError(t, err, "ValidationException", 400)
		}
	})
}

func TestGenerateRandom(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	for _, n := range []int32{1, 1024} {
		out, err := c.GenerateRandom(ctxT(t), &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(n)})
		if err != nil {
			t.Fatalf("GenerateRandom(%d): %v", n, err)
		}
		if len(out.Plaintext) != int(n) {
			t.Errorf("GenerateRandom(%d) gave %d bytes", n, len(out.Plaintext))
		}
	}
	x, err := c.GenerateRandom(ctxT(t), &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(32)})
	if err != nil {
		t.Fatal(err)
	}
	y, err := c.GenerateRandom(ctxT(t), &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(32)})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(x.Plaintext, y.Plaintext) {
		t.Error("two GenerateRandom calls gave the same bytes")
	}
	if bytes.Equal(x.Plaintext, make([]byte, 32)) {
		t.Error("GenerateRandom gave zeros")
	}

	cases := []struct {
		n   *int32
		msg string
	}{
		{aws.Int32(0), "1 validation error detected: Value '0' at 'numberOfBytes' failed to satisfy constraint: Member must have value greater than or equal to 1"},
		{aws.Int32(1025), "1 validation error detected: Value '1025' at 'numberOfBytes' failed to satisfy constraint: Member must have value less than or equal to 1024"},
		{nil, "NumberOfBytes is required."},
	}
	for _, tc := range cases {
		_, err := c.GenerateRandom(ctxT(t), &kms.GenerateRandomInput{NumberOfBytes: tc.n})
		ae := wantAPIError(t, err, "ValidationException", 400)
		wantMessage(t, ae, tc.msg)
	}
}
