package blob

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzParse checks that Parse never panics, that every error wraps exactly
// one of the sentinel errors, and that a successful Parse round-trips
// through Marshal to exactly the input bytes. It is seeded with the blob
// of every committed test vector.
func FuzzParse(f *testing.F) {
	for _, v := range loadVectors(f) {
		f.Add(v.Blob)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		orig := append([]byte(nil), in...)
		b, err := Parse(in)
		if !bytes.Equal(in, orig) {
			t.Fatal("Parse modified its input")
		}
		if err != nil {
			if b != nil {
				t.Fatal("Parse returned a blob and an error")
			}
			m, u := errors.Is(err, ErrMalformed), errors.Is(err, ErrUnsupportedVersion)
			if m == u {
				t.Fatalf("error %v wraps ErrMalformed=%v ErrUnsupportedVersion=%v, want exactly one", err, m, u)
			}
			return
		}
		if b == nil {
			t.Fatal("Parse returned (nil, nil)")
		}
		if b.Version != Version1 || b.KeyVersion == 0 || len(b.Ciphertext) < 1+TagLen || len(b.Ciphertext) > MaxPlaintextLen+TagLen {
			t.Fatalf("Parse accepted an invalid blob: %+v", b.Header)
		}
		if out := b.Marshal(); !bytes.Equal(out, in) {
			t.Fatalf("Marshal(Parse(x)) = %x, want %x", out, in)
		}
		if len(in) > 0 {
			in[len(in)-1] ^= 0xff
			if b.Ciphertext[len(b.Ciphertext)-1] == in[len(in)-1] {
				t.Fatal("parsed blob aliases the input")
			}
		}
	})
}
