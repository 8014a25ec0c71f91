package service

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/service/policy"
	"github.com/hsmkms/hsmkms/service/store"
)

// defaultPolicy is the key policy AWS gives a key created without one: the
// account's root may do everything, which delegates to identity policies.
func defaultPolicy(partition, account string) string {
	return `{"Version":"2012-10-17","Id":"key-default-1","Statement":[{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{"AWS":"arn:` +
		partition + `:iam::` + account + `:root"},"Action":"kms:*","Resource":"*"}]}`
}

func validateTags(v *validation, tags []Tag) error {
	if len(tags) > 50 {
		return Errorf(ExcTag, "Too many tags")
	}
	seen := make(map[string]bool, len(tags))
	for i := range tags {
		if !tags[i].hasKey {
			v.null(fmt.Sprintf("tags.%d.member.tagKey", i+1))
		}
		if !tags[i].hasValue {
			v.null(fmt.Sprintf("tags.%d.member.tagValue", i+1))
		}
		v.length(&tags[i].TagKey, fmt.Sprintf("tags.%d.member.tagKey", i+1), 1, 128)
		v.length(&tags[i].TagValue, fmt.Sprintf("tags.%d.member.tagValue", i+1), 0, 256)
	}
	if err := v.err(); err != nil {
		return err
	}
	for _, t := range tags {
		if strings.HasPrefix(strings.ToLower(t.TagKey), "aws:") {
			return Errorf(ExcTag, "Tags beginning with aws: are reserved")
		}
		if seen[t.TagKey] {
			return Errorf(ExcTag, "Duplicate tag keys")
		}
		seen[t.TagKey] = true
	}
	return nil
}

// CreateKey creates a symmetric encryption key: its material is generated in
// the token (version 1), then its record is stored.
func (s *Service) CreateKey(ctx context.Context, caller Caller, in CreateKeyInput) (*CreateKeyOutput, error) {
	var v validation
	v.length(in.Description, "description", 0, 8192)
	v.length(in.Policy, "policy", 1, 131072)
	v.enum(in.KeyUsage, "keyUsage", allKeyUsages)
	v.enum(in.KeySpec, "keySpec", allKeySpecs)
	v.enum(in.CustomerMasterKeySpec, "customerMasterKeySpec", allKeySpecs[:12])
	v.enum(in.Origin, "origin", allOrigins)
	v.length(in.CustomKeyStoreId, "customKeyStoreId", 1, 64)
	v.length(in.XksKeyId, "xksKeyId", 1, 128)
	if err := v.err(); err != nil {
		return nil, err
	}
	if err := validateTags(&v, in.Tags); err != nil {
		return nil, err
	}
	if in.KeySpec != nil && in.CustomerMasterKeySpec != nil {
		return nil, Errorf(ExcValidation, "You cannot specify KeySpec and CustomerMasterKeySpec in the same request. CustomerMasterKeySpec is deprecated.")
	}
	spec := SpecSymmetric
	if in.KeySpec != nil {
		spec = *in.KeySpec
	} else if in.CustomerMasterKeySpec != nil {
		spec = *in.CustomerMasterKeySpec
	}
	usage := UsageEncryptDecrypt
	if in.KeyUsage != nil {
		usage = *in.KeyUsage
	}
	switch {
	case in.CustomKeyStoreId != nil:
		return nil, Errorf(ExcCustomKeyStoreNF, "Custom key store '%s' does not exist.", *in.CustomKeyStoreId)
	case in.XksKeyId != nil:
		return nil, Errorf(ExcValidation, "XksKeyId is only valid for keys in an external key store.")
	case in.Origin != nil && *in.Origin != OriginAWSKMS:
		return nil, Errorf(ExcUnsupportedOp, "Origin %s is not supported by this key service.", *in.Origin)
	case in.MultiRegion:
		return nil, Errorf(ExcUnsupportedOp, "Multi-Region keys are not supported by this key service.")
	case in.KeyUsage == nil && spec != SpecSymmetric:
		return nil, Errorf(ExcValidation, "You must specify a KeyUsage value for all KMS keys except for symmetric encryption keys.")
	case !usageValid(spec, usage):
		return nil, Errorf(ExcValidation, "KeyUsage %s is not compatible with KeySpec %s.", usage, spec)
	}
	ks := keySpecs[spec]
	if ks == nil || !contains(ks.usages, usage) {
		return nil, Errorf(ExcUnsupportedOp, "KeySpec %s with KeyUsage %s is not supported by this key service.", spec, usage)
	}
	createConds := func(c policy.Context) {
		c.Set("kms:KeySpec", spec)
		c.Set("kms:KeyUsage", usage)
		c.Set("kms:KeyOrigin", OriginAWSKMS)
		c.Set("kms:MultiRegion", strconv.FormatBool(in.MultiRegion))
		c.Set("kms:BypassPolicyLockoutSafetyCheck", strconv.FormatBool(in.BypassPolicyLockoutSafetyCheck))
		keys := make([]string, len(in.Tags))
		for i, t := range in.Tags {
			c.Set("aws:RequestTag/"+t.TagKey, t.TagValue)
			keys[i] = t.TagKey
		}
		if len(keys) > 0 {
			c.Set("aws:TagKeys", keys...)
		}
	}
	if err := s.authorizeAccount(caller, "kms:CreateKey", createConds); err != nil {
		return nil, err
	}
	id := uuid.New()
	policy := defaultPolicy(s.partition, caller.Account)
	if in.Policy != nil {
		if _, err := checkKeyPolicy(*in.Policy, caller, s.keyARN(caller.Account, id.String()), in.BypassPolicyLockoutSafetyCheck); err != nil {
			return nil, err
		}
		policy = *in.Policy
	}

	now := s.now().UTC().Truncate(1e6)
	rec := store.Key{
		ID: id.String(), Account: caller.Account, Region: s.region, CreatedAt: now,
		State: StateEnabled, KeySpec: spec, KeyUsage: usage, Origin: OriginAWSKMS, Policy: policy,
		Versions: []store.Version{{Number: 1, CreatedAt: now}},
	}
	if in.Description != nil {
		rec.Description = *in.Description
	}
	for _, t := range in.Tags {
		rec.Tags = append(rec.Tags, store.Tag{Key: t.TagKey, Value: t.TagValue})
	}
	ref := hsm.KeyRef{KeyID: id, Version: 1}
	// Material first, then the record: a crash in between leaves an orphan
	// object (found and reported at start), never a record without material.
	if err := s.generateMaterial(ctx, ref, ks, usage); err != nil {
		return nil, fromTokenNoKey(err)
	}
	// The quota is the store's to check, in the transaction that adds the
	// key, so that concurrent CreateKeys cannot pass it together.
	if err := s.store.CreateKey(ctx, rec, s.limits.KeysPerAccount); err != nil {
		if derr := s.token.DestroyKey(context.WithoutCancel(ctx), ref); derr != nil {
			err = errors.Join(err, fmt.Errorf("destroy orphaned material: %w", derr))
		}
		if errors.Is(err, store.ErrLimitExceeded) {
			return nil, limitExceeded(err, keyQuotaMessage)
		}
		return nil, internal(err)
	}
	k, err := s.cached(ctx, rec.ID)
	if err != nil {
		return nil, internal(err)
	}
	return &CreateKeyOutput{KeyMetadata: s.metadata(k)}, nil
}

// generateMaterial makes a new key version's material in the token.
func (s *Service) generateMaterial(ctx context.Context, ref hsm.KeyRef, ks *keySpec, usage string) error {
	switch ks.kind {
	case kindRSA:
		u := hsm.UsageSign
		if usage == UsageEncryptDecrypt {
			u = hsm.UsageDecrypt
		}
		return s.token.GenerateRSAKeyPair(ctx, ref, ks.bits, u)
	case kindEC:
		return s.token.GenerateECKeyPair(ctx, ref, ks.curve)
	case kindHMAC:
		// As long as the hash's output, as AWS's HMAC keys are.
		return s.token.GenerateHMACKey(ctx, ref, ks.macHash.Size())
	}
	return s.token.GenerateAESKey(ctx, ref)
}

func (s *Service) metadata(k *key) KeyMetadata {
	r := &k.rec
	enc, sign, mac := k.algorithms()
	var material string
	if k.symmetric() {
		material = k.materialIDs[r.Current().Number]
	}
	return KeyMetadata{
		AWSAccountId:          r.Account,
		Arn:                   k.arn,
		CreationDate:          Time{r.CreatedAt},
		CurrentKeyMaterialId:  material,
		CustomerMasterKeySpec: r.KeySpec,
		Description:           r.Description,
		Enabled:               r.State == StateEnabled,
		EncryptionAlgorithms:  enc,
		SigningAlgorithms:     sign,
		MacAlgorithms:         mac,
		KeyId:                 r.ID,
		KeyManager:            "CUSTOMER",
		KeySpec:               r.KeySpec,
		KeyState:              r.State,
		KeyUsage:              r.KeyUsage,
		MultiRegion:           false,
		Origin:                r.Origin,
		DeletionDate:          deletionDate(r),
	}
}

func deletionDate(r *store.Key) *Time {
	if r.State != StatePendingDeletion {
		return nil
	}
	return &Time{r.DeletionDate}
}

// DescribeKey returns a key's metadata. It works in every key state.
func (s *Service) DescribeKey(ctx context.Context, caller Caller, in DescribeKeyInput) (*DescribeKeyOutput, error) {
	var v validation
	v.grantTokens(in.GrantTokens)
	if err := v.err(); err != nil {
		return nil, err
	}
	k, err := s.resolve(ctx, caller, "keyId", in.KeyId, idARNOrAlias, "kms:DescribeKey", nil)
	if err != nil {
		return nil, err
	}
	return &DescribeKeyOutput{KeyMetadata: s.metadata(k)}, nil
}

// ListKeys lists the caller's account's keys in key id order.
func (s *Service) ListKeys(ctx context.Context, caller Caller, in ListKeysInput) (*ListKeysOutput, error) {
	var v validation
	v.intRange(in.Limit, "limit", 1, 1000)
	v.length(in.Marker, "marker", 1, 1024)
	if err := v.err(); err != nil {
		return nil, err
	}
	if err := s.authorizeAccount(caller, "kms:ListKeys"); err != nil {
		return nil, err
	}
	limit := 100
	if in.Limit != nil {
		limit = int(*in.Limit)
	}
	after := ""
	if in.Marker != nil {
		var err error
		if after, err = s.openMarker(ctx, "keys", *in.Marker); err != nil {
			return nil, err
		}
	}
	recs, more, err := s.store.ListKeys(ctx, caller.Account, after, limit)
	if err != nil {
		return nil, internal(err)
	}
	out := &ListKeysOutput{Keys: make([]KeyListEntry, 0, len(recs)), Truncated: more}
	for _, r := range recs {
		out.Keys = append(out.Keys, KeyListEntry{KeyId: r.ID, KeyArn: s.keyARN(r.Account, r.ID)})
	}
	if more {
		if out.NextMarker, err = s.markers.seal(ctx, "keys", recs[len(recs)-1].ID); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// setEnabled implements EnableKey and DisableKey.
func (s *Service) setEnabled(ctx context.Context, caller Caller, keyID string, enable bool) error {
	action := "kms:DisableKey"
	if enable {
		action = "kms:EnableKey"
	}
	return s.updateKey(ctx, caller, keyID, action, nil, func(k *key, r *store.Key) error {
		switch r.State {
		case StateEnabled, StateDisabled, StateUnavailable:
		case StatePendingDeletion:
			return Errorf(ExcInvalidState, "%s is pending deletion.", k.arn)
		case StatePendingImport:
			return Errorf(ExcInvalidState, "%s is pending import.", k.arn)
		default:
			return Errorf(ExcInvalidState, "%s is %s.", k.arn, strings.ToLower(r.State))
		}
		if enable {
			r.State = StateEnabled
		} else {
			r.State = StateDisabled
		}
		return nil
	})
}

// EnableKey sets a key's state to Enabled.
func (s *Service) EnableKey(ctx context.Context, caller Caller, in KeyIdInput) error {
	return s.setEnabled(ctx, caller, in.KeyId, true)
}

// DisableKey sets a key's state to Disabled; cryptographic operations with it
// then fail with DisabledException.
func (s *Service) DisableKey(ctx context.Context, caller Caller, in KeyIdInput) error {
	return s.setEnabled(ctx, caller, in.KeyId, false)
}
