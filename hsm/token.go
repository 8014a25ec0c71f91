package hsm

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/pkcs11"
)

// DefaultModulePath is where Debian and Ubuntu install SoftHSM2's module.
const DefaultModulePath = "/usr/lib/softhsm/libsofthsm2.so"

// DefaultMaxSessions is the session pool's size when Config says nothing.
const DefaultMaxSessions = 32

// Config says which module and token to use. Tokens are chosen by label or
// serial number, never by slot number: slot numbers change when tokens are
// added or removed.
type Config struct {
	ModulePath  string // default DefaultModulePath
	TokenLabel  string // exactly one of TokenLabel and TokenSerial
	TokenSerial string
	PIN         string // user PIN

	// MaxSessions bounds the sessions used for operations (default 32).
	MaxSessions int
	// WaitTimeout bounds how long an operation waits for a free session when
	// its context has no deadline (default 10s). Callers never wait forever.
	WaitTimeout time.Duration
	// CallTimeout bounds each PKCS#11 call (default DefaultCallTimeout, 5s).
	// A call still running after it means the token stopped answering: its
	// caller gets ErrTimeout, the token is treated as down (calls fail at
	// once with ErrUnavailable) until a probe is answered, and the session
	// the call runs on is closed once it returns (see bound.go).
	CallTimeout time.Duration
	// LongCallTimeout bounds key generation and module initialisation, which
	// may take seconds on a healthy token (default DefaultLongCallTimeout,
	// 2 min).
	LongCallTimeout time.Duration
	// SessionKeyCopies makes a session-object copy of each key the first time
	// it is used (kept in the login session, so for the life of the login)
	// and runs operations on the copy. On SoftHSM2 an operation on a token
	// object re-reads the object's file; on a session object it does not:
	// measured 46 µs vs 23 µs per 1 KiB GCM encrypt. SoftHSM2 copies only
	// modifiable objects, so with this on, new keys are generated with
	// CKA_MODIFIABLE=true (copies are made non-modifiable); keys generated
	// without it are used in place. Meant for SoftHSM2; network HSMs keep
	// token objects in memory and gain nothing from it.
	SessionKeyCopies bool
	// AtomicObjectCreation says the token stores a new token object in one
	// step, as network HSMs do: keys are then generated as token objects in
	// place. Off (the default, and what SoftHSM2 needs), each key object is
	// generated as a session object and copied to the token with
	// C_CopyObject, because SoftHSM2 writes a generated token object in
	// many steps and a process killed between them leaves a half-made key
	// that is not sensitive, may wrap and unwrap, and carries no CKA_ID or
	// label; a copy is written in one step (see generate in keys.go).
	AtomicObjectCreation bool
	// Observer, if set, is told of every token operation and session wait,
	// for metrics (observe.go).
	Observer Observer
}

func (c *Config) validate() error {
	if c.ModulePath == "" {
		c.ModulePath = DefaultModulePath
	}
	if (c.TokenLabel == "") == (c.TokenSerial == "") {
		return errors.New("hsm: exactly one of token label and token serial must be set")
	}
	if c.MaxSessions <= 0 {
		c.MaxSessions = DefaultMaxSessions
	}
	if c.WaitTimeout <= 0 {
		c.WaitTimeout = 10 * time.Second
	}
	if c.CallTimeout <= 0 {
		c.CallTimeout = DefaultCallTimeout
	}
	if c.LongCallTimeout <= 0 {
		c.LongCallTimeout = DefaultLongCallTimeout
	}
	c.LongCallTimeout = max(c.LongCallTimeout, c.CallTimeout)
	return nil
}

// Token is a logged-in PKCS#11 token. It is safe for concurrent use.
type Token struct {
	cfg Config
	mod *module

	// mu is the module's lock (module.mu): held for reading by every
	// operation and for writing by recovery, so the module is never
	// re-initialised under a running call of this or any other Token.
	// The fields below it change only under it, held for writing.
	mu        *sync.RWMutex
	ctx       *pkcs11.Ctx // nil once closed
	slot      uint
	login     pkcs11.SessionHandle // kept open so the login lasts for the process
	loginMu   sync.Mutex           // serialises use of the login session
	objectsMu *sync.Mutex          // the module's lock for creating and destroying objects
	// gen is bumped by every (re)start; failing callers report the one they
	// saw. Written under mu, read without it by Ready's caller, which must
	// not wait for a recovery the token may never let finish.
	gen  atomic.Uint64
	pool *pool
	// down says why the Token has no login (its token was not found, the
	// module failed to initialise, …); nil when it works. Operations fail
	// at once with ErrUnavailable while it is set, and ask for recovery.
	down error

	keys   keyCache
	oaep   [2]oaepMode // SHA-1, SHA-256: does the token decrypt OAEP natively?
	probe  probeState
	canary canaryState

	sessionStats sessionStatsState // observe.go
}

// Open loads the module, finds the token, logs in and opens the long-lived
// login session.
func Open(ctx context.Context, cfg Config) (*Token, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m, err := loadModule(cfg.ModulePath)
	if err != nil {
		return nil, err
	}
	t := &Token{cfg: cfg, mod: m, mu: &m.mu, ctx: m.ctx, objectsMu: m.objects, canary: canaryState{mu: make(chan struct{}, 1)}}
	t.probe.b.init(&m.watch)
	m.watch.add(&t.probe.b)
	m.mu.Lock()
	if err := t.start(t.recoveryCalls()); err != nil {
		m.mu.Unlock()
		m.watch.remove(&t.probe.b)
		releaseModule(m)
		return nil, err
	}
	m.tokens[t] = struct{}{}
	m.mu.Unlock()
	return t, nil
}

// start selects the slot and logs in, with a fresh session pool and handle
// cache. On failure the Token is left down, with the reason. Called with mu
// held for writing.
func (t *Token) start(k p11) error {
	t.gen.Add(1)
	t.pool, t.login = nil, 0
	t.keys.reset()
	err := t.openLogin(k)
	t.down = err
	return err
}

func (t *Token) openLogin(k p11) error {
	slot, err := t.findSlot(k)
	if err != nil {
		return err
	}
	sh, err := k.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return translate("C_OpenSession", err, false)
	}
	if err := k.Login(sh, pkcs11.CKU_USER, t.cfg.PIN); err != nil && ckr(err) != pkcs11.CKR_USER_ALREADY_LOGGED_IN {
		k.CloseSession(sh)
		return translate("C_Login", err, false)
	}
	t.slot, t.login = slot, sh
	t.pool = newPool(t.cfg.MaxSessions, &t.mod.watch)
	return nil
}

// stop closes the Token's sessions (its session objects go with them).
// Called with mu held for writing.
func (t *Token) stop(k p11) {
	if t.down == nil {
		t.pool.closeAll(k)
		k.CloseSession(t.login) // the session is being dropped; its error says nothing new
	}
	t.forget()
}

// forget drops the Token's sessions and handles without closing them: after
// C_Finalize their numbers may already name another Token's new ones.
// Called with mu held for writing.
func (t *Token) forget() {
	if t.pool != nil {
		t.pool.forget()
	}
	t.pool, t.login = nil, 0
	t.keys.reset()
	if t.down == nil {
		t.down = &Error{Op: "session", Kind: ErrUnavailable, Err: errors.New("token is being recovered")}
	}
}

func (t *Token) findSlot(k p11) (uint, error) {
	slots, err := k.GetSlotList(true)
	if err != nil {
		return 0, translate("C_GetSlotList", err, false)
	}
	var found []uint
	for _, s := range slots {
		ti, err := k.GetTokenInfo(s)
		if err != nil {
			continue
		}
		label := strings.TrimRight(ti.Label, " \x00")
		serial := strings.TrimRight(ti.SerialNumber, " \x00")
		if (t.cfg.TokenLabel != "" && label == t.cfg.TokenLabel) ||
			(t.cfg.TokenSerial != "" && serial == t.cfg.TokenSerial) {
			found = append(found, s)
		}
	}
	switch len(found) {
	case 0:
		return 0, &Error{Op: "find token", Kind: ErrUnavailable,
			Err: fmt.Errorf("no token with label %q / serial %q", t.cfg.TokenLabel, t.cfg.TokenSerial)}
	case 1:
		return found[0], nil
	default:
		return 0, &Error{Op: "find token", Kind: ErrUnavailable,
			Err: fmt.Errorf("%d tokens match label %q / serial %q; use the serial", len(found), t.cfg.TokenLabel, t.cfg.TokenSerial)}
	}
}

// Close closes every session (which logs out) and unloads the module. Calls
// the token has not answered hold the module: Close waits up to CallTimeout
// for them to return, and if they do not, leaves the module loaded and the
// Token open, and says so.
func (t *Token) Close() error {
	st := &t.mod.stall
	for end := time.Now().Add(t.cfg.CallTimeout); st.hung.Load() > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			return &Error{Op: "close", Kind: ErrUnavailable,
				Err: fmt.Errorf("%d calls to the token have not returned; the module stays loaded", st.hung.Load())}
		}
	}
	t.mu.Lock()
	if t.ctx == nil {
		t.mu.Unlock()
		return nil
	}
	t.stop(t.recoveryCalls()) // the last sessions of this Token: logs out
	delete(t.mod.tokens, t)
	t.mod.watch.remove(&t.probe.b)
	t.ctx = nil
	t.mu.Unlock()
	return releaseModule(t.mod)
}

// recover repairs the Token after an operation failed in a way that says the
// session, the login or the module's view of the token went bad. gen is the
// generation the failing caller saw; if the Token was restarted since, there
// is nothing to do and the caller retries. Otherwise recover looks before it
// acts: a healthy login and readable token storage mean only the failing
// session was bad (already discarded); a lost login is restored; anything
// worse re-initialises the module. Attempts that fail are spaced out by the
// module's retry gate, and while it is shut recover fails at once. c is the
// Do that asks: if its caller stopped waiting, nothing is repaired for it.
//
// Recovery needs the module to itself, so it waits for every running call;
// while calls the token never answered still hold it (they keep their read
// lock until they return), recover fails at once rather than wait behind
// them, which would stop every other call too.
func (t *Token) recover(gen uint64, c *call) error {
	t.mu.RLock()
	closed, moved := t.ctx == nil, t.gen.Load() != gen
	t.mu.RUnlock()
	switch {
	case closed:
		return &Error{Op: "recover", Kind: ErrUnavailable, Err: errors.New("token closed")}
	case moved:
		return nil
	}
	m := t.mod
	if m.gate.shut(time.Now()) {
		return t.waitForRetry()
	}
	if n := m.stall.hung.Load(); n > 0 {
		return &Error{Op: "recover", Kind: ErrUnavailable,
			Err: fmt.Errorf("%d calls to the token have not returned; recovery waits for them", n)}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ctx == nil {
		return &Error{Op: "recover", Kind: ErrUnavailable, Err: errors.New("token closed")}
	}
	if c.abandoned() {
		return abandonedErr("recover")
	}
	if t.gen.Load() != gen {
		return nil
	}
	now := time.Now()
	if m.gate.shut(now) {
		return t.waitForRetry()
	}
	k := t.recoveryCalls()
	if t.down == nil {
		loggedIn := t.loggedIn(k)
		storage := t.probeStorage(k)
		switch {
		case loggedIn && storage == nil:
			return nil
		case storage == nil:
			t.stop(k)
			if t.start(k) == nil {
				m.gate.succeeded()
				return nil
			}
		}
	} else if m.initialised && t.start(k) == nil && t.probeStorage(k) == nil {
		m.gate.succeeded()
		return nil
	}
	m.reinit(k)
	if t.down == nil {
		if err := t.probeStorage(k); err != nil {
			t.stop(k)
			t.gen.Add(1)
			t.down = err
		}
	}
	if t.down != nil {
		m.gate.failed(now)
		return unavailable("recover", t.down)
	}
	m.gate.succeeded()
	return nil
}

// waitForRetry is the error of a recovery that may not run yet.
func (t *Token) waitForRetry() error {
	return &Error{Op: "recover", Kind: ErrUnavailable,
		Err: fmt.Errorf("token unavailable; next recovery attempt in %v", time.Until(time.Unix(0, t.mod.gate.next.Load())).Round(time.Millisecond))}
}

// loggedIn reports whether the login session is open and logged in.
func (t *Token) loggedIn(k p11) bool {
	info, err := k.GetSessionInfo(t.login)
	return err == nil && (info.State == pkcs11.CKS_RW_USER_FUNCTIONS || info.State == pkcs11.CKS_RO_USER_FUNCTIONS)
}

// Random returns n bytes from the token's random number generator.
func (t *Token) Random(ctx context.Context, n int) ([]byte, error) {
	out := make([]byte, n)
	err := t.Do(ctx, func(s *Session) error { return s.Random(out) })
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Ping checks that the token answers and the login is in place.
func (t *Token) Ping(ctx context.Context) error {
	return t.Do(ctx, func(s *Session) error {
		info, err := s.calls().GetSessionInfo(s.h)
		if err != nil {
			return translate("C_GetSessionInfo", err, false)
		}
		if info.State != pkcs11.CKS_RW_USER_FUNCTIONS && info.State != pkcs11.CKS_RO_USER_FUNCTIONS {
			return &Error{Op: "ping", Code: pkcs11.CKR_USER_NOT_LOGGED_IN, Kind: ErrUnavailable}
		}
		return nil
	})
}

// attempts is Do's work, on the goroutine serving c (bound.go): fn at most
// three times, with the repairs between runs.
func (t *Token) attempts(ctx context.Context, fn func(*Session) error, c *call) error {
	var err error
	// A stale handle, then an object not found because the token's storage
	// is gone, then success after recovery: three runs at most.
	for attempt := 0; attempt < 3; attempt++ {
		var gen uint64
		var next repair
		gen, next, err = t.doOnce(ctx, fn, c)
		if c.abandoned() {
			return err // nobody waits for a repair
		}
		switch next {
		case repairNone:
			return err
		case repairProbe:
			if t.storageGood(gen) {
				if sessionBroken(err) {
					continue // the session was bad, not the token: it is gone, try another
				}
				return err
			}
			fallthrough
		case repairRecover:
			if rerr := t.recover(gen, c); rerr != nil {
				return rerr
			}
		}
	}
	return err
}

// repair says what Do does about a failed run of fn.
type repair int

const (
	repairNone    repair = iota // nothing: the error stands
	repairRetry                 // the session or the cached handles were bad and are gone: run fn again
	repairProbe                 // the token's storage may be gone: probe it, and recover if it is
	repairRecover               // the login or the module is gone: recover, then run fn again
)

func (t *Token) doOnce(ctx context.Context, fn func(*Session) error, c *call) (gen uint64, next repair, err error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.ctx == nil {
		return 0, repairNone, &Error{Op: "session", Kind: ErrUnavailable, Err: errors.New("token closed")}
	}
	if c.abandoned() {
		// Waited here for a recovery that held the module; the caller left.
		return t.gen.Load(), repairNone, abandonedErr("session")
	}
	gen = t.gen.Load()
	if t.down != nil {
		return gen, repairRecover, unavailable("session", t.down)
	}
	ps, fresh, err := t.getSession(ctx)
	if err != nil {
		return gen, repairNone, translate("session", err, false)
	}
	s := &Session{t: t, p: ps, c: c}
	if fresh {
		h, err := s.openSession()
		if err != nil {
			t.pool.release(ps)
			err = translate("C_OpenSession", err, false)
			if needsRecovery(err) {
				return gen, repairRecover, err
			}
			return gen, repairNone, err
		}
		t.pool.open(ps, h)
	}
	s.h = ps.h
	err = fn(s)
	// A session whose call overran, or whose caller left, may be in the
	// middle of an operation, or in a module that lost it: never reused.
	if sessionBroken(err) || ps.b.overran || c.abandoned() {
		t.pool.discard(s.cleanupCalls(), ps)
	} else {
		t.pool.put(ps)
	}
	switch {
	case err == nil:
		return gen, repairNone, nil
	case handleStale(err):
		t.keys.reset()
		return gen, repairRetry, err
	case needsRecovery(err):
		return gen, repairRecover, err
	case storageSuspect(err):
		return gen, repairProbe, err
	case sessionBroken(err):
		return gen, repairRetry, err
	}
	return gen, repairNone, err
}

// probeInterval is how long a probe's answer stands: a burst of suspect
// failures costs the token at most one probe per interval.
const probeInterval = 500 * time.Millisecond

// probeState remembers the last storage probe.
type probeState struct {
	mu    sync.Mutex // one probe at a time
	b     bracket    // the probe's calls
	at    time.Time
	gen   uint64
	good  bool
	count atomic.Uint64 // probes run, for tests
}

// storageGood reports whether the token's storage answered a probe, run at
// most once per probeInterval. false also when the Token was restarted since
// gen: then recover has nothing to do and the caller simply retries.
func (t *Token) storageGood(gen uint64) bool {
	p := &t.probe
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gen == gen && time.Since(p.at) < probeInterval {
		return p.good
	}
	t.mu.RLock()
	if t.ctx == nil || t.gen.Load() != gen || t.down != nil {
		t.mu.RUnlock()
		return false
	}
	good := t.probeStorage(p11{t: t, b: &p.b}) == nil
	t.mu.RUnlock()
	p.at, p.gen, p.good = time.Now(), gen, good
	return good
}

// probeStorage asks the token for something it must read from its storage:
// its token info. SoftHSM2 re-reads the token's file for it (~80 µs) and
// fails with CKR_GENERAL_ERROR when the token's directory is gone or was,
// at any time since C_Initialize, unreadable. Called with mu held.
func (t *Token) probeStorage(k p11) error {
	t.probe.count.Add(1)
	_, err := k.GetTokenInfo(t.slot)
	return translate("C_GetTokenInfo", err, false)
}
