package api

import (
	"sort"
	"sync"
	"time"
)

// RecordRate bounds how many audit records of failed authentication are
// written: a token bucket per source address, refilled at PerSecond up to
// Burst, and one for all sources together. Records beyond it are dropped
// and counted; the counts are recorded in the next record from that source,
// or by Server.FlushAuditSummaries.
type RecordRate struct {
	PerSecond float64
	Burst     int
	// AllSources bounds the records of every source together, per second
	// (with a burst of twice as many).
	AllSources float64
}

// DefaultAuthFailureRecords: enough to see every failure of a misconfigured
// client and of a slow attack, while a flood of bad requests writes at most
// ~100 records a second (about 100 KB/s), whatever their headers hold.
var DefaultAuthFailureRecords = RecordRate{PerSecond: 5, Burst: 20, AllSources: 100}

// maxSources bounds the per-source state; beyond it, new sources share one
// bucket (otherSources).
const (
	maxSources   = 4096
	otherSources = "*"
)

type bucket struct {
	tokens     float64
	last       time.Time
	suppressed int
	since      time.Time // first drop since the last summary
}

// take refills b at rate up to burst and takes one token if there is one.
func (b *bucket) take(now time.Time, rate float64, burst float64) bool {
	if b.last.IsZero() {
		b.tokens = burst
	} else {
		b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

type authFailureLimiter struct {
	rate RecordRate
	now  func() time.Time

	mu      sync.Mutex
	sources map[string]*bucket
	all     bucket
}

func newAuthFailureLimiter(r RecordRate, now func() time.Time) *authFailureLimiter {
	if r.PerSecond <= 0 || r.Burst <= 0 || r.AllSources <= 0 {
		r = DefaultAuthFailureRecords
	}
	return &authFailureLimiter{rate: r, now: now, sources: make(map[string]*bucket)}
}

// allow says whether a record of failed authentication from source may be
// written now, and if so how many of that source's records were dropped
// before it, since when (which the record then reports).
func (l *authFailureLimiter) allow(source string) (ok bool, suppressed int, since time.Time) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.sources[source]
	if b == nil {
		if len(l.sources) >= maxSources {
			l.evictIdle(now)
		}
		if len(l.sources) >= maxSources {
			source = otherSources
			b = l.sources[source]
		}
		if b == nil {
			b = &bucket{}
			l.sources[source] = b
		}
	}
	if !b.take(now, l.rate.PerSecond, float64(l.rate.Burst)) || !l.all.take(now, l.rate.AllSources, 2*l.rate.AllSources) {
		if b.suppressed == 0 {
			b.since = now
		}
		b.suppressed++
		return false, 0, time.Time{}
	}
	suppressed, since = b.suppressed, b.since
	b.suppressed = 0
	return true, suppressed, since
}

// evictIdle forgets sources whose bucket has refilled and that have no
// dropped records to report.
func (l *authFailureLimiter) evictIdle(now time.Time) {
	full := time.Duration(float64(l.rate.Burst) / l.rate.PerSecond * float64(time.Second))
	for src, b := range l.sources {
		if b.suppressed == 0 && now.Sub(b.last) >= full {
			delete(l.sources, src)
		}
	}
}

type suppressedSummary struct {
	source     string
	suppressed int
	since      time.Time
}

// drain returns, in source order, the sources with dropped records not yet
// reported, and resets their counts; idle sources are forgotten.
func (l *authFailureLimiter) drain() []suppressedSummary {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []suppressedSummary
	for src, b := range l.sources {
		if b.suppressed > 0 {
			out = append(out, suppressedSummary{source: src, suppressed: b.suppressed, since: b.since})
			b.suppressed = 0
		}
	}
	l.evictIdle(now)
	sort.Slice(out, func(i, j int) bool { return out[i].source < out[j].source })
	return out
}
