package test

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
)

// TestRotateKeyOnDemandLimitConcurrent: 30 RotateKeyOnDemand requests at
// once on a fresh key rotate it 25 times, AWS's limit, and the others are
// refused (issue 9, item 7: all 30 succeeded).
func TestRotateKeyOnDemandLimitConcurrent(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	k := createKey(t, c)
	errs := concurrentCalls(30, func(int) error {
		_, err := c.RotateKeyOnDemand(ctxT(t), &kms.RotateKeyOnDemandInput{KeyId: k.KeyId})
		return err
	})
	want := "The on-demand rotations limit has been reached for the given keyId. No more on-demand rotations can be performed for this key: " + aws.ToString(k.Arn)
	if ok := wantLimited(t, errs, want); ok != 25 {
		t.Fatalf("%d of 30 concurrent on-demand rotations succeeded, want 25", ok)
	}
	l, err := c.ListKeyRotations(ctxT(t), &kms.ListKeyRotationsInput{KeyId: k.KeyId})
	if err != nil || len(l.Rotations) != 25 {
		t.Fatalf("ListKeyRotations: %d rotations, %v", len(l.Rotations), err)
	}
}
