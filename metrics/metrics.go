// Package metrics is hsmkms's Prometheus side: a registry of its own (never
// the global default) with the request, token, audit and key series, the Go
// runtime and process collectors, and the handler that serves them at GET
// /metrics — on a listener of its own, never the KMS endpoint's, and without
// SigV4.
//
// The layers below know nothing of Prometheus: hsm, audit and service/api
// each take a small observer (hsm.Observer, audit.Observer, api.Observer),
// which Metrics implements, and the token's session pool, the audit log's
// state and the service's key counts are read when a scrape asks (Watch*).
// Every label value comes from a fixed set — operation names, exception
// names, PKCS#11 function and CKR names, key states and specs — so no key
// id, principal, plaintext or anything else a client sends can become a
// series.
//
// It imports hsm, audit, service and prometheus/client_golang; only cmd (and tests)
// import it. docs/ARCHITECTURE.md, "Layout".
package metrics

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hsmkms/hsmkms/audit"
	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/service"
)

// Bucket bounds, in seconds. A KMS request takes from ~50 µs (an Encrypt on
// SoftHSM2) to seconds (an RSA key generated); a token call from ~10 µs to
// tens of seconds for a large RSA key on a slow HSM.
var (
	requestBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	tokenBuckets   = []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	waitBuckets    = []float64{.00001, .0001, .001, .01, .1, .5, 1, 2.5, 5, 10}
	auditBuckets   = []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}
)

// Metrics holds the registry and the series. A nil *Metrics is valid: its
// observers are nil and its Watch methods do nothing, so a server without
// metrics wires nothing and pays nothing.
type Metrics struct {
	reg *prometheus.Registry

	requests        *prometheus.CounterVec
	requestDuration *prometheus.HistogramVec
	byOperation     sync.Map // operation -> *requestSeries

	tokenDuration *prometheus.HistogramVec
	byTokenCall   sync.Map // PKCS#11 function -> prometheus.Observer
	tokenErrors   *prometheus.CounterVec
	sessionWait   prometheus.Histogram

	auditWrite   prometheus.Histogram
	auditRecords prometheus.Counter
}

// requestSeries are one operation's series that every request touches,
// resolved once: a label lookup per request would cost more than the
// observation.
type requestSeries struct {
	duration prometheus.Observer
	ok       prometheus.Counter
}

// New returns Metrics with every series registered, and the Go runtime and
// process collectors.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hsmkms_requests_total",
		Help: `KMS requests answered, by operation (the TrentService operation, or UnknownOperation) and outcome ("ok" or the AWS exception name).`,
	}, []string{"operation", "outcome"})
	m.requestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "hsmkms_request_duration_seconds",
		Help:    "Time to answer a KMS request, from the handler's start to its answer (audit record included), by operation.",
		Buckets: requestBuckets,
	}, []string{"operation"})
	m.tokenDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "hsmkms_token_operation_duration_seconds",
		Help:    "Time of a PKCS#11 operation in the token, by the function doing the work (C_Encrypt, C_Sign, …; its C_*Init included). Includes hsmkms's own calls: the readiness canary, audit checkpoints, markers.",
		Buckets: tokenBuckets,
	}, []string{"operation"})
	m.tokenErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hsmkms_token_errors_total",
		Help: "Token failures, by PKCS#11 return value; refusals of a caller's ciphertext, signature or input are not failures and are not counted.",
	}, []string{"ckr"})
	m.sessionWait = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "hsmkms_token_session_wait_seconds",
		Help:    "Time an operation waited for a session of the token's pool, opening a new one included (next to nothing when one is idle).",
		Buckets: waitBuckets,
	})
	m.auditWrite = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "hsmkms_audit_write_duration_seconds",
		Help:    "Time to write one audit record (lock wait, encoding, write and any fsync or checkpoint it carries).",
		Buckets: auditBuckets,
	})
	m.auditRecords = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "hsmkms_audit_records_total",
		Help: "Audit records written: requests, intents of changes and service events.",
	})
	m.reg.MustRegister(m.requests, m.requestDuration, m.tokenDuration, m.tokenErrors, m.sessionWait,
		m.auditWrite, m.auditRecords,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry returns the registry, for tests and for further collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry at GET /metrics (HEAD too) and nothing else:
// any other path is 404, any other method 405. Collection errors leave the
// other series served.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
		// A flood of scrapes costs at most this many collections at once.
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}))
	return mux
}

// Request implements api.Observer.
func (m *Metrics) Request(operation, outcome string, d time.Duration) {
	rs := m.requestSeries(operation)
	rs.duration.Observe(d.Seconds())
	if outcome == "ok" {
		rs.ok.Inc()
		return
	}
	m.requests.WithLabelValues(operation, outcome).Inc()
}

func (m *Metrics) requestSeries(operation string) *requestSeries {
	if v, ok := m.byOperation.Load(operation); ok {
		return v.(*requestSeries)
	}
	v, _ := m.byOperation.LoadOrStore(operation, &requestSeries{
		duration: m.requestDuration.WithLabelValues(operation),
		ok:       m.requests.WithLabelValues(operation, "ok"),
	})
	return v.(*requestSeries)
}

// tokenObserver implements hsm.Observer.
type tokenObserver struct{ m *Metrics }

// TokenObserver returns the hsm.Observer to put in hsm.Config (nil for a nil
// Metrics).
func (m *Metrics) TokenObserver() hsm.Observer {
	if m == nil {
		return nil
	}
	return tokenObserver{m}
}

func (o tokenObserver) TokenCall(op string, d time.Duration, err error) {
	m := o.m
	var h prometheus.Observer
	if v, ok := m.byTokenCall.Load(op); ok {
		h = v.(prometheus.Observer)
	} else {
		v, _ := m.byTokenCall.LoadOrStore(op, m.tokenDuration.WithLabelValues(op))
		h = v.(prometheus.Observer)
	}
	h.Observe(d.Seconds())
	if err != nil {
		m.tokenError(err)
	}
}

func (o tokenObserver) SessionWait(d time.Duration, err error) {
	o.m.sessionWait.Observe(d.Seconds())
	if err != nil {
		o.m.tokenError(err)
	}
}

// tokenError counts a failure of the token by its CKR name. A refused
// ciphertext, signature or input says nothing about the token (a client can
// send any number of them), and an error without a CKR code did not come
// from the token (a wait that timed out is in the session wait histogram).
func (m *Metrics) tokenError(err error) {
	if errors.Is(err, hsm.ErrInvalidCiphertext) || errors.Is(err, hsm.ErrInvalidSignature) || errors.Is(err, hsm.ErrInvalidInput) {
		return
	}
	if name := hsm.CKRName(err); name != "" {
		m.tokenErrors.WithLabelValues(name).Inc()
	}
}

// auditObserver implements audit.Observer.
type auditObserver struct{ m *Metrics }

// AuditObserver returns the observer to put in audit.Config (nil for a nil
// Metrics).
func (m *Metrics) AuditObserver() audit.Observer {
	if m == nil {
		return nil
	}
	return auditObserver{m}
}

func (o auditObserver) AuditWrite(d time.Duration, err error) {
	o.m.auditWrite.Observe(d.Seconds())
	if err == nil {
		o.m.auditRecords.Inc()
	}
}

// RequestObserver returns the observer to put in api.Config (nil for a nil
// Metrics).
func (m *Metrics) RequestObserver() interface {
	Request(operation, outcome string, d time.Duration)
} {
	if m == nil {
		return nil
	}
	return m
}

// WatchToken exports the token's session pool (hsmkms_token_sessions), read
// at each scrape.
func (m *Metrics) WatchToken(t interface{ SessionStats() hsm.SessionStats }) {
	if m == nil {
		return
	}
	m.reg.MustRegister(sessionsCollector{t})
}

// WatchAudit exports whether the audit log refuses records
// (hsmkms_audit_broken), read at each scrape. Without it (the audit log
// off) the series is absent.
func (m *Metrics) WatchAudit(w interface{ Broken() bool }) {
	if m == nil {
		return
	}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "hsmkms_audit_broken",
		Help: "1 while the audit log refuses records (every KMS request is refused then), else 0.",
	}, func() float64 {
		if w.Broken() {
			return 1
		}
		return 0
	}))
}

// WatchService exports the key counts (hsmkms_keys) and the AES-GCM budget
// used (hsmkms_gcm_iv_budget_used_ratio), computed from the store's memory
// at each scrape.
func (m *Metrics) WatchService(s interface {
	Stats(context.Context) (service.Stats, error)
}) {
	if m == nil {
		return
	}
	m.reg.MustRegister(serviceCollector{s})
}

var sessionsDesc = prometheus.NewDesc("hsmkms_token_sessions",
	"Sessions of the token's pool: in_use (lent to operations), idle (open, free) and max (the pool's bound).",
	[]string{"state"}, nil)

type sessionsCollector struct {
	t interface{ SessionStats() hsm.SessionStats }
}

func (c sessionsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- sessionsDesc }

func (c sessionsCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.t.SessionStats()
	ch <- prometheus.MustNewConstMetric(sessionsDesc, prometheus.GaugeValue, float64(st.InUse), "in_use")
	ch <- prometheus.MustNewConstMetric(sessionsDesc, prometheus.GaugeValue, float64(st.Idle), "idle")
	ch <- prometheus.MustNewConstMetric(sessionsDesc, prometheus.GaugeValue, float64(st.Max), "max")
}

var (
	keysDesc = prometheus.NewDesc("hsmkms_keys",
		"KMS keys of every account, by key state and key spec.", []string{"state", "spec"}, nil)
	ivBudgetDesc = prometheus.NewDesc("hsmkms_gcm_iv_budget_used_ratio",
		"Highest fraction of the 2^32 AES-GCM encryptions with random IVs that NIST SP 800-38D allows one key that the current version of a symmetric key has used (never less than it has made; rotating the key starts a new version at 0).",
		nil, nil)
)

type serviceCollector struct {
	s interface {
		Stats(context.Context) (service.Stats, error)
	}
}

func (c serviceCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- keysDesc
	ch <- ivBudgetDesc
}

func (c serviceCollector) Collect(ch chan<- prometheus.Metric) {
	st, err := c.s.Stats(context.Background())
	if err != nil {
		ch <- prometheus.NewInvalidMetric(keysDesc, err)
		ch <- prometheus.NewInvalidMetric(ivBudgetDesc, err)
		return
	}
	for k, n := range st.Keys {
		ch <- prometheus.MustNewConstMetric(keysDesc, prometheus.GaugeValue, float64(n), k.State, k.Spec)
	}
	ch <- prometheus.MustNewConstMetric(ivBudgetDesc, prometheus.GaugeValue, st.GCMBudgetUsed)
}
