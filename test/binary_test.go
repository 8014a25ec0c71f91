package test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

// TestBinaryDevServe runs `hsmkms serve --dev`: it prints its endpoint and
// the dev credentials, and the SDK works against it.
func TestBinaryDevServe(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p, endpoint := startDev(t, dir)

	out := p.stdout.String()
	if !strings.Contains(out, "listening on "+endpoint) {
		t.Errorf("stdout does not give the endpoint %s:\n%s", endpoint, out)
	}
	if !strings.Contains(out, "account "+mainAccount) {
		t.Errorf("stdout does not give the account id:\n%s", out)
	}
	// The printed export line is what a user pastes: with it, and nothing
	// else in the environment, the AWS CLI (v1 reads AWS_DEFAULT_REGION, v2
	// AWS_REGION) reaches the server.
	var export string
	for _, line := range strings.Split(out, "\n") {
		if l := strings.TrimSpace(line); strings.HasPrefix(l, "export ") {
			export = l
		}
	}
	for _, want := range []string{"AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test", "AWS_REGION=us-east-1", "AWS_DEFAULT_REGION=us-east-1"} {
		if !strings.Contains(export, want) {
			t.Errorf("the export line %q does not set %s:\n%s", export, want, out)
		}
	}
	cli := exec.Command("bash", "-c", export+" && exec \"$0\" kms list-keys --endpoint-url \"$1\" --output json", awsCLI(t), endpoint)
	cli.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null"}
	if msg, err := cli.CombinedOutput(); err != nil || !strings.Contains(string(msg), "Keys") {
		t.Errorf("the AWS CLI with only the printed export line: %v\n%s", err, msg)
	}

	c := newClient(endpoint, "test", "test", nil)
	md := createKey(t, c)
	if got := aws.ToString(md.Arn); got != keyARN(mainAccount, aws.ToString(md.KeyId)) {
		t.Errorf("dev key ARN %q", got)
	}
	ec := map[string]string{"via": "binary"}
	blob := encrypt(t, c, aws.ToString(md.KeyId), []byte("hello from the binary test"), ec)
	if got := decrypt(t, c, blob, ec).Plaintext; string(got) != "hello from the binary test" {
		t.Errorf("round trip gave %q", got)
	}
	// The token and the store live under the data directory.
	for _, name := range []string{"hsmkms.db", "softhsm"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("data dir: %v", err)
		}
	}
	// Only the dev credentials are accepted.
	_, err := newClient(endpoint, "test", "wrong", nil).ListKeys(ctxT(t), &kms.ListKeysInput{})
	wantAPIError(t, err, "InvalidSignatureException", 400)
}

// TestBinaryRestartPersistence decrypts, after a restart on the same data
// directory, a blob made before it: key records and token objects survive.
func TestBinaryRestartPersistence(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p, endpoint := startDev(t, dir)
	c := newClient(endpoint, "test", "test", nil)
	md := createKey(t, c)
	id := aws.ToString(md.KeyId)
	disabled := createKey(t, c)
	if _, err := c.DisableKey(ctxT(t), &kms.DisableKeyInput{KeyId: disabled.KeyId}); err != nil {
		t.Fatal(err)
	}
	ec := map[string]string{"restart": "yes"}
	pt := []byte("survives a restart")
	blob := encrypt(t, c, id, pt, ec)
	// A key pair too: its signature and its public key must survive.
	signer, err := c.CreateKey(ctxT(t), &kms.CreateKeyInput{KeySpec: types.KeySpecEccNistP256, KeyUsage: types.KeyUsageTypeSignVerify})
	if err != nil {
		t.Fatal(err)
	}
	sig, err := c.Sign(ctxT(t), &kms.SignInput{KeyId: signer.KeyMetadata.KeyId, Message: pt,
		SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := c.GetPublicKey(ctxT(t), &kms.GetPublicKeyInput{KeyId: signer.KeyMetadata.KeyId})
	if err != nil {
		t.Fatal(err)
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("first run exited %d\nstderr:\n%s", code, p.stderr)
	}

	p2, endpoint2 := startDev(t, dir)
	c2 := newClient(endpoint2, "test", "test", nil)
	dec := decrypt(t, c2, blob, ec)
	if !bytes.Equal(dec.Plaintext, pt) {
		t.Fatalf("after restart the blob decrypts to %q", dec.Plaintext)
	}
	if aws.ToString(dec.KeyId) != aws.ToString(md.Arn) {
		t.Errorf("Decrypt KeyId %q, want %q", aws.ToString(dec.KeyId), aws.ToString(md.Arn))
	}
	d, err := c2.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: aws.String(id)})
	if err != nil {
		t.Fatal(err)
	}
	if !d.KeyMetadata.CreationDate.Equal(*md.CreationDate) ||
		aws.ToString(d.KeyMetadata.CurrentKeyMaterialId) != aws.ToString(md.CurrentKeyMaterialId) {
		t.Errorf("key metadata changed across the restart: %+v vs %+v", d.KeyMetadata, md)
	}
	d, err = c2.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: disabled.KeyId})
	if err != nil {
		t.Fatal(err)
	}
	if d.KeyMetadata.Enabled {
		t.Error("a disabled key is enabled after the restart")
	}
	l, err := c2.ListKeys(ctxT(t), &kms.ListKeysInput{})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Keys) != 3 {
		t.Errorf("after restart ListKeys shows %d keys, want 3", len(l.Keys))
	}
	if _, err := c2.Verify(ctxT(t), &kms.VerifyInput{KeyId: signer.KeyMetadata.KeyId, Message: pt, Signature: sig.Signature,
		SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256}); err != nil {
		t.Errorf("a signature from before the restart does not verify after it: %v", err)
	}
	pub2, err := c2.GetPublicKey(ctxT(t), &kms.GetPublicKeyInput{KeyId: signer.KeyMetadata.KeyId})
	if err != nil || !bytes.Equal(pub2.PublicKey, pub.PublicKey) {
		t.Errorf("public key changed across the restart (%v)", err)
	}
	// New work after the restart, under the old key.
	blob2 := encrypt(t, c2, id, []byte("after"), nil)
	if got := decrypt(t, c2, blob2, nil).Plaintext; string(got) != "after" {
		t.Errorf("round trip after restart gave %q", got)
	}
	if strings.Contains(p2.stderr.String(), "missing from the token") {
		t.Errorf("reconciliation reports missing material:\n%s", p2.stderr)
	}
}

// TestBinaryGracefulShutdown: SIGTERM ends the process with status 0.
func TestBinaryGracefulShutdown(t *testing.T) {
	t.Parallel()
	p, endpoint := startDev(t, t.TempDir())
	c := newClient(endpoint, "test", "test", nil)
	if _, err := c.GenerateRandom(ctxT(t), &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)}); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("exit status %d after SIGTERM, want 0\nstderr:\n%s", code, p.stderr)
	}
	// Nothing listens any more.
	hc := newClient(endpoint, "test", "test", nil)
	if _, err := hc.GenerateRandom(ctxT(t), &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)}); err == nil {
		t.Error("the endpoint still answers after shutdown")
	}
}

// TestBinaryDevRefusesPublicListen: --dev serves public credentials, so it
// only listens on loopback.
func TestBinaryDevRefusesPublicListen(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{"0.0.0.0:0", "[::]:0"} {
		p := startProc(t, cleanEnv(), "serve", "--dev", "--data-dir", t.TempDir(), "--listen", addr)
		code := p.wait(t, 20*time.Second)
		if code == 0 {
			t.Errorf("--dev --listen %s exited 0", addr)
		}
		if !strings.Contains(p.stderr.String(), "loopback") {
			t.Errorf("--dev --listen %s: stderr does not mention loopback:\n%s", addr, p.stderr)
		}
	}
}

// TestBinaryWrongPIN: a token login failure stops the server at start, with
// a message that says so; the same setup with the right PIN serves.
func TestBinaryWrongPIN(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tokDir := filepath.Join(dir, "token")
	out, err := exec.Command("bash", "../softhsm/init-token.sh", tokDir, "hsmkms").Output()
	if err != nil {
		t.Fatalf("init-token.sh: %v", err)
	}
	conf := strings.TrimSpace(string(out))
	if conf != filepath.Join(tokDir, "softhsm2.conf") {
		t.Fatalf("init-token.sh printed %q", conf)
	}
	wrongPIN := filepath.Join(dir, "wrong.pin")
	if err := os.WriteFile(wrongPIN, []byte("000000-not-the-pin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "hsmkms.yaml")
	yaml := "version: v1\n" +
		"principals:\n" +
		"  - arn: arn:aws:iam::111122223333:user/alice\n" +
		"    access_keys:\n" +
		"      - id: AKIDALICE\n" +
		"        secret_env: HSMKMS_E2E_ALICE_SECRET\n" +
		"    policies: [{Version: \"2012-10-17\", Statement: [{Effect: Allow, Action: \"kms:*\", Resource: \"*\"}]}]\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	env := cleanEnv("SOFTHSM2_CONF="+conf, "HSMKMS_E2E_ALICE_SECRET=alice-secret")
	args := func(pinFile, listen string) []string {
		return []string{"serve", "--pkcs11-module", "/usr/lib/softhsm/libsofthsm2.so", "--token-label", "hsmkms",
			"--pin-file", pinFile, "--config", cfg, "--data-dir", filepath.Join(dir, "data"), "--listen", listen}
	}

	p := startProc(t, env, args(wrongPIN, freeAddr(t))...)
	if code := p.wait(t, 20*time.Second); code == 0 {
		t.Fatalf("hsmkms with a wrong PIN exited 0\nstderr:\n%s", p.stderr)
	}
	stderr := p.stderr.String()
	if !strings.Contains(strings.ToLower(stderr), "login") || !strings.Contains(stderr, "PIN_INCORRECT") {
		t.Errorf("stderr does not report the failed login:\n%s", stderr)
	}
	if strings.Contains(stderr, "000000-not-the-pin") {
		t.Errorf("stderr echoes the PIN:\n%s", stderr)
	}

	// Control: the right PIN, same config, serves the configured principal.
	addr := freeAddr(t)
	p = startProc(t, env, args(filepath.Join(tokDir, "user.pin"), addr)...)
	endpoint := "http://" + addr
	p.waitHealthy(t, endpoint)
	c := newClient(endpoint, "AKIDALICE", "alice-secret", nil)
	md := createKey(t, c)
	if got := aws.ToString(md.AWSAccountId); got != mainAccount {
		t.Errorf("key account %q, want %q", got, mainAccount)
	}
	// No dev credentials without --dev.
	_, err = newClient(endpoint, "test", "test", nil).ListKeys(ctxT(t), &kms.ListKeysInput{})
	wantAPIError(t, err, "UnrecognizedClientException", 400)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Errorf("exit status %d after SIGTERM\nstderr:\n%s", code, p.stderr)
	}
}

// TestBinarySecondServeOnOneDataDir: a second `hsmkms serve` on a data
// directory another one is serving stops at once and says why, naming the
// store file; the first goes on serving.
func TestBinarySecondServeOnOneDataDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first, endpoint := startDev(t, dir)

	second := startProc(t, cleanEnv(), "serve", "--dev", "--data-dir", dir, "--listen", freeAddr(t), "--log-level", "warn")
	if code := second.wait(t, 30*time.Second); code == 0 {
		t.Fatalf("a second serve on the same data directory exited 0\nstderr:\n%s", second.stderr)
	}
	stderr := second.stderr.String()
	for _, want := range []string{filepath.Join(dir, "hsmkms.db"), "another hsmkms"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("the second serve's stderr does not say %q:\n%s", want, stderr)
		}
	}

	c := newClient(endpoint, "test", "test", nil)
	md := createKey(t, c)
	if got := decrypt(t, c, encrypt(t, c, aws.ToString(md.KeyId), []byte("still here"), nil), nil).Plaintext; string(got) != "still here" {
		t.Errorf("the first server after the refused second: round trip gave %q", got)
	}
	select {
	case <-first.done:
		t.Fatalf("the first server exited: %v\nstderr:\n%s", first.err, first.stderr)
	default:
	}
}

// TestBinaryVersionAndHelp: the binary reports the version it was stamped
// with at build (hsmkmsBinary stamps it as the Makefile does), and prints its
// usage when asked, with status 0.
func TestBinaryVersionAndHelp(t *testing.T) {
	t.Parallel()
	bin := hsmkmsBinary(t)
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatalf("hsmkms version: %v", err)
	}
	if binVersion == "" || string(out) != "hsmkms "+binVersion+"\n" {
		t.Errorf("hsmkms version printed %q, want %q", out, "hsmkms "+binVersion+"\n")
	}
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		out, err := exec.Command(bin, args...).Output()
		if err != nil || !strings.Contains(string(out), "hsmkms serve") {
			t.Errorf("hsmkms %s: %v, stdout %q", args[0], err, out)
		}
	}
	cmd := exec.Command(bin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), "hsmkms serve") {
		t.Errorf("hsmkms without a command: %v, stderr %q; want status 1 and the usage", err, &stderr)
	}
}
