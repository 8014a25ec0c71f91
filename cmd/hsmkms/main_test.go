package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// runCommand runs the command line as main does and returns its exit
// status and output.
func runCommand(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = exitCode(run(context.Background(), args, &out, &errOut), &errOut)
	return code, out.String(), errOut.String()
}

// TestHelp: help that is asked for goes to stdout with status 0; a command
// line without a command gets the usage on stderr and status 1. The usage
// lists every command.
func TestHelp(t *testing.T) {
	t.Parallel()
	commands := []string{"hsmkms serve", "hsmkms audit verify", "hsmkms tls new-key", "hsmkms admin", "hsmkms version", "hsmkms help"}
	cases := []struct {
		name       string
		args       []string
		wantCode   int
		usageOn    string // "stdout" or "stderr"
		stderrHas  string
		stdoutLack bool
	}{
		{name: "help", args: []string{"help"}, usageOn: "stdout"},
		{name: "--help", args: []string{"--help"}, usageOn: "stdout"},
		{name: "-h", args: []string{"-h"}, usageOn: "stdout"},
		{name: "no command", args: nil, wantCode: 1, usageOn: "stderr", stdoutLack: true},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: 1, usageOn: "stderr", stderrHas: `unknown command "frobnicate"`, stdoutLack: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := runCommand(c.args...)
			if code != c.wantCode {
				t.Errorf("exit status %d, want %d (stderr %q)", code, c.wantCode, stderr)
			}
			usage := map[string]string{"stdout": stdout, "stderr": stderr}[c.usageOn]
			for _, cmd := range commands {
				if !strings.Contains(usage, cmd) {
					t.Errorf("the usage on %s does not list %q:\n%s", c.usageOn, cmd, usage)
				}
			}
			if c.usageOn == "stdout" && stderr != "" {
				t.Errorf("stderr %q, want nothing", stderr)
			}
			if c.stdoutLack && stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
			if !strings.Contains(stderr, c.stderrHas) {
				t.Errorf("stderr %q lacks %q", stderr, c.stderrHas)
			}
		})
	}
}

// TestServeHelp: `hsmkms serve --help` lists serve's flags and exits 0,
// without starting anything.
func TestServeHelp(t *testing.T) {
	t.Parallel()
	for _, flag := range []string{"--help", "-h"} {
		code, stdout, stderr := runCommand("serve", flag)
		if code != 0 {
			t.Errorf("serve %s: exit status %d, want 0\nstderr: %s", flag, code, stderr)
		}
		if out := stdout + stderr; !strings.Contains(out, "-data-dir") || !strings.Contains(out, "-listen") {
			t.Errorf("serve %s does not list the flags:\n%s", flag, out)
		}
	}
}

// TestVersion prints the stamped version; unstamped (as here, under go
// test), the toolchain's record or "dev" — never an empty version.
func TestVersion(t *testing.T) {
	// Not parallel: it sets the package variable the build stamps.
	stamped := version
	t.Cleanup(func() { version = stamped })

	version = ""
	code, stdout, _ := runCommand("version")
	got, ok := strings.CutPrefix(strings.TrimSpace(stdout), "hsmkms ")
	if code != 0 || !ok || got == "" || strings.ContainsAny(got, " \n") {
		t.Errorf("unstamped: status %d, stdout %q: want \"hsmkms <version>\"", code, stdout)
	}

	version = "v1.2.3-4-gabcdef0-dirty"
	if code, stdout, _ := runCommand("version"); code != 0 || stdout != "hsmkms v1.2.3-4-gabcdef0-dirty\n" {
		t.Errorf("stamped: status %d, stdout %q", code, stdout)
	}
}
