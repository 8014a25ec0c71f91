package hsm

import (
	"context"
	"sync"
	"testing"
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
				if err := tk.GenerateAESKey(context.Background(), r); err != nil {
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
