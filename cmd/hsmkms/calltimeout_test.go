package main

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The PKCS#11 call bound comes from the flag, else the config file, else
// hsm's default (0 here); a negative one is refused.
func TestCallTimeoutFlagAndConfig(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("version: v1\npkcs11: {token_label: x, call_timeout: 750ms}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want time.Duration
	}{
		{"default", []string{"--dev"}, 0},
		{"flag", []string{"--dev", "--pkcs11-call-timeout", "2s"}, 2 * time.Second},
		{"file", []string{"--dev", "--config", file}, 750 * time.Millisecond},
		{"flag over file", []string{"--dev", "--config", file, "--pkcs11-call-timeout", "3s"}, 3 * time.Second},
	} {
		o, err := parseServeFlags(tc.args, io.Discard)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if o.callTimeout != tc.want {
			t.Errorf("%s: call timeout %v, want %v", tc.name, o.callTimeout, tc.want)
		}
	}
	if _, err := parseServeFlags([]string{"--dev", "--pkcs11-call-timeout", "-1s"}, io.Discard); err == nil {
		t.Error("a negative call timeout was accepted")
	}
}
