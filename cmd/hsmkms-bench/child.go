package main

// The HTTP phases measure servers in processes of their own, so that their
// CPU time and memory can be read from /proc and are not mixed with the load
// generator's. The tool re-executes itself with a hidden subcommand:
//
//	hsmkms-bench serve-null -listen 127.0.0.1:0
//	hsmkms-bench serve-kms  -listen 127.0.0.1:0 [-data-dir DIR] [-session-key-copies=BOOL] [-cpuprofile FILE] [-audit]
//
// With -audit the KMS server records every request in a signed audit log,
// DIR/audit/audit.log, as cmd/hsmkms serve does, and writes the audit key's
// public key to DIR/audit/audit-public-key.pem for the parent to verify the
// log with once the child has exited (the log is closed, with a final signed
// checkpoint, before the token).
//
// The child prints the address it listens on as the first line of stdout,
// then reads commands, one per line, from stdin and answers each with one
// line ("ok" or "error: ..."):
//
//	profile-start   start the CPU profile (serve-kms with -cpuprofile)
//	profile-stop    stop it and close the file
//
// It shuts down when stdin closes (which also happens when the parent dies,
// however it dies) or on SIGTERM/SIGINT.

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hsmkms/hsmkms/audit"
	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/service"
	"github.com/hsmkms/hsmkms/service/api"
	"github.com/hsmkms/hsmkms/service/store"
	"github.com/hsmkms/hsmkms/softhsm"
)

// The identity of the serve-kms child.
const (
	benchRegion    = "us-east-1"
	benchAccount   = "111122223333"
	benchARN       = "arn:aws:iam::111122223333:root"
	benchAccessKey = "bench"
	benchSecret    = "bench"
)

var benchCaller = service.Caller{Account: benchAccount, ARN: benchARN}

// childCommand reports whether args name a hidden child subcommand and, if
// so, runs it and returns its exit code.
func childCommand(args []string) (int, bool) {
	if len(args) == 0 || (args[0] != "serve-null" && args[0] != "serve-kms") {
		return 0, false
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := serveChild(ctx, args[0], args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "hsmkms-bench %s: %v\n", args[0], err)
		return 1, true
	}
	return 0, true
}

func serveChild(ctx context.Context, cmd string, args []string, stdin io.Reader, stdout io.Writer) (err error) {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	dataDir := fs.String("data-dir", "", "directory for the token and store (default: a temporary directory, removed on exit)")
	copies := fs.Bool("session-key-copies", true, "hsm.Config.SessionKeyCopies")
	cpuprofile := fs.String("cpuprofile", "", "CPU profile file, written between profile-start and profile-stop")
	auditOn := fs.Bool("audit", false, "serve-kms: record every request in the signed audit log DIR/audit/audit.log")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}

	// Watch stdin from the start: if the parent goes away while the token is
	// being created, the child must not linger.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmds := make(chan string)
	go func() {
		defer cancel()
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			select {
			case cmds <- strings.TrimSpace(sc.Text()):
			case <-ctx.Done():
				return
			}
		}
	}()

	var handler http.Handler
	switch cmd {
	case "serve-null":
		handler = api.NewBaseline()
	case "serve-kms":
		k, err := newKMSServer(ctx, *dataDir, *copies, *auditOn)
		if err != nil {
			return err
		}
		// A failure to close the audit log (its final checkpoint) fails the
		// child, and so the run.
		defer func() { err = errors.Join(err, k.close()) }()
		handler = k
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	errLog := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// As cmd/hsmkms configures its server.
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(errLog.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	if _, err := fmt.Fprintln(stdout, ln.Addr().String()); err != nil {
		srv.Close()
		return err
	}

	prof := &profiler{path: *cpuprofile}
	defer prof.stop()
	for done := false; !done; {
		select {
		case err := <-serveErr:
			return err
		case <-ctx.Done():
			done = true
		case c := <-cmds:
			var err error
			switch c {
			case "profile-start":
				err = prof.start()
			case "profile-stop":
				err = prof.stop()
			default:
				err = fmt.Errorf("unknown command %q", c)
			}
			reply := "ok"
			if err != nil {
				reply = "error: " + strings.ReplaceAll(err.Error(), "\n", " ")
			}
			if _, err := fmt.Fprintln(stdout, reply); err != nil {
				done = true
			}
		}
	}
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-serveErr; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return prof.stop()
}

// kmsServer is the real endpoint, built as cmd/hsmkms builds it: a SoftHSM2
// token of this process's own, a bbolt store, the service and the SigV4 API,
// and, if auditDir is set, the audit log.
type kmsServer struct {
	cfg      hsm.Config
	db       *store.Bolt
	tok      *hsm.Token
	auditDir string
	audit    *audit.Writer
	handler  atomic.Pointer[api.Server]
	cleanup  []func()
}

// auditLogPath is the audit log in a serve-kms child's data directory.
func auditLogPath(dataDir string) string {
	return filepath.Join(dataDir, "audit", "audit.log")
}

// auditPublicKeyPath is the audit key's public key (PEM) beside the log.
func auditPublicKeyPath(dataDir string) string {
	return filepath.Join(dataDir, "audit", "audit-public-key.pem")
}

func newKMSServer(ctx context.Context, dataDir string, copies, auditOn bool) (_ *kmsServer, err error) {
	k := &kmsServer{}
	defer func() {
		if err != nil {
			k.close()
		}
	}()
	if dataDir == "" {
		d, err := os.MkdirTemp("", "hsmkms-bench-server-*")
		if err != nil {
			return nil, err
		}
		dataDir = d
		k.cleanup = append(k.cleanup, func() { os.RemoveAll(d) })
	}
	st, err := softhsm.Init(ctx, filepath.Join(dataDir, "softhsm"), "hsmkms-bench")
	if err != nil {
		return nil, err
	}
	// SoftHSM2 reads its configuration once, when the module is loaded.
	if err := os.Setenv("SOFTHSM2_CONF", st.ConfigPath); err != nil {
		return nil, err
	}
	pin, err := st.UserPIN()
	if err != nil {
		return nil, err
	}
	k.cfg = hsm.Config{ModulePath: st.ModulePath, TokenLabel: st.Label, PIN: pin, SessionKeyCopies: copies}
	if auditOn {
		k.auditDir = dataDir
	}
	if k.db, err = store.Open(filepath.Join(dataDir, "hsmkms.db")); err != nil {
		return nil, err
	}
	k.cleanup = append(k.cleanup, func() { k.db.Close() })
	if err := k.open(ctx); err != nil {
		return nil, err
	}
	return k, nil
}

// open logs in to the token and builds the service and API over it.
func (k *kmsServer) open(ctx context.Context) error {
	tok, err := hsm.Open(ctx, k.cfg)
	if err != nil {
		return fmt.Errorf("open token: %w", err)
	}
	svc, err := service.New(service.Config{Token: tok, Store: k.db, Region: benchRegion})
	if err != nil {
		tok.Close()
		return err
	}
	creds := api.StaticCredentials{}
	if err := creds.Add(benchAccessKey, []byte(benchSecret), benchCaller); err != nil {
		tok.Close()
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	apiCfg := api.Config{Service: svc, Credentials: creds, Region: benchRegion, Logger: log}
	var w *audit.Writer
	if k.auditDir != "" {
		if w, err = openAudit(ctx, svc, k.auditDir, log); err != nil {
			tok.Close()
			return err
		}
		apiCfg.Audit = w
	}
	h, err := api.New(apiCfg)
	if err != nil {
		if w != nil {
			w.Close()
		}
		tok.Close()
		return err
	}
	k.tok = tok
	k.audit = w
	k.handler.Store(h)
	return nil
}

// openAudit opens the audit log as cmd/hsmkms serve does (default checkpoint
// interval and no rotation; the minute ticker that signs a quiet server's
// records is left out, as a measured server is never quiet for a minute),
// and writes the audit key's public key beside it.
func openAudit(ctx context.Context, svc *service.Service, dataDir string, log *slog.Logger) (*audit.Writer, error) {
	return svc.OpenAuditLog(ctx, audit.Config{File: auditLogPath(dataDir), Logger: log}, auditPublicKeyPath(dataDir))
}

func (k *kmsServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	k.handler.Load().ServeHTTP(w, r)
}

// close closes the audit log (its final checkpoint is signed in the token),
// then the token and the store. Only the audit log's error is returned: it is
// what the parent's verification depends on.
func (k *kmsServer) close() error {
	var err error
	if k.audit != nil {
		if err = k.audit.Close(); err != nil {
			err = fmt.Errorf("close audit log: %w", err)
		}
		k.audit = nil
	}
	if k.tok != nil {
		k.tok.Close()
		k.tok = nil
	}
	for i := len(k.cleanup) - 1; i >= 0; i-- {
		k.cleanup[i]()
	}
	k.cleanup = nil
	return err
}

// profiler is the child's CPU profile, switched on and off by the parent.
type profiler struct {
	path string
	f    *os.File
}

func (p *profiler) start() error {
	if p.path == "" {
		return errors.New("no -cpuprofile given")
	}
	if p.f != nil {
		return errors.New("profile already running")
	}
	f, err := os.Create(p.path)
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return err
	}
	p.f = f
	return nil
}

func (p *profiler) stop() error {
	if p.f == nil {
		return nil
	}
	pprof.StopCPUProfile()
	err := p.f.Close()
	p.f = nil
	return err
}

// child is a server process started by the parent.
type child struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string // stdout after the address line; closed at EOF
	addr  string

	stopOnce sync.Once
	stopErr  error
}

// startChild runs this executable with args (a hidden subcommand) and waits
// for the address it listens on. The caller must call stop.
func startChild(ctx context.Context, name string, args []string) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, args...)
	// Not the parent's token: the child makes its own.
	cmd.Env = slicesDeleteEnv(os.Environ(), "SOFTHSM2_CONF")
	cmd.Stderr = prefixWriter{prefix: name + ": ", w: os.Stderr}
	// A process group of its own: a terminal's ^C reaches only the parent,
	// which then stops the child in order; stop can kill the whole group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = w
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	w.Close()
	c := &child{name: name, cmd: cmd, stdin: stdin, lines: make(chan string, 16)}
	go func() {
		defer close(c.lines)
		defer r.Close()
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	select {
	case line, ok := <-c.lines:
		if !ok {
			err := c.stop()
			return nil, fmt.Errorf("%s exited before listening: %v", name, err)
		}
		if _, _, err := net.SplitHostPort(line); err != nil {
			c.stop()
			return nil, fmt.Errorf("%s: first line %q is not an address", name, line)
		}
		c.addr = line
	case <-time.After(2 * time.Minute):
		c.stop()
		return nil, fmt.Errorf("%s did not print its address within 2 minutes", name)
	case <-ctx.Done():
		c.stop()
		return nil, ctx.Err()
	}
	return c, nil
}

func (c *child) pid() int    { return c.cmd.Process.Pid }
func (c *child) url() string { return "http://" + c.addr }

// command sends one control line and waits for the answer.
func (c *child) command(line string) error {
	if _, err := io.WriteString(c.stdin, line+"\n"); err != nil {
		return fmt.Errorf("%s: %s: %w", c.name, line, err)
	}
	select {
	case reply, ok := <-c.lines:
		switch {
		case !ok:
			return fmt.Errorf("%s: %s: child exited", c.name, line)
		case reply == "ok":
			return nil
		default:
			return fmt.Errorf("%s: %s: %s", c.name, line, reply)
		}
	case <-time.After(30 * time.Second):
		return fmt.Errorf("%s: %s: no answer in 30s", c.name, line)
	}
}

// stats reads the child's CPU time and resident set size.
func (c *child) stats() (cpu time.Duration, rss int64, err error) {
	if cpu, err = procCPU(c.pid()); err != nil {
		return 0, 0, err
	}
	rss, err = procRSS(c.pid())
	return cpu, rss, err
}

// stop closes the child's stdin, which makes it shut down, and waits for it;
// after 15 s its process group is killed. Safe to call more than once.
func (c *child) stop() error {
	c.stopOnce.Do(func() {
		c.stdin.Close()
		done := make(chan error, 1)
		go func() { done <- c.cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				c.stopErr = fmt.Errorf("%s: %w", c.name, err)
			}
		case <-time.After(15 * time.Second):
			syscall.Kill(-c.pid(), syscall.SIGKILL)
			c.stopErr = fmt.Errorf("%s did not exit within 15s after stdin closed; killed (%v)", c.name, <-done)
		}
	})
	return c.stopErr
}

func slicesDeleteEnv(env []string, name string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// prefixWriter prefixes each write (the child's log lines) with the child's
// name. Writes from one child come from one goroutine of os/exec.
type prefixWriter struct {
	prefix string
	w      io.Writer
}

func (p prefixWriter) Write(b []byte) (int, error) {
	var sb strings.Builder
	for line := range strings.Lines(string(b)) {
		sb.WriteString(p.prefix)
		sb.WriteString(line)
	}
	if _, err := io.WriteString(p.w, sb.String()); err != nil {
		return 0, err
	}
	return len(b), nil
}

// kmsChildArgs returns the arguments of the serve-kms child.
func kmsChildArgs(dataDir string, copies bool, cpuprofile string, auditOn bool) []string {
	args := []string{"serve-kms", "-listen", "127.0.0.1:0", "-data-dir", dataDir, "-session-key-copies=" + strconv.FormatBool(copies)}
	if cpuprofile != "" {
		args = append(args, "-cpuprofile", cpuprofile)
	}
	if auditOn {
		args = append(args, "-audit")
	}
	return args
}
