package test

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

// startDevWith runs `hsmkms serve --dev` on dataDir with extra environment
// (the binary's test hooks) and waits until it is healthy.
func startDevWith(t *testing.T, dataDir string, env ...string) (*proc, *kms.Client) {
	t.Helper()
	addr := freeAddr(t)
	p := startProc(t, cleanEnv(env...), "serve", "--dev", "--data-dir", dataDir, "--listen", addr, "--log-level", "warn")
	p.waitHealthy(t, "http://"+addr)
	return p, newClient("http://"+addr, "test", "test", nil)
}

func stop(t *testing.T, p *proc) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("hsmkms exited %d\nstderr:\n%s", code, p.stderr)
	}
}

// clean asserts that a process's start-up reconciliation found the store and
// the token in agreement: no material missing, no object without a record.
func clean(t *testing.T, p *proc) {
	t.Helper()
	if s := p.stderr.String(); strings.Contains(s, "missing from the token") || strings.Contains(s, "not named by any key record") {
		t.Fatalf("store and token disagree:\n%s", s)
	}
}

const eightDays = "192h"

// A key scheduled for deletion survives restarts in PendingDeletion; when
// its date has passed (the clock is moved, not waited for) the reaper of the
// next process deletes it: record, aliases and token objects.
func TestBinaryDeletionReachesItsDate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p, c := startDevWith(t, dir)
	doomed, kept := createKey(t, c), createKey(t, c)
	if _, err := c.CreateAlias(ctxT(t), &kms.CreateAliasInput{AliasName: aws.String("alias/doomed"), TargetKeyId: doomed.KeyId}); err != nil {
		t.Fatal(err)
	}
	blob := encrypt(t, c, aws.ToString(kept.KeyId), []byte("kept"), nil)
	sched, err := c.ScheduleKeyDeletion(ctxT(t), &kms.ScheduleKeyDeletionInput{KeyId: doomed.KeyId, PendingWindowInDays: aws.Int32(7)})
	if err != nil {
		t.Fatal(err)
	}
	if sched.KeyState != types.KeyStatePendingDeletion || aws.ToInt32(sched.PendingWindowInDays) != 7 ||
		aws.ToString(sched.KeyId) != aws.ToString(doomed.Arn) {
		t.Fatalf("ScheduleKeyDeletion = %+v", sched)
	}
	stop(t, p)

	// Restart mid-window: still pending, same date.
	p, c = startDevWith(t, dir)
	d, err := c.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: doomed.KeyId})
	if err != nil {
		t.Fatal(err)
	}
	if d.KeyMetadata.KeyState != types.KeyStatePendingDeletion || !d.KeyMetadata.DeletionDate.Equal(*sched.DeletionDate) {
		t.Fatalf("after restart: %s, deletion %v (want %v)", d.KeyMetadata.KeyState, d.KeyMetadata.DeletionDate, sched.DeletionDate)
	}
	_, err = c.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: aws.String("alias/doomed"), Plaintext: []byte("x")})
	wantAPIError(t, err, "KMSInvalidStateException", 400)
	stop(t, p)

	// Eight days later: the reaper deletes it at start.
	p, c = startDevWith(t, dir, "HSMKMS_TEST_CLOCK_OFFSET="+eightDays)
	_, err = c.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: doomed.KeyId})
	wantAPIError(t, err, "NotFoundException", 400)
	aliases, err := c.ListAliases(ctxT(t), &kms.ListAliasesInput{})
	if err != nil || len(aliases.Aliases) != 0 {
		t.Fatalf("aliases after deletion: %+v, %v", aliases, err)
	}
	if got := decrypt(t, c, blob, nil).Plaintext; string(got) != "kept" {
		t.Fatalf("the other key's blob decrypts to %q", got)
	}
	stop(t, p)

	// A plain restart finds no object without a record: the material is gone.
	p, _ = startDevWith(t, dir, "HSMKMS_TEST_CLOCK_OFFSET="+eightDays)
	clean(t, p)
	stop(t, p)
}

// SIGKILL at each phase of a deletion; the next start finishes it, and the
// one after finds store and token in agreement. No ciphertext under another
// key is harmed.
func TestBinaryDeletionSurvivesSIGKILL(t *testing.T) {
	t.Parallel()
	for _, phase := range []string{"marked", "destroyed"} {
		t.Run(phase, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			p, c := startDevWith(t, dir)
			doomed, kept := createKey(t, c), createKey(t, c)
			blob := encrypt(t, c, aws.ToString(kept.KeyId), []byte("kept"), nil)
			if _, err := c.ScheduleKeyDeletion(ctxT(t), &kms.ScheduleKeyDeletionInput{KeyId: doomed.KeyId, PendingWindowInDays: aws.Int32(7)}); err != nil {
				t.Fatal(err)
			}
			stop(t, p)

			crasher := startProc(t, cleanEnv("HSMKMS_TEST_CLOCK_OFFSET="+eightDays, "HSMKMS_TEST_CRASH_AT="+phase),
				"serve", "--dev", "--data-dir", dir, "--listen", freeAddr(t))
			crasher.wait(t, 30*time.Second)
			ws, ok := crasher.cmd.ProcessState.Sys().(syscall.WaitStatus)
			if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
				t.Fatalf("the process did not die by SIGKILL at %s: %v\nstderr:\n%s", phase, crasher.cmd.ProcessState, crasher.stderr)
			}

			p, c = startDevWith(t, dir, "HSMKMS_TEST_CLOCK_OFFSET="+eightDays)
			_, err := c.DescribeKey(ctxT(t), &kms.DescribeKeyInput{KeyId: doomed.KeyId})
			wantAPIError(t, err, "NotFoundException", 400)
			if got := decrypt(t, c, blob, nil).Plaintext; string(got) != "kept" {
				t.Fatalf("the other key's blob decrypts to %q", got)
			}
			stop(t, p)
			p, _ = startDevWith(t, dir, "HSMKMS_TEST_CLOCK_OFFSET="+eightDays)
			clean(t, p)
			stop(t, p)
		})
	}
}
