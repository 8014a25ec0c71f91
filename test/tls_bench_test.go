package test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/service"
	"github.com/hsmkms/hsmkms/service/api"
	apitransport "github.com/hsmkms/hsmkms/service/api/transport"
	"github.com/hsmkms/hsmkms/service/store"
)

// The TLS benchmarks of issue 10 ("Speed"). Each one runs its arms — the
// thing measured and its baseline — interleaved in short rounds of the same
// number of operations, the order rotating every round. A ratio is the
// median, over the rounds, of the ratio within a round: arms a few
// milliseconds apart share the machine's load of the moment, and a round
// that another process's burst hit on one side only moves no median. Rates
// are totals over the run, and wander with the load.

// tlsBenchConc is the number of concurrent clients in every arm.
const tlsBenchConc = 16

// tlsBenchRound is the operations each arm runs per round. The ramp-down at
// the end of a round (the last clients finishing alone) takes about half a
// request's latency, which at a fixed concurrency is the same share of every
// arm's round: it lowers every rate alike and leaves the ratios alone.
const tlsBenchRound = 4 * tlsBenchConc

// BenchmarkTLSEncrypt measures Encrypt of 1 KiB at concurrency 16 over
// kept-alive connections, through real http.Servers on 127.0.0.1 wired as
// `hsmkms serve` wires them (the bounded listener, ServeTLS with the
// transport's configuration, the server key in the token), in three arms
// interleaved: plain HTTP/1.1 (the baseline), HTTPS with HTTP/1.1, HTTPS with
// HTTP/2. The target is HTTPS ≥ 0.85 × HTTP; the ratios are
// reported, not asserted.
//
// Two clients, each over the same three connection pools:
//
//   - SDK: aws-sdk-go-v2's KMS client, as callers use it. Its own work per
//     request (middleware, signing, JSON) runs on the same two cores as the
//     server and dilutes the difference TLS makes.
//   - SigV4: one request signed once and replayed (the server checks the
//     signature every time; SigV4 has no nonce), so the client costs little
//     and the ratio shows the server's and the wire's share; the stricter
//     figure.
//
// Reported per arm: requests/s, and the process's CPU per request (client
// and server together); per HTTPS arm: its rate over plain HTTP's
// (https-h1/http) and plain HTTP's CPU per request over its own
// (https-h1/http-by-cpu: the ratio were the process bound by CPU alone).
//
// Every response's protocol (resp.Proto) and TLS state are counted, and the
// benchmark fails if an arm spoke anything but its protocol. The
// connections each arm opened while measured are logged: 0 means every
// request went over a kept-alive connection.
func BenchmarkTLSEncrypt(b *testing.B) {
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
	h, err := api.New(api.Config{Service: svc, Credentials: creds, Region: region})
	if err != nil {
		b.Fatal(err)
	}
	key, err := svc.CreateKey(ctxT(b), service.Caller{Account: mainAccount, ARN: mainARN}, service.CreateKeyInput{})
	if err != nil {
		b.Fatal(err)
	}
	keyID := aws.String(key.KeyMetadata.KeyId)

	// The server key in the token, as a bank would run it; with kept-alive
	// connections it signs only in the warm-up's handshakes.
	ca := newBenchCA(b)
	signer := newTokenTLSKey(b, tok, hsm.NamedECP256)
	tlsCfg := ca.serverTLS(b, signer.Public(), apitransport.TLSSource{
		Signer: func(ctx context.Context) (crypto.Signer, error) { return tok.NamedSigner(ctx, signer.Name()) },
	})
	plainURL := benchServe(b, h, nil)
	tlsURL := benchServe(b, h, tlsCfg)

	arms := []*encryptArm{
		newEncryptArm("http", plainURL, nil, "HTTP/1.1"),
		newEncryptArm("https-h1", tlsURL, ca.pool, "HTTP/1.1"),
		newEncryptArm("https-h2", tlsURL, ca.pool, "HTTP/2.0"),
	}
	plaintext := make([]byte, 1024)
	if _, err := rand.Read(plaintext); err != nil {
		b.Fatal(err)
	}
	ec := map[string]string{"app": "bench"}
	body := fmt.Appendf(nil, `{"KeyId":%q,"Plaintext":%q,"EncryptionContext":{"app":"bench"}}`,
		*keyID, base64.StdEncoding.EncodeToString(plaintext))

	b.Run("SDK", func(b *testing.B) {
		runEncryptArms(b, arms, func(ctx context.Context, a *encryptArm) error {
			out, err := a.sdk.Encrypt(ctx, &kms.EncryptInput{KeyId: keyID, Plaintext: plaintext, EncryptionContext: ec})
			if err != nil {
				return err
			}
			if len(out.CiphertextBlob) == 0 {
				return errors.New("Encrypt returned no CiphertextBlob")
			}
			return nil
		})
	})
	b.Run("SigV4", func(b *testing.B) {
		// Signed now: a run of this function lasts seconds, well inside
		// the 5-minute window.
		signed := map[*encryptArm]*http.Request{}
		for _, a := range arms {
			req := (&server{URL: a.url}).kmsRequest(b, "TrentService.Encrypt", body)
			sign(b, req, body, mainAKID, mainSecret, time.Now())
			signed[a] = req
		}
		runEncryptArms(b, arms, func(ctx context.Context, a *encryptArm) error {
			req := signed[a].Clone(ctx)
			req.Body = io.NopCloser(bytes.NewReader(body))
			req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
			req.ContentLength = int64(len(body))
			resp, err := a.hc.Do(req)
			if err != nil {
				return err
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK || !bytes.Contains(got, []byte(`"CiphertextBlob"`)) {
				return fmt.Errorf("status %d: %.200s", resp.StatusCode, got)
			}
			return nil
		})
	})
}

// encryptArm is one way of reaching the server: its endpoint and a client
// whose connections stay open from round to round.
type encryptArm struct {
	name      string
	url       string
	wantProto string // resp.Proto every response must have
	wantTLS   bool
	hc        *protoCounter
	sdk       *kms.Client
}

// newEncryptArm makes an arm whose client is the SDK's own HTTP client
// (awshttp.BuildableClient: ForceAttemptHTTP2, so HTTPS negotiates h2 by
// default), changed only where the benchmark needs it. roots nil: plain HTTP.
// "HTTP/1.1" restricts the client to HTTP/1.1.
func newEncryptArm(name, url string, roots *x509.CertPool, proto string) *encryptArm {
	hc := &protoCounter{byProto: map[string]int{}}
	hc.client = awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		tr.Proxy = nil
		// The SDK keeps 10 idle connections per host: fewer than 16
		// clients over HTTP/1.1 need, which would then open (and, over
		// TLS, handshake) connections all the time.
		tr.MaxIdleConnsPerHost = 64
		dial := tr.DialContext
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			hc.dials.Add(1)
			return dial(ctx, network, addr)
		}
		if roots != nil {
			tr.TLSClientConfig.RootCAs = roots
		}
		if proto == "HTTP/1.1" {
			tr.ForceAttemptHTTP2 = false
			tr.Protocols = new(http.Protocols)
			tr.Protocols.SetHTTP1(true)
			// The SDK's transport, cloned, already offers h2 in ALPN:
			// the server would choose it and the client speak
			// HTTP/1.1 into an HTTP/2 connection.
			if tr.TLSClientConfig != nil {
				tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
			}
		}
	})
	return &encryptArm{name: name, url: url, wantProto: proto, wantTLS: roots != nil, hc: hc,
		sdk: newClient(url, mainAKID, mainSecret, hc)}
}

// protoCounter counts what the server answered with: responses by
// protocol (resp.Proto) and over TLS, and the connections dialled.
type protoCounter struct {
	client aws.HTTPClient
	dials  atomic.Int64
	tls    atomic.Int64

	mu      sync.Mutex
	byProto map[string]int
}

func (c *protoCounter) Do(req *http.Request) (*http.Response, error) {
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.byProto[resp.Proto]++
	c.mu.Unlock()
	if resp.TLS != nil {
		c.tls.Add(1)
	}
	return resp, nil
}

func (c *protoCounter) reset() {
	c.dials.Store(0)
	c.tls.Store(0)
	c.mu.Lock()
	c.byProto = map[string]int{}
	c.mu.Unlock()
}

// runEncryptArms warms every arm's connections up, measures b.N requests
// per arm interleaved, checks each arm spoke its protocol and reports the
// rates, the ratios to plain HTTP and the process CPU per request (client
// and server together: they share the process).
func runEncryptArms(b *testing.B, arms []*encryptArm, call func(context.Context, *encryptArm) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for _, a := range arms {
		if _, _, err := runConcurrent(ctx, 4*tlsBenchConc, tlsBenchConc, func(ctx context.Context) error { return call(ctx, a) }); err != nil {
			b.Fatalf("%s warm-up: %v", a.name, err)
		}
		a.hc.reset()
	}
	names := make([]string, len(arms))
	for i, a := range arms {
		names[i] = a.name
	}
	res := interleave(b, ctx, names, func(ctx context.Context, i int) error { return call(ctx, arms[i]) })
	stats := res.total
	for i, a := range arms {
		n := stats[i].ops
		wantTLS := 0
		if a.wantTLS {
			wantTLS = n
		}
		if a.hc.byProto[a.wantProto] != n || int(a.hc.tls.Load()) != wantTLS {
			b.Fatalf("%s: %d responses by protocol %v, %d over TLS; want %d, all %s, TLS %v",
				a.name, n, a.hc.byProto, a.hc.tls.Load(), n, a.wantProto, a.wantTLS)
		}
		b.Logf("%s: %d responses in %d rounds, all %s, TLS %v; %d connections opened while measured",
			a.name, n, len(res.rounds), a.wantProto, a.wantTLS, a.hc.dials.Load())
	}
	for i, a := range arms {
		b.ReportMetric(stats[i].rate(), a.name+"-req/s")
		if i > 0 {
			b.ReportMetric(res.rateRatio(i, 0), a.name+"/"+arms[0].name)
		}
	}
	for i, a := range arms {
		b.ReportMetric(stats[i].cpuMicros(), a.name+"-cpu-us/req")
		if i > 0 {
			// The ratio were client and server bound by CPU alone
			// (the baseline's CPU per request over this arm's).
			b.ReportMetric(res.cpuRatio(0, i), a.name+"/"+arms[0].name+"-by-cpu")
		}
	}
}

// BenchmarkTLSHandshake measures full TLS handshakes per second against a
// real http.Server on 127.0.0.1 (ServeTLS with the transport's
// configuration), with the server's key in the token (hsm.NamedSigner) and
// in a PEM file, for ECDSA P-256 and RSA-2048, interleaved with the raw
// signing rate of the same token key (NamedSigner.Sign of a SHA-256 digest:
// ECDSA, or PSS as TLS 1.3 signs with RSA). Each handshake makes exactly one
// server signature, so token-hs/sign says how close handshakes come to the
// token's limit; on two cores shared with the client the rest of the
// handshake (key exchange, the client verifying the chain) competes for the
// same CPU.
//
// Reported: handshakes/s with each key, the token's signatures/s, the ratios
// token/file and token-hs/sign, and the process's CPU per handshake or
// signature.
//
// Every handshake is full: each dial takes a new tls.Config without a
// session cache, and a resumed session fails the benchmark. Clients close
// the connection after the handshake; no request is made.
func BenchmarkTLSHandshake(b *testing.B) {
	tok := sharedToken(b)
	ca := newBenchCA(b)
	for _, kt := range []struct {
		name string
		typ  hsm.NamedKeyType
		gen  func() (crypto.Signer, error)
		opts crypto.SignerOpts
	}{
		{"ECDSA-P256", hsm.NamedECP256,
			func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) },
			crypto.SHA256},
		{"RSA-2048", hsm.NamedRSA2048,
			func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, 2048) },
			&rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}},
	} {
		signer := newTokenTLSKey(b, tok, kt.typ)
		tokenTLS := ca.serverTLS(b, signer.Public(), apitransport.TLSSource{
			Signer: func(ctx context.Context) (crypto.Signer, error) { return tok.NamedSigner(ctx, signer.Name()) },
		})
		fileKey, err := kt.gen()
		if err != nil {
			b.Fatal(err)
		}
		fileTLS := ca.serverTLS(b, fileKey.Public(), apitransport.TLSSource{KeyFile: writeKeyFile(b, fileKey)})
		// No request reaches the handler.
		tokenAddr := hostOf(b, benchServe(b, http.NotFoundHandler(), tokenTLS))
		fileAddr := hostOf(b, benchServe(b, http.NotFoundHandler(), fileTLS))

		// The servers present the certificates of their keys: the token
		// server's handshakes can only succeed by signing in the token.
		ctx := ctxT(b)
		for _, s := range []struct {
			addr string
			pub  crypto.PublicKey
		}{{tokenAddr, signer.Public()}, {fileAddr, fileKey.Public()}} {
			cs, err := fullHandshake(ctx, s.addr, ca.pool)
			if err != nil {
				b.Fatalf("%s handshake with %s: %v", kt.name, s.addr, err)
			}
			if !s.pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(cs.PeerCertificates[0].PublicKey) {
				b.Fatalf("%s: %s presented a certificate for another key", kt.name, s.addr)
			}
			if cs.Version != tls.VersionTLS13 {
				b.Fatalf("%s: negotiated %s, want TLS 1.3 (what the SDK's default client gets)", kt.name, tls.VersionName(cs.Version))
			}
		}

		digest := sha256.Sum256([]byte("hsmkms tls handshake benchmark"))
		b.Run(kt.name, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			arms := []string{"token", "file", "sign"}
			res := interleave(b, ctx, arms, func(ctx context.Context, arm int) error {
				switch arm {
				case 0:
					_, err := fullHandshake(ctx, tokenAddr, ca.pool)
					return err
				case 1:
					_, err := fullHandshake(ctx, fileAddr, ca.pool)
					return err
				}
				// Sign, as crypto/tls calls it.
				_, err := signer.Sign(rand.Reader, digest[:], kt.opts)
				return err
			})
			stats := res.total
			b.ReportMetric(stats[0].rate(), "token-hs/s")
			b.ReportMetric(stats[1].rate(), "file-hs/s")
			b.ReportMetric(stats[2].rate(), "token-sign/s")
			b.ReportMetric(res.rateRatio(0, 1), "token/file")
			b.ReportMetric(res.rateRatio(0, 2), "token-hs/sign")
			b.ReportMetric(stats[0].cpuMicros(), "token-cpu-us/hs")
			b.ReportMetric(stats[1].cpuMicros(), "file-cpu-us/hs")
			b.ReportMetric(stats[2].cpuMicros(), "sign-cpu-us/op")
		})
	}
}

// fullHandshake dials addr and completes a TLS handshake, verifying the
// server's chain against roots, then closes the connection. The new
// tls.Config of every call has no session cache, so no session resumes.
func fullHandshake(ctx context.Context, addr string, roots *x509.CertPool) (tls.ConnectionState, error) {
	d := tls.Dialer{Config: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	cs := c.(*tls.Conn).ConnectionState()
	if err := c.Close(); err != nil {
		return cs, err
	}
	if cs.DidResume {
		return cs, errors.New("the session was resumed: not a full handshake")
	}
	return cs, nil
}

// ---- interleaved measurement ----

// armStats is what one arm did while measured.
type armStats struct {
	ops  int
	wall time.Duration
	cpu  time.Duration // the process's user and system time
}

func (s armStats) rate() float64 { return float64(s.ops) / s.wall.Seconds() }

func (s armStats) cpuMicros() float64 { return float64(s.cpu) / 1e3 / float64(s.ops) }

// interleaved is what the arms did: in total, and round by round.
type interleaved struct {
	total  []armStats
	rounds [][]armStats // [round][arm]
}

// rateRatio is the median over the rounds of arm a's rate over arm base's.
func (r interleaved) rateRatio(a, base int) float64 {
	return medianOver(r.rounds, func(s []armStats) float64 { return s[a].rate() / s[base].rate() })
}

// cpuRatio is the median over the rounds of arm a's CPU per operation over
// arm per's.
func (r interleaved) cpuRatio(a, per int) float64 {
	return medianOver(r.rounds, func(s []armStats) float64 { return s[a].cpuMicros() / s[per].cpuMicros() })
}

func medianOver(rounds [][]armStats, f func([]armStats) float64) float64 {
	v := make([]float64, len(rounds))
	for i, s := range rounds {
		v[i] = f(s)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// interleave runs b.N operations of each arm, in rounds of tlsBenchRound
// operations per arm at tlsBenchConc clients, the arms' order rotating each
// round. It fails b on the first error.
func interleave(b *testing.B, ctx context.Context, arms []string, op func(ctx context.Context, arm int) error) interleaved {
	res := interleaved{total: make([]armStats, len(arms))}
	b.ResetTimer()
	for done, round := 0, 0; done < b.N; round++ {
		n := min(tlsBenchRound, b.N-done)
		this := make([]armStats, len(arms))
		for i := range arms {
			a := (round + i) % len(arms)
			wall, cpu, err := runConcurrent(ctx, n, tlsBenchConc, func(ctx context.Context) error { return op(ctx, a) })
			if err != nil {
				b.Fatalf("%s: %v", arms[a], err)
			}
			this[a] = armStats{ops: n, wall: wall, cpu: cpu}
			res.total[a].ops += n
			res.total[a].wall += wall
			res.total[a].cpu += cpu
		}
		res.rounds = append(res.rounds, this)
		done += n
	}
	b.StopTimer()
	return res
}

// runConcurrent runs op n times on conc goroutines and returns the wall time
// and process CPU time it took, and the first error.
func runConcurrent(ctx context.Context, n, conc int, op func(context.Context) error) (wall, cpu time.Duration, err error) {
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cpu0 := processCPU()
	t0 := time.Now()
	for range min(conc, n) {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				if err := op(ctx); err != nil {
					once.Do(func() { firstErr = err; cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	return time.Since(t0), processCPU() - cpu0, firstErr
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ---- servers and certificates ----

// benchServe serves h on a new 127.0.0.1 port as `hsmkms serve` does (see
// cmd/hsmkms/serve.go): the bounded listener and its ConnState, the same
// http.Server limits, and ServeTLS with the transport's configuration when
// tlsCfg is set. It returns the endpoint's URL.
func benchServe(b *testing.B, h http.Handler, tlsCfg *apitransport.TLS) string {
	b.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ln := apitransport.NewListener(raw, apitransport.ListenerConfig{})
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ConnState:         ln.ConnState,
		// serve.go logs failed handshakes at debug level; here the
		// client sees every failure that matters.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	scheme := "http"
	errc := make(chan error, 1)
	if tlsCfg != nil {
		scheme = "https"
		srv.TLSConfig = tlsCfg.Config()
		go func() { errc <- srv.ServeTLS(ln, "", "") }()
	} else {
		go func() { errc <- srv.Serve(ln) }()
	}
	b.Cleanup(func() {
		srv.Close()
		if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
			b.Errorf("serve %s: %v", raw.Addr(), err)
		}
	})
	return scheme + "://" + raw.Addr().String()
}

func hostOf(b *testing.B, endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil {
		b.Fatal(err)
	}
	return u.Host
}

// tlsKeySeq makes the labels of the benchmarks' token keys unique in the
// process's token (a -count above 1 runs the setup again).
var tlsKeySeq atomic.Int64

// newTokenTLSKey makes a TLS key pair in the token, as `hsmkms tls new-key`
// does, and returns its signer.
func newTokenTLSKey(b *testing.B, tok *hsm.Token, typ hsm.NamedKeyType) *hsm.NamedSigner {
	b.Helper()
	name := hsm.KeyName{Label: fmt.Sprintf("bench-tls-%d-%d", typ, tlsKeySeq.Add(1))}
	if err := tok.GenerateNamedKeyPair(ctxT(b), name, typ); err != nil {
		b.Fatal(err)
	}
	s, err := tok.NamedSigner(ctxT(b), name)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// benchCA is a certificate authority made for one benchmark, its key in
// memory.
type benchCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
	dir  string
	seq  int
}

func newBenchCA(b *testing.B) *benchCA {
	b.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "hsmkms benchmark CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		b.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		b.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &benchCA{cert: cert, key: key, pool: pool, dir: b.TempDir()}
}

// serverTLS issues a certificate for 127.0.0.1 to pub, writes it to a file
// and loads it with src's key through transport.NewTLS, as serve does.
func (ca *benchCA) serverTLS(b *testing.B, pub crypto.PublicKey, src apitransport.TLSSource) *apitransport.TLS {
	b.Helper()
	ca.seq++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(int64(ca.seq) + 1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		b.Fatal(err)
	}
	src.CertFile = filepath.Join(ca.dir, fmt.Sprintf("server-%d.pem", ca.seq))
	if err := os.WriteFile(src.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		b.Fatal(err)
	}
	t, _, err := apitransport.NewTLS(ctxT(b), src)
	if err != nil {
		b.Fatal(err)
	}
	return t
}

// writeKeyFile writes key, PKCS #8 PEM, to a file of its own.
func writeKeyFile(b *testing.B, key crypto.Signer) string {
	b.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		b.Fatal(err)
	}
	f, err := os.CreateTemp(b.TempDir(), "server-key-*.pem")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		b.Fatal(err)
	}
	return f.Name()
}
