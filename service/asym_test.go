package service

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/asn1"
	"math/big"
	"testing"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"

	"github.com/hsmkms/hsmkms/blob"
	"github.com/hsmkms/hsmkms/hsm"
)

// TestDeletingAKeyPairDestroysBothHalves: the reaper removes the private and
// the public object, and reconciliation saw the pair as present before.
func TestDeletingAKeyPairDestroysBothHalves(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c := &clock{now: fixedNow}
	svc := withClock(t, f, c, nil)
	ctx := context.Background()
	out, err := svc.CreateKey(ctx, alice, CreateKeyInput{KeySpec: ptr("ECC_NIST_P256"), KeyUsage: ptr(UsageSignVerify)})
	if err != nil {
		t.Fatal(err)
	}
	id := out.KeyMetadata.KeyId
	raw, _ := blob.ParseKeyID(id)
	classes := func() map[string]bool {
		objs, err := f.token.Objects(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]bool{}
		for _, o := range objs {
			if o.Ref.KeyID == raw {
				m[o.Class] = true
			}
		}
		return m
	}
	if got := classes(); !got["private"] || !got["public"] || len(got) != 2 {
		t.Fatalf("objects of a new key pair: %v", got)
	}
	rep, err := svc.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range rep.Missing {
		if m == (hsm.KeyRef{KeyID: raw, Version: 1}).Label() {
			t.Fatalf("reconciliation reports the new pair missing: %v", rep.Missing)
		}
	}
	if _, err := svc.ScheduleKeyDeletion(ctx, alice, ScheduleKeyDeletionInput{KeyId: id, PendingWindowInDays: ptr[int32](7)}); err != nil {
		t.Fatal(err)
	}
	c.Add(7*24*time.Hour + time.Second)
	if n, err := svc.ReapDue(ctx); err != nil || n < 1 {
		t.Fatalf("ReapDue = %d, %v", n, err)
	}
	if got := classes(); len(got) != 0 {
		t.Fatalf("objects left after deletion: %v", got)
	}
}

// TestDataKeyPairEncodings parses every data key pair spec's output with
// tools other than the code that made it, and checks the two halves match.
func TestDataKeyPairEncodings(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	k := f.key(t)
	for _, spec := range []string{"ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521", "ECC_SECG_P256K1", "RSA_2048"} {
		out, err := f.svc.GenerateDataKeyPair(ctx, alice, GenerateDataKeyPairInput{KeyId: k.KeyId, KeyPairSpec: ptr(spec)}, true)
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		if spec == "ECC_SECG_P256K1" {
			var p8 struct {
				Version int
				Algo    struct{ Algorithm, Curve asn1.ObjectIdentifier }
				Key     []byte
			}
			if rest, err := asn1.Unmarshal(out.PrivateKeyPlaintext, &p8); err != nil || len(rest) != 0 || !p8.Algo.Curve.Equal(hsm.Secp256k1.OID()) {
				t.Fatalf("secp256k1 PKCS#8: %v, %+v", err, p8.Algo)
			}
			var ec struct {
				Version int
				D       []byte
				Pub     asn1.BitString `asn1:"optional,explicit,tag:1"`
			}
			if _, err := asn1.Unmarshal(p8.Key, &ec); err != nil || ec.Version != 1 || len(ec.D) != 32 {
				t.Fatalf("ECPrivateKey: %v, version %d, %d-byte scalar", err, ec.Version, len(ec.D))
			}
			var spki struct {
				Algo struct{ Algorithm, Curve asn1.ObjectIdentifier }
				Key  asn1.BitString
			}
			if _, err := asn1.Unmarshal(out.PublicKey, &spki); err != nil {
				t.Fatal(err)
			}
			pub := secp256k1.PrivKeyFromBytes(ec.D).PubKey().SerializeUncompressed()
			if !bytes.Equal(pub, spki.Key.Bytes) || !bytes.Equal(pub, ec.Pub.Bytes) {
				t.Fatal("secp256k1 public key does not match the private key")
			}
			continue
		}
		priv, err := x509.ParsePKCS8PrivateKey(out.PrivateKeyPlaintext)
		if err != nil {
			t.Fatalf("%s: PKCS#8: %v", spec, err)
		}
		pub, err := x509.ParsePKIXPublicKey(out.PublicKey)
		if err != nil {
			t.Fatalf("%s: SPKI: %v", spec, err)
		}
		if !priv.(interface{ Public() crypto.PublicKey }).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
			t.Fatalf("%s: halves do not match", spec)
		}
		if e, ok := priv.(*ecdsa.PrivateKey); ok && e.Curve.Params().BitSize != map[string]int{"ECC_NIST_P256": 256, "ECC_NIST_P384": 384, "ECC_NIST_P521": 521}[spec] {
			t.Fatalf("%s: curve %s", spec, e.Curve.Params().Name)
		}
		dec, err := f.svc.Decrypt(ctx, alice, DecryptInput{CiphertextBlob: out.PrivateKeyCiphertextBlob})
		if err != nil || !bytes.Equal(dec.Plaintext, out.PrivateKeyPlaintext) {
			t.Fatalf("%s: the blob does not decrypt to the private key: %v", spec, err)
		}
	}
}

// TestScalarRange draws scalars below an order just over 2^255, so about
// half the draws are rejected: every scalar returned is in [1, n-1].
func TestScalarRange(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	n := new(big.Int).Add(new(big.Int).Lsh(big.NewInt(1), 255), big.NewInt(1))
	for i := 0; i < 200; i++ {
		d, err := f.svc.scalar(context.Background(), n, 32)
		if err != nil {
			t.Fatal(err)
		}
		v := new(big.Int).SetBytes(d)
		if v.Sign() <= 0 || v.Cmp(n) >= 0 || len(d) != 32 {
			t.Fatalf("scalar %x out of range", d)
		}
	}
}
