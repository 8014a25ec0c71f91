package hsm

import (
	"context"
	"testing"
	"time"
)

// BenchmarkEncryptGCM1KiB is the raw token figure the service is compared
// against: an IV from the token RNG (Session.IV, batched) plus
// C_EncryptInit/C_Encrypt with
// AES-256-GCM on 1 KiB, through the pool, as service.Encrypt uses it.
func BenchmarkEncryptGCM1KiB(b *testing.B) {
	for _, copies := range []bool{false, true} {
		b.Run(map[bool]string{false: "token-object", true: "session-copy"}[copies], func(b *testing.B) {
			tk := openTokenB(b, copies)
			r := newRef()
			if err := tk.GenerateAESKey(context.Background(), r); err != nil {
				b.Fatal(err)
			}
			pt := make([]byte, 1024)
			aad := make([]byte, 37)
			b.SetBytes(1024)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				iv := make([]byte, GCMIVLen)
				for pb.Next() {
					err := tk.Do(context.Background(), func(s *Session) error {
						if err := s.IV(iv); err != nil {
							return err
						}
						_, err := s.EncryptGCM(r, iv, aad, pt)
						return err
					})
					if err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// BenchmarkGenerateKey compares generating a key in place as a token object
// (AtomicObjectCreation, the path before crash safety) with generating it as
// a session object and copying it to the token (the default, crash-safe on
// SoftHSM2). Every iteration runs both, interleaved and in alternating order,
// so both see the same token and machine state, and reports both times and
// staged/in-place. Keys are destroyed outside the timed part so the token
// does not grow.
func BenchmarkGenerateKey(b *testing.B) {
	inPlace := openTokenB(b, false)
	inPlace.cfg.AtomicObjectCreation = true
	staged := openTokenB(b, false)
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		gen  func(*Token, KeyRef) error
	}{
		{"AES-256", func(tk *Token, r KeyRef) error { return tk.GenerateAESKey(ctx, r) }},
		{"EC-P256", func(tk *Token, r KeyRef) error { return tk.GenerateECKeyPair(ctx, r, P256) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var inPlaceT, stagedT time.Duration
			timed := func(tk *Token, r KeyRef, total *time.Duration) {
				t0 := time.Now()
				if err := bc.gen(tk, r); err != nil {
					b.Fatal(err)
				}
				*total += time.Since(t0)
			}
			for i := 0; i < b.N; i++ {
				r1, r2 := newRef(), newRef()
				// Alternate which goes first, so neither always follows a destroy.
				if i%2 == 0 {
					timed(inPlace, r1, &inPlaceT)
					timed(staged, r2, &stagedT)
				} else {
					timed(staged, r2, &stagedT)
					timed(inPlace, r1, &inPlaceT)
				}
				b.StopTimer()
				if err := inPlace.DestroyKey(ctx, r1); err != nil {
					b.Fatal(err)
				}
				if err := staged.DestroyKey(ctx, r2); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(inPlaceT.Nanoseconds())/float64(b.N), "in-place-ns/op")
			b.ReportMetric(float64(stagedT.Nanoseconds())/float64(b.N), "staged-ns/op")
			b.ReportMetric(float64(stagedT)/float64(inPlaceT), "staged/in-place")
		})
	}
}
