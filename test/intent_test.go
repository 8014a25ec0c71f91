package test

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/hsmkms/hsmkms/service/api"
)

// Operations that change something, and so are recorded by an intent record
// (fsynced before the change commits) and an outcome record that names it.
var changingOperations = []string{"CreateKey", "EnableKey", "DisableKey", "UpdateKeyDescription", "TagResource",
	"UntagResource", "PutKeyPolicy", "ScheduleKeyDeletion", "CancelKeyDeletion", "EnableKeyRotation",
	"DisableKeyRotation", "RotateKeyOnDemand", "CreateAlias", "UpdateAlias", "DeleteAlias", "CreateGrant",
	"RetireGrant", "RevokeGrant"}

// Every successful change is preceded in the log by its intent; nothing else
// has one. Every operation of the dispatch table is classified here, so a new
// operation cannot go unclassified.
func TestEveryChangeIsRecordedBeforeItCommits(t *testing.T) {
	t.Parallel()
	readOnly := []string{"DescribeKey", "ListKeys", "Encrypt", "Decrypt", "ReEncrypt", "GenerateDataKey",
		"GenerateDataKeyWithoutPlaintext", "GenerateRandom", "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext",
		"GetPublicKey", "Sign", "Verify", "GenerateMac", "VerifyMac", "ListAliases", "ListResourceTags",
		"GetKeyRotationStatus", "ListKeyRotations", "GetKeyPolicy", "ListKeyPolicies", "ListGrants", "ListRetirableGrants"}
	for _, op := range api.Operations() {
		if !slices.Contains(changingOperations, op) && !slices.Contains(readOnly, op) {
			t.Errorf("operation %s is not classified as changing or read-only", op)
		}
	}

	file := filepath.Join(t.TempDir(), "audit.log")
	s, w, _ := auditedServer(t, file)
	c := s.client()
	ctx := ctxT(t)
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	k := createKey(t, c)
	id := k.KeyId
	other := createKey(t, c)
	must(c.DisableKey(ctx, &kms.DisableKeyInput{KeyId: id}))
	must(c.EnableKey(ctx, &kms.EnableKeyInput{KeyId: id}))
	must(c.UpdateKeyDescription(ctx, &kms.UpdateKeyDescriptionInput{KeyId: id, Description: aws.String("d")}))
	must(c.TagResource(ctx, &kms.TagResourceInput{KeyId: id, Tags: []types.Tag{{TagKey: aws.String("k"), TagValue: aws.String("v")}}}))
	must(c.UntagResource(ctx, &kms.UntagResourceInput{KeyId: id, TagKeys: []string{"k"}}))
	p, err := c.GetKeyPolicy(ctx, &kms.GetKeyPolicyInput{KeyId: id})
	must(p, err)
	must(c.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: id, Policy: p.Policy}))
	must(c.EnableKeyRotation(ctx, &kms.EnableKeyRotationInput{KeyId: id}))
	must(c.DisableKeyRotation(ctx, &kms.DisableKeyRotationInput{KeyId: id}))
	must(c.RotateKeyOnDemand(ctx, &kms.RotateKeyOnDemandInput{KeyId: id}))
	must(c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/intent"), TargetKeyId: id}))
	must(c.UpdateAlias(ctx, &kms.UpdateAliasInput{AliasName: aws.String("alias/intent"), TargetKeyId: other.KeyId}))
	must(c.DeleteAlias(ctx, &kms.DeleteAliasInput{AliasName: aws.String("alias/intent")}))
	g1, err := c.CreateGrant(ctx, &kms.CreateGrantInput{KeyId: id, GranteePrincipal: aws.String(otherARN),
		Operations: []types.GrantOperation{types.GrantOperationEncrypt}})
	must(g1, err)
	g2, err := c.CreateGrant(ctx, &kms.CreateGrantInput{KeyId: id, GranteePrincipal: aws.String(otherARN),
		Operations: []types.GrantOperation{types.GrantOperationDecrypt}})
	must(g2, err)
	must(c.RetireGrant(ctx, &kms.RetireGrantInput{KeyId: id, GrantId: g1.GrantId}))
	must(c.RevokeGrant(ctx, &kms.RevokeGrantInput{KeyId: id, GrantId: g2.GrantId}))
	must(c.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: other.KeyId}))
	must(c.CancelKeyDeletion(ctx, &kms.CancelKeyDeletionInput{KeyId: other.KeyId}))
	// Some reads, and a refused change, which has no intent.
	encrypt(t, c, aws.ToString(id), []byte("x"), nil)
	must(c.ListGrants(ctx, &kms.ListGrantsInput{KeyId: id}))
	_, err = c.CancelKeyDeletion(ctx, &kms.CancelKeyDeletionInput{KeyId: id})
	wantAPIError(t, err, "KMSInvalidStateException", 400)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	events := auditEvents(t, file)
	seen := map[string]bool{}
	for i := 0; i < len(events); i++ {
		e := events[i]
		name, _ := e["eventName"].(string)
		extra, _ := e["additionalEventData"].(map[string]any)
		if extra["phase"] == "intent" {
			if !slices.Contains(changingOperations, name) {
				t.Errorf("an intent record for %s, which changes nothing", name)
			}
			if i+1 == len(events) {
				t.Fatalf("the intent of %s has no outcome", name)
			}
			next := events[i+1]
			nextExtra, _ := next["additionalEventData"].(map[string]any)
			if next["eventName"] != name || next["requestID"] != e["requestID"] || nextExtra["intentEventId"] != e["eventID"] {
				t.Errorf("the intent of %s is followed by %v", name, next)
			}
			if rs, _ := e["resources"].([]any); len(rs) == 0 {
				t.Errorf("the intent of %s names no key", name)
			}
			seen[name] = true
			i++
			continue
		}
		if slices.Contains(changingOperations, name) && e["errorCode"] == nil {
			t.Errorf("a successful %s without an intent before it", name)
		}
	}
	for _, op := range changingOperations {
		if !seen[op] {
			t.Errorf("no intent record for %s", op)
		}
	}
}
