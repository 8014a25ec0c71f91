package test

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/hsmkms/hsmkms/softhsm"
	"github.com/hsmkms/hsmkms/softhsm/softhsmtest"
)

// wantOneOf asserts that err is one of the exceptions codes, with HTTP 500
// (all the exceptions of a token fault are server faults the SDKs retry).
func wantOneOf(t *testing.T, what string, err error, codes ...string) string {
	t.Helper()
	code := apiCode(err)
	for _, c := range codes {
		if code == c {
			var re *awshttp.ResponseError
			if !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusInternalServerError {
				t.Fatalf("%s: %v, want HTTP 500", what, err)
			}
			return code
		}
	}
	t.Fatalf("%s: %v, want one of %v", what, err, codes)
	return ""
}

// The hsmkms binary on the fault shim, in front of a SoftHSM2 token: each
// fault a network HSM shows — an error for every call (device error, lost
// session, lost login, device removed), or no answer at all — is injected in
// turn into the running server. During it, KMS calls fail with the
// exception AWS documents for it (KeyUnavailableException for a key that
// cannot be used, KMSInternalException where no key is involved,
// DependencyTimeoutException for a call the token did not answer within
// --pkcs11-call-timeout), and /readyz answers 503. After it, without a
// restart, /readyz answers 200, the key made before decrypts what it
// encrypted, a new key works, and the module holds no more sessions than
// the pool's bound and the login. The metrics an operator pages on show
// each fault: the CKR code of an error fault in hsmkms_token_errors_total,
// the exceptions in hsmkms_requests_total.
func TestBinaryTokenFaultsThroughShim(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tok, err := softhsm.Init(ctx, t.TempDir(), "hsmkms-shim")
	if err != nil {
		t.Fatal(err)
	}
	shim := softhsmtest.FaultShim(t)
	ctl := softhsmtest.NewFaultControl(t)
	const maxSessions = 4
	addr, maddr := freeAddr(t), freeAddr(t)
	env := cleanEnv(append(ctl.Env(tok.ModulePath), "SOFTHSM2_CONF="+tok.ConfigPath)...)
	p := startProc(t, env, "serve", "--dev", "--data-dir", t.TempDir(), "--listen", addr, "--log-level", "warn",
		"--pkcs11-module", shim, "--token-label", tok.Label, "--pin-file", filepath.Join(tok.Dir, "user.pin"),
		"--max-sessions", strconv.Itoa(maxSessions), "--pkcs11-call-timeout", "1s", "--metrics-listen", maddr)
	endpoint := "http://" + addr
	p.waitHealthy(t, endpoint)
	waitReadyz(t, p, endpoint, http.StatusOK)
	t.Cleanup(func() { ctl.Clear(); ctl.Release() })

	c := newClient(endpoint, mainAKID, mainSecret, nil)
	key := createKey(t, c)
	keyID := aws.ToString(key.KeyId)
	blob := encrypt(t, c, keyID, []byte("made before the faults"), nil)

	const (
		unavailable = "KeyUnavailableException"
		internal    = "KMSInternalException"
		timeout     = "DependencyTimeoutException"
	)
	// Every exception a client saw so far, each counted by the server at
	// least once (the server counts each attempt of a retried request).
	clientSaw := map[string]int{}
	for _, fault := range []struct {
		name  string
		fault softhsmtest.Fault
		ckr   string // the CKR name the metrics count it under
	}{
		{"device error", softhsmtest.Fail(softhsmtest.CKRDeviceError), "CKR_DEVICE_ERROR"},
		{"session handle invalid", softhsmtest.Fail(softhsmtest.CKRSessionHandleInvalid), "CKR_SESSION_HANDLE_INVALID"},
		{"user not logged in", softhsmtest.Fail(softhsmtest.CKRUserNotLoggedIn), "CKR_USER_NOT_LOGGED_IN"},
		{"device removed", softhsmtest.Fail(softhsmtest.CKRDeviceRemoved), "CKR_DEVICE_REMOVED"},
		{"hang", softhsmtest.Hang, ""},
	} {
		t.Logf("fault: %s", fault.name)
		ctl.Set(fault.fault, []string{"all"}, 0)
		// Requests until one has waited for the token: an error fault is
		// met by the first; a hang by the first call to reach the token,
		// which ends, like the probes after it, in DependencyTimeout.
		seen := map[string]int{}
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, err := c.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: key.KeyId, Plaintext: []byte("x")})
			seen[wantOneOf(t, fault.name+": Encrypt", err, unavailable, timeout)]++
			_, err = c.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: blob})
			seen[wantOneOf(t, fault.name+": Decrypt", err, unavailable, timeout)]++
			_, err = c.GenerateRandom(ctxT(t), &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(16)})
			seen[wantOneOf(t, fault.name+": GenerateRandom", err, internal, timeout)]++
			_, err = c.CreateKey(ctxT(t), &kms.CreateKeyInput{})
			seen[wantOneOf(t, fault.name+": CreateKey", err, internal, timeout)]++
			if !fault.fault.Hang && seen[timeout] > 0 {
				t.Fatalf("%s: DependencyTimeoutException, though the token answered every call", fault.name)
			}
			if !fault.fault.Hang || seen[timeout] > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: exceptions %v after 30s", fault.name, seen)
			}
		}
		t.Logf("%s: exceptions %v", fault.name, seen)
		waitReadyz(t, p, endpoint, http.StatusServiceUnavailable)
		_, fams := scrapeMetrics(t, "http://"+maddr)
		if fault.ckr != "" {
			if n := sample(t, fams, "hsmkms_token_errors_total", "ckr", fault.ckr); n < 1 {
				t.Fatalf("%s: hsmkms_token_errors_total{ckr=%q} = %v", fault.name, fault.ckr, n)
			}
		}
		for code, n := range seen {
			clientSaw[code] += n
			counted := 0.0
			for _, m := range fams["hsmkms_requests_total"].GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "outcome" && l.GetValue() == code {
						counted += m.GetCounter().GetValue()
					}
				}
			}
			if counted < float64(clientSaw[code]) {
				t.Fatalf("%s: %d requests failed with %s so far, hsmkms_requests_total counts %v", fault.name, clientSaw[code], code, counted)
			}
		}

		ctl.Clear()
		ctl.Release()
		waitReadyz(t, p, endpoint, http.StatusOK)
		if got := decrypt(t, c, blob, nil).Plaintext; string(got) != "made before the faults" {
			t.Fatalf("after %s: the key made before decrypts to %q", fault.name, got)
		}
		fresh := createKey(t, c)
		if got := decrypt(t, c, encrypt(t, c, aws.ToString(fresh.KeyId), []byte("fresh"), nil), nil).Plaintext; string(got) != "fresh" {
			t.Fatalf("after %s: a new key decrypts to %q", fault.name, got)
		}
		// Sessions a stuck call held close when it returns, just after.
		deadline = time.Now().Add(30 * time.Second)
		for {
			st, err := ctl.Status()
			if err != nil {
				t.Fatal(err)
			}
			if st.Sessions <= maxSessions+1 {
				t.Logf("after %s: %d sessions open", fault.name, st.Sessions)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %s: %d sessions open, more than %d and the login", fault.name, st.Sessions, maxSessions)
			}
			time.Sleep(50 * time.Millisecond)
		}
		select {
		case <-p.done:
			t.Fatalf("hsmkms exited: %v\nstderr:\n%s", p.err, p.stderr)
		default:
		}
	}
	stop(t, p)
}
