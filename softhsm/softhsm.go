// Package softhsm creates SoftHSM2 tokens for development, tests and CI. The
// work is done by init-token.sh (embedded here, and run by `make run` and CI
// directly), so the shell and Go paths cannot drift apart.
//
// It imports only the standard library and no other hsmkms package.
package softhsm

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

//go:embed init-token.sh
var initScript []byte

// ModulePath is where Debian and Ubuntu install SoftHSM2's PKCS#11 module.
const ModulePath = "/usr/lib/softhsm/libsofthsm2.so"

// InstallHint is the command that installs SoftHSM2 on Debian and Ubuntu.
const InstallHint = "apt-get update && apt-get install -y softhsm2"

// ErrNotInstalled means softhsm2-util or the SoftHSM2 module is missing.
var ErrNotInstalled = errors.New("softhsm: SoftHSM2 is not installed (" + InstallHint + ")")

// Token is a SoftHSM2 token in a directory of its own.
type Token struct {
	Dir        string // holds softhsm2.conf, tokens/, user.pin, so.pin
	ConfigPath string // value for SOFTHSM2_CONF
	ModulePath string
	Label      string
}

// UserPIN reads the token's user PIN from its file.
func (t Token) UserPIN() (string, error) {
	b, err := os.ReadFile(filepath.Join(t.Dir, "user.pin"))
	if err != nil {
		return "", fmt.Errorf("softhsm: read user PIN: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Installed reports whether SoftHSM2's tool and module are present.
func Installed() error {
	if _, err := exec.LookPath("softhsm2-util"); err != nil {
		return ErrNotInstalled
	}
	if _, err := os.Stat(ModulePath); err != nil {
		return ErrNotInstalled
	}
	return nil
}

// Init creates (or finds, if it exists) a token labelled label under dir.
// It does not set SOFTHSM2_CONF; the caller does that before loading the
// module, because the module reads it once per process.
func Init(ctx context.Context, dir, label string) (Token, error) {
	if err := Installed(); err != nil {
		return Token{}, err
	}
	cmd := exec.CommandContext(ctx, "bash", "-s", "--", dir, label)
	cmd.Stdin = bytes.NewReader(initScript)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return Token{}, fmt.Errorf("softhsm: init token in %s: %v: %s", dir, err, strings.TrimSpace(stderr.String()))
	}
	conf := strings.TrimSpace(stdout.String())
	return Token{Dir: filepath.Dir(conf), ConfigPath: conf, ModulePath: ModulePath, Label: label}, nil
}
