package service

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/hsmkms/hsmkms/blob"
	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/service/store"
)

// lostRecords returns a Service on the fixture's token over a new store
// holding only recs: the service after a restore of a backup older than the
// fixture's other keys.
func lostRecords(t *testing.T, f *fixture, recs ...store.Key) (*Service, *store.Bolt) {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "restored.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for _, r := range recs {
		if err := st.CreateKey(context.Background(), r, 0); err != nil {
			t.Fatal(err)
		}
	}
	svc, err := New(Config{Token: f.token, Store: st, Region: "eu-west-1", Now: func() time.Time { return fixedNow }})
	if err != nil {
		t.Fatal(err)
	}
	return svc, st
}

func candidateOf(t *testing.T, svc *Service, id string) (AdoptionCandidate, bool) {
	t.Helper()
	cs, err := svc.AdoptionCandidates(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(cs, func(c AdoptionCandidate) bool { return c.KeyID == id })
	if i < 0 {
		return AdoptionCandidate{}, false
	}
	return cs[i], true
}

// TestAdoptAfterRestore: keys made after the backup a store was restored
// from, and a version a rotation added since, are candidates with the spec
// their objects show; adopting them (behind one commit gate naming them
// all) makes what was made with them usable again — symmetric ciphertext,
// signatures, MACs, RSA decryption — new keys Disabled under the account's
// default policy, the rotated key in its own state; and they are then no
// longer reconciliation's orphans.
func TestAdoptAfterRestore(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	create := func(spec, usage string) KeyMetadata {
		t.Helper()
		in := CreateKeyInput{KeySpec: &spec, KeyUsage: &usage}
		out, err := f.svc.CreateKey(ctx, alice, in)
		if err != nil {
			t.Fatal(err)
		}
		return out.KeyMetadata
	}
	sym := create(SpecSymmetric, UsageEncryptDecrypt)
	backedUp, err := f.store.GetKey(ctx, sym.KeyId) // the record as the backup has it: version 1
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.RotateKeyOnDemand(ctx, alice, KeyIdInput{KeyId: sym.KeyId}); err != nil {
		t.Fatal(err)
	}
	ec := create("ECC_NIST_P256", UsageSignVerify)
	mac := create("HMAC_256", UsageMAC)
	rsa := create("RSA_2048", UsageEncryptDecrypt)

	pt := []byte("made after the backup")
	enc, err := f.svc.Encrypt(ctx, alice, EncryptInput{KeyId: sym.KeyId, Plaintext: pt})
	if err != nil {
		t.Fatal(err)
	}
	sig, err := f.svc.Sign(ctx, alice, SignInput{KeyId: ec.KeyId, Message: pt, SigningAlgorithm: ptr("ECDSA_SHA_256")})
	if err != nil {
		t.Fatal(err)
	}
	tag, err := f.svc.GenerateMac(ctx, alice, GenerateMacInput{KeyId: mac.KeyId, Message: pt, MacAlgorithm: ptr("HMAC_SHA_256")})
	if err != nil {
		t.Fatal(err)
	}

	svc, _ := lostRecords(t, f, backedUp)
	if _, err := svc.Decrypt(ctx, alice, DecryptInput{CiphertextBlob: enc.CiphertextBlob}); err == nil {
		t.Fatal("a ciphertext under a version the restored record lacks decrypts before adoption")
	}
	rep, err := svc.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]AdoptionCandidate{
		sym.KeyId: {KeyID: sym.KeyId, Versions: []uint32{2}, KeySpec: SpecSymmetric, KeyUsage: UsageEncryptDecrypt, Existing: true, Account: alice.Account},
		ec.KeyId:  {KeyID: ec.KeyId, Versions: []uint32{1}, KeySpec: "ECC_NIST_P256", KeyUsage: UsageSignVerify},
		mac.KeyId: {KeyID: mac.KeyId, Versions: []uint32{1}, KeySpec: "HMAC_256", KeyUsage: UsageMAC},
		rsa.KeyId: {KeyID: rsa.KeyId, Versions: []uint32{1}, KeySpec: "RSA_2048", KeyUsage: UsageEncryptDecrypt},
	}
	for id, w := range want {
		c, ok := candidateOf(t, svc, id)
		if !ok || !slices.Equal(c.Versions, w.Versions) || c.KeySpec != w.KeySpec || c.KeyUsage != w.KeyUsage ||
			c.Existing != w.Existing || c.Account != w.Account || c.Problem != "" {
			t.Errorf("candidate %s: %+v (found %v), want %+v", id, c, ok, w)
		}
		raw, _ := blob.ParseKeyID(id)
		label := hsm.KeyRef{KeyID: raw, Version: w.Versions[0]}.Label()
		if !slices.Contains(rep.Orphans, label) {
			t.Errorf("reconciliation does not report %s as an orphan: %v", label, rep.Orphans)
		}
	}

	// A gate that refuses: nothing is adopted.
	refused := WithCommitGate(ctx, func(context.Context, []string) error { return errors.New("audit log broken") })
	if _, err := svc.Adopt(refused, AdoptInput{KeyIDs: []string{ec.KeyId}, Account: alice.Account}); err == nil {
		t.Fatal("Adopt with a refusing commit gate succeeded")
	}
	if _, ok := candidateOf(t, svc, ec.KeyId); !ok {
		t.Fatal("a refused adoption adopted the key")
	}

	var gated [][]string
	gate := WithCommitGate(ctx, func(_ context.Context, arns []string) error { gated = append(gated, arns); return nil })
	ids := []string{sym.KeyId, ec.KeyId, mac.KeyId, rsa.KeyId}
	out, err := svc.Adopt(gate, AdoptInput{KeyIDs: ids, Account: alice.Account})
	if err != nil {
		t.Fatal(err)
	}
	if len(gated) != 1 || len(gated[0]) != 4 || !strings.HasSuffix(gated[0][1], ":key/"+ec.KeyId) {
		t.Errorf("commit gate calls %v, want one naming the 4 keys", gated)
	}
	if len(out.Adopted) != 4 {
		t.Fatalf("adopted %+v", out.Adopted)
	}
	for _, a := range out.Adopted {
		wantState := StateDisabled
		if a.KeyID == sym.KeyId {
			wantState = StateEnabled // its record says so
		}
		if a.State != wantState || a.ARN != "arn:aws:kms:eu-west-1:"+alice.Account+":key/"+a.KeyID {
			t.Errorf("adopted %+v, want state %s", a, wantState)
		}
	}

	// The rotated key: its newer ciphertext decrypts, and it encrypts
	// under its newest version again.
	dec, err := svc.Decrypt(ctx, alice, DecryptInput{CiphertextBlob: enc.CiphertextBlob})
	if err != nil || !bytes.Equal(dec.Plaintext, pt) {
		t.Fatalf("decrypt after adoption: %v", err)
	}
	rec, _ := svc.store.GetKey(ctx, sym.KeyId)
	if rec.Current().Number != 2 || len(rec.Versions) != 2 {
		t.Errorf("rotated key's versions after adoption: %+v", rec.Versions)
	}
	// New records: Disabled until enabled, under the account's default policy.
	if _, err := svc.Verify(ctx, alice, VerifyInput{KeyId: ec.KeyId, Message: pt, Signature: sig.Signature, SigningAlgorithm: ptr("ECDSA_SHA_256")}); err == nil {
		t.Error("an adopted key is usable before it is enabled")
	} else {
		wantCode(t, err, ExcDisabled)
	}
	for _, id := range ids[1:] {
		if err := svc.EnableKey(ctx, alice, KeyIdInput{KeyId: id}); err != nil {
			t.Fatalf("enable %s: %v", id, err)
		}
		r, _ := svc.store.GetKey(ctx, id)
		if r.Policy != defaultPolicy("aws", alice.Account) || r.Account != alice.Account || !strings.Contains(r.Description, "Adopted") {
			t.Errorf("adopted record %+v", r)
		}
	}
	if v, err := svc.Verify(ctx, alice, VerifyInput{KeyId: ec.KeyId, Message: pt, Signature: sig.Signature, SigningAlgorithm: ptr("ECDSA_SHA_256")}); err != nil || !v.SignatureValid {
		t.Errorf("a signature made before the restore, verified after adoption: %+v, %v", v, err)
	}
	if v, err := svc.VerifyMac(ctx, alice, VerifyMacInput{KeyId: mac.KeyId, Message: pt, Mac: tag.Mac, MacAlgorithm: ptr("HMAC_SHA_256")}); err != nil || !v.MacValid {
		t.Errorf("a MAC made before the restore, verified after adoption: %+v, %v", v, err)
	}
	if _, err := svc.Encrypt(ctx, alice, EncryptInput{KeyId: rsa.KeyId, Plaintext: pt, EncryptionAlgorithm: ptr("RSAES_OAEP_SHA_256")}); err != nil {
		t.Errorf("the adopted RSA key: %v", err)
	}

	rep, err = svc.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if _, ok := candidateOf(t, svc, id); ok {
			t.Errorf("%s is still a candidate after adoption", id)
		}
		for _, o := range rep.Orphans {
			if strings.Contains(o, id) {
				t.Errorf("reconciliation still reports %s", o)
			}
		}
	}
	if _, err := svc.Adopt(ctx, AdoptInput{KeyIDs: []string{ec.KeyId}, Account: alice.Account}); err == nil {
		t.Error("adopting a key a second time succeeded")
	} else {
		wantCode(t, err, ExcNotFound)
	}
}

// TestAdoptRefuses: what hsmkms would not have made is no candidate to
// adopt — versions beyond 1 of a key that does not rotate, material of
// another kind than the key's record, the service's own keys — and the
// request itself must name an account and either keys or all.
func TestAdoptRefuses(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	ecID := uuid.New()
	if err := f.token.GenerateECKeyPair(ctx, hsm.KeyRef{KeyID: ecID, Version: 2}, hsm.P256); err != nil {
		t.Fatal(err)
	}
	sym := f.key(t)
	raw, _ := blob.ParseKeyID(sym.KeyId)
	if err := f.token.GenerateHMACKey(ctx, hsm.KeyRef{KeyID: raw, Version: 2}, 32); err != nil {
		t.Fatal(err)
	}
	rec, _ := f.store.GetKey(ctx, sym.KeyId)
	svc, _ := lostRecords(t, f, rec)

	for _, tc := range []struct {
		id   string
		says string
	}{
		{ecID.String(), "version 1 only"},
		{sym.KeyId, "its record is a SYMMETRIC_DEFAULT key"},
	} {
		c, ok := candidateOf(t, svc, tc.id)
		if !ok || !strings.Contains(c.Problem, tc.says) {
			t.Errorf("candidate %s: %+v (found %v), want a problem saying %q", tc.id, c, ok, tc.says)
		}
		_, err := svc.Adopt(ctx, AdoptInput{KeyIDs: []string{tc.id}, Account: alice.Account})
		wantCode(t, err, ExcValidation)
	}
	cs, err := svc.AdoptionCandidates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if raw, _ := blob.ParseKeyID(c.KeyID); raw == auditRef.KeyID || raw == markerRef.KeyID || raw == readinessRef.KeyID || raw == sealRef.KeyID {
			t.Errorf("the service's own key %s is a candidate", c.KeyID)
		}
	}
	// With All, candidates with a problem are skipped and reported; no
	// record of them is made.
	out, err := svc.Adopt(ctx, AdoptInput{All: true, Account: alice.Account})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{ecID.String(), sym.KeyId} {
		if !slices.ContainsFunc(out.Skipped, func(c AdoptionCandidate) bool { return c.KeyID == id }) {
			t.Errorf("%s not reported as skipped: %+v", id, out.Skipped)
		}
	}
	if r, _ := svc.store.GetKey(ctx, sym.KeyId); len(r.Versions) != 1 {
		t.Errorf("the refused version was added: %+v", r.Versions)
	}
	if _, err := svc.store.GetKey(ctx, ecID.String()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the refused key got a record: %v", err)
	}

	for _, in := range []AdoptInput{
		{KeyIDs: []string{sym.KeyId}},
		{KeyIDs: []string{sym.KeyId}, Account: "1111-2222-33"},
		{Account: alice.Account},
		{All: true, KeyIDs: []string{sym.KeyId}, Account: alice.Account},
	} {
		_, err := svc.Adopt(ctx, in)
		wantCode(t, err, ExcValidation)
	}
	_, err = svc.Adopt(ctx, AdoptInput{KeyIDs: []string{uuid.NewString()}, Account: alice.Account})
	wantCode(t, err, ExcNotFound)
}
