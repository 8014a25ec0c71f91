package service

import (
	"context"
	"log/slog"

	"github.com/hsmkms/hsmkms/blob"
	"github.com/hsmkms/hsmkms/hsm"
)

// ReconcileReport compares the store with the token (docs/ARCHITECTURE.md,
// decision 5). Nothing is deleted: orphans are reported for an operator to
// look at.
type ReconcileReport struct {
	Keys int
	// Missing lists key versions whose record exists but whose token object
	// does not: ciphertexts under them cannot be decrypted.
	Missing []string
	// Orphans lists token objects that carry a hsmkms key reference but that
	// no record names (for example after a crash during CreateKey).
	Orphans []string
	// Stray lists objects no key reference identifies: what a creation cut
	// short leaves (an object file the token cannot read, or an incomplete
	// copy; see hsm.Token.StrayObjects), and key objects other applications
	// made in the token.
	Stray []hsm.StrayObject
}

// Reconcile lists the token's key objects and the store's records and
// reports the differences, and the objects no key reference identifies.
func (s *Service) Reconcile(ctx context.Context) (*ReconcileReport, error) {
	objs, err := s.token.Objects(ctx)
	if err != nil {
		return nil, err
	}
	stray, err := s.token.StrayObjects(ctx)
	if err != nil {
		return nil, err
	}
	recs, err := s.store.AllKeys(ctx)
	if err != nil {
		return nil, err
	}
	inToken := make(map[hsm.KeyRef]bool, len(objs))
	for _, o := range objs {
		// The material is the secret key or the private half of a pair; a
		// public half alone decrypts and signs nothing.
		if o.Class != "public" {
			inToken[o.Ref] = true
		}
	}
	rep := &ReconcileReport{Keys: len(recs), Stray: stray}
	named := make(map[hsm.KeyRef]bool)
	for _, r := range recs {
		raw, err := blob.ParseKeyID(r.ID)
		if err != nil {
			rep.Missing = append(rep.Missing, r.ID+" (malformed id)")
			continue
		}
		for _, v := range r.Versions {
			ref := hsm.KeyRef{KeyID: raw, Version: v.Number}
			named[ref] = true
			// A key being destroyed loses its objects before its record.
			if !inToken[ref] && !r.Destroying {
				rep.Missing = append(rep.Missing, ref.Label())
			}
		}
	}
	named[auditRef] = true // the audit signing key has no record
	named[readinessRef] = true
	named[markerRef] = true
	named[sealRef] = true
	for _, o := range objs {
		if !named[o.Ref] {
			rep.Orphans = append(rep.Orphans, o.Label)
		}
	}
	return rep, nil
}

// Log writes the report: one line, plus one per problem.
func (r *ReconcileReport) Log(log *slog.Logger) {
	log.Info("store and token reconciled", "keys", r.Keys, "missing", len(r.Missing), "orphans", len(r.Orphans),
		"stray", len(r.Stray))
	for _, m := range r.Missing {
		log.Error("key material missing from the token", "object", m)
	}
	for _, o := range r.Orphans {
		log.Warn("token object not named by any key record (left in place; after a restore from an older backup, `hsmkms admin adopt` lists and adopts such keys)", "object", o)
	}
	for _, o := range r.Stray {
		log.Warn("token object no key reference identifies, as an interrupted key creation leaves (left in place)",
			"object", o.String())
	}
}
