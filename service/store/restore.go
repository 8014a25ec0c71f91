package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

var (
	// ErrStoreExists: Restore found a store where it would write one, and
	// was not told to replace it.
	ErrStoreExists = errors.New("store: a store exists")
	// ErrRestoreIncomplete: Open found a restore that did not finish; the
	// files may be half old and half restored.
	ErrRestoreIncomplete = errors.New("store: an interrupted restore")
)

// RestoreNote is the record of a restore, kept beside the store
// (RestoreNotePath) from before Restore changes anything. While its State
// is RestoreInProgress, Open refuses the store: a crash part way through
// the renames can leave one file restored and the other not, and a server
// opening that would create an empty grants file or drop grants as
// orphans. Running Restore again finishes the job. Once done, the note
// stays until the next server start has recorded the restore in its audit
// log (ReadRestoreNote, ClearRestoreNote).
type RestoreNote struct {
	State      string    `json:"state"`
	RestoredAt time.Time `json:"restoredAt"`
	// RestoredBy is the user id the restore ran as.
	RestoredBy int      `json:"restoredByUid"`
	Manifest   Manifest `json:"manifest"`
	// MovedAside are the files that were in place before, as renamed.
	MovedAside []string `json:"movedAside,omitempty"`
	// Earlier are restores made before this one that no server start
	// recorded yet, oldest first.
	Earlier []RestoreNote `json:"earlier,omitempty"`
}

// States of a RestoreNote.
const (
	RestoreInProgress = "in-progress"
	RestoreDone       = "done"
)

// RestoreNotePath is the file beside a store's file at path that records a
// restore.
func RestoreNotePath(path string) string { return strings.TrimSuffix(path, ".db") + "-restore.json" }

// ReadRestoreNote returns the note of the last restore of the store at
// path, and false if there is none.
func ReadRestoreNote(path string) (RestoreNote, bool, error) {
	var n RestoreNote
	b, err := os.ReadFile(RestoreNotePath(path))
	if errors.Is(err, fs.ErrNotExist) {
		return n, false, nil
	}
	if err != nil {
		return n, false, fmt.Errorf("store: restore note: %w", err)
	}
	if err := json.Unmarshal(b, &n); err != nil {
		return n, false, fmt.Errorf("store: restore note %s: %w", RestoreNotePath(path), err)
	}
	return n, true, nil
}

// ClearRestoreNote removes the note of a finished restore (once it is
// recorded elsewhere). A note of an unfinished one stays.
func ClearRestoreNote(path string) error {
	n, ok, err := ReadRestoreNote(path)
	if err != nil || !ok {
		return err
	}
	if n.State != RestoreDone {
		return fmt.Errorf("%w: %s says %q", ErrRestoreIncomplete, RestoreNotePath(path), n.State)
	}
	if err := os.Remove(RestoreNotePath(path)); err != nil {
		return fmt.Errorf("store: restore note: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

// checkNoRestoreInProgress refuses a store whose restore did not finish.
func checkNoRestoreInProgress(path string) error {
	n, ok, err := ReadRestoreNote(path)
	if err != nil || !ok || n.State == RestoreDone {
		return err
	}
	return fmt.Errorf("%w of %s (from a backup made %s) did not finish, so its files may be half old and half restored: run `hsmkms admin restore` with the same backup again (the files in place are kept, renamed aside); %s says what was done",
		ErrRestoreIncomplete, path, n.Manifest.CreatedAt.Format(time.RFC3339), RestoreNotePath(path))
}

// RestoreOptions are Restore's choices.
type RestoreOptions struct {
	// Force replaces an existing store. Its files are never deleted: they
	// are renamed aside (FILE.before-restore-<UTC time>).
	Force bool
	// Now is the clock (time.Now if nil).
	Now func() time.Time
}

// RestoreResult says what Restore did.
type RestoreResult struct {
	Manifest Manifest
	// MovedAside are the files that were in place, as renamed.
	MovedAside []string
	// MigratedFrom is the schema version the restored store was migrated
	// from (0: none).
	MigratedFrom int
	// Resumed is true when Restore finished an interrupted restore.
	Resumed bool
	// GCMRaised is how many symmetric keys' AES-GCM counts were raised by
	// RestoreGCMMargin (the encryptions made since the backup are unknown).
	GCMRaised int
}

// Restore writes the store held in a backup archive to path and
// GrantsPath(path). No server may hold the store: its files are locked by
// the server that has them open (ErrLocked). The archive is read whole and
// checked (VerifyArchive) into a staging directory beside path, and the
// staged store is opened (checking every record, migrating an older schema)
// before anything in place changes; an existing store is refused with
// ErrStoreExists unless opts.Force, and then renamed aside, never deleted.
// Each file is written with fsync and moved into place by rename; a
// RestoreNote marks the store unusable from before the first rename to
// after the last, so a crash in between is found, and finished by running
// Restore again (which needs no Force then).
func Restore(path string, archive io.Reader, opts RestoreOptions) (*RestoreResult, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: restore: %w", err)
	}
	// One restore at a time in a directory; flock works on directories.
	unlockDir, err := lockExclusive(dir, "another restore into "+dir+" is running")
	if err != nil {
		return nil, err
	}
	defer unlockDir()

	note, hadNote, err := ReadRestoreNote(path)
	if err != nil {
		return nil, err
	}
	resuming := hadNote && note.State == RestoreInProgress
	var existing []string
	for _, p := range []string{path, GrantsPath(path)} {
		if _, err := os.Lstat(p); err == nil {
			existing = append(existing, p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("store: restore: %w", err)
		}
	}
	// A server holding the store has its files flock'ed (bbolt does).
	for _, p := range existing {
		unlock, err := lockExclusive(p, "a running hsmkms holds it; stop it first (restore is offline)")
		if err != nil {
			return nil, err
		}
		defer unlock()
	}
	if len(existing) > 0 && !opts.Force && !resuming {
		return nil, fmt.Errorf("%w at %s: give --force to replace it (its files are kept, renamed aside), or restore into another data directory",
			ErrStoreExists, strings.Join(existing, " and "))
	}

	// From here until the files are in place, the note keeps any server
	// off the store: one starting on an empty directory would otherwise
	// create files the renames then pull from under it.
	now := opts.Now().UTC()
	inProgress := RestoreNote{State: RestoreInProgress, RestoredAt: now, RestoredBy: os.Getuid()}
	switch {
	case resuming:
		inProgress.Earlier = note.Earlier
	case hadNote:
		// An earlier restore that no server start recorded stays on record.
		earlier := note
		earlier.Earlier = nil
		inProgress.Earlier = append(note.Earlier, earlier)
	}
	if err := writeFileAtomic(RestoreNotePath(path), inProgress); err != nil {
		return nil, err
	}
	renamed := false
	defer func() {
		if renamed {
			return // the note says what to do
		}
		// Nothing in place changed: put the note back as it was.
		if hadNote {
			writeFileAtomic(RestoreNotePath(path), note)
		} else {
			os.Remove(RestoreNotePath(path))
		}
	}()

	stage, err := os.MkdirTemp(dir, ".restore-")
	if err != nil {
		return nil, fmt.Errorf("store: restore: %w", err)
	}
	defer os.RemoveAll(stage)
	m, err := stageArchive(stage, path, archive)
	if err != nil {
		return nil, err
	}
	// The staged pair must open as a store: every record is read and
	// checked, and an older schema is migrated, before anything in place
	// changes.
	staged, err := Open(filepath.Join(stage, filepath.Base(path)))
	if err != nil {
		return nil, fmt.Errorf("store: restore: the backup's store does not open: %w", err)
	}
	_, migratedFrom := staged.Schema()
	gcmRaised, err := staged.raiseGCMForRestore(context.Background())
	if err != nil {
		staged.Close()
		return nil, fmt.Errorf("store: restore: raise the AES-GCM counts: %w", err)
	}
	if err := staged.Close(); err != nil {
		return nil, fmt.Errorf("store: restore: %w", err)
	}

	res := &RestoreResult{Manifest: *m, MigratedFrom: migratedFrom, Resumed: resuming, GCMRaised: gcmRaised}
	inProgress.Manifest = *m
	if err := writeFileAtomic(RestoreNotePath(path), inProgress); err != nil {
		return nil, err
	}
	for _, p := range existing {
		aside, err := asideName(p, now)
		if err != nil {
			return nil, err
		}
		renamed = true
		if err := os.Rename(p, aside); err != nil {
			return nil, fmt.Errorf("store: restore: move %s aside: %w", p, err)
		}
		res.MovedAside = append(res.MovedAside, aside)
	}
	for _, p := range []string{path, GrantsPath(path)} {
		renamed = true
		if err := os.Rename(filepath.Join(stage, filepath.Base(p)), p); err != nil {
			return nil, fmt.Errorf("store: restore: %w", err)
		}
	}
	if err := syncDir(dir); err != nil {
		return nil, err
	}
	done := inProgress
	done.State, done.MovedAside = RestoreDone, res.MovedAside
	if err := writeFileAtomic(RestoreNotePath(path), done); err != nil {
		return nil, err
	}
	return res, nil
}

// stageArchive reads archive into the staging directory, checking it, and
// fsyncs what it wrote.
func stageArchive(stage, path string, archive io.Reader) (*Manifest, error) {
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	m, err := readArchive(archive, func(name string) (io.Writer, error) {
		f, err := os.OpenFile(stagePath(stage, path, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("store: restore: %w", err)
		}
		files = append(files, f)
		return f, nil
	})
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		if err := f.Sync(); err != nil {
			return nil, fmt.Errorf("store: restore: %w", err)
		}
	}
	return m, syncDir(stage)
}

// lockExclusive takes a non-blocking exclusive flock on path (a file or a
// directory), or fails with ErrLocked and why.
func lockExclusive(path, why string) (unlock func(), err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("store: restore: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("store: restore: %s: %w: %s", path, ErrLocked, why)
		}
		return nil, fmt.Errorf("store: restore: lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// asideName is the name an existing file is moved to: FILE.before-restore-
// <UTC time>, with a counter if a file of that name exists.
func asideName(path string, now time.Time) (string, error) {
	base := path + ".before-restore-" + now.Format("20060102T150405Z")
	for i := 1; i < 1000; i++ {
		name := base
		if i > 1 {
			name = fmt.Sprintf("%s.%d", base, i)
		}
		if _, err := os.Lstat(name); errors.Is(err, fs.ErrNotExist) {
			return name, nil
		}
	}
	return "", fmt.Errorf("store: restore: no free name beside %s", path)
}

// writeFileAtomic writes v as JSON to path: a temporary file, fsync,
// rename, fsync of the directory. Mode 0600.
func writeFileAtomic(path string, v any) error {
	js, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(append(js, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("store: write %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

// syncDir fsyncs a directory, so the renames and removals in it are durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("store: fsync %s: %w", dir, err)
	}
	return nil
}
