package service

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/service/store"
	"github.com/hsmkms/hsmkms/softhsm/softhsmtest"
)

// hungChildEnv marks the child process TestHungTokenOperations runs in: the
// fault shim loads SoftHSM2, which a process has only once.
const hungChildEnv = "HSMKMS_SERVICE_HUNG_CHILD"

// The token stops answering encryptions (softhsmtest.FaultShim, a hang on
// C_EncryptInit and C_Encrypt). Operations whose callback is left in the
// token — ReEncrypt after its decryption, GenerateDataKey after drawing the
// key, Encrypt — fail with DependencyTimeoutException (HTTP 500) once, then
// at once with KeyUnavailableException, under the race detector; when the
// token answers again, every operation works and the ciphertext made before
// decrypts.
func TestHungTokenOperations(t *testing.T) {
	if os.Getenv(hungChildEnv) == "" {
		softhsmtest.FaultShim(t) // built once, for the child
		cmd := exec.Command(os.Args[0], "-test.run=^TestHungTokenOperations$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), hungChildEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestHungTokenOperations") {
			t.Fatalf("child process: %v\n%s", err, out)
		}
		t.Logf("child process:\n%s", out)
		return
	}
	ctx := context.Background()
	tok := softhsmtest.Token(t)
	ctl := softhsmtest.NewFaultControl(t)
	ctl.Setenv(t, tok.ModulePath)
	tk, err := hsm.Open(ctx, hsm.Config{ModulePath: softhsmtest.FaultShim(t), TokenLabel: tok.Label, PIN: softhsmtest.PIN(t, tok),
		SessionKeyCopies: true, CallTimeout: time.Second, LongCallTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(t.TempDir(), "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctl.Clear()
		ctl.Release()
		st.Close()
		tk.Close()
	})
	svc, err := New(Config{Token: tk, Store: st, Region: "eu-west-1"})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{svc: svc, token: tk, store: st}
	a, b := f.key(t), f.key(t)
	enc, err := svc.Encrypt(ctx, alice, EncryptInput{KeyId: a.KeyId, Plaintext: []byte("before")})
	if err != nil {
		t.Fatal(err)
	}
	ops := []struct {
		name string
		run  func() error
	}{
		{"ReEncrypt", func() error {
			_, err := svc.ReEncrypt(ctx, alice, ReEncryptInput{CiphertextBlob: enc.CiphertextBlob, DestinationKeyId: b.KeyId})
			return err
		}},
		{"GenerateDataKey", func() error {
			n := int32(32)
			_, err := svc.GenerateDataKey(ctx, alice, GenerateDataKeyInput{KeyId: a.KeyId, NumberOfBytes: &n}, true)
			return err
		}},
		{"Encrypt", func() error {
			_, err := svc.Encrypt(ctx, alice, EncryptInput{KeyId: b.KeyId, Plaintext: []byte("x")})
			return err
		}},
	}

	ctl.Set(softhsmtest.Hang, []string{"C_EncryptInit", "C_Encrypt"}, 0)
	for _, op := range ops {
		// Each waits for the token only while it is not yet known stalled.
		deadline := time.Now().Add(time.Minute)
		for {
			e := wantTokenError(t, op.name, op.run())
			if e.Code == ExcDependencyTimeout {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never met the hang within a minute", op.name)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	ctl.Clear()
	ctl.Release()
	deadline := time.Now().Add(time.Minute)
	for svc.Ready(ctx) != nil {
		if time.Now().After(deadline) {
			t.Fatal("not ready a minute after the token answered again")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, op := range ops {
		if err := op.run(); err != nil {
			t.Errorf("%s after the hang: %v", op.name, err)
		}
	}
	dec, err := svc.Decrypt(ctx, alice, DecryptInput{CiphertextBlob: enc.CiphertextBlob})
	if err != nil || !bytes.Equal(dec.Plaintext, []byte("before")) {
		t.Fatalf("Decrypt after the hang = %+v, %v", dec, err)
	}
}

// wantTokenError asserts that err is one of the exceptions of a token that
// does not answer: DependencyTimeoutException for a request that waited for
// it, KeyUnavailableException for one that failed at once.
func wantTokenError(t *testing.T, what string, err error) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) || (e.Code != ExcDependencyTimeout && e.Code != ExcKeyUnavailable) {
		t.Fatalf("%s on a hung token: %v, want DependencyTimeoutException or KeyUnavailableException", what, err)
	}
	if StatusOf(e.Code) != 500 {
		t.Fatalf("%s: %s is HTTP %d, want 500", what, e.Code, StatusOf(e.Code))
	}
	return e
}
