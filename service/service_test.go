package service

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/hsmkms/hsmkms/blob"
	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/service/store"
	"github.com/hsmkms/hsmkms/softhsm/softhsmtest"
)

func TestMain(m *testing.M) { os.Exit(softhsmtest.Main(m)) }

var alice = Caller{Account: "111122223333", ARN: "arn:aws:iam::111122223333:root"}

var fixedNow = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

type fixture struct {
	svc   *Service
	token *hsm.Token
	store *store.Bolt
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	tok := softhsmtest.Token(t)
	tk, err := hsm.Open(context.Background(), hsm.Config{ModulePath: tok.ModulePath, TokenLabel: tok.Label,
		PIN: softhsmtest.PIN(t, tok), SessionKeyCopies: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tk.Close() })
	st, err := store.Open(filepath.Join(t.TempDir(), "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	svc, err := New(Config{Token: tk, Store: st, Region: "eu-west-1", Now: func() time.Time { return fixedNow }})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{svc: svc, token: tk, store: st}
}

func (f *fixture) key(t testing.TB) KeyMetadata {
	t.Helper()
	out, err := f.svc.CreateKey(context.Background(), alice, CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	return out.KeyMetadata
}

func wantCode(t *testing.T, err error, code string) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v is not a *service.Error (want %s)", err, code)
	}
	if e.Code != code {
		t.Fatalf("error %s (%q), want %s", e.Code, e.Message, code)
	}
	return e
}

func TestCreateKeyUsesInjectedClockAndRegion(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	md := f.key(t)
	if !md.CreationDate.Equal(fixedNow) {
		t.Fatalf("CreationDate %v, want %v", md.CreationDate, fixedNow)
	}
	if want := "arn:aws:kms:eu-west-1:111122223333:key/" + md.KeyId; md.Arn != want {
		t.Fatalf("Arn %s, want %s", md.Arn, want)
	}
	rec, err := f.store.GetKey(context.Background(), md.KeyId)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Policy == "" || rec.Current().Number != 1 {
		t.Fatalf("stored record %+v", rec)
	}
}

func TestEncryptDecryptReEncrypt(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	a, b := f.key(t), f.key(t)
	ec := map[string]string{"purpose": "test", "tenant": "7"}
	pt := []byte("attack at dawn")
	enc, err := f.svc.Encrypt(ctx, alice, EncryptInput{KeyId: a.KeyId, Plaintext: bytes.Clone(pt), EncryptionContext: ec})
	if err != nil {
		t.Fatal(err)
	}
	if enc.KeyId != a.Arn || len(enc.CiphertextBlob) != blob.HeaderLen+len(pt)+blob.TagLen {
		t.Fatalf("Encrypt = %+v", enc)
	}
	dec, err := f.svc.Decrypt(ctx, alice, DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ec})
	if err != nil || !bytes.Equal(dec.Plaintext, pt) || dec.KeyId != a.Arn || dec.KeyMaterialId != a.CurrentKeyMaterialId {
		t.Fatalf("Decrypt = %+v, %v", dec, err)
	}
	dec.Zero()
	if !bytes.Equal(dec.Plaintext, make([]byte, len(pt))) {
		t.Fatal("Zero left plaintext behind")
	}

	re, err := f.svc.ReEncrypt(ctx, alice, ReEncryptInput{CiphertextBlob: enc.CiphertextBlob, SourceEncryptionContext: ec,
		DestinationKeyId: b.Arn, DestinationEncryptionContext: map[string]string{"moved": "yes"}})
	if err != nil {
		t.Fatal(err)
	}
	if re.SourceKeyId != a.Arn || re.KeyId != b.Arn || re.SourceKeyMaterialId != a.CurrentKeyMaterialId ||
		re.DestinationKeyMaterialId != b.CurrentKeyMaterialId {
		t.Fatalf("ReEncrypt = %+v", re)
	}
	if bytes.Contains(re.CiphertextBlob, pt) {
		t.Fatal("ReEncrypt output contains the plaintext")
	}
	dec, err = f.svc.Decrypt(ctx, alice, DecryptInput{CiphertextBlob: re.CiphertextBlob, EncryptionContext: map[string]string{"moved": "yes"}})
	if err != nil || !bytes.Equal(dec.Plaintext, pt) || dec.KeyId != b.Arn {
		t.Fatalf("Decrypt of re-encrypted = %+v, %v", dec, err)
	}

	cases := []struct {
		name string
		run  func() error
		want string
	}{
		{"decrypt with the source context after moving", func() error {
			_, err := f.svc.Decrypt(ctx, alice, DecryptInput{CiphertextBlob: re.CiphertextBlob, EncryptionContext: ec})
			return err
		}, ExcInvalidCiphertext},
		{"decrypt naming the other key", func() error {
			_, err := f.svc.Decrypt(ctx, alice, DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ec, KeyId: &b.KeyId})
			return err
		}, ExcIncorrectKey},
		{"reencrypt naming the wrong source", func() error {
			_, err := f.svc.ReEncrypt(ctx, alice, ReEncryptInput{CiphertextBlob: enc.CiphertextBlob, SourceEncryptionContext: ec,
				SourceKeyId: &b.KeyId, DestinationKeyId: a.KeyId})
			return err
		}, ExcIncorrectKey},
		{"reencrypt with the wrong source context", func() error {
			_, err := f.svc.ReEncrypt(ctx, alice, ReEncryptInput{CiphertextBlob: enc.CiphertextBlob, DestinationKeyId: b.KeyId})
			return err
		}, ExcInvalidCiphertext},
		{"reencrypt to an unknown key", func() error {
			_, err := f.svc.ReEncrypt(ctx, alice, ReEncryptInput{CiphertextBlob: enc.CiphertextBlob, SourceEncryptionContext: ec,
				DestinationKeyId: "00000000-0000-4000-8000-000000000000"})
			return err
		}, ExcNotFound},
		{"reencrypt dry run", func() error {
			_, err := f.svc.ReEncrypt(ctx, alice, ReEncryptInput{CiphertextBlob: enc.CiphertextBlob, SourceEncryptionContext: ec,
				DestinationKeyId: b.KeyId, DryRun: true})
			return err
		}, ExcDryRun},
		{"alias is not found yet", func() error {
			_, err := f.svc.Encrypt(ctx, alice, EncryptInput{KeyId: "alias/app", Plaintext: []byte("x")})
			return err
		}, ExcNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { wantCode(t, tc.run(), tc.want) })
	}
}

// A blob naming a key version the record does not have, or a key that does
// not exist, is an invalid ciphertext: nothing tells the caller which.
func TestForgedBlobHeaders(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	a := f.key(t)
	enc, err := f.svc.Encrypt(ctx, alice, EncryptInput{KeyId: a.KeyId, Plaintext: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	b, err := blob.Parse(enc.CiphertextBlob)
	if err != nil {
		t.Fatal(err)
	}
	otherVersion := *b
	otherVersion.KeyVersion = 2
	otherKey := *b
	otherKey.KeyID[0] ^= 0xff
	newVersion := *b
	newVersion.Version = 2
	for name, raw := range map[string][]byte{
		"version the key does not have": otherVersion.Marshal(),
		"key that does not exist":       otherKey.Marshal(),
		"future format version":         newVersion.Marshal(),
		"one byte":                      {1},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := f.svc.Decrypt(ctx, alice, DecryptInput{CiphertextBlob: raw})
			if e := wantCode(t, err, ExcInvalidCiphertext); e.Message != "" {
				t.Fatalf("InvalidCiphertextException says %q; AWS says nothing", e.Message)
			}
		})
	}
}

// Material gone from the token while the record remains: the key is
// unavailable (500, retryable), not an invalid ciphertext and not a hang.
// Reconcile reports the loss and the orphan it then creates.
func TestMissingMaterialAndReconcile(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	a := f.key(t)
	raw, _ := blob.ParseKeyID(a.KeyId)
	if err := f.token.DestroyKey(ctx, hsm.KeyRef{KeyID: raw, Version: 1}); err != nil {
		t.Fatal(err)
	}
	_, err := f.svc.Encrypt(ctx, alice, EncryptInput{KeyId: a.KeyId, Plaintext: []byte("x")})
	if e := wantCode(t, err, ExcKeyUnavailable); e.HTTPStatus() != 500 {
		t.Fatalf("status %d, want 500", e.HTTPStatus())
	}
	orphan := hsm.KeyRef{KeyID: uuid.New(), Version: 1} // unique: the token lives as long as the process
	if err := f.token.GenerateAESKey(ctx, orphan); err != nil {
		t.Fatal(err)
	}
	rep, err := f.svc.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	has := func(list []string, s string) bool {
		for _, x := range list {
			if x == s {
				return true
			}
		}
		return false
	}
	if !has(rep.Missing, hsm.KeyRef{KeyID: raw, Version: 1}.Label()) || !has(rep.Orphans, orphan.Label()) {
		t.Fatalf("report %+v", rep)
	}
	objs, _ := f.token.Objects(ctx)
	found := false
	for _, o := range objs {
		found = found || o.Ref == orphan
	}
	if !found {
		t.Fatal("Reconcile destroyed an orphan; it must only report")
	}
}

func TestKeyStates(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	a := f.key(t)
	enc, err := f.svc.Encrypt(ctx, alice, EncryptInput{KeyId: a.KeyId, Plaintext: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.svc.DisableKey(ctx, alice, KeyIdInput{KeyId: a.Arn}); err != nil {
		t.Fatal(err)
	}
	_, err = f.svc.Decrypt(ctx, alice, DecryptInput{CiphertextBlob: enc.CiphertextBlob})
	if e := wantCode(t, err, ExcDisabled); e.Message != a.Arn+" is disabled." {
		t.Fatalf("message %q", e.Message)
	}
	_, err = f.svc.GenerateDataKey(ctx, alice, GenerateDataKeyInput{KeyId: a.KeyId, KeySpec: ptr("AES_256")}, false)
	wantCode(t, err, ExcDisabled)
	if err := f.svc.EnableKey(ctx, alice, KeyIdInput{KeyId: "alias/x"}); err == nil {
		t.Fatal("EnableKey accepted an alias")
	}
	// A state the record can reach later (deletion): refused with KMSInvalidState.
	if _, err := f.store.UpdateKey(ctx, a.KeyId, func(k *store.Key) error { k.State = StatePendingDeletion; return nil }); err != nil {
		t.Fatal(err)
	}
	f.svc.keys.Delete(a.KeyId)
	wantCode(t, f.svc.EnableKey(ctx, alice, KeyIdInput{KeyId: a.KeyId}), ExcInvalidState)
	_, err = f.svc.Encrypt(ctx, alice, EncryptInput{KeyId: a.KeyId, Plaintext: []byte("x")})
	wantCode(t, err, ExcInvalidState)
}

func TestGenerateDataKey(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	a := f.key(t)
	out, err := f.svc.GenerateDataKey(ctx, alice, GenerateDataKeyInput{KeyId: a.KeyId, NumberOfBytes: ptr[int32](24)}, true)
	if err != nil || len(out.Plaintext) != 24 {
		t.Fatalf("GenerateDataKey = %+v, %v", out, err)
	}
	dec, err := f.svc.Decrypt(ctx, alice, DecryptInput{CiphertextBlob: out.CiphertextBlob})
	if err != nil || !bytes.Equal(dec.Plaintext, out.Plaintext) {
		t.Fatalf("data key does not decrypt to itself: %v", err)
	}
	without, err := f.svc.GenerateDataKey(ctx, alice, GenerateDataKeyInput{KeyId: a.KeyId, KeySpec: ptr("AES_128")}, false)
	if err != nil || without.Plaintext != nil {
		t.Fatalf("WithoutPlaintext = %+v, %v", without, err)
	}
	_, err = f.svc.GenerateDataKey(ctx, alice, GenerateDataKeyInput{KeyId: a.KeyId}, true)
	wantCode(t, err, ExcValidation)
}

func TestValidationMessages(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	cases := []struct {
		name string
		run  func() error
		code string
		msg  string
	}{
		{"random too big", func() error {
			_, err := f.svc.GenerateRandom(ctx, alice, GenerateRandomInput{NumberOfBytes: ptr[int32](1025)})
			return err
		}, ExcValidation, "1 validation error detected: Value '1025' at 'numberOfBytes' failed to satisfy constraint: Member must have value less than or equal to 1024"},
		{"random missing", func() error {
			_, err := f.svc.GenerateRandom(ctx, alice, GenerateRandomInput{})
			return err
		}, ExcValidation, "NumberOfBytes is required."},
		{"plaintext too long", func() error {
			_, err := f.svc.Encrypt(ctx, alice, EncryptInput{KeyId: "x", Plaintext: make([]byte, 4097)})
			return err
		}, ExcValidation, "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: Member must have length less than or equal to 4096"},
		{"invalid key id", func() error {
			_, err := f.svc.DescribeKey(ctx, alice, DescribeKeyInput{KeyId: "fake-key-id"})
			return err
		}, ExcNotFound, "Invalid keyId 'fake-key-id'"},
		{"unknown key", func() error {
			_, err := f.svc.DescribeKey(ctx, alice, DescribeKeyInput{KeyId: "00000000-0000-4000-8000-000000000000"})
			return err
		}, ExcNotFound, "Key 'arn:aws:kms:eu-west-1:111122223333:key/00000000-0000-4000-8000-000000000000' does not exist"},
		{"forged marker", func() error {
			_, err := f.svc.ListKeys(ctx, alice, ListKeysInput{Marker: ptr("not-a-marker")})
			return err
		}, ExcInvalidMarker, "Invalid marker"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if e := wantCode(t, tc.run(), tc.code); e.Message != tc.msg {
				t.Fatalf("message\n got %q\nwant %q", e.Message, tc.msg)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestDryRunIgnoreCiphertext(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	a, b := f.key(t), f.key(t)
	ignore := []string{"IGNORE_CIPHERTEXT"}
	_, err := f.svc.Decrypt(ctx, alice, DecryptInput{KeyId: &a.KeyId, DryRun: true, DryRunModifiers: ignore})
	wantCode(t, err, ExcDryRun)
	_, err = f.svc.Decrypt(ctx, alice, DecryptInput{DryRun: true, DryRunModifiers: ignore})
	wantCode(t, err, ExcValidation)
	_, err = f.svc.ReEncrypt(ctx, alice, ReEncryptInput{SourceKeyId: &a.KeyId, DestinationKeyId: b.KeyId, DryRun: true, DryRunModifiers: ignore})
	wantCode(t, err, ExcDryRun)
	if err := f.svc.DisableKey(ctx, alice, KeyIdInput{KeyId: b.KeyId}); err != nil {
		t.Fatal(err)
	}
	_, err = f.svc.ReEncrypt(ctx, alice, ReEncryptInput{SourceKeyId: &a.KeyId, DestinationKeyId: b.KeyId, DryRun: true, DryRunModifiers: ignore})
	wantCode(t, err, ExcDisabled)
	bad := []string{"NOPE"}
	_, err = f.svc.Decrypt(ctx, alice, DecryptInput{KeyId: &a.KeyId, CiphertextBlob: []byte{1}, DryRun: true, DryRunModifiers: bad})
	wantCode(t, err, ExcValidation)
}
