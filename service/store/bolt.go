package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

var (
	keysBucket     = []byte("keys")
	aliasesBucket  = []byte("aliases")
	settingsBucket = []byte("settings")
)

// aliasKey is an alias's key in the bucket and the map: account, NUL, name.
func aliasKey(account, name string) string { return account + "\x00" + name }

// Bolt is the embedded store: one bbolt file, every record also in memory.
type Bolt struct {
	db *bolt.DB

	mu      sync.RWMutex
	keys    map[string]Key
	aliases map[string]Alias // by aliasKey
}

// Open opens (creating if needed) the bbolt file at path and loads every
// record into memory.
func Open(path string) (*Bolt, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	s := &Bolt{db: db, keys: make(map[string]Key), aliases: make(map[string]Alias)}
	err = db.Update(func(tx *bolt.Tx) error {
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
			return nil
		})
		if err != nil {
			return err
		}
		b, err := tx.CreateBucketIfNotExists(keysBucket)
		if err != nil {
			return err
		}
		return b.ForEach(func(id, v []byte) error {
			var k Key
			if err := json.Unmarshal(v, &k); err != nil {
				return fmt.Errorf("record %s: %w", id, err)
			}
			if k.ID != string(id) || len(k.Versions) == 0 {
				return fmt.Errorf("record %s: inconsistent", id)
			}
			s.keys[k.ID] = k
			return nil
		})
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: load %s: %w", path, err)
	}
	return s, nil
}

func (s *Bolt) put(k Key) error {
	v, err := json.Marshal(k)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(keysBucket).Put([]byte(k.ID), v)
	})
}

// CreateKey implements Store.
func (s *Bolt) CreateKey(_ context.Context, k Key) error {
	if len(k.Versions) == 0 {
		return fmt.Errorf("store: key %s has no versions", k.ID)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.keys[k.ID]; ok {
		return ErrExists
	}
	k = k.Clone()
	k.Revision = 1
	if err := s.put(k); err != nil {
		return fmt.Errorf("store: create key: %w", err)
	}
	s.keys[k.ID] = k
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

// UpdateKey implements Store. Updates are serialised; the disk write happens
// before the in-memory record changes, so readers never see an unsaved state.
func (s *Bolt) UpdateKey(_ context.Context, id string, fn func(*Key) error) (Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[id]
	if !ok {
		return Key{}, ErrNotFound
	}
	k = k.Clone()
	if err := fn(&k); err != nil {
		return Key{}, err
	}
	if k.ID != id || len(k.Versions) == 0 {
		return Key{}, fmt.Errorf("store: update of %s would corrupt the record", id)
	}
	k.Revision = s.keys[id].Revision + 1
	if err := s.put(k); err != nil {
		return Key{}, fmt.Errorf("store: update key: %w", err)
	}
	s.keys[id] = k
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

// DeleteKey implements Store.
func (s *Bolt) DeleteKey(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.keys[id]; !ok {
		return ErrNotFound
	}
	var gone []string
	for k, a := range s.aliases {
		if a.TargetKeyID == id {
			gone = append(gone, k)
		}
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		ab := tx.Bucket(aliasesBucket)
		for _, k := range gone {
			if err := ab.Delete([]byte(k)); err != nil {
				return err
			}
		}
		return tx.Bucket(keysBucket).Delete([]byte(id))
	})
	if err != nil {
		return fmt.Errorf("store: delete key: %w", err)
	}
	for _, k := range gone {
		delete(s.aliases, k)
	}
	delete(s.keys, id)
	return nil
}

func (s *Bolt) putAlias(a Alias) error {
	v, err := json.Marshal(a)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(aliasesBucket).Put([]byte(aliasKey(a.Account, a.Name)), v)
	})
}

// CreateAlias implements Store.
func (s *Bolt) CreateAlias(_ context.Context, a Alias) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := aliasKey(a.Account, a.Name)
	if _, ok := s.aliases[k]; ok {
		return ErrExists
	}
	if _, ok := s.keys[a.TargetKeyID]; !ok {
		return fmt.Errorf("store: alias %s: target key %s: %w", a.Name, a.TargetKeyID, ErrNotFound)
	}
	if err := s.putAlias(a); err != nil {
		return fmt.Errorf("store: create alias: %w", err)
	}
	s.aliases[k] = a
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
func (s *Bolt) UpdateAlias(_ context.Context, account, name string, fn func(*Alias) error) (Alias, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := aliasKey(account, name)
	a, ok := s.aliases[k]
	if !ok {
		return Alias{}, ErrNotFound
	}
	if err := fn(&a); err != nil {
		return Alias{}, err
	}
	if aliasKey(a.Account, a.Name) != k {
		return Alias{}, fmt.Errorf("store: update of alias %s would rename it", name)
	}
	if _, ok := s.keys[a.TargetKeyID]; !ok {
		return Alias{}, fmt.Errorf("store: alias %s: target key %s: %w", a.Name, a.TargetKeyID, ErrNotFound)
	}
	if err := s.putAlias(a); err != nil {
		return Alias{}, fmt.Errorf("store: update alias: %w", err)
	}
	s.aliases[k] = a
	return a, nil
}

// DeleteAlias implements Store.
func (s *Bolt) DeleteAlias(_ context.Context, account, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := aliasKey(account, name)
	if _, ok := s.aliases[k]; !ok {
		return ErrNotFound
	}
	err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(aliasesBucket).Delete([]byte(k)) })
	if err != nil {
		return fmt.Errorf("store: delete alias: %w", err)
	}
	delete(s.aliases, k)
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

// Setting implements Store.
func (s *Bolt) Setting(_ context.Context, name string, init func() ([]byte, error)) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []byte
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(settingsBucket)
		if v := b.Get([]byte(name)); v != nil {
			out = bytes.Clone(v)
			return nil
		}
		v, err := init()
		if err != nil {
			return err
		}
		out = v
		return b.Put([]byte(name), v)
	})
	if err != nil {
		return nil, fmt.Errorf("store: setting %s: %w", name, err)
	}
	return out, nil
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
func (s *Bolt) Close() error { return s.db.Close() }
