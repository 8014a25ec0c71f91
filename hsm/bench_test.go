package hsm

import (
	"context"
	"testing"
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
