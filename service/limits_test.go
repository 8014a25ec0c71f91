package service

import (
	"context"
	"fmt"
	"sync"
	"testing"
)

// withLimits is the fixture's service with other resource quotas.
func withLimits(t *testing.T, f *fixture, c *clock, l Limits) *Service {
	t.Helper()
	svc, err := New(Config{Token: f.token, Store: f.store, Region: "eu-west-1", Now: c.Now, Limits: l})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// concurrently runs n calls of fn at once and returns their errors.
func concurrently(n int, fn func(i int) error) []error {
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = fn(i)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

// tally counts the nil errors and checks that every other one is a
// LimitExceededException with the message want.
func tally(t *testing.T, errs []error, want string) int {
	t.Helper()
	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
			continue
		}
		if e := wantCode(t, err, ExcLimitExceeded); e.Message != want {
			t.Fatalf("message %q, want %q", e.Message, want)
		}
	}
	return ok
}

func tokenObjects(t *testing.T, f *fixture) int {
	t.Helper()
	objs, err := f.token.Objects(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return len(objs)
}

// TestKeysPerAccountQuota: concurrent CreateKeys cannot pass the quota
// together; keys pending deletion count, as in AWS; a refused CreateKey
// leaves no material in the token; another account has its own quota.
// (Not parallel: it counts every object in the shared token.)
func TestKeysPerAccountQuota(t *testing.T) {
	f := newFixture(t)
	c := &clock{now: fixedNow}
	svc := withLimits(t, f, c, Limits{KeysPerAccount: 3})
	ctx := context.Background()
	doomed, err := svc.CreateKey(ctx, alice, CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.ScheduleKeyDeletion(ctx, alice, ScheduleKeyDeletionInput{KeyId: doomed.KeyMetadata.KeyId, PendingWindowInDays: ptr[int32](7)}); err != nil {
		t.Fatal(err)
	}
	before := tokenObjects(t, f)
	errs := concurrently(12, func(int) error {
		_, err := svc.CreateKey(ctx, alice, CreateKeyInput{})
		return err
	})
	if ok := tally(t, errs, "Key quota for this account in this region is 3 but the current usage is 3."); ok != 2 {
		t.Fatalf("%d of 12 concurrent CreateKeys succeeded beside a key pending deletion, want 2 (quota 3)", ok)
	}
	if got := tokenObjects(t, f) - before; got != 2 {
		t.Fatalf("the token has %d new objects, want 2: refused CreateKeys left material behind", got)
	}
	bob := Caller{Account: "444455556666", ARN: "arn:aws:iam::444455556666:root"}
	if _, err := svc.CreateKey(ctx, bob, CreateKeyInput{}); err != nil {
		t.Fatalf("another account's CreateKey: %v", err)
	}
	// Once the key pending deletion is gone, its place is free.
	c.Add(8 * day)
	if n, err := svc.ReapDue(ctx); n != 1 || err != nil {
		t.Fatalf("ReapDue = %d, %v", n, err)
	}
	if _, err := svc.CreateKey(ctx, alice, CreateKeyInput{}); err != nil {
		t.Fatalf("CreateKey after a deletion freed a place: %v", err)
	}
	_, err = svc.CreateKey(ctx, alice, CreateKeyInput{})
	wantCode(t, err, ExcLimitExceeded)
}

// TestAliasesPerKeyQuota: AWS's default of 50 aliases per key holds against
// concurrent CreateAlias calls and against UpdateAlias moving an alias onto
// a full key.
func TestAliasesPerKeyQuota(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	full, other := f.key(t), f.key(t)
	errs := concurrently(60, func(i int) error {
		return f.svc.CreateAlias(ctx, alice, CreateAliasInput{AliasName: fmt.Sprintf("alias/q-%02d", i), TargetKeyId: full.KeyId})
	})
	want := "Aliases per key quota for this account in this region is 50, current usage is 50."
	if ok := tally(t, errs, want); ok != DefaultAliasesPerKey {
		t.Fatalf("%d of 60 concurrent CreateAliases on one key succeeded, want %d", ok, DefaultAliasesPerKey)
	}
	list, err := f.svc.ListAliases(ctx, alice, ListAliasesInput{KeyId: &full.KeyId, Limit: ptr[int32](100)})
	if err != nil || len(list.Aliases) != DefaultAliasesPerKey {
		t.Fatalf("aliases of the full key: %d, %v", len(list.Aliases), err)
	}
	if err := f.svc.CreateAlias(ctx, alice, CreateAliasInput{AliasName: "alias/mover", TargetKeyId: other.KeyId}); err != nil {
		t.Fatal(err)
	}
	err = f.svc.UpdateAlias(ctx, alice, CreateAliasInput{AliasName: "alias/mover", TargetKeyId: full.KeyId})
	if e := wantCode(t, err, ExcLimitExceeded); e.Message != want {
		t.Fatalf("UpdateAlias onto the full key: %q", e.Message)
	}
	if err := f.svc.DeleteAlias(ctx, alice, DeleteAliasInput{AliasName: list.Aliases[0].AliasName}); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.UpdateAlias(ctx, alice, CreateAliasInput{AliasName: "alias/mover", TargetKeyId: full.KeyId}); err != nil {
		t.Fatalf("UpdateAlias onto the key after a place was freed: %v", err)
	}
	// Moving the alias away frees its place on the key it left.
	err = f.svc.CreateAlias(ctx, alice, CreateAliasInput{AliasName: "alias/one-too-many", TargetKeyId: full.KeyId})
	wantCode(t, err, ExcLimitExceeded)
	if err := f.svc.UpdateAlias(ctx, alice, CreateAliasInput{AliasName: "alias/mover", TargetKeyId: other.KeyId}); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.CreateAlias(ctx, alice, CreateAliasInput{AliasName: "alias/one-too-many", TargetKeyId: full.KeyId}); err != nil {
		t.Fatalf("CreateAlias after an alias moved away: %v", err)
	}
}

// TestGrantsPerKeyQuota: the grant quota holds against concurrent
// CreateGrants, and a retry of an existing grant is no new grant.
func TestGrantsPerKeyQuota(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	svc := withLimits(t, f, &clock{now: fixedNow}, Limits{GrantsPerKey: 5})
	ctx := context.Background()
	md := f.key(t)
	grant := func(name, grantee string) (*CreateGrantOutput, error) {
		in := CreateGrantInput{KeyId: md.KeyId, GranteePrincipal: &grantee, Operations: []string{"Encrypt"}}
		if name != "" {
			in.Name = &name
		}
		return svc.CreateGrant(ctx, alice, in)
	}
	first, err := grant("named", "arn:aws:iam::111122223333:role/named")
	if err != nil {
		t.Fatal(err)
	}
	errs := concurrently(20, func(i int) error {
		_, err := grant("", fmt.Sprintf("arn:aws:iam::111122223333:role/r%d", i))
		return err
	})
	if ok := tally(t, errs, "Grants per key quota for this account in this region is 5, current usage is 5."); ok != 4 {
		t.Fatalf("%d of 20 concurrent CreateGrants succeeded beside one grant, want 4 (quota 5)", ok)
	}
	again, err := grant("named", "arn:aws:iam::111122223333:role/named")
	if err != nil || again.GrantId != first.GrantId {
		t.Fatalf("a retry of an existing grant at the quota = %+v, %v; want grant %s", again, err, first.GrantId)
	}
	l, err := svc.ListGrants(ctx, alice, ListGrantsInput{KeyId: md.KeyId, Limit: ptr[int32](100)})
	if err != nil || len(l.Grants) != 5 {
		t.Fatalf("ListGrants: %d grants, %v", len(l.Grants), err)
	}
}

func TestLimitsConfig(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for name, l := range map[string]Limits{
		"keys":    {KeysPerAccount: -1},
		"aliases": {AliasesPerKey: -5},
		"grants":  {GrantsPerKey: -1},
	} {
		if _, err := New(Config{Token: f.token, Store: f.store, Region: "eu-west-1", Limits: l}); err == nil {
			t.Errorf("%s: a negative limit was accepted", name)
		}
	}
	got, err := Limits{AliasesPerKey: 7}.resolve()
	if err != nil || got != (Limits{KeysPerAccount: DefaultKeysPerAccount, AliasesPerKey: 7, GrantsPerKey: DefaultGrantsPerKey}) {
		t.Fatalf("resolve = %+v, %v", got, err)
	}
}
