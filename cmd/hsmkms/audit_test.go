package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hsmkms/hsmkms/audit"
)

type ecdsaSigner struct{ k *ecdsa.PrivateKey }

func (s ecdsaSigner) Sign(d []byte) ([]byte, error) { return ecdsa.SignASN1(rand.Reader, s.k, d) }

// auditFixture writes a closed log (good.log), a log whose last records are
// unsigned (open.log), a copy of good.log with one record modified
// (tampered.log), and the public key as PEM, as DER, and another key.
func auditFixture(t *testing.T) (dir string) {
	t.Helper()
	dir = t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherSPKI, _ := x509.MarshalPKIXPublicKey(&other.PublicKey)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki}), 0o600))
	must(os.WriteFile(filepath.Join(dir, "key.der"), spki, 0o600))
	must(os.WriteFile(filepath.Join(dir, "other.pem"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: otherSPKI}), 0o600))

	for _, name := range []string{"good.log", "open.log"} {
		w, err := audit.Open(audit.Config{File: filepath.Join(dir, name), Signer: ecdsaSigner{key}, PublicKey: spki, CheckpointEvery: 4})
		must(err)
		for i := range 6 {
			must(w.Write(&audit.Event{EventName: "Encrypt", RequestID: "req-" + string(rune('a'+i))}))
		}
		if name == "good.log" {
			must(w.Close())
		}
	}
	good, err := os.ReadFile(filepath.Join(dir, "good.log"))
	must(err)
	tampered := bytes.Replace(good, []byte(`"requestID":"req-b"`), []byte(`"requestID":"req-x"`), 1)
	if bytes.Equal(tampered, good) {
		t.Fatal("tampering did not apply")
	}
	must(os.WriteFile(filepath.Join(dir, "tampered.log"), tampered, 0o600))
	return dir
}

func TestAuditVerifyCommand(t *testing.T) {
	t.Parallel()
	dir := auditFixture(t)
	p := func(name string) string { return filepath.Join(dir, name) }
	cases := []struct {
		name       string
		args       []string
		wantErr    error  // checked with errors.Is when set
		errHas     string // the error's text contains this ("" = success)
		stdoutHas  string
		stdoutLack string
	}{
		{name: "good, PEM key", args: []string{"verify", "--public-key", p("key.pem"), p("good.log")},
			stdoutHas: "OK: 1 files, 6 records (seq 1 to 6), 2 checkpoints", stdoutLack: "warning"},
		{name: "good, DER key, flag after file", args: []string{"verify", p("good.log"), "--public-key", p("key.der")},
			stdoutHas: "signed through seq 6"},
		{name: "tampered", args: []string{"verify", "--public-key", p("key.pem"), p("tampered.log")},
			wantErr: audit.ErrChain, errHas: "tampered.log:2 (seq 2)", stdoutHas: "TAMPERED: " + p("tampered.log") + " line 2"},
		{name: "unsigned tail is a warning", args: []string{"verify", "--public-key", p("key.pem"), p("open.log")},
			stdoutHas: "warning: 2 records after the last checkpoint (seq 5 to 6) are not signed"},
		{name: "unsigned tail with --require-signed", args: []string{"verify", "--require-signed", "--public-key", p("key.pem"), p("open.log")},
			errHas: "2 records after the last checkpoint are not signed"},
		{name: "another key", args: []string{"verify", "--public-key", p("other.pem"), p("good.log")},
			wantErr: audit.ErrKeyMismatch, errHas: "good.log:5"},
		{name: "no public key", args: []string{"verify", p("good.log")},
			errHas: "--public-key FILE is required"},
		{name: "no files", args: []string{"verify", "--public-key", p("key.pem")},
			errHas: "name the log"},
		{name: "missing file", args: []string{"verify", "--public-key", p("key.pem"), p("nope.log")},
			wantErr: os.ErrNotExist, errHas: "nope.log"},
		{name: "no subcommand", args: nil, wantErr: errUsage, errHas: "no command"},
		{name: "help", args: []string{"help"}, wantErr: flag.ErrHelp, errHas: "help", stdoutHas: "usage: hsmkms audit verify"},
		{name: "verify --help", args: []string{"verify", "--help"}, wantErr: flag.ErrHelp, errHas: "help", stdoutHas: "usage: hsmkms audit verify"},
		{name: "unknown subcommand", args: []string{"rotate"}, errHas: `unknown subcommand "rotate"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			err := auditCommand(context.Background(), c.args, &stdout, &stderr)
			switch {
			case c.errHas == "" && err != nil:
				t.Fatalf("error %v\nstdout: %s\nstderr: %s", err, &stdout, &stderr)
			case c.errHas != "" && (err == nil || !strings.Contains(err.Error(), c.errHas)):
				t.Fatalf("error %v, want one containing %q", err, c.errHas)
			case c.wantErr != nil && !errors.Is(err, c.wantErr):
				t.Errorf("error %v, want %v", err, c.wantErr)
			}
			if !strings.Contains(stdout.String(), c.stdoutHas) {
				t.Errorf("stdout %q lacks %q", &stdout, c.stdoutHas)
			}
			if c.stdoutLack != "" && strings.Contains(stdout.String(), c.stdoutLack) {
				t.Errorf("stdout %q has %q", &stdout, c.stdoutLack)
			}
		})
	}
}

// rotatedLog writes a closed log of n records at dir/audit.log that rotated
// at least twice, and returns its files oldest first as the shell lists
// them (audit.log.* sorts by rotation time, then seq) and the public key
// file.
func rotatedLog(t *testing.T, dir string, n int) (files []string, pubFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubFile = filepath.Join(t.TempDir(), "audit-public-key.pem")
	if err := os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki}), 0o600); err != nil {
		t.Fatal(err)
	}
	current := filepath.Join(dir, "audit.log")
	w, err := audit.Open(audit.Config{File: current, Signer: ecdsaSigner{key}, PublicKey: spki, CheckpointEvery: 3, MaxFileSize: 1500})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := w.Write(&audit.Event{EventName: "Encrypt", RequestID: fmt.Sprintf("req-%03d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	rotated, err := filepath.Glob(current + ".*")
	if err != nil {
		t.Fatal(err)
	}
	return append(rotated, current), pubFile
}

// TestAuditVerifyFindsTheLog names the log as the README does — by its
// directory or its current file — on a log never rotated and on one rotated
// several times: the rotated files are found and read, in order. The
// explicit list keeps working, and the README's earlier form, whose
// audit.log.* matches nothing before the first rotation, works too.
func TestAuditVerifyFindsTheLog(t *testing.T) {
	t.Parallel()
	fresh := t.TempDir()
	freshFiles, freshKey := rotatedLog(t, fresh, 2) // too small to rotate
	if len(freshFiles) != 1 {
		t.Fatalf("the fresh log has %d files, want 1: %v", len(freshFiles), freshFiles)
	}
	rotated := t.TempDir()
	rotatedFiles, rotatedKey := rotatedLog(t, rotated, 40)
	if len(rotatedFiles) < 3 {
		t.Fatalf("the rotated log has %d files, want at least 3: %v", len(rotatedFiles), rotatedFiles)
	}
	// The records, for the OK line: 2 and 40 (checkpoints are not records).
	freshOK := "OK: 1 files, 2 records (seq 1 to 2)"
	rotatedOK := fmt.Sprintf("OK: %d files, 40 records (seq 1 to 40)", len(rotatedFiles))
	cases := []struct {
		name      string
		key       string
		logs      []string
		stdoutHas []string
	}{
		{"fresh: directory", freshKey, []string{fresh}, []string{freshOK}},
		{"fresh: current file", freshKey, []string{filepath.Join(fresh, "audit.log")}, []string{freshOK}},
		{"fresh: the earlier README form", freshKey, []string{filepath.Join(fresh, "audit.log.*"), filepath.Join(fresh, "audit.log")},
			[]string{freshOK, "note: " + filepath.Join(fresh, "audit.log.*") + " matches no file"}},
		{"rotated: directory", rotatedKey, []string{rotated}, []string{rotatedOK}},
		{"rotated: current file", rotatedKey, []string{filepath.Join(rotated, "audit.log")}, []string{rotatedOK}},
		{"rotated: explicit list", rotatedKey, rotatedFiles, []string{rotatedOK}},
		{"rotated: one rotated file alone", rotatedKey, rotatedFiles[1:2], []string{"OK: 1 files", "starts at seq"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			args := append([]string{"verify", "--public-key", c.key}, c.logs...)
			if err := auditCommand(context.Background(), args, &stdout, &stderr); err != nil {
				t.Fatalf("error %v\nstdout: %s\nstderr: %s", err, &stdout, &stderr)
			}
			for _, want := range c.stdoutHas {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("stdout %q lacks %q", &stdout, want)
				}
			}
			if strings.Contains(stdout.String(), "warning") && !strings.Contains(c.name, "alone") {
				t.Errorf("stdout has a warning: %q", &stdout)
			}
		})
	}

	// A record changed in the oldest rotated file is found when the log is
	// named by its directory: the rotated files are really read.
	t.Run("rotated: tampered oldest file, by directory", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		files, key := rotatedLog(t, dir, 40)
		b, err := os.ReadFile(files[0])
		if err != nil {
			t.Fatal(err)
		}
		tampered := bytes.Replace(b, []byte(`"requestID":"req-001"`), []byte(`"requestID":"req-xyz"`), 1)
		if bytes.Equal(tampered, b) {
			t.Fatal("tampering did not apply")
		}
		if err := os.WriteFile(files[0], tampered, 0o600); err != nil {
			t.Fatal(err)
		}
		var stdout, stderr bytes.Buffer
		err = auditCommand(context.Background(), []string{"verify", "--public-key", key, dir}, &stdout, &stderr)
		if !errors.Is(err, audit.ErrChain) {
			t.Fatalf("error %v, want audit.ErrChain\nstdout: %s", err, &stdout)
		}
		if !strings.Contains(stdout.String(), "TAMPERED: "+files[0]+" line 2") {
			t.Errorf("stdout %q does not name %s line 2", &stdout, files[0])
		}
	})

	t.Run("empty directory", func(t *testing.T) {
		t.Parallel()
		var stdout, stderr bytes.Buffer
		err := auditCommand(context.Background(), []string{"verify", "--public-key", freshKey, t.TempDir()}, &stdout, &stderr)
		if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "audit.log") {
			t.Errorf("error %v, want one wrapping os.ErrNotExist that names audit.log", err)
		}
	})
}
