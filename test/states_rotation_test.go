package test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

// ---- the key-state table ----

// srStates are the key states a client can put a key in, in the order of
// srCase.want.
var srStates = []types.KeyState{types.KeyStateEnabled, types.KeyStateDisabled, types.KeyStatePendingDeletion}

// srKey is a key of the state table, put in its state after its ciphertext
// was made (while it was Enabled).
type srKey struct {
	id, arn  string
	state    types.KeyState
	blob     []byte // made while Enabled; plaintext srPlaintext
	deletion time.Time
}

var srPlaintext = []byte("state table plaintext")

// srWant is the outcome AWS's key-state table gives an operation in a
// state: success (code "") or an exception with a message about the key.
type srWant struct {
	code string
	msg  func(arn string) string
}

var (
	srOK         = srWant{}
	srDisabled   = srWant{"DisabledException", func(arn string) string { return arn + " is disabled." }}
	srPending    = srWant{"KMSInvalidStateException", func(arn string) string { return arn + " is pending deletion." }}
	srNotPending = srWant{"KMSInvalidStateException", func(arn string) string { return arn + " is not pending deletion." }}
)

// srEnv is what every case of the table shares: a server and an Enabled key
// the cases use as the other end of ReEncrypt and UpdateAlias.
type srEnv struct {
	c         *kms.Client
	other     *types.KeyMetadata
	otherBlob []byte
}

// srCase is one operation of the state table.
type srCase struct {
	name string
	// prep runs while the key is still Enabled, before it is put in its state.
	prep func(t *testing.T, e *srEnv, k *srKey)
	// run calls the operation, checks what a success returned (and what a
	// failure left), and returns the call's error.
	run  func(t *testing.T, e *srEnv, k *srKey) error
	want [3]srWant // per srStates
	// then is the key state after a success ("" = unchanged). A failure
	// never changes the state.
	then [3]types.KeyState
}

// srNewKey creates a key, encrypts under it, and puts it in state.
func srNewKey(t *testing.T, e *srEnv, state types.KeyState, prep func(*testing.T, *srEnv, *srKey)) *srKey {
	t.Helper()
	md := createKey(t, e.c)
	k := &srKey{id: aws.ToString(md.KeyId), arn: aws.ToString(md.Arn), state: state}
	k.blob = encrypt(t, e.c, k.id, srPlaintext, nil)
	if prep != nil {
		prep(t, e, k)
	}
	switch state {
	case types.KeyStateDisabled:
		if _, err := e.c.DisableKey(ctxT(t), &kms.DisableKeyInput{KeyId: &k.id}); err != nil {
			t.Fatalf("DisableKey: %v", err)
		}
	case types.KeyStatePendingDeletion:
		out, err := e.c.ScheduleKeyDeletion(ctxT(t), &kms.ScheduleKeyDeletionInput{KeyId: &k.id, PendingWindowInDays: aws.Int32(7)})
		if err != nil {
			t.Fatalf("ScheduleKeyDeletion: %v", err)
		}
		k.deletion = aws.ToTime(out.DeletionDate)
	}
	return k
}

func srDescribe(t *testing.T, c *kms.Client, keyID string) *types.KeyMetadata {
	t.Helper()
	out, err := c.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: aws.String(keyID)})
	if err != nil {
		t.Fatalf("DescribeKey %s: %v", keyID, err)
	}
	return out.KeyMetadata
}

// srNear asserts that got is within tol of want.
func srNear(t *testing.T, what string, got *time.Time, want time.Time, tol time.Duration) {
	t.Helper()
	if got == nil {
		t.Errorf("%s: missing, want about %v", what, want)
		return
	}
	if d := got.Sub(want); d < -tol || d > tol {
		t.Errorf("%s = %v, want %v ± %v (off by %v)", what, got.UTC(), want.UTC(), tol, d)
	}
}

func srCreateAlias(t *testing.T, c *kms.Client, name, target string) {
	t.Helper()
	if _, err := c.CreateAlias(ctxT(t), &kms.CreateAliasInput{AliasName: aws.String(name), TargetKeyId: aws.String(target)}); err != nil {
		t.Fatalf("CreateAlias %s -> %s: %v", name, target, err)
	}
}

// srAliasTarget returns the key id an alias names (DescribeKey works in
// every state).
func srAliasTarget(t *testing.T, c *kms.Client, alias string) string {
	t.Helper()
	return aws.ToString(srDescribe(t, c, alias).KeyId)
}

func srTags(t *testing.T, c *kms.Client, keyID string) []string {
	t.Helper()
	out, err := c.ListResourceTags(ctxT(t), &kms.ListResourceTagsInput{KeyId: aws.String(keyID)})
	if err != nil {
		t.Fatalf("ListResourceTags: %v", err)
	}
	var tags []string
	for _, tg := range out.Tags {
		tags = append(tags, aws.ToString(tg.TagKey)+"="+aws.ToString(tg.TagValue))
	}
	return tags
}

func srTag(t *testing.T, c *kms.Client, keyID, key, value string) {
	t.Helper()
	_, err := c.TagResource(ctxT(t), &kms.TagResourceInput{KeyId: aws.String(keyID),
		Tags: []types.Tag{{TagKey: aws.String(key), TagValue: aws.String(value)}}})
	if err != nil {
		t.Fatalf("TagResource: %v", err)
	}
}

func srRotationStatus(t *testing.T, c *kms.Client, keyID string) *kms.GetKeyRotationStatusOutput {
	t.Helper()
	out, err := c.GetKeyRotationStatus(ctxT(t), &kms.GetKeyRotationStatusInput{KeyId: aws.String(keyID)})
	if err != nil {
		t.Fatalf("GetKeyRotationStatus: %v", err)
	}
	return out
}

func srRotations(t *testing.T, c *kms.Client, keyID string, include types.IncludeKeyMaterial) []types.RotationsListEntry {
	t.Helper()
	out, err := c.ListKeyRotations(ctxT(t), &kms.ListKeyRotationsInput{KeyId: aws.String(keyID), IncludeKeyMaterial: include})
	if err != nil {
		t.Fatalf("ListKeyRotations: %v", err)
	}
	if out.Truncated || out.NextMarker != nil {
		t.Fatalf("ListKeyRotations of %d entries was truncated (marker %v)", len(out.Rotations), out.NextMarker)
	}
	return out.Rotations
}

// srCrypto is the row of the cryptographic operations.
var srCrypto = [3]srWant{srOK, srDisabled, srPending}

// srAny is the row of operations that work in every state.
var srAny = [3]srWant{srOK, srOK, srOK}

// srNotDeleting is the row of metadata operations: every state but
// PendingDeletion.
var srNotDeleting = [3]srWant{srOK, srOK, srPending}

var srCases = []srCase{
	{
		name: "Encrypt", want: srCrypto,
		run: func(t *testing.T, e *srEnv, k *srKey) error {
			out, err := e.c.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: &k.id, Plaintext: []byte("x")})
			if err == nil {
				if aws.ToString(out.KeyId) != k.arn {
					t.Errorf("Encrypt KeyId %q, want %q", aws.ToString(out.KeyId), k.arn)
				}
				if got := decrypt(t, e.c, out.CiphertextBlob, nil).Plaintext; string(got) != "x" {
					t.Errorf("round trip gave %q", got)
				}
			}
			return err
		},
	},
	{
		name: "Decrypt", want: srCrypto,
		run: func(t *testing.T, e *srEnv, k *srKey) error {
			out, err := e.c.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: k.blob})
			if err == nil && (!bytes.Equal(out.Plaintext, srPlaintext) || aws.ToString(out.KeyId) != k.arn) {
				t.Errorf("Decrypt = %q under %q", out.Plaintext, aws.ToString(out.KeyId))
			}
			return err
		},
	},
	{
		name: "ReEncrypt/Source", want: srCrypto,
		run: func(t *testing.T, e *srEnv, k *srKey) error {
			out, err := e.c.ReEncrypt(ctxT(t), &kms.ReEncryptInput{CiphertextBlob: k.blob, DestinationKeyId: e.other.KeyId})
			if err == nil {
				if aws.ToString(out.SourceKeyId) != k.arn || aws.ToString(out.KeyId) != aws.ToString(e.other.Arn) {
					t.Errorf("ReEncrypt source %q, destination %q", aws.ToString(out.SourceKeyId), aws.ToString(out.KeyId))
				}
				if got := decrypt(t, e.c, out.CiphertextBlob, nil).Plaintext; !bytes.Equal(got, srPlaintext) {
					t.Errorf("re-encrypted blob decrypts to %q", got)
				}
			}
			return err
		},
	},
	{
		name: "ReEncrypt/Destination", want: srCrypto,
		run: func(t *testing.T, e *srEnv, k *srKey) error {
			out, err := e.c.ReEncrypt(ctxT(t), &kms.ReEncryptInput{CiphertextBlob: e.otherBlob, DestinationKeyId: &k.id})
			if err == nil {
				if aws.ToString(out.KeyId) != k.arn {
					t.Errorf("ReEncrypt destination %q, want %q", aws.ToString(out.KeyId), k.arn)
				}
				if got := decrypt(t, e.c, out.CiphertextBlob, nil); !bytes.Equal(got.Plaintext, srPlaintext) || aws.ToString(got.KeyId) != k.arn {
					t.Errorf("re-encrypted blob decrypts to %q under %q", got.Plaintext, aws.ToString(got.KeyId))
				}
			}
			return err
		},
	},
	{
		name: "GenerateDataKey", want: srCrypto,
		run: func(t *testing.T, e *srEnv, k *srKey) error {
			out, err := e.c.GenerateDataKey(ctxT(t), &kms.GenerateDataKeyInput{KeyId: &k.id, KeySpec: types.DataKeySpecAes256})
			if err == nil {
				if len(out.Plaintext) != 32 || aws.ToString(out.KeyId) != k.arn {
					t.Errorf("GenerateDataKey: %d-byte plaintext under %q", len(out.Plaintext), aws.ToString(out.KeyId))
				}
				if got := decrypt(t, e.c, out.CiphertextBlob, nil).Plaintext; !bytes.Equal(got, out.Plaintext) {
					t.Error("the data key's blob does not decrypt to the data key")
				}
			}
			return err
		},
	},
	{
		name: "GenerateDataKeyWithoutPlaintext", want: srCrypto,
		run: func(t *testing.T, e *srEnv, k *srKey) error {
			out, err := e.c.GenerateDataKeyWithoutPlaintext(ctxT(t), &kms.GenerateDataKeyWithoutPlaintextInput{KeyId: &k.id, KeySpec: types.DataKeySpecAes128})
			if err == nil {
				if aws.ToString(out.KeyId) != k.arn {
					t.Errorf("GenerateDataKeyWithoutPlaintext KeyId %q", aws.ToString(out.KeyId))
				}
				if got := decrypt(t, e.c, out.CiphertextBlob, nil).Plaintext; len(got) != 16 {
					t.Errorf("the data key's blob decrypts to %d bytes, want 16", len(got))
				}
			}
			return err
		},
	},
	{
		name: "DescribeKey", want: srAny,
		run: func(t *testing.T, e *srEnv, k *srKey) error {
			out, err := e.c.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: &k.id})
			if err != nil {
				return err
			}
			md := out.KeyMetadata
			if md.KeyState != k.state || md.Enabled != (k.state == types.KeyStateEnabled) || aws.ToString(md.Arn) != k.arn {
				t.Errorf("DescribeKey: KeyState %s, Enabled %v, Arn %q; want %s, %v, %q",
					md.KeyState, md.Enabled, aws.ToString(md.Arn), k.state, k.state == types.KeyStateEnabled, k.arn)
			}
			if k.state == types.KeyStatePendingDeletion {
				srNear(t, "DeletionDate", md.DeletionDate, time.Now().Add(7*24*time.Hour), time.Minute)
				if md.DeletionDate != nil && !md.DeletionDate.Equal(k.deletion) {
					t.Errorf("DeletionDate %v, ScheduleKeyDeletion said %v", md.DeletionDate, k.deletion)
				}
			} else if md.DeletionDate != nil {
				t.Errorf("DeletionDate %v on a %s key", md.DeletionDate, k.state)
			}
			if md.PendingDeletionWindowInDays != nil {
				t.Errorf("PendingDeletionWindowInDays %d: AWS sends it only for PendingReplicaDeletion", *md.PendingDeletionWindowInDays)
			}
			return nil
		},
	},
	{
		name: "ListResourceTags", want: srAny,
		prep: func(t *testing.T, e *srEnv, k *srKey) { srTag(t, e.c, k.id, "made", "enabled") },
		run: func(t *testing.T, e *srEnv, k *srKey) error {
			out, err := e.c.ListResourceTags(ctxT(t), &kms.ListResourceTagsInput{KeyId: &k.id})
			if err == nil && (len(out.Tags) != 1 || aws.ToString(out.Tags[0].TagKey) != "made") {
				t.Errorf("ListResourceTags = %+v", out.Tags)
			}
			return err
		},
	},
	{
		name: "GetKeyRotationStatus", want: srAny,
		prep: func(t *testing.T, e *srEnv, k *srKey) {
			if _, err := e.c.EnableKeyRotation(ctxT(t), &kms.EnableKeyRotationInput{KeyId: &k.id}); err != nil {
				t.Fatal(err)
			}
		},
		run: func(t *testing.T, e *srEnv, k *srKey) error {
			out, err := e.c.GetKeyRotationStatus(ctxT(t), &kms.GetKeyRotationStatusInput{KeyId: &k.id})
			if err == nil && (!out.KeyRotationEnabled || aws.ToInt32(out.RotationPeriodInDays) != 365) {
				t.Errorf("GetKeyRotationStatus: enabled %v, period %v", out.KeyRotationEnabled, out.RotationPeriodInDays)
			}
			return err
		},
	},
	{
		name: "ListKeyRotations", want: srAny,
		prep: func(t *testing.T, e *srEnv, k *srKey) {
			if _, err := e.c.RotateKeyOnDemand(ctxT(t), &kms.RotateKeyOnDemandInput{KeyId: &k.id}); err != nil {
				t.Fatal(err)
			}
		},
		run: func(t *testing.T, e *srEnv, k *srKey) error {
			out, err := e.c.ListKeyRotations(ctxT(t), &kms.ListKeyRotationsInput{KeyId: &k.id})
			if err == nil && (len(out.Rotations) != 1 || out.Rotations[0].RotationType != types.RotationTypeOnDemand) {
				t.Errorf("ListKeyRotations = %+v", out.Rotations)
			}
			return err
		},
	},
	{
		name: "ListAliases", want: srAny,
		prep: func(t *testing.T, e *srEnv, k *srKey) { srCreateAlias(t, e.c, "alias/sr-list-"+k.id, k.id) },
		run: func(t *testing.T, e *srEnv, k *srKey) error {
			out, err := e.c.ListAliases(ctxT(t), &kms.ListAliasesInput{KeyId: &k.id})
			if err == nil && (len(out.Aliases) != 1 || aws.ToString(out.Aliases[0].AliasName) != "alias/sr-list-"+k.id ||
				aws.ToString(out.Aliases[0].TargetKeyId) != k.id) {
				t.Errorf("ListAliases(KeyId) = %+v", out.Aliases)
			}
			return err
		},
	},
	{
		name: "EnableKey", want: srNotDeleting,
		then: [3]types.KeyState{types.KeyStateEnabled, types.KeyStateEnabled},
		run: func(t *testing.T, e *srEnv, k *srKey) error {
			_, err := e.c.EnableKey(ctxT(t), &kms.EnableKeyInput{KeyId: &k.id})
			return err
		},
	},
	{
		name: "DisableKey", want: srNotDeleting,
		then: [3]types.KeyState{types.KeyStateDisabled, types.KeyStateDisabled},
		run: func(t *testing.T, e *srEnv, k *srKey) error {
			_, err := e.c.DisableKey(ctxT(t), &kms.DisableKeyInput{KeyId: &k.id})
			return err
		},
	},
	{
		name: "CreateAlias", want: srNotDeleting,
		run: func(t *testing.T, e *srEnv, k *srKey) error {
			name := "alias/sr-create-" + k.id
			_, err := e.c.CreateAlias(ctxT(t), &kms.CreateAliasInput{AliasName: &name, TargetKeyId: &k.id})
			if err == nil {
				if got := srAliasTarget(t, e.c, name); got != k.id {
					t.Errorf("%s names %s, want %s", name, got, k.id)
				}
			} else {
				_, derr := e.c.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: &name})
				if apiCode(derr) != "NotFoundException" {
					t.Errorf("after a refused CreateAlias, DescribeKey %s: %v", name, derr)
				}
			}
			return err
		},
	},
	{
		name: "TagResource", want: srNotDeleting,
		run: func(t *testing.T, e *srEnv, k *srKey) error {
			_, err := e.c.TagResource(ctxT(t), &kms.TagResourceInput{KeyId: &k.id,
				Tags: []types.Tag{{TagKey: aws.String("k"), TagValue: aws.String("v")}}})
			want := []string{"k=v"}
			if err != nil {
				want = nil
			}
			if got := srTags(t, e.c, k.id); !slices.Equal(got, want) {
				t.Errorf("tags after TagResource (err %v): %q, want %q", err, got, want)
			}
			return err
		},
	},
	{
		name: "UntagResource", want: srNotDeleting,
		prep: func(t *testing.T, e *srEnv, k *srKey) { srTag(t, e.c, k.id, "k", "v") },
		run: func(t *testing.T, e *srEnv, k *srKey) error {
			_, err := e.c.UntagResource(ctxT(t), &kms.UntagResourceInput{KeyId: &k.id, TagKeys: []string{"k"}})
			want := []string(nil)
			if err != nil {
				want = []string{"k=v"}
			}
			if got := srTags(t, e.c, k.id); !slices.Equal(got, want) {
				t.Errorf("tags after UntagResource (err %v): %q, want %q", err, got, want)
			}
			return err
		},
	},
	{
		name: "UpdateKeyDescription", want: srNotDeleting,
		run: func(t *testing.T, e *srEnv, k *srKey) error {
			_, err := e.c.UpdateKeyDescription(ctxT(t), &kms.UpdateKeyDescriptionInput{KeyId: &k.id, Description: aws.String("new")})
			want := "new"
			if err != nil {
				want = ""
			}
			if got := aws.ToString(srDescribe(t, e.c, k.id).Description); got != want {
				t.Errorf("description after UpdateKeyDescription (err %v): %q, want %q", err, got, want)
			}
			return err
		},
	},
	{
		// The key is the alias's new target.
		name: "UpdateAlias/Destination", want: srNotDeleting,
		prep: func(t *testing.T, e *srEnv, k *srKey) {
			srCreateAlias(t, e.c, "alias/sr-dest-"+k.id, aws.ToString(e.other.KeyId))
		},
		run: func(t *testing.T, e *srEnv, k *srKey) error {
			name := "alias/sr-dest-" + k.id
			_, err := e.c.UpdateAlias(ctxT(t), &kms.UpdateAliasInput{AliasName: &name, TargetKeyId: &k.id})
			want := k.id
			if err != nil {
				want = aws.ToString(e.other.KeyId)
			}
			if got := srAliasTarget(t, e.c, name); got != want {
				t.Errorf("after UpdateAlias (err %v) %s names %s, want %s", err, name, got, want)
			}
			return err
		},
	},
	{
		// The key is the alias's current target; the alias moves to an
		// Enabled key, whatever the state of the one it leaves.
		name: "UpdateAlias/CurrentTarget", want: srAny,
		prep: func(t *testing.T, e *srEnv, k *srKey) { srCreateAlias(t, e.c, "alias/sr-cur-"+k.id, k.id) },
		run: func(t *testing.T, e *srEnv, k *srKey) error {
			name := "alias/sr-cur-" + k.id
			_, err := e.c.UpdateAlias(ctxT(t), &kms.UpdateAliasInput{AliasName: &name, TargetKeyId: e.other.KeyId})
			if err == nil {
				if got := srAliasTarget(t, e.c, name); got != aws.ToString(e.other.KeyId) {
					t.Errorf("after UpdateAlias %s names %s, want %s", name, got, aws.ToString(e.other.KeyId))
				}
			}
			return err
		},
	},
	{
		name: "ScheduleKeyDeletion", want: srNotDeleting,
		then: [3]types.KeyState{types.KeyStatePendingDeletion, types.KeyStatePendingDeletion},
		run: func(t *testing.T, e *srEnv, k *srKey) error {
			out, err := e.c.ScheduleKeyDeletion(ctxT(t), &kms.ScheduleKeyDeletionInput{KeyId: &k.id, PendingWindowInDays: aws.Int32(30)})
			if err == nil {
				if out.KeyState != types.KeyStatePendingDeletion || aws.ToString(out.KeyId) != k.arn || aws.ToInt32(out.PendingWindowInDays) != 30 {
					t.Errorf("ScheduleKeyDeletion = %+v", out)
				}
				srNear(t, "DeletionDate", out.DeletionDate, time.Now().Add(30*24*time.Hour), time.Minute)
			} else if got := srDescribe(t, e.c, k.id).DeletionDate; got == nil || !got.Equal(k.deletion) {
				t.Errorf("a refused ScheduleKeyDeletion moved the deletion date: %v, was %v", got, k.deletion)
			}
			return err
		},
	},
	{
		name: "CancelKeyDeletion", want: [3]srWant{srNotPending, srNotPending, srOK},
		then: [3]types.KeyState{2: types.KeyStateDisabled},
		run: func(t *testing.T, e *srEnv, k *srKey) error {
			out, err := e.c.CancelKeyDeletion(ctxT(t), &kms.CancelKeyDeletionInput{KeyId: &k.id})
			if err == nil {
				if aws.ToString(out.KeyId) != k.arn {
					t.Errorf("CancelKeyDeletion KeyId %q", aws.ToString(out.KeyId))
				}
				if md := srDescribe(t, e.c, k.id); md.DeletionDate != nil || md.Enabled {
					t.Errorf("after CancelKeyDeletion: Enabled %v, DeletionDate %v", md.Enabled, md.DeletionDate)
				}
			}
			return err
		},
	},
	{
		name: "EnableKeyRotation", want: srCrypto,
		run: func(t *testing.T, e *srEnv, k *srKey) error {
			_, err := e.c.EnableKeyRotation(ctxT(t), &kms.EnableKeyRotationInput{KeyId: &k.id})
			if got := srRotationStatus(t, e.c, k.id).KeyRotationEnabled; got != (err == nil) {
				t.Errorf("after EnableKeyRotation (err %v) KeyRotationEnabled is %v", err, got)
			}
			return err
		},
	},
	{
		name: "DisableKeyRotation", want: srCrypto,
		prep: func(t *testing.T, e *srEnv, k *srKey) {
			if _, err := e.c.EnableKeyRotation(ctxT(t), &kms.EnableKeyRotationInput{KeyId: &k.id}); err != nil {
				t.Fatal(err)
			}
		},
		run: func(t *testing.T, e *srEnv, k *srKey) error {
			_, err := e.c.DisableKeyRotation(ctxT(t), &kms.DisableKeyRotationInput{KeyId: &k.id})
			if got := srRotationStatus(t, e.c, k.id).KeyRotationEnabled; got != (err != nil) {
				t.Errorf("after DisableKeyRotation (err %v) KeyRotationEnabled is %v", err, got)
			}
			return err
		},
	},
	{
		name: "RotateKeyOnDemand", want: srCrypto,
		run: func(t *testing.T, e *srEnv, k *srKey) error {
			out, err := e.c.RotateKeyOnDemand(ctxT(t), &kms.RotateKeyOnDemandInput{KeyId: &k.id})
			want := 0
			if err == nil {
				want = 1
				if aws.ToString(out.KeyId) != k.arn {
					t.Errorf("RotateKeyOnDemand KeyId %q", aws.ToString(out.KeyId))
				}
			}
			if got := srRotations(t, e.c, k.id, ""); len(got) != want {
				t.Errorf("after RotateKeyOnDemand (err %v): %d rotations, want %d", err, len(got), want)
			}
			return err
		},
	},
}

// TestKeyStateTable runs every operation in every state a client can put a
// key in, and checks the outcome against AWS's key-state table: success,
// or the exception and message AWS sends; a refused call changes nothing.
func TestKeyStateTable(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	e := &srEnv{c: s.client()}
	e.other = createKey(t, e.c)
	e.otherBlob = encrypt(t, e.c, aws.ToString(e.other.KeyId), srPlaintext, nil)
	for _, tc := range srCases {
		for i, state := range srStates {
			t.Run(tc.name+"/"+string(state), func(t *testing.T) {
				t.Parallel()
				k := srNewKey(t, e, state, tc.prep)
				err := tc.run(t, e, k)
				want := tc.want[i]
				after := state
				if want.code == "" {
					if err != nil {
						t.Fatalf("%s on a %s key: %v; AWS succeeds", tc.name, state, err)
					}
					if tc.then[i] != "" {
						after = tc.then[i]
					}
				} else {
					ae := wantAPIError(t, err, want.code, 400)
					wantMessage(t, ae, want.msg(k.arn))
				}
				if got := srDescribe(t, e.c, k.id).KeyState; got != after {
					t.Errorf("after %s (err %v) the key is %s, want %s", tc.name, err, got, after)
				}
			})
		}
	}
}

// ---- rotation ----

// TestRotationGenerations: each on-demand rotation gives the key new
// material that new ciphertexts use, while every older ciphertext still
// decrypts, and the material ids of Decrypt, ReEncrypt, DescribeKey and
// ListKeyRotations agree.
func TestRotationGenerations(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	md := createKey(t, c)
	id, arn := aws.ToString(md.KeyId), aws.ToString(md.Arn)
	rotate := func() {
		t.Helper()
		out, err := c.RotateKeyOnDemand(ctxT(t), &kms.RotateKeyOnDemandInput{KeyId: &id})
		if err != nil {
			t.Fatalf("RotateKeyOnDemand: %v", err)
		}
		if aws.ToString(out.KeyId) != arn {
			t.Errorf("RotateKeyOnDemand KeyId %q, want %q", aws.ToString(out.KeyId), arn)
		}
	}
	var blobs [][]byte
	for gen := 1; gen <= 3; gen++ {
		if gen > 1 {
			rotate()
		}
		blobs = append(blobs, encrypt(t, c, id, fmt.Appendf(nil, "generation %d", gen), nil))
	}

	var mids []string
	for i, b := range blobs {
		out := decrypt(t, c, b, nil)
		if want := fmt.Sprintf("generation %d", i+1); string(out.Plaintext) != want {
			t.Errorf("generation %d blob decrypts to %q", i+1, out.Plaintext)
		}
		mid := aws.ToString(out.KeyMaterialId)
		if len(mid) != 64 {
			t.Errorf("generation %d: KeyMaterialId %q is not 64 hex digits", i+1, mid)
		}
		if slices.Contains(mids, mid) {
			t.Errorf("generation %d has the KeyMaterialId of an earlier one: %s", i+1, mid)
		}
		mids = append(mids, mid)
	}
	if got := aws.ToString(md.CurrentKeyMaterialId); got != mids[0] {
		t.Errorf("CreateKey's CurrentKeyMaterialId %q, generation 1 decrypts with %q", got, mids[0])
	}
	current := aws.ToString(srDescribe(t, c, id).CurrentKeyMaterialId)
	if current != mids[2] {
		t.Errorf("DescribeKey CurrentKeyMaterialId %q, the last generation decrypts with %q", current, mids[2])
	}

	re, err := c.ReEncrypt(ctxT(t), &kms.ReEncryptInput{CiphertextBlob: blobs[0], DestinationKeyId: &id})
	if err != nil {
		t.Fatalf("ReEncrypt: %v", err)
	}
	if got := aws.ToString(re.SourceKeyMaterialId); got != mids[0] {
		t.Errorf("ReEncrypt SourceKeyMaterialId %q, want generation 1's %q", got, mids[0])
	}
	if got := aws.ToString(re.DestinationKeyMaterialId); got != current {
		t.Errorf("ReEncrypt DestinationKeyMaterialId %q, want the current %q", got, current)
	}
	if out := decrypt(t, c, re.CiphertextBlob, nil); string(out.Plaintext) != "generation 1" || aws.ToString(out.KeyMaterialId) != current {
		t.Errorf("the re-encrypted blob decrypts to %q with material %q", out.Plaintext, aws.ToString(out.KeyMaterialId))
	}

	// Rotations only (the default): the two on-demand rotations.
	rots := srRotations(t, c, id, "")
	if len(rots) != 2 {
		t.Fatalf("ListKeyRotations: %d rotations, want 2: %+v", len(rots), rots)
	}
	var rotMids []string
	for _, r := range rots {
		if r.RotationType != types.RotationTypeOnDemand || aws.ToString(r.KeyId) != arn {
			t.Errorf("rotation %+v: want ON_DEMAND of %s", r, arn)
		}
		srNear(t, "RotationDate", r.RotationDate, time.Now(), time.Minute)
		wantState := types.KeyMaterialStateNonCurrent
		if aws.ToString(r.KeyMaterialId) == current {
			wantState = types.KeyMaterialStateCurrent
		}
		if r.KeyMaterialState != wantState {
			t.Errorf("rotation to %s: KeyMaterialState %s, want %s", aws.ToString(r.KeyMaterialId), r.KeyMaterialState, wantState)
		}
		rotMids = append(rotMids, aws.ToString(r.KeyMaterialId))
	}
	slices.Sort(rotMids)
	if want := slices.Sorted(slices.Values(mids[1:])); !slices.Equal(rotMids, want) {
		t.Errorf("rotations carry material %q, want generations 2 and 3: %q", rotMids, want)
	}

	// All key material: the original too, exactly one of them current.
	all := srRotations(t, c, id, types.IncludeKeyMaterialAllKeyMaterial)
	if len(all) != 3 {
		t.Fatalf("ListKeyRotations ALL_KEY_MATERIAL: %d entries, want 3: %+v", len(all), all)
	}
	var allMids []string
	nCurrent := 0
	for _, r := range all {
		if r.KeyMaterialState == types.KeyMaterialStateCurrent {
			nCurrent++
			if aws.ToString(r.KeyMaterialId) != current {
				t.Errorf("CURRENT entry has material %q, DescribeKey says %q", aws.ToString(r.KeyMaterialId), current)
			}
		}
		allMids = append(allMids, aws.ToString(r.KeyMaterialId))
	}
	if nCurrent != 1 {
		t.Errorf("ALL_KEY_MATERIAL: %d CURRENT entries, want 1: %+v", nCurrent, all)
	}
	slices.Sort(allMids)
	if want := slices.Sorted(slices.Values(mids)); !slices.Equal(allMids, want) {
		t.Errorf("ALL_KEY_MATERIAL lists material %q, want %q", allMids, want)
	}

	// Pagination, one at a time.
	p1, err := c.ListKeyRotations(ctxT(t), &kms.ListKeyRotationsInput{KeyId: &id, Limit: aws.Int32(1)})
	if err != nil {
		t.Fatalf("ListKeyRotations Limit 1: %v", err)
	}
	if len(p1.Rotations) != 1 || !p1.Truncated || aws.ToString(p1.NextMarker) == "" {
		t.Fatalf("page 1: %d rotations, Truncated %v, NextMarker %q", len(p1.Rotations), p1.Truncated, aws.ToString(p1.NextMarker))
	}
	p2, err := c.ListKeyRotations(ctxT(t), &kms.ListKeyRotationsInput{KeyId: &id, Limit: aws.Int32(1), Marker: p1.NextMarker})
	if err != nil {
		t.Fatalf("ListKeyRotations page 2: %v", err)
	}
	if len(p2.Rotations) != 1 || p2.Truncated || p2.NextMarker != nil {
		t.Fatalf("page 2: %d rotations, Truncated %v, NextMarker %q", len(p2.Rotations), p2.Truncated, aws.ToString(p2.NextMarker))
	}
	paged := []string{aws.ToString(p1.Rotations[0].KeyMaterialId), aws.ToString(p2.Rotations[0].KeyMaterialId)}
	if !slices.Equal(paged, []string{aws.ToString(rots[0].KeyMaterialId), aws.ToString(rots[1].KeyMaterialId)}) {
		t.Errorf("pages gave %q, the whole listing %+v", paged, rots)
	}

	// Forged markers.
	good := aws.ToString(p1.NextMarker)
	raw, _ := base64.RawURLEncoding.DecodeString(good)
	if len(raw) > 0 {
		raw[0] ^= 1
	}
	for _, m := range []string{"forged", base64.RawURLEncoding.EncodeToString([]byte("0123456789abcdefghijklmnop")),
		base64.RawURLEncoding.EncodeToString(raw), good + "A"} {
		_, err := c.ListKeyRotations(ctxT(t), &kms.ListKeyRotationsInput{KeyId: &id, Marker: aws.String(m)})
		wantAPIError(t, err, "InvalidMarkerException", 400)
	}
}

// TestRotationSchedule: the automatic rotation period's bounds, and what
// GetKeyRotationStatus reports as it is turned on and off.
func TestRotationSchedule(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	id := aws.ToString(createKey(t, c).KeyId)

	st := srRotationStatus(t, c, id)
	if st.KeyRotationEnabled || st.RotationPeriodInDays != nil || st.NextRotationDate != nil {
		t.Errorf("a new key's rotation status: %+v", st)
	}

	for _, tc := range []struct {
		days int32
		msg  string
	}{
		{89, "1 validation error detected: Value '89' at 'rotationPeriodInDays' failed to satisfy constraint: Member must have value greater than or equal to 90"},
		{2561, "1 validation error detected: Value '2561' at 'rotationPeriodInDays' failed to satisfy constraint: Member must have value less than or equal to 2560"},
	} {
		_, err := c.EnableKeyRotation(ctxT(t), &kms.EnableKeyRotationInput{KeyId: &id, RotationPeriodInDays: aws.Int32(tc.days)})
		wantMessage(t, wantAPIError(t, err, "ValidationException", 400), tc.msg)
	}
	if srRotationStatus(t, c, id).KeyRotationEnabled {
		t.Error("a refused EnableKeyRotation turned rotation on")
	}

	if _, err := c.EnableKeyRotation(ctxT(t), &kms.EnableKeyRotationInput{KeyId: &id, RotationPeriodInDays: aws.Int32(90)}); err != nil {
		t.Fatalf("EnableKeyRotation 90: %v", err)
	}
	st = srRotationStatus(t, c, id)
	if !st.KeyRotationEnabled || aws.ToInt32(st.RotationPeriodInDays) != 90 {
		t.Errorf("after EnableKeyRotation 90: enabled %v, period %v", st.KeyRotationEnabled, st.RotationPeriodInDays)
	}
	srNear(t, "NextRotationDate", st.NextRotationDate, time.Now().Add(90*24*time.Hour), time.Minute)

	if _, err := c.DisableKeyRotation(ctxT(t), &kms.DisableKeyRotationInput{KeyId: &id}); err != nil {
		t.Fatalf("DisableKeyRotation: %v", err)
	}
	if st := srRotationStatus(t, c, id); st.KeyRotationEnabled {
		t.Errorf("after DisableKeyRotation: %+v", st)
	}

	// No period: AWS's default, 365 days.
	if _, err := c.EnableKeyRotation(ctxT(t), &kms.EnableKeyRotationInput{KeyId: &id}); err != nil {
		t.Fatalf("EnableKeyRotation: %v", err)
	}
	st = srRotationStatus(t, c, id)
	if !st.KeyRotationEnabled || aws.ToInt32(st.RotationPeriodInDays) != 365 {
		t.Errorf("after EnableKeyRotation with no period: enabled %v, period %v", st.KeyRotationEnabled, st.RotationPeriodInDays)
	}
	srNear(t, "NextRotationDate", st.NextRotationDate, time.Now().Add(365*24*time.Hour), time.Minute)
}

// TestRotationOnDemandLimit: 25 on-demand rotations per key, then
// LimitExceededException; the key keeps working.
func TestRotationOnDemandLimit(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	id := aws.ToString(createKey(t, c).KeyId)
	blob := encrypt(t, c, id, []byte("first"), nil)
	for i := 1; i <= 25; i++ {
		if _, err := c.RotateKeyOnDemand(ctxT(t), &kms.RotateKeyOnDemandInput{KeyId: &id}); err != nil {
			t.Fatalf("RotateKeyOnDemand #%d: %v", i, err)
		}
	}
	_, err := c.RotateKeyOnDemand(ctxT(t), &kms.RotateKeyOnDemandInput{KeyId: &id})
	wantAPIError(t, err, "LimitExceededException", 400)
	if n := len(srRotations(t, c, id, "")); n != 25 {
		t.Errorf("ListKeyRotations: %d rotations, want 25", n)
	}
	if got := decrypt(t, c, blob, nil).Plaintext; string(got) != "first" {
		t.Errorf("the first generation's blob decrypts to %q", got)
	}
	if got := decrypt(t, c, encrypt(t, c, id, []byte("last"), nil), nil).Plaintext; string(got) != "last" {
		t.Errorf("a new blob decrypts to %q", got)
	}
}

// ---- rotation through the binary ----

// srStartDev runs `hsmkms serve --dev` on dir at log level info with extra
// flags and environment, and returns it with a client of its own (so no
// connection is reused across processes).
func srStartDev(t *testing.T, dir string, flags []string, env ...string) (*proc, *kms.Client) {
	t.Helper()
	addr := freeAddr(t)
	args := append([]string{"serve", "--dev", "--data-dir", dir, "--listen", addr, "--log-level", "info"}, flags...)
	p := startProc(t, cleanEnv(env...), args...)
	p.waitHealthy(t, "http://"+addr)
	return p, newClient("http://"+addr, mainAKID, mainSecret, srHTTPClient(t))
}

func srHTTPClient(t *testing.T) aws.HTTPClient {
	tr := &http.Transport{Proxy: nil}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// srCount counts the log lines of p that contain every one of parts.
func srCount(p *proc, parts ...string) int {
	n := 0
	for _, line := range strings.Split(p.stderr.String(), "\n") {
		all := true
		for _, s := range parts {
			all = all && strings.Contains(line, s)
		}
		if all {
			n++
		}
	}
	return n
}

const srClockOffset = "2200h" // more than 90 days

// TestBinaryAutomaticRotation: a key whose rotation date passed while the
// server was down is rotated once by the background pass of the next start;
// old ciphertexts still decrypt, new ones use the new material, and later
// starts do not rotate it again.
func TestBinaryAutomaticRotation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fast := []string{"--reap-interval", "100ms"}
	p, c := srStartDev(t, dir, fast)
	md := createKey(t, c)
	id := aws.ToString(md.KeyId)
	if _, err := c.EnableKeyRotation(ctxT(t), &kms.EnableKeyRotationInput{KeyId: &id, RotationPeriodInDays: aws.Int32(90)}); err != nil {
		t.Fatal(err)
	}
	blob := encrypt(t, c, id, []byte("before"), nil)
	gen1 := aws.ToString(md.CurrentKeyMaterialId)
	time.Sleep(300 * time.Millisecond) // a few background passes: nothing is due yet
	if n := len(srRotations(t, c, id, "")); n != 0 {
		t.Fatalf("%d rotations before the date", n)
	}
	stop(t, p)

	p, c = srStartDev(t, dir, fast, "HSMKMS_TEST_CLOCK_OFFSET="+srClockOffset)
	clean(t, p)
	var rots []types.RotationsListEntry
	deadline := time.Now().Add(10 * time.Second)
	for {
		rots = srRotations(t, c, id, "")
		if len(rots) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(rots) != 1 {
		t.Fatalf("after the rotation date: %d rotations, want 1: %+v\nstderr:\n%s", len(rots), rots, p.stderr)
	}
	r := rots[0]
	if r.RotationType != types.RotationTypeAutomatic || r.KeyMaterialState != types.KeyMaterialStateCurrent {
		t.Errorf("rotation: type %s, state %s; want AUTOMATIC, CURRENT", r.RotationType, r.KeyMaterialState)
	}
	offset, _ := time.ParseDuration(srClockOffset)
	srNear(t, "RotationDate", r.RotationDate, time.Now().Add(offset), time.Minute)

	old := decrypt(t, c, blob, nil)
	if string(old.Plaintext) != "before" || aws.ToString(old.KeyMaterialId) != gen1 {
		t.Errorf("old blob decrypts to %q with material %q (want %q)", old.Plaintext, aws.ToString(old.KeyMaterialId), gen1)
	}
	fresh := decrypt(t, c, encrypt(t, c, id, []byte("after"), nil), nil)
	newMid := aws.ToString(fresh.KeyMaterialId)
	if string(fresh.Plaintext) != "after" || newMid == gen1 {
		t.Errorf("new blob decrypts to %q with material %q (old material %q)", fresh.Plaintext, newMid, gen1)
	}
	if newMid != aws.ToString(r.KeyMaterialId) || newMid != aws.ToString(srDescribe(t, c, id).CurrentKeyMaterialId) {
		t.Errorf("new material %q; rotation lists %q; DescribeKey says %q",
			newMid, aws.ToString(r.KeyMaterialId), aws.ToString(srDescribe(t, c, id).CurrentKeyMaterialId))
	}
	st := srRotationStatus(t, c, id)
	if !st.KeyRotationEnabled || aws.ToInt32(st.RotationPeriodInDays) != 90 {
		t.Errorf("rotation status after the rotation: %+v", st)
	}
	if r.RotationDate != nil {
		srNear(t, "NextRotationDate", st.NextRotationDate, r.RotationDate.Add(90*24*time.Hour), time.Second)
	}
	time.Sleep(300 * time.Millisecond) // more passes: none rotates again
	if n := len(srRotations(t, c, id, "")); n != 1 {
		t.Errorf("%d rotations after more background passes, want 1", n)
	}
	if n := srCount(p, "rotated keys whose rotation date passed"); n != 1 {
		t.Errorf("%d rotation passes logged a rotation, want 1\nstderr:\n%s", n, p.stderr)
	}
	stop(t, p)

	// Same clock again: the next date is 90 days after the rotation.
	p, c = srStartDev(t, dir, fast, "HSMKMS_TEST_CLOCK_OFFSET="+srClockOffset)
	time.Sleep(500 * time.Millisecond)
	if n := len(srRotations(t, c, id, "")); n != 1 {
		t.Errorf("after another start: %d rotations, want 1", n)
	}
	if n := srCount(p, "rotated keys whose rotation date passed"); n != 0 {
		t.Errorf("the next start rotated again:\n%s", p.stderr)
	}
	if got := decrypt(t, c, blob, nil).Plaintext; string(got) != "before" {
		t.Errorf("old blob decrypts to %q", got)
	}
	clean(t, p)
	stop(t, p)
}

// TestBinaryRotationSurvivesSIGKILL: a process killed between generating a
// rotation's material and recording it loses nothing: the next start reports
// the unrecorded object, the next rotation adopts it, and the start after
// that finds store and token in agreement.
func TestBinaryRotationSurvivesSIGKILL(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p, c := startDevWith(t, dir, "HSMKMS_TEST_CRASH_AT=rotated")
	md := createKey(t, c)
	id := aws.ToString(md.KeyId)
	gen1 := aws.ToString(md.CurrentKeyMaterialId)
	blob := encrypt(t, c, id, []byte("before the crash"), nil)

	_, err := c.RotateKeyOnDemand(ctxT(t), &kms.RotateKeyOnDemandInput{KeyId: &id})
	if err == nil {
		t.Fatal("RotateKeyOnDemand succeeded on a process set to crash at rotated")
	}
	p.wait(t, 20*time.Second)
	ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the process did not die by SIGKILL: %v (RotateKeyOnDemand: %v)\nstderr:\n%s", p.cmd.ProcessState, err, p.stderr)
	}
	if code := apiCode(err); code != "" {
		t.Errorf("RotateKeyOnDemand answered %s before the process died", code)
	}

	// The next start reports the unrecorded version 2 and serves the key
	// as it was.
	p, c = startDevWith(t, dir)
	orphan := "hsmkms/" + id + "/v2"
	if srCount(p, "not named by any key record", orphan) != 1 {
		t.Errorf("start-up did not report the orphan %s:\n%s", orphan, p.stderr)
	}
	if strings.Contains(p.stderr.String(), "missing from the token") {
		t.Errorf("start-up reports missing material:\n%s", p.stderr)
	}
	if out := decrypt(t, c, blob, nil); string(out.Plaintext) != "before the crash" || aws.ToString(out.KeyMaterialId) != gen1 {
		t.Errorf("old blob decrypts to %q with material %q", out.Plaintext, aws.ToString(out.KeyMaterialId))
	}
	if n := len(srRotations(t, c, id, "")); n != 0 {
		t.Errorf("%d rotations recorded by the crashed rotation", n)
	}
	if _, err := c.RotateKeyOnDemand(ctxT(t), &kms.RotateKeyOnDemandInput{KeyId: &id}); err != nil {
		t.Fatalf("RotateKeyOnDemand after the crash: %v\nstderr:\n%s", err, p.stderr)
	}
	after := encrypt(t, c, id, []byte("after the crash"), nil)
	out := decrypt(t, c, after, nil)
	gen2 := aws.ToString(out.KeyMaterialId)
	if string(out.Plaintext) != "after the crash" || gen2 == gen1 {
		t.Errorf("new blob decrypts to %q with material %q (old %q)", out.Plaintext, gen2, gen1)
	}
	stop(t, p)

	p, c = startDevWith(t, dir)
	clean(t, p)
	rots := srRotations(t, c, id, "")
	if len(rots) != 1 || rots[0].RotationType != types.RotationTypeOnDemand || aws.ToString(rots[0].KeyMaterialId) != gen2 {
		t.Errorf("ListKeyRotations after restart: %+v, want one ON_DEMAND rotation to %s", rots, gen2)
	}
	for i, b := range [][]byte{blob, after} {
		want := []string{"before the crash", "after the crash"}[i]
		if got := decrypt(t, c, b, nil).Plaintext; string(got) != want {
			t.Errorf("blob decrypts to %q, want %q", got, want)
		}
	}
	if got := decrypt(t, c, encrypt(t, c, id, []byte("later"), nil), nil); string(got.Plaintext) != "later" || aws.ToString(got.KeyMaterialId) != gen2 {
		t.Errorf("a new blob decrypts to %q with material %q, want %q", got.Plaintext, aws.ToString(got.KeyMaterialId), gen2)
	}
	stop(t, p)
}

// TestBinaryUpdateAliasAfterRestart: after a restart, an alias whose current
// target is pending deletion (and untouched since the start) can still be
// moved to an Enabled key, as in AWS.
func TestBinaryUpdateAliasAfterRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p, c := srStartDev(t, dir, nil)
	doomed, kept := createKey(t, c), createKey(t, c)
	srCreateAlias(t, c, "alias/sr-moving", aws.ToString(doomed.KeyId))
	if _, err := c.ScheduleKeyDeletion(ctxT(t), &kms.ScheduleKeyDeletionInput{KeyId: doomed.KeyId, PendingWindowInDays: aws.Int32(7)}); err != nil {
		t.Fatal(err)
	}
	stop(t, p)

	p, c = srStartDev(t, dir, nil)
	ctx, cancel := context.WithTimeout(ctxT(t), 5*time.Second)
	defer cancel()
	_, err := c.UpdateAlias(ctx, &kms.UpdateAliasInput{AliasName: aws.String("alias/sr-moving"), TargetKeyId: kept.KeyId})
	if err != nil {
		p.cmd.Process.Kill()
		t.Fatalf("UpdateAlias of an alias whose target is pending deletion, first request after a restart: %v; AWS succeeds", err)
	}
	if got := srAliasTarget(t, c, "alias/sr-moving"); got != aws.ToString(kept.KeyId) {
		t.Errorf("alias/sr-moving names %s, want %s", got, aws.ToString(kept.KeyId))
	}
	stop(t, p)
}
