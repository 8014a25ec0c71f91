package api

import (
	"os"
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
