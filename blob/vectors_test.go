package blob

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// vectorGlob matches every committed test vector file.
const vectorGlob = "testdata/vectors/*.txt"

// Outcomes a vector can declare.
const (
	outcomeSuccess     = "success"
	outcomeParse       = "parse failure"
	outcomeUnsupported = "unsupported version"
	outcomeAuth        = "auth failure"
)

// testVector is a parsed vector file (format in SPEC.md).
type testVector struct {
	Name      string
	Comment   string
	Outcome   string
	Key       []byte
	Context   map[string]string
	Plaintext []byte
	Blob      []byte
}

// parseVectorFile parses the line format: "#" comment lines and blank lines
// are ignored, every other line is "field: value", each field appears at
// most once, and unknown fields are errors.
func parseVectorFile(name string, data []byte) (*testVector, error) {
	fields := make(map[string]string)
	for i, line := range strings.Split(string(data), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("line %d: no colon", i+1)
		}
		switch k {
		case "comment", "outcome", "key", "context", "plaintext", "blob":
		default:
			return nil, fmt.Errorf("line %d: unknown field %q", i+1, k)
		}
		if _, dup := fields[k]; dup {
			return nil, fmt.Errorf("line %d: duplicate field %q", i+1, k)
		}
		fields[k] = strings.TrimSpace(v)
	}
	for _, k := range []string{"comment", "outcome", "key", "context", "blob"} {
		if _, ok := fields[k]; !ok {
			return nil, fmt.Errorf("missing field %q", k)
		}
	}
	v := &testVector{Name: name, Comment: fields["comment"], Outcome: fields["outcome"]}
	switch v.Outcome {
	case outcomeSuccess, outcomeParse, outcomeUnsupported, outcomeAuth:
	default:
		return nil, fmt.Errorf("unknown outcome %q", v.Outcome)
	}
	pt, hasPT := fields["plaintext"]
	if hasPT != (v.Outcome == outcomeSuccess) {
		return nil, fmt.Errorf("plaintext must be present exactly when outcome is %q", outcomeSuccess)
	}
	var err error
	if v.Key, err = hex.DecodeString(fields["key"]); err != nil {
		return nil, fmt.Errorf("key: %v", err)
	}
	if len(v.Key) != 32 {
		return nil, fmt.Errorf("key: %d bytes, want 32", len(v.Key))
	}
	if v.Blob, err = hex.DecodeString(fields["blob"]); err != nil {
		return nil, fmt.Errorf("blob: %v", err)
	}
	if v.Plaintext, err = hex.DecodeString(pt); err != nil {
		return nil, fmt.Errorf("plaintext: %v", err)
	}
	if err := json.Unmarshal([]byte(fields["context"]), &v.Context); err != nil {
		return nil, fmt.Errorf("context: %v", err)
	}
	return v, nil
}

// loadVectors loads every committed vector and fails the test if there
// are none.
func loadVectors(tb testing.TB) []*testVector {
	tb.Helper()
	paths, err := filepath.Glob(vectorGlob)
	if err != nil {
		tb.Fatal(err)
	}
	if len(paths) == 0 {
		tb.Fatalf("no test vectors match %s", vectorGlob)
	}
	var vs []*testVector
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		name := strings.TrimSuffix(filepath.Base(p), filepath.Ext(p))
		v, err := parseVectorFile(name, data)
		if err != nil {
			tb.Fatalf("%s: %v", p, err)
		}
		vs = append(vs, v)
	}
	return vs
}

// openBlob is what the HSM does on Decrypt, in software: AES-256-GCM Open
// with the blob's IV and the AAD from the header and context.
func openBlob(key []byte, b *Blob, ec map[string]string) ([]byte, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return gcm.Open(nil, b.IV[:], b.Ciphertext, b.AAD(ec))
}

func TestVectors(t *testing.T) {
	vs := loadVectors(t)
	count := make(map[string]int)
	for _, v := range vs {
		count[v.Outcome]++
		t.Run(v.Name, func(t *testing.T) {
			b, err := Parse(v.Blob)
			switch v.Outcome {
			case outcomeParse:
				if !errors.Is(err, ErrMalformed) || errors.Is(err, ErrUnsupportedVersion) {
					t.Fatalf("Parse error = %v, want ErrMalformed only (%s)", err, v.Comment)
				}
				if b != nil {
					t.Fatalf("Parse returned a blob with an error")
				}
				return
			case outcomeUnsupported:
				if !errors.Is(err, ErrUnsupportedVersion) || errors.Is(err, ErrMalformed) {
					t.Fatalf("Parse error = %v, want ErrUnsupportedVersion only (%s)", err, v.Comment)
				}
				if b != nil {
					t.Fatalf("Parse returned a blob with an error")
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v (%s)", err, v.Comment)
			}
			if got := b.Marshal(); !bytes.Equal(got, v.Blob) {
				t.Fatalf("Marshal(Parse(blob)) != blob")
			}
			pt, err := openBlob(v.Key, b, v.Context)
			switch v.Outcome {
			case outcomeSuccess:
				if err != nil {
					t.Fatalf("GCM Open: %v (%s)", err, v.Comment)
				}
				if !bytes.Equal(pt, v.Plaintext) {
					t.Fatalf("plaintext mismatch")
				}
			case outcomeAuth:
				if err == nil {
					t.Fatalf("GCM Open succeeded, want authentication failure (%s)", v.Comment)
				}
			}
		})
	}
	for _, o := range []string{outcomeSuccess, outcomeParse, outcomeUnsupported, outcomeAuth} {
		if count[o] == 0 {
			t.Errorf("no vector has outcome %q", o)
		}
	}
}

// TestVectorFileParser checks that the vector loader rejects bad files, so
// a broken vector cannot silently pass.
func TestVectorFileParser(t *testing.T) {
	const key = "key: " + "0000000000000000000000000000000000000000000000000000000000000000\n"
	good := "comment: c\noutcome: parse failure\n" + key + "context: {}\nblob:\n"
	if _, err := parseVectorFile("good", []byte(good)); err != nil {
		t.Fatalf("good file rejected: %v", err)
	}
	bad := map[string]string{
		"unknown field":        good + "extra: 1\n",
		"duplicate field":      good + "blob: 00\n",
		"missing blob":         "comment: c\noutcome: parse failure\n" + key + "context: {}\n",
		"bad outcome":          "comment: c\noutcome: maybe\n" + key + "context: {}\nblob:\n",
		"plaintext on failure": good + "plaintext: 00\n",
		"no plaintext":         "comment: c\noutcome: success\n" + key + "context: {}\nblob:\n",
		"bad hex":              "comment: c\noutcome: parse failure\n" + key + "context: {}\nblob: 0g\n",
		"short key":            "comment: c\noutcome: parse failure\nkey: 00\ncontext: {}\nblob:\n",
		"bad context":          "comment: c\noutcome: parse failure\n" + key + "context: {\"a\":1}\nblob:\n",
		"no colon":             good + "junk\n",
	}
	for name, f := range bad {
		if _, err := parseVectorFile(name, []byte(f)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
