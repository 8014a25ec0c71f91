package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/hsmkms/hsmkms/service"
	"github.com/hsmkms/hsmkms/service/api"
	"github.com/hsmkms/hsmkms/service/api/transport"
	"github.com/hsmkms/hsmkms/service/policy"
)

// fileConfig is the YAML configuration file (version: v1). Flags given on the
// command line override its values.
type fileConfig struct {
	Version string `yaml:"version"`
	Region  string `yaml:"region"`
	// LogLevel is debug, info, warn or error; SIGHUP applies a new one
	// (unless --log-level was given, which wins).
	LogLevel  string `yaml:"log_level"`
	AccessLog *bool  `yaml:"access_log"`
	Listen    string `yaml:"listen"`
	DataDir   string `yaml:"data_dir"`
	PKCS11    struct {
		Module           string        `yaml:"module"`
		TokenLabel       string        `yaml:"token_label"`
		TokenSerial      string        `yaml:"token_serial"`
		PINFile          string        `yaml:"pin_file"`
		MaxSessions      int           `yaml:"max_sessions"`
		SessionKeyCopies *bool         `yaml:"session_key_copies"`
		CallTimeout      time.Duration `yaml:"call_timeout"`
	} `yaml:"pkcs11"`
	TLS struct {
		CertFile     string `yaml:"cert_file"`
		Key          string `yaml:"key"`
		ClientCAFile string `yaml:"client_ca_file"`
	} `yaml:"tls"`
	InsecureHTTP   bool              `yaml:"insecure_http"`
	TrustedProxies []string          `yaml:"trusted_proxies"`
	ProxyProtocol  bool              `yaml:"proxy_protocol"`
	ReusePort      bool              `yaml:"reuse_port"`
	MaxConnections int               `yaml:"max_connections"`
	Principals     []principalConfig `yaml:"principals"`
	// Limits are the resource quotas (0 or absent: AWS's default).
	Limits struct {
		KeysPerAccount int `yaml:"keys_per_account"`
		AliasesPerKey  int `yaml:"aliases_per_key"`
		GrantsPerKey   int `yaml:"grants_per_key"`
	} `yaml:"limits"`
	RateLimits rateLimitsFile `yaml:"rate_limits"`
	// Metrics: the Prometheus listener (absent: off).
	Metrics struct {
		Listen string `yaml:"listen"`
	} `yaml:"metrics"`
}

type principalConfig struct {
	ARN        string `yaml:"arn"`
	AccessKeys []struct {
		ID         string `yaml:"id"`
		SecretEnv  string `yaml:"secret_env"`
		SecretFile string `yaml:"secret_file"`
	} `yaml:"access_keys"`
	// Policies are the principal's IAM identity policies, in IAM's grammar
	// written as YAML (or JSON, which is YAML).
	Policies []any `yaml:"policies"`
	// ClientCertificates, when given, bind the principal's access keys to
	// client certificates: a request signed with one of them is refused
	// unless its connection presented a verified certificate whose subject
	// DN or a URI SAN (SPIFFE id) is listed. Needs tls.client_ca_file.
	ClientCertificates []string `yaml:"client_certificates"`
}

// identityPolicies parses a principal's identity policies.
func (p *principalConfig) identityPolicies() ([]*policy.Policy, error) {
	var out []*policy.Policy
	for i, doc := range p.Policies {
		js, err := json.Marshal(doc)
		if err != nil {
			return nil, fmt.Errorf("policy %d of %s: %w", i+1, p.ARN, err)
		}
		pol, err := policy.Parse(js, policy.IdentityPolicy)
		if err != nil {
			return nil, fmt.Errorf("policy %d of %s: %w", i+1, p.ARN, err)
		}
		out = append(out, pol)
	}
	return out, nil
}

// options is the resolved configuration of `hsmkms serve`.
type options struct {
	listen, dataDir, region         string
	module, tokenLabel, tokenSerial string
	pinFile                         string
	configFile                      string
	dev                             bool
	maxSessions                     int
	callTimeout                     time.Duration
	sessionKeyCopies                bool
	sessionKeyCopiesSet             bool
	logLevel                        string
	logLevelFlag                    string // --log-level as given ("" if not)
	accessLog                       bool
	accessLogSet                    bool
	reapInterval                    time.Duration
	audit                           bool
	auditFile                       string
	auditStdout                     bool
	auditMaxBytes                   int64
	auditCheckpointEvery            int
	auditCheckpointInterval         time.Duration
	auditRetainFiles                int
	auditRetainAge                  time.Duration
	auditMinFreeBytes               int64
	limits                          service.Limits
	tlsCert, tlsKey, tlsClientCA    string
	insecureHTTP                    bool
	devContainer                    bool
	trustedProxies                  stringList
	proxyProtocol                   bool
	reusePort                       bool
	maxConns                        int
	rateLimits                      rateLimitOptions
	metricsListen                   string // resolved by metricsAddress; "" is off
	file                            fileConfig
}

// stringList is a flag given as a comma-separated list.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

func parseServeFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("hsmkms serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.listen, "listen", "", "address to listen on (default 127.0.0.1:8080)")
	fs.StringVar(&o.region, "region", "", "AWS region this endpoint answers for (default us-east-1)")
	o.tokenFlags(fs)
	fs.StringVar(&o.tlsCert, "tls-cert", "", "TLS certificate chain, PEM, leaf first (serve HTTPS)")
	fs.StringVar(&o.tlsKey, "tls-key", "", "TLS private key: a PEM file, or a key pair in the token named by a pkcs11: URI (pkcs11:object=hsmkms-tls) or its label")
	fs.StringVar(&o.tlsClientCA, "tls-client-ca", "", "require client certificates signed by the CA certificates in this PEM file (mutual TLS)")
	fs.BoolVar(&o.devContainer, "dev-container", false, "with --dev, listen on any address of a container's own network: only where the port is published on the host's loopback alone (docker-compose.yml does)")
	fs.BoolVar(&o.insecureHTTP, "insecure-http", false, "allow plain HTTP on a non-loopback address (only behind a TLS-terminating proxy on the same host)")
	fs.Var(&o.trustedProxies, "trusted-proxies", "comma-separated networks (CIDR) of proxies trusted to name the client (X-Forwarded-For, X-Forwarded-Proto, PROXY protocol)")
	fs.BoolVar(&o.proxyProtocol, "proxy-protocol", false, "read a PROXY protocol header from connections of --trusted-proxies")
	fs.BoolVar(&o.reusePort, "reuse-port", false, "share --listen's port with other hsmkms processes of the same user (SO_REUSEPORT): the kernel spreads connections among them")
	fs.IntVar(&o.maxConns, "max-connections", 0, fmt.Sprintf("bound on open connections; at it, idle and unfinished ones are closed first (default %d)", transport.DefaultMaxConns))
	fs.StringVar(&o.logLevelFlag, "log-level", "", "debug, info, warn or error (default info; log_level in the config file, which SIGHUP re-reads, unless this is given)")
	fs.Func("access-log", "one log line per request: request id, operation, principal, key ARN, outcome, status, duration (default true)", func(s string) error {
		v, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("want true or false")
		}
		o.accessLog, o.accessLogSet = v, true
		return nil
	})
	fs.DurationVar(&o.reapInterval, "reap-interval", time.Minute, "how often keys whose deletion date passed are deleted")
	fs.BoolVar(&o.audit, "audit", true, "write the tamper-evident audit log (every request; a request whose record cannot be written fails)")
	fs.StringVar(&o.auditFile, "audit-file", "", "audit log file (default DATA-DIR/audit/audit.log)")
	fs.BoolVar(&o.auditStdout, "audit-stdout", false, "also write audit records to standard output")
	fs.Int64Var(&o.auditMaxBytes, "audit-max-bytes", 100<<20, "rotate the audit log file at this size")
	fs.IntVar(&o.auditCheckpointEvery, "audit-checkpoint-every", 1000, "records between signed audit checkpoints")
	fs.DurationVar(&o.auditCheckpointInterval, "audit-checkpoint-interval", time.Minute, "sign a checkpoint at least this often when records are unsigned")
	fs.IntVar(&o.auditRetainFiles, "audit-retain-files", 0, "keep at most this many rotated audit files, deleting the oldest (only files sealed by a signed checkpoint; 0: keep all)")
	fs.DurationVar(&o.auditRetainAge, "audit-retain-age", 0, "delete rotated audit files rotated longer ago than this (only files sealed by a signed checkpoint; 0: keep all)")
	fs.Int64Var(&o.auditMinFreeBytes, "audit-min-free-bytes", 1<<20, "/readyz fails when the audit log's filesystem has less free space than this")
	fs.IntVar(&o.limits.KeysPerAccount, "keys-per-account", 0, fmt.Sprintf("quota of keys per account, in every state (default %d, AWS's)", service.DefaultKeysPerAccount))
	fs.IntVar(&o.limits.AliasesPerKey, "aliases-per-key", 0, fmt.Sprintf("quota of aliases per key (default %d, AWS's)", service.DefaultAliasesPerKey))
	fs.IntVar(&o.limits.GrantsPerKey, "grants-per-key", 0, fmt.Sprintf("quota of grants per key (default %d, AWS's)", service.DefaultGrantsPerKey))
	o.rateLimits.flags(fs)
	fs.StringVar(&o.metricsListen, "metrics-listen", "", "serve Prometheus metrics at GET /metrics on this address, a listener of its own (PORT or :PORT: loopback; HOST:PORT as given; default off)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	o.logLevel = o.logLevelFlag
	if o.configFile != "" {
		if err := o.loadFile(); err != nil {
			return o, err
		}
	}
	o.defaults()
	return o, o.check()
}

// tokenFlags registers the flags that choose and open the token (and, with
// --dev, make it): serve and tls new-key take the same ones.
func (o *options) tokenFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.dataDir, "data-dir", "", "directory for the metadata store and, with --dev, the SoftHSM2 token (default ./.hsmkms)")
	fs.StringVar(&o.module, "pkcs11-module", "", "PKCS#11 module path (default /usr/lib/softhsm/libsofthsm2.so)")
	fs.StringVar(&o.tokenLabel, "token-label", "", "label of the token to use")
	fs.StringVar(&o.tokenSerial, "token-serial", "", "serial number of the token to use (instead of --token-label)")
	fs.StringVar(&o.pinFile, "pin-file", "", "file holding the token user PIN (else $HSMKMS_PIN)")
	fs.StringVar(&o.configFile, "config", "", "YAML configuration file")
	fs.BoolVar(&o.dev, "dev", false, "development mode: SoftHSM2 token and store under --data-dir, credentials test/test, loopback only")
	fs.IntVar(&o.maxSessions, "max-sessions", 0, "maximum PKCS#11 sessions (default 32)")
	fs.DurationVar(&o.callTimeout, "pkcs11-call-timeout", 0, "longest a PKCS#11 call may run before the token is treated as not answering (default 5s; key generation: 2m)")
	fs.Func("session-key-copies", "use session-object copies of keys (default on with --dev)", func(s string) error {
		switch s {
		case "true", "1":
			o.sessionKeyCopies = true
		case "false", "0":
			o.sessionKeyCopies = false
		default:
			return fmt.Errorf("want true or false")
		}
		o.sessionKeyCopiesSet = true
		return nil
	})
}

func (o *options) loadFile() error {
	b, err := os.ReadFile(o.configFile)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&o.file); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config %s: %w", o.configFile, err)
	}
	if o.file.Version != "v1" {
		return fmt.Errorf("config %s: version must be v1, not %q", o.configFile, o.file.Version)
	}
	f := &o.file
	setIf := func(dst *string, v string) {
		if *dst == "" {
			*dst = v
		}
	}
	setIf(&o.region, f.Region)
	setIf(&o.logLevel, f.LogLevel)
	if !o.accessLogSet && f.AccessLog != nil {
		o.accessLog, o.accessLogSet = *f.AccessLog, true
	}
	setIf(&o.listen, f.Listen)
	setIf(&o.dataDir, f.DataDir)
	setIf(&o.module, f.PKCS11.Module)
	setIf(&o.tokenLabel, f.PKCS11.TokenLabel)
	setIf(&o.tokenSerial, f.PKCS11.TokenSerial)
	setIf(&o.pinFile, f.PKCS11.PINFile)
	if o.maxSessions == 0 {
		o.maxSessions = f.PKCS11.MaxSessions
	}
	if o.callTimeout == 0 {
		o.callTimeout = f.PKCS11.CallTimeout
	}
	if !o.sessionKeyCopiesSet && f.PKCS11.SessionKeyCopies != nil {
		o.sessionKeyCopies, o.sessionKeyCopiesSet = *f.PKCS11.SessionKeyCopies, true
	}
	setIntIf := func(dst *int, v int) {
		if *dst == 0 {
			*dst = v
		}
	}
	setIntIf(&o.limits.KeysPerAccount, f.Limits.KeysPerAccount)
	setIntIf(&o.limits.AliasesPerKey, f.Limits.AliasesPerKey)
	setIntIf(&o.limits.GrantsPerKey, f.Limits.GrantsPerKey)
	setIf(&o.tlsCert, f.TLS.CertFile)
	setIf(&o.tlsKey, f.TLS.Key)
	setIf(&o.tlsClientCA, f.TLS.ClientCAFile)
	o.insecureHTTP = o.insecureHTTP || f.InsecureHTTP
	o.proxyProtocol = o.proxyProtocol || f.ProxyProtocol
	o.reusePort = o.reusePort || f.ReusePort
	if len(o.trustedProxies) == 0 {
		o.trustedProxies = f.TrustedProxies
	}
	setIntIf(&o.maxConns, f.MaxConnections)
	setIf(&o.metricsListen, f.Metrics.Listen)
	return nil
}

func (o *options) defaults() {
	if o.logLevel == "" {
		o.logLevel = "info"
	}
	if !o.accessLogSet {
		o.accessLog = true
	}
	if o.listen == "" {
		o.listen = "127.0.0.1:8080"
	}
	if o.dataDir == "" {
		o.dataDir = ".hsmkms"
	}
	if o.region == "" {
		o.region = "us-east-1"
	}
	if o.dev && o.tokenLabel == "" && o.tokenSerial == "" {
		o.tokenLabel = "hsmkms-dev"
	}
	if o.dev && !o.sessionKeyCopiesSet {
		o.sessionKeyCopies = true
	}
	if o.auditFile == "" {
		o.auditFile = filepath.Join(o.dataDir, "audit", "audit.log")
	}
}

func (o *options) check() error {
	if l := o.limits; l.KeysPerAccount < 0 || l.AliasesPerKey < 0 || l.GrantsPerKey < 0 {
		return errors.New("limits must be positive (keys per account, aliases per key, grants per key)")
	}
	if err := o.rateLimits.resolve(&o.file.RateLimits); err != nil {
		return err
	}
	if o.devContainer && !o.dev {
		return errors.New("--dev-container goes with --dev")
	}
	if err := o.checkToken(); err != nil {
		return err
	}
	if o.metricsListen != "" {
		addr, err := metricsAddress(o.metricsListen)
		if err != nil {
			return err
		}
		o.metricsListen = addr
	}
	if o.callTimeout < 0 {
		return fmt.Errorf("--pkcs11-call-timeout %v: must be positive (0: the default, 5s)", o.callTimeout)
	}
	if o.dev && !o.devContainer {
		if err := loopbackOnly(o.listen); err != nil {
			return err
		}
	} else if !o.dev && len(o.file.Principals) == 0 {
		return errors.New("no principals configured: give --config with principals (or use --dev)")
	}
	return o.checkTransport()
}

// loopbackOnly refuses --dev on any address other people can reach: its
// credentials (test/test) are public.
func loopbackOnly(listen string) error {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("--listen %q: %w", listen, err)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("--dev serves the public credentials test/test, so it listens on loopback only; %q is not a loopback address", listen)
	}
	return nil
}

// readSecret reads a secret from a file (trimming one trailing newline) or
// an environment variable. A named source that is missing or empty is an
// error, never an empty secret.
func readSecret(file, env string) (string, error) {
	switch {
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("read secret: %w", err)
		}
		s := strings.TrimRight(string(b), "\r\n")
		if s == "" {
			return "", fmt.Errorf("secret file %s is empty", file)
		}
		return s, nil
	case env != "":
		s, ok := os.LookupEnv(env)
		if !ok || s == "" {
			return "", fmt.Errorf("environment variable %s is not set", env)
		}
		return s, nil
	}
	return "", errors.New("no secret source given")
}

// accountOf returns the account id of an IAM principal ARN
// (arn:PARTITION:iam::ACCOUNT:…).
func accountOf(arn string) (string, error) {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || parts[2] != "iam" || len(parts[4]) != 12 || parts[5] == "" {
		return "", fmt.Errorf("%q is not an IAM principal ARN (arn:aws:iam::ACCOUNT:user/NAME)", arn)
	}
	for _, c := range parts[4] {
		if c < '0' || c > '9' {
			return "", fmt.Errorf("%q: account id must be 12 digits", arn)
		}
	}
	return parts[4], nil
}

func (o *options) storePath() string { return filepath.Join(o.dataDir, "hsmkms.db") }

// auditPublicKeyPath is where serve writes the audit key's public key, for
// `hsmkms audit verify --public-key`.
func (o *options) auditPublicKeyPath() string {
	return filepath.Join(o.dataDir, "audit-public-key.pem")
}

// Request rate limits: --rate-limits, --rate-limit-source-rps and the
// file's rate_limits section, resolved into api.RateLimits. Absent values
// are AWS's quotas (api.DefaultRateLimits); 0 turns one limit off.

// rateLimitsFile is the rate_limits section: requests per second (a burst is
// one second's worth); absent: the default, 0: off.
type rateLimitsFile struct {
	// Enabled: false turns every limit off (as --rate-limits=off does).
	Enabled     *bool    `yaml:"enabled"`
	PerSource   *float64 `yaml:"per_source"`
	Symmetric   *float64 `yaml:"symmetric"`
	RSA         *float64 `yaml:"rsa"`
	ECC         *float64 `yaml:"ecc"`
	DataKeyPair *float64 `yaml:"data_key_pair"`
	Write       *float64 `yaml:"write"`
	Grant       *float64 `yaml:"grant"`
	Read        *float64 `yaml:"read"`
	List        *float64 `yaml:"list"`
}

type rateLimitOptions struct {
	mode      string   // --rate-limits: "", "on" or "off"
	sourceRPS *float64 // --rate-limit-source-rps, if given
	resolved  api.RateLimits
}

func (r *rateLimitOptions) flags(fs *flag.FlagSet) {
	fs.Func("rate-limits", "on: throttle requests at AWS KMS's request quotas, or as the config file's rate_limits say (the default); off: admit every request (for benchmarks)", func(v string) error {
		if v != "on" && v != "off" {
			return errors.New("want on or off")
		}
		r.mode = v
		return nil
	})
	fs.Func("rate-limit-source-rps", fmt.Sprintf("requests a second admitted from one client address (IPv6: one /64), before authentication (default %g; 0: no limit)", api.DefaultRateLimits.PerSource), func(v string) error {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return errors.New("want a number of requests a second")
		}
		r.sourceRPS = &f
		return nil
	})
}

// resolve sets r.resolved from the flags over the file over the defaults.
// --rate-limits=off turns everything off; the file's enabled: false turns
// off what no flag sets.
func (r *rateLimitOptions) resolve(f *rateLimitsFile) error {
	if r.mode == "off" {
		r.resolved = api.RateLimits{}
		return nil
	}
	l := api.DefaultRateLimits
	if r.mode == "" && f.Enabled != nil && !*f.Enabled {
		l, f = api.RateLimits{}, &rateLimitsFile{}
	}
	for _, v := range []struct {
		dst *float64
		src *float64
	}{{&l.PerSource, f.PerSource}, {&l.Symmetric, f.Symmetric}, {&l.RSA, f.RSA}, {&l.ECC, f.ECC},
		{&l.DataKeyPair, f.DataKeyPair}, {&l.Write, f.Write}, {&l.Grant, f.Grant}, {&l.Read, f.Read}, {&l.List, f.List},
		{&l.PerSource, r.sourceRPS}} {
		if v.src != nil {
			*v.dst = *v.src
		}
	}
	if err := l.Validate(); err != nil {
		return fmt.Errorf("rate_limits: %w", err)
	}
	r.resolved = l
	return nil
}
