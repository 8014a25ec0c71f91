package sigv4

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestHMACSHA256MatchesCryptoHMAC(t *testing.T) {
	t.Parallel()
	msg := []byte("AWS4-HMAC-SHA256\n20261129T033000Z\n20261129/us-east-1/kms/aws4_request\nabc")
	for _, n := range []int{0, 1, 32, 63, 64, 65, 128, 300} {
		key := bytes.Repeat([]byte{byte(n + 1)}, n)
		mac := hmac.New(sha256.New, key)
		mac.Write(msg)
		want := mac.Sum(nil)

		var scratch []byte
		got := hmacSHA256(key, msg, &scratch)
		if !bytes.Equal(got[:], want) {
			t.Fatalf("key length %d: []byte message mismatch", n)
		}
		got = hmacSHA256(key, string(msg), &scratch)
		if !bytes.Equal(got[:], want) {
			t.Fatalf("key length %d: string message mismatch", n)
		}
	}
}

// TestDeriveSigningKeyKnownAnswer uses the example from the AWS SigV4
// documentation (secret wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY,
// 20120215/us-east-1/iam).
func TestDeriveSigningKeyKnownAnswer(t *testing.T) {
	t.Parallel()
	var scratch []byte
	got := deriveSigningKey([]byte("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"), "20120215", "us-east-1", "iam", &scratch)
	const want = "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
	if h := bytesToHex(got[:]); h != want {
		t.Fatalf("signing key = %s, want %s", h, want)
	}
}

func bytesToHex(b []byte) string {
	const digits = "0123456789abcdef"
	var sb strings.Builder
	for _, c := range b {
		sb.WriteByte(digits[c>>4])
		sb.WriteByte(digits[c&0xf])
	}
	return sb.String()
}

func TestSigningKeyCacheBounded(t *testing.T) {
	t.Parallel()
	v := &Verifier{Region: "us-east-1", Service: "kms"}
	w := workspacePool.Get().(*workspace)
	defer putWorkspace(w)
	for i := 0; i < 3*maxCacheEntries; i++ {
		id := "AKID" + strconv.Itoa(i)
		v.signingKey(w, Credential{AccessKeyID: id, Secret: []byte("s")}, "20261129")
		if n := len(v.cache); n > maxCacheEntries {
			t.Fatalf("cache grew to %d entries", n)
		}
	}
	// A hit returns the same key as a fresh derivation.
	cred := Credential{AccessKeyID: "AKIDX", Secret: []byte("secret")}
	k1 := v.signingKey(w, cred, "20261129")
	k2 := v.signingKey(w, cred, "20261129")
	var scratch []byte
	k3 := deriveSigningKey(cred.Secret, "20261129", "us-east-1", "kms", &scratch)
	if k1 != k2 || k1 != k3 {
		t.Fatal("cached signing key differs from derived key")
	}
}

func TestParseAmzDate(t *testing.T) {
	t.Parallel()
	good := map[string]time.Time{
		"20261129T033000Z": time.Date(2026, 11, 29, 3, 30, 0, 0, time.UTC),
		"20240229T235959Z": time.Date(2024, 2, 29, 23, 59, 59, 0, time.UTC),
	}
	for s, want := range good {
		got, ok := parseAmzDate(s)
		if !ok || !got.Equal(want) {
			t.Fatalf("parseAmzDate(%q) = %v, %v", s, got, ok)
		}
	}
	for _, s := range []string{
		"", "20261129T033000", "20261129T033000z", "2026-11-29T03:30:00Z", "20261329T033000Z",
		"20261100T033000Z", "20250229T033000Z", "20261129T243000Z", "20261129T036000Z",
		"20261129T033060Z", "2026112aT033000Z", "20261129 033000Z",
	} {
		if _, ok := parseAmzDate(s); ok {
			t.Fatalf("parseAmzDate(%q) accepted", s)
		}
	}
}

func TestAppendTrimmedValue(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":                  "",
		"a":                 "a",
		"  a  ":             "a",
		"a   b    c":        "a b c",
		"\t a  b \t":        "a b",
		"application/x-amz": "application/x-amz",
	} {
		if got := string(appendTrimmedValue(nil, in)); got != want {
			t.Fatalf("appendTrimmedValue(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCanonicalQuery(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":                       "",
		"b=2&a=1":                "a=1&b=2",
		"a=2&a=1&a=10":           "a=1&a=10&a=2",
		"q=a+b":                  "q=a%20b",
		"k=%2F%3D~-._&x":         "k=%2F%3D~-._&x=",
		"%C3%BC=%E2%82%AC":       "%C3%BC=%E2%82%AC",
		"Action=ListKeys&Limit=": "Action=ListKeys&Limit=",
	} {
		if got := string(appendCanonicalQuery(nil, in)); got != want {
			t.Fatalf("canonical query of %q = %q, want %q", in, got, want)
		}
	}
}

func TestURIEncodePath(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"/":          "/",
		"/a%20b/c~d": "/a%2520b/c~d",
		"/a b":       "/a%20b",
	} {
		if got := string(appendURIEncode(nil, in, false)); got != want {
			t.Fatalf("appendURIEncode(%q) = %q, want %q", in, got, want)
		}
	}
}
