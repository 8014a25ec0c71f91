package audit

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"time"
)

// Signer signs checkpoints with the audit key, which should live in the
// token and serve no other purpose. Sign receives a SHA-256 digest and
// returns an ECDSA P-256 signature in ASN.1 DER form (not PKCS#11's raw
// r||s).
type Signer interface {
	Sign(digest []byte) ([]byte, error)
}

// DefaultCheckpointEvery is Config.CheckpointEvery when it is zero.
const DefaultCheckpointEvery = 1000

// ErrClosed is returned by Write and Checkpoint after Close.
var ErrClosed = errors.New("audit: log is closed")

// Config configures a Writer. At least one of File and Out is required,
// and so are Signer and PublicKey.
type Config struct {
	// File is the log file's path. Open appends to it, continuing the chain
	// from its last line, or, when it does not exist, from the newest
	// rotated file beside it.
	File string
	// Out, if set, receives every line too (e.g. os.Stdout for a log
	// collector). It starts a new chain at each Open when File is empty.
	Out io.Writer
	// MaxFileSize rotates File before a write once it holds this many
	// bytes or more: a checkpoint is appended, the file is renamed
	// FILE.<UTC time YYYYMMDDTHHMMSSZ>.<last seq, 12+ digits> and a new
	// FILE is started; the chain continues. Zero means never.
	MaxFileSize int64
	// CheckpointEvery is the number of records between checkpoints
	// (DefaultCheckpointEvery if zero).
	CheckpointEvery int
	// SyncEachRecord fsyncs File after every record. Without it, File is
	// fsynced at checkpoints, rotation and Close (see FORMAT.md,
	// "Durability").
	SyncEachRecord bool
	// Signer signs checkpoints; PublicKey is its public key, SPKI DER.
	Signer    Signer
	PublicKey []byte
	// Now is the clock (time.Now if nil).
	Now func() time.Time
	// Logger receives checkpoint failures that Write does not return
	// (slog.Default() if nil).
	Logger *slog.Logger
}

// Writer appends audit records. It is safe for concurrent use; records are
// serialized because each one links to the one before.
type Writer struct {
	cfg         Config
	every       int
	pub         *ecdsa.PublicKey
	fingerprint string

	mu       sync.Mutex
	f        *os.File     // nil when File is empty, or after a failed rotation
	size     int64        // bytes in f
	seq      uint64       // seq of the last record written (0: none yet)
	prev     string       // hex SHA-256 of the last line written
	unsigned int          // records after the last checkpoint
	buf      bytes.Buffer // checkpoint lines
	enc      *json.Encoder
	broken   error // a failure that left the output in an unknown state
	closed   bool
}

// encoder is a reusable event encoder; Writers share a pool of them.
type encoder struct {
	buf bytes.Buffer
	enc *json.Encoder
}

var encoders = sync.Pool{New: func() any {
	e := new(encoder)
	e.enc = json.NewEncoder(&e.buf)
	e.enc.SetEscapeHTML(false)
	return e
}}

// Open checks the configuration, has the Signer sign a test digest that
// must verify with PublicKey, and opens (or creates, mode 0600) the log.
func Open(cfg Config) (*Writer, error) {
	if cfg.File == "" && cfg.Out == nil {
		return nil, errors.New("audit: no output: set File, Out or both")
	}
	if cfg.Signer == nil || cfg.PublicKey == nil {
		return nil, errors.New("audit: Signer and PublicKey are required")
	}
	if cfg.CheckpointEvery < 0 || cfg.MaxFileSize < 0 {
		return nil, errors.New("audit: CheckpointEvery and MaxFileSize must not be negative")
	}
	pub, err := parseECDSA(cfg.PublicKey)
	if err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	w := &Writer{cfg: cfg, every: cfg.CheckpointEvery, pub: pub, fingerprint: Fingerprint(cfg.PublicKey), prev: zeroHash}
	if w.every == 0 {
		w.every = DefaultCheckpointEvery
	}
	w.enc = json.NewEncoder(&w.buf)
	w.enc.SetEscapeHTML(false)

	probe := sha256.Sum256([]byte("hsmkms audit signer check"))
	sig, err := cfg.Signer.Sign(probe[:])
	if err != nil {
		return nil, fmt.Errorf("audit: signer: %w", err)
	}
	if !ecdsa.VerifyASN1(pub, probe[:], sig) {
		return nil, errors.New("audit: the signer's test signature does not verify with PublicKey (want ASN.1 DER ECDSA P-256 by the matching private key)")
	}
	if cfg.File != "" {
		if err := w.resume(); err != nil {
			return nil, err
		}
		if err := w.openFile(); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// resume takes the chain state from the end of File or, if it does not
// exist, of the newest rotated file.
func (w *Writer) resume() error {
	last, unsigned, err := readTail(w.cfg.File)
	if errors.Is(err, os.ErrNotExist) || err == nil && last == nil {
		// No current file, or an empty one (a rotation just happened).
		var rotated string
		if rotated, err = newestRotated(w.cfg.File); err != nil || rotated == "" {
			return err
		}
		last, unsigned, err = readTail(rotated)
	}
	if err != nil || last == nil {
		return err
	}
	pl, err := parseLine(last)
	if err != nil {
		return fmt.Errorf("audit: the last line of the log is damaged (%v); move the file aside, check it with hsmkms audit verify, and restart", err)
	}
	w.seq, w.prev, w.unsigned = pl.seq, lineHash(last), unsigned
	return nil
}

// readTail returns the last line of a file without its LF (nil if the file
// is empty) and the number of record lines after its last checkpoint.
func readTail(name string) (last []byte, unsigned int, err error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<16)
	for {
		line, err := r.ReadBytes('\n')
		if len(line) == 0 && err == io.EOF {
			return last, unsigned, nil
		}
		if err == io.EOF {
			return nil, 0, fmt.Errorf("audit: %s ends in an unterminated line (a torn write?); move the file aside, check it with hsmkms audit verify, and restart", name)
		}
		if err != nil {
			return nil, 0, fmt.Errorf("audit: read %s: %w", name, err)
		}
		last = line[:len(line)-1]
		if bytes.HasPrefix(last, []byte(`{"checkpoint":`)) {
			unsigned = 0
		} else {
			unsigned++
		}
	}
}

var rotatedSuffix = regexp.MustCompile(`^\.[0-9]{8}T[0-9]{6}Z\.([0-9]{12,20})$`)

// newestRotated returns the rotated file of name with the highest seq, or
// "" if there is none.
func newestRotated(name string) (string, error) {
	dir, base := filepath.Split(name)
	if dir == "" {
		dir = "."
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("audit: %w", err)
	}
	var best string
	var bestSeq uint64
	for _, e := range entries {
		n := e.Name()
		if len(n) <= len(base) || n[:len(base)] != base {
			continue
		}
		m := rotatedSuffix.FindStringSubmatch(n[len(base):])
		if m == nil {
			continue
		}
		seq, err := strconv.ParseUint(m[1], 10, 64)
		if err == nil && (best == "" || seq > bestSeq) {
			best, bestSeq = filepath.Join(dir, n), seq
		}
	}
	return best, nil
}

// RotatedName is the name File gets when rotated at t after the record
// with sequence number lastSeq.
func RotatedName(file string, t time.Time, lastSeq uint64) string {
	return fmt.Sprintf("%s.%s.%012d", file, t.UTC().Format("20060102T150405Z"), lastSeq)
}

func (w *Writer) openFile() error {
	f, err := os.OpenFile(w.cfg.File, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("audit: %w", err)
	}
	if err := syncDir(w.cfg.File); err != nil {
		f.Close()
		return err
	}
	w.f, w.size = f, st.Size()
	return nil
}

func syncDir(file string) error {
	d, err := os.Open(filepath.Dir(file))
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("audit: sync directory: %w", err)
	}
	return nil
}

// Write appends ev as one record and returns nil only once the line has
// been handed to the kernel (and fsynced, with SyncEachRecord). It fills in
// the fields Event documents as defaulted, on ev itself. A record whose
// write fails is not in the log and does not advance the chain; a failure
// that leaves an output in an unknown state makes every later Write fail.
//
// Every CheckpointEvery records, Write appends a checkpoint. If signing
// fails, the error is logged and retried at each later Write; once twice
// CheckpointEvery records are unsigned, Write refuses records until a
// checkpoint succeeds.
func (w *Writer) Write(ev *Event) error {
	if ev == nil {
		return errors.New("audit: nil event")
	}
	ev.fill(w.cfg.Now())
	// Encode outside the lock; only the link is added under it.
	eb := encoders.Get().(*encoder)
	defer encoders.Put(eb)
	eb.buf.Reset()
	if err := eb.enc.Encode(ev); err != nil {
		return fmt.Errorf("audit: encode event: %w", err)
	}
	body := bytes.TrimSuffix(eb.buf.Bytes(), []byte("}\n")) // an Event always encodes as a non-empty object
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return err
	}
	if w.unsigned >= 2*w.every {
		if err := w.checkpoint(); err != nil {
			return fmt.Errorf("audit: %d records are unsigned and checkpoints fail; refusing more: %w", w.unsigned, err)
		}
	}
	if w.cfg.File != "" && (w.f == nil || w.cfg.MaxFileSize > 0 && w.size >= w.cfg.MaxFileSize) {
		if err := w.rotate(); err != nil {
			return err
		}
	}
	line := append(body, `,"chain":{"seq":`...)
	line = strconv.AppendUint(line, w.seq+1, 10)
	line = append(line, `,"prev":"`...)
	line = append(line, w.prev...)
	line = append(line, "\"}}\n"...)
	eb.buf = *bytes.NewBuffer(line[:0]) // keep the grown array for the next record
	if err := w.writeLine(line); err != nil {
		return err
	}
	w.seq++
	w.unsigned++
	if w.cfg.SyncEachRecord && w.f != nil {
		if err := w.f.Sync(); err != nil {
			w.broken = fmt.Errorf("fsync: %w", err)
			return fmt.Errorf("audit: %w", w.broken)
		}
	}
	if w.unsigned >= w.every {
		if err := w.checkpoint(); err != nil && w.broken == nil {
			w.cfg.Logger.Error("audit checkpoint failed; will retry", "err", err, "unsigned", w.unsigned)
		}
	}
	return nil
}

// Checkpoint appends a checkpoint now if any record is unsigned, and
// fsyncs the file. Call it from a ticker to bound how long records stay
// unsigned on a quiet server.
func (w *Writer) Checkpoint() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return err
	}
	return w.checkpoint()
}

// Close appends a final checkpoint if any record is unsigned, fsyncs and
// closes the file. It does not close Out. Close is idempotent.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	var errs []error
	if w.broken != nil {
		errs = append(errs, fmt.Errorf("audit: %w", w.broken))
	} else if err := w.checkpoint(); err != nil {
		errs = append(errs, err)
	}
	if w.f != nil {
		if err := w.f.Sync(); err != nil && w.broken == nil {
			errs = append(errs, fmt.Errorf("audit: fsync: %w", err))
		}
		if err := w.f.Close(); err != nil {
			errs = append(errs, fmt.Errorf("audit: %w", err))
		}
		w.f = nil
	}
	return errors.Join(errs...)
}

// Err reports whether the log can take records: nil, or why not (closed,
// or broken by an earlier failure). Callers check it before doing work that
// must be recorded, so that work is not done when its record cannot be.
func (w *Writer) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return err
	}
	if w.unsigned >= 2*w.every {
		return fmt.Errorf("audit: %d records are unsigned and checkpoints fail", w.unsigned)
	}
	return nil
}

func (w *Writer) usable() error {
	if w.closed {
		return ErrClosed
	}
	if w.broken != nil {
		return fmt.Errorf("audit: log unusable after an earlier failure: %w", w.broken)
	}
	return nil
}

// checkpoint signs the current head, appends the checkpoint line and
// fsyncs File. It does nothing when no record is unsigned.
func (w *Writer) checkpoint() error {
	if w.unsigned == 0 {
		if w.f != nil {
			if err := w.f.Sync(); err != nil {
				w.broken = fmt.Errorf("fsync: %w", err)
				return fmt.Errorf("audit: %w", w.broken)
			}
		}
		return nil
	}
	if w.cfg.File != "" && w.f == nil {
		if err := w.openFile(); err != nil {
			return err
		}
	}
	cp := checkpoint{Seq: w.seq, Head: w.prev, Time: w.cfg.Now().UTC().Format(time.RFC3339Nano), KeyFingerprint: w.fingerprint}
	d := cp.digest()
	sig, err := w.cfg.Signer.Sign(d)
	if err != nil {
		return fmt.Errorf("audit: sign checkpoint: %w", err)
	}
	if !ecdsa.VerifyASN1(w.pub, d, sig) {
		return errors.New("audit: sign checkpoint: the signature does not verify with PublicKey")
	}
	cp.Signature = sig
	w.buf.Reset()
	if err := w.enc.Encode(checkpointLine{cp}); err != nil {
		return fmt.Errorf("audit: encode checkpoint: %w", err)
	}
	if err := w.writeLine(w.buf.Bytes()); err != nil {
		return err
	}
	w.unsigned = 0
	if w.f != nil {
		if err := w.f.Sync(); err != nil {
			w.broken = fmt.Errorf("fsync: %w", err)
			return fmt.Errorf("audit: %w", w.broken)
		}
	}
	return nil
}

// writeLine writes b (one line with its LF) to every output and, on
// success, makes it the chain head.
func (w *Writer) writeLine(b []byte) error {
	if w.f != nil {
		n, err := w.f.Write(b)
		if err != nil {
			if n > 0 {
				// Take the torn line back so the file stays a valid chain.
				if terr := w.f.Truncate(w.size); terr != nil {
					w.broken = fmt.Errorf("write %s: %w; removing the partial line: %v", w.cfg.File, err, terr)
					return fmt.Errorf("audit: %w", w.broken)
				}
			}
			return fmt.Errorf("audit: write %s: %w", w.cfg.File, err)
		}
		w.size += int64(n)
	}
	w.prev = lineHash(b[:len(b)-1])
	if w.cfg.Out != nil {
		if _, err := w.cfg.Out.Write(b); err != nil {
			w.broken = fmt.Errorf("write to Out: %w", err)
			return fmt.Errorf("audit: %w", w.broken)
		}
	}
	return nil
}

// rotate seals and renames File, then starts a new one; or, after a failed
// rotation, only starts the new one.
func (w *Writer) rotate() error {
	if w.f != nil {
		if err := w.checkpoint(); err != nil {
			return err
		}
		name := RotatedName(w.cfg.File, w.cfg.Now(), w.seq)
		if _, err := os.Lstat(name); err == nil {
			return fmt.Errorf("audit: rotate: %s already exists", name)
		}
		if err := os.Rename(w.cfg.File, name); err != nil {
			return fmt.Errorf("audit: rotate: %w", err)
		}
		if err := w.f.Close(); err != nil {
			w.cfg.Logger.Warn("audit: close rotated file", "file", name, "err", err)
		}
		w.f = nil
	}
	return w.openFile()
}
