package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/smithy-go"
	"github.com/google/uuid"

	"github.com/hsmkms/hsmkms/audit"
	"github.com/hsmkms/hsmkms/blob"
	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/service"
	"github.com/hsmkms/hsmkms/service/store"
)

// options are the knobs of one run.
type options struct {
	Duration         time.Duration
	Warmup           time.Duration
	Concurrency      int
	Size             int
	SessionKeyCopies bool
	// Requests, if > 0, makes the HTTP Encrypt phases (audit off and on) at
	// full concurrency run exactly this many requests each instead of for
	// Duration.
	Requests   int64
	CPUProfile string // serve-kms child's (audit off) CPU profile of HTTP Encrypt at full concurrency
	// Token is the parent's token (module, label, PIN; SOFTHSM2_CONF already
	// set). SessionKeyCopies is taken from the field above.
	Token hsm.Config
	// DataDir holds the parent's metadata store and the KMS servers' data
	// directories (their tokens, stores and audit log). The caller removes it.
	DataDir string
	// Progress, if set, gets a line as each phase starts.
	Progress io.Writer
}

func (o *options) validate() error {
	switch {
	case o.Duration <= 0:
		return errors.New("-duration must be positive")
	case o.Warmup < 0:
		return errors.New("-warmup must not be negative")
	case o.Concurrency < 1:
		return errors.New("-concurrency must be at least 1")
	case o.Size < 1 || o.Size > blob.MaxPlaintextLen:
		return fmt.Errorf("-size must be between 1 and %d (the KMS Encrypt limit)", blob.MaxPlaintextLen)
	case o.Requests < 0:
		return errors.New("-requests must not be negative")
	case o.DataDir == "":
		return errors.New("no data directory")
	}
	return nil
}

// encryptionContext is the small context every Encrypt carries; with the
// 33-byte blob header it makes the 50-byte AAD the raw phase uses.
var encryptionContext = map[string]string{"app": "bench", "tenant": "t1"}

// Phase names.
const (
	phaseRaw     = "raw token"
	phaseService = "service.Encrypt"
	phaseNull    = "HTTP null"
	phaseHTTP    = "HTTP Encrypt"
	// The same requests against a server that records each in its signed
	// audit log (serve-kms -audit).
	phaseHTTPAudit = "HTTP Encrypt (audit on)"
)

// auditTarget is the target for the audit log's cost: HTTP Encrypt
// with the log on within 15 % of off, in throughput and in server CPU per
// request.
const auditTarget = 0.15

// phaseResult is one row of the table.
type phaseResult struct {
	Phase       string  `json:"phase"`
	Concurrency int     `json:"concurrency"`
	Ops         int64   `json:"ops"`
	Seconds     float64 `json:"seconds"`
	OpsPerSec   float64 `json:"opsPerSec"`
	P50Micros   float64 `json:"p50Micros"`
	P99Micros   float64 `json:"p99Micros"`
	// ClientCPUMicrosPerOp is this (the load-generating) process's CPU time
	// per operation; for raw and service it is all the work.
	ClientCPUMicrosPerOp float64 `json:"clientCpuMicrosPerOp"`
	// Server fields: HTTP phases only.
	ServerCPUMicrosPerReq *float64 `json:"serverCpuMicrosPerReq,omitempty"`
	ServerRSSMiB          *float64 `json:"serverRssMiB,omitempty"`
	ServerRSSBeforeMiB    *float64 `json:"serverRssBeforeMiB,omitempty"`
}

type ratio struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
}

// auditOverhead compares HTTP Encrypt with the audit log on and off at one
// concurrency level.
type auditOverhead struct {
	Concurrency    int     `json:"concurrency"`
	OpsPerSecRatio float64 `json:"opsPerSecRatio"` // on ÷ off
	// ServerCPURatio is on ÷ off of server CPU per request; nil when the
	// off server used too little CPU to measure (10 ms ticks).
	ServerCPURatio *float64 `json:"serverCpuPerReqRatio,omitempty"`
	// WithinTarget: on has at least 1-auditTarget of off's throughput and
	// at most 1+auditTarget of its server CPU per request.
	WithinTarget bool `json:"withinTarget"`
}

// auditLogCheck is what audit.Verify found in the audited server's log
// after it exited.
type auditLogCheck struct {
	Records     int    `json:"records"`
	Checkpoints int    `json:"checkpoints"`
	SignedSeq   uint64 `json:"signedSeq"`
	Key         string `json:"keyFingerprint"`
}

// report is everything one run measured.
type report struct {
	Host             hostInfo      `json:"host"`
	Size             int           `json:"size"`
	Duration         string        `json:"duration"`
	Warmup           string        `json:"warmup"`
	Concurrency      int           `json:"concurrency"`
	SessionKeyCopies bool          `json:"sessionKeyCopies"`
	Requests         int64         `json:"requests,omitempty"`
	Phases           []phaseResult `json:"phases"`
	Ratios           []ratio       `json:"ratios"`
	// NullDeserializationErrors counts null-endpoint requests whose only
	// failure was the SDK refusing the empty response (expected 0).
	NullDeserializationErrors int64  `json:"nullDeserializationErrors"`
	Verified                  int    `json:"verifiedDecrypts"`
	CPUProfile                string `json:"cpuProfile,omitempty"`
	// AuditTarget is auditTarget; Audit compares the two HTTP Encrypt phases
	// at each level; AuditLog is the audited server's verified log.
	AuditTarget float64         `json:"auditTarget"`
	Audit       []auditOverhead `json:"auditOverhead"`
	AuditLog    auditLogCheck   `json:"auditLog"`
}

func (r *report) phase(name string, c int) *phaseResult {
	for i := range r.Phases {
		if r.Phases[i].Phase == name && r.Phases[i].Concurrency == c {
			return &r.Phases[i]
		}
	}
	return nil
}

// sample is one encryption kept for checking that it decrypts.
type sample struct {
	iv     [hsm.GCMIVLen]byte
	pt, ct []byte
}

// slots keeps, per worker, its first and its latest result.
type slots struct{ first, last []*sample }

func newSlots(n int) *slots { return &slots{first: make([]*sample, n), last: make([]*sample, n)} }

func (s *slots) record(i int, sm *sample) {
	if s.first[i] == nil {
		s.first[i] = sm
	} else {
		s.last[i] = sm
	}
}

// pick returns up to n of the kept samples, spread over workers and time.
func pick(n int, all ...*slots) []*sample {
	var got []*sample
	for _, s := range all {
		for _, l := range [][]*sample{s.first, s.last} {
			for _, sm := range l {
				if sm != nil {
					got = append(got, sm)
				}
			}
		}
	}
	if len(got) <= n {
		return got
	}
	out := make([]*sample, n)
	for i := range out {
		out[i] = got[i*len(got)/n]
	}
	return out
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// bench runs every phase and returns the report. Any failed operation fails
// the run.
func bench(ctx context.Context, o options) (*report, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	progress := func(format string, args ...any) {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, format+"\n", args...)
		}
	}
	rep := &report{
		Host: readHostInfo(ctx), Size: o.Size, Duration: o.Duration.String(), Warmup: o.Warmup.String(),
		Concurrency: o.Concurrency, SessionKeyCopies: o.SessionKeyCopies, Requests: o.Requests,
	}
	cpuprofile := o.CPUProfile
	if cpuprofile != "" {
		abs, err := filepath.Abs(cpuprofile)
		if err != nil {
			return nil, err
		}
		cpuprofile = abs
		rep.CPUProfile = abs
	}

	// The servers start (and make their tokens) while this process opens its own.
	type started struct {
		c   *child
		err error
	}
	nullc, kmsc, auditc := make(chan started, 1), make(chan started, 1), make(chan started, 1)
	go func() {
		c, err := startChild(ctx, "serve-null", []string{"serve-null", "-listen", "127.0.0.1:0"})
		nullc <- started{c, err}
	}()
	// Directories of the KMS children's alone (never opened here while they
	// run), inside ours so that they go even if a child is killed.
	auditDir := filepath.Join(o.DataDir, "serve-kms-audit")
	go func() {
		c, err := startChild(ctx, "serve-kms", kmsChildArgs(filepath.Join(o.DataDir, "serve-kms"), o.SessionKeyCopies, cpuprofile, false))
		kmsc <- started{c, err}
	}()
	go func() {
		c, err := startChild(ctx, "serve-kms-audit", kmsChildArgs(auditDir, o.SessionKeyCopies, "", true))
		auditc <- started{c, err}
	}()
	var nullSrv, kmsSrv, auditSrv *child
	var stopErrs []error
	defer func() {
		// Collect the children even if this function returns early.
		for _, ch := range []chan started{nullc, kmsc, auditc} {
			if ch == nil {
				continue
			}
			if s := <-ch; s.c != nil {
				s.c.stop()
			}
		}
		for _, c := range []*child{nullSrv, kmsSrv, auditSrv} {
			if c != nil {
				c.stop()
			}
		}
	}()

	// --- in-process phases on the parent's own token ---
	cfg := o.Token
	cfg.SessionKeyCopies = o.SessionKeyCopies
	tok, err := hsm.Open(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open token: %w", err)
	}
	defer tok.Close()
	db, err := store.Open(filepath.Join(o.DataDir, "hsmkms-bench.db"))
	if err != nil {
		return nil, err
	}
	defer db.Close()
	svc, err := service.New(service.Config{Token: tok, Store: db, Region: benchRegion})
	if err != nil {
		return nil, err
	}
	// The raw phase's key, and the service phase's.
	ref := hsm.KeyRef{KeyID: uuid.New(), Version: 1}
	if err := tok.GenerateAESKey(ctx, ref); err != nil {
		return nil, fmt.Errorf("generate raw key: %w", err)
	}
	ck, err := svc.CreateKey(ctx, benchCaller, service.CreateKeyInput{})
	if err != nil {
		return nil, fmt.Errorf("service CreateKey: %w", err)
	}
	svcKey := ck.KeyMetadata.KeyId

	// Wait for the servers before measuring anything: starting them costs
	// CPU that would otherwise be taken from the first phases.
	s := <-nullc
	nullc = nil
	nullSrv = s.c
	if s.err != nil {
		return nil, s.err
	}
	s = <-kmsc
	kmsc = nil
	kmsSrv = s.c
	if s.err != nil {
		return nil, s.err
	}
	s = <-auditc
	auditc = nil
	auditSrv = s.c
	if s.err != nil {
		return nil, s.err
	}

	// A phase is measured by a meter: its operations are built and warmed up
	// (unmeasured) by newMeter, run in one or more measured rounds, and
	// summed into the phase's row by finish. With a server, each round reads
	// the server's CPU time and RSS around it.
	newMeter := func(name string, c int, srv *child, newOp func(i int) func(context.Context) error) (*meter, error) {
		progress("  %-23s c=%-3d ...", name, c)
		m := &meter{name: name, c: c, srv: srv, ops: make([]func(context.Context) error, c)}
		for i := range m.ops {
			m.ops[i] = newOp(i)
		}
		if o.Warmup > 0 {
			if _, err := drive(ctx, load{concurrency: c, duration: o.Warmup}, m.ops); err != nil {
				return nil, fmt.Errorf("%s c=%d warm-up: %w", name, c, err)
			}
		}
		return m, nil
	}
	finish := func(m *meter) error {
		row, err := m.row()
		if err != nil {
			return err
		}
		rep.Phases = append(rep.Phases, row)
		return nil
	}
	// phase runs one measured phase in one round after a warm-up and adds
	// its row; if profile is set, the server profiles the measured part.
	phase := func(name string, c int, l load, srv *child, profile bool, newOp func(i int) func(context.Context) error) error {
		m, err := newMeter(name, c, srv, newOp)
		if err != nil {
			return err
		}
		if profile {
			if err := srv.command("profile-start"); err != nil {
				return err
			}
		}
		if err := m.round(ctx, l); err != nil {
			return err
		}
		if profile {
			if err := srv.command("profile-stop"); err != nil {
				return err
			}
		}
		return finish(m)
	}
	levels := []int{1}
	if o.Concurrency != 1 {
		levels = append(levels, o.Concurrency)
	}
	timed := func(c int) load { return load{concurrency: c, duration: o.Duration} }

	// 1. raw: what service.Encrypt asks of the token, and nothing else.
	hdr := blob.Header{Version: blob.Version1, KeyID: ref.KeyID, KeyVersion: ref.Version}
	aad := hdr.AAD(encryptionContext)
	rawSlots := newSlots(o.Concurrency)
	for _, c := range levels {
		err := phase(phaseRaw, c, timed(c), nil, false, func(i int) func(context.Context) error {
			pt := randomBytes(o.Size)
			iv := make([]byte, hsm.GCMIVLen)
			var ct []byte
			encrypt := func(s *hsm.Session) error {
				if err := s.IV(iv); err != nil {
					return err
				}
				var err error
				ct, err = s.EncryptGCM(ref, iv, aad, pt)
				return err
			}
			return func(ctx context.Context) error {
				if err := tok.Do(ctx, encrypt); err != nil {
					return err
				}
				sm := &sample{pt: pt, ct: ct}
				copy(sm.iv[:], iv)
				rawSlots.record(i, sm)
				return nil
			}
		})
		if err != nil {
			return nil, err
		}
	}
	for _, sm := range pick(10, rawSlots) {
		var pt []byte
		err := tok.Do(ctx, func(s *hsm.Session) error {
			var err error
			pt, err = s.DecryptGCM(ref, sm.iv[:], aad, sm.ct)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("raw: decrypt a sample: %w", err)
		}
		if !bytes.Equal(pt, sm.pt) {
			return nil, errors.New("raw: a sample decrypts to the wrong plaintext")
		}
		rep.Verified++
	}

	// 2. service.Encrypt, no HTTP.
	svcSlots := newSlots(o.Concurrency)
	for _, c := range levels {
		err := phase(phaseService, c, timed(c), nil, false, func(i int) func(context.Context) error {
			pt := randomBytes(o.Size)
			return func(ctx context.Context) error {
				out, err := svc.Encrypt(ctx, benchCaller, service.EncryptInput{KeyId: svcKey, Plaintext: pt, EncryptionContext: encryptionContext})
				if err != nil {
					return err
				}
				svcSlots.record(i, &sample{pt: pt, ct: out.CiphertextBlob})
				return nil
			}
		})
		if err != nil {
			return nil, err
		}
	}
	for _, sm := range pick(10, svcSlots) {
		out, err := svc.Decrypt(ctx, benchCaller, service.DecryptInput{CiphertextBlob: sm.ct, EncryptionContext: encryptionContext})
		if err != nil {
			return nil, fmt.Errorf("service: decrypt a sample: %w", err)
		}
		if !bytes.Equal(out.Plaintext, sm.pt) {
			return nil, errors.New("service: a sample decrypts to the wrong plaintext")
		}
		rep.Verified++
	}

	// --- HTTP phases against the child servers ---
	hc := &http.Client{
		Transport: &http.Transport{
			Proxy:               nil, // traffic goes to 127.0.0.1 only, whatever HTTP_PROXY says
			MaxIdleConns:        4 * o.Concurrency,
			MaxIdleConnsPerHost: o.Concurrency + 4, // every worker keeps its connection
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
		Timeout: 30 * time.Second,
	}
	defer hc.CloseIdleConnections()
	awsCfg := aws.Config{
		Region:      benchRegion,
		Credentials: credentials.NewStaticCredentialsProvider(benchAccessKey, benchSecret, ""),
		HTTPClient:  hc,
		Retryer:     func() aws.Retryer { return aws.NopRetryer{} },
	}
	client := func(url string) *kms.Client {
		return kms.NewFromConfig(awsCfg, func(ko *kms.Options) { ko.BaseEndpoint = aws.String(url) })
	}
	kmsClient, nullClient := client(kmsSrv.url()), client(nullSrv.url())

	created, err := kmsClient.CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String("hsmkms-bench")})
	if err != nil {
		return nil, fmt.Errorf("HTTP CreateKey: %w", err)
	}
	httpKey := aws.ToString(created.KeyMetadata.KeyId)

	// 3. HTTP null: the same request against the baseline handler.
	var deserErrs atomic.Int64
	for _, c := range levels {
		err := phase(phaseNull, c, timed(c), nullSrv, false, func(i int) func(context.Context) error {
			in := &kms.EncryptInput{KeyId: aws.String(httpKey), Plaintext: randomBytes(o.Size), EncryptionContext: encryptionContext}
			return func(ctx context.Context) error {
				_, err := nullClient.Encrypt(ctx, in)
				var de *smithy.DeserializationError
				if err != nil && errors.As(err, &de) {
					// The baseline answers {}: should the SDK refuse it, the
					// request still made the full round trip.
					deserErrs.Add(1)
					return nil
				}
				return err
			}
		})
		if err != nil {
			return nil, err
		}
	}
	rep.NullDeserializationErrors = deserErrs.Load()

	// 4. HTTP Encrypt: the real endpoint, with the audit log off and on.
	// At each level both servers get the same plaintexts and their own
	// warm-up, then are measured in the order off, on, on, off, each round
	// half of the phase: a drift of the machine's speed during the pair (a
	// clock, a neighbour) weighs on both alike.
	auditClient := client(auditSrv.url())
	// The records the audited server must have written: one per request it
	// answered, and one more for each change (its intent, recorded before
	// it commits).
	var auditRequests atomic.Int64
	auditCreated, err := auditClient.CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String("hsmkms-bench audit on")})
	if err != nil {
		return nil, fmt.Errorf("HTTP CreateKey (audit on): %w", err)
	}
	auditRequests.Add(2) // CreateKey: intent and outcome
	type endpoint struct {
		phase   string
		srv     *child
		client  *kms.Client
		keyID   *string // what Encrypt names, as in the null phase
		arn     *string // what Decrypt answers
		counter *atomic.Int64
		slots   *slots
	}
	endpoints := [2]endpoint{
		{phaseHTTP, kmsSrv, kmsClient, created.KeyMetadata.KeyId, created.KeyMetadata.Arn, nil, newSlots(o.Concurrency)},
		{phaseHTTPAudit, auditSrv, auditClient, auditCreated.KeyMetadata.KeyId, auditCreated.KeyMetadata.Arn, &auditRequests, newSlots(o.Concurrency)},
	}
	encryptOp := func(e endpoint, pt []byte, i int) func(context.Context) error {
		in := &kms.EncryptInput{KeyId: e.keyID, Plaintext: pt, EncryptionContext: encryptionContext}
		return func(ctx context.Context) error {
			out, err := e.client.Encrypt(ctx, in)
			if err != nil {
				return err
			}
			if e.counter != nil {
				e.counter.Add(1)
			}
			e.slots.record(i, &sample{pt: pt, ct: out.CiphertextBlob})
			return nil
		}
	}
	for _, c := range levels {
		l := timed(c)
		full := c == o.Concurrency
		if full && o.Requests > 0 {
			l = load{concurrency: c, requests: o.Requests}
		}
		profile := full && cpuprofile != ""
		pts := make([][]byte, c)
		for i := range pts {
			pts[i] = randomBytes(o.Size)
		}
		var meters [2]*meter
		for j, e := range endpoints {
			m, err := newMeter(e.phase, c, e.srv, func(i int) func(context.Context) error { return encryptOp(e, pts[i], i) })
			if err != nil {
				return nil, err
			}
			meters[j] = m
		}
		if profile {
			// The off server profiles its two rounds; it is idle in between.
			if err := kmsSrv.command("profile-start"); err != nil {
				return nil, err
			}
		}
		half := halves(l)
		for _, step := range [4]struct{ m, h int }{{0, 0}, {1, 0}, {1, 1}, {0, 1}} {
			if err := meters[step.m].round(ctx, half[step.h]); err != nil {
				return nil, err
			}
		}
		if profile {
			if err := kmsSrv.command("profile-stop"); err != nil {
				return nil, err
			}
		}
		for _, m := range meters {
			if err := finish(m); err != nil {
				return nil, err
			}
		}
	}
	for _, e := range endpoints {
		for _, sm := range pick(10, e.slots) {
			out, err := e.client.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: sm.ct, EncryptionContext: encryptionContext})
			if err != nil {
				return nil, fmt.Errorf("%s: decrypt a sample: %w", e.phase, err)
			}
			if e.counter != nil {
				e.counter.Add(1)
			}
			if !bytes.Equal(out.Plaintext, sm.pt) {
				return nil, fmt.Errorf("%s: a sample decrypts to the wrong plaintext", e.phase)
			}
			if aws.ToString(out.KeyId) != aws.ToString(e.arn) {
				return nil, fmt.Errorf("%s: a sample decrypts under %s, want %s", e.phase, aws.ToString(out.KeyId), aws.ToString(e.arn))
			}
			rep.Verified++
		}
	}

	// The servers must exit cleanly: a crash or a failed shutdown fails the run.
	hc.CloseIdleConnections()
	for _, c := range []*child{nullSrv, kmsSrv, auditSrv} {
		if err := c.stop(); err != nil {
			stopErrs = append(stopErrs, err)
		}
	}
	if err := errors.Join(stopErrs...); err != nil {
		return nil, err
	}
	// The audited server closed its log (a final signed checkpoint) as it
	// exited: the whole chain must verify and hold every request it answered.
	if rep.AuditLog, err = verifyAuditLog(auditDir, auditRequests.Load()); err != nil {
		return nil, err
	}

	for _, q := range []struct{ name, num, den string }{
		{"service/raw", phaseService, phaseRaw},
		{"HTTP/null", phaseHTTP, phaseNull},
		{"HTTP/raw", phaseHTTP, phaseRaw},
	} {
		for _, c := range levels {
			rep.Ratios = append(rep.Ratios, ratio{q.name + " c=" + strconv.Itoa(c),
				rep.phase(q.num, c).OpsPerSec / rep.phase(q.den, c).OpsPerSec})
		}
	}
	for _, r := range rep.Ratios {
		if r.Value <= 0 || math.IsInf(r.Value, 0) || math.IsNaN(r.Value) {
			return nil, fmt.Errorf("ratio %s is %v", r.Name, r.Value)
		}
	}
	rep.AuditTarget = auditTarget
	for _, c := range levels {
		rep.Audit = append(rep.Audit, compareAudit(*rep.phase(phaseHTTP, c), *rep.phase(phaseHTTPAudit, c)))
	}
	return rep, nil
}

// meter accumulates one phase's measured rounds.
type meter struct {
	name       string
	c          int
	srv        *child // nil for in-process phases
	ops        []func(context.Context) error
	res        loadResult
	srvCPU     time.Duration
	rss0, rss1 int64
	rounds     int
}

// round runs one measured round of the phase; a load with neither a
// duration nor requests (half of a 1-request budget) is skipped.
func (m *meter) round(ctx context.Context, l load) error {
	if l.duration <= 0 && l.requests <= 0 {
		return nil
	}
	var cpu0 time.Duration
	if m.srv != nil {
		var rss int64
		var err error
		if cpu0, rss, err = m.srv.stats(); err != nil {
			return fmt.Errorf("%s: server stats: %w", m.name, err)
		}
		if m.rounds == 0 {
			m.rss0 = rss
		}
	}
	r, err := drive(ctx, l, m.ops)
	if err != nil {
		return fmt.Errorf("%s c=%d: %w", m.name, m.c, err)
	}
	if m.srv != nil {
		cpu1, rss1, err := m.srv.stats()
		if err != nil {
			return fmt.Errorf("%s: server stats: %w", m.name, err)
		}
		m.srvCPU += cpu1 - cpu0
		m.rss1 = rss1
	}
	m.res.add(r)
	m.rounds++
	return nil
}

// row is the phase's line of the table, over all its rounds.
func (m *meter) row() (phaseResult, error) {
	r := m.res
	if r.ops == 0 {
		return phaseResult{}, fmt.Errorf("%s c=%d: no operation completed", m.name, m.c)
	}
	row := phaseResult{
		Phase: m.name, Concurrency: m.c, Ops: r.ops, Seconds: r.elapsed.Seconds(), OpsPerSec: r.opsPerSec(),
		P50Micros: micros(r.p50), P99Micros: micros(r.p99),
		ClientCPUMicrosPerOp: micros(r.cpu) / float64(r.ops),
	}
	if m.srv != nil {
		row.ServerCPUMicrosPerReq = ptr(micros(m.srvCPU) / float64(r.ops))
		row.ServerRSSMiB = ptr(mib(m.rss1))
		row.ServerRSSBeforeMiB = ptr(mib(m.rss0))
	}
	return row, nil
}

// halves splits a phase's load into two rounds.
func halves(l load) [2]load {
	a, b := l, l
	if l.requests > 0 {
		a.requests = l.requests / 2
		b.requests = l.requests - a.requests
	} else {
		a.duration = l.duration / 2
		b.duration = l.duration - a.duration
	}
	return [2]load{a, b}
}

// compareAudit compares the HTTP Encrypt rows with the audit log off and on
// at one level.
func compareAudit(off, on phaseResult) auditOverhead {
	a := auditOverhead{Concurrency: off.Concurrency, OpsPerSecRatio: on.OpsPerSec / off.OpsPerSec}
	if *off.ServerCPUMicrosPerReq > 0 {
		a.ServerCPURatio = ptr(*on.ServerCPUMicrosPerReq / *off.ServerCPUMicrosPerReq)
	}
	a.WithinTarget = a.OpsPerSecRatio >= 1-auditTarget && a.ServerCPURatio != nil && *a.ServerCPURatio <= 1+auditTarget
	return a
}

// verifyAuditLog verifies the exited audited server's log with its audit
// key and checks that it holds exactly the records of the requests the
// server answered (records: one per request, two per change), all under a
// signed checkpoint.
func verifyAuditLog(dataDir string, requests int64) (auditLogCheck, error) {
	b, err := os.ReadFile(auditPublicKeyPath(dataDir))
	if err != nil {
		return auditLogCheck{}, fmt.Errorf("audit public key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return auditLogCheck{}, fmt.Errorf("audit public key %s: no PUBLIC KEY PEM block", auditPublicKeyPath(dataDir))
	}
	vr, err := audit.Verify([]string{auditLogPath(dataDir)}, blk.Bytes)
	if err != nil {
		return auditLogCheck{}, fmt.Errorf("audit log does not verify: %w", err)
	}
	switch {
	case int64(vr.Records) != requests:
		return auditLogCheck{}, fmt.Errorf("audit log holds %d records; the requests the audited server answered make %d", vr.Records, requests)
	case vr.Unsigned != 0:
		return auditLogCheck{}, fmt.Errorf("audit log: %d records after the last checkpoint, want none after a clean shutdown", vr.Unsigned)
	}
	return auditLogCheck{Records: vr.Records, Checkpoints: vr.Checkpoints, SignedSeq: vr.SignedSeq, Key: vr.KeyFingerprint}, nil
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
func mib(b int64) float64            { return float64(b) / (1 << 20) }
func ptr[T any](v T) *T              { return &v }
