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
	idle  chan *pooled
	slots chan struct{} // one token per open session; bounds the total
}

// pooled is an open session and the state kept with it between uses.
type pooled struct {
	h pkcs11.SessionHandle
	// ivs holds random bytes from the token not yet handed out as GCM IVs:
	// one C_GenerateRandom serves many encryptions. Each IV is used once.
	ivs []byte
}

func newPool(max int) *pool {
	return &pool{
		idle:  make(chan *pooled, max),
		slots: make(chan struct{}, max),
	}
}

// get returns an idle session, opens a new one if the bound allows, or waits
// until ctx's deadline — or for at most wait if ctx has none.
func (p *pool) get(ctx context.Context, c *pkcs11.Ctx, slot uint, wait time.Duration) (*pooled, error) {
	select {
	case ps := <-p.idle:
		return ps, nil
	default:
	}
	if _, ok := ctx.Deadline(); !ok {
		// Only a caller that has to wait pays for a timer.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, wait)
		defer cancel()
	}
	select {
	case ps := <-p.idle:
		return ps, nil
	case p.slots <- struct{}{}:
		sh, err := c.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
		if err != nil {
			<-p.slots
			return nil, err
		}
		return &pooled{h: sh}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// put returns a healthy session to the pool.
func (p *pool) put(ps *pooled) {
	select {
	case p.idle <- ps:
	default:
		// Cannot happen: idle has room for every session the bound allows.
		panic("hsm: session pool overflow")
	}
}

// discard closes a session that reported a fatal error; it is never reused.
func (p *pool) discard(c *pkcs11.Ctx, ps *pooled) {
	c.CloseSession(ps.h) // the session is already broken; its error says nothing new
	<-p.slots
}

// closeAll closes the idle sessions. Only called with no operation running.
func (p *pool) closeAll(c *pkcs11.Ctx) {
	for {
		select {
		case ps := <-p.idle:
			c.CloseSession(ps.h)
			<-p.slots
		default:
			return
		}
	}
}
