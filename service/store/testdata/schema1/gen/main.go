// Command gen writes the schema-1 store in ../ (hsmkms.db.gz and
// hsmkms-grants.db.gz): the format every hsmkms wrote before stores recorded
// a schema version. It uses only the store API that release had, so it is
// built at that release's commit (see ../regen.sh), never with later code,
// which writes the current schema instead.
//
// The records are fixed (ids, times, contents); TestOpenMigratesSchema1
// checks that a store opened by the current code holds exactly them.
package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hsmkms/hsmkms/service/store"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: gen OUTDIR")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(out string) error {
	ctx := context.Background()
	tmp, err := os.MkdirTemp("", "schema1-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	path := filepath.Join(tmp, "hsmkms.db")
	s, err := store.Open(path)
	if err != nil {
		return err
	}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	policy := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}`
	keys := []store.Key{
		{ID: "0b9e3c9c-6a8f-4e37-9d2c-1f2a3b4c5d6e", Account: "111122223333", Region: "us-east-1", CreatedAt: t0,
			Description: "rotated symmetric key", State: "Enabled", KeySpec: "SYMMETRIC_DEFAULT", KeyUsage: "ENCRYPT_DECRYPT",
			Origin: "AWS_KMS", Policy: policy, Tags: []store.Tag{{Key: "team", Value: "payments"}},
			RotationEnabled: true, RotationPeriodInDays: 90, RotationBase: t0,
			Versions: []store.Version{{Number: 1, CreatedAt: t0}, {Number: 2, CreatedAt: t0.Add(time.Hour), Rotation: "ON_DEMAND"}}},
		{ID: "5c1d2e3f-4a5b-4c6d-8e7f-901234567890", Account: "111122223333", Region: "us-east-1", CreatedAt: t0.Add(time.Minute),
			State: "Disabled", KeySpec: "ECC_NIST_P256", KeyUsage: "SIGN_VERIFY", Origin: "AWS_KMS", Policy: policy,
			Versions: []store.Version{{Number: 1, CreatedAt: t0.Add(time.Minute)}}},
		{ID: "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a", Account: "444455556666", Region: "us-east-1", CreatedAt: t0.Add(2 * time.Minute),
			State: "PendingDeletion", KeySpec: "SYMMETRIC_DEFAULT", KeyUsage: "ENCRYPT_DECRYPT", Origin: "AWS_KMS", Policy: policy,
			DeletionDate: t0.Add(7 * 24 * time.Hour), PendingWindowInDays: 7,
			Versions: []store.Version{{Number: 1, CreatedAt: t0.Add(2 * time.Minute)}}},
	}
	for _, k := range keys {
		if err := s.CreateKey(ctx, k, 0); err != nil {
			return err
		}
	}
	// A second revision of the first key.
	if _, err := s.UpdateKey(ctx, keys[0].ID, func(k *store.Key) error { k.Description = "rotated symmetric key, revised"; return nil }); err != nil {
		return err
	}
	if err := s.CreateAlias(ctx, store.Alias{Name: "alias/app", Account: "111122223333", TargetKeyID: keys[0].ID,
		CreatedAt: t0, UpdatedAt: t0}, 0); err != nil {
		return err
	}
	grants := []store.Grant{
		{KeyID: keys[0].ID, ID: "1111111111111111111111111111111111111111111111111111111111111111", Name: "app-decrypt",
			CreatedAt: t0, GranteePrincipal: "arn:aws:iam::111122223333:role/app", RetiringPrincipal: "arn:aws:iam::111122223333:role/ops",
			IssuingAccount: "111122223333", Operations: []string{"Decrypt", "Encrypt"},
			ContextEquals: map[string]string{"purpose": "test"}},
		{KeyID: keys[0].ID, ID: "2222222222222222222222222222222222222222222222222222222222222222",
			CreatedAt: t0, GranteePrincipal: "arn:aws:iam::111122223333:role/batch", IssuingAccount: "111122223333",
			Operations: []string{"GenerateDataKey"}},
		{KeyID: keys[1].ID, ID: "3333333333333333333333333333333333333333333333333333333333333333",
			CreatedAt: t0, GranteePrincipal: "arn:aws:iam::111122223333:role/signer", IssuingAccount: "111122223333",
			Operations: []string{"Sign"}},
	}
	for _, g := range grants {
		if _, _, err := s.CreateGrant(ctx, g, 0); err != nil {
			return err
		}
	}
	if err := s.Close(); err != nil {
		return err
	}
	for _, name := range []string{"hsmkms.db", "hsmkms-grants.db"} {
		raw, err := os.ReadFile(filepath.Join(tmp, name))
		if err != nil {
			return err
		}
		var gz bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
		zw.Name = name
		zw.ModTime = t0 // fixed, so the same records give the same bytes
		if _, err := zw.Write(raw); err != nil {
			return err
		}
		if err := zw.Close(); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(out, name+".gz"), gz.Bytes(), 0o644); err != nil {
			return err
		}
	}
	return nil
}
