package transport

import (
	"bufio"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// pki is a CA and what it signed, as PEM files.
type pki struct {
	dir    string
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
	n      int64
}

func newPKI(t *testing.T) *pki {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &pki{dir: t.TempDir(), caCert: cert, caKey: key, n: 1}
}

// leaf writes a server certificate named cn valid from nb to na, and its
// key, and returns the files.
func (p *pki) leaf(t *testing.T, cn string, nb, na time.Time) (certFile, keyFile string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.n++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(p.n), Subject: pkix.Name{CommonName: cn},
		NotBefore: nb, NotAfter: na, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, key.Public(), p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile, keyFile = filepath.Join(p.dir, cn+".crt"), filepath.Join(p.dir, cn+".key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

func (p *pki) pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.caCert)
	return pool
}

func copyFile(t *testing.T, from, to string) {
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestTLSLoadRefusesBadPairs: what NewTLS and Reload refuse, and that a
// refused reload leaves the running certificate in place.
func TestTLSLoadRefusesBadPairs(t *testing.T) {
	p := newPKI(t)
	now := time.Now()
	goodCert, goodKey := p.leaf(t, "good", now.Add(-time.Hour), now.Add(time.Hour))
	otherCert, otherKey := p.leaf(t, "other", now.Add(-time.Hour), now.Add(time.Hour))
	expiredCert, expiredKey := p.leaf(t, "expired", now.Add(-2*time.Hour), now.Add(-time.Hour))
	futureCert, futureKey := p.leaf(t, "future", now.Add(time.Hour), now.Add(2*time.Hour))
	garbage := filepath.Join(p.dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not a certificate"), 0o600)
	ctx := context.Background()
	for _, c := range []struct{ name, cert, key string }{
		{"key of another certificate", goodCert, otherKey},
		{"expired", expiredCert, expiredKey},
		{"not yet valid", futureCert, futureKey},
		{"garbage certificate", garbage, goodKey},
		{"missing key file", goodCert, filepath.Join(p.dir, "absent.key")},
	} {
		if _, _, err := NewTLS(ctx, TLSSource{CertFile: c.cert, KeyFile: c.key}); err == nil {
			t.Errorf("%s: loaded", c.name)
		}
	}
	// Reload from files that change under it.
	liveCert, liveKey := filepath.Join(p.dir, "live.crt"), filepath.Join(p.dir, "live.key")
	copyFile(t, goodCert, liveCert)
	copyFile(t, goodKey, liveKey)
	tc, l, err := NewTLS(ctx, TLSSource{CertFile: liveCert, KeyFile: liveKey})
	if err != nil {
		t.Fatal(err)
	}
	if l.Subject != "CN=good" {
		t.Fatalf("loaded %q", l.Subject)
	}
	copyFile(t, otherCert, liveCert) // the key is not replaced: a mismatched pair
	if _, err := tc.Reload(ctx); err == nil {
		t.Fatal("a mismatched pair was reloaded")
	}
	if cn := tc.Current().Certificates[0].Leaf.Subject.CommonName; cn != "good" {
		t.Fatalf("after a refused reload the server presents %q, want the running certificate", cn)
	}
	copyFile(t, otherKey, liveKey)
	if l, err := tc.Reload(ctx); err != nil || l.Subject != "CN=other" {
		t.Fatalf("reload of a good pair: %+v, %v", l, err)
	}
	if _, _, err := NewTLS(ctx, TLSSource{CertFile: goodCert}); err == nil {
		t.Error("a certificate without a key loaded")
	}
}

// serve runs an HTTPS server that answers with the client address it saw.
func serve(t *testing.T, ln *Listener, tc *TLS) {
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			if r.URL.Path == "/slow" {
				time.Sleep(300 * time.Millisecond)
			}
			fmt.Fprint(w, r.RemoteAddr)
		}),
		ConnState: ln.ConnState,
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	if tc != nil {
		srv.TLSConfig = tc.Config()
		go srv.ServeTLS(ln, "", "")
	} else {
		go srv.Serve(ln)
	}
	t.Cleanup(func() { srv.Close() })
}

// TestReloadWhileServing: handshakes after a reload get the new
// certificate; connections made before it go on working.
func TestReloadWhileServing(t *testing.T) {
	p := newPKI(t)
	now := time.Now()
	aCert, aKey := p.leaf(t, "a", now.Add(-time.Hour), now.Add(time.Hour))
	bCert, bKey := p.leaf(t, "b", now.Add(-time.Hour), now.Add(time.Hour))
	liveCert, liveKey := filepath.Join(p.dir, "live.crt"), filepath.Join(p.dir, "live.key")
	copyFile(t, aCert, liveCert)
	copyFile(t, aKey, liveKey)
	tc, _, err := NewTLS(context.Background(), TLSSource{CertFile: liveCert, KeyFile: liveKey})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := net.Listen("tcp", "127.0.0.1:0")
	ln := NewListener(raw, ListenerConfig{})
	serve(t, ln, tc)
	addr := raw.Addr().String()
	presented := func() string {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: p.pool()})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	old, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: p.pool(), NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if cn := presented(); cn != "a" {
		t.Fatalf("presented %q before the reload", cn)
	}
	copyFile(t, bCert, liveCert)
	copyFile(t, bKey, liveKey)
	if _, err := tc.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if cn := presented(); cn != "b" {
		t.Fatalf("presented %q after the reload, want b", cn)
	}
	// The connection made before still works.
	fmt.Fprintf(old, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(old), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("request on the connection made before the reload: %v", err)
	}
}

// TestListenerDisplacesIdleBeforeBusy: at the bound, a new connection
// displaces one that is not serving a request; when all are, it is refused
// and the busy ones finish.
func TestListenerDisplacesIdleBeforeBusy(t *testing.T) {
	raw, _ := net.Listen("tcp", "127.0.0.1:0")
	ln := NewListener(raw, ListenerConfig{MaxConns: 2})
	serve(t, ln, nil)
	addr := raw.Addr().String()
	// Two silent connections fill the bound.
	var silent []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		silent = append(silent, c)
	}
	waitFor(t, func() bool { return ln.Stats().Open == 2 })
	// A real client is served: it displaces a silent one.
	if _, err := get(addr, "/"); err != nil {
		t.Fatalf("a client past the bound: %v", err)
	}
	if st := ln.Stats(); st.Displaced == 0 {
		t.Fatalf("stats %+v: nothing displaced", st)
	}
	// Two slow requests in flight: the bound is full of busy connections.
	var done atomic.Int32
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := get(addr, "/slow")
			done.Add(1)
			errs <- err
		}()
	}
	waitFor(t, func() bool {
		ln.mu.Lock()
		defer ln.mu.Unlock()
		busy := 0
		for c := range ln.conns {
			if c.busy {
				busy++
			}
		}
		return busy == 2
	})
	refusedBefore := ln.Stats().Refused
	if _, err := get(addr, "/"); err == nil && done.Load() == 0 {
		t.Error("a third client was served while two requests held the bound")
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("a busy connection was displaced: %v", err)
		}
	}
	if ln.Stats().Refused == refusedBefore && done.Load() == 0 {
		t.Error("nothing refused")
	}
}

func get(addr, path string) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestProxyProtocol: a PROXY v2 header from a trusted proxy names the
// client; from any other peer it is read and ignored.
func TestProxyProtocol(t *testing.T) {
	for _, c := range []struct {
		name    string
		trusted []string
		want    string
	}{
		{"trusted proxy", []string{"127.0.0.0/8"}, "203.0.113.9"},
		{"untrusted peer", []string{"10.0.0.0/8"}, "127.0.0.1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			proxies, err := ParseProxies(c.trusted)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := net.Listen("tcp", "127.0.0.1:0")
			ln := NewListener(raw, ListenerConfig{ProxyProtocol: true, Proxies: proxies})
			serve(t, ln, nil)
			conn, err := net.Dial("tcp", raw.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			h := &proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv4,
				SourceAddr:      &net.TCPAddr{IP: net.ParseIP("203.0.113.9"), Port: 5555},
				DestinationAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 443}}
			if _, err := h.WriteTo(conn); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			host, _, _ := strings.Cut(string(b), ":")
			if host != c.want {
				t.Errorf("the server saw the client as %q, want %q", host, c.want)
			}
		})
	}
}

// TestReloadEndsSessionResumption: a session ticket issued before a reload
// does not resume after it, so no connection skips the new configuration's
// checks; before a reload it does resume.
func TestReloadEndsSessionResumption(t *testing.T) {
	p := newPKI(t)
	now := time.Now()
	cert, key := p.leaf(t, "a", now.Add(-time.Hour), now.Add(time.Hour))
	tc, _, err := NewTLS(context.Background(), TLSSource{CertFile: cert, KeyFile: key})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := net.Listen("tcp", "127.0.0.1:0")
	ln := NewListener(raw, ListenerConfig{})
	serve(t, ln, tc)
	cache := tls.NewLRUClientSessionCache(4)
	resumed := func() bool {
		c, err := tls.Dial("tcp", raw.Addr().String(), &tls.Config{RootCAs: p.pool(), ClientSessionCache: cache, MaxVersion: tls.VersionTLS12})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().DidResume
	}
	resumed() // gets a ticket
	if !resumed() {
		t.Fatal("no resumption before the reload: the test proves nothing")
	}
	if _, err := tc.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if resumed() {
		t.Error("a session from before the reload resumed after it")
	}
}

// slowSigner signs with a real key, slowly, and records how many signatures
// ran at once.
type slowSigner struct {
	*ecdsa.PrivateKey
	mu       sync.Mutex
	now, max int
}

func (s *slowSigner) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	s.mu.Lock()
	s.now++
	s.max = max(s.max, s.now)
	s.mu.Unlock()
	time.Sleep(5 * time.Millisecond)
	s.mu.Lock()
	s.now--
	s.mu.Unlock()
	return s.PrivateKey.Sign(r, d, o)
}

// TestLimitSigner: no more than n signatures run at once, however many
// handshakes ask; all of them get their signature.
func TestLimitSigner(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	inner := &slowSigner{PrivateKey: key}
	s := LimitSigner(inner, 3)
	var wg sync.WaitGroup
	for range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := sha256.Sum256([]byte("x"))
			sig, err := s.Sign(rand.Reader, d[:], crypto.SHA256)
			if err != nil || !ecdsa.VerifyASN1(&key.PublicKey, d[:], sig) {
				t.Errorf("signature: %v", err)
			}
		}()
	}
	wg.Wait()
	if inner.max > 3 || inner.max < 1 {
		t.Errorf("%d signatures ran at once, want at most 3", inner.max)
	}
	if _, ok := s.Public().(*ecdsa.PublicKey); !ok {
		t.Error("the limited signer lost its public key")
	}
}
