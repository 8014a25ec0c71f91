package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/hsmkms/hsmkms/audit"
	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/service"
	"github.com/hsmkms/hsmkms/service/store"
	"github.com/hsmkms/hsmkms/softhsm/softhsmtest"
)

func TestMain(m *testing.M) { os.Exit(softhsmtest.Main(m)) }

var alice = service.Caller{Account: "111122223333", ARN: "arn:aws:iam::111122223333:root"}

// scrape fetches GET /metrics from m's handler and parses it as Prometheus
// does.
func scrape(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("the exposition does not parse: %v", err)
	}
	return fams
}

// value returns the value of the sample of family name whose labels include
// labels (name=value pairs): a counter's or gauge's value, a histogram's
// count. ok is false if there is none.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.Label {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func want(t *testing.T, fams map[string]*dto.MetricFamily, expect float64, name string, labels ...string) {
	t.Helper()
	got, ok := value(fams, name, labels...)
	if !ok {
		t.Errorf("no sample %s%v", name, labels)
		return
	}
	if got != expect {
		t.Errorf("%s%v = %g, want %g", name, labels, got, expect)
	}
}

// TestRequestSeries: counts and durations by operation and outcome.
func TestRequestSeries(t *testing.T) {
	t.Parallel()
	m := New()
	obs := m.RequestObserver()
	for range 3 {
		obs.Request("Encrypt", "ok", time.Millisecond)
	}
	obs.Request("DescribeKey", "NotFoundException", 2*time.Millisecond)
	obs.Request("UnknownOperation", "UnrecognizedClientException", time.Millisecond)
	fams := scrape(t, m)
	want(t, fams, 3, "hsmkms_requests_total", "operation", "Encrypt", "outcome", "ok")
	want(t, fams, 1, "hsmkms_requests_total", "operation", "DescribeKey", "outcome", "NotFoundException")
	want(t, fams, 1, "hsmkms_requests_total", "operation", "UnknownOperation", "outcome", "UnrecognizedClientException")
	want(t, fams, 3, "hsmkms_request_duration_seconds", "operation", "Encrypt")
	want(t, fams, 1, "hsmkms_request_duration_seconds", "operation", "DescribeKey")
	if _, ok := value(fams, "hsmkms_requests_total", "operation", "DescribeKey", "outcome", "ok"); !ok {
		// The ok series of an operation exists once it is seen, at 0.
		t.Error("no ok series for DescribeKey")
	}
	if h := fams["hsmkms_request_duration_seconds"]; h.GetType() != dto.MetricType_HISTOGRAM {
		t.Errorf("request duration is a %v", h.GetType())
	}
	for _, name := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_cpu_seconds_total", "process_open_fds"} {
		if fams[name] == nil {
			t.Errorf("no %s: the Go runtime and process collectors are missing", name)
		}
	}
}

// rig is a real token, store, service and audit log, observed by one
// Metrics.
type rig struct {
	m     *Metrics
	tok   *hsm.Token
	st    *store.Bolt
	svc   *service.Service
	audit *audit.Writer
}

func newRig(t *testing.T, maxSessions int) *rig {
	t.Helper()
	m := New()
	tok := softhsmtest.Token(t)
	tk, err := hsm.Open(context.Background(), hsm.Config{ModulePath: tok.ModulePath, TokenLabel: tok.Label,
		PIN: softhsmtest.PIN(t, tok), SessionKeyCopies: true, MaxSessions: maxSessions, Observer: m.TokenObserver()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tk.Close() })
	st, err := store.Open(filepath.Join(t.TempDir(), "hsmkms.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	svc, err := service.New(service.Config{Token: tk, Store: st, Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	w, err := svc.OpenAuditLog(context.Background(), audit.Config{File: filepath.Join(t.TempDir(), "audit.log"),
		Observer: m.AuditObserver(), Logger: slog.New(slog.DiscardHandler)}, filepath.Join(t.TempDir(), "audit.pem"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	m.WatchToken(tk)
	m.WatchAudit(w)
	m.WatchService(svc)
	return &rig{m: m, tok: tk, st: st, svc: svc, audit: w}
}

// TestTokenAndServiceSeries: token calls by PKCS#11 function, session
// figures, key counts and the GCM budget, from real work on a real token.
func TestTokenAndServiceSeries(t *testing.T) {
	t.Parallel()
	r := newRig(t, 8)
	ctx := context.Background()
	k, err := r.svc.CreateKey(ctx, alice, service.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	id := k.KeyMetadata.KeyId
	for range 3 {
		if _, err := r.svc.Encrypt(ctx, alice, service.EncryptInput{KeyId: id, Plaintext: []byte("secret")}); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.svc.DisableKey(ctx, alice, service.KeyIdInput{KeyId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.svc.CreateKey(ctx, alice, service.CreateKeyInput{}); err != nil {
		t.Fatal(err)
	}
	fams := scrape(t, r.m)
	// The readiness canary and the audit key's checks use the token too:
	// at least the three Encrypts.
	if n, _ := value(fams, "hsmkms_token_operation_duration_seconds", "operation", "C_Encrypt"); n < 3 {
		t.Errorf("C_Encrypt observed %g times, want at least 3", n)
	}
	if n, _ := value(fams, "hsmkms_token_operation_duration_seconds", "operation", "C_GenerateKey"); n < 2 {
		t.Errorf("C_GenerateKey observed %g times, want at least 2", n)
	}
	if n, _ := value(fams, "hsmkms_token_session_wait_seconds"); n < 5 {
		t.Errorf("session waits observed %g times, want one per operation", n)
	}
	want(t, fams, 0, "hsmkms_token_sessions", "state", "in_use")
	want(t, fams, 8, "hsmkms_token_sessions", "state", "max")
	if n, _ := value(fams, "hsmkms_token_sessions", "state", "idle"); n < 1 || n > 8 {
		t.Errorf("%g idle sessions", n)
	}
	want(t, fams, 1, "hsmkms_keys", "state", "Enabled", "spec", "SYMMETRIC_DEFAULT")
	want(t, fams, 1, "hsmkms_keys", "state", "Disabled", "spec", "SYMMETRIC_DEFAULT")
	want(t, fams, 3.0/(1<<32), "hsmkms_gcm_iv_budget_used_ratio")
	want(t, fams, 0, "hsmkms_audit_broken")
	if fams["hsmkms_token_errors_total"] != nil {
		t.Errorf("token errors without a failure: %v", fams["hsmkms_token_errors_total"])
	}

	// A damaged ciphertext: the token refuses it (SoftHSM2 says
	// CKR_GENERAL_ERROR), the caller's fault, not a token failure.
	if err := r.svc.EnableKey(ctx, alice, service.KeyIdInput{KeyId: id}); err != nil {
		t.Fatal(err)
	}
	ct, err := r.svc.Encrypt(ctx, alice, service.EncryptInput{KeyId: id, Plaintext: []byte("secret")})
	if err != nil {
		t.Fatal(err)
	}
	ct.CiphertextBlob[len(ct.CiphertextBlob)-1] ^= 1
	if _, err := r.svc.Decrypt(ctx, alice, service.DecryptInput{CiphertextBlob: ct.CiphertextBlob}); err == nil {
		t.Fatal("a damaged ciphertext decrypted")
	}
	fams = scrape(t, r.m)
	if n, _ := value(fams, "hsmkms_token_operation_duration_seconds", "operation", "C_Decrypt"); n < 1 {
		t.Error("the refused C_Decrypt was not timed")
	}
	if fams["hsmkms_token_errors_total"] != nil {
		t.Errorf("a refused ciphertext counted as a token failure: %v", fams["hsmkms_token_errors_total"])
	}
}

// TestTokenErrorsByCKR: failures are counted under their CKR names (hsm's
// own error values, as its calls report them); refusals of a caller's input
// and waits that ended without a code are not failures of the token.
func TestTokenErrorsByCKR(t *testing.T) {
	t.Parallel()
	m := New()
	obs := m.TokenObserver()
	obs.TokenCall("C_Encrypt", time.Millisecond, &hsm.Error{Op: "C_Encrypt", Code: 0x30, Kind: hsm.ErrUnavailable})
	obs.TokenCall("C_Encrypt", time.Millisecond, &hsm.Error{Op: "C_Encrypt", Code: 0x30, Kind: hsm.ErrUnavailable})
	obs.TokenCall("C_Decrypt", time.Millisecond, &hsm.Error{Op: "C_Decrypt", Code: 0x40, Kind: hsm.ErrInvalidCiphertext})
	obs.TokenCall("C_Verify", time.Millisecond, &hsm.Error{Op: "C_Verify", Code: 0xC0, Kind: hsm.ErrInvalidSignature})
	obs.SessionWait(time.Second, context.DeadlineExceeded)
	obs.SessionWait(time.Millisecond, &hsm.Error{Op: "C_OpenSession", Code: 0xB1, Kind: hsm.ErrUnavailable})
	fams := scrape(t, m)
	want(t, fams, 2, "hsmkms_token_errors_total", "ckr", "CKR_DEVICE_ERROR")
	want(t, fams, 1, "hsmkms_token_errors_total", "ckr", "CKR_SESSION_COUNT")
	if n := len(fams["hsmkms_token_errors_total"].GetMetric()); n != 2 {
		t.Errorf("%d ckr series; refusals of input and waits without a code must not count", n)
	}
	want(t, fams, 2, "hsmkms_token_session_wait_seconds")
	want(t, fams, 2, "hsmkms_token_operation_duration_seconds", "operation", "C_Encrypt")
}

// TestAuditSeries: records written, their durations, and the broken flag of a
// real log that breaks.
func TestAuditSeries(t *testing.T) {
	t.Parallel()
	r := newRig(t, 0)
	for i := range 4 {
		if err := r.audit.Write(&audit.Event{EventName: "Encrypt", EventID: ""}); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	fams := scrape(t, r.m)
	want(t, fams, 4, "hsmkms_audit_records_total")
	want(t, fams, 4, "hsmkms_audit_write_duration_seconds")
	want(t, fams, 0, "hsmkms_audit_broken")

	// A log whose Out fails is broken for good.
	m := New()
	signer, pub, err := r.svc.AuditKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	w, err := audit.Open(audit.Config{Out: failingWriter{}, Signer: signer, PublicKey: pub, Observer: m.AuditObserver(),
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	m.WatchAudit(w)
	if err := w.Write(&audit.Event{EventName: "Encrypt"}); err == nil {
		t.Fatal("a write to a failing Out succeeded")
	}
	fams = scrape(t, m)
	want(t, fams, 1, "hsmkms_audit_broken")
	want(t, fams, 0, "hsmkms_audit_records_total")
	want(t, fams, 1, "hsmkms_audit_write_duration_seconds")
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("pipe closed") }

// TestHandlerServesOnlyMetrics: GET (and HEAD) /metrics, nothing else.
func TestHandlerServesOnlyMetrics(t *testing.T) {
	t.Parallel()
	h := New().Handler()
	for _, tc := range []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/metrics", 200},
		{http.MethodHead, "/metrics", 200},
		{http.MethodPost, "/metrics", 405},
		{http.MethodPost, "/", 404},
		{http.MethodGet, "/", 404},
		{http.MethodGet, "/metrics/x", 404},
		{http.MethodGet, "/healthz", 404},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, strings.NewReader("{}")))
		if rec.Code != tc.status {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, rec.Code, tc.status)
		}
		if tc.status == 200 && tc.method == http.MethodGet && !strings.Contains(rec.Body.String(), "# TYPE go_goroutines gauge") {
			t.Errorf("GET /metrics body:\n%s", rec.Body)
		}
	}
}

// TestNilMetrics: a server without metrics wires nil observers (nil
// interfaces, which hsm, audit and api test against nil) and nothing else.
func TestNilMetrics(t *testing.T) {
	var m *Metrics
	if m.TokenObserver() != nil || m.AuditObserver() != nil || m.RequestObserver() != nil {
		t.Error("a nil Metrics gives non-nil observers")
	}
	m.WatchToken(nil)
	m.WatchAudit(nil)
	m.WatchService(nil)
}

// BenchmarkScrape is one full scrape (every collector, the text encoding) of
// a server whose store holds 2,000 keys; the key collector's share grows
// with the number of keys.
func BenchmarkScrape(b *testing.B) {
	m := New()
	tok := softhsmtest.Token(b)
	tk, err := hsm.Open(context.Background(), hsm.Config{ModulePath: tok.ModulePath, TokenLabel: tok.Label,
		PIN: softhsmtest.PIN(b, tok), Observer: m.TokenObserver()})
	if err != nil {
		b.Fatal(err)
	}
	defer tk.Close()
	st, err := store.Open(filepath.Join(b.TempDir(), "hsmkms.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	const keys = 2000
	for i := range keys {
		k := store.Key{ID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), Account: "111122223333", Region: "us-east-1",
			State: service.StateEnabled, KeySpec: service.SpecSymmetric, KeyUsage: service.UsageEncryptDecrypt,
			Origin: service.OriginAWSKMS, Versions: []store.Version{{Number: 1}}}
		if err := st.CreateKey(context.Background(), k, 0); err != nil {
			b.Fatal(err)
		}
	}
	svc, err := service.New(service.Config{Token: tk, Store: st, Region: "us-east-1"})
	if err != nil {
		b.Fatal(err)
	}
	m.WatchToken(tk)
	m.WatchService(svc)
	h := m.Handler()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		if rec.Code != http.StatusOK {
			b.Fatal(rec.Code)
		}
	}
	b.StopTimer()
	start := time.Now()
	for range 100 {
		if _, err := svc.Stats(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(time.Since(start).Nanoseconds())/100/keys, "stats-ns/key")
}

// BenchmarkObserversPerEncrypt is what metrics add to one HTTP Encrypt, in
// absolute terms: the observations its layers make (request, session wait,
// C_Encrypt, audit write) with the clock reads that time them. Compare with
// the ~65 µs of the request (BenchmarkMetricsOverhead in test/).
func BenchmarkObserversPerEncrypt(b *testing.B) {
	m := New()
	req, tok, aud := m.RequestObserver(), m.TokenObserver(), m.AuditObserver()
	b.ReportAllocs()
	epoch := time.Now() // the layers time with the monotonic clock alone, like this
	for b.Loop() {
		t0 := time.Since(epoch)
		t1 := time.Since(epoch)
		tok.SessionWait(time.Since(epoch)-t1, nil)
		t2 := time.Since(epoch)
		tok.TokenCall("C_Encrypt", time.Since(epoch)-t2, nil)
		t3 := time.Since(epoch)
		aud.AuditWrite(time.Since(epoch)-t3, nil)
		req.Request("Encrypt", "ok", time.Since(epoch)-t0)
	}
}
