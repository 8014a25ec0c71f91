package hsm

import (
	"bytes"
	"context"
	"crypto"
	"math/big"
	"testing"
)

// craftEM builds an OAEP encoded message from its parts (RFC 8017, 7.1.1
// step 2) so that each can be broken on purpose: leading byte y, the label
// hash, the padding string, the separator and the message.
func craftEM(h crypto.Hash, k int, y byte, lHash, ps []byte, sep byte, msg []byte) []byte {
	hLen := h.Size()
	db := make([]byte, 0, k-hLen-1)
	db = append(db, lHash...)
	db = append(db, ps...)
	db = append(db, sep)
	db = append(db, msg...)
	if len(db) != k-hLen-1 {
		panic("craftEM: parts do not add up")
	}
	seed := bytes.Repeat([]byte{0x3c}, hLen)
	mgf1XOR(db, h, seed)
	mgf1XOR(seed, h, db)
	em := append([]byte{y}, seed...)
	return append(em, db...)
}

type oaepCase struct {
	name string
	em   []byte
	want []byte // nil: must be refused
}

func oaepCases(h crypto.Hash, k int) []oaepCase {
	hLen := h.Size()
	lHash := h.New().Sum(nil)
	msg := []byte("attack at dawn")
	ps := func(n int) []byte { return make([]byte, n) }
	psLen := k - 2*hLen - 2 - len(msg)
	wrongHash := bytes.Clone(lHash)
	wrongHash[hLen-1] ^= 1
	dirtyPS := ps(psLen)
	dirtyPS[psLen/2] = 0x07
	onePS := ps(psLen)
	onePS[0] = 0x02
	allZero := ps(k - 2*hLen - 1) // no separator anywhere
	return []oaepCase{
		{"valid", craftEM(h, k, 0, lHash, ps(psLen), 1, msg), msg},
		{"valid empty message", craftEM(h, k, 0, lHash, ps(k-2*hLen-2), 1, nil), []byte{}},
		{"valid longest message", craftEM(h, k, 0, lHash, nil, 1, bytes.Repeat([]byte{1}, k-2*hLen-2)), bytes.Repeat([]byte{1}, k-2*hLen-2)},
		{"leading byte not zero", craftEM(h, k, 1, lHash, ps(psLen), 1, msg), nil},
		{"wrong label hash", craftEM(h, k, 0, wrongHash, ps(psLen), 1, msg), nil},
		{"non-zero padding byte", craftEM(h, k, 0, lHash, dirtyPS, 1, msg), nil},
		{"padding starts with 0x02", craftEM(h, k, 0, lHash, onePS, 1, msg), nil},
		{"separator 0x02", craftEM(h, k, 0, lHash, ps(psLen), 2, msg), nil},
		{"separator 0x00", craftEM(h, k, 0, lHash, ps(psLen), 0, msg), nil},
		{"no separator", craftEM(h, k, 0, lHash, allZero[:len(allZero)-1], 0, nil), nil},
	}
}

// TestDecodeOAEPCrafted feeds the decoder encoded messages broken in each
// way the padding can be: every one is refused with the very same error
// value, so callers (and attackers) cannot tell the causes apart.
func TestDecodeOAEPCrafted(t *testing.T) {
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256} {
		for _, tc := range oaepCases(h, 256) {
			got, err := decodeOAEP(h, bytes.Clone(tc.em))
			if tc.want != nil {
				if err != nil || !bytes.Equal(got, tc.want) {
					t.Errorf("%v %s: got %q, %v", h, tc.name, got, err)
				}
				continue
			}
			if err != errOAEP || got != nil {
				t.Errorf("%v %s: got %q, %v; want nil and the one OAEP error", h, tc.name, got, err)
			}
		}
	}
	if _, err := decodeOAEP(crypto.SHA256, make([]byte, 2*32+1)); err != errOAEP {
		t.Errorf("too short: %v", err)
	}
}

// TestDecryptOAEPCraftedThroughToken raises each crafted encoded message to
// the public exponent, so the token's raw RSA operation recovers it exactly,
// and checks that DecryptOAEP gives the same answer as the decoder alone.
func TestDecryptOAEPCraftedThroughToken(t *testing.T) {
	tk := openToken(t, nil)
	r, pub := newDecryptionKey(t, tk)
	rawEncrypt := func(em []byte) []byte {
		m := new(big.Int).SetBytes(em)
		c := new(big.Int).Exp(m, big.NewInt(int64(pub.E)), pub.N)
		return c.FillBytes(make([]byte, pub.Size()))
	}
	// SHA-256 goes through CKM_RSA_X_509 and the Go decoder on SoftHSM2;
	// SHA-1 through the token's own OAEP. Both must refuse alike.
	for _, h := range []crypto.Hash{crypto.SHA256, crypto.SHA1} {
		for _, tc := range oaepCases(h, pub.Size()) {
			var got []byte
			err := tk.Do(context.Background(), func(s *Session) (err error) {
				got, err = s.DecryptOAEP(r, h, rawEncrypt(tc.em))
				return err
			})
			if tc.want != nil {
				if err != nil || !bytes.Equal(got, tc.want) {
					t.Errorf("%v %s: got %q, %v", h, tc.name, got, err)
				}
				continue
			}
			if err != errOAEP {
				t.Errorf("%v %s: %v; want the one OAEP error", h, tc.name, err)
			}
		}
	}
}
