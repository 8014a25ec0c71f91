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

// MaxGrantsPerKey is AWS's quota of grants on one key.
const MaxGrantsPerKey = 50000

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

func (s *Service) grantToken(keyID, grantID string) string {
	return s.markers.seal("grant-token", keyID+"/"+grantID)
}

// openGrantToken returns the key id and grant id a grant token names.
func (s *Service) openGrantToken(token string) (keyID, grantID string, err error) {
	pos, err := s.markers.open("grant-token", token)
	if err == nil {
		var ok bool
		if keyID, grantID, ok = strings.Cut(pos, "/"); ok {
			return keyID, grantID, nil
		}
	}
	return "", "", Errorf(ExcInvalidGrantToken, "Grant token is invalid.")
}

func (s *Service) grantEntry(k *key, g *store.Grant) GrantListEntry {
	e := GrantListEntry{KeyId: k.arn, GrantId: g.ID, Name: g.Name, CreationDate: Time{g.CreatedAt},
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
	g := store.Grant{GranteePrincipal: *in.GranteePrincipal, IssuingAccount: caller.Account, Operations: ops,
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
	rec, err := s.store.UpdateKey(ctx, k.rec.ID, func(r *store.Key) error {
		if g.Name != "" {
			for _, old := range r.Grants {
				if old.Name == g.Name && sameGrant(&old, &g) {
					g.ID = old.ID // a retry: the same grant
					return errRetry
				}
			}
		}
		if len(r.Grants) >= MaxGrantsPerKey {
			return Errorf(ExcLimitExceeded, "The grant quota of %d for %s has been reached.", MaxGrantsPerKey, k.arn)
		}
		r.Grants = append(r.Grants, g)
		return nil
	})
	switch {
	case errors.Is(err, errRetry):
	case err != nil:
		return nil, AsError(err)
	default:
		if _, err := s.remember(rec); err != nil {
			return nil, err
		}
	}
	return &CreateGrantOutput{GrantId: g.ID, GrantToken: s.grantToken(k.rec.ID, g.ID)}, nil
}

var errRetry = errors.New("the grant exists: a retry")

func sameGrant(a, b *store.Grant) bool {
	return a.GranteePrincipal == b.GranteePrincipal && a.RetiringPrincipal == b.RetiringPrincipal &&
		slices.Equal(a.Operations, b.Operations) && maps.Equal(a.ContextEquals, b.ContextEquals) &&
		maps.Equal(a.ContextSubset, b.ContextSubset) && (a.ContextEquals == nil) == (b.ContextEquals == nil) &&
		(a.ContextSubset == nil) == (b.ContextSubset == nil)
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
	for i := range k.rec.Grants {
		g := &k.rec.Grants[i]
		if !s.granteeIs(caller, g) || !contains(g.Operations, "CreateGrant") {
			continue
		}
		narrower := true
		for _, op := range ops {
			if !contains(g.Operations, op) {
				narrower = false
			}
		}
		if narrower && maps.Equal(g.ContextEquals, equals) && maps.Equal(g.ContextSubset, subset) {
			return nil
		}
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

// grantAllows reports whether one of k's grants lets the caller run action
// with the request's encryption context (read from the condition keys).
func (s *Service) grantAllows(caller Caller, k *key, action string, extra conditions) bool {
	if len(k.rec.Grants) == 0 {
		return false
	}
	op := strings.TrimPrefix(action, "kms:")
	var ec map[string][]string
	for i := range k.rec.Grants {
		g := &k.rec.Grants[i]
		if !s.granteeIs(caller, g) || !contains(g.Operations, op) {
			continue
		}
		if op == "DescribeKey" || op == "RetireGrant" || (g.ContextEquals == nil && g.ContextSubset == nil) {
			return true
		}
		if ec == nil {
			ec = requestContextOf(extra)
		}
		if constraintHolds(g, ec) {
			return true
		}
	}
	return false
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
	var list []GrantListEntry
	for i := range k.rec.Grants {
		g := &k.rec.Grants[i]
		if (in.GrantId == nil || *in.GrantId == g.ID) && (in.GranteePrincipal == nil || *in.GranteePrincipal == g.GranteePrincipal) {
			list = append(list, s.grantEntry(k, g))
		}
	}
	return s.pageGrants("grants/"+k.rec.ID, list, in.Limit, in.Marker)
}

func (s *Service) pageGrants(kind string, list []GrantListEntry, limitIn *int32, marker *string) (*ListGrantsOutput, error) {
	limit := 50
	if limitIn != nil {
		limit = int(*limitIn)
	}
	start, err := s.pageStart(kind, marker)
	if err != nil {
		return nil, err
	}
	start = min(start, len(list))
	end := min(start+limit, len(list))
	out := &ListGrantsOutput{Grants: list[start:end], Truncated: end < len(list)}
	if out.Grants == nil {
		out.Grants = []GrantListEntry{}
	}
	if out.Truncated {
		out.NextMarker = s.markers.seal(kind, strconv.Itoa(end))
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
	recs, err := s.store.AllKeys(ctx)
	if err != nil {
		return nil, internal(err)
	}
	slices.SortFunc(recs, func(a, b store.Key) int { return strings.Compare(a.ID, b.ID) })
	var list []GrantListEntry
	for _, rec := range recs {
		if rec.Account != caller.Account || len(rec.Grants) == 0 {
			continue
		}
		k, err := s.remember(rec)
		if err != nil {
			return nil, err
		}
		for i := range k.rec.Grants {
			if g := &k.rec.Grants[i]; g.RetiringPrincipal == *in.RetiringPrincipal {
				list = append(list, s.grantEntry(k, g))
			}
		}
	}
	return s.pageGrants("retirable/"+*in.RetiringPrincipal, list, in.Limit, in.Marker)
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
		keyID, gid, err := s.openGrantToken(*in.GrantToken)
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
	g := findGrant(k, grantID)
	byPolicy := s.authorizePolicies(ctx, caller, k, "kms:RetireGrant", k.rec.ID, nil) == nil
	if g == nil {
		// Only a caller the key's policies let retire its grants learns
		// that a grant id names none: to anyone else, a grant that does
		// not exist is one they may not retire.
		if !byPolicy {
			return accessDenied(caller, "kms:RetireGrant", k.arn)
		}
		return Errorf(ExcNotFound, "Grant %s does not exist for %s.", grantID, k.arn)
	}
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
	if findGrant(k, *in.GrantId) == nil {
		return Errorf(ExcNotFound, "Grant %s does not exist for %s.", *in.GrantId, k.arn)
	}
	if in.DryRun {
		return dryRun()
	}
	return s.deleteGrant(ctx, k, *in.GrantId)
}

func findGrant(k *key, id string) *store.Grant {
	for i := range k.rec.Grants {
		if k.rec.Grants[i].ID == id {
			return &k.rec.Grants[i]
		}
	}
	return nil
}

func (s *Service) deleteGrant(ctx context.Context, k *key, id string) error {
	rec, err := s.store.UpdateKey(ctx, k.rec.ID, func(r *store.Key) error {
		i := slices.IndexFunc(r.Grants, func(g store.Grant) bool { return g.ID == id })
		if i < 0 {
			return Errorf(ExcNotFound, "Grant %s does not exist for %s.", id, k.arn)
		}
		r.Grants = slices.Delete(r.Grants, i, i+1)
		return nil
	})
	if err != nil {
		return AsError(err)
	}
	_, err = s.remember(rec)
	return err
}
