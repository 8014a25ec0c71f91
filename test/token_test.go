package test

import (
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/google/uuid"

	"github.com/hsmkms/hsmkms/hsm"
)

// TestTokenObjects looks inside the token after keys were made through the
// API: one object per key, and every hsmkms key object is protected as
// docs/ARCHITECTURE.md, decision 1, says.
func TestTokenObjects(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	var ids []uuid.UUID
	for i := 0; i < 4; i++ {
		md := createKey(t, c)
		ids = append(ids, uuid.MustParse(aws.ToString(md.KeyId)))
		// Use each key once, so a session copy exists too; it must not be
		// counted as a token object.
		encrypt(t, c, aws.ToString(md.KeyId), []byte("use"), nil)
	}
	createKey(t, s.other())

	objs, err := s.Token.Objects(ctxT(t))
	if err != nil {
		t.Fatalf("Objects: %v", err)
	}
	if len(objs) < len(ids)+1 {
		t.Fatalf("token lists %d hsmkms objects, at least %d keys were made", len(objs), len(ids)+1)
	}
	for _, id := range ids {
		var mine []hsm.ObjectInfo
		for _, o := range objs {
			if o.Ref.KeyID == [16]byte(id) {
				mine = append(mine, o)
			}
		}
		if len(mine) != 1 {
			t.Errorf("key %s has %d token objects, want 1", id, len(mine))
			continue
		}
		if mine[0].Ref.Version != 1 {
			t.Errorf("key %s: object version %d, want 1", id, mine[0].Ref.Version)
		}
		if want := "hsmkms/" + id.String() + "/v1"; mine[0].Label != want {
			t.Errorf("key %s: label %q, want %q", id, mine[0].Label, want)
		}
	}
	for _, o := range objs {
		if !strings.HasPrefix(o.Label, "hsmkms/") {
			t.Errorf("object %q does not carry the hsmkms label prefix", o.Label)
		}
		bad := []string{}
		want := func(ok bool, what string) {
			if !ok {
				bad = append(bad, what)
			}
		}
		want(o.Token, "CKA_TOKEN")
		want(o.Private, "CKA_PRIVATE")
		want(!o.Wrap, "!CKA_WRAP")
		want(!o.Unwrap, "!CKA_UNWRAP")
		want(!o.Derive, "!CKA_DERIVE")
		// Other tests of this process make asymmetric and HMAC keys in the
		// same token: each kind of object has its own rules.
		switch {
		case o.Class == "public":
			// Public halves: never modifiable, and each allowed one usage.
			want(!o.Modifiable, "!CKA_MODIFIABLE")
			want(o.Encrypt != o.Verify, "exactly one of CKA_ENCRYPT, CKA_VERIFY")
		case o.Class == "private":
			want(o.Decrypt != o.Sign, "exactly one of CKA_DECRYPT, CKA_SIGN")
		case o.Sign: // an HMAC key
			want(o.Verify, "CKA_VERIFY")
			want(!o.Encrypt && !o.Decrypt, "!CKA_ENCRYPT, !CKA_DECRYPT")
			want(o.ValueLen >= 28 && o.ValueLen <= 64, "CKA_VALUE_LEN 28..64")
		default: // an AES key
			want(o.Encrypt, "CKA_ENCRYPT")
			want(o.Decrypt, "CKA_DECRYPT")
			want(!o.Verify, "!CKA_VERIFY")
			want(o.ValueLen == 32, "CKA_VALUE_LEN 32")
		}
		if o.Class != "public" {
			want(o.Sensitive, "CKA_SENSITIVE")
			want(!o.Extractable, "!CKA_EXTRACTABLE")
			want(o.AlwaysSensitive, "CKA_ALWAYS_SENSITIVE")
			want(o.NeverExtractable, "CKA_NEVER_EXTRACTABLE")
		}
		if len(bad) > 0 {
			t.Errorf("object %s lacks %v: %+v", o.Label, bad, o)
		}
	}
}
