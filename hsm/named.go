package hsm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"io"
	"net/url"
	"strings"

	"github.com/miekg/pkcs11"
)

// KeyName names a key pair that is not a KMS key — the TLS server's key —
// by the attributes an RFC 7512 pkcs11: URI selects on: its CKA_LABEL
// ("object"), its CKA_ID ("id") or both, and optionally the token's label or
// serial, which must then be the open token's.
type KeyName struct {
	Label       string
	ID          []byte
	TokenLabel  string
	TokenSerial string
}

func (n KeyName) String() string {
	s := "pkcs11:"
	var parts []string
	if n.TokenLabel != "" {
		parts = append(parts, "token="+uriEscape([]byte(n.TokenLabel)))
	}
	if n.TokenSerial != "" {
		parts = append(parts, "serial="+uriEscape([]byte(n.TokenSerial)))
	}
	if n.Label != "" {
		parts = append(parts, "object="+uriEscape([]byte(n.Label)))
	}
	if len(n.ID) > 0 {
		var b strings.Builder
		for _, c := range n.ID {
			fmt.Fprintf(&b, "%%%02x", c)
		}
		parts = append(parts, "id="+b.String())
	}
	return s + strings.Join(parts, ";")
}

func uriEscape(b []byte) string {
	var s strings.Builder
	for _, c := range b {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~:[]@!$'()*+,=&", c) >= 0 {
			s.WriteByte(c)
		} else {
			fmt.Fprintf(&s, "%%%02X", c)
		}
	}
	return s.String()
}

// ParseKeyName reads a key name as the --tls-key flag takes it: an RFC 7512
// pkcs11: URI ("pkcs11:object=hsmkms-tls;type=private"), or a bare label.
// A URI may select by object, id, token, serial and type (which must be
// private, or absent); it may not carry a PIN (pin-value: a secret in a
// flag shows in the process list) nor name a module or a slot, which the
// token configuration already chose. Unknown attributes are refused, not
// ignored: a selector that is silently dropped could pick another key.
func ParseKeyName(s string) (KeyName, error) {
	if !strings.HasPrefix(strings.ToLower(s), "pkcs11:") {
		if s == "" {
			return KeyName{}, fmt.Errorf("empty key name")
		}
		return KeyName{Label: s}, nil
	}
	rest := s[len("pkcs11:"):]
	path, query, _ := strings.Cut(rest, "?")
	var n KeyName
	seen := map[string]bool{}
	if path != "" {
		for _, attr := range strings.Split(path, ";") {
			k, v, ok := strings.Cut(attr, "=")
			if !ok {
				return KeyName{}, fmt.Errorf("pkcs11 URI %q: attribute %q has no value", s, attr)
			}
			if seen[k] {
				return KeyName{}, fmt.Errorf("pkcs11 URI %q: attribute %q given twice", s, k)
			}
			seen[k] = true
			val, err := url.PathUnescape(v)
			if err != nil {
				return KeyName{}, fmt.Errorf("pkcs11 URI %q: attribute %q: %v", s, k, err)
			}
			switch k {
			case "object":
				n.Label = val
			case "id":
				n.ID = []byte(val)
			case "token":
				n.TokenLabel = val
			case "serial":
				n.TokenSerial = val
			case "type":
				if val != "private" {
					return KeyName{}, fmt.Errorf("pkcs11 URI %q: type=%s, but a signing key is type=private", s, val)
				}
			case "manufacturer", "model", "library-manufacturer", "library-description", "library-version", "slot-id", "slot-description", "slot-manufacturer":
				return KeyName{}, fmt.Errorf("pkcs11 URI %q: %s: the module and token are chosen by the token configuration (--pkcs11-module, --token-label, --token-serial); name only the object here", s, k)
			default:
				return KeyName{}, fmt.Errorf("pkcs11 URI %q: unknown attribute %q", s, k)
			}
		}
	}
	if query != "" {
		for _, attr := range strings.Split(query, "&") {
			k, _, _ := strings.Cut(attr, "=")
			switch k {
			case "pin-value", "pin-source":
				return KeyName{}, fmt.Errorf("pkcs11 URI %q: %s: the token PIN comes from --pin-file or $HSMKMS_PIN, never from a URI on the command line", s, k)
			default:
				return KeyName{}, fmt.Errorf("pkcs11 URI %q: query attribute %q is not supported", s, k)
			}
		}
	}
	if n.Label == "" && len(n.ID) == 0 {
		return KeyName{}, fmt.Errorf("pkcs11 URI %q selects no object: give object= or id=", s)
	}
	return n, nil
}

// namedPrefix starts the CKA_ID of every key pair GenerateNamedKeyPair
// makes, so that StrayObjects knows them as hsmkms's own: they are not KMS
// keys, and not strays.
const namedPrefix = "hsmkms-named:"

// NamedKeyType is the algorithm of a named key pair.
type NamedKeyType int

// The key types a TLS server key may have.
const (
	NamedECP256 NamedKeyType = iota + 1
	NamedECP384
	NamedRSA2048
	NamedRSA3072
	NamedRSA4096
)

// ParseNamedKeyType reads "ecdsa-p256", "ecdsa-p384", "rsa-2048",
// "rsa-3072" or "rsa-4096".
func ParseNamedKeyType(s string) (NamedKeyType, error) {
	switch strings.ToLower(s) {
	case "ecdsa-p256", "ec-p256", "p256":
		return NamedECP256, nil
	case "ecdsa-p384", "ec-p384", "p384":
		return NamedECP384, nil
	case "rsa-2048", "rsa2048":
		return NamedRSA2048, nil
	case "rsa-3072", "rsa3072":
		return NamedRSA3072, nil
	case "rsa-4096", "rsa4096":
		return NamedRSA4096, nil
	}
	return 0, fmt.Errorf("key type %q: want ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072 or rsa-4096", s)
}

// GenerateNamedKeyPair creates a signing key pair labelled name.Label in
// the token: both halves token objects, the private half sensitive, never
// extractable, allowed to sign and nothing else. Its CKA_ID is namedPrefix
// and 8 random bytes unless name.ID gives one. ErrExists if any key object
// already carries the label (or the id): a name must select one key.
func (t *Token) GenerateNamedKeyPair(ctx context.Context, name KeyName, typ NamedKeyType) error {
	if name.Label == "" {
		return &Error{Op: "generate named key", Kind: ErrInvalidInput, Err: fmt.Errorf("a label is required")}
	}
	var mech uint
	var pubExtra []*pkcs11.Attribute
	var keyType uint
	switch typ {
	case NamedECP256, NamedECP384:
		curve := P256
		if typ == NamedECP384 {
			curve = P384
		}
		params, err := asn1.Marshal(curves[curve].oid)
		if err != nil {
			return &Error{Op: "generate named key", Kind: ErrInternal, Err: err}
		}
		mech, keyType = pkcs11.CKM_EC_KEY_PAIR_GEN, pkcs11.CKK_EC
		pubExtra = []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, params)}
	case NamedRSA2048, NamedRSA3072, NamedRSA4096:
		bits := map[NamedKeyType]int{NamedRSA2048: 2048, NamedRSA3072: 3072, NamedRSA4096: 4096}[typ]
		mech, keyType = pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, pkcs11.CKK_RSA
		pubExtra = []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_MODULUS_BITS, bits),
			pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}),
		}
	default:
		return &Error{Op: "generate named key", Kind: ErrInvalidInput, Err: fmt.Errorf("key type %d", typ)}
	}
	return t.Do(ctx, func(s *Session) error {
		t.objectsMu.Lock()
		defer t.objectsMu.Unlock()
		id := name.ID
		if len(id) == 0 {
			rnd := make([]byte, 8)
			if err := s.Random(rnd); err != nil {
				return err
			}
			id = append([]byte(namedPrefix), rnd...)
		}
		for _, sel := range [][]*pkcs11.Attribute{
			{pkcs11.NewAttribute(pkcs11.CKA_LABEL, name.Label)},
			{pkcs11.NewAttribute(pkcs11.CKA_ID, id)},
		} {
			hs, err := s.findObjects(append(sel, pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true)))
			if err != nil {
				return err
			}
			if len(hs) > 0 {
				return &Error{Op: "generate named key", Kind: ErrExists, Err: fmt.Errorf("the token already has an object with label %q or that id", name.Label)}
			}
		}
		common := func(class uint) []*pkcs11.Attribute {
			return []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
				pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, keyType),
				pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
				pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
				pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false),
				pkcs11.NewAttribute(pkcs11.CKA_ID, id),
				pkcs11.NewAttribute(pkcs11.CKA_LABEL, name.Label),
			}
		}
		pub := append(append(common(pkcs11.CKO_PUBLIC_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_MODIFIABLE, false),
			pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
			pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false),
			pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
		), pubExtra...)
		priv := append(common(pkcs11.CKO_PRIVATE_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
			// Modifiable only as KMS keys are: SoftHSM2 copies an object
			// to a session object only if it is (see aesTemplate).
			pkcs11.NewAttribute(pkcs11.CKA_MODIFIABLE, t.cfg.SessionKeyCopies),
			pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
			pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
			pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
		)
		_, _, err := s.calls().GenerateKeyPair(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)}, pub, priv)
		return translate("C_GenerateKeyPair", err, false)
	})
}

// NamedSigner is a crypto.Signer whose private key is a named key pair in
// the token: every signature is a C_Sign there, on a session of the Token's
// pool, under its one login. It survives token recovery (the handle is
// found again).
type NamedSigner struct {
	t    *Token
	name KeyName
	pub  crypto.PublicKey
	ec   bool
	info ObjectInfo
}

// NamedSigner finds the private key name selects (exactly one, allowed to
// sign) and its public half (same CKA_ID, else same label), whose public
// key Public returns.
func (t *Token) NamedSigner(ctx context.Context, name KeyName) (*NamedSigner, error) {
	ns := &NamedSigner{t: t, name: name}
	err := t.Do(ctx, func(s *Session) error {
		if name.TokenLabel != "" || name.TokenSerial != "" {
			ti, err := s.calls().GetTokenInfo(t.slot)
			if err != nil {
				return translate("C_GetTokenInfo", err, false)
			}
			label := strings.TrimRight(ti.Label, " \x00")
			serial := strings.TrimRight(ti.SerialNumber, " \x00")
			if name.TokenLabel != "" && name.TokenLabel != label || name.TokenSerial != "" && name.TokenSerial != serial {
				return &Error{Op: "find named key", Kind: ErrNotFound, Err: fmt.Errorf("%s names a token other than the one in use (label %q, serial %q)", name, label, serial)}
			}
		}
		t.objectsMu.Lock()
		defer t.objectsMu.Unlock()
		priv, err := s.findNamedLocked(name, pkcs11.CKO_PRIVATE_KEY)
		if err != nil {
			return err
		}
		info, _, err := s.objectInfo(priv, pkcs11.CKO_PRIVATE_KEY)
		if err != nil {
			return err
		}
		if !info.Sign {
			return &Error{Op: "find named key", Kind: ErrInvalidInput, Err: fmt.Errorf("%s: the private key may not sign (CKA_SIGN false)", name)}
		}
		ns.info = info
		attrs, err := s.calls().GetAttributeValue(s.h, priv, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ID, nil)})
		if err != nil {
			return translate("C_GetAttributeValue", err, false)
		}
		pubName := KeyName{ID: attrs[0].Value}
		if len(pubName.ID) == 0 {
			pubName = KeyName{Label: info.Label}
		}
		pubH, err := s.findNamedLocked(pubName, pkcs11.CKO_PUBLIC_KEY)
		if err != nil {
			return fmt.Errorf("%s: its public half: %w", name, err)
		}
		der, err := s.spki(pubH)
		if err != nil {
			return err
		}
		pub, err := x509.ParsePKIXPublicKey(der)
		if err != nil {
			return &Error{Op: "find named key", Kind: ErrInternal, Err: err}
		}
		switch pub.(type) {
		case *ecdsa.PublicKey:
			ns.ec = true
		case *rsa.PublicKey:
		default:
			return &Error{Op: "find named key", Kind: ErrInvalidInput, Err: fmt.Errorf("%s: a %T key cannot serve TLS", name, pub)}
		}
		ns.pub = pub
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ns, nil
}

// findNamedLocked finds the one token object of class that n selects. The
// caller holds objectsMu.
func (s *Session) findNamedLocked(n KeyName, class uint) (pkcs11.ObjectHandle, error) {
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
	}
	if n.Label != "" {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_LABEL, n.Label))
	}
	if len(n.ID) > 0 {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_ID, n.ID))
	}
	hs, err := s.findObjects(tmpl)
	if err != nil {
		return 0, err
	}
	switch len(hs) {
	case 0:
		return 0, &Error{Op: "find named key", Kind: ErrNotFound, Err: fmt.Errorf("no %s key object matches %s", className(class), n)}
	case 1:
		return hs[0], nil
	}
	return 0, &Error{Op: "find named key", Kind: ErrInvalidInput, Err: fmt.Errorf("%d %s key objects match %s; select one by id", len(hs), className(class), n)}
}

// namedCacheKey is where a named key's handle is cached, beside the KMS
// keys' (cleared with them when the token recovers).
func (n KeyName) cacheKey() objKey {
	return objKey{class: pkcs11.CKO_PRIVATE_KEY, name: n.Label + "\x00" + string(n.ID)}
}

// Public returns the key pair's public key (*ecdsa.PublicKey or
// *rsa.PublicKey).
func (ns *NamedSigner) Public() crypto.PublicKey { return ns.pub }

// Info describes the private key object as the token reports it (no key
// material): whether it is sensitive, extractable, a token object, …
func (ns *NamedSigner) Info() ObjectInfo { return ns.info }

// Name is what selected the key.
func (ns *NamedSigner) Name() KeyName { return ns.name }

// Sign signs digest in the token: ECDSA (ASN.1 DER, as crypto/ecdsa) for an
// EC key; for RSA, PSS with a salt as long as the hash when opts is
// *rsa.PSSOptions (as TLS 1.3 uses it), else PKCS #1 v1.5. The random
// source is the token's; rand is not read.
func (ns *NamedSigner) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return ns.SignContext(context.Background(), digest, opts)
}

// SignContext is Sign with a context bounding the wait for a session.
func (ns *NamedSigner) SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	h := opts.HashFunc()
	scheme := PKCS1v15
	switch {
	case ns.ec:
		scheme = ECDSA
	case isPSS(opts):
		pss := opts.(*rsa.PSSOptions)
		if pss.SaltLength != rsa.PSSSaltLengthEqualsHash && pss.SaltLength != h.Size() {
			return nil, &Error{Op: "sign", Kind: ErrInvalidInput, Err: fmt.Errorf("PSS salt length %d (the token signs with a salt as long as the hash)", pss.SaltLength)}
		}
		scheme = PSS
	}
	var sig []byte
	err := ns.t.Do(ctx, func(s *Session) error {
		e, err := s.namedHandle(ns.name)
		if err != nil {
			return err
		}
		sig, err = s.signWith(e, scheme, h, digest)
		return err
	})
	if err != nil {
		return nil, err // sig may still be written by a callback Do stopped waiting for
	}
	return sig, nil
}

func isPSS(opts crypto.SignerOpts) bool {
	_, ok := opts.(*rsa.PSSOptions)
	return ok
}

// namedHandle returns the cache entry of n's private key, from the cache or,
// once, from the token.
func (s *Session) namedHandle(n KeyName) (keyEntry, error) {
	t := s.t
	k := n.cacheKey()
	if e, ok := t.keys.get(k); ok {
		return e, nil
	}
	t.keys.miss.Lock()
	defer t.keys.miss.Unlock()
	if e, ok := t.keys.get(k); ok {
		return e, nil
	}
	t.objectsMu.Lock()
	defer t.objectsMu.Unlock()
	h, err := s.findNamedLocked(n, pkcs11.CKO_PRIVATE_KEY)
	if err != nil {
		return keyEntry{}, err
	}
	e, err := t.entryLocked(s, h, pkcs11.CKO_PRIVATE_KEY)
	if err != nil {
		return keyEntry{}, err
	}
	t.keys.set(k, e)
	return e, nil
}
