package test

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/hsmkms/hsmkms/audit"
	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/metrics"
	"github.com/hsmkms/hsmkms/service"
	"github.com/hsmkms/hsmkms/service/api"
	"github.com/hsmkms/hsmkms/service/store"
	"github.com/hsmkms/hsmkms/softhsm/softhsmtest"
)

// metricsServer is an in-process hsmkms with metrics on, wired as serve
// wires them: the token, the audit log and the endpoint observed, the
// metrics on a listener of their own.
type metricsServer struct {
	*server
	metricsURL string
	auditFile  string
}

func startMetricsServer(t *testing.T) *metricsServer {
	t.Helper()
	sharedToken(t) // keeps the module loaded whatever this test's Token does
	m := metrics.New()
	st := softhsmtest.Token(t)
	tok, err := hsm.Open(context.Background(), hsm.Config{ModulePath: st.ModulePath, TokenLabel: st.Label,
		PIN: softhsmtest.PIN(t, st), SessionKeyCopies: true, Observer: m.TokenObserver()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tok.Close() })
	db, err := store.Open(filepath.Join(t.TempDir(), "hsmkms.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	svc, err := service.New(service.Config{Token: tok, Store: db, Region: region})
	if err != nil {
		t.Fatal(err)
	}
	auditFile := filepath.Join(t.TempDir(), "audit.log")
	w, err := svc.OpenAuditLog(ctxT(t), audit.Config{File: auditFile, Observer: m.AuditObserver()},
		filepath.Join(t.TempDir(), "audit-public-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	creds := api.StaticCredentials{}
	if err := creds.Add(mainAKID, []byte(mainSecret), service.Caller{Account: mainAccount, ARN: mainARN}); err != nil {
		t.Fatal(err)
	}
	h, err := api.New(api.Config{Service: svc, Credentials: creds, Region: region, Audit: w, Observer: m.RequestObserver()})
	if err != nil {
		t.Fatal(err)
	}
	m.WatchToken(tok)
	m.WatchService(svc)
	m.WatchAudit(w)
	kmsSrv := httptest.NewServer(h)
	t.Cleanup(kmsSrv.Close)
	metricsSrv := httptest.NewServer(m.Handler())
	t.Cleanup(metricsSrv.Close)
	return &metricsServer{
		server:     &server{URL: kmsSrv.URL, Token: tok, API: h, http: &http.Client{Timeout: 30 * time.Second}},
		metricsURL: metricsSrv.URL, auditFile: auditFile,
	}
}

// scrapeMetrics GETs url/metrics and returns the body and its families, as
// Prometheus parses them.
func scrapeMetrics(t *testing.T, url string) (string, map[string]*dto.MetricFamily) {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("the exposition does not parse: %v\n%s", err, body)
	}
	return string(body), fams
}

// sample returns the value of the sample of family name with exactly the
// labels given (name=value pairs): a counter's or gauge's value, a
// histogram's count.
func sample(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("no family %s", name)
	}
	for _, m := range f.Metric {
		if len(m.Label)*2 != len(labels) {
			continue
		}
		match := true
		for i, l := range m.Label {
			// Labels come sorted by name; callers give them so.
			if l.GetName() != labels[2*i] || l.GetValue() != labels[2*i+1] {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no sample %s%v in %v", name, labels, f)
	return 0
}

// TestMetricsEndToEnd: after real requests through the SDK, /metrics on its
// own listener has the series with the right labels and counts; nothing a
// client sent (key ids, plaintext, principals) is in it; the metrics
// listener answers no KMS request and the KMS endpoint has no /metrics.
func TestMetricsEndToEnd(t *testing.T) {
	t.Parallel()
	s := startMetricsServer(t)
	c := s.client()
	md := createKey(t, c)
	id := aws.ToString(md.KeyId)
	plaintext := []byte("metrics must never carry this plaintext 7f3a")
	var blob []byte
	for range 3 {
		blob = encrypt(t, c, id, plaintext, map[string]string{"purpose": "metrics-test-context"})
	}
	missing := "0d1c5a9e-1234-4abc-8def-9876543210ab"
	_, err := c.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: aws.String(missing)})
	wantAPIError(t, err, "NotFoundException", 400)
	_, err = c.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: []byte("not a ciphertext blob at all, sorry")})
	wantAPIError(t, err, "InvalidCiphertextException", 400)
	_, err = newClient(s.URL, mainAKID, "wrong secret", s.http).ListKeys(ctxT(t), &kms.ListKeysInput{})
	wantAPIError(t, err, "InvalidSignatureException", 400)
	// A target no operation has, signed: its label is UnknownOperation, not
	// what the client sent.
	body := []byte(`{}`)
	req := s.kmsRequest(t, "TrentService.Exfiltrate_"+id, body)
	sign(t, req, body, mainAKID, mainSecret, time.Now())
	resp, err := s.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("unknown operation: %d", resp.StatusCode)
	}

	text, fams := scrapeMetrics(t, s.metricsURL)
	for _, tc := range []struct {
		operation, outcome string
		n                  float64
	}{
		{"CreateKey", "ok", 1},
		{"Encrypt", "ok", 3},
		{"DescribeKey", "NotFoundException", 1},
		{"Decrypt", "InvalidCiphertextException", 1},
		{"ListKeys", "InvalidSignatureException", 1},
		{"UnknownOperation", "UnknownOperationException", 1},
	} {
		if got := sample(t, fams, "hsmkms_requests_total", "operation", tc.operation, "outcome", tc.outcome); got != tc.n {
			t.Errorf("requests_total{operation=%q,outcome=%q} = %g, want %g", tc.operation, tc.outcome, got, tc.n)
		}
	}
	counted := 0 // an operation's ok series exists, at 0, once it is seen
	for _, m := range fams["hsmkms_requests_total"].Metric {
		if m.Counter.GetValue() != 0 {
			counted++
		}
	}
	if counted != 6 {
		t.Errorf("%d request series counted requests, want the 6 above:\n%v", counted, fams["hsmkms_requests_total"])
	}
	if got := sample(t, fams, "hsmkms_request_duration_seconds", "operation", "Encrypt"); got != 3 {
		t.Errorf("Encrypt durations observed %g times, want 3", got)
	}
	if got := sample(t, fams, "hsmkms_token_operation_duration_seconds", "operation", "C_Encrypt"); got < 3 {
		t.Errorf("C_Encrypt observed %g times, want at least 3", got)
	}
	if got := sample(t, fams, "hsmkms_token_sessions", "state", "max"); got != hsm.DefaultMaxSessions {
		t.Errorf("sessions max %g", got)
	}
	if got := sample(t, fams, "hsmkms_token_sessions", "state", "in_use"); got != 0 {
		t.Errorf("%g sessions in use with no request running", got)
	}
	if got := sample(t, fams, "hsmkms_keys", "spec", "SYMMETRIC_DEFAULT", "state", "Enabled"); got != 1 {
		t.Errorf("keys{Enabled,SYMMETRIC_DEFAULT} = %g, want 1", got)
	}
	if got, want := sample(t, fams, "hsmkms_gcm_iv_budget_used_ratio"), 3.0/(1<<32); got != want {
		t.Errorf("IV budget used %g, want %g (3 encryptions)", got, want)
	}
	if got := sample(t, fams, "hsmkms_audit_broken"); got != 0 {
		t.Errorf("audit_broken %g", got)
	}
	// Every record in the log was counted, and no other.
	records := 0
	for _, line := range readAuditLines(t, s.auditFile) {
		if !strings.HasPrefix(line, `{"checkpoint":`) {
			records++
		}
	}
	if got := sample(t, fams, "hsmkms_audit_records_total"); got != float64(records) || records < 8 {
		t.Errorf("audit_records_total %g; the log holds %d records", got, records)
	}
	if got := sample(t, fams, "hsmkms_audit_write_duration_seconds"); got != float64(records) {
		t.Errorf("audit writes observed %g times; the log holds %d records", got, records)
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if fams[name] == nil {
			t.Errorf("no %s", name)
		}
	}

	// Nothing a client sent, nothing secret.
	for what, s := range map[string]string{
		"key id": id, "missing key id": missing, "plaintext": string(plaintext),
		"plaintext (base64)":  base64.StdEncoding.EncodeToString(plaintext),
		"ciphertext (base64)": base64.StdEncoding.EncodeToString(blob)[:24],
		"encryption context":  "metrics-test-context", "principal": mainARN, "account": mainAccount,
		"unknown target": "Exfiltrate",
	} {
		if strings.Contains(text, s) {
			t.Errorf("/metrics contains the %s %q", what, s)
		}
	}

	// The KMS endpoint has no /metrics; the metrics listener no KMS.
	resp, err = http.Get(s.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /metrics on the KMS endpoint: %d, want 404", resp.StatusCode)
	}
	encBody := []byte(`{"KeyId":"` + id + `","Plaintext":"` + base64.StdEncoding.EncodeToString(plaintext) + `"}`)
	req = (&server{URL: s.metricsURL}).kmsRequest(t, "TrentService.Encrypt", encBody)
	sign(t, req, encBody, mainAKID, mainSecret, time.Now())
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || bytes.Contains(answer, []byte("CiphertextBlob")) {
		t.Errorf("a signed Encrypt to the metrics listener: %d %s, want 404 and no answer", resp.StatusCode, answer)
	}
	_, fams = scrapeMetrics(t, s.metricsURL)
	if got := sample(t, fams, "hsmkms_requests_total", "operation", "Encrypt", "outcome", "ok"); got != 3 {
		t.Errorf("after the request to the metrics listener, Encrypt ok = %g, want still 3", got)
	}
}

func readAuditLines(t *testing.T, file string) []string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// TestBinaryMetrics: the real binary with --metrics-listen serves the
// series there; the AES-GCM count survives a SIGKILL, counted up to the
// block the dead process had reserved (at least every encryption it made).
func TestBinaryMetrics(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	start := func() (*proc, string, string) {
		addr, maddr := freeAddr(t), freeAddr(t)
		p := startProc(t, cleanEnv(), "serve", "--dev", "--data-dir", dir, "--listen", addr, "--metrics-listen", maddr)
		p.waitHealthy(t, "http://"+addr)
		return p, "http://" + addr, "http://" + maddr
	}
	p, endpoint, metricsURL := start()
	p.waitLog(t, `"msg":"metrics serving"`) // the start-up line for the metrics listener
	c := newClient(endpoint, "test", "test", nil)
	id := aws.ToString(createKey(t, c).KeyId)
	for range 5 {
		encrypt(t, c, id, []byte("binary metrics"), nil)
	}
	_, fams := scrapeMetrics(t, metricsURL)
	if got := sample(t, fams, "hsmkms_requests_total", "operation", "Encrypt", "outcome", "ok"); got != 5 {
		t.Errorf("Encrypt ok = %g, want 5", got)
	}
	if got, want := sample(t, fams, "hsmkms_gcm_iv_budget_used_ratio"), 5.0/(1<<32); got != want {
		t.Errorf("IV budget used %g, want %g", got, want)
	}
	if sample(t, fams, "hsmkms_audit_broken") != 0 || sample(t, fams, "hsmkms_keys", "spec", "SYMMETRIC_DEFAULT", "state", "Enabled") != 1 {
		t.Error("audit_broken or keys wrong")
	}
	resp, err := http.Get(endpoint + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /metrics on the KMS port: %d, want 404", resp.StatusCode)
	}

	// Killed: nothing is saved on the way out.
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.wait(t, 10*time.Second)
	_, endpoint, metricsURL = start()
	_, fams = scrapeMetrics(t, metricsURL)
	got := sample(t, fams, "hsmkms_gcm_iv_budget_used_ratio")
	if got < 5.0/(1<<32) {
		t.Fatalf("after SIGKILL the IV budget used is %g: fewer than the 5 encryptions made", got)
	}
	if want := float64(service.DefaultGCMReserveBlock) / (1 << 32); got != want {
		t.Errorf("after SIGKILL the IV budget used is %g, want the reserved block, %g", got, want)
	}
	if n, ok := fams["hsmkms_requests_total"]; ok {
		t.Errorf("a fresh process has request counts: %v", n)
	}
	c = newClient(endpoint, "test", "test", nil)
	encrypt(t, c, id, []byte("after the crash"), nil)
	_, fams = scrapeMetrics(t, metricsURL)
	if got2 := sample(t, fams, "hsmkms_gcm_iv_budget_used_ratio"); got2 <= got {
		t.Errorf("an encryption after the restart left the ratio at %g (was %g)", got2, got)
	}
}
