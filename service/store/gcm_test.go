package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func reservations(t *testing.T, s *Bolt) map[gcmVersion]uint64 {
	t.Helper()
	rs, err := s.GCMReservations(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[gcmVersion]uint64{}
	for _, r := range rs {
		out[gcmVersion{r.KeyID, r.Version}] = r.Reserved
	}
	return out
}

// TestReserveGCM: counts only grow, are kept across a reopen, leave the key
// record (and its revision) alone, are refused for a key or version that
// does not exist, and go with their key.
func TestReserveGCM(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "meta.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	a := newKey("00000000-0000-4000-8000-00000000000a", "111122223333")
	b := newKey("00000000-0000-4000-8000-00000000000b", "111122223333")
	b.Versions = append(b.Versions, Version{Number: 2})
	for _, k := range []Key{a, b} {
		if err := s.CreateKey(ctx, k, 0); err != nil {
			t.Fatal(err)
		}
	}
	for _, step := range []struct {
		id      string
		version uint32
		n       uint64
	}{{a.ID, 1, 1 << 20}, {a.ID, 1, 1 << 10}, {b.ID, 2, 3 << 30}, {b.ID, 1, 5}} {
		if err := s.ReserveGCM(ctx, step.id, step.version, step.n); err != nil {
			t.Fatalf("ReserveGCM(%s, %d, %d): %v", step.id, step.version, step.n, err)
		}
	}
	want := map[gcmVersion]uint64{{a.ID, 1}: 1 << 20, {b.ID, 2}: 3 << 30, {b.ID, 1}: 5}
	check := func(when string) {
		t.Helper()
		got := reservations(t, s)
		if len(got) != len(want) {
			t.Errorf("%s: %v, want %v", when, got, want)
		}
		for id, n := range want {
			if got[id] != n {
				t.Errorf("%s: %v reserved %d, want %d", when, id, got[id], n)
			}
		}
	}
	check("after the reservations (a lower count changes nothing)")
	if k, _ := s.GetKey(ctx, a.ID); k.Revision != 1 {
		t.Errorf("a reservation moved the key's revision to %d", k.Revision)
	}
	for _, bad := range []struct {
		id      string
		version uint32
	}{{"00000000-0000-4000-8000-0000000000ff", 1}, {a.ID, 2}} {
		if err := s.ReserveGCM(ctx, bad.id, bad.version, 1); !errors.Is(err, ErrNotFound) {
			t.Errorf("ReserveGCM(%s, %d) = %v, want ErrNotFound", bad.id, bad.version, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check("after a reopen")

	if err := s.DeleteKey(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	delete(want, gcmVersion{b.ID, 1})
	delete(want, gcmVersion{b.ID, 2})
	check("after b was deleted")
	// A key made again with a deleted key's id (as after a restore) starts
	// from nothing, on disk too.
	if err := s.CreateKey(ctx, b, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(path); err != nil {
		t.Fatal(err)
	}
	check("after b was made again and the store reopened")
}

// TestGCMCountsOfMissingKeysAreDropped: a count whose key record is not in
// the file (written by hand here) is dropped when the store opens.
func TestGCMCountsOfMissingKeysAreDropped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "meta.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	a := newKey("00000000-0000-4000-8000-00000000000a", "111122223333")
	if err := s.CreateKey(ctx, a, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.ReserveGCM(ctx, a.ID, 1, 7); err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(gcmBucket).Put(gcmKey("00000000-0000-4000-8000-0000000000ff", 1), []byte{0, 0, 0, 0, 0, 0, 0, 9})
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if s, err = Open(path); err != nil {
		t.Fatal(err)
	}
	got := reservations(t, s)
	s.Close()
	if len(got) != 1 || got[gcmVersion{a.ID, 1}] != 7 {
		t.Errorf("reservations %v, want only %s's 7", got, a.ID)
	}
	db, err = bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(gcmBucket).Get(gcmKey("00000000-0000-4000-8000-0000000000ff", 1)); v != nil {
			t.Error("the orphaned count is still in the file")
		}
		return nil
	})
}
