package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBinaryAuditVerify: the dev server writes its audit log and the audit
// key's public key under the data directory; after a clean stop (which
// signs a final checkpoint) `hsmkms audit verify` accepts the log, and
// refuses it, naming the line, once a record is altered.
func TestBinaryAuditVerify(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p, endpoint := startDev(t, dir)
	c := newClient(endpoint, "test", "test", nil)
	k := createKey(t, c)
	encrypt(t, c, *k.KeyId, []byte("logged, never its plaintext"), nil)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.stderr)
	}
	logFile := filepath.Join(dir, "audit", "audit.log")
	pub := filepath.Join(dir, "audit-public-key.pem")
	verify := func(file string) (string, error) {
		out, err := exec.Command(hsmkmsBinary(t), "audit", "verify", "--public-key", pub, file).CombinedOutput()
		return string(out), err
	}
	if out, err := verify(logFile); err != nil || !strings.Contains(out, "OK") {
		t.Fatalf("verify of the server's log: %v\n%s", err, out)
	}
	data, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "logged, never its plaintext") {
		t.Fatal("plaintext in the audit log")
	}
	bad := filepath.Join(dir, "tampered.log")
	if err := os.WriteFile(bad, []byte(strings.Replace(string(data), `"eventName":"Encrypt"`, `"eventName":"Decrypt"`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := verify(bad)
	// Line 1 and 2 are CreateKey's intent and outcome; line 3 the Encrypt.
	if err == nil || !strings.Contains(out, "TAMPERED") || !strings.Contains(out, "line 3") {
		t.Fatalf("verify of a tampered log: %v\n%s", err, out)
	}
}
