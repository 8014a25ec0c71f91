package api

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/hsmkms/hsmkms/service"
)

// secretMarker stands in for plaintext in the bodies below: no error text,
// sent or logged, may contain it.
const secretMarker = "c2VjcmV0"

// A request body must mean one thing to every reader: hsmkms and any proxy
// or firewall in front of it. Bodies that encoding/json alone would read one
// way and a stricter or differently-folding reader another way are refused
// as SerializationException.
func TestDecodeRefusesAmbiguousJSON(t *testing.T) {
	t.Parallel()
	encrypt := func() any { return new(service.EncryptInput) }
	reEncrypt := func() any { return new(service.ReEncryptInput) }
	decrypt := func() any { return new(service.DecryptInput) }
	createGrant := func() any { return new(service.CreateGrantInput) }
	createKey := func() any { return new(service.CreateKeyInput) }
	generateDataKey := func() any { return new(service.GenerateDataKeyInput) }
	cases := []struct {
		name string
		into func() any
		body string
		want string // in the message, if set
	}{
		// Duplicate member names, at every depth.
		{"duplicate top-level member", encrypt, `{"KeyId":"k","Plaintext":"` + secretMarker + `","KeyId":"x"}`, "The request body names KeyId twice in one object."},
		{"duplicate top-level member spelled with an escape", encrypt, `{"KeyId":"k","Key\u0049d":"x"}`, "names KeyId twice"},
		{"duplicate unknown member", encrypt, `{"KeyId":"k","Future":1,"Future":2}`, "names a member twice"},
		{"duplicate encryption context key", encrypt, `{"KeyId":"k","EncryptionContext":{"a":"1","a":"2"}}`, "A map in the request body has a duplicate key."},
		{"duplicate encryption context key spelled with an escape", encrypt, `{"KeyId":"k","EncryptionContext":{"a":"1","\u0061":"2"}}`, ""},
		{"duplicate destination context key", reEncrypt, `{"DestinationKeyId":"k","DestinationEncryptionContext":{"purpose":"a","purpose":"b"}}`, ""},
		{"duplicate in a large encryption context", encrypt, `{"KeyId":"k","EncryptionContext":{` + manyPairs(40) + `,"k7":"again"}}`, "duplicate key"},
		{"duplicate nested structure member", createGrant, `{"KeyId":"k","Constraints":{"EncryptionContextEquals":{"a":"1"},"EncryptionContextEquals":{"a":"2"}}}`, "names EncryptionContextEquals twice"},
		{"duplicate key in a grant constraint map", createGrant, `{"KeyId":"k","Constraints":{"EncryptionContextSubset":{"a":"1","a":"2"}}}`, ""},
		{"duplicate member of a tag", createKey, `{"Tags":[{"TagKey":"a","TagValue":"1","TagValue":"2"}]}`, ""},
		{"duplicate inside an untyped member", decrypt, `{"CiphertextBlob":"AA==","Recipient":{"AttestationDocument":"AA==","AttestationDocument":"AQ=="}}`, ""},
		{"duplicate inside an unknown member", encrypt, `{"KeyId":"k","Future":[{"b":1,"b":2}]}`, ""},

		// Names that match a member only case-insensitively.
		{"case variant beside the member", encrypt, `{"KeyId":"k","keyid":"x"}`, "Member names are case-sensitive: the request body spells KeyId in another case."},
		{"case variant alone", encrypt, `{"keyid":"x","Plaintext":"AA=="}`, ""},
		{"upper-case variant", encrypt, `{"KEYID":"x"}`, ""},
		{"Kelvin sign folds to K", encrypt, `{"\u212AeyId":"x"}`, "spells KeyId in another case"},
		{"case variant of a map member", encrypt, `{"KeyId":"k","encryptionContext":{"a":"b"}}`, ""},
		{"case variant of a nested structure member", createGrant, `{"KeyId":"k","Constraints":{"encryptionContextEquals":{"a":"1"}}}`, ""},
		{"case variant of a tag member", createKey, `{"Tags":[{"tagKey":"a","TagValue":"1"}]}`, "spells TagKey in another case"},

		// Strings that are not valid Unicode.
		{"invalid UTF-8 in a context value", encrypt, "{\"KeyId\":\"k\",\"EncryptionContext\":{\"a\":\"\xff\"}}", "not valid UTF-8"},
		{"invalid UTF-8 in a context key", encrypt, "{\"KeyId\":\"k\",\"EncryptionContext\":{\"\xfe\":\"a\"}}", ""},
		{"invalid UTF-8 in a decrypt context", decrypt, "{\"CiphertextBlob\":\"AA==\",\"EncryptionContext\":{\"a\":\"b\xc3\"}}", ""},
		{"invalid UTF-8 in a key id", encrypt, "{\"KeyId\":\"k\xff\"}", ""},
		{"invalid UTF-8 in a member name", encrypt, "{\"KeyId\":\"k\",\"\xffx\":1}", ""},
		{"UTF-8-encoded surrogate", encrypt, "{\"KeyId\":\"k\",\"EncryptionContext\":{\"a\":\"\xed\xa0\x80\"}}", "not valid UTF-8"},
		{"overlong UTF-8", encrypt, "{\"KeyId\":\"k\",\"EncryptionContext\":{\"a\":\"\xc0\xaf\"}}", ""},
		{"truncated UTF-8 sequence", generateDataKey, "{\"KeyId\":\"k\",\"EncryptionContext\":{\"a\":\"\xe2\x82\"}}", ""},
		{"lone high surrogate escape in a value", encrypt, `{"KeyId":"k","EncryptionContext":{"a":"\ud800"}}`, "unpaired surrogate escape"},
		{"lone low surrogate escape in a value", encrypt, `{"KeyId":"k","EncryptionContext":{"a":"\udc00"}}`, ""},
		{"lone surrogate escape in a key", encrypt, `{"KeyId":"k","EncryptionContext":{"\ud83d":"a"}}`, ""},
		{"high surrogate then a letter", encrypt, `{"KeyId":"k","EncryptionContext":{"a":"\ud83dA"}}`, ""},
		{"high surrogate then a non-surrogate escape", encrypt, `{"KeyId":"k","EncryptionContext":{"a":"\ud83d\u0041"}}`, ""},
		{"surrogates in the wrong order", encrypt, `{"KeyId":"k","EncryptionContext":{"a":"\ude00\ud83d"}}`, "unpaired surrogate escape"},
		{"two high surrogates", encrypt, `{"KeyId":"k","EncryptionContext":{"a":"\ud83d\ud83d"}}`, ""},
		{"lone surrogate in a re-encrypt source context", reEncrypt, `{"DestinationKeyId":"k","SourceEncryptionContext":{"a":"\udfff"}}`, ""},

		// The body is one JSON object.
		{"null body", encrypt, `null`, "must be a JSON object"},
		{"string body", encrypt, `"KeyId"`, ""},
		{"number body", encrypt, `1`, ""},
		{"trailing data", encrypt, `{"KeyId":"k"} {"KeyId":"x"}`, ""},
		{"syntax error", encrypt, `{"KeyId":"k",}`, ""},
		{"nesting too deep", encrypt, `{"Future":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}`, "nested too deeply"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := decode([]byte(tc.body), tc.into())
			var e *service.Error
			if !errors.As(err, &e) || e.Code != service.ExcSerialization {
				t.Fatalf("decode(%q) = %v, want SerializationException", tc.body, err)
			}
			if tc.want != "" && !strings.Contains(e.Message, tc.want) {
				t.Errorf("message %q, want it to say %q", e.Message, tc.want)
			}
			if e.HTTPStatus() != 400 {
				t.Errorf("status %d, want 400", e.HTTPStatus())
			}
			for _, text := range []string{e.Message, e.Error()} {
				if strings.Contains(text, secretMarker) || strings.Contains(text, `"x"`) || strings.Contains(text, "\xff") {
					t.Errorf("error text %q quotes the body", text)
				}
			}
		})
	}
}

func manyPairs(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"k` + strconv.Itoa(i) + `":"v"`)
	}
	return b.String()
}

// Valid requests still decode, with what they say: unicode, escapes,
// case-distinct context keys, unknown members (ignored, as AWS does).
func TestDecodeAcceptsValidJSON(t *testing.T) {
	t.Parallel()
	pt := []byte("a kibibyte of plaintext \x00\xff")
	ptB64 := base64.StdEncoding.EncodeToString(pt)

	t.Run("encrypt with unicode and escapes", func(t *testing.T) {
		t.Parallel()
		body := " {\n\t\"KeyId\" : \"alias/k\" ,\"Plaintext\":\"" + ptB64 + "\",\r\n" +
			`"EncryptionContext":{"plain":"v","é":"\u00e9\u00E9","emoji":"\ud83d\ude00 😀","esc":"\"\\\/\b\f\n\r\t","nul":"\u0000",` +
			`"case":"lower","Case":"upper","fffd":"` + "\uFFFD" + `","ctl":"\u001f","big":"` + "\U0010FFFF" + `"},` +
			`"GrantTokens":["t1","t2"],"EncryptionAlgorithm":"SYMMETRIC_DEFAULT","DryRun":false} `
		var in service.EncryptInput
		if err := decode([]byte(body), &in); err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"plain": "v", "é": "éé", "emoji": "😀 😀", "esc": "\"\\/\b\f\n\r\t", "nul": "\x00",
			"case": "lower", "Case": "upper", "fffd": "\uFFFD", "ctl": "\x1f", "big": "\U0010FFFF"}
		if in.KeyId != "alias/k" || string(in.Plaintext) != string(pt) || !maps.Equal(in.EncryptionContext, want) ||
			len(in.GrantTokens) != 2 || in.EncryptionAlgorithm == nil || *in.EncryptionAlgorithm != "SYMMETRIC_DEFAULT" {
			t.Errorf("decoded %+v", in)
		}
	})
	t.Run("member name spelled with an escape", func(t *testing.T) {
		t.Parallel()
		var in service.DescribeKeyInput
		if err := decode([]byte(`{"Key\u0049d":"k"}`), &in); err != nil || in.KeyId != "k" {
			t.Errorf("decoded %+v, %v", in, err)
		}
	})
	t.Run("unknown members are ignored", func(t *testing.T) {
		t.Parallel()
		var in service.DescribeKeyInput
		body := `{"KeyId":"k","FutureMember":{"Nested":[1,2.5e3,-0.1,true,false,null,"s",{}]},"Key":"not KeyId","KeyIdentifier":"x"}`
		if err := decode([]byte(body), &in); err != nil || in.KeyId != "k" {
			t.Errorf("decoded %+v, %v", in, err)
		}
	})
	t.Run("empty object and null members", func(t *testing.T) {
		t.Parallel()
		var in service.ListKeysInput
		if err := decode([]byte(`{}`), &in); err != nil || in.Limit != nil {
			t.Errorf("decoded %+v, %v", in, err)
		}
		if err := decode([]byte(`{"Limit":null,"Marker":null}`), &in); err != nil || in.Limit != nil || in.Marker != nil {
			t.Errorf("decoded %+v, %v", in, err)
		}
	})
	t.Run("re-encrypt with two contexts", func(t *testing.T) {
		t.Parallel()
		var in service.ReEncryptInput
		body := `{"CiphertextBlob":"AAEC","SourceEncryptionContext":{"a":"1"},"DestinationKeyId":"k","DestinationEncryptionContext":{"a":"2"}}`
		if err := decode([]byte(body), &in); err != nil || in.SourceEncryptionContext["a"] != "1" || in.DestinationEncryptionContext["a"] != "2" {
			t.Errorf("decoded %+v, %v", in, err)
		}
	})
	t.Run("large encryption context", func(t *testing.T) {
		t.Parallel()
		var in service.EncryptInput
		if err := decode([]byte(`{"KeyId":"k","EncryptionContext":{`+manyPairs(100)+`}}`), &in); err != nil || len(in.EncryptionContext) != 100 {
			t.Errorf("decoded %d pairs, %v", len(in.EncryptionContext), err)
		}
	})
	t.Run("grant constraints", func(t *testing.T) {
		t.Parallel()
		var in service.CreateGrantInput
		body := `{"KeyId":"k","GranteePrincipal":"arn:aws:iam::111122223333:root","Operations":["Decrypt"],` +
			`"Constraints":{"EncryptionContextEquals":{"a":"1","A":"2"}}}`
		if err := decode([]byte(body), &in); err != nil || in.Constraints == nil || len(in.Constraints.EncryptionContextEquals) != 2 {
			t.Errorf("decoded %+v, %v", in, err)
		}
	})
	t.Run("tags", func(t *testing.T) {
		t.Parallel()
		var in service.CreateKeyInput
		if err := decode([]byte(`{"Tags":[{"TagKey":"k","TagValue":"v"},{"TagValue":"w","TagKey":"k2"}]}`), &in); err != nil {
			t.Fatal(err)
		}
		if len(in.Tags) != 2 || in.Tags[0] != service.NewTag("k", "v") || in.Tags[1] != service.NewTag("k2", "w") {
			t.Errorf("decoded tags %+v", in.Tags)
		}
	})
	t.Run("same names in sibling objects", func(t *testing.T) {
		t.Parallel()
		var in service.CreateKeyInput
		if err := decode([]byte(`{"Tags":[{"TagKey":"k","TagValue":"v"},{"TagKey":"k","TagValue":"v"}]}`), &in); err != nil || len(in.Tags) != 2 {
			t.Errorf("decoded %+v, %v", in, err)
		}
	})
}

// The strict reader never accepts what encoding/json calls invalid, accepts
// everything valid that has no duplicate names, no case-variant member names
// and no invalid text, and what it accepts decodes to the members named
// exactly, with no text replaced by U+FFFD.
func FuzzCheckWireJSON(f *testing.F) {
	for _, seed := range []string{
		`{}`, `{"KeyId":"k","Plaintext":"AA==","EncryptionContext":{"a":"b","A":"c"}}`,
		`{"KeyId":"k","keyid":"x"}`, `{"KeyId":"k","KeyId":"x"}`, `{"Key\u0049d":"k"}`, `{"\u212AeyId":"x"}`,
		`{"EncryptionContext":{"a":"\ud83d\ude00","b":"\ud800"}}`, "{\"EncryptionContext\":{\"a\":\"\xff\"}}",
		`{"Future":[1,-2.5e+3,true,false,null,{"x":{"y":[]}}]}`, `{"a":1} x`, `[]`, `null`, `{"a":"\u0000\"\\\/"}`,
		`{"EncryptionContext":{` + manyPairs(20) + `}}`, `{"EncryptionContext":{` + manyPairs(20) + `,"k3":"v"}}`,
	} {
		f.Add([]byte(seed))
	}
	encryptShape := wireShapeOf(reflect.TypeFor[service.EncryptInput]())
	f.Fuzz(func(t *testing.T, body []byte) {
		err := checkWireJSON(body, anyWireValue)
		if err == nil && !json.Valid(body) {
			t.Fatalf("accepted invalid JSON %q", body)
		}
		if err == nil && bytes.TrimLeft(body, " \t\r\n")[0] != '{' {
			t.Fatalf("accepted a body that is not an object: %q", body)
		}
		if err != nil && plainReaderAccepts(body) {
			t.Fatalf("refused %q: %v", body, err)
		}
		if err != nil {
			return
		}
		var tree any
		if err := json.Unmarshal(body, &tree); err != nil {
			t.Fatalf("accepted %q, which encoding/json refuses: %v", body, err)
		}
		if containsFFFD(tree) && !bytes.Contains(body, []byte("\uFFFD")) && !bytes.Contains(bytes.ToLower(body), []byte(`\ufffd`)) {
			t.Fatalf("accepted %q, which decodes with U+FFFD it does not contain", body)
		}
		if checkWireJSON(body, encryptShape) != nil {
			return
		}
		var in service.EncryptInput
		if json.Unmarshal(body, &in) != nil {
			return
		}
		var exact map[string]any
		json.Unmarshal(body, &exact)
		want, _ := exact["KeyId"].(string)
		if in.KeyId != want {
			t.Fatalf("accepted %q, whose KeyId decodes as %q but is spelled exactly as %q", body, in.KeyId, want)
		}
	})
}

// plainReaderAccepts is the reference for bodies without \u escapes: valid
// JSON, valid UTF-8, one object, no name twice in an object, nesting within
// the limit.
func plainReaderAccepts(body []byte) bool {
	if !json.Valid(body) || !utf8.Valid(body) || bytes.Contains(body, []byte(`\u`)) {
		return false
	}
	if bytes.TrimLeft(body, " \t\r\n")[0] != '{' {
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	type frame struct {
		object bool
		seen   map[string]bool
		key    bool
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return true // the end: json.Valid said the rest is sound
		}
		if len(stack) > 0 {
			top := stack[len(stack)-1]
			if top.object && top.key {
				k := tok.(string)
				if top.seen[k] {
					return false
				}
				top.seen[k] = true
				top.key = false
				continue
			}
			if top.object {
				top.key = true
			}
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{object: true, seen: map[string]bool{}, key: true})
		case json.Delim('['):
			stack = append(stack, &frame{})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		if len(stack) > maxWireDepth {
			return false
		}
	}
}

func containsFFFD(v any) bool {
	switch v := v.(type) {
	case string:
		return strings.ContainsRune(v, utf8.RuneError)
	case []any:
		return slices.ContainsFunc(v, containsFFFD)
	case map[string]any:
		for k, x := range v {
			if strings.ContainsRune(k, utf8.RuneError) || containsFFFD(x) {
				return true
			}
		}
	}
	return false
}
