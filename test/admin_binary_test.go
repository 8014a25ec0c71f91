package test

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	bolt "go.etcd.io/bbolt"
)

// externalToken is a SoftHSM2 token in a directory of its own, outside
// every data directory, as a production HSM is: servers on different data
// directories use the same token, with a configured principal (alice of
// mainAccount).
type externalToken struct {
	env []string
	cfg string
	pin string
}

func newExternalToken(t *testing.T) *externalToken {
	t.Helper()
	dir := t.TempDir()
	tokDir := filepath.Join(dir, "token")
	out, err := exec.Command("bash", "../softhsm/init-token.sh", tokDir, "hsmkms").Output()
	if err != nil {
		t.Fatalf("init-token.sh: %v", err)
	}
	cfg := filepath.Join(dir, "hsmkms.yaml")
	yaml := "version: v1\n" +
		"principals:\n" +
		"  - arn: arn:aws:iam::111122223333:user/alice\n" +
		"    access_keys:\n" +
		"      - id: AKIDALICE\n" +
		"        secret_env: HSMKMS_E2E_ALICE_SECRET\n" +
		"    policies: [{Version: \"2012-10-17\", Statement: [{Effect: Allow, Action: \"kms:*\", Resource: \"*\"}]}]\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return &externalToken{
		env: cleanEnv("SOFTHSM2_CONF="+strings.TrimSpace(string(out)), "HSMKMS_E2E_ALICE_SECRET=alice-secret"),
		cfg: cfg, pin: filepath.Join(tokDir, "user.pin"),
	}
}

// serve starts a server on dataDir with the token and waits until it is
// healthy.
func (e *externalToken) serve(t *testing.T, dataDir string) (*proc, string) {
	t.Helper()
	addr := freeAddr(t)
	p := startProc(t, e.env, "serve", "--pkcs11-module", "/usr/lib/softhsm/libsofthsm2.so", "--token-label", "hsmkms",
		"--pin-file", e.pin, "--config", e.cfg, "--data-dir", dataDir, "--listen", addr)
	endpoint := "http://" + addr
	p.waitHealthy(t, endpoint)
	return p, endpoint
}

func aliceClient(endpoint string) *kms.Client {
	return newClient(endpoint, "AKIDALICE", "alice-secret", nil)
}

// stop ends a server with SIGTERM, as an operator stops it.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit status %d after SIGTERM\nstderr:\n%s", code, p.stderr)
	}
}

// admin runs `hsmkms admin ARGS...` and returns its output and status.
func admin(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	p := startProc(t, env, append([]string{"admin"}, args...)...)
	code = p.wait(t, 60*time.Second)
	return p.stdout.String(), p.stderr.String(), code
}

// mustAdmin runs `hsmkms admin ARGS...`, which must succeed.
func mustAdmin(t *testing.T, env []string, args ...string) string {
	t.Helper()
	out, errOut, code := admin(t, env, args...)
	if code != 0 {
		t.Fatalf("hsmkms admin %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// dataDirEvents reads the records of a data directory's audit log.
func dataDirEvents(t *testing.T, dataDir string) []map[string]any {
	t.Helper()
	return auditEvents(t, filepath.Join(dataDir, "audit", "audit.log"))
}

func eventsNamed(evs []map[string]any, name string) []map[string]any {
	var out []map[string]any
	for _, ev := range evs {
		if ev["eventName"] == name {
			out = append(out, ev)
		}
	}
	return out
}

// field walks a decoded JSON value by keys.
func field(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// TestBinaryBackupRestore: `hsmkms admin backup` takes a backup of a
// serving server's store (mode 0600, recorded in its audit log with the
// archive's SHA-256); `hsmkms admin restore` puts it into a fresh data
// directory, offline only and never over a store without --force; and a
// server started there with the same token decrypts a ciphertext made
// before the backup, with the key's alias and grant, and records the
// restore.
func TestBinaryBackupRestore(t *testing.T) {
	t.Parallel()
	ext := newExternalToken(t)
	dir := t.TempDir()
	data1, data2 := filepath.Join(dir, "data1"), filepath.Join(dir, "data2")
	p1, ep1 := ext.serve(t, data1)
	c1 := aliceClient(ep1)
	md := createKey(t, c1)
	id := aws.ToString(md.KeyId)
	ec := map[string]string{"backup": "restore"}
	pt := []byte("made before the backup")
	blob := encrypt(t, c1, id, pt, ec)
	if _, err := c1.CreateAlias(ctxT(t), &kms.CreateAliasInput{AliasName: aws.String("alias/backed-up"), TargetKeyId: md.KeyId}); err != nil {
		t.Fatal(err)
	}
	if _, err := c1.CreateGrant(ctxT(t), &kms.CreateGrantInput{KeyId: md.KeyId, GranteePrincipal: aws.String("arn:aws:iam::111122223333:role/app"),
		Operations: []types.GrantOperation{types.GrantOperationDecrypt}}); err != nil {
		t.Fatal(err)
	}

	backups := filepath.Join(dir, "backups")
	if err := os.Mkdir(backups, 0o700); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(backups, "hsmkms-store.tar")
	out := mustAdmin(t, ext.env, "backup", "--data-dir", data1, file)
	if !strings.Contains(out, "1 keys, 1 aliases, 1 grants") {
		t.Errorf("backup output:\n%s", out)
	}
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("the backup file has mode %v, want 0600", fi.Mode().Perm())
	}
	if left, _ := filepath.Glob(filepath.Join(backups, ".*")); len(left) > 0 {
		t.Errorf("temporary files left beside the backup: %v", left)
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	if !strings.Contains(out, hex.EncodeToString(sum[:])) {
		t.Errorf("backup output does not give the file's SHA-256:\n%s", out)
	}
	// The server serves on during and after the backup.
	if got := decrypt(t, c1, encrypt(t, c1, id, []byte("after"), nil), nil).Plaintext; string(got) != "after" {
		t.Errorf("round trip after the backup gave %q", got)
	}

	// Restore is offline.
	_, errOut, code := admin(t, ext.env, "restore", "--force", "--data-dir", data1, file)
	if code == 0 || !strings.Contains(errOut, "running") {
		t.Errorf("restore into a served data directory: exit %d\n%s", code, errOut)
	}
	p1.stop(t)

	// The backup is in data1's audit log: an intent, fsynced before the
	// stream, and an outcome naming the archive's SHA-256.
	evs := eventsNamed(dataDirEvents(t, data1), "AdminBackup")
	if len(evs) != 2 || field(evs[0], "additionalEventData", "phase") != "intent" ||
		field(evs[1], "additionalEventData", "intentEventId") != evs[0]["eventID"] ||
		field(evs[1], "responseElements", "archiveSha256") != hex.EncodeToString(sum[:]) ||
		field(evs[0], "eventType") != "AwsServiceEvent" || field(evs[0], "additionalEventData", "admin", "uid") != float64(os.Getuid()) {
		t.Errorf("audit records of the backup: %v", evs)
	}

	out = mustAdmin(t, ext.env, "restore", "--data-dir", data2, file)
	if !strings.Contains(out, "1 keys, 1 aliases, 1 grants") || !strings.Contains(out, "admin adopt") {
		t.Errorf("restore output:\n%s", out)
	}
	for _, name := range []string{"hsmkms.db", "hsmkms-grants.db"} {
		if fi, err := os.Stat(filepath.Join(data2, name)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("restored %s: %v, %v", name, fi, err)
		}
	}
	if fi, err := os.Stat(data2); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("the data directory restore made: %v, %v", fi, err)
	}
	if _, errOut, code := admin(t, ext.env, "restore", "--data-dir", data2, file); code == 0 || !strings.Contains(errOut, "--force") {
		t.Errorf("a second restore without --force: exit %d\n%s", code, errOut)
	}

	p2, ep2 := ext.serve(t, data2)
	c2 := aliceClient(ep2)
	dec := decrypt(t, c2, blob, ec)
	if !bytes.Equal(dec.Plaintext, pt) {
		t.Fatalf("the restored server decrypts the old ciphertext to %q", dec.Plaintext)
	}
	d, err := c2.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: aws.String("alias/backed-up")})
	if err != nil || aws.ToString(d.KeyMetadata.KeyId) != id {
		t.Errorf("the alias after the restore: %v, %v", d, err)
	}
	gl, err := c2.ListGrants(ctxT(t), &kms.ListGrantsInput{KeyId: md.KeyId})
	if err != nil || len(gl.Grants) != 1 {
		t.Errorf("the grants after the restore: %v, %v", gl, err)
	}
	if strings.Contains(p2.stderr.String(), "not named by any key record") || strings.Contains(p2.stderr.String(), "missing from the token") {
		t.Errorf("reconciliation after a restore of the latest backup found differences:\n%s", p2.stderr)
	}
	// The restore is in data2's audit log, with the archive's manifest.
	manifest := archiveManifest(t, raw)
	restored := eventsNamed(dataDirEvents(t, data2), "StoreRestored")
	if len(restored) != 1 || field(restored[0], "additionalEventData", "restore", "manifest", "parts") == nil {
		t.Fatalf("audit records of the restore: %v", restored)
	}
	parts := field(restored[0], "additionalEventData", "restore", "manifest", "parts").([]any)
	for i, p := range parts {
		if field(p, "sha256") != manifest.Parts[i].SHA256 {
			t.Errorf("the restore's record names part %v; the archive's is %+v", p, manifest.Parts[i])
		}
	}
	if _, err := os.Stat(filepath.Join(data2, "hsmkms-restore.json")); !os.IsNotExist(err) {
		t.Errorf("the restore note outlived its record: %v", err)
	}
	p2.stop(t)
}

type archiveManifestJSON struct {
	Parts []struct {
		Name, SHA256 string
	}
}

func archiveManifest(t *testing.T, archive []byte) archiveManifestJSON {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		hdr, err := tr.Next()
		if err != nil {
			t.Fatalf("no manifest in the archive: %v", err)
		}
		if hdr.Name == "manifest.json" {
			var m archiveManifestJSON
			b, _ := io.ReadAll(tr)
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			return m
		}
	}
}

// TestBinaryAdoptAfterRestore: a key made after the backup a store was
// restored from is in the token with no record; reconciliation reports it,
// `hsmkms admin adopt` lists it and adopts it (Disabled, recorded in the
// audit log), and once enabled the ciphertext made with it decrypts again.
// The store the restore replaced is kept, renamed aside.
func TestBinaryAdoptAfterRestore(t *testing.T) {
	t.Parallel()
	ext := newExternalToken(t)
	data := filepath.Join(t.TempDir(), "data")
	backup := filepath.Join(t.TempDir(), "backup.tar")
	p1, ep1 := ext.serve(t, data)
	c1 := aliceClient(ep1)
	old := createKey(t, c1)
	mustAdmin(t, ext.env, "backup", "--data-dir", data, backup)
	newer := createKey(t, c1)
	newID := aws.ToString(newer.KeyId)
	pt := []byte("made with a key the backup does not know")
	blob := encrypt(t, c1, newID, pt, nil)
	p1.stop(t)

	out := mustAdmin(t, ext.env, "restore", "--force", "--data-dir", data, backup)
	if strings.Count(out, "kept the previous file as") != 2 {
		t.Errorf("restore --force over a store does not say where the old files went:\n%s", out)
	}
	aside, _ := filepath.Glob(filepath.Join(data, "hsmkms*.db.before-restore-*"))
	if len(aside) != 2 {
		t.Errorf("files kept aside: %v", aside)
	}

	p2, ep2 := ext.serve(t, data)
	c2 := aliceClient(ep2)
	label := "hsmkms/" + newID + "/v1"
	p2.waitLog(t, "not named by any key record") // reconciliation reports the object
	if !strings.Contains(p2.stderr.String(), label) {
		t.Errorf("reconciliation does not report %s:\n%s", label, p2.stderr)
	}
	_, err := c2.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: blob})
	wantAPIError(t, err, "InvalidCiphertextException", 400)

	out = mustAdmin(t, ext.env, "adopt", "--data-dir", data)
	if !strings.Contains(out, newID) || !strings.Contains(out, "SYMMETRIC_DEFAULT") || strings.Contains(out, aws.ToString(old.KeyId)) {
		t.Errorf("adopt's list:\n%s", out)
	}
	if _, errOut, code := admin(t, ext.env, "adopt", "--data-dir", data, "--key-id", newID); code == 0 || !strings.Contains(errOut, "--account") {
		t.Errorf("adopt without --account: exit %d\n%s", code, errOut)
	}
	out = mustAdmin(t, ext.env, "adopt", "--data-dir", data, "--key-id", newID, "--account", mainAccount)
	if !strings.Contains(out, keyARN(mainAccount, newID)) || !strings.Contains(out, "Disabled") {
		t.Errorf("adopt's output:\n%s", out)
	}
	_, err = c2.Decrypt(ctxT(t), &kms.DecryptInput{CiphertextBlob: blob})
	wantAPIError(t, err, "DisabledException", 400)
	if _, err := c2.EnableKey(ctxT(t), &kms.EnableKeyInput{KeyId: newer.KeyId}); err != nil {
		t.Fatal(err)
	}
	if got := decrypt(t, c2, blob, nil).Plaintext; !bytes.Equal(got, pt) {
		t.Fatalf("after adoption the ciphertext decrypts to %q", got)
	}
	out = mustAdmin(t, ext.env, "adopt", "--data-dir", data)
	if strings.Contains(out, newID) {
		t.Errorf("the adopted key is still listed:\n%s", out)
	}

	evs := eventsNamed(dataDirEvents(t, data), "AdminAdopt")
	var intent, outcome map[string]any
	for _, ev := range evs {
		switch {
		case field(ev, "additionalEventData", "phase") == "intent":
			intent = ev
		case field(ev, "additionalEventData", "intentEventId") != nil:
			outcome = ev
		}
	}
	if intent == nil || outcome == nil || field(outcome, "additionalEventData", "intentEventId") != intent["eventID"] ||
		!strings.Contains(jsonOf(intent["resources"]), keyARN(mainAccount, newID)) ||
		!strings.Contains(jsonOf(outcome["responseElements"]), newID) || field(intent, "readOnly") != false {
		t.Errorf("audit records of the adoption:\n%s", jsonOf(evs))
	}
	p2.stop(t)
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestBinaryAdminStatus: `hsmkms admin status` reports the version, the
// token, key counts by state, the audit log and the store; --json the same
// for machines; and the request is in the audit log.
func TestBinaryAdminStatus(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p, endpoint := startDev(t, dir)
	c := newClient(endpoint, "test", "test", nil)
	createKey(t, c)
	off := createKey(t, c)
	if _, err := c.DisableKey(ctxT(t), &kms.DisableKeyInput{KeyId: off.KeyId}); err != nil {
		t.Fatal(err)
	}
	out := mustAdmin(t, cleanEnv(), "status", "--data-dir", dir)
	for _, want := range []string{binVersion, endpoint, `label "hsmkms-dev"`, "SoftHSM", "ready", "of 32",
		"2 (Disabled 1, Enabled 1)", "audit log", "ok", filepath.Join(dir, "audit", "audit.log"), "schema 2", "hsmkms.db", "hsmkms-grants.db"} {
		if !strings.Contains(out, want) {
			t.Errorf("status does not say %q:\n%s", want, out)
		}
	}
	var rep struct {
		Version string
		Token   struct {
			Label, Serial, Manufacturer, Model string
			SessionsMax, SessionsInUse         int
		}
		TokenReady  bool
		Keys        int
		KeysByState map[string]int
		Audit       struct {
			OK   bool
			File string
			Seq  int
		}
		Store struct {
			SchemaVersion int
			Files         []struct {
				Path string
				Size int64
			}
		}
	}
	js := mustAdmin(t, cleanEnv(), "status", "--json", "--data-dir", dir)
	if err := json.Unmarshal([]byte(js), &rep); err != nil {
		t.Fatalf("status --json: %v\n%s", err, js)
	}
	if rep.Version != binVersion || rep.Token.Label != "hsmkms-dev" || rep.Token.Serial == "" || rep.Token.SessionsMax != 32 ||
		!rep.TokenReady || rep.Keys != 2 || rep.KeysByState["Enabled"] != 1 || rep.KeysByState["Disabled"] != 1 ||
		!rep.Audit.OK || rep.Audit.Seq < 3 || rep.Store.SchemaVersion != 2 || len(rep.Store.Files) != 2 || rep.Store.Files[0].Size <= 0 {
		t.Errorf("status --json:\n%s", js)
	}
	if n := len(eventsNamed(dataDirEvents(t, dir), "AdminStatus")); n != 2 {
		t.Errorf("%d AdminStatus records, want 2", n)
	}
	p.stop(t)
}

// TestBinaryAdminSocket: the admin socket is made at start with mode 0600
// and removed at stop; one left by a killed server is replaced; a file
// that is not a socket in its place stops the start and is left alone; and
// with no server, the admin commands say so.
func TestBinaryAdminSocket(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sock := filepath.Join(dir, "admin.sock")
	p, _ := startDev(t, dir)
	fi, err := os.Lstat(sock)
	if err != nil || fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin socket: %v, %v; want a socket of mode 0600", fi, err)
	}
	p.cmd.Process.Kill()
	<-p.done
	if _, err := os.Lstat(sock); err != nil {
		t.Fatalf("a killed server's socket is gone (%v); the test needs it stale", err)
	}
	p, _ = startDev(t, dir)
	mustAdmin(t, cleanEnv(), "status", "--data-dir", dir)
	p.stop(t)
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("the socket outlived a clean stop: %v", err)
	}
	_, errOut, code := admin(t, cleanEnv(), "status", "--data-dir", dir)
	if code == 0 || !strings.Contains(errOut, "no hsmkms server answers") {
		t.Errorf("status with no server: exit %d\n%s", code, errOut)
	}
	_, errOut, code = admin(t, cleanEnv(), "backup", "--data-dir", dir, filepath.Join(t.TempDir(), "b.tar"))
	if code == 0 || !strings.Contains(errOut, "no hsmkms server answers") {
		t.Errorf("backup with no server: exit %d\n%s", code, errOut)
	}

	if err := os.WriteFile(sock, []byte("not a socket"), 0o600); err != nil {
		t.Fatal(err)
	}
	q := startProc(t, cleanEnv(), "serve", "--dev", "--data-dir", dir, "--listen", freeAddr(t), "--log-level", "warn")
	if code := q.wait(t, 30*time.Second); code == 0 || !strings.Contains(q.stderr.String(), "not a socket") {
		t.Errorf("serve with a file in the socket's place: exit %d\n%s", code, q.stderr)
	}
	if b, err := os.ReadFile(sock); err != nil || string(b) != "not a socket" {
		t.Errorf("the file in the socket's place was changed: %q, %v", b, err)
	}
}

// TestBinaryRefusesNewerStoreSchema: a store a newer hsmkms wrote stops
// the start, with a message naming both schema versions, and is left as
// it is.
func TestBinaryRefusesNewerStoreSchema(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p, _ := startDev(t, dir)
	p.stop(t)
	db, err := bolt.Open(filepath.Join(dir, "hsmkms.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("meta"))
		if err != nil {
			return err
		}
		return b.Put([]byte("schema"), []byte("9"))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	q := startProc(t, cleanEnv(), "serve", "--dev", "--data-dir", dir, "--listen", freeAddr(t), "--log-level", "warn")
	code := q.wait(t, 30*time.Second)
	stderr := q.stderr.String()
	if code == 0 || !strings.Contains(stderr, "schema version 9") || !strings.Contains(stderr, "schema version 2") {
		t.Errorf("serve on a store of schema 9: exit %d\n%s", code, stderr)
	}
}
