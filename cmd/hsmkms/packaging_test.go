package main

import (
	"bufio"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSampleConfigsParse: the sample configurations in packaging/ are
// accepted as written (every key known, every value valid), so an operator
// who copies one starts from something that works.
func TestSampleConfigsParse(t *testing.T) {
	for _, f := range []string{"hsmkms.yaml", "hsmkms-softhsm.yaml"} {
		path := filepath.Join("..", "..", "packaging", f)
		o, err := parseServeFlags([]string{"--config", path}, io.Discard)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if o.tlsCert == "" || len(o.file.Principals) == 0 {
			t.Errorf("%s: no TLS or no principals: a production sample must have both", f)
		}
	}
}

// TestSystemdUnit: the unit runs hsmkms as its own user, hardened, with a
// command line serve accepts.
func TestSystemdUnit(t *testing.T) {
	f, err := os.Open(filepath.Join("..", "..", "packaging", "hsmkms.service"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			got[k] = v
		}
	}
	for k, want := range map[string]string{
		"User": "hsmkms", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ReadWritePaths": "/var/lib/hsmkms",
		"ProtectHome": "yes", "PrivateTmp": "yes", "CapabilityBoundingSet": "", "LimitNOFILE": "65536",
		"LimitCORE": "0", "UMask": "0077", "ExecReload": "/bin/kill -HUP $MAINPID",
	} {
		if v, ok := got[k]; !ok || v != want {
			t.Errorf("%s=%q, want %q", k, v, want)
		}
	}
	args := strings.Fields(got["ExecStart"])
	if len(args) < 2 || args[0] != "/usr/local/bin/hsmkms" || args[1] != "serve" {
		t.Fatalf("ExecStart=%q", got["ExecStart"])
	}
	// serve accepts the unit's flags (with the sample config in place of
	// /etc/hsmkms/hsmkms.yaml).
	for i, a := range args {
		if a == "/etc/hsmkms/hsmkms.yaml" {
			args[i] = filepath.Join("..", "..", "packaging", "hsmkms.yaml")
		}
	}
	if _, err := parseServeFlags(args[2:], io.Discard); err != nil {
		t.Errorf("serve refuses the unit's command line: %v", err)
	}
}

// dockerStages splits a Dockerfile into its stages' instructions, by stage
// name (the last, unnamed stage is "").
func dockerStages(t *testing.T) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	stages := map[string][]string{}
	cur := ""
	text := strings.ReplaceAll(string(b), "\\\n", " ")
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if f := strings.Fields(line); strings.EqualFold(f[0], "FROM") {
			cur = ""
			if len(f) == 4 && strings.EqualFold(f[2], "AS") {
				cur = f[3]
			}
		}
		stages[cur] = append(stages[cur], line)
	}
	return stages
}

// TestContainerImages: the production image runs as an unprivileged user
// without SoftHSM2, exposes its ports, checks /readyz, and is the default
// target; the dev image adds SoftHSM2; compose publishes on loopback only;
// the build context leaves out the dev data directory and PIN files.
func TestContainerImages(t *testing.T) {
	stages := dockerStages(t)
	has := func(stage, prefix string) bool {
		for _, l := range stages[stage] {
			if strings.HasPrefix(l, prefix) {
				return true
			}
		}
		return false
	}
	for _, want := range []string{"USER hsmkms", "EXPOSE 8443", "HEALTHCHECK", "ENTRYPOINT"} {
		if !has("prod", want) {
			t.Errorf("the prod stage has no %q", want)
		}
	}
	for _, l := range stages["prod"] {
		if strings.Contains(l, "softhsm2") {
			t.Errorf("the prod stage installs SoftHSM2: %s", l)
		}
		if strings.HasPrefix(l, "HEALTHCHECK") && !strings.Contains(l, "READYZ") {
			t.Errorf("the health check does not ask /readyz: %s", l)
		}
	}
	if !has("dev", "RUN apt-get update && apt-get install -y --no-install-recommends softhsm2") || !has("dev", "USER hsmkms") {
		t.Errorf("the dev stage: %v", stages["dev"])
	}
	if last := stages[""]; len(last) != 1 || last[0] != "FROM prod" {
		t.Errorf("the default target is not prod: %v", last)
	}
	compose, err := os.ReadFile(filepath.Join("..", "..", "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(compose), `"127.0.0.1:8080:8080"`) || strings.Contains(string(compose), "network_mode") {
		t.Error("docker-compose.yml does not publish on the host's loopback alone")
	}
	ignore, err := os.ReadFile(filepath.Join("..", "..", ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{".hsmkms", "**/*.pin", ".git"} {
		if !strings.Contains(string(ignore), want+"\n") {
			t.Errorf(".dockerignore does not leave out %s", want)
		}
	}
}
