// Package store keeps hsmkms's metadata — key records (with their policies),
// grants and aliases — behind one small interface. The embedded default is
// bbolt (Open); a PostgreSQL implementation for several nodes comes later.
//
// Records are held in memory and written through, so reads on the request
// path never touch the disk, and never wait for a write that does. The store
// never holds key material: a key record names its token objects by key id
// and version only.
//
// Every invariant that concurrent writers could break is the store's to
// keep, inside its write transactions: quotas (keys per account, aliases
// per key, grants per key — the caller passes the limit, the store counts),
// the grant Name retry rule, unique ids and names, and revisions.
//
// Each bbolt file records its schema version (SchemaVersion): Open migrates
// an older file in the transaction that loads it and refuses a newer one.
// Snapshot takes an online backup of both files as of one instant, and
// Restore puts such a backup in place, offline, keeping what it replaces
// (backup.go, restore.go).
//
// It imports bbolt and the standard library, and no other hsmkms package.
package store

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"
)

var (
	// ErrNotFound: no record with that id.
	ErrNotFound = errors.New("store: not found")
	// ErrExists: a record with that id already exists.
	ErrExists = errors.New("store: already exists")
	// ErrLimitExceeded: the write would take a count past the limit the
	// caller gave; nothing was written. The error is a *LimitError.
	ErrLimitExceeded = errors.New("store: limit exceeded")
	// ErrLocked: Open found the store's file locked by another process
	// (another hsmkms on the same data directory).
	ErrLocked = errors.New("the file is locked")
)

// LimitError is the refusal of a write that a limit forbids: Usage is the
// count the limit applies to (which may be above Limit if the limit was
// lowered after the records were made).
type LimitError struct {
	Limit, Usage int
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("store: limit exceeded: limit %d, usage %d", e.Limit, e.Usage)
}

// Is makes errors.Is(err, ErrLimitExceeded) true.
func (e *LimitError) Is(target error) bool { return target == ErrLimitExceeded }

// checkLimit refuses a usage at or above limit; a limit ≤ 0 is no limit.
func checkLimit(limit, usage int) error {
	if limit > 0 && usage >= limit {
		return &LimitError{Limit: limit, Usage: usage}
	}
	return nil
}

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
	// (Grants are not part of the record: readers ask the store for them.)
	Revision uint64 `json:"revision"`
	// Versions lists the key's material versions in the token, oldest first;
	// the last one is current. Old versions are kept so old ciphertexts decrypt.
	Versions []Version `json:"versions"`
}

// Grant lets a principal use a key for some operations, optionally only with
// a given encryption context. Grants are records of their own, not part of
// the key record: a key may have 50,000, and a grant costs what one record
// costs, whatever else the key holds.
type Grant struct {
	KeyID string `json:"key"`
	ID    string `json:"id"` // 64 hex digits
	// Seq is set by the store when the grant is created: unique in the store
	// and increasing, so it orders grants by creation and is a listing
	// position that stays valid when other grants go.
	Seq               uint64    `json:"seq"`
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

// RetryKey is the identity of a named grant for CreateGrant's retry rule: two
// grants of a key with the same Name and the same properties (grantee,
// retiring principal, operations, constraints) have the same RetryKey, and
// a CreateGrant that matches an existing grant's RetryKey is a retry. It is
// "" for a grant without a Name, which is never a retry. (A shared store can
// keep it in a column with a unique index per key.)
func (g *Grant) RetryKey() string {
	if g.Name == "" {
		return ""
	}
	h := sha256.New()
	field := func(s string) {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	field(g.Name)
	field(g.GranteePrincipal)
	field(g.RetiringPrincipal)
	ops := slices.Clone(g.Operations)
	slices.Sort(ops)
	ops = slices.Compact(ops)
	field(strconv.Itoa(len(ops)))
	for _, op := range ops {
		field(op)
	}
	// A constraint that is absent differs from one that is empty.
	for _, m := range []map[string]string{g.ContextEquals, g.ContextSubset} {
		if m == nil {
			field("-")
			continue
		}
		field(strconv.Itoa(len(m)))
		for _, k := range slices.Sorted(maps.Keys(m)) {
			field(k)
			field(m[k])
		}
	}
	return string(h.Sum(nil))
}

// GrantFilter narrows ListGrants; an empty field matches every grant.
type GrantFilter struct {
	GrantID string
	Grantee string
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
	return k
}

// GCMReservation is the count of AES-GCM encryptions recorded for one key
// version (ReserveGCM): at least as many as it has made.
type GCMReservation struct {
	KeyID    string
	Version  uint32
	Reserved uint64
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
//
// Reads (Get*, List*, GranteeGrants, AllKeys) answer from memory and never
// wait for a write's disk I/O. Writes are atomic: each either happens whole,
// with its checks (existence, limits, the retry rule) made in the same
// transaction as the change, or not at all. A limit ≤ 0 is no limit.
type Store interface {
	// CreateKey stores a new record; ErrExists if the id is taken;
	// ErrLimitExceeded if k.Account already has keysPerAccount keys (in any
	// state).
	CreateKey(ctx context.Context, k Key, keysPerAccount int) error
	// GetKey returns the record with that id, from memory; ErrNotFound if none.
	GetKey(ctx context.Context, id string) (Key, error)
	// UpdateKey applies fn to a copy of the record and stores the result
	// atomically with respect to other updates: fn's checks of the record
	// hold when it is stored. If fn fails nothing is written. fn runs in the
	// store's write transaction: it must be quick and must not call the store.
	UpdateKey(ctx context.Context, id string, fn func(*Key) error) (Key, error)
	// ListKeys returns up to limit records of account with ids greater than
	// after, in id order, and whether more follow.
	ListKeys(ctx context.Context, account, after string, limit int) ([]Key, bool, error)
	// DeleteKey removes a key record and every alias that names it, in one
	// transaction, and every grant the key has: in the same transaction, or
	// (a store that keeps grants apart) just after, finishing at the next
	// open after a crash; a grant of a removed key is never served.
	// ErrNotFound if there is no such record.
	DeleteKey(ctx context.Context, id string) error

	// CreateAlias stores a new alias; ErrExists if the account has one of
	// that name; ErrNotFound if its target key does not exist;
	// ErrLimitExceeded if the target already has aliasesPerKey aliases.
	CreateAlias(ctx context.Context, a Alias, aliasesPerKey int) error
	// GetAlias returns an account's alias, from memory; ErrNotFound if none.
	GetAlias(ctx context.Context, account, name string) (Alias, error)
	// UpdateAlias applies fn to a copy of the alias and stores the result;
	// like UpdateKey's, fn must not call the store. ErrLimitExceeded if fn
	// points the alias at a key that already has aliasesPerKey aliases.
	UpdateAlias(ctx context.Context, account, name string, aliasesPerKey int, fn func(*Alias) error) (Alias, error)
	// DeleteAlias removes an alias; ErrNotFound if there is none.
	DeleteAlias(ctx context.Context, account, name string) error
	// ListAliases returns up to limit aliases of account (naming keyID, if
	// set) with names greater than after, in name order, and whether more
	// follow.
	ListAliases(ctx context.Context, account, keyID, after string, limit int) ([]Alias, bool, error)

	// CreateGrant stores g on key g.KeyID, setting its Seq. If the key has a
	// grant with g's RetryKey (a Name and the same properties), nothing is
	// stored: that grant is returned with created false. ErrNotFound if the
	// key does not exist; ErrLimitExceeded if it already has grantsPerKey
	// grants. A grant write need not wait for writes of other keys' records.
	CreateGrant(ctx context.Context, g Grant, grantsPerKey int) (stored Grant, created bool, err error)
	// GetGrant returns one grant of a key, from memory; ErrNotFound if none.
	GetGrant(ctx context.Context, keyID, grantID string) (Grant, error)
	// DeleteGrant removes one grant of a key; ErrNotFound if there is no
	// such grant.
	DeleteGrant(ctx context.Context, keyID, grantID string) error
	// ListGrants returns up to limit grants of a key that f matches, with
	// Seq greater than after, in creation (Seq) order, and whether more
	// follow; from memory.
	ListGrants(ctx context.Context, keyID string, f GrantFilter, after uint64, limit int) ([]Grant, bool, error)
	// ListRetirableGrants returns up to limit grants whose retiring
	// principal is retiring, on keys of account, with Seq greater than
	// after, in creation order, and whether more follow; from memory, in
	// time proportional to the principal's grants, not to the store's.
	ListRetirableGrants(ctx context.Context, account, retiring string, after uint64, limit int) ([]Grant, bool, error)
	// GranteeGrants calls fn with each grant of a key whose grantee is
	// grantee, once, in no particular order, until fn returns false; from
	// memory, without copying the key's grants, and reflecting every grant
	// write that has returned (a shared store must invalidate what it holds
	// when another node writes). A write made during the walk may or may not
	// be seen. fn runs under the store's read lock: it must be quick, must
	// not keep the *Grant, and must not call the store.
	GranteeGrants(ctx context.Context, keyID, grantee string, fn func(*Grant) bool) error

	// Writable commits a write that changes no metadata (a readiness mark),
	// to show that the store can still commit: its disk takes writes and
	// it is not read-only. For /readyz, whose callers cache the answer.
	Writable(ctx context.Context) error
	// DeleteSetting removes a service setting that an earlier version kept
	// (the settings bucket holds nothing hsmkms writes now); ErrNotFound if
	// there is none.
	DeleteSetting(ctx context.Context, name string) error

	// AllKeys returns every record, of every account, in id order.
	AllKeys(ctx context.Context) ([]Key, error)

	// ReserveGCM records that version of key keyID may have made up to n
	// AES-GCM encryptions (random IVs drawn), and returns once that is on
	// disk. A count lower than the one recorded changes nothing: counts
	// only grow. It is bookkeeping, not a change of the key: the record and
	// its revision stay as they are. ErrNotFound if the key or the version
	// does not exist. The key's counts go with it when it is deleted.
	ReserveGCM(ctx context.Context, keyID string, version uint32, n uint64) error
	// GCMReservations returns the recorded count of every key version that
	// has one, from memory, in no particular order.
	GCMReservations(ctx context.Context) ([]GCMReservation, error)
	// Close flushes and closes the store.
	Close() error
}

// Leader is implemented by a store that several nodes share: it elects the
// one node that runs the scheduled work (deletions and rotations that are
// due), so two nodes never run it at once. A store that does not implement
// it has one node, which always leads.
type Leader interface {
	// LeadScheduledWork reports whether this node holds the lead now,
	// taking it if no live node holds it. A node that dies loses the lead
	// with its connection to the store, and another takes it at its next
	// pass. An error means the store could not say: the node does not
	// lead.
	LeadScheduledWork(ctx context.Context) (bool, error)
}
