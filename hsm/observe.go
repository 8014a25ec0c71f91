package hsm

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/pkcs11"
)

// Observer is told what the token does, for metrics: the metrics package
// implements it, and hsm imports nothing of it. Its methods are called on the
// request path, from many goroutines at once: they must be quick, must not
// block and must not call the Token. Config.Observer nil costs nothing, not
// even a clock read.
type Observer interface {
	// TokenCall reports one PKCS#11 operation: op is the PKCS#11 function
	// that does the work ("C_Encrypt", "C_Sign", … — a C_*Init before it is
	// included), d how long it took, err its error (nil on success). The
	// set of op values is fixed by this package's code; CKRName names the
	// CKR code of an error that has one.
	TokenCall(op string, d time.Duration, err error)
	// SessionWait reports how long an operation waited for a session of
	// the pool (next to nothing when one was idle). err is set when it got
	// none: its deadline passed. Opening a new session is a TokenCall
	// ("C_OpenSession").
	SessionWait(d time.Duration, err error)
}

// Token call kinds reported to the Observer.
const (
	callEncrypt         = "C_Encrypt"
	callDecrypt         = "C_Decrypt"
	callSign            = "C_Sign"
	callVerify          = "C_Verify"
	callRandom          = "C_GenerateRandom"
	callGenerateKey     = "C_GenerateKey"
	callGenerateKeyPair = "C_GenerateKeyPair"
	callCopyObject      = "C_CopyObject"
	callDestroyObject   = "C_DestroyObject"
	callFindObjects     = "C_FindObjects"
	callOpenSession     = "C_OpenSession"
)

// Observations read the monotonic clock from epoch0 (bound.go): time.Since
// on a Time with a monotonic reading reads only the monotonic clock, where
// time.Now reads the wall clock too (30 vs 57 ns on a KVM guest), and every
// request reads it a few times.

// clock returns the start of a call to observe: 0 when nothing observes the
// Token, so that an unobserved Token never reads the clock.
func (t *Token) clock() time.Duration {
	if t.cfg.Observer == nil {
		return 0
	}
	return time.Since(epoch0)
}

// observe reports a call that started at start (from clock) and failed
// with *err, or succeeded. Call sites defer it:
//
//	defer s.t.observe(callEncrypt, s.t.clock(), &err)
func (t *Token) observe(op string, start time.Duration, err *error) {
	if o := t.cfg.Observer; o != nil {
		o.TokenCall(op, time.Since(epoch0)-start, *err)
	}
}

// getSession takes a session from the pool for an operation (pool.take),
// telling the Observer how long that took. fresh means the caller opens it
// (openSession) or gives the room back. The caller holds mu for reading.
func (t *Token) getSession(ctx context.Context) (ps *pooled, fresh bool, err error) {
	start := t.clock()
	ps, fresh, err = t.pool.take(ctx, t.cfg.WaitTimeout)
	if o := t.cfg.Observer; o != nil {
		o.SessionWait(time.Since(epoch0)-start, err)
	}
	return ps, fresh, err
}

// openSession opens the PKCS#11 session of a fresh pool entry.
func (s *Session) openSession() (h pkcs11.SessionHandle, err error) {
	defer s.t.observe(callOpenSession, s.t.clock(), &err)
	return s.calls().OpenSession(s.t.slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
}

// CKRName returns the name of the PKCS#11 return value err carries
// ("CKR_DEVICE_ERROR"), a hexadecimal "CKR_0x…" for a code without a known
// name (vendor codes), or "" when err carries none (nil, a timeout, a
// failure decided in Go).
func CKRName(err error) string {
	code := ckr(err)
	switch code {
	case 0:
		return ""
	case ckrAEADDecryptFailed:
		return "CKR_AEAD_DECRYPT_FAILED"
	}
	// miekg/pkcs11 names the code only in its error text:
	// "pkcs11: 0x30: CKR_DEVICE_ERROR".
	msg := pkcs11.Error(code).Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 && strings.HasPrefix(msg[i+2:], "CKR_") {
		return msg[i+2:]
	}
	return fmt.Sprintf("CKR_0x%08X", code)
}

// SessionStats are the figures of the session pool: sessions lent to
// operations, sessions open and idle, and the pool's bound.
type SessionStats struct {
	InUse, Idle, Max int
}

// sessionStatsState is what SessionStats keeps between calls.
type sessionStatsState struct {
	last atomic.Pointer[SessionStats]
}

// SessionStats returns the session pool's figures now. While the Token is
// being recovered (or a recovery waits for running calls: the moment a hung
// call is worth seeing) the pool cannot be read without waiting, and the
// last figures read are returned instead: a metrics scrape never waits for
// the token.
func (t *Token) SessionStats() SessionStats {
	if !t.mu.TryRLock() {
		if last := t.sessionStats.last.Load(); last != nil {
			return *last
		}
		return SessionStats{Max: t.cfg.MaxSessions}
	}
	st := SessionStats{Max: t.cfg.MaxSessions}
	if t.ctx != nil && t.pool != nil {
		// Two reads, not one snapshot: a session may change hands in
		// between, so the difference is clamped.
		open, idle := len(t.pool.slots), len(t.pool.idle)
		st.InUse, st.Idle = max(open-idle, 0), idle
	}
	t.mu.RUnlock()
	t.sessionStats.last.Store(&st)
	return st
}
