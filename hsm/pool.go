package hsm

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/miekg/pkcs11"
)

// pool is a bounded set of PKCS#11 sessions. A session is used by one
// goroutine at a time, as PKCS#11 requires. Callers wait for a free session
// (up to their context's deadline) instead of failing when all are busy.
//
// A session goes back to the pool only if its last use left it healthy:
// one whose call reported the session, the login or the device gone
// (sessionBroken), whose call ran past its bound, or whose caller stopped
// waiting for it is closed and never handed out again. A refused input
// (a bad ciphertext, signature or length) says nothing about the session,
// which stays.
type pool struct {
	idle  chan *pooled
	slots chan struct{} // one token per open session; bounds the total
	watch *watchSet     // where the watchdog finds the sessions' calls
	// opened and closed count sessions over the pool's life; their
	// difference is the number open (idle, in use, or stuck in a call).
	opened, closed atomic.Int64
}

// pooled is an open session and the state kept with it between uses.
type pooled struct {
	h pkcs11.SessionHandle
	// ivs holds random bytes from the token not yet handed out as GCM IVs:
	// one C_GenerateRandom serves many encryptions. Each IV is used once.
	ivs []byte
	// b brackets the session's calls for the watchdog (bound.go).
	b bracket
}

func newPool(max int, w *watchSet) *pool {
	return &pool{
		idle:  make(chan *pooled, max),
		slots: make(chan struct{}, max),
		watch: w,
	}
}

// take returns an idle session, or reserves room for a new one (fresh: the
// caller opens it, or gives the room back with release), or waits until
// ctx's deadline — or for at most wait if ctx has none. It makes no
// PKCS#11 call, so it never waits for the token, only for other callers.
func (p *pool) take(ctx context.Context, wait time.Duration) (ps *pooled, fresh bool, err error) {
	select {
	case ps := <-p.idle:
		return ps, false, nil
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
		return ps, false, nil
	case p.slots <- struct{}{}:
		ps := &pooled{}
		ps.b.init(p.watch)
		p.watch.add(&ps.b)
		return ps, true, nil
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
}

// opened records that a fresh session from take is open.
func (p *pool) open(ps *pooled, h pkcs11.SessionHandle) {
	ps.h = h
	p.opened.Add(1)
}

// release gives back the room of a fresh session that could not be opened.
func (p *pool) release(ps *pooled) {
	p.watch.remove(&ps.b)
	<-p.slots
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

// discard closes a session that must not be used again. k makes the call
// with no regard for a caller that stopped waiting: a session is closed
// even by a goroutine whose caller is gone.
func (p *pool) discard(k p11, ps *pooled) {
	k.CloseSession(ps.h) // the session is already broken; its error says nothing new
	p.closed.Add(1)
	p.watch.remove(&ps.b)
	<-p.slots
}

// closeAll closes the idle sessions. Only called with no operation running.
func (p *pool) closeAll(k p11) {
	for {
		select {
		case ps := <-p.idle:
			k.CloseSession(ps.h)
			p.closed.Add(1)
			p.watch.remove(&ps.b)
			<-p.slots
		default:
			return
		}
	}
}

// forget drops the idle sessions without closing them (the module was
// finalised, which closed them). Only called with no operation running.
func (p *pool) forget() {
	for {
		select {
		case ps := <-p.idle:
			p.closed.Add(1)
			p.watch.remove(&ps.b)
			<-p.slots
		default:
			return
		}
	}
}

// open is the number of sessions open: idle, in use, or stuck in a call.
func (p *pool) openCount() int64 { return p.opened.Load() - p.closed.Load() }
