package test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
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
