package api

import (
	"bytes"
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/hsmkms/hsmkms/service"
)

// The README's list of supported operations is the dispatch table.
func TestOperationsMatchREADME(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	start := strings.Index(text, "<!-- operations")
	end := strings.Index(text, "<!-- /operations -->")
	if start < 0 || end < start {
		t.Fatal("README has no operations list between <!-- operations --> markers")
	}
	var listed []string
	for _, line := range strings.Split(text[start:end], "\n") {
		if name, ok := strings.CutPrefix(line, "- "); ok {
			listed = append(listed, strings.Fields(name)[0])
		}
	}
	table := Operations()
	slices.Sort(listed)
	slices.Sort(table)
	if !slices.Equal(listed, table) {
		t.Fatalf("README lists %v\ndispatch table has %v", listed, table)
	}
}

func TestExceptionStatus(t *testing.T) {
	t.Parallel()
	cases := map[string]int{
		service.ExcInternal:          500,
		service.ExcKeyUnavailable:    500,
		service.ExcDependencyTimeout: 500,
		service.ExcNotFound:          400,
		service.ExcDisabled:          400,
		service.ExcInvalidCiphertext: 400,
		service.ExcValidation:        400,
		service.ExcInvalidSignature:  400,
		service.ExcUnknownOperation:  400,
		service.ExcRequestTooLarge:   413,
	}
	for code, want := range cases {
		if got := service.StatusOf(code); got != want {
			t.Errorf("%s: status %d, want %d", code, got, want)
		}
	}
}

// Buffers go back to the pool zeroed: they may have held plaintext.
func TestBuffersAreZeroedBeforeReuse(t *testing.T) {
	b := getBuf()
	b.WriteString("c2VjcmV0IHBsYWludGV4dA==")
	backing := b.Bytes()[:b.Cap()]
	putBuf(b)
	for i, c := range backing {
		if c != 0 {
			t.Fatalf("byte %d of a returned buffer is %q, want 0", i, c)
		}
	}
}

// A decoding error's text can quote the request body; what is logged keeps
// only its type, field and offset.
func TestDecodeErrorsDoNotQuoteTheBody(t *testing.T) {
	t.Parallel()
	for name, body := range map[string]string{
		"syntax":      `{"Plaintext": "c2VjcmV0"x}`,
		"type":        `{"KeyId": ["c2VjcmV0"]}`,
		"bad base64":  `{"Plaintext": "c2VjcmV0!!!"}`,
		"bad literal": `{"DryRun": tQ}`, // encoding/json's text would quote 'Q'
	} {
		var in service.EncryptInput
		err := decode([]byte(body), &in)
		e := service.AsError(err)
		if e.Code != service.ExcSerialization {
			t.Errorf("%s: %v, want SerializationException", name, err)
			continue
		}
		if strings.Contains(e.Error(), "c2VjcmV0") || strings.Contains(e.Error(), "'Q'") {
			t.Errorf("%s: error %q quotes the body", name, e.Error())
		}
	}
}

func TestLargeBuffersAreZeroedToo(t *testing.T) {
	b := getBuf()
	b.Write(make([]byte, 2<<20))
	b.WriteString("c2VjcmV0")
	backing := b.Bytes()[:b.Cap()]
	putBuf(b)
	for i, c := range backing {
		if c != 0 {
			t.Fatalf("byte %d of a dropped buffer is %q, want 0", i, c)
		}
	}
}

// The hand-written encoding of plaintext-bearing responses says exactly what
// encoding/json would.
func TestSecretJSONMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	pt := []byte("plaintext \x00\xff with \"quotes\" and more than one base64 block")
	cases := map[string]any{
		"decrypt": &service.DecryptOutput{KeyId: "arn:aws:kms:us-east-1:111122223333:key/k", Plaintext: pt,
			EncryptionAlgorithm: "SYMMETRIC_DEFAULT", KeyMaterialId: "ab12"},
		"decrypt without material id": &service.DecryptOutput{KeyId: "k", Plaintext: pt, EncryptionAlgorithm: "SYMMETRIC_DEFAULT"},
		"data key":                    &service.GenerateDataKeyOutput{CiphertextBlob: []byte{1, 2, 3}, Plaintext: pt, KeyId: "k\u2028\"", KeyMaterialId: "m"},
		"data key without plaintext":  &service.GenerateDataKeyOutput{CiphertextBlob: []byte{1, 2, 3}, KeyId: "k"},
		"random":                      &service.GenerateRandomOutput{Plaintext: pt[:7]},
		"data key pair": &service.GenerateDataKeyPairOutput{PrivateKeyCiphertextBlob: []byte{4, 5}, PrivateKeyPlaintext: pt,
			PublicKey: []byte{6, 7, 8}, KeyId: "k", KeyPairSpec: "ECC_NIST_P256", KeyMaterialId: "m"},
		"data key pair without plaintext": &service.GenerateDataKeyPairOutput{PrivateKeyCiphertextBlob: []byte{4, 5},
			PublicKey: []byte{6, 7, 8}, KeyId: "k", KeyPairSpec: "RSA_2048"},
	}
	for name, out := range cases {
		var got bytes.Buffer
		handled, err := appendSecretJSON(&got, out)
		if !handled || err != nil {
			t.Fatalf("%s: handled %v, %v", name, handled, err)
		}
		want, _ := json.Marshal(out)
		var g, w any
		if err := json.Unmarshal(got.Bytes(), &g); err != nil {
			t.Fatalf("%s: invalid JSON %s: %v", name, got.Bytes(), err)
		}
		json.Unmarshal(want, &w)
		if !reflect.DeepEqual(g, w) {
			t.Errorf("%s:\n got %s\nwant %s", name, got.Bytes(), want)
		}
	}
	if handled, _ := appendSecretJSON(new(bytes.Buffer), &service.EncryptOutput{}); handled {
		t.Error("EncryptOutput carries no plaintext and should go through encoding/json")
	}
}

// Audit records show the auditable fields of a request and nothing else:
// no plaintext, message, MAC, signature, ciphertext or policy text.
func TestAuditFieldsLeaveSecretsOut(t *testing.T) {
	t.Parallel()
	alg := "HMAC_SHA_256"
	pol := `{"Statement":[]}`
	id := "1234abcd-12ab-34cd-56ef-1234567890ab"
	for name, tc := range map[string]struct {
		in   any
		want []string
	}{
		"encrypt": {&service.EncryptInput{KeyId: id, Plaintext: []byte("secret"), EncryptionContext: map[string]string{"a": "b"}},
			[]string{"encryptionContext", "keyId"}},
		"decrypt":    {&service.DecryptInput{CiphertextBlob: []byte("blob")}, nil},
		"mac":        {&service.VerifyMacInput{KeyId: id, Message: []byte("m"), Mac: []byte("mac"), MacAlgorithm: &alg}, []string{"keyId", "macAlgorithm"}},
		"sign":       {&service.VerifyInput{KeyId: id, Message: []byte("m"), Signature: []byte("s")}, []string{"keyId"}},
		"key policy": {&service.PutKeyPolicyInput{KeyId: id, Policy: &pol}, []string{"keyId"}},
		"create key": {&service.CreateKeyInput{Policy: &pol, MultiRegion: true}, []string{"multiRegion"}},
		"retire":     {&service.RetireGrantInput{GrantToken: &pol}, nil},
		"create grant": {&service.CreateGrantInput{KeyId: id, GranteePrincipal: &pol, Operations: []string{"Encrypt"}, GrantTokens: []string{"t"}},
			[]string{"granteePrincipal", "keyId", "operations"}},
	} {
		got := auditFields(tc.in)
		var keys []string
		for k := range got {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if !slices.Equal(keys, tc.want) {
			t.Errorf("%s: audited fields %v, want %v", name, keys, tc.want)
		}
	}
}
