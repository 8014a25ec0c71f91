package hsm

import (
	"crypto"
	"crypto/subtle"
	"encoding/binary"
	"sync/atomic"

	"github.com/miekg/pkcs11"
)

// errOAEP is the one error every undecryptable RSA ciphertext gets, whatever
// was wrong with it: a padding oracle needs the answers to differ.
var errOAEP = &Error{Op: "decrypt", Kind: ErrInvalidCiphertext}

// oaepMode records, per hash, whether the token decrypts RSA-OAEP with that
// hash itself: unknown until the first decryption tries.
type oaepMode struct{ native, raw atomic.Bool }

// DecryptOAEP decrypts an RSAES-OAEP ciphertext (MGF1 over hash h, empty
// label) with r's private key in the token. Where the token has the
// mechanism for h it decrypts natively; otherwise (SoftHSM2 2.6.1 has OAEP
// with SHA-1 only) the token does the raw RSA operation (CKM_RSA_X_509) and
// the padding is removed here in constant time. Any failure to decrypt is the
// same ErrInvalidCiphertext. The caller owns the plaintext and must zero it.
func (s *Session) DecryptOAEP(r KeyRef, h crypto.Hash, ciphertext []byte) (_ []byte, err error) {
	m, ok := hashMechs[h]
	if !ok || (h != crypto.SHA1 && h != crypto.SHA256) {
		return nil, &Error{Op: "decrypt", Kind: ErrInvalidInput}
	}
	e, err := s.handle(r, pkcs11.CKO_PRIVATE_KEY)
	if err != nil {
		return nil, err
	}
	if len(ciphertext) != e.size || e.size < 2*h.Size()+2 {
		return nil, errOAEP
	}
	defer s.t.observe(callDecrypt, s.t.clock(), &err)
	mode := &s.t.oaep[0]
	if h == crypto.SHA256 {
		mode = &s.t.oaep[1]
	}
	c := s.calls()
	if !mode.raw.Load() {
		params := pkcs11.NewOAEPParams(m.digest, m.mgf, pkcs11.CKZ_DATA_SPECIFIED, nil)
		err := c.DecryptInit(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_OAEP, params)}, e.use)
		switch code := ckr(err); {
		case err == nil:
			mode.native.Store(true)
			pt, err := c.Decrypt(s.h, ciphertext)
			if err != nil {
				return nil, decryptFailure(err)
			}
			return pt, nil
		case !mode.native.Load() && (code == pkcs11.CKR_ARGUMENTS_BAD || code == pkcs11.CKR_MECHANISM_PARAM_INVALID ||
			code == pkcs11.CKR_MECHANISM_INVALID):
			// The token lacks the mechanism for this hash: decode here.
			mode.raw.Store(true)
		default:
			return nil, translate("C_DecryptInit", err, false)
		}
	}
	if err := c.DecryptInit(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_X_509, nil)}, e.use); err != nil {
		return nil, translate("C_DecryptInit", err, false)
	}
	em, err := c.Decrypt(s.h, ciphertext)
	if err != nil {
		return nil, decryptFailure(err)
	}
	defer clear(em)
	if len(em) > e.size {
		return nil, errOAEP
	}
	full := make([]byte, e.size) // the token may drop leading zero bytes
	defer clear(full)
	copy(full[e.size-len(em):], em)
	return decodeOAEP(h, full)
}

// decryptFailure maps a failed C_Decrypt of an RSA ciphertext. Whatever code
// the token gives for a ciphertext it cannot decrypt (SoftHSM2 says
// CKR_GENERAL_ERROR; others may say ENCRYPTED_DATA_INVALID, DATA_INVALID, …)
// becomes the one errOAEP: a code that varied with the padding would be an
// oracle. Only failures of the session, login or handle, which depend on no
// ciphertext, keep their own kind so Do can repair them.
func decryptFailure(err error) error {
	if sessionBroken(err) || needsRecovery(err) || handleStale(err) {
		return translate("C_Decrypt", err, false)
	}
	return errOAEP
}

// decodeOAEP removes EME-OAEP padding (RFC 8017, section 7.1.2, step 3) with
// an empty label. It runs in constant time in everything but the length of
// em: every check is folded into one flag with crypto/subtle, and the flag is
// looked at once, at the end. The caller zeroes em.
func decodeOAEP(h crypto.Hash, em []byte) ([]byte, error) {
	hLen := h.Size()
	if len(em) < 2*hLen+2 {
		return nil, errOAEP
	}
	lHash := h.New().Sum(nil)
	seed := make([]byte, hLen)
	db := make([]byte, len(em)-hLen-1)
	defer clear(seed)
	defer clear(db)
	copy(seed, em[1:1+hLen])
	copy(db, em[1+hLen:])
	mgf1XOR(seed, h, db)
	mgf1XOR(db, h, seed)

	good := subtle.ConstantTimeByteEq(em[0], 0)
	good &= subtle.ConstantTimeCompare(db[:hLen], lHash)

	// DB = lHash || PS (zero bytes) || 0x01 || M. Find the 0x01, and note any
	// byte before it that is not zero, without branching on either.
	rest := db[hLen:]
	searching, index, bad := 1, 0, 0
	for i, b := range rest {
		zero := subtle.ConstantTimeByteEq(b, 0)
		one := subtle.ConstantTimeByteEq(b, 1)
		index = subtle.ConstantTimeSelect(searching&one, i, index)
		bad |= searching &^ one &^ zero
		searching &^= one
	}
	good &= 1 &^ (bad | searching)
	if good != 1 {
		return nil, errOAEP
	}
	msg := make([]byte, len(rest)-index-1)
	copy(msg, rest[index+1:])
	return msg, nil
}

// mgf1XOR xors out with MGF1(seed) over hash h (RFC 8017, appendix B.2.1).
func mgf1XOR(out []byte, h crypto.Hash, seed []byte) {
	d := h.New()
	var counter [4]byte
	var block []byte
	for done, n := 0, uint32(0); done < len(out); n++ {
		binary.BigEndian.PutUint32(counter[:], n)
		d.Reset()
		d.Write(seed)
		d.Write(counter[:])
		block = d.Sum(block[:0])
		done += subtle.XORBytes(out[done:], out[done:], block)
	}
	clear(block)
}
