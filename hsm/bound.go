package hsm

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Bounded calls (docs/ARCHITECTURE.md, decision 6). A PKCS#11 call cannot be
// interrupted: a network HSM that stops answering keeps the calling thread in
// the module until it answers, maybe never. So Do runs its callback on a
// goroutine of its own and the caller waits for it, or for the moment the
// token is found not answering, whichever comes first; the goroutine stays
// until the call returns, and then closes the session.
//
// Every call is bracketed (p11 below): it records when it must have
// returned — Config.CallTimeout after it started, LongCallTimeout for key
// generation and module initialisation — and a watchdog goroutine per module
// looks at the brackets every watchTick. A call past its bound marks the
// module stalled: every caller waiting on the module stops waiting
// (ErrTimeout), and later calls fail at once (ErrUnavailable) instead of
// piling up goroutines behind the dead token. While stalled, one call at a
// time, at most one per retry spacing (minRetry doubling to maxRetry, as for
// recovery), goes through as a probe; the first that is answered in time
// ends the stall. Readiness checks are such calls, so /readyz alone brings
// the token back. Calls that overran and have not returned are counted; once
// there are as many as Config.MaxSessions (each holds its session, so none
// would be left), every call fails at once, probes included, until some
// return.
//
// The watchdog costs nothing per call but two clock reads; the handoff is
// the price of a caller that can stop waiting. BenchmarkCallBound measures
// it against the callback run on the caller's goroutine: ~0.7 µs for a Do
// that makes no call. With one caller at a time, each handoff also wakes an
// idle processor, and on the 2-vCPU VM it was measured on that costs a 1 KiB
// SoftHSM2 encryption ~13 µs (×1.56); with callers queueing it is ×1.08-1.17
// at the token, and over HTTP (hsmkms-bench, Encrypt at 1 and 16 clients)
// the difference is within the run-to-run noise.

// DefaultCallTimeout bounds a PKCS#11 call when Config says nothing. A GCM
// encryption takes ~25 µs on SoftHSM2 and a few milliseconds on a network
// HSM; a call still running after 5 s means the HSM, or the network to it,
// stopped answering, and clients (the AWS SDKs retry a 500 with backoff)
// are better served by a prompt DependencyTimeoutException than by a
// request that waits for it.
const DefaultCallTimeout = 5 * time.Second

// DefaultLongCallTimeout bounds the calls that may legitimately take long:
// key generation (an RSA-4096 pair takes seconds on SoftHSM2 and on many
// HSMs, and waits for other creations) and C_Initialize/C_Finalize.
const DefaultLongCallTimeout = 2 * time.Minute

// watchTick is how often the watchdog looks for calls past their bound: a
// stalled token is noticed at most this long after the bound.
const watchTick = 50 * time.Millisecond

// epoch0 anchors the monotonic clock the brackets use.
var epoch0 = time.Now()

// now is monotonic nanoseconds since epoch0, never 0.
func now() int64 { return int64(time.Since(epoch0)) + 1 }

// overdue marks a bracket whose call the watchdog found past its bound.
const overdue = -1

// bracket says whether a call is running on one goroutine and when it must
// have returned.
type bracket struct {
	// deadline is 0 between calls, overdue once the watchdog counted the
	// running call as stuck, else when the running call must have returned.
	deadline atomic.Int64
	// overran is set by the call's own goroutine when a call that was
	// counted stuck returns; the session it ran on is then discarded.
	overran bool
	st      *stallState
}

func (b *bracket) init(w *watchSet) { b.st = w.st }

// watchSet is the brackets of one module that the watchdog looks at.
type watchSet struct {
	mu  sync.Mutex
	set map[*bracket]struct{}
	st  *stallState
}

func (w *watchSet) add(b *bracket) {
	w.mu.Lock()
	w.set[b] = struct{}{}
	w.mu.Unlock()
}

func (w *watchSet) remove(b *bracket) {
	w.mu.Lock()
	delete(w.set, b)
	w.mu.Unlock()
}

// scan counts the calls past their bound, once each, and declares the
// module stalled if it found any.
func (w *watchSet) scan() {
	t := now()
	found := false
	w.mu.Lock()
	for b := range w.set {
		if d := b.deadline.Load(); d > 0 && t > d {
			w.st.hung.Add(1)
			if b.deadline.CompareAndSwap(d, overdue) {
				found = true
			} else {
				w.st.hung.Add(-1) // it returned just now
			}
		}
	}
	w.mu.Unlock()
	if found {
		w.st.declare()
	}
}

// watchdog scans w every watchTick until stop is closed.
func (w *watchSet) watchdog(stop <-chan struct{}) {
	tick := time.NewTicker(watchTick)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			w.scan()
		}
	}
}

// stallState is whether a module answers its calls.
type stallState struct {
	mu sync.Mutex // serialises declare, probe admission and probe outcomes
	// ep is closed when a stall is declared and then replaced: every
	// caller waiting when a call overran stops waiting.
	ep      atomic.Pointer[epoch]
	since   atomic.Int64 // when the stall was declared (now()); 0 when answering
	probing atomic.Bool  // a probe is running
	next    atomic.Int64 // no probe starts before this (now())
	wait    time.Duration
	// hung counts calls past their bound that have not returned.
	hung atomic.Int64
	// stalls counts declarations, for tests.
	stalls atomic.Uint64
}

type epoch struct{ done chan struct{} }

func newEpoch() *epoch { return &epoch{done: make(chan struct{})} }

func (st *stallState) init() { st.ep.Store(newEpoch()) }

// declare marks the module stalled and releases every waiting caller.
func (st *stallState) declare() {
	st.mu.Lock()
	t := now()
	if st.since.Load() == 0 {
		st.since.Store(t)
		st.wait = minRetry
		st.next.Store(t + int64(minRetry))
	}
	old := st.ep.Swap(newEpoch())
	st.mu.Unlock()
	st.stalls.Add(1)
	close(old.done)
}

// probed records a probe's outcome: answered in time ends the stall, else
// the next probe waits longer.
func (st *stallState) probed(answered bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if answered {
		st.since.Store(0)
		st.wait = 0
		st.next.Store(0)
	} else {
		st.wait = min(max(2*st.wait, minRetry), maxRetry)
		st.next.Store(now() + int64(st.wait))
	}
	st.probing.Store(false)
}

// call is one Do: the caller waits on done; the goroutine serving it sends
// on done, unless the caller abandoned it first.
type call struct {
	state atomic.Int32
	done  chan struct{}
	err   error
}

const (
	callRunning = iota
	callFinished
	callAbandoned
)

var calls = sync.Pool{New: func() any { return &call{done: make(chan struct{}, 1)} }}

// abandoned reports whether the caller stopped waiting.
func (c *call) abandoned() bool { return c != nil && c.state.Load() == callAbandoned }

// errAbandoned is what a call refused for a caller that stopped waiting, and
// what the goroutine serving it returns to nobody.
var errAbandoned = errors.New("the caller stopped waiting")

// finish hands err to the caller, if it is still waiting.
func (c *call) finish(err error) {
	c.err = err
	if c.state.CompareAndSwap(callRunning, callFinished) {
		c.done <- struct{}{}
	}
}

// Do runs fn on a session from the pool. It waits for a free session until
// ctx's deadline (or the configured wait timeout). If fn fails because the
// session, a cached handle, the login or the module's view of the token went
// stale, Do repairs that and runs fn again on a fresh session; fn must
// therefore be safe to repeat. A failure that might only mean the token's
// storage is gone (CKR_GENERAL_ERROR outside a decryption, an object not
// found) is confirmed by a probe of the token before anything is repaired; a
// refused ciphertext, signature or input never leads to either.
//
// Do returns when fn does, or with ErrTimeout when the token stops answering
// (a call of fn, or of any other Do on the module, ran past its bound) or
// ctx ends; while the token is not answering it fails at once with
// ErrUnavailable. After such an early return fn may still be running, on a
// goroutine of its own, until its PKCS#11 call returns: the caller must not
// touch anything fn reads or writes, and fn must keep secrets it makes in
// its own variables or clear them itself. The Session's calls refuse to run
// for a caller that stopped waiting, and clear decrypted or random bytes
// that come back too late.
func (t *Token) Do(ctx context.Context, fn func(*Session) error) error {
	st := &t.mod.stall
	ep := st.ep.Load()
	probe := false
	if st.since.Load() != 0 || st.hung.Load() >= int64(t.cfg.MaxSessions) {
		var err error
		if ep, probe, err = t.admitProbe(); err != nil {
			return err
		}
	}
	c := calls.Get().(*call)
	c.state.Store(callRunning)
	// The goroutine that may be left in the token. (A pool of idle workers
	// instead measured no faster: the cost is in waking it, not starting it.)
	go func() { c.finish(t.attempts(ctx, fn, c)) }()
	var late <-chan time.Time
	if probe {
		// A probe stuck behind a lock, not in a call, is not seen by the
		// watchdog; its own bound covers that.
		timer := time.NewTimer(t.cfg.CallTimeout)
		defer timer.Stop()
		late = timer.C
	}
	var why error
	select {
	case <-c.done:
		return t.answered(c, probe)
	case <-ep.done:
		why = fmt.Errorf("the token stopped answering (a call ran past %v)", t.cfg.CallTimeout)
	case <-late:
		why = fmt.Errorf("the token did not answer within %v", t.cfg.CallTimeout)
	case <-ctx.Done():
		why = ctx.Err()
	}
	if !c.state.CompareAndSwap(callRunning, callAbandoned) {
		<-c.done // finished as the wait ended
		return t.answered(c, probe)
	}
	if probe {
		st.probed(false)
	}
	return &Error{Op: "call", Kind: ErrTimeout, Err: why}
}

// answered takes the result of a call that finished while its caller waited.
func (t *Token) answered(c *call, probe bool) error {
	err := c.err
	c.err = nil
	calls.Put(c)
	if probe {
		t.mod.stall.probed(!errors.Is(err, ErrTimeout))
	}
	return err
}

// admitProbe decides whether a call may go through while the module is
// stalled or too many calls are stuck: it returns the epoch the call waits
// on and whether it is the probe, or the error it fails with at once.
func (t *Token) admitProbe() (ep *epoch, probe bool, err error) {
	st := &t.mod.stall
	if n := st.hung.Load(); n >= int64(t.cfg.MaxSessions) {
		return nil, false, &Error{Op: "call", Kind: ErrUnavailable,
			Err: fmt.Errorf("%d calls to the token have not returned, as many as there are sessions (%d): calls fail until some return", n, t.cfg.MaxSessions)}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	since := st.since.Load()
	if since == 0 {
		return st.ep.Load(), false, nil // the stall ended meanwhile
	}
	if now() < st.next.Load() || !st.probing.CompareAndSwap(false, true) {
		return nil, false, &Error{Op: "call", Kind: ErrUnavailable,
			Err: fmt.Errorf("the token stopped answering %v ago (a call ran past %v); calls not returned: %d",
				time.Duration(now()-since).Round(time.Millisecond), t.cfg.CallTimeout, st.hung.Load())}
	}
	return st.ep.Load(), true, nil
}

// abandonedErr is the error of a call refused for a caller that stopped
// waiting.
func abandonedErr(op string) error { return &Error{Op: op, Kind: ErrTimeout, Err: errAbandoned} }

// p11 makes PKCS#11 calls in a bracket the watchdog watches. c, when set,
// is the Do the calls serve: once its caller stopped waiting they are
// refused, and secrets that come back are cleared.
type p11 struct {
	t *Token
	b *bracket
	c *call
}

// enter starts a call bounded by d, unless its caller stopped waiting.
func (k p11) enter(op string, d time.Duration) error {
	if k.c.abandoned() {
		return abandonedErr(op)
	}
	k.b.deadline.Store(now() + int64(d))
	return nil
}

// exit ends the call; if the watchdog counted it as stuck, it is no more.
func (k p11) exit() {
	if k.b.deadline.Swap(0) == overdue {
		k.b.overran = true
		k.b.st.hung.Add(-1)
	}
}

// late reports whether the caller stopped waiting while the call ran: what
// it returned is for nobody.
func (k p11) late() bool { return k.c.abandoned() }

// recoveryCalls are the calls of recovery, start and stop, made under the
// module's write lock: one bracket per module serves them all.
func (t *Token) recoveryCalls() p11 { return p11{t: t, b: &t.mod.recovery} }

// cleanupCalls are the calls that close a session, made whether or not
// anyone waits for them.
func (s *Session) cleanupCalls() p11 { return p11{t: s.t, b: &s.p.b} }

// calls are the calls of a Do's callback, on its session's bracket.
func (s *Session) calls() p11 { return p11{t: s.t, b: &s.p.b, c: s.c} }
