package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hsmkms/hsmkms/audit"
	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/service"
	"github.com/hsmkms/hsmkms/service/store"
)

// The admin socket: `hsmkms admin status|backup|adopt` talk to the server
// running on a data directory over a unix socket in it (adminSocketName),
// HTTP/1.1 with JSON bodies (the backup's body is the archive). No network
// listener serves it. Who may connect is who may open the socket: mode
// 0600 in the private data directory (docs/ARCHITECTURE.md, decision 19);
// on Linux the server also checks the peer's credentials (SO_PEERCRED) and
// answers only its own user and root.
//
// Every admin request is in the audit log, as a service event (eventType
// AwsServiceEvent) named Admin<Command>: no SigV4 principal makes it, and
// the local user who did (uid, pid) is in additionalEventData.admin. An
// admin request, like an API request, is refused when its record cannot be
// written; a backup and an adoption have an intent record, fsynced before
// the store's data leaves the process or the first record is written, and
// an outcome record naming it.

// adminSocketName is the admin socket's name in the data directory.
const adminSocketName = "admin.sock"

// maxSocketPath is the longest path a unix socket may have on Linux
// (sun_path holds 108 bytes, with the terminating NUL).
const maxSocketPath = 107

// The admin service events (audit/FORMAT.md).
const (
	eventAdminStatus   = "AdminStatus"
	eventAdminBackup   = "AdminBackup"
	eventAdminAdopt    = "AdminAdopt"
	eventStoreRestored = "StoreRestored"
	eventStoreMigrated = "StoreSchemaMigrated"
)

// adminConfig is what the admin socket serves from.
type adminConfig struct {
	dataDir, storePath, endpoint, region string
	store                                *store.Bolt
	svc                                  *service.Service
	token                                *hsm.Token
	audit                                *audit.Writer // nil: the audit log is off
	log                                  *slog.Logger
}

type adminServer struct {
	adminConfig
	socket  string
	started time.Time
	backups chan struct{} // one backup at a time
}

// startAdmin records, in the audit log, what happened to the store while no
// server ran (a restore, a schema migration at this start), then opens the
// admin socket and serves it until stop is called. A socket left by a
// process that died is replaced; one a live server answers on, or a file
// that is not a socket, stops the start.
func startAdmin(cfg adminConfig) (stop func(), err error) {
	_, stop, err = openAdmin(cfg)
	return stop, err
}

// openAdmin is startAdmin, also returning the server (for tests).
func openAdmin(cfg adminConfig) (*adminServer, func(), error) {
	a := &adminServer{adminConfig: cfg, socket: filepath.Join(cfg.dataDir, adminSocketName), started: time.Now(),
		backups: make(chan struct{}, 1)}
	if err := a.recordStoreHistory(); err != nil {
		return nil, nil, err
	}
	ln, err := listenAdmin(a.socket)
	if err != nil {
		return nil, nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", a.handle(a.status))
	mux.HandleFunc("GET /v1/backup", a.handle(a.backup))
	mux.HandleFunc("GET /v1/adopt", a.handle(a.adoptionCandidates))
	mux.HandleFunc("POST /v1/adopt", a.handle(a.adopt))
	srv := &http.Server{
		Handler: mux,
		// No ReadTimeout: once it expires, net/http cancels the context of
		// a handler still running (a long adoption on a large token).
		// Bodies are small and bounded where they are read.
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
		ConnContext:       withPeer,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			cfg.log.Error("admin socket", "socket", a.socket, "err", err)
		}
	}()
	cfg.log.Info("admin socket open", "socket", a.socket)
	return a, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close() // a backup still streaming: its client gets a truncated archive and refuses it
		}
		<-done
	}, nil
}

// listenAdmin opens the admin socket at path, mode 0600.
func listenAdmin(path string) (net.Listener, error) {
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("admin socket %s: the path is %d bytes, and a unix socket's may have %d at most: use a shorter --data-dir", path, len(path), maxSocketPath)
	}
	switch fi, err := os.Lstat(path); {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("admin socket: %w", err)
	case fi.Mode().Type() != fs.ModeSocket:
		return nil, fmt.Errorf("admin socket %s exists and is not a socket (mode %v): move it away; hsmkms removes no file it did not make", path, fi.Mode())
	default:
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("admin socket %s: a process answers on it; is another hsmkms serving this data directory?", path)
		}
		// Left by a process that died without closing it.
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("admin socket: remove the stale socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	// The data directory is private (0700), so nobody else could reach the
	// socket between its creation and this.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	return ln, nil
}

// adminError is an admin request's failure: the status, and a message for
// the operator (no key material, no plaintext: there is none here).
type adminError struct {
	status int
	msg    string
}

func (e *adminError) Error() string { return e.msg }

func adminErrorf(status int, format string, args ...any) error {
	return &adminError{status: status, msg: fmt.Sprintf(format, args...)}
}

// adminRequest is one admin request as the handlers see it.
type adminRequest struct {
	r    *http.Request
	peer peerCred
}

// handle wraps a handler: the peer check, the audit log check, and one
// error writer.
func (a *adminServer) handle(h func(http.ResponseWriter, *adminRequest) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		peer, _ := r.Context().Value(peerKey{}).(peerCred)
		var err error
		switch {
		case !peer.allowed():
			err = adminErrorf(http.StatusForbidden, "uid %d may not use the admin socket: only the server's user (uid %d) and root may", peer.uid, os.Geteuid())
		case a.audit != nil && a.audit.Err() != nil:
			err = adminErrorf(http.StatusServiceUnavailable, "the audit log takes no records, so no admin request is served: %v", a.audit.Err())
		default:
			err = h(w, &adminRequest{r: r, peer: peer})
		}
		if err == nil {
			return
		}
		status, msg := http.StatusInternalServerError, err.Error()
		var ae *adminError
		var se *service.Error
		switch {
		case errors.As(err, &ae):
			status = ae.status
		case errors.As(err, &se):
			status, msg = se.HTTPStatus(), se.Code+": "+se.Message
		}
		if status >= 500 {
			a.log.Error("admin request failed", "path", r.URL.Path, "uid", peer.uid, "err", err)
		}
		writeJSON(w, status, map[string]string{"error": msg})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// event is the audit record of an admin request.
func (a *adminServer) event(name string, req *adminRequest, readOnly bool) *audit.Event {
	ua := "hsmkms-admin"
	if req != nil {
		ua = clipString(req.r.UserAgent(), 256)
	}
	ev := &audit.Event{
		EventName: name, EventType: audit.EventTypeService, AWSRegion: a.region, ReadOnly: readOnly,
		UserIdentity:    audit.UserIdentity{Type: audit.IdentityService, InvokedBy: audit.EventSource},
		SourceIPAddress: audit.EventSource, UserAgent: ua,
		AdditionalEventData: map[string]any{},
	}
	if req != nil {
		ev.AdditionalEventData["admin"] = map[string]any{"uid": req.peer.uid, "pid": req.peer.pid, "socket": a.socket}
	}
	return ev
}

func clipString(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// record writes ev, durably if asked; nothing is recorded with the audit
// log off.
func (a *adminServer) record(ev *audit.Event, durable bool) error {
	if a.audit == nil {
		return nil
	}
	if durable {
		return a.audit.WriteDurable(ev)
	}
	return a.audit.Write(ev)
}

// recordStoreHistory records a restore made while no server ran (the
// store's restore note) and a schema migration made by this start's Open,
// each as a service event, durably, before the store serves a request.
func (a *adminServer) recordStoreHistory() error {
	note, ok, err := store.ReadRestoreNote(a.storePath)
	if err != nil {
		return err
	}
	if ok {
		ev := a.event(eventStoreRestored, nil, false)
		ev.AdditionalEventData["restore"] = note
		if err := a.record(ev, true); err != nil {
			return fmt.Errorf("audit: record the restore of the store: %w", err)
		}
		a.log.Warn("the store was restored from a backup while hsmkms was stopped", "restored_at", note.RestoredAt,
			"backup_made", note.Manifest.CreatedAt, "backup_hsmkms_version", note.Manifest.HsmkmsVersion, "moved_aside", note.MovedAside)
		if err := store.ClearRestoreNote(a.storePath); err != nil {
			return err
		}
	}
	if version, from := a.store.Schema(); from != 0 {
		ev := a.event(eventStoreMigrated, nil, false)
		ev.AdditionalEventData["fromSchemaVersion"], ev.AdditionalEventData["toSchemaVersion"] = from, version
		if err := a.record(ev, true); err != nil {
			return fmt.Errorf("audit: record the store's schema migration: %w", err)
		}
		a.log.Info("store migrated to a new schema", "from", from, "to", version, "store", a.storePath)
	}
	return nil
}

// statusReport is what `hsmkms admin status` prints.
type statusReport struct {
	Version    string        `json:"version"`
	StartedAt  time.Time     `json:"startedAt"`
	Endpoint   string        `json:"endpoint"`
	DataDir    string        `json:"dataDir"`
	Token      hsm.TokenInfo `json:"token"`
	TokenError string        `json:"tokenError,omitempty"`
	// TokenReady is the readiness check's answer (a canary encrypt and
	// decrypt, cached for a couple of seconds).
	TokenReady      bool           `json:"tokenReady"`
	TokenReadyError string         `json:"tokenReadyError,omitempty"`
	Keys            int            `json:"keys"`
	KeysByState     map[string]int `json:"keysByState"`
	Aliases         int            `json:"aliases"`
	Grants          int            `json:"grants"`
	Audit           *audit.Status  `json:"audit"` // nil: the audit log is off
	Store           storeStatus    `json:"store"`
}

type storeStatus struct {
	SchemaVersion int               `json:"schemaVersion"`
	Files         []store.FileStats `json:"files"`
}

func (a *adminServer) status(w http.ResponseWriter, req *adminRequest) error {
	ctx := req.r.Context()
	rep := statusReport{Version: versionString(), StartedAt: a.started.UTC(), Endpoint: a.endpoint, DataDir: a.dataDir}
	var err error
	if rep.Token, err = a.token.Info(ctx); err != nil {
		rep.TokenError = err.Error()
	}
	if err := a.svc.Ready(ctx); err != nil {
		rep.TokenReadyError = err.Error()
	} else {
		rep.TokenReady = true
	}
	st := a.store.Stats()
	rep.Keys, rep.KeysByState, rep.Aliases, rep.Grants = st.Keys, st.KeysByState, st.Aliases, st.Grants
	rep.Store = storeStatus{SchemaVersion: st.SchemaVersion, Files: st.Files}
	if a.audit != nil {
		s := a.audit.Status()
		rep.Audit = &s
	}
	if err := a.record(a.event(eventAdminStatus, req, true), false); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}

// backup streams a snapshot of the store to the client, which writes the
// file: the server needs no access to where backups go.
func (a *adminServer) backup(w http.ResponseWriter, req *adminRequest) error {
	select {
	case a.backups <- struct{}{}:
		defer func() { <-a.backups }()
	default:
		return adminErrorf(http.StatusConflict, "a backup is running; try again when it is done")
	}
	sn, err := a.store.Snapshot(versionString(), time.Now())
	if err != nil {
		return err
	}
	defer sn.Close()
	m := sn.Manifest()
	intent := a.event(eventAdminBackup, req, true)
	intent.AdditionalEventData[audit.PhaseKey] = audit.PhaseIntent
	intent.AdditionalEventData["snapshot"] = snapshotFacts(m)
	// No byte of the store leaves before the record that it does.
	if err := a.record(intent, true); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	w.Header().Set("Content-Type", "application/x-tar")
	w.WriteHeader(http.StatusOK)
	sum := sha256.New()
	n, err := sn.WriteTo(io.MultiWriter(&deadlineWriter{w: w, rc: http.NewResponseController(w)}, sum))
	outcome := a.event(eventAdminBackup, req, true)
	outcome.AdditionalEventData[audit.IntentEventKey] = intent.EventID
	if err != nil {
		outcome.ErrorCode, outcome.ErrorMessage = "BackupStreamFailed", clipString(err.Error(), 512)
		a.log.Error("admin backup: the stream to the client failed; it has no backup", "err", err)
	} else {
		m = sn.Manifest()
		outcome.ResponseElements = map[string]any{"bytes": n, "archiveSha256": hex.EncodeToString(sum.Sum(nil)), "manifest": snapshotFacts(m)}
	}
	if rerr := a.record(outcome, false); rerr != nil {
		// The client has the archive already; the intent stands for it.
		a.log.Error("audit: the outcome of a backup was not recorded", "intent_event_id", intent.EventID, "err", rerr)
	}
	return nil // the status was sent; a failure shows as a truncated archive
}

// snapshotFacts are a backup's manifest as its audit records give it; the
// parts' hashes once they are known.
func snapshotFacts(m store.Manifest) map[string]any {
	parts := make([]map[string]any, len(m.Parts))
	for i, p := range m.Parts {
		parts[i] = map[string]any{"name": p.Name, "size": p.Size}
		if p.SHA256 != "" {
			parts[i]["sha256"] = p.SHA256
		}
	}
	return map[string]any{"createdAt": m.CreatedAt.Format(time.RFC3339Nano), "schemaVersion": m.SchemaVersion,
		"keys": m.Keys, "aliases": m.Aliases, "grants": m.Grants, "parts": parts}
}

// deadlineWriter gives each write to the client 30 s: a client that stops
// reading must not hold the snapshot's read transactions (which keep the
// store's files from growing their memory map) for ever.
type deadlineWriter struct {
	w  io.Writer
	rc *http.ResponseController
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	d.rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
	return d.w.Write(p)
}

// adoptRequest is the body of POST /v1/adopt.
type adoptRequest struct {
	KeyIDs  []string `json:"keyIds"`
	All     bool     `json:"all"`
	Account string   `json:"account"`
}

func (a *adminServer) adoptionCandidates(w http.ResponseWriter, req *adminRequest) error {
	cands, err := a.svc.AdoptionCandidates(req.r.Context())
	if err != nil {
		return err
	}
	ev := a.event(eventAdminAdopt, req, true)
	ev.RequestParameters = map[string]any{"dryRun": true}
	ev.ResponseElements = map[string]any{"candidates": len(cands)}
	if err := a.record(ev, false); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if cands == nil {
		cands = []service.AdoptionCandidate{}
	}
	writeJSON(w, http.StatusOK, cands)
	return nil
}

func (a *adminServer) adopt(w http.ResponseWriter, req *adminRequest) error {
	var in adoptRequest
	dec := json.NewDecoder(io.LimitReader(req.r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return adminErrorf(http.StatusBadRequest, "adopt: malformed request: %v", err)
	}
	params := map[string]any{"account": in.Account, "all": in.All}
	if len(in.KeyIDs) > 0 {
		params["keyIds"] = in.KeyIDs
	}
	ctx := req.r.Context()
	var intentID string
	if a.audit != nil {
		ctx = service.WithCommitGate(ctx, func(_ context.Context, arns []string) error {
			ev := a.event(eventAdminAdopt, req, false)
			ev.RequestParameters = params
			ev.AdditionalEventData[audit.PhaseKey] = audit.PhaseIntent
			for _, arn := range arns {
				ev.Resources = append(ev.Resources, audit.Resource{ARN: arn, AccountID: accountOfKeyARN(arn), Type: audit.ResourceTypeKey})
			}
			if err := a.audit.WriteDurable(ev); err != nil {
				return err
			}
			intentID = ev.EventID
			return nil
		})
	}
	out, err := a.svc.Adopt(ctx, service.AdoptInput{KeyIDs: in.KeyIDs, All: in.All, Account: in.Account})
	ev := a.event(eventAdminAdopt, req, false)
	ev.RequestParameters = params
	if intentID != "" {
		ev.AdditionalEventData[audit.IntentEventKey] = intentID
	}
	var adopted []map[string]any
	if out != nil {
		for _, k := range out.Adopted {
			ev.Resources = append(ev.Resources, audit.Resource{ARN: k.ARN, AccountID: accountOfKeyARN(k.ARN), Type: audit.ResourceTypeKey})
			adopted = append(adopted, map[string]any{"keyId": k.KeyID, "versions": k.Versions, "keySpec": k.KeySpec,
				"keyUsage": k.KeyUsage, "state": k.State, "addedToExistingRecord": k.Existing})
		}
	}
	if err != nil {
		e := service.AsError(err)
		ev.ErrorCode, ev.ErrorMessage = e.Code, clipString(e.Message, 1024)
	}
	ev.ResponseElements = map[string]any{"adopted": adopted}
	if rerr := a.record(ev, false); rerr != nil {
		if err == nil && intentID == "" {
			return fmt.Errorf("audit: %w", rerr)
		}
		// The change committed (or failed) already; its intent stands for it.
		a.log.Error("audit: the outcome of an adoption was not recorded", "intent_event_id", intentID, "err", rerr)
	}
	if err != nil {
		if out != nil && len(out.Adopted) > 0 {
			// Part of the request happened: say which part.
			e := service.AsError(err)
			writeJSON(w, e.HTTPStatus(), map[string]any{"error": e.Code + ": " + e.Message, "adopted": out.Adopted})
			return nil
		}
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// accountOfKeyARN is the account of arn:PARTITION:kms:REGION:ACCOUNT:key/ID.
func accountOfKeyARN(arn string) string {
	if parts := strings.SplitN(arn, ":", 6); len(parts) == 6 {
		return parts[4]
	}
	return ""
}
