package blob

import "errors"

// keyIDStrLen is the length of a canonical key id string.
const keyIDStrLen = 36

// dash reports whether position i of a canonical UUID string holds a dash.
func dash(i int) bool { return i == 8 || i == 13 || i == 18 || i == 23 }

// ParseKeyID converts a key id in canonical form, a lowercase RFC 4122
// UUID string such as "1234abcd-12ab-34cd-56ef-1234567890ab", to the 16 raw
// bytes stored in a blob header. It accepts only that exact 36-character
// form: no uppercase hex digits, no braces, no "urn:uuid:" prefix, no
// missing dashes. It does not check the UUID's version or variant bits.
func ParseKeyID(s string) ([16]byte, error) {
	var id [16]byte
	if len(s) != keyIDStrLen {
		return id, errors.New("blob: key id must be 36 characters")
	}
	j := 0
	for i := 0; i < keyIDStrLen; i++ {
		if dash(i) {
			if s[i] != '-' {
				return [16]byte{}, errors.New("blob: key id has no dash where one is required")
			}
			continue
		}
		hi, ok1 := lowerHex(s[i])
		lo, ok2 := lowerHex(s[i+1])
		if !ok1 || !ok2 {
			return [16]byte{}, errors.New("blob: key id must be lowercase hexadecimal")
		}
		id[j] = hi<<4 | lo
		j++
		i++
	}
	return id, nil
}

// FormatKeyID returns the canonical lowercase 36-character string form of a
// raw key id. ParseKeyID(FormatKeyID(id)) returns id.
func FormatKeyID(id [16]byte) string {
	const digits = "0123456789abcdef"
	var buf [keyIDStrLen]byte
	j := 0
	for i := 0; i < keyIDStrLen; i++ {
		if dash(i) {
			buf[i] = '-'
			continue
		}
		buf[i] = digits[id[j]>>4]
		buf[i+1] = digits[id[j]&0x0f]
		j++
		i++
	}
	return string(buf[:])
}

// lowerHex decodes one lowercase hexadecimal digit.
func lowerHex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
