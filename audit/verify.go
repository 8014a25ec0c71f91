package audit

import (
	"bufio"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// The kinds of verification failure; a *VerifyError wraps exactly one.
var (
	// ErrMalformed: a line does not parse (bad JSON, no chain link, a
	// non-canonical or truncated checkpoint, a line without its LF).
	ErrMalformed = errors.New("malformed line")
	// ErrSequence: seq does not follow on (records removed, reordered,
	// duplicated, or files given in the wrong order), or a signed
	// checkpoint covers a different seq than the record before it.
	ErrSequence = errors.New("sequence break")
	// ErrChain: a line's SHA-256 does not match the link after it: the
	// line was modified, or lines around it were removed or inserted.
	ErrChain = errors.New("hash chain broken")
	// ErrSignature: a checkpoint's signature does not verify: it was forged
	// or altered.
	ErrSignature = errors.New("bad checkpoint signature")
	// ErrKeyMismatch: a checkpoint names another signing key than the one
	// given.
	ErrKeyMismatch = errors.New("checkpoint signed by another key")
)

// VerifyError names the first bad line found.
type VerifyError struct {
	File   string
	Line   int    // 1-based line number in File
	Seq    uint64 // the line's seq (a checkpoint's covered seq); 0 if it did not parse
	Err    error  // ErrMalformed, ErrSequence, ErrChain, ErrSignature or ErrKeyMismatch
	Detail string // what is wrong, in words
}

func (e *VerifyError) Error() string {
	seq := "unparsed"
	if e.Seq != 0 {
		seq = fmt.Sprintf("seq %d", e.Seq)
	}
	return fmt.Sprintf("%s:%d (%s): %v: %s", e.File, e.Line, seq, e.Err, e.Detail)
}

func (e *VerifyError) Unwrap() error { return e.Err }

// Report summarises a verification. It is returned, as far as it got, with
// a *VerifyError too.
type Report struct {
	Files       int
	Records     int
	Checkpoints int
	FirstSeq    uint64 // seq of the first record; 0 if none
	LastSeq     uint64 // seq of the last record
	// SignedSeq is the last seq covered by a valid checkpoint (0 if none),
	// SignedAt that checkpoint's time.
	SignedSeq uint64
	SignedAt  time.Time
	// Unsigned counts the records after the last checkpoint. Their chain
	// is intact, but without a signature over them anyone who can write
	// the file could have appended or rewritten them (FORMAT.md).
	Unsigned       int
	KeyFingerprint string   // of the key checkpoints were verified with
	Warnings       []string // findings that are not proof of tampering
}

// position is where a line was read, for naming it in errors.
type position struct {
	file string
	line int
	seq  uint64
	cp   bool
}

func (p position) String() string { return fmt.Sprintf("%s:%d (seq %d)", p.file, p.line, p.seq) }

// Verify checks log files given oldest first (rotated files in order, then
// the current file) as one chain, against the audit key's public key (SPKI
// DER). It returns a *VerifyError wrapping one of the Err* kinds for the
// first bad line, or another error if a file cannot be read. Records after
// the last checkpoint are not an error; Report.Unsigned counts them and
// Report.Warnings says so.
func Verify(files []string, publicKeySPKI []byte) (*Report, error) {
	if len(files) == 0 {
		return nil, errors.New("audit: no files to verify")
	}
	pub, err := parseECDSA(publicKeySPKI)
	if err != nil {
		return nil, err
	}
	v := &verifier{pub: pub, rep: &Report{KeyFingerprint: Fingerprint(publicKeySPKI)}}
	for _, name := range files {
		if err := v.file(name); err != nil {
			return v.rep, err
		}
	}
	rep := v.rep
	rep.Unsigned = v.sinceCheckpoint
	switch {
	case rep.Records == 0:
		rep.Warnings = append(rep.Warnings, "the log holds no records")
	case rep.Unsigned > 0:
		rep.Warnings = append(rep.Warnings, fmt.Sprintf(
			"%d records after the last checkpoint (seq %d to %d) are not signed: a crash or a running server leaves such records, but anyone who can write the file could have appended or rewritten them",
			rep.Unsigned, rep.LastSeq-uint64(rep.Unsigned)+1, rep.LastSeq))
	}
	return rep, nil
}

// LogFiles returns the files of the log whose current file is file, in the
// order Verify takes them: its rotated files (file.<time>.<seq>, by seq),
// then file itself if it exists. So a log can be named by its current
// file's path whether or not it was ever rotated, and a rotated file alone
// is just itself. If there is no file at all, the error wraps
// os.ErrNotExist.
func LogFiles(file string) ([]string, error) {
	rotated, err := rotatedFiles(file)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	files := make([]string, 0, len(rotated)+1)
	for _, r := range rotated {
		files = append(files, r.path)
	}
	switch _, err := os.Stat(file); {
	case err == nil:
		files = append(files, file)
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("audit: %w", err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("audit: no log: neither %s nor rotated files %s.<time>.<seq> exist: %w", file, filepath.Base(file), os.ErrNotExist)
	}
	return files, nil
}

type verifier struct {
	pub             *ecdsa.PublicKey
	rep             *Report
	started         bool
	prevHash        string   // hex SHA-256 of the previous line
	prevPos         position // where the previous line was
	lastSeq         uint64   // seq of the last record
	sinceCheckpoint int
}

func (v *verifier) file(name string) error {
	f, err := os.Open(name)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	defer f.Close()
	v.rep.Files++
	r := bufio.NewReaderSize(f, 1<<16)
	for n := 1; ; n++ {
		b, err := r.ReadBytes('\n')
		if len(b) == 0 && err == io.EOF {
			return nil
		}
		if err == io.EOF {
			return &VerifyError{File: name, Line: n, Err: ErrMalformed,
				Detail: "the last line has no LF: a torn write or a cut file"}
		}
		if err != nil {
			return fmt.Errorf("audit: read %s: %w", name, err)
		}
		if err := v.line(position{file: name, line: n}, b[:len(b)-1]); err != nil {
			return err
		}
	}
}

func (v *verifier) line(pos position, b []byte) error {
	pl, err := parseLine(b)
	if err != nil {
		return &VerifyError{File: pos.file, Line: pos.line, Err: ErrMalformed, Detail: err.Error()}
	}
	pos.seq, pos.cp = pl.seq, pl.cp != nil
	fail := func(p position, kind error, format string, args ...any) error {
		return &VerifyError{File: p.file, Line: p.line, Seq: p.seq, Err: kind, Detail: fmt.Sprintf(format, args...)}
	}
	if pl.cp == nil {
		switch {
		case !v.started && pl.seq == 1 && pl.prev != zeroHash:
			return fail(pos, ErrChain, "the first record (seq 1) must have prev %s", zeroHash)
		case !v.started && pl.seq > 1:
			v.rep.Warnings = append(v.rep.Warnings, fmt.Sprintf(
				"the log given starts at seq %d: records 1 to %d are not included (removed rotated files?), so the first record's prev is not checked",
				pl.seq, pl.seq-1))
		case v.started && pl.seq > v.lastSeq+1:
			return fail(pos, ErrSequence, "seq %d follows seq %d at %s: %d records missing (lines or a file removed, or files out of order)",
				pl.seq, v.lastSeq, v.prevPos, pl.seq-v.lastSeq-1)
		case v.started && pl.seq <= v.lastSeq:
			return fail(pos, ErrSequence, "seq %d follows seq %d at %s: records reordered or duplicated, or files out of order",
				pl.seq, v.lastSeq, v.prevPos)
		case v.started && pl.prev != v.prevHash && v.prevPos.cp:
			return fail(pos, ErrChain, "prev %s is not the SHA-256 %s of the signed checkpoint at %s: this line was modified, or lines were removed or inserted after the checkpoint",
				pl.prev, v.prevHash, v.prevPos)
		case v.started && pl.prev != v.prevHash:
			return fail(v.prevPos, ErrChain, "this line's SHA-256 is %s but the next line %s records prev %s: this line was modified (or a line after it removed, or the next line's link edited)",
				v.prevHash, pos, pl.prev)
		}
		if v.rep.FirstSeq == 0 {
			v.rep.FirstSeq = pl.seq
		}
		v.rep.Records++
		v.rep.LastSeq, v.lastSeq = pl.seq, pl.seq
		v.sinceCheckpoint++
	} else {
		cp := pl.cp
		if cp.KeyFingerprint != v.rep.KeyFingerprint {
			return fail(pos, ErrKeyMismatch, "checkpoint names key %s, not the given key %s", cp.KeyFingerprint, v.rep.KeyFingerprint)
		}
		if !ecdsa.VerifyASN1(v.pub, cp.digest(), cp.Signature) {
			return fail(pos, ErrSignature, "the signature does not verify: the checkpoint was forged or altered")
		}
		switch {
		case !v.started:
			v.rep.Warnings = append(v.rep.Warnings, "the log given starts with a checkpoint, whose head is not checked")
			v.lastSeq = cp.Seq
		case cp.Seq != v.lastSeq:
			return fail(pos, ErrSequence, "the signed checkpoint covers seq %d but the record before it at %s is seq %d: records were removed or inserted",
				cp.Seq, v.prevPos, v.lastSeq)
		case cp.Head != v.prevHash:
			return fail(v.prevPos, ErrChain, "this line's SHA-256 is %s but the signed checkpoint at %s records head %s: this line was modified",
				v.prevHash, pos, cp.Head)
		}
		t, _ := time.Parse(time.RFC3339Nano, cp.Time) // checked by parseLine
		v.rep.Checkpoints++
		v.rep.SignedSeq, v.rep.SignedAt = cp.Seq, t
		v.sinceCheckpoint = 0
	}
	v.started, v.prevHash, v.prevPos = true, lineHash(b), pos
	return nil
}
