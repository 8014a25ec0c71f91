// Command hsmkms is the hsmkms key service: the AWS KMS API in front of a
// PKCS#11 token.
//
//	hsmkms serve [flags]                                 run the service
//	hsmkms audit verify [--public-key FILE] FILE...      check audit log files
//	hsmkms version                                       print the version
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
	"syscall"
)

var version = "dev"

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "hsmkms:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: hsmkms serve [flags] | hsmkms audit verify [--public-key FILE] FILE... | hsmkms version")
		return flag.ErrHelp
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
	case "version":
		fmt.Fprintln(stdout, "hsmkms", version)
		return nil
	default:
		return fmt.Errorf("unknown command %q (want serve, audit or version)", args[0])
	}
}
