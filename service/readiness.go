package service

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hsmkms/hsmkms/hsm"
)

// readinessRef names the token's readiness canary: an AES key that each
// readiness check encrypts and decrypts with, as a token object, so that the
// check fails when the token's storage is gone (hsm.Token.Ready). Its id is
// not a version-4 UUID, so no KMS key can ever have it.
var readinessRef = hsm.KeyRef{KeyID: [16]byte{'h', 's', 'm', 'k', 'm', 's', '-', 'r', 'e', 'a', 'd', 'i', 'n', 'e', 's', 's'}, Version: 1}

// ErrStoreNotReady: the metadata store cannot commit (Ready).
var ErrStoreNotReady = errors.New("store not ready")

// storeCheckInterval is how long an answer of the store's readiness check
// stands: a flood of probes costs the disk one small commit per interval.
const storeCheckInterval = 2 * time.Second

// cachedCheck runs a check at most once per storeCheckInterval, one at a
// time, and hands its answer to everyone who asks meanwhile.
type cachedCheck struct {
	mu  sync.Mutex
	at  time.Time
	err error
}

func (c *cachedCheck) check(ctx context.Context, fn func(context.Context) error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && time.Since(c.at) < storeCheckInterval {
		return c.err
	}
	c.err = fn(ctx)
	if c.err != nil {
		c.err = fmt.Errorf("%w: %w", ErrStoreNotReady, c.err)
	}
	c.at = time.Now()
	return c.err
}
