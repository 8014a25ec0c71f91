// Package softhsmtest gives each test binary one SoftHSM2 token of its own in
// a temporary directory. SoftHSM2 misbehaves when several processes create and
// destroy objects in one token directory, so tokens are never shared between
// processes. A test that needs SoftHSM2 and cannot find it fails; it does not
// skip. It also builds the shims that fault tests put between hsmkms and the
// real token: CrashShim kills a process at a chosen write, FaultShim is a
// PKCS#11 module that forwards to SoftHSM2 and injects errors and hangs on
// command (FaultControl).
package softhsmtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/hsmkms/hsmkms/softhsm"
)

var (
	once  sync.Once
	token softhsm.Token
	err   error
	dir   string
)

// Token returns this process's token, creating it on first use, and points
// SOFTHSM2_CONF at it. It fails tb if SoftHSM2 is missing.
func Token(tb testing.TB) softhsm.Token {
	tb.Helper()
	once.Do(func() {
		dir, err = os.MkdirTemp("", "hsmkms-softhsm-*")
		if err != nil {
			return
		}
		token, err = softhsm.Init(context.Background(), dir, "hsmkms-test")
		if err == nil {
			err = os.Setenv("SOFTHSM2_CONF", token.ConfigPath)
		}
	})
	if errors.Is(err, softhsm.ErrNotInstalled) {
		tb.Fatalf("these tests need a real SoftHSM2 token: %v", err)
	}
	if err != nil {
		tb.Fatalf("SoftHSM2 token for tests: %v", err)
	}
	return token
}

// PIN returns the token's user PIN, failing tb if it cannot be read.
func PIN(tb testing.TB, t softhsm.Token) string {
	tb.Helper()
	pin, err := t.UserPIN()
	if err != nil {
		tb.Fatal(err)
	}
	return pin
}

// Main runs the tests and then removes the token directory and the fault
// shim, if they were made.
// Use it from TestMain: os.Exit(softhsmtest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	for _, d := range []string{dir, shimDir} {
		if d == "" {
			continue
		}
		if err := os.RemoveAll(d); err != nil {
			fmt.Fprintf(os.Stderr, "softhsmtest: remove %s: %v\n", d, err)
		}
	}
	return code
}
