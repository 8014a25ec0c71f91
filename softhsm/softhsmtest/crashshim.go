package softhsmtest

import (
	_ "embed"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

//go:embed testdata/sigkill_after_write.c
var crashShimSource []byte

// CrashShim compiles testdata/sigkill_after_write.c, an LD_PRELOAD shim that kills
// the process with SIGKILL right after the N-th write of a SoftHSM2 object
// file (HSMKMS_KILL_AFTER_WRITE=N), with the C compiler cgo already needs
// ($CC, else gcc), and returns the shared object's path. It fails tb (never
// skips) without a compiler.
func CrashShim(tb testing.TB) string {
	tb.Helper()
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "gcc"
	}
	dir := tb.TempDir()
	src := filepath.Join(dir, "sigkill_after_write.c")
	if err := os.WriteFile(src, crashShimSource, 0o600); err != nil {
		tb.Fatal(err)
	}
	so := filepath.Join(dir, "sigkill_after_write.so")
	out, err := exec.Command(cc, "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o", so, src, "-ldl").CombinedOutput()
	if err != nil {
		tb.Fatalf("building the crash shim with %s (cgo needs a C compiler too: apt-get install -y gcc): %v\n%s", cc, err, out)
	}
	return so
}
