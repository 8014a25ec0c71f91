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
	if err := f.svc.CreateAlias(ctx, alice, CreateAliasInput{AliasName: "alias/bench", TargetKeyId: md.KeyId}); err != nil {
		b.Fatal(err)
	}
	// Alias resolution must add no disk read and no token lookup: by-alias
	// is compared with by-id in the same run.
	for _, by := range []struct{ name, keyID string }{
		{"service", md.KeyId},
		{"service-by-alias", "alias/bench"},
		{"service-by-alias-arn", "arn:aws:kms:eu-west-1:111122223333:alias/bench"},
	} {
		b.Run(by.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := f.svc.Encrypt(ctx, alice, EncryptInput{KeyId: by.keyID, Plaintext: pt, EncryptionContext: ec}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
