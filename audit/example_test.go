package audit_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hsmkms/hsmkms/audit"
)

// softwareKey stands in for the token: in production the audit key's
// private half never leaves the HSM.
type softwareKey struct{ *ecdsa.PrivateKey }

func (k softwareKey) Sign(digest []byte) ([]byte, error) {
	return ecdsa.SignASN1(rand.Reader, k.PrivateKey, digest)
}

// This example logs a denied request, closes the log (which signs it) and
// verifies it.
func ExampleWriter() {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	spki, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	dir, _ := os.MkdirTemp("", "audit-example")
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "audit.log")

	w, err := audit.Open(audit.Config{File: file, MaxFileSize: 100 << 20, Signer: softwareKey{key}, PublicKey: spki})
	if err != nil {
		fmt.Println(err)
		return
	}
	err = w.Write(&audit.Event{
		UserIdentity:      audit.UserIdentity{Type: audit.IdentityIAMUser, ARN: "arn:aws:iam::111122223333:user/bob", AccountID: "111122223333"},
		EventName:         "Decrypt",
		AWSRegion:         "us-east-1",
		RequestParameters: map[string]any{"encryptionAlgorithm": "SYMMETRIC_DEFAULT"}, // never the ciphertext's plaintext
		ErrorCode:         "AccessDeniedException",
		ErrorMessage:      "User: arn:aws:iam::111122223333:user/bob is not authorized to perform: kms:Decrypt",
		RequestID:         "7f6c0e1c-0d3a-4a1e-9f55-2a0d5e1f3b10",
		ReadOnly:          true,
	})
	fmt.Println("write:", err)
	fmt.Println("close:", w.Close())

	rep, err := audit.Verify([]string{file}, spki)
	fmt.Println("verify:", err, rep.Records, "record,", rep.Checkpoints, "checkpoint,", rep.Unsigned, "unsigned")
	// Output:
	// write: <nil>
	// close: <nil>
	// verify: <nil> 1 record, 1 checkpoint, 0 unsigned
}
