package blob

import (
	"strings"
	"testing"
)

func TestKeyIDRoundTrip(t *testing.T) {
	for _, s := range []string{
		"1234abcd-12ab-34cd-56ef-1234567890ab",
		"00000000-0000-0000-0000-000000000000",
		"ffffffff-ffff-ffff-ffff-ffffffffffff",
		"0f8e4c2a-9b71-4d3e-a5f6-7c8d9e0a1b2c",
	} {
		id, err := ParseKeyID(s)
		if err != nil {
			t.Fatalf("ParseKeyID(%q): %v", s, err)
		}
		if got := FormatKeyID(id); got != s {
			t.Fatalf("FormatKeyID(ParseKeyID(%q)) = %q", s, got)
		}
	}
	id, _ := ParseKeyID("1234abcd-12ab-34cd-56ef-1234567890ab")
	want := [16]byte{0x12, 0x34, 0xab, 0xcd, 0x12, 0xab, 0x34, 0xcd, 0x56, 0xef, 0x12, 0x34, 0x56, 0x78, 0x90, 0xab}
	if id != want {
		t.Fatalf("ParseKeyID = %x, want %x", id, want)
	}
	var all [16]byte
	for i := range all {
		all[i] = byte(i * 17)
	}
	back, err := ParseKeyID(FormatKeyID(all))
	if err != nil || back != all {
		t.Fatalf("round trip of %x: %x, %v", all, back, err)
	}
}

func TestParseKeyIDRejects(t *testing.T) {
	for _, s := range []string{
		"",
		"1234ABCD-12AB-34CD-56EF-1234567890AB",  // uppercase
		"1234abcd-12ab-34cd-56ef-1234567890aB",  // one uppercase digit
		"1234abcd12ab34cd56ef1234567890ab",      // no dashes
		"1234abcd-12ab-34cd-56ef1234567890ab0",  // dash missing, length kept
		"1234abcd-12ab-34cd-56ef-1234567890a",   // too short
		"1234abcd-12ab-34cd-56ef-1234567890abc", // too long
		"{1234abcd-12ab-34cd-56ef-1234567890ab}",
		"urn:uuid:1234abcd-12ab-34cd-56ef-1234567890ab",
		"1234abcd_12ab_34cd_56ef_1234567890ab", // wrong separator
		"1234abc-d12ab-34cd-56ef-1234567890ab", // dash in wrong place
		"1234abcg-12ab-34cd-56ef-1234567890ab", // not hex
		" 234abcd-12ab-34cd-56ef-1234567890ab",
		"alias/my-key-alias-name-012345678901",
		"arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
		strings.Repeat("-", 36),
	} {
		if id, err := ParseKeyID(s); err == nil {
			t.Errorf("ParseKeyID(%q) = %x, want error", s, id)
		} else if id != ([16]byte{}) {
			t.Errorf("ParseKeyID(%q) returned non-zero id with error", s)
		}
	}
}

func FuzzKeyID(f *testing.F) {
	f.Add("1234abcd-12ab-34cd-56ef-1234567890ab")
	f.Add("1234ABCD-12ab-34cd-56ef-1234567890ab")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseKeyID(s)
		if err != nil {
			return
		}
		if FormatKeyID(id) != s {
			t.Fatalf("accepted non-canonical %q", s)
		}
	})
}
