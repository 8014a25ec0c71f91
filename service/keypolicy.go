package service

import (
	"context"
	"errors"
	"strconv"

	"github.com/hsmkms/hsmkms/service/policy"
	"github.com/hsmkms/hsmkms/service/store"
)

// DefaultPolicyName is the only key policy name AWS KMS has.
const DefaultPolicyName = "default"

// maxPolicyBytes is AWS's key policy size quota (32 KB).
const maxPolicyBytes = 32768

// checkKeyPolicy parses a key policy a caller sets on the key with ARN
// keyARN, and unless bypass is set, refuses one that would lock the caller
// out: AWS's safety check that the caller could still call PutKeyPolicy.
func checkKeyPolicy(doc string, caller Caller, keyARN string, bypass bool) (*policy.Policy, error) {
	if len(doc) > maxPolicyBytes {
		return nil, Errorf(ExcLimitExceeded, "The key policy is %d bytes; the limit is %d bytes.", len(doc), maxPolicyBytes)
	}
	p, err := policy.Parse([]byte(doc), policy.KeyPolicy)
	if err != nil {
		var pe *policy.Error
		if errors.As(err, &pe) {
			return nil, Errorf(ExcMalformedPolicy, "%s", pe.Message)
		}
		return nil, internal(err)
	}
	if !bypass {
		r := &policy.Request{Principal: caller.ARN, Account: caller.Account, Action: "kms:PutKeyPolicy", Resource: keyARN}
		if policy.Evaluate(p, caller.Identity, r) != policy.Allow {
			return nil, Errorf(ExcMalformedPolicy, "The new key policy will not allow you to update the key policy in the future.")
		}
	}
	return p, nil
}

func checkPolicyName(v *validation, name *string) {
	v.length(name, "policyName", 1, 128)
}

// policyNamed refuses any policy name but "default".
func policyNamed(name *string) error {
	if name != nil && *name != DefaultPolicyName {
		return Errorf(ExcNotFound, "No such policy exists: %s", *name)
	}
	return nil
}

// GetKeyPolicy returns a key's policy. It works in every key state.
func (s *Service) GetKeyPolicy(ctx context.Context, caller Caller, in GetKeyPolicyInput) (*GetKeyPolicyOutput, error) {
	var v validation
	checkPolicyName(&v, in.PolicyName)
	if err := v.err(); err != nil {
		return nil, err
	}
	k, err := s.resolve(ctx, caller, "keyId", in.KeyId, idOrARN, "kms:GetKeyPolicy", nil)
	if err != nil {
		return nil, err
	}
	if err := policyNamed(in.PolicyName); err != nil {
		return nil, err
	}
	return &GetKeyPolicyOutput{Policy: k.rec.Policy, PolicyName: DefaultPolicyName}, nil
}

// ListKeyPolicies lists a key's policy names: always just "default".
func (s *Service) ListKeyPolicies(ctx context.Context, caller Caller, in ListKeyPoliciesInput) (*ListKeyPoliciesOutput, error) {
	var v validation
	v.intRange(in.Limit, "limit", 1, 1000)
	v.length(in.Marker, "marker", 1, 320)
	if err := v.err(); err != nil {
		return nil, err
	}
	if _, err := s.resolve(ctx, caller, "keyId", in.KeyId, idOrARN, "kms:ListKeyPolicies", nil); err != nil {
		return nil, err
	}
	if in.Marker != nil {
		return nil, Errorf(ExcInvalidMarker, "Invalid marker")
	}
	return &ListKeyPoliciesOutput{PolicyNames: []string{DefaultPolicyName}}, nil
}

// PutKeyPolicy replaces a key's policy, after checking its grammar and, unless
// BypassPolicyLockoutSafetyCheck is set, that the caller is not locking itself
// out.
func (s *Service) PutKeyPolicy(ctx context.Context, caller Caller, in PutKeyPolicyInput) error {
	var v validation
	checkPolicyName(&v, in.PolicyName)
	if in.Policy == nil {
		v.null("policy")
	}
	v.length(in.Policy, "policy", 1, 131072)
	if err := v.err(); err != nil {
		return err
	}
	if err := policyNamed(in.PolicyName); err != nil {
		return err
	}
	c := func(c policy.Context) {
		c.Set("kms:BypassPolicyLockoutSafetyCheck", strconv.FormatBool(in.BypassPolicyLockoutSafetyCheck))
	}
	return s.updateKey(ctx, caller, in.KeyId, "kms:PutKeyPolicy", c, func(k *key, r *store.Key) error {
		if _, err := checkKeyPolicy(*in.Policy, caller, k.arn, in.BypassPolicyLockoutSafetyCheck); err != nil {
			return err
		}
		r.Policy = *in.Policy
		return nil
	})
}
