package service

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/hsmkms/hsmkms/service/policy"
)

// crossAccountActions are the permissions a principal of another account may
// be given on a key (by its key policy and its own identity policy), as in
// AWS; every other operation on another account's key is refused.
var crossAccountActions = map[string]bool{
	"kms:CreateGrant": true, "kms:Decrypt": true, "kms:DescribeKey": true, "kms:Encrypt": true,
	"kms:GenerateDataKey": true, "kms:GenerateDataKeyWithoutPlaintext": true, "kms:GenerateDataKeyPair": true,
	"kms:GenerateDataKeyPairWithoutPlaintext": true, "kms:GenerateMac": true, "kms:GetKeyRotationStatus": true,
	"kms:GetPublicKey": true, "kms:ListGrants": true, "kms:ReEncryptFrom": true, "kms:ReEncryptTo": true,
	"kms:RetireGrant": true, "kms:RevokeGrant": true, "kms:Sign": true, "kms:Verify": true, "kms:VerifyMac": true,
}

// parseKeyPolicy parses a key record's policy. A policy that no longer
// parses (stored before policies were checked) is read as the default policy
// of the key's account, which is what was in effect for it.
func (s *Service) parseKeyPolicy(doc, account string) *policy.Policy {
	if p, err := policy.Parse([]byte(doc), policy.KeyPolicy); err == nil {
		return p
	}
	p, _ := policy.Parse([]byte(defaultPolicy(s.partition, account)), policy.KeyPolicy)
	return p
}

// aliasesOf lists the aliases naming k (kms:ResourceAliases), from memory.
func (s *Service) aliasesOf(ctx context.Context, k *key) []string {
	as, _, err := s.store.ListAliases(ctx, k.rec.Account, k.rec.ID, "", 1000)
	if err != nil {
		return nil
	}
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.Name
	}
	return out
}

// conditions adds a request's own condition keys (beyond those every request
// has) to a context. It runs only when some policy has conditions, so the
// common case — policies without conditions — builds no context at all. nil
// adds nothing.
type conditions func(policy.Context)

// encryptionConditions are the condition keys of an operation that takes an
// encryption context and an encryption algorithm.
func encryptionConditions(ec map[string]string, alg *string) conditions {
	return func(c policy.Context) {
		// Names are stored lower-case (policy.Context.Set's form), built
		// directly: this runs on every request whose policies have
		// conditions. Condition key names are case-insensitive but context
		// keys are not, so keys that differ only in case give one condition
		// key several values; the policy package reads those safely.
		keys := make([]string, 0, len(ec))
		for k, v := range ec {
			name := "kms:encryptioncontext:" + strings.ToLower(k)
			c[name] = append(c[name], v)
			keys = append(keys, k)
		}
		if len(ec) > 0 {
			c["kms:encryptioncontextkeys"] = keys
		}
		a := AlgSymmetric
		if alg != nil {
			a = *alg
		}
		c["kms:encryptionalgorithm"] = []string{a}
	}
}

// and composes condition adders.
func (c conditions) and(more func(policy.Context)) conditions {
	return func(ctx policy.Context) {
		if c != nil {
			c(ctx)
		}
		more(ctx)
	}
}

// requestAlias is the alias a KeyId parameter names (alias name or alias
// ARN), or "".
func requestAlias(keyID string) string {
	if strings.HasPrefix(keyID, "alias/") {
		return keyID
	}
	if _, rest, ok := strings.Cut(keyID, ":alias/"); ok && strings.HasPrefix(keyID, "arn:") {
		return "alias/" + rest
	}
	return ""
}

// errExplicitDeny and errImplicitDeny are authorizePolicies' refusals: only
// an implicit one can be lifted by a grant.
var (
	errExplicitDeny = errors.New("explicitly denied")
	errImplicitDeny = errors.New("not allowed")
)

// authorize decides whether caller may perform action on k: by k's key
// policy and the caller's identity policies, with the request's condition
// keys (those c adds plus those every request has), or else by one of k's
// grants. asGiven is the KeyId as the request gave it (for
// kms:RequestAlias). The refusal names the principal, the action and the
// key, and nothing about policies or grants.
func (s *Service) authorize(ctx context.Context, caller Caller, k *key, action, asGiven string, c conditions) error {
	err := s.authorizePolicies(ctx, caller, k, action, asGiven, c)
	if err == nil || (errors.Is(err, errImplicitDeny) && s.grantAllows(ctx, caller, k, action, c)) {
		return nil
	}
	return accessDenied(caller, action, s.shownResource(caller, k, asGiven))
}

// shownResource is what a refusal names: the key's ARN, except when the
// caller reached another account's key through an alias, which is all the
// caller may know of it (an alias that does not exist is refused naming it
// too; see lookup).
func (s *Service) shownResource(caller Caller, k *key, asGiven string) string {
	if k.rec.Account != caller.Account && requestAlias(asGiven) != "" {
		return asGiven
	}
	return k.arn
}

// authorizePolicies is authorize without grants: nil, errExplicitDeny or
// errImplicitDeny. Actions AWS does not allow across accounts are refused
// outright (no grant can give them either).
func (s *Service) authorizePolicies(ctx context.Context, caller Caller, k *key, action, asGiven string, c conditions) error {
	if k.rec.Account != caller.Account && !crossAccountActions[action] {
		return errExplicitDeny
	}
	r := &policy.Request{Principal: caller.ARN, Account: caller.Account, Action: action, Resource: k.arn}
	if s.policiesUse(k, caller, "") {
		r.Context = s.requestContext(ctx, caller, k, asGiven, c)
	}
	switch policy.Evaluate(k.pol, caller.Identity, r) {
	case policy.Allow:
		return nil
	case policy.ExplicitDeny:
		return errExplicitDeny
	}
	return errImplicitDeny
}

// requestContext builds the condition keys of a request on k.
func (s *Service) requestContext(ctx context.Context, caller Caller, k *key, asGiven string, extra conditions) policy.Context {
	c := make(policy.Context, 8)
	if extra != nil {
		extra(c)
	}
	// The keys every request has are computed only when a policy reads them
	// (names are lower-case, as policy.Context stores them).
	need := func(name string) bool { return s.policiesUse(k, caller, name) }
	set := func(name string, v ...string) {
		if need(name) {
			c[name] = v
		}
	}
	set("aws:principalarn", caller.ARN)
	set("aws:principalaccount", caller.Account)
	set("kms:calleraccount", caller.Account)
	if need("aws:currenttime") || need("aws:epochtime") {
		now := s.now().UTC()
		set("aws:currenttime", now.Format(time.RFC3339))
		set("aws:epochtime", strconv.FormatInt(now.Unix(), 10))
	}
	set("aws:securetransport", strconv.FormatBool(caller.SecureTransport))
	if caller.SourceIP != "" {
		set("aws:sourceip", caller.SourceIP)
	}
	set("kms:keyspec", k.rec.KeySpec)
	set("kms:keyusage", k.rec.KeyUsage)
	set("kms:keyorigin", k.rec.Origin)
	for _, t := range k.rec.Tags {
		if name := "aws:resourcetag/" + strings.ToLower(t.Key); need(name) {
			c[name] = []string{t.Value}
		}
	}
	if a := requestAlias(asGiven); a != "" {
		set("kms:requestalias", a)
	}
	if need("kms:resourcealiases") {
		c["kms:resourcealiases"] = s.aliasesOf(ctx, k)
	}
	return c
}

// policiesUse reports whether k's policy or the caller's read condition key
// name ("": any condition key at all).
func (s *Service) policiesUse(k *key, caller Caller, name string) bool {
	if k.pol.Uses(name) {
		return true
	}
	for _, p := range caller.Identity {
		if p.Uses(name) {
			return true
		}
	}
	return false
}

// authorizeAccount decides an action that no key governs (CreateKey,
// ListKeys, ListAliases, GenerateRandom) by the caller's identity policies.
func (s *Service) authorizeAccount(caller Caller, action string, extra ...conditions) error {
	resource := "*"
	c := policy.Context{}
	for _, e := range extra {
		e(c)
	}
	now := s.now().UTC()
	c.Set("aws:CurrentTime", now.Format(time.RFC3339))
	c.Set("aws:EpochTime", strconv.FormatInt(now.Unix(), 10))
	c.Set("aws:SecureTransport", strconv.FormatBool(caller.SecureTransport))
	if caller.SourceIP != "" {
		c.Set("aws:SourceIp", caller.SourceIP)
	}
	r := &policy.Request{Principal: caller.ARN, Account: caller.Account, Action: action, Resource: resource, Context: c}
	if policy.EvaluateIdentity(caller.Identity, r) != policy.Allow {
		return Errorf(ExcAccessDenied, "User: %s is not authorized to perform: %s", caller.ARN, action)
	}
	return nil
}
