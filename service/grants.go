package service

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/hsmkms/hsmkms/service/policy"
	"github.com/hsmkms/hsmkms/service/store"
)

// ExcInvalidGrantID is the exception for a malformed GrantId.
const ExcInvalidGrantID = "InvalidGrantIdException"

var (
	allGrantOps = []string{"Decrypt", "Encrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext", "ReEncryptFrom",
		"ReEncryptTo", "Sign", "Verify", "GetPublicKey", "CreateGrant", "RetireGrant", "DescribeKey",
		"GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext", "GenerateMac", "VerifyMac", "DeriveSharedSecret"}
	grantOpsByUsage = map[keyKind]map[string][]string{
		kindAES: {UsageEncryptDecrypt: {"Decrypt", "Encrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext",
			"ReEncryptFrom", "ReEncryptTo", "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext"}},
		kindRSA: {UsageEncryptDecrypt: {"Decrypt", "Encrypt", "ReEncryptFrom", "ReEncryptTo", "GetPublicKey"},
			UsageSignVerify: {"Sign", "Verify", "GetPublicKey"}},
		kindEC:   {UsageSignVerify: {"Sign", "Verify", "GetPublicKey"}},
		kindHMAC: {UsageMAC: {"GenerateMac", "VerifyMac"}},
	}
	grantIDPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// grantOpAllowed reports whether a key of k's type supports a grant operation.
func grantOpAllowed(k *key, op string) bool {
	if op == "DescribeKey" || op == "CreateGrant" || op == "RetireGrant" {
		return true
	}
	return contains(grantOpsByUsage[k.spec().kind][k.rec.KeyUsage], op)
}

func (s *Service) grantToken(ctx context.Context, keyID, grantID string) (string, error) {
	return s.markers.seal(ctx, "grant-token", keyID+"/"+grantID)
}

// openGrantToken returns the key id and grant id a grant token names.
func (s *Service) openGrantToken(ctx context.Context, token string) (keyID, grantID string, err error) {
	pos, err := s.markers.open(ctx, "grant-token", token)
	if err != nil && !errors.Is(err, errBadMarker) {
		return "", "", err // the token could not be checked
	}
	if err == nil {
		var ok bool
		if keyID, grantID, ok = strings.Cut(pos, "/"); ok {
			return keyID, grantID, nil
		}
	}
	return "", "", Errorf(ExcInvalidGrantToken, "Grant token is invalid.")
}

func (s *Service) grantEntry(keyARN string, g *store.Grant) GrantListEntry {
	e := GrantListEntry{KeyId: keyARN, GrantId: g.ID, Name: g.Name, CreationDate: Time{g.CreatedAt},
		GranteePrincipal: g.GranteePrincipal, RetiringPrincipal: g.RetiringPrincipal,
		IssuingAccount: "arn:" + s.partition + ":iam::" + g.IssuingAccount + ":root", Operations: g.Operations}
	if g.ContextEquals != nil || g.ContextSubset != nil {
		e.Constraints = &GrantConstraints{EncryptionContextEquals: g.ContextEquals, EncryptionContextSubset: g.ContextSubset}
	}
	return e
}

// CreateGrant lets a grantee principal use a key for some operations. A
// request with the Name of an existing grant and the same properties is a
// retry: it returns that grant.
func (s *Service) CreateGrant(ctx context.Context, caller Caller, in CreateGrantInput) (*CreateGrantOutput, error) {
	var v validation
	if in.GranteePrincipal == nil {
		v.null("granteePrincipal")
	}
	v.length(in.GranteePrincipal, "granteePrincipal", 1, 256)
	v.length(in.RetiringPrincipal, "retiringPrincipal", 1, 256)
	v.length(in.Name, "name", 1, 256)
	if in.Operations == nil {
		v.null("operations")
	}
	for i := range in.Operations {
		v.enum(&in.Operations[i], fmt.Sprintf("operations.%d.member", i+1), allGrantOps)
	}
	v.grantTokens(in.GrantTokens)
	if err := v.err(); err != nil {
		return nil, err
	}
	if len(in.Operations) == 0 {
		return nil, Errorf(ExcValidation, "Operations must not be empty.")
	}
	for _, p := range []*string{in.GranteePrincipal, in.RetiringPrincipal} {
		if p != nil && !policy.IsPrincipalARN(*p) {
			return nil, Errorf(ExcValidation, "%s is not a valid principal ARN.", *p)
		}
	}
	var equals, subset map[string]string
	if c := in.Constraints; c != nil {
		if c.EncryptionContextEquals != nil && c.EncryptionContextSubset != nil {
			return nil, Errorf(ExcValidation, "A grant can have EncryptionContextEquals or EncryptionContextSubset, not both.")
		}
		equals, subset = c.EncryptionContextEquals, c.EncryptionContextSubset
		for _, m := range []map[string]string{equals, subset} {
			if len(m) > 8 {
				return nil, Errorf(ExcValidation, "A grant constraint has at most 8 encryption context pairs.")
			}
			folded := make(map[string]bool, len(m))
			for key, val := range m {
				if len([]rune(val)) > 384 {
					return nil, Errorf(ExcValidation, "Grant constraint values are at most 384 characters.")
				}
				// Constraint keys are not case-sensitive: two that differ
				// only in case would be one key with two values.
				if folded[strings.ToLower(key)] {
					return nil, Errorf(ExcValidation, "Grant constraint keys are not case-sensitive; %q appears more than once.", strings.ToLower(key))
				}
				folded[strings.ToLower(key)] = true
			}
		}
	}
	ops := slices.Clone(in.Operations)
	slices.Sort(ops)
	ops = slices.Compact(ops)
	conds := conditions(func(c policy.Context) {
		c.Set("kms:GrantOperations", ops...)
		c.Set("kms:GranteePrincipal", *in.GranteePrincipal)
		if in.RetiringPrincipal != nil {
			c.Set("kms:RetiringPrincipal", *in.RetiringPrincipal)
		}
		c.Set("kms:GrantIsForAWSResource", "false")
		switch {
		case equals != nil:
			c.Set("kms:GrantConstraintType", "EncryptionContextEquals")
		case subset != nil:
			c.Set("kms:GrantConstraintType", "EncryptionContextSubset")
		}
	})
	k, err := s.lookup(ctx, caller, "keyId", in.KeyId, idOrARN, "kms:CreateGrant")
	if err != nil {
		return nil, err
	}
	if err := s.authorizeCreateGrant(ctx, caller, k, in.KeyId, ops, equals, subset, conds); err != nil {
		return nil, err
	}
	if err := usable(k); err != nil {
		return nil, err
	}
	for _, op := range ops {
		if !grantOpAllowed(k, op) {
			return nil, Errorf(ExcValidation, "Grant operation %s is not valid for a %s key with key usage %s.", op, k.rec.KeySpec, k.rec.KeyUsage)
		}
	}
	if (equals != nil || subset != nil) && !k.symmetric() {
		return nil, Errorf(ExcValidation, "Encryption context grant constraints are valid only for symmetric encryption KMS keys.")
	}
	if in.DryRun {
		return nil, dryRun()
	}
	g := store.Grant{KeyID: k.rec.ID, GranteePrincipal: *in.GranteePrincipal, IssuingAccount: caller.Account, Operations: ops,
		ContextEquals: equals, ContextSubset: subset, CreatedAt: s.now().UTC().Truncate(1e6)}
	if in.Name != nil {
		g.Name = *in.Name
	}
	if in.RetiringPrincipal != nil {
		g.RetiringPrincipal = *in.RetiringPrincipal
	}
	var id [32]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, internal(err)
	}
	g.ID = hex.EncodeToString(id[:])
	// The store applies the Name retry rule (an existing grant with this
	// Name and these properties is returned instead) and the quota, in the
	// transaction that adds the grant.
	stored, _, err := s.store.CreateGrant(ctx, g, s.limits.GrantsPerKey)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, Errorf(ExcNotFound, "Key '%s' does not exist", k.arn)
	case errors.Is(err, store.ErrLimitExceeded):
		return nil, limitExceeded(err, grantQuotaMessage)
	case err != nil:
		return nil, AsError(err)
	}
	token, err := s.grantToken(ctx, k.rec.ID, stored.ID)
	if err != nil {
		return nil, err
	}
	return &CreateGrantOutput{GrantId: stored.ID, GrantToken: token}, nil
}

// authorizeCreateGrant: kms:CreateGrant by the policies; or a grant for
// CreateGrant, when the new grant is no wider than it (a subset of its
// operations, the same constraints).
func (s *Service) authorizeCreateGrant(ctx context.Context, caller Caller, k *key, asGiven string, ops []string, equals, subset map[string]string, conds conditions) error {
	err := s.authorizePolicies(ctx, caller, k, "kms:CreateGrant", asGiven, conds)
	if err == nil {
		return nil
	}
	if errors.Is(err, errExplicitDeny) {
		return accessDenied(caller, "kms:CreateGrant", k.arn)
	}
	allowed := s.someCallerGrant(ctx, caller, k, func(g *store.Grant) bool {
		if !contains(g.Operations, "CreateGrant") {
			return false
		}
		for _, op := range ops {
			if !contains(g.Operations, op) {
				return false
			}
		}
		return maps.Equal(g.ContextEquals, equals) && maps.Equal(g.ContextSubset, subset)
	})
	if allowed {
		return nil
	}
	return accessDenied(caller, "kms:CreateGrant", k.arn)
}

// granteeIs reports whether g's grantee is the caller (or the role of the
// caller's assumed-role session).
func (s *Service) granteeIs(caller Caller, g *store.Grant) bool {
	if g.GranteePrincipal == caller.ARN {
		return true
	}
	if r := policy.RoleOf(caller.ARN); r != "" && g.GranteePrincipal == r {
		return true
	}
	return false
}

// someCallerGrant reports whether ok holds for one of k's grants whose
// grantee is the caller (or the role of the caller's assumed-role session).
// Only those grants are visited, from the store's index, without copying:
// ok runs under the store's read lock and must not call the store.
func (s *Service) someCallerGrant(ctx context.Context, caller Caller, k *key, ok func(*store.Grant) bool) bool {
	found := false
	visit := func(g *store.Grant) bool {
		found = ok(g)
		return !found
	}
	for _, grantee := range [2]string{caller.ARN, policy.RoleOf(caller.ARN)} {
		if grantee == "" {
			continue
		}
		if err := s.store.GranteeGrants(ctx, k.rec.ID, grantee, visit); err != nil || found {
			return found
		}
	}
	return false
}

// grantAllows reports whether one of k's grants lets the caller run action
// with the request's encryption context (read from the condition keys; a
// request's conditions only set values, so reading them under the store's
// lock is safe).
func (s *Service) grantAllows(ctx context.Context, caller Caller, k *key, action string, extra conditions) bool {
	op := strings.TrimPrefix(action, "kms:")
	var ec map[string][]string
	return s.someCallerGrant(ctx, caller, k, func(g *store.Grant) bool {
		if !contains(g.Operations, op) {
			return false
		}
		if op == "DescribeKey" || op == "RetireGrant" || (g.ContextEquals == nil && g.ContextSubset == nil) {
			return true
		}
		if ec == nil {
			ec = requestContextOf(extra)
		}
		return constraintHolds(g, ec)
	})
}

// requestContextOf extracts the encryption context from a request's
// condition keys: each key lower-cased (grant constraint keys are not
// case-sensitive), with every value the context gives it — more than one when
// the context has keys that differ only in case.
func requestContextOf(extra conditions) map[string][]string {
	c := policy.Context{}
	if extra != nil {
		extra(c)
	}
	ec := map[string][]string{}
	for name, v := range c {
		if k, ok := strings.CutPrefix(name, "kms:encryptioncontext:"); ok {
			ec[k] = v
		}
	}
	return ec
}

// constraintHolds: keys compare without regard to case, values exactly. A
// constrained key that the context gives two values (as "tenant" and
// "TENANT") satisfies no constraint: it cannot be said to equal either.
func constraintHolds(g *store.Grant, ec map[string][]string) bool {
	want := g.ContextSubset
	if g.ContextEquals != nil {
		want = g.ContextEquals
		if len(want) != len(ec) {
			return false
		}
	}
	for k, v := range want {
		got := ec[strings.ToLower(k)]
		if len(got) != 1 || got[0] != v {
			return false
		}
	}
	return true
}

// Grant listings page by the grants' creation sequence (store.Grant.Seq), so
// a marker stays valid however many grants are created or deleted between
// pages. The marker kinds differ from those of the position-based markers of
// earlier versions, which are refused rather than misread.
const (
	grantsMarker    = "grants-seq/"
	retirableMarker = "retirable-seq/"
)

// ListGrants lists a key's grants, oldest first.
func (s *Service) ListGrants(ctx context.Context, caller Caller, in ListGrantsInput) (*ListGrantsOutput, error) {
	var v validation
	v.intRange(in.Limit, "limit", 1, 100)
	v.length(in.Marker, "marker", 1, 1024)
	v.length(in.GrantId, "grantId", 1, 128)
	v.length(in.GranteePrincipal, "granteePrincipal", 1, 256)
	if err := v.err(); err != nil {
		return nil, err
	}
	k, err := s.resolve(ctx, caller, "keyId", in.KeyId, idOrARN, "kms:ListGrants", nil)
	if err != nil {
		return nil, err
	}
	var f store.GrantFilter
	if in.GrantId != nil {
		f.GrantID = *in.GrantId
	}
	if in.GranteePrincipal != nil {
		f.Grantee = *in.GranteePrincipal
	}
	return s.pageGrants(ctx, grantsMarker+k.rec.ID, in.Limit, in.Marker, func(after uint64, limit int) ([]store.Grant, bool, error) {
		return s.store.ListGrants(ctx, k.rec.ID, f, after, limit)
	}, func(string) string { return k.arn })
}

// pageGrants runs one page of a grant listing: list returns up to limit
// grants after a sequence number, and whether more follow; keyARN names a
// grant's key.
func (s *Service) pageGrants(ctx context.Context, kind string, limitIn *int32, marker *string, list func(after uint64, limit int) ([]store.Grant, bool, error),
	keyARN func(keyID string) string) (*ListGrantsOutput, error) {
	limit := 50
	if limitIn != nil {
		limit = int(*limitIn)
	}
	var after uint64
	if marker != nil {
		pos, err := s.openMarker(ctx, kind, *marker)
		if err != nil {
			return nil, err
		}
		if after, err = strconv.ParseUint(pos, 10, 64); err != nil {
			return nil, Errorf(ExcInvalidMarker, "Invalid marker")
		}
	}
	grants, more, err := list(after, limit)
	if err != nil {
		return nil, internal(err)
	}
	out := &ListGrantsOutput{Grants: make([]GrantListEntry, len(grants)), Truncated: more && len(grants) > 0}
	for i := range grants {
		out.Grants[i] = s.grantEntry(keyARN(grants[i].KeyID), &grants[i])
	}
	if out.Truncated {
		if out.NextMarker, err = s.markers.seal(ctx, kind, strconv.FormatUint(grants[len(grants)-1].Seq, 10)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ListRetirableGrants lists the grants of the caller's account's keys that
// a principal may retire.
func (s *Service) ListRetirableGrants(ctx context.Context, caller Caller, in ListRetirableGrantsInput) (*ListGrantsOutput, error) {
	var v validation
	if in.RetiringPrincipal == nil {
		v.null("retiringPrincipal")
	}
	v.length(in.RetiringPrincipal, "retiringPrincipal", 1, 256)
	v.intRange(in.Limit, "limit", 1, 100)
	v.length(in.Marker, "marker", 1, 1024)
	if err := v.err(); err != nil {
		return nil, err
	}
	if err := s.authorizeAccount(caller, "kms:ListRetirableGrants"); err != nil {
		return nil, err
	}
	// From the store's index by retiring principal: the cost is that
	// principal's grants, not every key's.
	retiring := *in.RetiringPrincipal
	return s.pageGrants(ctx, retirableMarker+retiring, in.Limit, in.Marker, func(after uint64, limit int) ([]store.Grant, bool, error) {
		return s.store.ListRetirableGrants(ctx, caller.Account, retiring, after, limit)
	}, func(keyID string) string { return s.keyARN(caller.Account, keyID) })
}

// RetireGrant deletes a grant, named by its token or by key and grant id. The
// retiring principal may, the grantee may if the grant includes RetireGrant,
// and so may the key's account (its root, or a principal whose policies
// allow kms:RetireGrant).
func (s *Service) RetireGrant(ctx context.Context, caller Caller, in RetireGrantInput) error {
	var v validation
	v.length(in.GrantToken, "grantToken", 1, 8192)
	v.length(in.GrantId, "grantId", 1, 128)
	if in.KeyId != nil {
		v.length(in.KeyId, "keyId", 1, 2048)
	}
	if err := v.err(); err != nil {
		return err
	}
	var k *key
	var grantID string
	switch {
	case in.GrantToken != nil:
		keyID, gid, err := s.openGrantToken(ctx, *in.GrantToken)
		if err != nil {
			return err
		}
		if k, err = s.cached(ctx, keyID); err != nil {
			return Errorf(ExcNotFound, "Grant not found.")
		}
		grantID = gid
	case in.KeyId != nil && in.GrantId != nil:
		var err error
		if k, err = s.lookup(ctx, caller, "keyId", *in.KeyId, idOrARN, "kms:RetireGrant"); err != nil {
			return err
		}
		grantID = *in.GrantId
	default:
		return Errorf(ExcValidation, "Either GrantToken, or KeyId and GrantId, are required.")
	}
	byPolicy := s.authorizePolicies(ctx, caller, k, "kms:RetireGrant", k.rec.ID, nil) == nil
	grant, err := s.store.GetGrant(ctx, k.rec.ID, grantID)
	if err != nil {
		// Only a caller the key's policies let retire its grants learns
		// that a grant id names none: to anyone else, a grant that does
		// not exist is one they may not retire.
		if !byPolicy {
			return accessDenied(caller, "kms:RetireGrant", k.arn)
		}
		if !errors.Is(err, store.ErrNotFound) {
			return internal(err)
		}
		return Errorf(ExcNotFound, "Grant %s does not exist for %s.", grantID, k.arn)
	}
	g := &grant
	allowed := caller.ARN == g.RetiringPrincipal || (s.granteeIs(caller, g) && contains(g.Operations, "RetireGrant")) || byPolicy
	if !allowed {
		return accessDenied(caller, "kms:RetireGrant", k.arn)
	}
	if in.DryRun {
		return dryRun()
	}
	return s.deleteGrant(ctx, k, grantID)
}

// RevokeGrant deletes a grant of a key; it needs kms:RevokeGrant.
func (s *Service) RevokeGrant(ctx context.Context, caller Caller, in RevokeGrantInput) error {
	var v validation
	if in.GrantId == nil {
		v.null("grantId")
	}
	v.length(in.GrantId, "grantId", 1, 128)
	if err := v.err(); err != nil {
		return err
	}
	k, err := s.resolve(ctx, caller, "keyId", in.KeyId, idOrARN, "kms:RevokeGrant", nil)
	if err != nil {
		return err
	}
	if !grantIDPattern.MatchString(*in.GrantId) {
		return Errorf(ExcInvalidGrantID, "Invalid grant ID: %s", *in.GrantId)
	}
	if _, err := s.store.GetGrant(ctx, k.rec.ID, *in.GrantId); err != nil {
		return Errorf(ExcNotFound, "Grant %s does not exist for %s.", *in.GrantId, k.arn)
	}
	if in.DryRun {
		return dryRun()
	}
	return s.deleteGrant(ctx, k, *in.GrantId)
}

func (s *Service) deleteGrant(ctx context.Context, k *key, id string) error {
	err := s.store.DeleteGrant(ctx, k.rec.ID, id)
	if errors.Is(err, store.ErrNotFound) {
		return Errorf(ExcNotFound, "Grant %s does not exist for %s.", id, k.arn)
	}
	if err != nil {
		return internal(err)
	}
	return nil
}
