package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// load says how long a phase runs: for a duration, or for exactly requests
// operations when requests > 0.
type load struct {
	concurrency int
	duration    time.Duration
	requests    int64
}

// loadResult is what drive measured.
type loadResult struct {
	ops      int64
	elapsed  time.Duration
	p50, p99 time.Duration
	cpu      time.Duration   // this process's user+system CPU time during the run
	lats     []time.Duration // every operation's latency, sorted
}

// add merges another run of the same operations into r (a phase measured
// in rounds).
func (r *loadResult) add(o loadResult) {
	r.ops += o.ops
	r.elapsed += o.elapsed
	r.cpu += o.cpu
	r.lats = slices.Concat(r.lats, o.lats)
	slices.Sort(r.lats)
	r.p50, r.p99 = 0, 0
	if len(r.lats) > 0 {
		r.p50 = percentile(r.lats, 0.50)
		r.p99 = percentile(r.lats, 0.99)
	}
}

func (r loadResult) opsPerSec() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ops) / r.elapsed.Seconds()
}

// drive runs ops[i] in a loop on goroutine i until the duration has passed or
// the request budget is spent. The first error stops every goroutine and is
// returned; so is the cancellation of ctx.
func drive(ctx context.Context, l load, ops []func(context.Context) error) (loadResult, error) {
	if len(ops) != l.concurrency || l.concurrency < 1 {
		return loadResult{}, fmt.Errorf("drive: %d operations for concurrency %d", len(ops), l.concurrency)
	}
	if l.requests <= 0 && l.duration <= 0 {
		return loadResult{}, errors.New("drive: neither a duration nor a request count")
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		issued   atomic.Int64
		errOnce  sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	lats := make([][]time.Duration, l.concurrency)
	cpu0 := processCPU()
	start := time.Now()
	deadline := start.Add(l.duration)
	for i, op := range ops {
		wg.Go(func() {
			lat := make([]time.Duration, 0, 4096)
			now := time.Now()
			for runCtx.Err() == nil {
				if l.requests > 0 {
					if issued.Add(1) > l.requests {
						break
					}
				} else if !now.Before(deadline) {
					break
				}
				if err := op(runCtx); err != nil {
					errOnce.Do(func() {
						firstErr = fmt.Errorf("worker %d, operation %d: %w", i, len(lat)+1, err)
						cancel()
					})
					break
				}
				end := time.Now()
				lat = append(lat, end.Sub(now))
				now = end
			}
			lats[i] = lat
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := processCPU() - cpu0
	if err := ctx.Err(); err != nil {
		return loadResult{}, fmt.Errorf("interrupted: %w", err)
	}
	if firstErr != nil {
		return loadResult{}, firstErr
	}
	all := slices.Concat(lats...)
	slices.Sort(all)
	r := loadResult{ops: int64(len(all)), elapsed: elapsed, cpu: cpu, lats: all}
	if len(all) > 0 {
		r.p50 = percentile(all, 0.50)
		r.p99 = percentile(all, 0.99)
	}
	return r, nil
}

// percentile returns the q-quantile (nearest rank) of sorted durations.
func percentile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// processCPU returns the user+system CPU time this process has used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
