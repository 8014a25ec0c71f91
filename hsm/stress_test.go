package hsm

import (
	"context"
	"crypto"
	"sync"
	"testing"

	"github.com/miekg/pkcs11"
)

// SoftHSM2 fails object creation and destruction made concurrently from one
// process unless hsm serialises them (see module.objects).
func TestConcurrentGenerateDestroy(t *testing.T) {
	tk := openToken(t, func(c *Config) { c.SessionKeyCopies = true })
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 12; i++ {
				r := newRef()
				var err error
				switch i % 3 { // every kind of object: secret keys and key pairs
				case 0:
					err = tk.GenerateAESKey(context.Background(), r)
				case 1:
					err = tk.GenerateECKeyPair(context.Background(), r, P256)
				case 2:
					err = tk.GenerateHMACKey(context.Background(), r, 32)
				}
				if err != nil {
					errs <- err
					continue
				}
				if i%2 == 0 {
					if err := tk.DestroyKey(context.Background(), r); err != nil {
						errs <- err
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		n++
		if n < 5 {
			t.Error(err)
		}
	}
	if n > 0 {
		t.Errorf("%d errors", n)
	}
}

// The first uses of many key pairs, from many goroutines at once, each find
// (and copy) both halves exactly once and all succeed.
func TestConcurrentFirstUseOfKeyPairs(t *testing.T) {
	maker := openToken(t, func(c *Config) { c.SessionKeyCopies = true }) // modifiable, so copyable
	refs := make([]KeyRef, 6)
	for i := range refs {
		refs[i] = newRef()
		if err := maker.GenerateECKeyPair(context.Background(), refs[i], P256); err != nil {
			t.Fatal(err)
		}
	}
	tk := openToken(t, func(c *Config) { c.MaxSessions = 4; c.SessionKeyCopies = true }) // empty handle cache
	d := digestOf(crypto.SHA256, []byte("first use"))
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 12; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 6; i++ {
				r := refs[(g+i)%len(refs)]
				err := tk.Do(context.Background(), func(s *Session) error {
					sig, err := s.Sign(r, ECDSA, crypto.SHA256, d)
					if err != nil {
						return err
					}
					return s.Verify(r, ECDSA, crypto.SHA256, d, sig)
				})
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
	for _, r := range refs {
		e, ok := tk.keys.get(objKey{ref: r, class: pkcs11.CKO_PRIVATE_KEY})
		if !ok || e.use == e.object {
			t.Errorf("private half of %s not used through a session copy: %+v", r.Label(), e)
		}
	}
}
