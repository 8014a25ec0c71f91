package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/hsmkms/hsmkms/service"
	"github.com/hsmkms/hsmkms/service/store"
)

const adminUsage = `usage: hsmkms admin COMMAND [flags]

Commands for the operator of a data directory (--data-dir DIR, default
./.hsmkms; or --config FILE, whose data_dir is used):

  status [--json]
      What the server running on DIR reports: version, token (label, serial,
      model, sessions), keys by state, audit log, store size.
  backup FILE
      An online backup of the server's metadata store (keys, aliases,
      grants): one consistent snapshot, streamed over the admin socket and
      written to FILE (mode 0600) only once it is whole and checked. The key
      material stays in the token: back the token up by the HSM's own means.
  restore [--force] FILE
      Restores a backup into DIR, offline (no server may run on DIR). An
      existing store is replaced only with --force, and is kept, renamed
      aside. Start hsmkms on DIR with the same token afterwards.
  adopt [--json]
      Lists the keys whose versions are in the token without a record (made
      after the backup a restore came from).
  adopt --account ACCOUNT (--key-id ID[,ID...] | --all) [--json]
      Brings them back under a record: new records are made in ACCOUNT,
      Disabled, with the account's default key policy; enable them when
      you have checked them (aws kms enable-key). Nothing in the token is
      changed or destroyed.

status, backup and adopt talk to the running server over its admin socket
(DIR/admin.sock); every request is recorded in its audit log.`

// adminCommand runs "hsmkms admin ...".
func adminCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || isHelp(args[0]) {
		if len(args) > 0 {
			fmt.Fprintln(stdout, adminUsage)
			return flag.ErrHelp
		}
		fmt.Fprintln(stderr, adminUsage)
		return errUsage
	}
	// Interrupted, a command cleans up (a backup's temporary file).
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	cmd := args[0]
	fs := flag.NewFlagSet("admin "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {}
	o := &adminOptions{stderr: stderr}
	fs.StringVar(&o.dataDir, "data-dir", "", "the server's data directory (default ./.hsmkms)")
	fs.StringVar(&o.configFile, "config", "", "the server's YAML configuration file, for its data_dir")
	fs.BoolVar(&o.json, "json", false, "print JSON (status, adopt)")
	fs.BoolVar(&o.force, "force", false, "restore: replace an existing store (its files are kept, renamed aside)")
	fs.StringVar(&o.account, "account", "", "adopt: the account (12 digits) new records are made in")
	fs.Var(&o.keyIDs, "key-id", "adopt: a key to adopt (repeat, or comma-separated)")
	fs.BoolVar(&o.all, "all", false, "adopt: every key that can be adopted")
	// Flags may come before or after the file name.
	var files []string
	for rest := args[1:]; ; {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprintln(stdout, adminUsage)
				return err
			}
			fmt.Fprintln(stderr, adminUsage)
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		files, rest = append(files, fs.Arg(0)), fs.Args()[1:]
	}
	if err := o.resolveDataDir(); err != nil {
		return err
	}
	wantFiles := 0
	if cmd == "backup" || cmd == "restore" {
		wantFiles = 1
	}
	if len(files) != wantFiles {
		fmt.Fprintln(stderr, adminUsage)
		if wantFiles == 1 {
			return fmt.Errorf("admin %s: name one backup file", cmd)
		}
		return fmt.Errorf("admin %s: unexpected arguments %v", cmd, files)
	}
	switch cmd {
	case "status":
		return o.status(ctx, stdout)
	case "backup":
		return o.backup(ctx, files[0], stdout)
	case "restore":
		return o.restore(ctx, files[0], stdout)
	case "adopt":
		return o.adopt(ctx, stdout)
	}
	fmt.Fprintln(stderr, adminUsage)
	return fmt.Errorf("admin: unknown command %q (want status, backup, restore or adopt)", cmd)
}

type adminOptions struct {
	dataDir, configFile string
	json, force, all    bool
	account             string
	keyIDs              stringList
	stderr              io.Writer
}

// resolveDataDir takes the data directory from --data-dir, else from the
// config file's data_dir, else the default serve uses.
func (o *adminOptions) resolveDataDir() error {
	if o.dataDir == "" && o.configFile != "" {
		so := options{configFile: o.configFile}
		if err := so.loadFile(); err != nil {
			return err
		}
		o.dataDir = so.dataDir
	}
	if o.dataDir == "" {
		o.dataDir = ".hsmkms"
	}
	return nil
}

func (o *adminOptions) socket() string { return filepath.Join(o.dataDir, adminSocketName) }

// client returns an HTTP client that reaches the admin socket.
func (o *adminOptions) client() *http.Client {
	sock := o.socket()
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		DisableCompression: true,
	}}
}

// call makes one admin request and returns the response, whose status is
// 200; any other status is returned as an error with the server's message.
func (o *adminOptions) call(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		js, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://hsmkms-admin"+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "hsmkms-admin/"+versionString())
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := o.client().Do(req)
	if oe := (*net.OpError)(nil); errors.As(err, &oe) && oe.Op == "dial" {
		return nil, fmt.Errorf("no hsmkms server answers on %s (is one running on data directory %s?): %w", o.socket(), o.dataDir, err)
	}
	if err != nil {
		return nil, fmt.Errorf("the server on %s: %w", o.socket(), err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var e struct {
			Error string `json:"error"`
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		return resp, fmt.Errorf("the server refused: %s (HTTP %d)", e.Error, resp.StatusCode)
	}
	return resp, nil
}

func (o *adminOptions) getJSON(ctx context.Context, path string, v any) error {
	resp, err := o.call(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

func (o *adminOptions) status(ctx context.Context, stdout io.Writer) error {
	var rep statusReport
	if err := o.getJSON(ctx, "/v1/status", &rep); err != nil {
		return fmt.Errorf("admin status: %w", err)
	}
	if o.json {
		return printJSON(stdout, rep)
	}
	printStatus(stdout, &rep, time.Now())
	return nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printStatus prints the status report for a person.
func printStatus(w io.Writer, r *statusReport, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "hsmkms\t%s, up %s (since %s)\n", r.Version, now.Sub(r.StartedAt).Round(time.Second), r.StartedAt.Format(time.RFC3339))
	fmt.Fprintf(tw, "endpoint\t%s\n", r.Endpoint)
	fmt.Fprintf(tw, "data dir\t%s\n", r.DataDir)
	t := r.Token
	fmt.Fprintf(tw, "token\tlabel %q, serial %q: %s %s (hardware %s, firmware %s)\n", t.Label, t.Serial, t.Manufacturer, t.Model, t.Hardware, t.Firmware)
	if r.TokenError != "" {
		fmt.Fprintf(tw, "\tERROR: %s\n", r.TokenError)
	}
	if r.TokenReady {
		fmt.Fprintf(tw, "\tready (a canary encrypt and decrypt works)\n")
	} else {
		fmt.Fprintf(tw, "\tNOT READY: %s\n", r.TokenReadyError)
	}
	fmt.Fprintf(tw, "sessions\t%d in use, %d more may start, of %d (%d open)", t.SessionsInUse, t.SessionsMax-t.SessionsInUse, t.SessionsMax, t.SessionsOpen)
	if t.TokenSessions >= 0 {
		fmt.Fprintf(tw, "; the token counts %d", t.TokenSessions)
	}
	fmt.Fprintln(tw)
	states := make([]string, 0, len(r.KeysByState))
	for s := range r.KeysByState {
		states = append(states, s)
	}
	sort.Strings(states)
	var byState []string
	for _, s := range states {
		byState = append(byState, fmt.Sprintf("%s %d", s, r.KeysByState[s]))
	}
	fmt.Fprintf(tw, "keys\t%d", r.Keys)
	if len(byState) > 0 {
		fmt.Fprintf(tw, " (%s)", strings.Join(byState, ", "))
	}
	fmt.Fprintf(tw, "; %d aliases, %d grants\n", r.Aliases, r.Grants)
	switch a := r.Audit; {
	case a == nil:
		fmt.Fprintf(tw, "audit log\toff\n")
	default:
		state := "ok"
		if !a.OK {
			state = "BROKEN: " + a.Error
		}
		fmt.Fprintf(tw, "audit log\t%s\n", state)
		if a.File != "" {
			fmt.Fprintf(tw, "\t%s, %s\n", a.File, byteSize(a.Size))
		}
		fmt.Fprintf(tw, "\tlast record seq %d, signed through seq %d (%d unsigned)\n", a.Seq, a.SignedSeq, a.Unsigned)
	}
	var files []string
	var total int64
	for _, f := range r.Store.Files {
		files = append(files, fmt.Sprintf("%s %s", filepath.Base(f.Path), byteSize(f.Size)))
		total += f.Size
	}
	fmt.Fprintf(tw, "store\tschema %d, %s (%s)\n", r.Store.SchemaVersion, byteSize(total), strings.Join(files, ", "))
	tw.Flush()
}

// byteSize is a size for people: 1.5 MiB.
func byteSize(n int64) string {
	switch {
	case n < 0:
		return "size unknown"
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
}

// backup receives the archive and writes it to file: into a temporary
// file beside it, checked as it arrives (every part's SHA-256 against the
// manifest), fsynced, then renamed into place. A stream cut short leaves
// no file.
func (o *adminOptions) backup(ctx context.Context, file string, stdout io.Writer) error {
	resp, err := o.call(ctx, http.MethodGet, "/v1/backup", nil)
	if err != nil {
		return fmt.Errorf("admin backup: %w", err)
	}
	defer resp.Body.Close()
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".tmp-")
	if err != nil {
		return fmt.Errorf("admin backup: %w", err)
	}
	defer func() {
		if tmp != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	sum := sha256.New()
	tee := io.TeeReader(resp.Body, io.MultiWriter(tmp, sum))
	m, err := store.VerifyArchive(tee)
	if err != nil {
		return fmt.Errorf("admin backup: the archive the server sent is not whole (nothing written to %s): %w", file, err)
	}
	if _, err := io.Copy(io.Discard, tee); err != nil { // the tar's end padding
		return fmt.Errorf("admin backup: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("admin backup: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("admin backup: %w", err)
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return fmt.Errorf("admin backup: %w", err)
	}
	tmp = nil
	if err := syncDir(filepath.Dir(file)); err != nil {
		return fmt.Errorf("admin backup: %w", err)
	}
	fmt.Fprintf(stdout, "backup written to %s: %d keys, %d aliases, %d grants (store schema %d, by hsmkms %s at %s)\nsha256 %s\n",
		file, m.Keys, m.Aliases, m.Grants, m.SchemaVersion, m.HsmkmsVersion, m.CreatedAt.Format(time.RFC3339), hex.EncodeToString(sum.Sum(nil)))
	return nil
}

// syncDir fsyncs a directory, so a rename in it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// restore restores a backup into the data directory, offline.
func (o *adminOptions) restore(ctx context.Context, file string, stdout io.Writer) error {
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("admin restore: %w", err)
	}
	defer f.Close()
	// A running server holds the store's files locked, which Restore finds;
	// its admin socket answering says so sooner and more plainly.
	if c, err := net.DialTimeout("unix", o.socket(), time.Second); err == nil {
		c.Close()
		return fmt.Errorf("admin restore: a server is running on %s (its admin socket answers): restore is offline; stop the server first", o.dataDir)
	}
	if err := privateDir(o.dataDir, slog.New(slog.NewTextHandler(o.stderr, nil))); err != nil {
		return fmt.Errorf("admin restore: %w", err)
	}
	storePath := filepath.Join(o.dataDir, "hsmkms.db")
	res, err := store.Restore(storePath, f, store.RestoreOptions{Force: o.force})
	if err != nil {
		return fmt.Errorf("admin restore: %w", err)
	}
	m := res.Manifest
	fmt.Fprintf(stdout, "restored %s into %s: %d keys, %d aliases, %d grants, as hsmkms %s backed them up at %s\n",
		file, o.dataDir, m.Keys, m.Aliases, m.Grants, m.HsmkmsVersion, m.CreatedAt.Format(time.RFC3339))
	if res.Resumed {
		fmt.Fprintln(stdout, "(this finished a restore that had been interrupted)")
	}
	if res.GCMRaised > 0 {
		fmt.Fprintf(stdout, "the AES-GCM encryption counts of %d keys were raised by %d (the encryptions made since the backup are unknown); rotate keys that were heavily used\n", res.GCMRaised, store.RestoreGCMMargin)
	}
	if res.MigratedFrom != 0 {
		fmt.Fprintf(stdout, "the store was migrated from schema %d to %d\n", res.MigratedFrom, store.SchemaVersion)
	}
	for _, p := range res.MovedAside {
		fmt.Fprintf(stdout, "kept the previous file as %s\n", p)
	}
	fmt.Fprintf(stdout, `next: start hsmkms on %[1]s with the same token. Keys made after the backup
are in the token without a record; the server reports them as orphans at start, and
  hsmkms admin adopt --data-dir %[1]s
lists them (the restore is recorded in the audit log at that start).
`, o.dataDir)
	return nil
}

func (o *adminOptions) adopt(ctx context.Context, stdout io.Writer) error {
	if len(o.keyIDs) == 0 && !o.all {
		if o.account != "" {
			return errors.New("admin adopt: name the keys (--key-id) or give --all")
		}
		var cands []service.AdoptionCandidate
		if err := o.getJSON(ctx, "/v1/adopt", &cands); err != nil {
			return fmt.Errorf("admin adopt: %w", err)
		}
		if o.json {
			return printJSON(stdout, cands)
		}
		printCandidates(stdout, cands)
		return nil
	}
	if o.all && len(o.keyIDs) > 0 {
		return errors.New("admin adopt: --key-id and --all exclude each other")
	}
	if o.account == "" {
		return errors.New("admin adopt: give --account: the account new records are made in (nothing in the token says which it was)")
	}
	resp, err := o.call(ctx, http.MethodPost, "/v1/adopt", adoptRequest{KeyIDs: o.keyIDs, All: o.all, Account: o.account})
	if err != nil {
		return fmt.Errorf("admin adopt: %w", err)
	}
	defer resp.Body.Close()
	var out service.AdoptOutput
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return fmt.Errorf("admin adopt: %w", err)
	}
	if o.json {
		return printJSON(stdout, out)
	}
	for _, k := range out.Adopted {
		if k.Existing {
			fmt.Fprintf(stdout, "adopted %s: versions %v added to its record (%s)\n", k.ARN, k.Versions, k.State)
		} else {
			fmt.Fprintf(stdout, "adopted %s: %s %s, versions %v, %s\n", k.ARN, k.KeySpec, k.KeyUsage, k.Versions, k.State)
		}
	}
	for _, c := range out.Skipped {
		fmt.Fprintf(stdout, "skipped %s: %s\n", c.KeyID, c.Problem)
	}
	if slices.ContainsFunc(out.Adopted, func(k service.AdoptedKey) bool { return k.State == service.StateDisabled }) {
		fmt.Fprintln(stdout, "new records are Disabled, with the account's default key policy: set their policy, description, tags and aliases, then enable them (aws kms enable-key)")
	}
	if len(out.Adopted) == 0 && len(out.Skipped) == 0 {
		fmt.Fprintln(stdout, "nothing to adopt")
	}
	return nil
}

func printCandidates(w io.Writer, cands []service.AdoptionCandidate) {
	if len(cands) == 0 {
		fmt.Fprintln(w, "every key version in the token has a record: nothing to adopt")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY ID\tVERSIONS\tSPEC\tUSAGE\tADOPTABLE")
	for _, c := range cands {
		state := "yes"
		switch {
		case c.Problem != "":
			state = "no: " + c.Problem
		case c.Existing:
			state = "yes: versions added to its record (account " + c.Account + ")"
		}
		fmt.Fprintf(tw, "%s\t%v\t%s\t%s\t%s\n", c.KeyID, c.Versions, c.KeySpec, c.KeyUsage, state)
	}
	tw.Flush()
	fmt.Fprintln(w, "adopt with: hsmkms admin adopt --account ACCOUNT (--key-id ID | --all)")
}
