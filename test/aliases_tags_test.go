package test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/google/uuid"
)

// ---- helpers for aliases and tags ----

// aliasARN is the ARN AWS gives alias name (which starts with "alias/").
func aliasARN(account, name string) string {
	return "arn:aws:kms:" + region + ":" + account + ":" + name
}

// aliasNotFoundMsg is AWS's message for an alias the account does not have.
func aliasNotFoundMsg(account, name string) string {
	return "Alias " + aliasARN(account, name) + " is not found."
}

func createAlias(t testing.TB, c *kms.Client, name, target string) {
	t.Helper()
	_, err := c.CreateAlias(ctxT(t), &kms.CreateAliasInput{AliasName: aws.String(name), TargetKeyId: aws.String(target)})
	if err != nil {
		t.Fatalf("CreateAlias(%s -> %s): %v", name, target, err)
	}
}

// listAliases pages through ListAliases (KeyId filter and Limit optional)
// and returns every entry and the number of pages it took. It checks that
// no page is larger than Limit and that Truncated and NextMarker agree.
func listAliases(t testing.TB, c *kms.Client, keyID *string, limit *int32) ([]types.AliasListEntry, int) {
	t.Helper()
	var all []types.AliasListEntry
	var marker *string
	for pages := 1; ; pages++ {
		out, err := c.ListAliases(ctxT(t), &kms.ListAliasesInput{KeyId: keyID, Limit: limit, Marker: marker})
		if err != nil {
			t.Fatalf("ListAliases page %d: %v", pages, err)
		}
		if limit != nil && len(out.Aliases) > int(*limit) {
			t.Errorf("ListAliases page %d has %d aliases, Limit was %d", pages, len(out.Aliases), *limit)
		}
		if out.Truncated != (out.NextMarker != nil) {
			t.Errorf("ListAliases page %d: Truncated %v but NextMarker %v", pages, out.Truncated, aws.ToString(out.NextMarker))
		}
		all = append(all, out.Aliases...)
		if !out.Truncated {
			return all, pages
		}
		marker = out.NextMarker
		if pages > 500 {
			t.Fatal("ListAliases does not end")
		}
	}
}

// customerAliases indexes the entries by name, leaving out the names AWS
// reserves for its managed keys (which a real account lists too), and fails
// t on a name listed twice.
func customerAliases(t testing.TB, list []types.AliasListEntry) map[string]types.AliasListEntry {
	t.Helper()
	m := map[string]types.AliasListEntry{}
	for _, a := range list {
		name := aws.ToString(a.AliasName)
		if strings.HasPrefix(name, "alias/aws/") {
			continue
		}
		if _, dup := m[name]; dup {
			t.Errorf("alias %s listed more than once", name)
		}
		m[name] = a
	}
	return m
}

func aliasNames(m map[string]types.AliasListEntry) []string {
	var names []string
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// mkTags builds tags from key, value pairs.
func mkTags(kv ...string) []types.Tag {
	tags := make([]types.Tag, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		tags = append(tags, types.Tag{TagKey: aws.String(kv[i]), TagValue: aws.String(kv[i+1])})
	}
	return tags
}

// tagStrings renders tags as "key=value", in order.
func tagStrings(tags []types.Tag) []string {
	out := make([]string, len(tags))
	for i, tg := range tags {
		out[i] = aws.ToString(tg.TagKey) + "=" + aws.ToString(tg.TagValue)
	}
	return out
}

func tagResource(t testing.TB, c *kms.Client, keyID string, kv ...string) {
	t.Helper()
	if _, err := c.TagResource(ctxT(t), &kms.TagResourceInput{KeyId: aws.String(keyID), Tags: mkTags(kv...)}); err != nil {
		t.Fatalf("TagResource(%s, %v): %v", keyID, kv, err)
	}
}

// listTags pages through ListResourceTags and returns every tag as
// "key=value" in the order listed, and the number of pages.
func listTags(t testing.TB, c *kms.Client, keyID string, limit *int32) ([]string, int) {
	t.Helper()
	var all []string
	var marker *string
	for pages := 1; ; pages++ {
		out, err := c.ListResourceTags(ctxT(t), &kms.ListResourceTagsInput{KeyId: aws.String(keyID), Limit: limit, Marker: marker})
		if err != nil {
			t.Fatalf("ListResourceTags page %d: %v", pages, err)
		}
		if limit != nil && len(out.Tags) > int(*limit) {
			t.Errorf("ListResourceTags page %d has %d tags, Limit was %d", pages, len(out.Tags), *limit)
		}
		if out.Truncated != (out.NextMarker != nil) {
			t.Errorf("ListResourceTags page %d: Truncated %v but NextMarker %v", pages, out.Truncated, aws.ToString(out.NextMarker))
		}
		all = append(all, tagStrings(out.Tags)...)
		if !out.Truncated {
			return all, pages
		}
		marker = out.NextMarker
		if pages > 100 {
			t.Fatal("ListResourceTags does not end")
		}
	}
}

func wantTags(t testing.TB, c *kms.Client, keyID string, want ...string) {
	t.Helper()
	got, _ := listTags(t, c, keyID, nil)
	if !slices.Equal(got, want) {
		t.Errorf("tags of %s:\n got %q\nwant %q", keyID, got, want)
	}
}

func withinMinute(tm *time.Time) bool {
	if tm == nil {
		return false
	}
	d := time.Since(*tm)
	return d > -time.Minute && d < time.Minute
}

// ---- aliases ----

// TestAliasResolution: an alias name and an alias ARN work as the KeyId of
// every cryptographic operation and of DescribeKey, and all of them answer
// with the target key's ARN, never another key's.
func TestAliasResolution(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	created, err := c.CreateKey(ctxT(t), &kms.CreateKeyInput{Description: aws.String("alias target")})
	if err != nil {
		t.Fatal(err)
	}
	target := created.KeyMetadata
	tID, tARN := aws.ToString(target.KeyId), aws.ToString(target.Arn)
	decoy := createKey(t, c) // a second key, with its own alias, that nothing below may pick
	dID, dARN := aws.ToString(decoy.KeyId), aws.ToString(decoy.Arn)
	const name = "alias/e2e-resolve"
	createAlias(t, c, name, tID)
	createAlias(t, c, "alias/e2e-resolve-decoy", dID)
	blobDecoy := encrypt(t, c, dID, []byte("under the decoy"), nil)

	refs := []struct{ name, ref string }{
		{"alias name", name},
		{"alias ARN", aliasARN(mainAccount, name)},
	}
	for _, r := range refs {
		ref := r.ref
		ops := []struct {
			name string
			run  func(t *testing.T)
		}{
			{"Encrypt", func(t *testing.T) {
				pt := []byte("encrypted by " + ref)
				out, err := c.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(ref), Plaintext: pt})
				if err != nil {
					t.Fatal(err)
				}
				if got := aws.ToString(out.KeyId); got != tARN {
					t.Errorf("Encrypt KeyId %q, want the target's ARN %q", got, tARN)
				}
				dec := decrypt(t, c, out.CiphertextBlob, nil)
				if !bytes.Equal(dec.Plaintext, pt) || aws.ToString(dec.KeyId) != tARN {
					t.Errorf("Decrypt gave %q under %s", dec.Plaintext, aws.ToString(dec.KeyId))
				}
			}},
			{"Decrypt KeyId", func(t *testing.T) {
				blob := encrypt(t, c, tID, []byte("decrypt with an alias KeyId"), nil)
				out, err := c.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: blob, KeyId: aws.String(ref)})
				if err != nil {
					t.Fatal(err)
				}
				if string(out.Plaintext) != "decrypt with an alias KeyId" || aws.ToString(out.KeyId) != tARN {
					t.Errorf("Decrypt gave %q under %s, want the target %s", out.Plaintext, aws.ToString(out.KeyId), tARN)
				}
				// The alias names the target, so a blob of another key is refused.
				_, err = c.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: blobDecoy, KeyId: aws.String(ref)})
				wantAPIError(t, err, "IncorrectKeyException", 400)
				wantType[*types.IncorrectKeyException](t, err)
			}},
			{"ReEncrypt source and destination", func(t *testing.T) {
				blob := encrypt(t, c, tID, []byte("re-encrypt by alias"), nil)
				out, err := c.ReEncrypt(ctxT(t), &kms.ReEncryptInput{CiphertextBlob: blob,
					SourceKeyId: aws.String(ref), DestinationKeyId: aws.String(ref)})
				if err != nil {
					t.Fatal(err)
				}
				if aws.ToString(out.SourceKeyId) != tARN || aws.ToString(out.KeyId) != tARN {
					t.Errorf("ReEncrypt SourceKeyId %q KeyId %q, want %q for both", aws.ToString(out.SourceKeyId), aws.ToString(out.KeyId), tARN)
				}
				if got := decrypt(t, c, out.CiphertextBlob, nil).Plaintext; string(got) != "re-encrypt by alias" {
					t.Errorf("re-encrypted blob decrypts to %q", got)
				}
				// From another key to the alias.
				out, err = c.ReEncrypt(ctxT(t), &kms.ReEncryptInput{CiphertextBlob: blobDecoy, DestinationKeyId: aws.String(ref)})
				if err != nil {
					t.Fatal(err)
				}
				if aws.ToString(out.SourceKeyId) != dARN || aws.ToString(out.KeyId) != tARN {
					t.Errorf("ReEncrypt decoy->alias: SourceKeyId %q KeyId %q, want %q and %q", aws.ToString(out.SourceKeyId), aws.ToString(out.KeyId), dARN, tARN)
				}
				// The alias as SourceKeyId of a blob it does not name.
				_, err = c.ReEncrypt(ctxT(t), &kms.ReEncryptInput{CiphertextBlob: blobDecoy,
					SourceKeyId: aws.String(ref), DestinationKeyId: aws.String(dID)})
				wantAPIError(t, err, "IncorrectKeyException", 400)
			}},
			{"GenerateDataKey", func(t *testing.T) {
				out, err := c.GenerateDataKey(ctxT(t), &kms.GenerateDataKeyInput{KeyId: aws.String(ref), KeySpec: types.DataKeySpecAes256})
				if err != nil {
					t.Fatal(err)
				}
				if got := aws.ToString(out.KeyId); got != tARN {
					t.Errorf("GenerateDataKey KeyId %q, want %q", got, tARN)
				}
				dec := decrypt(t, c, out.CiphertextBlob, nil)
				if len(out.Plaintext) != 32 || !bytes.Equal(dec.Plaintext, out.Plaintext) || aws.ToString(dec.KeyId) != tARN {
					t.Errorf("data key of %d bytes does not decrypt to itself under the target", len(out.Plaintext))
				}
			}},
			{"GenerateDataKeyWithoutPlaintext", func(t *testing.T) {
				out, err := c.GenerateDataKeyWithoutPlaintext(ctxT(t), &kms.GenerateDataKeyWithoutPlaintextInput{
					KeyId: aws.String(ref), KeySpec: types.DataKeySpecAes128})
				if err != nil {
					t.Fatal(err)
				}
				if got := aws.ToString(out.KeyId); got != tARN {
					t.Errorf("GenerateDataKeyWithoutPlaintext KeyId %q, want %q", got, tARN)
				}
				dec := decrypt(t, c, out.CiphertextBlob, nil)
				if len(dec.Plaintext) != 16 || aws.ToString(dec.KeyId) != tARN {
					t.Errorf("data key blob decrypts to %d bytes under %s", len(dec.Plaintext), aws.ToString(dec.KeyId))
				}
			}},
			{"DescribeKey", func(t *testing.T) {
				out, err := c.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: aws.String(ref)})
				if err != nil {
					t.Fatal(err)
				}
				md := out.KeyMetadata
				checkDefaults(t, md, "alias target")
				if aws.ToString(md.KeyId) != tID || aws.ToString(md.Arn) != tARN {
					t.Errorf("DescribeKey(%s) = %s, want %s", ref, aws.ToString(md.Arn), tARN)
				}
				if !md.CreationDate.Equal(*target.CreationDate) ||
					aws.ToString(md.CurrentKeyMaterialId) != aws.ToString(target.CurrentKeyMaterialId) {
					t.Errorf("DescribeKey by alias disagrees with CreateKey: %+v vs %+v", md, target)
				}
			}},
		}
		for _, op := range ops {
			t.Run(r.name+"/"+op.name, func(t *testing.T) {
				t.Parallel()
				op.run(t)
			})
		}
	}
}

// TestAliasOfDisabledKey: an alias may name a disabled key; the state errors
// met through the alias name the key's ARN.
func TestAliasOfDisabledKey(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	md := createKey(t, c)
	id, arn := aws.ToString(md.KeyId), aws.ToString(md.Arn)
	if _, err := c.DisableKey(ctxT(t), &kms.DisableKeyInput{KeyId: aws.String(id)}); err != nil {
		t.Fatal(err)
	}
	createAlias(t, c, "alias/e2e-disabled", id)
	d, err := c.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: aws.String("alias/e2e-disabled")})
	if err != nil {
		t.Fatal(err)
	}
	if d.KeyMetadata.Enabled || d.KeyMetadata.KeyState != types.KeyStateDisabled || aws.ToString(d.KeyMetadata.Arn) != arn {
		t.Errorf("DescribeKey by alias: Enabled %v KeyState %q Arn %q", d.KeyMetadata.Enabled, d.KeyMetadata.KeyState, aws.ToString(d.KeyMetadata.Arn))
	}
	_, err = c.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String("alias/e2e-disabled"), Plaintext: []byte("x")})
	ae := wantAPIError(t, err, "DisabledException", 400)
	wantMessage(t, ae, arn+" is disabled.")
}

// TestUpdateAlias: after UpdateAlias new work by the alias goes to the new
// key, and what the old key encrypted still decrypts.
func TestUpdateAlias(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	a, b := createKey(t, c), createKey(t, c)
	aID, aARN := aws.ToString(a.KeyId), aws.ToString(a.Arn)
	bID, bARN := aws.ToString(b.KeyId), aws.ToString(b.Arn)
	const name = "alias/e2e-moving"
	createAlias(t, c, name, aID)

	out, err := c.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(name), Plaintext: []byte("before the update")})
	if err != nil {
		t.Fatal(err)
	}
	if got := aws.ToString(out.KeyId); got != aARN {
		t.Fatalf("Encrypt by alias went to %q, want A %q", got, aARN)
	}
	blobA := out.CiphertextBlob

	before, _ := listAliases(t, c, aws.String(aID), nil)
	if len(before) != 1 || aws.ToString(before[0].AliasName) != name || aws.ToString(before[0].TargetKeyId) != aID {
		t.Fatalf("ListAliases for A: %+v", before)
	}
	time.Sleep(20 * time.Millisecond) // so LastUpdatedDate can move

	// The target may be given as a key ARN.
	if _, err := c.UpdateAlias(ctxT(t), &kms.UpdateAliasInput{AliasName: aws.String(name), TargetKeyId: aws.String(bARN)}); err != nil {
		t.Fatalf("UpdateAlias: %v", err)
	}
	for _, ref := range []string{name, aliasARN(mainAccount, name)} {
		out, err := c.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(ref), Plaintext: []byte("after the update")})
		if err != nil {
			t.Fatal(err)
		}
		if got := aws.ToString(out.KeyId); got != bARN {
			t.Errorf("Encrypt by %s after UpdateAlias went to %q, want B %q", ref, got, bARN)
		}
		dec := decrypt(t, c, out.CiphertextBlob, nil)
		if string(dec.Plaintext) != "after the update" || aws.ToString(dec.KeyId) != bARN {
			t.Errorf("new blob decrypts to %q under %s", dec.Plaintext, aws.ToString(dec.KeyId))
		}
		d, err := c.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: aws.String(ref)})
		if err != nil {
			t.Fatal(err)
		}
		if got := aws.ToString(d.KeyMetadata.Arn); got != bARN {
			t.Errorf("DescribeKey(%s) after UpdateAlias = %q, want %q", ref, got, bARN)
		}
	}
	// The old ciphertext still decrypts, under A.
	dec := decrypt(t, c, blobA, nil)
	if string(dec.Plaintext) != "before the update" || aws.ToString(dec.KeyId) != aARN {
		t.Errorf("old blob decrypts to %q under %s", dec.Plaintext, aws.ToString(dec.KeyId))
	}
	// But not with the alias as KeyId: the alias now names B.
	_, err = c.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: blobA, KeyId: aws.String(name)})
	wantAPIError(t, err, "IncorrectKeyException", 400)

	if l, _ := listAliases(t, c, aws.String(aID), nil); len(l) != 0 {
		t.Errorf("ListAliases for A after UpdateAlias: %+v", l)
	}
	after, _ := listAliases(t, c, aws.String(bID), nil)
	if len(after) != 1 || aws.ToString(after[0].TargetKeyId) != bID {
		t.Fatalf("ListAliases for B after UpdateAlias: %+v", after)
	}
	if !after[0].CreationDate.Equal(*before[0].CreationDate) {
		t.Errorf("UpdateAlias changed CreationDate from %v to %v", before[0].CreationDate, after[0].CreationDate)
	}
	if !after[0].LastUpdatedDate.After(*before[0].LastUpdatedDate) {
		t.Errorf("UpdateAlias did not move LastUpdatedDate (%v, then %v)", before[0].LastUpdatedDate, after[0].LastUpdatedDate)
	}
}

// TestDeleteAlias: a deleted alias is not found; its key is unaffected and
// the name can be used again.
func TestDeleteAlias(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	md := createKey(t, c)
	id, arn := aws.ToString(md.KeyId), aws.ToString(md.Arn)
	const name = "alias/e2e-deleted"
	createAlias(t, c, name, id)
	blob := encrypt(t, c, name, []byte("made by alias"), nil)

	if _, err := c.DeleteAlias(ctxT(t), &kms.DeleteAliasInput{AliasName: aws.String(name)}); err != nil {
		t.Fatalf("DeleteAlias: %v", err)
	}
	notFound := aliasNotFoundMsg(mainAccount, name)
	for _, ref := range []string{name, aliasARN(mainAccount, name)} {
		_, err := c.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(ref), Plaintext: []byte("x")})
		ae := wantAPIError(t, err, "NotFoundException", 400)
		wantType[*types.NotFoundException](t, err)
		wantMessage(t, ae, notFound)
		_, err = c.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: aws.String(ref)})
		ae = wantAPIError(t, err, "NotFoundException", 400)
		wantMessage(t, ae, notFound)
	}
	// Deleting it again: not found.
	_, err := c.DeleteAlias(ctxT(t), &kms.DeleteAliasInput{AliasName: aws.String(name)})
	ae := wantAPIError(t, err, "NotFoundException", 400)
	wantMessage(t, ae, notFound)
	// UpdateAlias does not bring it back.
	_, err = c.UpdateAlias(ctxT(t), &kms.UpdateAliasInput{AliasName: aws.String(name), TargetKeyId: aws.String(id)})
	ae = wantAPIError(t, err, "NotFoundException", 400)
	wantMessage(t, ae, notFound)

	// The key still works by id, and the blob made by the alias decrypts.
	dec := decrypt(t, c, blob, nil)
	if string(dec.Plaintext) != "made by alias" || aws.ToString(dec.KeyId) != arn {
		t.Errorf("blob decrypts to %q under %s", dec.Plaintext, aws.ToString(dec.KeyId))
	}
	if got := decrypt(t, c, encrypt(t, c, id, []byte("by id"), nil), nil).Plaintext; string(got) != "by id" {
		t.Errorf("round trip by id after DeleteAlias gave %q", got)
	}
	if l, _ := listAliases(t, c, nil, nil); len(customerAliases(t, l)) != 0 {
		t.Errorf("ListAliases after DeleteAlias: %v", aliasNames(customerAliases(t, l)))
	}

	// The name is free again, for another key.
	other := createKey(t, c)
	createAlias(t, c, name, aws.ToString(other.KeyId))
	out, err := c.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(name), Plaintext: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	if got := aws.ToString(out.KeyId); got != aws.ToString(other.Arn) {
		t.Errorf("re-created alias resolves to %q, want %q", got, aws.ToString(other.Arn))
	}
}

// TestListAliases: every alias with all its fields, the KeyId filter,
// pagination, and refused markers and limits.
func TestListAliases(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	k1, k2, bare := createKey(t, c), createKey(t, c), createKey(t, c)
	id1, id2 := aws.ToString(k1.KeyId), aws.ToString(k2.KeyId)
	want := map[string]string{ // alias -> target key id
		"alias/e2e-list-b": id1,
		"alias/e2e-list-a": id1,
		"alias/e2e-list/c": id2,
		"alias/E2E_list-d": id2,
	}
	// Created out of name order.
	for _, name := range []string{"alias/e2e-list-b", "alias/e2e-list-a", "alias/e2e-list/c", "alias/E2E_list-d"} {
		createAlias(t, c, name, want[name])
	}

	t.Run("all, one page", func(t *testing.T) {
		t.Parallel()
		l, pages := listAliases(t, c, nil, nil)
		if pages != 1 {
			t.Errorf("4 aliases took %d pages without a Limit", pages)
		}
		got := customerAliases(t, l)
		if len(got) != len(want) {
			t.Errorf("listed %v, want %d aliases", aliasNames(got), len(want))
		}
		for name, target := range want {
			a, ok := got[name]
			if !ok {
				t.Errorf("alias %s not listed", name)
				continue
			}
			if arn := aws.ToString(a.AliasArn); arn != aliasARN(mainAccount, name) {
				t.Errorf("%s: AliasArn %q", name, arn)
			}
			if tk := aws.ToString(a.TargetKeyId); tk != target {
				t.Errorf("%s: TargetKeyId %q, want the key id %q", name, tk, target)
			}
			if !withinMinute(a.CreationDate) {
				t.Errorf("%s: CreationDate %v not within a minute of now", name, a.CreationDate)
			}
			if !withinMinute(a.LastUpdatedDate) || a.LastUpdatedDate.Before(*a.CreationDate) {
				t.Errorf("%s: LastUpdatedDate %v (CreationDate %v)", name, a.LastUpdatedDate, a.CreationDate)
			}
		}
	})
	t.Run("Limit 1", func(t *testing.T) {
		t.Parallel()
		l, pages := listAliases(t, c, nil, aws.Int32(1))
		got := customerAliases(t, l) // fails on an alias visited twice
		if len(got) != len(want) || pages != len(l) {
			t.Errorf("Limit 1: %d pages listed %v, want each of %d aliases once, one a page", pages, aliasNames(got), len(want))
		}
	})
	t.Run("paginator", func(t *testing.T) {
		t.Parallel()
		var l []types.AliasListEntry
		for p := kms.NewListAliasesPaginator(c, &kms.ListAliasesInput{Limit: aws.Int32(3)}); p.HasMorePages(); {
			out, err := p.NextPage(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			l = append(l, out.Aliases...)
		}
		if got := customerAliases(t, l); len(got) != len(want) {
			t.Errorf("paginator listed %v", aliasNames(got))
		}
	})
	filters := []struct {
		name  string
		keyID string
		want  []string
	}{
		{"KeyId by id", id1, []string{"alias/e2e-list-a", "alias/e2e-list-b"}},
		{"KeyId by ARN", aws.ToString(k1.Arn), []string{"alias/e2e-list-a", "alias/e2e-list-b"}},
		{"KeyId of the other key", id2, []string{"alias/E2E_list-d", "alias/e2e-list/c"}},
		{"KeyId of a key without aliases", aws.ToString(bare.KeyId), nil},
	}
	for _, f := range filters {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			for _, limit := range []*int32{nil, aws.Int32(1)} {
				l, pages := listAliases(t, c, aws.String(f.keyID), limit)
				got := aliasNames(customerAliases(t, l))
				if !slices.Equal(got, f.want) {
					t.Errorf("Limit %v: listed %v, want %v", aws.ToInt32(limit), got, f.want)
				}
				if limit != nil && len(f.want) > 0 && pages != len(f.want) {
					t.Errorf("Limit 1 over %d aliases took %d pages", len(f.want), pages)
				}
			}
		})
	}
	t.Run("unknown KeyId", func(t *testing.T) {
		t.Parallel()
		_, err := c.ListAliases(ctxT(t), &kms.ListAliasesInput{KeyId: aws.String(uuid.NewString())})
		wantAPIError(t, err, "NotFoundException", 400)
	})
	t.Run("Limit out of range", func(t *testing.T) {
		t.Parallel()
		for _, limit := range []int32{0, -1, 1001} {
			_, err := c.ListAliases(ctxT(t), &kms.ListAliasesInput{Limit: aws.Int32(limit)})
			wantAPIError(t, err, "ValidationException", 400)
		}
	})
	t.Run("markers", func(t *testing.T) {
		t.Parallel()
		first, err := c.ListAliases(ctxT(t), &kms.ListAliasesInput{Limit: aws.Int32(1)})
		if err != nil || first.NextMarker == nil {
			t.Fatalf("ListAliases Limit 1: %v %+v", err, first)
		}
		// The real marker works, twice.
		for range 2 {
			if _, err := c.ListAliases(ctxT(t), &kms.ListAliasesInput{Limit: aws.Int32(1), Marker: first.NextMarker}); err != nil {
				t.Fatalf("ListAliases with its own marker: %v", err)
			}
		}
		keysPage, err := c.ListKeys(ctxT(t), &kms.ListKeysInput{Limit: aws.Int32(1)})
		if err != nil || keysPage.NextMarker == nil {
			t.Fatalf("ListKeys Limit 1: %v %+v", err, keysPage)
		}
		tagResource(t, c, id1, "t1", "v", "t2", "v")
		tagsPage, err := c.ListResourceTags(ctxT(t), &kms.ListResourceTagsInput{KeyId: aws.String(id1), Limit: aws.Int32(1)})
		if err != nil || tagsPage.NextMarker == nil {
			t.Fatalf("ListResourceTags Limit 1: %v %+v", err, tagsPage)
		}
		real := aws.ToString(first.NextMarker)
		// One character in the middle changed to another base64url one.
		mid := len(real) / 2
		repl := byte('A')
		if real[mid] == 'A' {
			repl = 'B'
		}
		flipped := real[:mid] + string(repl) + real[mid+1:]
		forged := []struct{ name, marker string }{
			{"base64 of an alias name", base64.RawURLEncoding.EncodeToString([]byte("alias/e2e-list-a"))},
			{"std base64 of an alias name", base64.StdEncoding.EncodeToString([]byte("alias/e2e-list-a"))},
			{"alias name with a zero tag", base64.RawURLEncoding.EncodeToString(append([]byte("alias/e2e-list-a"), make([]byte, 16)...))},
			{"the plain alias name", "alias/e2e-list-a"},
			{"not base64", "garbage!"},
			{"a real marker altered", flipped},
			{"a ListKeys marker", aws.ToString(keysPage.NextMarker)},
			{"a ListResourceTags marker", aws.ToString(tagsPage.NextMarker)},
		}
		for _, f := range forged {
			_, err := c.ListAliases(ctxT(t), &kms.ListAliasesInput{Marker: aws.String(f.marker)})
			if err == nil {
				t.Errorf("%s (%q): accepted", f.name, f.marker)
				continue
			}
			t.Run(f.name, func(t *testing.T) {
				wantAPIError(t, err, "InvalidMarkerException", 400)
				wantType[*types.InvalidMarkerException](t, err)
			})
		}
		// And a ListAliases marker is no ListKeys marker.
		_, err = c.ListKeys(ctxT(t), &kms.ListKeysInput{Marker: first.NextMarker})
		wantAPIError(t, err, "InvalidMarkerException", 400)
	})
}

// TestListAliasesDefaultLimit: without a Limit, ListAliases returns at most
// 50 aliases a page (AWS API reference: "If you do not include a value, it
// defaults to 50"), and at most 100 with any Limit ("it must be between 1
// and 100, inclusive").
func TestListAliasesDefaultLimit(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	// Over three keys: AWS allows 50 aliases per key.
	ids := []string{aws.ToString(createKey(t, c).KeyId), aws.ToString(createKey(t, c).KeyId), aws.ToString(createKey(t, c).KeyId)}
	const n = 101
	for i := range n {
		createAlias(t, c, fmt.Sprintf("alias/e2e-many-%03d", i), ids[i%len(ids)])
	}
	out, err := c.ListAliases(ctxT(t), &kms.ListAliasesInput{})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Aliases) > 50 || !out.Truncated {
		t.Errorf("ListAliases without Limit over %d aliases: %d aliases, Truncated %v; AWS defaults to 50", n, len(out.Aliases), out.Truncated)
	}
	out, err = c.ListAliases(ctxT(t), &kms.ListAliasesInput{Limit: aws.Int32(1000)})
	if err == nil && (len(out.Aliases) > 100 || !out.Truncated) {
		t.Errorf("ListAliases Limit 1000 over %d aliases: %d aliases, Truncated %v; AWS returns at most 100", n, len(out.Aliases), out.Truncated)
	}
	// All of them, by pages, once each.
	l, _ := listAliases(t, c, nil, nil)
	if got := customerAliases(t, l); len(got) != n {
		t.Errorf("listed %d aliases, want %d", len(got), n)
	}
}

// TestAliasesPerAccount: alias names are scoped to an account.
func TestAliasesPerAccount(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c, o := s.client(), s.other()
	mine, theirs := createKey(t, c), createKey(t, o)
	mineID, mineARN := aws.ToString(mine.KeyId), aws.ToString(mine.Arn)
	theirID, theirARN := aws.ToString(theirs.KeyId), aws.ToString(theirs.Arn)
	if theirARN != keyARN(otherAccount, theirID) {
		t.Fatalf("other account's key ARN %q", theirARN)
	}
	const shared, mainOnly = "alias/e2e-shared", "alias/e2e-main-only"
	createAlias(t, c, shared, mineID)
	createAlias(t, c, mainOnly, mineID)
	createAlias(t, o, shared, theirID) // same name, other account: no conflict

	for _, tc := range []struct {
		name   string
		client *kms.Client
		ref    string
		want   string
	}{
		{"main by name", c, shared, mineARN},
		{"main by ARN", c, aliasARN(mainAccount, shared), mineARN},
		{"other by name", o, shared, theirARN},
		{"other by ARN", o, aliasARN(otherAccount, shared), theirARN},
	} {
		out, err := tc.client.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(tc.ref), Plaintext: []byte("x")})
		if err != nil {
			t.Errorf("%s: Encrypt(%s): %v", tc.name, tc.ref, err)
			continue
		}
		if got := aws.ToString(out.KeyId); got != tc.want {
			t.Errorf("%s: Encrypt(%s) went to %q, want %q", tc.name, tc.ref, got, tc.want)
		}
	}

	// Each account lists only its own aliases.
	l, _ := listAliases(t, o, nil, nil)
	got := customerAliases(t, l)
	if names := aliasNames(got); !slices.Equal(names, []string{shared}) {
		t.Errorf("other account lists %v, want only %s", names, shared)
	} else if a := got[shared]; aws.ToString(a.AliasArn) != aliasARN(otherAccount, shared) || aws.ToString(a.TargetKeyId) != theirID {
		t.Errorf("other account's alias: %s -> %s", aws.ToString(a.AliasArn), aws.ToString(a.TargetKeyId))
	}
	l, _ = listAliases(t, c, nil, nil)
	got = customerAliases(t, l)
	if names := aliasNames(got); !slices.Equal(names, []string{mainOnly, shared}) {
		t.Errorf("main account lists %v", names)
	} else if a := got[shared]; aws.ToString(a.AliasArn) != aliasARN(mainAccount, shared) || aws.ToString(a.TargetKeyId) != mineID {
		t.Errorf("main account's alias: %s -> %s", aws.ToString(a.AliasArn), aws.ToString(a.TargetKeyId))
	}

	// Another account's alias name is looked up in the caller's account.
	_, err := o.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(mainOnly), Plaintext: []byte("x")})
	ae := wantAPIError(t, err, "NotFoundException", 400)
	wantMessage(t, ae, aliasNotFoundMsg(otherAccount, mainOnly))
	_, err = o.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: aws.String(mainOnly)})
	ae = wantAPIError(t, err, "NotFoundException", 400)
	wantMessage(t, ae, aliasNotFoundMsg(otherAccount, mainOnly))
	// By alias ARN it names the other account's key, which the key policy
	// does not let this caller use.
	_, err = o.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(aliasARN(mainAccount, mainOnly)), Plaintext: []byte("x")})
	ae = wantAPIError(t, err, "AccessDeniedException", 400)
	if !strings.Contains(ae.ErrorMessage(), otherARN) {
		t.Errorf("AccessDenied message %q does not name the caller", ae.ErrorMessage())
	}
	// Alias management never reaches into another account.
	_, err = o.DeleteAlias(ctxT(t), &kms.DeleteAliasInput{AliasName: aws.String(mainOnly)})
	ae = wantAPIError(t, err, "NotFoundException", 400)
	wantMessage(t, ae, aliasNotFoundMsg(otherAccount, mainOnly))
	_, err = o.UpdateAlias(ctxT(t), &kms.UpdateAliasInput{AliasName: aws.String(mainOnly), TargetKeyId: aws.String(theirID)})
	wantAPIError(t, err, "NotFoundException", 400)
	_, err = o.CreateAlias(ctxT(t), &kms.CreateAliasInput{AliasName: aws.String("alias/e2e-stolen"), TargetKeyId: aws.String(mineID)})
	wantAPIError(t, err, "NotFoundException", 400)
	_, err = o.CreateAlias(ctxT(t), &kms.CreateAliasInput{AliasName: aws.String("alias/e2e-stolen"), TargetKeyId: aws.String(mineARN)})
	if code := apiCode(err); code != "AccessDeniedException" && code != "NotFoundException" {
		t.Errorf("CreateAlias for another account's key by ARN: %v, want AccessDeniedException or NotFoundException", err)
	}
	// The other account's UpdateAlias of its own "shared" leaves ours alone.
	theirs2 := createKey(t, o)
	if _, err := o.UpdateAlias(ctxT(t), &kms.UpdateAliasInput{AliasName: aws.String(shared), TargetKeyId: theirs2.KeyId}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		client *kms.Client
		want   string
	}{{c, mineARN}, {o, aws.ToString(theirs2.Arn)}} {
		d, err := tc.client.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: aws.String(shared)})
		if err != nil {
			t.Fatal(err)
		}
		if got := aws.ToString(d.KeyMetadata.Arn); got != tc.want {
			t.Errorf("%s resolves to %q, want %q", shared, got, tc.want)
		}
	}
	if out, err := c.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(mainOnly), Plaintext: []byte("x")}); err != nil || aws.ToString(out.KeyId) != mineARN {
		t.Errorf("main account's %s after the other account's attempts: %v", mainOnly, err)
	}
}

// TestAliasRefusals: invalid names, duplicates, bad targets, alias names
// where only key ids are accepted, and aliases that do not exist.
func TestAliasRefusals(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	md := createKey(t, c)
	id, arn := aws.ToString(md.KeyId), aws.ToString(md.Arn)
	other := createKey(t, c)
	const existing = "alias/e2e-existing"
	createAlias(t, c, existing, id)
	// Valid names at the edges of the rules.
	valid := []string{"alias/" + strings.Repeat("n", 250), "alias/a/b_C-9", "alias/x"}
	for _, name := range valid {
		createAlias(t, c, name, id)
	}
	unknown := uuid.NewString()

	create := func(name, target string) func() error {
		return func() error {
			_, err := c.CreateAlias(ctxT(t), &kms.CreateAliasInput{AliasName: aws.String(name), TargetKeyId: aws.String(target)})
			return err
		}
	}
	update := func(name, target string) func() error {
		return func() error {
			_, err := c.UpdateAlias(ctxT(t), &kms.UpdateAliasInput{AliasName: aws.String(name), TargetKeyId: aws.String(target)})
			return err
		}
	}
	del := func(name string) func() error {
		return func() error {
			_, err := c.DeleteAlias(ctxT(t), &kms.DeleteAliasInput{AliasName: aws.String(name)})
			return err
		}
	}
	const prefixMsg = `Alias must start with the prefix "alias/".`
	long := "alias/" + strings.Repeat("n", 251) // 257 characters
	type refusal struct {
		name      string
		call      func() error
		code      string
		msg       string // exact message, if set
		msgPrefix string // message prefix, if set
	}
	cases := []refusal{
		{"CreateAlias duplicate", create(existing, id), "AlreadyExistsException",
			"An alias with the name " + aliasARN(mainAccount, existing) + " already exists", ""},
		{"CreateAlias duplicate for another key", create(existing, aws.ToString(other.KeyId)), "AlreadyExistsException", "", ""},
		{"CreateAlias without alias/ prefix", create("e2e-no-prefix", id), "ValidationException", "", prefixMsg},
		{"CreateAlias alias/aws/ prefix", create("alias/aws/x", id), "InvalidAliasNameException", "", ""},
		{"CreateAlias with a dot", create("alias/a.b", id), "ValidationException", "", ""},
		{"CreateAlias with a colon", create("alias/a:b", id), "ValidationException", "", ""},
		{"CreateAlias with a space", create("alias/a b", id), "ValidationException", "", ""},
		{"CreateAlias of 257 characters", create(long, id), "ValidationException", "", ""},
		{"CreateAlias empty name", create("", id), "ValidationException", "", ""},
		{"CreateAlias target given as alias name", create("alias/e2e-to-alias", existing), "NotFoundException", "", ""},
		{"CreateAlias target given as alias ARN", create("alias/e2e-to-alias", aliasARN(mainAccount, existing)), "NotFoundException", "", ""},
		{"CreateAlias unknown target key", create("alias/e2e-to-nothing", unknown), "NotFoundException",
			"Key '" + keyARN(mainAccount, unknown) + "' does not exist", ""},
		{"CreateAlias unknown target key ARN", create("alias/e2e-to-nothing", keyARN(mainAccount, unknown)), "NotFoundException", "", ""},
		{"CreateAlias target not a key id", create("alias/e2e-to-nothing", "not-a-key"), "NotFoundException", "", ""},
		{"UpdateAlias that does not exist", update("alias/e2e-nonexistent", id), "NotFoundException",
			aliasNotFoundMsg(mainAccount, "alias/e2e-nonexistent"), ""},
		{"UpdateAlias target given as alias name", update(existing, existing), "NotFoundException", "", ""},
		{"UpdateAlias unknown target key", update(existing, unknown), "NotFoundException", "", ""},
		{"UpdateAlias without alias/ prefix", update("e2e-no-prefix", id), "ValidationException", "", prefixMsg},
		{"UpdateAlias with a dot", update("alias/a.b", id), "ValidationException", "", ""},
		{"UpdateAlias of 257 characters", update(long, id), "ValidationException", "", ""},
		{"DeleteAlias that does not exist", del("alias/e2e-nonexistent"), "NotFoundException",
			aliasNotFoundMsg(mainAccount, "alias/e2e-nonexistent"), ""},
		{"DeleteAlias without alias/ prefix", del("e2e-no-prefix"), "ValidationException", "", prefixMsg},
		{"DeleteAlias with a dot", del("alias/a.b"), "ValidationException", "", ""},
		{"DeleteAlias of 257 characters", del(long), "ValidationException", "", ""},
	}
	// Management operations take a key id or key ARN only.
	for _, ref := range []struct{ form, keyID string }{{"alias name", existing}, {"alias ARN", aliasARN(mainAccount, existing)}} {
		k := aws.String(ref.keyID)
		mgmt := []struct {
			op   string
			call func() error
		}{
			{"EnableKey", func() error { _, err := c.EnableKey(ctxT(t), &kms.EnableKeyInput{KeyId: k}); return err }},
			{"DisableKey", func() error { _, err := c.DisableKey(ctxT(t), &kms.DisableKeyInput{KeyId: k}); return err }},
			{"TagResource", func() error {
				_, err := c.TagResource(ctxT(t), &kms.TagResourceInput{KeyId: k, Tags: mkTags("via", "alias")})
				return err
			}},
			{"UntagResource", func() error {
				_, err := c.UntagResource(ctxT(t), &kms.UntagResourceInput{KeyId: k, TagKeys: []string{"keep"}})
				return err
			}},
			{"ListResourceTags", func() error {
				_, err := c.ListResourceTags(ctxT(t), &kms.ListResourceTagsInput{KeyId: k})
				return err
			}},
			{"UpdateKeyDescription", func() error {
				_, err := c.UpdateKeyDescription(ctxT(t), &kms.UpdateKeyDescriptionInput{KeyId: k, Description: aws.String("via alias")})
				return err
			}},
			{"ListAliases KeyId", func() error { _, err := c.ListAliases(ctxT(t), &kms.ListAliasesInput{KeyId: k}); return err }},
		}
		for _, m := range mgmt {
			cases = append(cases, refusal{name: m.op + " by " + ref.form, call: m.call, code: "NotFoundException"})
		}
	}
	tagResource(t, c, id, "keep", "me")

	t.Run("cases", func(t *testing.T) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				err := tc.call()
				ae := wantAPIError(t, err, tc.code, 400)
				if tc.msg != "" {
					wantMessage(t, ae, tc.msg)
				}
				if tc.msgPrefix != "" && !strings.HasPrefix(ae.ErrorMessage(), tc.msgPrefix) {
					t.Errorf("message %q does not start with %q", ae.ErrorMessage(), tc.msgPrefix)
				}
				switch tc.code {
				case "AlreadyExistsException":
					wantType[*types.AlreadyExistsException](t, err)
				case "InvalidAliasNameException":
					wantType[*types.InvalidAliasNameException](t, err)
				case "NotFoundException":
					wantType[*types.NotFoundException](t, err)
				}
			})
		}
	})

	// Nothing refused changed anything.
	l, _ := listAliases(t, c, nil, nil)
	got := aliasNames(customerAliases(t, l))
	wantNames := append([]string{existing}, valid...)
	slices.Sort(wantNames)
	if !slices.Equal(got, wantNames) {
		t.Errorf("after the refusals ListAliases shows %v, want %v", got, wantNames)
	}
	out, err := c.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(existing), Plaintext: []byte("x")})
	if err != nil || aws.ToString(out.KeyId) != arn {
		t.Errorf("%s after the refusals: %v", existing, err)
	}
	d, err := c.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: aws.String(id)})
	if err != nil {
		t.Fatal(err)
	}
	if !d.KeyMetadata.Enabled || aws.ToString(d.KeyMetadata.Description) != "" {
		t.Errorf("after the refusals the key is Enabled %v, description %q", d.KeyMetadata.Enabled, aws.ToString(d.KeyMetadata.Description))
	}
	wantTags(t, c, id, "keep=me")
}

// ---- tags ----

// TestTags: TagResource adds and replaces in place, ListResourceTags lists in
// insertion order and pages, UntagResource removes.
func TestTags(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()

	t.Run("CreateKey Tags", func(t *testing.T) {
		t.Parallel()
		out, err := c.CreateKey(ctxT(t), &kms.CreateKeyInput{Tags: mkTags("team", "payments", "env", "", "cost-center", "42")})
		if err != nil {
			t.Fatal(err)
		}
		id := aws.ToString(out.KeyMetadata.KeyId)
		wantTags(t, c, id, "team=payments", "env=", "cost-center=42")
		// By key ARN too.
		wantTags(t, c, aws.ToString(out.KeyMetadata.Arn), "team=payments", "env=", "cost-center=42")
	})

	t.Run("no tags", func(t *testing.T) {
		t.Parallel()
		id := aws.ToString(createKey(t, c).KeyId)
		out, err := c.ListResourceTags(ctxT(t), &kms.ListResourceTagsInput{KeyId: aws.String(id)})
		if err != nil {
			t.Fatal(err)
		}
		if len(out.Tags) != 0 || out.Truncated || out.NextMarker != nil {
			t.Errorf("untagged key: %+v", out)
		}
	})

	t.Run("add, replace, page, remove", func(t *testing.T) {
		t.Parallel()
		md := createKey(t, c)
		id, arn := aws.ToString(md.KeyId), aws.ToString(md.Arn)
		tagResource(t, c, id, "tag1", "one", "tag2", "two", "tag3", "three")
		// tag2 is updated in place, by ARN; the new ones go to the end.
		tagResource(t, c, arn, "tag4", "four", "tag2", "TWO", "tag5", "five")
		all := []string{"tag1=one", "tag2=TWO", "tag3=three", "tag4=four", "tag5=five"}
		wantTags(t, c, id, all...)

		// Limit 2 over 5 tags: three pages, in order, each tag once.
		got, pages := listTags(t, c, id, aws.Int32(2))
		if !slices.Equal(got, all) || pages != 3 {
			t.Errorf("Limit 2: %d pages %q, want 3 pages %q", pages, got, all)
		}
		// A page that ends at the last tag is not truncated.
		out, err := c.ListResourceTags(ctxT(t), &kms.ListResourceTagsInput{KeyId: aws.String(id), Limit: aws.Int32(5)})
		if err != nil || len(out.Tags) != 5 || out.Truncated || out.NextMarker != nil {
			t.Errorf("Limit 5 over 5 tags: %v, %d tags, Truncated %v", err, len(out.Tags), out.Truncated)
		}
		for _, limit := range []int32{0, 51} {
			_, err := c.ListResourceTags(ctxT(t), &kms.ListResourceTagsInput{KeyId: aws.String(id), Limit: aws.Int32(limit)})
			wantAPIError(t, err, "ValidationException", 400)
		}

		// The value may be set to the same or the empty string.
		tagResource(t, c, id, "tag3", "three", "tag1", "")
		all[0] = "tag1="
		wantTags(t, c, id, all...)

		// Unknown keys are ignored; the others go, the order of the rest stays.
		if _, err := c.UntagResource(ctxT(t), &kms.UntagResourceInput{KeyId: aws.String(id), TagKeys: []string{"tag4", "no-such-tag", "tag1"}}); err != nil {
			t.Fatal(err)
		}
		wantTags(t, c, id, "tag2=TWO", "tag3=three", "tag5=five")
		// A removed key added again goes to the end.
		tagResource(t, c, id, "tag1", "back")
		wantTags(t, c, id, "tag2=TWO", "tag3=three", "tag5=five", "tag1=back")
		// Untagging tag keys that are not there is not an error.
		if _, err := c.UntagResource(ctxT(t), &kms.UntagResourceInput{KeyId: aws.String(arn), TagKeys: []string{"gone"}}); err != nil {
			t.Errorf("UntagResource of a missing tag key: %v", err)
		}
		// All of them.
		if _, err := c.UntagResource(ctxT(t), &kms.UntagResourceInput{KeyId: aws.String(arn), TagKeys: []string{"tag1", "tag2", "tag3", "tag5"}}); err != nil {
			t.Fatal(err)
		}
		wantTags(t, c, id)
	})

	t.Run("markers", func(t *testing.T) {
		t.Parallel()
		a, b := aws.ToString(createKey(t, c).KeyId), aws.ToString(createKey(t, c).KeyId)
		kv := []string{"k1", "1", "k2", "2", "k3", "3", "k4", "4", "k5", "5"}
		tagResource(t, c, a, kv...)
		tagResource(t, c, b, kv...)
		page, err := c.ListResourceTags(ctxT(t), &kms.ListResourceTagsInput{KeyId: aws.String(a), Limit: aws.Int32(2)})
		if err != nil || page.NextMarker == nil {
			t.Fatalf("ListResourceTags Limit 2: %v %+v", err, page)
		}
		// A's marker works for A...
		next, err := c.ListResourceTags(ctxT(t), &kms.ListResourceTagsInput{KeyId: aws.String(a), Limit: aws.Int32(2), Marker: page.NextMarker})
		if err != nil {
			t.Fatalf("ListResourceTags with its marker: %v", err)
		}
		if got := tagStrings(next.Tags); !slices.Equal(got, []string{"k3=3", "k4=4"}) {
			t.Errorf("second page %q", got)
		}
		aliasPageKey := aws.ToString(createKey(t, c).KeyId)
		createAlias(t, c, "alias/e2e-tag-marker-1", aliasPageKey)
		createAlias(t, c, "alias/e2e-tag-marker-2", aliasPageKey)
		aliasPage, err := c.ListAliases(ctxT(t), &kms.ListAliasesInput{Limit: aws.Int32(1)})
		if err != nil || aliasPage.NextMarker == nil {
			t.Fatalf("ListAliases Limit 1: %v %+v", err, aliasPage)
		}
		forged := []struct {
			name, key, marker string
		}{
			{"another key's marker", b, aws.ToString(page.NextMarker)},
			{"base64 of a position", a, base64.RawURLEncoding.EncodeToString([]byte("2"))},
			{"a position with a zero tag", a, base64.RawURLEncoding.EncodeToString(append([]byte("2"), make([]byte, 16)...))},
			{"a plain number", a, "2"},
			{"not base64", a, "garbage!"},
			{"a ListAliases marker", a, aws.ToString(aliasPage.NextMarker)},
		}
		for _, f := range forged {
			t.Run(f.name, func(t *testing.T) {
				_, err := c.ListResourceTags(ctxT(t), &kms.ListResourceTagsInput{KeyId: aws.String(f.key), Marker: aws.String(f.marker)})
				wantAPIError(t, err, "InvalidMarkerException", 400)
				wantType[*types.InvalidMarkerException](t, err)
			})
		}
	})

	t.Run("another account", func(t *testing.T) {
		t.Parallel()
		md := createKey(t, c)
		id, arn := aws.ToString(md.KeyId), aws.ToString(md.Arn)
		tagResource(t, c, id, "owner", "main")
		o := s.other()
		_, err := o.TagResource(ctxT(t), &kms.TagResourceInput{KeyId: aws.String(id), Tags: mkTags("owner", "bob")})
		wantAPIError(t, err, "NotFoundException", 400)
		_, err = o.ListResourceTags(ctxT(t), &kms.ListResourceTagsInput{KeyId: aws.String(id)})
		wantAPIError(t, err, "NotFoundException", 400)
		for _, err := range []error{
			func() error {
				_, err := o.TagResource(ctxT(t), &kms.TagResourceInput{KeyId: aws.String(arn), Tags: mkTags("owner", "bob")})
				return err
			}(),
			func() error {
				_, err := o.UntagResource(ctxT(t), &kms.UntagResourceInput{KeyId: aws.String(arn), TagKeys: []string{"owner"}})
				return err
			}(),
		} {
			if code := apiCode(err); code != "AccessDeniedException" && code != "NotFoundException" {
				t.Errorf("another account tagging by ARN: %v, want AccessDeniedException or NotFoundException", err)
			}
		}
		wantTags(t, c, id, "owner=main")
	})
}

// TestTagRefusals: the tag limits, reserved prefix and duplicates; a refused
// request changes nothing.
func TestTagRefusals(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()

	t.Run("51 after merging", func(t *testing.T) {
		t.Parallel()
		id := aws.ToString(createKey(t, c).KeyId)
		var first, second, want []string
		for i := range 50 {
			kv := []string{fmt.Sprintf("k%02d", i), fmt.Sprint(i)}
			if i < 30 {
				first = append(first, kv...)
			} else {
				second = append(second, kv...)
			}
			want = append(want, kv[0]+"="+kv[1])
		}
		tagResource(t, c, id, first...)
		tagResource(t, c, id, second...) // exactly 50
		wantTags(t, c, id, want...)
		// Replacing on a full key is fine: still 50.
		tagResource(t, c, id, "k00", "zero", "k49", "forty-nine")
		want[0], want[49] = "k00=zero", "k49=forty-nine"
		wantTags(t, c, id, want...)
		// One more is one too many, even with replacements in the same request.
		_, err := c.TagResource(ctxT(t), &kms.TagResourceInput{KeyId: aws.String(id), Tags: mkTags("k01", "changed", "k50", "50")})
		ae := wantAPIError(t, err, "TagException", 400)
		wantType[*types.TagException](t, err)
		wantMessage(t, ae, "Too many tags")
		wantTags(t, c, id, want...)
		// After removing one there is room again.
		if _, err := c.UntagResource(ctxT(t), &kms.UntagResourceInput{KeyId: aws.String(id), TagKeys: []string{"k10"}}); err != nil {
			t.Fatal(err)
		}
		tagResource(t, c, id, "k50", "50")
		got, _ := listTags(t, c, id, nil)
		if len(got) != 50 || got[49] != "k50=50" || slices.Contains(got, "k10=10") {
			t.Errorf("after untag and tag: %d tags, last %q", len(got), got[len(got)-1])
		}
	})

	id := aws.ToString(createKey(t, c).KeyId)
	tagResource(t, c, id, "existing", "value")
	fifty1 := make([]string, 0, 102)
	for i := range 51 {
		fifty1 = append(fifty1, fmt.Sprintf("n%02d", i), "v")
	}
	cases := []struct {
		name string
		tags []types.Tag
		code string
		msg  string
	}{
		{"51 in one request", mkTags(fifty1...), "TagException", "Too many tags"},
		{"aws: prefix", mkTags("aws:team", "x"), "TagException", "Tags beginning with aws: are reserved"},
		{"AWS: prefix", mkTags("AWS:team", "x"), "TagException", "Tags beginning with aws: are reserved"},
		{"Aws: prefix among others", mkTags("fine", "x", "Aws:Team", "x"), "TagException", "Tags beginning with aws: are reserved"},
		{"duplicate keys", mkTags("dup", "1", "dup", "2"), "TagException", "Duplicate tag keys"},
		{"duplicate of an existing key", mkTags("existing", "1", "existing", "2"), "TagException", "Duplicate tag keys"},
		{"key of 129 characters", mkTags(strings.Repeat("k", 129), "v"), "ValidationException", ""},
		{"value of 257 characters", mkTags("k", strings.Repeat("v", 257)), "ValidationException", ""},
		{"empty key", mkTags("", "v"), "ValidationException", ""},
	}
	t.Run("cases", func(t *testing.T) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				_, err := c.TagResource(ctxT(t), &kms.TagResourceInput{KeyId: aws.String(id), Tags: tc.tags})
				ae := wantAPIError(t, err, tc.code, 400)
				if tc.msg != "" {
					wantMessage(t, ae, tc.msg)
				}
				if tc.code == "TagException" {
					wantType[*types.TagException](t, err)
				}
			})
		}
		t.Run("UntagResource key of 129 characters", func(t *testing.T) {
			t.Parallel()
			_, err := c.UntagResource(ctxT(t), &kms.UntagResourceInput{KeyId: aws.String(id), TagKeys: []string{strings.Repeat("k", 129)}})
			wantAPIError(t, err, "ValidationException", 400)
		})
		t.Run("TagValue missing (raw)", func(t *testing.T) {
			t.Parallel()
			r := s.callJSON(t, "TrentService.TagResource", map[string]any{"KeyId": id, "Tags": []map[string]string{{"TagKey": "only-key"}}})
			r.wantError(t, 400, "ValidationException")
		})
	})
	wantTags(t, c, id, "existing=value")

	// The limits are inclusive.
	long := mkTags(strings.Repeat("k", 128), strings.Repeat("v", 256))
	if _, err := c.TagResource(ctxT(t), &kms.TagResourceInput{KeyId: aws.String(id), Tags: long}); err != nil {
		t.Errorf("tag of 128/256 characters: %v", err)
	}
	// aws: is reserved in keys, not elsewhere in them.
	if _, err := c.TagResource(ctxT(t), &kms.TagResourceInput{KeyId: aws.String(id), Tags: mkTags("my-aws:thing", "x")}); err != nil {
		t.Errorf("tag key containing aws: later on: %v", err)
	}
	wantTags(t, c, id, "existing=value", strings.Repeat("k", 128)+"="+strings.Repeat("v", 256), "my-aws:thing=x")
}

// TestConcurrentTagResource: concurrent TagResource calls on one key each
// add their tag; none is lost, in the listing or in the metadata the next
// call sees.
func TestConcurrentTagResource(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	for round := range 10 {
		id := aws.ToString(createKey(t, c).KeyId)
		const n = 48
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := c.TagResource(ctxT(t), &kms.TagResourceInput{KeyId: aws.String(id), Tags: mkTags(fmt.Sprintf("t%02d", i), "v")})
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("concurrent TagResource: %v", err)
			}
		}
		got, _ := listTags(t, c, id, nil)
		if len(got) != n {
			// Diagnose: one more, serial, update that changes nothing; if
			// the lost tags come back, the store had them and only the
			// metadata the server answered from was stale.
			if _, err := c.UntagResource(ctxT(t), &kms.UntagResourceInput{KeyId: aws.String(id), TagKeys: []string{"no-such-tag"}}); err != nil {
				t.Fatal(err)
			}
			healed, _ := listTags(t, c, id, nil)
			t.Fatalf("round %d: %d concurrent TagResource calls succeeded, ListResourceTags then shows %d tags; "+
				"after a no-op UntagResource it shows %d", round, n, len(got), len(healed))
		}
	}
}

// TestConcurrentDisableAndTag: a DisableKey that succeeds among concurrent
// TagResource calls leaves the key disabled: no later Encrypt succeeds.
func TestConcurrentDisableAndTag(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	for round := range 10 {
		md := createKey(t, c)
		id, arn := aws.ToString(md.KeyId), aws.ToString(md.Arn)
		const n = 24
		var wg sync.WaitGroup
		errs := make(chan error, n+1)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if i == n/2 {
					_, err := c.DisableKey(ctxT(t), &kms.DisableKeyInput{KeyId: aws.String(id)})
					errs <- err
				}
				_, err := c.TagResource(ctxT(t), &kms.TagResourceInput{KeyId: aws.String(id), Tags: mkTags(fmt.Sprintf("t%02d", i), "v")})
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("concurrent DisableKey/TagResource: %v", err)
			}
		}
		d, err := c.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: aws.String(id)})
		if err != nil {
			t.Fatal(err)
		}
		_, encErr := c.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(id), Plaintext: []byte("x")})
		if d.KeyMetadata.Enabled || apiCode(encErr) != "DisabledException" {
			t.Fatalf("round %d: DisableKey succeeded, yet DescribeKey says Enabled %v (%s) and Encrypt gives %v, want DisabledException",
				round, d.KeyMetadata.Enabled, d.KeyMetadata.KeyState, encErr)
		}
		if aws.ToString(d.KeyMetadata.Arn) != arn {
			t.Fatalf("DescribeKey Arn %q", aws.ToString(d.KeyMetadata.Arn))
		}
	}
}

// ---- descriptions and metadata ----

func TestUpdateKeyDescription(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	out, err := c.CreateKey(ctxT(t), &kms.CreateKeyInput{Description: aws.String("first")})
	if err != nil {
		t.Fatal(err)
	}
	md := out.KeyMetadata
	id, arn := aws.ToString(md.KeyId), aws.ToString(md.Arn)
	createAlias(t, c, "alias/e2e-described", id)

	describe := func(ref string) *types.KeyMetadata {
		t.Helper()
		d, err := c.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: aws.String(ref)})
		if err != nil {
			t.Fatalf("DescribeKey(%s): %v", ref, err)
		}
		return d.KeyMetadata
	}
	update := func(ref, desc string) error {
		_, err := c.UpdateKeyDescription(ctxT(t), &kms.UpdateKeyDescriptionInput{KeyId: aws.String(ref), Description: aws.String(desc)})
		return err
	}

	steps := []struct {
		name, ref, desc string
	}{
		{"by id", id, "second"},
		{"by ARN", arn, "third, by ARN"},
		{"empty", id, ""},
		{"8192 characters", id, strings.Repeat("d", 8192)},
		{"non-ASCII", arn, "clé de chiffrement — ключ"},
	}
	for _, st := range steps {
		if err := update(st.ref, st.desc); err != nil {
			t.Fatalf("%s: UpdateKeyDescription: %v", st.name, err)
		}
		for _, ref := range []string{id, "alias/e2e-described"} {
			got := describe(ref)
			checkDefaults(t, got, st.desc)
			// Nothing else moved.
			if !got.CreationDate.Equal(*md.CreationDate) || aws.ToString(got.CurrentKeyMaterialId) != aws.ToString(md.CurrentKeyMaterialId) {
				t.Errorf("%s: UpdateKeyDescription changed other metadata: %+v", st.name, got)
			}
		}
	}
	last := steps[len(steps)-1].desc

	refusals := []struct {
		name string
		call func() error
		code string
	}{
		{"8193 characters", func() error { return update(id, strings.Repeat("d", 8193)) }, "ValidationException"},
		{"alias name", func() error { return update("alias/e2e-described", "x") }, "NotFoundException"},
		{"alias ARN", func() error { return update(aliasARN(mainAccount, "alias/e2e-described"), "x") }, "NotFoundException"},
		{"unknown key", func() error { return update(uuid.NewString(), "x") }, "NotFoundException"},
		{"another account's key", func() error {
			_, err := s.other().UpdateKeyDescription(ctxT(t), &kms.UpdateKeyDescriptionInput{KeyId: aws.String(id), Description: aws.String("x")})
			return err
		}, "NotFoundException"},
	}
	for _, r := range refusals {
		t.Run(r.name, func(t *testing.T) {
			wantAPIError(t, r.call(), r.code, 400)
		})
	}
	t.Run("Description missing (raw)", func(t *testing.T) {
		r := s.callJSON(t, "TrentService.UpdateKeyDescription", map[string]any{"KeyId": id})
		r.wantError(t, 400, "ValidationException")
	})
	if got := aws.ToString(describe(id).Description); got != last {
		t.Errorf("after the refusals the description is %q, want %q", got, last)
	}
}

// TestDescribeKeyAllForms: DescribeKey by id, key ARN, alias name and alias
// ARN reports the same full metadata of a symmetric key.
func TestDescribeKeyAllForms(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	out, err := c.CreateKey(ctxT(t), &kms.CreateKeyInput{Description: aws.String("described four ways")})
	if err != nil {
		t.Fatal(err)
	}
	md := out.KeyMetadata
	id := aws.ToString(md.KeyId)
	createAlias(t, c, "alias/e2e-four-ways", id)
	forms := []struct{ name, ref string }{
		{"key id", id},
		{"key ARN", aws.ToString(md.Arn)},
		{"alias name", "alias/e2e-four-ways"},
		{"alias ARN", aliasARN(mainAccount, "alias/e2e-four-ways")},
	}
	for _, f := range forms {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			d, err := c.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: aws.String(f.ref)})
			if err != nil {
				t.Fatal(err)
			}
			got := d.KeyMetadata
			checkDefaults(t, got, "described four ways")
			if aws.ToString(got.KeyId) != id || aws.ToString(got.Arn) != aws.ToString(md.Arn) {
				t.Errorf("KeyId %q Arn %q", aws.ToString(got.KeyId), aws.ToString(got.Arn))
			}
			if !got.CreationDate.Equal(*md.CreationDate) {
				t.Errorf("CreationDate %v, CreateKey said %v", got.CreationDate, md.CreationDate)
			}
			if aws.ToString(got.CurrentKeyMaterialId) != aws.ToString(md.CurrentKeyMaterialId) {
				t.Errorf("CurrentKeyMaterialId %q, CreateKey said %q", aws.ToString(got.CurrentKeyMaterialId), aws.ToString(md.CurrentKeyMaterialId))
			}
			if got.DeletionDate != nil || got.ValidTo != nil || got.PendingDeletionWindowInDays != nil {
				t.Errorf("an enabled key reports DeletionDate %v ValidTo %v PendingDeletionWindowInDays %v",
					got.DeletionDate, got.ValidTo, got.PendingDeletionWindowInDays)
			}
		})
	}
}

// ---- persistence ----

// TestBinaryAliasesTagsPersist: aliases, tags and descriptions survive a
// restart of the binary on the same data directory, and so do pagination
// markers.
func TestBinaryAliasesTagsPersist(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p, endpoint := startDev(t, dir)
	c := newClient(endpoint, "test", "test", nil)
	a, b := createKey(t, c), createKey(t, c)
	aID, aARN := aws.ToString(a.KeyId), aws.ToString(a.Arn)
	bID, bARN := aws.ToString(b.KeyId), aws.ToString(b.Arn)
	createAlias(t, c, "alias/e2e-persist", aID)
	createAlias(t, c, "alias/e2e-persist-moved", aID)
	if _, err := c.UpdateAlias(ctxT(t), &kms.UpdateAliasInput{AliasName: aws.String("alias/e2e-persist-moved"), TargetKeyId: aws.String(bID)}); err != nil {
		t.Fatal(err)
	}
	createAlias(t, c, "alias/e2e-persist-deleted", aID)
	if _, err := c.DeleteAlias(ctxT(t), &kms.DeleteAliasInput{AliasName: aws.String("alias/e2e-persist-deleted")}); err != nil {
		t.Fatal(err)
	}
	tagResource(t, c, aID, "tag1", "one", "tag2", "two", "tag3", "three")
	tagResource(t, c, aID, "tag2", "TWO", "tag4", "four")
	if _, err := c.UntagResource(ctxT(t), &kms.UntagResourceInput{KeyId: aws.String(aID), TagKeys: []string{"tag3"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UpdateKeyDescription(ctxT(t), &kms.UpdateKeyDescriptionInput{KeyId: aws.String(aID), Description: aws.String("persisted")}); err != nil {
		t.Fatal(err)
	}
	wantTagList := []string{"tag1=one", "tag2=TWO", "tag4=four"}
	wantTags(t, c, aID, wantTagList...)
	blob := encrypt(t, c, "alias/e2e-persist", []byte("before the restart"), nil)
	aliasesBefore, _ := listAliases(t, c, nil, nil)
	aliasPage, err := c.ListAliases(ctxT(t), &kms.ListAliasesInput{Limit: aws.Int32(1)})
	if err != nil || aliasPage.NextMarker == nil {
		t.Fatalf("ListAliases Limit 1: %v %+v", err, aliasPage)
	}
	tagPage, err := c.ListResourceTags(ctxT(t), &kms.ListResourceTagsInput{KeyId: aws.String(aID), Limit: aws.Int32(1)})
	if err != nil || tagPage.NextMarker == nil {
		t.Fatalf("ListResourceTags Limit 1: %v %+v", err, tagPage)
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("first run exited %d\nstderr:\n%s", code, p.stderr)
	}

	_, endpoint2 := startDev(t, dir)
	c2 := newClient(endpoint2, "test", "test", nil)

	for _, tc := range []struct{ ref, want string }{
		{"alias/e2e-persist", aARN},
		{aliasARN(mainAccount, "alias/e2e-persist"), aARN},
		{"alias/e2e-persist-moved", bARN},
	} {
		out, err := c2.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(tc.ref), Plaintext: []byte("after the restart")})
		if err != nil {
			t.Errorf("Encrypt(%s) after the restart: %v", tc.ref, err)
			continue
		}
		if got := aws.ToString(out.KeyId); got != tc.want {
			t.Errorf("Encrypt(%s) after the restart went to %q, want %q", tc.ref, got, tc.want)
		}
		if got := decrypt(t, c2, out.CiphertextBlob, nil).Plaintext; string(got) != "after the restart" {
			t.Errorf("round trip by %s after the restart gave %q", tc.ref, got)
		}
	}
	out, err := c2.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: blob, KeyId: aws.String("alias/e2e-persist")})
	if err != nil || string(out.Plaintext) != "before the restart" {
		t.Errorf("Decrypt of the old blob by alias after the restart: %v", err)
	}
	_, err = c2.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String("alias/e2e-persist-deleted"), Plaintext: []byte("x")})
	wantAPIError(t, err, "NotFoundException", 400)

	wantTags(t, c2, aID, wantTagList...)
	wantTags(t, c2, bID)
	d, err := c2.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: aws.String("alias/e2e-persist")})
	if err != nil {
		t.Fatal(err)
	}
	if got := aws.ToString(d.KeyMetadata.Description); got != "persisted" {
		t.Errorf("description after the restart %q", got)
	}

	aliasesAfter, _ := listAliases(t, c2, nil, nil)
	before, after := customerAliases(t, aliasesBefore), customerAliases(t, aliasesAfter)
	if !slices.Equal(aliasNames(after), aliasNames(before)) || len(after) != 2 {
		t.Errorf("aliases after the restart %v, before %v", aliasNames(after), aliasNames(before))
	}
	for name, x := range before {
		y := after[name]
		if aws.ToString(y.TargetKeyId) != aws.ToString(x.TargetKeyId) || aws.ToString(y.AliasArn) != aws.ToString(x.AliasArn) ||
			y.CreationDate == nil || !y.CreationDate.Equal(*x.CreationDate) ||
			y.LastUpdatedDate == nil || !y.LastUpdatedDate.Equal(*x.LastUpdatedDate) {
			t.Errorf("alias %s changed across the restart: %+v, was %+v", name, y, x)
		}
	}

	// Markers handed out before the restart still work.
	next, err := c2.ListAliases(ctxT(t), &kms.ListAliasesInput{Marker: aliasPage.NextMarker})
	if err != nil {
		t.Errorf("ListAliases with a marker from before the restart: %v", err)
	} else if len(next.Aliases) != 1 || aws.ToString(next.Aliases[0].AliasName) == aws.ToString(aliasPage.Aliases[0].AliasName) {
		t.Errorf("ListAliases from the old marker: %+v", next.Aliases)
	}
	tnext, err := c2.ListResourceTags(ctxT(t), &kms.ListResourceTagsInput{KeyId: aws.String(aID), Marker: tagPage.NextMarker})
	if err != nil {
		t.Errorf("ListResourceTags with a marker from before the restart: %v", err)
	} else if got := tagStrings(tnext.Tags); !slices.Equal(got, wantTagList[1:]) {
		t.Errorf("ListResourceTags from the old marker: %q, want %q", got, wantTagList[1:])
	}
}
