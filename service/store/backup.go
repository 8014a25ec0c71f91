package store

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A backup archive is a tar file holding the store's two files, as one
// consistent snapshot, and a manifest:
//
//	hsmkms.db          the keys file (keys, aliases, settings)
//	hsmkms-grants.db   the grants file
//	manifest.json      Manifest, written last: it carries the parts' hashes
//
// The parts are bbolt files as bbolt writes them; the archive can be
// unpacked with tar and the files opened with any bbolt tool.
const (
	// ArchiveFormat names the archive format in its manifest.
	ArchiveFormat = "hsmkms-store-backup"
	// ArchiveFormatVersion is the layout above; a reader refuses others.
	ArchiveFormatVersion = 1

	manifestName    = "manifest.json"
	keysPartName    = "hsmkms.db"
	grantsPartName  = "hsmkms-grants.db"
	maxManifestSize = 64 << 10
)

// ErrArchiveInvalid: a backup archive is not one this code wrote, or not
// whole: truncated, altered, or missing a part.
var ErrArchiveInvalid = errors.New("store: not a valid backup archive")

// Manifest describes a backup archive: what made it, what it holds, and the
// size and SHA-256 of each part.
type Manifest struct {
	Format        string    `json:"format"`
	FormatVersion int       `json:"formatVersion"`
	CreatedAt     time.Time `json:"createdAt"`
	HsmkmsVersion string    `json:"hsmkmsVersion"`
	SchemaVersion int       `json:"schemaVersion"`
	// Counts of the snapshot's records.
	Keys    int `json:"keys"`
	Aliases int `json:"aliases"`
	Grants  int `json:"grants"`
	// Parts are the two files, keys file first.
	Parts []ArchivePart `json:"parts"`
}

// ArchivePart is one file of a backup archive.
type ArchivePart struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // hex; empty in a Snapshot's manifest until WriteTo is done
}

// Snapshot is a consistent view of both store files, held open by a read
// transaction on each: no commit of either file falls between the two.
// Writers go on meanwhile (bbolt readers do not block writers), except that
// a write that needs a file to grow its memory map waits for the snapshot
// to be closed. Close it promptly.
type Snapshot struct {
	tx, gtx *bolt.Tx
	m       Manifest
}

// Snapshot opens a snapshot of the store. It holds both files' writer locks
// only while it opens the two read transactions and counts the records, so
// no write commits in between; the snapshot is what the store held at that
// instant. hsmkmsVersion and now go into its manifest.
func (s *Bolt) Snapshot(hsmkmsVersion string, now time.Time) (*Snapshot, error) {
	s.wmu.Lock()
	s.gwmu.Lock()
	defer s.wmu.Unlock()
	defer s.gwmu.Unlock()
	tx, err := s.db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("store: snapshot: %w", err)
	}
	gtx, err := s.gdb.Begin(false)
	if err != nil {
		tx.Rollback()
		return nil, fmt.Errorf("store: snapshot: %w", err)
	}
	sn := &Snapshot{tx: tx, gtx: gtx, m: Manifest{
		Format: ArchiveFormat, FormatVersion: ArchiveFormatVersion, CreatedAt: now.UTC(),
		HsmkmsVersion: hsmkmsVersion, SchemaVersion: SchemaVersion,
		Parts: []ArchivePart{{Name: keysPartName, Size: tx.Size()}, {Name: grantsPartName, Size: gtx.Size()}},
	}}
	// With both writer locks held, memory is what the transactions see.
	s.mu.RLock()
	sn.m.Keys, sn.m.Aliases, sn.m.Grants = len(s.keys), len(s.aliases), s.grantCount()
	s.mu.RUnlock()
	return sn, nil
}

// grantCount counts every grant. The caller holds mu.
func (s *Bolt) grantCount() int {
	n := 0
	for _, kg := range s.grants.keys {
		n += len(kg.byID)
	}
	return n
}

// Manifest returns the snapshot's manifest; the parts' hashes are set once
// WriteTo has written them.
func (sn *Snapshot) Manifest() Manifest {
	m := sn.m
	m.Parts = append([]ArchivePart(nil), sn.m.Parts...)
	return m
}

// WriteTo writes the snapshot to w as a backup archive. A failure part way
// leaves w holding a truncated archive, which every reader refuses.
func (sn *Snapshot) WriteTo(w io.Writer) (int64, error) {
	cw := &countingWriter{w: w}
	tw := tar.NewWriter(cw)
	for i, tx := range []*bolt.Tx{sn.tx, sn.gtx} {
		p := &sn.m.Parts[i]
		if err := tw.WriteHeader(partHeader(p.Name, p.Size, sn.m.CreatedAt)); err != nil {
			return cw.n, fmt.Errorf("store: backup: %w", err)
		}
		h := sha256.New()
		if _, err := tx.WriteTo(io.MultiWriter(tw, h)); err != nil {
			return cw.n, fmt.Errorf("store: backup of %s: %w", p.Name, err)
		}
		p.SHA256 = hex.EncodeToString(h.Sum(nil))
	}
	js, err := json.MarshalIndent(sn.m, "", "  ")
	if err != nil {
		return cw.n, err
	}
	js = append(js, '\n')
	if err := tw.WriteHeader(partHeader(manifestName, int64(len(js)), sn.m.CreatedAt)); err != nil {
		return cw.n, fmt.Errorf("store: backup: %w", err)
	}
	if _, err := tw.Write(js); err != nil {
		return cw.n, fmt.Errorf("store: backup: %w", err)
	}
	if err := tw.Close(); err != nil {
		return cw.n, fmt.Errorf("store: backup: %w", err)
	}
	return cw.n, nil
}

// Close ends the snapshot's read transactions.
func (sn *Snapshot) Close() error { return errors.Join(sn.tx.Rollback(), sn.gtx.Rollback()) }

func partHeader(name string, size int64, at time.Time) *tar.Header {
	return &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o600, ModTime: at.Truncate(time.Second), Format: tar.FormatPAX}
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// VerifyArchive reads a whole backup archive and checks it: the layout, the
// manifest, and each part's size and SHA-256 against the manifest. It
// returns the manifest. ErrArchiveInvalid for anything amiss; ErrSchemaTooNew
// for a backup of a store newer than this code reads.
func VerifyArchive(r io.Reader) (*Manifest, error) {
	return readArchive(r, func(string) (io.Writer, error) { return io.Discard, nil })
}

// readArchive reads an archive, handing each part's bytes to the writer
// part returns for its name, and checks it as VerifyArchive says. The
// parts' bytes reach their writers before they are checked: a caller
// trusts them only once readArchive returned without error.
func readArchive(r io.Reader, part func(name string) (io.Writer, error)) (*Manifest, error) {
	tr := tar.NewReader(r)
	type seenPart struct {
		size int64
		sum  string
	}
	seen := map[string]*seenPart{}
	var manifest []byte
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrArchiveInvalid, err)
		}
		if hdr.Typeflag != tar.TypeReg {
			return nil, fmt.Errorf("%w: entry %q is not a regular file", ErrArchiveInvalid, hdr.Name)
		}
		if _, dup := seen[hdr.Name]; dup || (hdr.Name == manifestName && manifest != nil) {
			return nil, fmt.Errorf("%w: entry %q appears twice", ErrArchiveInvalid, hdr.Name)
		}
		switch hdr.Name {
		case manifestName:
			if hdr.Size > maxManifestSize {
				return nil, fmt.Errorf("%w: manifest of %d bytes", ErrArchiveInvalid, hdr.Size)
			}
			if manifest, err = io.ReadAll(tr); err != nil {
				return nil, fmt.Errorf("%w: %v", ErrArchiveInvalid, err)
			}
		case keysPartName, grantsPartName:
			w, err := part(hdr.Name)
			if err != nil {
				return nil, err
			}
			h := sha256.New()
			n, err := io.Copy(io.MultiWriter(w, h), tr)
			if err != nil {
				if errors.Is(err, io.ErrUnexpectedEOF) {
					return nil, fmt.Errorf("%w: %s is truncated", ErrArchiveInvalid, hdr.Name)
				}
				return nil, fmt.Errorf("store: restore %s: %w", hdr.Name, err)
			}
			seen[hdr.Name] = &seenPart{size: n, sum: hex.EncodeToString(h.Sum(nil))}
		default:
			return nil, fmt.Errorf("%w: unexpected entry %q", ErrArchiveInvalid, hdr.Name)
		}
	}
	if manifest == nil {
		return nil, fmt.Errorf("%w: no %s (a truncated archive, or not a backup)", ErrArchiveInvalid, manifestName)
	}
	var m Manifest
	if err := json.Unmarshal(manifest, &m); err != nil {
		return nil, fmt.Errorf("%w: manifest: %v", ErrArchiveInvalid, err)
	}
	if m.Format != ArchiveFormat {
		return nil, fmt.Errorf("%w: manifest names format %q, not %q", ErrArchiveInvalid, m.Format, ArchiveFormat)
	}
	if m.FormatVersion != ArchiveFormatVersion {
		return nil, fmt.Errorf("%w: archive format version %d; this hsmkms reads version %d", ErrArchiveInvalid, m.FormatVersion, ArchiveFormatVersion)
	}
	if m.SchemaVersion > SchemaVersion {
		return nil, fmt.Errorf("%w: the backup holds a store of schema version %d, and this hsmkms reads schema version %d at most: restore it with the hsmkms that made it (%s) or a later one",
			ErrSchemaTooNew, m.SchemaVersion, SchemaVersion, m.HsmkmsVersion)
	}
	if m.SchemaVersion < 1 {
		return nil, fmt.Errorf("%w: manifest schema version %d", ErrArchiveInvalid, m.SchemaVersion)
	}
	if len(m.Parts) != 2 || m.Parts[0].Name != keysPartName || m.Parts[1].Name != grantsPartName {
		return nil, fmt.Errorf("%w: the manifest does not list %s and %s", ErrArchiveInvalid, keysPartName, grantsPartName)
	}
	for _, p := range m.Parts {
		got := seen[p.Name]
		switch {
		case got == nil:
			return nil, fmt.Errorf("%w: %s is missing", ErrArchiveInvalid, p.Name)
		case got.size != p.Size:
			return nil, fmt.Errorf("%w: %s has %d bytes, the manifest says %d", ErrArchiveInvalid, p.Name, got.size, p.Size)
		case got.sum != p.SHA256:
			return nil, fmt.Errorf("%w: %s has SHA-256 %s, the manifest says %s", ErrArchiveInvalid, p.Name, got.sum, p.SHA256)
		}
	}
	return &m, nil
}

// Stats is what the store holds and how large its files are.
type Stats struct {
	Keys, Aliases, Grants int
	// KeysByState counts keys by their state (Enabled, Disabled, …).
	KeysByState map[string]int
	// Files are the keys file and the grants file.
	Files         []FileStats
	SchemaVersion int
}

// FileStats is one store file's path and size on disk.
type FileStats struct {
	Path string `json:"path"`
	Size int64  `json:"size"`
}

// Stats returns counts of the store's records and the sizes of its files.
func (s *Bolt) Stats() Stats {
	st := Stats{KeysByState: map[string]int{}, SchemaVersion: SchemaVersion}
	s.mu.RLock()
	st.Keys, st.Aliases, st.Grants = len(s.keys), len(s.aliases), s.grantCount()
	for _, k := range s.keys {
		st.KeysByState[k.State]++
	}
	s.mu.RUnlock()
	for _, db := range []*bolt.DB{s.db, s.gdb} {
		fs := FileStats{Path: db.Path(), Size: -1}
		if fi, err := os.Stat(db.Path()); err == nil {
			fs.Size = fi.Size()
		}
		st.Files = append(st.Files, fs)
	}
	return st
}

// stagePath is where a part of an archive is staged in dir: under the name
// the store's file has, so that the staged pair opens as a store.
func stagePath(dir, storePath, part string) string {
	if part == grantsPartName {
		return filepath.Join(dir, filepath.Base(GrantsPath(storePath)))
	}
	return filepath.Join(dir, filepath.Base(storePath))
}
