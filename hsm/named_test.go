package hsm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"encoding/asn1"
	"errors"
	"fmt"
	"testing"

	"github.com/miekg/pkcs11"
)

func TestParseKeyName(t *testing.T) {
	good := []struct {
		in   string
		want KeyName
	}{
		{"hsmkms-tls", KeyName{Label: "hsmkms-tls"}},
		{"pkcs11:object=hsmkms-tls;type=private", KeyName{Label: "hsmkms-tls"}},
		{"pkcs11:object=my%20key", KeyName{Label: "my key"}},
		{"pkcs11:id=%01%02%ff", KeyName{ID: []byte{1, 2, 0xff}}},
		{"pkcs11:token=hsmkms;serial=42;object=k;id=%41", KeyName{Label: "k", ID: []byte("A"), TokenLabel: "hsmkms", TokenSerial: "42"}},
	}
	for _, c := range good {
		got, err := ParseKeyName(c.in)
		if err != nil {
			t.Errorf("ParseKeyName(%q): %v", c.in, err)
			continue
		}
		if got.Label != c.want.Label || !bytes.Equal(got.ID, c.want.ID) || got.TokenLabel != c.want.TokenLabel || got.TokenSerial != c.want.TokenSerial {
			t.Errorf("ParseKeyName(%q) = %+v, want %+v", c.in, got, c.want)
		}
		// What String writes, ParseKeyName reads back the same.
		again, err := ParseKeyName(got.String())
		if err != nil || again.String() != got.String() {
			t.Errorf("round trip of %q: %q, %v", c.in, again.String(), err)
		}
	}
	bad := []string{
		"", "pkcs11:", "pkcs11:type=private", "pkcs11:object=k;type=public", "pkcs11:object=k;object=j",
		"pkcs11:object=k?pin-value=1234", "pkcs11:object=k?pin-source=file:/x", "pkcs11:object=k;slot-id=0",
		"pkcs11:object=k;model=SoftHSM", "pkcs11:object=k;colour=red", "pkcs11:object", "pkcs11:object=%zz",
	}
	for _, in := range bad {
		if n, err := ParseKeyName(in); err == nil {
			t.Errorf("ParseKeyName(%q) = %+v, want an error", in, n)
		}
	}
}

// TestNamedSignerSigns makes each TLS key type in the token and checks its
// signatures with the standard library, against the public key the token
// reports, in every scheme crypto/tls asks for.
func TestNamedSignerSigns(t *testing.T) {
	for _, copies := range []bool{false, true} {
		tk := openToken(t, func(c *Config) { c.SessionKeyCopies = copies })
		for _, typ := range []NamedKeyType{NamedECP256, NamedECP384, NamedRSA2048} {
			t.Run(fmt.Sprintf("copies=%v/type=%d", copies, typ), func(t *testing.T) {
				ctx := context.Background()
				name := KeyName{Label: fmt.Sprintf("tls-%d-%v", typ, copies)}
				if err := tk.GenerateNamedKeyPair(ctx, name, typ); err != nil {
					t.Fatalf("GenerateNamedKeyPair: %v", err)
				}
				signer, err := tk.NamedSigner(ctx, name)
				if err != nil {
					t.Fatalf("NamedSigner: %v", err)
				}
				info := signer.Info()
				if !info.Token || !info.Private || !info.Sensitive || info.Extractable || !info.AlwaysSensitive || !info.NeverExtractable || !info.Sign || info.Decrypt || info.Unwrap {
					t.Errorf("private key attributes %+v: want a sensitive, never extractable token object that only signs", info)
				}
				for _, h := range []crypto.Hash{crypto.SHA256, crypto.SHA384, crypto.SHA512} {
					digest := digestOf(h, []byte("handshake transcript"))
					switch pub := signer.Public().(type) {
					case *ecdsa.PublicKey:
						sig, err := signer.Sign(rand.Reader, digest, h)
						if err != nil {
							t.Fatalf("Sign %v: %v", h, err)
						}
						if !ecdsa.VerifyASN1(pub, digest, sig) {
							t.Errorf("ECDSA %v signature does not verify", h)
						}
					case *rsa.PublicKey:
						sig, err := signer.Sign(rand.Reader, digest, h)
						if err != nil {
							t.Fatalf("Sign PKCS1v15 %v: %v", h, err)
						}
						if err := rsa.VerifyPKCS1v15(pub, h, digest, sig); err != nil {
							t.Errorf("PKCS1v15 %v: %v", h, err)
						}
						opts := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: h}
						sig, err = signer.Sign(rand.Reader, digest, opts)
						if err != nil {
							t.Fatalf("Sign PSS %v: %v", h, err)
						}
						if err := rsa.VerifyPSS(pub, h, digest, sig, opts); err != nil {
							t.Errorf("PSS %v: %v", h, err)
						}
					default:
						t.Fatalf("public key %T", pub)
					}
				}
				// The name is taken now.
				if err := tk.GenerateNamedKeyPair(ctx, name, typ); !errors.Is(err, ErrExists) {
					t.Errorf("second GenerateNamedKeyPair: %v, want ErrExists", err)
				}
			})
		}
	}
}

// TestNamedKeyIsNeitherKMSKeyNorStray: a named key pair is hsmkms's own,
// like the audit key: reconciliation neither lists it as a key version nor
// reports it as a stray.
func TestNamedKeyIsNeitherKMSKeyNorStray(t *testing.T) {
	tk := openToken(t, nil)
	ctx := context.Background()
	if err := tk.GenerateNamedKeyPair(ctx, KeyName{Label: "hsmkms-tls"}, NamedECP256); err != nil {
		t.Fatal(err)
	}
	objs, err := tk.Objects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.Label == "hsmkms-tls" {
			t.Errorf("Objects lists the named key: %+v", o)
		}
	}
	strays, err := tk.StrayObjects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range strays {
		if o.Label == "hsmkms-tls" {
			t.Errorf("StrayObjects reports the named key: %v", o)
		}
	}
}

// TestNamedSignerSelection: a key another application made is found by its
// id; a name that matches nothing, or that names another token, is refused;
// an ambiguous label asks for the id.
func TestNamedSignerSelection(t *testing.T) {
	tk := openToken(t, nil)
	ctx := context.Background()
	if err := tk.GenerateNamedKeyPair(ctx, KeyName{Label: "shared", ID: []byte{1}}, NamedECP256); err != nil {
		t.Fatal(err)
	}
	if err := tk.GenerateNamedKeyPair(ctx, KeyName{Label: "shared", ID: []byte{2}}, NamedECP256); !errors.Is(err, ErrExists) {
		t.Fatalf("a second pair under one label: %v, want ErrExists", err)
	}
	// Another application could make it: so do that.
	err := tk.Do(ctx, func(s *Session) error {
		params, _ := curveParams(P256)
		_, _, err := tk.ctx.GenerateKeyPair(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_EC_KEY_PAIR_GEN, nil)},
			[]*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true), pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, params),
				pkcs11.NewAttribute(pkcs11.CKA_LABEL, "shared"), pkcs11.NewAttribute(pkcs11.CKA_ID, []byte{2})},
			[]*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true), pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
				pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true), pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
				pkcs11.NewAttribute(pkcs11.CKA_LABEL, "shared"), pkcs11.NewAttribute(pkcs11.CKA_ID, []byte{2})})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tk.NamedSigner(ctx, KeyName{Label: "shared"}); err == nil {
		t.Error("an ambiguous label was accepted")
	}
	n, err := ParseKeyName("pkcs11:object=shared;id=%02")
	if err != nil {
		t.Fatal(err)
	}
	s, err := tk.NamedSigner(ctx, n)
	if err != nil {
		t.Fatalf("select by id: %v", err)
	}
	digest := digestOf(crypto.SHA256, []byte("x"))
	sig, err := s.Sign(nil, digest, crypto.SHA256)
	if err != nil || !ecdsa.VerifyASN1(s.Public().(*ecdsa.PublicKey), digest, sig) {
		t.Errorf("signature by a foreign key: %v", err)
	}
	if _, err := tk.NamedSigner(ctx, KeyName{Label: "absent"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("absent key: %v, want ErrNotFound", err)
	}
	if _, err := tk.NamedSigner(ctx, KeyName{Label: "hsmkms-tls", TokenLabel: "another-token"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("another token's key: %v, want ErrNotFound", err)
	}
}

// TestNamedSignerAfterHandlesGoStale: the token forgets every handle (as
// after recovery); the signer finds its key again.
func TestNamedSignerAfterHandlesGoStale(t *testing.T) {
	tk := openToken(t, func(c *Config) { c.SessionKeyCopies = true })
	ctx := context.Background()
	name := KeyName{Label: "stale"}
	if err := tk.GenerateNamedKeyPair(ctx, name, NamedECP256); err != nil {
		t.Fatal(err)
	}
	s, err := tk.NamedSigner(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	digest := digestOf(crypto.SHA256, []byte("x"))
	if _, err := s.Sign(nil, digest, crypto.SHA256); err != nil {
		t.Fatal(err)
	}
	e, ok := tk.keys.get(name.cacheKey())
	if !ok {
		t.Fatal("the named key's handle was not cached")
	}
	// Destroy the session copy under the cache: the cached handle is stale.
	tk.withLogin(func(login pkcs11.SessionHandle) {
		if err := tk.ctx.DestroyObject(login, e.use); err != nil {
			t.Fatalf("destroy the session copy: %v", err)
		}
	})
	sig, err := s.Sign(nil, digest, crypto.SHA256)
	if err != nil {
		t.Fatalf("Sign after the handle went stale: %v", err)
	}
	if !ecdsa.VerifyASN1(s.Public().(*ecdsa.PublicKey), digest, sig) {
		t.Error("signature does not verify")
	}
}

func curveParams(c Curve) ([]byte, error) { return asn1.Marshal(curves[c].oid) }
