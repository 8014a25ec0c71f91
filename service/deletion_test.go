package service

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsmkms/hsmkms/blob"
	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/service/store"
)

// clock is a settable clock for tests.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func withClock(t *testing.T, f *fixture, c *clock, hook func(string, string)) *Service {
	t.Helper()
	svc, err := New(Config{Token: f.token, Store: f.store, Region: "eu-west-1", Now: c.Now, TestHook: hook})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func tokenHas(t *testing.T, tk *hsm.Token, keyID string) bool {
	t.Helper()
	raw, _ := blob.ParseKeyID(keyID)
	objs, err := tk.Objects(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.Ref.KeyID == raw {
			return true
		}
	}
	return false
}

func TestScheduleCancelAndReap(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c := &clock{now: fixedNow}
	svc := withClock(t, f, c, nil)
	ctx := context.Background()
	md, err := svc.CreateKey(ctx, alice, CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	id := md.KeyMetadata.KeyId
	if err := svc.CreateAlias(ctx, alice, CreateAliasInput{AliasName: "alias/doomed", TargetKeyId: id}); err != nil {
		t.Fatal(err)
	}
	enc, err := svc.Encrypt(ctx, alice, EncryptInput{KeyId: "alias/doomed", Plaintext: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}

	_, err = svc.ScheduleKeyDeletion(ctx, alice, ScheduleKeyDeletionInput{KeyId: id, PendingWindowInDays: ptr[int32](6)})
	wantCode(t, err, ExcValidation)
	out, err := svc.ScheduleKeyDeletion(ctx, alice, ScheduleKeyDeletionInput{KeyId: id, PendingWindowInDays: ptr[int32](7)})
	if err != nil {
		t.Fatal(err)
	}
	if want := fixedNow.Add(7 * 24 * time.Hour); !out.DeletionDate.Equal(want) || out.KeyState != StatePendingDeletion || out.PendingWindowInDays != 7 {
		t.Fatalf("ScheduleKeyDeletion = %+v", out)
	}
	_, err = svc.ScheduleKeyDeletion(ctx, alice, ScheduleKeyDeletionInput{KeyId: id})
	wantCode(t, err, ExcInvalidState)
	_, err = svc.Decrypt(ctx, alice, DecryptInput{CiphertextBlob: enc.CiphertextBlob})
	if e := wantCode(t, err, ExcInvalidState); e.Message != md.KeyMetadata.Arn+" is pending deletion." {
		t.Fatalf("message %q", e.Message)
	}
	d, _ := svc.DescribeKey(ctx, alice, DescribeKeyInput{KeyId: id})
	if d.KeyMetadata.KeyState != StatePendingDeletion || d.KeyMetadata.DeletionDate == nil || d.KeyMetadata.Enabled {
		t.Fatalf("DescribeKey while pending: %+v", d.KeyMetadata)
	}

	// Cancel: back to Disabled, usable after EnableKey.
	if _, err := svc.CancelKeyDeletion(ctx, alice, KeyIdInput{KeyId: id}); err != nil {
		t.Fatal(err)
	}
	_, err = svc.CancelKeyDeletion(ctx, alice, KeyIdInput{KeyId: id})
	wantCode(t, err, ExcInvalidState)
	d, _ = svc.DescribeKey(ctx, alice, DescribeKeyInput{KeyId: id})
	if d.KeyMetadata.KeyState != StateDisabled || d.KeyMetadata.DeletionDate != nil {
		t.Fatalf("after cancel: %+v", d.KeyMetadata)
	}

	// Schedule again; one millisecond before the date nothing happens.
	if _, err := svc.ScheduleKeyDeletion(ctx, alice, ScheduleKeyDeletionInput{KeyId: id, PendingWindowInDays: ptr[int32](7)}); err != nil {
		t.Fatal(err)
	}
	c.Add(7*24*time.Hour - time.Millisecond)
	if n, err := svc.ReapDue(ctx); err != nil || n != 0 {
		t.Fatalf("ReapDue before the date = %d, %v", n, err)
	}
	c.Add(time.Millisecond)
	if n, err := svc.ReapDue(ctx); err != nil || n != 1 {
		t.Fatalf("ReapDue at the date = %d, %v", n, err)
	}
	_, err = svc.DescribeKey(ctx, alice, DescribeKeyInput{KeyId: id})
	wantCode(t, err, ExcNotFound)
	_, err = svc.Encrypt(ctx, alice, EncryptInput{KeyId: "alias/doomed", Plaintext: []byte("x")})
	wantCode(t, err, ExcNotFound)
	if tokenHas(t, f.token, id) {
		t.Fatal("token objects of a deleted key remain")
	}
	_, err = svc.Decrypt(ctx, alice, DecryptInput{CiphertextBlob: enc.CiphertextBlob})
	wantCode(t, err, ExcInvalidCiphertext)
}

// A crash at any phase of a deletion leaves a record that says what is
// happening, and the next pass (as at the next start) finishes the job:
// no record without material that is not marked, no material without a
// record.
func TestDeletionCrashPhases(t *testing.T) {
	t.Parallel()
	for _, phase := range []string{PhaseMarked, PhaseDestroyed} {
		t.Run(phase, func(t *testing.T) {
			f := newFixture(t)
			c := &clock{now: fixedNow}
			ctx := context.Background()
			crash := errors.New("crash")
			crashing := withClock(t, f, c, func(p, _ string) {
				if p == phase {
					panic(crash)
				}
			})
			md, err := crashing.CreateKey(ctx, alice, CreateKeyInput{})
			if err != nil {
				t.Fatal(err)
			}
			id := md.KeyMetadata.KeyId
			if _, err := crashing.ScheduleKeyDeletion(ctx, alice, ScheduleKeyDeletionInput{KeyId: id, PendingWindowInDays: ptr[int32](7)}); err != nil {
				t.Fatal(err)
			}
			c.Add(8 * 24 * time.Hour)
			func() {
				defer func() {
					if r := recover(); r != crash {
						t.Fatalf("deletion did not reach phase %s (recovered %v)", phase, r)
					}
				}()
				crashing.ReapDue(ctx)
			}()
			rec, err := f.store.GetKey(ctx, id)
			if err != nil || !rec.Destroying || rec.State != StatePendingDeletion {
				t.Fatalf("record after a crash at %s: %+v, %v", phase, rec, err)
			}
			if phase == PhaseDestroyed && tokenHas(t, f.token, id) {
				t.Fatal("objects remain after the destroyed phase")
			}
			// "Restart": a fresh service over the same store and token.
			restarted := withClock(t, f, c, nil)
			rep, err := restarted.Reconcile(ctx)
			if err != nil || len(rep.Missing) != 0 {
				t.Fatalf("a key being destroyed is reported missing: %+v, %v", rep, err)
			}
			if _, err := restarted.CancelKeyDeletion(ctx, alice, KeyIdInput{KeyId: id}); err == nil {
				t.Fatal("a deletion already under way was cancelled")
			}
			if n, err := restarted.ReapDue(ctx); err != nil || n != 1 {
				t.Fatalf("ReapDue after the crash = %d, %v", n, err)
			}
			if _, err := f.store.GetKey(ctx, id); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("record remains: %v", err)
			}
			if tokenHas(t, f.token, id) {
				t.Fatal("objects remain")
			}
		})
	}
}

func TestAliasesResolveAndRefuse(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	a, b := f.key(t), f.key(t)
	if err := f.svc.CreateAlias(ctx, alice, CreateAliasInput{AliasName: "alias/app", TargetKeyId: a.Arn}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"alias/app", "arn:aws:kms:eu-west-1:111122223333:alias/app"} {
		out, err := f.svc.Encrypt(ctx, alice, EncryptInput{KeyId: id, Plaintext: []byte("x")})
		if err != nil || out.KeyId != a.Arn {
			t.Fatalf("Encrypt by %s = %+v, %v", id, out, err)
		}
	}
	if err := f.svc.UpdateAlias(ctx, alice, CreateAliasInput{AliasName: "alias/app", TargetKeyId: b.KeyId}); err != nil {
		t.Fatal(err)
	}
	out, err := f.svc.Encrypt(ctx, alice, EncryptInput{KeyId: "alias/app", Plaintext: []byte("x")})
	if err != nil || out.KeyId != b.Arn {
		t.Fatalf("Encrypt after UpdateAlias = %+v, %v", out, err)
	}
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"duplicate", f.svc.CreateAlias(ctx, alice, CreateAliasInput{AliasName: "alias/app", TargetKeyId: a.KeyId}), ExcAlreadyExists},
		{"no prefix", f.svc.CreateAlias(ctx, alice, CreateAliasInput{AliasName: "app2", TargetKeyId: a.KeyId}), ExcValidation},
		{"reserved", f.svc.CreateAlias(ctx, alice, CreateAliasInput{AliasName: "alias/aws/s3", TargetKeyId: a.KeyId}), ExcInvalidAliasName},
		{"bad character", f.svc.CreateAlias(ctx, alice, CreateAliasInput{AliasName: "alias/a.b", TargetKeyId: a.KeyId}), ExcValidation},
		{"target by alias", f.svc.CreateAlias(ctx, alice, CreateAliasInput{AliasName: "alias/x", TargetKeyId: "alias/app"}), ExcNotFound},
		{"management op by alias", f.svc.DisableKey(ctx, alice, KeyIdInput{KeyId: "alias/app"}), ExcNotFound},
		{"unknown alias", f.svc.DeleteAlias(ctx, alice, DeleteAliasInput{AliasName: "alias/nope"}), ExcNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { wantCode(t, tc.err, tc.want) })
	}
}

// Pagination is stable under concurrent inserts: every key that existed when
// a listing started is listed exactly once, whatever is created between pages.
func TestListKeysStableUnderInserts(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	before := map[string]bool{}
	for i := 0; i < 9; i++ {
		before[f.key(t).KeyId] = true
	}
	seen := map[string]int{}
	var marker *string
	for pages := 0; ; pages++ {
		if pages > 20 {
			t.Fatal("pagination does not end")
		}
		out, err := f.svc.ListKeys(ctx, alice, ListKeysInput{Limit: ptr[int32](2), Marker: marker})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range out.Keys {
			seen[k.KeyId]++
		}
		f.key(t) // a new key between pages, anywhere in id order
		if !out.Truncated {
			break
		}
		marker = &out.NextMarker
	}
	for id := range before {
		if seen[id] != 1 {
			t.Errorf("key %s listed %d times", id, seen[id])
		}
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("key %s listed %d times", id, n)
		}
	}
}

// electedStore is the real bbolt store with a lead that the test hands out:
// the election itself is the shared store's (store.Leader), tested with it.
type electedStore struct {
	*store.Bolt
	lead atomic.Bool
	err  error
}

func (s *electedStore) LeadScheduledWork(context.Context) (bool, error) { return s.lead.Load(), s.err }

// TestScheduledWorkOnlyOnTheLeader: with a store that several nodes share,
// a node that does not hold the lead, or cannot tell, leaves due deletions
// and rotations to the leader; once it leads, it does them.
func TestScheduledWorkOnlyOnTheLeader(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	es := &electedStore{Bolt: f.store}
	c := &clock{now: fixedNow}
	svc, err := New(Config{Token: f.token, Store: es, Region: "eu-west-1", Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	doomed, err := svc.CreateKey(ctx, alice, CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	id := doomed.KeyMetadata.KeyId
	if _, err := svc.ScheduleKeyDeletion(ctx, alice, ScheduleKeyDeletionInput{KeyId: id, PendingWindowInDays: ptr(int32(7))}); err != nil {
		t.Fatal(err)
	}
	c.Add(8 * day)
	log := slog.New(slog.DiscardHandler)
	for _, follower := range []struct {
		name string
		err  error
	}{{"another node leads", nil}, {"the store cannot say", errors.New("connection refused")}} {
		es.err = follower.err
		svc.RunScheduledWork(ctx, log)
		if _, err := f.store.GetKey(ctx, id); err != nil {
			t.Fatalf("%s: the due key was deleted by a node without the lead: %v", follower.name, err)
		}
	}
	es.err = nil
	es.lead.Store(true)
	svc.RunScheduledWork(ctx, log)
	if _, err := f.store.GetKey(ctx, id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the leader left the due key: %v", err)
	}
}
