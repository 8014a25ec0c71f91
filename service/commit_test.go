package service

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hsmkms/hsmkms/audit"
)

// The background work records each change it makes before the change
// commits: a key deleted when its waiting period ends, a key rotated on
// schedule. When the record cannot be written, the key is left alone until
// a later pass can record it.
func TestScheduledWorkIsRecordedBeforeItCommits(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c := &clock{now: fixedNow}
	svc := withClock(t, f, c, nil)
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "audit.log")
	w, err := svc.OpenAuditLog(ctx, audit.Config{File: file}, filepath.Join(t.TempDir(), "pub.pem"))
	if err != nil {
		t.Fatal(err)
	}
	doomed, err := svc.CreateKey(ctx, alice, CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	rotating, err := svc.CreateKey(ctx, alice, CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.ScheduleKeyDeletion(ctx, alice, ScheduleKeyDeletionInput{KeyId: doomed.KeyMetadata.KeyId, PendingWindowInDays: ptr(int32(7))}); err != nil {
		t.Fatal(err)
	}
	if err := svc.EnableKeyRotation(ctx, alice, EnableKeyRotationInput{KeyId: rotating.KeyMetadata.KeyId, RotationPeriodInDays: ptr(int32(90))}); err != nil {
		t.Fatal(err)
	}
	svc.RecordServiceEvents(w)
	c.Add(91 * day)

	// A log that takes no records: nothing is deleted or rotated.
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := svc.ReapDue(ctx); n != 0 || !errors.Is(err, audit.ErrClosed) {
		t.Fatalf("ReapDue with the log closed = %d, %v", n, err)
	}
	if n, err := svc.RotateDue(ctx); n != 0 || !errors.Is(err, audit.ErrClosed) {
		t.Fatalf("RotateDue with the log closed = %d, %v", n, err)
	}
	if d, err := svc.DescribeKey(ctx, alice, DescribeKeyInput{KeyId: doomed.KeyMetadata.KeyId}); err != nil || d.KeyMetadata.KeyState != StatePendingDeletion {
		t.Fatalf("the key due for deletion: %+v, %v", d, err)
	}
	if l, err := svc.ListKeyRotations(ctx, alice, ListKeyRotationsInput{KeyId: rotating.KeyMetadata.KeyId}); err != nil || len(l.Rotations) != 0 {
		t.Fatalf("rotations with the log closed: %+v, %v", l, err)
	}

	w, err = svc.OpenAuditLog(ctx, audit.Config{File: file}, filepath.Join(t.TempDir(), "pub.pem"))
	if err != nil {
		t.Fatal(err)
	}
	svc.RecordServiceEvents(w)
	if n, err := svc.ReapDue(ctx); n != 1 || err != nil {
		t.Fatalf("ReapDue = %d, %v", n, err)
	}
	if n, err := svc.RotateDue(ctx); n != 1 || err != nil {
		t.Fatalf("RotateDue = %d, %v", n, err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var e struct {
			EventName, EventType string
			UserIdentity         struct{ InvokedBy string }
			Resources            []struct{ ARN string }
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatal(err)
		}
		if e.EventType == audit.EventTypeService && len(e.Resources) == 1 && e.UserIdentity.InvokedBy == audit.EventSource {
			got[e.EventName] = e.Resources[0].ARN
		}
	}
	if got["DeleteKey"] != doomed.KeyMetadata.Arn || got["RotateKey"] != rotating.KeyMetadata.Arn {
		t.Errorf("service events %v", got)
	}
}
