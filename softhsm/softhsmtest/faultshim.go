package softhsmtest

import (
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

//go:embed testdata/pkcs11_fault_shim.c
var faultShimSource []byte

// Environment variables the fault shim reads when it is loaded.
const (
	// FaultModuleEnv names the module the shim forwards to (default
	// SoftHSM2's).
	FaultModuleEnv = "HSMKMS_FAULT_MODULE"
	// FaultControlEnv names the control file; without it the shim only
	// forwards.
	FaultControlEnv = "HSMKMS_FAULT_CONTROL"
	// faultShimEnv hands a shim built by a parent test process to its
	// children, so each test binary compiles it once.
	faultShimEnv = "HSMKMS_FAULT_SHIM"
)

var (
	shimOnce sync.Once
	shimPath string
	shimDir  string
	shimErr  error
)

// FaultShim compiles testdata/pkcs11_fault_shim.c, a PKCS#11 module that
// forwards every call to a real module (SoftHSM2) and injects faults on
// command (see FaultControl), once per test binary and its child processes,
// and returns the shared object's path. Load it as the PKCS#11 module, with
// FaultControl's Env in the loading process's environment. It fails tb
// (never skips) without a C compiler or the PKCS#11 headers, which come with
// the github.com/miekg/pkcs11 module.
func FaultShim(tb testing.TB) string {
	tb.Helper()
	shimOnce.Do(func() {
		if p := os.Getenv(faultShimEnv); p != "" {
			if _, err := os.Stat(p); err == nil {
				shimPath = p
				return
			}
		}
		shimPath, shimErr = buildFaultShim()
		if shimErr == nil {
			// Children of this process (fault tests that need a module of
			// their own) reuse it.
			shimErr = os.Setenv(faultShimEnv, shimPath)
		}
	})
	if shimErr != nil {
		tb.Fatalf("fault shim: %v", shimErr)
	}
	return shimPath
}

func buildFaultShim() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/miekg/pkcs11").Output()
	if err != nil {
		return "", fmt.Errorf("finding the PKCS#11 headers (go list -m github.com/miekg/pkcs11): %v", err)
	}
	include := strings.TrimSpace(string(out))
	if _, err := os.Stat(filepath.Join(include, "pkcs11.h")); err != nil {
		return "", fmt.Errorf("PKCS#11 headers: %v", err)
	}
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "gcc"
	}
	shimDir, err = os.MkdirTemp("", "hsmkms-fault-shim-*")
	if err != nil {
		return "", err
	}
	src := filepath.Join(shimDir, "pkcs11_fault_shim.c")
	if err := os.WriteFile(src, faultShimSource, 0o600); err != nil {
		return "", err
	}
	so := filepath.Join(shimDir, "pkcs11_fault_shim.so")
	out, err = exec.Command(cc, "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-fvisibility=hidden",
		"-I", include, "-o", so, src, "-ldl", "-lpthread").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building with %s (cgo needs a C compiler too: apt-get install -y gcc): %v\n%s", cc, err, out)
	}
	return so, nil
}

// Fault is what the shim does to the calls it matches: return a CKR code
// without forwarding the call, or, with Hang, block until Release and then
// forward it.
type Fault struct {
	Return uint // a CKR_* code
	Hang   bool
}

// CKR codes (PKCS#11 2.40) of the faults a network HSM shows, for Fail
// where the caller does not import a PKCS#11 package.
const (
	CKRDeviceError          uint = 0x30
	CKRDeviceRemoved        uint = 0x32
	CKRSessionHandleInvalid uint = 0xB3
	CKRTokenNotPresent      uint = 0xE0
	CKRUserNotLoggedIn      uint = 0x101
)

// Fail is the fault that makes a call return code.
func Fail(code uint) Fault { return Fault{Return: code} }

// Hang blocks calls until FaultControl.Release, as a network HSM that stops
// answering does.
var Hang = Fault{Hang: true}

// FaultControl commands a fault shim through its control file, from the
// process that loaded the shim or from any other.
type FaultControl struct {
	tb      testing.TB
	path    string
	mu      sync.Mutex
	seq     int
	release int
	cmd     []string // the command in force, without seq and release
}

// NewFaultControl makes a control file (no fault) in a directory of tb's.
func NewFaultControl(tb testing.TB) *FaultControl {
	tb.Helper()
	c := &FaultControl{tb: tb, path: filepath.Join(tb.TempDir(), "fault-control")}
	c.write([]string{"action=none"}, false)
	return c
}

// Env is the environment a process needs to load the shim under this
// control, forwarding to module.
func (c *FaultControl) Env(module string) []string {
	return []string{FaultModuleEnv + "=" + module, FaultControlEnv + "=" + c.path}
}

// Setenv puts Env into this test's environment, for a shim loaded in this
// process.
func (c *FaultControl) Setenv(tb testing.TB, module string) {
	tb.Helper()
	for _, kv := range c.Env(module) {
		k, v, _ := strings.Cut(kv, "=")
		tb.Setenv(k, v)
	}
}

// Set injects f into the next count calls (0: every call, until Clear) of
// the named functions: full names (C_Encrypt), prefixes (C_Encrypt*,
// matching C_EncryptInit, C_Encrypt, C_EncryptUpdate, C_EncryptFinal) or
// "all". C_CloseSession, C_CloseAllSessions and C_Finalize still reach the
// real module; a fault only replaces their result.
func (c *FaultControl) Set(f Fault, functions []string, count int) {
	action := "fail"
	if f.Hang {
		action = "hang"
	}
	c.write([]string{
		"action=" + action,
		"rv=0x" + strconv.FormatUint(uint64(f.Return), 16),
		"functions=" + strings.Join(functions, ","),
		"count=" + strconv.Itoa(count),
	}, false)
}

// Clear ends the fault: calls forward again. Calls a hang blocked stay
// blocked until Release.
func (c *FaultControl) Clear() { c.write([]string{"action=none"}, false) }

// Release lets every call blocked by a hang go on to the real module. A hang
// still set blocks the calls after them.
func (c *FaultControl) Release() {
	c.mu.Lock()
	cmd := c.cmd
	c.mu.Unlock()
	c.write(cmd, true)
}

func (c *FaultControl) write(cmd []string, release bool) {
	c.tb.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if release {
		c.release++
	} else {
		c.seq++
	}
	c.cmd = cmd
	body := fmt.Sprintf("seq=%d\nrelease=%d\n%s\n", c.seq, c.release, strings.Join(cmd, "\n"))
	// Replaced whole, never rewritten in place: the shim reads a complete
	// command and sees a new file (inode) each time.
	tmp := c.path + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
		c.tb.Errorf("fault control: %v", err)
		return
	}
	if err := os.Rename(tmp, c.path); err != nil {
		c.tb.Errorf("fault control: %v", err)
	}
}

// FaultStatus is what the shim reports.
type FaultStatus struct {
	Sessions int // sessions open in the real module
	Hanging  int // calls blocked now
	Injected int // faults injected since the shim was loaded
}

// Status reads the shim's last report; an error if no shim loaded under
// this control has reported yet.
func (c *FaultControl) Status() (FaultStatus, error) {
	b, err := os.ReadFile(c.path + ".status")
	if err != nil {
		return FaultStatus{}, err
	}
	var s FaultStatus
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return FaultStatus{}, fmt.Errorf("fault shim status %q: %v", line, err)
		}
		switch k {
		case "sessions":
			s.Sessions = n
		case "hanging":
			s.Hanging = n
		case "injected":
			s.Injected = n
		}
	}
	return s, nil
}
