package audit

import (
	"bufio"
	"bytes"
	"cmp"
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
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
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
	// RetainFiles, when positive, keeps at most this many rotated files:
	// after a rotation the oldest beyond it are deleted. RetainFor, when
	// positive, deletes rotated files rotated longer ago than this. Only a
	// file that ends in a checkpoint signed by the audit key (covering every
	// line of the file) is ever deleted, and each deletion is itself
	// recorded in the log. Zero keeps every file.
	RetainFiles int
	RetainFor   time.Duration
	// MinFreeBytes is the free space on File's filesystem under which Ready
	// fails (DefaultMinFreeBytes if zero).
	MinFreeBytes int64
	// Now is the clock (time.Now if nil).
	Now func() time.Time
	// Logger receives checkpoint failures that Write does not return
	// (slog.Default() if nil).
	Logger *slog.Logger
	// Observer, if set, is told of every Write and WriteDurable, for
	// metrics (observe.go).
	Observer Observer
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
	broken   error // why the log takes no records (nil: it does)
	closed   bool

	// A write that failed but was taken back (ENOSPC, EFBIG, EIO with
	// nothing written, …) leaves the file a valid chain: the log is broken
	// until a retry succeeds. Anything else (a failed fsync, a torn line
	// that could not be removed, a failed write to Out) cannot be retried.
	retryable bool
	brokenAt  time.Time
	retryAt   time.Time
	backoff   time.Duration
	refused   int // Err calls answered with an error while broken

	brokenNow atomic.Bool // what Broken reports (observe.go)
}

// Retry delays of a broken log: the first retry after minRetry, doubling up
// to maxRetry.
const (
	minRetry = time.Second
	maxRetry = 30 * time.Second
)

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
	if cfg.MinFreeBytes <= 0 {
		cfg.MinFreeBytes = DefaultMinFreeBytes
	}
	if cfg.RetainFiles < 0 || cfg.RetainFor < 0 {
		return nil, errors.New("audit: RetainFiles and RetainFor must not be negative")
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
	w.publish() // a resumed log may start with too many unsigned records
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

var rotatedSuffix = regexp.MustCompile(`^\.([0-9]{8}T[0-9]{6}Z)\.([0-9]{12,20})$`)

// newestRotated returns the rotated file of name with the highest seq, or
// "" if there is none.
func newestRotated(name string) (string, error) {
	files, err := rotatedFiles(name)
	if err != nil {
		return "", fmt.Errorf("audit: %w", err)
	}
	if len(files) == 0 {
		return "", nil
	}
	return files[len(files)-1].path, nil
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
// write fails is not in the log and does not advance the chain.
//
// Any failed write breaks the log: every Write, and Err, fails until a retry
// succeeds. A write that could be taken back (the file is still a valid
// chain: a full disk, say) is retried, at most once a second and backing off
// to once every 30 s, by a later Write or Err; the first record after that is
// a service event recording the outage. A failure that leaves an output in
// an unknown state (a failed fsync, a torn line that cannot be removed, a
// failed write to Out) breaks the log for good.
//
// Every CheckpointEvery records, Write appends a checkpoint. If signing
// fails, the error is logged and retried at each later Write; once twice
// CheckpointEvery records are unsigned, Write refuses records until a
// checkpoint succeeds.
func (w *Writer) Write(ev *Event) error { return w.write(ev, w.cfg.SyncEachRecord) }

// WriteDurable is Write, and also fsyncs File before it returns, whatever
// SyncEachRecord says: for a record that must survive a power failure, such
// as the intent of a change that is about to be committed elsewhere.
func (w *Writer) WriteDurable(ev *Event) error { return w.write(ev, true) }

func (w *Writer) write(ev *Event, sync bool) (err error) {
	if w.cfg.Observer != nil {
		start := time.Since(epoch)
		defer w.observeWrite(start, &err)
	}
	if ev == nil {
		return errors.New("audit: nil event")
	}
	ev.fill(w.cfg.Now())
	// Encode outside the lock; only the link is added under it.
	eb := encoders.Get().(*encoder)
	defer encoders.Put(eb)
	if err := eb.encode(ev); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	defer w.publish()
	if err := w.usable(); err != nil {
		return err
	}
	return w.appendRecord(eb, sync)
}

// encode encodes ev without its closing brace, ready for the link.
func (eb *encoder) encode(ev *Event) error {
	eb.buf.Reset()
	if err := eb.enc.Encode(ev); err != nil {
		return fmt.Errorf("audit: encode event: %w", err)
	}
	eb.buf.Truncate(eb.buf.Len() - len("}\n")) // an Event always encodes as a non-empty object
	return nil
}

// appendRecord links and writes the record eb holds. The caller holds mu and
// has checked that the log is usable.
func (w *Writer) appendRecord(eb *encoder, sync bool) error {
	if w.unsigned >= 2*w.every {
		if err := w.checkpoint(); err != nil {
			return fmt.Errorf("audit: %d records are unsigned and checkpoints fail; refusing more: %w", w.unsigned, err)
		}
	}
	if w.cfg.File != "" && (w.f == nil || w.cfg.MaxFileSize > 0 && w.size >= w.cfg.MaxFileSize) {
		if err := w.rotate(); err != nil {
			return w.fail(err, true)
		}
	}
	line := eb.buf.Bytes()
	line = append(line, `,"chain":{"seq":`...)
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
	if sync && w.f != nil {
		if err := w.f.Sync(); err != nil {
			return w.fail(fmt.Errorf("fsync: %w", err), false)
		}
	}
	if w.unsigned >= w.every {
		if err := w.checkpoint(); err != nil && w.broken == nil {
			w.cfg.Logger.Error("audit checkpoint failed; will retry", "err", err, "unsigned", w.unsigned)
		}
	}
	return nil
}

// fail breaks the log with err (retryable: the file is still a valid chain,
// and a later write may succeed), schedules the next retry and returns the
// error Write reports. A failure that cannot be retried is never made
// retryable by a later one.
func (w *Writer) fail(err error, retryable bool) error {
	if w.broken == nil || w.retryable {
		w.broken, w.retryable = err, retryable
	}
	now := w.cfg.Now()
	if w.brokenAt.IsZero() {
		w.brokenAt, w.refused, w.backoff = now, 0, minRetry
		w.cfg.Logger.Error("audit log unusable: requests are refused until it recovers", "err", err, "retryable", w.retryable)
	}
	w.retryAt = now.Add(w.backoff)
	w.backoff = min(2*w.backoff, maxRetry)
	return fmt.Errorf("audit: %w", err)
}

// Checkpoint appends a checkpoint now if any record is unsigned, and
// fsyncs the file. Call it from a ticker to bound how long records stay
// unsigned on a quiet server.
func (w *Writer) Checkpoint() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	defer w.publish()
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
	defer w.publish()
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
// or broken by an earlier failure that no retry has repaired yet). Callers
// check it before doing work that must be recorded, so that work is not done
// when its record cannot be. A broken log that may recover is retried here
// too, so a server whose every request is refused up front still notices
// when the disk has room again.
func (w *Writer) Err() error { return w.check(true) }

// check is Err; refusal says whether an error refuses a request (and is
// counted for the outage record).
func (w *Writer) check(refusal bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	defer w.publish()
	if err := w.usable(); err != nil {
		if refusal {
			w.refused++
		}
		return err
	}
	if w.unsigned >= 2*w.every {
		return fmt.Errorf("audit: %d records are unsigned and checkpoints fail", w.unsigned)
	}
	return nil
}

// usable returns nil if the log takes records, retrying a broken log when
// its retry is due.
func (w *Writer) usable() error {
	if w.closed {
		return ErrClosed
	}
	if w.broken != nil && w.retryable && !w.cfg.Now().Before(w.retryAt) {
		w.retry()
	}
	if w.broken != nil {
		return fmt.Errorf("audit: log unusable after an earlier failure: %w", w.broken)
	}
	return nil
}

// EventLogResumed is the name of the service event a broken log writes
// first when it takes records again.
const EventLogResumed = "AuditLogResumed"

// retry tries to repair a broken log by writing the record of the outage:
// when it began, why, and how many requests were refused meanwhile. It
// first checks that the file still ends where the chain does.
func (w *Writer) retry() {
	cause := w.broken
	if w.f != nil {
		if st, err := w.f.Stat(); err != nil || st.Size() != w.size {
			w.broken, w.retryable = fmt.Errorf("%v; then the file changed under the writer (size %d, expected %d)", cause, sizeOf(st), w.size), false
			return
		}
	}
	w.broken = nil
	err := w.appendServiceEvent(EventLogResumed, map[string]any{"unavailableSince": w.brokenAt.UTC().Format(time.RFC3339),
		"error": cause.Error(), "refusedRequests": w.refused}, true)
	if err != nil {
		if w.broken == nil { // refused before any write: still broken, as before
			w.broken, w.retryable = cause, true
			w.retryAt = w.cfg.Now().Add(w.backoff)
			w.backoff = min(2*w.backoff, maxRetry)
		}
		return
	}
	if w.broken != nil { // the checkpoint after the record failed to write
		return
	}
	w.cfg.Logger.Info("audit log takes records again", "unavailable_since", w.brokenAt, "refused_requests", w.refused)
	w.brokenAt, w.refused = time.Time{}, 0
}

func sizeOf(st os.FileInfo) int64 {
	if st == nil {
		return -1
	}
	return st.Size()
}

// Ready reports whether the log can take records now and has room for more:
// Err, plus, for File, enough free bytes and one free inode on its
// filesystem (Config.MinFreeBytes). It is for readiness probes: a full disk
// shows before a request fails on it.
func (w *Writer) Ready() error {
	if err := w.check(false); err != nil {
		return err
	}
	if w.cfg.File == "" {
		return nil
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(filepath.Dir(w.cfg.File), &st); err != nil {
		return fmt.Errorf("audit: statfs: %w", err)
	}
	if free := int64(st.Bavail) * int64(st.Bsize); free < w.cfg.MinFreeBytes {
		return fmt.Errorf("audit: %d bytes free on the log's filesystem (want %d)", free, w.cfg.MinFreeBytes)
	}
	if st.Files > 0 && st.Ffree == 0 {
		return errors.New("audit: no free inodes on the log's filesystem")
	}
	return nil
}

// DefaultMinFreeBytes is Config.MinFreeBytes when it is zero.
const DefaultMinFreeBytes = 1 << 20

// checkpoint signs the current head, appends the checkpoint line and
// fsyncs File. It does nothing when no record is unsigned.
func (w *Writer) checkpoint() error {
	if w.unsigned == 0 {
		if w.f != nil {
			if err := w.f.Sync(); err != nil {
				return w.fail(fmt.Errorf("fsync: %w", err), false)
			}
		}
		return nil
	}
	if w.cfg.File != "" && w.f == nil {
		if err := w.openFile(); err != nil {
			return w.fail(err, true)
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
			return w.fail(fmt.Errorf("fsync: %w", err), false)
		}
	}
	return nil
}

// writeLine writes b (one line with its LF) to every output and, on
// success, makes it the chain head. A failed write breaks the log (see
// Write): retryably when the file is left as it was.
func (w *Writer) writeLine(b []byte) error {
	if w.f != nil {
		n, err := w.f.Write(b)
		if err != nil {
			if n > 0 {
				// Take the torn line back so the file stays a valid chain.
				if terr := w.f.Truncate(w.size); terr != nil {
					return w.fail(fmt.Errorf("%w; removing the partial line: %v", err, terr), false)
				}
			}
			return w.fail(err, true) // an *os.PathError: it names the file
		}
		w.size += int64(n)
	}
	w.prev = lineHash(b[:len(b)-1])
	if w.cfg.Out != nil {
		if _, err := w.cfg.Out.Write(b); err != nil {
			return w.fail(fmt.Errorf("write to Out: %w", err), false)
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
	if err := w.openFile(); err != nil {
		return err
	}
	w.prune()
	return nil
}

// EventFilesDeleted is the name of the service event that records rotated
// files deleted by the retention rules.
const EventFilesDeleted = "AuditLogFilesDeleted"

// prune deletes the rotated files that RetainFiles and RetainFor no longer
// keep, oldest first, and records what it deleted in the log. It stops at the
// first file it may not delete (one not sealed by a checkpoint of this key),
// so the files that remain are always a contiguous run ending at File.
func (w *Writer) prune() {
	if w.cfg.RetainFiles <= 0 && w.cfg.RetainFor <= 0 {
		return
	}
	files, err := rotatedFiles(w.cfg.File)
	if err != nil {
		w.cfg.Logger.Error("audit retention: list rotated files", "err", err)
		return
	}
	now := w.cfg.Now()
	var deleted []any
	for i, f := range files {
		excess := w.cfg.RetainFiles > 0 && len(files)-i > w.cfg.RetainFiles
		expired := w.cfg.RetainFor > 0 && now.Sub(f.rotatedAt) > w.cfg.RetainFor
		if !excess && !expired {
			break
		}
		if err := w.sealed(f.path); err != nil {
			w.cfg.Logger.Error("audit retention: file kept, it is not sealed by a signed checkpoint", "file", f.path, "err", err)
			break
		}
		if err := os.Remove(f.path); err != nil {
			w.cfg.Logger.Error("audit retention: delete", "file", f.path, "err", err)
			break
		}
		w.cfg.Logger.Info("audit retention: deleted a rotated file", "file", f.path, "last_seq", f.lastSeq)
		deleted = append(deleted, map[string]any{"file": filepath.Base(f.path), "lastSeq": f.lastSeq})
	}
	if len(deleted) == 0 {
		return
	}
	if err := syncDir(w.cfg.File); err != nil {
		w.cfg.Logger.Error("audit retention", "err", err)
	}
	err = w.appendServiceEvent(EventFilesDeleted, map[string]any{"deletedFiles": deleted,
		"retainFiles": w.cfg.RetainFiles, "retainFor": w.cfg.RetainFor.String()}, false)
	if err != nil {
		w.cfg.Logger.Error("audit retention: record the deletion", "err", err)
	}
}

// appendServiceEvent appends a service event of the writer's own (its
// outages, its retention) with data as its additionalEventData. The caller
// holds mu.
func (w *Writer) appendServiceEvent(name string, data map[string]any, sync bool) error {
	ev := &Event{EventName: name, EventType: EventTypeService,
		UserIdentity:    UserIdentity{Type: IdentityService, InvokedBy: EventSource},
		SourceIPAddress: EventSource, UserAgent: EventSource, AdditionalEventData: data}
	ev.fill(w.cfg.Now())
	eb := encoders.Get().(*encoder)
	defer encoders.Put(eb)
	if err := eb.encode(ev); err != nil {
		return err
	}
	return w.appendRecord(eb, sync)
}

type rotatedFile struct {
	path      string
	rotatedAt time.Time
	lastSeq   uint64
}

// rotatedFiles lists the rotated files of name, oldest (lowest seq) first.
func rotatedFiles(name string) ([]rotatedFile, error) {
	dir, base := filepath.Split(name)
	if dir == "" {
		dir = "."
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []rotatedFile
	for _, e := range entries {
		n := e.Name()
		if len(n) <= len(base) || n[:len(base)] != base {
			continue
		}
		m := rotatedSuffix.FindStringSubmatch(n[len(base):])
		if m == nil {
			continue
		}
		seq, err1 := strconv.ParseUint(m[2], 10, 64)
		at, err2 := time.Parse("20060102T150405Z", m[1])
		if err1 == nil && err2 == nil {
			out = append(out, rotatedFile{path: filepath.Join(dir, n), rotatedAt: at, lastSeq: seq})
		}
	}
	slices.SortFunc(out, func(a, b rotatedFile) int { return cmp.Compare(a.lastSeq, b.lastSeq) })
	return out, nil
}

// sealed checks that a rotated file ends with a checkpoint signed by this
// writer's key that covers the line before it, so nothing in the file is
// unsigned.
func (w *Writer) sealed(path string) error {
	last, before, err := lastTwoLines(path)
	if err != nil {
		return err
	}
	pl, err := parseLine(last)
	if err != nil || pl.cp == nil {
		return errors.New("its last line is not a checkpoint")
	}
	cp := pl.cp
	if cp.KeyFingerprint != w.fingerprint || !ecdsa.VerifyASN1(w.pub, cp.digest(), cp.Signature) {
		return errors.New("its last checkpoint is not signed by the audit key")
	}
	if before == nil || cp.Head != lineHash(before) {
		return errors.New("its last checkpoint does not cover the line before it")
	}
	return nil
}

// lastTwoLines returns the last line of a file and the one before it (nil if
// there is none), without their LFs, reading from the end.
func lastTwoLines(path string) (last, before []byte, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	size := st.Size()
	for chunk := int64(64 << 10); ; chunk *= 4 {
		off := max(size-chunk, 0)
		buf := make([]byte, size-off)
		if _, err := f.ReadAt(buf, off); err != nil {
			return nil, nil, err
		}
		if len(buf) == 0 || buf[len(buf)-1] != '\n' {
			return nil, nil, errors.New("it does not end with a complete line")
		}
		lines := bytes.Split(buf[:len(buf)-1], []byte("\n"))
		if len(lines) >= 3 || off == 0 {
			// With off > 0 the first piece may be a partial line; two
			// complete lines follow it.
			last = lines[len(lines)-1]
			if len(lines) >= 2 {
				before = lines[len(lines)-2]
			}
			return last, before, nil
		}
	}
}
