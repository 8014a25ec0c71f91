package service

import (
	"context"
	"errors"
	"testing"
)

// TestRecordSeal: a record's MAC is made in the token and verifies for that
// record only — not for the record with a byte changed, nor for the same
// bytes as another kind, nor truncated or extended. The record key is made
// once: a second start finds it (created false), which is what tells a
// node that every record must carry a MAC.
func TestRecordSeal(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	s, created, err := initSealer(ctx, f.token)
	if err != nil || !created {
		t.Fatalf("first initSealer: created %v, %v", created, err)
	}
	if _, again, err := initSealer(ctx, f.token); err != nil || again {
		t.Fatalf("second initSealer: created %v, %v", again, err)
	}
	rec := []byte(`{"id":"1234abcd-12ab-34cd-56ef-1234567890ab","policy":"{}","revision":7}`)
	mac, err := s.Seal(ctx, "key", rec)
	if err != nil {
		t.Fatal(err)
	}
	if len(mac) != sealTagLen {
		t.Fatalf("MAC of %d bytes", len(mac))
	}
	if err := s.Verify(ctx, "key", rec, mac); err != nil {
		t.Fatalf("the record's own MAC: %v", err)
	}
	for i := range rec {
		changed := append([]byte(nil), rec...)
		changed[i] ^= 0x01
		if err := s.Verify(ctx, "key", changed, mac); !errors.Is(err, errRecordTampered) {
			t.Fatalf("byte %d changed: %v", i, err)
		}
	}
	for name, bad := range map[string]func() error{
		"another kind": func() error { return s.Verify(ctx, "alias", rec, mac) },
		"truncated":    func() error { return s.Verify(ctx, "key", rec, mac[:16]) },
		"extended":     func() error { return s.Verify(ctx, "key", rec, append(append([]byte(nil), mac...), 0)) },
		"no MAC":       func() error { return s.Verify(ctx, "key", rec, nil) },
		"kind moved into the record": func() error {
			// "ke" + 0 + "y…" must not collide with "key" + 0 + "…".
			m, err := s.Seal(ctx, "ke", append([]byte("y"), rec...))
			if err != nil {
				return err
			}
			return s.Verify(ctx, "key", rec, m)
		},
	} {
		if err := bad(); !errors.Is(err, errRecordTampered) {
			t.Errorf("%s: %v, want errRecordTampered", name, err)
		}
	}
}
