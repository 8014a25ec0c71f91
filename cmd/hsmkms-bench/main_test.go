package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/softhsm/softhsmtest"
)

func TestMain(m *testing.M) {
	// The benchmark re-executes itself to run its servers; under go test
	// "itself" is this test binary, so it must answer the hidden commands.
	if code, ok := childCommand(os.Args[1:]); ok {
		os.Exit(code)
	}
	os.Exit(softhsmtest.Main(m))
}

// TestBenchSmoke runs every phase briefly, end to end: the parent's token, the
// null and KMS server processes (audit off and on), the SDK client, the CPU
// profile, the request-count mode and the audit log's verification.
func TestBenchSmoke(t *testing.T) {
	tok := softhsmtest.Token(t) // fails (does not skip) without SoftHSM2
	dir := t.TempDir()
	profile := filepath.Join(dir, "server.pprof")
	var progress bytes.Buffer
	o := options{
		Duration:         200 * time.Millisecond,
		Warmup:           50 * time.Millisecond,
		Concurrency:      2,
		Size:             1024,
		SessionKeyCopies: true,
		Requests:         50,
		CPUProfile:       profile,
		Token:            hsm.Config{ModulePath: tok.ModulePath, TokenLabel: tok.Label, PIN: softhsmtest.PIN(t, tok)},
		DataDir:          dir,
		Progress:         &progress,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rep, err := bench(ctx, o)
	if err != nil {
		t.Fatalf("bench: %v\nprogress:\n%s", err, progress.String())
	}

	want := map[string]bool{}
	for _, ph := range []string{phaseRaw, phaseService, phaseNull, phaseHTTP, phaseHTTPAudit} {
		for _, c := range []int{1, 2} {
			want[fmt.Sprint(ph, "/", c)] = true
		}
	}
	for _, p := range rep.Phases {
		key := fmt.Sprint(p.Phase, "/", p.Concurrency)
		if !want[key] {
			t.Errorf("unexpected or repeated phase %s c=%d", p.Phase, p.Concurrency)
		}
		delete(want, key)
		if p.Ops <= 0 || !positive(p.OpsPerSec) || !positive(p.P50Micros) || p.P99Micros < p.P50Micros {
			t.Errorf("%s c=%d: ops %d, %.1f ops/s, p50 %.1f µs, p99 %.1f µs", p.Phase, p.Concurrency, p.Ops, p.OpsPerSec, p.P50Micros, p.P99Micros)
		}
		server := strings.HasPrefix(p.Phase, "HTTP")
		if server != (p.ServerCPUMicrosPerReq != nil && p.ServerRSSMiB != nil) {
			t.Errorf("%s c=%d: server figures present = %v", p.Phase, p.Concurrency, !server)
		}
		if server && (*p.ServerCPUMicrosPerReq < 0 || !positive(*p.ServerRSSMiB)) {
			t.Errorf("%s c=%d: server CPU %.1f µs/req, RSS %.1f MiB", p.Phase, p.Concurrency, *p.ServerCPUMicrosPerReq, *p.ServerRSSMiB)
		}
	}
	for k := range want {
		t.Errorf("phase %s missing", k)
	}
	for _, ph := range []string{phaseHTTP, phaseHTTPAudit} {
		if p := rep.phase(ph, 2); p == nil || p.Ops != o.Requests {
			t.Errorf("%s c=2 with -requests %d: %+v", ph, o.Requests, p)
		}
	}

	if len(rep.Audit) != 2 {
		t.Errorf("%d audit comparisons, want 2: %+v", len(rep.Audit), rep.Audit)
	}
	for _, a := range rep.Audit {
		if !positive(a.OpsPerSecRatio) || (a.ServerCPURatio != nil && *a.ServerCPURatio < 0) {
			t.Errorf("audit on/off c=%d: ops/s %v, server CPU %v", a.Concurrency, a.OpsPerSecRatio, a.ServerCPURatio)
		}
	}
	// Every request to the audited server is in its verified log: CreateKey
	// (its intent and outcome),
	// the Encrypts of both levels (warm-up included) and the sample decrypts.
	if least := 2 + rep.phase(phaseHTTPAudit, 1).Ops + o.Requests; int64(rep.AuditLog.Records) < least {
		t.Errorf("audit log: %d records, want at least %d", rep.AuditLog.Records, least)
	}
	if rep.AuditLog.Checkpoints < 1 {
		t.Errorf("audit log: no checkpoint: %+v", rep.AuditLog)
	}

	if len(rep.Ratios) != 6 {
		t.Errorf("%d ratios, want 6: %+v", len(rep.Ratios), rep.Ratios)
	}
	for _, r := range rep.Ratios {
		if !positive(r.Value) {
			t.Errorf("ratio %s = %v", r.Name, r.Value)
		}
	}
	if rep.Verified < 3 {
		t.Errorf("only %d samples verified", rep.Verified)
	}
	if fi, err := os.Stat(profile); err != nil || fi.Size() == 0 {
		t.Errorf("server CPU profile: %v", err)
	}

	var out bytes.Buffer
	printReport(&out, rep)
	for _, s := range []string{"HTTP Encrypt", "HTTP Encrypt (audit on)", "service/raw c=1", "HTTP/null c=2", "soak:", "audit on ÷ audit off", "audit log: verified"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("report lacks %q:\n%s", s, out.String())
		}
	}
	t.Logf("\n%s", out.String())
}

func positive(f float64) bool { return f > 0 && !math.IsInf(f, 0) && !math.IsNaN(f) }

func TestPercentile(t *testing.T) {
	d := make([]time.Duration, 100)
	for i := range d {
		d[i] = time.Duration(i+1) * time.Microsecond
	}
	if got := percentile(d, 0.5); got != 50*time.Microsecond {
		t.Errorf("p50 = %v", got)
	}
	if got := percentile(d, 0.99); got != 99*time.Microsecond {
		t.Errorf("p99 = %v", got)
	}
	if got := percentile(d[:1], 0.99); got != time.Microsecond {
		t.Errorf("p99 of one = %v", got)
	}
}

func TestProcStats(t *testing.T) {
	pid := os.Getpid()
	cpu, err := procCPU(pid)
	if err != nil || cpu < 0 {
		t.Fatalf("procCPU: %v, %v", cpu, err)
	}
	rss, err := procRSS(pid)
	if err != nil || rss <= 0 {
		t.Fatalf("procRSS: %v, %v", rss, err)
	}
}
