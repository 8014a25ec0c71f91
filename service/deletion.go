package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/service/policy"
	"github.com/hsmkms/hsmkms/service/store"
)

// ScheduleKeyDeletionInput is the ScheduleKeyDeletion request.
type ScheduleKeyDeletionInput struct {
	KeyId               string `json:"KeyId"`
	PendingWindowInDays *int32 `json:"PendingWindowInDays"`
}

// ScheduleKeyDeletionOutput is the ScheduleKeyDeletion response.
type ScheduleKeyDeletionOutput struct {
	KeyId               string `json:"KeyId"`
	DeletionDate        Time   `json:"DeletionDate"`
	KeyState            string `json:"KeyState"`
	PendingWindowInDays int32  `json:"PendingWindowInDays"`
}

// CancelKeyDeletionOutput is the CancelKeyDeletion response.
type CancelKeyDeletionOutput struct {
	KeyId string `json:"KeyId"`
}

// ScheduleKeyDeletion puts a key in PendingDeletion for 7 to 30 days (30 by
// default). Until then it can be cancelled; afterwards the reaper destroys
// its material in the token and removes its record and aliases.
func (s *Service) ScheduleKeyDeletion(ctx context.Context, caller Caller, in ScheduleKeyDeletionInput) (*ScheduleKeyDeletionOutput, error) {
	var v validation
	v.intRange(in.PendingWindowInDays, "pendingWindowInDays", 7, 30)
	if err := v.err(); err != nil {
		return nil, err
	}
	days := int32(30)
	if in.PendingWindowInDays != nil {
		days = *in.PendingWindowInDays
	}
	var out *ScheduleKeyDeletionOutput
	c := func(c policy.Context) { c.Set("kms:ScheduleKeyDeletionPendingWindowInDays", strconv.Itoa(int(days))) }
	err := s.updateKey(ctx, caller, in.KeyId, "kms:ScheduleKeyDeletion", c, func(k *key, r *store.Key) error {
		switch r.State {
		case StatePendingDeletion:
			return Errorf(ExcInvalidState, "%s is pending deletion.", k.arn)
		case "Updating":
			return Errorf(ExcInvalidState, "%s is updating.", k.arn)
		}
		r.State = StatePendingDeletion
		r.DeletionDate = s.now().UTC().Truncate(time.Millisecond).Add(time.Duration(days) * 24 * time.Hour)
		r.PendingWindowInDays = days
		out = &ScheduleKeyDeletionOutput{KeyId: k.arn, DeletionDate: Time{r.DeletionDate},
			KeyState: StatePendingDeletion, PendingWindowInDays: days}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// CancelKeyDeletion takes a key out of PendingDeletion; it comes back
// Disabled, as in AWS.
func (s *Service) CancelKeyDeletion(ctx context.Context, caller Caller, in KeyIdInput) (*CancelKeyDeletionOutput, error) {
	var out *CancelKeyDeletionOutput
	err := s.updateKey(ctx, caller, in.KeyId, "kms:CancelKeyDeletion", nil, func(k *key, r *store.Key) error {
		if r.State != StatePendingDeletion || r.Destroying {
			return Errorf(ExcInvalidState, "%s is not pending deletion.", k.arn)
		}
		r.State = StateDisabled
		r.DeletionDate = time.Time{}
		r.PendingWindowInDays = 0
		out = &CancelKeyDeletionOutput{KeyId: k.arn}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Deletion phases, for crash tests: a hook called at each names the point
// reached, and may stop the process there.
const (
	PhaseMarked    = "marked"    // the record says Destroying
	PhaseDestroyed = "destroyed" // every token object is gone
)

// ReapDue deletes every key whose deletion date has passed, and finishes
// any deletion a crash interrupted. It returns how many keys it deleted.
func (s *Service) ReapDue(ctx context.Context) (int, error) {
	return s.forDue(ctx, "DeleteKey", func(r *store.Key, now time.Time) bool {
		return r.State == StatePendingDeletion && (r.Destroying || !now.Before(r.DeletionDate))
	}, func(ctx context.Context, r store.Key) error { return s.deleteKey(ctx, r.ID) })
}

// forDue runs do on every key record that due selects at the service's
// current time, and returns how many succeeded; failures are joined and
// retried by the next pass. Each key's change is recorded first as a service
// event named event (see RecordServiceEvents): if that record cannot be
// written, the key is left as it is until a later pass.
func (s *Service) forDue(ctx context.Context, event string, due func(*store.Key, time.Time) bool, do func(context.Context, store.Key) error) (int, error) {
	recs, err := s.store.AllKeys(ctx)
	if err != nil {
		return 0, err
	}
	now := s.now()
	n := 0
	var errs []error
	for _, r := range recs {
		if !due(&r, now) {
			continue
		}
		if err := do(s.serviceEventGate(ctx, event, &r), r); err != nil {
			errs = append(errs, fmt.Errorf("key %s: %w", r.ID, err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// deleteKey destroys a due key for good, in an order a crash cannot turn
// into harm: first the record is marked Destroying (still PendingDeletion,
// so nothing can use the key), then the token objects are destroyed (a
// missing one is fine: a previous attempt got there), then the record and
// its aliases are removed. A crash before the end leaves a marked record,
// which the next ReapDue finishes; material is never left without a record.
func (s *Service) deleteKey(ctx context.Context, id string) error {
	rec, err := s.store.UpdateKey(ctx, id, func(r *store.Key) error {
		if r.State != StatePendingDeletion {
			return fmt.Errorf("key is %s, not pending deletion", r.State)
		}
		r.Destroying = true
		return nil
	})
	if err != nil {
		return err
	}
	s.remember(rec)
	s.hook(PhaseMarked, id)
	k, err := s.newKey(rec)
	if err != nil {
		return err
	}
	for _, v := range rec.Versions {
		if err := s.token.DestroyKey(ctx, k.ref(v.Number)); err != nil && !errors.Is(err, hsm.ErrNotFound) {
			return fmt.Errorf("destroy version %d: %w", v.Number, err)
		}
	}
	s.hook(PhaseDestroyed, id)
	if err := s.store.DeleteKey(ctx, id); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	s.keys.Delete(id)
	s.gcm.forget(id)
	return nil
}

func (s *Service) hook(phase, id string) {
	if s.testHook != nil {
		s.testHook(phase, id)
	}
}

// RunScheduledWork does one pass of the scheduled key work: deletions whose
// date passed (ReapDue) and automatic rotations that are due (RotateDue),
// catching up after downtime. cmd/hsmkms runs it once before it serves its
// first request, so no request sees a key that should be gone.
//
// With a store that several nodes share (store.Leader), only the node that
// holds the lead does the work; the others skip the pass.
func (s *Service) RunScheduledWork(ctx context.Context, log *slog.Logger) {
	if s.leader != nil {
		lead, err := s.leader.LeadScheduledWork(ctx)
		if err != nil {
			log.Warn("cannot tell which node runs the scheduled work; skipping this pass", "err", err)
			return
		}
		if !lead {
			return
		}
	}
	n, err := s.ReapDue(ctx)
	if n > 0 {
		log.Info("deleted keys whose deletion date passed", "keys", n)
	}
	if err != nil {
		log.Error("key deletion failed; retrying at the next pass", "err", err)
	}
	n, err = s.RotateDue(ctx)
	if n > 0 {
		log.Info("rotated keys whose rotation date passed", "keys", n)
	}
	if err != nil {
		log.Error("automatic rotation failed; retrying at the next pass", "err", err)
	}
}

// RunReaper runs RunScheduledWork every interval until ctx ends.
func (s *Service) RunReaper(ctx context.Context, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.RunScheduledWork(ctx, log)
		}
	}
}
