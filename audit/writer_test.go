package audit

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	s := newSigner(t)
	cfg := testConfig(t, s)
	w := open(t, cfg)
	writeN(t, w, 25)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify([]string{cfg.File}, s.spki)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Records != 25 || rep.FirstSeq != 1 || rep.LastSeq != 25 || rep.SignedSeq != 25 || rep.Unsigned != 0 || rep.Checkpoints != 1 || len(rep.Warnings) != 0 {
		t.Errorf("report = %+v", rep)
	}
	if rep.KeyFingerprint != Fingerprint(s.spki) {
		t.Errorf("fingerprint %s", rep.KeyFingerprint)
	}
}

// TestRecordShape checks one record against CloudTrail's event shape.
func TestRecordShape(t *testing.T) {
	t.Parallel()
	s := newSigner(t)
	cfg := testConfig(t, s)
	w := open(t, cfg)
	ev := encryptEvent(0)
	ev.EventTime = time.Date(2026, 1, 2, 4, 4, 5, 999_000_000, time.FixedZone("CET", 3600))
	if err := w.Write(ev); err != nil {
		t.Fatal(err)
	}
	denied := &Event{EventName: "Decrypt", ErrorCode: "AccessDeniedException", ErrorMessage: "not allowed"}
	if err := w.Write(denied); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, cfg.File)
	if len(lines) != 2 {
		t.Fatalf("%d lines", len(lines))
	}
	var got map[string]any
	if err := json.Unmarshal(lines[0], &got); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{
		"eventVersion": "1.08", "eventTime": "2026-01-02T03:04:05Z", "eventSource": "kms.amazonaws.com",
		"eventName": "Encrypt", "awsRegion": "us-east-1", "sourceIPAddress": "127.0.0.1",
		"requestID": "req-0", "readOnly": true, "eventType": "AwsApiCall", "recipientAccountId": "111122223333",
	} {
		if got[k] != want {
			t.Errorf("%s = %#v, want %#v", k, got[k], want)
		}
	}
	if id, _ := got["eventID"].(string); !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(id) {
		t.Errorf("eventID %q is not a UUID v4", id)
	}
	ui, _ := got["userIdentity"].(map[string]any)
	if ui["type"] != "IAMUser" || ui["arn"] != "arn:aws:iam::111122223333:user/alice" || ui["accessKeyId"] != "AKIAEXAMPLE" {
		t.Errorf("userIdentity = %v", ui)
	}
	res, _ := got["resources"].([]any)
	if len(res) != 1 || res[0].(map[string]any)["type"] != "AWS::KMS::Key" {
		t.Errorf("resources = %v", got["resources"])
	}
	if _, ok := got["errorCode"]; ok {
		t.Error("errorCode present on a successful request")
	}
	if v, ok := got["responseElements"]; !ok || v != nil {
		t.Errorf("responseElements = %v, %v; want null", v, ok)
	}
	chain, _ := got["chain"].(map[string]any)
	if chain["seq"] != 1.0 || chain["prev"] != zeroHash {
		t.Errorf("chain = %v", chain)
	}
	var second map[string]any
	if err := json.Unmarshal(lines[1], &second); err != nil {
		t.Fatal(err)
	}
	if second["errorCode"] != "AccessDeniedException" || second["errorMessage"] != "not allowed" ||
		second["userIdentity"].(map[string]any)["type"] != "Unknown" {
		t.Errorf("denied record = %s", lines[1])
	}
	if second["eventID"] == got["eventID"] {
		t.Error("two records share an eventID")
	}
	w.Close()
}

// TestFormatMatchesSpec checks lines against FORMAT.md, computing links,
// payload and fingerprint from the document's words, not the package's
// helpers.
func TestFormatMatchesSpec(t *testing.T) {
	t.Parallel()
	s := newSigner(t)
	cfg := testConfig(t, s)
	cfg.CheckpointEvery = 3
	w := open(t, cfg)
	writeN(t, w, 4)
	w.Close()
	lines := readLines(t, cfg.File)
	if len(lines) != 6 || !isCheckpoint(lines[3]) || !isCheckpoint(lines[5]) {
		t.Fatalf("lines:\n%s", bytes.Join(lines, []byte("\n")))
	}
	prev := "0000000000000000000000000000000000000000000000000000000000000000"
	for i, l := range lines {
		sum := sha256hex(l)
		if isCheckpoint(l) {
			var c struct {
				Checkpoint struct {
					Seq            uint64
					Head, Time     string
					KeyFingerprint string
					Signature      string
				}
			}
			if err := json.Unmarshal(l, &c); err != nil {
				t.Fatal(err)
			}
			cp := c.Checkpoint
			if cp.Head != prev {
				t.Errorf("line %d: head %s, want %s", i+1, cp.Head, prev)
			}
			if cp.KeyFingerprint != sha256hex(s.spki) {
				t.Errorf("line %d: keyFingerprint %s", i+1, cp.KeyFingerprint)
			}
			payload := "hsmkms audit checkpoint v1\nseq " + itoa(cp.Seq) + "\nhead " + cp.Head + "\ntime " + cp.Time + "\nkey " + cp.KeyFingerprint + "\n"
			if !verifySig(t, s, payload, cp.Signature) {
				t.Errorf("line %d: signature does not verify over the FORMAT.md payload", i+1)
			}
		} else {
			var r struct{ Chain struct{ Prev string } }
			if err := json.Unmarshal(l, &r); err != nil {
				t.Fatal(err)
			}
			if r.Chain.Prev != prev {
				t.Errorf("line %d: prev %s, want %s", i+1, r.Chain.Prev, prev)
			}
			if !bytes.HasSuffix(l, []byte(`,"chain":{"seq":`+itoa(uint64(i+1-i/4))+`,"prev":"`+prev+`"}}`)) {
				t.Errorf("line %d does not end with its chain link: %s", i+1, l)
			}
		}
		prev = sum
	}
}

func TestCheckpointEvery(t *testing.T) {
	t.Parallel()
	s := newSigner(t)
	cfg := testConfig(t, s)
	cfg.CheckpointEvery = 10
	w := open(t, cfg)
	writeN(t, w, 25)

	// Before Close: checkpoints after records 10 and 20; 5 unsigned.
	lines := readLines(t, cfg.File)
	if len(lines) != 27 {
		t.Fatalf("%d lines before Close, want 27", len(lines))
	}
	for i, l := range lines {
		if want := i+1 == 11 || i+1 == 22; isCheckpoint(l) != want {
			t.Errorf("line %d: checkpoint = %v, want %v", i+1, !want, want)
		}
	}
	rep, err := Verify([]string{cfg.File}, s.spki)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Unsigned != 5 || rep.SignedSeq != 20 || rep.Checkpoints != 2 || len(rep.Warnings) != 1 {
		t.Errorf("before Close: report = %+v", rep)
	}

	// Close adds the final checkpoint, over seq 25; a second Close adds none.
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(encryptEvent(0)); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Close = %v, want ErrClosed", err)
	}
	lines = readLines(t, cfg.File)
	if len(lines) != 28 || !isCheckpoint(lines[27]) || !bytes.Contains(lines[27], []byte(`"seq":25,`)) {
		t.Fatalf("after Close: %d lines, last %s", len(lines), lines[len(lines)-1])
	}
	rep, err = Verify([]string{cfg.File}, s.spki)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Unsigned != 0 || rep.SignedSeq != 25 || rep.Checkpoints != 3 || len(rep.Warnings) != 0 {
		t.Errorf("after Close: report = %+v", rep)
	}
}

func TestRotation(t *testing.T) {
	t.Parallel()
	s := newSigner(t)
	cfg := testConfig(t, s)
	cfg.MaxFileSize = 3000
	w := open(t, cfg)
	writeN(t, w, 40)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	files := logFiles(t, cfg.File)
	if len(files) < 4 {
		t.Fatalf("files = %v, want rotation", files)
	}
	name := regexp.MustCompile(`/audit\.log\.[0-9]{8}T[0-9]{6}Z\.[0-9]{12}$`)
	for _, f := range files[:len(files)-1] {
		if !name.MatchString(f) {
			t.Errorf("rotated name %s", f)
		}
		lines := readLines(t, f)
		if !isCheckpoint(lines[len(lines)-1]) {
			t.Errorf("%s does not end with a checkpoint", f)
		}
		if st, _ := os.Stat(f); st.Size() > cfg.MaxFileSize+2000 {
			t.Errorf("%s holds %d bytes", f, st.Size())
		}
	}
	rep, err := Verify(files, s.spki)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Files != len(files) || rep.Records != 40 || rep.LastSeq != 40 || rep.Unsigned != 0 || len(rep.Warnings) != 0 {
		t.Errorf("report = %+v", rep)
	}

	// A rotated file alone verifies, but says where it starts.
	rep, err = Verify(files[1:2], s.spki)
	if err != nil || rep.FirstSeq == 1 || len(rep.Warnings) != 1 {
		t.Errorf("second file alone: %+v, %v", rep, err)
	}

	cases := []struct {
		name     string
		files    []string
		wantFile string
	}{
		{"swapped", append([]string{files[1], files[0]}, files[2:]...), files[0]},
		{"middle file missing", append([]string{files[0]}, files[2:]...), files[2]},
		{"current before rotated", append([]string{files[len(files)-1]}, files[:len(files)-1]...), files[0]},
	}
	for _, c := range cases {
		_, err := Verify(c.files, s.spki)
		var ve *VerifyError
		if !errors.As(err, &ve) || !errors.Is(err, ErrSequence) || ve.File != c.wantFile || ve.Line != 1 {
			t.Errorf("%s: err = %v, want ErrSequence at %s:1", c.name, err, c.wantFile)
		}
	}
}

// TestResume reopens a log: the chain continues in the same file, or from
// the newest rotated file when the current one is missing or empty, and
// the records a crash left unsigned are covered by the next checkpoint.
func TestResume(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		crash bool                         // first writer never closed
		after func(t *testing.T, f string) // between the two writers
	}{
		{name: "clean"},
		{name: "after crash", crash: true},
		{name: "current file removed", after: func(t *testing.T, f string) {
			if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "current file empty", after: func(t *testing.T, f string) {
			if err := os.Truncate(f, 0); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := newSigner(t)
			cfg := testConfig(t, s)
			cfg.MaxFileSize = 3000
			w := open(t, cfg)
			writeN(t, w, 12)
			if c.crash {
				w.f.Close() // lose the fd, write nothing more, as a killed process would
			} else if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			first := logFiles(t, cfg.File)
			var lostSeqs int
			if c.after != nil {
				if len(first) < 2 {
					t.Fatalf("no rotation before reopening: %v", first)
				}
				lostSeqs = len(readLines(t, cfg.File)) - 1 // records only, the last line is the checkpoint
				c.after(t, cfg.File)
			}
			w = open(t, cfg)
			writeN(t, w, 5)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			files := logFiles(t, cfg.File)
			rep, err := Verify(files, s.spki)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Records != 17-lostSeqs || rep.Unsigned != 0 || len(rep.Warnings) != 0 {
				t.Errorf("report = %+v (files before reopen %v)", rep, first)
			}
			if c.after == nil && rep.LastSeq != 17 {
				t.Errorf("LastSeq = %d, want 17", rep.LastSeq)
			}
		})
	}
}

func TestConcurrentWriters(t *testing.T) {
	t.Parallel()
	s := newSigner(t)
	cfg := testConfig(t, s)
	cfg.CheckpointEvery = 64
	cfg.MaxFileSize = 64 << 10
	w := open(t, cfg)
	const goroutines, each = 8, 250
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				if err := w.Write(encryptEvent(g*each + i)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	files := logFiles(t, cfg.File)
	rep, err := Verify(files, s.spki)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Records != goroutines*each || rep.LastSeq != goroutines*each || rep.Unsigned != 0 || len(files) < 2 {
		t.Errorf("report = %+v, %d files", rep, len(files))
	}
	seen := map[string]bool{}
	for _, f := range files {
		for _, l := range readLines(t, f) {
			var r struct{ RequestID string }
			json.Unmarshal(l, &r)
			if r.RequestID != "" && seen[r.RequestID] {
				t.Errorf("request %s logged twice", r.RequestID)
			}
			seen[r.RequestID] = true
		}
	}
}

func TestOutOnly(t *testing.T) {
	t.Parallel()
	s := newSigner(t)
	var out bytes.Buffer
	w := open(t, Config{Out: &out, Signer: s, PublicKey: s.spki, CheckpointEvery: 4})
	writeN(t, w, 10)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "stdout.log")
	if err := os.WriteFile(f, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify([]string{f}, s.spki)
	if err != nil || rep.Records != 10 || rep.Checkpoints != 3 || rep.Unsigned != 0 {
		t.Errorf("report = %+v, %v", rep, err)
	}
}

func TestFileAndOutGetTheSameLines(t *testing.T) {
	t.Parallel()
	s := newSigner(t)
	cfg := testConfig(t, s)
	var out bytes.Buffer
	cfg.Out = &out
	w := open(t, cfg)
	writeN(t, w, 7)
	w.Close()
	file, _ := os.ReadFile(cfg.File)
	if !bytes.Equal(file, out.Bytes()) || len(file) == 0 {
		t.Errorf("file and Out differ:\n%s\n---\n%s", file, out.Bytes())
	}
}

type failingWriter struct{ err error }

func (f failingWriter) Write([]byte) (int, error) { return 0, f.err }

func TestWriteFailures(t *testing.T) {
	t.Parallel()
	t.Run("Out fails", func(t *testing.T) {
		t.Parallel()
		s := newSigner(t)
		boom := errors.New("pipe closed")
		w := open(t, Config{Out: failingWriter{boom}, Signer: s, PublicKey: s.spki})
		for i := range 2 { // the second Write fails too: Out's state is unknown
			if err := w.Write(encryptEvent(i)); !errors.Is(err, boom) {
				t.Errorf("Write %d = %v, want %v", i, err, boom)
			}
		}
		if err := w.Close(); !errors.Is(err, boom) {
			t.Errorf("Close = %v, want %v", err, boom)
		}
	})
	t.Run("directory gone at rotation", func(t *testing.T) {
		t.Parallel()
		s := newSigner(t)
		cfg := testConfig(t, s)
		cfg.File = filepath.Join(t.TempDir(), "sub", "audit.log")
		os.Mkdir(filepath.Dir(cfg.File), 0o700)
		cfg.MaxFileSize = 1
		w := open(t, cfg)
		writeN(t, w, 1)
		if err := os.RemoveAll(filepath.Dir(cfg.File)); err != nil {
			t.Fatal(err)
		}
		if err := w.Write(encryptEvent(1)); err == nil {
			t.Error("Write succeeded though the log could not be rotated")
		}
		w.Close()
	})
}

func TestSignerChecks(t *testing.T) {
	t.Parallel()
	s, other := newSigner(t), newSigner(t)
	cfg := testConfig(t, s)
	cfg.PublicKey = other.spki
	if _, err := Open(cfg); err == nil {
		t.Error("Open accepted a signer that does not match PublicKey")
	}
	cfg = testConfig(t, s)
	cfg.Signer = rawSigner{s}
	if _, err := Open(cfg); err == nil {
		t.Error("Open accepted raw r||s signatures")
	}
	cfg = testConfig(t, s)
	s.fail.Store(true)
	if _, err := Open(cfg); !errors.Is(err, errSignerDown) {
		t.Errorf("Open with a failing signer = %v", err)
	}
}

// rawSigner returns PKCS#11's r||s instead of DER.
type rawSigner struct{ s *keySigner }

func (r rawSigner) Sign(d []byte) ([]byte, error) {
	x, y, err := ecdsa.Sign(rand.Reader, r.s.key, d)
	if err != nil {
		return nil, err
	}
	sig := make([]byte, 64)
	x.FillBytes(sig[:32])
	y.FillBytes(sig[32:])
	return sig, nil
}

// TestCheckpointFailure: records go on while the signer is down, up to
// twice CheckpointEvery unsigned records; then Write refuses until a
// checkpoint succeeds.
func TestCheckpointFailure(t *testing.T) {
	t.Parallel()
	s := newSigner(t)
	cfg := testConfig(t, s)
	cfg.CheckpointEvery = 5
	w := open(t, cfg)
	s.fail.Store(true)
	writeN(t, w, 10)
	if err := w.Write(encryptEvent(10)); !errors.Is(err, errSignerDown) {
		t.Fatalf("Write with 10 unsigned records = %v, want %v", err, errSignerDown)
	}
	s.fail.Store(false)
	writeN(t, w, 1)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify([]string{cfg.File}, s.spki)
	if err != nil || rep.Records != 11 || rep.Checkpoints != 2 || rep.Unsigned != 0 {
		t.Errorf("report = %+v, %v", rep, err)
	}
}

// Err says up front whether the log can take records.
func TestErrReportsAnUnusableLog(t *testing.T) {
	w := open(t, testConfig(t, newSigner(t)))
	if err := w.Err(); err != nil {
		t.Fatalf("Err of an open log: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Err(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Err after Close = %v, want ErrClosed", err)
	}
}

// Retention deletes the oldest rotated files beyond RetainFiles, records each
// deletion in the log, and never deletes a file that a signed checkpoint does
// not seal; what remains still verifies, from where it starts.
func TestRetention(t *testing.T) {
	t.Parallel()
	s := newSigner(t)
	cfg := testConfig(t, s)
	cfg.MaxFileSize = 2000
	cfg.RetainFiles = 2
	w := open(t, cfg)
	writeN(t, w, 30)
	files := logFiles(t, cfg.File)
	if len(files) != 3 {
		t.Fatalf("files = %v, want 2 rotated files and the current one", files)
	}
	rep, err := Verify(files, s.spki)
	if err != nil || rep.FirstSeq == 1 {
		t.Fatalf("the retained files: %+v, %v", rep, err)
	}
	deletions := 0
	for _, f := range files {
		for _, l := range readLines(t, f) {
			if bytes.Contains(l, []byte(`"eventName":"`+EventFilesDeleted+`"`)) {
				deletions++
				if !bytes.Contains(l, []byte(`"deletedFiles":[{"file":"audit.log.`)) {
					t.Errorf("deletion record %s", l)
				}
			}
		}
	}
	if deletions == 0 {
		t.Error("no record of the deleted files in the retained log")
	}

	// Break the seal of the oldest retained file: it is kept from now on,
	// and so is every file after it.
	oldest := files[0]
	lines := readLines(t, oldest)
	last := lines[len(lines)-1]
	forged := bytes.Replace(last, []byte(`"signature":"`), []byte(`"signature":"AAAA`), 1)
	lines[len(lines)-1] = forged
	if err := os.WriteFile(oldest, append(bytes.Join(lines, []byte("\n")), '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	writeN(t, w, 20)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	after := logFiles(t, cfg.File)
	if after[0] != oldest || len(after) < 4 {
		t.Errorf("files after the seal broke = %v; want %s kept, and everything after it", after, oldest)
	}
	if _, err := Verify(after[1:], s.spki); err != nil {
		t.Errorf("the files after the kept one: %v", err)
	}
}

// RetainFor deletes rotated files by the age their names give.
func TestRetentionByAge(t *testing.T) {
	t.Parallel()
	s := newSigner(t)
	clock := &stepClock{now: time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)}
	cfg := testConfig(t, s)
	cfg.Now = clock.Now
	cfg.MaxFileSize = 2000
	cfg.RetainFor = 24 * time.Hour
	w := open(t, cfg)
	for range 5 {
		writeN(t, w, 5)
		clock.Add(10 * time.Hour)
	}
	writeN(t, w, 5)
	w.Close()
	deleted := false
	for _, f := range logFiles(t, cfg.File) {
		for _, l := range readLines(t, f) {
			deleted = deleted || bytes.Contains(l, []byte(`"eventName":"`+EventFilesDeleted+`"`))
		}
	}
	if !deleted {
		t.Error("no rotated file was deleted for its age")
	}
	for _, f := range logFiles(t, cfg.File)[:len(logFiles(t, cfg.File))-1] {
		m := rotatedSuffix.FindStringSubmatch(strings.TrimPrefix(f, cfg.File))
		at, _ := time.Parse("20060102T150405Z", m[1])
		if clock.Now().Sub(at) > 24*time.Hour+10*time.Hour {
			t.Errorf("%s kept, rotated %s before the last rotation", f, clock.Now().Sub(at))
		}
	}
	if _, err := Verify(logFiles(t, cfg.File), s.spki); err != nil {
		t.Error(err)
	}
}
