package store

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

var keysBucket = []byte("keys")

// Bolt is the embedded store: one bbolt file, every record also in memory.
type Bolt struct {
	db *bolt.DB

	mu   sync.RWMutex
	keys map[string]Key
}

// Open opens (creating if needed) the bbolt file at path and loads every
// record into memory.
func Open(path string) (*Bolt, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	s := &Bolt{db: db, keys: make(map[string]Key)}
	err = db.Update(func(tx *bolt.Tx) error {
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
