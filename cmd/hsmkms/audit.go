package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hsmkms/hsmkms/audit"
)

const auditUsage = `usage: hsmkms audit verify --public-key FILE [--require-signed] LOG...

Checks an audit log as one hash chain, oldest record first, and the
signatures of its checkpoints. LOG is either
  - the audit directory (DATA-DIR/audit, holding audit.log) or the current
    log file: its rotated files (FILE.<time>.<seq>) are found and read first,
    so this works before the first rotation and after any number of them:
      hsmkms audit verify --public-key .hsmkms/audit-public-key.pem .hsmkms/audit
  - or the files themselves, oldest first: the rotated files, then the
    current one (a shell pattern that matches no file, such as audit.log.*
    before the first rotation, is skipped):
      hsmkms audit verify --public-key /var/lib/hsmkms/audit-public-key.pem \
          /var/log/hsmkms/audit.log.* /var/log/hsmkms/audit.log
Exit status 0: intact (warnings, such as unsigned records after the last
checkpoint, are printed); 1: tampered, unreadable or misused.`

// defaultAuditFileName is the current log's name in the audit directory
// serve uses by default (DATA-DIR/audit/audit.log).
const defaultAuditFileName = "audit.log"

// auditCommand runs "hsmkms audit ...".
func auditCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "verify" {
		if len(args) > 0 && isHelp(args[0]) {
			fmt.Fprintln(stdout, auditUsage)
			return flag.ErrHelp
		}
		fmt.Fprintln(stderr, auditUsage)
		if len(args) == 0 {
			return errUsage
		}
		return fmt.Errorf("audit: unknown subcommand %q (want verify)", args[0])
	}
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {} // printed below: to stdout when asked for, to stderr after a mistake
	keyFile := fs.String("public-key", "", "the audit signing key's public key, PEM or DER (the server writes `FILE` to <data-dir>/audit-public-key.pem)")
	requireSigned := fs.Bool("require-signed", false, "fail if records after the last checkpoint are unsigned")
	// Flags may come before or after the file names.
	var files []string
	for rest := args[1:]; ; {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprintln(stdout, auditUsage)
				return err
			}
			fmt.Fprintln(stderr, auditUsage)
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
		return errors.New("audit verify: name the log: its directory (DATA-DIR/audit), its current file, or its files oldest first")
	}
	files, err := logFiles(files, stdout)
	if err != nil {
		return fmt.Errorf("audit verify: %w", err)
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

func isHelp(arg string) bool {
	return arg == "help" || arg == "-h" || arg == "-help" || arg == "--help"
}

// logFiles turns the LOG arguments into the files to verify, oldest first.
// One argument that is a directory names its audit.log; one that is a file
// names that file's log, whose rotated files are found beside it
// (audit.LogFiles). Several arguments are the files, in the order given. A
// shell pattern that matched nothing, which the shell passes on as it is
// (audit.log.* before the first rotation), is skipped with a note.
func logFiles(args []string, stdout io.Writer) ([]string, error) {
	var files []string
	for _, arg := range args {
		if unmatchedPattern(arg) {
			fmt.Fprintf(stdout, "note: %s matches no file (no rotated files yet?); skipped\n", arg)
			continue
		}
		files = append(files, arg)
	}
	switch len(files) {
	case 0:
		return nil, fmt.Errorf("%s: %w", strings.Join(args, " "), os.ErrNotExist)
	case 1:
		file := files[0]
		if st, err := os.Stat(file); err == nil && st.IsDir() {
			file = filepath.Join(file, defaultAuditFileName)
		}
		return audit.LogFiles(file)
	}
	return files, nil
}

// unmatchedPattern reports whether arg is a shell pattern that names no
// file, and is no file's name either.
func unmatchedPattern(arg string) bool {
	if !strings.ContainsAny(arg, "*?[") {
		return false
	}
	if _, err := os.Lstat(arg); !errors.Is(err, os.ErrNotExist) {
		return false
	}
	matches, err := filepath.Glob(arg)
	return err == nil && len(matches) == 0
}
