package service

import (
	"context"
	"fmt"
	"strconv"

	"github.com/hsmkms/hsmkms/service/policy"
	"github.com/hsmkms/hsmkms/service/store"
)

// TagResourceInput is the TagResource request.
type TagResourceInput struct {
	KeyId string `json:"KeyId"`
	Tags  []Tag  `json:"Tags"`
}

// UntagResourceInput is the UntagResource request.
type UntagResourceInput struct {
	KeyId   string   `json:"KeyId"`
	TagKeys []string `json:"TagKeys"`
}

// ListResourceTagsInput is the ListResourceTags request.
type ListResourceTagsInput struct {
	KeyId  string  `json:"KeyId"`
	Limit  *int32  `json:"Limit"`
	Marker *string `json:"Marker"`
}

// ListResourceTagsOutput is the ListResourceTags response.
type ListResourceTagsOutput struct {
	Tags       []Tag  `json:"Tags"`
	NextMarker string `json:"NextMarker,omitempty"`
	Truncated  bool   `json:"Truncated"`
}

// UpdateKeyDescriptionInput is the UpdateKeyDescription request.
type UpdateKeyDescriptionInput struct {
	KeyId       string  `json:"KeyId"`
	Description *string `json:"Description"`
}

const maxTags = 50

// notPendingDeletion is the key-state rule of the operations that change a
// key's metadata (tags, description, aliases): every state but
// PendingDeletion.
func notPendingDeletion(k *key, r *store.Key) error {
	if r.State == StatePendingDeletion {
		return Errorf(ExcInvalidState, "%s is pending deletion.", k.arn)
	}
	return nil
}

// updateKey resolves a management KeyId and applies fn to its record.
func (s *Service) updateKey(ctx context.Context, caller Caller, keyID, action string, c conditions, fn func(k *key, r *store.Key) error) error {
	k, err := s.resolve(ctx, caller, "keyId", keyID, idOrARN, action, c)
	if err != nil {
		return err
	}
	rec, err := s.store.UpdateKey(ctx, k.rec.ID, func(r *store.Key) error { return fn(k, r) })
	if err != nil {
		return AsError(err)
	}
	_, err = s.remember(rec)
	return err
}

// TagResource adds or replaces tags on a key.
func (s *Service) TagResource(ctx context.Context, caller Caller, in TagResourceInput) error {
	var v validation
	if in.Tags == nil {
		v.null("tags")
		return v.err()
	}
	if err := validateTags(&v, in.Tags); err != nil {
		return err
	}
	c := func(c policy.Context) {
		keys := make([]string, len(in.Tags))
		for i, t := range in.Tags {
			c.Set("aws:RequestTag/"+t.TagKey, t.TagValue)
			keys[i] = t.TagKey
		}
		c.Set("aws:TagKeys", keys...)
	}
	return s.updateKey(ctx, caller, in.KeyId, "kms:TagResource", c, func(k *key, r *store.Key) error {
		if err := notPendingDeletion(k, r); err != nil {
			return err
		}
		for _, t := range in.Tags {
			replaced := false
			for i := range r.Tags {
				if r.Tags[i].Key == t.TagKey {
					r.Tags[i].Value, replaced = t.TagValue, true
				}
			}
			if !replaced {
				r.Tags = append(r.Tags, store.Tag{Key: t.TagKey, Value: t.TagValue})
			}
		}
		if len(r.Tags) > maxTags {
			return Errorf(ExcTag, "Too many tags")
		}
		return nil
	})
}

// UntagResource removes tags from a key; keys it does not have are ignored.
func (s *Service) UntagResource(ctx context.Context, caller Caller, in UntagResourceInput) error {
	var v validation
	if in.TagKeys == nil {
		v.null("tagKeys")
	}
	for i := range in.TagKeys {
		v.length(&in.TagKeys[i], fmt.Sprintf("tagKeys.%d.member", i+1), 1, 128)
	}
	if err := v.err(); err != nil {
		return err
	}
	c := func(c policy.Context) { c.Set("aws:TagKeys", in.TagKeys...) }
	return s.updateKey(ctx, caller, in.KeyId, "kms:UntagResource", c, func(k *key, r *store.Key) error {
		if err := notPendingDeletion(k, r); err != nil {
			return err
		}
		kept := r.Tags[:0]
		for _, t := range r.Tags {
			drop := false
			for _, name := range in.TagKeys {
				drop = drop || t.Key == name
			}
			if !drop {
				kept = append(kept, t)
			}
		}
		r.Tags = kept
		return nil
	})
}

// ListResourceTags lists a key's tags in the order they were added. It works
// in every key state.
func (s *Service) ListResourceTags(ctx context.Context, caller Caller, in ListResourceTagsInput) (*ListResourceTagsOutput, error) {
	var v validation
	v.intRange(in.Limit, "limit", 1, 50)
	v.length(in.Marker, "marker", 1, 1024)
	if err := v.err(); err != nil {
		return nil, err
	}
	k, err := s.resolve(ctx, caller, "keyId", in.KeyId, idOrARN, "kms:ListResourceTags", nil)
	if err != nil {
		return nil, err
	}
	limit := maxTags
	if in.Limit != nil {
		limit = int(*in.Limit)
	}
	start, err := s.pageStart(ctx, "tags/"+k.rec.ID, in.Marker)
	if err != nil {
		return nil, err
	}
	tags := k.rec.Tags
	start = min(start, len(tags))
	end := min(start+limit, len(tags))
	out := &ListResourceTagsOutput{Tags: make([]Tag, 0, end-start), Truncated: end < len(tags)}
	for _, t := range tags[start:end] {
		out.Tags = append(out.Tags, NewTag(t.Key, t.Value))
	}
	if out.Truncated {
		if out.NextMarker, err = s.markers.seal(ctx, "tags/"+k.rec.ID, strconv.Itoa(end)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// UpdateKeyDescription replaces a key's description.
func (s *Service) UpdateKeyDescription(ctx context.Context, caller Caller, in UpdateKeyDescriptionInput) error {
	var v validation
	if in.Description == nil {
		v.null("description")
	}
	v.length(in.Description, "description", 0, 8192)
	if err := v.err(); err != nil {
		return err
	}
	return s.updateKey(ctx, caller, in.KeyId, "kms:UpdateKeyDescription", nil, func(k *key, r *store.Key) error {
		if err := notPendingDeletion(k, r); err != nil {
			return err
		}
		r.Description = *in.Description
		return nil
	})
}
