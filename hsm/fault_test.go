package hsm

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hsmkms/hsmkms/softhsm"
)

// faultChildEnv marks the child process a fault test runs in. SoftHSM2
// reads SOFTHSM2_CONF once per process and this test binary shares one
// token per process, so a test that takes a token's storage away runs in a
// process of its own, on a token of its own, and cannot disturb the others.
const faultChildEnv = "HSMKMS_HSM_FAULT_CHILD"

// inChild runs the calling test alone in a fresh process of this test
// binary and reports whether this is that child. The parent fails if the
// child fails or did not run the test.
func inChild(t *testing.T) bool {
	t.Helper()
	if os.Getenv(faultChildEnv) != "" {
		return true
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), faultChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("child process: %v\n%s", err, out)
	}
	t.Logf("child process:\n%s", out)
	return false
}

// faultToken makes a SoftHSM2 token in a directory of its own and points
// this process's SOFTHSM2_CONF at it, before anything loads the module. It
// returns the token and its object directory, which SoftHSM2 reads its
// objects from.
func faultToken(t *testing.T) (softhsm.Token, string) {
	t.Helper()
	modules.Lock()
	loaded := len(modules.m)
	modules.Unlock()
	if loaded != 0 {
		t.Fatal("the PKCS#11 module was loaded before this process's own token was set up")
	}
	tok, err := softhsm.Init(context.Background(), t.TempDir(), "hsmkms-fault")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", tok.ConfigPath)
	dirs, err := os.ReadDir(filepath.Join(tok.Dir, "tokens"))
	if err != nil || len(dirs) != 1 {
		t.Fatalf("token directory: %v, %d entries", err, len(dirs))
	}
	return tok, filepath.Join(tok.Dir, "tokens", dirs[0].Name())
}

// takeAway renames dir to away and returns the function that puts it back.
// If the test ends first, cleanup puts it back.
func takeAway(t *testing.T, dir, away string) (restore func()) {
	t.Helper()
	if err := os.Rename(dir, away); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	restore = func() {
		once.Do(func() {
			if err := os.Rename(away, dir); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Cleanup(restore)
	return restore
}

func openWith(t *testing.T, tok softhsm.Token, copies bool) *Token {
	t.Helper()
	pin, err := tok.UserPIN()
	if err != nil {
		t.Fatal(err)
	}
	tk, err := Open(context.Background(), Config{ModulePath: tok.ModulePath, TokenLabel: tok.Label, PIN: pin, SessionKeyCopies: copies})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return tk
}

// testCanary is the readiness canary of these tests; no other test key has
// its id.
var testCanary = KeyRef{KeyID: [16]byte{'h', 's', 'm', '-', 't', 'e', 's', 't', '-', 'c', 'a', 'n', 'a', 'r', 'y'}, Version: 1}

// expireReadiness drops the Token's cached readiness answer.
func expireReadiness(tk *Token) {
	tk.canary.mu <- struct{}{}
	tk.canary.at = time.Time{}
	<-tk.canary.mu
}

func encryptErr(tk *Token, r KeyRef) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return tk.Do(ctx, func(s *Session) error {
		iv := make([]byte, GCMIVLen)
		if err := s.IV(iv); err != nil {
			return err
		}
		_, err := s.EncryptGCM(r, iv, nil, []byte("x"))
		return err
	})
}

// The token's directory goes away and comes back, behind the process's
// back, as in issue 9 (item 5). SoftHSM2 then marks the token invalid for
// the life of the module: without recovery, every key first used after the
// fault stayed unavailable and every key generation failed until a restart,
// and the readiness check, which touched no storage, said ready throughout.
// A re-initialisation while the directory is gone finds no token, so
// recovery must keep trying, at a bounded rate, until it is back.
func TestTokenFaultRecovery(t *testing.T) {
	if !inChild(t) {
		return
	}
	tok, dir := faultToken(t)
	// Out of SoftHSM2's token store: renamed within it, the directory would
	// be found again, as a token of its own, by the next C_Initialize.
	testFaultRecovery(t, tok, dir, filepath.Join(tok.Dir, "away"), true)
}

// The whole token store (SoftHSM2's directories.tokendir) goes away and
// comes back: then even C_Initialize fails until it is back.
func TestTokenStoreFaultRecovery(t *testing.T) {
	if !inChild(t) {
		return
	}
	tok, _ := faultToken(t)
	testFaultRecovery(t, tok, filepath.Join(tok.Dir, "tokens"), filepath.Join(tok.Dir, "away"), false)
}

// testFaultRecovery renames dir to away while two Tokens share the module,
// one with session copies and one without, and checks that both fail fast
// while it is away and both come back, with handle caches that name the
// right objects, when it is back. Traffic on both runs during the fault and,
// if trafficThroughRecovery, until they are back; if not, readiness checks
// alone must bring them back.
func testFaultRecovery(t *testing.T, tok softhsm.Token, dir, away string, trafficThroughRecovery bool) {
	ctx := context.Background()
	copies, plain := openWith(t, tok, true), openWith(t, tok, false)
	defer copies.Close()
	defer plain.Close()

	used := newKey(t, copies)
	ivU, ctU := seal(t, copies, used, []byte("aad"), []byte("used before"))
	seal(t, plain, used, nil, []byte("cached in both"))
	// A key neither Token has touched: made through a Token closed since.
	unused, ivN, ctN := func() (KeyRef, []byte, []byte) {
		tmp := openWith(t, tok, false)
		defer tmp.Close()
		r := newKey(t, tmp)
		iv, ct := seal(t, tmp, r, nil, []byte("never used here"))
		return r, iv, ct
	}()
	if err := copies.Ready(ctx, testCanary); err != nil {
		t.Fatalf("Ready before the fault: %v", err)
	}
	mod := copies.mod
	if plain.mod != mod {
		t.Fatal("the two Tokens do not share the module")
	}
	reinits := mod.reinits.Load()

	// Traffic on both Tokens through the fault (and the recovery): every
	// call either succeeds with the right bytes or fails, at once, with a
	// kind that says the token is unavailable; a decryption that fails
	// authentication would mean a handle cache naming the wrong key.
	stopTraffic := make(chan struct{})
	var traffic sync.WaitGroup
	for g, tk := range []*Token{copies, plain, copies, plain} {
		traffic.Add(1)
		go func() {
			defer traffic.Done()
			for i := 0; ; i++ {
				select {
				case <-stopTraffic:
					return
				default:
				}
				r := []KeyRef{used, unused}[i%2]
				pt := []byte{byte(g), byte(i)}
				var iv, ct, got []byte
				err := tk.Do(ctx, func(s *Session) error {
					iv = make([]byte, GCMIVLen)
					if err := s.IV(iv); err != nil {
						return err
					}
					var err error
					if ct, err = s.EncryptGCM(r, iv, nil, pt); err != nil {
						return err
					}
					got, err = s.DecryptGCM(r, iv, nil, ct)
					return err
				})
				switch {
				case err == nil && !bytes.Equal(got, pt):
					t.Errorf("round trip under %s returned other bytes", r.Label())
					return
				case err != nil && !errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrInternal):
					t.Errorf("round trip under %s: %v", r.Label(), err)
					return
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}
	var stopOnce sync.Once
	stop := func() {
		stopOnce.Do(func() {
			close(stopTraffic)
			traffic.Wait()
		})
	}
	defer stop()

	restore := takeAway(t, dir, away)

	expireReadiness(copies)
	err := copies.Ready(ctx, testCanary)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Ready during the fault: %v, want ErrUnavailable", err)
	}
	t.Logf("during the fault, readiness: %v", err)
	if mod.reinits.Load() == reinits {
		t.Fatal("the module was not re-initialised when the token's storage went away")
	}
	during := []struct {
		name string
		run  func() error
	}{
		{"used key, session copy", func() error { return encryptErr(copies, used) }},
		{"used key, token object", func() error { return encryptErr(plain, used) }},
		{"unused key", func() error { return encryptErr(plain, unused) }},
		{"generate key", func() error { return plain.GenerateAESKey(ctx, newRef()) }},
		{"random", func() error { _, err := copies.Random(ctx, 16); return err }},
		{"readiness, other Token", func() error { return plain.Ready(ctx, testCanary) }},
	}
	for _, op := range during {
		// Failing fast is the property: a wait for the token would end in
		// ErrTimeout at encryptErr's deadline, not in ErrUnavailable.
		err := op.run()
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s during the fault: %v, want ErrUnavailable", op.name, err)
		}
		t.Logf("during the fault, %s: %v", op.name, err)
	}

	// A dead token is not hammered: however many requests fail, recovery is
	// attempted at a bounded, backing-off rate.
	before, start := mod.reinits.Load(), time.Now()
	var failed int
	for time.Since(start) < time.Second {
		if err := encryptErr(plain, used); err == nil {
			t.Fatal("encrypt succeeded with the token's storage gone")
		}
		failed++
	}
	if n, bound := mod.reinits.Load()-before, 1+uint64(time.Since(start)/minRetry); n > bound {
		t.Errorf("%d failing requests re-initialised the module %d times in %v (at most %d allowed)", failed, n, time.Since(start), bound)
	} else {
		t.Logf("%d failing requests in %v: %d re-initialisations", failed, time.Since(start), n)
	}

	if !trafficThroughRecovery {
		stop()
	}
	restore()
	restored := time.Now()

	deadline := time.Now().Add(60 * time.Second)
	for {
		err := copies.Ready(ctx, testCanary)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Ready after the token came back: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("ready again %v after the token came back; %d re-initialisations in all", time.Since(restored), mod.reinits.Load()-reinits)
	stop()
	for _, tk := range []*Token{copies, plain} {
		if pt, err := open(tk, used, ivU, []byte("aad"), ctU); err != nil || string(pt) != "used before" {
			t.Fatalf("decrypt under the used key after recovery = %q, %v", pt, err)
		}
		if pt, err := open(tk, unused, ivN, nil, ctN); err != nil || string(pt) != "never used here" {
			t.Fatalf("decrypt under the unused key after recovery = %q, %v", pt, err)
		}
	}
	// Each Token encrypts, the other decrypts: a handle cache that outlived
	// the re-initialisation would name another object, or none.
	for _, pair := range [][2]*Token{{copies, plain}, {plain, copies}} {
		for _, r := range []KeyRef{used, unused} {
			iv, ct := seal(t, pair[0], r, nil, []byte("across"))
			if pt, err := open(pair[1], r, iv, nil, ct); err != nil || string(pt) != "across" {
				t.Fatalf("round trip across Tokens after recovery = %q, %v", pt, err)
			}
		}
	}
	fresh := newKey(t, plain)
	iv, ct := seal(t, copies, fresh, nil, []byte("after"))
	if pt, err := open(plain, fresh, iv, nil, ct); err != nil || !bytes.Equal(pt, []byte("after")) {
		t.Fatalf("key generated after recovery = %q, %v", pt, err)
	}
	if err := plain.Ready(ctx, testCanary); err != nil {
		t.Fatalf("Ready of the other Token after recovery: %v", err)
	}
}
