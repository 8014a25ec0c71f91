package hsm

import (
	"context"
	"crypto"
	"crypto/sha256"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/miekg/pkcs11"
)

// recordingObserver keeps what a Token tells it.
type recordingObserver struct {
	mu    sync.Mutex
	calls []observedCall
	waits []error
}

type observedCall struct {
	op  string
	d   time.Duration
	err error
}

func (o *recordingObserver) TokenCall(op string, d time.Duration, err error) {
	o.mu.Lock()
	o.calls = append(o.calls, observedCall{op, d, err})
	o.mu.Unlock()
}

func (o *recordingObserver) SessionWait(_ time.Duration, err error) {
	o.mu.Lock()
	o.waits = append(o.waits, err)
	o.mu.Unlock()
}

// take returns and forgets what was recorded.
func (o *recordingObserver) take() ([]observedCall, []error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	c, w := o.calls, o.waits
	o.calls, o.waits = nil, nil
	return c, w
}

func ops(calls []observedCall) []string {
	var out []string
	for _, c := range calls {
		out = append(out, c.op)
	}
	return out
}

// TestObserverSeesTokenCalls: each kind of operation is reported once, under
// its PKCS#11 function, with its real error; every operation's session wait
// is reported.
func TestObserverSeesTokenCalls(t *testing.T) {
	obs := &recordingObserver{}
	tk := openToken(t, func(c *Config) { c.Observer = obs })
	ctx := context.Background()

	r := newKey(t, tk)
	calls, waits := obs.take()
	if !slices.Contains(ops(calls), callGenerateKey) || !slices.Contains(ops(calls), callCopyObject) {
		t.Errorf("key generation reported %v; want %s and %s (staged creation)", ops(calls), callGenerateKey, callCopyObject)
	}
	if len(waits) == 0 {
		t.Error("no session wait reported for the generation")
	}

	iv, ct := seal(t, tk, r, []byte("aad"), []byte("secret"))
	calls, waits = obs.take()
	for _, want := range []string{callRandom, callEncrypt} {
		if n := countOp(calls, want); n != 1 {
			t.Errorf("encrypt: %s reported %d times, want 1 (all: %v)", want, n, ops(calls))
		}
	}
	for _, c := range calls {
		if c.err != nil {
			t.Errorf("%s reported error %v", c.op, c.err)
		}
	}
	if len(waits) != 1 || waits[0] != nil {
		t.Errorf("session waits %v, want one without error", waits)
	}

	// A refused ciphertext: SoftHSM2 answers a bad tag with CKR_GENERAL_ERROR,
	// reported as the call's error with its code.
	bad := slices.Clone(ct)
	bad[0] ^= 1
	if _, err := open(tk, r, iv, []byte("aad"), bad); !errors.Is(err, ErrInvalidCiphertext) {
		t.Fatalf("decrypt of a damaged ciphertext: %v", err)
	}
	calls, _ = obs.take()
	var dec *observedCall
	for i := range calls {
		if calls[i].op == callDecrypt {
			dec = &calls[i]
		}
	}
	if dec == nil {
		t.Fatalf("no %s reported: %v", callDecrypt, ops(calls))
	}
	if !errors.Is(dec.err, ErrInvalidCiphertext) || CKRName(dec.err) == "" {
		t.Errorf("failed decrypt reported with %v (CKR %q); want ErrInvalidCiphertext with a CKR code", dec.err, CKRName(dec.err))
	}

	// Sign and Verify on an EC pair, and a MAC.
	pair := newRef()
	if err := tk.GenerateECKeyPair(ctx, pair, P256); err != nil {
		t.Fatal(err)
	}
	obs.take()
	digest := sha256.Sum256([]byte("message"))
	err := tk.Do(ctx, func(s *Session) error {
		sig, err := s.Sign(pair, ECDSA, crypto.SHA256, digest[:])
		if err != nil {
			return err
		}
		return s.Verify(pair, ECDSA, crypto.SHA256, digest[:], sig)
	})
	if err != nil {
		t.Fatal(err)
	}
	calls, _ = obs.take()
	if countOp(calls, callSign) != 1 || countOp(calls, callVerify) != 1 {
		t.Errorf("sign and verify reported %v", ops(calls))
	}
}

func countOp(calls []observedCall, op string) int {
	n := 0
	for _, c := range calls {
		if c.op == op {
			n++
		}
	}
	return n
}

// TestObserverSessionWaitTimeout: an operation that gets no session reports
// its wait with the timeout.
func TestObserverSessionWaitTimeout(t *testing.T) {
	obs := &recordingObserver{}
	tk := openToken(t, func(c *Config) { c.Observer = obs; c.MaxSessions = 1 })
	hold := make(chan struct{})
	held := make(chan struct{})
	go tk.Do(context.Background(), func(*Session) error { close(held); <-hold; return nil })
	<-held
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	err := tk.Do(ctx, func(*Session) error { return nil })
	cancel()
	close(hold)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Do with every session busy: %v, want ErrTimeout", err)
	}
	// Do returns as its context ends; the goroutine that waited for the
	// session reports the wait just after.
	var waits []error
	timedOut := 0
	for deadline := time.Now().Add(5 * time.Second); timedOut == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		_, w := obs.take()
		waits = append(waits, w...)
		for _, w := range w {
			if errors.Is(w, context.DeadlineExceeded) {
				timedOut++
			}
		}
	}
	if timedOut != 1 {
		t.Errorf("session waits %v: want exactly one that timed out", waits)
	}
}

// TestSessionStats: sessions lent to operations are in use, returned ones
// idle, and the bound is the configured one.
func TestSessionStats(t *testing.T) {
	tk := openToken(t, func(c *Config) { c.MaxSessions = 4 })
	if st := tk.SessionStats(); st != (SessionStats{Max: 4}) {
		t.Errorf("fresh token: %+v, want no sessions and max 4", st)
	}
	var inside SessionStats
	err := tk.Do(context.Background(), func(*Session) error {
		inside = tk.SessionStats()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if inside != (SessionStats{InUse: 1, Max: 4}) {
		t.Errorf("during an operation: %+v, want one in use", inside)
	}
	if st := tk.SessionStats(); st != (SessionStats{Idle: 1, Max: 4}) {
		t.Errorf("after it: %+v, want one idle", st)
	}
	// While recovery holds the module's lock, the last figures are returned
	// at once rather than waiting for it.
	tk.mu.Lock()
	done := make(chan SessionStats)
	go func() { done <- tk.SessionStats() }()
	select {
	case st := <-done:
		if st != (SessionStats{Idle: 1, Max: 4}) {
			t.Errorf("under the lock: %+v, want the last figures", st)
		}
	case <-time.After(10 * time.Second):
		t.Error("SessionStats waited for the module's lock")
	}
	tk.mu.Unlock()
}

func TestCKRName(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"nil", nil, ""},
		{"no code", &Error{Op: "x", Kind: ErrTimeout, Err: context.DeadlineExceeded}, ""},
		{"raw module error", pkcs11.Error(pkcs11.CKR_DEVICE_ERROR), "CKR_DEVICE_ERROR"},
		{"translated", translate("C_Encrypt", pkcs11.Error(pkcs11.CKR_SESSION_HANDLE_INVALID), false), "CKR_SESSION_HANDLE_INVALID"},
		{"PKCS#11 3.0 code", &Error{Op: "C_Decrypt", Code: ckrAEADDecryptFailed, Kind: ErrInvalidCiphertext}, "CKR_AEAD_DECRYPT_FAILED"},
		{"vendor code", pkcs11.Error(0x80000123), "CKR_0x80000123"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := CKRName(tc.err); got != tc.want {
				t.Errorf("CKRName = %q, want %q", got, tc.want)
			}
		})
	}
}
