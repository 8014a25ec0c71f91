package service

import (
	"context"
	"errors"
	"strings"

	"github.com/hsmkms/hsmkms/service/store"
)

// CreateAliasInput is the CreateAlias request; UpdateAlias has the same shape.
type CreateAliasInput struct {
	AliasName   string `json:"AliasName"`
	TargetKeyId string `json:"TargetKeyId"`
}

// DeleteAliasInput is the DeleteAlias request.
type DeleteAliasInput struct {
	AliasName string `json:"AliasName"`
}

// ListAliasesInput is the ListAliases request.
type ListAliasesInput struct {
	KeyId  *string `json:"KeyId"`
	Limit  *int32  `json:"Limit"`
	Marker *string `json:"Marker"`
}

// AliasListEntry is one alias in ListAliases.
type AliasListEntry struct {
	AliasArn        string `json:"AliasArn"`
	AliasName       string `json:"AliasName"`
	TargetKeyId     string `json:"TargetKeyId,omitempty"`
	CreationDate    Time   `json:"CreationDate"`
	LastUpdatedDate Time   `json:"LastUpdatedDate"`
}

// ListAliasesOutput is the ListAliases response.
type ListAliasesOutput struct {
	Aliases    []AliasListEntry `json:"Aliases"`
	NextMarker string           `json:"NextMarker,omitempty"`
	Truncated  bool             `json:"Truncated"`
}

const aliasPrefix = "alias/"

// checkAliasName applies AWS's rules: 1-256 characters of [a-zA-Z0-9:/_-],
// starting with "alias/", a name after it of [a-zA-Z0-9/_-], and never the
// "alias/aws/" prefix, which AWS reserves for its managed keys.
func checkAliasName(name string) error {
	var v validation
	if name == "" {
		v.null("aliasName")
		return v.err()
	}
	v.length(&name, "aliasName", 1, 256)
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == ':' || c == '/' || c == '_' || c == '-') {
			v.add(&name, "aliasName", "Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$")
			break
		}
	}
	if err := v.err(); err != nil {
		return err
	}
	if !strings.HasPrefix(name, aliasPrefix) {
		return Errorf(ExcValidation, `Alias must start with the prefix "alias/". Please see https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html`)
	}
	rest := name[len(aliasPrefix):]
	if rest == "" || strings.ContainsRune(rest, ':') {
		return Errorf(ExcValidation, "%s contains invalid characters for an alias", name)
	}
	if strings.HasPrefix(name, "alias/aws/") {
		return Errorf(ExcInvalidAliasName, "Alias names beginning with alias/aws/ are reserved for AWS managed keys.")
	}
	return nil
}

// aliasTarget resolves the TargetKeyId of CreateAlias or UpdateAlias: a key
// id or key ARN of the caller's account, not pending deletion, whose policy
// lets the caller run action. (AWS also checks the action on the alias with
// the caller's identity policies; hsmkms governs aliases by their keys.)
func (s *Service) aliasTarget(ctx context.Context, caller Caller, keyID, action string) (*key, error) {
	k, err := s.resolve(ctx, caller, "targetKeyId", keyID, idOrARN, action, nil)
	if err != nil {
		return nil, err
	}
	if k.rec.State == StatePendingDeletion {
		return nil, Errorf(ExcInvalidState, "%s is pending deletion.", k.arn)
	}
	return k, nil
}

// CreateAlias gives a key a friendly name, unique in the caller's account.
func (s *Service) CreateAlias(ctx context.Context, caller Caller, in CreateAliasInput) error {
	if err := checkAliasName(in.AliasName); err != nil {
		return err
	}
	k, err := s.aliasTarget(ctx, caller, in.TargetKeyId, "kms:CreateAlias")
	if err != nil {
		return err
	}
	now := s.now().UTC().Truncate(1e6)
	err = s.store.CreateAlias(ctx, store.Alias{Name: in.AliasName, Account: caller.Account, TargetKeyID: k.rec.ID,
		CreatedAt: now, UpdatedAt: now}, s.limits.AliasesPerKey)
	switch {
	case errors.Is(err, store.ErrExists):
		return Errorf(ExcAlreadyExists, "An alias with the name %s already exists", s.aliasARN(caller.Account, in.AliasName))
	case errors.Is(err, store.ErrLimitExceeded):
		return limitExceeded(err, aliasQuotaMessage)
	case err != nil:
		return internal(err)
	}
	return nil
}

// UpdateAlias points an existing alias at another key of the same type and
// usage.
func (s *Service) UpdateAlias(ctx context.Context, caller Caller, in CreateAliasInput) error {
	if err := checkAliasName(in.AliasName); err != nil {
		return err
	}
	k, err := s.aliasTarget(ctx, caller, in.TargetKeyId, "kms:UpdateAlias")
	if err != nil {
		return err
	}
	notFound := Errorf(ExcNotFound, "Alias %s is not found.", s.aliasARN(caller.Account, in.AliasName))
	// The current target is read before the update: the store's callback
	// runs under its lock and must not call back into the store.
	a, err := s.store.GetAlias(ctx, caller.Account, in.AliasName)
	if errors.Is(err, store.ErrNotFound) {
		return notFound
	}
	if err != nil {
		return internal(err)
	}
	cur, err := s.cached(ctx, a.TargetKeyID)
	if err == nil {
		// The alias's current key must let the caller move it away too.
		if err := s.authorize(ctx, caller, cur, "kms:UpdateAlias", cur.rec.ID, nil); err != nil {
			return err
		}
	}
	if err == nil && (cur.rec.KeySpec != k.rec.KeySpec || cur.rec.KeyUsage != k.rec.KeyUsage) {
		return Errorf(ExcValidation, "Alias %s cannot be changed from a %s %s key to a %s %s key.",
			s.aliasARN(caller.Account, in.AliasName), cur.rec.KeySpec, cur.rec.KeyUsage, k.rec.KeySpec, k.rec.KeyUsage)
	}
	_, err = s.store.UpdateAlias(ctx, caller.Account, in.AliasName, s.limits.AliasesPerKey, func(a *store.Alias) error {
		a.TargetKeyID = k.rec.ID
		a.UpdatedAt = s.now().UTC().Truncate(1e6)
		return nil
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return notFound
	case errors.Is(err, store.ErrLimitExceeded):
		return limitExceeded(err, aliasQuotaMessage)
	case err != nil:
		return AsError(err)
	}
	return nil
}

// DeleteAlias removes an alias; the key is not affected.
func (s *Service) DeleteAlias(ctx context.Context, caller Caller, in DeleteAliasInput) error {
	if err := checkAliasName(in.AliasName); err != nil {
		return err
	}
	if a, err := s.store.GetAlias(ctx, caller.Account, in.AliasName); err == nil {
		if k, err := s.cached(ctx, a.TargetKeyID); err == nil {
			if err := s.authorize(ctx, caller, k, "kms:DeleteAlias", k.rec.ID, nil); err != nil {
				return err
			}
		}
	}
	err := s.store.DeleteAlias(ctx, caller.Account, in.AliasName)
	if errors.Is(err, store.ErrNotFound) {
		return Errorf(ExcNotFound, "Alias %s is not found.", s.aliasARN(caller.Account, in.AliasName))
	}
	if err != nil {
		return internal(err)
	}
	return nil
}

// ListAliases lists the caller's aliases in name order, optionally only
// those naming one key.
func (s *Service) ListAliases(ctx context.Context, caller Caller, in ListAliasesInput) (*ListAliasesOutput, error) {
	var v validation
	v.intRange(in.Limit, "limit", 1, 100) // the API reference: 1-100, default 50
	v.length(in.Marker, "marker", 1, 1024)
	if err := v.err(); err != nil {
		return nil, err
	}
	limit := 50
	if in.Limit != nil {
		limit = int(*in.Limit)
	}
	after := ""
	if in.Marker != nil {
		var err error
		if after, err = s.openMarker(ctx, "aliases", *in.Marker); err != nil {
			return nil, err
		}
		if !strings.HasPrefix(after, aliasPrefix) {
			return nil, Errorf(ExcInvalidMarker, "Invalid marker")
		}
	}
	if err := s.authorizeAccount(caller, "kms:ListAliases"); err != nil {
		return nil, err
	}
	keyID := ""
	if in.KeyId != nil {
		// ListAliases is governed by identity policies alone, and lists
		// only the caller's account.
		k, err := s.lookup(ctx, caller, "keyId", *in.KeyId, idOrARN, "kms:ListAliases")
		if err != nil {
			return nil, err
		}
		if k.rec.Account != caller.Account {
			return nil, accessDenied(caller, "kms:ListAliases", k.arn)
		}
		keyID = k.rec.ID
	}
	list, more, err := s.store.ListAliases(ctx, caller.Account, keyID, after, limit)
	if err != nil {
		return nil, internal(err)
	}
	out := &ListAliasesOutput{Aliases: make([]AliasListEntry, 0, len(list)), Truncated: more}
	for _, a := range list {
		out.Aliases = append(out.Aliases, AliasListEntry{
			AliasArn: s.aliasARN(a.Account, a.Name), AliasName: a.Name, TargetKeyId: a.TargetKeyID,
			CreationDate: Time{a.CreatedAt}, LastUpdatedDate: Time{a.UpdatedAt},
		})
	}
	if more {
		if out.NextMarker, err = s.markers.seal(ctx, "aliases", list[len(list)-1].Name); err != nil {
			return nil, err
		}
	}
	return out, nil
}
