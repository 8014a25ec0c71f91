package hsm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"testing"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	decredecdsa "github.com/decred/dcrd/dcrec/secp256k1/v4/ecdsa"
)

func digestOf(h crypto.Hash, msg []byte) []byte {
	d := h.New()
	d.Write(msg)
	return d.Sum(nil)
}

func withSession(t *testing.T, tk *Token, fn func(*Session) error) error {
	t.Helper()
	return tk.Do(context.Background(), fn)
}

// TestRSASignatures signs in the token and verifies with crypto/rsa against
// the public key the token reports, and through the token's own Verify.
func TestRSASignatures(t *testing.T) {
	for _, copies := range []bool{false, true} {
		tk := openToken(t, func(c *Config) { c.SessionKeyCopies = copies })
		r := newRef()
		if err := tk.GenerateRSAKeyPair(context.Background(), r, 2048, UsageSign); err != nil {
			t.Fatalf("GenerateRSAKeyPair: %v", err)
		}
		der, err := tk.PublicKey(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		pk, err := x509.ParsePKIXPublicKey(der)
		if err != nil {
			t.Fatal(err)
		}
		pub := pk.(*rsa.PublicKey)
		if pub.N.BitLen() != 2048 || pub.E != 65537 {
			t.Fatalf("public key: %d bits, e=%d", pub.N.BitLen(), pub.E)
		}
		msg := []byte("message to sign")
		for _, h := range []crypto.Hash{crypto.SHA256, crypto.SHA384, crypto.SHA512} {
			for _, scheme := range []SignScheme{PKCS1v15, PSS} {
				d := digestOf(h, msg)
				var sig []byte
				err := withSession(t, tk, func(s *Session) (err error) { sig, err = s.Sign(r, scheme, h, d); return })
				if err != nil {
					t.Fatalf("copies=%v %v/%d: Sign: %v", copies, h, scheme, err)
				}
				if scheme == PKCS1v15 {
					err = rsa.VerifyPKCS1v15(pub, h, d, sig)
				} else {
					err = rsa.VerifyPSS(pub, h, d, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
				}
				if err != nil {
					t.Fatalf("copies=%v %v/%d: crypto/rsa refuses the token's signature: %v", copies, h, scheme, err)
				}
				if err := withSession(t, tk, func(s *Session) error { return s.Verify(r, scheme, h, d, sig) }); err != nil {
					t.Fatalf("token Verify of its own signature: %v", err)
				}
				bad := bytes.Clone(sig)
				bad[10] ^= 1
				if err := withSession(t, tk, func(s *Session) error { return s.Verify(r, scheme, h, d, bad) }); !errors.Is(err, ErrInvalidSignature) {
					t.Fatalf("tampered signature: %v, want ErrInvalidSignature", err)
				}
				if err := withSession(t, tk, func(s *Session) error { return s.Verify(r, scheme, h, d, sig[1:]) }); !errors.Is(err, ErrInvalidSignature) {
					t.Fatalf("short signature: %v, want ErrInvalidSignature", err)
				}
			}
		}
		// A decryption-only operation on a signing key is refused by the token.
		ct, _ := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, []byte("x"), nil)
		if err := withSession(t, tk, func(s *Session) error { _, err := s.DecryptOAEP(r, crypto.SHA1, ct); return err }); err == nil {
			t.Fatal("a signing key decrypted")
		}
	}
}

// TestECDSASignatures covers every curve, verifying with crypto/ecdsa (and a
// secp256k1 library) against the token's public key.
func TestECDSASignatures(t *testing.T) {
	tk := openToken(t, func(c *Config) { c.SessionKeyCopies = true })
	for _, tc := range []struct {
		name  string
		curve Curve
		hash  crypto.Hash
	}{
		{"P256", P256, crypto.SHA256},
		{"P384", P384, crypto.SHA384},
		{"P521", P521, crypto.SHA512},
		{"secp256k1", Secp256k1, crypto.SHA256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRef()
			if err := tk.GenerateECKeyPair(context.Background(), r, tc.curve); err != nil {
				t.Fatalf("GenerateECKeyPair: %v", err)
			}
			der, err := tk.PublicKey(context.Background(), r)
			if err != nil {
				t.Fatal(err)
			}
			d := digestOf(tc.hash, []byte("ecdsa message"))
			var sig []byte
			if err := withSession(t, tk, func(s *Session) (err error) { sig, err = s.Sign(r, ECDSA, tc.hash, d); return }); err != nil {
				t.Fatalf("Sign: %v", err)
			}
			if tc.curve == Secp256k1 {
				var spki struct {
					Algo struct {
						Algorithm, Curve asn1.ObjectIdentifier
					}
					Key asn1.BitString
				}
				if _, err := asn1.Unmarshal(der, &spki); err != nil || !spki.Algo.Curve.Equal(Secp256k1.OID()) {
					t.Fatalf("SPKI: %v, curve %v", err, spki.Algo.Curve)
				}
				pub, err := secp256k1.ParsePubKey(spki.Key.Bytes)
				if err != nil {
					t.Fatal(err)
				}
				ds, err := decredecdsa.ParseDERSignature(sig)
				if err != nil || !ds.Verify(d, pub) {
					t.Fatalf("secp256k1 signature does not verify: %v", err)
				}
			} else {
				pk, err := x509.ParsePKIXPublicKey(der)
				if err != nil {
					t.Fatal(err)
				}
				if !ecdsa.VerifyASN1(pk.(*ecdsa.PublicKey), d, sig) {
					t.Fatal("crypto/ecdsa refuses the token's signature")
				}
			}
			if err := withSession(t, tk, func(s *Session) error { return s.Verify(r, ECDSA, tc.hash, d, sig) }); err != nil {
				t.Fatalf("token Verify: %v", err)
			}
			other := digestOf(tc.hash, []byte("another message"))
			for name, bad := range map[string][]byte{
				"other digest":   nil,
				"trailing bytes": append(bytes.Clone(sig), 0),
				"not DER":        []byte("garbage"),
				"empty":          {},
			} {
				dg := d
				if bad == nil {
					bad, dg = sig, other
				}
				if err := withSession(t, tk, func(s *Session) error { return s.Verify(r, ECDSA, tc.hash, dg, bad) }); !errors.Is(err, ErrInvalidSignature) {
					t.Errorf("%s: %v, want ErrInvalidSignature", name, err)
				}
			}
		})
	}
}

// newDecryptionKey makes an RSA-2048 decryption key pair and returns its
// public half as the token reports it.
func newDecryptionKey(t *testing.T, tk *Token) (KeyRef, *rsa.PublicKey) {
	t.Helper()
	r := newRef()
	if err := tk.GenerateRSAKeyPair(context.Background(), r, 2048, UsageDecrypt); err != nil {
		t.Fatal(err)
	}
	der, err := tk.PublicKey(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		t.Fatal(err)
	}
	return r, pk.(*rsa.PublicKey)
}

// TestOAEPDecrypt decrypts ciphertexts made by crypto/rsa with both hashes:
// SHA-1 natively in the token, SHA-256 through the raw RSA operation and the
// Go decoder (SoftHSM2 has no OAEP with SHA-256).
func TestOAEPDecrypt(t *testing.T) {
	tk := openToken(t, func(c *Config) { c.SessionKeyCopies = true })
	r, pub := newDecryptionKey(t, tk)
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256} {
		for _, n := range []int{0, 1, 100, pub.Size() - 2*h.Size() - 2} {
			msg := bytes.Repeat([]byte{0x5a}, n)
			ct, err := rsa.EncryptOAEP(h.New(), rand.Reader, pub, msg, nil)
			if err != nil {
				t.Fatal(err)
			}
			var pt []byte
			if err := withSession(t, tk, func(s *Session) (err error) { pt, err = s.DecryptOAEP(r, h, ct); return }); err != nil {
				t.Fatalf("%v, %d bytes: %v", h, n, err)
			}
			if !bytes.Equal(pt, msg) {
				t.Fatalf("%v, %d bytes: got %x", h, n, pt)
			}
		}
		// The probe's verdict on SoftHSM2 2.6.1: OAEP with SHA-1 is native,
		// with SHA-256 it is not, so the raw operation and the Go decoder ran.
		if mode := &tk.oaep[map[crypto.Hash]int{crypto.SHA1: 0, crypto.SHA256: 1}[h]]; mode.native.Load() != (h == crypto.SHA1) || mode.raw.Load() != (h == crypto.SHA256) {
			t.Errorf("%v: native %v, raw %v", h, mode.native.Load(), mode.raw.Load())
		}
		ct, _ := rsa.EncryptOAEP(h.New(), rand.Reader, pub, []byte("secret"), nil)
		wrong := crypto.SHA256
		if h == crypto.SHA256 {
			wrong = crypto.SHA1
		}
		bad := bytes.Clone(ct)
		bad[100] ^= 0x80
		for name, tc := range map[string]struct {
			h  crypto.Hash
			ct []byte
		}{
			"wrong hash": {wrong, ct},
			"tampered":   {h, bad},
			"short":      {h, ct[1:]},
			"too big":    {h, bytes.Repeat([]byte{0xff}, len(ct))},
		} {
			err := withSession(t, tk, func(s *Session) error { _, err := s.DecryptOAEP(r, tc.h, tc.ct); return err })
			if err != errOAEP {
				t.Errorf("%v %s: %v, want the one OAEP error", h, name, err)
			}
		}
	}
}

// TestHMAC computes MACs in the token and checks them against crypto/hmac
// only through the token's verification (the key never leaves it).
func TestHMAC(t *testing.T) {
	tk := openToken(t, func(c *Config) { c.SessionKeyCopies = true })
	for _, h := range []crypto.Hash{crypto.SHA224, crypto.SHA256, crypto.SHA384, crypto.SHA512} {
		r := newRef()
		if err := tk.GenerateHMACKey(context.Background(), r, h.Size()); err != nil {
			t.Fatalf("%v: GenerateHMACKey: %v", h, err)
		}
		msg := []byte("mac me")
		var m1, m2 []byte
		err := withSession(t, tk, func(s *Session) (err error) {
			if m1, err = s.MAC(r, h, msg); err != nil {
				return err
			}
			m2, err = s.MAC(r, h, msg)
			return err
		})
		if err != nil {
			t.Fatalf("%v: MAC: %v", h, err)
		}
		if len(m1) != h.Size() || !hmac.Equal(m1, m2) {
			t.Fatalf("%v: MACs %x, %x", h, m1, m2)
		}
		if err := withSession(t, tk, func(s *Session) error { return s.VerifyMAC(r, h, msg, m1) }); err != nil {
			t.Fatalf("%v: VerifyMAC: %v", h, err)
		}
		bad := bytes.Clone(m1)
		bad[0] ^= 1
		for name, tc := range map[string]struct{ msg, mac []byte }{
			"tampered mac": {msg, bad},
			"other msg":    {[]byte("mac mE"), m1},
			"truncated":    {msg, m1[:len(m1)-1]},
		} {
			if err := withSession(t, tk, func(s *Session) error { return s.VerifyMAC(r, h, tc.msg, tc.mac) }); !errors.Is(err, ErrInvalidSignature) {
				t.Errorf("%v %s: %v, want ErrInvalidSignature", h, name, err)
			}
		}
	}
}

// TestKeyPairObjectsAreProtected looks at the objects a key pair creates.
func TestKeyPairObjectsAreProtected(t *testing.T) {
	tk := openToken(t, nil)
	r := newRef()
	if err := tk.GenerateECKeyPair(context.Background(), r, P256); err != nil {
		t.Fatal(err)
	}
	if err := tk.GenerateECKeyPair(context.Background(), r, P256); !errors.Is(err, ErrExists) {
		t.Fatalf("second pair with the same reference: %v, want ErrExists", err)
	}
	objs, err := tk.Objects(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, o := range objs {
		if o.Ref != r {
			continue
		}
		seen[o.Class] = true
		switch o.Class {
		case "private":
			if !o.Sensitive || o.Extractable || !o.AlwaysSensitive || !o.NeverExtractable || !o.Sign || o.Decrypt || o.Derive || o.Unwrap || !o.Private || !o.Token {
				t.Errorf("private half: %+v", o)
			}
		case "public":
			if o.Modifiable || !o.Verify || o.Encrypt || o.Wrap || o.Derive || !o.Private || !o.Token {
				t.Errorf("public half: %+v", o)
			}
		default:
			t.Errorf("unexpected object %+v", o)
		}
	}
	if !seen["private"] || !seen["public"] {
		t.Fatalf("objects of the pair: %v", seen)
	}
	if err := tk.DestroyKey(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	if _, err := tk.PublicKey(context.Background(), r); !errors.Is(err, ErrNotFound) {
		t.Fatalf("public key after DestroyKey: %v, want ErrNotFound", err)
	}
	objs, _ = tk.Objects(context.Background())
	for _, o := range objs {
		if o.Ref == r {
			t.Fatalf("object left after DestroyKey: %+v", o)
		}
	}
}

// After every session is closed behind the Token's back (as a token restart
// would), signing, verifying, MACs and RSA decryption recover: the login is
// redone and both halves of the pair are found (and copied) again.
func TestAsymmetricRecoversAfterLogout(t *testing.T) {
	for _, copies := range []bool{false, true} {
		t.Run(map[bool]string{false: "token object", true: "session copy"}[copies], func(t *testing.T) {
			tk := openToken(t, func(c *Config) { c.SessionKeyCopies = copies })
			ctx := context.Background()
			sig, dec, mac := newRef(), newRef(), newRef()
			if err := tk.GenerateECKeyPair(ctx, sig, P384); err != nil {
				t.Fatal(err)
			}
			if err := tk.GenerateRSAKeyPair(ctx, dec, 2048, UsageDecrypt); err != nil {
				t.Fatal(err)
			}
			if err := tk.GenerateHMACKey(ctx, mac, 32); err != nil {
				t.Fatal(err)
			}
			der, err := tk.PublicKey(ctx, dec)
			if err != nil {
				t.Fatal(err)
			}
			pk, _ := x509.ParsePKIXPublicKey(der)
			ct, _ := rsa.EncryptOAEP(sha256.New(), rand.Reader, pk.(*rsa.PublicKey), []byte("kept"), nil)
			d := digestOf(crypto.SHA384, []byte("m"))
			var m []byte
			use := func(when string) {
				t.Helper()
				err := withSession(t, tk, func(s *Session) error {
					sg, err := s.Sign(sig, ECDSA, crypto.SHA384, d)
					if err != nil {
						return err
					}
					if err := s.Verify(sig, ECDSA, crypto.SHA384, d, sg); err != nil {
						return err
					}
					pt, err := s.DecryptOAEP(dec, crypto.SHA256, ct)
					if err != nil {
						return err
					}
					if string(pt) != "kept" {
						t.Errorf("%s: decrypted %q", when, pt)
					}
					if m == nil {
						m, err = s.MAC(mac, crypto.SHA256, []byte("m"))
						return err
					}
					return s.VerifyMAC(mac, crypto.SHA256, []byte("m"), m)
				})
				if err != nil {
					t.Fatalf("%s: %v", when, err)
				}
			}
			use("before")
			tk.mu.RLock()
			if err := tk.ctx.CloseAllSessions(tk.slot); err != nil {
				t.Fatal(err)
			}
			tk.mu.RUnlock()
			use("after logout")
		})
	}
}
