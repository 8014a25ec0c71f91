package test

import (
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/hsmkms/hsmkms/service/api"
)

// A request body means one thing: invalid UTF-8 and lone surrogate escapes
// are refused rather than read as U+FFFD, so two different byte strings can
// never name the same encryption context.
func TestStrictJSONEncryptionContext(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	id := aws.ToString(createKey(t, s.client()).KeyId)
	pt := base64.StdEncoding.EncodeToString([]byte("strict json"))

	encryptBody := func(ctxJSON string) []byte {
		return []byte(`{"KeyId":"` + id + `","Plaintext":"` + pt + `","EncryptionContext":` + ctxJSON + `}`)
	}
	decryptBody := func(blob, ctxJSON string) []byte {
		return []byte(`{"CiphertextBlob":"` + blob + `","EncryptionContext":` + ctxJSON + `}`)
	}
	encryptOK := func(t *testing.T, ctxJSON string) string {
		t.Helper()
		r := s.call(t, "TrentService.Encrypt", encryptBody(ctxJSON))
		if r.Status != 200 {
			t.Fatalf("Encrypt with context %s: %d %s", ctxJSON, r.Status, r.Body)
		}
		var out struct{ CiphertextBlob string }
		if err := json.Unmarshal(r.Body, &out); err != nil || out.CiphertextBlob == "" {
			t.Fatalf("Encrypt response %s: %v", r.Body, err)
		}
		return out.CiphertextBlob
	}

	invalid := map[string]string{
		"byte ff":             "\xff",
		"byte fe":             "\xfe",
		"truncated sequence":  "\xe2\x82",
		"lone high surrogate": `\ud800`,
		"lone low surrogate":  `\udfff`,
	}

	t.Run("Encrypt refuses invalid strings", func(t *testing.T) {
		t.Parallel()
		for name, bad := range invalid {
			for _, ctx := range []string{`{"a":"` + bad + `"}`, `{"` + bad + `":"a"}`} {
				r := s.call(t, "TrentService.Encrypt", encryptBody(ctx))
				msg := r.wantError(t, 400, "SerializationException")
				wantKMSHeaders(t, name, r.Header)
				if strings.Contains(msg, pt) || strings.Contains(msg, id) {
					t.Errorf("%s: message %q quotes the body", name, msg)
				}
			}
		}
	})

	t.Run("a context with U+FFFD is not matched by invalid bytes", func(t *testing.T) {
		t.Parallel()
		blob := encryptOK(t, `{"a":"\ufffd"}`)
		for name, bad := range invalid {
			r := s.call(t, "TrentService.Decrypt", decryptBody(blob, `{"a":"`+bad+`"}`))
			if r.Status == 200 {
				t.Fatalf("%s: a ciphertext made with U+FFFD decrypted with %q", name, bad)
			}
			r.wantError(t, 400, "SerializationException")
		}
		// The valid spelling still decrypts it.
		if r := s.call(t, "TrentService.Decrypt", decryptBody(blob, `{"a":"`+"\uFFFD"+`"}`)); r.Status != 200 {
			t.Fatalf("Decrypt with the same context: %d %s", r.Status, r.Body)
		}
	})

	t.Run("a context with U+00FF is not matched by another byte", func(t *testing.T) {
		t.Parallel()
		blob := encryptOK(t, `{"a":"\u00ff"}`)
		r := s.call(t, "TrentService.Decrypt", decryptBody(blob, `{"a":"`+"\xfe"+`"}`))
		r.wantError(t, 400, "SerializationException")
		r = s.call(t, "TrentService.Decrypt", decryptBody(blob, `{"a":"`+"\xff"+`"}`))
		r.wantError(t, 400, "SerializationException")
		if r := s.call(t, "TrentService.Decrypt", decryptBody(blob, `{"a":"ÿ"}`)); r.Status != 200 {
			t.Fatalf("Decrypt with the same context, unescaped: %d %s", r.Status, r.Body)
		}
	})

	t.Run("duplicate and case-variant names", func(t *testing.T) {
		t.Parallel()
		for name, body := range map[string]string{
			"case variant beside KeyId": `{"KeyId":"` + id + `","keyid":"alias/other","Plaintext":"` + pt + `"}`,
			"case variant alone":        `{"keyid":"` + id + `","Plaintext":"` + pt + `"}`,
			"duplicate KeyId":           `{"KeyId":"alias/other","Plaintext":"` + pt + `","KeyId":"` + id + `"}`,
			"duplicate context key":     `{"KeyId":"` + id + `","Plaintext":"` + pt + `","EncryptionContext":{"a":"1","a":"2"}}`,
		} {
			r := s.call(t, "TrentService.Encrypt", []byte(body))
			msg := r.wantError(t, 400, "SerializationException")
			if strings.Contains(msg, pt) || strings.Contains(msg, "alias/other") {
				t.Errorf("%s: message %q quotes the body", name, msg)
			}
		}
	})
}

// Every operation in the dispatch table decodes its ordinary body, and
// refuses the same body with any of its members named twice or spelled in
// another case.
func TestStrictJSONEveryOperation(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	const missing = `"alias/strict-json-missing"`
	// The members of a minimal, well-formed body per operation, in order.
	bodies := map[string][][2]string{
		"CreateKey":                           {{"Description", `"strict"`}, {"Tags", `[{"TagKey":"k","TagValue":"v"}]`}},
		"DescribeKey":                         {{"KeyId", missing}},
		"ListKeys":                            {{"Limit", `10`}},
		"EnableKey":                           {{"KeyId", missing}},
		"DisableKey":                          {{"KeyId", missing}},
		"Encrypt":                             {{"KeyId", missing}, {"Plaintext", `"AAEC"`}, {"EncryptionContext", `{"a":"b"}`}},
		"Decrypt":                             {{"CiphertextBlob", `"AAEC"`}, {"EncryptionContext", `{"a":"b"}`}},
		"ReEncrypt":                           {{"CiphertextBlob", `"AAEC"`}, {"DestinationKeyId", missing}, {"SourceEncryptionContext", `{"a":"b"}`}, {"DestinationEncryptionContext", `{"a":"c"}`}},
		"GenerateDataKey":                     {{"KeyId", missing}, {"KeySpec", `"AES_256"`}, {"EncryptionContext", `{"a":"b"}`}},
		"GenerateDataKeyWithoutPlaintext":     {{"KeyId", missing}, {"NumberOfBytes", `32`}},
		"GenerateRandom":                      {{"NumberOfBytes", `8`}},
		"GenerateDataKeyPair":                 {{"KeyId", missing}, {"KeyPairSpec", `"ECC_NIST_P256"`}, {"EncryptionContext", `{"a":"b"}`}},
		"GenerateDataKeyPairWithoutPlaintext": {{"KeyId", missing}, {"KeyPairSpec", `"ECC_NIST_P256"`}},
		"GetPublicKey":                        {{"KeyId", missing}},
		"Sign":                                {{"KeyId", missing}, {"Message", `"AAEC"`}, {"SigningAlgorithm", `"ECDSA_SHA_256"`}},
		"Verify":                              {{"KeyId", missing}, {"Message", `"AAEC"`}, {"Signature", `"AAEC"`}, {"SigningAlgorithm", `"ECDSA_SHA_256"`}},
		"GenerateMac":                         {{"KeyId", missing}, {"Message", `"AAEC"`}, {"MacAlgorithm", `"HMAC_SHA_256"`}},
		"VerifyMac":                           {{"KeyId", missing}, {"Message", `"AAEC"`}, {"Mac", `"AAEC"`}, {"MacAlgorithm", `"HMAC_SHA_256"`}},
		"CreateAlias":                         {{"AliasName", `"alias/strict-json"`}, {"TargetKeyId", missing}},
		"UpdateAlias":                         {{"AliasName", `"alias/strict-json"`}, {"TargetKeyId", missing}},
		"DeleteAlias":                         {{"AliasName", `"alias/strict-json-missing"`}},
		"ListAliases":                         {{"Limit", `10`}},
		"TagResource":                         {{"KeyId", missing}, {"Tags", `[{"TagKey":"k","TagValue":"v"}]`}},
		"UntagResource":                       {{"KeyId", missing}, {"TagKeys", `["k"]`}},
		"ListResourceTags":                    {{"KeyId", missing}},
		"UpdateKeyDescription":                {{"KeyId", missing}, {"Description", `"d"`}},
		"ScheduleKeyDeletion":                 {{"KeyId", missing}, {"PendingWindowInDays", `7`}},
		"CancelKeyDeletion":                   {{"KeyId", missing}},
		"EnableKeyRotation":                   {{"KeyId", missing}, {"RotationPeriodInDays", `90`}},
		"DisableKeyRotation":                  {{"KeyId", missing}},
		"GetKeyRotationStatus":                {{"KeyId", missing}},
		"RotateKeyOnDemand":                   {{"KeyId", missing}},
		"ListKeyRotations":                    {{"KeyId", missing}},
		"GetKeyPolicy":                        {{"KeyId", missing}, {"PolicyName", `"default"`}},
		"PutKeyPolicy":                        {{"KeyId", missing}, {"PolicyName", `"default"`}, {"Policy", `"{}"`}},
		"ListKeyPolicies":                     {{"KeyId", missing}},
		"CreateGrant":                         {{"KeyId", missing}, {"GranteePrincipal", `"arn:aws:iam::111122223333:root"`}, {"Operations", `["Decrypt"]`}, {"Constraints", `{"EncryptionContextSubset":{"a":"b"}}`}},
		"ListGrants":                          {{"KeyId", missing}},
		"ListRetirableGrants":                 {{"RetiringPrincipal", `"arn:aws:iam::111122223333:root"`}},
		"RetireGrant":                         {{"GrantToken", `"not-a-grant-token"`}},
		"RevokeGrant":                         {{"KeyId", missing}, {"GrantId", `"0000000000000000000000000000000000000000000000000000000000000000"`}},
	}
	ops := api.Operations()
	slices.Sort(ops)
	for _, op := range ops {
		members, ok := bodies[op]
		if !ok {
			t.Errorf("no body for %s: add one to this test", op)
			continue
		}
		target := "TrentService." + op
		r := s.call(t, target, object(members))
		if r.Status != 200 {
			if typ, _ := r.errorBody(t); typ == "SerializationException" {
				t.Errorf("%s: its ordinary body was refused: %s", op, r.Body)
			}
		}
		for i, m := range members {
			twice := slices.Insert(slices.Clone(members), i+1, m)
			s.call(t, target, object(twice)).wantError(t, 400, "SerializationException")
			variant := slices.Insert(slices.Clone(members), i+1, [2]string{strings.ToLower(m[0]), m[1]})
			s.call(t, target, object(variant)).wantError(t, 400, "SerializationException")
			upper := slices.Clone(members)
			upper[i][0] = strings.ToUpper(m[0])
			s.call(t, target, object(upper)).wantError(t, 400, "SerializationException")
		}
	}
}

// object writes members, in order, as a JSON object.
func object(members [][2]string) []byte {
	var b strings.Builder
	b.WriteByte('{')
	for i, m := range members {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"` + m[0] + `":` + m[1])
	}
	b.WriteByte('}')
	return []byte(b.String())
}
