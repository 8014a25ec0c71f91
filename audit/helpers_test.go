package audit

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// keySigner is a software ECDSA P-256 key standing in for the token.
type keySigner struct {
	key  *ecdsa.PrivateKey
	spki []byte
	fail atomic.Bool // Sign fails while set
}

var errSignerDown = errors.New("signer down")

func (s *keySigner) Sign(digest []byte) ([]byte, error) {
	if s.fail.Load() {
		return nil, errSignerDown
	}
	return ecdsa.SignASN1(rand.Reader, s.key, digest)
}

func newSigner(t testing.TB) *keySigner {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return &keySigner{key: k, spki: spki}
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func testConfig(t testing.TB, s *keySigner) Config {
	return Config{
		File:      filepath.Join(t.TempDir(), "audit.log"),
		Signer:    s,
		PublicKey: s.spki,
		Logger:    quiet,
	}
}

// encryptEvent is a typical record: an Encrypt by an IAM user.
func encryptEvent(i int) *Event {
	const keyARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	return &Event{
		UserIdentity: UserIdentity{
			Type: IdentityIAMUser, PrincipalID: "AIDAEXAMPLE", ARN: "arn:aws:iam::111122223333:user/alice",
			AccountID: "111122223333", AccessKeyID: "AKIAEXAMPLE",
		},
		EventTime:       time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		EventName:       "Encrypt",
		AWSRegion:       "us-east-1",
		SourceIPAddress: "127.0.0.1",
		UserAgent:       "aws-sdk-go-v2/1.48.0",
		RequestParameters: map[string]any{
			"keyId":               "alias/app",
			"encryptionAlgorithm": "SYMMETRIC_DEFAULT",
			"encryptionContext":   map[string]string{"Department": "Finance"},
		},
		RequestID:          fmt.Sprintf("req-%d", i),
		ReadOnly:           true,
		Resources:          []Resource{{ARN: keyARN, AccountID: "111122223333", Type: ResourceTypeKey}},
		RecipientAccountID: "111122223333",
	}
}

func open(t testing.TB, cfg Config) *Writer {
	t.Helper()
	w, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func writeN(t testing.TB, w *Writer, n int) {
	t.Helper()
	for i := range n {
		if err := w.Write(encryptEvent(i)); err != nil {
			t.Fatalf("Write %d: %v", i, err)
		}
	}
}

func readLines(t testing.TB, file string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) == 0 {
		return nil
	}
	if b[len(b)-1] != '\n' {
		t.Fatalf("%s does not end in LF", file)
	}
	return bytes.Split(b[:len(b)-1], []byte("\n"))
}

func writeLines(t testing.TB, file string, lines [][]byte) {
	t.Helper()
	var b []byte
	for _, l := range lines {
		b = append(append(b, l...), '\n')
	}
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// logFiles returns the rotated files of file, oldest first, then file.
func logFiles(t testing.TB, file string) []string {
	t.Helper()
	rotated, err := filepath.Glob(file + ".*")
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(rotated)
	return append(rotated, file)
}

func isCheckpoint(line []byte) bool { return bytes.HasPrefix(line, []byte(`{"checkpoint":`)) }

func sha256hex(b []byte) string {
	d := sha256.Sum256(b)
	return hex.EncodeToString(d[:])
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

func verifySig(t testing.TB, s *keySigner, payload, sigB64 string) bool {
	t.Helper()
	sig, err := base64.StdEncoding.DecodeString(sigB64)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte(payload))
	return ecdsa.VerifyASN1(&s.key.PublicKey, d[:], sig)
}

func appendBytes(t testing.TB, file string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}
