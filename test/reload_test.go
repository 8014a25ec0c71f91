package test

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
)

// TestBinaryReloadOnSIGHUP: `--dev --config FILE` adds the file's principals
// to the dev root; SIGHUP re-reads the file — a new access key works, a
// removed one is refused, a changed identity policy applies — while requests
// keep being served; an invalid file is refused and the running set kept.
func TestBinaryReloadOnSIGHUP(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "principals.yaml")
	write := func(body string) {
		t.Helper()
		if err := os.WriteFile(cfg+".tmp", []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(cfg+".tmp", cfg); err != nil { // atomic, as an operator's tools should do
			t.Fatal(err)
		}
	}
	principal := func(keys string, actions string) string {
		return "version: v1\nprincipals:\n" +
			"  - arn: arn:aws:iam::111122223333:user/alice\n" +
			"    access_keys:\n" + keys +
			"    policies: [{Version: \"2012-10-17\", Statement: [{Effect: Allow, Action: " + actions + ", Resource: \"*\"}]}]\n"
	}
	write(principal("      - {id: AKIDALICE1, secret_env: HSMKMS_E2E_ALICE1}\n", `["kms:Encrypt", "kms:DescribeKey"]`))
	addr := freeAddr(t)
	p := startProc(t, cleanEnv("HSMKMS_E2E_ALICE1=secret-one", "HSMKMS_E2E_ALICE2=secret-two"),
		"serve", "--dev", "--config", cfg, "--data-dir", filepath.Join(dir, "data"), "--listen", addr, "--log-level", "info")
	endpoint := "http://" + addr
	p.waitHealthy(t, endpoint)
	root := newClient(endpoint, "test", "test", nil)
	one := newClient(endpoint, "AKIDALICE1", "secret-one", nil)
	two := newClient(endpoint, "AKIDALICE2", "secret-two", nil)
	k := createKey(t, root)

	encrypt(t, one, aws.ToString(k.KeyId), []byte("x"), nil)
	_, err := two.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: k.KeyId, Plaintext: []byte("x")})
	wantAPIError(t, err, "UnrecognizedClientException", 400)
	_, err = one.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: encrypt(t, one, aws.ToString(k.KeyId), []byte("x"), nil)})
	wantAPIError(t, err, "AccessDeniedException", 400)

	// Requests run throughout the reloads; none may fail.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var served, failed atomic.Int64
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := root.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: k.KeyId, Plaintext: []byte("busy")}); err != nil {
					failed.Add(1)
					t.Errorf("request during reload: %v", err)
					return
				}
				served.Add(1)
			}
		}()
	}
	hupAndWait := func(logLine string) {
		t.Helper()
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(p.stderr.String(), logLine) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in the log:\n%s", logLine, p.stderr)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// Rotate alice's keys (AKIDALICE2 in, AKIDALICE1 out) and widen her policy.
	write(principal("      - {id: AKIDALICE2, secret_env: HSMKMS_E2E_ALICE2}\n", `["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"]`))
	hupAndWait("SIGHUP: principals reloaded")
	blob := encrypt(t, two, aws.ToString(k.KeyId), []byte("after"), nil)
	if got := decrypt(t, two, blob, nil).Plaintext; string(got) != "after" {
		t.Fatalf("decrypt after reload = %q", got)
	}
	_, err = one.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: k.KeyId, Plaintext: []byte("x")})
	wantAPIError(t, err, "UnrecognizedClientException", 400)

	// A broken file is refused; the running principals stay.
	write("version: v1\nprincipals: [{arn: not-an-arn}]\n")
	hupAndWait("SIGHUP: configuration not reloaded")
	encrypt(t, two, aws.ToString(k.KeyId), []byte("still"), nil)

	close(stop)
	wg.Wait()
	if served.Load() == 0 || failed.Load() != 0 {
		t.Errorf("%d requests served during the reloads, %d failed", served.Load(), failed.Load())
	}
	if strings.Contains(p.stderr.String(), "secret-one") || strings.Contains(p.stderr.String(), "secret-two") {
		t.Errorf("a secret is in the log:\n%s", p.stderr)
	}
	stop2 := p.cmd.Process.Signal(syscall.SIGTERM)
	if stop2 != nil {
		t.Fatal(stop2)
	}
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}
