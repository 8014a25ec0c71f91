package policy

import (
	"errors"
	"strings"
	"testing"
)

const (
	keyARN   = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	root     = "arn:aws:iam::111122223333:root"
	alice    = "arn:aws:iam::111122223333:user/alice"
	bob      = "arn:aws:iam::444455556666:user/bob"
	bobsRoot = "arn:aws:iam::444455556666:root"
)

func mustParse(t *testing.T, doc string, kind Kind) *Policy {
	t.Helper()
	p, err := Parse([]byte(doc), kind)
	if err != nil {
		t.Fatalf("Parse(%s): %v", doc, err)
	}
	return p
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		kind      Kind
		want      string
	}{
		{"not JSON", `{"Statement": [`, KeyPolicy, "The policy is not a valid JSON object."},
		{"trailing content", `{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}]} {}`, KeyPolicy, "The policy has content after its JSON object."},
		{"no statement", `{"Version":"2012-10-17"}`, KeyPolicy, "The policy has no Statement."},
		{"bad version", `{"Version":"2020-01-01","Statement":[]}`, KeyPolicy, `Version must be "2012-10-17" or "2008-10-17".`},
		{"bad effect", `{"Statement":[{"Sid":"S","Effect":"Permit","Principal":"*","Action":"kms:*","Resource":"*"}]}`, KeyPolicy,
			`Statement 1 (Sid "S"): Effect must be "Allow" or "Deny".`},
		{"no principal in a key policy", `{"Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}`, KeyPolicy,
			"Statement 1: Principal is missing."},
		{"principal in an identity policy", `{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}]}`, IdentityPolicy,
			"Statement 1: an identity policy cannot have a Principal or NotPrincipal."},
		{"Action and NotAction", `{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","NotAction":"kms:Decrypt","Resource":"*"}]}`, KeyPolicy,
			"Statement 1: Action and NotAction cannot both be present."},
		{"no action", `{"Statement":[{"Effect":"Allow","Principal":"*","Resource":"*"}]}`, KeyPolicy, "Statement 1: Action or NotAction is required."},
		{"bad action", `{"Statement":[{"Effect":"Allow","Principal":"*","Action":"Encrypt","Resource":"*"}]}`, KeyPolicy,
			`Statement 1: invalid action "Encrypt": actions are "service:Name", with * and ? wildcards.`},
		{"bad principal", `{"Statement":[{"Effect":"Allow","Principal":{"AWS":"alice"},"Action":"kms:*","Resource":"*"}]}`, KeyPolicy,
			`Statement 1: Policy contains a statement with one or more invalid principals: "alice".`},
		{"NotPrincipal with Allow", `{"Statement":[{"Effect":"Allow","NotPrincipal":{"AWS":"111122223333"},"Action":"kms:*","Resource":"*"}]}`, KeyPolicy,
			"Statement 1: NotPrincipal can only be used with Effect Deny."},
		{"unknown operator", `{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"StringSortOf":{"kms:CallerAccount":"1"}}}]}`, KeyPolicy,
			`Statement 1: invalid condition operator "StringSortOf".`},
		{"Null with IfExists", `{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"NullIfExists":{"kms:CallerAccount":"true"}}}]}`, KeyPolicy,
			`Statement 1: invalid condition operator "NullIfExists".`},
		{"Null with a non-boolean", `{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"Null":{"kms:CallerAccount":"maybe"}}}]}`, KeyPolicy,
			`Statement 1: the Null condition on "kms:CallerAccount" takes true or false.`},
		{"unknown element", `{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Actions":"kms:*"}]}`, KeyPolicy,
			`Statement 1: unknown element "Actions".`},
		{"resource not an ARN", `{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"mykey"}]}`, KeyPolicy,
			`Statement 1: invalid resource "mykey": resources are "*" or ARNs.`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc), tc.kind)
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("Parse = %v, want a *policy.Error", err)
			}
			if pe.Message != tc.want {
				t.Errorf("message %q, want %q", pe.Message, tc.want)
			}
		})
	}
}

const defaultPolicy = `{"Version":"2012-10-17","Id":"key-default-1","Statement":[{"Sid":"Enable IAM User Permissions","Effect":"Allow",
 "Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}`

func TestEvaluateDelegationAndCrossAccount(t *testing.T) {
	def := mustParse(t, defaultPolicy, KeyPolicy)
	allowEncrypt := mustParse(t, `{"Statement":{"Effect":"Allow","Action":"kms:Encrypt","Resource":"*"}}`, IdentityPolicy)
	crossKey := mustParse(t, `{"Statement":[
		{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"},
		{"Effect":"Allow","Principal":{"AWS":["444455556666"]},"Action":["kms:Decrypt","kms:DescribeKey"],"Resource":"*"},
		{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::444455556666:user/bob"},"Action":"kms:Sign","Resource":"*"}]}`, KeyPolicy)
	for _, tc := range []struct {
		name      string
		key       *Policy
		identity  []*Policy
		principal string
		action    string
		want      Decision
	}{
		{"root under the default policy", def, nil, root, "kms:Encrypt", Allow},
		{"user without identity policy", def, nil, alice, "kms:Encrypt", ImplicitDeny},
		{"user whose identity policy allows", def, []*Policy{allowEncrypt}, alice, "kms:Encrypt", Allow},
		{"identity policy for another action", def, []*Policy{allowEncrypt}, alice, "kms:Decrypt", ImplicitDeny},
		{"other account's root, not in the policy", def, nil, bobsRoot, "kms:Encrypt", ImplicitDeny},
		{"other account's root, delegated", crossKey, nil, bobsRoot, "kms:Decrypt", Allow},
		{"other account's user, delegated, no identity policy", crossKey, nil, bob, "kms:Decrypt", ImplicitDeny},
		{"other account's user, delegated and allowed", crossKey, []*Policy{mustParse(t, `{"Statement":{"Effect":"Allow","Action":"kms:Decrypt","Resource":"`+keyARN+`"}}`, IdentityPolicy)}, bob, "kms:Decrypt", Allow},
		{"other account's user, named, no identity policy", crossKey, nil, bob, "kms:Sign", ImplicitDeny},
		{"other account's user, named, identity allows", crossKey, []*Policy{mustParse(t, `{"Statement":{"Effect":"Allow","Action":"kms:Sign","Resource":"*"}}`, IdentityPolicy)}, bob, "kms:Sign", Allow},
		{"other account, action not granted", crossKey, nil, bobsRoot, "kms:Encrypt", ImplicitDeny},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Request{Principal: tc.principal, Account: accountOf(tc.principal), Action: tc.action, Resource: keyARN}
			if got := Evaluate(tc.key, tc.identity, r); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestEvaluateDenyPrecedenceAndNegations(t *testing.T) {
	key := mustParse(t, `{"Statement":[
		{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"},
		{"Effect":"Deny","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":"kms:ScheduleKeyDeletion","Resource":"*"},
		{"Effect":"Deny","NotPrincipal":{"AWS":["arn:aws:iam::111122223333:root","arn:aws:iam::111122223333:user/alice"]},"NotAction":["kms:Encrypt","kms:Describe*"],"Resource":"*"}]}`, KeyPolicy)
	idDeny := mustParse(t, `{"Statement":{"Effect":"Deny","Action":"kms:ReEncrypt*","Resource":"*"}}`, IdentityPolicy)
	for _, tc := range []struct {
		principal, action string
		identity          []*Policy
		want              Decision
	}{
		{alice, "kms:Encrypt", nil, Allow},
		{alice, "kms:ScheduleKeyDeletion", nil, ExplicitDeny},
		{root, "kms:ScheduleKeyDeletion", nil, Allow},
		{"arn:aws:iam::111122223333:role/app", "kms:Decrypt", nil, ExplicitDeny}, // not excepted by NotPrincipal, not excepted by NotAction
		{"arn:aws:iam::111122223333:role/app", "kms:DescribeKey", nil, Allow},
		{"arn:aws:sts::111122223333:assumed-role/app/session-1", "kms:Encrypt", nil, Allow},
		{alice, "kms:ReEncryptFrom", []*Policy{idDeny}, ExplicitDeny},
		{alice, "kms:ReEncryptTo", []*Policy{idDeny}, ExplicitDeny},
		{alice, "kms:Decrypt", []*Policy{idDeny}, Allow},
	} {
		r := &Request{Principal: tc.principal, Account: accountOf(tc.principal), Action: tc.action, Resource: keyARN}
		if got := Evaluate(key, tc.identity, r); got != tc.want {
			t.Errorf("%s %s: got %s, want %s", tc.principal, tc.action, got, tc.want)
		}
	}
}

// condPolicy is a key policy allowing everything to everyone under one
// Condition block.
func condPolicy(t *testing.T, cond string) *Policy {
	return mustParse(t, `{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Condition":`+cond+`}}`, KeyPolicy)
}

func TestConditionOperators(t *testing.T) {
	ctx := func(kv ...string) Context {
		c := Context{}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "<empty>" {
				c.Set(kv[i])
				continue
			}
			c.Set(kv[i], strings.Split(kv[i+1], ",")...)
		}
		return c
	}
	for _, tc := range []struct {
		name string
		cond string
		ctx  Context
		want bool
	}{
		{"StringEquals", `{"StringEquals":{"kms:EncryptionContext:Dept":"IT"}}`, ctx("kms:EncryptionContext:Dept", "IT"), true},
		{"StringEquals is case-sensitive in values", `{"StringEquals":{"kms:EncryptionContext:Dept":"IT"}}`, ctx("kms:EncryptionContext:Dept", "it"), false},
		{"key names are case-insensitive", `{"StringEquals":{"KMS:ENCRYPTIONCONTEXT:dept":"IT"}}`, ctx("kms:EncryptionContext:Dept", "IT"), true},
		{"StringEquals, key absent", `{"StringEquals":{"kms:EncryptionContext:Dept":"IT"}}`, ctx(), false},
		{"values are ORed", `{"StringEquals":{"kms:EncryptionContext:Dept":["HR","IT"]}}`, ctx("kms:EncryptionContext:Dept", "IT"), true},
		{"keys are ANDed", `{"StringEquals":{"kms:EncryptionContext:Dept":"IT","kms:EncryptionContext:App":"x"}}`, ctx("kms:EncryptionContext:Dept", "IT"), false},
		{"StringNotEquals", `{"StringNotEquals":{"kms:EncryptionContext:Dept":["HR","Legal"]}}`, ctx("kms:EncryptionContext:Dept", "IT"), true},
		{"StringNotEquals matching one", `{"StringNotEquals":{"kms:EncryptionContext:Dept":["HR","IT"]}}`, ctx("kms:EncryptionContext:Dept", "IT"), false},
		{"StringNotEquals, key absent", `{"StringNotEquals":{"kms:EncryptionContext:Dept":"IT"}}`, ctx(), true},
		{"StringEqualsIgnoreCase", `{"StringEqualsIgnoreCase":{"kms:EncryptionContext:Dept":"it"}}`, ctx("kms:EncryptionContext:Dept", "IT"), true},
		{"StringLike *", `{"StringLike":{"kms:RequestAlias":"alias/app-*"}}`, ctx("kms:RequestAlias", "alias/app-orders"), true},
		{"StringLike ?", `{"StringLike":{"kms:RequestAlias":"alias/app-?"}}`, ctx("kms:RequestAlias", "alias/app-12"), false},
		{"StringNotLike", `{"StringNotLike":{"kms:RequestAlias":"alias/test-*"}}`, ctx("kms:RequestAlias", "alias/app"), true},
		{"IfExists, key absent", `{"StringEqualsIfExists":{"kms:EncryptionContext:Dept":"IT"}}`, ctx(), true},
		{"IfExists, key present and different", `{"StringEqualsIfExists":{"kms:EncryptionContext:Dept":"IT"}}`, ctx("kms:EncryptionContext:Dept", "HR"), false},
		{"Null true, absent", `{"Null":{"kms:EncryptionContextKeys":"true"}}`, ctx(), true},
		{"Null true, present", `{"Null":{"kms:EncryptionContextKeys":"true"}}`, ctx("kms:EncryptionContextKeys", "a"), false},
		{"Null false, present", `{"Null":{"kms:EncryptionContextKeys":"false"}}`, ctx("kms:EncryptionContextKeys", "a"), true},
		{"Null false, empty set", `{"Null":{"kms:EncryptionContextKeys":"false"}}`, ctx("kms:EncryptionContextKeys", "<empty>"), false},
		{"Bool true", `{"Bool":{"aws:SecureTransport":"true"}}`, ctx("aws:SecureTransport", "true"), true},
		{"Bool as JSON boolean", `{"Bool":{"kms:ReEncryptOnSameKey":true}}`, ctx("kms:ReEncryptOnSameKey", "true"), true},
		{"Bool false", `{"Bool":{"aws:SecureTransport":"true"}}`, ctx("aws:SecureTransport", "false"), false},
		{"NumericLessThanEquals", `{"NumericLessThanEquals":{"kms:ScheduleKeyDeletionPendingWindowInDays":"14"}}`, ctx("kms:ScheduleKeyDeletionPendingWindowInDays", "7"), true},
		{"NumericGreaterThan as number", `{"NumericGreaterThan":{"kms:RotationPeriodInDays":100}}`, ctx("kms:RotationPeriodInDays", "90"), false},
		{"Numeric with a non-number", `{"NumericEquals":{"kms:RotationPeriodInDays":"90"}}`, ctx("kms:RotationPeriodInDays", "ninety"), false},
		{"DateLessThan", `{"DateLessThan":{"aws:CurrentTime":"2027-01-01T00:00:00Z"}}`, ctx("aws:CurrentTime", "2026-11-29T07:00:00Z"), true},
		{"DateGreaterThan epoch", `{"DateGreaterThan":{"aws:CurrentTime":"1800000000"}}`, ctx("aws:CurrentTime", "2026-11-29T07:00:00Z"), false},
		{"IpAddress", `{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}`, ctx("aws:SourceIp", "10.1.2.3"), true},
		{"IpAddress outside", `{"IpAddress":{"aws:SourceIp":["192.0.2.0/24","203.0.113.7"]}}`, ctx("aws:SourceIp", "10.1.2.3"), false},
		{"NotIpAddress", `{"NotIpAddress":{"aws:SourceIp":"192.0.2.0/24"}}`, ctx("aws:SourceIp", "10.1.2.3"), true},
		{"ArnLike", `{"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::111122223333:role/app-*"}}`, ctx("aws:PrincipalArn", "arn:aws:iam::111122223333:role/app-web"), true},
		{"BinaryEquals", `{"BinaryEquals":{"kms:EncryptionContext:Blob":"aGk="}}`, ctx("kms:EncryptionContext:Blob", "aGk="), true},
		{"ForAnyValue", `{"ForAnyValue:StringEquals":{"kms:EncryptionContextKeys":["Dept","Project"]}}`, ctx("kms:EncryptionContextKeys", "App,Dept"), true},
		{"ForAnyValue, empty set", `{"ForAnyValue:StringEquals":{"kms:EncryptionContextKeys":"Dept"}}`, ctx("kms:EncryptionContextKeys", "<empty>"), false},
		{"ForAnyValue, absent", `{"ForAnyValue:StringEquals":{"kms:EncryptionContextKeys":"Dept"}}`, ctx(), false},
		{"ForAllValues", `{"ForAllValues:StringEquals":{"kms:EncryptionContextKeys":["Dept","Project"]}}`, ctx("kms:EncryptionContextKeys", "Project,Dept"), true},
		{"ForAllValues, one outside", `{"ForAllValues:StringEquals":{"kms:EncryptionContextKeys":["Dept","Project"]}}`, ctx("kms:EncryptionContextKeys", "Dept,App"), false},
		{"ForAllValues, empty set", `{"ForAllValues:StringEquals":{"kms:EncryptionContextKeys":"Dept"}}`, ctx("kms:EncryptionContextKeys", "<empty>"), true},
		{"ForAllValues, absent", `{"ForAllValues:StringEquals":{"kms:EncryptionContextKeys":"Dept"}}`, ctx(), true},
		{"ForAllValues with a negated operator", `{"ForAllValues:StringNotLike":{"aws:TagKeys":"aws:*"}}`, ctx("aws:TagKeys", "team,cost"), true},
		{"ForAllValues with a negated operator, one matching", `{"ForAllValues:StringNotLike":{"aws:TagKeys":"aws:*"}}`, ctx("aws:TagKeys", "team,aws:x"), false},
		{"operators are ANDed", `{"StringEquals":{"kms:CallerAccount":"111122223333"},"Bool":{"aws:SecureTransport":"true"}}`, ctx("kms:CallerAccount", "111122223333"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := condPolicy(t, tc.cond)
			r := &Request{Principal: root, Account: "111122223333", Action: "kms:Encrypt", Resource: keyARN, Context: tc.ctx}
			if got := Evaluate(p, nil, r) == Allow; got != tc.want {
				t.Errorf("condition held: %v, want %v", got, tc.want)
			}
		})
	}
}

// The caller keys are added to a copy: the caller's context is not written.
func TestEvaluateAddsCallerKeysToACopy(t *testing.T) {
	p := condPolicy(t, `{"StringEquals":{"kms:CallerAccount":"111122223333","aws:PrincipalArn":"`+alice+`"}}`)
	ctx := Context{}
	ctx.Set("kms:EncryptionContext:a", "b")
	r := &Request{Principal: alice, Account: "111122223333", Action: "kms:Encrypt", Resource: keyARN, Context: ctx}
	if got := Evaluate(p, nil, r); got != Allow {
		t.Fatalf("got %s, want Allow", got)
	}
	if len(ctx) != 1 {
		t.Fatalf("the caller's context was written: %v", ctx)
	}
}

func TestGlob(t *testing.T) {
	for _, tc := range []struct {
		pattern, s string
		want       bool
	}{
		{"*", "", true}, {"a*", "abc", true}, {"a?c", "abc", true}, {"a?c", "ac", false},
		{"*b*", "abc", true}, {"a*c*e", "abXcYe", true}, {"a*c*e", "abXcY", false},
		{"kms:reencrypt*", "kms:reencryptfrom", true}, {"kms:*", "kms:decrypt", true},
		{"kms:generatedatakey*", "kms:generatedatakeypairwithoutplaintext", true},
		{strings.Repeat("*a", 30) + "b", strings.Repeat("a", 60), false},
		{"a?c", "aéc", true}, {"a??c", "aéc", false}, {"*é", "café", true}, {"caf?", "café", true},
	} {
		if got := glob(tc.pattern, tc.s, false); got != tc.want {
			t.Errorf("glob(%q, %q) = %v", tc.pattern, tc.s, got)
		}
	}
	// Actions compare without regard to ASCII case; other values do not.
	if !glob("kms:reencrypt*", "kms:ReEncryptFrom", true) || glob("alias/App", "alias/app", false) {
		t.Error("case folding")
	}
}

// A single-valued condition key with several values (an encryption context
// with keys that differ only in case) is read the way that protects the key:
// an Allow's condition must hold for every value, a Deny's for any one. The
// values' order never matters.
func TestSingleValuedKeyWithSeveralValues(t *testing.T) {
	allowIf := func(op, val string) *Policy {
		return mustParse(t, `{"Statement":[{"Effect":"Allow","Principal":{"AWS":"`+root+`"},"Action":"kms:Encrypt","Resource":"*",
			"Condition":{"`+op+`":{"kms:EncryptionContext:tenant":`+val+`}}}]}`, KeyPolicy)
	}
	denyIf := func(op, val string) *Policy {
		return mustParse(t, `{"Statement":[{"Effect":"Allow","Principal":{"AWS":"`+root+`"},"Action":"kms:*","Resource":"*"},
			{"Effect":"Deny","Principal":"*","Action":"kms:Encrypt","Resource":"*",
			"Condition":{"`+op+`":{"kms:EncryptionContext:tenant":`+val+`}}}]}`, KeyPolicy)
	}
	for _, tc := range []struct {
		name   string
		policy *Policy
		values []string
		want   Decision
	}{
		{"allow StringEquals, one value", allowIf("StringEquals", `"A"`), []string{"A"}, Allow},
		{"allow StringEquals, a second value differs", allowIf("StringEquals", `"A"`), []string{"A", "B"}, ImplicitDeny},
		{"allow StringEquals, both listed", allowIf("StringEquals", `["A","B"]`), []string{"B", "A"}, Allow},
		{"allow StringLike, one fails", allowIf("StringLike", `"A*"`), []string{"Ab", "b"}, ImplicitDeny},
		{"allow ForAnyValue, one fails", allowIf("ForAnyValue:StringEquals", `"A"`), []string{"B", "A"}, ImplicitDeny},
		{"allow StringNotEquals, one matches", allowIf("StringNotEquals", `"admin"`), []string{"A", "admin"}, ImplicitDeny},
		{"allow StringNotEquals, none matches", allowIf("StringNotEquals", `"admin"`), []string{"A", "B"}, Allow},
		{"deny StringNotEquals, one differs", denyIf("StringNotEquals", `"A"`), []string{"A", "admin"}, ExplicitDeny},
		{"deny StringNotEquals, none differs", denyIf("StringNotEquals", `"A"`), []string{"A", "A"}, Allow},
		{"deny StringEquals, one matches", denyIf("StringEquals", `"admin"`), []string{"admin", "A"}, ExplicitDeny},
		{"deny ForAllValues, one matches", denyIf("ForAllValues:StringEquals", `"admin"`), []string{"A", "admin"}, ExplicitDeny},
	} {
		for _, vals := range [][]string{tc.values, {tc.values[len(tc.values)-1], tc.values[0]}} {
			ctx := Context{}
			ctx.Set("kms:EncryptionContext:tenant", vals...)
			r := &Request{Principal: root, Account: "111122223333", Action: "kms:Encrypt", Resource: keyARN, Context: ctx}
			if got := Evaluate(tc.policy, nil, r); got != tc.want {
				t.Errorf("%s, values %q: %s, want %s", tc.name, vals, got, tc.want)
			}
		}
	}
	// A multi-valued key keeps IAM's reading: one matching value is enough.
	p := mustParse(t, `{"Statement":[{"Effect":"Allow","Principal":{"AWS":"`+root+`"},"Action":"kms:Encrypt","Resource":"*",
		"Condition":{"ForAnyValue:StringEquals":{"kms:EncryptionContextKeys":"tenant"}}}]}`, KeyPolicy)
	ctx := Context{}
	ctx.Set("kms:EncryptionContextKeys", "other", "tenant")
	if got := Evaluate(p, nil, &Request{Principal: root, Account: "111122223333", Action: "kms:Encrypt", Resource: keyARN, Context: ctx}); got != Allow {
		t.Errorf("ForAnyValue on kms:EncryptionContextKeys: %s, want Allow", got)
	}
}
