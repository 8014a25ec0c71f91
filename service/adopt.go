package service

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/hsmkms/hsmkms/blob"
	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/service/store"
)

// Adoption: after a restore from an older backup, the key versions made
// since that backup are still in the token, with no record naming them
// (reconciliation reports them as orphans), and ciphertexts under them
// cannot be decrypted. Adopt brings such versions back under a record: a
// new record for a key the store does not know, or the missing versions
// added to a record that exists (a key rotated since the backup). Only
// objects as hsmkms makes them are adopted (hsm.Token.KeyMaterials), and
// nothing in the token is changed or destroyed.
//
// What the token does not hold is lost with the record: the key's account,
// policy, description, tags, aliases, grants, original state and dates.
// An adopted key so gets:
//   - the account the operator names (AdoptInput.Account): nothing in the
//     token says which it was;
//   - the default key policy of that account (its root, which delegates to
//     IAM), as CreateKey gives a key created without a policy;
//   - the state Disabled: the key may have been disabled or pending
//     deletion when its record was lost, and its policy is a guess, so it
//     is used again only once someone of that account decides so
//     (EnableKey);
//   - a description saying it was adopted, and its adoption time as its
//     creation date.

// AdoptionCandidate is one key whose versions are in the token without a
// record naming them.
type AdoptionCandidate struct {
	KeyID string `json:"keyId"`
	// Versions are the versions no record names, in order.
	Versions []uint32 `json:"versions"`
	KeySpec  string   `json:"keySpec,omitempty"`
	KeyUsage string   `json:"keyUsage,omitempty"`
	// Existing: the key has a record (of Account); the versions would be
	// added to it.
	Existing bool   `json:"existing,omitempty"`
	Account  string `json:"account,omitempty"`
	// Problem says why the key cannot be adopted; "" if it can.
	Problem string `json:"problem,omitempty"`
}

// AdoptInput says which keys to adopt.
type AdoptInput struct {
	// KeyIDs are the keys to adopt; All adopts every candidate without a
	// problem instead.
	KeyIDs []string
	All    bool
	// Account is the account a new record is made in (12 digits). Versions
	// added to an existing record stay in its account.
	Account string
}

// AdoptedKey is a key Adopt brought back under a record.
type AdoptedKey struct {
	AdoptionCandidate
	ARN   string `json:"arn"`
	State string `json:"state"`
}

// AdoptOutput is what Adopt did: the keys it adopted and the candidates it
// left, with their problems.
type AdoptOutput struct {
	Adopted []AdoptedKey        `json:"adopted"`
	Skipped []AdoptionCandidate `json:"skipped,omitempty"`
}

// AdoptionCandidates lists the keys whose versions are in the token without
// a record naming them, each with the spec and usage its objects show, or
// the problem that keeps it from being adopted. It changes nothing.
func (s *Service) AdoptionCandidates(ctx context.Context) ([]AdoptionCandidate, error) {
	mats, err := s.token.KeyMaterials(ctx)
	if err != nil {
		return nil, fromTokenNoKey(err)
	}
	recs, err := s.store.AllKeys(ctx)
	if err != nil {
		return nil, internal(err)
	}
	byID := make(map[string]*store.Key, len(recs))
	named := make(map[hsm.KeyRef]bool)
	for i := range recs {
		r := &recs[i]
		byID[r.ID] = r
		if raw, err := blob.ParseKeyID(r.ID); err == nil {
			for _, v := range r.Versions {
				named[hsm.KeyRef{KeyID: raw, Version: v.Number}] = true
			}
		}
	}
	// KeyMaterials lists by reference, so a key's versions are adjacent.
	var out []AdoptionCandidate
	for i := 0; i < len(mats); {
		j := i
		for j < len(mats) && mats[j].Ref.KeyID == mats[i].Ref.KeyID {
			j++
		}
		var unnamed []hsm.Material
		for _, m := range mats[i:j] {
			if !named[m.Ref] {
				unnamed = append(unnamed, m)
			}
		}
		raw := mats[i].Ref.KeyID
		i = j
		// The service's own keys (audit, marker, readiness) have ids
		// outside the UUID-4 space, as every id hsmkms gives a key is in it.
		if len(unnamed) == 0 || !uuid4(raw) {
			continue
		}
		out = append(out, candidate(blob.FormatKeyID(raw), unnamed, byID[blob.FormatKeyID(raw)]))
	}
	return out, nil
}

// accountID reports whether s is an AWS account id: 12 decimal digits.
func accountID(s string) bool {
	if len(s) != 12 {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// uuid4 reports whether raw is a version-4, RFC 4122 variant UUID, as every
// key id CreateKey makes is.
func uuid4(raw [16]byte) bool { return raw[6]>>4 == 4 && raw[8]>>6 == 2 }

// candidate describes one key's unnamed versions; rec is its record, if it
// has one.
func candidate(id string, mats []hsm.Material, rec *store.Key) AdoptionCandidate {
	c := AdoptionCandidate{KeyID: id}
	var problems []string
	for _, m := range mats {
		c.Versions = append(c.Versions, m.Ref.Version)
		if m.Problem != "" {
			problems = append(problems, fmt.Sprintf("v%d: %s", m.Ref.Version, m.Problem))
		}
	}
	if len(problems) > 0 {
		c.Problem = strings.Join(problems, "; ")
		return c
	}
	spec, usage, ok := specOf(mats[0])
	for _, m := range mats[1:] {
		if s, u, _ := specOf(m); s != spec || u != usage {
			ok = false
		}
	}
	switch {
	case !ok:
		c.Problem = "its versions are not all keys of one spec and usage hsmkms makes"
		return c
	case rec != nil:
		c.Existing, c.Account = true, rec.Account
		switch {
		case rec.Destroying:
			c.Problem = "its record is being destroyed"
		case rec.KeySpec != spec || rec.KeyUsage != usage:
			c.Problem = fmt.Sprintf("its record is a %s key for %s, its objects a %s key for %s", rec.KeySpec, rec.KeyUsage, spec, usage)
		case spec != SpecSymmetric:
			c.Problem = "its record exists, and hsmkms makes further versions of symmetric encryption keys only"
		}
	case spec != SpecSymmetric && !slices.Equal(c.Versions, []uint32{1}):
		c.Problem = fmt.Sprintf("versions %v of a %s key: hsmkms makes version 1 only of keys that are not for symmetric encryption", c.Versions, spec)
	}
	c.KeySpec, c.KeyUsage = spec, usage
	return c
}

// specOf maps what a version's objects hold to the KeySpec and KeyUsage
// CreateKey makes such objects for.
func specOf(m hsm.Material) (spec, usage string, ok bool) {
	for name, ks := range keySpecs {
		switch {
		case m.Kind == hsm.MaterialAES && ks.kind == kindAES && m.Size == 32:
			return name, UsageEncryptDecrypt, true
		case m.Kind == hsm.MaterialHMAC && ks.kind == kindHMAC && ks.macHash.Size() == m.Size:
			return name, UsageMAC, true
		case m.Kind == hsm.MaterialEC && ks.kind == kindEC && ks.curve == m.Curve && m.Usage == hsm.UsageSign:
			return name, UsageSignVerify, true
		case m.Kind == hsm.MaterialRSA && ks.kind == kindRSA && ks.bits == m.Size:
			if m.Usage == hsm.UsageDecrypt {
				return name, UsageEncryptDecrypt, true
			}
			return name, UsageSignVerify, true
		}
	}
	return "", "", false
}

// Adopt brings the candidates in (AdoptionCandidates) back under records,
// as the package's comment on adoption says. A key named in KeyIDs that is
// no candidate is NotFoundException, and one with a problem
// ValidationException, and nothing is adopted; with All, candidates with a
// problem are skipped and reported. The context's commit gate (the admin
// command's audit intent) is passed once, naming every key to be adopted,
// before the first record is written.
func (s *Service) Adopt(ctx context.Context, in AdoptInput) (*AdoptOutput, error) {
	if !accountID(in.Account) {
		return nil, Errorf(ExcValidation, "The account %q is not an AWS account id (12 digits).", in.Account)
	}
	if in.All == (len(in.KeyIDs) > 0) {
		return nil, Errorf(ExcValidation, "Name the keys to adopt, or adopt all of them; not both, and not neither.")
	}
	cands, err := s.AdoptionCandidates(ctx)
	if err != nil {
		return nil, err
	}
	out := &AdoptOutput{Adopted: []AdoptedKey{}}
	var chosen []AdoptionCandidate
	if in.All {
		for _, c := range cands {
			if c.Problem != "" {
				out.Skipped = append(out.Skipped, c)
			} else {
				chosen = append(chosen, c)
			}
		}
	} else {
		for _, id := range in.KeyIDs {
			i := slices.IndexFunc(cands, func(c AdoptionCandidate) bool { return c.KeyID == id })
			switch {
			case i < 0:
				return nil, Errorf(ExcNotFound, "The token holds no key version of %s that no record names.", id)
			case cands[i].Problem != "":
				return nil, Errorf(ExcValidation, "Key %s cannot be adopted: %s.", id, cands[i].Problem)
			}
			if !slices.ContainsFunc(chosen, func(c AdoptionCandidate) bool { return c.KeyID == id }) {
				chosen = append(chosen, cands[i])
			}
		}
	}
	if len(chosen) == 0 {
		return out, nil
	}
	arns := make([]string, len(chosen))
	for i, c := range chosen {
		account := in.Account
		if c.Existing {
			account = c.Account
		}
		arns[i] = s.keyARN(account, c.KeyID)
	}
	if err := passGate(ctx, arns...); err != nil {
		return nil, err
	}
	now := s.now().UTC().Truncate(1e6)
	for _, c := range chosen {
		versions := make([]store.Version, len(c.Versions))
		for i, n := range c.Versions {
			versions[i] = store.Version{Number: n, CreatedAt: now}
		}
		if c.Existing {
			_, err = s.store.UpdateKey(ctx, c.KeyID, func(r *store.Key) error {
				for _, v := range versions {
					if r.HasVersion(v.Number) {
						return Errorf(ExcConflict, "Version %d of %s has a record already.", v.Number, c.KeyID)
					}
				}
				r.Versions = append(r.Versions, versions...)
				slices.SortFunc(r.Versions, func(a, b store.Version) int { return int(int64(a.Number) - int64(b.Number)) })
				return nil
			})
		} else {
			rec := store.Key{
				ID: c.KeyID, Account: in.Account, Region: s.region, CreatedAt: now,
				Description: "Adopted on " + now.Format("2006-01-02") + " from token objects no record named (hsmkms admin adopt); " +
					"its earlier policy, description, tags, aliases and grants were not recovered.",
				State: StateDisabled, KeySpec: c.KeySpec, KeyUsage: c.KeyUsage, Origin: OriginAWSKMS,
				Policy: defaultPolicy(s.partition, in.Account), Versions: versions,
			}
			err = s.store.CreateKey(ctx, rec, s.limits.KeysPerAccount)
		}
		if err != nil {
			if errors.Is(err, store.ErrLimitExceeded) {
				err = limitExceeded(err, keyQuotaMessage)
			} else if errors.Is(err, store.ErrExists) {
				err = Errorf(ExcConflict, "Key %s has a record already.", c.KeyID)
			}
			// The keys adopted so far stay adopted; the caller is told which.
			return out, fmt.Errorf("adopt %s: %w", c.KeyID, AsError(err))
		}
		k, err := s.cached(ctx, c.KeyID)
		if err != nil {
			return out, internal(err)
		}
		out.Adopted = append(out.Adopted, AdoptedKey{AdoptionCandidate: c, ARN: k.arn, State: k.rec.State})
	}
	return out, nil
}
