package store

import (
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// schemaOf reads the schema record of one bbolt file, directly: "" if the
// file has none (schema 1).
func schemaOf(t *testing.T, path string) string {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v string
	db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(metaBucket); b != nil {
			v = string(b.Get(schemaKey))
		}
		return nil
	})
	return v
}

// setSchema writes a schema record into one bbolt file, directly.
func setSchema(t *testing.T, path, v string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(metaBucket)
		if err != nil {
			return err
		}
		return b.Put(schemaKey, []byte(v))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// unpackSchema1 writes the schema-1 store of testdata/schema1 (made by the
// last release without a schema record; see its README) into a new
// directory and returns the path of its main file.
func unpackSchema1(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"hsmkms.db", "hsmkms-grants.db"} {
		f, err := os.Open(filepath.Join("testdata", "schema1", name+".gz"))
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := io.ReadAll(zr)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), raw, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "hsmkms.db")
}

// TestOpenMigratesSchema1 opens a store the previous release wrote (no
// schema record) and finds it migrated to the current schema, in both
// files, with every record as that release wrote it.
func TestOpenMigratesSchema1(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := unpackSchema1(t)
	for _, p := range []string{path, GrantsPath(path)} {
		if v := schemaOf(t, p); v != "" {
			t.Fatalf("testdata %s already has schema %q: it is not the previous release's format", filepath.Base(p), v)
		}
	}
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if v, from := s.Schema(); v != SchemaVersion || from != 1 {
		t.Errorf("Schema() = %d (migrated from %d), want %d from 1", v, from, SchemaVersion)
	}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	policy := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}`
	want := []Key{
		{ID: "0b9e3c9c-6a8f-4e37-9d2c-1f2a3b4c5d6e", Account: "111122223333", Region: "us-east-1", CreatedAt: t0,
			Description: "rotated symmetric key, revised", State: "Enabled", KeySpec: "SYMMETRIC_DEFAULT", KeyUsage: "ENCRYPT_DECRYPT",
			Origin: "AWS_KMS", Policy: policy, Tags: []Tag{{Key: "team", Value: "payments"}},
			RotationEnabled: true, RotationPeriodInDays: 90, RotationBase: t0, Revision: 2,
			Versions: []Version{{Number: 1, CreatedAt: t0}, {Number: 2, CreatedAt: t0.Add(time.Hour), Rotation: "ON_DEMAND"}}},
		{ID: "5c1d2e3f-4a5b-4c6d-8e7f-901234567890", Account: "111122223333", Region: "us-east-1", CreatedAt: t0.Add(time.Minute),
			State: "Disabled", KeySpec: "ECC_NIST_P256", KeyUsage: "SIGN_VERIFY", Origin: "AWS_KMS", Policy: policy, Revision: 1,
			Versions: []Version{{Number: 1, CreatedAt: t0.Add(time.Minute)}}},
		{ID: "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a", Account: "444455556666", Region: "us-east-1", CreatedAt: t0.Add(2 * time.Minute),
			State: "PendingDeletion", KeySpec: "SYMMETRIC_DEFAULT", KeyUsage: "ENCRYPT_DECRYPT", Origin: "AWS_KMS", Policy: policy,
			DeletionDate: t0.Add(7 * 24 * time.Hour), PendingWindowInDays: 7, Revision: 1,
			Versions: []Version{{Number: 1, CreatedAt: t0.Add(2 * time.Minute)}}},
	}
	got, err := s.AllKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("keys after migration:\n got %+v\nwant %+v", got, want)
	}
	a, err := s.GetAlias(ctx, "111122223333", "alias/app")
	if err != nil || a.TargetKeyID != want[0].ID || !a.CreatedAt.Equal(t0) {
		t.Errorf("alias after migration: %+v, %v", a, err)
	}
	grants, _, err := s.ListGrants(ctx, want[0].ID, GrantFilter{}, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(grants) != 2 || grants[0].Seq != 1 || grants[0].Name != "app-decrypt" || grants[0].ContextEquals["purpose"] != "test" ||
		grants[1].Seq != 2 || grants[1].Operations[0] != "GenerateDataKey" {
		t.Errorf("grants of %s after migration: %+v", want[0].ID, grants)
	}
	if g, err := s.GetGrant(ctx, want[1].ID, strings.Repeat("3", 64)); err != nil || g.Seq != 3 {
		t.Errorf("grant of %s after migration: %+v, %v", want[1].ID, g, err)
	}
	// The quotas count the migrated records.
	if err := s.CreateKey(ctx, newKey("00000000-0000-4000-8000-000000000077", "111122223333"), 2); !errors.Is(err, ErrLimitExceeded) {
		t.Errorf("a third key for an account holding two, limit 2: %v, want ErrLimitExceeded", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, GrantsPath(path)} {
		if v := schemaOf(t, p); v != "2" {
			t.Errorf("%s: schema record %q after Open, want \"2\"", filepath.Base(p), v)
		}
	}
	s, err = Open(path)
	if err != nil {
		t.Fatalf("reopening the migrated store: %v", err)
	}
	defer s.Close()
	if v, from := s.Schema(); v != SchemaVersion || from != 0 {
		t.Errorf("reopened: Schema() = %d (migrated from %d), want %d, no migration", v, from, SchemaVersion)
	}
	if got, _ := s.AllKeys(ctx); len(got) != 3 {
		t.Errorf("reopened: %d keys, want 3", len(got))
	}
}

// TestOpenRecordsSchemaOfNewStore: a new store is written at the current
// schema from its first Open.
func TestOpenRecordsSchemaOfNewStore(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "hsmkms.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if v, from := s.Schema(); v != SchemaVersion || from != 0 {
		t.Errorf("Schema() = %d (migrated from %d), want %d, no migration", v, from, SchemaVersion)
	}
	s.Close()
	for _, p := range []string{path, GrantsPath(path)} {
		if v := schemaOf(t, p); v != "2" {
			t.Errorf("%s: schema record %q, want \"2\"", filepath.Base(p), v)
		}
	}
}

// TestOpenRefusesNewerSchema: a file of a schema newer than this code's is
// refused, with a message naming both versions, and left as it is; so is a
// schema record that is not a version number.
func TestOpenRefusesNewerSchema(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		file   func(path string) string
		schema string
		want   error
		says   []string
	}{
		{"keys file newer", func(p string) string { return p }, "3", ErrSchemaTooNew, []string{"schema version 3", "version 2", "newer hsmkms"}},
		{"grants file newer", GrantsPath, "17", ErrSchemaTooNew, []string{"schema version 17", "version 2"}},
		{"keys file garbled", func(p string) string { return p }, "two", ErrSchemaInvalid, []string{`"two"`}},
		{"grants file zero", GrantsPath, "0", ErrSchemaInvalid, []string{`"0"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "hsmkms.db")
			s, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.CreateKey(context.Background(), newKey("00000000-0000-4000-8000-000000000001", "A"), 0); err != nil {
				t.Fatal(err)
			}
			s.Close()
			setSchema(t, tc.file(path), tc.schema)
			s, err = Open(path)
			if err == nil {
				s.Close()
				t.Fatalf("Open of a store with schema record %q succeeded", tc.schema)
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Open: %v, want %v", err, tc.want)
			}
			for _, w := range append(tc.says, tc.file(path)) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if v := schemaOf(t, tc.file(path)); v != tc.schema {
				t.Errorf("the refused file's schema record is now %q, want it left at %q", v, tc.schema)
			}
		})
	}
}

// TestOpenMigratesNeitherFileWhenOneIsTooNew: a schema-1 keys file beside
// a grants file of a newer schema is refused before the keys file is
// migrated, so the older hsmkms that wrote it can still read it.
func TestOpenMigratesNeitherFileWhenOneIsTooNew(t *testing.T) {
	t.Parallel()
	path := unpackSchema1(t)
	setSchema(t, GrantsPath(path), "3")
	if s, err := Open(path); !errors.Is(err, ErrSchemaTooNew) {
		if err == nil {
			s.Close()
		}
		t.Fatalf("Open: %v, want ErrSchemaTooNew", err)
	}
	if v := schemaOf(t, path); v != "" {
		t.Errorf("the keys file was migrated (schema record %q) although the store was refused", v)
	}
}
