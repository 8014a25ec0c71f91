package service

import (
	"errors"
	"fmt"

	"github.com/hsmkms/hsmkms/service/store"
)

// AWS's default resource quotas (developer guide, "Resource quotas"). The
// on-demand rotation quota (MaxOnDemandRotations) is not adjustable.
const (
	DefaultKeysPerAccount = 100000
	DefaultAliasesPerKey  = 50
	DefaultGrantsPerKey   = 50000
)

// Limits are the resource quotas. Each is enforced by the store inside the
// transaction that creates the resource, so concurrent requests cannot pass
// it together; a request over it fails with LimitExceededException. Zero
// means AWS's default.
type Limits struct {
	// KeysPerAccount counts an account's keys in every state, pending
	// deletion included, as AWS's quota does.
	KeysPerAccount int
	// AliasesPerKey counts the aliases naming one key (CreateAlias, and
	// UpdateAlias pointing an alias at it).
	AliasesPerKey int
	// GrantsPerKey counts one key's grants.
	GrantsPerKey int
}

// resolve returns l with AWS's defaults in place of zeros; a negative limit
// is an error.
func (l Limits) resolve() (Limits, error) {
	for _, f := range []struct {
		v    *int
		def  int
		name string
	}{
		{&l.KeysPerAccount, DefaultKeysPerAccount, "KeysPerAccount"},
		{&l.AliasesPerKey, DefaultAliasesPerKey, "AliasesPerKey"},
		{&l.GrantsPerKey, DefaultGrantsPerKey, "GrantsPerKey"},
	} {
		switch {
		case *f.v < 0:
			return l, fmt.Errorf("service: limit %s is %d; it must be positive (0: AWS's default, %d)", f.name, *f.v, f.def)
		case *f.v == 0:
			*f.v = f.def
		}
	}
	return l, nil
}

// limitExceeded turns a store's refusal under a limit into AWS's
// LimitExceededException, its message built by message from the limit and
// the current usage (AWS's wording, as recorded from the service). Any
// other error is returned as it is.
func limitExceeded(err error, message func(limit, usage int) string) error {
	var le *store.LimitError
	if errors.As(err, &le) {
		e := Errorf(ExcLimitExceeded, "%s", message(le.Limit, le.Usage))
		e.Cause = err // logged: it may say more (material that could not be destroyed)
		return e
	}
	return err
}

func keyQuotaMessage(limit, usage int) string {
	return fmt.Sprintf("Key quota for this account in this region is %d but the current usage is %d.", limit, usage)
}

func aliasQuotaMessage(limit, usage int) string {
	return fmt.Sprintf("Aliases per key quota for this account in this region is %d, current usage is %d.", limit, usage)
}

func grantQuotaMessage(limit, usage int) string {
	return fmt.Sprintf("Grants per key quota for this account in this region is %d, current usage is %d.", limit, usage)
}
