package service

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
)

// markers makes the pagination markers of the List operations: opaque to
// clients, and authenticated, so a forged or altered marker is an
// InvalidMarkerException rather than a position the caller chose. The key is
// a service setting in the store, so every node and every restart accept the
// markers of the others.
type markers struct{ key []byte }

const markerTagLen = 16

func (m markers) tag(kind, pos string) []byte {
	h := hmac.New(sha256.New, m.key)
	h.Write([]byte(kind))
	h.Write([]byte{0})
	h.Write([]byte(pos))
	return h.Sum(nil)[:markerTagLen]
}

// seal returns the marker for resuming a listing of kind after pos.
func (m markers) seal(kind, pos string) string {
	b := append([]byte(pos), m.tag(kind, pos)...)
	return base64.RawURLEncoding.EncodeToString(b)
}

var errBadMarker = errors.New("marker does not verify")

// open returns the position a marker of kind names.
func (m markers) open(kind, marker string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimSpace(marker))
	if err != nil || len(b) < markerTagLen {
		return "", errBadMarker
	}
	pos, tag := string(b[:len(b)-markerTagLen]), b[len(b)-markerTagLen:]
	if !hmac.Equal(tag, m.tag(kind, pos)) {
		return "", errBadMarker
	}
	return pos, nil
}
