package test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

// Regression tests for the defects an outside attacker found (issue 9),
// against the real server.

// A request signed without X-Amz-Target, replayed with the target changed,
// once scheduled a key's deletion under the signer's name.
func TestUnsignedTargetIsRefused(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	md := createKey(t, s.client())
	body := []byte(`{"KeyId":"` + aws.ToString(md.KeyId) + `"}`)
	req := s.kmsRequest(t, "", body) // signed with content-type;host;x-amz-date only
	sign(t, req, body, mainAKID, mainSecret, time.Now())
	req.Header.Set("X-Amz-Target", "TrentService.ScheduleKeyDeletion")
	msg := s.do(t, req).wantError(t, http.StatusBadRequest, "IncompleteSignatureException")
	if msg != "'x-amz-target' must be a 'SignedHeader' in the AWS Authorization." {
		t.Errorf("message %q", msg)
	}
	d, err := s.client().DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: md.KeyId})
	if err != nil {
		t.Fatal(err)
	}
	if d.KeyMetadata.KeyState != types.KeyStateEnabled {
		t.Fatalf("the key is %s after the replay", d.KeyMetadata.KeyState)
	}
}

// hsmkms issues no session tokens: a request carrying one was accepted with
// long-term keys whatever its value.
func TestSessionTokenNoCredentialIssuedIsRefused(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	body := []byte(`{}`)
	req := s.kmsRequest(t, "TrentService.ListKeys", body)
	sum := sha256Hex(body)
	err := v4.NewSigner().SignHTTP(context.Background(),
		aws.Credentials{AccessKeyID: mainAKID, SecretAccessKey: mainSecret, SessionToken: "forged-session-token"},
		req, sum, "kms", region, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	msg := s.do(t, req).wantError(t, http.StatusBadRequest, "UnrecognizedClientException")
	if msg != "The security token included in the request is invalid." {
		t.Errorf("message %q", msg)
	}
	// The same key without a token works.
	if r := s.call(t, "TrentService.ListKeys", body); r.Status != http.StatusOK {
		t.Fatalf("ListKeys without a token: %d %s", r.Status, r.Body)
	}
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// An existing data directory readable by others was left so.
func TestDataDirIsMadePrivate(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil { // whatever the umask
		t.Fatal(err)
	}
	p, _ := startDev(t, dir)
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != 0o700 {
		t.Fatalf("data dir mode %#o after start, want 0700", perm)
	}
	p.waitLog(t, "data dir was readable by others") // the warning about the tightened data dir
}

// A caller with no access to another account's keys once learnt which exist:
// a nonexistent key ARN answered NotFound and an existing one AccessDenied,
// an alias ARN's refusal named the key behind it, and RetireGrant said
// "Grant X does not exist for <arn>" before checking authorization. Each
// pair below must be answered alike, naming only what the caller sent.
func TestNoExistenceOracleAcrossAccounts(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	owner, outsider := s.client(), s.other()
	k := createKey(t, owner)
	if _, err := owner.CreateAlias(ctxT(t), &kms.CreateAliasInput{AliasName: aws.String("alias/payroll"), TargetKeyId: k.KeyId}); err != nil {
		t.Fatal(err)
	}
	const missing = "0b2c7c7d-7e6a-4f1c-9d61-6a1f2b3c4d5e"
	existingARN, missingARN := aws.ToString(k.Arn), keyARN(mainAccount, missing)
	aliasARN := "arn:aws:kms:" + region + ":" + mainAccount + ":alias/payroll"
	missingAlias := "arn:aws:kms:" + region + ":" + mainAccount + ":alias/nothing-here"
	refusal := func(err error) (string, string) {
		t.Helper()
		ae := wantAPIError(t, err, "AccessDeniedException", 400)
		return ae.ErrorCode(), ae.ErrorMessage()
	}
	encrypt := func(id string) error {
		_, err := outsider.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(id), Plaintext: []byte("x")})
		return err
	}
	for _, c := range []struct{ what, existing, missing string }{
		{"key ARN", existingARN, missingARN},
		{"alias ARN", aliasARN, missingAlias},
	} {
		code1, msg1 := refusal(encrypt(c.existing))
		code2, msg2 := refusal(encrypt(c.missing))
		if code1 != code2 || strings.Replace(msg1, c.existing, c.missing, 1) != msg2 {
			t.Errorf("%s: existing %q, missing %q: the answers differ", c.what, msg1, msg2)
		}
		if !strings.Contains(msg1, c.existing) || (c.what == "alias ARN" && strings.Contains(msg1, aws.ToString(k.KeyId))) {
			t.Errorf("%s: refusal %q names something other than what was sent", c.what, msg1)
		}
	}
	_, err := outsider.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: aws.String(keyARN(mainAccount, "mrk-0123456789abcdef0123456789abcdef"))})
	refusal(err)

	grantID := strings.Repeat("ab", 32)
	_, err = outsider.RetireGrant(ctxT(t), &kms.RetireGrantInput{KeyId: aws.String(existingARN), GrantId: aws.String(grantID)})
	_, msg1 := refusal(err)
	_, err = outsider.RetireGrant(ctxT(t), &kms.RetireGrantInput{KeyId: aws.String(missingARN), GrantId: aws.String(grantID)})
	_, msg2 := refusal(err)
	if strings.Replace(msg1, existingARN, missingARN, 1) != msg2 || strings.Contains(msg1, grantID) {
		t.Errorf("RetireGrant: existing key %q, missing key %q", msg1, msg2)
	}

	// In the key's own account, a missing key is still NotFound, as in AWS,
	// and the account's principals may learn that a grant does not exist.
	_, err = owner.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(missingARN), Plaintext: []byte("x")})
	wantAPIError(t, err, "NotFoundException", 400)
	_, err = owner.RetireGrant(ctxT(t), &kms.RetireGrantInput{KeyId: aws.String(existingARN), GrantId: aws.String(grantID)})
	wantAPIError(t, err, "NotFoundException", 400)
}
