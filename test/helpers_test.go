package test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/service"
	"github.com/hsmkms/hsmkms/service/api"
	"github.com/hsmkms/hsmkms/service/policy"
	"github.com/hsmkms/hsmkms/service/store"
	"github.com/hsmkms/hsmkms/softhsm/softhsmtest"
)

// The two principals every in-process server knows.
const (
	region = "us-east-1"

	mainAccount = "111122223333"
	mainAKID    = "test"
	mainSecret  = "test"
	mainARN     = "arn:aws:iam::111122223333:root"

	otherAccount = "444455556666"
	otherAKID    = "AKIDOTHER"
	otherSecret  = "othersecret"
	otherARN     = "arn:aws:iam::444455556666:user/bob"

	jsonContentType = "application/x-amz-json-1.1"
)

func TestMain(m *testing.M) {
	code := softhsmtest.Main(m)
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// sharedToken is one logged-in hsm.Token on this process's SoftHSM2 token,
// shared by every in-process server. It stays open until the process exits,
// so the module is never finalised under a running test.
var shared struct {
	once sync.Once
	tok  *hsm.Token
	err  error
}

func sharedToken(t testing.TB) *hsm.Token {
	t.Helper()
	st := softhsmtest.Token(t)
	pin := softhsmtest.PIN(t, st)
	shared.once.Do(func() {
		shared.tok, shared.err = hsm.Open(context.Background(), hsm.Config{
			ModulePath: st.ModulePath, TokenLabel: st.Label, PIN: pin, SessionKeyCopies: true,
		})
	})
	if shared.err != nil {
		t.Fatalf("open shared token: %v", shared.err)
	}
	return shared.tok
}

// otherIdentity is the other account's user's identity policy: every KMS
// action. What it may do with the main account's keys is up to their key
// policies, as in AWS.
var otherIdentity = func() []*policy.Policy {
	p, err := policy.Parse([]byte(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}`), policy.IdentityPolicy)
	if err != nil {
		panic(err)
	}
	return []*policy.Policy{p}
}()

// server is an in-process hsmkms endpoint with its own metadata store.
type server struct {
	URL   string
	Token *hsm.Token
	API   *api.Server
	http  *http.Client
}

// transport is shared by every client so connections are reused.
var transport = &http.Transport{
	Proxy:               nil,
	MaxIdleConns:        256,
	MaxIdleConnsPerHost: 64,
	IdleConnTimeout:     30 * time.Second,
}

func startServer(t testing.TB) *server { t.Helper(); return startServerWith(t, nil) }

// startServerWith is startServer with more principals, by access key id
// (each one's secret is its access key id reversed).
func startServerWith(t testing.TB, principals map[string]service.Caller) *server {
	t.Helper()
	return startServerAudited(t, principals, nil)
}

// startServerAudited is startServerWith with an audit log, made by auditor
// from the server's service (nil: none).
func startServerAudited(t testing.TB, principals map[string]service.Caller, auditor func(*service.Service) api.Auditor) *server {
	t.Helper()
	tok := sharedToken(t)
	st, err := store.Open(filepath.Join(t.TempDir(), "hsmkms.db"))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	svc, err := service.New(service.Config{Token: tok, Store: st, Region: region})
	if err != nil {
		st.Close()
		t.Fatalf("service.New: %v", err)
	}
	creds := api.StaticCredentials{}
	if err := creds.Add(mainAKID, []byte(mainSecret), service.Caller{Account: mainAccount, ARN: mainARN}); err != nil {
		t.Fatal(err)
	}
	if err := creds.Add(otherAKID, []byte(otherSecret), service.Caller{Account: otherAccount, ARN: otherARN, Identity: otherIdentity}); err != nil {
		t.Fatal(err)
	}
	for akid, c := range principals {
		if err := creds.Add(akid, []byte(reverse(akid)), c); err != nil {
			t.Fatal(err)
		}
	}
	cfg := api.Config{Service: svc, Credentials: creds, Region: region}
	if auditor != nil {
		cfg.Audit = auditor(svc)
	}
	h, err := api.New(cfg)
	if err != nil {
		st.Close()
		t.Fatalf("api.New: %v", err)
	}
	hs := httptest.NewServer(h)
	// A transport per server: a shared one could hand a request an idle
	// connection to an earlier server whose port the OS has since reused.
	tr := &http.Transport{Proxy: nil, MaxIdleConns: 64, MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		hs.Close()
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return &server{URL: hs.URL, Token: tok, API: h, http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

func reverse(s string) string {
	b := []byte(s)
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	return string(b)
}

// as returns a client for one of the principals given to startServerWith.
func (s *server) as(akid string) *kms.Client { return newClient(s.URL, akid, reverse(akid), s.http) }

// newClient returns an SDK client for url with the given static credentials
// and no retries, so a 500 is seen once and at once.
func newClient(url, akid, secret string, hc aws.HTTPClient) *kms.Client {
	if hc == nil {
		hc = &http.Client{Transport: transport, Timeout: 30 * time.Second}
	}
	cfg := aws.Config{
		Region:      region,
		Credentials: credentials.NewStaticCredentialsProvider(akid, secret, ""),
		Retryer:     transportRetryer,
		HTTPClient:  hc,
	}
	return kms.NewFromConfig(cfg, func(o *kms.Options) { o.BaseEndpoint = aws.String(url) })
}

// transportRetryer retries nothing the server said — a 500 is seen once and
// at once — but retries, once, a request whose connection the client's own
// transport closed under it ("use of closed network connection" while
// reading an error body: seen three times in about twenty-five full runs under -race on
// 2 cores, never reproduced in isolation).
func transportRetryer() aws.Retryer {
	return retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = 2
		o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 10 * time.Millisecond, nil })
		o.RateLimiter = ratelimit.None
		o.Retryables = []retry.IsErrorRetryable{retry.IsErrorRetryableFunc(func(err error) aws.Ternary {
			return aws.BoolTernary(errors.Is(err, net.ErrClosed))
		})}
	})
}

// client is the main account's root principal.
func (s *server) client() *kms.Client { return newClient(s.URL, mainAKID, mainSecret, s.http) }

// other is a principal of another account.
func (s *server) other() *kms.Client { return newClient(s.URL, otherAKID, otherSecret, s.http) }

// recorded is one request/response pair seen by a recorder.
type recorded struct {
	Target   string
	Request  []byte
	Status   int
	Header   http.Header
	Response []byte
}

// recorder is an HTTP client that keeps every request and response body.
type recorder struct {
	mu  sync.Mutex
	all []recorded
}

func (r *recorder) Do(req *http.Request) (*http.Response, error) {
	var reqBody []byte
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		reqBody = b
		req.Body = io.NopCloser(bytes.NewReader(b))
	}
	resp, err := transport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	r.mu.Lock()
	r.all = append(r.all, recorded{Target: req.Header.Get("X-Amz-Target"), Request: reqBody,
		Status: resp.StatusCode, Header: resp.Header.Clone(), Response: b})
	r.mu.Unlock()
	return resp, nil
}

// last returns the last exchange for target (e.g. "TrentService.Decrypt").
func (r *recorder) last(t testing.TB, target string) recorded {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.all) - 1; i >= 0; i-- {
		if r.all[i].Target == target {
			return r.all[i]
		}
	}
	t.Fatalf("no %s exchange was recorded", target)
	return recorded{}
}

func (r *recorder) byTarget(target string) []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []recorded
	for _, x := range r.all {
		if x.Target == target {
			out = append(out, x)
		}
	}
	return out
}

// recordingClient is the main principal's client, recording bodies.
func (s *server) recordingClient() (*kms.Client, *recorder) {
	rec := &recorder{}
	return newClient(s.URL, mainAKID, mainSecret, rec), rec
}

func ctxT(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// createKey creates a symmetric key and returns its metadata.
func createKey(t testing.TB, c *kms.Client) *types.KeyMetadata {
	t.Helper()
	out, err := c.CreateKey(ctxT(t), &kms.CreateKeyInput{})
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	if out.KeyMetadata == nil || out.KeyMetadata.KeyId == nil || out.KeyMetadata.Arn == nil {
		t.Fatalf("CreateKey returned no key metadata: %+v", out)
	}
	return out.KeyMetadata
}

func encrypt(t testing.TB, c *kms.Client, keyID string, pt []byte, ec map[string]string) []byte {
	t.Helper()
	out, err := c.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String(keyID), Plaintext: pt, EncryptionContext: ec})
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	if len(out.CiphertextBlob) == 0 {
		t.Fatal("Encrypt returned an empty CiphertextBlob")
	}
	return out.CiphertextBlob
}

func decrypt(t testing.TB, c *kms.Client, blob []byte, ec map[string]string) *kms.DecryptOutput {
	t.Helper()
	out, err := c.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: blob, EncryptionContext: ec})
	if err != nil {
		t.Fatalf("Decrypt: %v", err)
	}
	return out
}

func keyARN(account, id string) string { return "arn:aws:kms:" + region + ":" + account + ":key/" + id }

// wantAPIError asserts that err is the AWS exception code and, when status is
// not 0, that it came with that HTTP status. It returns the API error.
func wantAPIError(t testing.TB, err error, code string, status int) smithy.APIError {
	t.Helper()
	if err == nil {
		t.Fatalf("got success, want %s", code)
	}
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("got %v (%T), want API error %s", err, err, code)
	}
	if ae.ErrorCode() != code {
		t.Fatalf("got %s (%q), want %s", ae.ErrorCode(), ae.ErrorMessage(), code)
	}
	if status != 0 {
		var re *awshttp.ResponseError
		if !errors.As(err, &re) {
			t.Fatalf("%s: no HTTP response error in %v", code, err)
		}
		if got := re.HTTPStatusCode(); got != status {
			t.Fatalf("%s: HTTP status %d, want %d", code, got, status)
		}
		if re.ServiceRequestID() == "" {
			t.Errorf("%s: response had no request id", code)
		}
	}
	return ae
}

// apiCode returns err's AWS exception code, or "" if it has none.
func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// wantMessage asserts an API error's message.
func wantMessage(t testing.TB, ae smithy.APIError, want string) {
	t.Helper()
	if got := ae.ErrorMessage(); got != want {
		t.Errorf("%s message:\n got %q\nwant %q", ae.ErrorCode(), got, want)
	}
}

// wantType asserts that err is (wraps) the typed SDK error T.
func wantType[T error](t testing.TB, err error) T {
	t.Helper()
	var target T
	if !errors.As(err, &target) {
		t.Fatalf("got %v (%T), want a %T", err, err, target)
	}
	return target
}

// ---- raw, hand-signed requests ----

// rawResponse is an HTTP response read in full.
type rawResponse struct {
	Status int
	Header http.Header
	Body   []byte
}

// errorBody decodes an AWS JSON error body, failing t if it is not one.
func (r *rawResponse) errorBody(t testing.TB) (typ, msg string) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("error body is not JSON: %v: %q", err, r.Body)
	}
	typv, ok := m["__type"].(string)
	if !ok {
		t.Fatalf("error body has no string __type: %q", r.Body)
	}
	msgv, ok := m["message"].(string)
	if !ok {
		t.Fatalf("error body has no string message: %q", r.Body)
	}
	return typv, msgv
}

// wantError asserts status and exception of a raw response, and returns the message.
func (r *rawResponse) wantError(t testing.TB, status int, code string) string {
	t.Helper()
	typ, msg := r.errorBody(t)
	if r.Status != status || typ != code {
		t.Fatalf("got %d %s (%q), want %d %s", r.Status, typ, msg, status, code)
	}
	return msg
}

// kmsRequest builds a POST / request for target with body, unsigned.
func (s *server) kmsRequest(t testing.TB, target string, body []byte) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.URL+"/", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", jsonContentType)
	if target != "" {
		req.Header.Set("X-Amz-Target", target)
	}
	return req
}

// sign signs req (whose body is body) with SigV4 at time at.
func sign(t testing.TB, req *http.Request, body []byte, akid, secret string, at time.Time) {
	t.Helper()
	signScoped(t, req, body, akid, secret, at, region, "kms")
}

// signScoped signs req for the given region and service.
func signScoped(t testing.TB, req *http.Request, body []byte, akid, secret string, at time.Time, reg, svc string) {
	t.Helper()
	sum := sha256.Sum256(body)
	err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: akid, SecretAccessKey: secret},
		req, hex.EncodeToString(sum[:]), svc, reg, at)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
}

// do sends req and reads the whole response.
func (s *server) do(t testing.TB, req *http.Request) *rawResponse {
	t.Helper()
	resp, err := s.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	return &rawResponse{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// call sends a request signed by the main principal, now.
func (s *server) call(t testing.TB, target string, body []byte) *rawResponse {
	t.Helper()
	req := s.kmsRequest(t, target, body)
	sign(t, req, body, mainAKID, mainSecret, time.Now())
	return s.do(t, req)
}

// callJSON marshals in and sends it as target.
func (s *server) callJSON(t testing.TB, target string, in any) *rawResponse {
	t.Helper()
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	return s.call(t, target, b)
}

// wantKMSHeaders asserts the headers every KMS endpoint response carries.
func wantKMSHeaders(t testing.TB, what string, h http.Header) {
	t.Helper()
	if got := h.Get("Content-Type"); got != jsonContentType {
		t.Errorf("%s: Content-Type %q, want %q", what, got, jsonContentType)
	}
	if h.Get("x-amzn-RequestId") == "" {
		t.Errorf("%s: no x-amzn-RequestId header", what)
	}
}

// ---- the hsmkms binary ----

var (
	binOnce    sync.Once
	binDir     string
	binPath    string
	binVersion string // the version stamped into it
	binErr     error
)

// hsmkmsBinary builds cmd/hsmkms once per test run, with its version
// stamped as the Makefile stamps it.
func hsmkmsBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "hsmkms-e2e-bin-*")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "hsmkms")
		binVersion = "dev"
		if out, err := exec.Command("git", "describe", "--tags", "--always", "--dirty").Output(); err == nil {
			binVersion = strings.TrimSpace(string(out))
		}
		cmd := exec.Command("go", "build", "-ldflags", "-X main.version="+binVersion, "-o", binPath, "../cmd/hsmkms")
		out, err := cmd.CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build ../cmd/hsmkms: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a running hsmkms process.
type proc struct {
	cmd    *exec.Cmd
	stdout *syncBuffer
	stderr *syncBuffer
	done   chan struct{}
	err    error // Wait's result, once done is closed
}

// cleanEnv is the environment without SOFTHSM2_CONF, which the test
// process points at its own token.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "SOFTHSM2_CONF=") || strings.HasPrefix(kv, "HSMKMS_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// startProc runs the binary with args and env. The process is killed at the
// end of the test if it is still running.
func startProc(t testing.TB, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(hsmkmsBinary(t), args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start hsmkms: %v", err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("hsmkms did not exit within %v\nstdout:\n%s\nstderr:\n%s", timeout, p.stdout, p.stderr)
	}
	var ee *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &ee):
		return ee.ExitCode()
	}
	t.Fatalf("wait: %v", p.err)
	return -1
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// waitHealthy polls GET /healthz until it answers 200 or the process exits.
func (p *proc) waitHealthy(t testing.TB, endpoint string) {
	t.Helper()
	p.waitHealthyWith(t, endpoint, &http.Client{Timeout: time.Second})
}

// waitHealthyWith is waitHealthy with a client of the caller's (one that
// trusts the server's CA, for HTTPS).
func (p *proc) waitHealthyWith(t testing.TB, endpoint string, hc *http.Client) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			t.Fatalf("hsmkms exited before it was healthy: %v\nstdout:\n%s\nstderr:\n%s", p.err, p.stdout, p.stderr)
		default:
		}
		resp, err := hc.Get(endpoint + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("hsmkms was not healthy within 30s\nstdout:\n%s\nstderr:\n%s", p.stdout, p.stderr)
}

// waitLog waits until the process's standard error holds substr, or fails.
// A line the server wrote before it answered a request may still be in the
// pipe: exec copies it to the buffer from a goroutine of its own.
func (p *proc) waitLog(t testing.TB, substr string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if strings.Contains(p.stderr.String(), substr) {
			return
		}
	}
	t.Fatalf("no %s in the log within 10s:\n%s", substr, p.stderr)
}

// startDev runs `hsmkms serve --dev` on dataDir and waits until it is healthy.
func startDev(t testing.TB, dataDir string) (*proc, string) {
	t.Helper()
	addr := freeAddr(t)
	p := startProc(t, cleanEnv(), "serve", "--dev", "--data-dir", dataDir, "--listen", addr, "--log-level", "warn")
	endpoint := "http://" + addr
	p.waitHealthy(t, endpoint)
	return p, endpoint
}
