package test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/pires/go-proxyproto"
)

// TestBinaryTLSKeyInToken is the operator's path: `hsmkms tls new-key`
// makes the key pair in the dev token and prints a CSR; a CA signs it; the
// server serves HTTPS with the key named by a pkcs11: URI; the SDK and the
// AWS CLI work over it. A second new-key with the same label is refused.
func TestBinaryTLSKeyInToken(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	newKey := exec.Command(hsmkmsBinary(t), "tls", "new-key", "--dev", "--data-dir", data, "--label", "hsmkms-tls",
		"--subject", "/CN=localhost/O=hsmkms test", "--dns", "localhost", "--ip", "127.0.0.1")
	newKey.Env = cleanEnv()
	var stderr bytes.Buffer
	newKey.Stderr = &stderr
	out, err := newKey.Output()
	if err != nil {
		t.Fatalf("tls new-key: %v\n%s", err, stderr.String())
	}
	block, _ := pem.Decode(out)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		t.Fatalf("tls new-key printed no CSR:\n%s", out)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Fatalf("the CSR's signature (made in the token): %v", err)
	}
	if csr.Subject.String() != "CN=localhost,O=hsmkms test" || len(csr.DNSNames) != 1 || len(csr.IPAddresses) != 1 || !csr.IPAddresses[0].Equal([]byte{127, 0, 0, 1}) {
		t.Errorf("CSR subject %q, DNS %v, IP %v", csr.Subject, csr.DNSNames, csr.IPAddresses)
	}
	again := exec.Command(hsmkmsBinary(t), "tls", "new-key", "--dev", "--data-dir", data, "--label", "hsmkms-tls", "--subject", "/CN=x")
	again.Env = cleanEnv()
	if msg, err := again.CombinedOutput(); err == nil || !strings.Contains(string(msg), "already has a key") {
		t.Errorf("a second key under the same label: %v\n%s", err, msg)
	}

	ca := newCA(t, "operator-ca")
	certFile := filepath.Join(dir, "server.crt")
	writePEM(t, certFile, "CERTIFICATE", ca.issue(t, csr.PublicKey, certSpec{subject: csr.Subject, server: true}))
	caFile := ca.file(t, dir)
	addr := freeAddr(t)
	p := startProc(t, cleanEnv(), "serve", "--dev", "--data-dir", data, "--listen", addr, "--log-level", "warn",
		"--tls-cert", certFile, "--tls-key", "pkcs11:object=hsmkms-tls;type=private")
	endpoint := "https://" + addr
	hc := httpsClient(ca, nil)
	p.waitHealthyWith(t, endpoint, hc)
	if err := roundTrip(t, newClient(endpoint, mainAKID, mainSecret, hc)); err != nil {
		t.Fatalf("SDK over HTTPS: %v", err)
	}
	if !strings.Contains(p.stdout.String(), "https://"+addr) {
		t.Errorf("the banner does not give the https endpoint:\n%s", p.stdout)
	}

	// The AWS CLI (v1 or v2) over HTTPS, trusting the operator's CA.
	awsCLI := awsCLI(t)
	cli := func(args ...string) []byte {
		t.Helper()
		cmd := exec.Command(awsCLI, append([]string{"kms", "--endpoint-url", endpoint, "--ca-bundle", caFile, "--output", "json"}, args...)...)
		cmd.Env = cleanEnv("AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test", "AWS_REGION=us-east-1", "AWS_DEFAULT_REGION=us-east-1",
			"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "HOME="+dir)
		var e bytes.Buffer
		cmd.Stderr = &e
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("aws kms %s: %v\n%s", strings.Join(args, " "), err, e.String())
		}
		return out
	}
	var created struct{ KeyMetadata struct{ KeyId string } }
	if err := json.Unmarshal(cli("create-key", "--description", "made over TLS by the CLI"), &created); err != nil || created.KeyMetadata.KeyId == "" {
		t.Fatalf("create-key output: %v", err)
	}
	ptFile, ctFile := filepath.Join(dir, "pt"), filepath.Join(dir, "ct")
	os.WriteFile(ptFile, []byte("the CLI over HTTPS"), 0o600)
	var enc struct{ CiphertextBlob string }
	if err := json.Unmarshal(cli("encrypt", "--key-id", created.KeyMetadata.KeyId, "--plaintext", "fileb://"+ptFile), &enc); err != nil {
		t.Fatal(err)
	}
	ct, err := base64.StdEncoding.DecodeString(enc.CiphertextBlob)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(ctFile, ct, 0o600)
	var dec struct{ Plaintext string }
	if err := json.Unmarshal(cli("decrypt", "--ciphertext-blob", "fileb://"+ctFile), &dec); err != nil {
		t.Fatal(err)
	}
	if pt, _ := base64.StdEncoding.DecodeString(dec.Plaintext); string(pt) != "the CLI over HTTPS" {
		t.Errorf("CLI decrypt gave %q", pt)
	}
}

// awsCLI finds the AWS CLI; the end-to-end suite needs it (.ci/run and
// `make test` install it when missing).
func awsCLI(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("aws")
	if err != nil {
		t.Fatalf("the AWS CLI is needed: apt-get install awscli (%v)", err)
	}
	return p
}

// TestBinaryTLSReloadOnSIGHUP: a new certificate and key replace the
// running ones on SIGHUP while requests run, none failing; a bad new
// certificate is logged and the running one kept.
func TestBinaryTLSReloadOnSIGHUP(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := newCA(t, "reload-ca")
	aCert, aKey := ca.serverFiles(t, dir, "a")
	bCert, bKey := ca.serverFiles(t, dir, "b")
	live, liveKey := filepath.Join(dir, "live.crt"), filepath.Join(dir, "live.key")
	install := func(cert, key string) {
		t.Helper()
		for _, f := range [][2]string{{cert, live}, {key, liveKey}} {
			b, err := os.ReadFile(f[0])
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(f[1]+".tmp", b, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(f[1]+".tmp", f[1]); err != nil {
				t.Fatal(err)
			}
		}
	}
	install(aCert, aKey)
	addr := freeAddr(t)
	p := startProc(t, cleanEnv(), "serve", "--dev", "--data-dir", filepath.Join(dir, "data"), "--listen", addr,
		"--log-level", "info", "--tls-cert", live, "--tls-key", liveKey)
	endpoint := "https://" + addr
	p.waitHealthyWith(t, endpoint, httpsClient(ca, nil))
	presented := func() string {
		t.Helper()
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.pool()})
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if cn := presented(); cn != "a" {
		t.Fatalf("serving %q, want a", cn)
	}
	k := createKey(t, newClient(endpoint, mainAKID, mainSecret, httpsClient(ca, nil)))

	// Load on kept-alive connections and on new ones (one per request).
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var served atomic.Int64
	for g := range 4 {
		c := newClient(endpoint, mainAKID, mainSecret, httpsClient(ca, nil))
		if g%2 == 1 {
			c = newClient(endpoint, mainAKID, mainSecret, &httpClientNoReuse{ca: ca})
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := c.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: k.KeyId, Plaintext: []byte("busy")}); err != nil {
					t.Errorf("request during the reload: %v", err)
					return
				}
				served.Add(1)
			}
		}()
	}
	hup := func() {
		t.Helper()
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	install(bCert, bKey)
	hup()
	deadline := time.Now().Add(15 * time.Second)
	for presented() != "b" {
		if time.Now().After(deadline) {
			t.Fatalf("still serving the old certificate 15 s after SIGHUP\n%s", p.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A bad certificate: refused, logged, the running one kept.
	if err := os.WriteFile(live, []byte("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hup()
	deadline = time.Now().Add(15 * time.Second)
	for !strings.Contains(p.stderr.String(), "TLS certificate not reloaded") {
		if time.Now().After(deadline) {
			t.Fatalf("no log line for the refused certificate\n%s", p.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if cn := presented(); cn != "b" {
		t.Errorf("after a bad certificate the server presents %q, want b", cn)
	}
	close(stop)
	wg.Wait()
	if served.Load() == 0 {
		t.Error("no request was served during the reloads")
	}
}

// httpClientNoReuse makes a new TLS connection (a full handshake) for every
// request.
type httpClientNoReuse struct{ ca *testCA }

func (h *httpClientNoReuse) Do(r *http.Request) (*http.Response, error) {
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: h.ca.pool()}, DisableKeepAlives: true}}
	return c.Do(r)
}

// TestBinaryRefusesPlainHTTPOffLoopback: without TLS, a non-loopback
// address needs --insecure-http, and then the server warns at start. The
// refusal comes before a token or a data directory is made.
func TestBinaryRefusesPlainHTTPOffLoopback(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "hsmkms.yaml")
	if err := os.WriteFile(cfg, []byte("version: v1\npkcs11: {token_label: hsmkms}\nprincipals:\n"+
		"  - arn: arn:aws:iam::111122223333:user/alice\n    access_keys: [{id: AKIDALICE, secret_env: HSMKMS_E2E_ALICE_SECRET}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	p := startProc(t, cleanEnv("HSMKMS_E2E_ALICE_SECRET=s"), "serve", "--config", cfg, "--data-dir", data, "--listen", "0.0.0.0:0")
	if code := p.wait(t, 20*time.Second); code == 0 {
		t.Fatal("plain HTTP on 0.0.0.0 started")
	}
	if !strings.Contains(p.stderr.String(), "--insecure-http") || !strings.Contains(p.stderr.String(), "--tls-cert") {
		t.Errorf("the refusal does not say what to do:\n%s", p.stderr)
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Errorf("the refused start made the data directory: %v", err)
	}

	// With --insecure-http it starts, on a real token of its own, and warns.
	tokDir := filepath.Join(dir, "token")
	out, err := exec.Command("bash", "../softhsm/init-token.sh", tokDir, "hsmkms").Output()
	if err != nil {
		t.Fatalf("init-token.sh: %v", err)
	}
	port := strings.TrimPrefix(freeAddr(t), "127.0.0.1:")
	p = startProc(t, cleanEnv("SOFTHSM2_CONF="+strings.TrimSpace(string(out)), "HSMKMS_E2E_ALICE_SECRET=s"),
		"serve", "--config", cfg, "--data-dir", data, "--listen", "0.0.0.0:"+port, "--insecure-http",
		"--pin-file", filepath.Join(tokDir, "user.pin"))
	p.waitHealthy(t, "http://127.0.0.1:"+port)
	p.waitLog(t, "serving plain HTTP off loopback")
}

// TestBinaryConnectionBoundFitsFileLimit: with few file descriptors, the
// connection bound is lowered below the limit (and the operator told), so
// a flood of connections runs into the bound — which sheds idle ones —
// rather than into the descriptor limit, where accept fails for everyone
// and the token and audit log cannot open files.
func TestBinaryConnectionBoundFitsFileLimit(t *testing.T) {
	t.Parallel()
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Fatalf("prlimit (util-linux) is needed: %v", err)
	}
	addr := freeAddr(t)
	p := &proc{stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(prlimit, "--nofile=400:400", hsmkmsBinary(t), "serve", "--dev", "--data-dir", t.TempDir(), "--listen", addr)
	p.cmd.Env, p.cmd.Stdout, p.cmd.Stderr = cleanEnv(), p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.cmd.Process.Kill(); <-p.done })
	p.waitHealthy(t, "http://"+addr)
	p.waitLog(t, `"max_connections":4096,"now":144`) // the bound lowered to 400 descriptors - 256
	// Flood past the file limit; a client is still served.
	var held []net.Conn
	for range 500 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			break
		}
		held = append(held, c)
	}
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	if err := roundTrip(t, newClient("http://"+addr, mainAKID, mainSecret, &http.Client{Timeout: 30 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true}})); err != nil {
		t.Fatalf("request during a flood of %d connections: %v", len(held), err)
	}
	if strings.Contains(p.stderr.String(), "too many open files") {
		t.Errorf("the flood exhausted the file descriptors:\n%s", p.stderr)
	}
}

// TestBinaryBusyPortCreatesNothing: a port in use fails the start before a
// data directory or a dev token is made.
func TestBinaryBusyPortCreatesNothing(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	data := filepath.Join(t.TempDir(), "data")
	p := startProc(t, cleanEnv(), "serve", "--dev", "--data-dir", data, "--listen", busy.Addr().String())
	if code := p.wait(t, 20*time.Second); code == 0 {
		t.Fatal("serve on a busy port exited 0")
	}
	if !strings.Contains(p.stderr.String(), "address already in use") {
		t.Errorf("stderr does not say the port is busy:\n%s", p.stderr)
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Errorf("the failed start made %s: %v", data, err)
	}
}

// proxyDialer is an HTTP client whose every connection starts with a PROXY
// protocol v2 header naming client as the source, as a load balancer's
// would.
func proxyDialer(client string) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			h := &proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv4,
				SourceAddr:      &net.TCPAddr{IP: net.ParseIP(client), Port: 40000},
				DestinationAddr: c.RemoteAddr().(*net.TCPAddr)}
			if _, err := h.WriteTo(c); err != nil {
				c.Close()
				return nil, err
			}
			return c, nil
		},
	}}
}

// TestBinaryProxyProtocol: with --proxy-protocol, the address a trusted
// proxy's PROXY header names is the caller's, in the audit record and for
// aws:SourceIp; a server that does not trust the peer ignores the header.
func TestBinaryProxyProtocol(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, trusted, want string
	}{
		{"trusted", "127.0.0.1/32", "203.0.113.9"},
		{"untrusted", "10.0.0.0/8", "127.0.0.1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			addr := freeAddr(t)
			p := startProc(t, cleanEnv(), "serve", "--dev", "--data-dir", dir, "--listen", addr, "--log-level", "warn",
				"--proxy-protocol", "--trusted-proxies", c.trusted)
			endpoint := "http://" + addr
			hc := proxyDialer("203.0.113.9")
			p.waitHealthyWith(t, endpoint, hc)
			pol := `{"Version":"2012-10-17","Statement":[
			 {"Sid":"root","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"},
			 {"Sid":"office only","Effect":"Deny","Principal":"*","Action":"kms:Encrypt","Resource":"*",
			  "Condition":{"NotIpAddress":{"aws:SourceIp":"203.0.113.0/24"}}}]}`
			kc := newClient(endpoint, mainAKID, mainSecret, hc)
			k, err := kc.CreateKey(ctxT(t), &kms.CreateKeyInput{Policy: aws.String(pol)})
			if err != nil {
				t.Fatal(err)
			}
			_, err = kc.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: k.KeyMetadata.KeyId, Plaintext: []byte("x")})
			if allowed := err == nil; allowed != (c.want == "203.0.113.9") {
				t.Errorf("Encrypt from %s under an office-only policy: %v", c.want, err)
			}
			log, err := os.ReadFile(filepath.Join(dir, "audit", "audit.log"))
			if err != nil {
				t.Fatal(err)
			}
			var sources []string
			for _, line := range strings.Split(strings.TrimSpace(string(log)), "\n") {
				var rec struct {
					EventName       string `json:"eventName"`
					SourceIPAddress string `json:"sourceIPAddress"`
				}
				if json.Unmarshal([]byte(line), &rec) == nil && (rec.EventName == "CreateKey" || rec.EventName == "Encrypt") {
					sources = append(sources, rec.SourceIPAddress)
				}
			}
			if len(sources) < 2 {
				t.Fatalf("audit records of CreateKey and Encrypt: %v", sources)
			}
			for _, s := range sources {
				if s != c.want {
					t.Errorf("audit sourceIPAddress %q, want %q", s, c.want)
				}
			}
		})
	}
}

// TestBinaryReadyzWhenStoreCannotCommit: /readyz says the store is
// unavailable while the filesystem under the data directory is full (a real
// tmpfs, filled), and ready again once there is room; the token and the
// audit log, elsewhere, stay fine meanwhile.
func TestBinaryReadyzWhenStoreCannotCommit(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Fatal("this test mounts a tmpfs in a mount namespace: run it as root (CI does)")
	}
	dir := t.TempDir()
	tokDir := filepath.Join(dir, "token")
	out, err := exec.Command("bash", "../softhsm/init-token.sh", tokDir, "hsmkms").Output()
	if err != nil {
		t.Fatalf("init-token.sh: %v", err)
	}
	cfg := filepath.Join(dir, "hsmkms.yaml")
	if err := os.WriteFile(cfg, []byte("version: v1\nprincipals:\n"+
		"  - arn: arn:aws:iam::111122223333:user/alice\n    access_keys: [{id: AKIDALICE, secret_env: HSMKMS_E2E_ALICE_SECRET}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	p := &proc{stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", `mount -t tmpfs -o size=16m hsmkms-data "$1" && shift && exec "$@"`, "sh", data,
		hsmkmsBinary(t), "serve", "--config", cfg, "--data-dir", data, "--listen", addr, "--log-level", "warn",
		"--pkcs11-module", "/usr/lib/softhsm/libsofthsm2.so", "--token-label", "hsmkms", "--pin-file", filepath.Join(tokDir, "user.pin"),
		"--audit-file", filepath.Join(dir, "audit", "audit.log"))
	p.cmd.Env = cleanEnv("SOFTHSM2_CONF="+strings.TrimSpace(string(out)), "HSMKMS_E2E_ALICE_SECRET=s")
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.cmd.Process.Kill(); <-p.done })
	endpoint := "http://" + addr
	p.waitHealthy(t, endpoint)
	waitReady := func(status int, body string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			resp, err := http.Get(endpoint + "/readyz")
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == status && strings.Contains(string(b), body) {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("/readyz answered %d %q, want %d %q\n%s", resp.StatusCode, b, status, body, p.stderr)
				}
			} else if time.Now().After(deadline) {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitReady(200, "ok")
	disk := filepath.Join("/proc", fmt.Sprint(p.cmd.Process.Pid), "root", data)
	filler := fillDisk(t, disk)
	waitReady(503, "store unavailable")
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitReady(200, "ok")
	c := newClient(endpoint, "AKIDALICE", "s", nil)
	if _, err := c.ListKeys(ctxT(t), &kms.ListKeysInput{}); err != nil {
		var apiErr interface{ ErrorCode() string }
		if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "AccessDeniedException" {
			t.Errorf("a request after the store recovered: %v", err)
		}
	}
}
