package test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

const defaultKeyPolicy = `{"Version":"2012-10-17","Id":"key-default-1","Statement":[{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}`

// othersOnly would lock the main account out: only the other account may
// manage the key.
const othersOnly = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"444455556666"},"Action":"kms:*","Resource":"*"}]}`

func TestKeyPolicies(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	md := createKey(t, c)

	got, err := c.GetKeyPolicy(ctxT(t), &kms.GetKeyPolicyInput{KeyId: md.KeyId})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(got.Policy) != defaultKeyPolicy || aws.ToString(got.PolicyName) != "default" {
		t.Errorf("default key policy %q (%q)", aws.ToString(got.Policy), aws.ToString(got.PolicyName))
	}
	list, err := c.ListKeyPolicies(ctxT(t), &kms.ListKeyPoliciesInput{KeyId: md.Arn})
	if err != nil || len(list.PolicyNames) != 1 || list.PolicyNames[0] != "default" || list.Truncated {
		t.Fatalf("ListKeyPolicies = %+v, %v", list, err)
	}

	mine := `{"Version":"2012-10-17","Id":"mine","Statement":[{"Sid":"Admins","Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":["kms:*"],"Resource":"*"},` +
		`{"Sid":"No deletion","Effect":"Deny","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":"kms:ScheduleKeyDeletion","Resource":"*"}]}`
	if _, err := c.PutKeyPolicy(ctxT(t), &kms.PutKeyPolicyInput{KeyId: md.KeyId, Policy: aws.String(mine), PolicyName: aws.String("default")}); err != nil {
		t.Fatalf("PutKeyPolicy: %v", err)
	}
	got, err = c.GetKeyPolicy(ctxT(t), &kms.GetKeyPolicyInput{KeyId: md.KeyId, PolicyName: aws.String("default")})
	if err != nil || aws.ToString(got.Policy) != mine {
		t.Fatalf("GetKeyPolicy after Put = %q, %v", aws.ToString(got.Policy), err)
	}

	for _, tc := range []struct {
		name, policy, msg string
	}{
		{"not JSON", `{"Version":`, "The policy is not a valid JSON object."},
		{"bad effect", `{"Version":"2012-10-17","Statement":[{"Effect":"Maybe","Principal":"*","Action":"kms:*","Resource":"*"}]}`,
			`Statement 1: Effect must be "Allow" or "Deny".`},
		{"locks the caller out", othersOnly, "The new key policy will not allow you to update the key policy in the future."},
		{"no statement lets the caller manage the key", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:Encrypt","Resource":"*"}]}`,
			"The new key policy will not allow you to update the key policy in the future."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.PutKeyPolicy(ctxT(t), &kms.PutKeyPolicyInput{KeyId: md.KeyId, Policy: aws.String(tc.policy)})
			ae := wantAPIError(t, err, "MalformedPolicyDocumentException", 400)
			wantType[*types.MalformedPolicyDocumentException](t, err)
			wantMessage(t, ae, tc.msg)
			_, err = c.CreateKey(ctxT(t), &kms.CreateKeyInput{Policy: aws.String(tc.policy)})
			ae = wantAPIError(t, err, "MalformedPolicyDocumentException", 400)
			wantMessage(t, ae, tc.msg)
		})
	}
	// Nothing was half-written: the policy is still the one put before.
	if got, _ := c.GetKeyPolicy(ctxT(t), &kms.GetKeyPolicyInput{KeyId: md.KeyId}); aws.ToString(got.Policy) != mine {
		t.Errorf("a refused PutKeyPolicy changed the policy to %q", aws.ToString(got.Policy))
	}

	t.Run("refusals", func(t *testing.T) {
		_, err := c.GetKeyPolicy(ctxT(t), &kms.GetKeyPolicyInput{KeyId: md.KeyId, PolicyName: aws.String("custom")})
		wantAPIError(t, err, "NotFoundException", 400)
		_, err = c.PutKeyPolicy(ctxT(t), &kms.PutKeyPolicyInput{KeyId: md.KeyId, Policy: aws.String(defaultKeyPolicy), PolicyName: aws.String("custom")})
		wantAPIError(t, err, "NotFoundException", 400)
		_, err = c.GetKeyPolicy(ctxT(t), &kms.GetKeyPolicyInput{KeyId: aws.String("alias/nope")})
		wantAPIError(t, err, "NotFoundException", 400)
		// GetKeyPolicy is not a cross-account permission.
		_, err = s.other().GetKeyPolicy(ctxT(t), &kms.GetKeyPolicyInput{KeyId: md.Arn})
		wantAPIError(t, err, "AccessDeniedException", 400)
		big := `{"Version":"2012-10-17","Statement":[{"Sid":"` + strings.Repeat("x", 33000) + `","Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:*","Resource":"*"}]}`
		_, err = c.PutKeyPolicy(ctxT(t), &kms.PutKeyPolicyInput{KeyId: md.KeyId, Policy: aws.String(big)})
		wantAPIError(t, err, "LimitExceededException", 400)
		if !json.Valid([]byte(big)) {
			t.Fatal("the oversized policy is not even JSON")
		}
	})
	// The safety check can be bypassed, as in AWS — and then the policy is
	// in force: the main account can no longer read it.
	bypassed, err := c.CreateKey(ctxT(t), &kms.CreateKeyInput{Policy: aws.String(othersOnly), BypassPolicyLockoutSafetyCheck: true})
	if err != nil {
		t.Fatalf("CreateKey bypassing the lockout check: %v", err)
	}
	_, err = c.GetKeyPolicy(ctxT(t), &kms.GetKeyPolicyInput{KeyId: bypassed.KeyMetadata.KeyId})
	wantAPIError(t, err, "AccessDeniedException", 400)
	if _, err := c.PutKeyPolicy(ctxT(t), &kms.PutKeyPolicyInput{KeyId: md.KeyId, Policy: aws.String(othersOnly), BypassPolicyLockoutSafetyCheck: true}); err != nil {
		t.Errorf("PutKeyPolicy bypassing the lockout check: %v", err)
	}
	_, err = c.PutKeyPolicy(ctxT(t), &kms.PutKeyPolicyInput{KeyId: md.KeyId, Policy: aws.String(defaultKeyPolicy)})
	wantAPIError(t, err, "AccessDeniedException", 400)
}
