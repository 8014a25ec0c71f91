package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"

	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hsmkms/hsmkms/audit"
	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/service"
	"github.com/hsmkms/hsmkms/service/api"
	"github.com/hsmkms/hsmkms/service/api/transport"
	"github.com/hsmkms/hsmkms/service/store"
	"github.com/hsmkms/hsmkms/softhsm"
)

// Dev mode identity (docs/ARCHITECTURE.md, decision 8).
const (
	devAccount   = "111122223333"
	devAccessKey = "test"
	devSecret    = "test"
)

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	o, err := parseServeFlags(args, stderr)
	if o == nil {
		return err // the command line or the file could not be read
	}
	level := new(slog.LevelVar)
	if lerr := level.UnmarshalText([]byte(o.logLevel)); lerr != nil && err == nil {
		err = fmt.Errorf("log level %q: %w", o.logLevel, lerr)
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	// From here on, a failure to start is a log record like every other.
	defer func() {
		if err != nil && !errors.Is(err, flag.ErrHelp) {
			log.Error("hsmkms stopped", "err", err)
			err = errLogged{err}
		}
	}()
	if err != nil {
		return err
	}

	// The port first: a busy port fails at once, before a token or a data
	// directory is made for nothing.
	rawLn, err := listenTCP(ctx, o.listen, o.reusePort)
	if err != nil {
		return err
	}
	defer rawLn.Close()
	// Metrics (--metrics-listen): a port of their own, bound as early.
	metricsEP, err := openMetrics(o.metricsListen)
	if err != nil {
		return err
	}
	defer metricsEP.close()
	mtr := metricsEP.metrics() // nil when off: every observer below is nil
	proxies, err := transport.ParseProxies(o.trustedProxies)
	if err != nil {
		return err
	}
	if err := privateDir(o.dataDir, log); err != nil {
		return err
	}
	// The store next: another hsmkms holding this data directory is found
	// before the token is touched (or, with --dev, made).
	st, err := store.Open(o.storePath())
	if err != nil {
		return err
	}
	defer func() {
		if err := st.Close(); err != nil {
			log.Error("close store", "err", err)
		}
	}()
	pin, err := o.tokenPIN(ctx)
	if err != nil {
		return err
	}
	creds, err := o.credentials()
	if err != nil {
		return err
	}

	tok, err := hsm.Open(ctx, hsm.Config{
		ModulePath: o.module, TokenLabel: o.tokenLabel, TokenSerial: o.tokenSerial, PIN: pin,
		MaxSessions: o.maxSessions, SessionKeyCopies: o.sessionKeyCopies, CallTimeout: o.callTimeout,
		Observer: mtr.TokenObserver(),
	})
	if err != nil {
		return fmt.Errorf("open token: %w", err)
	}
	defer func() {
		if err := tok.Close(); err != nil {
			log.Error("close token", "err", err)
		}
	}()
	now, hook, err := testHooks()
	if err != nil {
		return err
	}
	svc, err := service.New(service.Config{Token: tok, Store: st, Region: o.region, Now: now, TestHook: hook, Limits: o.limits, Logger: log})
	if err != nil {
		return err
	}
	if rep, err := svc.Reconcile(ctx); err != nil {
		return fmt.Errorf("reconcile store with token: %w", err)
	} else {
		rep.Log(log)
	}
	var auditLog *audit.Writer
	if o.audit {
		if auditLog, err = o.openAudit(ctx, svc, stdout, log, mtr.AuditObserver()); err != nil {
			return err
		}
		// Closed after the server stops and before the token closes: the
		// final checkpoint is signed in the token.
		defer func() {
			if err := auditLog.Close(); err != nil {
				log.Error("close audit log", "err", err)
			}
		}()
	}
	tlsCfg, err := o.serverTLS(ctx, tok, log)
	if err != nil {
		return err
	}
	live := &api.ReloadableCredentials{}
	live.Store(creds)
	apiCfg := api.Config{Service: svc, Credentials: live, Region: o.region, Logger: log, Proxies: proxies}
	apiCfg.RateLimits = o.rateLimits.resolved
	apiCfg.AccessLog = o.accessLog
	apiCfg.Observer = mtr.RequestObserver()
	if auditLog != nil {
		apiCfg.Audit = auditLog
	}
	h, err := api.New(apiCfg)
	if err != nil {
		return err
	}
	if auditLog != nil {
		if o.auditCheckpointInterval <= 0 {
			return fmt.Errorf("--audit-checkpoint-interval must be positive")
		}
		// A quiet server still signs what it logged, within a minute, and
		// reports the records of failed authentication it dropped.
		go func() {
			t := time.NewTicker(o.auditCheckpointInterval)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					if err := h.FlushAuditSummaries(); err != nil && !errors.Is(err, audit.ErrClosed) {
						log.Error("audit: summary of dropped records", "err", err)
					}
					if err := auditLog.Checkpoint(); err != nil && !errors.Is(err, audit.ErrClosed) {
						log.Error("audit checkpoint", "err", err)
					}
				}
			}
		}()
		// Before the log closes (deferred earlier, so run later).
		defer func() {
			if err := h.FlushAuditSummaries(); err != nil {
				log.Error("audit: summary of dropped records", "err", err)
			}
		}()
	}

	ln := transport.NewListener(rawLn, transport.ListenerConfig{
		MaxConns: connectionBound(o.maxConns, log), ProxyProtocol: o.proxyProtocol, Proxies: proxies,
	})
	srv := &http.Server{
		Handler: h,
		// Also the bound on a TLS handshake: http.Server gives a handshake
		// the shortest of these timeouts.
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ConnState:         ln.ConnState,
		ErrorLog:          stdlog.New(serverErrors{log}, "", 0),
	}
	scheme := "http"
	if tlsCfg != nil {
		scheme = "https"
		srv.TLSConfig = tlsCfg.Config()
	}
	endpoint := scheme + "://" + rawLn.Addr().String()
	log.Info("hsmkms serving", "endpoint", endpoint, "region", o.region, "dev", o.dev,
		"token", o.tokenLabel+o.tokenSerial, "store", o.storePath(), "mutual_tls", tlsCfg != nil && tlsCfg.MutualTLS(),
		"trusted_proxies", o.trustedProxies, "proxy_protocol", o.proxyProtocol)
	if o.devContainer && loopbackOnly(o.listen) != nil {
		log.Warn("--dev-container: the dev credentials (test/test) are served on every address of this network namespace; publish the port on the host's loopback only", "listen", o.listen)
	} else if tlsCfg == nil && loopbackOnly(o.listen) != nil {
		log.Warn("serving plain HTTP off loopback (--insecure-http): requests and answers, plaintext and data keys among them, cross the network in clear unless a TLS-terminating proxy on this host is the only client", "listen", o.listen)
	}
	if o.dev {
		fmt.Fprintf(stdout, "hsmkms (dev) listening on %s (account %s)\n", endpoint, devAccount)
		fmt.Fprintf(stdout, "  export AWS_ACCESS_KEY_ID=%s AWS_SECRET_ACCESS_KEY=%s AWS_REGION=%s AWS_DEFAULT_REGION=%s\n", devAccessKey, devSecret, o.region, o.region)
		if tlsCfg != nil {
			fmt.Fprintf(stdout, "  aws kms create-key --endpoint-url %s --ca-bundle CA.pem   # the CA that signed %s\n", endpoint, o.tlsCert)
		} else {
			fmt.Fprintf(stdout, "  aws kms create-key --endpoint-url %s\n", endpoint)
		}
	}

	if o.reapInterval <= 0 {
		return fmt.Errorf("--reap-interval must be positive")
	}
	if auditLog != nil {
		svc.RecordServiceEvents(auditLog)
	}
	// Metrics read the token, the service and the audit log at each scrape.
	mtr.WatchToken(tok)
	mtr.WatchService(svc)
	if auditLog != nil {
		mtr.WatchAudit(auditLog)
	}
	metricsEP.serve(log)
	// The admin socket (hsmkms admin status|backup|adopt), after recording
	// what happened to the store while no server ran; closed before the
	// audit log and the store.
	stopAdmin, err := startAdmin(adminConfig{dataDir: o.dataDir, storePath: o.storePath(), endpoint: endpoint,
		region: o.region, store: st, svc: svc, token: tok, audit: auditLog, log: log})
	if err != nil {
		return err
	}
	defer stopAdmin()
	svc.RunScheduledWork(ctx, log) // deadlines that passed while stopped, before any request
	reapCtx, stopReaper := context.WithCancel(ctx)
	reaperDone := make(chan struct{})
	go func() { defer close(reaperDone); svc.RunReaper(reapCtx, o.reapInterval, log) }()
	defer func() { stopReaper(); <-reaperDone }()

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			o.reloadConfig(live, level, log)
			if tlsCfg != nil {
				if l, err := tlsCfg.Reload(ctx); err != nil {
					log.Error("SIGHUP: TLS certificate not reloaded; the running one stays", "err", err)
				} else {
					logLoaded(log, "SIGHUP: TLS certificate reloaded", o.tlsKey, l)
				}
			}
		}
	}()

	errc := make(chan error, 1)
	go func() {
		if tlsCfg != nil {
			errc <- srv.ServeTLS(ln, "", "")
			return
		}
		errc <- srv.Serve(ln)
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing in-flight requests")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// testHooks reads the two hooks end-to-end tests use on the real binary:
// HSMKMS_TEST_CLOCK_OFFSET (a duration the service clock runs ahead, so a
// deletion date can pass without waiting days) and HSMKMS_TEST_CRASH_AT (a
// deletion phase at which the process kills itself with SIGKILL). Neither is
// set in production; each is announced in the log when it is.
func testHooks() (func() time.Time, func(phase, keyID string), error) {
	var now func() time.Time
	if v := os.Getenv("HSMKMS_TEST_CLOCK_OFFSET"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return nil, nil, fmt.Errorf("HSMKMS_TEST_CLOCK_OFFSET: %w", err)
		}
		fmt.Fprintf(os.Stderr, "hsmkms: TEST HOOK: clock runs %s ahead\n", d)
		now = func() time.Time { return time.Now().Add(d) }
	}
	var hook func(string, string)
	if phase := os.Getenv("HSMKMS_TEST_CRASH_AT"); phase != "" {
		fmt.Fprintf(os.Stderr, "hsmkms: TEST HOOK: will crash at deletion phase %q\n", phase)
		hook = func(p, keyID string) {
			if p == phase {
				fmt.Fprintf(os.Stderr, "hsmkms: TEST HOOK: crashing at %s of %s\n", p, keyID)
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {}
			}
		}
	}
	return now, hook, nil
}

// tokenPIN returns the user PIN. With --dev the SoftHSM2 token under the data
// directory is created first if needed, and its PIN file is used.
func (o *options) tokenPIN(ctx context.Context) (string, error) {
	if o.dev && o.module == "" {
		dir := filepath.Join(o.dataDir, "softhsm")
		tok, err := softhsm.Init(ctx, dir, o.tokenLabel)
		if err != nil {
			return "", err
		}
		// SoftHSM2 reads its configuration once, when the module initialises.
		if err := os.Setenv("SOFTHSM2_CONF", tok.ConfigPath); err != nil {
			return "", err
		}
		o.module = tok.ModulePath
		if o.pinFile == "" {
			o.pinFile = filepath.Join(tok.Dir, "user.pin")
		}
	}
	if o.pinFile != "" {
		return readSecret(o.pinFile, "")
	}
	pin, err := readSecret("", "HSMKMS_PIN")
	if err != nil {
		return "", fmt.Errorf("token PIN: give --pin-file or set HSMKMS_PIN: %w", err)
	}
	return pin, nil
}

// openAudit opens the audit log with the token-resident audit key, and
// writes the key's public key beside the store for verifiers.
func (o *options) openAudit(ctx context.Context, svc *service.Service, stdout io.Writer, log *slog.Logger, obs audit.Observer) (*audit.Writer, error) {
	cfg := audit.Config{File: o.auditFile, MaxFileSize: o.auditMaxBytes, CheckpointEvery: o.auditCheckpointEvery, Logger: log,
		RetainFiles: o.auditRetainFiles, RetainFor: o.auditRetainAge, MinFreeBytes: o.auditMinFreeBytes, Observer: obs}
	if o.auditStdout {
		cfg.Out = stdout
	}
	w, err := svc.OpenAuditLog(ctx, cfg, o.auditPublicKeyPath())
	if err != nil {
		return nil, err
	}
	log.Info("audit log open", "file", o.auditFile, "public_key", o.auditPublicKeyPath(), "checkpoint_every", o.auditCheckpointEvery)
	return w, nil
}

// reloadConfig reads the configuration file again and, if it is valid,
// replaces the principals, access keys and identity policies requests are
// checked against; requests in flight are not disturbed. An invalid file is
// reported and the running set kept. Other settings (listen address, token,
// store) need a restart.
func (o *options) reloadConfig(live *api.ReloadableCredentials, level *slog.LevelVar, log *slog.Logger) {
	if o.configFile == "" {
		log.Warn("SIGHUP: no --config file to reload")
		return
	}
	fresh := *o
	fresh.file = fileConfig{}
	fresh.logLevel = o.logLevelFlag
	err := fresh.loadFile()
	var newLevel slog.Level
	if err == nil && fresh.logLevel != "" {
		if lerr := newLevel.UnmarshalText([]byte(fresh.logLevel)); lerr != nil {
			err = fmt.Errorf("log_level %q: %w", fresh.logLevel, lerr)
		}
	} else if err == nil {
		newLevel = slog.LevelInfo
	}
	var creds api.StaticCredentials
	if err == nil {
		creds, err = fresh.credentials()
	}
	if err != nil {
		log.Error("SIGHUP: configuration not reloaded; the running principals stay", "err", err)
		return
	}
	live.Store(creds)
	if old := level.Level(); newLevel != old {
		level.Set(newLevel)
		// At the louder of the two levels, so the change is seen either way.
		log.Log(context.Background(), max(old, newLevel), "SIGHUP: log level changed", "from", old.String(), "to", newLevel.String())
	}
	log.Info("SIGHUP: principals reloaded", "config", o.configFile, "principals", len(fresh.file.Principals), "access_keys", len(creds))
}

// credentials builds the SigV4 credential set: the dev root (with --dev) and
// every access key of the configured principals.
func (o *options) credentials() (api.StaticCredentials, error) {
	creds := api.StaticCredentials{}
	if o.dev {
		root := service.Caller{Account: devAccount, ARN: "arn:aws:iam::" + devAccount + ":root"}
		if err := creds.Add(devAccessKey, []byte(devSecret), root); err != nil {
			return nil, err
		}
	}
	for _, p := range o.file.Principals {
		account, err := accountOf(p.ARN)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		if len(p.AccessKeys) == 0 {
			return nil, fmt.Errorf("config: principal %s has no access keys", p.ARN)
		}
		identity, err := p.identityPolicies()
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		for _, k := range p.AccessKeys {
			secret, err := readSecret(k.SecretFile, k.SecretEnv)
			if err != nil {
				return nil, fmt.Errorf("config: access key %s of %s: %w", k.ID, p.ARN, err)
			}
			if err := creds.AddBound(k.ID, []byte(secret), service.Caller{Account: account, ARN: p.ARN, Identity: identity}, p.ClientCertificates); err != nil {
				return nil, fmt.Errorf("config: %w", err)
			}
		}
	}
	return creds, nil
}

// privateDir creates dir with mode 0700, or tightens an existing one to it:
// it holds the metadata store, the audit log and, with --dev, the token, and
// nobody but the service's own user has any business in it. A directory that
// cannot be made private stops the start.
func privateDir(dir string, log *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("data dir %s is not a directory", dir)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		if err := os.Chmod(dir, perm&0o700); err != nil {
			return fmt.Errorf("data dir %s has mode %#o and cannot be made private: %w", dir, perm, err)
		}
		log.Warn("data dir was readable by others: its mode is now private", "dir", dir, "was", fmt.Sprintf("%#o", perm), "now", fmt.Sprintf("%#o", perm&0o700))
	}
	return nil
}

// serverErrors takes http.Server's error log. A failed TLS handshake is
// what every port scanner and every client with the wrong CA causes, and a
// flood of them would flood the log: they go at debug level; the rest (a
// panic in a handler, an accept error) at warn.
type serverErrors struct{ log *slog.Logger }

func (e serverErrors) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	level := slog.LevelWarn
	if strings.Contains(msg, "TLS handshake error") {
		level = slog.LevelDebug
	}
	e.log.Log(context.Background(), level, msg)
	return len(p), nil
}

// fdReserve are the file descriptors kept for what is not a client
// connection: the token's sessions and files, the store, the audit log.
const fdReserve = 256

// connectionBound is the connection bound the process can keep: below its
// file descriptor limit, so that connections run out before descriptors do
// (when descriptors run out, accept fails for everyone, and the token and
// the audit log can no longer open files).
func connectionBound(want int, log *slog.Logger) int {
	if want <= 0 {
		want = transport.DefaultMaxConns
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur > uint64(want+fdReserve) {
		return want
	}
	bound := max(int(lim.Cur)-fdReserve, 16)
	log.Warn("connection bound lowered to fit the file descriptor limit; raise the limit (LimitNOFILE in systemd, ulimit -n) to allow more",
		"max_connections", want, "now", bound, "nofile", lim.Cur)
	return bound
}

// errLogged is an error already written to the log: main exits non-zero
// without printing it again.
type errLogged struct{ error }

func (e errLogged) Unwrap() error { return e.error }
