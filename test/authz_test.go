package test

import (
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/hsmkms/hsmkms/service"
	"github.com/hsmkms/hsmkms/service/policy"
)

const (
	aliceARN = "arn:aws:iam::111122223333:user/alice"
	appARN   = "arn:aws:iam::111122223333:role/app"
	carolARN = "arn:aws:iam::444455556666:user/carol"
)

func identity(t testing.TB, docs ...string) []*policy.Policy {
	t.Helper()
	var out []*policy.Policy
	for _, d := range docs {
		p, err := policy.Parse([]byte(d), policy.IdentityPolicy)
		if err != nil {
			t.Fatalf("identity policy %s: %v", d, err)
		}
		out = append(out, p)
	}
	return out
}

// keyWithPolicy creates a key of the main account with policy.
func keyWithPolicy(t testing.TB, c *kms.Client, policy string) *types.KeyMetadata {
	t.Helper()
	out, err := c.CreateKey(ctxT(t), &kms.CreateKeyInput{Policy: aws.String(policy)})
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	return out.KeyMetadata
}

// denied asserts an AccessDeniedException that names the principal, the
// action and the key, and nothing else.
func denied(t testing.TB, err error, principal, action, keyARN string) {
	t.Helper()
	ae := wantAPIError(t, err, "AccessDeniedException", 400)
	want := "User: " + principal + " is not authorized to perform: " + action + " on resource: " + keyARN
	if ae.ErrorMessage() != want {
		t.Errorf("message %q, want %q", ae.ErrorMessage(), want)
	}
}

// TestAuthorization runs the key-policy and identity-policy rules end to end
// with four principals in two accounts.
func TestAuthorization(t *testing.T) {
	t.Parallel()
	s := startServerWith(t, map[string]service.Caller{
		"AKIDALICE": {Account: mainAccount, ARN: aliceARN, Identity: identity(t,
			`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["kms:Encrypt","kms:Decrypt","kms:ReEncryptFrom","kms:GenerateDataKey"],"Resource":"*"},`+
				`{"Effect":"Deny","Action":"kms:ScheduleKeyDeletion","Resource":"*"}]}`)},
		"AKIDAPP":   {Account: mainAccount, ARN: appARN},
		"AKIDCAROL": {Account: otherAccount, ARN: carolARN},
	})
	root, alice, app, bob, carol := s.client(), s.as("AKIDALICE"), s.as("AKIDAPP"), s.other(), s.as("AKIDCAROL")
	pt := []byte("authorised plaintext")

	def := createKey(t, root)
	defARN := aws.ToString(def.Arn)

	t.Run("identity policy under the default key policy", func(t *testing.T) {
		blob := encrypt(t, alice, defARN, pt, nil)
		if got := decrypt(t, alice, blob, nil).Plaintext; string(got) != string(pt) {
			t.Fatalf("alice decrypts %q", got)
		}
		_, err := alice.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: def.KeyId})
		denied(t, err, aliceARN, "kms:DescribeKey", defARN)
		_, err = alice.ScheduleKeyDeletion(ctxT(t), &kms.ScheduleKeyDeletionInput{KeyId: def.KeyId})
		denied(t, err, aliceARN, "kms:ScheduleKeyDeletion", defARN)
		// No key policy names the role, and it has no identity policy.
		_, err = app.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: def.KeyId, Plaintext: pt})
		denied(t, err, appARN, "kms:Encrypt", defARN)
		// Account-level actions need an identity policy too.
		_, err = alice.ListKeys(ctxT(t), &kms.ListKeysInput{})
		ae := wantAPIError(t, err, "AccessDeniedException", 400)
		wantMessage(t, ae, "User: "+aliceARN+" is not authorized to perform: kms:ListKeys")
		_, err = alice.CreateKey(ctxT(t), &kms.CreateKeyInput{})
		wantAPIError(t, err, "AccessDeniedException", 400)
	})

	t.Run("explicit deny in the key policy wins", func(t *testing.T) {
		k := keyWithPolicy(t, root, `{"Version":"2012-10-17","Statement":[`+
			`{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:*","Resource":"*"},`+
			`{"Effect":"Deny","Principal":{"AWS":"`+aliceARN+`"},"Action":"kms:Decrypt","Resource":"*"}]}`)
		blob := encrypt(t, alice, aws.ToString(k.KeyId), pt, nil)
		_, err := alice.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: blob})
		denied(t, err, aliceARN, "kms:Decrypt", aws.ToString(k.Arn))
		// DryRun answers the real error when the request would fail.
		_, err = alice.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: blob, DryRun: aws.Bool(true)})
		denied(t, err, aliceARN, "kms:Decrypt", aws.ToString(k.Arn))
		_, err = alice.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: k.KeyId, Plaintext: pt, DryRun: aws.Bool(true)})
		wantAPIError(t, err, "DryRunOperationException", 400)
	})

	t.Run("ReEncrypt needs ReEncryptFrom on the source and ReEncryptTo on the destination", func(t *testing.T) {
		from := keyWithPolicy(t, root, `{"Version":"2012-10-17","Statement":[`+
			`{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:*","Resource":"*"},`+
			`{"Effect":"Allow","Principal":{"AWS":"`+appARN+`"},"Action":["kms:Encrypt","kms:ReEncryptFrom"],"Resource":"*"}]}`)
		to := keyWithPolicy(t, root, `{"Version":"2012-10-17","Statement":[`+
			`{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:*","Resource":"*"},`+
			`{"Effect":"Allow","Principal":{"AWS":"`+appARN+`"},"Action":["kms:ReEncrypt*","kms:Decrypt"],"Resource":"*"}]}`)
		blob := encrypt(t, app, aws.ToString(from.KeyId), pt, nil)
		out, err := app.ReEncrypt(ctxT(t), &kms.ReEncryptInput{CiphertextBlob: blob, DestinationKeyId: to.KeyId})
		if err != nil {
			t.Fatalf("ReEncrypt from→to: %v", err)
		}
		if got := decrypt(t, app, out.CiphertextBlob, nil).Plaintext; string(got) != string(pt) {
			t.Fatalf("re-encrypted blob decrypts to %q", got)
		}
		// Back again: ReEncryptFrom on "to" is covered by kms:ReEncrypt*,
		// but "from" grants no ReEncryptTo.
		_, err = app.ReEncrypt(ctxT(t), &kms.ReEncryptInput{CiphertextBlob: out.CiphertextBlob, DestinationKeyId: from.KeyId})
		denied(t, err, appARN, "kms:ReEncryptTo", aws.ToString(from.Arn))
		// alice's identity policy has ReEncryptFrom only: the default key
		// policy delegates, and ReEncryptTo is missing.
		_, err = alice.ReEncrypt(ctxT(t), &kms.ReEncryptInput{CiphertextBlob: encrypt(t, alice, defARN, pt, nil), DestinationKeyId: def.KeyId})
		denied(t, err, aliceARN, "kms:ReEncryptTo", defARN)
	})

	t.Run("encryption context conditions", func(t *testing.T) {
		k := keyWithPolicy(t, root, `{"Version":"2012-10-17","Statement":[`+
			`{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:*","Resource":"*"},`+
			`{"Effect":"Allow","Principal":{"AWS":"`+appARN+`"},"Action":["kms:Encrypt","kms:Decrypt"],"Resource":"*",`+
			`"Condition":{"StringEquals":{"kms:EncryptionContext:dept":"IT"}}}]}`)
		arn := aws.ToString(k.Arn)
		blob := encrypt(t, app, arn, pt, map[string]string{"dept": "IT"})
		decrypt(t, app, blob, map[string]string{"dept": "IT"})
		for name, ec := range map[string]map[string]string{"other value": {"dept": "HR"}, "none": nil, "other key": {"team": "IT"}} {
			_, err := app.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: k.KeyId, Plaintext: pt, EncryptionContext: ec})
			if err == nil {
				t.Errorf("%s: encrypted", name)
				continue
			}
			denied(t, err, appARN, "kms:Encrypt", arn)
		}
	})

	t.Run("cross-account by ARN only, when both policies allow", func(t *testing.T) {
		k := keyWithPolicy(t, root, `{"Version":"2012-10-17","Statement":[`+
			`{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:*","Resource":"*"},`+
			`{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::444455556666:root"},"Action":["kms:Encrypt","kms:Decrypt","kms:DescribeKey","kms:DisableKey"],"Resource":"*"}]}`)
		arn := aws.ToString(k.Arn)
		blob := encrypt(t, bob, arn, pt, nil)
		if got := decrypt(t, bob, blob, nil).Plaintext; string(got) != string(pt) {
			t.Fatalf("bob decrypts %q", got)
		}
		if d, err := bob.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: aws.String(arn)}); err != nil || aws.ToString(d.KeyMetadata.AWSAccountId) != mainAccount {
			t.Fatalf("bob's DescribeKey by ARN: %+v, %v", d, err)
		}
		// A bare key id names a key of the caller's own account.
		_, err := bob.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: k.KeyId, Plaintext: pt})
		wantAPIError(t, err, "NotFoundException", 400)
		// carol's account is allowed, but carol has no identity policy.
		_, err = carol.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(arn), Plaintext: pt})
		denied(t, err, carolARN, "kms:Encrypt", arn)
		// DisableKey is not an action AWS lets another account have.
		_, err = bob.DisableKey(ctxT(t), &kms.DisableKeyInput{KeyId: aws.String(arn)})
		denied(t, err, otherARN, "kms:DisableKey", arn)
		// The default policy does not let the other account in at all.
		_, err = bob.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(defARN), Plaintext: pt})
		denied(t, err, otherARN, "kms:Encrypt", defARN)
		// Listings show only the caller's account.
		l, err := bob.ListKeys(ctxT(t), &kms.ListKeysInput{})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range l.Keys {
			if strings.Contains(aws.ToString(e.KeyArn), mainAccount) {
				t.Errorf("bob lists %s", aws.ToString(e.KeyArn))
			}
		}
	})

	t.Run("CreateKey conditions: request tags and key spec", func(t *testing.T) {
		s2 := startServerWith(t, map[string]service.Caller{"AKIDMAKER": {Account: mainAccount, ARN: "arn:aws:iam::111122223333:user/maker",
			Identity: identity(t, `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"kms:CreateKey","Resource":"*",`+
				`"Condition":{"StringEquals":{"aws:RequestTag/team":"payments","kms:KeySpec":"SYMMETRIC_DEFAULT"}}}}`)}})
		maker := s2.as("AKIDMAKER")
		tag := []types.Tag{{TagKey: aws.String("team"), TagValue: aws.String("payments")}}
		if _, err := maker.CreateKey(ctxT(t), &kms.CreateKeyInput{Tags: tag}); err != nil {
			t.Fatalf("CreateKey with the required tag: %v", err)
		}
		for name, in := range map[string]*kms.CreateKeyInput{
			"no tag":    {},
			"other tag": {Tags: []types.Tag{{TagKey: aws.String("team"), TagValue: aws.String("web")}}},
			"RSA key":   {Tags: tag, KeySpec: types.KeySpecRsa2048, KeyUsage: types.KeyUsageTypeSignVerify},
		} {
			_, err := maker.CreateKey(ctxT(t), in)
			if err == nil {
				t.Errorf("%s: created", name)
				continue
			}
			wantAPIError(t, err, "AccessDeniedException", 400)
		}
	})

	t.Run("refusals say nothing about the policies", func(t *testing.T) {
		k := keyWithPolicy(t, root, `{"Version":"2012-10-17","Statement":[`+
			`{"Sid":"secret statement name","Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:*","Resource":"*"},`+
			`{"Effect":"Deny","Principal":{"AWS":"`+appARN+`"},"Action":"kms:*","Resource":"*","Condition":{"StringEquals":{"aws:ResourceTag/tier":"gold"}}}]}`)
		_, err := app.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: k.KeyId, Plaintext: pt})
		var ae interface{ ErrorMessage() string }
		if !errors.As(err, &ae) || strings.Contains(ae.ErrorMessage(), "secret") || strings.Contains(ae.ErrorMessage(), "tier") {
			t.Errorf("refusal %v reveals policy content", err)
		}
	})
}
