package service

import (
	"context"
	"crypto"
	"crypto/hmac"
	"errors"
	"fmt"

	"github.com/hsmkms/hsmkms/hsm"
)

// sealRef names the token's record key: an HMAC-SHA-256 key that
// authenticates metadata records (keys, aliases, grants, AES-GCM counts)
// against whoever can write the store but not use the token — a DBA of the
// shared PostgreSQL, or anyone with the bbolt file. It is used through
// C_Sign and never leaves the token, and it is a key of its own: a record
// MAC can never be a marker or a grant token (markerRef), nor the reverse.
// Its id is not a version-4 UUID, so no KMS key can have it.
var sealRef = hsm.KeyRef{KeyID: [16]byte{'h', 's', 'm', 'k', 'm', 's', '-', 'r', 'e', 'c', 'o', 'r', 'd', 'm', 'a', 'c'}, Version: 1}

// sealTagLen is the length of a record MAC: all of HMAC-SHA-256, since a
// record MAC is kept for years and checked offline by anyone with the store.
const sealTagLen = 32

// errRecordTampered: a record's MAC does not verify: it was written by
// someone other than hsmkms, or altered since.
var errRecordTampered = errors.New("the record's MAC does not verify: it was not written by hsmkms, or was altered")

// sealer makes and checks record MACs in the token.
type sealer struct{ token *hsm.Token }

// initSealer makes sure the token holds the record key. created reports
// that it did not exist before: records in the store from before it are
// unsealed, and sealing them is an upgrade; once the key exists, a record
// without a valid MAC is refused, and nothing a store holds can make
// hsmkms seal it again (the key's existence is the token's, not the
// store's, to say).
func initSealer(ctx context.Context, tok *hsm.Token) (s sealer, created bool, err error) {
	switch err := tok.GenerateHMACKey(ctx, sealRef, 32); {
	case err == nil:
		created = true
	case errors.Is(err, hsm.ErrExists):
	default:
		return sealer{}, false, fmt.Errorf("record key: %w", err)
	}
	return sealer{token: tok}, created, nil
}

// mac is HMAC-SHA-256, in the token, over the record's kind, a zero byte
// and its bytes as stored. The kind keeps a key record's MAC from passing
// for an alias's or a grant's.
func (s sealer) mac(ctx context.Context, kind string, record []byte) ([]byte, error) {
	msg := make([]byte, 0, len(kind)+1+len(record))
	msg = append(append(append(msg, kind...), 0), record...)
	var tag []byte
	err := s.token.Do(ctx, func(sess *hsm.Session) error {
		var err error
		tag, err = sess.MAC(sealRef, crypto.SHA256, msg)
		return err
	})
	if err != nil {
		return nil, fromTokenNoKey(err)
	}
	if len(tag) != sealTagLen {
		return nil, internal(fmt.Errorf("record MAC of %d bytes", len(tag)))
	}
	return tag, nil
}

// Seal returns the MAC of a record of kind, encoded as stored.
func (s sealer) Seal(ctx context.Context, kind string, record []byte) ([]byte, error) {
	return s.mac(ctx, kind, record)
}

// Verify returns nil if mac is the MAC of the record, errRecordTampered if
// it is not, or the token's failure if it could not be checked. The
// comparison takes the same time wherever the MACs differ.
func (s sealer) Verify(ctx context.Context, kind string, record, mac []byte) error {
	want, err := s.mac(ctx, kind, record)
	if err != nil {
		return err
	}
	if !hmac.Equal(mac, want) {
		return errRecordTampered
	}
	return nil
}
