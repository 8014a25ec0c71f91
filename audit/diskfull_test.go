package audit

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// diskFullDirEnv names, in the child process, the small tmpfs the disk-full
// test writes to.
const diskFullDirEnv = "HSMKMS_AUDIT_TEST_TMPFS"

// inSmallTmpfs re-runs the test named by t in a child process with a private
// mount namespace in which dir is a real tmpfs of size bytes, and fails t if
// the child fails. It returns true in the child, which then runs the body.
// Run as root, the child is in a mount namespace of its own; otherwise it
// is also in a user namespace of its own (unprivileged user namespaces must
// be enabled; the test fails, naming the reason, if they are not).
func inSmallTmpfs(t *testing.T, size string) (dir string, child bool) {
	if d := os.Getenv(diskFullDirEnv); d != "" {
		return d, true
	}
	dir = t.TempDir()
	flags := "-Urm"
	if os.Geteuid() == 0 {
		flags = "-m"
	}
	script := `mount -t tmpfs -o size=` + size + ` hsmkms-test "$1" && shift && exec "$@"`
	cmd := exec.Command("unshare", flags, "--propagation", "private", "sh", "-c", script, "sh", dir,
		os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), diskFullDirEnv+"="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the test, run in a private mount namespace with a %s tmpfs at %s: %v\n%s", size, dir, err, out)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("the child did not run the test:\n%s", out)
	}
	return dir, false
}

type stepClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *stepClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *stepClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// A write that fails on a full disk breaks the log: nothing is recorded and
// Err says so, so that no change is made without its record. When there is
// room again the log recovers by itself, and its first record tells how long
// it was out and how many requests it refused. The disk is a real tmpfs.
func TestDiskFullBreaksTheLogUntilThereIsRoom(t *testing.T) {
	dir, child := inSmallTmpfs(t, "256k")
	if !child {
		return
	}
	filler := filepath.Join(dir, "filler")
	fill(t, filler, 256<<10) // until the filesystem is full
	if err := os.Truncate(filler, 200<<10); err != nil {
		t.Fatal(err)
	}
	s := newSigner(t)
	clock := &stepClock{now: time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)}
	cfg := Config{File: filepath.Join(dir, "audit.log"), Signer: s, PublicKey: s.spki, Logger: quiet,
		CheckpointEvery: 1 << 20, Now: clock.Now, MinFreeBytes: 16 << 10}
	w := open(t, cfg)
	if err := w.Ready(); err != nil {
		t.Fatalf("Ready with room on the disk: %v", err)
	}

	// Records until the disk is full.
	var werr error
	written := 0
	for written < 10000 {
		if werr = w.Write(encryptEvent(written)); werr != nil {
			break
		}
		written++
	}
	if !errors.Is(werr, syscall.ENOSPC) {
		t.Fatalf("after %d records Write = %v, want ENOSPC", written, werr)
	}
	if err := w.Err(); err == nil {
		t.Fatal("Err is nil after a write failed on a full disk: changes would be made without their records")
	}
	if err := w.Ready(); err == nil {
		t.Fatal("Ready is nil with the log broken")
	}
	if !w.Broken() {
		t.Fatal("Broken is false with the log broken (hsmkms_audit_broken would say 0)")
	}
	// Still broken, however often it is asked, until the retry is due and
	// there is room. (Err counts the requests refused; Ready does not.)
	refused := 1
	for range 3 {
		if err := w.Write(encryptEvent(0)); err == nil {
			t.Fatal("Write succeeded on a broken log")
		}
		if w.Err() == nil {
			t.Fatal("Err is nil on a broken log")
		}
		refused++
	}
	clock.Add(2 * time.Second) // the retry is due, but the disk is still full
	if w.Err() == nil {
		t.Fatal("Err is nil with the disk still full")
	}
	refused++

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if w.Err() == nil {
		t.Fatal("the log recovered before its retry was due")
	}
	refused++
	clock.Add(5 * time.Second)
	if err := w.Err(); err != nil {
		t.Fatalf("Err with room again: %v", err)
	}
	if err := w.Ready(); err != nil {
		t.Fatalf("Ready with room again: %v", err)
	}
	if w.Broken() {
		t.Fatal("Broken is still true after the log recovered")
	}
	writeN(t, w, 3)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	lines := readLines(t, cfg.File)
	rep, err := Verify([]string{cfg.File}, s.spki)
	if err != nil {
		t.Fatalf("the log does not verify: %v (%+v)", err, rep)
	}
	if rep.Records != written+1+3 {
		t.Errorf("%d records, want the %d written before the disk filled, the outage record and 3", rep.Records, written)
	}
	var resumed struct {
		EventName, EventType string
		AdditionalEventData  struct {
			UnavailableSince string
			RefusedRequests  int
			Error            string
		}
	}
	if err := json.Unmarshal(lines[written], &resumed); err != nil {
		t.Fatal(err)
	}
	a := resumed.AdditionalEventData
	if resumed.EventName != EventLogResumed || resumed.EventType != EventTypeService ||
		a.UnavailableSince != "2026-12-04T10:00:00Z" || a.RefusedRequests != refused ||
		!strings.Contains(a.Error, "no space left on device") {
		t.Errorf("outage record %s (want %d refused)", lines[written], refused)
	}
}

// fill writes zeros to name until it holds n bytes or the disk is full.
func fill(t *testing.T, name string, n int) {
	t.Helper()
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for done := 0; done < n; done += len(buf) {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			t.Fatal(err)
		}
	}
}

// A failure that leaves the file in an unknown state is not retried: the
// file changed under the writer.
func TestBrokenLogWhoseFileChangedStaysBroken(t *testing.T) {
	dir, child := inSmallTmpfs(t, "64k")
	if !child {
		return
	}
	s := newSigner(t)
	clock := &stepClock{now: time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)}
	cfg := Config{File: filepath.Join(dir, "audit.log"), Signer: s, PublicKey: s.spki, Logger: quiet, Now: clock.Now}
	w := open(t, cfg)
	filler := filepath.Join(dir, "filler")
	fill(t, filler, 64<<10)
	var werr error
	for i := 0; werr == nil && i < 1000; i++ {
		werr = w.Write(encryptEvent(i))
	}
	if werr == nil {
		t.Fatal("no write failed on a full disk")
	}
	os.Remove(filler)
	f, err := os.OpenFile(cfg.File, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"forged":true}` + "\n")
	f.Close()
	clock.Add(time.Minute)
	if err := w.Err(); err == nil || !strings.Contains(err.Error(), "changed under the writer") {
		t.Fatalf("Err = %v, want a permanent failure: the file changed under the writer", err)
	}
	clock.Add(time.Hour)
	if w.Err() == nil {
		t.Fatal("a log whose file changed recovered")
	}
}
