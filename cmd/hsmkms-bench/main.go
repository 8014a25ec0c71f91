// Command hsmkms-bench measures, in one run on one machine, what each layer
// of hsmkms costs on top of the token, for AES-256-GCM Encrypt of a small
// plaintext (1 KiB by default):
//
//	raw token        hsm: IV from the token RNG (batched) + C_EncryptInit/C_Encrypt
//	service.Encrypt  the service call, no HTTP
//	HTTP null        the api baseline handler (same echo stack, no SigV4, no
//	                 service) in a server process of its own, driven by the
//	                 AWS SDK's KMS client with the same Encrypt request
//	HTTP Encrypt     the real endpoint (SigV4, service, token) in a server
//	                 process of its own, same client and request
//	HTTP Encrypt     the same with the signed audit log on, in a second
//	(audit on)       server process; measured alternately with the one
//	                 above (off, on, on, off, in half-phase rounds)
//
// each at concurrency 1 and -concurrency, and prints throughput, latency,
// CPU per operation (client and server) and server memory, the ratios
// service/raw and HTTP/null, and audit on ÷ off in throughput and server CPU
// per request against the target (on within 15 % of off). Every operation
// must succeed, a sample of the ciphertexts of each layer is decrypted and
// checked, and the audit log must verify with the audit key and hold every
// request the audited server answered, or the run fails.
//
// Usage (make bench runs it):
//
//	hsmkms-bench [-duration 5s] [-warmup 1s] [-concurrency 16] [-size 1024]
//	             [-session-key-copies=true] [-requests N] [-cpuprofile FILE]
//	             [-client-cpuprofile FILE] [-json FILE]
//
// The servers are this executable re-run with a hidden subcommand (see
// child.go); each KMS server makes its own SoftHSM2 token in a directory of
// its own, as does the benchmarking process.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/softhsm"
)

func main() {
	if code, ok := childCommand(os.Args[1:]); ok {
		os.Exit(code)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "hsmkms-bench: FAILED:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("hsmkms-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.DurationVar(&o.Duration, "duration", defaultOptions.Duration, "length of each measured phase")
	fs.DurationVar(&o.Warmup, "warmup", defaultOptions.Warmup, "unmeasured warm-up before each phase")
	fs.IntVar(&o.Concurrency, "concurrency", defaultOptions.Concurrency, "goroutines of the concurrent phases (the token has 32 sessions)")
	fs.IntVar(&o.Size, "size", defaultOptions.Size, "plaintext bytes per Encrypt")
	fs.BoolVar(&o.SessionKeyCopies, "session-key-copies", defaultOptions.SessionKeyCopies, "hsm.Config.SessionKeyCopies, in this process and the server")
	fs.Int64Var(&o.Requests, "requests", 0, "run the HTTP Encrypt phases (audit off and on) at full concurrency for exactly `N` requests each instead of -duration (RSS soak)")
	fs.StringVar(&o.CPUProfile, "cpuprofile", "", "write the KMS server's (audit off) CPU profile of the HTTP Encrypt phase at full concurrency to `FILE`")
	clientProfile := fs.String("client-cpuprofile", "", "write this (load-generating) process's CPU profile of the whole run to `FILE`")
	jsonFile := fs.String("json", "", "also write the results as JSON to `FILE`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}

	dir, err := os.MkdirTemp("", "hsmkms-bench-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	tok, err := softhsm.Init(ctx, filepath.Join(dir, "softhsm"), "hsmkms-bench")
	if err != nil {
		return err
	}
	// SoftHSM2 reads its configuration once, when the module is loaded.
	if err := os.Setenv("SOFTHSM2_CONF", tok.ConfigPath); err != nil {
		return err
	}
	pin, err := tok.UserPIN()
	if err != nil {
		return err
	}
	o.Token = hsm.Config{ModulePath: tok.ModulePath, TokenLabel: tok.Label, PIN: pin}
	o.DataDir = dir
	o.Progress = stderr

	if *clientProfile != "" {
		f, err := os.Create(*clientProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	rep, err := bench(ctx, o)
	if err != nil {
		return err
	}
	printReport(stdout, rep)
	if *jsonFile != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*jsonFile, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

var defaultOptions = options{
	Duration:         5e9,
	Warmup:           1e9,
	Concurrency:      16,
	Size:             1024,
	SessionKeyCopies: true,
}

func printReport(w io.Writer, r *report) {
	copies := "on"
	if !r.SessionKeyCopies {
		copies = "off"
	}
	fmt.Fprintf(w, "hsmkms-bench: Encrypt of %d bytes, %s per phase after %s warm-up, session key copies %s\n",
		r.Size, r.Duration, r.Warmup, copies)
	h := r.Host
	fmt.Fprintf(w, "host: %s, %d CPUs, GOMAXPROCS %d, %s %s, SoftHSM %s\n\n",
		h.CPUModel, h.NumCPU, h.GOMAXPROCS, h.GoVersion, h.OSArch, h.SoftHSM)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%-23s\tconc\tops\tops/s\tp50 µs\tp99 µs\tclient CPU µs/op\tserver CPU µs/req\tserver RSS MiB\t\n", "phase")
	for _, p := range r.Phases {
		server := "-\t-"
		if p.ServerCPUMicrosPerReq != nil {
			server = fmt.Sprintf("%.1f\t%.1f", *p.ServerCPUMicrosPerReq, *p.ServerRSSMiB)
		}
		fmt.Fprintf(tw, "%-23s\t%d\t%d\t%.0f\t%.1f\t%.1f\t%.1f\t%s\t\n",
			p.Phase, p.Concurrency, p.Ops, p.OpsPerSec, p.P50Micros, p.P99Micros, p.ClientCPUMicrosPerOp, server)
	}
	tw.Flush()

	fmt.Fprintln(w, "\nratios (ops/s ÷ ops/s):")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, q := range r.Ratios {
		fmt.Fprintf(tw, "  %s\t%.3f\n", q.Name, q.Value)
	}
	tw.Flush()

	fmt.Fprintf(w, "\naudit on ÷ audit off, HTTP Encrypt (target: on within %.0f %% of off):\n", 100*r.AuditTarget)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, a := range r.Audit {
		cpu, verdict := "n/a (off server CPU too small to measure)", "outside target"
		if a.ServerCPURatio != nil {
			cpu = fmt.Sprintf("%.3f", *a.ServerCPURatio)
		}
		if a.WithinTarget {
			verdict = "within target"
		}
		fmt.Fprintf(tw, "  c=%d\tops/s %.3f\tserver CPU µs/req %s\t%s\n", a.Concurrency, a.OpsPerSecRatio, cpu, verdict)
	}
	tw.Flush()

	fmt.Fprintln(w)
	if r.Requests > 0 {
		for _, name := range []string{phaseHTTP, phaseHTTPAudit} {
			if p := r.phase(name, r.Concurrency); p != nil {
				fmt.Fprintf(w, "soak: %s c=%d ran %d requests; server RSS %.1f MiB before, %.1f MiB after\n",
					name, p.Concurrency, p.Ops, *p.ServerRSSBeforeMiB, *p.ServerRSSMiB)
			}
		}
	}
	notes := []string{
		"server CPU is utime+stime of the server process from /proc (10 ms ticks) over the measured part; client CPU is this process's (getrusage)",
		"HTTP Encrypt audit off and on: two server processes, the same plaintexts; at each level each is warmed up, then measured off, on, on, off in rounds of half the phase; a row sums its two rounds",
		fmt.Sprintf("verified: %d sampled ciphertexts (raw, service, HTTP, HTTP audit on) decrypt to their plaintexts", r.Verified),
		fmt.Sprintf("audit log: verified (audit.Verify) after the audited server exited: %d records, one per request it answered (two for its CreateKey: intent and outcome), under %d signed checkpoint(s) (key %s), none unsigned",
			r.AuditLog.Records, r.AuditLog.Checkpoints, r.AuditLog.Key),
	}
	if r.NullDeserializationErrors > 0 {
		notes = append(notes, fmt.Sprintf("HTTP null: the SDK refused the empty {} response %d times; those requests were counted as done (a full round trip)", r.NullDeserializationErrors))
	} else {
		notes = append(notes, "HTTP null: the SDK accepted every empty {} Encrypt response (no errors tolerated)")
	}
	if r.CPUProfile != "" {
		notes = append(notes, "KMS server (audit off) CPU profile of HTTP Encrypt c="+fmt.Sprint(r.Concurrency)+": "+r.CPUProfile+" (go tool pprof -top "+r.CPUProfile+")")
	}
	fmt.Fprintln(w, "notes:\n  "+strings.Join(notes, "\n  "))
}
