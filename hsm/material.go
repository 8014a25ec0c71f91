package hsm

import (
	"bytes"
	"context"
	"fmt"
	"math/big"
	"slices"
	"strings"

	"github.com/miekg/pkcs11"
)

// MaterialKind is the kind of key a key version's objects hold.
type MaterialKind string

// The kinds of key hsmkms makes.
const (
	MaterialAES  MaterialKind = "AES"  // GenerateAESKey
	MaterialHMAC MaterialKind = "HMAC" // GenerateHMACKey
	MaterialRSA  MaterialKind = "RSA"  // GenerateRSAKeyPair
	MaterialEC   MaterialKind = "EC"   // GenerateECKeyPair
)

// Material describes one key version as its token objects show it, for
// bringing a version whose record was lost back under a record. It holds
// no key material: only the attributes any logged-in user can read.
type Material struct {
	Ref KeyRef
	// Kind is what the objects hold, if they are as hsmkms makes them.
	Kind MaterialKind
	// Size is the key's length in bytes (AES, HMAC) or its modulus's in
	// bits (RSA).
	Size  int
	Curve Curve     // EC
	Usage PairUsage // RSA and EC
	// Problem says why the objects are not a key version as hsmkms makes
	// it; "" when they are. A caller must not vouch for objects with a
	// problem: another application, or an interrupted creation, made them.
	Problem string
}

// KeyMaterials describes every key version in the token: the token's key
// objects carrying a key reference (a 20-byte CKA_ID), one Material per
// reference, in reference order. It reads attributes only: it changes
// nothing and never destroys anything.
//
// A version is as hsmkms makes it (Problem "") when its objects are
// exactly those one of the Generate functions leaves: one secret key, or a
// private and a public half of the same key; labelled with Ref.Label();
// token objects, private; secret and private objects sensitive, never
// extractable and never were; nothing may wrap, unwrap or derive; the
// usage flags of one key usage; a public half that cannot be modified; and
// a size and type hsmkms makes (AES-256; HMAC keys of 28 to 64 bytes; RSA
// 2048, 3072 or 4096 bits with exponent 65537; the curves of Curve).
func (t *Token) KeyMaterials(ctx context.Context) ([]Material, error) {
	var out []Material
	err := t.Do(ctx, func(s *Session) error {
		out = out[:0]
		t.objectsMu.Lock()
		defer t.objectsMu.Unlock()
		byRef := map[KeyRef][]objectAttrs{}
		for _, class := range keyClasses {
			hs, err := s.findObjects([]*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
				pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			})
			if err != nil {
				return err
			}
			for _, h := range hs {
				a, err := s.keyAttrs(h, class)
				if err != nil {
					return err
				}
				if r, ok := refFromCKAID(a.id); ok {
					byRef[r] = append(byRef[r], a)
				}
			}
		}
		for r, objs := range byRef {
			out = append(out, describe(r, objs))
		}
		return nil
	})
	slices.SortFunc(out, func(a, b Material) int {
		if c := bytes.Compare(a.Ref.KeyID[:], b.Ref.KeyID[:]); c != 0 {
			return c
		}
		return int(int64(a.Ref.Version) - int64(b.Ref.Version))
	})
	return out, err
}

// objectAttrs are the attributes of one key object that say what it is.
type objectAttrs struct {
	class, keyType                                            uint
	id                                                        []byte
	label                                                     string
	token, private, modifiable, derive                        bool
	encrypt, decrypt, sign, verify, wrap, unwrap              bool
	sensitive, extractable, alwaysSensitive, neverExtractable bool
	valueLen                                                  uint
	modulus, exponent, ecParams                               []byte
}

// keyAttrs reads the attributes of object h of class: those every key
// object has, those of its class, then those of its key type (a token
// answers a request naming an attribute the object lacks with an error for
// the whole call).
func (s *Session) keyAttrs(h pkcs11.ObjectHandle, class uint) (objectAttrs, error) {
	a := objectAttrs{class: class}
	types := []uint{pkcs11.CKA_KEY_TYPE, pkcs11.CKA_ID, pkcs11.CKA_LABEL, pkcs11.CKA_TOKEN, pkcs11.CKA_PRIVATE,
		pkcs11.CKA_MODIFIABLE, pkcs11.CKA_DERIVE}
	public := []uint{pkcs11.CKA_ENCRYPT, pkcs11.CKA_VERIFY, pkcs11.CKA_WRAP}
	private := []uint{pkcs11.CKA_DECRYPT, pkcs11.CKA_SIGN, pkcs11.CKA_UNWRAP, pkcs11.CKA_SENSITIVE,
		pkcs11.CKA_EXTRACTABLE, pkcs11.CKA_ALWAYS_SENSITIVE, pkcs11.CKA_NEVER_EXTRACTABLE}
	switch class {
	case pkcs11.CKO_SECRET_KEY:
		types = append(append(append(types, public...), private...), pkcs11.CKA_VALUE_LEN)
	case pkcs11.CKO_PRIVATE_KEY:
		types = append(types, private...)
	case pkcs11.CKO_PUBLIC_KEY:
		types = append(types, public...)
	}
	attrs, err := s.attributes(h, types)
	if err != nil {
		return a, err
	}
	b := func(v []byte) bool { return len(v) == 1 && v[0] != 0 }
	for _, at := range attrs {
		switch at.Type {
		case pkcs11.CKA_KEY_TYPE:
			a.keyType = uint(ulong(at.Value))
		case pkcs11.CKA_ID:
			a.id = at.Value
		case pkcs11.CKA_LABEL:
			a.label = string(at.Value)
		case pkcs11.CKA_TOKEN:
			a.token = b(at.Value)
		case pkcs11.CKA_PRIVATE:
			a.private = b(at.Value)
		case pkcs11.CKA_MODIFIABLE:
			a.modifiable = b(at.Value)
		case pkcs11.CKA_DERIVE:
			a.derive = b(at.Value)
		case pkcs11.CKA_ENCRYPT:
			a.encrypt = b(at.Value)
		case pkcs11.CKA_DECRYPT:
			a.decrypt = b(at.Value)
		case pkcs11.CKA_SIGN:
			a.sign = b(at.Value)
		case pkcs11.CKA_VERIFY:
			a.verify = b(at.Value)
		case pkcs11.CKA_WRAP:
			a.wrap = b(at.Value)
		case pkcs11.CKA_UNWRAP:
			a.unwrap = b(at.Value)
		case pkcs11.CKA_SENSITIVE:
			a.sensitive = b(at.Value)
		case pkcs11.CKA_EXTRACTABLE:
			a.extractable = b(at.Value)
		case pkcs11.CKA_ALWAYS_SENSITIVE:
			a.alwaysSensitive = b(at.Value)
		case pkcs11.CKA_NEVER_EXTRACTABLE:
			a.neverExtractable = b(at.Value)
		case pkcs11.CKA_VALUE_LEN:
			a.valueLen = uint(ulong(at.Value))
		}
	}
	var more []uint
	switch {
	case class == pkcs11.CKO_SECRET_KEY:
	case a.keyType == pkcs11.CKK_RSA && class == pkcs11.CKO_PUBLIC_KEY:
		more = []uint{pkcs11.CKA_MODULUS, pkcs11.CKA_PUBLIC_EXPONENT}
	case a.keyType == pkcs11.CKK_RSA:
		more = []uint{pkcs11.CKA_MODULUS}
	case a.keyType == pkcs11.CKK_EC:
		more = []uint{pkcs11.CKA_EC_PARAMS}
	}
	if len(more) == 0 {
		return a, nil
	}
	attrs, err = s.attributes(h, more)
	if err != nil {
		return a, err
	}
	for _, at := range attrs {
		switch at.Type {
		case pkcs11.CKA_MODULUS:
			a.modulus = trimZeros(at.Value)
		case pkcs11.CKA_PUBLIC_EXPONENT:
			a.exponent = trimZeros(at.Value)
		case pkcs11.CKA_EC_PARAMS:
			a.ecParams = at.Value
		}
	}
	return a, nil
}

func (s *Session) attributes(h pkcs11.ObjectHandle, types []uint) ([]*pkcs11.Attribute, error) {
	tmpl := make([]*pkcs11.Attribute, len(types))
	for i, ty := range types {
		tmpl[i] = pkcs11.NewAttribute(ty, nil)
	}
	attrs, err := s.calls().GetAttributeValue(s.h, h, tmpl)
	if err != nil {
		return nil, translate("C_GetAttributeValue", err, false)
	}
	return attrs, nil
}

// describe decides what r's objects hold and whether hsmkms made them.
func describe(r KeyRef, objs []objectAttrs) Material {
	m := Material{Ref: r}
	var secret, priv, pub []objectAttrs
	for _, o := range objs {
		switch o.class {
		case pkcs11.CKO_SECRET_KEY:
			secret = append(secret, o)
		case pkcs11.CKO_PRIVATE_KEY:
			priv = append(priv, o)
		case pkcs11.CKO_PUBLIC_KEY:
			pub = append(pub, o)
		}
	}
	var problems []string
	for _, o := range objs {
		problems = append(problems, objectProblems(r, o)...)
	}
	switch {
	case len(secret) == 1 && len(priv) == 0 && len(pub) == 0:
		problems = append(problems, describeSecret(&m, secret[0])...)
	case len(secret) == 0 && len(priv) == 1 && len(pub) == 1:
		problems = append(problems, describePair(&m, priv[0], pub[0])...)
	case len(secret) == 0 && len(priv) == 0 && len(pub) == 1:
		problems = append(problems, "a public half alone (an interrupted key-pair generation leaves one; it decrypts and signs nothing)")
	case len(secret) == 0 && len(priv) == 1 && len(pub) == 0:
		problems = append(problems, "a private half without its public half")
	default:
		problems = append(problems, fmt.Sprintf("%d secret, %d private and %d public objects share the reference; hsmkms makes one secret key or one pair", len(secret), len(priv), len(pub)))
	}
	if len(problems) > 0 {
		m.Kind, m.Size, m.Curve, m.Usage = "", 0, 0, 0
		m.Problem = strings.Join(problems, "; ")
	}
	return m
}

// objectProblems lists how object o differs from what every object
// hsmkms makes for r has.
func objectProblems(r KeyRef, o objectAttrs) []string {
	var p []string
	name := className(o.class)
	if o.label != r.Label() {
		p = append(p, fmt.Sprintf("%s object labelled %q, not %q", name, o.label, r.Label()))
	}
	if !o.token || !o.private {
		p = append(p, name+" object is not a private token object")
	}
	if o.derive || o.wrap || o.unwrap {
		p = append(p, name+" object may wrap, unwrap or derive")
	}
	switch o.class {
	case pkcs11.CKO_PUBLIC_KEY:
		if o.modifiable {
			p = append(p, "public half is modifiable")
		}
	default:
		if !o.sensitive || o.extractable || !o.alwaysSensitive || !o.neverExtractable {
			p = append(p, name+" key is, or was, not sensitive or extractable")
		}
	}
	return p
}

func describeSecret(m *Material, o objectAttrs) []string {
	switch {
	case o.keyType == pkcs11.CKK_AES && o.valueLen == 32 && o.encrypt && o.decrypt && !o.sign && !o.verify:
		m.Kind, m.Size = MaterialAES, 32
	case o.keyType == pkcs11.CKK_GENERIC_SECRET && o.valueLen >= 28 && o.valueLen <= 64 && o.sign && o.verify && !o.encrypt && !o.decrypt:
		m.Kind, m.Size = MaterialHMAC, int(o.valueLen)
	default:
		return []string{fmt.Sprintf("secret key of type %#x, %d bytes, encrypt %v, decrypt %v, sign %v, verify %v: not a key hsmkms makes",
			o.keyType, o.valueLen, o.encrypt, o.decrypt, o.sign, o.verify)}
	}
	return nil
}

func describePair(m *Material, priv, pub objectAttrs) []string {
	if priv.keyType != pub.keyType {
		return []string{"the halves are keys of different types"}
	}
	switch {
	case priv.sign && pub.verify && !priv.decrypt && !pub.encrypt:
		m.Usage = UsageSign
	case priv.decrypt && pub.encrypt && !priv.sign && !pub.verify:
		m.Usage = UsageDecrypt
	default:
		return []string{fmt.Sprintf("usage flags (private sign %v, decrypt %v; public verify %v, encrypt %v) are not one usage",
			priv.sign, priv.decrypt, pub.verify, pub.encrypt)}
	}
	switch priv.keyType {
	case pkcs11.CKK_RSA:
		bits := new(big.Int).SetBytes(pub.modulus).BitLen()
		switch {
		case !bytes.Equal(priv.modulus, pub.modulus):
			return []string{"the halves have different moduli"}
		case bits != 2048 && bits != 3072 && bits != 4096:
			return []string{fmt.Sprintf("a %d-bit RSA modulus", bits)}
		case !bytes.Equal(pub.exponent, []byte{1, 0, 1}):
			return []string{fmt.Sprintf("RSA public exponent %x, not 65537", pub.exponent)}
		}
		m.Kind, m.Size = MaterialRSA, bits
	case pkcs11.CKK_EC:
		curve, err := curveOf(pub.ecParams)
		switch {
		case err != nil:
			return []string{fmt.Sprintf("EC parameters %x name no curve hsmkms uses", pub.ecParams)}
		case !bytes.Equal(priv.ecParams, pub.ecParams):
			return []string{"the halves are on different curves"}
		case m.Usage != UsageSign:
			return []string{"an EC key for decryption"}
		}
		m.Kind, m.Curve = MaterialEC, curve
	default:
		return []string{fmt.Sprintf("a key pair of type %#x", priv.keyType)}
	}
	return nil
}
