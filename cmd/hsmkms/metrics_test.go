package main

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// A bare port or ":PORT" binds loopback; a host given is used as given.
func TestMetricsAddress(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"9464":           "127.0.0.1:9464",
		":9464":          "127.0.0.1:9464",
		"127.0.0.1:9464": "127.0.0.1:9464",
		"[::1]:9464":     "[::1]:9464",
		"localhost:9464": "localhost:9464",
		"0.0.0.0:9464":   "0.0.0.0:9464",
		"[::]:9464":      "[::]:9464",
		"10.1.2.3:9464":  "10.1.2.3:9464",
		":0":             "127.0.0.1:0",
	} {
		got, err := metricsAddress(in)
		if err != nil || got != want {
			t.Errorf("metricsAddress(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"x", "70000", ":http", "host:", "1.2.3.4", ":-1"} {
		if got, err := metricsAddress(bad); err == nil {
			t.Errorf("metricsAddress(%q) = %q, want an error", bad, got)
		}
	}
}

// --metrics-listen and metrics.listen in the file; the flag wins; off by
// default.
func TestMetricsListenFlagAndFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "m.yaml")
	if err := os.WriteFile(file, []byte("version: v1\nmetrics: {listen: \":9464\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--dev"}, ""},
		{[]string{"--dev", "--metrics-listen", "9100"}, "127.0.0.1:9100"},
		{[]string{"--dev", "--config", file}, "127.0.0.1:9464"},
		{[]string{"--dev", "--config", file, "--metrics-listen", "0.0.0.0:9100"}, "0.0.0.0:9100"},
	} {
		o, err := parseServeFlags(tc.args, io.Discard)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if o.metricsListen != tc.want {
			t.Errorf("%v: metrics listen %q, want %q", tc.args, o.metricsListen, tc.want)
		}
	}
	if _, err := parseServeFlags([]string{"--dev", "--metrics-listen", "nope"}, io.Discard); err == nil {
		t.Error("a malformed --metrics-listen was accepted")
	}
}
