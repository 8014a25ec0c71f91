package hsm

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/pkcs11"
)

// readyTTL is how long a readiness answer stands: a flood of readiness
// probes costs the token one check per readyTTL (or per recovery).
const readyTTL = 2 * time.Second

// canaryPlaintext is what the readiness check encrypts; it is no secret.
var canaryPlaintext = []byte("hsmkms readiness check")

// canaryState is the last readiness answer and the canary's handle.
type canaryState struct {
	mu  chan struct{} // one check at a time: a lock a waiter's context can end
	at  time.Time
	gen uint64 // the Token's generation when the answer was given
	ref KeyRef
	err error
	// handle is the canary's token object, valid while the Token's
	// generation is handleGen. Guarded by objMu, not mu: the check's
	// callback may still run after Ready stopped waiting for it.
	objMu     sync.Mutex
	handle    pkcs11.ObjectHandle
	handleGen uint64
	checks    atomic.Uint64 // checks run, for tests
}

// Ready reports whether the token works end to end, its storage included: it
// encrypts and decrypts with AES-GCM under canary, an AES key used as the
// token object itself (a session copy lives in memory and keeps working when
// the token's storage is gone), generating it the first time. canary must be
// a reference no other key can have. The answer stands for a couple of
// seconds, or until the Token recovers from a fault. A failure goes through
// Do's repairs like any other, so readiness probes also drive recovery.
func (t *Token) Ready(ctx context.Context, canary KeyRef) error {
	c := &t.canary
	select {
	case c.mu <- struct{}{}:
		defer func() { <-c.mu }()
	case <-ctx.Done():
		return translate("readiness check", ctx.Err(), false)
	}
	if c.ref == canary && c.gen == t.generation() && !c.at.IsZero() && time.Since(c.at) < readyTTL {
		return c.err
	}
	c.checks.Add(1)
	err := t.Do(ctx, func(s *Session) error { return s.canaryRoundTrip(canary) })
	if errors.Is(err, ErrTimeout) {
		// The caller's deadline, or every session busy: no answer about the
		// token to keep for others.
		c.at = time.Time{}
		return err
	}
	c.at, c.gen, c.ref, c.err = time.Now(), t.generation(), canary, err
	return err
}

// generation returns the Token's current generation.
func (t *Token) generation() uint64 { return t.gen.Load() }

// canaryRoundTrip encrypts and decrypts under ref's token object.
func (s *Session) canaryRoundTrip(ref KeyRef) error {
	c := &s.t.canary
	h, err := s.canaryObject(ref)
	if err != nil {
		return err
	}
	iv := make([]byte, GCMIVLen)
	err = s.IV(iv)
	var ct, pt []byte
	if err == nil {
		ct, err = s.gcmWith(false, h, iv, nil, canaryPlaintext)
	}
	if err == nil {
		pt, err = s.gcmWith(true, h, iv, nil, ct)
	}
	if err == nil && !bytes.Equal(pt, canaryPlaintext) {
		err = &Error{Op: "readiness check", Kind: ErrInternal, Err: errors.New("the canary decrypted to other bytes")}
	}
	if err != nil {
		c.objMu.Lock()
		c.handle = 0 // find it again next time
		c.objMu.Unlock()
	}
	return err
}

// canaryObject returns the handle of ref's token object, generating the key
// if the token has none.
func (s *Session) canaryObject(ref KeyRef) (pkcs11.ObjectHandle, error) {
	t, c := s.t, &s.t.canary
	c.objMu.Lock()
	defer c.objMu.Unlock()
	if c.handle != 0 && c.handleGen == t.gen.Load() {
		return c.handle, nil
	}
	t.objectsMu.Lock()
	defer t.objectsMu.Unlock()
	h, err := s.findLocked(ref, pkcs11.CKO_SECRET_KEY)
	if errors.Is(err, ErrNotFound) {
		mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}
		h, err = s.calls().GenerateKey(s.h, mech, aesTemplate(ref, false))
		err = translate("C_GenerateKey", err, false)
	}
	if err != nil {
		return 0, err
	}
	c.handle, c.handleGen = h, t.gen.Load()
	return h, nil
}
