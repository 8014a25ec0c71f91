package blob_test

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"

	"github.com/hsmkms/hsmkms/blob"
)

// This example frames an encryption and then parses the blob to decrypt
// it. Software AES-GCM with a throwaway key stands in for the HSM, which
// does the real AES-GCM; package blob only supplies the header and AAD.
func ExampleParse() {
	gcm, _ := cipher.NewGCM(must(aes.NewCipher(make([]byte, 32))))
	ec := map[string]string{"Department": "Finance", "Project": "Alpha"}

	// Encrypt: build the header, seal with its AAD, append the result.
	keyID, _ := blob.ParseKeyID("1234abcd-12ab-34cd-56ef-1234567890ab")
	h := blob.Header{Version: blob.Version1, KeyID: keyID, KeyVersion: 1}
	copy(h.IV[:], "fixed-for-ex") // in production: 12 fresh bytes from the HSM's RNG
	wire := gcm.Seal(h.AppendTo(nil), h.IV[:], []byte("hello"), h.AAD(ec))

	// Decrypt: parse, pick the key by KeyID and KeyVersion, open.
	b, err := blob.Parse(wire)
	if err != nil {
		fmt.Println("parse:", err)
		return
	}
	fmt.Println("blob bytes:", len(wire))
	fmt.Println("key:", blob.FormatKeyID(b.KeyID), "version", b.KeyVersion)
	pt, err := gcm.Open(nil, b.IV[:], b.Ciphertext, b.AAD(ec))
	fmt.Printf("plaintext: %q, err: %v\n", pt, err)

	// The same blob under another context fails authentication.
	_, err = gcm.Open(nil, b.IV[:], b.Ciphertext, b.AAD(map[string]string{"Department": "Sales", "Project": "Alpha"}))
	fmt.Println("wrong context fails:", err != nil)

	_, err = blob.Parse(wire[:20])
	fmt.Println(err)
	// Output:
	// blob bytes: 54
	// key: 1234abcd-12ab-34cd-56ef-1234567890ab version 1
	// plaintext: "hello", err: <nil>
	// wrong context fails: true
	// blob: malformed ciphertext blob: 20 bytes, want at least 50
}

func must(b cipher.Block, err error) cipher.Block {
	if err != nil {
		panic(err)
	}
	return b
}
