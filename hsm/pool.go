package hsm

import (
	"context"
	"time"

	"github.com/miekg/pkcs11"
)

// pool is a bounded set of PKCS#11 sessions. A session is used by one
// goroutine at a time, as PKCS#11 requires. Callers wait for a free session
// (up to their context's deadline) instead of failing when all are busy.
type pool struct {
	idle  chan pkcs11.SessionHandle
	slots chan struct{} // one token per open session; bounds the total
}

func newPool(max int) *pool {
	return &pool{
		idle:  make(chan pkcs11.SessionHandle, max),
		slots: make(chan struct{}, max),
	}
}

// get returns an idle session, opens a new one if the bound allows, or waits
// until ctx's deadline — or for at most wait if ctx has none.
func (p *pool) get(ctx context.Context, c *pkcs11.Ctx, slot uint, wait time.Duration) (pkcs11.SessionHandle, error) {
	select {
	case sh := <-p.idle:
		return sh, nil
	default:
	}
	if _, ok := ctx.Deadline(); !ok {
		// Only a caller that has to wait pays for a timer.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, wait)
		defer cancel()
	}
	select {
	case sh := <-p.idle:
		return sh, nil
	case p.slots <- struct{}{}:
		sh, err := c.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
		if err != nil {
			<-p.slots
			return 0, err
		}
		return sh, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// put returns a healthy session to the pool.
func (p *pool) put(sh pkcs11.SessionHandle) {
	select {
	case p.idle <- sh:
	default:
		// Cannot happen: idle has room for every session the bound allows.
		panic("hsm: session pool overflow")
	}
}

// discard closes a session that reported a fatal error; it is never reused.
func (p *pool) discard(c *pkcs11.Ctx, sh pkcs11.SessionHandle) {
	c.CloseSession(sh) // the session is already broken; its error says nothing new
	<-p.slots
}

// closeAll closes the idle sessions. Only called with no operation running.
func (p *pool) closeAll(c *pkcs11.Ctx) {
	for {
		select {
		case sh := <-p.idle:
			c.CloseSession(sh)
			<-p.slots
		default:
			return
		}
	}
}
