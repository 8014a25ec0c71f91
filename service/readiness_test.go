package service

import (
	"context"
	"slices"
	"testing"

	"github.com/hsmkms/hsmkms/hsm"
)

// The readiness check keeps a canary key in the token; it has no key record,
// and reconciliation must not report it as an orphan.
func TestReadinessCanaryIsNoOrphan(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	if err := f.svc.Ready(ctx); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	objs, err := f.token.Objects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(objs, func(o hsm.ObjectInfo) bool { return o.Ref == readinessRef }) {
		t.Fatal("Ready left no canary object in the token")
	}
	rep, err := f.svc.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(rep.Orphans, readinessRef.Label()) {
		t.Fatalf("reconciliation reports the readiness canary as an orphan: %v", rep.Orphans)
	}
}
