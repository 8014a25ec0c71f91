package store

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

var backupTime = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// filledStore opens a store at dir/hsmkms.db holding two keys, an alias and
// three grants.
func filledStore(t *testing.T, dir string) *Bolt {
	t.Helper()
	ctx := context.Background()
	s, err := Open(filepath.Join(dir, "hsmkms.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	k1, k2 := newKey("00000000-0000-4000-8000-000000000001", "111122223333"), newKey("00000000-0000-4000-8000-000000000002", "111122223333")
	k2.State = "Disabled"
	for _, k := range []Key{k1, k2} {
		if err := s.CreateKey(ctx, k, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateAlias(ctx, Alias{Name: "alias/a", Account: k1.Account, TargetKeyID: k1.ID, CreatedAt: backupTime, UpdatedAt: backupTime}, 0); err != nil {
		t.Fatal(err)
	}
	for i, kid := range []string{k1.ID, k1.ID, k2.ID} {
		g := Grant{KeyID: kid, ID: fmt.Sprintf("%064d", i), CreatedAt: backupTime, GranteePrincipal: "arn:aws:iam::111122223333:role/r",
			IssuingAccount: "111122223333", Operations: []string{"Decrypt"}}
		if _, _, err := s.CreateGrant(ctx, g, 0); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func backupOf(t *testing.T, s *Bolt) ([]byte, Manifest) {
	t.Helper()
	sn, err := s.Snapshot("v-test", backupTime)
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Close()
	var buf bytes.Buffer
	n, err := sn.WriteTo(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) {
		t.Fatalf("WriteTo reported %d bytes, wrote %d", n, buf.Len())
	}
	return buf.Bytes(), sn.Manifest()
}

// contents is what a store holds, for comparisons.
type contents struct {
	Keys    []Key
	Aliases []Alias
	Grants  []Grant
}

func contentsOf(t *testing.T, s *Bolt) contents {
	t.Helper()
	ctx := context.Background()
	var c contents
	keys, err := s.AllKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.Keys = keys
	for _, k := range keys {
		as, _, _ := s.ListAliases(ctx, k.Account, k.ID, "", 100)
		c.Aliases = append(c.Aliases, as...)
		gs, _, _ := s.ListGrants(ctx, k.ID, GrantFilter{}, 0, 100)
		c.Grants = append(c.Grants, gs...)
	}
	return c
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// TestBackupRestoreRoundTrip: a snapshot restored into an empty directory
// is the store it was taken of, with its manifest's counts and hashes, in
// files of mode 0600; the restore leaves a note for the server to record.
func TestBackupRestoreRoundTrip(t *testing.T) {
	t.Parallel()
	src := filledStore(t, t.TempDir())
	archive, m := backupOf(t, src)
	if m.Keys != 2 || m.Aliases != 1 || m.Grants != 3 || m.SchemaVersion != SchemaVersion || m.HsmkmsVersion != "v-test" ||
		!m.CreatedAt.Equal(backupTime) || len(m.Parts) != 2 || m.Parts[0].SHA256 == "" || m.Parts[1].SHA256 == "" {
		t.Fatalf("manifest %+v", m)
	}
	vm, err := VerifyArchive(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*vm, m) {
		t.Errorf("VerifyArchive's manifest %+v, Snapshot's %+v", *vm, m)
	}

	path := filepath.Join(t.TempDir(), "data", "hsmkms.db")
	res, err := Restore(path, bytes.NewReader(archive), RestoreOptions{Now: func() time.Time { return backupTime.Add(time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.MovedAside) != 0 || res.Resumed || !reflect.DeepEqual(res.Manifest, m) {
		t.Errorf("result %+v", res)
	}
	for _, p := range []string{path, GrantsPath(path)} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", p, fi.Mode().Perm())
		}
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".restore-*")); len(left) > 0 {
		t.Errorf("staging left behind: %v", left)
	}
	note, ok, err := ReadRestoreNote(path)
	if err != nil || !ok || note.State != RestoreDone || !reflect.DeepEqual(note.Manifest, m) || note.RestoredBy != os.Getuid() {
		t.Fatalf("restore note %+v, %v, %v", note, ok, err)
	}
	dst, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if got, want := contentsOf(t, dst), contentsOf(t, src); !reflect.DeepEqual(got, want) {
		t.Errorf("restored store differs:\n got %+v\nwant %+v", got, want)
	}
	if err := ClearRestoreNote(path); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := ReadRestoreNote(path); ok {
		t.Error("the note is still there after ClearRestoreNote")
	}
}

// TestSnapshotIsOneInstant takes snapshots while writers create keys and
// then grants on them. A snapshot is one instant of both files: every
// grant in its grants file has its key in its keys file, and its manifest
// counts what its files hold. (Two transactions opened without the writer
// locks let a key and its grant commit between them.)
func TestSnapshotIsOneInstant(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := Open(filepath.Join(t.TempDir(), "hsmkms.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := newKey(fmt.Sprintf("%08d-0000-4000-8000-%012d", w, i), "111122223333")
				if err := s.CreateKey(ctx, k, 0); err != nil {
					t.Error(err)
					return
				}
				g := Grant{KeyID: k.ID, ID: fmt.Sprintf("%064d", i), CreatedAt: backupTime, GranteePrincipal: "p",
					IssuingAccount: "111122223333", Operations: []string{"Decrypt"}}
				if _, _, err := s.CreateGrant(ctx, g, 0); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	for round := 0; round < 30; round++ {
		archive, m := backupOf(t, s)
		keys, grants := rawContents(t, archive)
		if len(keys) != m.Keys || len(grants) != m.Grants {
			t.Fatalf("snapshot %d: manifest counts %d keys and %d grants; its files hold %d and %d", round, m.Keys, m.Grants, len(keys), len(grants))
		}
		for _, g := range grants {
			if !keys[g] {
				t.Fatalf("snapshot %d: a grant of key %s, which its keys file does not hold", round, g)
			}
		}
	}
}

// rawContents unpacks an archive and reads its files with bbolt, as they
// are (Open would remove grants whose key is missing): the key ids of the
// keys file, and the key id of each grant of the grants file.
func rawContents(t *testing.T, archive []byte) (keys map[string]bool, grantKeys []string) {
	t.Helper()
	dir := t.TempDir()
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		if err := os.WriteFile(filepath.Join(dir, hdr.Name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	keys = map[string]bool{}
	read := func(name string, bucket []byte, fn func(k, v []byte)) {
		db, err := bolt.Open(filepath.Join(dir, name), 0o600, &bolt.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		db.View(func(tx *bolt.Tx) error {
			return tx.Bucket(bucket).ForEach(func(k, v []byte) error { fn(k, v); return nil })
		})
	}
	read(keysPartName, keysBucket, func(k, _ []byte) { keys[string(k)] = true })
	read(grantsPartName, grantsBucket, func(_, v []byte) {
		var g Grant
		json.Unmarshal(v, &g)
		grantKeys = append(grantKeys, g.KeyID)
	})
	return keys, grantKeys
}

// TestRestoreKeepsWhatIsInPlace: a store in place is refused without
// Force and left as it was; with Force it is renamed aside, byte for byte.
// A store a process holds open is refused even with Force.
func TestRestoreKeepsWhatIsInPlace(t *testing.T) {
	t.Parallel()
	src := filledStore(t, t.TempDir())
	archive, _ := backupOf(t, src)

	dir := t.TempDir()
	path := filepath.Join(dir, "hsmkms.db")
	old, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.CreateKey(context.Background(), newKey("00000000-0000-4000-8000-0000000000aa", "444455556666"), 0); err != nil {
		t.Fatal(err)
	}
	// Held open: refused, with or without Force.
	for _, force := range []bool{false, true} {
		if _, err := Restore(path, bytes.NewReader(archive), RestoreOptions{Force: force}); !errors.Is(err, ErrLocked) {
			t.Fatalf("restore over an open store (force %v): %v, want ErrLocked", force, err)
		}
	}
	old.Close()
	sums := map[string][32]byte{path: fileSum(t, path), GrantsPath(path): fileSum(t, GrantsPath(path))}

	if _, err := Restore(path, bytes.NewReader(archive), RestoreOptions{}); !errors.Is(err, ErrStoreExists) {
		t.Fatalf("restore over a store without Force: %v, want ErrStoreExists", err)
	} else if !strings.Contains(err.Error(), "--force") {
		t.Errorf("the refusal does not say how to go on: %v", err)
	}
	for p, sum := range sums {
		if fileSum(t, p) != sum {
			t.Errorf("%s changed although the restore was refused", p)
		}
	}
	if _, ok, _ := ReadRestoreNote(path); ok {
		t.Error("a refused restore left a note")
	}

	at := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	res, err := Restore(path, bytes.NewReader(archive), RestoreOptions{Force: true, Now: func() time.Time { return at }})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.MovedAside) != 2 {
		t.Fatalf("moved aside %v, want both files", res.MovedAside)
	}
	for i, p := range []string{path, GrantsPath(path)} {
		want := p + ".before-restore-20260506T070809Z"
		if res.MovedAside[i] != want {
			t.Errorf("moved aside as %s, want %s", res.MovedAside[i], want)
		}
		if fileSum(t, res.MovedAside[i]) != sums[p] {
			t.Errorf("%s is not the file that was in place", res.MovedAside[i])
		}
	}
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	got := contentsOf(t, s)
	s.Close()
	if want := contentsOf(t, src); !reflect.DeepEqual(got, want) {
		t.Errorf("restored store differs:\n got %+v\nwant %+v", got, want)
	}
	// A second forced restore in the same second keeps both earlier sets.
	res, err = Restore(path, bytes.NewReader(archive), RestoreOptions{Force: true, Now: func() time.Time { return at }})
	if err != nil {
		t.Fatal(err)
	}
	if res.MovedAside[0] != path+".before-restore-20260506T070809Z.2" {
		t.Errorf("second restore moved aside as %v", res.MovedAside)
	}
	note, _, _ := ReadRestoreNote(path)
	if len(note.Earlier) != 1 || note.Earlier[0].State != RestoreDone {
		t.Errorf("the note does not keep the unrecorded earlier restore: %+v", note)
	}
}

// tarOf builds an archive from entries (name, bytes), in order.
func tarOf(t *testing.T, entries ...[2][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: string(e[0]), Size: int64(len(e[1])), Mode: 0o600}); err != nil {
			t.Fatal(err)
		}
		tw.Write(e[1])
	}
	tw.Close()
	return buf.Bytes()
}

// TestRestoreRefusesBadArchives: an archive that is truncated, altered,
// incomplete, padded with other entries, of another format or of a newer
// schema is refused, for the reason it has, and the store in place is left
// as it was, without a note.
func TestRestoreRefusesBadArchives(t *testing.T) {
	t.Parallel()
	src := filledStore(t, t.TempDir())
	good, m := backupOf(t, src)
	parts := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(good))
	for {
		hdr, err := tr.Next()
		if err != nil {
			break
		}
		parts[hdr.Name], _ = io.ReadAll(tr)
	}
	manifest := func(edit func(*Manifest)) []byte {
		mm := m
		mm.Parts = append([]ArchivePart(nil), m.Parts...)
		edit(&mm)
		b, _ := json.Marshal(mm)
		return b
	}
	flipped := bytes.Clone(parts[keysPartName])
	flipped[len(flipped)/2] ^= 1
	entry := func(name string, b []byte) [2][]byte { return [2][]byte{[]byte(name), b} }
	keys, grants := entry(keysPartName, parts[keysPartName]), entry(grantsPartName, parts[grantsPartName])
	for _, tc := range []struct {
		name    string
		archive []byte
		want    error
		says    string
	}{
		{"empty", nil, ErrArchiveInvalid, "no manifest.json"},
		{"not a tar file", []byte(strings.Repeat("hsmkms ", 200)), ErrArchiveInvalid, ""},
		{"truncated in a part", good[:len(parts[keysPartName])/2], ErrArchiveInvalid, "truncated"},
		{"truncated before the manifest", good[:len(good)-3072], ErrArchiveInvalid, ""},
		{"a flipped bit", tarOf(t, entry(keysPartName, flipped), grants, entry(manifestName, parts[manifestName])), ErrArchiveInvalid, "SHA-256"},
		{"parts swapped", tarOf(t, entry(keysPartName, parts[grantsPartName]), entry(grantsPartName, parts[keysPartName]), entry(manifestName, parts[manifestName])), ErrArchiveInvalid, ""},
		{"grants missing", tarOf(t, keys, entry(manifestName, parts[manifestName])), ErrArchiveInvalid, "hsmkms-grants.db is missing"},
		{"manifest missing", tarOf(t, keys, grants), ErrArchiveInvalid, "no manifest.json"},
		{"an extra entry", tarOf(t, keys, grants, entry("../../etc/passwd", []byte("x")), entry(manifestName, parts[manifestName])), ErrArchiveInvalid, "unexpected entry"},
		{"a part twice", tarOf(t, keys, keys, grants, entry(manifestName, parts[manifestName])), ErrArchiveInvalid, "twice"},
		{"another format", tarOf(t, keys, grants, entry(manifestName, manifest(func(m *Manifest) { m.Format = "other" }))), ErrArchiveInvalid, "format"},
		{"a newer format version", tarOf(t, keys, grants, entry(manifestName, manifest(func(m *Manifest) { m.FormatVersion = 2 }))), ErrArchiveInvalid, "format version 2"},
		{"a newer schema", tarOf(t, keys, grants, entry(manifestName, manifest(func(m *Manifest) { m.SchemaVersion = SchemaVersion + 1 }))), ErrSchemaTooNew, "schema version 3"},
		{"manifest size wrong", tarOf(t, keys, grants, entry(manifestName, manifest(func(m *Manifest) { m.Parts[1].Size++ }))), ErrArchiveInvalid, "bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := VerifyArchive(bytes.NewReader(tc.archive)); !errors.Is(err, tc.want) || !strings.Contains(fmt.Sprint(err), tc.says) {
				t.Errorf("VerifyArchive: %v, want %v saying %q", err, tc.want, tc.says)
			}
			dir := t.TempDir()
			path := filepath.Join(dir, "hsmkms.db")
			s, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			before := fileSum(t, path)
			if _, err := Restore(path, bytes.NewReader(tc.archive), RestoreOptions{Force: true}); !errors.Is(err, tc.want) {
				t.Fatalf("Restore: %v, want %v", err, tc.want)
			}
			if fileSum(t, path) != before {
				t.Error("the store in place changed")
			}
			if _, ok, _ := ReadRestoreNote(path); ok {
				t.Error("a refused restore left a note")
			}
			if left, _ := filepath.Glob(filepath.Join(dir, ".restore-*")); len(left) > 0 {
				t.Errorf("staging left behind: %v", left)
			}
		})
	}
}

// TestInterruptedRestore: a restore that stopped between its renames
// leaves its note in progress; Open refuses the store, saying how to go
// on, and running Restore again (without Force) finishes it, moving the
// half-restored file aside.
func TestInterruptedRestore(t *testing.T) {
	t.Parallel()
	src := filledStore(t, t.TempDir())
	archive, m := backupOf(t, src)
	dir := t.TempDir()
	path := filepath.Join(dir, "hsmkms.db")
	// What a crash after the first rename into place leaves: the keys file
	// restored, no grants file, the note in progress.
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		hdr, err := tr.Next()
		if err != nil {
			break
		}
		if hdr.Name == keysPartName {
			b, _ := io.ReadAll(tr)
			os.WriteFile(path, b, 0o600)
		}
	}
	if err := writeFileAtomic(RestoreNotePath(path), RestoreNote{State: RestoreInProgress, Manifest: m}); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path)
	if !errors.Is(err, ErrRestoreIncomplete) {
		if err == nil {
			s.Close()
		}
		t.Fatalf("Open of a half-restored store: %v, want ErrRestoreIncomplete", err)
	}
	if !strings.Contains(err.Error(), "hsmkms admin restore") {
		t.Errorf("the refusal does not say how to go on: %v", err)
	}
	if _, err := os.Stat(GrantsPath(path)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused Open created the grants file: %v", err)
	}
	if err := ClearRestoreNote(path); !errors.Is(err, ErrRestoreIncomplete) {
		t.Errorf("ClearRestoreNote of a restore in progress: %v, want ErrRestoreIncomplete", err)
	}
	res, err := Restore(path, bytes.NewReader(archive), RestoreOptions{})
	if err != nil {
		t.Fatalf("running the restore again: %v", err)
	}
	if !res.Resumed || len(res.MovedAside) != 1 {
		t.Errorf("result %+v, want resumed, with the half-restored file moved aside", res)
	}
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, want := contentsOf(t, s), contentsOf(t, src); !reflect.DeepEqual(got, want) {
		t.Errorf("restored store differs:\n got %+v\nwant %+v", got, want)
	}
}

// TestRestoreRaisesGCMCounts: a restored store's AES-GCM counts are as old
// as its backup, and the encryptions made since are unknown, so a restore
// raises every symmetric key's current count by RestoreGCMMargin: too high,
// never too low.
func TestRestoreRaisesGCMCounts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src := filledStore(t, t.TempDir())
	const used = 5 << 20
	if err := src.ReserveGCM(ctx, "00000000-0000-4000-8000-000000000001", 1, used); err != nil {
		t.Fatal(err)
	}
	archive, _ := backupOf(t, src)
	path := filepath.Join(t.TempDir(), "data", "hsmkms.db")
	res, err := Restore(path, bytes.NewReader(archive), RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.GCMRaised != 2 {
		t.Errorf("GCMRaised = %d, want 2 (both symmetric keys)", res.GCMRaised)
	}
	dst, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	rs, err := dst.GCMReservations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, r := range rs {
		got[r.KeyID] = r.Reserved
	}
	if got["00000000-0000-4000-8000-000000000001"] != used+RestoreGCMMargin || got["00000000-0000-4000-8000-000000000002"] != RestoreGCMMargin {
		t.Errorf("counts after restore %v, want the backup's plus %d", got, RestoreGCMMargin)
	}
}
