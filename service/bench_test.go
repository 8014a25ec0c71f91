package service

import (
	"context"
	"testing"

	"github.com/hsmkms/hsmkms/blob"
	"github.com/hsmkms/hsmkms/hsm"
)

// BenchmarkEncrypt1KiB compares service.Encrypt with the raw token work it
// wraps (an IV and a GCM encryption through hsm), in the same run; make bench
// reports the ratio. cmd/hsmkms-bench measures the same with HTTP around it.
func BenchmarkEncrypt1KiB(b *testing.B) {
	f := newFixture(b)
	md := f.key(b)
	raw, err := blob.ParseKeyID(md.KeyId)
	if err != nil {
		b.Fatal(err)
	}
	ref := hsm.KeyRef{KeyID: raw, Version: 1}
	pt := make([]byte, 1024)
	ec := map[string]string{"app": "bench"}
	ctx := context.Background()
	b.Run("raw", func(b *testing.B) {
		aad := make([]byte, blob.HeaderLen+30)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			err := f.token.Do(ctx, func(s *hsm.Session) error {
				iv := make([]byte, blob.IVLen)
				if err := s.IV(iv); err != nil {
					return err
				}
				_, err := s.EncryptGCM(ref, iv, aad, pt)
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("service", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := f.svc.Encrypt(ctx, alice, EncryptInput{KeyId: md.KeyId, Plaintext: pt, EncryptionContext: ec}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
