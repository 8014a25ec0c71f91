package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

var (
	keysBucket     = []byte("keys")
	aliasesBucket  = []byte("aliases")
	grantsBucket   = []byte("grants")
	settingsBucket = []byte("settings")
)

// aliasKey is an alias's key in the bucket and the map: account, NUL, name.
func aliasKey(account, name string) string { return account + "\x00" + name }

// grantKey is a grant's key in the bucket: key id, "/", grant id.
func grantKey(keyID, grantID string) []byte { return []byte(keyID + "/" + grantID) }

// GrantsPath is the file beside a store's file at path that holds its grants.
func GrantsPath(path string) string { return strings.TrimSuffix(path, ".db") + "-grants.db" }

// Bolt is the embedded store: two bbolt files, every record also in memory.
// Keys, aliases and settings are in one file, grants in the other
// (GrantsPath), each with a writer of its own: a bbolt file has one writer
// at a time, each commit waits for its fsync, and grants come in bulk
// (50,000 a key), so a stream of grant writes must not queue the writes of
// other keys behind its fsyncs.
//
// Writers of a file are serialised by its lock (wmu, gwmu), which each holds
// across its checks, its bbolt transaction (the disk write and fsync) and
// the update of memory. Readers take only mu, which a writer holds just to
// change memory after its transaction committed: a read never waits for a
// disk write, and never sees a change that is not on disk. A writer reads
// without mu what only the writers of its own file change (wmu: keys,
// aliases and their counts; gwmu: the grant index) and takes mu to read the
// rest.
type Bolt struct {
	db  *bolt.DB // keys, aliases, settings
	gdb *bolt.DB // grants

	wmu  sync.Mutex
	gwmu sync.Mutex
	mu   sync.RWMutex

	keys           map[string]Key
	aliases        map[string]Alias // by aliasKey
	keysPerAccount map[string]int
	aliasesPerKey  map[string]int
	grants         grantIndex
	gcm            map[gcmVersion]uint64 // reserved AES-GCM counts (gcm.go)

	migratedFrom int // the schema version Open migrated from (0: none)
}

// legacyKey is a key record as written before grants were records of their
// own: Open moves such grants to the grants bucket.
type legacyKey struct {
	Key
	Grants []Grant `json:"grants,omitempty"`
}

// Open opens (creating if needed) the bbolt file at path and its grants
// file (GrantsPath) and loads every record into memory. Grants that a file
// written by an earlier version keeps inside key records move to the grants
// file: copied there in one transaction, then removed from the key records
// in one transaction; a crash in between leaves copies that the next Open
// recognises, so it finishes the move without duplicating a grant. Grants
// whose key is gone (a crash in the middle of DeleteKey) are removed.
//
// Each file records its schema version (SchemaVersion): files of an older
// schema are migrated, each in the transaction that loads it; a file of a
// newer schema, or of an unreadable one, is refused (ErrSchemaTooNew,
// ErrSchemaInvalid) before either file changes. A store whose restore
// did not finish (RestoreNote) is refused with ErrRestoreIncomplete.
//
// A file another process has open (another hsmkms on the same data
// directory) is refused with ErrLocked after LockTimeout.
func Open(path string) (*Bolt, error) {
	if err := checkNoRestoreInProgress(path); err != nil {
		return nil, err
	}
	opts := &bolt.Options{Timeout: LockTimeout}
	db, err := openFile(path, opts)
	if err != nil {
		return nil, err
	}
	gdb, err := openFile(GrantsPath(path), opts)
	if err != nil {
		db.Close()
		return nil, err
	}
	if err := checkSchemas(db, gdb); err != nil {
		db.Close()
		gdb.Close()
		return nil, err
	}
	s := &Bolt{db: db, gdb: gdb, keys: make(map[string]Key), aliases: make(map[string]Alias),
		keysPerAccount: make(map[string]int), aliasesPerKey: make(map[string]int), grants: newGrantIndex()}
	if err := s.load(); err != nil {
		db.Close()
		gdb.Close()
		return nil, fmt.Errorf("store: load %s: %w", path, err)
	}
	return s, nil
}

// LockTimeout is how long Open waits for another process to release a store
// file. bbolt holds an exclusive flock on an open file for as long as it is
// open, and the kernel drops it the moment its process exits, so a wait
// only helps when a previous hsmkms is in its last instant; one that is still
// running (or still shutting down, which may take 30 s) holds the file for
// far longer than anyone should wait to be told so. One second covers the
// first case and answers the second quickly.
const LockTimeout = time.Second

// openFile opens one bbolt file, naming another process's lock on it.
func openFile(path string, opts *bolt.Options) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, opts)
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("store: open %s: %w: another process, most likely another hsmkms on the same data directory, holds it open (bbolt: %w after %v); stop that process or give this one another data directory",
			path, ErrLocked, err, opts.Timeout)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	return db, nil
}

func (s *Bolt) load() error {
	var legacy []legacyKey
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := s.migrate(tx, s.db.Path()); err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(settingsBucket); err != nil {
			return err
		}
		ab, err := tx.CreateBucketIfNotExists(aliasesBucket)
		if err != nil {
			return err
		}
		err = ab.ForEach(func(k, v []byte) error {
			var a Alias
			if err := json.Unmarshal(v, &a); err != nil {
				return fmt.Errorf("alias %q: %w", k, err)
			}
			if aliasKey(a.Account, a.Name) != string(k) {
				return fmt.Errorf("alias %q: inconsistent", k)
			}
			s.aliases[string(k)] = a
			s.aliasesPerKey[a.TargetKeyID]++
			return nil
		})
		if err != nil {
			return err
		}
		kb, err := tx.CreateBucketIfNotExists(keysBucket)
		if err != nil {
			return err
		}
		err = kb.ForEach(func(id, v []byte) error {
			var k legacyKey
			if err := json.Unmarshal(v, &k); err != nil {
				return fmt.Errorf("record %s: %w", id, err)
			}
			if k.ID != string(id) || len(k.Versions) == 0 {
				return fmt.Errorf("record %s: inconsistent", id)
			}
			s.keys[k.ID] = k.Key
			s.keysPerAccount[k.Account]++
			if k.Grants != nil {
				legacy = append(legacy, k)
			}
			return nil
		})
		if err != nil {
			return err
		}
		return s.loadGCM(tx)
	})
	if err != nil {
		return err
	}
	var all []*Grant
	err = s.gdb.Update(func(tx *bolt.Tx) error {
		if err := s.migrate(tx, s.gdb.Path()); err != nil {
			return err
		}
		gb, err := tx.CreateBucketIfNotExists(grantsBucket)
		if err != nil {
			return err
		}
		var orphans [][]byte
		err = gb.ForEach(func(bk, v []byte) error {
			g := new(Grant)
			if err := json.Unmarshal(v, g); err != nil {
				return fmt.Errorf("grant %s: %w", bk, err)
			}
			if string(grantKey(g.KeyID, g.ID)) != string(bk) || g.Seq == 0 {
				return fmt.Errorf("grant %s: inconsistent", bk)
			}
			if _, ok := s.keys[g.KeyID]; !ok {
				orphans = append(orphans, bytes.Clone(bk))
				return nil
			}
			all = append(all, g)
			return nil
		})
		if err != nil {
			return err
		}
		for _, bk := range orphans {
			if err := gb.Delete(bk); err != nil {
				return err
			}
		}
		// The old format's grants, oldest first per key, keys in id order;
		// those a crashed earlier Open copied already are kept as they are.
		for _, k := range legacy {
			for _, g := range k.Grants {
				g.KeyID = k.ID
				if gb.Get(grantKey(g.KeyID, g.ID)) != nil {
					continue
				}
				if g.Seq, err = gb.NextSequence(); err != nil {
					return err
				}
				if err := putJSON(gb, grantKey(g.KeyID, g.ID), g); err != nil {
					return err
				}
				all = append(all, &g)
			}
		}
		if max := maxSeq(all); gb.Sequence() < max {
			return gb.SetSequence(max)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(legacy) > 0 {
		err := s.db.Update(func(tx *bolt.Tx) error {
			kb := tx.Bucket(keysBucket)
			for _, k := range legacy {
				if err := putJSON(kb, []byte(k.ID), k.Key); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("remove the moved grants from the key records: %w", err)
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Seq < all[j].Seq })
	for i, g := range all {
		if i > 0 && all[i-1].Seq == g.Seq {
			return fmt.Errorf("grants %s and %s: same sequence number %d", all[i-1].ID, g.ID, g.Seq)
		}
		s.grants.add(g)
	}
	return nil
}

// migrate brings one file to the current schema in tx (migrateSchema) and
// remembers the oldest version it found.
func (s *Bolt) migrate(tx *bolt.Tx, name string) error {
	from, err := migrateSchema(tx, name)
	if err != nil {
		return err
	}
	if from > 0 && from < SchemaVersion && (s.migratedFrom == 0 || from < s.migratedFrom) {
		s.migratedFrom = from
	}
	return nil
}

func maxSeq(gs []*Grant) uint64 {
	var m uint64
	for _, g := range gs {
		m = max(m, g.Seq)
	}
	return m
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	js, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, js)
}

// publish applies a committed write to memory.
func (s *Bolt) publish(change func()) {
	s.mu.Lock()
	change()
	s.mu.Unlock()
}

// CreateKey implements Store.
func (s *Bolt) CreateKey(_ context.Context, k Key, keysPerAccount int) error {
	if len(k.Versions) == 0 {
		return fmt.Errorf("store: key %s has no versions", k.ID)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if _, ok := s.keys[k.ID]; ok {
		return ErrExists
	}
	if err := checkLimit(keysPerAccount, s.keysPerAccount[k.Account]); err != nil {
		return err
	}
	k = k.Clone()
	k.Revision = 1
	err := s.db.Update(func(tx *bolt.Tx) error { return putJSON(tx.Bucket(keysBucket), []byte(k.ID), k) })
	if err != nil {
		return fmt.Errorf("store: create key: %w", err)
	}
	s.publish(func() {
		s.keys[k.ID] = k
		s.keysPerAccount[k.Account]++
	})
	return nil
}

// GetKey implements Store.
func (s *Bolt) GetKey(_ context.Context, id string) (Key, error) {
	s.mu.RLock()
	k, ok := s.keys[id]
	s.mu.RUnlock()
	if !ok {
		return Key{}, ErrNotFound
	}
	return k, nil
}

// UpdateKey implements Store. The disk write happens before the in-memory
// record changes, so readers never see an unsaved state.
func (s *Bolt) UpdateKey(_ context.Context, id string, fn func(*Key) error) (Key, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	cur, ok := s.keys[id]
	if !ok {
		return Key{}, ErrNotFound
	}
	k := cur.Clone()
	if err := fn(&k); err != nil {
		return Key{}, err
	}
	if k.ID != id || k.Account != cur.Account || len(k.Versions) == 0 {
		return Key{}, fmt.Errorf("store: update of %s would corrupt the record", id)
	}
	k.Revision = cur.Revision + 1
	err := s.db.Update(func(tx *bolt.Tx) error { return putJSON(tx.Bucket(keysBucket), []byte(id), k) })
	if err != nil {
		return Key{}, fmt.Errorf("store: update key: %w", err)
	}
	s.publish(func() { s.keys[id] = k })
	return k, nil
}

// ListKeys implements Store.
func (s *Bolt) ListKeys(_ context.Context, account, after string, limit int) ([]Key, bool, error) {
	s.mu.RLock()
	var ids []string
	for id, k := range s.keys {
		if k.Account == account && id > after {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	more := len(ids) > limit
	if more {
		ids = ids[:limit]
	}
	out := make([]Key, len(ids))
	for i, id := range ids {
		out[i] = s.keys[id]
	}
	s.mu.RUnlock()
	return out, more, nil
}

// DeleteKey implements Store. The key and its aliases go first, then its
// grants, from the grants file: a crash in between leaves grants of a key
// that no longer exists, which the next Open removes (as does a DeleteKey of
// the same id, should the grants' removal fail).
func (s *Bolt) DeleteKey(_ context.Context, id string) error {
	err := s.deleteKeyRecord(id)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	if gerr := s.deleteGrantsOf(id); gerr != nil {
		return gerr
	}
	return err
}

func (s *Bolt) deleteKeyRecord(id string) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	k, ok := s.keys[id]
	if !ok {
		return ErrNotFound
	}
	var gone []string
	for ak, a := range s.aliases {
		if a.TargetKeyID == id {
			gone = append(gone, ak)
		}
	}
	var forgetGCM func()
	err := s.db.Update(func(tx *bolt.Tx) error {
		ab := tx.Bucket(aliasesBucket)
		for _, ak := range gone {
			if err := ab.Delete([]byte(ak)); err != nil {
				return err
			}
		}
		var err error
		if forgetGCM, err = s.deleteGCM(tx, k); err != nil {
			return err
		}
		return tx.Bucket(keysBucket).Delete([]byte(id))
	})
	if err != nil {
		return fmt.Errorf("store: delete key: %w", err)
	}
	s.publish(func() {
		forgetGCM()
		for _, ak := range gone {
			delete(s.aliases, ak)
		}
		delete(s.aliasesPerKey, id)
		delete(s.keys, id)
		if s.keysPerAccount[k.Account]--; s.keysPerAccount[k.Account] <= 0 {
			delete(s.keysPerAccount, k.Account)
		}
	})
	return nil
}

// deleteGrantsOf removes every grant of a key whose record is gone. A
// CreateGrant that saw the key before it went holds gwmu until its grant is
// stored, so this finds that grant too.
func (s *Bolt) deleteGrantsOf(keyID string) error {
	s.gwmu.Lock()
	defer s.gwmu.Unlock()
	kg := s.grants.of(keyID)
	if kg == nil {
		return nil
	}
	err := s.gdb.Update(func(tx *bolt.Tx) error {
		gb := tx.Bucket(grantsBucket)
		for id := range kg.byID {
			if err := gb.Delete(grantKey(keyID, id)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: delete the grants of key %s: %w", keyID, err)
	}
	s.publish(func() { s.grants.removeKey(keyID) })
	return nil
}

func (s *Bolt) putAlias(a Alias) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return putJSON(tx.Bucket(aliasesBucket), []byte(aliasKey(a.Account, a.Name)), a)
	})
}

// CreateAlias implements Store.
func (s *Bolt) CreateAlias(_ context.Context, a Alias, aliasesPerKey int) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	k := aliasKey(a.Account, a.Name)
	if _, ok := s.aliases[k]; ok {
		return ErrExists
	}
	if _, ok := s.keys[a.TargetKeyID]; !ok {
		return fmt.Errorf("store: alias %s: target key %s: %w", a.Name, a.TargetKeyID, ErrNotFound)
	}
	if err := checkLimit(aliasesPerKey, s.aliasesPerKey[a.TargetKeyID]); err != nil {
		return err
	}
	if err := s.putAlias(a); err != nil {
		return fmt.Errorf("store: create alias: %w", err)
	}
	s.publish(func() {
		s.aliases[k] = a
		s.aliasesPerKey[a.TargetKeyID]++
	})
	return nil
}

// GetAlias implements Store.
func (s *Bolt) GetAlias(_ context.Context, account, name string) (Alias, error) {
	s.mu.RLock()
	a, ok := s.aliases[aliasKey(account, name)]
	s.mu.RUnlock()
	if !ok {
		return Alias{}, ErrNotFound
	}
	return a, nil
}

// UpdateAlias implements Store.
func (s *Bolt) UpdateAlias(_ context.Context, account, name string, aliasesPerKey int, fn func(*Alias) error) (Alias, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	k := aliasKey(account, name)
	cur, ok := s.aliases[k]
	if !ok {
		return Alias{}, ErrNotFound
	}
	a := cur
	if err := fn(&a); err != nil {
		return Alias{}, err
	}
	if aliasKey(a.Account, a.Name) != k {
		return Alias{}, fmt.Errorf("store: update of alias %s would rename it", name)
	}
	if _, ok := s.keys[a.TargetKeyID]; !ok {
		return Alias{}, fmt.Errorf("store: alias %s: target key %s: %w", a.Name, a.TargetKeyID, ErrNotFound)
	}
	moved := a.TargetKeyID != cur.TargetKeyID
	if moved {
		if err := checkLimit(aliasesPerKey, s.aliasesPerKey[a.TargetKeyID]); err != nil {
			return Alias{}, err
		}
	}
	if err := s.putAlias(a); err != nil {
		return Alias{}, fmt.Errorf("store: update alias: %w", err)
	}
	s.publish(func() {
		s.aliases[k] = a
		if moved {
			s.uncountAlias(cur.TargetKeyID)
			s.aliasesPerKey[a.TargetKeyID]++
		}
	})
	return a, nil
}

func (s *Bolt) uncountAlias(keyID string) {
	if s.aliasesPerKey[keyID]--; s.aliasesPerKey[keyID] <= 0 {
		delete(s.aliasesPerKey, keyID)
	}
}

// DeleteAlias implements Store.
func (s *Bolt) DeleteAlias(_ context.Context, account, name string) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	k := aliasKey(account, name)
	a, ok := s.aliases[k]
	if !ok {
		return ErrNotFound
	}
	err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(aliasesBucket).Delete([]byte(k)) })
	if err != nil {
		return fmt.Errorf("store: delete alias: %w", err)
	}
	s.publish(func() {
		delete(s.aliases, k)
		s.uncountAlias(a.TargetKeyID)
	})
	return nil
}

// ListAliases implements Store.
func (s *Bolt) ListAliases(_ context.Context, account, keyID, after string, limit int) ([]Alias, bool, error) {
	s.mu.RLock()
	var out []Alias
	for _, a := range s.aliases {
		if a.Account == account && a.Name > after && (keyID == "" || a.TargetKeyID == keyID) {
			out = append(out, a)
		}
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	more := len(out) > limit
	if more {
		out = out[:limit]
	}
	return out, more, nil
}

// CreateGrant implements Store. Its cost does not depend on how many grants
// the key has, and it waits for no write of the keys file.
func (s *Bolt) CreateGrant(_ context.Context, g Grant, grantsPerKey int) (Grant, bool, error) {
	s.gwmu.Lock()
	defer s.gwmu.Unlock()
	s.mu.RLock()
	_, ok := s.keys[g.KeyID]
	s.mu.RUnlock()
	if !ok {
		return Grant{}, false, fmt.Errorf("store: grant on key %s: %w", g.KeyID, ErrNotFound)
	}
	kg := s.grants.of(g.KeyID)
	if rk := g.RetryKey(); rk != "" && kg != nil {
		if old := kg.byRetry[rk]; old != nil {
			return *old, false, nil
		}
	}
	if err := checkLimit(grantsPerKey, kg.size()); err != nil {
		return Grant{}, false, err
	}
	if kg != nil && kg.byID[g.ID] != nil {
		return Grant{}, false, ErrExists
	}
	g = g.Clone()
	err := s.gdb.Update(func(tx *bolt.Tx) error {
		gb := tx.Bucket(grantsBucket)
		var err error
		if g.Seq, err = gb.NextSequence(); err != nil {
			return err
		}
		return putJSON(gb, grantKey(g.KeyID, g.ID), g)
	})
	if err != nil {
		return Grant{}, false, fmt.Errorf("store: create grant: %w", err)
	}
	stored := &g
	s.publish(func() { s.grants.add(stored) })
	return g, true, nil
}

// GetGrant implements Store.
func (s *Bolt) GetGrant(_ context.Context, keyID, grantID string) (Grant, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if kg := s.grants.of(keyID); kg != nil {
		if g := kg.byID[grantID]; g != nil {
			return *g, nil
		}
	}
	return Grant{}, ErrNotFound
}

// DeleteGrant implements Store.
func (s *Bolt) DeleteGrant(_ context.Context, keyID, grantID string) error {
	s.gwmu.Lock()
	defer s.gwmu.Unlock()
	kg := s.grants.of(keyID)
	if kg == nil || kg.byID[grantID] == nil {
		return ErrNotFound
	}
	g := kg.byID[grantID]
	err := s.gdb.Update(func(tx *bolt.Tx) error { return tx.Bucket(grantsBucket).Delete(grantKey(keyID, grantID)) })
	if err != nil {
		return fmt.Errorf("store: delete grant: %w", err)
	}
	s.publish(func() { s.grants.remove(g) })
	return nil
}

// grantWalkStep bounds the grants a walk visits under one hold of the read
// lock: a walk over a large list (50,000 grants of one grantee, or of one
// retiring principal across keys) must not keep a writer, and through it
// every reader, waiting.
const grantWalkStep = 256

// walkGrants walks the list that list returns (looked up again at each
// step) from after, calling fn under the read lock, in bounded steps.
func (s *Bolt) walkGrants(list func() *grantList, after uint64, fn func(*Grant) bool) {
	for over := false; !over; {
		s.mu.RLock()
		after, over = list().visit(after, grantWalkStep, fn)
		s.mu.RUnlock()
	}
}

// pageGrants returns up to limit grants of a list that match, after a Seq,
// and whether more follow.
func (s *Bolt) pageGrants(list func() *grantList, after uint64, limit int, match func(*Grant) bool) ([]Grant, bool) {
	out := []Grant{}
	more := false
	s.walkGrants(list, after, func(g *Grant) bool {
		if match != nil && !match(g) {
			return true
		}
		if len(out) >= limit {
			more = true
			return false
		}
		out = append(out, *g)
		return true
	})
	return out, more
}

// keyGrantList returns a function that finds one of a key's grant lists
// (pick) under the read lock.
func (s *Bolt) keyGrantList(keyID string, pick func(*keyGrants) *grantList) func() *grantList {
	return func() *grantList {
		if kg := s.grants.of(keyID); kg != nil {
			return pick(kg)
		}
		return nil
	}
}

// ListGrants implements Store.
func (s *Bolt) ListGrants(ctx context.Context, keyID string, f GrantFilter, after uint64, limit int) ([]Grant, bool, error) {
	if f.GrantID != "" {
		g, err := s.GetGrant(ctx, keyID, f.GrantID)
		if err != nil || g.Seq <= after || (f.Grantee != "" && g.GranteePrincipal != f.Grantee) || limit < 1 {
			return []Grant{}, false, nil
		}
		return []Grant{g}, false, nil
	}
	pick := func(kg *keyGrants) *grantList { return &kg.all }
	if f.Grantee != "" {
		pick = func(kg *keyGrants) *grantList { return kg.byGrantee[f.Grantee] }
	}
	out, more := s.pageGrants(s.keyGrantList(keyID, pick), after, limit, nil)
	return out, more, nil
}

// ListRetirableGrants implements Store.
func (s *Bolt) ListRetirableGrants(_ context.Context, account, retiring string, after uint64, limit int) ([]Grant, bool, error) {
	out, more := s.pageGrants(func() *grantList { return s.grants.retiring[retiring] }, after, limit, func(g *Grant) bool {
		k, ok := s.keys[g.KeyID] // gone: a DeleteKey is removing its grants
		return ok && (account == "" || k.Account == account)
	})
	return out, more, nil
}

// GranteeGrants implements Store. It holds the read lock for a bounded
// number of grants at a time, so a grantee with thousands of grants on a
// key delays no writer for long.
func (s *Bolt) GranteeGrants(_ context.Context, keyID, grantee string, fn func(*Grant) bool) error {
	s.walkGrants(s.keyGrantList(keyID, func(kg *keyGrants) *grantList { return kg.byGrantee[grantee] }), 0, fn)
	return nil
}

// readinessMark is the settings entry Writable rewrites.
var readinessMark = []byte("readiness-mark")

// MinFreeBytes is the free space below which Writable fails: a small
// commit still succeeds on a full disk (bbolt reuses the pages it has), but
// the next time the file must grow, commits fail.
const MinFreeBytes = 1 << 20

// Writable implements Store: room to grow on the filesystem, and one small
// commit to each file.
func (s *Bolt) Writable(_ context.Context) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(filepath.Dir(s.db.Path()), &st); err != nil {
		return fmt.Errorf("store: statfs: %w", err)
	}
	if free := st.Bavail * uint64(st.Bsize); free < MinFreeBytes {
		return fmt.Errorf("store: %d bytes free on the filesystem of %s (less than %d): the store cannot grow", free, s.db.Path(), MinFreeBytes)
	}
	mark := []byte(time.Now().UTC().Format(time.RFC3339Nano))
	s.wmu.Lock()
	err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(settingsBucket).Put(readinessMark, mark) })
	s.wmu.Unlock()
	if err != nil {
		return fmt.Errorf("store: %s is not writable: %w", s.db.Path(), err)
	}
	s.gwmu.Lock()
	err = s.gdb.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(settingsBucket)
		if err != nil {
			return err
		}
		return b.Put(readinessMark, mark)
	})
	s.gwmu.Unlock()
	if err != nil {
		return fmt.Errorf("store: %s is not writable: %w", s.gdb.Path(), err)
	}
	return nil
}

// DeleteSetting implements Store.
func (s *Bolt) DeleteSetting(_ context.Context, name string) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(settingsBucket)
		if b.Get([]byte(name)) == nil {
			return ErrNotFound
		}
		return b.Delete([]byte(name))
	})
	if err != nil && err != ErrNotFound {
		return fmt.Errorf("store: delete setting %s: %w", name, err)
	}
	return err
}

// AllKeys implements Store.
func (s *Bolt) AllKeys(_ context.Context) ([]Key, error) {
	s.mu.RLock()
	out := make([]Key, 0, len(s.keys))
	for _, k := range s.keys {
		out = append(out, k)
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Close implements Store.
func (s *Bolt) Close() error { return errors.Join(s.db.Close(), s.gdb.Close()) }
