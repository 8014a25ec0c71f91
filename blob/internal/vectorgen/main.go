// Command vectorgen writes the blob format v1 test vectors in
// blob/testdata/vectors. Run it with `go generate ./blob` from the module
// root. Its output is deterministic: a fixed test AES-256 key, fixed key
// ids, fixed IVs and fixed plaintexts, sealed with software AES-GCM from the
// standard library. The keys here are test keys only.
//
// On purpose, vectorgen does not import package blob: it frames blobs and
// encodes encryption contexts with its own small implementation written
// from SPEC.md, so the vectors check package blob against an independent
// reading of the spec instead of against itself. TestCommittedVectors in
// this directory fails if the committed files differ from its output.
package main

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Outcomes, as written on the "outcome:" line.
const (
	outcomeSuccess     = "success"
	outcomeParse       = "parse failure"
	outcomeUnsupported = "unsupported version"
	outcomeAuth        = "auth failure"
)

// fileExt is the extension of every vector file; other files in the
// directory (such as README.md) are left alone.
const fileExt = ".txt"

// vector is one test vector, written to <name>.txt.
type vector struct {
	name      string
	comment   string
	outcome   string
	key       []byte
	context   map[string]string
	plaintext []byte // only for outcomeSuccess
	blob      []byte
}

// Fixed test keys: SHA-256 of a label, so they are obviously not secrets.
var (
	testKey  = sha256Sum("hsmkms blob format v1 test vector key")
	wrongKey = sha256Sum("hsmkms blob format v1 test vector wrong key")
)

func sha256Sum(s string) []byte {
	sum := sha256.Sum256([]byte(s))
	return sum[:]
}

// Fixed key ids (canonical lowercase UUIDs).
const (
	keyA = "1234abcd-12ab-34cd-56ef-1234567890ab"
	keyB = "0f8e4c2a-9b71-4d3e-a5f6-7c8d9e0a1b2c"
)

// rawKeyID turns a canonical UUID string into its 16 raw bytes.
func rawKeyID(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != 16 {
		panic("vectorgen: bad key id " + s)
	}
	return b
}

// iv returns a fixed, distinct 12-byte IV for each n.
func iv(n byte) []byte {
	return []byte{0x69, 0x76, 0x2d, 0x76, 0x31, 0x2d, 0x74, 0x65, 0x73, 0x74, 0x00, n}
}

// pattern returns n deterministic plaintext bytes.
func pattern(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = seed + byte(i*31) + byte(i>>8)
	}
	return p
}

// header frames a v1 header: version || key id || u32 BE key version || IV.
func header(version byte, keyID string, keyVersion uint32, ivb []byte) []byte {
	h := []byte{version}
	h = append(h, rawKeyID(keyID)...)
	h = binary.BigEndian.AppendUint32(h, keyVersion)
	h = append(h, ivb...)
	if len(h) != 33 {
		panic("vectorgen: bad header length")
	}
	return h
}

// encodeContext is the canonical context encoding of SPEC.md.
func encodeContext(ec map[string]string) []byte {
	keys := make([]string, 0, len(ec))
	for k := range ec {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := binary.BigEndian.AppendUint32(nil, uint32(len(keys)))
	for _, k := range keys {
		out = binary.BigEndian.AppendUint32(out, uint32(len(k)))
		out = append(out, k...)
		out = binary.BigEndian.AppendUint32(out, uint32(len(ec[k])))
		out = append(out, ec[k]...)
	}
	return out
}

// seal builds a blob: header || AES-256-GCM(key, IV, plaintext, AAD) where
// AAD = header || encodeContext(ec). The version and key version are
// framed as given, so seal can build blobs that are invalid on purpose.
func seal(key []byte, version byte, keyID string, keyVersion uint32, ivb []byte, ec map[string]string, plaintext []byte) []byte {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	h := header(version, keyID, keyVersion, ivb)
	aad := append(append([]byte(nil), h...), encodeContext(ec)...)
	return gcm.Seal(h, ivb, plaintext, aad)
}

// modify returns a copy of b with f applied.
func modify(b []byte, f func(c []byte) []byte) []byte {
	return f(append([]byte(nil), b...))
}

// flip returns a copy of b with bit `bit` of byte i inverted.
func flip(b []byte, i int, bit uint) []byte {
	return modify(b, func(c []byte) []byte { c[i] ^= 1 << bit; return c })
}

// generate returns every vector, sorted by name.
func generate() []vector {
	ctx1 := map[string]string{"purpose": "test-vector"}
	ctxMulti := map[string]string{
		"Department":  "Finance",
		"Project":     "Alpha",
		"aws:ebs:id":  "vol-0123456789abcdef0",
		"a":           "",
		"ab":          "b",
		"région":      "Île-de-France",
		"with spaces": "value, with = punctuation",
	}
	ctx2 := map[string]string{"k1": "v1", "k2": "v2"}

	ptMin := []byte{0x2a}
	ptMax := pattern(4096, 7)
	pt := []byte("The quick brown fox jumps over the lazy dog")

	minBlob := seal(testKey, 0x01, keyA, 1, iv(1), ctx1, ptMin)
	maxBlob := seal(testKey, 0x01, keyA, 1, iv(2), ctx1, ptMax)
	multiBlob := seal(testKey, 0x01, keyB, 7, iv(3), ctxMulti, pt)
	emptyBlob := seal(testKey, 0x01, keyA, 2, iv(4), map[string]string{}, pt)
	kvMaxBlob := seal(testKey, 0x01, keyB, 0xffffffff, iv(5), nil, pt)
	ctx2Blob := seal(testKey, 0x01, keyA, 3, iv(6), ctx2, pt)
	abcBlob := seal(testKey, 0x01, keyA, 1, iv(7), map[string]string{"a": "bc"}, pt)

	setVersion := func(b []byte, v byte) []byte {
		return modify(b, func(c []byte) []byte { c[0] = v; return c })
	}
	empty := map[string]string{}

	vs := []vector{
		// Valid blobs.
		{name: "success-min-plaintext", comment: "smallest valid blob: 1-byte plaintext, 50 bytes in all",
			outcome: outcomeSuccess, context: ctx1, plaintext: ptMin, blob: minBlob},
		{name: "success-max-plaintext", comment: "largest valid blob: 4096-byte plaintext, 4145 bytes in all",
			outcome: outcomeSuccess, context: ctx1, plaintext: ptMax, blob: maxBlob},
		{name: "success-multi-pair-context", comment: "context with several pairs, one key a prefix of another, an empty value, non-ASCII UTF-8",
			outcome: outcomeSuccess, context: ctxMulti, plaintext: pt, blob: multiBlob},
		{name: "success-empty-context", comment: "empty encryption context (encodes as four zero bytes, same as nil)",
			outcome: outcomeSuccess, context: empty, plaintext: pt, blob: emptyBlob},
		{name: "success-key-version-max", comment: "key version 0xffffffff, empty context",
			outcome: outcomeSuccess, context: empty, plaintext: pt, blob: kvMaxBlob},
		{name: "success-two-pair-context", comment: "two-pair context, key version 3",
			outcome: outcomeSuccess, context: ctx2, plaintext: pt, blob: ctx2Blob},

		// Framing errors.
		{name: "parse-empty", comment: "zero-length blob",
			outcome: outcomeParse, context: empty, blob: []byte{}},
		{name: "parse-truncated-header", comment: "first 20 bytes of a valid blob: header cut short",
			outcome: outcomeParse, context: ctx1, blob: minBlob[:20]},
		{name: "parse-header-only", comment: "33-byte header with no ciphertext or tag",
			outcome: outcomeParse, context: ctx1, blob: minBlob[:33]},
		{name: "parse-49-bytes", comment: "correctly sealed empty plaintext: 49 bytes, one short of the minimum",
			outcome: outcomeParse, context: ctx1, blob: seal(testKey, 0x01, keyA, 1, iv(8), ctx1, nil)},
		{name: "parse-4146-bytes", comment: "correctly sealed 4097-byte plaintext: one byte over the maximum",
			outcome: outcomeParse, context: ctx1, blob: seal(testKey, 0x01, keyA, 1, iv(9), ctx1, pattern(4097, 9))},
		{name: "parse-key-version-0", comment: "correctly sealed blob whose header says key version 0",
			outcome: outcomeParse, context: ctx1, blob: seal(testKey, 0x01, keyA, 0, iv(10), ctx1, pt)},

		// Unknown versions.
		{name: "unsupported-version-00", comment: "valid blob with version byte 0x00",
			outcome: outcomeUnsupported, context: ctx1, blob: setVersion(minBlob, 0x00)},
		{name: "unsupported-version-02", comment: "valid blob with version byte 0x02",
			outcome: outcomeUnsupported, context: ctx1, blob: setVersion(minBlob, 0x02)},
		{name: "unsupported-version-ff", comment: "valid blob with version byte 0xff",
			outcome: outcomeUnsupported, context: ctx1, blob: setVersion(minBlob, 0xff)},
		{name: "unsupported-version-02-short", comment: "the single byte 0x02: the version is checked before the length",
			outcome: outcomeUnsupported, context: empty, blob: []byte{0x02}},

		// Well-framed blobs that AES-GCM must reject.
		{name: "auth-flipped-ciphertext-bit", comment: "bit 0 of the first ciphertext byte flipped",
			outcome: outcomeAuth, context: ctx2, blob: flip(ctx2Blob, 33, 0)},
		{name: "auth-flipped-tag-bit", comment: "bit 7 of the last tag byte flipped",
			outcome: outcomeAuth, context: ctx2, blob: flip(ctx2Blob, len(ctx2Blob)-1, 7)},
		{name: "auth-flipped-key-id-byte", comment: "all bits of the last key id byte flipped",
			outcome: outcomeAuth, context: ctx2, blob: modify(ctx2Blob, func(c []byte) []byte { c[16] ^= 0xff; return c })},
		{name: "auth-flipped-key-version", comment: "key version changed from 3 to 1 (still valid framing)",
			outcome: outcomeAuth, context: ctx2, blob: flip(ctx2Blob, 20, 1)},
		{name: "auth-flipped-iv-bit", comment: "bit 3 of the first IV byte flipped",
			outcome: outcomeAuth, context: ctx2, blob: flip(ctx2Blob, 21, 3)},
		{name: "auth-truncated-ciphertext", comment: "last byte dropped (still at least 50 bytes)",
			outcome: outcomeAuth, context: ctx2, blob: ctx2Blob[:len(ctx2Blob)-1]},
		{name: "auth-wrong-key", comment: "opened with a different AES key",
			outcome: outcomeAuth, key: wrongKey, context: ctx2, blob: ctx2Blob},
		{name: "auth-wrong-context-value", comment: "sealed with k2=v2, opened with k2=v3",
			outcome: outcomeAuth, context: map[string]string{"k1": "v1", "k2": "v3"}, blob: ctx2Blob},
		{name: "auth-context-pair-missing", comment: "sealed with k1 and k2, opened with k1 only",
			outcome: outcomeAuth, context: map[string]string{"k1": "v1"}, blob: ctx2Blob},
		{name: "auth-context-extra-pair", comment: "sealed with k1 and k2, opened with an extra k3",
			outcome: outcomeAuth, context: map[string]string{"k1": "v1", "k2": "v2", "k3": "v3"}, blob: ctx2Blob},
		{name: "auth-context-values-swapped", comment: "sealed with k1=v1,k2=v2, opened with k1=v2,k2=v1",
			outcome: outcomeAuth, context: map[string]string{"k1": "v2", "k2": "v1"}, blob: ctx2Blob},
		{name: "auth-context-boundary-shift", comment: "sealed with a=bc, opened with ab=c (same concatenated bytes)",
			outcome: outcomeAuth, context: map[string]string{"ab": "c"}, blob: abcBlob},
		{name: "auth-context-empty-vs-empty-pair", comment: "sealed with the empty context, opened with one pair of empty key and value",
			outcome: outcomeAuth, context: map[string]string{"": ""}, blob: emptyBlob},
		{name: "auth-context-for-empty", comment: "sealed with k1,k2, opened with the empty context",
			outcome: outcomeAuth, context: empty, blob: ctx2Blob},
	}
	for i := range vs {
		if vs[i].key == nil {
			vs[i].key = testKey
		}
	}
	sort.Slice(vs, func(i, j int) bool { return vs[i].name < vs[j].name })
	return vs
}

// format renders a vector in the line format described in SPEC.md.
func format(v vector) []byte {
	ctx, err := json.Marshal(v.context) // keys come out sorted
	if err != nil {
		panic(err)
	}
	var buf bytes.Buffer
	buf.WriteString("# blob format v1 test vector. Generated by blob/internal/vectorgen; do not edit.\n")
	line := func(field, value string) {
		if value == "" {
			fmt.Fprintf(&buf, "%s:\n", field)
		} else {
			fmt.Fprintf(&buf, "%s: %s\n", field, value)
		}
	}
	line("comment", v.comment)
	line("outcome", v.outcome)
	line("key", hex.EncodeToString(v.key))
	line("context", string(ctx))
	if v.outcome == outcomeSuccess {
		line("plaintext", hex.EncodeToString(v.plaintext))
	}
	line("blob", hex.EncodeToString(v.blob))
	return buf.Bytes()
}

// files returns the generated file contents keyed by file name.
func files() map[string][]byte {
	out := make(map[string][]byte)
	for _, v := range generate() {
		out[v.name+fileExt] = format(v)
	}
	return out
}

func main() {
	dir := flag.String("out", "", "directory to write the vector files to (required)")
	flag.Parse()
	if *dir == "" {
		log.Fatal("vectorgen: -out is required")
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		log.Fatal(err)
	}
	// Remove stale vectors so the directory holds exactly the generated set.
	old, err := filepath.Glob(filepath.Join(*dir, "*"+fileExt))
	if err != nil {
		log.Fatal(err)
	}
	for _, f := range old {
		if err := os.Remove(f); err != nil {
			log.Fatal(err)
		}
	}
	fs := files()
	names := make([]string, 0, len(fs))
	for n := range fs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(*dir, n), fs[n], 0o644); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Printf("vectorgen: wrote %d vectors to %s\n", len(names), *dir)
}
