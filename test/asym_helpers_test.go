package test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"
	"github.com/decred/dcrd/dcrec/secp256k1/v4"
)

// Object identifiers of the SubjectPublicKeyInfo and PKCS#8 structures that
// crypto/x509 does not parse (secp256k1).
var (
	oidECPublicKey = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidSecp256k1   = asn1.ObjectIdentifier{1, 3, 132, 0, 10}
)

// asymKey names one KMS key of a test: its id, ARN and spec.
type asymKey struct {
	ID, ARN string
	Spec    types.KeySpec
	Usage   types.KeyUsageType
	MD      *types.KeyMetadata // as CreateKey returned it
}

// keyReq is one key a test wants made.
type keyReq struct {
	name  string
	spec  types.KeySpec
	usage types.KeyUsageType
}

// createKeys makes every key of reqs, concurrently (RSA generation is slow
// and the token makes keys in parallel), and returns them by name.
func createKeys(t testing.TB, c *kms.Client, reqs ...keyReq) map[string]*asymKey {
	t.Helper()
	out := make(map[string]*asymKey, len(reqs))
	errs := make([]error, len(reqs))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Go(func() {
			in := &kms.CreateKeyInput{KeySpec: r.spec, KeyUsage: r.usage}
			res, err := c.CreateKey(ctxT(t), in)
			if err != nil {
				errs[i] = err
				return
			}
			md := res.KeyMetadata
			mu.Lock()
			out[r.name] = &asymKey{ID: aws.ToString(md.KeyId), ARN: aws.ToString(md.Arn), Spec: r.spec, Usage: r.usage, MD: md}
			mu.Unlock()
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("CreateKey %s (%s, %s): %v", reqs[i].name, reqs[i].spec, reqs[i].usage, err)
		}
	}
	return out
}

// disableKey disables a key, failing t if it cannot.
func disableKey(t testing.TB, c *kms.Client, id string) {
	t.Helper()
	if _, err := c.DisableKey(ctxT(t), &kms.DisableKeyInput{KeyId: aws.String(id)}); err != nil {
		t.Fatalf("DisableKey %s: %v", id, err)
	}
}

// getPublicKey calls GetPublicKey, failing t on error.
func getPublicKey(t testing.TB, c *kms.Client, id string) *kms.GetPublicKeyOutput {
	t.Helper()
	out, err := c.GetPublicKey(ctxT(t), &kms.GetPublicKeyInput{KeyId: aws.String(id)})
	if err != nil {
		t.Fatalf("GetPublicKey %s: %v", id, err)
	}
	if len(out.PublicKey) == 0 {
		t.Fatalf("GetPublicKey %s: empty PublicKey", id)
	}
	return out
}

// rsaPublicKey parses SPKI DER as an RSA key of bits.
func rsaPublicKey(t testing.TB, der []byte, bits int) *rsa.PublicKey {
	t.Helper()
	pk, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		t.Fatalf("ParsePKIXPublicKey: %v", err)
	}
	rp, ok := pk.(*rsa.PublicKey)
	if !ok {
		t.Fatalf("public key is a %T, want *rsa.PublicKey", pk)
	}
	if rp.N.BitLen() != bits {
		t.Fatalf("RSA modulus has %d bits, want %d", rp.N.BitLen(), bits)
	}
	if rp.E != 65537 {
		t.Errorf("RSA public exponent %d, want 65537", rp.E)
	}
	return rp
}

// ecdsaPublicKey parses SPKI DER as an ECDSA key on curve.
func ecdsaPublicKey(t testing.TB, der []byte, curve elliptic.Curve) *ecdsa.PublicKey {
	t.Helper()
	pk, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		t.Fatalf("ParsePKIXPublicKey: %v", err)
	}
	ep, ok := pk.(*ecdsa.PublicKey)
	if !ok {
		t.Fatalf("public key is a %T, want *ecdsa.PublicKey", pk)
	}
	if ep.Curve != curve {
		t.Fatalf("curve %s, want %s", ep.Curve.Params().Name, curve.Params().Name)
	}
	return ep
}

// spki is RFC 5280 SubjectPublicKeyInfo.
type spki struct {
	Algorithm pkix.AlgorithmIdentifier
	PublicKey asn1.BitString
}

// k1PublicKey parses SPKI DER as an EC public key on secp256k1, which
// crypto/x509 does not know.
func k1PublicKey(t testing.TB, der []byte) *secp256k1.PublicKey {
	t.Helper()
	var s spki
	rest, err := asn1.Unmarshal(der, &s)
	if err != nil {
		t.Fatalf("SubjectPublicKeyInfo: %v", err)
	}
	if len(rest) != 0 {
		t.Fatalf("%d bytes after the SubjectPublicKeyInfo", len(rest))
	}
	if !s.Algorithm.Algorithm.Equal(oidECPublicKey) {
		t.Fatalf("algorithm %v, want id-ecPublicKey %v", s.Algorithm.Algorithm, oidECPublicKey)
	}
	var curve asn1.ObjectIdentifier
	if rest, err := asn1.Unmarshal(s.Algorithm.Parameters.FullBytes, &curve); err != nil || len(rest) != 0 {
		t.Fatalf("EC parameters are not a named curve: %v (%d bytes left)", err, len(rest))
	}
	if !curve.Equal(oidSecp256k1) {
		t.Fatalf("curve %v, want secp256k1 %v", curve, oidSecp256k1)
	}
	if s.PublicKey.BitLength%8 != 0 {
		t.Fatalf("public key bit string has %d bits", s.PublicKey.BitLength)
	}
	pub, err := secp256k1.ParsePubKey(s.PublicKey.Bytes)
	if err != nil {
		t.Fatalf("secp256k1 point: %v", err)
	}
	return pub
}

// pkcs8 is RFC 5208 PrivateKeyInfo (attributes, if any, are ignored).
type pkcs8 struct {
	Version    int
	Algorithm  pkix.AlgorithmIdentifier
	PrivateKey []byte
}

// ecPrivateKey is RFC 5915 ECPrivateKey.
type ecPrivateKey struct {
	Version       int
	PrivateKey    []byte
	NamedCurveOID asn1.ObjectIdentifier `asn1:"optional,explicit,tag:0"`
	PublicKey     asn1.BitString        `asn1:"optional,explicit,tag:1"`
}

// k1PrivateKey parses PKCS#8 DER holding an RFC 5915 secp256k1 key.
func k1PrivateKey(t testing.TB, der []byte) *secp256k1.PrivateKey {
	t.Helper()
	var p pkcs8
	rest, err := asn1.Unmarshal(der, &p)
	if err != nil {
		t.Fatalf("PKCS#8: %v", err)
	}
	if len(rest) != 0 {
		t.Fatalf("%d bytes after the PKCS#8 structure", len(rest))
	}
	if p.Version != 0 {
		t.Errorf("PKCS#8 version %d, want 0", p.Version)
	}
	if !p.Algorithm.Algorithm.Equal(oidECPublicKey) {
		t.Fatalf("PKCS#8 algorithm %v, want id-ecPublicKey", p.Algorithm.Algorithm)
	}
	var curve asn1.ObjectIdentifier
	if rest, err := asn1.Unmarshal(p.Algorithm.Parameters.FullBytes, &curve); err != nil || len(rest) != 0 {
		t.Fatalf("PKCS#8 EC parameters are not a named curve: %v", err)
	}
	if !curve.Equal(oidSecp256k1) {
		t.Fatalf("PKCS#8 curve %v, want secp256k1 %v", curve, oidSecp256k1)
	}
	var ec ecPrivateKey
	rest, err = asn1.Unmarshal(p.PrivateKey, &ec)
	if err != nil {
		t.Fatalf("ECPrivateKey: %v", err)
	}
	if len(rest) != 0 {
		t.Fatalf("%d bytes after the ECPrivateKey", len(rest))
	}
	if ec.Version != 1 {
		t.Errorf("ECPrivateKey version %d, want 1", ec.Version)
	}
	if len(ec.NamedCurveOID) != 0 && !ec.NamedCurveOID.Equal(oidSecp256k1) {
		t.Errorf("ECPrivateKey curve %v, want secp256k1 or none", ec.NamedCurveOID)
	}
	if len(ec.PrivateKey) != 32 {
		t.Fatalf("ECPrivateKey scalar is %d bytes, want 32 (RFC 5915: the order's length)", len(ec.PrivateKey))
	}
	priv := secp256k1.PrivKeyFromBytes(ec.PrivateKey)
	if len(ec.PublicKey.Bytes) != 0 {
		pub, err := secp256k1.ParsePubKey(ec.PublicKey.Bytes)
		if err != nil {
			t.Fatalf("ECPrivateKey public key: %v", err)
		}
		if !pub.IsEqual(priv.PubKey()) {
			t.Error("the ECPrivateKey's publicKey is not the scalar's public key")
		}
	}
	return priv
}

// curveOf is the Go curve of a NIST key spec.
func curveOf(spec string) elliptic.Curve {
	switch spec {
	case "ECC_NIST_P256":
		return elliptic.P256()
	case "ECC_NIST_P384":
		return elliptic.P384()
	case "ECC_NIST_P521":
		return elliptic.P521()
	}
	return nil
}

// rsaBits is the modulus size of an RSA key spec, 0 for other specs.
func rsaBits(spec string) int {
	switch spec {
	case "RSA_2048":
		return 2048
	case "RSA_3072":
		return 3072
	case "RSA_4096":
		return 4096
	}
	return 0
}

// signHash is the hash of a signing algorithm.
func signHash(alg types.SigningAlgorithmSpec) crypto.Hash {
	s := string(alg)
	switch {
	case strings.HasSuffix(s, "_256"):
		return crypto.SHA256
	case strings.HasSuffix(s, "_384"):
		return crypto.SHA384
	case strings.HasSuffix(s, "_512"):
		return crypto.SHA512
	}
	panic("no hash for " + s)
}

// oaepHash is the hash of an RSAES_OAEP algorithm.
func oaepHash(alg types.EncryptionAlgorithmSpec) crypto.Hash {
	switch alg {
	case types.EncryptionAlgorithmSpecRsaesOaepSha1:
		return crypto.SHA1
	case types.EncryptionAlgorithmSpecRsaesOaepSha256:
		return crypto.SHA256
	}
	panic("no hash for " + string(alg))
}

// digest hashes msg with h.
func digest(h crypto.Hash, msg []byte) []byte {
	w := h.New()
	w.Write(msg)
	return w.Sum(nil)
}

// flip returns a copy of b with bit 0 of byte i flipped.
func flip(b []byte, i int) []byte {
	c := slices.Clone(b)
	c[i] ^= 1
	return c
}

// wantKMSError asserts that err is the 400 exception code and, where the SDK
// models that exception, that it is the SDK's typed error.
func wantKMSError(t testing.TB, err error, code string) smithy.APIError {
	t.Helper()
	ae := wantAPIError(t, err, code, 400)
	switch code {
	case "InvalidKeyUsageException":
		wantType[*types.InvalidKeyUsageException](t, err)
	case "InvalidCiphertextException":
		wantType[*types.InvalidCiphertextException](t, err)
		if ae.ErrorMessage() != "" {
			t.Errorf("InvalidCiphertextException message %q, want empty", ae.ErrorMessage())
		}
	case "IncorrectKeyException":
		wantType[*types.IncorrectKeyException](t, err)
	case "DisabledException":
		wantType[*types.DisabledException](t, err)
	case "KMSInvalidStateException":
		wantType[*types.KMSInvalidStateException](t, err)
	case "KMSInvalidSignatureException":
		wantType[*types.KMSInvalidSignatureException](t, err)
	case "KMSInvalidMacException":
		wantType[*types.KMSInvalidMacException](t, err)
	case "UnsupportedOperationException":
		wantType[*types.UnsupportedOperationException](t, err)
	case "DryRunOperationException":
		wantType[*types.DryRunOperationException](t, err)
	case "NotFoundException":
		wantType[*types.NotFoundException](t, err)
	}
	return ae
}
