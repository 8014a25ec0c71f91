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
