package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"io"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsmkms/hsmkms/audit"
	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/service"
	"github.com/hsmkms/hsmkms/service/store"
	"github.com/hsmkms/hsmkms/softhsm/softhsmtest"
)

func TestMain(m *testing.M) { os.Exit(softhsmtest.Main(m)) }

// breakableSigner signs audit checkpoints with a software key, and fails
// while broken is set: the audit log then stops taking records.
type breakableSigner struct {
	key    *ecdsa.PrivateKey
	broken atomic.Bool
}

func (s *breakableSigner) Sign(d []byte) ([]byte, error) {
	if s.broken.Load() {
		return nil, errors.New("signer down")
	}
	return ecdsa.SignASN1(rand.Reader, s.key, d)
}

// inProcessAdmin starts the admin socket of an in-process server (real
// token, store and service) on a new data directory, with an audit log
// whose signer the test can break.
func inProcessAdmin(t *testing.T) (dir string, signer *breakableSigner, log *audit.Writer, a *adminServer) {
	t.Helper()
	ctx := context.Background()
	dir = t.TempDir()
	tok := softhsmtest.Token(t)
	tk, err := hsm.Open(ctx, hsm.Config{ModulePath: tok.ModulePath, TokenLabel: tok.Label, PIN: softhsmtest.PIN(t, tok)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tk.Close() })
	storePath := filepath.Join(dir, "hsmkms.db")
	st, err := store.Open(storePath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	svc, err := service.New(service.Config{Token: tk, Store: st, Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	spki, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	signer = &breakableSigner{key: k}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	log, err = audit.Open(audit.Config{File: filepath.Join(dir, "audit.log"), Signer: signer, PublicKey: spki, CheckpointEvery: 1, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	a, stop, err := openAdmin(adminConfig{dataDir: dir, storePath: storePath, endpoint: "http://test", region: "us-east-1",
		store: st, svc: svc, token: tk, audit: log, log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return dir, signer, log, a
}

// TestAdminRefusedWhenAuditLogBroken: an admin request whose record
// cannot be written is refused before it does anything — no status, no
// backup (no file written), no adoption list — as API requests are.
func TestAdminRefusedWhenAuditLogBroken(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir, signer, log, _ := inProcessAdmin(t)
	o := &adminOptions{dataDir: dir, stderr: io.Discard}
	if err := o.status(ctx, io.Discard); err != nil {
		t.Fatalf("status with a working audit log: %v", err)
	}
	file := filepath.Join(t.TempDir(), "b.tar")
	if err := o.backup(ctx, file, io.Discard); err != nil {
		t.Fatalf("backup with a working audit log: %v", err)
	}
	os.Remove(file)

	signer.broken.Store(true)
	for i := 0; log.Err() == nil; i++ {
		if i > 10 {
			t.Fatal("the audit log still takes records with its signer down")
		}
		log.Write(&audit.Event{EventName: "Filler"})
	}
	if err := o.status(ctx, io.Discard); err == nil || !strings.Contains(err.Error(), "audit log") {
		t.Errorf("status with a broken audit log: %v, want a refusal naming the audit log", err)
	}
	if err := o.backup(ctx, file, io.Discard); err == nil || !strings.Contains(err.Error(), "audit log") {
		t.Errorf("backup with a broken audit log: %v, want a refusal naming the audit log", err)
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Errorf("a refused backup wrote %s: %v", file, err)
	}
	o.json = true
	if err := o.adopt(ctx, io.Discard); err == nil || !strings.Contains(err.Error(), "audit log") {
		t.Errorf("adopt with a broken audit log: %v, want a refusal naming the audit log", err)
	}
}

// TestAdminBackupIsOneAtATime: a second backup while one is streaming is
// refused rather than queued behind it, and writes no file.
func TestAdminBackupIsOneAtATime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir, _, _, a := inProcessAdmin(t)
	o := &adminOptions{dataDir: dir, stderr: io.Discard}
	a.backups <- struct{}{} // a backup streaming
	file := filepath.Join(t.TempDir(), "b.tar")
	if err := o.backup(ctx, file, io.Discard); err == nil || !strings.Contains(err.Error(), "a backup is running") {
		t.Errorf("a second backup: %v, want a refusal", err)
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Errorf("the refused backup wrote %s: %v", file, err)
	}
	<-a.backups
	if err := o.backup(ctx, file, io.Discard); err != nil {
		t.Errorf("a backup once the first is done: %v", err)
	}
}

// TestPeerCredAllowed: the admin socket answers its own user and root,
// and nobody else; a peer the kernel could not name is refused on Linux.
func TestPeerCredAllowed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		uid  int
		want bool
	}{{os.Geteuid(), true}, {0, true}, {os.Geteuid() + 4242, false}, {-2, false}} {
		if got := (peerCred{uid: tc.uid}).allowed(); got != tc.want {
			t.Errorf("uid %d: allowed %v, want %v", tc.uid, got, tc.want)
		}
	}
}

// TestAdminCommandLine: the admin commands' arguments are checked before
// anything is contacted.
func TestAdminCommandLine(t *testing.T) {
	t.Parallel()
	dir := t.TempDir() // no server here
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"admin"}, "usage: hsmkms admin"},
		{[]string{"admin", "frobnicate", "--data-dir", dir}, `unknown command "frobnicate"`},
		{[]string{"admin", "backup", "--data-dir", dir}, "name one backup file"},
		{[]string{"admin", "restore", "--data-dir", dir}, "name one backup file"},
		{[]string{"admin", "status", "--data-dir", dir, "extra"}, "unexpected arguments"},
		{[]string{"admin", "adopt", "--data-dir", dir, "--key-id", "k"}, "--account"},
		{[]string{"admin", "adopt", "--data-dir", dir, "--all", "--key-id", "k", "--account", "111122223333"}, "exclude each other"},
		{[]string{"admin", "status", "--data-dir", dir}, "no hsmkms server answers on " + filepath.Join(dir, "admin.sock")},
		{[]string{"admin", "restore", "--data-dir", dir, filepath.Join(dir, "missing.tar")}, "no such file"},
	} {
		code, _, stderr := runCommand(tc.args...)
		if code == 0 || !strings.Contains(stderr, tc.says) {
			t.Errorf("%v: exit %d, stderr %q; want it to say %q", tc.args, code, stderr, tc.says)
		}
	}
	if code, stdout, _ := runCommand("admin", "help"); code != 0 || !strings.Contains(stdout, "restore [--force] FILE") {
		t.Errorf("admin help: exit %d\n%s", code, stdout)
	}
}

// TestAdminBackupRefusesTruncatedStream: a backup whose archive is cut
// short — the server died part way (the connection breaks), or its snapshot
// failed to read part way (the response ends cleanly, the archive does
// not) — leaves its client no file and no temporary file, and the client
// says the archive is not whole. The archive is a real one, cut at several
// points.
func TestAdminBackupRefusesTruncatedStream(t *testing.T) {
	t.Parallel()
	st, err := store.Open(filepath.Join(t.TempDir(), "hsmkms.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sn, err := st.Snapshot("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var archive bytes.Buffer
	if _, err := sn.WriteTo(&archive); err != nil {
		t.Fatal(err)
	}
	sn.Close()
	for _, dies := range []bool{true, false} {
		for _, cut := range []int{0, 100, archive.Len() / 2, archive.Len() - 1024 - 512} {
			dir := t.TempDir()
			ln, err := net.Listen("unix", filepath.Join(dir, adminSocketName))
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusOK)
				w.(http.Flusher).Flush()
				w.Write(archive.Bytes()[:cut])
				w.(http.Flusher).Flush()
				if dies {
					panic(http.ErrAbortHandler) // the connection ends here
				}
			}), ErrorLog: stdlog.New(io.Discard, "", 0)}
			go srv.Serve(ln)
			out := t.TempDir()
			o := &adminOptions{dataDir: dir, stderr: io.Discard}
			err = o.backup(context.Background(), filepath.Join(out, "b.tar"), io.Discard)
			srv.Close()
			if err == nil || !strings.Contains(err.Error(), "not whole") {
				t.Errorf("cut at %d of %d bytes (server dies %v): %v, want a refusal", cut, archive.Len(), dies, err)
			}
			if left, _ := os.ReadDir(out); len(left) != 0 {
				t.Errorf("cut at %d (server dies %v): files left: %v", cut, dies, left)
			}
		}
	}
}
