package sigv4_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/hsmkms/hsmkms/service/api/sigv4"
)

const (
	testAKID    = "AKIDEXAMPLE"
	testSecret  = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
	testRegion  = "us-east-1"
	testService = "kms"
	testURL     = "http://kms.example.test:8080/"
	testBody    = `{"Limit":10}`
)

// testNow is the server clock used by the table tests.
var testNow = time.Date(2026, 11, 29, 3, 30, 0, 0, time.UTC)

type mapStore struct {
	mu    sync.RWMutex
	creds map[string]sigv4.Credential
}

func (m *mapStore) Lookup(id string) (sigv4.Credential, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	c, ok := m.creds[id]
	return c, ok
}

func (m *mapStore) set(id, secret string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.creds[id] = sigv4.Credential{AccessKeyID: id, Secret: []byte(secret), Principal: "principal-" + id}
}

func newStore() *mapStore {
	s := &mapStore{creds: map[string]sigv4.Credential{}}
	s.set(testAKID, testSecret)
	return s
}

func newVerifier(store sigv4.CredentialStore) *sigv4.Verifier {
	return &sigv4.Verifier{
		Region:  testRegion,
		Service: testService,
		Store:   store,
		Now:     func() time.Time { return testNow },
	}
}

type signOpts struct {
	akid, secret, token string
	region, service     string
	signTime            time.Time
	url, body           string
	before              func(*http.Request) // mutate the client request before signing
}

func defaults(o signOpts) signOpts {
	if o.akid == "" {
		o.akid = testAKID
	}
	if o.secret == "" {
		o.secret = testSecret
	}
	if o.region == "" {
		o.region = testRegion
	}
	if o.service == "" {
		o.service = testService
	}
	if o.signTime.IsZero() {
		o.signTime = testNow
	}
	if o.url == "" {
		o.url = testURL
	}
	if o.body == "" {
		o.body = testBody
	}
	return o
}

// signedRequest builds a KMS-style request, signs it with the real AWS SDK
// signer, serialises it to the wire and parses it back the way net/http's
// server does, returning the server-side request and its body.
func signedRequest(tb testing.TB, o signOpts) (*http.Request, []byte) {
	tb.Helper()
	o = defaults(o)
	req, err := http.NewRequest(http.MethodPost, o.url, strings.NewReader(o.body))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", "TrentService.ListKeys")
	if o.before != nil {
		o.before(req)
	}
	sum := sha256.Sum256([]byte(o.body))
	creds := aws.Credentials{AccessKeyID: o.akid, SecretAccessKey: o.secret, SessionToken: o.token}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]),
		o.service, o.region, o.signTime); err != nil {
		tb.Fatal(err)
	}
	var wire bytes.Buffer
	if err := req.Write(&wire); err != nil {
		tb.Fatal(err)
	}
	sreq, err := http.ReadRequest(bufio.NewReader(&wire))
	if err != nil {
		tb.Fatal(err)
	}
	body, err := io.ReadAll(sreq.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return sreq, body
}

func signatureOf(r *http.Request) string {
	_, sig, _ := strings.Cut(r.Header.Get("Authorization"), "Signature=")
	return sig
}

func rewriteAuth(old, new string) func(*http.Request, *[]byte) {
	return func(r *http.Request, _ *[]byte) {
		r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), old, new, 1))
	}
}

type verifyCase struct {
	name  string
	opts  signOpts
	after func(r *http.Request, body *[]byte) // mutate the server-side request
	want  error                               // nil: must verify
	also  error                               // additional errors.Is target
	msg   string                              // substring expected in the error message
}

func verifyCases() []verifyCase {
	return []verifyCase{
		{name: "good request"},
		{
			name:  "tampered body",
			after: func(_ *http.Request, b *[]byte) { *b = []byte(`{"Limit":11}`) },
			want:  sigv4.ErrInvalidSignature,
			msg:   "The request signature we calculated does not match",
		},
		{
			name:  "tampered signed header X-Amz-Target",
			after: func(r *http.Request, _ *[]byte) { r.Header.Set("X-Amz-Target", "TrentService.ScheduleKeyDeletion") },
			want:  sigv4.ErrInvalidSignature,
		},
		{
			name: "wrong secret",
			opts: signOpts{secret: "not-the-right-secret"},
			want: sigv4.ErrInvalidSignature,
			msg:  "Check your AWS Secret Access Key",
		},
		{
			name: "unknown access key",
			opts: signOpts{akid: "AKIDUNKNOWN"},
			want: sigv4.ErrUnrecognizedClient,
			msg:  "The security token included in the request is invalid.",
		},
		{
			name: "date 6 minutes old",
			opts: signOpts{signTime: testNow.Add(-6 * time.Minute)},
			want: sigv4.ErrSignatureExpired,
			also: sigv4.ErrInvalidSignature,
			msg:  "Signature expired: 20261129T032400Z is now earlier than 20261129T032500Z (20261129T033000Z - 5 min.)",
		},
		{
			name: "date 6 minutes in the future",
			opts: signOpts{signTime: testNow.Add(6 * time.Minute)},
			want: sigv4.ErrSignatureExpired,
			also: sigv4.ErrInvalidSignature,
			msg:  "Signature not yet current: 20261129T033600Z is still later than 20261129T033500Z (20261129T033000Z + 5 min.)",
		},
		{name: "date 4 minutes old", opts: signOpts{signTime: testNow.Add(-4 * time.Minute)}},
		{name: "date 4 minutes in the future", opts: signOpts{signTime: testNow.Add(4 * time.Minute)}},
		{name: "date exactly 5 minutes old", opts: signOpts{signTime: testNow.Add(-5 * time.Minute)}},
		{
			name:  "missing Authorization",
			after: func(r *http.Request, _ *[]byte) { r.Header.Del("Authorization") },
			want:  sigv4.ErrMissingAuthentication,
			msg:   "Missing Authentication Token",
		},
		{
			name:  "empty Authorization",
			after: func(r *http.Request, _ *[]byte) { r.Header.Set("Authorization", "  ") },
			want:  sigv4.ErrMissingAuthentication,
		},
		{
			name: "Authorization missing Signature",
			after: func(r *http.Request, _ *[]byte) {
				a, _, _ := strings.Cut(r.Header.Get("Authorization"), ", Signature=")
				r.Header.Set("Authorization", a)
			},
			want: sigv4.ErrIncompleteSignature,
			msg:  "Authorization header requires 'Signature' parameter. Authorization=AWS4-HMAC-SHA256 Credential=",
		},
		{
			name:  "Authorization missing Credential",
			after: rewriteAuth("Credential=", "Kredential="),
			want:  sigv4.ErrIncompleteSignature,
			msg:   "Authorization header requires 'Credential' parameter.",
		},
		{
			name:  "Authorization missing SignedHeaders",
			after: rewriteAuth("SignedHeaders=", "SignedHeadersX="),
			want:  sigv4.ErrIncompleteSignature,
			msg:   "Authorization header requires 'SignedHeaders' parameter.",
		},
		{
			name:  "Authorization pair without equal sign",
			after: rewriteAuth("SignedHeaders=", "SignedHeaders"),
			want:  sigv4.ErrIncompleteSignature,
			msg:   "missing equal-sign",
		},
		{
			name: "duplicate Authorization header",
			after: func(r *http.Request, _ *[]byte) {
				r.Header.Add("Authorization", r.Header.Get("Authorization"))
			},
			want: sigv4.ErrIncompleteSignature,
		},
		{
			name:  "missing X-Amz-Date",
			after: func(r *http.Request, _ *[]byte) { r.Header.Del("X-Amz-Date") },
			want:  sigv4.ErrIncompleteSignature,
			msg:   "'X-Amz-Date'",
		},
		{
			name:  "malformed X-Amz-Date",
			after: func(r *http.Request, _ *[]byte) { r.Header.Set("X-Amz-Date", "2026-11-29T03:30:00Z") },
			want:  sigv4.ErrIncompleteSignature,
			msg:   "ISO-8601",
		},
		{
			name:  "wrong algorithm",
			after: rewriteAuth("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512"),
			want:  sigv4.ErrIncompleteSignature,
			msg:   "AWS4-HMAC-SHA512",
		},
		{
			name:  "host not signed",
			after: rewriteAuth("host;", ""),
			want:  sigv4.ErrIncompleteSignature,
			msg:   "'Host' or ':authority' must be a 'SignedHeader'",
		},
		{
			name:  "signed header absent",
			after: func(r *http.Request, _ *[]byte) { r.Header.Del("X-Amz-Target") },
			want:  sigv4.ErrIncompleteSignature,
			msg:   "x-amz-target",
		},
		{
			name:  "empty name in SignedHeaders",
			after: rewriteAuth("host;", "host;;"),
			want:  sigv4.ErrIncompleteSignature,
		},
		{
			name:  "credential with four elements",
			after: rewriteAuth("/us-east-1/", "/"),
			want:  sigv4.ErrIncompleteSignature,
			msg:   "Credential must have exactly 5 slash-delimited elements",
		},
		{
			name:  "credential with six elements",
			after: rewriteAuth("/aws4_request", "/aws4_request/x"),
			want:  sigv4.ErrIncompleteSignature,
		},
		{
			name:  "credential with wrong terminator",
			after: rewriteAuth("/aws4_request", "/aws5_request"),
			want:  sigv4.ErrIncompleteSignature,
			msg:   "valid terminator",
		},
		{
			name: "wrong region",
			opts: signOpts{region: "eu-west-1"},
			want: sigv4.ErrInvalidSignature,
			msg:  "Credential should be scoped to a valid region, not 'eu-west-1'.",
		},
		{
			name: "wrong service",
			opts: signOpts{service: "s3"},
			want: sigv4.ErrInvalidSignature,
			msg:  "Credential should be scoped to correct service: 'kms'.",
		},
		{
			name:  "scope date mismatch",
			after: rewriteAuth("/20261129/", "/20261128/"),
			want:  sigv4.ErrInvalidSignature,
			msg:   "'20261128' != '20261129'",
		},
		{
			name: "signature not hex",
			after: func(r *http.Request, _ *[]byte) {
				rewriteAuth(signatureOf(r), strings.Repeat("zz", 32))(r, nil)
			},
			want: sigv4.ErrInvalidSignature,
		},
		{
			name: "signature too short",
			after: func(r *http.Request, _ *[]byte) {
				rewriteAuth(signatureOf(r), signatureOf(r)[:62])(r, nil)
			},
			want: sigv4.ErrInvalidSignature,
		},
		{
			name: "signature upper-case hex",
			after: func(r *http.Request, _ *[]byte) {
				rewriteAuth(signatureOf(r), strings.ToUpper(signatureOf(r)))(r, nil)
			},
		},
		{
			name: "no spaces after commas in Authorization",
			after: func(r *http.Request, _ *[]byte) {
				r.Header.Set("Authorization", strings.ReplaceAll(r.Header.Get("Authorization"), ", ", ","))
			},
		},
		{
			name: "extra spaces around Authorization parameters",
			after: func(r *http.Request, _ *[]byte) {
				r.Header.Set("Authorization", strings.ReplaceAll(r.Header.Get("Authorization"), ", ", " ,   "))
			},
		},
		{
			name:  "extra unsigned header added after signing",
			after: func(r *http.Request, _ *[]byte) { r.Header.Set("X-Extra", "added later") },
		},
		{
			name: "header value with extra internal spaces",
			opts: signOpts{before: func(r *http.Request) { r.Header.Set("X-Custom", "a b c") }},
			after: func(r *http.Request, _ *[]byte) {
				r.Header.Set("X-Custom", "  a   b     c ")
			},
		},
		{
			name: "header value signed with extra internal spaces",
			opts: signOpts{before: func(r *http.Request) { r.Header.Set("X-Custom", "a    b  c") }},
		},
		{
			name: "multi-valued signed header",
			opts: signOpts{before: func(r *http.Request) {
				r.Header.Add("X-Custom", "one")
				r.Header.Add("X-Custom", "two   three")
			}},
		},
		{
			name: "non-canonical header key on server side",
			after: func(r *http.Request, _ *[]byte) {
				v := r.Header.Get("X-Amz-Target")
				r.Header.Del("X-Amz-Target")
				r.Header["x-amz-target"] = []string{v}
			},
		},
		{
			name: "content-length only in r.ContentLength",
			after: func(r *http.Request, _ *[]byte) {
				if r.ContentLength <= 0 {
					panic("expected a content length")
				}
				r.Header.Del("Content-Length")
			},
		},
		{name: "query string present", opts: signOpts{url: testURL + "?b=2&a=hello%20world&a=x&c=%2F%3D%2B&empty="}},
		{name: "query with plus as space", opts: signOpts{url: testURL + "?q=a+b&q=a%20c"}},
		{
			name:  "tampered query string",
			opts:  signOpts{url: testURL + "?b=2&a=1"},
			after: func(r *http.Request, _ *[]byte) { r.URL.RawQuery = "b=2&a=3" },
			want:  sigv4.ErrInvalidSignature,
		},
		{name: "escaped path", opts: signOpts{url: "http://kms.example.test:8080/a%20b/c~d/%C3%BC"}},
		{name: "empty body", opts: signOpts{body: " "}},
		{
			// A long-term access key comes with no session token: a token
			// that no credential issued is refused, signed or not.
			name: "security token with a long-term access key",
			opts: signOpts{token: "FQoGZXIvYXdzEXAMPLESESSIONTOKEN"},
			want: sigv4.ErrUnrecognizedClient,
			msg:  "The security token included in the request is invalid.",
		},
		{
			name:  "unsigned security token with a long-term access key",
			after: func(r *http.Request, _ *[]byte) { r.Header.Set("X-Amz-Security-Token", "anything") },
			want:  sigv4.ErrUnrecognizedClient,
		},
		{
			name: "x-amz-content-sha256 signed and correct",
			opts: signOpts{before: func(r *http.Request) {
				sum := sha256.Sum256([]byte(testBody))
				r.Header.Set("X-Amz-Content-Sha256", hex.EncodeToString(sum[:]))
			}},
		},
		{
			name: "x-amz-content-sha256 signed and wrong",
			opts: signOpts{before: func(r *http.Request) {
				sum := sha256.Sum256([]byte("something else"))
				r.Header.Set("X-Amz-Content-Sha256", hex.EncodeToString(sum[:]))
			}},
			want: sigv4.ErrInvalidSignature,
			msg:  "x-amz-content-sha256",
		},
		{
			name: "x-amz-content-sha256 unsigned is ignored",
			after: func(r *http.Request, _ *[]byte) {
				r.Header.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
			},
		},
		{
			name:  "host changed",
			after: func(r *http.Request, _ *[]byte) { r.Host = "evil.example.test:8080" },
			want:  sigv4.ErrInvalidSignature,
		},
		{
			name:  "method changed",
			after: func(r *http.Request, _ *[]byte) { r.Method = http.MethodPut },
			want:  sigv4.ErrInvalidSignature,
		},
		{
			name:  "path changed",
			after: func(r *http.Request, _ *[]byte) { r.URL.Path = "/other" },
			want:  sigv4.ErrInvalidSignature,
		},
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	store := newStore()
	v := newVerifier(store)
	for _, tc := range verifyCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, body := signedRequest(t, tc.opts)
			if tc.after != nil {
				tc.after(r, &body)
			}
			cred, err := v.Verify(r, body)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Verify: unexpected error %v", err)
				}
				if cred.AccessKeyID != testAKID || string(cred.Secret) != testSecret || cred.Principal != "principal-"+testAKID {
					t.Fatalf("Verify returned credential %+v", cred)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify error = %v, want errors.Is %v", err, tc.want)
			}
			if tc.also != nil && !errors.Is(err, tc.also) {
				t.Fatalf("Verify error = %v, want also errors.Is %v", err, tc.also)
			}
			if tc.msg != "" && !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error message %q does not contain %q", err.Error(), tc.msg)
			}
			if cred.AccessKeyID != "" || cred.Secret != nil {
				t.Fatalf("Verify returned credential %+v with error", cred)
			}
			assertExactlyOneSentinel(t, err)
		})
	}
}

var allSentinels = []error{
	sigv4.ErrMissingAuthentication,
	sigv4.ErrIncompleteSignature,
	sigv4.ErrUnrecognizedClient,
	sigv4.ErrInvalidSignature,
	sigv4.ErrSignatureExpired,
}

func assertExactlyOneSentinel(t *testing.T, err error) {
	t.Helper()
	n := 0
	for _, s := range allSentinels {
		if errors.Is(err, s) {
			n++
		}
	}
	want := 1
	if errors.Is(err, sigv4.ErrSignatureExpired) {
		want = 2 // expired is also an invalid signature
	}
	if n != want {
		t.Fatalf("error %v matches %d sentinels, want %d", err, n, want)
	}
	if strings.HasPrefix(err.Error(), "sigv4:") {
		t.Fatalf("error message %q is not client-facing", err.Error())
	}
}

func TestErrSignatureExpiredIsInvalidSignature(t *testing.T) {
	t.Parallel()
	if !errors.Is(sigv4.ErrSignatureExpired, sigv4.ErrInvalidSignature) {
		t.Fatal("ErrSignatureExpired is not an ErrInvalidSignature")
	}
	if errors.Is(sigv4.ErrInvalidSignature, sigv4.ErrSignatureExpired) {
		t.Fatal("ErrInvalidSignature must not be an ErrSignatureExpired")
	}
}

// TestErrorMessagesDoNotLeak checks that no error message reveals the secret
// or the signature the server expected.
func TestErrorMessagesDoNotLeak(t *testing.T) {
	t.Parallel()
	v := newVerifier(newStore())
	hexSecret := hex.EncodeToString([]byte(testSecret))

	// Every failing table case.
	for _, tc := range verifyCases() {
		if tc.want == nil {
			continue
		}
		r, body := signedRequest(t, tc.opts)
		if tc.after != nil {
			tc.after(r, &body)
		}
		_, err := v.Verify(r, body)
		if err == nil {
			t.Fatalf("%s: expected an error", tc.name)
		}
		if msg := err.Error(); strings.Contains(msg, testSecret) || strings.Contains(msg, hexSecret) {
			t.Fatalf("%s: message leaks the secret: %q", tc.name, msg)
		}
	}

	// Wrong secret: the expected signature is the one made with the right secret.
	good, _ := signedRequest(t, signOpts{})
	bad, body := signedRequest(t, signOpts{secret: "wrong-secret-wrong-secret"})
	_, err := v.Verify(bad, body)
	if !errors.Is(err, sigv4.ErrInvalidSignature) {
		t.Fatalf("wrong secret: got %v", err)
	}
	if expected := signatureOf(good); strings.Contains(err.Error(), expected) {
		t.Fatalf("message leaks the expected signature: %q", err.Error())
	}

	// Tampered body: the expected signature is the one over the tampered body.
	const tampered = `{"Limit":99}`
	expectedReq, _ := signedRequest(t, signOpts{body: tampered})
	r, _ := signedRequest(t, signOpts{})
	_, err = v.Verify(r, []byte(tampered))
	if !errors.Is(err, sigv4.ErrInvalidSignature) {
		t.Fatalf("tampered body: got %v", err)
	}
	if expected := signatureOf(expectedReq); strings.Contains(err.Error(), expected) {
		t.Fatalf("message leaks the expected signature: %q", err.Error())
	}
}

func TestSecretRotationInvalidatesCachedKey(t *testing.T) {
	t.Parallel()
	store := newStore()
	v := newVerifier(store)

	r, body := signedRequest(t, signOpts{})
	if _, err := v.Verify(r, body); err != nil {
		t.Fatalf("before rotation: %v", err)
	}
	const newSecret = "rotated-secret-0123456789"
	store.set(testAKID, newSecret)

	r, body = signedRequest(t, signOpts{})
	if _, err := v.Verify(r, body); !errors.Is(err, sigv4.ErrInvalidSignature) {
		t.Fatalf("old secret after rotation: got %v, want ErrInvalidSignature", err)
	}
	r, body = signedRequest(t, signOpts{secret: newSecret})
	if _, err := v.Verify(r, body); err != nil {
		t.Fatalf("new secret after rotation: %v", err)
	}
}

func TestLongSecret(t *testing.T) {
	t.Parallel()
	store := newStore()
	long := strings.Repeat("S", 200) // longer than the HMAC block size
	store.set("AKIDLONG", long)
	v := newVerifier(store)
	r, body := signedRequest(t, signOpts{akid: "AKIDLONG", secret: long})
	if _, err := v.Verify(r, body); err != nil {
		t.Fatal(err)
	}
}

func TestDefaultsAndNilStore(t *testing.T) {
	t.Parallel()
	// Now defaults to time.Now, MaxSkew to 5 minutes.
	v := &sigv4.Verifier{Region: testRegion, Service: testService, Store: newStore()}
	r, body := signedRequest(t, signOpts{signTime: time.Now()})
	if _, err := v.Verify(r, body); err != nil {
		t.Fatalf("fresh request with default clock: %v", err)
	}
	r, body = signedRequest(t, signOpts{signTime: time.Now().Add(-10 * time.Minute)})
	if _, err := v.Verify(r, body); !errors.Is(err, sigv4.ErrSignatureExpired) {
		t.Fatalf("old request with default clock: got %v", err)
	}

	// A custom skew is honoured and reported.
	v = newVerifier(newStore())
	v.MaxSkew = 90 * time.Second
	r, body = signedRequest(t, signOpts{signTime: testNow.Add(-2 * time.Minute)})
	_, err := v.Verify(r, body)
	if !errors.Is(err, sigv4.ErrSignatureExpired) || !strings.Contains(err.Error(), "1m30s") {
		t.Fatalf("custom skew: got %v", err)
	}

	v = newVerifier(nil)
	r, body = signedRequest(t, signOpts{})
	if _, err := v.Verify(r, body); !errors.Is(err, sigv4.ErrUnrecognizedClient) {
		t.Fatalf("nil store: got %v", err)
	}
}

func TestVerifyConcurrent(t *testing.T) {
	t.Parallel()
	store := newStore()
	keys := []string{"AKIDA", "AKIDB", "AKIDC", "AKIDD"}
	for _, k := range keys {
		store.set(k, "secret-of-"+k)
	}
	v := newVerifier(store)
	type signed struct {
		r    *http.Request
		body []byte
	}
	var reqs []signed
	for _, k := range keys {
		for _, d := range []time.Duration{0, -2 * time.Minute, 3 * time.Minute} {
			r, b := signedRequest(t, signOpts{akid: k, secret: "secret-of-" + k, signTime: testNow.Add(d)})
			reqs = append(reqs, signed{r, b})
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				s := reqs[(g+i)%len(reqs)]
				if _, err := v.Verify(s.r, s.body); err != nil {
					errs <- err
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestRealKMSClient sends requests from an unmodified kms.Client to a server
// that verifies them, over HTTP/1.1 and over HTTP/2 with TLS.
func TestRealKMSClient(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		http2 bool
	}{{"http1", false}, {"http2", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			store := newStore()
			v := &sigv4.Verifier{Region: testRegion, Service: testService, Store: store}

			var mu sync.Mutex
			var results []error
			var protos []int
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, err := io.ReadAll(r.Body)
				if err == nil {
					_, err = v.Verify(r, body)
				}
				mu.Lock()
				results = append(results, err)
				protos = append(protos, r.ProtoMajor)
				mu.Unlock()
				w.Header().Set("Content-Type", "application/x-amz-json-1.1")
				if err != nil {
					w.WriteHeader(http.StatusBadRequest)
					_, _ = io.WriteString(w, `{"__type":"InvalidSignatureException","message":"bad"}`)
					return
				}
				_, _ = io.WriteString(w, `{}`)
			}))
			srv.EnableHTTP2 = tc.http2
			if tc.http2 {
				srv.StartTLS()
			} else {
				srv.Start()
			}
			defer srv.Close()

			newClient := func(secret string) *kms.Client {
				return kms.New(kms.Options{
					Region:           testRegion,
					Credentials:      credentials.NewStaticCredentialsProvider(testAKID, secret, ""),
					BaseEndpoint:     aws.String(srv.URL),
					HTTPClient:       srv.Client(),
					RetryMaxAttempts: 1,
				})
			}
			ctx := context.Background()

			if _, err := newClient(testSecret).ListKeys(ctx, &kms.ListKeysInput{Limit: aws.Int32(5)}); err != nil {
				t.Fatalf("ListKeys: %v", err)
			}
			if _, err := newClient(testSecret).DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("alias/my key ü")}); err != nil {
				t.Fatalf("DescribeKey: %v", err)
			}
			if _, err := newClient("wrong-secret").ListKeys(ctx, &kms.ListKeysInput{}); err == nil {
				t.Fatal("ListKeys with the wrong secret succeeded")
			}

			mu.Lock()
			defer mu.Unlock()
			if len(results) != 3 {
				t.Fatalf("server saw %d requests, want 3", len(results))
			}
			for i := 0; i < 2; i++ {
				if results[i] != nil {
					t.Fatalf("request %d from the real SDK did not verify: %v", i, results[i])
				}
			}
			if !errors.Is(results[2], sigv4.ErrInvalidSignature) {
				t.Fatalf("wrong-secret request: got %v, want ErrInvalidSignature", results[2])
			}
			wantProto := 1
			if tc.http2 {
				wantProto = 2
			}
			if protos[0] != wantProto {
				t.Fatalf("request used HTTP/%d, want HTTP/%d", protos[0], wantProto)
			}
		})
	}
}

func BenchmarkVerify(b *testing.B) {
	v := newVerifier(newStore())
	r, body := signedRequest(b, signOpts{})
	if _, err := v.Verify(r, body); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := v.Verify(r, body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyParallel(b *testing.B) {
	v := newVerifier(newStore())
	r, body := signedRequest(b, signOpts{})
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := v.Verify(r, body); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// Temporary credentials verify only with their own session token, signed.
func TestSessionToken(t *testing.T) {
	t.Parallel()
	const akid, secret, token = "ASIATEMPORARY", "temporary-secret", "IQoJb3JpZ2luX2VjEXAMPLE"
	store := newStore()
	store.mu.Lock()
	store.creds[akid] = sigv4.Credential{AccessKeyID: akid, Secret: []byte(secret), SessionToken: token, Principal: "temp"}
	store.mu.Unlock()
	v := newVerifier(store)
	for _, tc := range []struct {
		name  string
		token string
		after func(*http.Request)
		ok    bool
	}{
		{name: "its own token, signed", token: token, ok: true},
		{name: "no token", token: ""},
		{name: "another token", token: token + "x"},
		{name: "a prefix of the token", token: token[:10]},
		{name: "its token, unsigned", after: func(r *http.Request) { r.Header.Set("X-Amz-Security-Token", token) }},
		{name: "its token twice", token: token, after: func(r *http.Request) { r.Header.Add("X-Amz-Security-Token", token) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, body := signedRequest(t, signOpts{akid: akid, secret: secret, token: tc.token})
			if tc.after != nil {
				tc.after(r)
			}
			cred, err := v.Verify(r, body)
			if tc.ok {
				if err != nil || cred.Principal != "temp" {
					t.Fatalf("Verify = %+v, %v; want the temporary credential", cred, err)
				}
				return
			}
			if !errors.Is(err, sigv4.ErrUnrecognizedClient) {
				t.Fatalf("Verify error = %v, want ErrUnrecognizedClient", err)
			}
		})
	}
}

// A header that chooses what the request does must be signed: otherwise a
// request captured within the skew window can be replayed as another
// operation under the signer's name.
func TestRequiredSignedHeaders(t *testing.T) {
	t.Parallel()
	v := newVerifier(newStore())
	v.SignedHeaders = []string{"x-amz-target"}
	// Signed without X-Amz-Target, which is added afterwards, as an
	// attacker replaying a DescribeKey as ScheduleKeyDeletion would.
	r, body := signedRequest(t, signOpts{before: func(r *http.Request) { r.Header.Del("X-Amz-Target") }})
	r.Header.Set("X-Amz-Target", "TrentService.ScheduleKeyDeletion")
	if _, err := newVerifier(newStore()).Verify(r, body); err != nil {
		t.Fatalf("without the requirement the replayed request verifies (the defect this guards against): %v", err)
	}
	_, err := v.Verify(r, body)
	if !errors.Is(err, sigv4.ErrIncompleteSignature) || !strings.Contains(err.Error(), "'x-amz-target' must be a 'SignedHeader'") {
		t.Fatalf("Verify error = %v, want ErrIncompleteSignature naming x-amz-target", err)
	}
	// The AWS SDK signs it: such a request verifies.
	r, body = signedRequest(t, signOpts{})
	if _, err := v.Verify(r, body); err != nil {
		t.Fatalf("a request signed by the SDK: %v", err)
	}
}
