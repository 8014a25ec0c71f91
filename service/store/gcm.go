package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// gcmBucket, in the keys file, holds the AES-GCM encryption counts reserved
// per key version (ReserveGCM): key "<key id>/<version>" in decimal, value
// the count as 8 bytes, big-endian. Files written before it existed simply
// lack it; Open creates it.
var gcmBucket = []byte("gcm")

// gcmVersion names one key version in the in-memory counts.
type gcmVersion struct {
	keyID   string
	version uint32
}

func gcmKey(keyID string, version uint32) []byte {
	return []byte(keyID + "/" + strconv.FormatUint(uint64(version), 10))
}

// loadGCM reads the reserved counts into memory, once the key records are
// loaded, and deletes the counts of keys that no longer exist. Called in
// load's write transaction on the keys file.
func (s *Bolt) loadGCM(tx *bolt.Tx) error {
	b, err := tx.CreateBucketIfNotExists(gcmBucket)
	if err != nil {
		return err
	}
	s.gcm = make(map[gcmVersion]uint64)
	var orphans [][]byte
	err = b.ForEach(func(k, v []byte) error {
		id, ver, ok := strings.Cut(string(k), "/")
		n, err := strconv.ParseUint(ver, 10, 32)
		if !ok || err != nil || len(v) != 8 {
			return fmt.Errorf("GCM count %q: malformed", k)
		}
		if _, ok := s.keys[id]; !ok {
			orphans = append(orphans, bytes.Clone(k))
			return nil
		}
		s.gcm[gcmVersion{id, uint32(n)}] = binary.BigEndian.Uint64(v)
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range orphans {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// ReserveGCM implements Store. It takes the keys file's writer lock: one
// fsync per reservation, which the service makes once per block of
// encryptions (a million by default), not per encryption.
func (s *Bolt) ReserveGCM(_ context.Context, keyID string, version uint32, n uint64) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	k, ok := s.keys[keyID]
	if !ok || !k.HasVersion(version) {
		return fmt.Errorf("store: GCM count of %s version %d: %w", keyID, version, ErrNotFound)
	}
	id := gcmVersion{keyID, version}
	s.mu.RLock()
	cur := s.gcm[id]
	s.mu.RUnlock()
	if n <= cur {
		return nil
	}
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], n)
	err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(gcmBucket).Put(gcmKey(keyID, version), v[:]) })
	if err != nil {
		return fmt.Errorf("store: reserve GCM count: %w", err)
	}
	s.publish(func() { s.gcm[id] = n })
	return nil
}

// GCMReservations implements Store.
func (s *Bolt) GCMReservations(_ context.Context) ([]GCMReservation, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]GCMReservation, 0, len(s.gcm))
	for id, n := range s.gcm {
		out = append(out, GCMReservation{KeyID: id.keyID, Version: id.version, Reserved: n})
	}
	return out, nil
}

// deleteGCM removes the counts of key k in tx, the transaction that deletes
// its record, and returns the function that removes them from memory.
func (s *Bolt) deleteGCM(tx *bolt.Tx, k Key) (func(), error) {
	b := tx.Bucket(gcmBucket)
	for _, v := range k.Versions {
		if err := b.Delete(gcmKey(k.ID, v.Number)); err != nil {
			return nil, err
		}
	}
	return func() {
		for _, v := range k.Versions {
			delete(s.gcm, gcmVersion{k.ID, v.Number})
		}
	}, nil
}

// RestoreGCMMargin is what a restore adds to the AES-GCM count of every
// symmetric key's current version: the counts in a backup are as old as the
// backup, and the encryptions made since are unknown. 2^28 is 1/16 of the
// 2^32 budget, so a key restored 16 times without a rotation reaches its
// limit: counted too high rather than too low. Operators rotate heavily used
// keys after restoring an old backup (the README says so).
const RestoreGCMMargin = 1 << 28

// raiseGCMForRestore adds RestoreGCMMargin to the count of every symmetric
// key's current version; it returns how many it raised.
func (s *Bolt) raiseGCMForRestore(ctx context.Context) (int, error) {
	keys, err := s.AllKeys(ctx)
	if err != nil {
		return 0, err
	}
	raised := 0
	for _, k := range keys {
		if k.KeySpec != "SYMMETRIC_DEFAULT" || len(k.Versions) == 0 {
			continue
		}
		v := k.Current().Number
		s.mu.RLock()
		cur := s.gcm[gcmVersion{k.ID, v}]
		s.mu.RUnlock()
		if err := s.ReserveGCM(ctx, k.ID, v, cur+RestoreGCMMargin); err != nil {
			return raised, err
		}
		raised++
	}
	return raised, nil
}
