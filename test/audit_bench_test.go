package test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/hsmkms/hsmkms/audit"
	"github.com/hsmkms/hsmkms/service"
	"github.com/hsmkms/hsmkms/service/api"
	"github.com/hsmkms/hsmkms/service/store"
)

// BenchmarkAuditOverhead measures the server's work for one HTTP Encrypt
// (1 KiB, SigV4, JSON, token) with the audit log on and off, interleaved in
// one run, through the handler itself (no client, no network): the issue
// asks for on within 15 % of off. TagResource shows what a change costs,
// whose intent is recorded (and fsynced) before it commits.
func BenchmarkAuditOverhead(b *testing.B) {
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
	signer, pub, err := svc.AuditKey(ctxT(b))
	if err != nil {
		b.Fatal(err)
	}
	w, err := audit.Open(audit.Config{File: filepath.Join(b.TempDir(), "audit.log"), Signer: signer, PublicKey: pub})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	on, err := api.New(api.Config{Service: svc, Credentials: creds, Region: region, Audit: w})
	if err != nil {
		b.Fatal(err)
	}
	key, err := svc.CreateKey(ctxT(b), service.Caller{Account: mainAccount, ARN: mainARN}, service.CreateKeyInput{})
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct{ name, target, body string }{
		{"Encrypt", "TrentService.Encrypt", fmt.Sprintf(`{"KeyId":%q,"Plaintext":%q,"EncryptionContext":{"app":"bench"}}`,
			key.KeyMetadata.KeyId, base64.StdEncoding.EncodeToString(make([]byte, 1024)))},
		// A change: with the log on, its intent is written and fsynced
		// before the store commits, then its outcome.
		{"TagResource", "TrentService.TagResource", fmt.Sprintf(`{"KeyId":%q,"Tags":[{"TagKey":"k","TagValue":"v"}]}`,
			key.KeyMetadata.KeyId)},
	} {
		b.Run(bc.name, func(b *testing.B) { auditOverhead(b, off, on, bc.target, []byte(bc.body)) })
	}
}

// auditOverhead replays one signed request to both handlers in turn and
// reports their times per request and the ratio.
func auditOverhead(b *testing.B, off, on http.Handler, target string, body []byte) {
	// One signed request, replayed (SigV4 has no nonce; the date stays within
	// the 5-minute window for the run).
	proto := (&server{URL: "http://kms.local"}).kmsRequest(b, target, body)
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
