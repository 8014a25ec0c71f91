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
			errHas: "name the log files"},
		{name: "missing file", args: []string{"verify", "--public-key", p("key.pem"), p("nope.log")},
			wantErr: os.ErrNotExist, errHas: "nope.log"},
		{name: "no subcommand", args: nil, wantErr: flag.ErrHelp, errHas: "help"},
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
