package hsm

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/big"

	"github.com/miekg/pkcs11"
)

// Curve is an elliptic curve the token generates key pairs on.
type Curve int

// The curves AWS KMS offers for ECC keys.
const (
	P256 Curve = iota + 1
	P384
	P521
	Secp256k1
)

type curveInfo struct {
	name string
	oid  asn1.ObjectIdentifier
	size int // bytes of a field element, and of r and s in a signature
}

var curves = map[Curve]curveInfo{
	P256:      {"P-256", asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}, 32},
	P384:      {"P-384", asn1.ObjectIdentifier{1, 3, 132, 0, 34}, 48},
	P521:      {"P-521", asn1.ObjectIdentifier{1, 3, 132, 0, 35}, 66},
	Secp256k1: {"secp256k1", asn1.ObjectIdentifier{1, 3, 132, 0, 10}, 32},
}

// OID returns the curve's object identifier (as in SubjectPublicKeyInfo).
func (c Curve) OID() asn1.ObjectIdentifier { return curves[c].oid }

var oidECPublicKey = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}

// PairUsage says what a key pair's private half may do in the token.
type PairUsage int

const (
	// UsageSign allows C_Sign (private) and C_Verify (public).
	UsageSign PairUsage = iota + 1
	// UsageDecrypt allows C_Decrypt (private) and C_Encrypt (public).
	UsageDecrypt
)

// pairTemplates returns the attributes of a key pair's halves for r (docs/ARCHITECTURE.md,
// decisions 1 and 4): both token-resident and private to the logged-in user;
// the private half sensitive and never extractable, allowed only usage; the
// public half never modifiable, so no one can swap the key a Verify trusts.
// The private half is modifiable only when session copies are on (see
// aesTemplate).
func (t *Token) pairTemplates(r KeyRef, usage PairUsage) (pub, priv []*pkcs11.Attribute) {
	sign, decrypt := usage == UsageSign, usage == UsageDecrypt
	common := func(class uint) []*pkcs11.Attribute {
		return []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
			pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false),
			pkcs11.NewAttribute(pkcs11.CKA_ID, r.ckaID()),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, r.Label()),
		}
	}
	pub = append(common(pkcs11.CKO_PUBLIC_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_MODIFIABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, sign),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, decrypt),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
	)
	priv = append(common(pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_MODIFIABLE, t.cfg.SessionKeyCopies),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, sign),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, decrypt),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
	)
	return pub, priv
}

// GenerateRSAKeyPair creates an RSA key pair of bits (2048, 3072 or 4096)
// with public exponent 65537 in the token for r. ErrExists if r is taken.
func (t *Token) GenerateRSAKeyPair(ctx context.Context, r KeyRef, bits int, usage PairUsage) error {
	if bits != 2048 && bits != 3072 && bits != 4096 {
		return &Error{Op: "generate RSA key", Kind: ErrInvalidInput, Err: fmt.Errorf("%d-bit modulus", bits)}
	}
	pub, priv := t.pairTemplates(r, usage)
	pub = append(pub,
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
		pkcs11.NewAttribute(pkcs11.CKA_MODULUS_BITS, bits),
		pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}),
	)
	priv = append(priv, pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA))
	return t.generatePair(ctx, r, pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, pub, priv)
}

// GenerateECKeyPair creates a signing key pair on curve in the token for r.
// ErrExists if r is taken.
func (t *Token) GenerateECKeyPair(ctx context.Context, r KeyRef, curve Curve) error {
	info, ok := curves[curve]
	if !ok {
		return &Error{Op: "generate EC key", Kind: ErrInvalidInput, Err: fmt.Errorf("curve %d", curve)}
	}
	params, err := asn1.Marshal(info.oid)
	if err != nil {
		return &Error{Op: "generate EC key", Kind: ErrInternal, Err: err}
	}
	pub, priv := t.pairTemplates(r, UsageSign)
	pub = append(pub,
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
		pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, params),
	)
	priv = append(priv, pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC))
	return t.generatePair(ctx, r, pkcs11.CKM_EC_KEY_PAIR_GEN, pub, priv)
}

// generatePair makes r's key pair with mech from the final templates of its
// halves. The public half is stored first (see claimLocked).
func (t *Token) generatePair(ctx context.Context, r KeyRef, mech uint, pub, priv []*pkcs11.Attribute) error {
	m := []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)}
	return t.generate(ctx, r, [][]*pkcs11.Attribute{pub, priv}, func(s *Session, tmpls [][]*pkcs11.Attribute) (_ []pkcs11.ObjectHandle, err error) {
		defer t.observe(callGenerateKeyPair, t.clock(), &err)
		hpub, hpriv, err := s.calls().GenerateKeyPair(s.h, m, tmpls[0], tmpls[1])
		if err != nil {
			return nil, translate("C_GenerateKeyPair", err, false)
		}
		return []pkcs11.ObjectHandle{hpub, hpriv}, nil
	})
}

// GenerateHMACKey creates a generic secret key of size bytes in the token for
// r, usable only to compute and verify HMACs. ErrExists if r is taken.
func (t *Token) GenerateHMACKey(ctx context.Context, r KeyRef, size int) error {
	if size < 28 || size > 64 {
		return &Error{Op: "generate HMAC key", Kind: ErrInvalidInput, Err: fmt.Errorf("%d-byte key", size)}
	}
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, size),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_MODIFIABLE, t.cfg.SessionKeyCopies),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false),
		pkcs11.NewAttribute(pkcs11.CKA_ID, r.ckaID()),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, r.Label()),
	}
	return t.generateKey(ctx, r, pkcs11.CKM_GENERIC_SECRET_KEY_GEN, tmpl)
}

// publicSize reads the size operations check inputs against from a key-pair
// object: the modulus length of an RSA key, the field length of an EC key.
func (s *Session) publicSize(h pkcs11.ObjectHandle) (int, error) {
	c := s.calls()
	attrs, err := c.GetAttributeValue(s.h, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, nil)})
	if err != nil {
		return 0, translate("C_GetAttributeValue", err, false)
	}
	switch ulong(attrs[0].Value) {
	case pkcs11.CKK_RSA:
		attrs, err = c.GetAttributeValue(s.h, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_MODULUS, nil)})
		if err != nil {
			return 0, translate("C_GetAttributeValue", err, false)
		}
		return len(trimZeros(attrs[0].Value)), nil
	case pkcs11.CKK_EC:
		attrs, err = c.GetAttributeValue(s.h, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, nil)})
		if err != nil {
			return 0, translate("C_GetAttributeValue", err, false)
		}
		curve, err := curveOf(attrs[0].Value)
		if err != nil {
			return 0, err
		}
		return curves[curve].size, nil
	}
	return 0, nil
}

func trimZeros(b []byte) []byte {
	for len(b) > 0 && b[0] == 0 {
		b = b[1:]
	}
	return b
}

// curveOf maps CKA_EC_PARAMS (a DER-encoded named-curve OID) to a Curve.
func curveOf(params []byte) (Curve, error) {
	var oid asn1.ObjectIdentifier
	if rest, err := asn1.Unmarshal(params, &oid); err == nil && len(rest) == 0 {
		for c, info := range curves {
			if info.oid.Equal(oid) {
				return c, nil
			}
		}
	}
	return 0, &Error{Op: "read EC key", Kind: ErrInternal, Err: fmt.Errorf("unknown EC parameters %x", params)}
}

// PublicKey returns the DER SubjectPublicKeyInfo of r's public half, read
// from the token.
func (t *Token) PublicKey(ctx context.Context, r KeyRef) ([]byte, error) {
	var der []byte
	err := t.Do(ctx, func(s *Session) error {
		e, err := s.handle(r, pkcs11.CKO_PUBLIC_KEY)
		if err != nil {
			return err
		}
		der, err = s.spki(e.use)
		return err
	})
	if err != nil {
		return nil, err // der may still be written by a callback Do stopped waiting for
	}
	return der, nil
}

func (s *Session) spki(h pkcs11.ObjectHandle) ([]byte, error) {
	c := s.calls()
	get := func(types ...uint) ([]*pkcs11.Attribute, error) {
		tmpl := make([]*pkcs11.Attribute, len(types))
		for i, ty := range types {
			tmpl[i] = pkcs11.NewAttribute(ty, nil)
		}
		attrs, err := c.GetAttributeValue(s.h, h, tmpl)
		return attrs, translate("C_GetAttributeValue", err, false)
	}
	attrs, err := get(pkcs11.CKA_KEY_TYPE)
	if err != nil {
		return nil, err
	}
	switch ulong(attrs[0].Value) {
	case pkcs11.CKK_RSA:
		attrs, err := get(pkcs11.CKA_MODULUS, pkcs11.CKA_PUBLIC_EXPONENT)
		if err != nil {
			return nil, err
		}
		e := new(big.Int).SetBytes(attrs[1].Value)
		if !e.IsInt64() || e.Int64() > 1<<31-1 {
			return nil, &Error{Op: "read RSA key", Kind: ErrInternal, Err: fmt.Errorf("public exponent %v", e)}
		}
		der, err := x509.MarshalPKIXPublicKey(&rsa.PublicKey{N: new(big.Int).SetBytes(attrs[0].Value), E: int(e.Int64())})
		if err != nil {
			return nil, &Error{Op: "read RSA key", Kind: ErrInternal, Err: err}
		}
		return der, nil
	case pkcs11.CKK_EC:
		attrs, err := get(pkcs11.CKA_EC_PARAMS, pkcs11.CKA_EC_POINT)
		if err != nil {
			return nil, err
		}
		curve, err := curveOf(attrs[0].Value)
		if err != nil {
			return nil, err
		}
		// CKA_EC_POINT is the point wrapped in a DER OCTET STRING (PKCS#11
		// 2.40); some tokens give it bare.
		point := attrs[1].Value
		var inner []byte
		if rest, err := asn1.Unmarshal(point, &inner); err == nil && len(rest) == 0 && len(inner) == 1+2*curves[curve].size {
			point = inner
		}
		if len(point) != 1+2*curves[curve].size || point[0] != 4 {
			return nil, &Error{Op: "read EC key", Kind: ErrInternal, Err: fmt.Errorf("EC point of %d bytes", len(point))}
		}
		return MarshalECPublicKey(curve, point)
	}
	return nil, &Error{Op: "read public key", Kind: ErrInternal, Err: fmt.Errorf("key type %x", attrs[0].Value)}
}

// MarshalECPublicKey encodes an uncompressed point on curve as a DER
// SubjectPublicKeyInfo (RFC 5480). It covers secp256k1, which crypto/x509
// does not.
func MarshalECPublicKey(curve Curve, point []byte) ([]byte, error) {
	params, err := asn1.Marshal(curves[curve].oid)
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}{
		Algorithm: pkix.AlgorithmIdentifier{Algorithm: oidECPublicKey, Parameters: asn1.RawValue{FullBytes: params}},
		PublicKey: asn1.BitString{Bytes: point, BitLength: 8 * len(point)},
	})
}

// SignScheme is a signature scheme run over a digest.
type SignScheme int

const (
	// PKCS1v15 is RSASSA-PKCS1-v1_5: the token pads DigestInfo || digest.
	PKCS1v15 SignScheme = iota + 1
	// PSS is RSASSA-PSS with MGF1 over the same hash and a salt as long as
	// the hash, as AWS KMS signs.
	PSS
	// ECDSA signs the digest; signatures are ASN.1 DER, as crypto/ecdsa's.
	ECDSA
)

// digestInfoPrefix is the DER DigestInfo header (RFC 8017, section 9.2,
// note 1) that PKCS #1 v1.5 signatures put before the digest.
var digestInfoPrefix = map[crypto.Hash][]byte{
	crypto.SHA256: {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20},
	crypto.SHA384: {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30},
	crypto.SHA512: {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40},
}

// hashMechs maps a hash to its PKCS#11 digest mechanism, MGF1 variant and
// HMAC mechanism.
var hashMechs = map[crypto.Hash]struct{ digest, mgf, hmac uint }{
	crypto.SHA1:   {pkcs11.CKM_SHA_1, pkcs11.CKG_MGF1_SHA1, pkcs11.CKM_SHA_1_HMAC},
	crypto.SHA224: {pkcs11.CKM_SHA224, pkcs11.CKG_MGF1_SHA224, pkcs11.CKM_SHA224_HMAC},
	crypto.SHA256: {pkcs11.CKM_SHA256, pkcs11.CKG_MGF1_SHA256, pkcs11.CKM_SHA256_HMAC},
	crypto.SHA384: {pkcs11.CKM_SHA384, pkcs11.CKG_MGF1_SHA384, pkcs11.CKM_SHA384_HMAC},
	crypto.SHA512: {pkcs11.CKM_SHA512, pkcs11.CKG_MGF1_SHA512, pkcs11.CKM_SHA512_HMAC},
}

// signMechanism returns the mechanism and the data to sign or verify for
// scheme over digest.
func signMechanism(scheme SignScheme, h crypto.Hash, digest []byte) (*pkcs11.Mechanism, []byte, error) {
	m, ok := hashMechs[h]
	if !ok || h == crypto.SHA1 || h == crypto.SHA224 || len(digest) != h.Size() {
		return nil, nil, &Error{Op: "sign", Kind: ErrInvalidInput, Err: fmt.Errorf("digest of %d bytes for %v", len(digest), h)}
	}
	switch scheme {
	case PKCS1v15:
		prefix := digestInfoPrefix[h]
		data := make([]byte, 0, len(prefix)+len(digest))
		return pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS, nil), append(append(data, prefix...), digest...), nil
	case PSS:
		return pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_PSS, pkcs11.NewPSSParams(m.digest, m.mgf, uint(h.Size()))), digest, nil
	case ECDSA:
		return pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil), digest, nil
	}
	return nil, nil, &Error{Op: "sign", Kind: ErrInvalidInput, Err: fmt.Errorf("scheme %d", scheme)}
}

// Sign signs digest (the hash h of the message) with r's private key in the
// token. ECDSA signatures are returned DER-encoded.
func (s *Session) Sign(r KeyRef, scheme SignScheme, h crypto.Hash, digest []byte) ([]byte, error) {
	if _, _, err := signMechanism(scheme, h, digest); err != nil {
		return nil, err
	}
	e, err := s.handle(r, pkcs11.CKO_PRIVATE_KEY)
	if err != nil {
		return nil, err
	}
	return s.signWith(e, scheme, h, digest)
}

// signWith signs digest with the private key of e.
func (s *Session) signWith(e keyEntry, scheme SignScheme, h crypto.Hash, digest []byte) (_ []byte, err error) {
	mech, data, err := signMechanism(scheme, h, digest)
	if err != nil {
		return nil, err
	}
	c := s.calls()
	defer s.t.observe(callSign, s.t.clock(), &err)
	if err := c.SignInit(s.h, []*pkcs11.Mechanism{mech}, e.use); err != nil {
		return nil, translate("C_SignInit", err, false)
	}
	sig, err := c.Sign(s.h, data)
	if err != nil {
		return nil, translate("C_Sign", err, false)
	}
	if scheme != ECDSA {
		return sig, nil
	}
	if e.size == 0 || len(sig) != 2*e.size {
		return nil, &Error{Op: "C_Sign", Kind: ErrInternal, Err: fmt.Errorf("ECDSA signature of %d bytes", len(sig))}
	}
	return asn1.Marshal(ecdsaSig{R: new(big.Int).SetBytes(sig[:e.size]), S: new(big.Int).SetBytes(sig[e.size:])})
}

type ecdsaSig struct{ R, S *big.Int }

// Verify checks sig over digest with r's public key in the token. A signature
// that does not verify, including a malformed one, is ErrInvalidSignature.
func (s *Session) Verify(r KeyRef, scheme SignScheme, h crypto.Hash, digest, sig []byte) (err error) {
	mech, data, err := signMechanism(scheme, h, digest)
	if err != nil {
		return err
	}
	e, err := s.handle(r, pkcs11.CKO_PUBLIC_KEY)
	if err != nil {
		return err
	}
	if scheme == ECDSA {
		if sig, err = rawECDSA(sig, e.size); err != nil {
			return err
		}
	} else if len(sig) != e.size {
		return &Error{Op: "verify", Kind: ErrInvalidSignature, Err: fmt.Errorf("signature of %d bytes", len(sig))}
	}
	c := s.calls()
	defer s.t.observe(callVerify, s.t.clock(), &err)
	if err := c.VerifyInit(s.h, []*pkcs11.Mechanism{mech}, e.use); err != nil {
		return translate("C_VerifyInit", err, false)
	}
	return translateVerify("C_Verify", c.Verify(s.h, data, sig))
}

// rawECDSA turns a DER ECDSA signature into the fixed-size r || s that
// PKCS#11 takes. Anything that is not one DER SEQUENCE of two positive
// integers that fit the curve is ErrInvalidSignature.
func rawECDSA(der []byte, size int) ([]byte, error) {
	var v ecdsaSig
	rest, err := asn1.Unmarshal(der, &v)
	if err != nil || len(rest) != 0 || size == 0 ||
		v.R.Sign() <= 0 || v.S.Sign() <= 0 || len(v.R.Bytes()) > size || len(v.S.Bytes()) > size {
		return nil, &Error{Op: "verify", Kind: ErrInvalidSignature, Err: fmt.Errorf("malformed ECDSA signature")}
	}
	raw := make([]byte, 2*size)
	v.R.FillBytes(raw[:size])
	v.S.FillBytes(raw[size:])
	return raw, nil
}

// MAC computes the HMAC with hash h of msg under r's key, in the token.
func (s *Session) MAC(r KeyRef, h crypto.Hash, msg []byte) (_ []byte, err error) {
	mech, err := hmacMechanism(h)
	if err != nil {
		return nil, err
	}
	e, err := s.handle(r, pkcs11.CKO_SECRET_KEY)
	if err != nil {
		return nil, err
	}
	c := s.calls()
	defer s.t.observe(callSign, s.t.clock(), &err)
	if err := c.SignInit(s.h, mech, e.use); err != nil {
		return nil, translate("C_SignInit", err, false)
	}
	mac, err := c.Sign(s.h, msg)
	return mac, translate("C_Sign", err, false)
}

// VerifyMAC checks mac over msg under r's key, in the token. A MAC that does
// not match (or has the wrong length) is ErrInvalidSignature.
func (s *Session) VerifyMAC(r KeyRef, h crypto.Hash, msg, mac []byte) (err error) {
	mech, err := hmacMechanism(h)
	if err != nil {
		return err
	}
	if len(mac) != h.Size() {
		return &Error{Op: "verify MAC", Kind: ErrInvalidSignature, Err: fmt.Errorf("MAC of %d bytes", len(mac))}
	}
	e, err := s.handle(r, pkcs11.CKO_SECRET_KEY)
	if err != nil {
		return err
	}
	c := s.calls()
	defer s.t.observe(callVerify, s.t.clock(), &err)
	if err := c.VerifyInit(s.h, mech, e.use); err != nil {
		return translate("C_VerifyInit", err, false)
	}
	return translateVerify("C_Verify", c.Verify(s.h, msg, mac))
}

func hmacMechanism(h crypto.Hash) ([]*pkcs11.Mechanism, error) {
	m, ok := hashMechs[h]
	if !ok || h == crypto.SHA1 {
		return nil, &Error{Op: "mac", Kind: ErrInvalidInput, Err: fmt.Errorf("hash %v", h)}
	}
	return []*pkcs11.Mechanism{pkcs11.NewMechanism(m.hmac, nil)}, nil
}

// translateVerify is translate for C_Verify, where a refused signature is
// not a failure of the token.
func translateVerify(op string, err error) error {
	switch ckr(err) {
	case pkcs11.CKR_SIGNATURE_INVALID, pkcs11.CKR_SIGNATURE_LEN_RANGE:
		return &Error{Op: op, Code: ckr(err), Kind: ErrInvalidSignature}
	}
	return translate(op, err, false)
}
