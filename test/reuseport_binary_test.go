package test

import (
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
)

// TestBinaryReusePort: two hsmkms processes started with --reuse-port on one
// address both bind it, and the kernel spreads new connections between
// them: each answers some of 40 requests made on fresh connections (all 40
// on one would happen with probability 2^-39). When one is killed, the
// other answers every request. Without the flag a second process is refused
// (TestBinaryBusyPortCreatesNothing).
func TestBinaryReusePort(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	endpoint := "http://" + addr
	start := func() *proc {
		p := startProc(t, cleanEnv(), "serve", "--dev", "--data-dir", t.TempDir(), "--listen", addr, "--reuse-port")
		p.waitHealthy(t, endpoint)
		return p
	}
	a := start()
	b := start()
	// A fresh connection for every request, so each is hashed anew.
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	c := newClient(endpoint, "test", "test", hc)
	random := func(n int) {
		t.Helper()
		for range n {
			if _, err := c.GenerateRandom(ctxT(t), &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	answered := func(p *proc) int {
		n := 0
		for _, rec := range accessLines(t, p.stderr.String()) {
			if rec["operation"] == "GenerateRandom" {
				n++
			}
		}
		return n
	}
	random(40)
	var na, nb int
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if na, nb = answered(a), answered(b); na+nb == 40 {
			break
		}
	}
	if na+nb != 40 || na == 0 || nb == 0 {
		t.Fatalf("40 requests: %d answered by one process, %d by the other; want both to answer some, 40 in all", na, nb)
	}
	t.Logf("40 requests on fresh connections: %d and %d", na, nb)

	a.cmd.Process.Kill()
	<-a.done
	random(20)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && answered(b) < nb+20; time.Sleep(20 * time.Millisecond) {
	}
	if got := answered(b); got != nb+20 {
		t.Fatalf("after the other was killed, the survivor answered %d of 20 requests", got-nb)
	}
}
