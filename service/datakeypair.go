package service

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/big"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/service/policy"
)

// GenerateDataKeyPair returns a new key pair for use outside the service: the
// public key (SPKI DER), the private key (PKCS#8 DER) encrypted under a
// symmetric KMS key and, unless withPlaintext is false
// (GenerateDataKeyPairWithoutPlaintext), in plaintext. The pair is made in Go
// (it is meant to leave the service, so the token could only hand it over
// anyway); EC private scalars come from the token's RNG. Go copies of the
// private key are zeroed before returning, as far as Go lets them be.
func (s *Service) GenerateDataKeyPair(ctx context.Context, caller Caller, in GenerateDataKeyPairInput, withPlaintext bool) (*GenerateDataKeyPairOutput, error) {
	op := "GenerateDataKeyPair"
	if !withPlaintext {
		op = "GenerateDataKeyPairWithoutPlaintext"
	}
	var v validation
	if in.KeyPairSpec == nil {
		v.null("keyPairSpec")
	}
	v.enum(in.KeyPairSpec, "keyPairSpec", allPairSpecs)
	v.grantTokens(in.GrantTokens)
	if err := v.err(); err != nil {
		return nil, err
	}
	if in.Recipient != nil {
		return nil, Errorf(ExcUnsupportedOp, "Recipient (Nitro Enclaves attestation) is not supported by this key service.")
	}
	spec := *in.KeyPairSpec
	ks := keySpecs[spec]
	if ks == nil {
		return nil, Errorf(ExcUnsupportedOp, "KeyPairSpec %s is not supported by this key service.", spec)
	}
	c := encryptionConditions(in.EncryptionContext, nil).and(func(c policy.Context) { c.Set("kms:DataKeyPairSpec", spec) })
	k, err := s.resolve(ctx, caller, "keyId", in.KeyId, idARNOrAlias, "kms:"+op, c)
	if err != nil {
		return nil, err
	}
	if err := usable(k); err != nil {
		return nil, err
	}
	if k.rec.KeyUsage != UsageEncryptDecrypt {
		return nil, Errorf(ExcInvalidKeyUsage, "%s key usage is %s which is not valid for %s.", k.arn, k.rec.KeyUsage, op)
	}
	if !k.symmetric() {
		return nil, Errorf(ExcUnsupportedOp, "%s is an asymmetric KMS key: %s needs a symmetric encryption KMS key.", k.arn, op)
	}
	if in.DryRun {
		return nil, dryRun()
	}
	priv, pub, err := s.newDataKeyPair(ctx, ks)
	if err != nil {
		return nil, err
	}
	var ct []byte
	var version uint32
	err = s.token.Do(ctx, func(sess *hsm.Session) error {
		var err error
		ct, version, err = seal(sess, k, in.EncryptionContext, priv)
		return err
	})
	if err != nil {
		clear(priv)
		return nil, fromToken(err, k.arn)
	}
	out := &GenerateDataKeyPairOutput{PrivateKeyCiphertextBlob: ct, PublicKey: pub, KeyId: k.arn, KeyPairSpec: spec,
		KeyMaterialId: k.materialIDs[version]}
	if withPlaintext {
		out.PrivateKeyPlaintext = priv
	} else {
		clear(priv)
	}
	return out, nil
}

// newDataKeyPair makes a key pair of ks and returns its PKCS#8 private key
// and SPKI public key.
func (s *Service) newDataKeyPair(ctx context.Context, ks *keySpec) (priv, pub []byte, err error) {
	switch {
	case ks.kind == kindRSA:
		// Since Go 1.26 rsa.GenerateKey always draws from the operating
		// system's generator, whatever reader it is given.
		k, err := rsa.GenerateKey(rand.Reader, ks.bits)
		if err != nil {
			return nil, nil, internal(err)
		}
		defer zeroRSA(k)
		return marshalPair(k, &k.PublicKey)
	case ks.kind == kindEC && ks.curve == hsm.Secp256k1:
		d, err := s.scalar(ctx, secp256k1.Params().N, 32)
		if err != nil {
			return nil, nil, err
		}
		defer clear(d)
		k := secp256k1.PrivKeyFromBytes(d)
		defer k.Zero()
		return marshalSecp256k1(k)
	case ks.kind == kindEC:
		curve := map[hsm.Curve]elliptic.Curve{hsm.P256: elliptic.P256(), hsm.P384: elliptic.P384(), hsm.P521: elliptic.P521()}[ks.curve]
		d, err := s.scalar(ctx, curve.Params().N, (curve.Params().BitSize+7)/8)
		if err != nil {
			return nil, nil, err
		}
		defer clear(d)
		k, err := ecdsa.ParseRawPrivateKey(curve, d)
		if err != nil {
			return nil, nil, internal(err)
		}
		//lint:ignore SA1019 D is read here only to overwrite it once the key is encoded.
		defer zeroInt(k.D)
		return marshalPair(k, &k.PublicKey)
	}
	return nil, nil, internal(fmt.Errorf("no data key pairs of kind %d", ks.kind))
}

// scalar draws a private scalar in [1, n-1] from the token's RNG by
// rejection sampling (FIPS 186-5, A.2.2): size bytes, masked to n's bit
// length, redrawn until in range.
func (s *Service) scalar(ctx context.Context, n *big.Int, size int) ([]byte, error) {
	excess := uint(size*8 - n.BitLen())
	v := new(big.Int)
	defer zeroInt(v)
	for range 128 {
		d, err := s.token.Random(ctx, size)
		if err != nil {
			return nil, fromToken(err, "")
		}
		d[0] &= 0xff >> excess
		if v.SetBytes(d); v.Sign() > 0 && v.Cmp(n) < 0 {
			return d, nil
		}
		clear(d)
	}
	return nil, internal(fmt.Errorf("no private scalar below the group order in 128 draws"))
}

func marshalPair(priv, pub any) ([]byte, []byte, error) {
	p8, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, internal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		clear(p8)
		return nil, nil, internal(err)
	}
	return p8, spki, nil
}

// marshalSecp256k1 encodes a secp256k1 key, which crypto/x509 does not know:
// PKCS#8 (RFC 5208) around an RFC 5915 ECPrivateKey, and an RFC 5480 SPKI.
func marshalSecp256k1(k *secp256k1.PrivateKey) ([]byte, []byte, error) {
	point := k.PubKey().SerializeUncompressed()
	spki, err := hsm.MarshalECPublicKey(hsm.Secp256k1, point)
	if err != nil {
		return nil, nil, internal(err)
	}
	d := k.Key.Bytes()
	defer clear(d[:])
	ecKey, err := asn1.Marshal(struct {
		Version    int
		PrivateKey []byte
		PublicKey  asn1.BitString `asn1:"optional,explicit,tag:1"`
	}{1, d[:], asn1.BitString{Bytes: point, BitLength: 8 * len(point)}})
	if err != nil {
		return nil, nil, internal(err)
	}
	defer clear(ecKey)
	params, _ := asn1.Marshal(hsm.Secp256k1.OID())
	p8, err := asn1.Marshal(struct {
		Version    int
		Algorithm  pkix.AlgorithmIdentifier
		PrivateKey []byte
	}{0, pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1},
		Parameters: asn1.RawValue{FullBytes: params}}, ecKey})
	if err != nil {
		return nil, nil, internal(err)
	}
	return p8, spki, nil
}

// zeroInt overwrites a big.Int's words.
func zeroInt(n *big.Int) {
	if n != nil {
		clear(n.Bits())
		n.SetInt64(0)
	}
}

// zeroRSA overwrites the private values of k that Go exposes. (Go 1.26 also
// keeps a precomputed copy inside crypto/internal, out of reach; it is
// garbage once k is.)
func zeroRSA(k *rsa.PrivateKey) {
	zeroInt(k.D)
	for _, p := range k.Primes {
		zeroInt(p)
	}
	zeroInt(k.Precomputed.Dp)
	zeroInt(k.Precomputed.Dq)
	zeroInt(k.Precomputed.Qinv)
}
