package test

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/kms"
)

// waitReadyz polls GET /readyz until it answers want.
func waitReadyz(t *testing.T, p *proc, endpoint string, want int) {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	last := 0
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			t.Fatalf("hsmkms exited: %v\nstderr:\n%s", p.err, p.stderr)
		default:
		}
		resp, err := hc.Get(endpoint + "/readyz")
		if err == nil {
			resp.Body.Close()
			if last = resp.StatusCode; last == want {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("/readyz did not answer %d within 60s (last %d)\nstderr:\n%s", want, last, p.stderr)
}

// wantTokenFault asserts that err is one of the exceptions a token fault
// maps to (service/errors.go fromToken), with HTTP 500, and not a timeout:
// the request failed at once rather than waiting for the token.
func wantTokenFault(t *testing.T, what string, err error) {
	t.Helper()
	switch apiCode(err) {
	case "KeyUnavailableException", "KMSInternalException":
	default:
		t.Fatalf("%s during the fault: %v, want KeyUnavailableException or KMSInternalException", what, err)
	}
	var re *awshttp.ResponseError
	if !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusInternalServerError {
		t.Fatalf("%s during the fault: %v, want HTTP 500", what, err)
	}
}

// The token's directory goes away under a running server and comes back
// (issue 9, item 5). While it is gone /readyz says 503 and KMS calls fail at
// once with the AWS exception; when it is back the same process, not
// restarted, serves again: /readyz 200, a key it never used before decrypts,
// CreateKey works.
func TestBinaryRecoversFromTokenFault(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// A first process makes a key the second one never uses before the fault.
	p, endpoint := startDev(t, dir)
	c := newClient(endpoint, mainAKID, mainSecret, nil)
	dormant := createKey(t, c)
	dormantBlob := encrypt(t, c, aws.ToString(dormant.KeyId), []byte("dormant"), nil)
	stop(t, p)

	p, endpoint = startDev(t, dir)
	c = newClient(endpoint, mainAKID, mainSecret, nil)
	used := createKey(t, c)
	usedBlob := encrypt(t, c, aws.ToString(used.KeyId), []byte("used"), nil)
	waitReadyz(t, p, endpoint, http.StatusOK)

	tokens := filepath.Join(dir, "softhsm", "tokens")
	entries, err := os.ReadDir(tokens)
	if err != nil || len(entries) != 1 {
		t.Fatalf("token directory: %v, %d entries", err, len(entries))
	}
	tokenDir, away := filepath.Join(tokens, entries[0].Name()), filepath.Join(dir, "softhsm", "away")
	if err := os.Rename(tokenDir, away); err != nil {
		t.Fatal(err)
	}
	var restoreOnce sync.Once
	restore := func() {
		restoreOnce.Do(func() {
			if err := os.Rename(away, tokenDir); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Cleanup(restore)

	waitReadyz(t, p, endpoint, http.StatusServiceUnavailable)
	_, err = c.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: used.KeyId, Plaintext: []byte("x")})
	wantTokenFault(t, "Encrypt under a key used before", err)
	_, err = c.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: dormantBlob})
	wantTokenFault(t, "Decrypt under a key never used", err)
	_, err = c.CreateKey(ctxT(t), &kms.CreateKeyInput{})
	wantTokenFault(t, "CreateKey", err)

	restore()

	waitReadyz(t, p, endpoint, http.StatusOK)
	if got := decrypt(t, c, dormantBlob, nil).Plaintext; string(got) != "dormant" {
		t.Fatalf("key never used before the fault decrypts to %q", got)
	}
	if got := decrypt(t, c, usedBlob, nil).Plaintext; string(got) != "used" {
		t.Fatalf("key used before the fault decrypts to %q", got)
	}
	fresh := createKey(t, c)
	if got := decrypt(t, c, encrypt(t, c, aws.ToString(fresh.KeyId), []byte("fresh"), nil), nil).Plaintext; string(got) != "fresh" {
		t.Fatalf("key created after the fault decrypts to %q", got)
	}
	select {
	case <-p.done:
		t.Fatalf("hsmkms exited: %v\nstderr:\n%s", p.err, p.stderr)
	default:
	}
	stop(t, p)
	// The next start finds store and token in agreement: the keys made
	// around the fault have their material, and the readiness canary is no
	// orphan.
	p, _ = startDev(t, dir)
	stop(t, p)
	clean(t, p)
}
