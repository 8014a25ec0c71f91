package test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/smithy-go"
	"github.com/google/uuid"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/service"
	"github.com/hsmkms/hsmkms/service/api"
	kmstransport "github.com/hsmkms/hsmkms/service/api/transport"
	"github.com/hsmkms/hsmkms/service/store"
)

// tlsOptions shape an in-process HTTPS server.
type tlsOptions struct {
	src kmstransport.TLSSource
	// bound are extra principals by access key id (secret: the id
	// reversed), each with the client certificates it is bound to.
	bound map[string]boundPrincipal
	// proxies are trusted proxy networks; maxConns bounds connections.
	proxies    []string
	maxConns   int
	rateLimits api.RateLimits
}

type boundPrincipal struct {
	caller service.Caller
	certs  []string
}

// tlsServer is the API served as the binary serves it: http.Server over
// transport's listener and TLS configuration; plainURL serves the same
// handler over plain HTTP.
type tlsServer struct {
	URL, plainURL string
	TLS           *kmstransport.TLS
	ln            *kmstransport.Listener
}

func startTLSServer(t testing.TB, o tlsOptions) *tlsServer {
	t.Helper()
	tok := sharedToken(t)
	st, err := store.Open(filepath.Join(t.TempDir(), "hsmkms.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	svc, err := service.New(service.Config{Token: tok, Store: st, Region: region})
	if err != nil {
		t.Fatal(err)
	}
	creds := api.StaticCredentials{}
	if err := creds.Add(mainAKID, []byte(mainSecret), service.Caller{Account: mainAccount, ARN: mainARN}); err != nil {
		t.Fatal(err)
	}
	for akid, p := range o.bound {
		if err := creds.AddBound(akid, []byte(reverse(akid)), p.caller, p.certs); err != nil {
			t.Fatal(err)
		}
	}
	proxies, err := kmstransport.ParseProxies(o.proxies)
	if err != nil {
		t.Fatal(err)
	}
	h, err := api.New(api.Config{Service: svc, Credentials: creds, Region: region, Proxies: proxies, RateLimits: o.rateLimits})
	if err != nil {
		t.Fatal(err)
	}
	tc, _, err := kmstransport.NewTLS(ctxT(t), o.src)
	if err != nil {
		t.Fatalf("NewTLS: %v", err)
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := kmstransport.NewListener(raw, kmstransport.ListenerConfig{MaxConns: o.maxConns, Proxies: proxies})
	srv := &http.Server{Handler: h, TLSConfig: tc.Config(), ConnState: ln.ConnState,
		ReadHeaderTimeout: 10 * time.Second, ErrorLog: discardLog}
	go srv.ServeTLS(ln, "", "")
	plain := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		plain.Close()
	})
	return &tlsServer{URL: "https://" + raw.Addr().String(), plainURL: plain.URL, TLS: tc, ln: ln}
}

// httpsClient is an HTTP client trusting ca, presenting cert if given,
// negotiating HTTP/2.
func httpsClient(ca *testCA, cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: ca.pool(), MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		Proxy: nil, TLSClientConfig: cfg, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 16,
	}}
}

// roundTrip creates a key and runs Encrypt and Decrypt through c.
func roundTrip(t testing.TB, c *kms.Client) error {
	t.Helper()
	ctx := ctxT(t)
	k, err := c.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		return err
	}
	pt := []byte("over TLS only")
	enc, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: k.KeyMetadata.KeyId, Plaintext: pt})
	if err != nil {
		return err
	}
	dec, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
	if err != nil {
		return err
	}
	if !bytes.Equal(dec.Plaintext, pt) {
		t.Fatalf("Decrypt gave %q, want %q", dec.Plaintext, pt)
	}
	return nil
}

// TestTLSWithKeyInToken serves HTTPS with the server's private key in the
// token: the SDK works over it, with HTTP/2 and with HTTP/1.1; the key is a
// sensitive, never-extractable token object; old protocol versions and
// non-AEAD suites are refused.
func TestTLSWithKeyInToken(t *testing.T) {
	tok := sharedToken(t)
	ctx := ctxT(t)
	for _, typ := range []hsm.NamedKeyType{hsm.NamedECP256, hsm.NamedRSA2048} {
		t.Run(fmt.Sprint(typ), func(t *testing.T) {
			name := hsm.KeyName{Label: "tls-" + uuid.NewString()}
			if err := tok.GenerateNamedKeyPair(ctx, name, typ); err != nil {
				t.Fatal(err)
			}
			signer, err := tok.NamedSigner(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			if info := signer.Info(); !info.Token || !info.Sensitive || info.Extractable || !info.AlwaysSensitive || !info.NeverExtractable || info.Decrypt {
				t.Fatalf("TLS key attributes %+v: want a sensitive, never extractable token object", info)
			}
			ca := newCA(t, "token-key-ca")
			dir := t.TempDir()
			certFile := filepath.Join(dir, "server.crt")
			writePEM(t, certFile, "CERTIFICATE", ca.issue(t, signer.Public(), certSpec{subject: pkix.Name{CommonName: "kms"}, server: true}))
			signs := 0
			var mu sync.Mutex
			s := startTLSServer(t, tlsOptions{src: kmstransport.TLSSource{CertFile: certFile,
				Signer: func(ctx context.Context) (crypto.Signer, error) {
					s, err := tok.NamedSigner(ctx, name)
					return countingSigner{s, &mu, &signs}, err
				}}})
			hc := httpsClient(ca, nil)
			if err := roundTrip(t, newClient(s.URL, mainAKID, mainSecret, hc)); err != nil {
				t.Fatalf("SDK over HTTPS: %v", err)
			}
			resp, err := hc.Get(s.URL + "/healthz")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.ProtoMajor != 2 || resp.TLS == nil {
				t.Errorf("health check over %s: want HTTP/2 over TLS", resp.Proto)
			}
			h1 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool()}, TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}}
			if err := roundTrip(t, newClient(s.URL, mainAKID, mainSecret, h1)); err != nil {
				t.Fatalf("SDK over HTTPS/1.1: %v", err)
			}
			mu.Lock()
			n := signs
			mu.Unlock()
			if n < 2 {
				t.Errorf("%d signatures by the token key: the handshakes did not sign in the token", n)
			}
			addr := strings.TrimPrefix(s.URL, "https://")
			for _, bad := range []struct {
				name string
				cfg  *tls.Config
			}{
				{"TLS 1.1", &tls.Config{RootCAs: ca.pool(), MaxVersion: tls.VersionTLS11}},
				{"TLS 1.2 CBC suite", &tls.Config{RootCAs: ca.pool(), MaxVersion: tls.VersionTLS12,
					CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA}}},
				{"TLS 1.2 RSA key exchange", &tls.Config{RootCAs: ca.pool(), MaxVersion: tls.VersionTLS12,
					CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256}}},
			} {
				if c, err := tls.Dial("tcp", addr, bad.cfg); err == nil {
					c.Close()
					t.Errorf("%s: handshake succeeded", bad.name)
				}
			}
		})
	}
}

// countingSigner counts the signatures the token makes.
type countingSigner struct {
	crypto.Signer
	mu *sync.Mutex
	n  *int
}

func (c countingSigner) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	c.mu.Lock()
	*c.n++
	c.mu.Unlock()
	return c.Signer.Sign(r, d, o)
}

// TestMutualTLS: with a client CA configured, a certificate it signed is
// served; one from another CA, an expired one, and none are refused in the
// handshake, before any request is read (so the client sees a TLS alert or
// a broken connection, never an answer of the API).
func TestMutualTLS(t *testing.T) {
	ca, other := newCA(t, "clients"), newCA(t, "strangers")
	dir := t.TempDir()
	certFile, keyFile := ca.serverFiles(t, dir, "server")
	s := startTLSServer(t, tlsOptions{src: kmstransport.TLSSource{CertFile: certFile, KeyFile: keyFile, ClientCAFile: ca.file(t, dir)}})
	good := ca.clientCert(t, certSpec{subject: pkix.Name{CommonName: "app"}})
	if err := roundTrip(t, newClient(s.URL, mainAKID, mainSecret, httpsClient(ca, &good))); err != nil {
		t.Fatalf("a client certificate from the CA: %v", err)
	}
	for _, c := range []struct {
		name string
		cert *tls.Certificate
	}{
		{"another CA", ptrTo(other.clientCert(t, certSpec{subject: pkix.Name{CommonName: "app"}}))},
		{"expired", ptrTo(ca.clientCert(t, certSpec{subject: pkix.Name{CommonName: "app"}, notBefore: time.Now().Add(-48 * time.Hour), notAfter: time.Now().Add(-time.Hour)}))},
		{"none", nil},
	} {
		err := roundTrip(t, newClient(s.URL, mainAKID, mainSecret, httpsClient(ca, c.cert)))
		var apiErr smithy.APIError
		switch {
		case err == nil:
			t.Errorf("%s: the request was served", c.name)
		case errors.As(err, &apiErr):
			t.Errorf("%s: refused by the API (%v), want refused in the handshake", c.name, err)
		}
	}
}

func ptrTo[T any](v T) *T { return &v }

// TestClientCertificateBinding: an access key bound to a client certificate
// works only over a connection that presented it; a good signature over
// another certificate's connection is AccessDeniedException. Keys not
// bound work with any certificate the CA signed.
func TestClientCertificateBinding(t *testing.T) {
	ca := newCA(t, "bank")
	dir := t.TempDir()
	certFile, keyFile := ca.serverFiles(t, dir, "server")
	const dnKey, spiffeKey = "AKIDBOUNDDN", "AKIDBOUNDSPIFFE"
	app1 := service.Caller{Account: mainAccount, ARN: "arn:aws:iam::111122223333:user/app1", Identity: otherIdentity}
	app2 := service.Caller{Account: mainAccount, ARN: "arn:aws:iam::111122223333:user/app2", Identity: otherIdentity}
	s := startTLSServer(t, tlsOptions{src: kmstransport.TLSSource{CertFile: certFile, KeyFile: keyFile, ClientCAFile: ca.file(t, dir)},
		bound: map[string]boundPrincipal{
			dnKey:     {app1, []string{"CN=app1,O=Bank"}},
			spiffeKey: {app2, []string{"spiffe://bank.example/ns/prod/app2"}},
		}})
	app1Cert := ca.clientCert(t, certSpec{subject: pkix.Name{CommonName: "app1", Organization: []string{"Bank"}}})
	app2Cert := ca.clientCert(t, certSpec{subject: pkix.Name{CommonName: "app2"}, uris: []string{"spiffe://bank.example/ns/prod/app2"}})
	ctx := ctxT(t)
	call := func(akid string, cert tls.Certificate) error {
		secret := reverse(akid)
		if akid == mainAKID {
			secret = mainSecret
		}
		_, err := newClient(s.URL, akid, secret, httpsClient(ca, &cert)).ListKeys(ctx, &kms.ListKeysInput{})
		return err
	}
	if err := call(dnKey, app1Cert); err != nil {
		t.Errorf("bound by subject, with its certificate: %v", err)
	}
	if err := call(spiffeKey, app2Cert); err != nil {
		t.Errorf("bound by SPIFFE id, with its certificate: %v", err)
	}
	for _, c := range []struct {
		akid string
		cert tls.Certificate
	}{{dnKey, app2Cert}, {spiffeKey, app1Cert}} {
		err := call(c.akid, c.cert)
		var apiErr smithy.APIError
		if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "AccessDeniedException" {
			t.Errorf("%s over another certificate's connection: %v, want AccessDeniedException", c.akid, err)
		}
	}
	if err := call(mainAKID, app2Cert); err != nil {
		t.Errorf("an unbound key with any certificate: %v", err)
	}
}

// TestSecureTransportCondition: a key policy that denies requests not sent
// over TLS (a common compliance control) lets them through over HTTPS and
// refuses them over plain HTTP.
func TestSecureTransportCondition(t *testing.T) {
	ca := newCA(t, "st")
	certFile, keyFile := ca.serverFiles(t, t.TempDir(), "server")
	s := startTLSServer(t, tlsOptions{src: kmstransport.TLSSource{CertFile: certFile, KeyFile: keyFile}})
	ctx := ctxT(t)
	secure := newClient(s.URL, mainAKID, mainSecret, httpsClient(ca, nil))
	pol := `{"Version":"2012-10-17","Statement":[
	 {"Sid":"root","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"},
	 {"Sid":"tls only","Effect":"Deny","Principal":"*","Action":["kms:Encrypt","kms:Decrypt"],"Resource":"*",
	  "Condition":{"Bool":{"aws:SecureTransport":"false"}}}]}`
	k, err := secure.CreateKey(ctx, &kms.CreateKeyInput{Policy: aws.String(pol)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := secure.Encrypt(ctx, &kms.EncryptInput{KeyId: k.KeyMetadata.KeyId, Plaintext: []byte("x")}); err != nil {
		t.Errorf("over TLS: %v", err)
	}
	plain := newClient(s.plainURL, mainAKID, mainSecret, nil)
	_, err = plain.Encrypt(ctx, &kms.EncryptInput{KeyId: k.KeyMetadata.KeyId, Plaintext: []byte("x")})
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "AccessDeniedException" {
		t.Errorf("over plain HTTP: %v, want AccessDeniedException", err)
	}
}

// TestHandshakeFloodDoesNotStarveClients: many connections that start a
// TLS handshake and never finish it fill the connection bound; clients
// that do finish theirs are still served, because a stalled connection
// gives way to a new one.
func TestHandshakeFloodDoesNotStarveClients(t *testing.T) {
	ca := newCA(t, "flood")
	certFile, keyFile := ca.serverFiles(t, t.TempDir(), "server")
	const bound = 32
	s := startTLSServer(t, tlsOptions{src: kmstransport.TLSSource{CertFile: certFile, KeyFile: keyFile}, maxConns: bound})
	addr := strings.TrimPrefix(s.URL, "https://")
	// The first bytes of a ClientHello, and then nothing.
	const flood = 4 * bound
	var stalled []net.Conn
	for range flood {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00})
		stalled = append(stalled, c)
	}
	t.Cleanup(func() {
		for _, c := range stalled {
			c.Close()
		}
	})
	// Wait until the server took every one in (displacing the older ones).
	deadline := time.Now().Add(20 * time.Second)
	for s.ln.Stats().Displaced < flood-bound && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := s.ln.Stats(); st.Displaced < flood-bound || st.Open > bound {
		t.Fatalf("listener after the flood: %+v, want %d displaced and at most %d open", st, flood-bound, bound)
	}
	c := newClient(s.URL, mainAKID, mainSecret, httpsClient(ca, nil))
	for i := range 10 {
		if err := roundTrip(t, c); err != nil {
			t.Fatalf("request %d during the flood: %v", i, err)
		}
	}
}

// discardLog takes http.Server's error log (failed handshakes are the point
// of several tests here).
var discardLog = stdlog.New(io.Discard, "", 0)

// forwardingClient adds X-Forwarded-For to every request, as a proxy in
// front of hsmkms would (or as an attacker would try).
type forwardingClient struct {
	hc  *http.Client
	xff string
}

func (f forwardingClient) Do(r *http.Request) (*http.Response, error) {
	r.Header.Set("X-Forwarded-For", f.xff)
	return f.hc.Do(r)
}

// TestTrustedProxyForwardedFor: aws:SourceIp is the address a trusted proxy
// names in X-Forwarded-For; from a peer that is not a trusted proxy the
// header is ignored and the peer is the source.
func TestTrustedProxyForwardedFor(t *testing.T) {
	ca := newCA(t, "xff")
	certFile, keyFile := ca.serverFiles(t, t.TempDir(), "server")
	src := kmstransport.TLSSource{CertFile: certFile, KeyFile: keyFile}
	behindProxy := startTLSServer(t, tlsOptions{src: src, proxies: []string{"127.0.0.1/32"}})
	direct := startTLSServer(t, tlsOptions{src: src})
	pol := `{"Version":"2012-10-17","Statement":[
	 {"Sid":"root","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"},
	 {"Sid":"office only","Effect":"Deny","Principal":"*","Action":"kms:Encrypt","Resource":"*",
	  "Condition":{"NotIpAddress":{"aws:SourceIp":"203.0.113.0/24"}}}]}`
	ctx := ctxT(t)
	for _, c := range []struct {
		name   string
		server *tlsServer
		xff    string
		allow  bool
	}{
		{"trusted proxy names an office address", behindProxy, "198.51.100.1, 203.0.113.9", true},
		{"trusted proxy names another address", behindProxy, "203.0.113.9, 198.51.100.1", false},
		{"untrusted peer claims an office address", direct, "203.0.113.9", false},
	} {
		hc := forwardingClient{httpsClient(ca, nil), c.xff}
		kc := newClient(c.server.URL, mainAKID, mainSecret, hc)
		k, err := kc.CreateKey(ctx, &kms.CreateKeyInput{Policy: aws.String(pol)})
		if err != nil {
			t.Fatal(err)
		}
		_, err = kc.Encrypt(ctx, &kms.EncryptInput{KeyId: k.KeyMetadata.KeyId, Plaintext: []byte("x")})
		var apiErr smithy.APIError
		switch {
		case c.allow && err != nil:
			t.Errorf("%s: %v, want allowed", c.name, err)
		case !c.allow && (!errors.As(err, &apiErr) || apiErr.ErrorCode() != "AccessDeniedException"):
			t.Errorf("%s: %v, want AccessDeniedException", c.name, err)
		}
	}
}

// TestBindingRefusalsAreThrottled: someone holding a leaked secret but not
// the certificate cannot turn refusals into a flood: they count against the
// principal's rate like any request.
func TestBindingRefusalsAreThrottled(t *testing.T) {
	ca := newCA(t, "bank")
	dir := t.TempDir()
	certFile, keyFile := ca.serverFiles(t, dir, "server")
	const boundKey = "AKIDBOUNDFLOOD"
	s := startTLSServer(t, tlsOptions{src: kmstransport.TLSSource{CertFile: certFile, KeyFile: keyFile, ClientCAFile: ca.file(t, dir)},
		bound: map[string]boundPrincipal{boundKey: {service.Caller{Account: mainAccount,
			ARN: "arn:aws:iam::111122223333:user/app1", Identity: otherIdentity}, []string{"CN=app1"}}},
		rateLimits: api.RateLimits{List: 3}})
	stolen := ca.clientCert(t, certSpec{subject: pkix.Name{CommonName: "intruder"}})
	c := newClient(s.URL, boundKey, reverse(boundKey), httpsClient(ca, &stolen))
	codes := map[string]int{}
	for range 12 {
		_, err := c.ListKeys(ctxT(t), &kms.ListKeysInput{})
		var apiErr smithy.APIError
		if !errors.As(err, &apiErr) {
			t.Fatalf("ListKeys with the wrong certificate: %v", err)
		}
		codes[apiErr.ErrorCode()]++
	}
	if codes["ThrottlingException"] == 0 || codes["AccessDeniedException"] == 0 || len(codes) != 2 {
		t.Errorf("12 refused requests answered %v, want AccessDeniedException until the rate is spent, then ThrottlingException", codes)
	}
}
