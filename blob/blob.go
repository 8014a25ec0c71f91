// Package blob owns the symmetric ciphertext blob format (version 1) and
// the canonical encoding of an AWS KMS encryption context into AES-GCM
// additional authenticated data (AAD).
//
// A blob is the opaque CiphertextBlob that Encrypt returns and Decrypt
// accepts: a fixed 33-byte header (version, key id, key version, IV)
// followed by the AES-256-GCM ciphertext and its 16-byte tag. The AAD
// passed to AES-GCM is the 33 header bytes followed by the canonical
// encoding of the encryption context (see EncodeContext). The format is
// specified in SPEC.md in this directory.
//
// This package only frames bytes. It is pure: it performs no I/O, uses no
// randomness and never sees key material; the IV is chosen by the caller and
// the AES-GCM operation itself runs elsewhere (in the HSM). To stay that
// way, package blob must not import anything from this project or from
// outside the Go standard library.
package blob

//go:generate go run ./internal/vectorgen -out testdata/vectors

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Format constants for blob format version 1.
const (
	// Version1 is the value of byte 0 of every version 1 blob.
	Version1 byte = 0x01

	// KeyIDLen is the length of the raw key id (a UUID) in the header.
	KeyIDLen = 16

	// IVLen is the length of the AES-GCM IV (nonce) in the header.
	IVLen = 12

	// TagLen is the length of the AES-GCM authentication tag that ends
	// every blob.
	TagLen = 16

	// HeaderLen is the length of the version 1 header:
	// version (1) || key id (16) || key version (4) || IV (12).
	HeaderLen = 1 + KeyIDLen + 4 + IVLen

	// MaxPlaintextLen is the largest plaintext a blob may carry (the AWS
	// KMS Encrypt limit). The smallest is 1 byte.
	MaxPlaintextLen = 4096

	// MinBlobLen is the length of the smallest valid blob: a header, a
	// 1-byte ciphertext and the tag.
	MinBlobLen = HeaderLen + 1 + TagLen

	// MaxBlobLen is the length of the largest valid blob: a header, a
	// MaxPlaintextLen-byte ciphertext and the tag.
	MaxBlobLen = HeaderLen + MaxPlaintextLen + TagLen
)

// Byte offsets of the header fields.
const (
	offKeyID      = 1
	offKeyVersion = offKeyID + KeyIDLen
	offIV         = offKeyVersion + 4
)

// ErrMalformed is wrapped by every error Parse returns for a blob whose
// version byte is Version1 (or which is empty) but which is not a valid
// version 1 blob: a length outside [MinBlobLen, MaxBlobLen] or a key
// version of 0.
var ErrMalformed = errors.New("blob: malformed ciphertext blob")

// ErrUnsupportedVersion is wrapped by the error Parse returns for a
// non-empty blob whose first byte is not Version1. It is distinct from
// ErrMalformed so that callers can tell a blob from a newer (or foreign)
// format from a damaged one.
var ErrUnsupportedVersion = errors.New("blob: unsupported ciphertext blob version")

// Header is the fixed-length part of a blob. All of its fields are
// authenticated: they form the first HeaderLen bytes of the AAD.
type Header struct {
	// Version is the format version; Version1 for every blob Parse accepts.
	Version byte
	// KeyID is the raw 16-byte UUID of the KMS key (see ParseKeyID and
	// FormatKeyID).
	KeyID [16]byte
	// KeyVersion is the version of the key material (>= 1) that encrypted
	// the blob.
	KeyVersion uint32
	// IV is the 96-bit AES-GCM nonce used to encrypt the blob.
	IV [12]byte
}

// Blob is a parsed ciphertext blob.
type Blob struct {
	Header
	// Ciphertext is the AES-GCM output: the encrypted plaintext followed by
	// the TagLen-byte authentication tag.
	Ciphertext []byte
}

// Parse strictly parses a version 1 blob. On success the returned Blob
// does not alias b. On failure it returns a nil *Blob and an error that
// wraps exactly one of ErrUnsupportedVersion (the first byte is not
// Version1) or ErrMalformed (anything else wrong). Parse never returns
// (nil, nil).
//
// Parse checks only the framing; whether the blob is authentic is decided
// by AES-GCM Open with the AAD from Header.AAD.
func Parse(b []byte) (*Blob, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrMalformed)
	}
	// The version is checked before the length: another version may well
	// have another layout, so its length says nothing about malformation.
	if b[0] != Version1 {
		return nil, fmt.Errorf("%w: 0x%02x", ErrUnsupportedVersion, b[0])
	}
	if len(b) < MinBlobLen {
		return nil, fmt.Errorf("%w: %d bytes, want at least %d", ErrMalformed, len(b), MinBlobLen)
	}
	if len(b) > MaxBlobLen {
		return nil, fmt.Errorf("%w: %d bytes, want at most %d", ErrMalformed, len(b), MaxBlobLen)
	}
	kv := binary.BigEndian.Uint32(b[offKeyVersion:])
	if kv == 0 {
		return nil, fmt.Errorf("%w: key version 0", ErrMalformed)
	}
	out := &Blob{
		Header: Header{
			Version:    b[0],
			KeyVersion: kv,
		},
		Ciphertext: append([]byte(nil), b[HeaderLen:]...),
	}
	copy(out.KeyID[:], b[offKeyID:offKeyVersion])
	copy(out.IV[:], b[offIV:HeaderLen])
	return out, nil
}

// Marshal returns the wire encoding of b: the header bytes followed by
// b.Ciphertext, in a newly allocated slice. It does not validate b; for any
// b returned by Parse, Parse(b.Marshal()) is equal to b and b.Marshal() is
// equal to the bytes that were parsed.
func (b *Blob) Marshal() []byte {
	out := make([]byte, 0, HeaderLen+len(b.Ciphertext))
	out = b.Header.AppendTo(out)
	return append(out, b.Ciphertext...)
}

// AppendTo appends the HeaderLen-byte encoding of h to dst and returns the
// extended slice. The fields are encoded as they are, without validation.
func (h *Header) AppendTo(dst []byte) []byte {
	dst = append(dst, h.Version)
	dst = append(dst, h.KeyID[:]...)
	dst = binary.BigEndian.AppendUint32(dst, h.KeyVersion)
	return append(dst, h.IV[:]...)
}

// AAD returns the AES-GCM additional authenticated data for a blob with
// header h encrypted under encryptionContext: the HeaderLen header bytes
// followed by EncodeContext(encryptionContext). It allocates a single slice
// of exactly the needed length. A nil and an empty encryption context give
// the same AAD.
func (h *Header) AAD(encryptionContext map[string]string) []byte {
	dst := make([]byte, 0, HeaderLen+contextLen(encryptionContext))
	dst = h.AppendTo(dst)
	return AppendContext(dst, encryptionContext)
}
