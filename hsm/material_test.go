package hsm

import (
	"context"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"
)

// materialOf returns KeyMaterials' entry for r.
func materialOf(t *testing.T, tk *Token, r KeyRef) (Material, bool) {
	t.Helper()
	ms, err := tk.KeyMaterials(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Ref == r {
			return m, true
		}
	}
	return Material{}, false
}

// TestKeyMaterialsRecognisesWhatHsmkmsMakes: every key the Generate
// functions make, staged or in place, with or without session copies, is
// described as what it is, with no problem.
func TestKeyMaterialsRecognisesWhatHsmkmsMakes(t *testing.T) {
	ctx := context.Background()
	for _, mode := range []struct {
		name   string
		copies bool
		atomic bool
	}{{"staged", false, false}, {"staged with copies", true, false}, {"in place", false, true}} {
		tk := openToken(t, func(c *Config) { c.SessionKeyCopies = mode.copies; c.AtomicObjectCreation = mode.atomic })
		for _, tc := range []struct {
			gen  func(KeyRef) error
			want Material
		}{
			{func(r KeyRef) error { return tk.GenerateAESKey(ctx, r) }, Material{Kind: MaterialAES, Size: 32}},
			{func(r KeyRef) error { return tk.GenerateHMACKey(ctx, r, 28) }, Material{Kind: MaterialHMAC, Size: 28}},
			{func(r KeyRef) error { return tk.GenerateHMACKey(ctx, r, 64) }, Material{Kind: MaterialHMAC, Size: 64}},
			{func(r KeyRef) error { return tk.GenerateECKeyPair(ctx, r, P384) }, Material{Kind: MaterialEC, Curve: P384, Usage: UsageSign}},
			{func(r KeyRef) error { return tk.GenerateECKeyPair(ctx, r, Secp256k1) }, Material{Kind: MaterialEC, Curve: Secp256k1, Usage: UsageSign}},
			{func(r KeyRef) error { return tk.GenerateRSAKeyPair(ctx, r, 2048, UsageDecrypt) }, Material{Kind: MaterialRSA, Size: 2048, Usage: UsageDecrypt}},
			{func(r KeyRef) error { return tk.GenerateRSAKeyPair(ctx, r, 3072, UsageSign) }, Material{Kind: MaterialRSA, Size: 3072, Usage: UsageSign}},
		} {
			r := newRef()
			if err := tc.gen(r); err != nil {
				t.Fatal(err)
			}
			got, ok := materialOf(t, tk, r)
			tc.want.Ref = r
			if !ok || got != tc.want {
				t.Errorf("%s: %s: got %+v (found %v), want %+v", mode.name, tc.want.Kind, got, ok, tc.want)
			}
		}
	}
}

// TestKeyMaterialsRefusesOthers: objects that carry a key reference but
// are not as hsmkms makes them — another application's, or what an
// interrupted creation leaves — are reported with the reason, and none is
// changed or destroyed by looking.
func TestKeyMaterialsRefusesOthers(t *testing.T) {
	tk := openToken(t, nil)
	ctx := context.Background()
	secret := func(r KeyRef, edit func([]*pkcs11.Attribute) []*pkcs11.Attribute) func() error {
		return func() error {
			tmpl := edit(aesTemplate(r, false))
			return tk.Do(ctx, func(s *Session) error {
				_, err := tk.ctx.GenerateKey(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, tmpl)
				return err
			})
		}
	}
	set := func(typ uint, v any) func([]*pkcs11.Attribute) []*pkcs11.Attribute {
		return func(tmpl []*pkcs11.Attribute) []*pkcs11.Attribute {
			for i, a := range tmpl {
				if a.Type == typ {
					tmpl[i] = pkcs11.NewAttribute(typ, v)
				}
			}
			return tmpl
		}
	}
	pair := func(r KeyRef, editPub, editPriv func([]*pkcs11.Attribute) []*pkcs11.Attribute) func() error {
		return func() error {
			pub, priv := tk.pairTemplates(r, UsageSign)
			pub = append(editPub(pub), pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
				pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}))
			priv = append(editPriv(priv), pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC))
			return tk.Do(ctx, func(s *Session) error {
				_, _, err := tk.ctx.GenerateKeyPair(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_EC_KEY_PAIR_GEN, nil)}, pub, priv)
				return err
			})
		}
	}
	same := func(tmpl []*pkcs11.Attribute) []*pkcs11.Attribute { return tmpl }
	for _, tc := range []struct {
		name string
		make func(KeyRef) func() error
		says string
	}{
		{"extractable", func(r KeyRef) func() error { return secret(r, set(pkcs11.CKA_EXTRACTABLE, true)) }, "not sensitive or extractable"},
		{"not sensitive", func(r KeyRef) func() error { return secret(r, set(pkcs11.CKA_SENSITIVE, false)) }, "not sensitive or extractable"},
		{"may wrap", func(r KeyRef) func() error { return secret(r, set(pkcs11.CKA_WRAP, true)) }, "wrap"},
		{"another label", func(r KeyRef) func() error { return secret(r, set(pkcs11.CKA_LABEL, "payments-key")) }, `labelled "payments-key"`},
		{"pending label", func(r KeyRef) func() error { return secret(r, set(pkcs11.CKA_LABEL, r.pendingLabel())) }, "/incomplete"},
		{"AES-128", func(r KeyRef) func() error { return secret(r, set(pkcs11.CKA_VALUE_LEN, 16)) }, "16 bytes"},
		{"AES that signs", func(r KeyRef) func() error { return secret(r, set(pkcs11.CKA_SIGN, true)) }, "not a key hsmkms makes"},
		{"public half modifiable", func(r KeyRef) func() error { return pair(r, set(pkcs11.CKA_MODIFIABLE, true), same) }, "modifiable"},
		{"halves of two usages", func(r KeyRef) func() error {
			return pair(r, func(p []*pkcs11.Attribute) []*pkcs11.Attribute {
				return set(pkcs11.CKA_ENCRYPT, true)(set(pkcs11.CKA_VERIFY, false)(p))
			}, same)
		}, "not one usage"},
		{"a lone public half", func(r KeyRef) func() error {
			return func() error {
				if err := pair(r, same, same)(); err != nil {
					return err
				}
				return tk.Do(ctx, func(s *Session) error {
					tk.objectsMu.Lock()
					defer tk.objectsMu.Unlock()
					h, err := s.findLocked(r, pkcs11.CKO_PRIVATE_KEY)
					if err != nil {
						return err
					}
					return tk.ctx.DestroyObject(s.h, h)
				})
			}
		}, "public half alone"},
		{"two secret keys", func(r KeyRef) func() error {
			return func() error {
				if err := secret(r, same)(); err != nil {
					return err
				}
				return secret(r, same)()
			}
		}, "2 secret"},
	} {
		r := newRef()
		if err := tc.make(r)(); err != nil {
			t.Fatalf("%s: making the object: %v", tc.name, err)
		}
		before, _ := tk.Objects(ctx)
		got, ok := materialOf(t, tk, r)
		switch {
		case !ok:
			t.Errorf("%s: not listed", tc.name)
		case got.Problem == "" || got.Kind != "":
			t.Errorf("%s: described as %+v, with no problem", tc.name, got)
		case !strings.Contains(got.Problem, tc.says):
			t.Errorf("%s: problem %q does not say %q", tc.name, got.Problem, tc.says)
		}
		after, _ := tk.Objects(ctx)
		if len(after) != len(before) {
			t.Errorf("%s: %d objects before KeyMaterials, %d after", tc.name, len(before), len(after))
		}
	}
}

// TestTokenInfo: the token names itself, and the session counts follow
// the pool: an operation in progress is a session in use.
func TestTokenInfo(t *testing.T) {
	tk := openToken(t, func(c *Config) { c.MaxSessions = 5 })
	ctx := context.Background()
	info, err := tk.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Label != tk.cfg.TokenLabel || info.Serial == "" || !strings.Contains(info.Manufacturer, "SoftHSM") ||
		info.Model == "" || info.SessionsMax != 5 || info.SessionsInUse != 0 {
		t.Errorf("info %+v", info)
	}
	err = tk.Do(ctx, func(*Session) error {
		during, err := tk.Info(ctx)
		if err != nil {
			return err
		}
		if during.SessionsInUse != 1 || during.SessionsOpen < 1 {
			t.Errorf("during an operation: %+v, want 1 session in use", during)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	after, _ := tk.Info(ctx)
	if after.SessionsInUse != 0 || after.SessionsOpen < 1 {
		t.Errorf("after the operation: %+v, want its session idle", after)
	}
	tk.Close()
	if _, err := tk.Info(ctx); err == nil {
		t.Error("Info of a closed token succeeded")
	}
}
