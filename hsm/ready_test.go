package hsm

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/miekg/pkcs11"
)

// The readiness canary is a token object (so the check reads storage), made
// on first need, never copied, and a burst of checks costs one.
func TestReadyUsesTokenObjectCanary(t *testing.T) {
	tk := openToken(t, func(c *Config) { c.SessionKeyCopies = true })
	ctx := context.Background()
	canary := newRef()
	checks := tk.canary.checks.Load()
	start := time.Now()
	for i := 0; i < 100; i++ {
		if err := tk.Ready(ctx, canary); err != nil {
			t.Fatalf("Ready: %v", err)
		}
	}
	if n, bound := tk.canary.checks.Load()-checks, 1+uint64(time.Since(start)/readyTTL); n == 0 || n > bound {
		t.Fatalf("100 readiness calls in %v ran %d checks, want 1..%d", time.Since(start), n, bound)
	}
	objs, err := tk.Objects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var found int
	for _, o := range objs {
		if o.Ref == canary {
			found++
			if !o.Token || !o.Sensitive || o.Extractable || o.Class != "secret" {
				t.Fatalf("canary attributes: %+v", o)
			}
		}
	}
	if found != 1 {
		t.Fatalf("%d canary objects in the token, want 1", found)
	}
	if _, cached := tk.keys.get(objKey{ref: canary, class: pkcs11.CKO_SECRET_KEY}); cached {
		t.Fatal("the canary went through the key cache (and could be a session copy)")
	}
	// Another Token on the same token finds the canary rather than making a second.
	other := openToken(t, nil)
	if err := other.Ready(ctx, canary); err != nil {
		t.Fatalf("Ready of a second Token: %v", err)
	}
	objs, _ = tk.Objects(ctx)
	found = 0
	for _, o := range objs {
		if o.Ref == canary {
			found++
		}
	}
	if found != 1 {
		t.Fatalf("%d canary objects after a second Token's check, want 1", found)
	}
}

// A hostile client sends bad ciphertexts: SoftHSM2 answers a failed GCM tag
// check with CKR_GENERAL_ERROR, the same code its lost storage gives. They
// must neither re-initialise the module nor even cost a probe.
func TestBadCiphertextsDoNotProbeOrReinitialise(t *testing.T) {
	for _, copies := range []bool{false, true} {
		t.Run(map[bool]string{false: "token object", true: "session copy"}[copies], func(t *testing.T) {
			tk := openToken(t, func(c *Config) { c.SessionKeyCopies = copies; c.MaxSessions = 4 })
			r := newKey(t, tk)
			aad := []byte("context")
			iv, ct := seal(t, tk, r, aad, bytes.Repeat([]byte("p"), 64))
			probes, reinits, gen := tk.probe.count.Load(), tk.mod.reinits.Load(), tk.generation()
			var wg sync.WaitGroup
			for g := 0; g < 8; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 50; i++ {
						bad := bytes.Clone(ct)
						bad[(g*50+i)%len(bad)] ^= 1
						if _, err := open(tk, r, iv, aad, bad); !errors.Is(err, ErrInvalidCiphertext) {
							t.Errorf("tampered ciphertext: %v, want ErrInvalidCiphertext", err)
							return
						}
					}
				}()
			}
			wg.Wait()
			if n := tk.probe.count.Load() - probes; n != 0 {
				t.Errorf("bad ciphertexts caused %d token probes", n)
			}
			if n := tk.mod.reinits.Load() - reinits; n != 0 {
				t.Errorf("bad ciphertexts caused %d module re-initialisations", n)
			}
			if tk.generation() != gen {
				t.Error("bad ciphertexts restarted the Token")
			}
			if pt, err := open(tk, r, iv, aad, ct); err != nil || len(pt) != 64 {
				t.Fatalf("genuine ciphertext afterwards: %v", err)
			}
		})
	}
}

// A key the token does not have may mean the token lost its storage, so it
// is confirmed by a probe; a healthy token answers the probe, and nothing is
// re-initialised. A burst of such failures costs at most one probe per
// probeInterval.
func TestMissingKeyIsProbedNotReinitialised(t *testing.T) {
	tk := openToken(t, nil)
	probes, reinits, gen := tk.probe.count.Load(), tk.mod.reinits.Load(), tk.generation()
	start := time.Now()
	for i := 0; i < 100; i++ {
		if err := encryptErr(tk, newRef()); !errors.Is(err, ErrNotFound) {
			t.Fatalf("encrypt under a missing key: %v, want ErrNotFound", err)
		}
	}
	elapsed := time.Since(start)
	n := tk.probe.count.Load() - probes
	if n == 0 {
		t.Error("a missing key was not confirmed by a probe of the token")
	}
	if bound := 1 + uint64(elapsed/probeInterval); n > bound {
		t.Errorf("100 missing keys in %v cost %d probes, at most %d allowed", elapsed, n, bound)
	}
	if tk.mod.reinits.Load() != reinits || tk.generation() != gen {
		t.Error("a missing key on a healthy token re-initialised the module or restarted the Token")
	}
}
