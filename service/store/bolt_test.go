package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newKey(id, account string) Key {
	return Key{ID: id, Account: account, State: "Enabled", KeySpec: "SYMMETRIC_DEFAULT",
		KeyUsage: "ENCRYPT_DECRYPT", Origin: "AWS_KMS", CreatedAt: time.Unix(1700000000, 0).UTC(),
		Versions: []Version{{Number: 1, CreatedAt: time.Unix(1700000000, 0).UTC()}},
		Tags:     []Tag{{Key: "team", Value: "a"}}}
}

func TestBoltPersistsAndReloads(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "meta.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	k := newKey("00000000-0000-4000-8000-000000000001", "111122223333")
	if err := s.CreateKey(ctx, k, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateKey(ctx, k, 0); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate CreateKey: %v, want ErrExists", err)
	}
	if _, err := s.UpdateKey(ctx, k.ID, func(k *Key) error { k.State = "Disabled"; return nil }); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if _, err := s.UpdateKey(ctx, k.ID, func(k *Key) error { k.State = "Gone"; return boom }); !errors.Is(err, boom) {
		t.Fatalf("failing update: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.GetKey(ctx, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != "Disabled" || got.Tags[0] != (Tag{"team", "a"}) || got.Current().Number != 1 || !got.CreatedAt.Equal(k.CreatedAt) {
		t.Fatalf("reloaded record %+v", got)
	}
	if _, err := s.GetKey(ctx, "00000000-0000-4000-8000-000000000009"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing key: %v", err)
	}
	if _, err := s.UpdateKey(ctx, "nope", func(*Key) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("update missing key: %v", err)
	}
}

func TestBoltUpdateGetsACopy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := Open(filepath.Join(t.TempDir(), "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k := newKey("00000000-0000-4000-8000-000000000001", "1")
	s.CreateKey(ctx, k, 0)
	before, _ := s.GetKey(ctx, k.ID)
	s.UpdateKey(ctx, k.ID, func(k *Key) error {
		k.Tags[0].Value = "changed"
		k.Versions = append(k.Versions, Version{Number: 2})
		return errors.New("abandon")
	})
	after, _ := s.GetKey(ctx, k.ID)
	if before.Tags[0].Value != "a" || after.Tags[0].Value != "a" || len(after.Versions) != 1 {
		t.Fatalf("abandoned update leaked into the record: %+v", after)
	}
}

func TestBoltListKeysPaginates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := Open(filepath.Join(t.TempDir(), "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := 0; i < 7; i++ {
		s.CreateKey(ctx, newKey(fmt.Sprintf("00000000-0000-4000-8000-%012d", i), "A"), 0)
		s.CreateKey(ctx, newKey(fmt.Sprintf("10000000-0000-4000-8000-%012d", i), "B"), 0)
	}
	var seen []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("pagination does not end")
		}
		keys, more, err := s.ListKeys(ctx, "A", after, 3)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if k.Account != "A" {
				t.Fatalf("key of account %s listed for A", k.Account)
			}
			seen = append(seen, k.ID)
		}
		if !more {
			break
		}
		after = keys[len(keys)-1].ID
	}
	if len(seen) != 7 {
		t.Fatalf("listed %d keys, want 7: %v", len(seen), seen)
	}
	for i := 1; i < len(seen); i++ {
		if seen[i-1] >= seen[i] {
			t.Fatalf("not in id order: %v", seen)
		}
	}
}

func TestBoltAliases(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "meta.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	k1, k2 := newKey("00000000-0000-4000-8000-000000000001", "A"), newKey("00000000-0000-4000-8000-000000000002", "A")
	s.CreateKey(ctx, k1, 0)
	s.CreateKey(ctx, k2, 0)
	for _, a := range []Alias{
		{Name: "alias/one", Account: "A", TargetKeyID: k1.ID},
		{Name: "alias/two", Account: "A", TargetKeyID: k1.ID},
		{Name: "alias/three", Account: "A", TargetKeyID: k2.ID},
		{Name: "alias/one", Account: "B", TargetKeyID: k2.ID}, // names are per account
	} {
		if err := s.CreateAlias(ctx, a, 0); err != nil {
			t.Fatalf("CreateAlias %+v: %v", a, err)
		}
	}
	if err := s.CreateAlias(ctx, Alias{Name: "alias/one", Account: "A", TargetKeyID: k2.ID}, 0); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate alias: %v", err)
	}
	if err := s.CreateAlias(ctx, Alias{Name: "alias/x", Account: "A", TargetKeyID: "nope"}, 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("alias to a missing key: %v", err)
	}
	if _, err := s.UpdateAlias(ctx, "A", "alias/two", 0, func(a *Alias) error { a.TargetKeyID = k2.ID; return nil }); err != nil {
		t.Fatal(err)
	}
	list, more, _ := s.ListAliases(ctx, "A", k2.ID, "", 10)
	if more || len(list) != 2 || list[0].Name != "alias/three" || list[1].Name != "alias/two" {
		t.Fatalf("aliases of k2: %+v", list)
	}
	page, more, _ := s.ListAliases(ctx, "A", "", "", 2)
	if !more || len(page) != 2 || page[0].Name != "alias/one" {
		t.Fatalf("first page: %+v %v", page, more)
	}
	// Deleting a key removes its aliases with it, durably.
	if err := s.DeleteKey(ctx, k2.ID); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	list, _, _ = s.ListAliases(ctx, "A", "", "", 10)
	if len(list) != 1 || list[0].Name != "alias/one" {
		t.Fatalf("after deleting k2: %+v", list)
	}
	if _, err := s.GetAlias(ctx, "B", "alias/one"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("B's alias to the deleted key survived: %v", err)
	}
	if _, err := s.GetKey(ctx, k2.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted key still there: %v", err)
	}
	if err := s.DeleteAlias(ctx, "A", "alias/one"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteAlias(ctx, "A", "alias/one"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second DeleteAlias: %v", err)
	}
}

// TestOpenLockedByAnotherOpen opens a store that is already open. bbolt's
// flock belongs to the open file, so a second Open in this process meets it
// as another hsmkms would: refused with ErrLocked, naming the file, and the
// first store still works. Once it is closed, the file opens again.
func TestOpenLockedByAnotherOpen(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "hsmkms.db")
	first, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	second, err := Open(path)
	if err == nil {
		second.Close()
		first.Close()
		t.Fatal("a second Open of an open store succeeded")
	}
	if !errors.Is(err, ErrLocked) {
		t.Errorf("second Open: %v, want ErrLocked", err)
	}
	for _, want := range []string{path, "another hsmkms"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("second Open: %q does not say %q", err, want)
		}
	}
	k := newKey("00000000-0000-4000-8000-000000000001", "111122223333")
	if err := first.CreateKey(context.Background(), k, 0); err != nil {
		t.Fatalf("the first store after the refused Open: %v", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := Open(path)
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	defer again.Close()
	if _, err := again.GetKey(context.Background(), k.ID); err != nil {
		t.Errorf("key written by the first store: %v", err)
	}
}
