package hsm

import (
	"bytes"
	"context"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/hsmkms/hsmkms/softhsm/softhsmtest"
)

func TestMain(m *testing.M) { os.Exit(softhsmtest.Main(m)) }

var refSeq atomic.Uint32

// newRef returns a key reference no other test uses.
func newRef() KeyRef {
	var r KeyRef
	n := refSeq.Add(1)
	r.KeyID[0], r.KeyID[1], r.KeyID[15] = 0xab, byte(n>>8), byte(n)
	r.Version = 1
	return r
}

func openToken(t *testing.T, mod func(*Config)) *Token {
	t.Helper()
	tok := softhsmtest.Token(t)
	cfg := Config{ModulePath: tok.ModulePath, TokenLabel: tok.Label, PIN: softhsmtest.PIN(t, tok)}
	if mod != nil {
		mod(&cfg)
	}
	tk, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := tk.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return tk
}

func newKey(t *testing.T, tk *Token) KeyRef {
	t.Helper()
	r := newRef()
	if err := tk.GenerateAESKey(context.Background(), r); err != nil {
		t.Fatalf("GenerateAESKey: %v", err)
	}
	return r
}

func seal(t *testing.T, tk *Token, r KeyRef, aad, pt []byte) (iv, ct []byte) {
	t.Helper()
	iv = make([]byte, GCMIVLen)
	err := tk.Do(context.Background(), func(s *Session) error {
		if err := s.Random(iv); err != nil {
			return err
		}
		var err error
		ct, err = s.EncryptGCM(r, iv, aad, pt)
		return err
	})
	if err != nil {
		t.Fatalf("encrypt: %v", err)
	}
	return iv, ct
}

func open(tk *Token, r KeyRef, iv, aad, ct []byte) ([]byte, error) {
	var pt []byte
	err := tk.Do(context.Background(), func(s *Session) error {
		var err error
		pt, err = s.DecryptGCM(r, iv, aad, ct)
		return err
	})
	return pt, err
}

func TestGCMRoundTripAndTampering(t *testing.T) {
	for _, copies := range []bool{false, true} {
		name := map[bool]string{false: "token object", true: "session copy"}[copies]
		t.Run(name, func(t *testing.T) {
			tk := openToken(t, func(c *Config) { c.SessionKeyCopies = copies })
			r := newKey(t, tk)
			other := newKey(t, tk)
			aad := []byte("header||context")
			pt := bytes.Repeat([]byte("p"), 1024)
			iv, ct := seal(t, tk, r, aad, pt)
			if len(ct) != len(pt)+GCMTagLen {
				t.Fatalf("ciphertext length %d, want %d", len(ct), len(pt)+GCMTagLen)
			}
			if bytes.Contains(ct, pt[:32]) {
				t.Fatal("ciphertext contains plaintext")
			}
			got, err := open(tk, r, iv, aad, ct)
			if err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("decrypt = %q, %v", got, err)
			}

			flip := func(b []byte, i int) []byte { c := bytes.Clone(b); c[i] ^= 1; return c }
			cases := []struct {
				name        string
				key         KeyRef
				iv, aad, ct []byte
				want        error
			}{
				{"flipped ciphertext", r, iv, aad, flip(ct, 3), ErrInvalidCiphertext},
				{"flipped tag", r, iv, aad, flip(ct, len(ct)-1), ErrInvalidCiphertext},
				{"flipped iv", r, flip(iv, 0), aad, ct, ErrInvalidCiphertext},
				{"other aad", r, iv, flip(aad, 0), ct, ErrInvalidCiphertext},
				{"no aad", r, iv, nil, ct, ErrInvalidCiphertext},
				{"truncated", r, iv, aad, ct[:GCMTagLen-1], ErrInvalidCiphertext},
				{"short iv", r, iv[:8], aad, ct, ErrInvalidCiphertext},
				{"other key", other, iv, aad, ct, ErrInvalidCiphertext},
				{"missing key", newRef(), iv, aad, ct, ErrNotFound},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					got, err := open(tk, tc.key, tc.iv, tc.aad, tc.ct)
					if !errors.Is(err, tc.want) {
						t.Fatalf("err = %v, want %v", err, tc.want)
					}
					if got != nil {
						t.Fatalf("plaintext returned with error")
					}
				})
			}
		})
	}
}

func TestGenerateTwiceIsErrExists(t *testing.T) {
	tk := openToken(t, nil)
	r := newKey(t, tk)
	if err := tk.GenerateAESKey(context.Background(), r); !errors.Is(err, ErrExists) {
		t.Fatalf("second GenerateAESKey: %v, want ErrExists", err)
	}
}

func TestKeyObjectsAreProtected(t *testing.T) {
	tk := openToken(t, nil)
	r := newKey(t, tk)
	objs, err := tk.Objects(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, o := range objs {
		if o.Ref != r {
			continue
		}
		found = true
		want := ObjectInfo{Ref: r, Label: r.Label(), Class: "secret", Token: true, Private: true, Sensitive: true,
			AlwaysSensitive: true, NeverExtractable: true, Modifiable: false, Encrypt: true, Decrypt: true, ValueLen: 32}
		if o != want {
			t.Fatalf("object attributes\n got %+v\nwant %+v", o, want)
		}
	}
	if !found {
		t.Fatalf("key %s not among %d token objects", r.Label(), len(objs))
	}
}

func TestDestroyKey(t *testing.T) {
	tk := openToken(t, func(c *Config) { c.SessionKeyCopies = true })
	r := newKey(t, tk)
	seal(t, tk, r, nil, []byte("x")) // puts the key in the handle cache
	if err := tk.DestroyKey(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	err := tk.Do(context.Background(), func(s *Session) error {
		_, err := s.EncryptGCM(r, make([]byte, 12), nil, []byte("x"))
		return err
	})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("encrypt after destroy: %v, want ErrNotFound", err)
	}
	if err := tk.DestroyKey(context.Background(), r); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second destroy: %v, want ErrNotFound", err)
	}
}

func TestPoolWaitsUntilDeadline(t *testing.T) {
	tk := openToken(t, func(c *Config) { c.MaxSessions = 1 })
	held := make(chan struct{})
	release := make(chan struct{})
	done := make(chan error)
	go func() {
		done <- tk.Do(context.Background(), func(*Session) error {
			close(held)
			<-release
			return nil
		})
	}()
	<-held
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := tk.Do(ctx, func(*Session) error { return nil })
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Do with every session busy: %v, want ErrTimeout", err)
	}
	// A waiter that is still waiting when the session comes back gets it.
	waited := make(chan error)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		waited <- tk.Do(ctx, func(*Session) error { return nil })
	}()
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Fatalf("waiter: %v", err)
	}
}

// Closing every session behind the Token's back logs it out and invalidates
// all handles, as a token restart would. The next operation must recover:
// log in again, find the key again, and succeed.
func TestRecoversAfterLogout(t *testing.T) {
	for _, copies := range []bool{false, true} {
		t.Run(map[bool]string{false: "token object", true: "session copy"}[copies], func(t *testing.T) {
			tk := openToken(t, func(c *Config) { c.SessionKeyCopies = copies })
			r := newKey(t, tk)
			iv, ct := seal(t, tk, r, nil, []byte("before"))
			tk.mu.RLock()
			if err := tk.ctx.CloseAllSessions(tk.slot); err != nil {
				t.Fatal(err)
			}
			tk.mu.RUnlock()
			pt, err := open(tk, r, iv, nil, ct)
			if err != nil || string(pt) != "before" {
				t.Fatalf("decrypt after logout = %q, %v", pt, err)
			}
			seal(t, tk, r, nil, []byte("after"))
			if err := tk.Ping(context.Background()); err != nil {
				t.Fatalf("Ping: %v", err)
			}
		})
	}
}

// A session that reports CKR_SESSION_HANDLE_INVALID is discarded, not reused.
func TestBrokenSessionIsDiscarded(t *testing.T) {
	tk := openToken(t, func(c *Config) { c.MaxSessions = 1 })
	r := newKey(t, tk)
	var first uint
	tk.Do(context.Background(), func(s *Session) error {
		first = uint(s.h)
		return tk.ctx.CloseSession(s.h) // the pooled session dies
	})
	var second uint
	err := tk.Do(context.Background(), func(s *Session) error {
		second = uint(s.h)
		_, err := s.EncryptGCM(r, make([]byte, 12), nil, []byte("x"))
		return err
	})
	if err != nil {
		t.Fatalf("encrypt after a session died: %v", err)
	}
	if first == second {
		t.Fatalf("dead session %d handed out again", first)
	}
}

func TestConcurrentUse(t *testing.T) {
	tk := openToken(t, func(c *Config) { c.MaxSessions = 4; c.SessionKeyCopies = true })
	keys := []KeyRef{newKey(t, tk), newKey(t, tk), newKey(t, tk)}
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				r := keys[(g+i)%len(keys)]
				pt := []byte{byte(g), byte(i)}
				iv := make([]byte, 12)
				var ct []byte
				err := tk.Do(context.Background(), func(s *Session) error {
					if err := s.Random(iv); err != nil {
						return err
					}
					var err error
					ct, err = s.EncryptGCM(r, iv, pt, pt)
					return err
				})
				if err == nil {
					var got []byte
					got, err = open(tk, r, iv, pt, ct)
					if err == nil && !bytes.Equal(got, pt) {
						err = errors.New("round trip mismatch")
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestOpenRefusesUnknownToken(t *testing.T) {
	tok := softhsmtest.Token(t)
	cases := []struct {
		name string
		cfg  Config
		want error
	}{
		{"unknown label", Config{ModulePath: tok.ModulePath, TokenLabel: "no-such-token", PIN: "x"}, ErrUnavailable},
		{"unknown serial", Config{ModulePath: tok.ModulePath, TokenSerial: "0000", PIN: "x"}, ErrUnavailable},
		{"missing module", Config{ModulePath: "/nonexistent/libpkcs11.so", TokenLabel: tok.Label}, ErrUnavailable},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tk, err := Open(context.Background(), tc.cfg)
			if err == nil {
				tk.Close()
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Open: %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := Open(context.Background(), Config{ModulePath: tok.ModulePath, TokenLabel: "a", TokenSerial: "b"}); err == nil {
		t.Fatal("Open with both label and serial succeeded")
	}
}

func TestRandom(t *testing.T) {
	tk := openToken(t, nil)
	a, err := tk.Random(context.Background(), 32)
	if err != nil {
		t.Fatal(err)
	}
	b, err := tk.Random(context.Background(), 32)
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 32 || bytes.Equal(a, b) {
		t.Fatalf("random outputs %x and %x", a, b)
	}
}

func openTokenB(b *testing.B, copies bool) *Token {
	b.Helper()
	tok := softhsmtest.Token(b)
	pin, err := tok.UserPIN()
	if err != nil {
		b.Fatal(err)
	}
	tk, err := Open(context.Background(), Config{ModulePath: tok.ModulePath, TokenLabel: tok.Label, PIN: pin, SessionKeyCopies: copies})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tk.Close() })
	return tk
}

// With session copies on, keys are generated modifiable so SoftHSM2 will copy
// them; a key generated with copies off is not copyable and must be used in
// place, not fail.
func TestSessionCopiesAndOlderKeys(t *testing.T) {
	plain := openToken(t, nil)
	old := newKey(t, plain)
	iv, ct := seal(t, plain, old, nil, []byte("old"))

	tk := openToken(t, func(c *Config) { c.SessionKeyCopies = true })
	fresh := newKey(t, tk) // used through a copy from the start, not only after a restart
	if pt, err := open(tk, old, iv, nil, ct); err != nil || string(pt) != "old" {
		t.Fatalf("decrypt under a non-copyable key = %q, %v", pt, err)
	}
	iv2, ct2 := seal(t, tk, fresh, nil, []byte("new"))
	e, ok := tk.keys.get(objKey{ref: fresh, class: pkcs11.CKO_SECRET_KEY})
	if !ok || e.use == e.object {
		t.Fatalf("fresh key not used through a session copy: %+v", e)
	}
	if e, _ := tk.keys.get(objKey{ref: old, class: pkcs11.CKO_SECRET_KEY}); e.use != e.object {
		t.Fatalf("old key has a copy it cannot have: %+v", e)
	}
	if pt, err := open(plain, fresh, iv2, nil, ct2); err != nil || string(pt) != "new" {
		t.Fatalf("copy and token object disagree: %q, %v", pt, err)
	}
	objs, err := tk.Objects(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.Ref == fresh && (!o.Sensitive || o.Extractable || !o.Token || !o.Modifiable) {
			t.Fatalf("copyable key attributes: %+v", o)
		}
	}
}

// A caller whose context has no deadline still never waits forever: the
// configured wait timeout bounds it.
func TestPoolWaitIsBoundedWithoutDeadline(t *testing.T) {
	tk := openToken(t, func(c *Config) { c.MaxSessions = 1; c.WaitTimeout = 50 * time.Millisecond })
	held := make(chan struct{})
	release := make(chan struct{})
	go tk.Do(context.Background(), func(*Session) error { close(held); <-release; return nil })
	<-held
	defer close(release)
	// Returning at all (with ErrTimeout) is the property: an unbounded wait
	// would hang here until the test binary's own timeout.
	err := tk.Do(context.Background(), func(*Session) error { return nil })
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Do: %v, want ErrTimeout", err)
	}
}

// IVs come from the token's RNG in batches; none may repeat, within a
// session, across sessions, or across batch refills.
func TestIVsDoNotRepeat(t *testing.T) {
	tk := openToken(t, func(c *Config) { c.MaxSessions = 3 })
	seen := make(map[[GCMIVLen]byte]bool)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := 0; g < 6; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 3*ivBatch; i++ {
				var iv [GCMIVLen]byte
				err := tk.Do(context.Background(), func(s *Session) error { return s.IV(iv[:]) })
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[iv] {
					t.Errorf("IV %x handed out twice", iv)
				}
				seen[iv] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seen) != 6*3*ivBatch {
		t.Fatalf("%d distinct IVs, want %d", len(seen), 6*3*ivBatch)
	}
	if err := tk.Do(context.Background(), func(s *Session) error { return s.IV(make([]byte, 8)) }); !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("8-byte IV: %v, want ErrInvalidInput", err)
	}
}
