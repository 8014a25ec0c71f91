package audit

import (
	"errors"
	"sync"
	"testing"
	"time"
)

type writeObserver struct {
	mu   sync.Mutex
	errs []error
}

func (o *writeObserver) AuditWrite(d time.Duration, err error) {
	if d < 0 {
		panic("negative duration")
	}
	o.mu.Lock()
	o.errs = append(o.errs, err)
	o.mu.Unlock()
}

// TestObserverSeesEveryWrite: one report per Write and WriteDurable, with
// the error the caller got.
func TestObserverSeesEveryWrite(t *testing.T) {
	t.Parallel()
	obs := &writeObserver{}
	cfg := testConfig(t, newSigner(t))
	cfg.Observer = obs
	w := open(t, cfg)
	writeN(t, w, 3)
	if err := w.WriteDurable(encryptEvent(3)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	werr := w.Write(encryptEvent(4))
	if !errors.Is(werr, ErrClosed) {
		t.Fatalf("Write after Close = %v", werr)
	}
	if len(obs.errs) != 5 {
		t.Fatalf("%d writes observed, want 5", len(obs.errs))
	}
	for i, err := range obs.errs[:4] {
		if err != nil {
			t.Errorf("write %d observed with error %v", i, err)
		}
	}
	if obs.errs[4] != werr {
		t.Errorf("failed write observed with %v, want %v", obs.errs[4], werr)
	}
}

// TestBroken: Broken follows the log's state, both for a failure that
// recovers (checkpoints failing, then working again) and for one that does
// not (Out failed); a closed log is not broken.
func TestBroken(t *testing.T) {
	t.Parallel()
	t.Run("checkpoints fail, then work", func(t *testing.T) {
		t.Parallel()
		s := newSigner(t)
		cfg := testConfig(t, s)
		cfg.CheckpointEvery = 2
		w := open(t, cfg)
		if w.Broken() {
			t.Fatal("a fresh log is broken")
		}
		s.fail.Store(true)
		writeN(t, w, 4)
		if err := w.Write(encryptEvent(4)); err == nil {
			t.Fatal("Write with 4 unsigned records succeeded")
		}
		if !w.Broken() {
			t.Error("Broken is false while records are refused")
		}
		s.fail.Store(false)
		writeN(t, w, 1)
		if w.Broken() {
			t.Error("Broken is true after a checkpoint succeeded")
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if w.Broken() {
			t.Error("a log closed cleanly is broken")
		}
	})
	t.Run("Out fails", func(t *testing.T) {
		t.Parallel()
		s := newSigner(t)
		w := open(t, Config{Out: failingWriter{errors.New("pipe closed")}, Signer: s, PublicKey: s.spki, Logger: quiet})
		if w.Broken() {
			t.Fatal("a fresh log is broken")
		}
		if err := w.Write(encryptEvent(0)); err == nil {
			t.Fatal("Write to a failing Out succeeded")
		}
		if !w.Broken() {
			t.Error("Broken is false after Out failed")
		}
		w.Close()
	})
}
