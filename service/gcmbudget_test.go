package service

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/service/store"
	"github.com/hsmkms/hsmkms/softhsm/softhsmtest"
)

// budgetRig is a service whose store can be closed and opened again, as a
// restarted process would, on one token.
type budgetRig struct {
	t     *testing.T
	tok   *hsm.Token
	path  string
	block uint64
	log   *lockedBuffer
	st    *store.Bolt
	svc   *Service
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// records returns the log records with message containing msg.
func (l *lockedBuffer) records(t *testing.T, msg string) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		if line == "" {
			continue
		}
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if strings.Contains(r["msg"].(string), msg) {
			out = append(out, r)
		}
	}
	return out
}

func newBudgetRig(t *testing.T, block uint64) *budgetRig {
	tok := softhsmtest.Token(t)
	tk, err := hsm.Open(context.Background(), hsm.Config{ModulePath: tok.ModulePath, TokenLabel: tok.Label,
		PIN: softhsmtest.PIN(t, tok), SessionKeyCopies: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tk.Close() })
	r := &budgetRig{t: t, tok: tk, path: filepath.Join(t.TempDir(), "meta.db"), block: block}
	r.start()
	t.Cleanup(func() { r.st.Close() })
	return r
}

// start opens the store and a service on it, with a fresh log.
func (r *budgetRig) start() {
	r.t.Helper()
	st, err := store.Open(r.path)
	if err != nil {
		r.t.Fatal(err)
	}
	r.log = &lockedBuffer{}
	svc, err := New(Config{Token: r.tok, Store: st, Region: "eu-west-1", GCMReserveBlock: r.block,
		Logger: slog.New(slog.NewJSONHandler(r.log, nil))})
	if err != nil {
		st.Close()
		r.t.Fatal(err)
	}
	r.st, r.svc = st, svc
}

// restart is a process stopping and starting again. Nothing is saved at
// the stop: what the store holds is what a crash would leave.
func (r *budgetRig) restart() {
	r.t.Helper()
	if err := r.st.Close(); err != nil {
		r.t.Fatal(err)
	}
	r.start()
}

func (r *budgetRig) reserved(keyID string, version uint32) uint64 {
	r.t.Helper()
	rs, err := r.st.GCMReservations(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	for _, x := range rs {
		if x.KeyID == keyID && x.Version == version {
			return x.Reserved
		}
	}
	return 0
}

func (r *budgetRig) encrypt(keyID string) {
	r.t.Helper()
	if _, err := r.svc.Encrypt(context.Background(), alice, EncryptInput{KeyId: keyID, Plaintext: []byte("x")}); err != nil {
		r.t.Fatal(err)
	}
}

func (r *budgetRig) ratio() float64 {
	r.t.Helper()
	st, err := r.svc.Stats(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	return st.GCMBudgetUsed
}

// TestGCMCountIsOnDiskBeforeTheEncryption: after every encryption the store
// holds a count at least as high as the encryptions made, so a crash at any
// moment cannot lose one; and every operation that encrypts under a key
// counts.
func TestGCMCountIsOnDiskBeforeTheEncryption(t *testing.T) {
	const block = 4
	r := newBudgetRig(t, block)
	ctx := context.Background()
	k, err := r.svc.CreateKey(ctx, alice, CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	id := k.KeyMetadata.KeyId
	if got := r.reserved(id, 1); got != 0 {
		t.Fatalf("a new key has %d encryptions reserved", got)
	}
	made := uint64(0)
	check := func(op string) {
		t.Helper()
		made++
		if used := r.svc.gcm.used(id, 1); used != made {
			t.Errorf("after %s: %d encryptions counted, %d made", op, used, made)
		}
		// The ahead-of-time reservation runs in the background: what is
		// on disk may grow a block more at any moment, never less than
		// what was made.
		if res := r.reserved(id, 1); res < made || res > made+2*block {
			t.Errorf("after %s (%d encryptions): %d reserved on disk, want between %d and %d", op, made, res, made, made+2*block)
		}
	}
	for range 9 {
		r.encrypt(id)
		check("Encrypt")
	}
	if _, err := r.svc.GenerateDataKey(ctx, alice, GenerateDataKeyInput{KeyId: id, NumberOfBytes: ptr(int32(32))}, true); err != nil {
		t.Fatal(err)
	}
	check("GenerateDataKey")
	if _, err := r.svc.GenerateDataKeyPair(ctx, alice, GenerateDataKeyPairInput{KeyId: id, KeyPairSpec: ptr("ECC_NIST_P256")}, false); err != nil {
		t.Fatal(err)
	}
	check("GenerateDataKeyPairWithoutPlaintext")
	ct, err := r.svc.Encrypt(ctx, alice, EncryptInput{KeyId: id, Plaintext: []byte("y")})
	if err != nil {
		t.Fatal(err)
	}
	check("Encrypt")
	if _, err := r.svc.ReEncrypt(ctx, alice, ReEncryptInput{CiphertextBlob: ct.CiphertextBlob, DestinationKeyId: id}); err != nil {
		t.Fatal(err)
	}
	check("ReEncrypt")
	// Decrypt makes no encryption.
	if _, err := r.svc.Decrypt(ctx, alice, DecryptInput{CiphertextBlob: ct.CiphertextBlob}); err != nil {
		t.Fatal(err)
	}
	if used := r.svc.gcm.used(id, 1); used != made {
		t.Errorf("Decrypt counted: %d, want %d", used, made)
	}
}

// TestGCMCountSurvivesRestart: a restarted service starts from the count on
// disk (all of it counted as used), never below the encryptions made, and
// goes on from there.
func TestGCMCountSurvivesRestart(t *testing.T) {
	const block = 4
	r := newBudgetRig(t, block)
	k, err := r.svc.CreateKey(context.Background(), alice, CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	id := k.KeyMetadata.KeyId
	for range 10 {
		r.encrypt(id)
	}
	r.restart()
	onDisk := r.reserved(id, 1) // what the stopped process left
	used := r.svc.gcm.used(id, 1)
	if used < 10 || used != onDisk {
		t.Fatalf("after a restart %d encryptions counted; 10 were made and %d reserved on disk", used, onDisk)
	}
	if got, want := r.ratio(), float64(used)/GCMInvocationLimit; got != want {
		t.Errorf("ratio after restart %g, want %g", got, want)
	}
	r.encrypt(id)
	if got := r.svc.gcm.used(id, 1); got != used+1 {
		t.Errorf("after one more encryption %d counted, want %d", got, used+1)
	}
	if res := r.reserved(id, 1); res < used+1 {
		t.Errorf("%d reserved on disk, fewer than the %d counted", res, used+1)
	}
}

// TestGCMBudgetRatioAndWarning: the ratio is the highest count of a current
// version over 2^32; half the limit is logged once per key version (when it
// is passed, or at start if it was passed before); rotating the key starts
// the ratio again from its new version. Counts are set through the store,
// as a process that made them would have left them.
func TestGCMBudgetRatioAndWarning(t *testing.T) {
	r := newBudgetRig(t, 0) // the default block
	ctx := context.Background()
	mk := func() string {
		k, err := r.svc.CreateKey(ctx, alice, CreateKeyInput{})
		if err != nil {
			t.Fatal(err)
		}
		return k.KeyMetadata.KeyId
	}
	hot, warm, cold := mk(), mk(), mk()
	r.encrypt(cold)
	if err := r.st.ReserveGCM(ctx, hot, 1, 3<<30); err != nil {
		t.Fatal(err)
	}
	if err := r.st.ReserveGCM(ctx, warm, 1, 1<<31-1); err != nil {
		t.Fatal(err)
	}
	r.restart()

	const warning = "half the AES-GCM limit"
	if got, want := r.ratio(), 0.75; got != want {
		t.Errorf("ratio %g, want %g (hot's 3·2^30 of 2^32)", got, want)
	}
	warned := func() map[string]int {
		n := map[string]int{}
		for _, rec := range r.log.records(t, warning) {
			n[rec["key_id"].(string)]++
		}
		return n
	}
	if w := warned(); w[hot] != 1 || len(w) != 1 {
		t.Errorf("warnings at start %v: want one, for %s", w, hot)
	}

	// warm reaches exactly half with its next encryption: warned then, once.
	r.encrypt(warm)
	r.encrypt(warm)
	if w := warned(); w[warm] != 1 || w[hot] != 1 || len(w) != 2 {
		t.Errorf("warnings after warm passed half %v: want one each for %s and %s", w, hot, warm)
	}
	for _, rec := range r.log.records(t, warning) {
		if rec["key_id"] == warm && (rec["version"] != 1.0 || rec["encryptions"] != float64(1<<31)) {
			t.Errorf("warning %v: want version 1 at 2^31 encryptions", rec)
		}
	}

	// A new version of hot starts from nothing; the highest is now warm's.
	if _, err := r.svc.RotateKeyOnDemand(ctx, alice, KeyIdInput{KeyId: hot}); err != nil {
		t.Fatal(err)
	}
	if got, want := r.ratio(), float64(1<<31+1)/GCMInvocationLimit; got != want {
		t.Errorf("ratio after rotating hot %g, want %g (warm's)", got, want)
	}
	r.encrypt(hot)
	if got := r.svc.gcm.used(hot, 2); got != 1 {
		t.Errorf("hot's new version counted %d encryptions, want 1", got)
	}
}

// TestStatsCountsKeys: keys by state and spec, every account.
func TestStatsCountsKeys(t *testing.T) {
	r := newBudgetRig(t, 0)
	ctx := context.Background()
	bob := Caller{Account: "444455556666", ARN: "arn:aws:iam::444455556666:root"}
	var ids []string
	for _, c := range []Caller{alice, alice, bob} {
		k, err := r.svc.CreateKey(ctx, c, CreateKeyInput{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, k.KeyMetadata.KeyId)
	}
	if err := r.svc.DisableKey(ctx, alice, KeyIdInput{KeyId: ids[1]}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.svc.CreateKey(ctx, alice, CreateKeyInput{KeySpec: ptr("ECC_NIST_P256"), KeyUsage: ptr(UsageSignVerify)}); err != nil {
		t.Fatal(err)
	}
	st, err := r.svc.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[KeyClass]int{
		{StateEnabled, SpecSymmetric}:   2,
		{StateDisabled, SpecSymmetric}:  1,
		{StateEnabled, "ECC_NIST_P256"}: 1,
	}
	if len(st.Keys) != len(want) {
		t.Errorf("key classes %v, want %v", st.Keys, want)
	}
	for c, n := range want {
		if st.Keys[c] != n {
			t.Errorf("%v: %d keys, want %d (all: %v)", c, st.Keys[c], n, st.Keys)
		}
	}
}

// BenchmarkGCMTake is the cost the count adds to each encryption.
func BenchmarkGCMTake(b *testing.B) {
	st, err := store.Open(filepath.Join(b.TempDir(), "meta.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	g, err := newGCMBudget(context.Background(), st, 0, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	c := g.counter("k", 1)
	c.reserved.Store(GCMInvocationLimit - 1) // no store writes: the hot path only
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := c.take(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
