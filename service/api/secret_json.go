package api

import (
	"bytes"
	"encoding/base64"
	"encoding/json"

	"github.com/hsmkms/hsmkms/service"
)

// appendSecretJSON writes the responses that carry plaintext (Decrypt,
// GenerateDataKey, GenerateDataKeyPair, GenerateRandom) straight into buf, which the caller zeroes.
// encoding/json would build them in a pooled buffer of its own that is reused
// without being cleared, leaving the base64 plaintext in memory after the
// request. It reports false for any other output.
func appendSecretJSON(buf *bytes.Buffer, out any) (bool, error) {
	var fields []field
	switch o := out.(type) {
	case *service.DecryptOutput:
		fields = []field{{"KeyId", o.KeyId, nil}, {"Plaintext", "", o.Plaintext},
			{"EncryptionAlgorithm", o.EncryptionAlgorithm, nil}, {"KeyMaterialId", o.KeyMaterialId, nil}}
	case *service.GenerateDataKeyOutput:
		fields = []field{{"CiphertextBlob", "", o.CiphertextBlob}, {"KeyId", o.KeyId, nil},
			{"KeyMaterialId", o.KeyMaterialId, nil}}
		if o.Plaintext != nil {
			fields = append(fields, field{"Plaintext", "", o.Plaintext})
		}
	case *service.GenerateDataKeyPairOutput:
		fields = []field{{"PrivateKeyCiphertextBlob", "", o.PrivateKeyCiphertextBlob}, {"PublicKey", "", o.PublicKey},
			{"KeyId", o.KeyId, nil}, {"KeyPairSpec", o.KeyPairSpec, nil}, {"KeyMaterialId", o.KeyMaterialId, nil}}
		if o.PrivateKeyPlaintext != nil {
			fields = append(fields, field{"PrivateKeyPlaintext", "", o.PrivateKeyPlaintext})
		}
	case *service.GenerateRandomOutput:
		fields = []field{{"Plaintext", "", o.Plaintext}}
	default:
		return false, nil
	}
	buf.WriteByte('{')
	n := 0
	for _, f := range fields {
		if f.bytes == nil && f.text == "" {
			continue
		}
		if n > 0 {
			buf.WriteByte(',')
		}
		n++
		buf.WriteByte('"')
		buf.WriteString(f.name)
		buf.WriteString(`":`)
		if f.bytes != nil {
			buf.WriteByte('"')
			// Encode in place, in buf's own spare capacity: no intermediate
			// buffer (base64.NewEncoder keeps one) ever holds the encoding.
			buf.Grow(base64.StdEncoding.EncodedLen(len(f.bytes)))
			buf.Write(base64.StdEncoding.AppendEncode(buf.AvailableBuffer(), f.bytes))
			buf.WriteByte('"')
			continue
		}
		// Non-secret strings (ARNs, algorithm names, hex ids) go through
		// encoding/json for correct escaping.
		q, err := json.Marshal(f.text)
		if err != nil {
			return true, err
		}
		buf.Write(q)
	}
	buf.WriteByte('}')
	return true, nil
}

type field struct {
	name  string
	text  string
	bytes []byte
}
