package service

import (
	"context"
	"crypto"
	"crypto/hmac"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/service/store"
)

// markerRef names the token's marker key: an HMAC-SHA-256 key that
// authenticates pagination markers and grant tokens, and nothing else. It is
// a token object like every key's material, used through C_Sign, so reading
// the metadata store (or its backups) does not let anyone forge a marker or
// a grant token. Its id is not a version-4 UUID, so no KMS key can have it.
var markerRef = hsm.KeyRef{KeyID: [16]byte{'h', 's', 'm', 'k', 'm', 's', '-', 'm', 'a', 'r', 'k', 'e', 'r', 'm', 'a', 'c'}, Version: 1}

// legacyMarkerSetting is where markers' key was kept, in clear, in the
// store. It is deleted at start; markers and grant tokens made with it no
// longer open.
const legacyMarkerSetting = "marker-hmac-key"

// markers makes the pagination markers of the List operations and grant
// tokens: opaque to clients, and authenticated, so a forged or altered marker
// is an InvalidMarkerException rather than a position the caller chose. The
// key is in the token (markerRef), so every node and every restart accept the
// markers of the others.
type markers struct{ token *hsm.Token }

const markerTagLen = 16

// initMarkers makes sure the token holds the marker key, and removes the key
// an earlier version kept in the store.
func initMarkers(ctx context.Context, tok *hsm.Token, st store.Store) (markers, error) {
	if err := tok.GenerateHMACKey(ctx, markerRef, 32); err != nil && !errors.Is(err, hsm.ErrExists) {
		return markers{}, fmt.Errorf("marker key: %w", err)
	}
	if err := st.DeleteSetting(ctx, legacyMarkerSetting); err != nil && !errors.Is(err, store.ErrNotFound) {
		return markers{}, fmt.Errorf("remove the marker key kept in the store: %w", err)
	}
	return markers{token: tok}, nil
}

func (m markers) tag(ctx context.Context, kind, pos string) ([]byte, error) {
	msg := make([]byte, 0, len(kind)+1+len(pos))
	msg = append(append(append(msg, kind...), 0), pos...)
	var mac []byte
	err := m.token.Do(ctx, func(s *hsm.Session) error {
		var err error
		mac, err = s.MAC(markerRef, crypto.SHA256, msg)
		return err
	})
	if err != nil {
		return nil, fromTokenNoKey(err)
	}
	return mac[:markerTagLen], nil
}

// seal returns the marker for resuming a listing of kind after pos.
func (m markers) seal(ctx context.Context, kind, pos string) (string, error) {
	tag, err := m.tag(ctx, kind, pos)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(append([]byte(pos), tag...)), nil
}

var errBadMarker = errors.New("marker does not verify")

// open returns the position a marker of kind names: errBadMarker if it does
// not verify, a token failure (an *Error) if it could not be checked.
func (m markers) open(ctx context.Context, kind, marker string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimSpace(marker))
	if err != nil || len(b) < markerTagLen {
		return "", errBadMarker
	}
	pos, tag := string(b[:len(b)-markerTagLen]), b[len(b)-markerTagLen:]
	want, err := m.tag(ctx, kind, pos)
	if err != nil {
		return "", err
	}
	if !hmac.Equal(tag, want) {
		return "", errBadMarker
	}
	return pos, nil
}

// openMarker opens a List operation's marker: InvalidMarkerException if it
// does not verify.
func (s *Service) openMarker(ctx context.Context, kind, marker string) (string, error) {
	pos, err := s.markers.open(ctx, kind, marker)
	if errors.Is(err, errBadMarker) {
		return "", Errorf(ExcInvalidMarker, "Invalid marker")
	}
	return pos, err
}
