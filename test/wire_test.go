package test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
)

func TestWireProtocol(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	md := createKey(t, s.client())
	id := aws.ToString(md.KeyId)
	blob := encrypt(t, s.client(), id, []byte("wire"), nil)

	t.Run("success responses", func(t *testing.T) {
		t.Parallel()
		r := s.callJSON(t, "TrentService.Encrypt", map[string]any{"KeyId": id, "Plaintext": []byte("hello")})
		if r.Status != 200 {
			t.Fatalf("Encrypt: %d %s", r.Status, r.Body)
		}
		wantKMSHeaders(t, "Encrypt", r.Header)
		var enc struct {
			CiphertextBlob      []byte
			KeyId               string
			EncryptionAlgorithm string
		}
		if err := json.Unmarshal(r.Body, &enc); err != nil {
			t.Fatalf("Encrypt response: %v: %s", err, r.Body)
		}
		if enc.KeyId != aws.ToString(md.Arn) || enc.EncryptionAlgorithm != "SYMMETRIC_DEFAULT" || len(enc.CiphertextBlob) == 0 {
			t.Errorf("Encrypt response %s", r.Body)
		}
		r = s.callJSON(t, "TrentService.Decrypt", map[string]any{"CiphertextBlob": enc.CiphertextBlob})
		if r.Status != 200 {
			t.Fatalf("Decrypt: %d %s", r.Status, r.Body)
		}
		wantKMSHeaders(t, "Decrypt", r.Header)
		var dec struct{ Plaintext []byte }
		if err := json.Unmarshal(r.Body, &dec); err != nil || string(dec.Plaintext) != "hello" {
			t.Errorf("Decrypt response %s (%v)", r.Body, err)
		}
		// Empty bodies are an empty request object.
		for _, body := range []string{"", "{}"} {
			r = s.call(t, "TrentService.ListKeys", []byte(body))
			if r.Status != 200 {
				t.Fatalf("ListKeys with body %q: %d %s", body, r.Status, r.Body)
			}
			wantKMSHeaders(t, "ListKeys", r.Header)
		}
		// Operations without output answer with an empty JSON object.
		r = s.callJSON(t, "TrentService.EnableKey", map[string]any{"KeyId": id})
		if r.Status != 200 {
			t.Fatalf("EnableKey: %d %s", r.Status, r.Body)
		}
		wantKMSHeaders(t, "EnableKey", r.Header)
		var m map[string]any
		if err := json.Unmarshal(r.Body, &m); err != nil {
			t.Errorf("EnableKey body %q is not a JSON object: %v", r.Body, err)
		}
		// Request ids differ per response.
		r2 := s.callJSON(t, "TrentService.EnableKey", map[string]any{"KeyId": id})
		if r.Header.Get("x-amzn-RequestId") == r2.Header.Get("x-amzn-RequestId") {
			t.Error("two responses carry the same request id")
		}
	})

	errorCases := []struct {
		name   string
		target string
		body   string
		status int
		code   string
	}{
		{"unknown operation", "TrentService.FrobnicateKey", `{}`, 400, "UnknownOperationException"},
		{"no X-Amz-Target", "", `{}`, 400, "UnknownOperationException"},
		{"another service's target", "DynamoDB_20120810.ListTables", `{}`, 400, "UnknownOperationException"},
		{"malformed JSON", "TrentService.Encrypt", `{"KeyId": "` + id + `", "Plaintext": `, 400, "SerializationException"},
		{"not an object", "TrentService.ListKeys", `[1,2,3]`, 400, "SerializationException"},
		{"number for a blob", "TrentService.Encrypt", `{"KeyId": "` + id + `", "Plaintext": 5}`, 400, "SerializationException"},
		{"string for a number", "TrentService.GenerateRandom", `{"NumberOfBytes": "32"}`, 400, "SerializationException"},
		{"object for a string", "TrentService.DescribeKey", `{"KeyId": {"a": 1}}`, 400, "SerializationException"},
		{"invalid base64 blob", "TrentService.Decrypt", `{"CiphertextBlob": "!!!not base64!!!"}`, 400, "SerializationException"},
		{"validation error", "TrentService.GenerateRandom", `{"NumberOfBytes": 0}`, 400, "ValidationException"},
		{"key not found", "TrentService.DescribeKey", `{"KeyId": "fake-key-id"}`, 400, "NotFoundException"},
		{"invalid ciphertext", "TrentService.Decrypt", `{"CiphertextBlob": "` + base64.StdEncoding.EncodeToString(blob[:len(blob)-1]) + `"}`, 400, "InvalidCiphertextException"},
	}
	for _, tc := range errorCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := s.call(t, tc.target, []byte(tc.body))
			r.wantError(t, tc.status, tc.code)
			wantKMSHeaders(t, tc.name, r.Header)
		})
	}

	t.Run("body over 256 KiB", func(t *testing.T) {
		t.Parallel()
		body := []byte(`{"Plaintext":"` + strings.Repeat("A", 300<<10) + `"}`)
		r := s.call(t, "TrentService.Encrypt", body)
		if r.Status != http.StatusRequestEntityTooLarge && r.Status != http.StatusBadRequest {
			t.Fatalf("oversized body: status %d, want 413 or 400: %.200s", r.Status, r.Body)
		}
		r.errorBody(t)
		wantKMSHeaders(t, "oversized body", r.Header)
		// The server is still up.
		if got := s.do(t, mustGet(t, s.URL+"/healthz")); got.Status != 200 {
			t.Errorf("healthz after an oversized body: %d", got.Status)
		}
		if _, err := s.client().GenerateRandom(ctxT(t), &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)}); err != nil {
			t.Errorf("a request after the oversized one failed: %v", err)
		}
	})

	// Errors the router answers itself (wrong path, wrong method) are
	// responses of the KMS endpoint too: AWS JSON error body, content type
	// and a request id.
	t.Run("router errors", func(t *testing.T) {
		t.Parallel()
		for _, x := range []struct{ method, path string }{
			{http.MethodPost, "/no/such/path"},
			{http.MethodGet, "/"},
			{http.MethodPut, "/"},
		} {
			body := []byte(`{"NumberOfBytes":4}`)
			req, err := http.NewRequest(x.method, s.URL+x.path, bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", jsonContentType)
			req.Header.Set("X-Amz-Target", "TrentService.GenerateRandom")
			sign(t, req, body, mainAKID, mainSecret, time.Now())
			r := s.do(t, req)
			if r.Status < 400 || r.Status > 499 {
				t.Errorf("%s %s: status %d, want a 4xx", x.method, x.path, r.Status)
			}
			if bytes.Contains(r.Body, []byte("Plaintext")) {
				t.Errorf("%s %s ran the operation: %s", x.method, x.path, r.Body)
			}
			r.errorBody(t)
			wantKMSHeaders(t, x.method+" "+x.path, r.Header)
		}
	})

	t.Run("health endpoints", func(t *testing.T) {
		t.Parallel()
		for _, path := range []string{"/healthz", "/readyz"} {
			r := s.do(t, mustGet(t, s.URL+path))
			if r.Status != 200 {
				t.Errorf("GET %s: %d %s", path, r.Status, r.Body)
			}
		}
	})
}

func mustGet(t testing.TB, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	body := []byte(`{"NumberOfBytes": 16}`)
	const target = "TrentService.GenerateRandom"

	check := func(t *testing.T, r *rawResponse, code string) string {
		t.Helper()
		msg := r.wantError(t, 400, code)
		wantKMSHeaders(t, code, r.Header)
		if bytes.Contains(r.Body, []byte("Plaintext")) {
			t.Errorf("an unauthenticated request got data: %s", r.Body)
		}
		return msg
	}

	t.Run("correctly signed", func(t *testing.T) {
		t.Parallel()
		r := s.call(t, target, body)
		if r.Status != 200 {
			t.Fatalf("signed request: %d %s", r.Status, r.Body)
		}
		req := s.kmsRequest(t, target, body)
		sign(t, req, body, otherAKID, otherSecret, time.Now())
		if r := s.do(t, req); r.Status != 200 {
			t.Fatalf("request signed by the other principal: %d %s", r.Status, r.Body)
		}
	})

	t.Run("no Authorization header", func(t *testing.T) {
		t.Parallel()
		req := s.kmsRequest(t, target, body)
		req.Header.Set("X-Amz-Date", time.Now().UTC().Format("20060102T150405Z"))
		check(t, s.do(t, req), "MissingAuthenticationTokenException")
	})

	t.Run("unknown access key", func(t *testing.T) {
		t.Parallel()
		req := s.kmsRequest(t, target, body)
		sign(t, req, body, "AKIDUNKNOWN", "whatever", time.Now())
		check(t, s.do(t, req), "UnrecognizedClientException")
	})

	t.Run("wrong secret", func(t *testing.T) {
		t.Parallel()
		req := s.kmsRequest(t, target, body)
		sign(t, req, body, mainAKID, "not-the-secret", time.Now())
		check(t, s.do(t, req), "InvalidSignatureException")
		// The SDK sees the same.
		_, err := newClient(s.URL, mainAKID, "not-the-secret", nil).GenerateRandom(ctxT(t),
			&kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)})
		wantAPIError(t, err, "InvalidSignatureException", 400)
		_, err = newClient(s.URL, "AKIDUNKNOWN", "x", nil).GenerateRandom(ctxT(t),
			&kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)})
		wantAPIError(t, err, "UnrecognizedClientException", 400)
	})

	t.Run("body changed after signing", func(t *testing.T) {
		t.Parallel()
		req := s.kmsRequest(t, target, body)
		sign(t, req, body, mainAKID, mainSecret, time.Now())
		tampered := []byte(`{"NumberOfBytes": 17}`) // same length
		req2 := s.kmsRequest(t, target, tampered)
		req2.Header = req.Header.Clone()
		check(t, s.do(t, req2), "InvalidSignatureException")
	})

	t.Run("header changed after signing", func(t *testing.T) {
		t.Parallel()
		req := s.kmsRequest(t, target, body)
		sign(t, req, body, mainAKID, mainSecret, time.Now())
		req.Header.Set("X-Amz-Target", "TrentService.ListKeys")
		check(t, s.do(t, req), "InvalidSignatureException")
	})

	t.Run("signature expired", func(t *testing.T) {
		t.Parallel()
		req := s.kmsRequest(t, target, body)
		sign(t, req, body, mainAKID, mainSecret, time.Now().Add(-10*time.Minute))
		msg := check(t, s.do(t, req), "InvalidSignatureException")
		if !strings.Contains(msg, "Signature expired") {
			t.Errorf("message %q does not say the signature expired", msg)
		}
	})

	t.Run("signed in the future", func(t *testing.T) {
		t.Parallel()
		req := s.kmsRequest(t, target, body)
		sign(t, req, body, mainAKID, mainSecret, time.Now().Add(10*time.Minute))
		check(t, s.do(t, req), "InvalidSignatureException")
	})

	t.Run("scoped to another region or service", func(t *testing.T) {
		t.Parallel()
		for _, scope := range [][2]string{{"eu-west-1", "kms"}, {region, "s3"}} {
			req := s.kmsRequest(t, target, body)
			signScoped(t, req, body, mainAKID, mainSecret, time.Now(), scope[0], scope[1])
			check(t, s.do(t, req), "InvalidSignatureException")
		}
	})

	t.Run("malformed Authorization header", func(t *testing.T) {
		t.Parallel()
		for _, auth := range []string{
			"AWS4-HMAC-SHA256 garbage",
			"AWS4-HMAC-SHA256 Credential=test/20200101/us-east-1/kms/aws4_request",
			"AWS4-HMAC-SHA256 Credential=test/20200101/us-east-1/kms/aws4_request, SignedHeaders=host;x-amz-date",
			"AWS4-HMAC-SHA256 Credential=test, SignedHeaders=host, Signature=abcd",
			"HMAC-MD5 Credential=test/20200101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=abcd",
		} {
			req := s.kmsRequest(t, target, body)
			req.Header.Set("X-Amz-Date", time.Now().UTC().Format("20060102T150405Z"))
			req.Header.Set("Authorization", auth)
			r := s.do(t, req)
			typ, msg := r.errorBody(t)
			if r.Status != 400 || typ != "IncompleteSignatureException" {
				t.Errorf("Authorization %q: %d %s (%q), want 400 IncompleteSignatureException", auth, r.Status, typ, msg)
			}
			wantKMSHeaders(t, auth, r.Header)
		}
	})
}
