package blob

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"testing"
)

func TestEncodeContextExactBytes(t *testing.T) {
	tests := []struct {
		name string
		ec   map[string]string
		want string // hex
	}{
		{"nil", nil, "00000000"},
		{"empty", map[string]string{}, "00000000"},
		{"empty pair", map[string]string{"": ""}, "00000001" + "00000000" + "00000000"},
		{"one pair", map[string]string{"a": "bc"},
			"00000001" + "00000001" + "61" + "00000002" + "6263"},
		{"two pairs sorted", map[string]string{"k2": "v2", "k1": "v1"},
			"00000002" +
				"00000002" + "6b31" + "00000002" + "7631" +
				"00000002" + "6b32" + "00000002" + "7632"},
		{"bytewise order: uppercase before lowercase, prefix first", map[string]string{"b": "", "B": "", "ba": ""},
			"00000003" +
				"00000001" + "42" + "00000000" +
				"00000001" + "62" + "00000000" +
				"00000002" + "6261" + "00000000"},
		{"utf-8 bytes", map[string]string{"é": "ü"},
			"00000001" + "00000002" + "c3a9" + "00000002" + "c3bc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := hex.EncodeToString(EncodeContext(tt.ec))
			if got != tt.want {
				t.Fatalf("EncodeContext = %s, want %s", got, tt.want)
			}
			pre := []byte{0xde, 0xad}
			app := AppendContext(append([]byte(nil), pre...), tt.ec)
			if hex.EncodeToString(app) != "dead"+tt.want {
				t.Fatalf("AppendContext = %x", app)
			}
		})
	}
}

func TestEncodeContextOrderIndependent(t *testing.T) {
	// Build the same context by inserting in different orders, and with
	// enough pairs to take both the stack and the heap path for sorting.
	for _, n := range []int{2, 3, 16, 17, 100} {
		keys := make([]string, n)
		for i := range keys {
			keys[i] = fmt.Sprintf("key-%03d", (i*37)%n)
		}
		fwd := make(map[string]string, n)
		for _, k := range keys {
			fwd[k] = "v" + k
		}
		rev := make(map[string]string)
		for i := n - 1; i >= 0; i-- {
			rev[keys[i]] = "v" + keys[i]
		}
		want := EncodeContext(fwd)
		for i := 0; i < 20; i++ { // map iteration order is randomized
			if got := EncodeContext(rev); !bytes.Equal(got, want) {
				t.Fatalf("n=%d: encoding depends on insertion or iteration order", n)
			}
		}
		if len(want) != cap(want) {
			t.Fatalf("n=%d: EncodeContext len %d cap %d", n, len(want), cap(want))
		}
	}
}

func TestEncodeContextDistinct(t *testing.T) {
	// Pairs of contexts that naive encodings (concatenation, "k=v,"
	// joining, unsorted or unprefixed) would confuse.
	pairs := []struct {
		name string
		a, b map[string]string
	}{
		{"boundary shift", map[string]string{"a": "bc"}, map[string]string{"ab": "c"}},
		{"key and value swapped", map[string]string{"a": "b"}, map[string]string{"b": "a"}},
		{"values swapped between pairs", map[string]string{"k1": "v1", "k2": "v2"}, map[string]string{"k1": "v2", "k2": "v1"}},
		{"empty vs empty pair", map[string]string{}, map[string]string{"": ""}},
		{"empty value vs missing", map[string]string{"a": ""}, map[string]string{}},
		{"separator inside value", map[string]string{"a": "b,c=d"}, map[string]string{"a": "b", "c": "d"}},
		{"pair split", map[string]string{"a": "b\x00\x00\x00\x01c"}, map[string]string{"a": "b", "c": ""}},
		{"extra pair", map[string]string{"k1": "v1"}, map[string]string{"k1": "v1", "k2": "v2"}},
		{"length prefix lookalike", map[string]string{"\x00\x00\x00\x01": ""}, map[string]string{"": "\x00\x00\x00\x01"}},
	}
	for _, p := range pairs {
		t.Run(p.name, func(t *testing.T) {
			if bytes.Equal(EncodeContext(p.a), EncodeContext(p.b)) {
				t.Fatalf("%q and %q encode the same", p.a, p.b)
			}
		})
	}
}

func TestEncodeContextNilEqualsEmpty(t *testing.T) {
	if !bytes.Equal(EncodeContext(nil), EncodeContext(map[string]string{})) {
		t.Fatal("nil and empty contexts encode differently")
	}
	if got := AppendContext(nil, nil); !bytes.Equal(got, []byte{0, 0, 0, 0}) {
		t.Fatalf("AppendContext(nil, nil) = %x", got)
	}
}

// decodeContext inverts EncodeContext, checking strictness; it exists to
// show in tests that the encoding is uniquely decodable.
func decodeContext(b []byte) (map[string]string, bool) {
	u32 := func() (int, bool) {
		if len(b) < 4 {
			return 0, false
		}
		n := int(b[0])<<24 | int(b[1])<<16 | int(b[2])<<8 | int(b[3])
		b = b[4:]
		return n, true
	}
	str := func() (string, bool) {
		n, ok := u32()
		if !ok || n > len(b) {
			return "", false
		}
		s := string(b[:n])
		b = b[n:]
		return s, true
	}
	n, ok := u32()
	if !ok {
		return nil, false
	}
	m := make(map[string]string)
	prev := ""
	for i := 0; i < n; i++ {
		k, ok1 := str()
		v, ok2 := str()
		if !ok1 || !ok2 || (i > 0 && k <= prev) {
			return nil, false
		}
		m[k], prev = v, k
	}
	return m, len(b) == 0
}

func FuzzEncodeContext(f *testing.F) {
	f.Add("a", "bc", "ab", "c")
	f.Add("", "", "k", "")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		ec := map[string]string{k1: v1, k2: v2}
		enc := EncodeContext(ec)
		dec, ok := decodeContext(enc)
		if !ok || len(dec) != len(ec) {
			t.Fatalf("encoding of %q does not decode: %x", ec, enc)
		}
		for k, v := range ec {
			if dv, ok := dec[k]; !ok || dv != v {
				t.Fatalf("decoded %q, want %q", dec, ec)
			}
		}
	})
}
