package service

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/service/store"
	"github.com/hsmkms/hsmkms/softhsm"
	"github.com/hsmkms/hsmkms/softhsm/softhsmtest"
)

// The environment of the children TestReconcileReportsInterruptedCreateKey
// starts: this test binary, re-executed, on a token of its own.
const (
	reconcileRoleEnv  = "HSMKMS_RECONCILE_ROLE" // "create" or "reconcile"
	reconcileSpecEnv  = "HSMKMS_RECONCILE_KEY_SPEC"
	reconcileLabelEnv = "HSMKMS_RECONCILE_TOKEN_LABEL"
	reconcilePINEnv   = "HSMKMS_RECONCILE_PIN"
	reconcileDataEnv  = "HSMKMS_RECONCILE_DATA_DIR"
)

// TestReconcileReportsInterruptedCreateKey kills CreateKey right after each
// write SoftHSM2 makes to an object file (softhsmtest.CrashShim,
// preloaded; the hsm package's crash test explains it), until CreateKey
// completes, and runs Reconcile as a restarted server would. Every object
// file in the token must be accounted for: by the new key's record once
// CreateKey completed, else as an orphan or a stray object — none goes
// unreported, and Log writes one warning for each stray object.
func TestReconcileReportsInterruptedCreateKey(t *testing.T) {
	if role := os.Getenv(reconcileRoleEnv); role != "" {
		reconcileChild(t, role)
		return
	}
	t.Parallel()
	shim := softhsmtest.CrashShim(t)
	for _, tc := range []struct {
		spec    string
		objects int // token objects of one complete key
	}{
		{"SYMMETRIC_DEFAULT", 1},
		{"ECC_NIST_P256", 2},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			tok, err := softhsm.Init(context.Background(), dir, "reconcile")
			if err != nil {
				t.Fatal(err)
			}
			pin, err := tok.UserPIN()
			if err != nil {
				t.Fatal(err)
			}
			env := append(os.Environ(),
				"SOFTHSM2_CONF="+tok.ConfigPath,
				reconcileSpecEnv+"="+tc.spec,
				reconcileLabelEnv+"="+tok.Label,
				reconcilePINEnv+"="+pin,
				reconcileDataEnv+"="+dir,
				"GORACE=atexit_sleep_ms=0 "+os.Getenv("GORACE"),
			)
			// A first start makes the service's own keys (the marker key),
			// so every crash below lands in CreateKey.
			runReconcileChild(t, env, "reconcile")
			crashes := 0
			for n := 1; ; n++ {
				if n > 50 {
					t.Fatalf("CreateKey still killed after %d writes", n-1)
				}
				killed := runReconcileChild(t, env, "create", "LD_PRELOAD="+shim, "HSMKMS_KILL_AFTER_WRITE="+strconv.Itoa(n))
				runReconcileChild(t, env, "reconcile")
				var got reconcileResult
				b, err := os.ReadFile(filepath.Join(dir, "reconcile.json"))
				if err == nil {
					err = json.Unmarshal(b, &got)
				}
				if err != nil {
					t.Fatal(err)
				}
				files := objectFiles(t, dir)
				want := 1 // the marker key, and the objects a record names
				if !killed {
					want += tc.objects
				}
				rep := got.Report
				if named := files - len(rep.Orphans) - len(rep.Stray); named != want || len(rep.Missing) != 0 {
					t.Fatalf("killed after write %d: %d object files, %d orphans, %d stray, %d missing; %d left for records, want %d\nreport: %+v",
						n, files, len(rep.Orphans), len(rep.Stray), len(rep.Missing), named, want, rep)
				}
				if got.LoggedStray != len(rep.Stray) {
					t.Fatalf("Log wrote %d stray-object warnings for %d stray objects", got.LoggedStray, len(rep.Stray))
				}
				if !killed {
					if rep.Keys != 1 {
						t.Fatalf("CreateKey completed but the store has %d keys", rep.Keys)
					}
					break
				}
				crashes++
			}
			if crashes == 0 {
				t.Fatal("CreateKey was never killed: the shim did not fire")
			}
		})
	}
}

// reconcileResult is what the reconciling child found.
type reconcileResult struct {
	Report      ReconcileReport
	LoggedStray int // warnings Log wrote about stray objects
}

// objectFiles counts the token's object files (token.object excepted): the
// token objects, as SoftHSM2 stores them, whatever PKCS#11 says of them.
func objectFiles(t *testing.T, dir string) int {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "tokens", "*", "*.object"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range m {
		if filepath.Base(f) != "token.object" {
			n++
		}
	}
	return n
}

// runReconcileChild runs a child in role and reports whether SIGKILL ended it.
func runReconcileChild(t *testing.T, env []string, role string, extra ...string) bool {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestReconcileReportsInterruptedCreateKey$", "-test.count=1")
	cmd.Env = append(append(env, reconcileRoleEnv+"="+role), extra...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return true
		}
	}
	if err != nil {
		t.Fatalf("%s child: %v\n%s", role, err, out)
	}
	return false
}

// reconcileChild opens the parent's token and store and creates a key (to be
// killed) or reconciles, as a restarted server does.
func reconcileChild(t *testing.T, role string) {
	ctx := context.Background()
	tk, err := hsm.Open(ctx, hsm.Config{TokenLabel: os.Getenv(reconcileLabelEnv), PIN: os.Getenv(reconcilePINEnv), SessionKeyCopies: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tk.Close()
	dir := os.Getenv(reconcileDataEnv)
	st, err := store.Open(filepath.Join(dir, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	svc, err := New(Config{Token: tk, Store: st, Region: "eu-west-1"})
	if err != nil {
		t.Fatal(err)
	}
	switch role {
	case "create":
		spec := os.Getenv(reconcileSpecEnv)
		usage := UsageEncryptDecrypt
		if spec != "SYMMETRIC_DEFAULT" {
			usage = UsageSignVerify
		}
		if _, err := svc.CreateKey(ctx, alice, CreateKeyInput{KeySpec: &spec, KeyUsage: &usage}); err != nil {
			t.Fatal(err)
		}
	case "reconcile":
		rep, err := svc.Reconcile(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var logged bytes.Buffer
		rep.Log(slog.New(slog.NewTextHandler(&logged, nil)))
		res := reconcileResult{Report: *rep, LoggedStray: strings.Count(logged.String(), "no key reference identifies")}
		b, _ := json.Marshal(res)
		if err := os.WriteFile(filepath.Join(dir, "reconcile.json"), b, 0o600); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("unknown role %q", role)
	}
}

// The audit signing key has no record but is the service's own: Reconcile
// reports it neither as an orphan nor as a stray object.
func TestReconcileRecognisesAuditKey(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	if _, _, err := f.svc.AuditKey(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err := f.svc.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range rep.Orphans {
		if o == auditRef.Label() {
			t.Errorf("audit key reported as an orphan")
		}
	}
	for _, o := range rep.Stray {
		if bytes.HasPrefix(o.ID, auditRef.KeyID[:]) {
			t.Errorf("audit key object reported as stray: %v", o)
		}
	}
	objs, err := f.token.Objects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, o := range objs {
		if o.Ref == auditRef {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("%d audit key objects in the token, want its two halves", n)
	}
}
