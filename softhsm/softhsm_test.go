package softhsm

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Init is idempotent: a second run on the same directory keeps the config,
// the PINs and the one token, and adds a second label only when asked.
func TestInitIsIdempotent(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tok")
	ctx := context.Background()
	first, err := Init(ctx, dir, "alpha")
	if err != nil {
		t.Fatalf("Init: %v (install SoftHSM2 with: %s)", err, InstallHint)
	}
	pin1, err := first.UserPIN()
	if err != nil || len(pin1) < 16 {
		t.Fatalf("user PIN %q, %v", pin1, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "user.pin")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("user.pin mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	second, err := Init(ctx, dir, "alpha")
	if err != nil {
		t.Fatal(err)
	}
	pin2, _ := second.UserPIN()
	if second != first || pin2 != pin1 {
		t.Fatalf("second Init changed the token: %+v %q vs %+v %q", second, pin2, first, pin1)
	}
	if n := countLabel(t, first.ConfigPath, "alpha"); n != 1 {
		t.Fatalf("%d tokens labelled alpha after two runs, want 1", n)
	}
	if _, err := Init(ctx, dir, "beta"); err != nil {
		t.Fatal(err)
	}
	if countLabel(t, first.ConfigPath, "alpha") != 1 || countLabel(t, first.ConfigPath, "beta") != 1 {
		t.Fatal("a second label did not add exactly one token")
	}
}

func countLabel(t *testing.T, conf, label string) int {
	t.Helper()
	cmd := exec.Command("softhsm2-util", "--show-slots")
	cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+conf)
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "Label:" && f[1] == label {
			n++
		}
	}
	return n
}
