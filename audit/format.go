package audit

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"
)

// zeroHash is the prev of the first record of a log (seq 1).
var zeroHash = strings.Repeat("0", 2*sha256.Size)

// payloadPrefix separates checkpoint signatures from any other use of the
// signing key (FORMAT.md, "Checkpoint signature").
const payloadPrefix = "hsmkms audit checkpoint v1\n"

// link is the hash-chain field of a record line, its last key: Writer
// appends it to the encoded Event by hand, in this form.
type link struct {
	Seq  uint64 `json:"seq"`
	Prev string `json:"prev"`
}

// checkpoint is the content of a checkpoint line.
type checkpoint struct {
	Seq            uint64 `json:"seq"`
	Head           string `json:"head"`
	Time           string `json:"time"`
	KeyFingerprint string `json:"keyFingerprint"`
	Signature      []byte `json:"signature"` // standard base64 in JSON
}

type checkpointLine struct {
	Checkpoint checkpoint `json:"checkpoint"`
}

// payload is the byte string whose SHA-256 the checkpoint signs.
func (c *checkpoint) payload() []byte {
	return fmt.Appendf(nil, "%sseq %d\nhead %s\ntime %s\nkey %s\n",
		payloadPrefix, c.Seq, c.Head, c.Time, c.KeyFingerprint)
}

func (c *checkpoint) digest() []byte {
	d := sha256.Sum256(c.payload())
	return d[:]
}

// Fingerprint returns the key fingerprint that checkpoints carry: the
// lowercase hex SHA-256 of the public key's SPKI DER encoding.
func Fingerprint(publicKeySPKI []byte) string {
	d := sha256.Sum256(publicKeySPKI)
	return hex.EncodeToString(d[:])
}

// ParsePublicKey accepts a public key as PEM ("PUBLIC KEY" block) or as
// DER, checks that it is an ECDSA P-256 key, and returns its SPKI DER
// encoding, the form Verify and Config take.
func ParsePublicKey(pemOrDER []byte) ([]byte, error) {
	der := pemOrDER
	if blk, _ := pem.Decode(pemOrDER); blk != nil {
		if blk.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("audit: PEM block is %q, want \"PUBLIC KEY\"", blk.Type)
		}
		der = blk.Bytes
	}
	if _, err := parseECDSA(der); err != nil {
		return nil, err
	}
	return der, nil
}

func parseECDSA(spki []byte) (*ecdsa.PublicKey, error) {
	k, err := x509.ParsePKIXPublicKey(spki)
	if err != nil {
		return nil, fmt.Errorf("audit: public key: %w", err)
	}
	pub, ok := k.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("audit: public key is a %T, want ECDSA P-256", k)
	}
	return pub, nil
}

// parsedLine is a line as the verifier sees it. For a record, prev is the
// chain link; for a checkpoint, prev is the head.
type parsedLine struct {
	cp   *checkpoint // nil for a record
	seq  uint64
	prev string
}

// parseLine parses one line (without its LF) strictly: a JSON object with
// no duplicate keys; either exactly {"checkpoint":{...}} in canonical form,
// or an object whose last key is "chain" with a canonical link.
func parseLine(b []byte) (parsedLine, error) {
	if len(b) == 0 {
		return parsedLine{}, errors.New("empty line")
	}
	if b[0] != '{' || b[len(b)-1] != '}' || !json.Valid(b) {
		return parsedLine{}, errors.New("not a JSON object")
	}
	keys, vals, err := topLevel(b)
	if err != nil {
		return parsedLine{}, err
	}
	if len(keys) == 1 && keys[0] == "checkpoint" {
		return parseCheckpoint(b)
	}
	for i, k := range keys {
		if strings.EqualFold(k, "checkpoint") || strings.EqualFold(k, "chain") && i != len(keys)-1 {
			return parsedLine{}, fmt.Errorf("unexpected key %q", k)
		}
	}
	if len(keys) == 0 || keys[len(keys)-1] != "chain" {
		return parsedLine{}, errors.New(`no "chain" link as the last key`)
	}
	var l link
	dec := json.NewDecoder(bytes.NewReader(vals[len(vals)-1]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return parsedLine{}, fmt.Errorf("chain: %v", err)
	}
	if canon, _ := json.Marshal(l); !bytes.Equal(canon, vals[len(vals)-1]) {
		return parsedLine{}, errors.New(`chain is not in canonical form {"seq":N,"prev":"HEX"}`)
	}
	if l.Seq == 0 {
		return parsedLine{}, errors.New("chain seq is 0")
	}
	if !isHash(l.Prev) {
		return parsedLine{}, errors.New("chain prev is not 64 lowercase hex digits")
	}
	return parsedLine{seq: l.Seq, prev: l.Prev}, nil
}

func parseCheckpoint(b []byte) (parsedLine, error) {
	var cl checkpointLine
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cl); err != nil {
		return parsedLine{}, fmt.Errorf("checkpoint: %v", err)
	}
	var canon bytes.Buffer
	enc := json.NewEncoder(&canon)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(cl); err != nil || !bytes.Equal(bytes.TrimSuffix(canon.Bytes(), []byte("\n")), b) {
		return parsedLine{}, errors.New("checkpoint is not in canonical form")
	}
	c := &cl.Checkpoint
	switch {
	case c.Seq == 0:
		return parsedLine{}, errors.New("checkpoint seq is 0")
	case !isHash(c.Head):
		return parsedLine{}, errors.New("checkpoint head is not 64 lowercase hex digits")
	case !isHash(c.KeyFingerprint):
		return parsedLine{}, errors.New("checkpoint keyFingerprint is not 64 lowercase hex digits")
	case len(c.Signature) == 0:
		return parsedLine{}, errors.New("checkpoint has no signature")
	}
	t, err := time.Parse(time.RFC3339Nano, c.Time)
	if err != nil || t.Location() != time.UTC || t.Format(time.RFC3339Nano) != c.Time {
		return parsedLine{}, errors.New("checkpoint time is not RFC 3339 UTC in canonical form")
	}
	return parsedLine{cp: c, seq: c.Seq, prev: c.Head}, nil
}

// topLevel returns the keys of a JSON object in order, with their raw
// values, and rejects duplicate keys (which parsers resolve differently).
func topLevel(b []byte) (keys []string, vals []json.RawMessage, err error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if _, err := dec.Token(); err != nil {
		return nil, nil, err
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, err
		}
		k, _ := tok.(string)
		if seen[k] {
			return nil, nil, fmt.Errorf("duplicate key %q", k)
		}
		seen[k] = true
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, nil, err
		}
		keys, vals = append(keys, k), append(vals, v)
	}
	return keys, vals, nil
}

func isHash(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// lineHash is the SHA-256 of a line's bytes without its LF.
func lineHash(line []byte) string {
	d := sha256.Sum256(line)
	return hex.EncodeToString(d[:])
}
