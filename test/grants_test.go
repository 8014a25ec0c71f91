package test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/hsmkms/hsmkms/service"
)

var grantIDRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

func TestGrants(t *testing.T) {
	t.Parallel()
	s := startServerWith(t, map[string]service.Caller{
		"AKIDALICE": {Account: mainAccount, ARN: aliceARN}, // no identity policy: only grants let her in
		"AKIDAPP":   {Account: mainAccount, ARN: appARN},
	})
	root, alice, app, bob := s.client(), s.as("AKIDALICE"), s.as("AKIDAPP"), s.other()
	k := createKey(t, root)
	arn := aws.ToString(k.Arn)
	it := map[string]string{"dept": "IT", "app": "orders"}
	pt := []byte("granted")

	_, err := alice.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: k.KeyId, Plaintext: pt, EncryptionContext: it})
	denied(t, err, aliceARN, "kms:Encrypt", arn)

	g, err := root.CreateGrant(ctxT(t), &kms.CreateGrantInput{KeyId: k.KeyId, GranteePrincipal: aws.String(aliceARN),
		RetiringPrincipal: aws.String(appARN), Name: aws.String("orders"),
		Operations:  []types.GrantOperation{types.GrantOperationEncrypt, types.GrantOperationDecrypt, types.GrantOperationDescribeKey},
		Constraints: &types.GrantConstraints{EncryptionContextSubset: map[string]string{"dept": "IT"}}})
	if err != nil {
		t.Fatalf("CreateGrant: %v", err)
	}
	if !grantIDRE.MatchString(aws.ToString(g.GrantId)) || aws.ToString(g.GrantToken) == "" {
		t.Fatalf("CreateGrant = %+v", g)
	}

	// Effective at once, within its operations and constraint.
	blob := encrypt(t, alice, aws.ToString(k.KeyId), pt, it)
	if got := decrypt(t, alice, blob, it).Plaintext; string(got) != string(pt) {
		t.Fatalf("grantee decrypts %q", got)
	}
	if _, err := alice.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: k.KeyId}); err != nil {
		t.Errorf("DescribeKey through the grant (constraints do not apply to it): %v", err)
	}
	for name, ec := range map[string]map[string]string{"no context": nil, "other dept": {"dept": "HR"}, "value case differs": {"dept": "it"}} {
		_, err := alice.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: k.KeyId, Plaintext: pt, EncryptionContext: ec})
		if err == nil {
			t.Errorf("%s: the constraint let it through", name)
			continue
		}
		denied(t, err, aliceARN, "kms:Encrypt", arn)
	}
	_, err = alice.GenerateDataKey(ctxT(t), &kms.GenerateDataKeyInput{KeyId: k.KeyId, KeySpec: types.DataKeySpecAes256, EncryptionContext: it})
	denied(t, err, aliceARN, "kms:GenerateDataKey", arn)

	// The same Name and properties is a retry; other properties make a new grant.
	again, err := root.CreateGrant(ctxT(t), &kms.CreateGrantInput{KeyId: k.KeyId, GranteePrincipal: aws.String(aliceARN),
		RetiringPrincipal: aws.String(appARN), Name: aws.String("orders"),
		Operations:  []types.GrantOperation{types.GrantOperationDescribeKey, types.GrantOperationDecrypt, types.GrantOperationEncrypt},
		Constraints: &types.GrantConstraints{EncryptionContextSubset: map[string]string{"dept": "IT"}}})
	if err != nil || aws.ToString(again.GrantId) != aws.ToString(g.GrantId) {
		t.Fatalf("retry of CreateGrant = %v, %v; want grant %s", again, err, aws.ToString(g.GrantId))
	}
	exact, err := root.CreateGrant(ctxT(t), &kms.CreateGrantInput{KeyId: k.KeyId, GranteePrincipal: aws.String(aliceARN),
		Name: aws.String("orders"), Operations: []types.GrantOperation{types.GrantOperationGenerateDataKey},
		Constraints: &types.GrantConstraints{EncryptionContextEquals: map[string]string{"dept": "IT"}}})
	if err != nil || aws.ToString(exact.GrantId) == aws.ToString(g.GrantId) {
		t.Fatalf("CreateGrant with other properties = %v, %v", exact, err)
	}
	if _, err := alice.GenerateDataKey(ctxT(t), &kms.GenerateDataKeyInput{KeyId: k.KeyId, KeySpec: types.DataKeySpecAes256,
		EncryptionContext: map[string]string{"dept": "IT"}}); err != nil {
		t.Errorf("GenerateDataKey with exactly the constrained context: %v", err)
	}
	_, err = alice.GenerateDataKey(ctxT(t), &kms.GenerateDataKeyInput{KeyId: k.KeyId, KeySpec: types.DataKeySpecAes256, EncryptionContext: it})
	denied(t, err, aliceARN, "kms:GenerateDataKey", arn)

	t.Run("listing", func(t *testing.T) {
		l, err := root.ListGrants(ctxT(t), &kms.ListGrantsInput{KeyId: k.KeyId})
		if err != nil || len(l.Grants) != 2 || l.Truncated {
			t.Fatalf("ListGrants = %+v, %v", l, err)
		}
		e := l.Grants[0]
		if aws.ToString(e.GrantId) != aws.ToString(g.GrantId) || aws.ToString(e.KeyId) != arn || aws.ToString(e.Name) != "orders" ||
			aws.ToString(e.GranteePrincipal) != aliceARN || aws.ToString(e.RetiringPrincipal) != appARN ||
			aws.ToString(e.IssuingAccount) != mainARN || len(e.Operations) != 3 || e.CreationDate == nil ||
			e.Constraints == nil || e.Constraints.EncryptionContextSubset["dept"] != "IT" {
			t.Errorf("grant entry %+v", e)
		}
		one, err := root.ListGrants(ctxT(t), &kms.ListGrantsInput{KeyId: k.KeyId, GrantId: exact.GrantId})
		if err != nil || len(one.Grants) != 1 || aws.ToString(one.Grants[0].GrantId) != aws.ToString(exact.GrantId) {
			t.Errorf("ListGrants by GrantId = %+v, %v", one, err)
		}
		page, err := root.ListGrants(ctxT(t), &kms.ListGrantsInput{KeyId: k.KeyId, Limit: aws.Int32(1)})
		if err != nil || len(page.Grants) != 1 || !page.Truncated || page.NextMarker == nil {
			t.Fatalf("first page = %+v, %v", page, err)
		}
		next, err := root.ListGrants(ctxT(t), &kms.ListGrantsInput{KeyId: k.KeyId, Limit: aws.Int32(1), Marker: page.NextMarker})
		if err != nil || len(next.Grants) != 1 || next.Truncated || aws.ToString(next.Grants[0].GrantId) != aws.ToString(exact.GrantId) {
			t.Errorf("second page = %+v, %v", next, err)
		}
		r, err := root.ListRetirableGrants(ctxT(t), &kms.ListRetirableGrantsInput{RetiringPrincipal: aws.String(appARN)})
		if err != nil || len(r.Grants) != 1 || aws.ToString(r.Grants[0].GrantId) != aws.ToString(g.GrantId) {
			t.Errorf("ListRetirableGrants = %+v, %v", r, err)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		for name, in := range map[string]*kms.CreateGrantInput{
			"operation the key type lacks": {KeyId: k.KeyId, GranteePrincipal: aws.String(aliceARN), Operations: []types.GrantOperation{types.GrantOperationSign}},
			"grantee not an ARN":           {KeyId: k.KeyId, GranteePrincipal: aws.String("alice"), Operations: []types.GrantOperation{types.GrantOperationEncrypt}},
			"both constraints": {KeyId: k.KeyId, GranteePrincipal: aws.String(aliceARN), Operations: []types.GrantOperation{types.GrantOperationEncrypt},
				Constraints: &types.GrantConstraints{EncryptionContextEquals: map[string]string{"a": "b"}, EncryptionContextSubset: map[string]string{"a": "b"}}},
			"no operations": {KeyId: k.KeyId, GranteePrincipal: aws.String(aliceARN), Operations: []types.GrantOperation{}},
		} {
			_, err := root.CreateGrant(ctxT(t), in)
			if err == nil {
				t.Errorf("%s: accepted", name)
				continue
			}
			wantAPIError(t, err, "ValidationException", 400)
		}
		_, err := root.CreateGrant(ctxT(t), &kms.CreateGrantInput{KeyId: k.KeyId, GranteePrincipal: aws.String(aliceARN),
			Operations: []types.GrantOperation{types.GrantOperationEncrypt}, DryRun: aws.Bool(true)})
		wantAPIError(t, err, "DryRunOperationException", 400)
		// A grantee without CreateGrant cannot pass its permissions on.
		_, err = alice.CreateGrant(ctxT(t), &kms.CreateGrantInput{KeyId: k.KeyId, GranteePrincipal: aws.String(appARN),
			Operations: []types.GrantOperation{types.GrantOperationEncrypt}})
		denied(t, err, aliceARN, "kms:CreateGrant", arn)
		_, err = root.RevokeGrant(ctxT(t), &kms.RevokeGrantInput{KeyId: k.KeyId, GrantId: aws.String("not-a-grant-id")})
		wantAPIError(t, err, "InvalidGrantIdException", 400)
		_, err = root.RevokeGrant(ctxT(t), &kms.RevokeGrantInput{KeyId: k.KeyId, GrantId: aws.String(strings.Repeat("0", 64))})
		wantAPIError(t, err, "NotFoundException", 400)
		_, err = root.RetireGrant(ctxT(t), &kms.RetireGrantInput{GrantToken: aws.String("forged-token")})
		wantAPIError(t, err, "InvalidGrantTokenException", 400)
		// Only the retiring principal, the grantee with RetireGrant, or the
		// key's account may retire.
		_, err = bob.RetireGrant(ctxT(t), &kms.RetireGrantInput{GrantToken: g.GrantToken})
		wantAPIError(t, err, "AccessDeniedException", 400)
	})

	// Retire (by the retiring principal, with the token) and revoke take
	// effect at once.
	if _, err := app.RetireGrant(ctxT(t), &kms.RetireGrantInput{GrantToken: g.GrantToken}); err != nil {
		t.Fatalf("RetireGrant by the retiring principal: %v", err)
	}
	_, err = alice.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: k.KeyId, Plaintext: pt, EncryptionContext: it})
	denied(t, err, aliceARN, "kms:Encrypt", arn)
	if _, err := root.RevokeGrant(ctxT(t), &kms.RevokeGrantInput{KeyId: k.KeyId, GrantId: exact.GrantId}); err != nil {
		t.Fatalf("RevokeGrant: %v", err)
	}
	_, err = alice.GenerateDataKey(ctxT(t), &kms.GenerateDataKeyInput{KeyId: k.KeyId, KeySpec: types.DataKeySpecAes256,
		EncryptionContext: map[string]string{"dept": "IT"}})
	denied(t, err, aliceARN, "kms:GenerateDataKey", arn)
	if l, err := root.ListGrants(ctxT(t), &kms.ListGrantsInput{KeyId: k.KeyId}); err != nil || len(l.Grants) != 0 {
		t.Errorf("grants left: %+v, %v", l, err)
	}

	t.Run("cross-account grantee", func(t *testing.T) {
		other := createKey(t, root)
		otherARNKey := aws.ToString(other.Arn)
		_, err := bob.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(otherARNKey), Plaintext: pt})
		denied(t, err, otherARN, "kms:Encrypt", otherARNKey)
		if _, err := root.CreateGrant(ctxT(t), &kms.CreateGrantInput{KeyId: other.KeyId, GranteePrincipal: aws.String(otherARN),
			Operations: []types.GrantOperation{types.GrantOperationEncrypt}}); err != nil {
			t.Fatal(err)
		}
		encrypt(t, bob, otherARNKey, pt, nil)
		// A grant never reaches an action AWS keeps within the account.
		_, err = bob.DisableKey(ctxT(t), &kms.DisableKeyInput{KeyId: aws.String(otherARNKey)})
		denied(t, err, otherARN, "kms:DisableKey", otherARNKey)
	})
}
