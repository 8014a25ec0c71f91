package service

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hsmkms/hsmkms/blob"
)

func TestRotationKeepsEveryGeneration(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	md := f.key(t)
	var blobs [][]byte
	var materials []string
	for gen := 1; gen <= 3; gen++ {
		enc, err := f.svc.Encrypt(ctx, alice, EncryptInput{KeyId: md.KeyId, Plaintext: []byte{byte(gen)}})
		if err != nil {
			t.Fatal(err)
		}
		blobs = append(blobs, enc.CiphertextBlob)
		d, _ := f.svc.DescribeKey(ctx, alice, DescribeKeyInput{KeyId: md.KeyId})
		materials = append(materials, d.KeyMetadata.CurrentKeyMaterialId)
		if gen < 3 {
			out, err := f.svc.RotateKeyOnDemand(ctx, alice, KeyIdInput{KeyId: md.KeyId})
			if err != nil || out.KeyId != md.Arn {
				t.Fatalf("RotateKeyOnDemand = %+v, %v", out, err)
			}
		}
	}
	if materials[0] == materials[1] || materials[1] == materials[2] {
		t.Fatalf("CurrentKeyMaterialId did not change with rotation: %v", materials)
	}
	for i, b := range blobs {
		dec, err := f.svc.Decrypt(ctx, alice, DecryptInput{CiphertextBlob: b})
		if err != nil || !bytes.Equal(dec.Plaintext, []byte{byte(i + 1)}) || dec.KeyMaterialId != materials[i] {
			t.Fatalf("generation %d: %+v, %v", i+1, dec, err)
		}
	}
	re, err := f.svc.ReEncrypt(ctx, alice, ReEncryptInput{CiphertextBlob: blobs[0], DestinationKeyId: md.KeyId})
	if err != nil || re.SourceKeyMaterialId != materials[0] || re.DestinationKeyMaterialId != materials[2] {
		t.Fatalf("ReEncrypt onto the newest = %+v, %v", re, err)
	}
	rot, err := f.svc.ListKeyRotations(ctx, alice, ListKeyRotationsInput{KeyId: md.KeyId})
	if err != nil || len(rot.Rotations) != 2 || rot.Rotations[0].RotationType != RotationOnDemand ||
		rot.Rotations[1].KeyMaterialState != "CURRENT" || rot.Rotations[0].KeyMaterialId != materials[1] {
		t.Fatalf("ListKeyRotations = %+v, %v", rot, err)
	}
	all, err := f.svc.ListKeyRotations(ctx, alice, ListKeyRotationsInput{KeyId: md.KeyId, IncludeKeyMaterial: ptr("ALL_KEY_MATERIAL"), Limit: ptr[int32](2)})
	if err != nil || len(all.Rotations) != 2 || !all.Truncated || all.Rotations[0].RotationDate != nil {
		t.Fatalf("first page of all material = %+v, %v", all, err)
	}
	rest, err := f.svc.ListKeyRotations(ctx, alice, ListKeyRotationsInput{KeyId: md.KeyId, IncludeKeyMaterial: ptr("ALL_KEY_MATERIAL"), Marker: &all.NextMarker})
	if err != nil || len(rest.Rotations) != 1 || rest.Truncated || rest.Rotations[0].KeyMaterialId != materials[2] {
		t.Fatalf("second page = %+v, %v", rest, err)
	}
}

func TestAutomaticRotationSchedule(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c := &clock{now: fixedNow}
	svc := withClock(t, f, c, nil)
	ctx := context.Background()
	out, err := svc.CreateKey(ctx, alice, CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	id := out.KeyMetadata.KeyId
	err = svc.EnableKeyRotation(ctx, alice, EnableKeyRotationInput{KeyId: id, RotationPeriodInDays: ptr[int32](89)})
	wantCode(t, err, ExcValidation)
	if err := svc.EnableKeyRotation(ctx, alice, EnableKeyRotationInput{KeyId: id, RotationPeriodInDays: ptr[int32](90)}); err != nil {
		t.Fatal(err)
	}
	st, err := svc.GetKeyRotationStatus(ctx, alice, KeyIdInput{KeyId: id})
	if err != nil || !st.KeyRotationEnabled || *st.RotationPeriodInDays != 90 || !st.NextRotationDate.Equal(fixedNow.Add(90*day)) {
		t.Fatalf("GetKeyRotationStatus = %+v, %v", st, err)
	}
	versions := func() int {
		r, _ := f.store.GetKey(ctx, id)
		return len(r.Versions)
	}
	c.Add(90*day - time.Second)
	if n, err := svc.RotateDue(ctx); n != 0 || err != nil {
		t.Fatalf("RotateDue early = %d, %v", n, err)
	}
	c.Add(time.Second)
	if n, err := svc.RotateDue(ctx); n != 1 || err != nil || versions() != 2 {
		t.Fatalf("RotateDue on time = %d, %v, %d versions", n, err, versions())
	}
	// An on-demand rotation does not move the schedule.
	if _, err := svc.RotateKeyOnDemand(ctx, alice, KeyIdInput{KeyId: id}); err != nil {
		t.Fatal(err)
	}
	st, _ = svc.GetKeyRotationStatus(ctx, alice, KeyIdInput{KeyId: id})
	if !st.NextRotationDate.Equal(fixedNow.Add(180 * day)) {
		t.Fatalf("next rotation %v, want %v", st.NextRotationDate, fixedNow.Add(180*day))
	}
	// Downtime of a year: one catch-up rotation, then a full period.
	c.Add(400 * day)
	if n, _ := svc.RotateDue(ctx); n != 1 || versions() != 4 {
		t.Fatalf("catch-up rotated %d, %d versions", n, versions())
	}
	if n, _ := svc.RotateDue(ctx); n != 0 {
		t.Fatal("rotated twice for one missed period")
	}
	rot, _ := svc.ListKeyRotations(ctx, alice, ListKeyRotationsInput{KeyId: id})
	if len(rot.Rotations) != 3 || rot.Rotations[0].RotationType != RotationAutomatic || rot.Rotations[1].RotationType != RotationOnDemand {
		t.Fatalf("rotations %+v", rot.Rotations)
	}
	// Disabled keys: rotation calls refuse, the schedule waits.
	if err := svc.DisableKey(ctx, alice, KeyIdInput{KeyId: id}); err != nil {
		t.Fatal(err)
	}
	c.Add(400 * day)
	if n, _ := svc.RotateDue(ctx); n != 0 {
		t.Fatal("a disabled key was rotated")
	}
	_, err = svc.RotateKeyOnDemand(ctx, alice, KeyIdInput{KeyId: id})
	wantCode(t, err, ExcDisabled)
	wantCode(t, svc.DisableKeyRotation(ctx, alice, KeyIdInput{KeyId: id}), ExcDisabled)
	if _, err := svc.GetKeyRotationStatus(ctx, alice, KeyIdInput{KeyId: id}); err != nil {
		t.Fatalf("GetKeyRotationStatus of a disabled key: %v", err)
	}
}

func TestOnDemandRotationLimit(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	md := f.key(t)
	for i := 0; i < MaxOnDemandRotations; i++ {
		if _, err := f.svc.RotateKeyOnDemand(ctx, alice, KeyIdInput{KeyId: md.KeyId}); err != nil {
			t.Fatalf("rotation %d: %v", i+1, err)
		}
	}
	_, err := f.svc.RotateKeyOnDemand(ctx, alice, KeyIdInput{KeyId: md.KeyId})
	if e := wantCode(t, err, ExcLimitExceeded); e.Message != "The on-demand rotations limit has been reached for the given keyId. No more on-demand rotations can be performed for this key: "+md.Arn {
		t.Fatalf("message %q", e.Message)
	}
}

// A crash between generating the new version and recording it leaves an
// object no record names; ciphertexts are unaffected, reconciliation reports
// the object, and the next rotation adopts it.
func TestRotationCrash(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c := &clock{now: fixedNow}
	ctx := context.Background()
	crash := errors.New("crash")
	crashing := withClock(t, f, c, func(p, _ string) {
		if p == PhaseRotated {
			panic(crash)
		}
	})
	out, err := crashing.CreateKey(ctx, alice, CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	id := out.KeyMetadata.KeyId
	enc, err := crashing.Encrypt(ctx, alice, EncryptInput{KeyId: id, Plaintext: []byte("v1")})
	if err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() {
			if r := recover(); r != crash {
				t.Fatalf("rotation did not reach the hook: %v", r)
			}
		}()
		crashing.RotateKeyOnDemand(ctx, alice, KeyIdInput{KeyId: id})
	}()
	restarted := withClock(t, f, c, nil)
	rep, err := restarted.Reconcile(ctx)
	orphaned := false
	for _, o := range rep.Orphans {
		orphaned = orphaned || o == "hsmkms/"+id+"/v2"
	}
	if err != nil || len(rep.Missing) != 0 || !orphaned {
		t.Fatalf("reconcile after a crashed rotation: %+v, %v", rep, err)
	}
	if dec, err := restarted.Decrypt(ctx, alice, DecryptInput{CiphertextBlob: enc.CiphertextBlob}); err != nil || string(dec.Plaintext) != "v1" {
		t.Fatalf("decrypt after the crash: %v", err)
	}
	if _, err := restarted.RotateKeyOnDemand(ctx, alice, KeyIdInput{KeyId: id}); err != nil {
		t.Fatalf("rotation after the crash: %v", err)
	}
	rep, _ = restarted.Reconcile(ctx)
	for _, o := range rep.Orphans {
		if bytes.Contains([]byte(o), []byte(id)) {
			t.Fatalf("the crashed rotation's object is still an orphan: %v", rep.Orphans)
		}
	}
	enc2, err := restarted.Encrypt(ctx, alice, EncryptInput{KeyId: id, Plaintext: []byte("v2")})
	if err != nil {
		t.Fatal(err)
	}
	if dec, err := restarted.Decrypt(ctx, alice, DecryptInput{CiphertextBlob: enc2.CiphertextBlob}); err != nil || string(dec.Plaintext) != "v2" {
		t.Fatalf("decrypt under the adopted version: %v", err)
	}
}

// TestRotateKeyOnDemandConcurrent: 30 concurrent RotateKeyOnDemand calls on
// a fresh key: exactly 25 rotate it, the others get LimitExceededException,
// and the refused ones leave no material in the token.
func TestRotateKeyOnDemandConcurrent(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	md := f.key(t)
	errs := concurrently(30, func(int) error {
		_, err := f.svc.RotateKeyOnDemand(ctx, alice, KeyIdInput{KeyId: md.KeyId})
		return err
	})
	want := "The on-demand rotations limit has been reached for the given keyId. No more on-demand rotations can be performed for this key: " + md.Arn
	if ok := tally(t, errs, want); ok != MaxOnDemandRotations {
		t.Fatalf("%d of 30 concurrent on-demand rotations succeeded, want %d", ok, MaxOnDemandRotations)
	}
	rec, err := f.store.GetKey(ctx, md.KeyId)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Versions) != 1+MaxOnDemandRotations || onDemandRotations(&rec) != MaxOnDemandRotations {
		t.Fatalf("the key has %d versions, %d on demand", len(rec.Versions), onDemandRotations(&rec))
	}
	raw, _ := blob.ParseKeyID(md.KeyId)
	objs, err := f.token.Objects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, o := range objs {
		if o.Ref.KeyID == raw {
			n++
		}
	}
	if n != len(rec.Versions) {
		t.Fatalf("the token holds %d objects of the key, its record %d versions", n, len(rec.Versions))
	}
}
