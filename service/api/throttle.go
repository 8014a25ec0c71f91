package api

import (
	"fmt"
	"math"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/hsmkms/hsmkms/service"
)

// RateLimits are the request rates the server admits, in requests per second,
// enforced by token buckets that hold one second of requests (so a burst is
// at most a second's worth, and at least one request). Zero turns a limit
// off; the zero value admits everything. A request over a limit fails with
// ThrottlingException, as AWS KMS answers a request over its quotas.
//
// PerSource is checked before authentication, per client address (the
// address transport.Proxies believes; IPv6 clients by their /64). The others
// are checked once the caller is authenticated and its request decoded,
// before the operation runs, per principal (caller ARN) — AWS counts per
// account, but here a flood from one principal must not throttle the others.
type RateLimits struct {
	PerSource float64
	// Symmetric, RSA and ECC are shared by the cryptographic operations of
	// each key family, as AWS's shared quotas are: Encrypt, Decrypt and
	// ReEncrypt count against RSA when they name an RSAES_* algorithm (an
	// RSA key refuses any other), Sign and Verify against RSA for RSASSA_*
	// algorithms and against ECC for the others; GenerateDataKey*,
	// GenerateMac, VerifyMac and GenerateRandom against Symmetric.
	Symmetric, RSA, ECC float64
	// DataKeyPair is the rate of GenerateDataKeyPair(WithoutPlaintext) for
	// ECC_NIST_P256 pairs. Each key pair spec has its own bucket, at this
	// rate scaled by AWS's ratio for the spec (RSA_4096 pairs take 250 times
	// as long to make: 0.1 a second when this is 25).
	DataKeyPair float64
	// Write, Grant, Read and List are per operation: each operation of the
	// class has its own bucket at the class's rate, as AWS's quotas for
	// these operations are independent of each other.
	Write float64 // key, alias, tag, policy and rotation changes
	Grant float64 // CreateGrant, RetireGrant, RevokeGrant
	Read  float64 // DescribeKey, GetKeyPolicy, GetKeyRotationStatus, GetPublicKey, and unknown operations
	List  float64 // the List* operations
}

// DefaultRateLimits are AWS KMS's default request quotas (AWS KMS Developer
// Guide, "Request quotas"): for the shared cryptographic quotas, those of
// the Regions with the lowest; for a class of operations whose AWS quotas
// differ, the lowest among its busiest operations (Read: GetKeyPolicy and
// GetKeyRotationStatus, 1,000; DescribeKey has 2,000), except that
// RetireGrant and RevokeGrant (15 in AWS) share CreateGrant's 50 and
// ListRetirableGrants the List rate. PerSource, which AWS has not, is
// generous: one host may use a principal's whole symmetric quota and more.
var DefaultRateLimits = RateLimits{
	PerSource:   20000,
	Symmetric:   10000,
	RSA:         1000,
	ECC:         1000,
	DataKeyPair: 25,
	Write:       5,
	Grant:       50,
	Read:        1000,
	List:        100,
}

// maxRate bounds a configured rate (a burst is one second of it).
const maxRate = 1e9

// Validate says whether every rate is a number from 0 to 1e9.
func (l RateLimits) Validate() error {
	for _, f := range l.fields() {
		if math.IsNaN(f.v) || f.v < 0 || f.v > maxRate {
			return fmt.Errorf("rate limit %s is %v: want 0 (off) to %g requests a second", f.name, f.v, float64(maxRate))
		}
	}
	return nil
}

type rateField struct {
	name string
	v    float64
}

func (l RateLimits) fields() []rateField {
	return []rateField{{"per_source", l.PerSource}, {"symmetric", l.Symmetric}, {"rsa", l.RSA}, {"ecc", l.ECC},
		{"data_key_pair", l.DataKeyPair}, {"write", l.Write}, {"grant", l.Grant}, {"read", l.Read}, {"list", l.List}}
}

// throttledMessage is what AWS KMS says with ThrottlingException.
const throttledMessage = "You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls."

func throttled() *service.Error {
	return &service.Error{Code: service.ExcThrottling, Message: throttledMessage}
}

// rateClass is a group of operations limited by one of RateLimits' rates.
type rateClass uint8

const (
	classSymmetric rateClass = iota
	classRSA
	classECC
	classDataKeyPair
	classWrite
	classGrant
	classRead
	classList
	numClasses
)

// opClasses is each operation's class; a test checks that every operation of
// the dispatch table has one. Encrypt, Decrypt, ReEncrypt, Sign and Verify
// move to RSA or ECC by the algorithm the request names (classify).
var opClasses = map[string]rateClass{
	"TrentService.Encrypt":                         classSymmetric,
	"TrentService.Decrypt":                         classSymmetric,
	"TrentService.ReEncrypt":                       classSymmetric,
	"TrentService.GenerateDataKey":                 classSymmetric,
	"TrentService.GenerateDataKeyWithoutPlaintext": classSymmetric,
	"TrentService.GenerateMac":                     classSymmetric,
	"TrentService.VerifyMac":                       classSymmetric,
	"TrentService.GenerateRandom":                  classSymmetric,
	"TrentService.Sign":                            classECC,
	"TrentService.Verify":                          classECC,

	"TrentService.GenerateDataKeyPair":                 classDataKeyPair,
	"TrentService.GenerateDataKeyPairWithoutPlaintext": classDataKeyPair,

	"TrentService.CreateKey":            classWrite,
	"TrentService.EnableKey":            classWrite,
	"TrentService.DisableKey":           classWrite,
	"TrentService.CreateAlias":          classWrite,
	"TrentService.UpdateAlias":          classWrite,
	"TrentService.DeleteAlias":          classWrite,
	"TrentService.TagResource":          classWrite,
	"TrentService.UntagResource":        classWrite,
	"TrentService.UpdateKeyDescription": classWrite,
	"TrentService.ScheduleKeyDeletion":  classWrite,
	"TrentService.CancelKeyDeletion":    classWrite,
	"TrentService.EnableKeyRotation":    classWrite,
	"TrentService.DisableKeyRotation":   classWrite,
	"TrentService.RotateKeyOnDemand":    classWrite,
	"TrentService.PutKeyPolicy":         classWrite,

	"TrentService.CreateGrant": classGrant,
	"TrentService.RetireGrant": classGrant,
	"TrentService.RevokeGrant": classGrant,

	"TrentService.DescribeKey":          classRead,
	"TrentService.GetKeyPolicy":         classRead,
	"TrentService.GetKeyRotationStatus": classRead,
	"TrentService.GetPublicKey":         classRead,

	"TrentService.ListKeys":            classList,
	"TrentService.ListAliases":         classList,
	"TrentService.ListResourceTags":    classList,
	"TrentService.ListKeyPolicies":     classList,
	"TrentService.ListKeyRotations":    classList,
	"TrentService.ListGrants":          classList,
	"TrentService.ListRetirableGrants": classList,
}

// pairSpecShare is AWS's GenerateDataKeyPair quota of each key pair spec,
// as a share of ECC_NIST_P256's (25 a second). Specs AWS gives no quota of
// their own (SM2, ECC_NIST_EDWARDS25519, and names that are not specs at
// all, which fail validation) share the slowest bucket.
var pairSpecShare = map[string]float64{
	"ECC_NIST_P256":   1,
	"ECC_SECG_P256K1": 1,
	"ECC_NIST_P384":   10.0 / 25,
	"ECC_NIST_P521":   5.0 / 25,
	"RSA_2048":        1.0 / 25,
	"RSA_3072":        0.5 / 25,
	"RSA_4096":        0.1 / 25,
}

// slowestPairSpec names the bucket of unlisted specs.
const slowestPairSpec = "RSA_4096"

// A bucket slot is one of a principal's buckets: one per shared class
// (Symmetric, RSA, ECC), one per key pair spec, one per operation of the
// per-operation classes, one for unknown operations.
type slot int

// slotTable places every request in a slot, once, at start.
type slotTable struct {
	class    []rateClass // by slot
	share    []float64   // by slot: the fraction of the class's rate
	byOp     map[string]slot
	byFamily [numClasses]slot // Symmetric, RSA, ECC
	byPair   map[string]slot
	unknown  slot
}

var slots = func() *slotTable {
	t := &slotTable{byOp: make(map[string]slot), byPair: make(map[string]slot)}
	add := func(c rateClass, share float64) slot {
		t.class = append(t.class, c)
		t.share = append(t.share, share)
		return slot(len(t.class) - 1)
	}
	for _, c := range []rateClass{classSymmetric, classRSA, classECC} {
		t.byFamily[c] = add(c, 1)
	}
	for spec, share := range pairSpecShare {
		t.byPair[spec] = add(classDataKeyPair, share)
	}
	for op, c := range opClasses {
		switch c {
		case classSymmetric, classRSA, classECC:
			t.byOp[op] = t.byFamily[c]
		case classDataKeyPair:
			// by spec (classify)
		default:
			t.byOp[op] = add(c, 1)
		}
	}
	t.unknown = add(classRead, 1)
	return t
}()

// classify returns the slot a request counts against. in is the decoded
// request (nil when it could not be decoded, which then counts against its
// operation's own class, so a flood of malformed requests is throttled too).
func (t *slotTable) classify(target string, in any) slot {
	switch v := in.(type) {
	case *service.EncryptInput:
		return t.encryption(v.EncryptionAlgorithm)
	case *service.DecryptInput:
		return t.encryption(v.EncryptionAlgorithm)
	case *service.ReEncryptInput:
		if isRSAES(v.SourceEncryptionAlgorithm) {
			return t.byFamily[classRSA]
		}
		return t.encryption(v.DestinationEncryptionAlgorithm)
	case *service.SignInput:
		return t.signing(v.SigningAlgorithm)
	case *service.VerifyInput:
		return t.signing(v.SigningAlgorithm)
	case *service.GenerateDataKeyPairInput:
		if v.KeyPairSpec != nil {
			if s, ok := t.byPair[*v.KeyPairSpec]; ok {
				return s
			}
		}
		return t.byPair[slowestPairSpec]
	}
	if opClasses[target] == classDataKeyPair {
		return t.byPair[slowestPairSpec]
	}
	if s, ok := t.byOp[target]; ok {
		return s
	}
	return t.unknown
}

func isRSAES(alg *string) bool { return alg != nil && strings.HasPrefix(*alg, "RSAES_") }

func (t *slotTable) encryption(alg *string) slot {
	if isRSAES(alg) {
		return t.byFamily[classRSA]
	}
	return t.byFamily[classSymmetric]
}

func (t *slotTable) signing(alg *string) slot {
	if alg != nil && strings.HasPrefix(*alg, "RSASSA_") {
		return t.byFamily[classRSA]
	}
	return t.byFamily[classECC]
}

// bucketLimit is the rate and burst of one slot's buckets (limit 0: none).
type bucketLimit struct {
	limit rate.Limit
	burst int
}

func limitOf(perSecond float64) bucketLimit {
	if perSecond <= 0 {
		return bucketLimit{}
	}
	return bucketLimit{limit: rate.Limit(perSecond), burst: max(1, int(math.Ceil(perSecond)))}
}

// throttle holds the buckets of every client address and principal.
type throttle struct {
	now        func() time.Time
	source     bucketLimit
	slotLimits []bucketLimit // by slot
	sources    *bucketSet[netip.Addr]
	principals *bucketSet[string]
}

// Bounds on the buckets kept. Beyond them, new keys share one bucket until
// idle ones can be forgotten: memory stays bounded whatever a flood of
// addresses does, at the cost of throttling together the newcomers of such
// a flood. Principals come from the configuration, so their bound is never
// met in practice.
const (
	maxSourceBuckets    = 16384
	maxPrincipalBuckets = 4096
)

// newThrottle returns nil when every limit is off.
func newThrottle(l RateLimits, now func() time.Time) *throttle {
	if l == (RateLimits{}) {
		return nil
	}
	rates := [numClasses]float64{classSymmetric: l.Symmetric, classRSA: l.RSA, classECC: l.ECC,
		classDataKeyPair: l.DataKeyPair, classWrite: l.Write, classGrant: l.Grant, classRead: l.Read, classList: l.List}
	t := &throttle{now: now, source: limitOf(l.PerSource), slotLimits: make([]bucketLimit, len(slots.class))}
	for i, c := range slots.class {
		t.slotLimits[i] = limitOf(rates[c] * slots.share[i])
	}
	if t.source.limit > 0 {
		t.sources = newBucketSet[netip.Addr](maxSourceBuckets, 1)
	}
	t.principals = newBucketSet[string](maxPrincipalBuckets, len(slots.class))
	return t
}

// admitSource takes a token from the bucket of the client at addr
// (transport.Proxies.ClientAddr), or refuses the request.
func (t *throttle) admitSource(addr string) error {
	if t == nil || t.sources == nil {
		return nil
	}
	now := t.now()
	if !t.sources.get(now, sourceKey(addr)).allow(now, 0, t.source) {
		return throttled()
	}
	return nil
}

// sourceKey is the bucket key of a client address: IPv4 addresses one by
// one, IPv6 by /64, the block one host is usually given (a client could
// otherwise spread a flood over 2^64 addresses).
func sourceKey(addr string) netip.Addr {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return netip.Addr{} // no address: all such requests share a bucket
	}
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.WithZone("").Prefix(64)
		return p.Addr()
	}
	return a
}

// admitPrincipal takes a token from principal's bucket for the request, or
// refuses it. in is the decoded request, or nil (see slotTable.classify).
func (t *throttle) admitPrincipal(principal, target string, in any) error {
	if t == nil {
		return nil
	}
	s := slots.classify(target, in)
	lim := t.slotLimits[s]
	if lim.limit == 0 {
		return nil
	}
	now := t.now()
	if !t.principals.get(now, principal).allow(now, s, lim) {
		return throttled()
	}
	return nil
}

// bucketSet is a bounded map from keys to a row of lazily made buckets.
type bucketSet[K comparable] struct {
	maxKeys int
	slots   int

	mu       sync.RWMutex
	m        map[K]*bucketRow
	overflow *bucketRow
	// nextFullSweep spaces out the sweeps a full map asks for, so that a
	// flood of new keys does not make every request walk the map.
	nextFullSweep time.Time
	nextSweep     atomic.Int64 // unix nanoseconds of the next periodic sweep
}

// Sweeps forget rows whose buckets are all full again: such a row is as good
// as a new one, so forgetting it changes nothing but memory.
const (
	sweepEvery        = time.Minute
	fullSweepInterval = time.Second
)

type bucketRow struct {
	b []atomic.Pointer[rate.Limiter]
}

func newBucketSet[K comparable](maxKeys, slots int) *bucketSet[K] {
	return &bucketSet[K]{maxKeys: maxKeys, slots: slots, m: make(map[K]*bucketRow),
		overflow: &bucketRow{b: make([]atomic.Pointer[rate.Limiter], slots)}}
}

// get returns k's row, making it if need be.
func (s *bucketSet[K]) get(now time.Time, k K) *bucketRow {
	if next := s.nextSweep.Load(); now.UnixNano() >= next && s.nextSweep.CompareAndSwap(next, now.Add(sweepEvery).UnixNano()) {
		s.mu.Lock()
		s.sweepLocked(now)
		s.mu.Unlock()
	}
	s.mu.RLock()
	row := s.m[k]
	s.mu.RUnlock()
	if row != nil {
		return row
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if row = s.m[k]; row != nil {
		return row
	}
	if len(s.m) >= s.maxKeys {
		if !now.Before(s.nextFullSweep) {
			s.sweepLocked(now)
			s.nextFullSweep = now.Add(fullSweepInterval)
		}
		if len(s.m) >= s.maxKeys {
			return s.overflow
		}
	}
	row = &bucketRow{b: make([]atomic.Pointer[rate.Limiter], s.slots)}
	s.m[k] = row
	return row
}

// sweepLocked forgets idle rows. A request that found a row just before it
// is forgotten may still take its token there, from a full bucket: a client
// can gain at most its requests in flight at that instant.
func (s *bucketSet[K]) sweepLocked(now time.Time) {
	for k, row := range s.m {
		if row.idle(now) {
			delete(s.m, k)
		}
	}
}

// len is the number of rows kept (for tests).
func (s *bucketSet[K]) len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.m)
}

// allow takes a token from bucket i of the row, made with lim if new.
func (r *bucketRow) allow(now time.Time, i slot, lim bucketLimit) bool {
	l := r.b[i].Load()
	if l == nil {
		fresh := rate.NewLimiter(lim.limit, lim.burst)
		if r.b[i].CompareAndSwap(nil, fresh) {
			l = fresh
		} else {
			l = r.b[i].Load()
		}
	}
	return l.AllowN(now, 1)
}

// idle says whether every bucket of the row is full.
func (r *bucketRow) idle(now time.Time) bool {
	for i := range r.b {
		if l := r.b[i].Load(); l != nil && l.TokensAt(now) < float64(l.Burst()) {
			return false
		}
	}
	return true
}
