package test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

// TestBinaryLogsHoldNoSecrets runs the real server at debug level with the
// access log and the audit log on, through every operation that carries a
// secret — plaintext in and out, data keys, data key pairs, random bytes,
// messages to sign and MAC — and through failures that carry them (a
// missing key, a tampered ciphertext, a malformed body, a bad signature),
// then looks for each secret, and each ciphertext, raw, in base64 and in
// hex, in every line the server wrote: standard error (its log and access
// log), standard output and the audit log.
func TestBinaryLogsHoldNoSecrets(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const secretKey = "s3cr3t-NEVER-LOGGED-7f0c1e"
	cfg := filepath.Join(dir, "hsmkms.yaml")
	if err := os.WriteFile(cfg, []byte("version: v1\nlog_level: debug\nprincipals:\n"+
		"  - arn: arn:aws:iam::111122223333:user/alice\n    access_keys: [{id: AKIDALICE, secret_env: HSMKMS_E2E_ALICE_SECRET}]\n"+
		"    policies: [{Version: \"2012-10-17\", Statement: [{Effect: Allow, Action: \"kms:*\", Resource: \"*\"}]}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	data := filepath.Join(dir, "data")
	p := startProc(t, cleanEnv("HSMKMS_E2E_ALICE_SECRET="+secretKey), "serve", "--dev", "--config", cfg, "--data-dir", data, "--listen", addr)
	endpoint := "http://" + addr
	p.waitHealthy(t, endpoint)
	c := newClient(endpoint, "AKIDALICE", secretKey, nil)
	ctx := ctxT(t)

	var secrets [][]byte
	keep := func(b []byte) {
		if len(b) > 0 {
			secrets = append(secrets, append([]byte(nil), b...))
		}
	}
	sym := createKey(t, c)
	pt := []byte("plaintext-that-must-never-be-logged-0001")
	keep(pt)
	ec := map[string]string{"purpose": "log test"}
	blob := encrypt(t, c, *sym.KeyId, pt, ec)
	keep(blob)
	keep(decrypt(t, c, blob, ec).Plaintext)
	sym2 := createKey(t, c)
	re, err := c.ReEncrypt(ctx, &kms.ReEncryptInput{CiphertextBlob: blob, SourceEncryptionContext: ec, DestinationKeyId: sym2.KeyId})
	if err != nil {
		t.Fatal(err)
	}
	keep(re.CiphertextBlob)
	dk, err := c.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: sym.KeyId, KeySpec: types.DataKeySpecAes256})
	if err != nil {
		t.Fatal(err)
	}
	keep(dk.Plaintext)
	keep(dk.CiphertextBlob)
	pair, err := c.GenerateDataKeyPair(ctx, &kms.GenerateDataKeyPairInput{KeyId: sym.KeyId, KeyPairSpec: types.DataKeyPairSpecEccNistP256})
	if err != nil {
		t.Fatal(err)
	}
	keep(pair.PrivateKeyPlaintext)
	keep(pair.PrivateKeyCiphertextBlob)
	rnd, err := c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(32)})
	if err != nil {
		t.Fatal(err)
	}
	keep(rnd.Plaintext)
	signer, err := c.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: types.KeySpecEccNistP256, KeyUsage: types.KeyUsageTypeSignVerify})
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("message-to-sign-never-logged-0002")
	keep(msg)
	sig, err := c.Sign(ctx, &kms.SignInput{KeyId: signer.KeyMetadata.KeyId, Message: msg, SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256})
	if err != nil {
		t.Fatal(err)
	}
	keep(sig.Signature)
	mac, err := c.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: types.KeySpecHmac256, KeyUsage: types.KeyUsageTypeGenerateVerifyMac})
	if err != nil {
		t.Fatal(err)
	}
	macMsg := []byte("message-to-mac-never-logged-0003")
	keep(macMsg)
	m, err := c.GenerateMac(ctx, &kms.GenerateMacInput{KeyId: mac.KeyMetadata.KeyId, Message: macMsg, MacAlgorithm: types.MacAlgorithmSpecHmacSha256})
	if err != nil {
		t.Fatal(err)
	}
	keep(m.Mac)

	// Failures that carry secrets.
	failPT := []byte("plaintext-of-a-failed-request-0004")
	keep(failPT)
	if _, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String("alias/missing"), Plaintext: failPT}); err == nil {
		t.Error("Encrypt under a missing alias succeeded")
	}
	tampered := append([]byte(nil), blob...)
	tampered[len(tampered)-1] ^= 1
	keep(tampered)
	if _, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: tampered, EncryptionContext: ec}); err == nil {
		t.Error("a tampered ciphertext decrypted")
	}
	malformedPT := []byte("plaintext-in-a-malformed-body-0005")
	keep(malformedPT)
	srv := &server{URL: endpoint}
	for _, body := range []string{
		`{"KeyId":"` + *sym.KeyId + `","Plaintext":"` + base64.StdEncoding.EncodeToString(malformedPT) + `","Plaintext":"x"}`,
		`{"KeyId":"` + *sym.KeyId + `","Plaintext":"` + base64.StdEncoding.EncodeToString(malformedPT) + `"`,
		`{"KeyId":"` + *sym.KeyId + `","Plaintext":` + fmt.Sprintf("%q", string(malformedPT)) + `}`,
	} {
		req := srv.kmsRequest(t, "TrentService.Encrypt", []byte(body))
		sign(t, req, []byte(body), "AKIDALICE", secretKey, time.Now())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("malformed body answered %d", resp.StatusCode)
		}
	}
	// A request signed with the wrong secret carries its plaintext too.
	body := `{"KeyId":"` + *sym.KeyId + `","Plaintext":"` + base64.StdEncoding.EncodeToString(failPT) + `"}`
	req := srv.kmsRequest(t, "TrentService.Encrypt", []byte(body))
	sign(t, req, []byte(body), "AKIDALICE", "not-the-secret", time.Now())
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.stderr)
	}
	auditLog, err := os.ReadFile(filepath.Join(data, "audit", "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	logs := map[string][]byte{"stderr": []byte(p.stderr.String()), "stdout": []byte(p.stdout.String()), "audit log": auditLog}
	if !bytes.Contains(logs["stderr"], []byte(`"msg":"request"`)) || !bytes.Contains(logs["stderr"], []byte(`"operation":"Encrypt"`)) {
		t.Fatalf("no access log lines on stderr: the test would prove nothing\n%s", logs["stderr"])
	}
	secrets = append(secrets, []byte(secretKey))
	for _, s := range secrets {
		forms := map[string]string{
			"raw":       string(s),
			"base64":    base64.StdEncoding.EncodeToString(s),
			"base64url": base64.RawURLEncoding.EncodeToString(s),
			"hex":       hex.EncodeToString(s),
		}
		for name, text := range logs {
			for form, needle := range forms {
				if len(needle) >= 8 && bytes.Contains(text, []byte(needle)) {
					t.Errorf("the %s holds a secret (%s form, %d bytes: %.12s…)", name, form, len(s), needle)
				}
			}
		}
	}
	// And no line names a secret's start, as a truncated quote would.
	for name, text := range logs {
		for _, line := range strings.Split(string(text), "\n") {
			for _, s := range [][]byte{pt, msg, macMsg, failPT, malformedPT} {
				if strings.Contains(line, string(s[:16])) {
					t.Errorf("a line of the %s quotes the start of a secret: %.200s", name, line)
				}
			}
		}
	}
}
