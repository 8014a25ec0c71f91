package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func openStore(t *testing.T, path string) *Bolt {
	t.Helper()
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func grantOn(keyID, id, grantee string) Grant {
	return Grant{KeyID: keyID, ID: id, GranteePrincipal: grantee, IssuingAccount: "A", Operations: []string{"Decrypt", "Encrypt"},
		CreatedAt: time.Unix(1700000000, 0).UTC()}
}

func ids(gs []Grant) []string {
	out := make([]string, len(gs))
	for i, g := range gs {
		out[i] = g.ID
	}
	return out
}

// everyGrant lists all grants of a key through ListGrants, page by page.
func everyGrant(t *testing.T, s Store, keyID string, f GrantFilter, pageSize int) []Grant {
	t.Helper()
	var all []Grant
	var after uint64
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatal("pagination does not end")
		}
		page, more, err := s.ListGrants(context.Background(), keyID, f, after, pageSize)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page...)
		if !more {
			return all
		}
		after = page[len(page)-1].Seq
	}
}

func TestBoltGrants(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "meta.db")
	s := openStore(t, path)
	k1, k2 := newKey("00000000-0000-4000-8000-000000000001", "A"), newKey("00000000-0000-4000-8000-000000000002", "B")
	s.CreateKey(ctx, k1, 0)
	s.CreateKey(ctx, k2, 0)
	var want []string
	for i := range 9 {
		g := grantOn(k1.ID, fmt.Sprintf("g%d", i), fmt.Sprintf("grantee-%d", i%3))
		if i%2 == 0 {
			g.RetiringPrincipal = "retiree"
		}
		stored, created, err := s.CreateGrant(ctx, g, 0)
		if err != nil || !created || stored.Seq == 0 {
			t.Fatalf("CreateGrant %d = %+v, %v, %v", i, stored, created, err)
		}
		want = append(want, g.ID)
	}
	other := grantOn(k2.ID, "other", "grantee-0")
	other.RetiringPrincipal = "retiree"
	if _, _, err := s.CreateGrant(ctx, other, 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.CreateGrant(ctx, grantOn("00000000-0000-4000-8000-000000000009", "x", "y"), 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("grant on a missing key: %v", err)
	}
	if _, _, err := s.CreateGrant(ctx, grantOn(k1.ID, "g0", "z"), 0); !errors.Is(err, ErrExists) {
		t.Fatalf("grant with a taken id: %v", err)
	}

	// The Name retry rule: same Name and properties is the same grant.
	named := grantOn(k1.ID, "named", "grantee-0")
	named.Name = "orders"
	named.ContextSubset = map[string]string{"dept": "IT"}
	if _, created, err := s.CreateGrant(ctx, named, 0); err != nil || !created {
		t.Fatalf("named grant: %v, %v", created, err)
	}
	want = append(want, "named")
	retry := named
	retry.ID, retry.Operations = "retry", []string{"Encrypt", "Decrypt"} // the same set, in another order
	if got, created, err := s.CreateGrant(ctx, retry, 0); err != nil || created || got.ID != "named" {
		t.Fatalf("retry = %+v, %v, %v; want grant named", got, created, err)
	}
	for name, change := range map[string]func(*Grant){
		"other grantee":           func(g *Grant) { g.GranteePrincipal = "grantee-1" },
		"other operations":        func(g *Grant) { g.Operations = []string{"Decrypt"} },
		"empty, not absent":       func(g *Grant) { g.ContextSubset = map[string]string{} },
		"equals instead":          func(g *Grant) { g.ContextEquals, g.ContextSubset = g.ContextSubset, nil },
		"other retiring":          func(g *Grant) { g.RetiringPrincipal = "someone" },
		"other constraint values": func(g *Grant) { g.ContextSubset = map[string]string{"dept": "it"} },
	} {
		g := named.Clone()
		g.ID = "v-" + name
		change(&g)
		if _, created, err := s.CreateGrant(ctx, g, 0); err != nil || !created {
			t.Fatalf("%s: a new grant was not created: %v, %v", name, created, err)
		}
		want = append(want, g.ID)
	}

	check := func(s Store) {
		t.Helper()
		if got := ids(everyGrant(t, s, k1.ID, GrantFilter{}, 4)); !slices.Equal(got, want) {
			t.Fatalf("grants of k1 %v, want %v (creation order)", got, want)
		}
		if got := ids(everyGrant(t, s, k1.ID, GrantFilter{Grantee: "grantee-1"}, 2)); !slices.Equal(got, []string{"g1", "g4", "g7", "v-other grantee"}) {
			t.Fatalf("grants of grantee-1: %v", got)
		}
		if got := ids(everyGrant(t, s, k1.ID, GrantFilter{GrantID: "g4", Grantee: "grantee-1"}, 2)); !slices.Equal(got, []string{"g4"}) {
			t.Fatalf("grant g4 by id: %v", got)
		}
		if got := ids(everyGrant(t, s, k1.ID, GrantFilter{GrantID: "g4", Grantee: "grantee-0"}, 2)); len(got) != 0 {
			t.Fatalf("grant g4 with another grantee: %v", got)
		}
		r, more, _ := s.ListRetirableGrants(ctx, "A", "retiree", 0, 100)
		if more || !slices.Equal(ids(r), []string{"g0", "g2", "g4", "g6", "g8"}) {
			t.Fatalf("retirable by retiree in A: %v", ids(r))
		}
		r, _, _ = s.ListRetirableGrants(ctx, "B", "retiree", 0, 100)
		if !slices.Equal(ids(r), []string{"other"}) {
			t.Fatalf("retirable by retiree in B: %v", ids(r))
		}
		var seen []string
		s.GranteeGrants(ctx, k1.ID, "grantee-2", func(g *Grant) bool { seen = append(seen, g.ID); return true })
		slices.Sort(seen)
		if !slices.Equal(seen, []string{"g2", "g5", "g8"}) {
			t.Fatalf("GranteeGrants(grantee-2) = %v", seen)
		}
		stop := 0
		s.GranteeGrants(ctx, k1.ID, "grantee-2", func(*Grant) bool { stop++; return false })
		if stop != 1 {
			t.Fatalf("GranteeGrants went on after fn returned false: %d calls", stop)
		}
		if g, err := s.GetGrant(ctx, k1.ID, "named"); err != nil || g.Name != "orders" || g.ContextSubset["dept"] != "IT" || g.KeyID != k1.ID {
			t.Fatalf("GetGrant = %+v, %v", g, err)
		}
		if _, err := s.GetGrant(ctx, k2.ID, "named"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("GetGrant of another key's grant: %v", err)
		}
	}
	check(s)

	// A marker (the last Seq seen) stays valid when grants go.
	page, _, _ := s.ListGrants(ctx, k1.ID, GrantFilter{}, 0, 3)
	for _, g := range page {
		if err := s.DeleteGrant(ctx, k1.ID, g.ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteGrant(ctx, k1.ID, page[0].ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second DeleteGrant: %v", err)
	}
	next, _, _ := s.ListGrants(ctx, k1.ID, GrantFilter{}, page[2].Seq, 2)
	if !slices.Equal(ids(next), want[3:5]) {
		t.Fatalf("page after deleting the previous one: %v, want %v", ids(next), want[3:5])
	}
	want = want[3:]
	// The retry index forgets a deleted grant: the same request creates anew.
	if err := s.DeleteGrant(ctx, k1.ID, "named"); err != nil {
		t.Fatal(err)
	}
	want = slices.DeleteFunc(want, func(id string) bool { return id == "named" })
	if g, created, err := s.CreateGrant(ctx, retry, 0); err != nil || !created || g.ID != "retry" {
		t.Fatalf("CreateGrant after the named grant was deleted = %+v, %v, %v", g, created, err)
	}
	want = append(want, "retry")
	s.Close()

	// Everything, indexes and order included, survives a reopen.
	s = openStore(t, path)
	defer s.Close()
	if got := ids(everyGrant(t, s, k1.ID, GrantFilter{}, 100)); !slices.Equal(got, want) {
		t.Fatalf("after reopening: %v, want %v", got, want)
	}
	g, created, err := s.CreateGrant(ctx, grantOn(k1.ID, "late", "grantee-9"), 0)
	if err != nil || !created {
		t.Fatal(err)
	}
	all := everyGrant(t, s, k1.ID, GrantFilter{}, 100)
	if all[len(all)-1].ID != "late" || all[len(all)-2].Seq >= g.Seq {
		t.Fatalf("a grant created after reopening is not last: %v", ids(all))
	}
}

// TestBoltLimitsUnderConcurrency: concurrent creates cannot pass a limit
// together, whatever the interleaving.
func TestBoltLimitsUnderConcurrency(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t, filepath.Join(t.TempDir(), "meta.db"))
	defer s.Close()
	const limit, tries = 4, 24
	run := func(name string, create func(i int) error) {
		t.Helper()
		errs := make([]error, tries)
		var wg sync.WaitGroup
		for i := range tries {
			wg.Go(func() { errs[i] = create(i) })
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			var le *LimitError
			switch {
			case err == nil:
				ok++
			case errors.As(err, &le) && errors.Is(err, ErrLimitExceeded) && le.Limit == limit && le.Usage == limit:
			default:
				t.Fatalf("%s: %v", name, err)
			}
		}
		if ok != limit {
			t.Fatalf("%s: %d of %d concurrent creates succeeded, want %d", name, ok, tries, limit)
		}
	}
	run("keys", func(i int) error {
		return s.CreateKey(ctx, newKey(fmt.Sprintf("00000000-0000-4000-8000-%012d", i), "A"), limit)
	})
	keys, _, _ := s.ListKeys(ctx, "A", "", 100)
	target := keys[0].ID
	run("aliases", func(i int) error {
		return s.CreateAlias(ctx, Alias{Name: fmt.Sprintf("alias/a%d", i), Account: "A", TargetKeyID: target}, limit)
	})
	run("grants", func(i int) error {
		_, _, err := s.CreateGrant(ctx, grantOn(target, fmt.Sprintf("g%d", i), "x"), limit)
		return err
	})
	// UpdateAlias onto a full key is refused too; within the same key it is
	// not a new alias.
	s.CreateAlias(ctx, Alias{Name: "alias/elsewhere", Account: "A", TargetKeyID: keys[1].ID}, limit)
	if _, err := s.UpdateAlias(ctx, "A", "alias/elsewhere", limit, func(a *Alias) error { a.TargetKeyID = target; return nil }); !errors.Is(err, ErrLimitExceeded) {
		t.Fatalf("UpdateAlias onto a full key: %v", err)
	}
	list, _, _ := s.ListAliases(ctx, "A", target, "", 100)
	if _, err := s.UpdateAlias(ctx, "A", list[0].Name, limit, func(a *Alias) error { a.UpdatedAt = time.Now(); return nil }); err != nil {
		t.Fatalf("UpdateAlias that keeps its target: %v", err)
	}
	// Deleting frees a place; other accounts have their own count.
	if err := s.DeleteKey(ctx, keys[3].ID); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateKey(ctx, newKey("10000000-0000-4000-8000-000000000000", "A"), limit); err != nil {
		t.Fatalf("CreateKey after a deletion: %v", err)
	}
	if err := s.CreateKey(ctx, newKey("20000000-0000-4000-8000-000000000000", "B"), limit); err != nil {
		t.Fatalf("another account's CreateKey: %v", err)
	}
}

// TestBoltDeleteKeyRemovesGrants: a key's grants go with it, durably, and
// grants left by a DeleteKey interrupted between the two files are removed
// at the next Open.
func TestBoltDeleteKeyRemovesGrants(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "meta.db")
	s := openStore(t, path)
	doomed, kept := newKey("00000000-0000-4000-8000-000000000001", "A"), newKey("00000000-0000-4000-8000-000000000002", "A")
	s.CreateKey(ctx, doomed, 0)
	s.CreateKey(ctx, kept, 0)
	for i := range 3 {
		for _, k := range []Key{doomed, kept} {
			g := grantOn(k.ID, fmt.Sprintf("g%d", i), "grantee")
			g.RetiringPrincipal = "retiree"
			if _, _, err := s.CreateGrant(ctx, g, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.DeleteKey(ctx, doomed.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteKey(ctx, doomed.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second DeleteKey: %v", err)
	}
	checkGone := func(s *Bolt) {
		t.Helper()
		if got := everyGrant(t, s, doomed.ID, GrantFilter{}, 10); len(got) != 0 {
			t.Fatalf("the deleted key's grants: %v", ids(got))
		}
		if got := everyGrant(t, s, kept.ID, GrantFilter{}, 10); len(got) != 3 {
			t.Fatalf("the other key's grants: %v", ids(got))
		}
		r, _, _ := s.ListRetirableGrants(ctx, "A", "retiree", 0, 100)
		for _, g := range r {
			if g.KeyID != kept.ID {
				t.Fatalf("a retirable grant of the deleted key: %+v", g)
			}
		}
		if _, _, err := s.CreateGrant(ctx, grantOn(doomed.ID, "late", "x"), 0); !errors.Is(err, ErrNotFound) {
			t.Fatalf("grant on the deleted key: %v", err)
		}
	}
	checkGone(s)
	s.Close()
	s = openStore(t, path)
	checkGone(s)

	// A crash between the key's removal and its grants': the grants file
	// still has them.
	for i := range 2 {
		if _, _, err := s.CreateGrant(ctx, grantOn(kept.ID, fmt.Sprintf("h%d", i), "grantee"), 0); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	raw, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw.Update(func(tx *bolt.Tx) error { return tx.Bucket(keysBucket).Delete([]byte(kept.ID)) })
	raw.Close()
	s = openStore(t, path)
	if got := everyGrant(t, s, kept.ID, GrantFilter{}, 10); len(got) != 0 {
		t.Fatalf("grants of a key whose record is gone: %v", ids(got))
	}
	s.Close()
	if n := rawGrants(t, path); n != 0 {
		t.Fatalf("the grants file still holds %d grants of keys that are gone", n)
	}
}

func rawGrants(t *testing.T, path string) int {
	t.Helper()
	db, err := bolt.Open(GrantsPath(path), 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	n := 0
	db.View(func(tx *bolt.Tx) error { n = tx.Bucket(grantsBucket).Stats().KeyN; return nil })
	return n
}

// oldFormatGrant is a grant as the key record held it before grants were
// records of their own (no key id, no sequence number).
type oldFormatGrant struct {
	ID       string            `json:"id"`
	Name     string            `json:"name,omitempty"`
	Created  time.Time         `json:"createdAt"`
	Grantee  string            `json:"grantee"`
	Retiring string            `json:"retiring,omitempty"`
	Issuer   string            `json:"issuer"`
	Ops      []string          `json:"ops"`
	Subset   map[string]string `json:"ecSubset,omitempty"`
}

// writeOldFormat writes a store file as the previous version did: grants
// inside the key records, no grants file.
func writeOldFormat(t *testing.T, path string) map[string][]string {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	want := map[string][]string{}
	err = db.Update(func(tx *bolt.Tx) error {
		kb, _ := tx.CreateBucket(keysBucket)
		tx.CreateBucket(aliasesBucket)
		tx.CreateBucket(settingsBucket)
		for k := range 3 {
			rec := map[string]any{}
			js, _ := json.Marshal(newKey(fmt.Sprintf("00000000-0000-4000-8000-%012d", k), "A"))
			json.Unmarshal(js, &rec)
			rec["revision"] = 4
			var gs []oldFormatGrant
			for i := range k * 2 { // 0, 2 and 4 grants
				id := fmt.Sprintf("k%dg%d", k, i)
				gs = append(gs, oldFormatGrant{ID: id, Name: "n", Created: time.Unix(1700000000, 0).UTC(), Grantee: fmt.Sprintf("grantee-%d", i),
					Retiring: "retiree", Issuer: "A", Ops: []string{"Decrypt"}, Subset: map[string]string{"i": fmt.Sprint(i)}})
				want[rec["id"].(string)] = append(want[rec["id"].(string)], id)
			}
			if gs != nil {
				rec["grants"] = gs
			}
			v, _ := json.Marshal(rec)
			if err := kb.Put([]byte(rec["id"].(string)), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return want
}

// TestBoltMigratesGrantsFromKeyRecords: a file written by the previous
// version, with grants inside key records, opens with every grant moved to
// the grants file, in its order, with its properties, and the key records
// rid of them; a crash between the copy and the clean-up is finished by
// the next Open without a duplicate.
func TestBoltMigratesGrantsFromKeyRecords(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "meta.db")
	want := writeOldFormat(t, path)
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	check := func(s *Bolt) {
		t.Helper()
		for keyID, wantIDs := range want {
			gs := everyGrant(t, s, keyID, GrantFilter{}, 3)
			if !slices.Equal(ids(gs), wantIDs) {
				t.Fatalf("grants of %s: %v, want %v", keyID, ids(gs), wantIDs)
			}
			for i, g := range gs {
				if g.KeyID != keyID || g.GranteePrincipal != fmt.Sprintf("grantee-%d", i) || g.Name != "n" || g.RetiringPrincipal != "retiree" ||
					g.ContextSubset["i"] != fmt.Sprint(i) || !slices.Equal(g.Operations, []string{"Decrypt"}) || g.Seq == 0 {
					t.Fatalf("migrated grant %+v", g)
				}
			}
			k, err := s.GetKey(ctx, keyID)
			if err != nil || k.Revision != 4 {
				t.Fatalf("key %s after migration: %+v, %v", keyID, k, err)
			}
		}
		r, _, _ := s.ListRetirableGrants(ctx, "A", "retiree", 0, 100)
		if len(r) != 6 {
			t.Fatalf("%d retirable grants, want 6", len(r))
		}
		// The retry index was rebuilt: the same request is the same grant.
		g := gs0(t, s, "00000000-0000-4000-8000-000000000002")
		g.ID = "a retry"
		if got, created, err := s.CreateGrant(ctx, g, 0); err != nil || created || got.ID != "k2g0" {
			t.Fatalf("retry of a migrated grant = %+v, %v, %v", got, created, err)
		}
	}
	s := openStore(t, path)
	check(s)
	s.Close()
	if n := rawGrants(t, path); n != 6 {
		t.Fatalf("the grants file holds %d grants, want 6", n)
	}
	raw, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	raw.View(func(tx *bolt.Tx) error {
		return tx.Bucket(keysBucket).ForEach(func(k, v []byte) error {
			var rec map[string]any
			json.Unmarshal(v, &rec)
			if _, ok := rec["grants"]; ok {
				t.Errorf("key record %s still holds grants", k)
			}
			return nil
		})
	})
	raw.Close()

	// A crash after the grants file was written and before the key records
	// were: the old key records are back, the grants file has the copies.
	if err := os.WriteFile(path, old, 0o600); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, path)
	check(s)
	s.Close()
	if n := rawGrants(t, path); n != 6 {
		t.Fatalf("after finishing an interrupted migration the grants file holds %d grants, want 6", n)
	}
}

func gs0(t *testing.T, s *Bolt, keyID string) Grant {
	t.Helper()
	gs := everyGrant(t, s, keyID, GrantFilter{}, 1)
	if len(gs) == 0 {
		t.Fatalf("key %s has no grants", keyID)
	}
	return gs[0]
}

// TestBoltReadersDoNotWaitForWriters: while a write is in progress (here,
// held inside UpdateKey), every read answers; and grant writes do not wait
// for a write of the keys file.
func TestBoltReadersDoNotWaitForWriters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t, filepath.Join(t.TempDir(), "meta.db"))
	defer s.Close()
	k := newKey("00000000-0000-4000-8000-000000000001", "A")
	s.CreateKey(ctx, k, 0)
	s.CreateAlias(ctx, Alias{Name: "alias/a", Account: "A", TargetKeyID: k.ID}, 0)
	s.CreateGrant(ctx, grantOn(k.ID, "g", "grantee"), 0)

	done := make(chan error, 1)
	reads := func() {
		var errs []error
		if got, err := s.GetKey(ctx, k.ID); err != nil || got.State != "Enabled" {
			errs = append(errs, fmt.Errorf("GetKey = %+v, %v", got.State, err))
		}
		if _, err := s.GetAlias(ctx, "A", "alias/a"); err != nil {
			errs = append(errs, err)
		}
		if l, _, err := s.ListKeys(ctx, "A", "", 10); err != nil || len(l) != 1 {
			errs = append(errs, fmt.Errorf("ListKeys: %d, %v", len(l), err))
		}
		if _, err := s.GetGrant(ctx, k.ID, "g"); err != nil {
			errs = append(errs, err)
		}
		n := 0
		s.GranteeGrants(ctx, k.ID, "grantee", func(*Grant) bool { n++; return true })
		if n != 1 {
			errs = append(errs, fmt.Errorf("GranteeGrants found %d grants", n))
		}
		// A grant write has a writer of its own.
		if _, _, err := s.CreateGrant(ctx, grantOn(k.ID, "during", "grantee"), 0); err != nil {
			errs = append(errs, err)
		}
		done <- errors.Join(errs...)
	}
	_, err := s.UpdateKey(ctx, k.ID, func(r *Key) error {
		go reads()
		select {
		case err := <-done:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(30 * time.Second):
			t.Error("reads and a grant write made during a key update did not answer before the update ended")
			return errors.New("timed out")
		}
		r.State = "Disabled"
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetKey(ctx, k.ID); got.State != "Disabled" {
		t.Fatalf("the update was lost: %s", got.State)
	}
}

// TestBoltGrantWalksInSteps: walks longer than one step of the read lock
// (a grantee's grants for authorisation, a retiring principal's grants
// filtered by account) see every grant once, in order, and stop when told.
func TestBoltGrantWalksInSteps(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t, filepath.Join(t.TempDir(), "meta.db"))
	defer s.Close()
	mine, theirs := newKey("00000000-0000-4000-8000-000000000001", "A"), newKey("00000000-0000-4000-8000-000000000002", "B")
	s.CreateKey(ctx, mine, 0)
	s.CreateKey(ctx, theirs, 0)
	const many = 2*grantWalkStep + 17
	for i := range many {
		g := grantOn(theirs.ID, fmt.Sprintf("t%04d", i), "grantee")
		g.RetiringPrincipal = "retiree"
		if _, _, err := s.CreateGrant(ctx, g, 0); err != nil {
			t.Fatal(err)
		}
	}
	var want []string
	for i := range 3 {
		g := grantOn(mine.ID, fmt.Sprintf("m%d", i), "grantee")
		g.RetiringPrincipal = "retiree"
		s.CreateGrant(ctx, g, 0)
		want = append(want, g.ID)
	}
	seen := map[string]int{}
	s.GranteeGrants(ctx, theirs.ID, "grantee", func(g *Grant) bool { seen[g.ID]++; return true })
	if len(seen) != many {
		t.Fatalf("GranteeGrants visited %d grants, want %d", len(seen), many)
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("grant %s visited %d times", id, n)
		}
	}
	calls := 0
	s.GranteeGrants(ctx, theirs.ID, "grantee", func(*Grant) bool { calls++; return calls < grantWalkStep+5 })
	if calls != grantWalkStep+5 {
		t.Fatalf("GranteeGrants made %d calls after fn said stop at %d", calls, grantWalkStep+5)
	}
	r, more, _ := s.ListRetirableGrants(ctx, "A", "retiree", 0, 2)
	if !more || !slices.Equal(ids(r), want[:2]) {
		t.Fatalf("first page of A's retirable grants behind %d of B's: %v, %v", many, ids(r), more)
	}
	r, more, _ = s.ListRetirableGrants(ctx, "A", "retiree", r[1].Seq, 2)
	if more || !slices.Equal(ids(r), want[2:]) {
		t.Fatalf("second page: %v, %v", ids(r), more)
	}
	all := everyGrant(t, s, theirs.ID, GrantFilter{Grantee: "grantee"}, 100)
	if len(all) != many || all[0].ID != "t0000" || all[many-1].ID != fmt.Sprintf("t%04d", many-1) {
		t.Fatalf("ListGrants by grantee: %d grants", len(all))
	}
}
