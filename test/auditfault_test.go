package test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/hsmkms/hsmkms/audit"
	"github.com/hsmkms/hsmkms/service"
	"github.com/hsmkms/hsmkms/service/api"
)

// smallDiskServer is `hsmkms serve --dev` with its audit log on a real tmpfs
// of its own.
type smallDiskServer struct {
	*proc
	endpoint string
	pid      int    // the server's (p is the shell that holds the namespace)
	disk     string // the tmpfs, as the test sees it (through /proc/PID/root)
	saved    string // where the tmpfs's audit files are copied once the server exits
}

// startDevOnSmallDisk runs `hsmkms serve --dev` on dataDir with its audit log
// on a real tmpfs of the given size, mounted in a mount namespace of its own
// (and a user namespace too when the test is not root). A shell holds the
// namespace, starts the server, and when the server exits copies the audit
// files out of the tmpfs to saved.
func startDevOnSmallDisk(t *testing.T, dataDir, size string, args ...string) *smallDiskServer {
	t.Helper()
	mnt, saved := t.TempDir(), t.TempDir()
	addr := freeAddr(t)
	flags := "-Urm"
	if os.Geteuid() == 0 {
		flags = "-m"
	}
	script := `set -e; mount -t tmpfs -o size=` + size + ` hsmkms-audit "$1"; mnt=$1; out=$2; shift 2
"$@" & echo $! > "$out/pid"; wait $! || true; cp "$mnt"/audit.log* "$out"/`
	all := append([]string{flags, "--propagation", "private", "sh", "-c", script, "sh", mnt, saved,
		hsmkmsBinary(t), "serve", "--dev", "--data-dir", dataDir, "--listen", addr, "--log-level", "warn",
		"--audit-file", filepath.Join(mnt, "audit.log")}, args...)
	p := &proc{stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command("unshare", all...)
	p.cmd.Env = cleanEnv()
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start hsmkms in a mount namespace: %v", err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	s := &smallDiskServer{proc: p, endpoint: "http://" + addr, saved: saved}
	t.Cleanup(func() {
		if s.pid != 0 {
			syscall.Kill(s.pid, syscall.SIGKILL)
		}
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	p.waitHealthy(t, s.endpoint)
	pid, err := os.ReadFile(filepath.Join(saved, "pid"))
	if err == nil {
		s.pid, err = strconv.Atoi(strings.TrimSpace(string(pid)))
	}
	if err != nil {
		t.Fatalf("the server's pid: %v", err)
	}
	s.disk = filepath.Join("/proc", strconv.Itoa(p.cmd.Process.Pid), "root", mnt)
	if _, err := os.Stat(filepath.Join(s.disk, "audit.log")); err != nil {
		t.Fatalf("the server's tmpfs: %v", err)
	}
	return s
}

// stop stops the server cleanly and returns the path of its audit log, copied
// out of the tmpfs.
func (s *smallDiskServer) stop(t *testing.T) string {
	t.Helper()
	if err := syscall.Kill(s.pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	s.wait(t, 30*time.Second)
	s.pid = 0
	return filepath.Join(s.saved, "audit.log")
}

// fillDisk writes a file in dir until the filesystem is full.
func fillDisk(t *testing.T, dir string) string {
	t.Helper()
	name := filepath.Join(dir, "filler")
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return name
			}
			t.Fatal(err)
		}
	}
}

func readyStatus(t *testing.T, endpoint string) int {
	t.Helper()
	resp, err := http.Get(endpoint + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// auditEvents reads the records (not checkpoints) of an audit log file.
func auditEvents(t *testing.T, file string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		if _, cp := m["checkpoint"]; !cp {
			out = append(out, m)
		}
	}
	return out
}

// With the audit log on a full filesystem, CreateKey, CancelKeyDeletion and
// PutKeyPolicy once answered 500 and yet took effect, with no record of
// them. Now a change whose record cannot be written is not made; /readyz
// says the server is not ready; and when space returns, the log recovers by
// itself and records the outage.
func TestNoChangeWithoutItsAuditRecord(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	srv := startDevOnSmallDisk(t, dataDir, "1m", "--audit-min-free-bytes", "65536")
	endpoint := srv.endpoint
	c := newClient(endpoint, "test", "test", nil)
	k := createKey(t, c)
	doomed := createKey(t, c)
	if _, err := c.ScheduleKeyDeletion(ctxT(t), &kms.ScheduleKeyDeletionInput{KeyId: doomed.KeyId, PendingWindowInDays: aws.Int32(7)}); err != nil {
		t.Fatal(err)
	}
	policy, err := c.GetKeyPolicy(ctxT(t), &kms.GetKeyPolicyInput{KeyId: k.KeyId})
	if err != nil {
		t.Fatal(err)
	}

	filler := fillDisk(t, srv.disk)
	// The log file's last page may still hold a record or two: reads use
	// it up, until one fails for want of space.
	for i := 0; ; i++ {
		_, err := c.ListKeys(ctxT(t), &kms.ListKeysInput{})
		if err != nil {
			wantAPIError(t, err, "KMSInternalException", 500)
			break
		}
		if i == 20 {
			t.Fatal("20 records were written to a full disk")
		}
	}
	permissive := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}]}`
	_, err = c.CreateKey(ctxT(t), &kms.CreateKeyInput{})
	wantAPIError(t, err, "KMSInternalException", 500)
	_, err = c.CancelKeyDeletion(ctxT(t), &kms.CancelKeyDeletionInput{KeyId: doomed.KeyId})
	wantAPIError(t, err, "KMSInternalException", 500)
	_, err = c.PutKeyPolicy(ctxT(t), &kms.PutKeyPolicyInput{KeyId: k.KeyId, Policy: aws.String(permissive),
		BypassPolicyLockoutSafetyCheck: true})
	wantAPIError(t, err, "KMSInternalException", 500)
	if got := readyStatus(t, endpoint); got != http.StatusServiceUnavailable {
		t.Errorf("/readyz answers %d with the audit log unwritable", got)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(45 * time.Second)
	for readyStatus(t, endpoint) != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatalf("the audit log did not recover with space free again\n%s", srv.stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// None of the refused changes happened.
	keys, err := c.ListKeys(ctxT(t), &kms.ListKeysInput{})
	if err != nil {
		t.Fatal(err)
	}
	if len(keys.Keys) != 2 {
		t.Errorf("%d keys exist, want the 2 made before the disk filled", len(keys.Keys))
	}
	d, err := c.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: doomed.KeyId})
	if err != nil || d.KeyMetadata.KeyState != types.KeyStatePendingDeletion {
		t.Errorf("the key whose deletion was cancelled without a record: %+v, %v", d, err)
	}
	got, err := c.GetKeyPolicy(ctxT(t), &kms.GetKeyPolicyInput{KeyId: k.KeyId})
	if err != nil || aws.ToString(got.Policy) != aws.ToString(policy.Policy) {
		t.Errorf("the key policy changed without a record: %v", err)
	}
	// A change now works, and is recorded.
	createKey(t, c)

	logCopy := srv.stop(t)
	out, err := exec.Command(hsmkmsBinary(t), "audit", "verify", "--public-key",
		filepath.Join(dataDir, "audit-public-key.pem"), logCopy).CombinedOutput()
	if err != nil {
		t.Fatalf("audit verify: %v\n%s", err, out)
	}
	var resumed map[string]any
	creates := 0
	for _, e := range auditEvents(t, logCopy) {
		switch e["eventName"] {
		case "AuditLogResumed":
			resumed = e
		case "CreateKey", "CancelKeyDeletion", "PutKeyPolicy":
			if e["errorCode"] != nil {
				t.Errorf("a record of a refused change reached the log: %v", e)
			}
			if e["eventName"] == "CreateKey" {
				creates++
			}
		}
	}
	if creates != 6 { // three keys, each an intent and an outcome
		t.Errorf("%d CreateKey records, want 6", creates)
	}
	extra, _ := resumed["additionalEventData"].(map[string]any)
	if n, _ := extra["refusedRequests"].(float64); n < 3 {
		t.Errorf("outage record %v, want at least the 3 refused changes counted", resumed)
	}
}

// largestFileUnder returns the size of the largest regular file under dir,
// skipping skip.
func largestFileUnder(t *testing.T, dir, skip string) int64 {
	t.Helper()
	var largest int64
	err := filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if info.IsDir() && path == skip {
			return filepath.SkipDir
		}
		if info.Mode().IsRegular() && info.Size() > largest {
			largest = info.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return largest
}

func setFileSizeLimit(t *testing.T, pid int, limit string) {
	t.Helper()
	out, err := exec.Command("prlimit", "--pid", strconv.Itoa(pid), "--fsize="+limit+":").CombinedOutput()
	if err != nil {
		t.Fatalf("prlimit --fsize=%s: %v\n%s", limit, err, out)
	}
}

// When the intent of a change is on record but its outcome cannot be
// written (the disk filled in between), the change has happened: the caller
// is told so, rather than a 500 that would make it retry and create a
// second key; the log is then unusable until it recovers, and the intent
// without an outcome is there for auditors. The fault is real: the server's
// file size limit (RLIMIT_FSIZE) is set so that the intent fits and the
// outcome does not.
func TestCommittedChangeWhoseOutcomeIsNotRecorded(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	addr := freeAddr(t)
	// The log is filled by a flood of ListKeys, which AWS's quota (100 a
	// second) would throttle: no rate limits.
	p := startProc(t, cleanEnv(), "serve", "--dev", "--data-dir", dataDir, "--listen", addr, "--log-level", "warn",
		"--audit-checkpoint-every", "1000000", "--audit-checkpoint-interval", "1h", "--rate-limits", "off")
	endpoint := "http://" + addr
	p.waitHealthy(t, endpoint)
	c := newClient(endpoint, "test", "test", nil)
	createKey(t, c)
	logFile := filepath.Join(dataDir, "audit", "audit.log")
	events := auditEvents(t, logFile)
	intentLen := 0
	data, _ := os.ReadFile(logFile)
	for _, line := range bytes.Split(data, []byte("\n")) {
		if bytes.Contains(line, []byte(`"additionalEventData":{"phase":"intent"}`)) {
			intentLen = len(line) + 1
		}
	}
	if intentLen == 0 || len(events) != 2 {
		t.Fatalf("no CreateKey intent record in %s", data)
	}
	// The log must be the largest file the server writes, so the limit
	// touches nothing else (the store, the token's files).
	for {
		st, err := os.Stat(logFile)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > 256<<10 && st.Size() > 4*largestFileUnder(t, dataDir, filepath.Dir(logFile)) {
			break
		}
		for range 50 {
			if _, err := c.ListKeys(ctxT(t), &kms.ListKeysInput{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	st, _ := os.Stat(logFile)
	// Room for the intent (its seq may have a few more digits), not for
	// the outcome that follows it (over 500 bytes).
	setFileSizeLimit(t, p.cmd.Process.Pid, strconv.FormatInt(st.Size()+int64(intentLen)+64, 10))
	out, err := c.CreateKey(ctxT(t), &kms.CreateKeyInput{Description: aws.String("committed")})
	if err != nil {
		t.Fatalf("CreateKey whose change committed: %v\n%s", err, p.stderr)
	}
	arn := aws.ToString(out.KeyMetadata.Arn)
	_, err = c.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: out.KeyMetadata.KeyId})
	wantAPIError(t, err, "KMSInternalException", 500)
	if got := readyStatus(t, endpoint); got != http.StatusServiceUnavailable {
		t.Errorf("/readyz answers %d with the audit log broken", got)
	}

	setFileSizeLimit(t, p.cmd.Process.Pid, "unlimited")
	deadline := time.Now().Add(45 * time.Second)
	for readyStatus(t, endpoint) != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatalf("the audit log did not recover\n%s", p.stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	d, err := c.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: out.KeyMetadata.KeyId})
	if err != nil || aws.ToString(d.KeyMetadata.Description) != "committed" {
		t.Fatalf("the key whose creation was answered: %+v, %v", d, err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.wait(t, 20*time.Second)
	if out, err := exec.Command(hsmkmsBinary(t), "audit", "verify", "--public-key",
		filepath.Join(dataDir, "audit-public-key.pem"), logFile).CombinedOutput(); err != nil {
		t.Fatalf("audit verify: %v\n%s", err, out)
	}
	var intentID string
	outcomes := map[string]bool{}
	resumed := false
	for _, e := range auditEvents(t, logFile) {
		extra, _ := e["additionalEventData"].(map[string]any)
		rs, _ := e["resources"].([]any)
		switch {
		case e["eventName"] == "AuditLogResumed":
			resumed = true
		case extra["phase"] == "intent" && len(rs) == 1 && rs[0].(map[string]any)["ARN"] == arn:
			intentID, _ = e["eventID"].(string)
		case extra["intentEventId"] != nil:
			outcomes[extra["intentEventId"].(string)] = true
		}
	}
	if intentID == "" || outcomes[intentID] || !resumed {
		t.Errorf("want the intent of %s on record without an outcome, then the outage record: intent %q, outcome %v, resumed %v",
			arn, intentID, outcomes[intentID], resumed)
	}
}

// auditedServer starts an in-process server whose audit log is a real
// audit.Writer on file, signed by the token's audit key.
func auditedServer(t *testing.T, file string) (*server, *audit.Writer, []byte) {
	t.Helper()
	var w *audit.Writer
	var pub []byte
	s := startServerAudited(t, nil, func(svc *service.Service) api.Auditor {
		signer, p, err := svc.AuditKey(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		pub = p
		if w, err = audit.Open(audit.Config{File: file, Signer: signer, PublicKey: pub}); err != nil {
			t.Fatal(err)
		}
		return w
	})
	return s, w, pub
}

// Unauthenticated requests once wrote whatever their headers held into the
// audit log (a 60 KB User-Agent and a 3 KB bogus X-Amz-Target made a 63 KB
// record) as fast as they came. Now a record of failed authentication has a
// bounded size and fixed names, and such records are rate-limited per
// source, with the dropped ones counted in a summary record.
func TestUnauthenticatedRequestsCannotFillTheAuditLog(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "audit.log")
	s, w, pub := auditedServer(t, file)
	ua := strings.Repeat("U", 60<<10)
	target := "TrentService." + strings.Repeat("X", 3<<10)
	const requests = 400
	errs := make(chan error, 4)
	for g := range 4 {
		go func() {
			for i := range requests / 4 {
				req := s.kmsRequest(t, target, []byte("{}"))
				req.Header.Set("User-Agent", ua)
				req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDATTACK"+strconv.Itoa(g*1000+i)+
					"/20261204/us-east-1/kms/aws4_request, SignedHeaders=host;x-amz-date, Signature=00")
				req.Header.Set("X-Amz-Date", time.Now().UTC().Format("20060102T150405Z"))
				resp, err := s.http.Do(req)
				if err != nil {
					errs <- err
					return
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusBadRequest {
					errs <- errors.New("status " + resp.Status)
					return
				}
			}
			errs <- nil
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := s.API.FlushAuditSummaries(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Verify([]string{file}, pub); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(file)
	written, suppressed := 0, 0
	for _, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
		if len(line) > 4<<10 {
			t.Errorf("a %d-byte record", len(line))
		}
	}
	for _, e := range auditEvents(t, file) {
		extra, _ := e["additionalEventData"].(map[string]any)
		n, _ := extra["suppressedAuthFailureRecords"].(float64)
		suppressed += int(n)
		switch e["eventName"] {
		case "UnknownOperation":
			written++
			if ua, _ := e["userAgent"].(string); len(ua) > 512 {
				t.Errorf("userAgent of %d bytes", len(ua))
			}
		case "AuthFailureRecordsSuppressed":
			if e["sourceIPAddress"] != "127.0.0.1" {
				t.Errorf("summary %v", e)
			}
		default:
			t.Errorf("unexpected record %v", e)
		}
	}
	// 127.0.0.1 may write its burst of 20 records and 5 a second after it.
	if written < 20 || written > 100 || written+suppressed != requests {
		t.Errorf("%d records written and %d counted as dropped, of %d requests", written, suppressed, requests)
	}
	t.Logf("%d requests: %d records (%d bytes of log), %d dropped and summarised", requests, written, len(data), suppressed)
}
