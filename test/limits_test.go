package test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

// concurrentCalls runs n calls at once and returns their errors.
func concurrentCalls(n int, call func(i int) error) []error {
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = call(i)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

// wantLimited counts the calls that succeeded; every other one must be
// LimitExceededException (HTTP 400) with the message want.
func wantLimited(t *testing.T, errs []error, want string) int {
	t.Helper()
	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
			continue
		}
		wantMessage(t, wantAPIError(t, err, "LimitExceededException", 400), want)
		wantType[*types.LimitExceededException](t, err)
	}
	return ok
}

// TestAliasesPerKeyLimitConcurrent: 60 CreateAlias requests at once for one
// key make 50 aliases, AWS's quota, whatever their interleaving (issue 9,
// item 14: no quota was enforced).
func TestAliasesPerKeyLimitConcurrent(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	k := createKey(t, c)
	errs := concurrentCalls(60, func(i int) error {
		_, err := c.CreateAlias(ctxT(t), &kms.CreateAliasInput{AliasName: aws.String(fmt.Sprintf("alias/quota-%02d", i)), TargetKeyId: k.KeyId})
		return err
	})
	if ok := wantLimited(t, errs, "Aliases per key quota for this account in this region is 50, current usage is 50."); ok != 50 {
		t.Fatalf("%d of 60 concurrent CreateAliases succeeded, want 50", ok)
	}
	out, err := c.ListAliases(ctxT(t), &kms.ListAliasesInput{KeyId: k.KeyId, Limit: aws.Int32(100)})
	if err != nil || len(out.Aliases) != 50 {
		t.Fatalf("ListAliases: %d aliases, %v", len(out.Aliases), err)
	}
}
