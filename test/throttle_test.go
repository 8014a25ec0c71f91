package test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/smithy-go"

	"github.com/hsmkms/hsmkms/audit"
	"github.com/hsmkms/hsmkms/service"
	"github.com/hsmkms/hsmkms/service/api"
	"github.com/hsmkms/hsmkms/service/store"
)

// Principals of the throttling tests, in the main account, allowed every
// KMS action by their identity policy (each one's secret is its access key
// id reversed).
const (
	floodAKID = "AKIDFLOOD"
	floodARN  = "arn:aws:iam::111122223333:user/flood"
	calmAKID  = "AKIDCALM"
	calmARN   = "arn:aws:iam::111122223333:user/calm"
)

// throttledServer is an in-process server with rate limits. Its clock is
// frozen at start (SigV4 accepts the SDK's signatures for the five minutes
// a test may take): buckets never refill, so what a limit admits does not
// depend on how fast the machine is. auditFile, if set, gets a real audit
// log.
func throttledServer(t *testing.T, limits api.RateLimits, records api.RecordRate, auditFile string) (*server, *audit.Writer, []byte) {
	t.Helper()
	tok := sharedToken(t)
	st, err := store.Open(filepath.Join(t.TempDir(), "hsmkms.db"))
	if err != nil {
		t.Fatal(err)
	}
	svc, err := service.New(service.Config{Token: tok, Store: st, Region: region})
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	creds := api.StaticCredentials{}
	for akid, c := range map[string]service.Caller{
		mainAKID:  {Account: mainAccount, ARN: mainARN},
		floodAKID: {Account: mainAccount, ARN: floodARN, Identity: otherIdentity},
		calmAKID:  {Account: mainAccount, ARN: calmARN, Identity: otherIdentity},
	} {
		secret := reverse(akid)
		if akid == mainAKID {
			secret = mainSecret
		}
		if err := creds.Add(akid, []byte(secret), c); err != nil {
			t.Fatal(err)
		}
	}
	frozen := time.Now()
	cfg := api.Config{Service: svc, Credentials: creds, Region: region, RateLimits: limits, AuthFailureRecords: records,
		Now: func() time.Time { return frozen }}
	var w *audit.Writer
	var pub []byte
	if auditFile != "" {
		signer, p, err := svc.AuditKey(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		pub = p
		if w, err = audit.Open(audit.Config{File: auditFile, Signer: signer, PublicKey: pub}); err != nil {
			t.Fatal(err)
		}
		cfg.Audit = w
	}
	h, err := api.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(h)
	tr := &http.Transport{Proxy: nil, MaxIdleConns: 64, MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		hs.Close()
		if w != nil {
			w.Close()
		}
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return &server{URL: hs.URL, Token: tok, API: h, http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}, w, pub
}

// countingClient counts the HTTP requests a client sends.
type countingClient struct {
	hc aws.HTTPClient
	n  atomic.Int64
}

func (c *countingClient) Do(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.hc.Do(r)
}

// isThrottling says whether err is ThrottlingException as the SDK sees it:
// the modelled code, sent with HTTP 400.
func isThrottling(err error) error {
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "ThrottlingException" {
		return fmt.Errorf("want ThrottlingException, got %v", err)
	}
	var re *awshttp.ResponseError
	if !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusBadRequest {
		return fmt.Errorf("ThrottlingException without HTTP 400: %v", err)
	}
	return nil
}

// A principal over its rate gets ThrottlingException; another principal's
// requests of the same class, made while the first one floods, all succeed.
func TestThrottlingPerPrincipal(t *testing.T) {
	t.Parallel()
	const rate = 20 // Symmetric: a bucket of 20 that never refills here
	s, _, _ := throttledServer(t, api.RateLimits{Symmetric: rate, Read: 1}, api.RecordRate{}, "")
	key := createKey(t, s.client()) // CreateKey's class (Write) is off
	// The helpers' client retries only a connection its own transport
	// closed, never an answer: each call is one HTTP request, counted.
	floodHTTP := &countingClient{hc: s.http}
	flood := newClient(s.URL, floodAKID, reverse(floodAKID), floodHTTP)
	calm := s.as(calmAKID)

	const floodCalls, floodWorkers, calmCalls = 80, 4, rate
	var floodOK, floodThrottled atomic.Int64
	floodErrs := make(chan error, floodCalls)
	calmErrs := make(chan error, calmCalls)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range floodWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for range floodCalls / floodWorkers {
				_, err := flood.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: key.KeyId, Plaintext: []byte("flood")})
				switch {
				case err == nil:
					floodOK.Add(1)
				case isThrottling(err) == nil:
					floodThrottled.Add(1)
				default:
					floodErrs <- err
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-start
		for i := range calmCalls {
			out, err := calm.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: key.KeyId, Plaintext: []byte(fmt.Sprint("calm ", i))})
			if err == nil && aws.ToString(out.KeyId) != aws.ToString(key.Arn) {
				err = fmt.Errorf("Encrypt answered for key %q", aws.ToString(out.KeyId))
			}
			if err != nil {
				calmErrs <- err
			}
		}
	}()
	close(start)
	wg.Wait()
	close(floodErrs)
	close(calmErrs)
	for err := range floodErrs {
		t.Errorf("flooding principal: %v", err)
	}
	for err := range calmErrs {
		t.Errorf("the other principal, during the flood: %v", err)
	}
	if ok, th := floodOK.Load(), floodThrottled.Load(); ok != rate || th != floodCalls-rate {
		t.Errorf("flooding principal: %d admitted and %d throttled of %d, want %d and %d", ok, th, floodCalls, rate, floodCalls-rate)
	}
	if n := floodHTTP.n.Load(); n != floodCalls {
		t.Errorf("%d HTTP requests for %d calls: the test client retried", n, floodCalls)
	}
	// The flood's bucket is one class's: its DescribeKey (Read) works.
	if _, err := flood.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: key.KeyId}); err != nil {
		t.Errorf("DescribeKey by the throttled principal: %v", err)
	}
	// A throttled GenerateRandom says so as AWS does.
	_, err := flood.GenerateRandom(ctxT(t), &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(16)})
	if err := isThrottling(err); err != nil {
		t.Fatal(err)
	}
	ae := wantAPIError(t, err, "ThrottlingException", http.StatusBadRequest)
	wantMessage(t, ae, "You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls.")

	// Requests that fail anyway count too, so failures cannot flood past
	// the limit: a malformed Encrypt is throttled rather than answered
	// SerializationException, and operations that do not exist count as
	// reads (the Read bucket of 1: UnknownOperationException once).
	signed := func(akid, target string, body []byte) string {
		secret := reverse(akid)
		if akid == mainAKID {
			secret = mainSecret
		}
		req := s.kmsRequest(t, target, body)
		sign(t, req, body, akid, secret, time.Now())
		var e struct {
			Type string `json:"__type"`
		}
		resp := s.do(t, req)
		if err := json.Unmarshal(resp.Body, &e); err != nil || resp.Status != http.StatusBadRequest {
			t.Fatalf("%s: status %d, body %q", target, resp.Status, resp.Body)
		}
		return e.Type
	}
	for _, c := range []struct {
		akid, target, body, want string
	}{
		{mainAKID, "TrentService.Encrypt", `{"KeyId":`, "SerializationException"},
		{floodAKID, "TrentService.Encrypt", `{"KeyId":`, "ThrottlingException"},
		{floodAKID, "TrentService.Frobnicate", `{}`, "UnknownOperationException"},
		{floodAKID, "TrentService.Frobnicate", `{}`, "ThrottlingException"},
	} {
		if got := signed(c.akid, c.target, []byte(c.body)); got != c.want {
			t.Errorf("%s %s by %s: %s, want %s", c.target, c.body, c.akid, got, c.want)
		}
	}
}

// The per-source limit refuses a flood before authentication: unsigned
// requests get MissingAuthenticationTokenException while the address has
// tokens, then ThrottlingException in AWS's shape, and so does a correctly
// signed request from that address. Their records are bounded like those of
// failed authentication.
func TestThrottlingPerSourceBeforeAuthentication(t *testing.T) {
	t.Parallel()
	const perSource = 5
	file := filepath.Join(t.TempDir(), "audit.log")
	s, w, pub := throttledServer(t, api.RateLimits{PerSource: perSource},
		api.RecordRate{PerSecond: 1e-6, Burst: 8, AllSources: 100}, file)
	const unsigned = 12
	counts := map[string]int{}
	for range unsigned {
		body := []byte(`{"NumberOfBytes":16}`)
		resp := s.do(t, s.kmsRequest(t, "TrentService.GenerateRandom", body))
		var e struct {
			Type    string `json:"__type"`
			Message string `json:"message"`
		}
		if err := json.Unmarshal(resp.Body, &e); err != nil || resp.Status != http.StatusBadRequest {
			t.Fatalf("status %d, body %q", resp.Status, resp.Body)
		}
		if e.Type == "ThrottlingException" {
			want := `{"__type":"ThrottlingException","message":"You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls."}`
			if string(resp.Body) != want {
				t.Errorf("throttled body %s, want %s", resp.Body, want)
			}
			wantKMSHeaders(t, "ThrottlingException", resp.Header)
		}
		counts[e.Type]++
	}
	if counts["MissingAuthenticationTokenException"] != perSource || counts["ThrottlingException"] != unsigned-perSource {
		t.Errorf("unsigned flood answered %v, want %d MissingAuthenticationTokenException then %d ThrottlingException",
			counts, perSource, unsigned-perSource)
	}
	// The address is out of tokens: a good signature does not help.
	_, err := s.client().GenerateRandom(ctxT(t), &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(16)})
	if err := isThrottling(err); err != nil {
		t.Fatal(err)
	}

	if err := s.API.FlushAuditSummaries(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Verify([]string{file}, pub); err != nil {
		t.Fatal(err)
	}
	written, suppressed := 0, 0
	for _, e := range auditEvents(t, file) {
		extra, _ := e["additionalEventData"].(map[string]any)
		n, _ := extra["suppressedAuthFailureRecords"].(float64)
		suppressed += int(n)
		if e["eventName"] == "AuthFailureRecordsSuppressed" {
			continue
		}
		written++
		id, _ := e["userIdentity"].(map[string]any)
		if id["type"] != audit.IdentityUnknown || e["eventName"] != "GenerateRandom" {
			t.Errorf("record of an unauthenticated request: %v", e)
		}
	}
	// Eight records, then the limit of records of unauthenticated requests.
	if total := unsigned + 1; written != 8 || written+suppressed != total {
		t.Errorf("%d records written and %d counted as dropped, of %d requests; want 8 written", written, suppressed, total)
	}
}

// A throttled authenticated request is recorded with errorCode
// ThrottlingException, as CloudTrail records AWS KMS's, but a flood of them
// cannot fill the log: past a per-principal bound the records are counted in
// a summary instead. The other principal's records are all there.
func TestThrottledRequestsAreRecordedWithinBounds(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "audit.log")
	const rate, records = 3, 4
	s, w, pub := throttledServer(t, api.RateLimits{Symmetric: rate},
		api.RecordRate{PerSecond: 1e-6, Burst: records, AllSources: 100}, file)
	flood, calm := s.as(floodAKID), s.as(calmAKID)
	const floodCalls = 30
	throttled := 0
	for i := range floodCalls {
		_, err := flood.GenerateRandom(ctxT(t), &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)})
		if err != nil {
			if err := isThrottling(err); err != nil {
				t.Fatal(err)
			}
			throttled++
		}
		if i < rate {
			if _, err := calm.GenerateRandom(ctxT(t), &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)}); err != nil {
				t.Fatalf("other principal: %v", err)
			}
		}
	}
	if throttled != floodCalls-rate {
		t.Fatalf("%d throttled, want %d", throttled, floodCalls-rate)
	}
	if err := s.API.FlushAuditSummaries(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Verify([]string{file}, pub); err != nil {
		t.Fatal(err)
	}
	byPrincipal := map[string]map[string]int{} // ARN -> errorCode ("" for success) -> records
	suppressed, summaries := 0, 0
	for _, e := range auditEvents(t, file) {
		id, _ := e["userIdentity"].(map[string]any)
		arn, _ := id["arn"].(string)
		extra, _ := e["additionalEventData"].(map[string]any)
		n, _ := extra["suppressedThrottledRecords"].(float64)
		suppressed += int(n)
		switch e["eventName"] {
		case "ThrottledRecordsSuppressed":
			summaries++
			if arn != floodARN || e["eventType"] != audit.EventTypeService {
				t.Errorf("summary %v", e)
			}
		case "GenerateRandom":
			code, _ := e["errorCode"].(string)
			if byPrincipal[arn] == nil {
				byPrincipal[arn] = map[string]int{}
			}
			byPrincipal[arn][code]++
		default:
			t.Errorf("unexpected record %v", e)
		}
	}
	if got := byPrincipal[calmARN]; got[""] != rate || len(got) != 1 {
		t.Errorf("the other principal's records: %v, want %d successes", got, rate)
	}
	got := byPrincipal[floodARN]
	if got[""] != rate || got["ThrottlingException"] != records || len(got) != 2 {
		t.Errorf("the flooding principal's records: %v, want %d successes and %d ThrottlingException", got, rate, records)
	}
	if got["ThrottlingException"]+suppressed != throttled || summaries != 1 {
		t.Errorf("%d throttled records, %d counted as dropped (in %d summaries), of %d throttled requests",
			got["ThrottlingException"], suppressed, summaries, throttled)
	}
}

// BenchmarkThrottleOverhead measures the server's work for one HTTP Encrypt
// (1 KiB, SigV4, JSON, token) with every rate limit on (at rates it never
// reaches) and with none, interleaved in one run, through the handler
// itself (no client, no network).
func BenchmarkThrottleOverhead(b *testing.B) {
	tok := sharedToken(b)
	st, err := store.Open(filepath.Join(b.TempDir(), "hsmkms.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	svc, err := service.New(service.Config{Token: tok, Store: st, Region: region})
	if err != nil {
		b.Fatal(err)
	}
	creds := api.StaticCredentials{}
	if err := creds.Add(mainAKID, []byte(mainSecret), service.Caller{Account: mainAccount, ARN: mainARN}); err != nil {
		b.Fatal(err)
	}
	off, err := api.New(api.Config{Service: svc, Credentials: creds, Region: region})
	if err != nil {
		b.Fatal(err)
	}
	// Every limit on, at rates no benchmark reaches.
	high := api.RateLimits{PerSource: 1e9, Symmetric: 1e9, RSA: 1e9, ECC: 1e9, DataKeyPair: 1e9, Write: 1e9, Grant: 1e9, Read: 1e9, List: 1e9}
	on, err := api.New(api.Config{Service: svc, Credentials: creds, Region: region, RateLimits: high})
	if err != nil {
		b.Fatal(err)
	}
	key, err := svc.CreateKey(ctxT(b), service.Caller{Account: mainAccount, ARN: mainARN}, service.CreateKeyInput{})
	if err != nil {
		b.Fatal(err)
	}
	body := []byte(fmt.Sprintf(`{"KeyId":%q,"Plaintext":%q}`, key.KeyMetadata.KeyId, base64.StdEncoding.EncodeToString(make([]byte, 1024))))
	proto := (&server{URL: "http://kms.local"}).kmsRequest(b, "TrentService.Encrypt", body)
	sign(b, proto, body, mainAKID, mainSecret, time.Now())
	run := func(h http.Handler) time.Duration {
		req := proto.Clone(proto.Context())
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.RemoteAddr = "127.0.0.1:40000"
		rec := httptest.NewRecorder()
		t0 := time.Now()
		h.ServeHTTP(rec, req)
		d := time.Since(t0)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		return d
	}
	var offT, onT time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		offT += run(off)
		onT += run(on)
	}
	b.ReportMetric(float64(offT.Nanoseconds())/float64(b.N), "off-ns/op")
	b.ReportMetric(float64(onT.Nanoseconds())/float64(b.N), "on-ns/op")
	b.ReportMetric(float64(onT)/float64(offT), "on/off")
}
