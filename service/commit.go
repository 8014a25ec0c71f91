package service

import (
	"context"
	"fmt"

	"github.com/hsmkms/hsmkms/audit"
	"github.com/hsmkms/hsmkms/service/store"
)

// CommitGate is called once a request's operation has decided to change
// something, before the change becomes durable: after validation and
// authorization, right before its first write to the store. resources are
// the ARNs of the keys the change touches. If the gate returns an error the
// operation changes nothing and fails with KMSInternalException.
//
// service/api uses it to record the change's intent in the audit log before
// the change commits, so that no change is ever visible without its record.
// The background work (deletions and rotations that fall due) uses it the
// same way for its service events.
type CommitGate func(ctx context.Context, resources []string) error

type commitGateKey struct{}

// WithCommitGate returns a context whose store writes pass through g first.
// g is called at most once per context: the first write of a request opens
// the gate for the rest of it.
func WithCommitGate(ctx context.Context, g CommitGate) context.Context {
	return context.WithValue(ctx, commitGateKey{}, &gateState{gate: g})
}

type gateState struct {
	gate   CommitGate
	passed bool
}

// passGate runs ctx's commit gate, if it has one that has not been passed.
func passGate(ctx context.Context, resources ...string) error {
	g, _ := ctx.Value(commitGateKey{}).(*gateState)
	if g == nil || g.passed {
		return nil
	}
	if err := g.gate(ctx, resources); err != nil {
		return internal(fmt.Errorf("change refused before commit: %w", err))
	}
	g.passed = true
	return nil
}

// gatedStore is the store as the operations see it: every method that writes
// passes the request's commit gate first. It implements every method
// explicitly (nothing is embedded), so a write method added to store.Store
// does not compile until it is gated here.
type gatedStore struct {
	inner store.Store
	arn   func(account, id string) string
}

var _ store.Store = gatedStore{}

func (g gatedStore) keyARN(ctx context.Context, id string) string {
	if k, err := g.inner.GetKey(ctx, id); err == nil {
		return g.arn(k.Account, k.ID)
	}
	return ""
}

// CreateKey implements store.Store.
func (g gatedStore) CreateKey(ctx context.Context, k store.Key, keysPerAccount int) error {
	if err := passGate(ctx, g.arn(k.Account, k.ID)); err != nil {
		return err
	}
	return g.inner.CreateKey(ctx, k, keysPerAccount)
}

// GetKey implements store.Store.
func (g gatedStore) GetKey(ctx context.Context, id string) (store.Key, error) {
	return g.inner.GetKey(ctx, id)
}

// UpdateKey implements store.Store.
func (g gatedStore) UpdateKey(ctx context.Context, id string, fn func(*store.Key) error) (store.Key, error) {
	if err := passGate(ctx, g.keyARN(ctx, id)); err != nil {
		return store.Key{}, err
	}
	return g.inner.UpdateKey(ctx, id, fn)
}

// ListKeys implements store.Store.
func (g gatedStore) ListKeys(ctx context.Context, account, after string, limit int) ([]store.Key, bool, error) {
	return g.inner.ListKeys(ctx, account, after, limit)
}

// DeleteKey implements store.Store.
func (g gatedStore) DeleteKey(ctx context.Context, id string) error {
	if err := passGate(ctx, g.keyARN(ctx, id)); err != nil {
		return err
	}
	return g.inner.DeleteKey(ctx, id)
}

// CreateAlias implements store.Store.
func (g gatedStore) CreateAlias(ctx context.Context, a store.Alias, aliasesPerKey int) error {
	if err := passGate(ctx, g.arn(a.Account, a.TargetKeyID)); err != nil {
		return err
	}
	return g.inner.CreateAlias(ctx, a, aliasesPerKey)
}

// GetAlias implements store.Store.
func (g gatedStore) GetAlias(ctx context.Context, account, name string) (store.Alias, error) {
	return g.inner.GetAlias(ctx, account, name)
}

// aliasTarget is the ARN of the key an alias names now, for the gate.
func (g gatedStore) aliasTarget(ctx context.Context, account, name string) string {
	if a, err := g.inner.GetAlias(ctx, account, name); err == nil {
		return g.arn(a.Account, a.TargetKeyID)
	}
	return ""
}

// UpdateAlias implements store.Store.
func (g gatedStore) UpdateAlias(ctx context.Context, account, name string, aliasesPerKey int, fn func(*store.Alias) error) (store.Alias, error) {
	if err := passGate(ctx, g.aliasTarget(ctx, account, name)); err != nil {
		return store.Alias{}, err
	}
	return g.inner.UpdateAlias(ctx, account, name, aliasesPerKey, fn)
}

// DeleteAlias implements store.Store.
func (g gatedStore) DeleteAlias(ctx context.Context, account, name string) error {
	if err := passGate(ctx, g.aliasTarget(ctx, account, name)); err != nil {
		return err
	}
	return g.inner.DeleteAlias(ctx, account, name)
}

// ListAliases implements store.Store.
func (g gatedStore) ListAliases(ctx context.Context, account, keyID, after string, limit int) ([]store.Alias, bool, error) {
	return g.inner.ListAliases(ctx, account, keyID, after, limit)
}

// CreateGrant implements store.Store.
func (g gatedStore) CreateGrant(ctx context.Context, gr store.Grant, grantsPerKey int) (store.Grant, bool, error) {
	if err := passGate(ctx, g.keyARN(ctx, gr.KeyID)); err != nil {
		return store.Grant{}, false, err
	}
	return g.inner.CreateGrant(ctx, gr, grantsPerKey)
}

// GetGrant implements store.Store.
func (g gatedStore) GetGrant(ctx context.Context, keyID, grantID string) (store.Grant, error) {
	return g.inner.GetGrant(ctx, keyID, grantID)
}

// DeleteGrant implements store.Store.
func (g gatedStore) DeleteGrant(ctx context.Context, keyID, grantID string) error {
	if err := passGate(ctx, g.keyARN(ctx, keyID)); err != nil {
		return err
	}
	return g.inner.DeleteGrant(ctx, keyID, grantID)
}

// ListGrants implements store.Store.
func (g gatedStore) ListGrants(ctx context.Context, keyID string, f store.GrantFilter, after uint64, limit int) ([]store.Grant, bool, error) {
	return g.inner.ListGrants(ctx, keyID, f, after, limit)
}

// ListRetirableGrants implements store.Store.
func (g gatedStore) ListRetirableGrants(ctx context.Context, account, retiring string, after uint64, limit int) ([]store.Grant, bool, error) {
	return g.inner.ListRetirableGrants(ctx, account, retiring, after, limit)
}

// GranteeGrants implements store.Store.
func (g gatedStore) GranteeGrants(ctx context.Context, keyID, grantee string, fn func(*store.Grant) bool) error {
	return g.inner.GranteeGrants(ctx, keyID, grantee, fn)
}

// Writable implements store.Store. Not gated: it changes no metadata, and
// readiness checks must not fill the audit log.
func (g gatedStore) Writable(ctx context.Context) error { return g.inner.Writable(ctx) }

// DeleteSetting implements store.Store.
func (g gatedStore) DeleteSetting(ctx context.Context, name string) error {
	if err := passGate(ctx); err != nil {
		return err
	}
	return g.inner.DeleteSetting(ctx, name)
}

// AllKeys implements store.Store.
func (g gatedStore) AllKeys(ctx context.Context) ([]store.Key, error) { return g.inner.AllKeys(ctx) }

// ReserveGCM implements store.Store. It passes no gate, on purpose: a
// reservation of encryption counts (gcmbudget.go) is bookkeeping of the
// request path, not a change of any key, and has no audit record; an
// Encrypt must never write an intent record.
func (g gatedStore) ReserveGCM(ctx context.Context, keyID string, version uint32, n uint64) error {
	return g.inner.ReserveGCM(ctx, keyID, version, n)
}

// GCMReservations implements store.Store.
func (g gatedStore) GCMReservations(ctx context.Context) ([]store.GCMReservation, error) {
	return g.inner.GCMReservations(ctx)
}

// Close implements store.Store.
func (g gatedStore) Close() error { return g.inner.Close() }

// ServiceEventRecorder records what the service does on its own (audit.Writer).
type ServiceEventRecorder interface {
	WriteDurable(*audit.Event) error
}

// RecordServiceEvents makes the background work record each change it makes
// — a key deleted when its waiting period ended (DeleteKey), a key rotated on
// schedule (RotateKey) — as a CloudTrail service event, durably, before the
// change commits. Call it before RunScheduledWork; nil records nothing.
func (s *Service) RecordServiceEvents(r ServiceEventRecorder) { s.events = r }

// serviceEventGate returns ctx with a commit gate that records the service
// event name for key r, when a recorder is set.
func (s *Service) serviceEventGate(ctx context.Context, name string, r *store.Key) context.Context {
	if s.events == nil {
		return ctx
	}
	arn := s.keyARN(r.Account, r.ID)
	return WithCommitGate(ctx, func(context.Context, []string) error {
		return s.events.WriteDurable(&audit.Event{
			EventName: name, EventType: audit.EventTypeService, AWSRegion: s.region, ReadOnly: false,
			UserIdentity:    audit.UserIdentity{Type: audit.IdentityService, AccountID: r.Account, InvokedBy: audit.EventSource},
			SourceIPAddress: audit.EventSource, UserAgent: audit.EventSource, RecipientAccountID: r.Account,
			Resources: []audit.Resource{{ARN: arn, AccountID: r.Account, Type: audit.ResourceTypeKey}},
		})
	})
}
