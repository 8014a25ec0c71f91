package service

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/hsmkms/hsmkms/service/store"
)

// forge makes a marker of kind for pos the way one would with a key read
// from the metadata store.
func forge(key []byte, kind, pos string) string {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(kind))
	h.Write([]byte{0})
	h.Write([]byte(pos))
	return base64.RawURLEncoding.EncodeToString(append([]byte(pos), h.Sum(nil)[:markerTagLen]...))
}

// The key that authenticates list markers and grant tokens was kept in clear
// in hsmkms.db: whoever read the file forged both. Now it lives in the
// token: no 32 bytes anywhere in the store's files forge a marker or a grant
// token that the service accepts.
func TestMarkersCannotBeForgedFromTheStore(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	f := newFixture(t)
	st, err := store.Open(filepath.Join(dir, "hsmkms.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	svc, err := New(Config{Token: f.token, Store: st, Region: "eu-west-1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var ids []string
	for range 3 {
		out, err := svc.CreateKey(ctx, alice, CreateKeyInput{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, out.KeyMetadata.KeyId)
	}
	page, err := svc.ListKeys(ctx, alice, ListKeysInput{Limit: ptr(int32(1))})
	if err != nil || page.NextMarker == "" {
		t.Fatalf("ListKeys: %+v, %v", page, err)
	}
	if _, err := svc.ListKeys(ctx, alice, ListKeysInput{Marker: &page.NextMarker}); err != nil {
		t.Fatalf("the service's own marker: %v", err)
	}
	g, err := svc.CreateGrant(ctx, alice, CreateGrantInput{KeyId: ids[0], GranteePrincipal: ptr("arn:aws:iam::444455556666:user/bob"),
		Operations: []string{"Encrypt"}})
	if err != nil {
		t.Fatal(err)
	}

	var data []byte
	for _, name := range []string{"hsmkms.db", filepath.Base(store.GrantsPath(filepath.Join(dir, "hsmkms.db")))} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		data = append(data, b...)
	}
	tried := 0
	for i := 0; i+32 <= len(data); i++ {
		key := data[i : i+32]
		m := forge(key, "keys", page.Keys[0].KeyId)
		if m == page.NextMarker {
			t.Fatalf("bytes %d-%d of the store's files make the service's markers", i, i+32)
		}
		tried++
		if i%512 != 0 {
			// Forging is offline; the service is asked for a sample, and
			// for every candidate whose forgery matched above.
			continue
		}
		if _, err := svc.ListKeys(ctx, alice, ListKeysInput{Marker: &m}); err == nil {
			t.Fatalf("a marker forged with bytes %d-%d of the store's files was accepted", i, i+32)
		} else {
			wantCode(t, err, ExcInvalidMarker)
		}
		tok := forge(key, "grant-token", ids[0]+"/"+g.GrantId)
		err := svc.RetireGrant(ctx, alice, RetireGrantInput{GrantToken: &tok})
		wantCode(t, err, ExcInvalidGrantToken)
	}
	if tried == 0 {
		t.Fatal("nothing read from the store's files")
	}

	// The key is a token object, sensitive and never extractable.
	objs, err := f.token.Objects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, o := range objs {
		if o.Ref == markerRef {
			found = true
			if !o.Sensitive || o.Extractable || !o.Sign || !o.Verify || o.Encrypt || o.Wrap {
				t.Errorf("marker key %+v", o)
			}
		}
	}
	if !found {
		t.Error("no marker key in the token")
	}
}

// A store written by an earlier version holds the marker key in clear; the
// service removes it at start, and markers made with it no longer open.
func TestLegacyMarkerKeyIsRemoved(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	// The file as an earlier version left it: the key in the settings
	// bucket.
	path := filepath.Join(t.TempDir(), "hsmkms.db")
	legacy := bytes.Repeat([]byte{0x5a}, 32)
	db, err := bolt.Open(path, 0o600, nil)
	if err == nil {
		err = db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("settings"))
			if err != nil {
				return err
			}
			return b.Put([]byte(legacyMarkerSetting), legacy)
		})
		if cerr := db.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	svc, err := New(Config{Token: f.token, Store: st, Region: "eu-west-1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteSetting(ctx, legacyMarkerSetting); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the legacy marker key is still in the store (DeleteSetting = %v)", err)
	}
	out, err := svc.CreateKey(ctx, alice, CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	m := forge(legacy, "keys", out.KeyMetadata.KeyId)
	_, err = svc.ListKeys(ctx, alice, ListKeysInput{Marker: &m})
	wantCode(t, err, ExcInvalidMarker)
}
