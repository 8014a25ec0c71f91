package service

import (
	"crypto"

	"github.com/hsmkms/hsmkms/hsm"
)

// Key usages beyond ENCRYPT_DECRYPT.
const (
	UsageSignVerify   = "SIGN_VERIFY"
	UsageMAC          = "GENERATE_VERIFY_MAC"
	UsageKeyAgreement = "KEY_AGREEMENT"
)

// keyKind is how the token holds a key spec's material.
type keyKind int

const (
	kindAES keyKind = iota
	kindRSA
	kindEC
	kindHMAC
)

// keySpec is what hsmkms knows about one AWS KeySpec: how its material is
// made, which usages AWS allows, and the algorithms of each usage, in the
// order AWS lists them in DescribeKey.
type keySpec struct {
	kind    keyKind
	bits    int       // RSA modulus
	curve   hsm.Curve // EC
	macHash crypto.Hash
	usages  []string
	enc     []string // ENCRYPT_DECRYPT algorithms
	sign    []string // SIGN_VERIFY algorithms
	mac     []string // GENERATE_VERIFY_MAC algorithms
}

var (
	rsaEnc  = []string{"RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"}
	rsaSign = []string{"RSASSA_PKCS1_V1_5_SHA_256", "RSASSA_PKCS1_V1_5_SHA_384", "RSASSA_PKCS1_V1_5_SHA_512",
		"RSASSA_PSS_SHA_256", "RSASSA_PSS_SHA_384", "RSASSA_PSS_SHA_512"}
	rsaUsages = []string{UsageEncryptDecrypt, UsageSignVerify}
	ecUsages  = []string{UsageSignVerify}
	macUsages = []string{UsageMAC}
)

// keySpecs are the specs hsmkms creates keys of. The others AWS names (SM2,
// ML-DSA, Ed25519) are UnsupportedOperationException.
var keySpecs = map[string]*keySpec{
	SpecSymmetric:     {kind: kindAES, usages: []string{UsageEncryptDecrypt}, enc: []string{AlgSymmetric}},
	"RSA_2048":        {kind: kindRSA, bits: 2048, usages: rsaUsages, enc: rsaEnc, sign: rsaSign},
	"RSA_3072":        {kind: kindRSA, bits: 3072, usages: rsaUsages, enc: rsaEnc, sign: rsaSign},
	"RSA_4096":        {kind: kindRSA, bits: 4096, usages: rsaUsages, enc: rsaEnc, sign: rsaSign},
	"ECC_NIST_P256":   {kind: kindEC, curve: hsm.P256, usages: ecUsages, sign: []string{"ECDSA_SHA_256"}},
	"ECC_NIST_P384":   {kind: kindEC, curve: hsm.P384, usages: ecUsages, sign: []string{"ECDSA_SHA_384"}},
	"ECC_NIST_P521":   {kind: kindEC, curve: hsm.P521, usages: ecUsages, sign: []string{"ECDSA_SHA_512"}},
	"ECC_SECG_P256K1": {kind: kindEC, curve: hsm.Secp256k1, usages: ecUsages, sign: []string{"ECDSA_SHA_256"}},
	"HMAC_224":        {kind: kindHMAC, macHash: crypto.SHA224, usages: macUsages, mac: []string{"HMAC_SHA_224"}},
	"HMAC_256":        {kind: kindHMAC, macHash: crypto.SHA256, usages: macUsages, mac: []string{"HMAC_SHA_256"}},
	"HMAC_384":        {kind: kindHMAC, macHash: crypto.SHA384, usages: macUsages, mac: []string{"HMAC_SHA_384"}},
	"HMAC_512":        {kind: kindHMAC, macHash: crypto.SHA512, usages: macUsages, mac: []string{"HMAC_SHA_512"}},
}

// usageValid reports whether AWS allows usage with spec (including the
// combinations hsmkms does not offer, such as ECC keys for key agreement).
func usageValid(spec, usage string) bool {
	switch spec {
	case "ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521":
		return usage == UsageSignVerify || usage == UsageKeyAgreement
	case "SM2":
		return usage != UsageMAC
	case "ML_DSA_44", "ML_DSA_65", "ML_DSA_87", "ECC_NIST_EDWARDS25519":
		return usage == UsageSignVerify
	}
	ks := keySpecs[spec]
	return ks != nil && contains(ks.usages, usage)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// encHashes maps the RSA encryption algorithms to their OAEP hash.
var encHashes = map[string]crypto.Hash{"RSAES_OAEP_SHA_1": crypto.SHA1, "RSAES_OAEP_SHA_256": crypto.SHA256}

// signAlg is a signing algorithm as the token runs it.
type signAlg struct {
	scheme hsm.SignScheme
	hash   crypto.Hash
}

var signAlgs = map[string]signAlg{
	"RSASSA_PKCS1_V1_5_SHA_256": {hsm.PKCS1v15, crypto.SHA256},
	"RSASSA_PKCS1_V1_5_SHA_384": {hsm.PKCS1v15, crypto.SHA384},
	"RSASSA_PKCS1_V1_5_SHA_512": {hsm.PKCS1v15, crypto.SHA512},
	"RSASSA_PSS_SHA_256":        {hsm.PSS, crypto.SHA256},
	"RSASSA_PSS_SHA_384":        {hsm.PSS, crypto.SHA384},
	"RSASSA_PSS_SHA_512":        {hsm.PSS, crypto.SHA512},
	"ECDSA_SHA_256":             {hsm.ECDSA, crypto.SHA256},
	"ECDSA_SHA_384":             {hsm.ECDSA, crypto.SHA384},
	"ECDSA_SHA_512":             {hsm.ECDSA, crypto.SHA512},
}

// Enumerations of the AWS model for the new parameters.
var (
	allSignAlgs = []string{"RSASSA_PSS_SHA_256", "RSASSA_PSS_SHA_384", "RSASSA_PSS_SHA_512",
		"RSASSA_PKCS1_V1_5_SHA_256", "RSASSA_PKCS1_V1_5_SHA_384", "RSASSA_PKCS1_V1_5_SHA_512",
		"ECDSA_SHA_256", "ECDSA_SHA_384", "ECDSA_SHA_512", "SM2DSA", "ML_DSA_SHAKE_256",
		"ED25519_SHA_512", "ED25519_PH_SHA_512"}
	allMacAlgs      = []string{"HMAC_SHA_224", "HMAC_SHA_256", "HMAC_SHA_384", "HMAC_SHA_512"}
	allMessageTypes = []string{"RAW", "DIGEST", "EXTERNAL_MU"}
	allPairSpecs    = []string{"RSA_2048", "RSA_3072", "RSA_4096", "ECC_NIST_P256", "ECC_NIST_P384",
		"ECC_NIST_P521", "ECC_SECG_P256K1", "SM2", "ECC_NIST_EDWARDS25519"}
)

// spec returns the key's spec entry (every stored key has one).
func (k *key) spec() *keySpec {
	if ks := keySpecs[k.rec.KeySpec]; ks != nil {
		return ks
	}
	return keySpecs[SpecSymmetric]
}

func (k *key) symmetric() bool { return k.spec().kind == kindAES }

// algorithms returns the key's algorithm lists as DescribeKey reports them.
func (k *key) algorithms() (enc, sign, mac []string) {
	ks := k.spec()
	switch k.rec.KeyUsage {
	case UsageEncryptDecrypt:
		return ks.enc, nil, nil
	case UsageSignVerify:
		return nil, ks.sign, nil
	case UsageMAC:
		return nil, nil, ks.mac
	}
	return nil, nil, nil
}
