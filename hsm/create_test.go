package hsm

import (
	"context"
	"crypto"
	"errors"
	"testing"

	"github.com/miekg/pkcs11"
)

// generators are the key generators, each with the object classes it makes.
var generators = []struct {
	name    string
	classes []string
	gen     func(context.Context, *Token, KeyRef) error
}{
	{"AES", []string{"secret"}, func(ctx context.Context, tk *Token, r KeyRef) error { return tk.GenerateAESKey(ctx, r) }},
	{"HMAC", []string{"secret"}, func(ctx context.Context, tk *Token, r KeyRef) error { return tk.GenerateHMACKey(ctx, r, 32) }},
	{"EC", []string{"private", "public"}, func(ctx context.Context, tk *Token, r KeyRef) error { return tk.GenerateECKeyPair(ctx, r, P256) }},
	{"RSA", []string{"private", "public"}, func(ctx context.Context, tk *Token, r KeyRef) error {
		return tk.GenerateRSAKeyPair(ctx, r, 2048, UsageDecrypt)
	}},
}

// Generating through a session object and a copy (the default) must give
// token objects with exactly the attributes in-place generation gives —
// CKA_ALWAYS_SENSITIVE and CKA_NEVER_EXTRACTABLE included, which a copy could
// lose — and leave neither the session object nor a pending label behind.
func TestStagedAndInPlaceKeysAreAlike(t *testing.T) {
	for _, copies := range []bool{false, true} {
		staged := openToken(t, func(c *Config) { c.SessionKeyCopies = copies })
		inPlace := openToken(t, func(c *Config) { c.SessionKeyCopies = copies; c.AtomicObjectCreation = true })
		for _, g := range generators {
			ctx := context.Background()
			rs, ri := newRef(), newRef()
			if err := g.gen(ctx, staged, rs); err != nil {
				t.Fatalf("%s staged: %v", g.name, err)
			}
			if err := g.gen(ctx, inPlace, ri); err != nil {
				t.Fatalf("%s in place: %v", g.name, err)
			}
			objs, err := staged.Objects(ctx)
			if err != nil {
				t.Fatal(err)
			}
			byClass := func(r KeyRef) map[string]ObjectInfo {
				m := map[string]ObjectInfo{}
				for _, o := range objs {
					if o.Ref == r {
						o.Ref, o.Label = KeyRef{}, ""
						m[o.Class] = o
					}
				}
				return m
			}
			got, want := byClass(rs), byClass(ri)
			if len(got) != len(g.classes) {
				t.Fatalf("%s (copies %v): staged objects %v, want classes %v", g.name, copies, got, g.classes)
			}
			for _, class := range g.classes {
				if got[class] != want[class] {
					t.Errorf("%s %s (copies %v):\n staged   %+v\n in place %+v", g.name, class, copies, got[class], want[class])
				}
			}
			for _, o := range objs {
				if o.Ref == rs && o.Label != rs.Label() {
					t.Errorf("%s: token object labelled %q, want %q", g.name, o.Label, rs.Label())
				}
			}
			stray, err := staged.StrayObjects(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range stray {
				if r, ok := refFromCKAID(o.ID); ok && (r == rs || r == ri) {
					t.Errorf("%s: generation left %v", g.name, o)
				}
			}
		}
	}
}

// A key pair whose private half never reached the token (a crash between the
// two copies) does not block its reference: generating it again replaces the
// lone public half. A private half still blocks it (ErrExists).
func TestLonePublicHalfIsReplaced(t *testing.T) {
	tk := openToken(t, nil)
	ctx := context.Background()
	r := newRef()
	if err := tk.GenerateECKeyPair(ctx, r, P256); err != nil {
		t.Fatal(err)
	}
	oldPub, err := tk.PublicKey(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	err = tk.Do(ctx, func(s *Session) error {
		tk.objectsMu.Lock()
		defer tk.objectsMu.Unlock()
		h, err := s.findLocked(r, pkcs11.CKO_PRIVATE_KEY)
		if err != nil {
			return err
		}
		tk.keys.drop(objKey{ref: r, class: pkcs11.CKO_PRIVATE_KEY})
		tk.keys.drop(objKey{ref: r, class: pkcs11.CKO_PUBLIC_KEY})
		return tk.ctx.DestroyObject(s.h, h)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tk.GenerateECKeyPair(ctx, r, P256); err != nil {
		t.Fatalf("generating over a lone public half: %v", err)
	}
	newPub, err := tk.PublicKey(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if string(newPub) == string(oldPub) {
		t.Fatal("the lone public half was kept")
	}
	d := digestOf(crypto.SHA256, []byte("m"))
	err = tk.Do(ctx, func(s *Session) error {
		sig, err := s.Sign(r, ECDSA, crypto.SHA256, d)
		if err != nil {
			return err
		}
		return s.Verify(r, ECDSA, crypto.SHA256, d, sig)
	})
	if err != nil {
		t.Fatalf("the regenerated pair: %v", err)
	}
	if err := tk.GenerateECKeyPair(ctx, r, P256); !errors.Is(err, ErrExists) {
		t.Fatalf("generating over a complete pair: %v, want ErrExists", err)
	}
}

// StrayObjects reports key objects no key reference identifies, says why,
// and leaves complete keys and their session copies out.
func TestStrayObjects(t *testing.T) {
	tk := openToken(t, func(c *Config) { c.SessionKeyCopies = true })
	ctx := context.Background()
	good := newKey(t, tk)
	seal(t, tk, good, nil, []byte("x")) // makes its session copy
	bad := newRef()
	// Objects as another application, or an interrupted creation, leaves
	// them; made through PKCS#11 directly, since hsm never makes them.
	made := map[string]pkcs11.ObjectHandle{}
	for _, c := range []struct {
		name string
		id   []byte
		lbl  string
	}{
		{"no id", nil, "someone else's key"},
		{"wrong label", bad.ckaID(), "not hsmkms"},
		{"pending", bad.ckaID(), bad.pendingLabel()},
	} {
		tmpl := []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
			pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, c.lbl),
		}
		if c.id != nil {
			tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_ID, c.id))
		}
		var h pkcs11.ObjectHandle
		var err error
		tk.withLogin(func(login pkcs11.SessionHandle) {
			h, err = tk.ctx.GenerateKey(login, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, tmpl)
		})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		made[c.name] = h
	}
	t.Cleanup(func() {
		tk.withLogin(func(login pkcs11.SessionHandle) {
			for _, h := range made {
				tk.ctx.DestroyObject(login, h)
			}
		})
	})
	stray, err := tk.StrayObjects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[pkcs11.ObjectHandle]string{
		made["no id"]: problemNoRef, made["wrong label"]: problemLabel, made["pending"]: problemIncomplete,
	}
	for _, o := range stray {
		if r, ok := refFromCKAID(o.ID); ok && r == good {
			t.Errorf("a complete key or its session copy reported: %v", o)
		}
		if p, ok := want[pkcs11.ObjectHandle(o.Handle)]; ok {
			if o.Problem != p || o.Class != "secret" {
				t.Errorf("%v, want problem %q", o, p)
			}
			delete(want, pkcs11.ObjectHandle(o.Handle))
		}
	}
	if len(want) > 0 {
		t.Fatalf("not reported: %v (reported: %v)", want, stray)
	}
}
