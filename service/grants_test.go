package service

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/hsmkms/hsmkms/service/store"
)

// A principal of alice's account with no identity policy: under the default
// key policy only grants let it in.
var (
	carol      = Caller{Account: "111122223333", ARN: "arn:aws:iam::111122223333:user/carol"}
	appSession = Caller{Account: "111122223333", ARN: "arn:aws:sts::111122223333:assumed-role/app/session-1"}
	appRole    = "arn:aws:iam::111122223333:role/app"
)

// TestGrantAuthorization: the grants that authorise a request are found by
// grantee (the caller, or the role of an assumed-role session) among many
// others, with their operations and constraints; CreateGrant by a grant
// cannot widen it; retiring and revoking take effect at once.
func TestGrantAuthorization(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	md := f.key(t)
	grant := func(in CreateGrantInput) string {
		t.Helper()
		in.KeyId = md.KeyId
		out, err := f.svc.CreateGrant(ctx, alice, in)
		if err != nil {
			t.Fatal(err)
		}
		return out.GrantId
	}
	// Noise: grants of other grantees, including every operation.
	for i := range 50 {
		grant(CreateGrantInput{GranteePrincipal: ptr(fmt.Sprintf("arn:aws:iam::111122223333:user/u%d", i)), Operations: allGrantOps[:6]})
	}
	encrypt := func(c Caller, ec map[string]string) error {
		_, err := f.svc.Encrypt(ctx, c, EncryptInput{KeyId: md.KeyId, Plaintext: []byte("x"), EncryptionContext: ec})
		return err
	}
	wantCode(t, encrypt(carol, nil), ExcAccessDenied)
	wantCode(t, encrypt(appSession, nil), ExcAccessDenied)

	carolGrant := grant(CreateGrantInput{GranteePrincipal: &carol.ARN, Operations: []string{"Encrypt", "CreateGrant"},
		Constraints: &GrantConstraints{EncryptionContextSubset: map[string]string{"Dept": "IT"}}})
	grant(CreateGrantInput{GranteePrincipal: &appRole, Operations: []string{"Encrypt"}})
	for name, tc := range map[string]struct {
		caller Caller
		ec     map[string]string
		want   string
	}{
		"grantee within the constraint":       {carol, map[string]string{"dept": "IT", "x": "y"}, ""},
		"grantee outside the constraint":      {carol, map[string]string{"Dept": "HR"}, ExcAccessDenied},
		"grantee without the context":         {carol, nil, ExcAccessDenied},
		"assumed-role session of the grantee": {appSession, nil, ""},
		"someone else":                        {Caller{Account: "111122223333", ARN: "arn:aws:iam::111122223333:user/dave"}, nil, ExcAccessDenied},
	} {
		err := encrypt(tc.caller, tc.ec)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
			continue
		}
		if e := (*Error)(nil); !errors.As(err, &e) || e.Code != tc.want {
			t.Errorf("%s: %v, want %s", name, err, tc.want)
		}
	}
	// Carol may pass on what her grant has, no more.
	_, err := f.svc.CreateGrant(ctx, carol, CreateGrantInput{KeyId: md.KeyId, GranteePrincipal: ptr("arn:aws:iam::111122223333:user/erin"),
		Operations: []string{"Encrypt"}, Constraints: &GrantConstraints{EncryptionContextSubset: map[string]string{"Dept": "IT"}}})
	if err != nil {
		t.Fatalf("CreateGrant through a grant: %v", err)
	}
	_, err = f.svc.CreateGrant(ctx, carol, CreateGrantInput{KeyId: md.KeyId, GranteePrincipal: ptr("arn:aws:iam::111122223333:user/erin"),
		Operations: []string{"Encrypt", "Decrypt"}, Constraints: &GrantConstraints{EncryptionContextSubset: map[string]string{"Dept": "IT"}}})
	wantCode(t, err, ExcAccessDenied)

	if err := f.svc.RevokeGrant(ctx, alice, RevokeGrantInput{KeyId: md.KeyId, GrantId: &carolGrant}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, encrypt(carol, map[string]string{"Dept": "IT"}), ExcAccessDenied)
	if err := f.svc.RevokeGrant(ctx, alice, RevokeGrantInput{KeyId: md.KeyId, GrantId: &carolGrant}); err == nil {
		t.Fatal("a revoked grant was revoked again")
	}
}

// TestGrantListingMarkers: ListGrants pages in creation order, and a marker
// stays valid when grants of the pages already seen are deleted: the next
// page starts after the last grant returned, not at a position.
func TestGrantListingMarkers(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	md := f.key(t)
	var ids []string
	for i := range 7 {
		out, err := f.svc.CreateGrant(ctx, alice, CreateGrantInput{KeyId: md.KeyId, RetiringPrincipal: ptr(appRole),
			GranteePrincipal: ptr(fmt.Sprintf("arn:aws:iam::111122223333:user/u%d", i%2)), Operations: []string{"Decrypt"}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, out.GrantId)
	}
	first, err := f.svc.ListGrants(ctx, alice, ListGrantsInput{KeyId: md.KeyId, Limit: ptr[int32](3)})
	if err != nil || len(first.Grants) != 3 || !first.Truncated || first.Grants[0].GrantId != ids[0] {
		t.Fatalf("first page = %+v, %v", first, err)
	}
	for _, g := range first.Grants[:2] {
		if err := f.svc.RevokeGrant(ctx, alice, RevokeGrantInput{KeyId: md.KeyId, GrantId: &g.GrantId}); err != nil {
			t.Fatal(err)
		}
	}
	var rest []string
	for marker := &first.NextMarker; marker != nil; {
		page, err := f.svc.ListGrants(ctx, alice, ListGrantsInput{KeyId: md.KeyId, Limit: ptr[int32](3), Marker: marker})
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range page.Grants {
			rest = append(rest, g.GrantId)
		}
		marker = nil
		if page.Truncated {
			marker = &page.NextMarker
		}
	}
	if fmt.Sprint(rest) != fmt.Sprint(ids[3:]) {
		t.Fatalf("after deleting two grants of the first page, the next pages hold %v, want %v", rest, ids[3:])
	}
	// By grantee, and by retiring principal, in the same order.
	byGrantee, err := f.svc.ListGrants(ctx, alice, ListGrantsInput{KeyId: md.KeyId, GranteePrincipal: ptr("arn:aws:iam::111122223333:user/u0")})
	if err != nil || len(byGrantee.Grants) != 3 || byGrantee.Grants[0].GrantId != ids[2] || byGrantee.Grants[2].GrantId != ids[6] {
		t.Fatalf("ListGrants by grantee = %+v, %v", byGrantee, err)
	}
	var retirable []string
	for marker := (*string)(nil); ; {
		page, err := f.svc.ListRetirableGrants(ctx, alice, ListRetirableGrantsInput{RetiringPrincipal: &appRole, Limit: ptr[int32](2), Marker: marker})
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range page.Grants {
			if g.KeyId != md.Arn {
				t.Fatalf("retirable grant's KeyId %s, want %s", g.KeyId, md.Arn)
			}
			retirable = append(retirable, g.GrantId)
		}
		if !page.Truncated {
			break
		}
		marker = &page.NextMarker
	}
	if fmt.Sprint(retirable) != fmt.Sprint(ids[2:]) {
		t.Fatalf("ListRetirableGrants = %v, want %v", retirable, ids[2:])
	}
	// Another key's marker is no marker here.
	other := f.key(t)
	_, err = f.svc.ListGrants(ctx, alice, ListGrantsInput{KeyId: other.KeyId, Marker: &first.NextMarker})
	wantCode(t, err, ExcInvalidMarker)
}

// TestGrantsGoWithTheirKey: when a key's deletion date passes, its grants
// are deleted with it.
func TestGrantsGoWithTheirKey(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c := &clock{now: fixedNow}
	svc := withClock(t, f, c, nil)
	ctx := context.Background()
	out, err := svc.CreateKey(ctx, alice, CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	id := out.KeyMetadata.KeyId
	g, err := svc.CreateGrant(ctx, alice, CreateGrantInput{KeyId: id, GranteePrincipal: &carol.ARN, RetiringPrincipal: &appRole, Operations: []string{"Decrypt"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.ScheduleKeyDeletion(ctx, alice, ScheduleKeyDeletionInput{KeyId: id, PendingWindowInDays: ptr[int32](7)}); err != nil {
		t.Fatal(err)
	}
	c.Add(7 * day)
	if n, err := svc.ReapDue(ctx); n != 1 || err != nil {
		t.Fatalf("ReapDue = %d, %v", n, err)
	}
	if _, err := f.store.GetGrant(ctx, id, g.GrantId); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the deleted key's grant: %v", err)
	}
	r, err := svc.ListRetirableGrants(ctx, alice, ListRetirableGrantsInput{RetiringPrincipal: &appRole})
	if err != nil || len(r.Grants) != 0 {
		t.Fatalf("ListRetirableGrants after the key's deletion = %+v, %v", r, err)
	}
	wantCode(t, svc.RetireGrant(ctx, appSession, RetireGrantInput{GrantToken: &g.GrantToken}), ExcNotFound)
}
