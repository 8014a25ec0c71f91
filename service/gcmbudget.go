package service

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/hsmkms/hsmkms/service/store"
)

// GCMInvocationLimit is how many AES-GCM encryptions one key version may
// make: its IVs are random 96-bit values (docs/ARCHITECTURE.md, decision 2),
// and NIST SP 800-38D (section 8.3) bounds the invocations of GCM with
// random IVs to 2^32 per key, to keep the chance of an IV repeating
// negligible.
const GCMInvocationLimit = 1 << 32

// DefaultGCMReserveBlock is how many encryptions of a key version are
// reserved in the store at a time (Config.GCMReserveBlock): one store write
// per million encryptions, and at most a million counted but never made per
// key version when the process stops — 1/4096 of the limit.
const DefaultGCMReserveBlock = 1 << 20

// gcmBudget counts the AES-GCM encryptions of every key version without a
// store write per encryption, and without ever counting fewer than were
// made, even across a crash: the count is reserved in the store in blocks,
// each written (and fsynced) before the first encryption it covers. A
// process that stops loses at most the unused rest of each block, which the
// next one counts as used — the safe direction. A block is reserved ahead,
// in the background, once half of the current one is used, so encryptions
// seldom wait for the store.
type gcmBudget struct {
	store    store.Store
	block    uint64
	log      *slog.Logger
	counters sync.Map // gcmVersion -> *gcmCounter
}

type gcmVersion struct {
	keyID   string
	version uint32
}

// gcmCounter counts one key version's encryptions.
type gcmCounter struct {
	b  *gcmBudget
	id gcmVersion
	// used counts the IVs drawn: the reservation found at start plus those
	// drawn since. reserved is the count on disk. take lets no encryption
	// run with used above reserved.
	used, reserved atomic.Uint64
	mu             sync.Mutex // one reservation at a time
}

// newGCMBudget loads the reservations in the store: each version starts
// with all it reserved counted as used.
func newGCMBudget(ctx context.Context, st store.Store, block uint64, log *slog.Logger) (*gcmBudget, error) {
	if block == 0 {
		block = DefaultGCMReserveBlock
	}
	b := &gcmBudget{store: st, block: block, log: log}
	rs, err := st.GCMReservations(ctx)
	if err != nil {
		return nil, err
	}
	for _, r := range rs {
		c := b.counter(r.KeyID, r.Version)
		c.used.Store(r.Reserved)
		c.reserved.Store(r.Reserved)
		if r.Reserved >= GCMInvocationLimit/2 {
			c.warn(r.Reserved)
		}
	}
	return b, nil
}

// counter returns the counter of one key version, made at first use.
func (b *gcmBudget) counter(keyID string, version uint32) *gcmCounter {
	id := gcmVersion{keyID, version}
	if c, ok := b.counters.Load(id); ok {
		return c.(*gcmCounter)
	}
	c, _ := b.counters.LoadOrStore(id, &gcmCounter{b: b, id: id})
	return c.(*gcmCounter)
}

// forget drops the counters of a deleted key (the store dropped its
// reservations with its record).
func (b *gcmBudget) forget(keyID string) {
	b.counters.Range(func(id, _ any) bool {
		if id.(gcmVersion).keyID == keyID {
			b.counters.Delete(id)
		}
		return true
	})
}

// used returns the encryptions counted for a key version (0 if none).
func (b *gcmBudget) used(keyID string, version uint32) uint64 {
	if c, ok := b.counters.Load(gcmVersion{keyID, version}); ok {
		return c.(*gcmCounter).used.Load()
	}
	return 0
}

// take counts one encryption, before its IV is drawn, and returns once the
// count is covered by a reservation on disk. On the hot path it is an
// atomic add and a load.
func (c *gcmCounter) take() error {
	n := c.used.Add(1)
	if r := c.reserved.Load(); n > r {
		if err := c.reserve(n); err != nil {
			return err
		}
	} else if r-n == c.b.block/2 && c.b.block >= 2 {
		go c.reserveAhead(r + 1)
	}
	if n == GCMInvocationLimit/2 || n == GCMInvocationLimit {
		c.warn(n)
	}
	return nil
}

// reserve raises the reservation on disk to cover n encryptions, by whole
// blocks.
func (c *gcmCounter) reserve(n uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.reserved.Load()
	if n <= r {
		return nil // another caller reserved meanwhile
	}
	next := r + c.b.block
	for next < n {
		next += c.b.block
	}
	// The store ignores the context's values; the write is one fsync, and
	// must not be cut short by a caller that gives up on its request.
	if err := c.b.store.ReserveGCM(context.Background(), c.id.keyID, c.id.version, next); err != nil {
		return internal(fmt.Errorf("reserve AES-GCM encryptions of key %s version %d: %w", c.id.keyID, c.id.version, err))
	}
	c.reserved.Store(next)
	return nil
}

// reserveAhead reserves the next block before it is needed. A failure is
// only logged: the encryption that needs the block will try again, and fail
// if the store still cannot take it.
func (c *gcmCounter) reserveAhead(n uint64) {
	if err := c.reserve(n); err != nil {
		c.b.log.Warn("AES-GCM encryption count: reserving the next block failed; encryptions under the key version will wait for the store",
			"key_id", c.id.keyID, "version", c.id.version, "err", err)
	}
}

// warn says, once per key version and process, that half of the key
// version's GCM limit is used, or all of it.
func (c *gcmCounter) warn(n uint64) {
	args := []any{"key_id", c.id.keyID, "version", c.id.version, "encryptions", n,
		"limit", uint64(GCMInvocationLimit), "used_ratio", float64(n) / GCMInvocationLimit}
	if n >= GCMInvocationLimit {
		c.b.log.Error("AES-GCM limit of a key version reached (NIST SP 800-38D: 2^32 encryptions with random IVs per key): rotate the key now", args...)
		return
	}
	c.b.log.Warn("half the AES-GCM limit of a key version is used (NIST SP 800-38D: 2^32 encryptions with random IVs per key): rotate the key", args...)
}

// KeyClass groups keys for Stats: by key state and key spec.
type KeyClass struct {
	State, Spec string
}

// Stats is a snapshot of what the service holds, for metrics.
type Stats struct {
	// Keys counts the keys of every account by state and key spec.
	Keys map[KeyClass]int
	// GCMBudgetUsed is the highest fraction of GCMInvocationLimit used by
	// the current version of a symmetric key (the version new encryptions
	// use; an old version makes no more, and rotating a key starts its new
	// version at 0). A count is never below the encryptions made.
	GCMBudgetUsed float64
}

// Stats returns the key counts and the AES-GCM budget used, from memory.
func (s *Service) Stats(ctx context.Context) (Stats, error) {
	recs, err := s.store.AllKeys(ctx)
	if err != nil {
		return Stats{}, err
	}
	st := Stats{Keys: make(map[KeyClass]int)}
	var most uint64
	for i := range recs {
		r := &recs[i]
		st.Keys[KeyClass{State: r.State, Spec: r.KeySpec}]++
		if ks := keySpecs[r.KeySpec]; (ks == nil || ks.kind == kindAES) && len(r.Versions) > 0 { // as key.spec reads it
			most = max(most, s.gcm.used(r.ID, r.Current().Number))
		}
	}
	st.GCMBudgetUsed = float64(most) / GCMInvocationLimit
	return st, nil
}
