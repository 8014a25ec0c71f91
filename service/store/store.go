// Package store keeps hsmkms's metadata — key records (with their policies
// and grants) and aliases — behind one small interface. The embedded default is bbolt
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
	"maps"
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
	// DeletionDate is when a key pending deletion is deleted; zero otherwise.
	DeletionDate        time.Time `json:"deletionDate,omitzero"`
	PendingWindowInDays int32     `json:"pendingWindowInDays,omitempty"`
	// Destroying is set, durably, before the key's token objects are
	// destroyed; a record with it set is finished off (objects destroyed,
	// record removed) at the next start, whatever happened in between.
	Destroying bool `json:"destroying,omitempty"`
	// Automatic rotation: on or off, its period, and the date the period
	// counts from (enabling, or the last automatic rotation).
	RotationEnabled      bool      `json:"rotationEnabled,omitempty"`
	RotationPeriodInDays int32     `json:"rotationPeriodInDays,omitempty"`
	RotationBase         time.Time `json:"rotationBase,omitzero"`
	// Revision is set by the store: 1 at creation, +1 at every update. Caches
	// of derived values are valid only for the revision they were built from.
	Revision uint64 `json:"revision"`
	// Versions lists the key's material versions in the token, oldest first;
	// the last one is current. Old versions are kept so old ciphertexts decrypt.
	Versions []Version `json:"versions"`
	// Grants are the key's grants, oldest first. They live in the key record
	// so that every grant change bumps the key's revision, which invalidates
	// whatever was derived from it.
	Grants []Grant `json:"grants,omitempty"`
}

// Grant lets a principal use a key for some operations, optionally only with
// a given encryption context.
type Grant struct {
	ID                string    `json:"id"` // 64 hex digits
	Name              string    `json:"name,omitempty"`
	CreatedAt         time.Time `json:"createdAt"`
	GranteePrincipal  string    `json:"grantee"`
	RetiringPrincipal string    `json:"retiring,omitempty"`
	IssuingAccount    string    `json:"issuer"`
	Operations        []string  `json:"ops"`
	// At most one of the constraints is set (AWS allows one or the other).
	ContextEquals map[string]string `json:"ecEquals,omitempty"`
	ContextSubset map[string]string `json:"ecSubset,omitempty"`
}

// Clone returns a deep copy of g.
func (g Grant) Clone() Grant {
	g.Operations = slices.Clone(g.Operations)
	g.ContextEquals = maps.Clone(g.ContextEquals)
	g.ContextSubset = maps.Clone(g.ContextSubset)
	return g
}

// Version is one generation of a key's material, a token object.
type Version struct {
	Number    uint32    `json:"n"`
	CreatedAt time.Time `json:"createdAt"`
	// Rotation says how a version after the first came: AUTOMATIC or ON_DEMAND.
	Rotation string `json:"rotation,omitempty"`
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
	if k.Grants != nil {
		gs := make([]Grant, len(k.Grants))
		for i, g := range k.Grants {
			gs[i] = g.Clone()
		}
		k.Grants = gs
	}
	return k
}

// Alias is a friendly name for a key, unique within an account.
type Alias struct {
	Name        string    `json:"name"` // "alias/…"
	Account     string    `json:"account"`
	TargetKeyID string    `json:"target"`
	CreatedAt   time.Time `json:"createdAt"`
	UpdatedAt   time.Time `json:"updatedAt"`
}

// Store persists key metadata. Implementations are safe for concurrent use.
type Store interface {
	// CreateKey stores a new record; ErrExists if the id is taken.
	CreateKey(ctx context.Context, k Key) error
	// GetKey returns the record with that id, from memory; ErrNotFound if none.
	GetKey(ctx context.Context, id string) (Key, error)
	// UpdateKey applies fn to a copy of the record and stores the result
	// atomically with respect to other updates. If fn fails nothing is written.
	// fn runs under the store's lock: it must not call the store.
	UpdateKey(ctx context.Context, id string, fn func(*Key) error) (Key, error)
	// ListKeys returns up to limit records of account with ids greater than
	// after, in id order, and whether more follow.
	ListKeys(ctx context.Context, account, after string, limit int) ([]Key, bool, error)
	// DeleteKey removes a key record and every alias that names it, in one
	// transaction. ErrNotFound if there is no such record.
	DeleteKey(ctx context.Context, id string) error

	// CreateAlias stores a new alias; ErrExists if the account has one of
	// that name.
	CreateAlias(ctx context.Context, a Alias) error
	// GetAlias returns an account's alias, from memory; ErrNotFound if none.
	GetAlias(ctx context.Context, account, name string) (Alias, error)
	// UpdateAlias applies fn to a copy of the alias and stores the result;
	// like UpdateKey's, fn must not call the store.
	UpdateAlias(ctx context.Context, account, name string, fn func(*Alias) error) (Alias, error)
	// DeleteAlias removes an alias; ErrNotFound if there is none.
	DeleteAlias(ctx context.Context, account, name string) error
	// ListAliases returns up to limit aliases of account (naming keyID, if
	// set) with names greater than after, in name order, and whether more
	// follow.
	ListAliases(ctx context.Context, account, keyID, after string, limit int) ([]Alias, bool, error)

	// Setting returns the named service setting, creating it with init (once,
	// durably) if it does not exist yet.
	Setting(ctx context.Context, name string, init func() ([]byte, error)) ([]byte, error)

	// AllKeys returns every record, of every account, in id order.
	AllKeys(ctx context.Context) ([]Key, error)
	// Close flushes and closes the store.
	Close() error
}
