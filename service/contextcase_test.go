package service

import (
	"context"
	"testing"

	"github.com/hsmkms/hsmkms/service/policy"
)

// An encryption context may hold keys that differ only in case ("tenant",
// "TENANT"). Grant constraint keys and condition key names are not
// case-sensitive, so such a context gives one constrained key two values.
// These tests run every decision many times: reading the context through a
// Go map once made them depend on map order.
const caseRuns = 40

func mustIdentity(t *testing.T, doc string) []*policy.Policy {
	t.Helper()
	p, err := policy.Parse([]byte(doc), policy.IdentityPolicy)
	if err != nil {
		t.Fatal(err)
	}
	return []*policy.Policy{p}
}

// allowedTimes runs op caseRuns times and counts the calls not refused with
// AccessDeniedException; any other error fails the test.
func allowedTimes(t *testing.T, op func() error) int {
	t.Helper()
	n := 0
	for range caseRuns {
		err := op()
		if err == nil {
			n++
			continue
		}
		wantCode(t, err, ExcAccessDenied)
	}
	return n
}

func TestGrantEqualsConstraintWithCaseVariantKeys(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	md := f.key(t)
	grantee := Caller{Account: "444455556666", ARN: "arn:aws:iam::444455556666:user/bob"}
	_, err := f.svc.CreateGrant(ctx, alice, CreateGrantInput{KeyId: md.KeyId, GranteePrincipal: ptr(grantee.ARN),
		Operations:  []string{"Encrypt", "Decrypt"},
		Constraints: &GrantConstraints{EncryptionContextEquals: map[string]string{"tenant": "A"}}})
	if err != nil {
		t.Fatal(err)
	}
	encrypt := func(ec map[string]string) func() error {
		return func() error {
			_, err := f.svc.Encrypt(ctx, grantee, EncryptInput{KeyId: md.Arn, Plaintext: []byte("x"), EncryptionContext: ec})
			return err
		}
	}
	for _, c := range []struct {
		name string
		ec   map[string]string
		want int
	}{
		{"exact", map[string]string{"tenant": "A"}, caseRuns},
		{"key in another case", map[string]string{"TENANT": "A"}, caseRuns},
		{"value in another case", map[string]string{"tenant": "a"}, 0},
		{"two case variants", map[string]string{"tenant": "A", "TENANT": "B"}, 0},
		{"two case variants, same value", map[string]string{"tenant": "A", "Tenant": "A"}, 0},
		{"extra key", map[string]string{"tenant": "A", "other": "B"}, 0},
	} {
		if got := allowedTimes(t, encrypt(c.ec)); got != c.want {
			t.Errorf("%s: Encrypt with %v allowed %d of %d times, want %d", c.name, c.ec, got, caseRuns, c.want)
		}
	}

	// Data the key's owner bound to a context with a second, case-variant
	// tenant never decrypts for the grantee.
	enc, err := f.svc.Encrypt(ctx, alice, EncryptInput{KeyId: md.KeyId, Plaintext: []byte("payroll"),
		EncryptionContext: map[string]string{"tenant": "A", "TENANT": "admin"}})
	if err != nil {
		t.Fatal(err)
	}
	got := allowedTimes(t, func() error {
		_, err := f.svc.Decrypt(ctx, grantee, DecryptInput{CiphertextBlob: enc.CiphertextBlob,
			EncryptionContext: map[string]string{"tenant": "A", "TENANT": "admin"}})
		return err
	})
	if got != 0 {
		t.Errorf("the grantee decrypted data bound to tenant=A, TENANT=admin %d of %d times", got, caseRuns)
	}
}

func TestGrantSubsetConstraintWithCaseVariantKeys(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	md := f.key(t)
	grantee := Caller{Account: "444455556666", ARN: "arn:aws:iam::444455556666:user/bob"}
	if _, err := f.svc.CreateGrant(ctx, alice, CreateGrantInput{KeyId: md.KeyId, GranteePrincipal: ptr(grantee.ARN),
		Operations:  []string{"Encrypt"},
		Constraints: &GrantConstraints{EncryptionContextSubset: map[string]string{"tenant": "A"}}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		ec   map[string]string
		want int
	}{
		{map[string]string{"tenant": "A", "other": "B"}, caseRuns},
		{map[string]string{"Tenant": "A"}, caseRuns},
		{map[string]string{"tenant": "A", "TENANT": "B"}, 0},
		{map[string]string{"tenant": "B", "TENANT": "A"}, 0},
	} {
		got := allowedTimes(t, func() error {
			_, err := f.svc.Encrypt(ctx, grantee, EncryptInput{KeyId: md.Arn, Plaintext: []byte("x"), EncryptionContext: c.ec})
			return err
		})
		if got != c.want {
			t.Errorf("Encrypt with %v allowed %d of %d times, want %d", c.ec, got, caseRuns, c.want)
		}
	}
}

func TestGrantConstraintKeysMustDifferInMoreThanCase(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	md := f.key(t)
	_, err := f.svc.CreateGrant(context.Background(), alice, CreateGrantInput{KeyId: md.KeyId,
		GranteePrincipal: ptr("arn:aws:iam::444455556666:user/bob"), Operations: []string{"Encrypt"},
		Constraints: &GrantConstraints{EncryptionContextEquals: map[string]string{"tenant": "A", "TENANT": "B"}}})
	wantCode(t, err, ExcValidation)
}

func TestPolicyConditionOnCaseVariantContextKeys(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	md := f.key(t)
	user := Caller{Account: alice.Account, ARN: "arn:aws:iam::111122223333:user/carol"}
	// The key's owner may do anything; carol may encrypt only for tenant A;
	// and nobody may encrypt for a tenant other than A or B.
	doc := `{"Version":"2012-10-17","Statement":[
	 {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"},
	 {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/carol"},"Action":"kms:Encrypt","Resource":"*",
	  "Condition":{"StringEquals":{"kms:EncryptionContext:tenant":"A"}}},
	 {"Effect":"Deny","Principal":"*","Action":"kms:Encrypt","Resource":"*",
	  "Condition":{"StringNotEquals":{"kms:EncryptionContext:tenant":["A","B"]}}}]}`
	if err := f.svc.PutKeyPolicy(ctx, alice, PutKeyPolicyInput{KeyId: md.KeyId, Policy: &doc}); err != nil {
		t.Fatal(err)
	}
	encrypt := func(c Caller, ec map[string]string) func() error {
		return func() error {
			_, err := f.svc.Encrypt(ctx, c, EncryptInput{KeyId: md.KeyId, Plaintext: []byte("x"), EncryptionContext: ec})
			return err
		}
	}
	for _, c := range []struct {
		name   string
		caller Caller
		ec     map[string]string
		want   int
	}{
		{"allow: exact", user, map[string]string{"tenant": "A"}, caseRuns},
		{"allow: key in another case", user, map[string]string{"TENANT": "A"}, caseRuns},
		{"allow: a second variant with another value", user, map[string]string{"tenant": "A", "TENANT": "B"}, 0},
		{"allow: a second variant with the same value", user, map[string]string{"tenant": "A", "TENANT": "A"}, caseRuns},
		{"deny: permitted tenants", alice, map[string]string{"tenant": "A", "Tenant": "B"}, caseRuns},
		{"deny: one variant names another tenant", alice, map[string]string{"tenant": "A", "TENANT": "admin"}, 0},
		{"deny: every variant names another tenant", alice, map[string]string{"tenant": "x", "TENANT": "admin"}, 0},
	} {
		if got := allowedTimes(t, encrypt(c.caller, c.ec)); got != c.want {
			t.Errorf("%s: Encrypt by %s with %v allowed %d of %d times, want %d", c.name, c.caller.ARN, c.ec, got, caseRuns, c.want)
		}
	}
}

func TestIdentityPolicyForAnyValueOnCaseVariantContextKeys(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	md := f.key(t)
	// A set qualifier on a single-valued key does not change the reading:
	// "any value" must not let a second variant carry the request.
	user := Caller{Account: alice.Account, ARN: "arn:aws:iam::111122223333:user/dave",
		Identity: mustIdentity(t, `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:Encrypt","Resource":"*",
		 "Condition":{"ForAnyValue:StringEquals":{"kms:EncryptionContext:tenant":"A"}}}]}`)}
	for _, c := range []struct {
		ec   map[string]string
		want int
	}{
		{map[string]string{"tenant": "A"}, caseRuns},
		{map[string]string{"tenant": "B", "TENANT": "A"}, 0},
	} {
		got := allowedTimes(t, func() error {
			_, err := f.svc.Encrypt(ctx, user, EncryptInput{KeyId: md.KeyId, Plaintext: []byte("x"), EncryptionContext: c.ec})
			return err
		})
		if got != c.want {
			t.Errorf("Encrypt with %v allowed %d of %d times, want %d", c.ec, got, caseRuns, c.want)
		}
	}
}
