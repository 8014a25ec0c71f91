package blob

import (
	"encoding/binary"
	"math"
	"slices"
)

// EncodeContext returns the canonical encoding of an encryption context:
//
//	u32 number of pairs
//	for each pair, in increasing bytewise order of the key:
//	    u32 key length, key bytes, u32 value length, value bytes
//
// with every u32 big-endian. The encoding depends only on the set of pairs,
// not on map iteration order, and distinct contexts always have distinct
// encodings. A nil and an empty map both encode as four zero bytes. Keys
// and values are encoded as the bytes they hold; checking them against the
// AWS KMS rules (UTF-8, size limits) is the caller's job.
//
// EncodeContext panics if a key or value is longer than math.MaxUint32
// bytes, or if the map has more than math.MaxUint32 pairs.
func EncodeContext(ec map[string]string) []byte {
	return AppendContext(make([]byte, 0, contextLen(ec)), ec)
}

// AppendContext appends the canonical encoding of ec (see EncodeContext)
// to dst and returns the extended slice. It grows dst at most once.
func AppendContext(dst []byte, ec map[string]string) []byte {
	dst = slices.Grow(dst, contextLen(ec))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(ec)))
	switch len(ec) {
	case 0:
		return dst
	case 1:
		for k, v := range ec {
			dst = appendPair(dst, k, v)
		}
		return dst
	}
	// Sort the keys in a stack buffer when the context is small, which is
	// the common case; Go compares strings bytewise.
	var stack [16]string
	keys := stack[:0]
	if len(ec) > len(stack) {
		keys = make([]string, 0, len(ec))
	}
	for k := range ec {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		dst = appendPair(dst, k, ec[k])
	}
	return dst
}

// appendPair appends one length-prefixed key and value.
func appendPair(dst []byte, k, v string) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(k)))
	dst = append(dst, k...)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(v)))
	return append(dst, v...)
}

// contextLen returns the length of the canonical encoding of ec. It panics
// if a length does not fit the u32 prefixes, so that AppendContext never
// writes a truncated length.
func contextLen(ec map[string]string) int {
	if uint64(len(ec)) > math.MaxUint32 {
		panic("blob: encryption context has too many pairs")
	}
	n := 4
	for k, v := range ec {
		if uint64(len(k)) > math.MaxUint32 || uint64(len(v)) > math.MaxUint32 {
			panic("blob: encryption context key or value too long")
		}
		n += 8 + len(k) + len(v)
	}
	return n
}
