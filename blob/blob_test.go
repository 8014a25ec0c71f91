package blob

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

func sampleBlob() *Blob {
	b := &Blob{
		Header: Header{
			Version:    Version1,
			KeyID:      [16]byte{0x12, 0x34, 0xab, 0xcd, 0x12, 0xab, 0x34, 0xcd, 0x56, 0xef, 0x12, 0x34, 0x56, 0x78, 0x90, 0xab},
			KeyVersion: 0x01020304,
			IV:         [12]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12},
		},
		Ciphertext: bytes.Repeat([]byte{0xcc}, 1+TagLen),
	}
	return b
}

func TestConstants(t *testing.T) {
	if HeaderLen != 33 || MinBlobLen != 50 || MaxBlobLen != 4145 {
		t.Fatalf("HeaderLen=%d MinBlobLen=%d MaxBlobLen=%d", HeaderLen, MinBlobLen, MaxBlobLen)
	}
}

func TestHeaderAppendToLayout(t *testing.T) {
	h := sampleBlob().Header
	want := []byte{
		0x01,
		0x12, 0x34, 0xab, 0xcd, 0x12, 0xab, 0x34, 0xcd, 0x56, 0xef, 0x12, 0x34, 0x56, 0x78, 0x90, 0xab,
		0x01, 0x02, 0x03, 0x04,
		1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
	}
	prefix := []byte("xy")
	got := h.AppendTo(append([]byte(nil), prefix...))
	if !bytes.Equal(got, append(prefix, want...)) {
		t.Fatalf("AppendTo = %x, want %x", got, want)
	}
}

func TestMarshalParseRoundTrip(t *testing.T) {
	for _, n := range []int{1, 2, 100, MaxPlaintextLen} {
		b := sampleBlob()
		b.Ciphertext = bytes.Repeat([]byte{byte(n)}, n+TagLen)
		enc := b.Marshal()
		if len(enc) != HeaderLen+n+TagLen {
			t.Fatalf("len = %d", len(enc))
		}
		got, err := Parse(enc)
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if !reflect.DeepEqual(got, b) {
			t.Fatalf("n=%d: round trip mismatch", n)
		}
		if !bytes.Equal(got.Marshal(), enc) {
			t.Fatalf("n=%d: Marshal(Parse(x)) != x", n)
		}
	}
}

func TestParseDoesNotAlias(t *testing.T) {
	enc := sampleBlob().Marshal()
	b, err := Parse(enc)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte(nil), b.Ciphertext...)
	for i := range enc {
		enc[i] ^= 0xff
	}
	if !bytes.Equal(b.Ciphertext, want) || b.Version != Version1 || b.KeyVersion != 0x01020304 {
		t.Fatal("parsed blob changed when the input was modified")
	}
	m := b.Marshal()
	b.Ciphertext[0] ^= 0xff
	if m[HeaderLen] != want[0] {
		t.Fatal("Marshal output aliases Ciphertext")
	}
}

func TestParseErrors(t *testing.T) {
	valid := sampleBlob().Marshal()
	with := func(f func([]byte) []byte) []byte { return f(append([]byte(nil), valid...)) }
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"nil", nil, ErrMalformed},
		{"empty", []byte{}, ErrMalformed},
		{"version only", []byte{Version1}, ErrMalformed},
		{"header only", valid[:HeaderLen], ErrMalformed},
		{"one short", valid[:MinBlobLen-1], ErrMalformed},
		{"one long", append(bytes.Repeat([]byte{1}, MaxBlobLen), 0), ErrMalformed},
		{"key version 0", with(func(b []byte) []byte { copy(b[17:21], []byte{0, 0, 0, 0}); return b }), ErrMalformed},
		{"version 0", with(func(b []byte) []byte { b[0] = 0; return b }), ErrUnsupportedVersion},
		{"version 2", with(func(b []byte) []byte { b[0] = 2; return b }), ErrUnsupportedVersion},
		{"version 2 short", []byte{2}, ErrUnsupportedVersion},
		{"version 0xff long", append([]byte{0xff}, make([]byte, MaxBlobLen)...), ErrUnsupportedVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Parse(tt.in)
			if b != nil {
				t.Errorf("got blob %+v with error", b)
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			other := ErrMalformed
			if tt.want == ErrMalformed {
				other = ErrUnsupportedVersion
			}
			if errors.Is(err, other) {
				t.Fatalf("err = %v also wraps %v", err, other)
			}
		})
	}
}

func TestParseBoundaries(t *testing.T) {
	for _, n := range []int{MinBlobLen, MaxBlobLen} {
		in := make([]byte, n)
		in[0] = Version1
		in[20] = 1
		if _, err := Parse(in); err != nil {
			t.Errorf("len %d: %v", n, err)
		}
	}
}

func TestAAD(t *testing.T) {
	h := sampleBlob().Header
	ec := map[string]string{"b": "2", "a": "1"}
	got := h.AAD(ec)
	want := append(h.AppendTo(nil), EncodeContext(ec)...)
	if !bytes.Equal(got, want) {
		t.Fatalf("AAD = %x, want %x", got, want)
	}
	if len(got) != cap(got) {
		t.Fatalf("AAD len %d cap %d, want exact size", len(got), cap(got))
	}
	if !bytes.Equal(h.AAD(nil), h.AAD(map[string]string{})) {
		t.Fatal("AAD(nil) != AAD(empty)")
	}
	if len(h.AAD(nil)) != HeaderLen+4 {
		t.Fatalf("len(AAD(nil)) = %d", len(h.AAD(nil)))
	}
	h2 := h
	h2.IV[11] ^= 1
	if bytes.Equal(h.AAD(ec), h2.AAD(ec)) {
		t.Fatal("AAD does not cover the IV")
	}
}

func TestAADAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts")
	}
	h := sampleBlob().Header
	for _, ec := range []map[string]string{
		nil,
		{"k": "v"},
		{"Department": "Finance", "Project": "Alpha"},
		{"a": "1", "b": "2", "c": "3", "d": "4", "e": "5"},
	} {
		if n := testing.AllocsPerRun(100, func() { _ = h.AAD(ec) }); n != 1 {
			t.Errorf("AAD with %d pairs: %v allocs, want 1", len(ec), n)
		}
	}
}
