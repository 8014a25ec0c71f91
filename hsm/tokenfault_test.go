package hsm

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/hsmkms/hsmkms/softhsm"
	"github.com/hsmkms/hsmkms/softhsm/softhsmtest"
)

// Token-fault tests put softhsmtest.FaultShim between the Token and a real
// SoftHSM2 token: every call reaches SoftHSM2 unless the test commands a
// fault (an error code, or a hang) for chosen functions. Each runs in a
// child process of its own (inChild): the shim is a module of its own that
// loads SoftHSM2, which a process has only once, and the faults re-initialise
// it.

// inShimChild is inChild, with the shim built once by the parent for all
// its children.
func inShimChild(t *testing.T) bool {
	t.Helper()
	softhsmtest.FaultShim(t)
	return inChild(t)
}

// shimmed is a Token on the fault shim over a token of its own.
type shimmed struct {
	*Token
	ctl *softhsmtest.FaultControl
	tok softhsm.Token
	cfg Config
}

// openShimmed makes this process's token and opens a Token on it through the
// shim. The Token is closed when the test ends.
func openShimmed(t *testing.T, mod func(*Config)) *shimmed {
	t.Helper()
	tok, _ := faultToken(t)
	ctl := softhsmtest.NewFaultControl(t)
	ctl.Setenv(t, tok.ModulePath)
	pin, err := tok.UserPIN()
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{ModulePath: softhsmtest.FaultShim(t), TokenLabel: tok.Label, PIN: pin, MaxSessions: 4, SessionKeyCopies: true}
	if mod != nil {
		mod(&cfg)
	}
	tk, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open through the fault shim: %v", err)
	}
	s := &shimmed{Token: tk, ctl: ctl, tok: tok, cfg: cfg}
	t.Cleanup(func() {
		ctl.Clear()
		ctl.Release()
		if err := tk.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// other opens a second Token on the same token, through the same module.
func (s *shimmed) other(t *testing.T) *Token {
	t.Helper()
	tk, err := Open(context.Background(), s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// held is the number of sessions the Token believes it has open: its login
// session and its pool's (idle, in use, or stuck in a call).
func held(tk *Token) int {
	tk.mu.RLock()
	defer tk.mu.RUnlock()
	n := 0
	if tk.login != 0 {
		n++
	}
	if tk.pool != nil {
		n += int(tk.pool.openCount())
	}
	return n
}

// wantNoLeak checks that the module holds exactly the sessions the Token
// believes it holds, and no more than its bound allows.
func (s *shimmed) wantNoLeak(t *testing.T, when string) {
	t.Helper()
	st, err := s.ctl.Status()
	if err != nil {
		t.Fatal(err)
	}
	h := held(s.Token)
	if st.Sessions != h {
		t.Errorf("%s: the module has %d sessions open, the Token believes it has %d", when, st.Sessions, h)
	}
	if st.Sessions > s.cfg.MaxSessions+1 {
		t.Errorf("%s: %d sessions open, more than the pool's %d and the login session", when, st.Sessions, s.cfg.MaxSessions)
	}
	t.Logf("%s: %d sessions open (the Token holds %d)", when, st.Sessions, h)
}

// returns runs op and fails the test if it has not returned within a
// minute: the property is that it returns at all, not how fast.
func returns(t *testing.T, what string, op func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- op() }()
	select {
	case err := <-done:
		return err
	case <-time.After(time.Minute):
		t.Fatalf("%s has not returned after a minute", what)
		return nil
	}
}

// waitReady calls Ready until it succeeds: readiness checks alone must
// bring the token back.
func waitReady(t *testing.T, tk *Token) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		expireReadiness(tk)
		err := returns(t, "Ready", func() error { return tk.Ready(context.Background(), testCanary) })
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready a minute after the fault ended: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitUnhung waits until every call counted stuck has returned.
func waitUnhung(t *testing.T, tk *Token) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for tk.mod.stall.hung.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls still counted stuck a minute after the hang was released", tk.mod.stall.hung.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// keysBefore are keys made and used before a fault: one the Token has used
// (its handle and session copy are cached) and one it never touched (made
// through another Token), with a ciphertext under each.
type keysBefore struct {
	used, dormant     KeyRef
	usedIV, usedCT    []byte
	dormantIV, dormCT []byte
}

func makeKeys(t *testing.T, s *shimmed) keysBefore {
	t.Helper()
	var k keysBefore
	k.used = newKey(t, s.Token)
	k.usedIV, k.usedCT = seal(t, s.Token, k.used, []byte("aad"), []byte("used before"))
	o := s.other(t)
	k.dormant = newKey(t, o)
	k.dormantIV, k.dormCT = seal(t, o, k.dormant, nil, []byte("never used here"))
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Ready(context.Background(), testCanary); err != nil {
		t.Fatalf("Ready before the fault: %v", err)
	}
	return k
}

// wantAllWork checks that every key made before the fault works, and that
// a new one can be made and used.
func (k keysBefore) wantAllWork(t *testing.T, tk *Token) {
	t.Helper()
	if pt, err := open(tk, k.used, k.usedIV, []byte("aad"), k.usedCT); err != nil || string(pt) != "used before" {
		t.Fatalf("decrypt under the key used before the fault = %q, %v", pt, err)
	}
	if pt, err := open(tk, k.dormant, k.dormantIV, nil, k.dormCT); err != nil || string(pt) != "never used here" {
		t.Fatalf("decrypt under a key never used before the fault = %q, %v", pt, err)
	}
	for _, r := range []KeyRef{k.used, k.dormant, newKey(t, tk)} {
		iv, ct := seal(t, tk, r, nil, []byte("after"))
		if pt, err := open(tk, r, iv, nil, ct); err != nil || !bytes.Equal(pt, []byte("after")) {
			t.Fatalf("round trip under %s after the fault = %q, %v", r.Label(), pt, err)
		}
	}
}

// faultOps are the operations tried during a fault.
func faultOps(tk *Token, k keysBefore) []struct {
	name   string
	crypto bool // makes only encrypt, decrypt or sign calls once the session is open
	run    func() error
} {
	ctx := context.Background()
	return []struct {
		name   string
		crypto bool
		run    func() error
	}{
		{"encrypt, used key", true, func() error { return encryptErr(tk, k.used) }},
		{"decrypt, dormant key", false, func() error { _, err := open(tk, k.dormant, k.dormantIV, nil, k.dormCT); return err }},
		{"generate key", false, func() error { return tk.GenerateAESKey(ctx, newRef()) }},
		{"random", false, func() error { _, err := tk.Random(ctx, 16); return err }},
		{"readiness", true, func() error { expireReadiness(tk); return tk.Ready(ctx, testCanary) }},
	}
}

// softhsmtest's CKR codes, for tests that do not import a PKCS#11 package,
// are the spec's.
func TestFaultShimCodes(t *testing.T) {
	for got, want := range map[uint]uint{
		softhsmtest.CKRDeviceError:          pkcs11.CKR_DEVICE_ERROR,
		softhsmtest.CKRDeviceRemoved:        pkcs11.CKR_DEVICE_REMOVED,
		softhsmtest.CKRSessionHandleInvalid: pkcs11.CKR_SESSION_HANDLE_INVALID,
		softhsmtest.CKRTokenNotPresent:      pkcs11.CKR_TOKEN_NOT_PRESENT,
		softhsmtest.CKRUserNotLoggedIn:      pkcs11.CKR_USER_NOT_LOGGED_IN,
	} {
		if got != want {
			t.Errorf("softhsmtest code %#x, want %#x (%s)", got, want, pkcs11.Error(want))
		}
	}
}

// Every error a network HSM gives for a lost session, login or device, on
// every function or only on the cryptographic calls: while it lasts, every
// operation fails at once with ErrUnavailable, readiness says not ready, and
// the module holds no session the Token forgot; when it ends, readiness
// checks alone bring the token back, and every key works again, those used
// before the fault and those never used.
func TestTokenFaultErrors(t *testing.T) {
	for _, code := range []struct {
		name string
		ckr  uint
	}{
		{"CKR_DEVICE_ERROR", pkcs11.CKR_DEVICE_ERROR},
		{"CKR_SESSION_HANDLE_INVALID", pkcs11.CKR_SESSION_HANDLE_INVALID},
		{"CKR_USER_NOT_LOGGED_IN", pkcs11.CKR_USER_NOT_LOGGED_IN},
		{"CKR_DEVICE_REMOVED", pkcs11.CKR_DEVICE_REMOVED},
		{"CKR_TOKEN_NOT_PRESENT", pkcs11.CKR_TOKEN_NOT_PRESENT},
	} {
		for _, scope := range []struct {
			name      string
			functions []string
		}{
			{"all", []string{"all"}},
			{"crypto", []string{"C_Encrypt*", "C_Decrypt*", "C_Sign*"}},
		} {
			t.Run(code.name+"/"+scope.name, func(t *testing.T) {
				if !inShimChild(t) {
					return
				}
				s := openShimmed(t, nil)
				k := makeKeys(t, s)
				s.wantNoLeak(t, "before the fault")

				s.ctl.Set(softhsmtest.Fail(code.ckr), scope.functions, 0)
				// Twice: the first meets the fault, the second the state it left.
				for round := 0; round < 2; round++ {
					for _, op := range faultOps(s.Token, k) {
						err := returns(t, op.name, op.run)
						if scope.name == "crypto" && !op.crypto {
							// Decryption, generation and random bytes make
							// other calls first, or only: those still work
							// unless an earlier failure took the token down.
							if err != nil && !errors.Is(err, ErrUnavailable) {
								t.Errorf("%s during the fault: %v, want success or ErrUnavailable", op.name, err)
							}
							continue
						}
						if !errors.Is(err, ErrUnavailable) {
							t.Errorf("%s during the fault: %v, want ErrUnavailable", op.name, err)
						}
						t.Logf("during the fault, %s: %v", op.name, err)
					}
				}
				s.wantNoLeak(t, "during the fault")

				s.ctl.Clear()
				waitReady(t, s.Token)
				k.wantAllWork(t, s.Token)
				s.wantNoLeak(t, "after the fault")
			})
		}
	}
}

// A fault on one call of one session is invisible to the caller: Do runs
// the callback again on another session and the operation succeeds; the
// session that failed is closed, never handed out again. A refused input
// leaves the session in the pool: a client sending bad ciphertexts or
// lengths must not make the pool close and reopen sessions, as crypto11's
// pool evicts on every error (and, for session errors, puts back sessions
// that will fail again).
func TestPoolEvictsSessionsByErrorClass(t *testing.T) {
	if !inShimChild(t) {
		return
	}
	s := openShimmed(t, func(c *Config) { c.MaxSessions = 1 })
	r := newKey(t, s.Token)
	// runs encrypts once and returns the session handle each run of the
	// callback got (Do runs it again after a session fault).
	runs := func() ([]pkcs11.SessionHandle, error) {
		var hs []pkcs11.SessionHandle
		err := s.Do(context.Background(), func(sess *Session) error {
			hs = append(hs, sess.h)
			iv := make([]byte, GCMIVLen)
			if err := sess.IV(iv); err != nil {
				return err
			}
			_, err := sess.EncryptGCM(r, iv, nil, []byte("x"))
			return err
		})
		return hs, err
	}
	if _, err := runs(); err != nil { // fills the IV batch: the faults below hit C_EncryptInit
		t.Fatal(err)
	}
	t.Run("session-fatal", func(t *testing.T) {
		for _, code := range []uint{
			pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED, pkcs11.CKR_DEVICE_ERROR,
			pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_USER_NOT_LOGGED_IN,
			pkcs11.CKR_OPERATION_ACTIVE,
		} {
			s.ctl.Set(softhsmtest.Fail(code), []string{"C_EncryptInit"}, 1)
			hs, err := runs()
			if err != nil {
				t.Errorf("%s once: %v, want success on another session", pkcs11.Error(code), err)
				continue
			}
			if len(hs) != 2 || hs[0] == hs[1] {
				t.Errorf("%s once: the callback ran on sessions %v, want the failed one replaced", pkcs11.Error(code), hs)
			}
			after, err := runs()
			if err != nil || after[0] == hs[0] {
				t.Errorf("%s: the failed session %d handed out again (%v, %v)", pkcs11.Error(code), hs[0], after, err)
			}
			s.wantNoLeak(t, pkcs11.Error(code).Error())
		}
	})
	t.Run("input", func(t *testing.T) {
		for _, tc := range []struct {
			code uint
			want error
		}{
			{pkcs11.CKR_DATA_LEN_RANGE, ErrInvalidInput},
			{pkcs11.CKR_MECHANISM_PARAM_INVALID, ErrInvalidInput},
			{pkcs11.CKR_ARGUMENTS_BAD, ErrInvalidInput},
			{pkcs11.CKR_ENCRYPTED_DATA_INVALID, ErrInvalidCiphertext},
			{pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE, ErrInvalidCiphertext},
			{pkcs11.CKR_SIGNATURE_INVALID, ErrInternal},
			{pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED, ErrInternal},
		} {
			s.ctl.Set(softhsmtest.Fail(tc.code), []string{"C_EncryptInit"}, 1)
			hs, err := runs()
			if !errors.Is(err, tc.want) {
				t.Errorf("%s: %v, want %v", pkcs11.Error(tc.code), err, tc.want)
			}
			after, err := runs()
			if err != nil || len(hs) != 1 || after[0] != hs[0] {
				t.Errorf("%s: the session was not kept (first %v, then %v, %v)", pkcs11.Error(tc.code), hs, after, err)
			}
		}
		s.wantNoLeak(t, "after refused inputs")
	})
}

// hangConfig bounds calls at a second: long for SoftHSM2 (microseconds per
// call, even under the race detector), short for a test.
func hangConfig(c *Config) {
	c.CallTimeout = time.Second
	c.LongCallTimeout = time.Second
}

// A token that stops answering: the call caught in it returns ErrTimeout
// after CallTimeout; meanwhile the token is not ready and calls fail at
// once (ErrUnavailable) or, one at a time as probes, after the bound
// (ErrTimeout); no call waits longer. When the token answers again,
// readiness checks bring it back, every key works, the calls that were
// stuck return and their sessions are closed.
func TestHungTokenTimesOutAndRecovers(t *testing.T) {
	if !inShimChild(t) {
		return
	}
	s := openShimmed(t, hangConfig)
	k := makeKeys(t, s)
	stalls := s.mod.stall.stalls.Load()

	s.ctl.Set(softhsmtest.Hang, []string{"all"}, 0)
	err := returns(t, "encrypt on a hung token", func() error { return encryptErr(s.Token, k.used) })
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("encrypt on a hung token: %v, want ErrTimeout", err)
	}
	if s.mod.stall.stalls.Load() == stalls {
		t.Fatal("the hung call did not mark the token stalled")
	}
	for round := 0; round < 3; round++ {
		for _, op := range faultOps(s.Token, k) {
			err := returns(t, op.name, op.run)
			if !errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrTimeout) {
				t.Errorf("%s on a hung token: %v, want ErrUnavailable or ErrTimeout", op.name, err)
			}
			t.Logf("hung, %s: %v", op.name, err)
		}
		if n := s.mod.stall.hung.Load(); n < 1 || n > int64(s.cfg.MaxSessions) {
			t.Errorf("%d calls counted stuck, want 1..%d", n, s.cfg.MaxSessions)
		}
	}
	st, _ := s.ctl.Status()
	t.Logf("%d calls blocked in the token, %d counted stuck", st.Hanging, s.mod.stall.hung.Load())

	s.ctl.Clear()
	s.ctl.Release()
	waitUnhung(t, s.Token)
	waitReady(t, s.Token)
	k.wantAllWork(t, s.Token)
	s.wantNoLeak(t, "after the hang")
}

// Calls lost in an HSM that came back (a network HSM restarted; its old
// connections never answer): the token is usable again while they are
// still stuck; when they finally return, their sessions are closed.
func TestTokenRecoversWhileLostCallsStayStuck(t *testing.T) {
	if !inShimChild(t) {
		return
	}
	s := openShimmed(t, hangConfig)
	k := makeKeys(t, s)
	s.ctl.Set(softhsmtest.Hang, []string{"C_Encrypt*"}, 0)
	if err := returns(t, "encrypt", func() error { return encryptErr(s.Token, k.used) }); !errors.Is(err, ErrTimeout) {
		t.Fatalf("encrypt on a hung token: %v, want ErrTimeout", err)
	}
	s.ctl.Clear() // new calls answer; the stuck one stays blocked

	waitReady(t, s.Token)
	k.wantAllWork(t, s.Token)
	if st, _ := s.ctl.Status(); st.Hanging != 1 || s.mod.stall.hung.Load() != 1 {
		t.Fatalf("%d calls blocked, %d counted stuck; want the lost call, 1", st.Hanging, s.mod.stall.hung.Load())
	}
	s.wantNoLeak(t, "recovered, one call still lost")

	s.ctl.Release()
	waitUnhung(t, s.Token)
	s.wantNoLeak(t, "after the lost call returned")
	k.wantAllWork(t, s.Token)
}

// However many callers a hung token meets, the calls stuck in it are
// bounded: each holds its session, and once every session is stuck, calls
// fail at once, probes included, without adding to them.
func TestStuckCallsAreBounded(t *testing.T) {
	if !inShimChild(t) {
		return
	}
	s := openShimmed(t, func(c *Config) { hangConfig(c); c.MaxSessions = 3 })
	k := makeKeys(t, s)
	s.ctl.Set(softhsmtest.Hang, []string{"all"}, 0)
	var wg sync.WaitGroup
	for g := 0; g < 10; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				err := returns(t, "encrypt", func() error { return encryptErr(s.Token, k.used) })
				if !errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrTimeout) {
					t.Errorf("encrypt on a hung token: %v", err)
				}
				if n := s.mod.stall.hung.Load(); n > int64(s.cfg.MaxSessions) {
					t.Errorf("%d calls stuck, more than the %d sessions", n, s.cfg.MaxSessions)
				}
				time.Sleep(300 * time.Millisecond) // lets probes through
			}
		}()
	}
	wg.Wait()
	// Probes keep coming until every session is stuck.
	deadline := time.Now().Add(time.Minute)
	for s.mod.stall.hung.Load() < int64(s.cfg.MaxSessions) {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls stuck after a minute of probes, want %d", s.mod.stall.hung.Load(), s.cfg.MaxSessions)
		}
		expireReadiness(s.Token)
		s.Ready(context.Background(), testCanary)
		time.Sleep(100 * time.Millisecond)
	}
	before, _ := s.ctl.Status()
	for i := 0; i < 20; i++ {
		err := returns(t, "encrypt", func() error { return encryptErr(s.Token, k.used) })
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("encrypt with every session stuck: %v, want ErrUnavailable at once", err)
		}
	}
	if after, _ := s.ctl.Status(); after.Hanging != before.Hanging {
		t.Fatalf("calls with every session stuck reached the token: %d blocked, then %d", before.Hanging, after.Hanging)
	}
	t.Logf("%d calls blocked in the token, %d counted stuck", before.Hanging, s.mod.stall.hung.Load())

	s.ctl.Clear()
	s.ctl.Release()
	waitUnhung(t, s.Token)
	waitReady(t, s.Token)
	k.wantAllWork(t, s.Token)
	s.wantNoLeak(t, "after the hang")
}

// Recovery itself meets the hang: the token was lost (the module could not
// be initialised again) and, when recovery next tries, C_Initialize does not
// return. Recovery holds the module to itself; its caller still gets
// ErrTimeout after the bound, and every other caller fails at once instead
// of queueing behind it.
func TestHangDuringRecoveryDoesNotHangCallers(t *testing.T) {
	if !inShimChild(t) {
		return
	}
	s := openShimmed(t, hangConfig)
	k := makeKeys(t, s)
	s.ctl.Set(softhsmtest.Fail(pkcs11.CKR_DEVICE_REMOVED), []string{"all"}, 0)
	if err := returns(t, "encrypt", func() error { return encryptErr(s.Token, k.used) }); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("encrypt with the device removed: %v, want ErrUnavailable", err)
	}
	s.ctl.Set(softhsmtest.Hang, []string{"all"}, 0)
	// The next recovery attempt (after the retry spacing) hangs.
	deadline := time.Now().Add(time.Minute)
	for {
		err := returns(t, "encrypt", func() error { return encryptErr(s.Token, k.used) })
		if errors.Is(err, ErrTimeout) {
			break
		}
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("encrypt while the token is lost: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("no recovery attempt met the hang within a minute")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s.mod.stall.hung.Load() == 0 {
		t.Fatal("the hung recovery call was not counted stuck")
	}
	for _, op := range faultOps(s.Token, k) {
		if err := returns(t, op.name, op.run); !errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrTimeout) {
			t.Errorf("%s during a hung recovery: %v, want ErrUnavailable or ErrTimeout", op.name, err)
		}
	}
	s.ctl.Clear()
	s.ctl.Release()
	waitUnhung(t, s.Token)
	waitReady(t, s.Token)
	k.wantAllWork(t, s.Token)
	s.wantNoLeak(t, "after the hung recovery")
}

// A late answer is for nobody: plaintext a decryption returns after its
// caller stopped waiting is cleared and not handed on, and the session is
// closed.
func TestLateDecryptionIsDiscarded(t *testing.T) {
	if !inShimChild(t) {
		return
	}
	s := openShimmed(t, hangConfig)
	r := newKey(t, s.Token)
	iv, ct := seal(t, s.Token, r, nil, []byte("secret"))
	s.ctl.Set(softhsmtest.Hang, []string{"C_Decrypt"}, 1)
	var got []byte
	var callbackErr error
	finished := make(chan struct{})
	err := returns(t, "decrypt", func() error {
		return s.Do(context.Background(), func(sess *Session) error {
			defer close(finished)
			got, callbackErr = sess.DecryptGCM(r, iv, nil, ct)
			return callbackErr
		})
	})
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("decrypt on a hung token: %v, want ErrTimeout", err)
	}
	s.ctl.Release()
	<-finished // the callback ran to its end after Do returned
	if got != nil || !errors.Is(callbackErr, ErrTimeout) {
		t.Fatalf("the late decryption gave its callback %q, %v; want nothing and ErrTimeout", got, callbackErr)
	}
	waitUnhung(t, s.Token)
	waitReady(t, s.Token)
	s.wantNoLeak(t, "after the late answer")
}
