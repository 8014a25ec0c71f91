package service

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

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

// BenchmarkAsymmetric compares each asymmetric and HMAC operation through the
// service with the raw token operation it wraps. Every iteration runs one of
// each, interleaved, so both see the same machine state; the benchmark
// reports both times and raw/service, the fraction of raw throughput the
// service keeps (target ≥ 0.85).
func BenchmarkAsymmetric(b *testing.B) {
	f := newFixture(b)
	ctx := context.Background()
	create := func(spec, usage string) (string, hsm.KeyRef) {
		out, err := f.svc.CreateKey(ctx, alice, CreateKeyInput{KeySpec: &spec, KeyUsage: &usage})
		if err != nil {
			b.Fatal(err)
		}
		raw, _ := blob.ParseKeyID(out.KeyMetadata.KeyId)
		return out.KeyMetadata.KeyId, hsm.KeyRef{KeyID: raw, Version: 1}
	}
	msg := bytes.Repeat([]byte("m"), 1024)
	ecID, ecRef := create("ECC_NIST_P256", UsageSignVerify)
	rsaID, rsaRef := create("RSA_2048", UsageSignVerify)
	macID, macRef := create("HMAC_256", UsageMAC)
	encID, encRef := create("RSA_2048", UsageEncryptDecrypt)
	pub, err := f.svc.GetPublicKey(ctx, alice, GetPublicKeyInput{KeyId: encID})
	if err != nil {
		b.Fatal(err)
	}
	pk, _ := x509.ParsePKIXPublicKey(pub.PublicKey)
	ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pk.(*rsa.PublicKey), []byte("a 32-byte data key, for example."), nil)
	if err != nil {
		b.Fatal(err)
	}
	alg := func(s string) *string { return &s }
	// Raw operations take what the service passes the token: a digest of the
	// message for signing (hashing is part of the service's work).
	for _, bc := range []struct {
		name    string
		raw     func(*hsm.Session) error
		service func() error
	}{
		{"Sign-ECDSA-P256",
			func(s *hsm.Session) error {
				d := sha256.Sum256(msg)
				_, err := s.Sign(ecRef, hsm.ECDSA, crypto.SHA256, d[:])
				return err
			},
			func() error {
				_, err := f.svc.Sign(ctx, alice, SignInput{KeyId: ecID, Message: msg, SigningAlgorithm: alg("ECDSA_SHA_256")})
				return err
			}},
		{"Sign-RSA2048-PSS",
			func(s *hsm.Session) error {
				d := sha256.Sum256(msg)
				_, err := s.Sign(rsaRef, hsm.PSS, crypto.SHA256, d[:])
				return err
			},
			func() error {
				_, err := f.svc.Sign(ctx, alice, SignInput{KeyId: rsaID, Message: msg, SigningAlgorithm: alg("RSASSA_PSS_SHA_256")})
				return err
			}},
		{"GenerateMac-HMAC256",
			func(s *hsm.Session) error { _, err := s.MAC(macRef, crypto.SHA256, msg); return err },
			func() error {
				_, err := f.svc.GenerateMac(ctx, alice, GenerateMacInput{KeyId: macID, Message: msg, MacAlgorithm: alg("HMAC_SHA_256")})
				return err
			}},
		{"Decrypt-RSA2048-OAEP-SHA256",
			func(s *hsm.Session) error {
				pt, err := s.DecryptOAEP(encRef, crypto.SHA256, ct)
				clear(pt)
				return err
			},
			func() error {
				out, err := f.svc.Decrypt(ctx, alice, DecryptInput{KeyId: &encID, CiphertextBlob: ct, EncryptionAlgorithm: alg("RSAES_OAEP_SHA_256")})
				if err == nil {
					out.Zero()
				}
				return err
			}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var rawT, svcT time.Duration
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				if err := f.token.Do(ctx, bc.raw); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if err := bc.service(); err != nil {
					b.Fatal(err)
				}
				rawT += t1.Sub(t0)
				svcT += time.Since(t1)
			}
			b.ReportMetric(float64(rawT.Nanoseconds())/float64(b.N), "raw-ns/op")
			b.ReportMetric(float64(svcT.Nanoseconds())/float64(b.N), "service-ns/op")
			b.ReportMetric(float64(rawT)/float64(svcT), "raw/service")
		})
	}
}

// BenchmarkEncryptPolicy compares Encrypt under the default key policy with
// Encrypt under a 20-statement policy whose allowing statement has an
// encryption context condition (issue 5: within 10 %), interleaved.
func BenchmarkEncryptPolicy(b *testing.B) {
	f := newFixture(b)
	ctx := context.Background()
	def := f.key(b)
	var stmts []string
	for i := 0; i < 19; i++ {
		stmts = append(stmts, fmt.Sprintf(`{"Sid":"s%d","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/r%d"},`+
			`"Action":["kms:Decrypt","kms:GenerateDataKey*"],"Resource":"*","Condition":{"StringEquals":{"kms:EncryptionContext:app":"a%d"}}}`, i, i, i))
	}
	stmts = append(stmts, `{"Sid":"root","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*",`+
		`"Condition":{"StringEquals":{"kms:EncryptionContext:app":"bench"}}}`)
	doc := `{"Version":"2012-10-17","Statement":[` + strings.Join(stmts, ",") + `]}`
	big, err := f.svc.CreateKey(ctx, alice, CreateKeyInput{Policy: &doc, BypassPolicyLockoutSafetyCheck: true})
	if err != nil {
		b.Fatal(err)
	}
	pt := make([]byte, 1024)
	ec := map[string]string{"app": "bench"}
	var defT, bigT time.Duration
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if _, err := f.svc.Encrypt(ctx, alice, EncryptInput{KeyId: def.KeyId, Plaintext: pt, EncryptionContext: ec}); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := f.svc.Encrypt(ctx, alice, EncryptInput{KeyId: big.KeyMetadata.KeyId, Plaintext: pt, EncryptionContext: ec}); err != nil {
			b.Fatal(err)
		}
		defT += t1.Sub(t0)
		bigT += time.Since(t1)
	}
	b.ReportMetric(float64(defT.Nanoseconds())/float64(b.N), "default-ns/op")
	b.ReportMetric(float64(bigT.Nanoseconds())/float64(b.N), "20-statements-ns/op")
	b.ReportMetric(float64(bigT)/float64(defT), "20-statements/default")
}
