package hsm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"testing"

	"github.com/ThalesGroup/crypto11"

	"github.com/hsmkms/hsmkms/softhsm/softhsmtest"
)

// BenchmarkSignCrypto11VsDirect compares signing through crypto11's
// crypto.Signer with signing through Token.Do and Session.Sign, on the same
// key pairs in the same token and the same loaded module.
//
// Both libraries keep a per-process count of the Contexts/Tokens on a module
// and call C_Initialize for the first one. Ours accepts
// CKR_CRYPTOKI_ALREADY_INITIALIZED; crypto11 v1.6.2 (openModule) does not and
// fails Configure. So crypto11 is configured first, while no Token of ours
// has the module loaded, and our Token is opened after it. At the end our
// Token is closed first: its C_Finalize (our count falls to 0) leaves our
// table empty for later tests, and crypto11's Close then ignores the
// CKR_CRYPTOKI_NOT_INITIALIZED answers it gets. The other order would make
// our Close report C_Finalize's failure.
func BenchmarkSignCrypto11VsDirect(b *testing.B) {
	ctx := context.Background()
	tok := softhsmtest.Token(b)
	pin := softhsmtest.PIN(b, tok)

	modules.Lock()
	_, loaded := modules.m[tok.ModulePath]
	modules.Unlock()
	if loaded {
		b.Fatal("module already initialised by an open Token; crypto11.Configure would fail with CKR_CRYPTOKI_ALREADY_INITIALIZED")
	}
	c11, err := crypto11.Configure(&crypto11.Config{
		Path:        tok.ModulePath,
		TokenLabel:  tok.Label,
		Pin:         pin,
		MaxSessions: 33, // one kept for the login, as our Token does, plus 32 for operations
	})
	if err != nil {
		b.Fatalf("crypto11.Configure: %v", err)
	}
	tk, err := Open(ctx, Config{ModulePath: tok.ModulePath, TokenLabel: tok.Label, PIN: pin})
	if err != nil {
		c11.Close()
		b.Fatalf("Open: %v", err)
	}
	b.Cleanup(func() {
		if err := tk.Close(); err != nil {
			b.Errorf("Token.Close: %v", err)
		}
		if err := c11.Close(); err != nil {
			b.Errorf("crypto11 Close: %v", err)
		}
	})

	digest := sha256.Sum256([]byte("hsmkms crypto11 comparison"))
	cases := []struct {
		name   string
		gen    func(KeyRef) error
		scheme SignScheme
		opts   crypto.SignerOpts
	}{
		{"ECDSA-P256", func(r KeyRef) error { return tk.GenerateECKeyPair(ctx, r, P256) }, ECDSA, crypto.SHA256},
		{"RSA2048-PSS", func(r KeyRef) error { return tk.GenerateRSAKeyPair(ctx, r, 2048, UsageSign) }, PSS,
			&rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}},
	}
	for _, tc := range cases {
		r := newRef()
		if err := tc.gen(r); err != nil {
			b.Fatalf("%s: generate: %v", tc.name, err)
		}
		signer, err := c11.FindKeyPair(r.ckaID(), []byte(r.Label()))
		if err != nil {
			b.Fatalf("%s: crypto11 FindKeyPair: %v", tc.name, err)
		}
		direct := func() ([]byte, error) {
			var sig []byte
			err := tk.Do(ctx, func(s *Session) error {
				var err error
				sig, err = s.Sign(r, tc.scheme, crypto.SHA256, digest[:])
				return err
			})
			return sig, err
		}
		viaC11 := func() ([]byte, error) { return signer.Sign(rand.Reader, digest[:], tc.opts) }
		checkSigners(b, tk, r, signer, tc.opts, digest[:], direct, viaC11)

		impls := []struct {
			name string
			sign func() ([]byte, error)
		}{{"direct", direct}, {"crypto11", viaC11}}
		for _, mode := range []string{"serial", "parallel"} {
			for _, impl := range impls {
				b.Run(tc.name+"/"+mode+"/"+impl.name, func(b *testing.B) {
					b.ReportAllocs()
					if mode == "serial" {
						for b.Loop() {
							if _, err := impl.sign(); err != nil {
								b.Fatal(err)
							}
						}
						return
					}
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if _, err := impl.sign(); err != nil {
								b.Error(err)
								return
							}
						}
					})
				})
			}
		}
	}
}

// checkSigners makes sure both paths sign with r's key: crypto11's public
// half is ours, and each path's signature verifies under the public key our
// Token reads, with crypto/ecdsa or crypto/rsa.
func checkSigners(b *testing.B, tk *Token, r KeyRef, signer crypto.Signer, opts crypto.SignerOpts, digest []byte, sign ...func() ([]byte, error)) {
	b.Helper()
	der, err := tk.PublicKey(context.Background(), r)
	if err != nil {
		b.Fatalf("PublicKey: %v", err)
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		b.Fatalf("parse public key: %v", err)
	}
	if !signer.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
		b.Fatalf("crypto11 found a different public key for %s", r.Label())
	}
	for i, f := range sign {
		sig, err := f()
		if err != nil {
			b.Fatalf("signer %d: %v", i, err)
		}
		switch pub := pub.(type) {
		case *ecdsa.PublicKey:
			if !ecdsa.VerifyASN1(pub, digest, sig) {
				b.Fatalf("signer %d: ECDSA signature does not verify", i)
			}
		case *rsa.PublicKey:
			if err := rsa.VerifyPSS(pub, crypto.SHA256, digest, sig, opts.(*rsa.PSSOptions)); err != nil {
				b.Fatalf("signer %d: PSS signature does not verify: %v", i, err)
			}
		default:
			b.Fatalf("public key of type %T", pub)
		}
	}
}
