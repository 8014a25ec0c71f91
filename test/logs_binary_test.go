package test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kms"
)

// accessLines returns the access log records on stderr.
func accessLines(t *testing.T, stderr string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(stderr, "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "request" {
			out = append(out, rec)
		}
	}
	return out
}

// TestBinaryAccessLogAndLevelReload: each request is one access log line
// with its id, operation, principal, key ARN, outcome, status and duration;
// the config file's log level applies at start and SIGHUP changes it.
func TestBinaryAccessLogAndLevelReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "hsmkms.yaml")
	write := func(level string) {
		t.Helper()
		if err := os.WriteFile(cfg+".tmp", []byte("version: v1\nlog_level: "+level+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(cfg+".tmp", cfg); err != nil {
			t.Fatal(err)
		}
	}
	write("warn")
	addr := freeAddr(t)
	p := startProc(t, cleanEnv(), "serve", "--dev", "--config", cfg, "--data-dir", filepath.Join(dir, "data"), "--listen", addr)
	endpoint := "http://" + addr
	p.waitHealthy(t, endpoint)
	c := newClient(endpoint, mainAKID, mainSecret, nil)
	k := createKey(t, c)
	if n := len(accessLines(t, p.stderr.String())); n != 0 {
		t.Fatalf("%d access log lines at level warn", n)
	}
	write("info")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(p.stderr.String(), "SIGHUP: log level changed") {
		if time.Now().After(deadline) {
			t.Fatalf("the level did not change on SIGHUP\n%s", p.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	encrypt(t, c, *k.KeyId, []byte("x"), nil)
	_, err := c.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: &[]string{"alias/none"}[0]})
	wantAPIError(t, err, "NotFoundException", 400)
	// A line is written once its response is: wait for the second.
	var lines []map[string]any
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if lines = accessLines(t, p.stderr.String()); len(lines) >= 2 {
			break
		}
	}
	if len(lines) != 2 {
		t.Fatalf("%d access log lines after two requests at level info, want 2\n%s", len(lines), p.stderr)
	}
	enc, miss := lines[0], lines[1]
	if enc["operation"] != "Encrypt" || enc["outcome"] != "ok" || enc["status"] != float64(200) ||
		enc["principal"] != "arn:aws:iam::111122223333:root" || enc["requestId"] == "" || enc["durationMs"] == nil {
		t.Errorf("Encrypt's access log line: %v", enc)
	}
	if arns, _ := enc["keyArn"].([]any); len(arns) != 1 || arns[0] != keyARN(mainAccount, *k.KeyId) {
		t.Errorf("Encrypt's key ARN: %v", enc["keyArn"])
	}
	if miss["operation"] != "DescribeKey" || miss["outcome"] != "NotFoundException" || miss["status"] != float64(400) {
		t.Errorf("DescribeKey's access log line: %v", miss)
	}
}

// TestBinaryStartupFailureIsALogRecord: a failure to start, once the
// command line is read, is a JSON log record like every other line.
func TestBinaryStartupFailureIsALogRecord(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "hsmkms.yaml")
	if err := os.WriteFile(cfg, []byte("version: v1\nprincipals:\n  - arn: not-an-arn\n    access_keys: [{id: A, secret_env: X}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, cleanEnv("X=y"), "serve", "--dev", "--config", cfg, "--data-dir", filepath.Join(dir, "data"), "--listen", freeAddr(t))
	if code := p.wait(t, 20*time.Second); code == 0 {
		t.Fatal("a bad principal ARN started")
	}
	lines := strings.Split(strings.TrimSpace(p.stderr.String()), "\n")
	var last map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil {
		t.Fatalf("the last line of stderr is not a JSON record: %q", lines[len(lines)-1])
	}
	if last["level"] != "ERROR" || !strings.Contains(last["err"].(string), "not-an-arn") {
		t.Errorf("the failure record: %v", last)
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "hsmkms:") {
			t.Errorf("a bare line besides the record: %q", l)
		}
	}
}

// TestBinaryDevContainer: --dev --dev-container listens on every address
// (the container image's dev target) and says, at start, that the port
// must be published on loopback only; without --dev it is refused.
func TestBinaryDevContainer(t *testing.T) {
	t.Parallel()
	port := strings.TrimPrefix(freeAddr(t), "127.0.0.1:")
	p := startProc(t, cleanEnv(), "serve", "--dev", "--dev-container", "--data-dir", t.TempDir(), "--listen", "0.0.0.0:"+port)
	p.waitHealthy(t, "http://127.0.0.1:"+port)
	p.waitLog(t, "publish the port on the host's loopback only")
	q := startProc(t, cleanEnv(), "serve", "--dev-container", "--data-dir", t.TempDir(), "--listen", "0.0.0.0:0")
	if code := q.wait(t, 20*time.Second); code == 0 || !strings.Contains(q.stderr.String(), "--dev-container goes with --dev") {
		t.Errorf("--dev-container without --dev: exit %d\n%s", code, q.stderr)
	}
}
