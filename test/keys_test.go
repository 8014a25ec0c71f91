package test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"
	"github.com/google/uuid"
)

var (
	hex64     = regexp.MustCompile(`^[0-9a-f]{64}$`)
	canonUUID = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
)

// checkDefaults asserts the metadata of a key made by CreateKey with no
// parameters but a description.
func checkDefaults(t *testing.T, md *types.KeyMetadata, description string) {
	t.Helper()
	id := aws.ToString(md.KeyId)
	if !canonUUID.MatchString(id) {
		t.Errorf("KeyId %q is not a canonical UUID", id)
	}
	if got, want := aws.ToString(md.Arn), keyARN(mainAccount, id); got != want {
		t.Errorf("Arn %q, want %q", got, want)
	}
	if got := aws.ToString(md.AWSAccountId); got != mainAccount {
		t.Errorf("AWSAccountId %q, want %q", got, mainAccount)
	}
	if md.KeySpec != types.KeySpecSymmetricDefault {
		t.Errorf("KeySpec %q", md.KeySpec)
	}
	if md.CustomerMasterKeySpec != types.CustomerMasterKeySpecSymmetricDefault {
		t.Errorf("CustomerMasterKeySpec %q", md.CustomerMasterKeySpec)
	}
	if md.KeyUsage != types.KeyUsageTypeEncryptDecrypt {
		t.Errorf("KeyUsage %q", md.KeyUsage)
	}
	if md.KeyState != types.KeyStateEnabled || !md.Enabled {
		t.Errorf("KeyState %q Enabled %v, want Enabled true", md.KeyState, md.Enabled)
	}
	if md.KeyManager != types.KeyManagerTypeCustomer {
		t.Errorf("KeyManager %q", md.KeyManager)
	}
	if md.Origin != types.OriginTypeAwsKms {
		t.Errorf("Origin %q", md.Origin)
	}
	if md.MultiRegion == nil || *md.MultiRegion {
		t.Errorf("MultiRegion %v, want false", md.MultiRegion)
	}
	if len(md.EncryptionAlgorithms) != 1 || md.EncryptionAlgorithms[0] != types.EncryptionAlgorithmSpecSymmetricDefault {
		t.Errorf("EncryptionAlgorithms %v", md.EncryptionAlgorithms)
	}
	if md.CreationDate == nil {
		t.Error("no CreationDate")
	} else if d := time.Since(*md.CreationDate); d < -time.Minute || d > time.Minute {
		t.Errorf("CreationDate %v is not within a minute of now", md.CreationDate)
	}
	if got := aws.ToString(md.Description); got != description {
		t.Errorf("Description %q, want %q", got, description)
	}
	if !hex64.MatchString(aws.ToString(md.CurrentKeyMaterialId)) {
		t.Errorf("CurrentKeyMaterialId %q is not 64 hex digits", aws.ToString(md.CurrentKeyMaterialId))
	}
}

func TestCreateKeyDefaults(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	out, err := c.CreateKey(ctxT(t), &kms.CreateKeyInput{Description: aws.String("e2e default key")})
	if err != nil {
		t.Fatal(err)
	}
	checkDefaults(t, out.KeyMetadata, "e2e default key")

	// DescribeKey gives the same description, by id and by ARN.
	for _, ref := range []string{aws.ToString(out.KeyMetadata.KeyId), aws.ToString(out.KeyMetadata.Arn)} {
		d, err := c.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: aws.String(ref)})
		if err != nil {
			t.Fatalf("DescribeKey(%s): %v", ref, err)
		}
		checkDefaults(t, d.KeyMetadata, "e2e default key")
		if aws.ToString(d.KeyMetadata.KeyId) != aws.ToString(out.KeyMetadata.KeyId) {
			t.Errorf("DescribeKey(%s) KeyId %q", ref, aws.ToString(d.KeyMetadata.KeyId))
		}
		if aws.ToString(d.KeyMetadata.CurrentKeyMaterialId) != aws.ToString(out.KeyMetadata.CurrentKeyMaterialId) {
			t.Errorf("CurrentKeyMaterialId changed between CreateKey and DescribeKey")
		}
		if !d.KeyMetadata.CreationDate.Equal(*out.KeyMetadata.CreationDate) {
			t.Errorf("CreationDate %v, CreateKey said %v", d.KeyMetadata.CreationDate, out.KeyMetadata.CreationDate)
		}
	}

	// A second key has another id and another material id.
	other := createKey(t, c)
	if aws.ToString(other.KeyId) == aws.ToString(out.KeyMetadata.KeyId) ||
		aws.ToString(other.CurrentKeyMaterialId) == aws.ToString(out.KeyMetadata.CurrentKeyMaterialId) {
		t.Errorf("two keys share an id or material id: %+v %+v", other, out.KeyMetadata)
	}
	// Explicit defaults are accepted.
	out2, err := c.CreateKey(ctxT(t), &kms.CreateKeyInput{
		KeySpec: types.KeySpecSymmetricDefault, KeyUsage: types.KeyUsageTypeEncryptDecrypt,
		Origin: types.OriginTypeAwsKms, Policy: aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow",` +
			`"Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}`),
	})
	if err != nil {
		t.Fatalf("CreateKey with explicit defaults: %v", err)
	}
	checkDefaults(t, out2.KeyMetadata, "")
}

func TestCreateKeyWithTags(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	tags := []types.Tag{
		{TagKey: aws.String("team"), TagValue: aws.String("payments")},
		{TagKey: aws.String("env"), TagValue: aws.String("")},
	}
	for i := 0; i < 48; i++ {
		tags = append(tags, types.Tag{TagKey: aws.String(fmt.Sprintf("k%02d", i)), TagValue: aws.String("v")})
	}
	out, err := c.CreateKey(ctxT(t), &kms.CreateKeyInput{Tags: tags}) // exactly 50
	if err != nil {
		t.Fatalf("CreateKey with 50 tags: %v", err)
	}
	checkDefaults(t, out.KeyMetadata, "")
	// The key works.
	blob := encrypt(t, c, aws.ToString(out.KeyMetadata.KeyId), []byte("tagged"), nil)
	if got := decrypt(t, c, blob, nil).Plaintext; string(got) != "tagged" {
		t.Fatalf("round trip gave %q", got)
	}
}

func TestCreateKeyRefusals(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	// created counts CreateKey calls that succeeded, refused or not: at the
	// end ListKeys must show exactly that many keys (a refusal leaves nothing).
	var created atomic.Int32
	count := func(err error) {
		if err == nil {
			created.Add(1)
		}
	}

	tooMany := make([]types.Tag, 51)
	for i := range tooMany {
		tooMany[i] = types.Tag{TagKey: aws.String(fmt.Sprintf("k%d", i)), TagValue: aws.String("v")}
	}
	cases := []struct {
		name string
		in   kms.CreateKeyInput
		code string
	}{
		{"KeySpec SM2 (not supported)", kms.CreateKeyInput{KeySpec: types.KeySpecSm2, KeyUsage: types.KeyUsageTypeSignVerify}, "UnsupportedOperationException"},
		{"KeySpec RSA_2048 without KeyUsage", kms.CreateKeyInput{KeySpec: types.KeySpecRsa2048}, "ValidationException"},
		{"KeySpec not in the enum", kms.CreateKeyInput{KeySpec: types.KeySpec("FOO")}, "ValidationException"},
		{"KeyUsage not in the enum", kms.CreateKeyInput{KeyUsage: types.KeyUsageType("RANDOM")}, "ValidationException"},
		{"SIGN_VERIFY on a symmetric key", kms.CreateKeyInput{KeyUsage: types.KeyUsageTypeSignVerify}, "ValidationException"},
		{"reserved tag prefix aws:", kms.CreateKeyInput{Tags: []types.Tag{{TagKey: aws.String("aws:x"), TagValue: aws.String("v")}}}, "TagException"},
		{"51 tags", kms.CreateKeyInput{Tags: tooMany}, "TagException"},
		{"duplicate tag keys", kms.CreateKeyInput{Tags: []types.Tag{
			{TagKey: aws.String("dup"), TagValue: aws.String("1")},
			{TagKey: aws.String("dup"), TagValue: aws.String("2")},
		}}, "TagException"},
		{"description of 8193 characters", kms.CreateKeyInput{Description: aws.String(strings.Repeat("d", 8193))}, "ValidationException"},
		{"policy that is not JSON", kms.CreateKeyInput{Policy: aws.String("this is not json")}, "MalformedPolicyDocumentException"},
		{"multi-Region key", kms.CreateKeyInput{MultiRegion: aws.Bool(true)}, "UnsupportedOperationException"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := c.CreateKey(ctxT(t), &tc.in)
			count(err)
			wantAPIError(t, err, tc.code, 400)
			switch tc.code {
			case "TagException":
				wantType[*types.TagException](t, err)
			case "UnsupportedOperationException":
				wantType[*types.UnsupportedOperationException](t, err)
			case "MalformedPolicyDocumentException":
				wantType[*types.MalformedPolicyDocumentException](t, err)
			}
		})
	}

	// AWS length constraints count characters, not UTF-8 bytes: 8192 'é'
	// (16384 bytes) is a valid description, 128 'ü' a valid tag key and 256
	// 'ü' a valid tag value.
	nonASCII := []struct {
		name string
		in   kms.CreateKeyInput
	}{
		{"description of 8192 non-ASCII characters", kms.CreateKeyInput{Description: aws.String(strings.Repeat("é", 8192))}},
		{"tag of 128/256 non-ASCII characters", kms.CreateKeyInput{Tags: []types.Tag{
			{TagKey: aws.String(strings.Repeat("ü", 128)), TagValue: aws.String(strings.Repeat("ü", 256))}}}},
	}
	for _, tc := range nonASCII {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, err := c.CreateKey(ctxT(t), &tc.in)
			count(err)
			if err != nil {
				msg := ""
				var ae smithy.APIError
				if errors.As(err, &ae) {
					msg = ae.ErrorMessage()
				}
				if r := []rune(msg); len(r) > 120 {
					msg = "…" + string(r[len(r)-120:])
				}
				t.Fatalf("refused: %s %s", apiCode(err), msg)
			}
			if aws.ToString(out.KeyMetadata.Description) != aws.ToString(tc.in.Description) {
				t.Error("description changed")
			}
		})
	}
	t.Run("description of 8193 non-ASCII characters", func(t *testing.T) {
		t.Parallel()
		_, err := c.CreateKey(ctxT(t), &kms.CreateKeyInput{Description: aws.String(strings.Repeat("é", 8193))})
		count(err)
		wantAPIError(t, err, "ValidationException", 400)
	})
	// Tag.TagValue is a required member; the SDK checks it, so send it raw.
	t.Run("tag without TagValue", func(t *testing.T) {
		t.Parallel()
		for _, body := range []string{`{"Tags":[{"TagKey":"only-a-key"}]}`, `{"Tags":[{"TagValue":"only-a-value"}]}`} {
			r := s.call(t, "TrentService.CreateKey", []byte(body))
			if r.Status == 200 {
				created.Add(1)
				t.Errorf("CreateKey %s succeeded, want ValidationException", body)
				continue
			}
			r.wantError(t, 400, "ValidationException")
		}
	})

	// The description limit is inclusive, and no refused call left a key behind.
	t.Run("description of 8192 bytes", func(t *testing.T) {
		t.Parallel()
		out, err := c.CreateKey(ctxT(t), &kms.CreateKeyInput{Description: aws.String(strings.Repeat("d", 8192))})
		count(err)
		if err != nil {
			t.Fatal(err)
		}
		if len(aws.ToString(out.KeyMetadata.Description)) != 8192 {
			t.Errorf("description has %d bytes", len(aws.ToString(out.KeyMetadata.Description)))
		}
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := c.ListKeys(ctx, &kms.ListKeysInput{})
		if err != nil {
			t.Errorf("ListKeys: %v", err)
			return
		}
		if want := int(created.Load()); len(out.Keys) != want {
			t.Errorf("%d CreateKey calls succeeded but ListKeys shows %d keys", want, len(out.Keys))
		}
	})
}

func TestDescribeKey(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c, other := s.client(), s.other()
	md := createKey(t, c)
	id, arn := aws.ToString(md.KeyId), aws.ToString(md.Arn)

	for _, ref := range []string{id, arn} {
		out, err := c.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: aws.String(ref)})
		if err != nil {
			t.Fatalf("DescribeKey(%s): %v", ref, err)
		}
		if aws.ToString(out.KeyMetadata.Arn) != arn || aws.ToString(out.KeyMetadata.KeyId) != id {
			t.Errorf("DescribeKey(%s) = %s / %s", ref, aws.ToString(out.KeyMetadata.KeyId), aws.ToString(out.KeyMetadata.Arn))
		}
	}

	unknown := uuid.NewString()
	cases := []struct {
		name   string
		client *kms.Client
		keyID  string
		code   string
		msg    string // exact message, if set
	}{
		{"unknown key id", c, unknown, "NotFoundException", "Key '" + keyARN(mainAccount, unknown) + "' does not exist"},
		{"unknown key ARN", c, keyARN(mainAccount, unknown), "NotFoundException", "Key '" + keyARN(mainAccount, unknown) + "' does not exist"},
		{"not a key id", c, "fake-key-id", "NotFoundException", "Invalid keyId 'fake-key-id'"},
		{"alias name (aliases not implemented)", c, "alias/foo", "NotFoundException", "Alias arn:aws:kms:us-east-1:111122223333:alias/foo is not found."},
		{"alias ARN (aliases not implemented)", c, "arn:aws:kms:us-east-1:111122223333:alias/foo", "NotFoundException", "Alias arn:aws:kms:us-east-1:111122223333:alias/foo is not found."},
		// Recorded from AWS: a key ARN of another region is "Invalid arn <region>".
		{"key ARN of another region", c, "arn:aws:kms:eu-west-1:111122223333:key/" + id, "NotFoundException", "Invalid arn eu-west-1"},
		{"unknown key ARN of another region", c, "arn:aws:kms:eu-west-1:111122223333:key/" + unknown, "NotFoundException", ""},
		{"another account's key by ARN", other, arn, "AccessDeniedException", ""},
		{"another account's key by id", other, id, "NotFoundException", "Key '" + keyARN(otherAccount, id) + "' does not exist"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := tc.client.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: aws.String(tc.keyID)})
			ae := wantAPIError(t, err, tc.code, 400)
			if tc.msg != "" {
				wantMessage(t, ae, tc.msg)
			}
			switch tc.code {
			case "NotFoundException":
				wantType[*types.NotFoundException](t, err)
			case "AccessDeniedException":
				if !strings.Contains(ae.ErrorMessage(), otherARN) {
					t.Errorf("AccessDenied message %q does not name the caller %s", ae.ErrorMessage(), otherARN)
				}
			}
		})
	}
}

func TestListKeys(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c, other := s.client(), s.other()

	mine := map[string]string{} // id -> ARN
	for i := 0; i < 5; i++ {
		md := createKey(t, c)
		mine[aws.ToString(md.KeyId)] = aws.ToString(md.Arn)
	}
	theirs := createKey(t, other)
	theirID := aws.ToString(theirs.KeyId)
	if got := aws.ToString(theirs.Arn); got != keyARN(otherAccount, theirID) {
		t.Errorf("other account's key ARN %q", got)
	}

	seen := map[string]int{}
	var marker *string
	pages := 0
	for {
		out, err := c.ListKeys(ctxT(t), &kms.ListKeysInput{Limit: aws.Int32(2), Marker: marker})
		if err != nil {
			t.Fatalf("ListKeys page %d: %v", pages+1, err)
		}
		pages++
		if len(out.Keys) > 2 {
			t.Errorf("page %d has %d keys, Limit was 2", pages, len(out.Keys))
		}
		for _, k := range out.Keys {
			id := aws.ToString(k.KeyId)
			seen[id]++
			if want, ok := mine[id]; ok && aws.ToString(k.KeyArn) != want {
				t.Errorf("ListKeys KeyArn %q for %s, want %q", aws.ToString(k.KeyArn), id, want)
			}
		}
		if out.Truncated != (out.NextMarker != nil) {
			t.Errorf("page %d: Truncated %v but NextMarker %v", pages, out.Truncated, out.NextMarker)
		}
		if !out.Truncated {
			break
		}
		marker = out.NextMarker
		if pages > 10 {
			t.Fatal("ListKeys does not end")
		}
	}
	if pages != 3 {
		t.Errorf("5 keys with Limit 2 took %d pages, want 3", pages)
	}
	for id := range mine {
		if seen[id] != 1 {
			t.Errorf("key %s listed %d times", id, seen[id])
		}
	}
	if seen[theirID] != 0 {
		t.Errorf("another account's key %s is in the list", theirID)
	}
	if len(seen) != len(mine) {
		t.Errorf("listed %d keys, created %d", len(seen), len(mine))
	}

	// A page that ends exactly at the last key is not truncated.
	out, err := c.ListKeys(ctxT(t), &kms.ListKeysInput{Limit: aws.Int32(5)})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Keys) != 5 || out.Truncated || out.NextMarker != nil {
		t.Errorf("Limit 5 over 5 keys: %d keys, Truncated %v, NextMarker %v", len(out.Keys), out.Truncated, out.NextMarker)
	}
	out, err = c.ListKeys(ctxT(t), &kms.ListKeysInput{Limit: aws.Int32(1000)})
	if err != nil || len(out.Keys) != 5 || out.Truncated {
		t.Errorf("Limit 1000: %v, %d keys", err, len(out.Keys))
	}

	// The SDK paginator agrees.
	n := 0
	for p := kms.NewListKeysPaginator(c, &kms.ListKeysInput{Limit: aws.Int32(3)}); p.HasMorePages(); {
		out, err := p.NextPage(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		n += len(out.Keys)
	}
	if n != 5 {
		t.Errorf("paginator listed %d keys, want 5", n)
	}

	// The other principal sees only its own key.
	out, err = other.ListKeys(ctxT(t), &kms.ListKeysInput{})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Keys) != 1 || aws.ToString(out.Keys[0].KeyId) != theirID {
		t.Errorf("other account lists %+v, want only %s", out.Keys, theirID)
	}
	for _, k := range out.Keys {
		if _, ok := mine[aws.ToString(k.KeyId)]; ok {
			t.Errorf("other account sees key %s of account %s", aws.ToString(k.KeyId), mainAccount)
		}
	}

	for _, limit := range []int32{0, 1001} {
		_, err := c.ListKeys(ctxT(t), &kms.ListKeysInput{Limit: aws.Int32(limit)})
		wantAPIError(t, err, "ValidationException", 400)
	}
	_, err = c.ListKeys(ctxT(t), &kms.ListKeysInput{Marker: aws.String("garbage!")})
	wantAPIError(t, err, "InvalidMarkerException", 400)
	wantType[*types.InvalidMarkerException](t, err)
}

func TestEnableDisableKey(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	a, b := createKey(t, c), createKey(t, c)
	aID, aARN, bID := aws.ToString(a.KeyId), aws.ToString(a.Arn), aws.ToString(b.KeyId)
	blobA := encrypt(t, c, aID, []byte("under A"), nil)
	blobB := encrypt(t, c, bID, []byte("under B"), nil)

	if _, err := c.DisableKey(ctxT(t), &kms.DisableKeyInput{KeyId: aws.String(aID)}); err != nil {
		t.Fatalf("DisableKey: %v", err)
	}
	// Disabling a disabled key is not an error.
	if _, err := c.DisableKey(ctxT(t), &kms.DisableKeyInput{KeyId: aws.String(aARN)}); err != nil {
		t.Fatalf("DisableKey again, by ARN: %v", err)
	}

	d, err := c.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: aws.String(aID)})
	if err != nil {
		t.Fatalf("DescribeKey of a disabled key: %v", err)
	}
	if d.KeyMetadata.KeyState != types.KeyStateDisabled || d.KeyMetadata.Enabled {
		t.Errorf("disabled key: KeyState %q Enabled %v", d.KeyMetadata.KeyState, d.KeyMetadata.Enabled)
	}

	disabledMsg := aARN + " is disabled."
	ops := []struct {
		name string
		call func() error
	}{
		{"Encrypt", func() error {
			_, err := c.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(aID), Plaintext: []byte("x")})
			return err
		}},
		{"Encrypt DryRun", func() error {
			_, err := c.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(aID), Plaintext: []byte("x"), DryRun: aws.Bool(true)})
			return err
		}},
		{"Decrypt", func() error {
			_, err := c.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: blobA})
			return err
		}},
		{"ReEncrypt from the disabled key", func() error {
			_, err := c.ReEncrypt(ctxT(t), &kms.ReEncryptInput{CiphertextBlob: blobA, DestinationKeyId: aws.String(bID)})
			return err
		}},
		{"ReEncrypt to the disabled key", func() error {
			_, err := c.ReEncrypt(ctxT(t), &kms.ReEncryptInput{CiphertextBlob: blobB, DestinationKeyId: aws.String(aID)})
			return err
		}},
		{"GenerateDataKey", func() error {
			_, err := c.GenerateDataKey(ctxT(t), &kms.GenerateDataKeyInput{KeyId: aws.String(aID), KeySpec: types.DataKeySpecAes256})
			return err
		}},
		{"GenerateDataKeyWithoutPlaintext", func() error {
			_, err := c.GenerateDataKeyWithoutPlaintext(ctxT(t), &kms.GenerateDataKeyWithoutPlaintextInput{KeyId: aws.String(aID), KeySpec: types.DataKeySpecAes256})
			return err
		}},
	}
	for _, op := range ops {
		err := op.call()
		if err == nil {
			t.Errorf("%s with a disabled key succeeded", op.name)
			continue
		}
		t.Run(op.name, func(t *testing.T) {
			ae := wantAPIError(t, err, "DisabledException", 400)
			wantType[*types.DisabledException](t, err)
			wantMessage(t, ae, disabledMsg)
		})
	}

	// B is unaffected.
	if got := decrypt(t, c, blobB, nil).Plaintext; string(got) != "under B" {
		t.Errorf("B decrypts to %q", got)
	}

	// Another account cannot change the key's state (EnableKey is not a
	// cross-account operation).
	o := s.other()
	_, err = o.EnableKey(ctxT(t), &kms.EnableKeyInput{KeyId: aws.String(aARN)})
	if code := apiCode(err); code != "AccessDeniedException" && code != "NotFoundException" {
		t.Errorf("another account's EnableKey by ARN: %v, want AccessDeniedException or NotFoundException", err)
	}
	_, err = o.EnableKey(ctxT(t), &kms.EnableKeyInput{KeyId: aws.String(aID)})
	wantAPIError(t, err, "NotFoundException", 400)
	_, err = c.EnableKey(ctxT(t), &kms.EnableKeyInput{KeyId: aws.String(uuid.NewString())})
	wantAPIError(t, err, "NotFoundException", 400)

	if _, err := c.EnableKey(ctxT(t), &kms.EnableKeyInput{KeyId: aws.String(aID)}); err != nil {
		t.Fatalf("EnableKey: %v", err)
	}
	d, err = c.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: aws.String(aID)})
	if err != nil {
		t.Fatal(err)
	}
	if d.KeyMetadata.KeyState != types.KeyStateEnabled || !d.KeyMetadata.Enabled {
		t.Errorf("re-enabled key: KeyState %q Enabled %v", d.KeyMetadata.KeyState, d.KeyMetadata.Enabled)
	}
	if got := decrypt(t, c, blobA, nil).Plaintext; string(got) != "under A" {
		t.Errorf("A decrypts to %q after EnableKey", got)
	}
	blob := encrypt(t, c, aID, []byte("again"), nil)
	if got := decrypt(t, c, blob, nil).Plaintext; string(got) != "again" {
		t.Errorf("round trip after EnableKey gave %q", got)
	}
	if _, err := c.GenerateDataKey(ctxT(t), &kms.GenerateDataKeyInput{KeyId: aws.String(aID), KeySpec: types.DataKeySpecAes128}); err != nil {
		t.Errorf("GenerateDataKey after EnableKey: %v", err)
	}
}
