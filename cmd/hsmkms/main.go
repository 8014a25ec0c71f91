// Command hsmkms is the hsmkms key service: the AWS KMS API in front of a
// PKCS#11 token.
//
//	hsmkms serve [flags]                                 run the service
//	hsmkms audit verify --public-key FILE LOG|DIR...     check audit log files
//	hsmkms admin status|backup|restore|adopt             operate a data directory
//	hsmkms version                                       print the version
//	hsmkms help                                          print the usage
//
// Secrets (the token PIN, SigV4 secrets) come from files or the environment,
// never from flags, which other users can read in the process list.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// version is stamped at build time (the Makefile and the Dockerfile pass
// -ldflags "-X main.version=$(git describe --tags --always --dirty)"). When
// it is not, versionString falls back to what the Go toolchain recorded.
var version string

const usage = `hsmkms: the AWS KMS API in front of a PKCS#11 token.

Usage:
  hsmkms serve [flags]     run the key service (hsmkms serve --help lists the flags)
  hsmkms audit verify --public-key FILE LOG...
                           check the audit log's hash chain and signed checkpoints
                           (LOG: the audit directory, the current log or the files)
  hsmkms tls new-key       create the TLS key pair in the token and print a CSR
  hsmkms admin status|backup|restore|adopt
                           operate a data directory: status, online backup,
                           offline restore, adoption of keys a restore lost
                           (hsmkms admin help)
  hsmkms version           print the version
  hsmkms help              print this help

Secrets (the token PIN, SigV4 secrets) come from files or the environment,
never from flags.`

// errUsage reports a command line without a command: the usage has been
// printed to stderr, and the exit status is 1.
var errUsage = errors.New("no command given")

func main() {
	os.Exit(exitCode(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr), os.Stderr))
}

// exitCode turns run's result into the exit status, printing the error
// unless its message was printed already: 0 for success and for help that
// was asked for (flag.ErrHelp), 1 otherwise.
func exitCode(err error, stderr io.Writer) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage), errors.As(err, new(errLogged)):
		return 1
	}
	fmt.Fprintln(stderr, "hsmkms:", err)
	return 1
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return errUsage
	}
	switch args[0] {
	case "serve":
		ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return serve(ctx, args[1:], stdout, stderr)
	case "audit":
		return auditCommand(ctx, args[1:], stdout, stderr)
	case "tls":
		return tlsCommand(ctx, args[1:], stdout, stderr)
	case "admin":
		return adminCommand(ctx, args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "hsmkms", versionString())
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprintln(stdout, usage)
		return nil
	default:
		fmt.Fprintln(stderr, usage)
		return fmt.Errorf("unknown command %q (see the list above)", args[0])
	}
}

// versionString is the stamped version, else the main module's version as
// the Go toolchain recorded it (from the VCS for a `go build` in a checkout,
// e.g. v0.0.0-20261204173120-df46b40e36fb+dirty; the module version for
// `go install …@v1.2.3`), else "dev".
func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
