package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/hsmkms/hsmkms/audit"
)

const auditUsage = `usage: hsmkms audit verify --public-key FILE [--require-signed] LOG...

Checks audit log files as one hash chain, oldest first: the rotated files
(LOG.<time>.<seq>, which sort in order) then the current file, e.g.
  hsmkms audit verify --public-key /var/lib/hsmkms/audit-public-key.pem \
      /var/log/hsmkms/audit.log.* /var/log/hsmkms/audit.log
Exit status 0: intact (warnings, such as unsigned records after the last
checkpoint, are printed); 1: tampered, unreadable or misused.`

// auditCommand runs "hsmkms audit ...".
func auditCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "verify" {
		fmt.Fprintln(stderr, auditUsage)
		if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
			return flag.ErrHelp
		}
		return fmt.Errorf("audit: unknown subcommand %q (want verify)", args[0])
	}
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, auditUsage) }
	keyFile := fs.String("public-key", "", "the audit signing key's public key, PEM or DER (the server writes `FILE` to <data-dir>/audit-public-key.pem)")
	requireSigned := fs.Bool("require-signed", false, "fail if records after the last checkpoint are unsigned")
	// Flags may come before or after the file names.
	var files []string
	for rest := args[1:]; ; {
		if err := fs.Parse(rest); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		files, rest = append(files, fs.Arg(0)), fs.Args()[1:]
	}
	if *keyFile == "" {
		return errors.New("audit verify: --public-key FILE is required: only the audit key's signatures show that the log was not rewritten (the server writes it to <data-dir>/audit-public-key.pem)")
	}
	if len(files) == 0 {
		return errors.New("audit verify: name the log files, oldest first: the rotated files, then the current one")
	}
	pemOrDER, err := os.ReadFile(*keyFile)
	if err != nil {
		return fmt.Errorf("audit verify: %w", err)
	}
	spki, err := audit.ParsePublicKey(pemOrDER)
	if err != nil {
		return fmt.Errorf("audit verify: %s: %w", *keyFile, err)
	}

	rep, err := audit.Verify(files, spki)
	if ve := (*audit.VerifyError)(nil); errors.As(err, &ve) {
		fmt.Fprintf(stdout, "TAMPERED: %s line %d: %v\n", ve.File, ve.Line, ve.Detail)
		return fmt.Errorf("audit log is not intact: %w", err)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "OK: %d files, %d records (seq %d to %d), %d checkpoints by key %s\n",
		rep.Files, rep.Records, rep.FirstSeq, rep.LastSeq, rep.Checkpoints, rep.KeyFingerprint)
	if rep.Checkpoints > 0 {
		fmt.Fprintf(stdout, "signed through seq %d at %s\n", rep.SignedSeq, rep.SignedAt.Format(time.RFC3339))
	}
	for _, w := range rep.Warnings {
		fmt.Fprintln(stdout, "warning:", w)
	}
	if *requireSigned && rep.Unsigned > 0 {
		return fmt.Errorf("audit verify: %d records after the last checkpoint are not signed (--require-signed)", rep.Unsigned)
	}
	return nil
}
