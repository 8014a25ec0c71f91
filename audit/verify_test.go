package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// baseLog writes 25 records with a checkpoint every 10 and closes. Lines:
// 1–10 seq 1–10, 11 checkpoint (seq 10), 12–21 seq 11–20, 22 checkpoint
// (seq 20), 23–27 seq 21–25, 28 checkpoint (seq 25).
func baseLog(t *testing.T, s *keySigner) (file string, lines [][]byte) {
	t.Helper()
	cfg := testConfig(t, s)
	cfg.CheckpointEvery = 10
	w := open(t, cfg)
	writeN(t, w, 25)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	lines = readLines(t, cfg.File)
	if len(lines) != 28 || !isCheckpoint(lines[10]) || !isCheckpoint(lines[21]) || !isCheckpoint(lines[27]) {
		t.Fatalf("unexpected base log layout: %d lines", len(lines))
	}
	return cfg.File, lines
}

// resign replaces a checkpoint line's fields and signs it with signer.
func resign(t *testing.T, line []byte, signer *keySigner, fingerprintOf []byte, edit func(*checkpoint)) []byte {
	t.Helper()
	var cl checkpointLine
	if err := json.Unmarshal(line, &cl); err != nil {
		t.Fatal(err)
	}
	edit(&cl.Checkpoint)
	cl.Checkpoint.KeyFingerprint = Fingerprint(fingerprintOf)
	sig, err := signer.Sign(cl.Checkpoint.digest())
	if err != nil {
		t.Fatal(err)
	}
	cl.Checkpoint.Signature = sig
	b, err := json.Marshal(cl)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func replaceIn(line []byte, old, new string) []byte {
	return bytes.Replace(line, []byte(old), []byte(new), 1)
}

func TestVerifyDetectsTampering(t *testing.T) {
	t.Parallel()
	other := newSigner(t)
	cases := []struct {
		name     string
		tamper   func(t *testing.T, s *keySigner, l [][]byte) [][]byte
		wantErr  error
		wantLine int
		wantSeq  uint64
	}{
		{"modified record", func(t *testing.T, s *keySigner, l [][]byte) [][]byte {
			l[2] = replaceIn(l[2], `"eventName":"Encrypt"`, `"eventName":"Decrypt"`)
			return l
		}, ErrChain, 3, 3},
		{"modified record before a checkpoint", func(t *testing.T, s *keySigner, l [][]byte) [][]byte {
			l[9] = replaceIn(l[9], `"sourceIPAddress":"127.0.0.1"`, `"sourceIPAddress":"10.0.0.1"`)
			return l
		}, ErrChain, 10, 10},
		{"modified last record", func(t *testing.T, s *keySigner, l [][]byte) [][]byte {
			l[26] = replaceIn(l[26], `"readOnly":true`, `"readOnly":false`)
			return l
		}, ErrChain, 27, 25},
		{"record made unparseable", func(t *testing.T, s *keySigner, l [][]byte) [][]byte {
			l[4] = l[4][:len(l[4])/2]
			return l
		}, ErrMalformed, 5, 0},
		{"CR added to a record", func(t *testing.T, s *keySigner, l [][]byte) [][]byte {
			l[4] = append(l[4], '\r')
			return l
		}, ErrMalformed, 5, 0},
		{"link of the next record edited", func(t *testing.T, s *keySigner, l [][]byte) [][]byte {
			l[3] = replaceIn(l[3], `"prev":"`, `"prev":"f`)
			l[3] = append(l[3][:len(l[3])-len(`x"}}`)], `"}}`...) // keep 64 digits
			return l
		}, ErrChain, 3, 3},
		{"first record's prev edited", func(t *testing.T, s *keySigner, l [][]byte) [][]byte {
			l[0] = replaceIn(l[0], `"prev":"0`, `"prev":"1`)
			return l
		}, ErrChain, 1, 1},
		{"deleted record", func(t *testing.T, s *keySigner, l [][]byte) [][]byte {
			return slices.Delete(l, 4, 5)
		}, ErrSequence, 5, 6},
		{"deleted record before a checkpoint", func(t *testing.T, s *keySigner, l [][]byte) [][]byte {
			return slices.Delete(l, 9, 10)
		}, ErrSequence, 10, 10},
		{"reordered records", func(t *testing.T, s *keySigner, l [][]byte) [][]byte {
			l[2], l[3] = l[3], l[2]
			return l
		}, ErrSequence, 3, 4},
		{"duplicated record", func(t *testing.T, s *keySigner, l [][]byte) [][]byte {
			return slices.Insert(l, 3, l[2])
		}, ErrSequence, 4, 3},
		{"deleted checkpoint", func(t *testing.T, s *keySigner, l [][]byte) [][]byte {
			return slices.Delete(l, 10, 11)
		}, ErrChain, 10, 10},
		{"checkpoint head forged", func(t *testing.T, s *keySigner, l [][]byte) [][]byte {
			l[21] = replaceIn(l[21], `"head":"`+sha256hex(l[20]), `"head":"`+sha256hex(l[19]))
			return l
		}, ErrSignature, 22, 20},
		{"checkpoint seq forged", func(t *testing.T, s *keySigner, l [][]byte) [][]byte {
			l[21] = replaceIn(l[21], `"seq":20,`, `"seq":21,`)
			return l
		}, ErrSignature, 22, 21},
		{"checkpoint truncated", func(t *testing.T, s *keySigner, l [][]byte) [][]byte {
			l[21] = l[21][:len(l[21])-30]
			return l
		}, ErrMalformed, 22, 0},
		{"checkpoint without signature", func(t *testing.T, s *keySigner, l [][]byte) [][]byte {
			i := bytes.Index(l[21], []byte(`,"signature"`))
			l[21] = append(l[21][:i:i], "}}"...)
			return l
		}, ErrMalformed, 22, 0},
		{"checkpoint signed by another key", func(t *testing.T, s *keySigner, l [][]byte) [][]byte {
			l[21] = resign(t, l[21], other, other.spki, func(*checkpoint) {})
			return l
		}, ErrKeyMismatch, 22, 20},
		{"checkpoint signed by another key claiming ours", func(t *testing.T, s *keySigner, l [][]byte) [][]byte {
			l[21] = resign(t, l[21], other, s.spki, func(*checkpoint) {})
			return l
		}, ErrSignature, 22, 20},
		{"checkpoint replayed over a later one", func(t *testing.T, s *keySigner, l [][]byte) [][]byte {
			l[21] = l[10]
			return l
		}, ErrSequence, 22, 10},
		{"record modified and re-chained up to a checkpoint", func(t *testing.T, s *keySigner, l [][]byte) [][]byte {
			l[14] = replaceIn(l[14], `"eventName":"Encrypt"`, `"eventName":"Decrypt"`)
			for i := 15; i < 21; i++ { // fix every later link: only the signed head still disagrees
				l[i] = relink(t, l[i], sha256hex(l[i-1]))
			}
			return l
		}, ErrChain, 21, 20},
		{"record with a bad link appended", func(t *testing.T, s *keySigner, l [][]byte) [][]byte {
			return append(l, relink(t, l[26], sha256hex(l[26])))
		}, ErrSequence, 29, 25},
		{"last line torn", nil, ErrMalformed, 28, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := newSigner(t)
			file, lines := baseLog(t, s)
			if c.tamper != nil {
				writeLines(t, file, c.tamper(t, s, lines))
			} else { // torn: drop the final LF and half the line
				writeLines(t, file, lines[:27])
				appendBytes(t, file, lines[27][:40])
			}
			rep, err := Verify([]string{file}, s.spki)
			var ve *VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("Verify = %+v, %v; want a *VerifyError", rep, err)
			}
			if !errors.Is(err, c.wantErr) || ve.File != file || ve.Line != c.wantLine || ve.Seq != c.wantSeq {
				t.Errorf("got %v\nwant %v at line %d seq %d", err, c.wantErr, c.wantLine, c.wantSeq)
			}
			if rep == nil {
				t.Error("no partial report")
			}
		})
	}
}

// relink rewrites a record's chain link to prev.
func relink(t *testing.T, line []byte, prev string) []byte {
	t.Helper()
	i := bytes.LastIndex(line, []byte(`"prev":"`))
	if i < 0 || isCheckpoint(line) {
		t.Fatalf("not a record: %s", line)
	}
	out := append([]byte{}, line[:i]...)
	return append(out, `"prev":"`+prev+`"}}`...)
}

// An appended record with a correct link needs no key: it is not an error,
// but it is reported as unsigned, and so are records a crash leaves.
func TestVerifyUnsignedTail(t *testing.T) {
	t.Parallel()
	s := newSigner(t)
	file, lines := baseLog(t, s)
	forged := replaceIn(lines[26], `"requestID":"req-24"`, `"requestID":"forged"`)
	forged = replaceIn(forged, `"seq":25,`, `"seq":26,`)
	lines = append(lines, relink(t, forged, sha256hex(lines[27])))
	writeLines(t, file, lines)
	rep, err := Verify([]string{file}, s.spki)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Unsigned != 1 || rep.SignedSeq != 25 || rep.LastSeq != 26 || len(rep.Warnings) != 1 ||
		!strings.Contains(rep.Warnings[0], "1 records after the last checkpoint (seq 26 to 26) are not signed") {
		t.Errorf("report = %+v", rep)
	}
}

func TestVerifyPartialLog(t *testing.T) {
	t.Parallel()
	s := newSigner(t)
	file, lines := baseLog(t, s)
	writeLines(t, file, lines[2:]) // the older part removed by retention
	rep, err := Verify([]string{file}, s.spki)
	if err != nil {
		t.Fatal(err)
	}
	if rep.FirstSeq != 3 || rep.Records != 23 || len(rep.Warnings) != 1 || !strings.Contains(rep.Warnings[0], "starts at seq 3") {
		t.Errorf("report = %+v", rep)
	}
}

func TestVerifyRejectsNonCanonicalLines(t *testing.T) {
	t.Parallel()
	s := newSigner(t)
	_, lines := baseLog(t, s)
	cases := map[string][]byte{
		"duplicate key":          replaceIn(lines[0], `{"eventVersion":"1.08"`, `{"eventVersion":"1.08","eventVersion":"1.08"`),
		"chain not last":         replaceIn(lines[0], `{"eventVersion"`, `{"chain":{"seq":1,"prev":"`+zeroHash+`"},"x":{"eventVersion"`),
		"chain with spaces":      replaceIn(lines[0], `"chain":{"seq":1,`, `"chain":{"seq": 1,`),
		"uppercase prev":         replaceIn(lines[1], `"prev":"`+sha256hex(lines[0]), `"prev":"`+strings.ToUpper(sha256hex(lines[0]))),
		"checkpoint extra field": replaceIn(lines[10], `"checkpoint":{`, `"checkpoint":{"x":1,`),
		"checkpoint and chain":   replaceIn(lines[10], `}}`, `},"chain":{"seq":10,"prev":"`+zeroHash+`"}}`),
		"checkpoint local time":  replaceIn(lines[10], `Z","keyFingerprint"`, `+00:00","keyFingerprint"`),
		"seq zero":               replaceIn(lines[0], `"seq":1,`, `"seq":0,`),
		"leading space":          append([]byte(" "), lines[0]...),
	}
	for name, line := range cases {
		if bytes.Equal(line, lines[0]) || bytes.Equal(line, lines[1]) || bytes.Equal(line, lines[10]) {
			t.Errorf("%s: the edit did not apply", name)
			continue
		}
		if _, err := parseLine(line); err == nil {
			t.Errorf("%s: parseLine accepted %s", name, line)
		}
	}
	for i, l := range lines {
		if _, err := parseLine(l); err != nil {
			t.Errorf("line %d: %v", i+1, err)
		}
	}
}

// TestLogFiles lists a log's files in chain order: rotated files by the seq
// in their names (not by name, nor by the time in them, which a clock set
// back can disorder), then the current file; other files beside them are
// not the log's.
func TestLogFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	current := filepath.Join(dir, "audit.log")
	// Name order and time order both differ from seq order here.
	rotated := []string{
		current + ".20260102T000000Z.000000000007",
		current + ".20260101T000000Z.999999999999",
		current + ".20260101T000000Z.1000000000000",
	}
	others := []string{current + ".bak", current + ".20260101T000000Z.12", filepath.Join(dir, "other.log.20260101T000000Z.000000000001")}
	for _, name := range append(append([]string{}, rotated...), others...) {
		if err := os.WriteFile(name, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	got, err := LogFiles(current)
	if err != nil {
		t.Fatal(err)
	}
	if want := rotated; !slices.Equal(got, want) {
		t.Errorf("before the current file exists (right after a rotation): %q, want %q", got, want)
	}
	if err := os.WriteFile(current, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err = LogFiles(current)
	if err != nil {
		t.Fatal(err)
	}
	if want := append(append([]string{}, rotated...), current); !slices.Equal(got, want) {
		t.Errorf("LogFiles = %q, want %q", got, want)
	}
	// A rotated file names only itself.
	if got, err := LogFiles(rotated[0]); err != nil || !slices.Equal(got, rotated[:1]) {
		t.Errorf("LogFiles(%s) = %q, %v", rotated[0], got, err)
	}
	if _, err := LogFiles(filepath.Join(dir, "none.log")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a log that does not exist: %v, want os.ErrNotExist", err)
	}
}
