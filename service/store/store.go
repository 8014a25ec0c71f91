// Package store keeps hsmkms's metadata — key records now; aliases, grants and
// policies later — behind one small interface. The embedded default is bbolt
// (Open); a PostgreSQL implementation for several nodes comes later.
//
// Records are held in memory and written through, so reads on the request
// path never touch the disk. The store never holds key material: a key record
// names its token objects by key id and version only.
//
// It imports bbolt and the standard library, and no other hsmkms package.
package store

import (
	"context"
	"errors"
	"slices"
	"time"
)

var (
	// ErrNotFound: no record with that id.
	ErrNotFound = errors.New("store: not found")
	// ErrExists: a record with that id already exists.
	ErrExists = errors.New("store: already exists")
)

// Key is the metadata of one KMS key. Slices in a Key returned by a Store are
// shared and must not be modified; UpdateKey hands its callback a deep copy.
type Key struct {
	ID          string    `json:"id"` // canonical UUID
	Account     string    `json:"account"`
	Region      string    `json:"region"`
	CreatedAt   time.Time `json:"createdAt"`
	Description string    `json:"description,omitempty"`
	State       string    `json:"state"` // Enabled, Disabled, …
	KeySpec     string    `json:"keySpec"`
	KeyUsage    string    `json:"keyUsage"`
	Origin      string    `json:"origin"`
	Policy      string    `json:"policy,omitempty"`
	Tags        []Tag     `json:"tags,omitempty"`
	// Versions lists the key's material versions in the token, oldest first;
	// the last one is current. Old versions are kept so old ciphertexts decrypt.
	Versions []Version `json:"versions"`
}

// Version is one generation of a key's material, a token object.
type Version struct {
	Number    uint32    `json:"n"`
	CreatedAt time.Time `json:"createdAt"`
}

// Tag is a key's resource tag.
type Tag struct {
	Key   string `json:"k"`
	Value string `json:"v"`
}

// Current returns the version new encryptions use.
func (k *Key) Current() Version { return k.Versions[len(k.Versions)-1] }

// HasVersion reports whether n is one of the key's versions.
func (k *Key) HasVersion(n uint32) bool {
	for _, v := range k.Versions {
		if v.Number == n {
			return true
		}
	}
	return false
}

// Clone returns a deep copy of k.
func (k Key) Clone() Key {
	k.Tags = slices.Clone(k.Tags)
	k.Versions = slices.Clone(k.Versions)
	return k
}

// Store persists key metadata. Implementations are safe for concurrent use.
type Store interface {
	// CreateKey stores a new record; ErrExists if the id is taken.
	CreateKey(ctx context.Context, k Key) error
	// GetKey returns the record with that id, from memory; ErrNotFound if none.
	GetKey(ctx context.Context, id string) (Key, error)
	// UpdateKey applies fn to a copy of the record and stores the result
	// atomically with respect to other updates. If fn fails nothing is written.
	UpdateKey(ctx context.Context, id string, fn func(*Key) error) (Key, error)
	// ListKeys returns up to limit records of account with ids greater than
	// after, in id order, and whether more follow.
	ListKeys(ctx context.Context, account, after string, limit int) ([]Key, bool, error)
	// AllKeys returns every record, of every account, in id order.
	AllKeys(ctx context.Context) ([]Key, error)
	// Close flushes and closes the store.
	Close() error
}
