package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsmkms/hsmkms/service"
)

// clock is a manual clock: buckets refill only when a test moves it.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func str(s string) *string { return &s }

// admits counts how many of n requests the throttle admits.
func admits(th *throttle, principal, target string, in any, n int) int {
	ok := 0
	for range n {
		if th.admitPrincipal(principal, target, in) == nil {
			ok++
		}
	}
	return ok
}

// Every operation of the dispatch table has a rate class, and the class table
// names no operation the dispatch table lacks: a new operation cannot slip
// past the limits.
func TestEveryOperationHasARateClass(t *testing.T) {
	t.Parallel()
	for target := range operations {
		if _, ok := opClasses[target]; !ok {
			t.Errorf("%s has no rate class (opClasses)", target)
		}
	}
	for target := range opClasses {
		if _, ok := operations[target]; !ok {
			t.Errorf("opClasses names %s, which the dispatch table lacks", target)
		}
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	sym, rsa, ecc := slots.byFamily[classSymmetric], slots.byFamily[classRSA], slots.byFamily[classECC]
	cases := []struct {
		name   string
		target string
		in     any
		want   slot
	}{
		{"Encrypt, default algorithm", "TrentService.Encrypt", &service.EncryptInput{}, sym},
		{"Encrypt, SYMMETRIC_DEFAULT", "TrentService.Encrypt", &service.EncryptInput{EncryptionAlgorithm: str("SYMMETRIC_DEFAULT")}, sym},
		{"Encrypt, RSAES_OAEP_SHA_256", "TrentService.Encrypt", &service.EncryptInput{EncryptionAlgorithm: str("RSAES_OAEP_SHA_256")}, rsa},
		{"Decrypt, RSAES_OAEP_SHA_1", "TrentService.Decrypt", &service.DecryptInput{EncryptionAlgorithm: str("RSAES_OAEP_SHA_1")}, rsa},
		{"Decrypt, default", "TrentService.Decrypt", &service.DecryptInput{}, sym},
		{"ReEncrypt from RSA", "TrentService.ReEncrypt", &service.ReEncryptInput{SourceEncryptionAlgorithm: str("RSAES_OAEP_SHA_256")}, rsa},
		{"ReEncrypt to RSA", "TrentService.ReEncrypt", &service.ReEncryptInput{DestinationEncryptionAlgorithm: str("RSAES_OAEP_SHA_256")}, rsa},
		{"ReEncrypt symmetric", "TrentService.ReEncrypt", &service.ReEncryptInput{}, sym},
		{"Sign RSASSA_PSS", "TrentService.Sign", &service.SignInput{SigningAlgorithm: str("RSASSA_PSS_SHA_256")}, rsa},
		{"Sign ECDSA", "TrentService.Sign", &service.SignInput{SigningAlgorithm: str("ECDSA_SHA_256")}, ecc},
		{"Verify RSASSA_PKCS1", "TrentService.Verify", &service.VerifyInput{SigningAlgorithm: str("RSASSA_PKCS1_V1_5_SHA_256")}, rsa},
		{"Verify ECDSA", "TrentService.Verify", &service.VerifyInput{SigningAlgorithm: str("ECDSA_SHA_384")}, ecc},
		{"GenerateRandom", "TrentService.GenerateRandom", &service.GenerateRandomInput{}, sym},
		{"GenerateMac", "TrentService.GenerateMac", &service.GenerateMacInput{}, sym},
		{"undecodable Encrypt", "TrentService.Encrypt", nil, sym},
		{"undecodable Sign", "TrentService.Sign", nil, ecc},
		{"data key pair P256", "TrentService.GenerateDataKeyPair", &service.GenerateDataKeyPairInput{KeyPairSpec: str("ECC_NIST_P256")}, slots.byPair["ECC_NIST_P256"]},
		{"data key pair RSA_4096", "TrentService.GenerateDataKeyPairWithoutPlaintext", &service.GenerateDataKeyPairInput{KeyPairSpec: str("RSA_4096")}, slots.byPair["RSA_4096"]},
		{"data key pair, no spec", "TrentService.GenerateDataKeyPair", &service.GenerateDataKeyPairInput{}, slots.byPair[slowestPairSpec]},
		{"data key pair, no such spec", "TrentService.GenerateDataKeyPair", &service.GenerateDataKeyPairInput{KeyPairSpec: str("RSA_1024")}, slots.byPair[slowestPairSpec]},
		{"undecodable data key pair", "TrentService.GenerateDataKeyPair", nil, slots.byPair[slowestPairSpec]},
		{"unknown operation", "TrentService.Nothing", nil, slots.unknown},
		{"CreateKey", "TrentService.CreateKey", &service.CreateKeyInput{}, slots.byOp["TrentService.CreateKey"]},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := slots.classify(c.target, c.in); got != c.want {
				t.Errorf("slot %d (class %d), want %d (class %d)", got, slots.class[got], c.want, slots.class[c.want])
			}
		})
	}
	// Per-operation classes give each operation its own slot.
	seen := map[slot]string{}
	for target, c := range opClasses {
		if c == classWrite || c == classGrant || c == classRead || c == classList {
			s := slots.byOp[target]
			if other, dup := seen[s]; dup {
				t.Errorf("%s and %s share slot %d", target, other, s)
			}
			seen[s] = target
			if slots.class[s] != c {
				t.Errorf("%s: slot of class %d, want %d", target, slots.class[s], c)
			}
		}
	}
}

// A bucket holds one second of requests and refills at the rate, never
// beyond one second's worth.
func TestBucketRefillAndBurst(t *testing.T) {
	t.Parallel()
	clk := newClock()
	th := newThrottle(RateLimits{Symmetric: 10}, clk.now)
	const p, target = "arn:aws:iam::111122223333:user/a", "TrentService.GenerateRandom"
	if n := admits(th, p, target, nil, 25); n != 10 {
		t.Fatalf("a full bucket admitted %d of 25, want its burst of 10", n)
	}
	err := th.admitPrincipal(p, target, nil)
	var e *service.Error
	if !errors.As(err, &e) || e.Code != service.ExcThrottling || e.Message != throttledMessage || e.HTTPStatus() != 400 {
		t.Fatalf("over the rate: %v, want ThrottlingException (400) with AWS's message", err)
	}
	clk.advance(100 * time.Millisecond)
	if n := admits(th, p, target, nil, 5); n != 1 {
		t.Errorf("after 0.1 s at 10/s: %d admitted, want 1", n)
	}
	clk.advance(450 * time.Millisecond)
	if n := admits(th, p, target, nil, 10); n != 4 {
		t.Errorf("after 0.45 s at 10/s: %d admitted, want 4", n)
	}
	clk.advance(time.Hour)
	if n := admits(th, p, target, nil, 100); n != 10 {
		t.Errorf("after an hour idle: %d admitted, want the burst of 10 (one second's worth)", n)
	}
}

// A fractional rate still admits one request (a bucket holds at least one).
func TestFractionalRates(t *testing.T) {
	t.Parallel()
	clk := newClock()
	th := newThrottle(RateLimits{DataKeyPair: 25}, clk.now)
	const p = "arn:aws:iam::111122223333:user/a"
	rsa4096 := &service.GenerateDataKeyPairInput{KeyPairSpec: str("RSA_4096")}
	p256 := &service.GenerateDataKeyPairInput{KeyPairSpec: str("ECC_NIST_P256")}
	const target = "TrentService.GenerateDataKeyPair"
	if n := admits(th, p, target, rsa4096, 5); n != 1 {
		t.Fatalf("RSA_4096 pairs: %d admitted, want 1", n)
	}
	clk.advance(9 * time.Second)
	if n := admits(th, p, target, rsa4096, 5); n != 0 {
		t.Errorf("RSA_4096 pairs 9 s later: %d admitted, want 0 (0.1 a second)", n)
	}
	clk.advance(time.Second)
	if n := admits(th, p, target, rsa4096, 5); n != 1 {
		t.Errorf("RSA_4096 pairs 10 s later: %d admitted, want 1", n)
	}
	// Each spec has its own bucket; ECC_NIST_P256 has the class's rate.
	if n := admits(th, p, target, p256, 50); n != 25 {
		t.Errorf("ECC_NIST_P256 pairs: %d admitted, want 25", n)
	}
	if n := admits(th, p, "TrentService.GenerateDataKeyPairWithoutPlaintext", p256, 5); n != 0 {
		t.Errorf("GenerateDataKeyPairWithoutPlaintext shares GenerateDataKeyPair's bucket, yet admitted %d", n)
	}
}

// Buckets are per principal, and per class (shared classes) or per operation.
func TestBucketsAreIndependent(t *testing.T) {
	t.Parallel()
	clk := newClock()
	th := newThrottle(RateLimits{Symmetric: 3, RSA: 2, Write: 1, Read: 2}, clk.now)
	const a, b = "arn:aws:iam::111122223333:user/a", "arn:aws:iam::111122223333:user/b"
	rsaEnc := &service.EncryptInput{EncryptionAlgorithm: str("RSAES_OAEP_SHA_256")}
	if n := admits(th, a, "TrentService.Encrypt", &service.EncryptInput{}, 10); n != 3 {
		t.Fatalf("a's symmetric Encrypts: %d admitted, want 3", n)
	}
	for _, c := range []struct {
		what      string
		principal string
		target    string
		in        any
		n, want   int
	}{
		{"a's GenerateDataKey shares the symmetric bucket", a, "TrentService.GenerateDataKey", &service.GenerateDataKeyInput{}, 1, 0},
		{"a's RSA Encrypt has its own bucket", a, "TrentService.Encrypt", rsaEnc, 5, 2},
		{"b's symmetric Encrypts are b's", b, "TrentService.Encrypt", &service.EncryptInput{}, 10, 3},
		{"a's CreateKey", a, "TrentService.CreateKey", nil, 3, 1},
		{"a's CreateAlias is another operation's bucket", a, "TrentService.CreateAlias", nil, 3, 1},
		{"a's DescribeKey", a, "TrentService.DescribeKey", nil, 5, 2},
		{"a's unknown operations count as reads, in a bucket of their own", a, "TrentService.Frobnicate", nil, 5, 2},
		{"a's ListKeys is not limited (List is 0)", a, "TrentService.ListKeys", nil, 1000, 1000},
	} {
		if n := admits(th, c.principal, c.target, c.in, c.n); n != c.want {
			t.Errorf("%s: %d of %d admitted, want %d", c.what, n, c.n, c.want)
		}
	}
}

// The zero value limits nothing and costs nothing.
func TestZeroRateLimitsAreOff(t *testing.T) {
	t.Parallel()
	if th := newThrottle(RateLimits{}, time.Now); th != nil {
		t.Fatalf("RateLimits{} made a throttle")
	}
	var th *throttle
	if err := th.admitSource("192.0.2.1"); err != nil {
		t.Error(err)
	}
	if err := th.admitPrincipal("arn:aws:iam::111122223333:root", "TrentService.Encrypt", nil); err != nil {
		t.Error(err)
	}
	// Per-principal limits alone leave sources alone.
	th = newThrottle(RateLimits{Write: 1}, newClock().now)
	for range 1000 {
		if err := th.admitSource("192.0.2.1"); err != nil {
			t.Fatal(err)
		}
	}
}

func TestValidateRateLimits(t *testing.T) {
	t.Parallel()
	for name, l := range map[string]RateLimits{"zero": {}, "defaults": DefaultRateLimits, "max": {PerSource: 1e9, RSA: 0.001}} {
		if err := l.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, l := range map[string]RateLimits{
		"negative": {Write: -1}, "NaN": {RSA: math.NaN()}, "infinite": {PerSource: math.Inf(1)}, "too large": {List: 2e9},
	} {
		if err := l.Validate(); err == nil {
			t.Errorf("%s: %+v accepted", name, l)
		}
	}
}

func TestSourceKey(t *testing.T) {
	t.Parallel()
	same := [][2]string{
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff"}, // one /64
		{"::ffff:192.0.2.7", "192.0.2.7"},                       // 4-in-6 is the IPv4 address
		{"fe80::1%eth0", "fe80::2"},                             // zones do not count
	}
	for _, p := range same {
		if sourceKey(p[0]) != sourceKey(p[1]) {
			t.Errorf("%s and %s should share a bucket", p[0], p[1])
		}
	}
	differ := [][2]string{{"192.0.2.7", "192.0.2.8"}, {"2001:db8:1:2::1", "2001:db8:1:3::1"}, {"", "192.0.2.1"}}
	for _, p := range differ {
		if sourceKey(p[0]) == sourceKey(p[1]) {
			t.Errorf("%s and %s should not share a bucket", p[0], p[1])
		}
	}
	if k := sourceKey("not an address"); k != (netip.Addr{}) {
		t.Errorf("bad address keyed as %v", k)
	}
}

func TestSourceLimit(t *testing.T) {
	t.Parallel()
	clk := newClock()
	th := newThrottle(RateLimits{PerSource: 4}, clk.now)
	count := func(addr string, n int) int {
		ok := 0
		for range n {
			if th.admitSource(addr) == nil {
				ok++
			}
		}
		return ok
	}
	if n := count("192.0.2.1", 10); n != 4 {
		t.Errorf("192.0.2.1: %d of 10 admitted, want 4", n)
	}
	if n := count("192.0.2.2", 10); n != 4 {
		t.Errorf("192.0.2.2 (another client): %d of 10 admitted, want 4", n)
	}
	if n := count("2001:db8::1", 3) + count("2001:db8::2", 3); n != 4 {
		t.Errorf("two addresses of one /64: %d of 6 admitted, want 4", n)
	}
	clk.advance(time.Second)
	if n := count("192.0.2.1", 10); n != 4 {
		t.Errorf("192.0.2.1 a second later: %d of 10 admitted, want 4", n)
	}
}

// A flood of distinct addresses cannot grow memory past the bound; new
// addresses then share one bucket, and idle rows are forgotten.
func TestSourceBucketsAreBounded(t *testing.T) {
	t.Parallel()
	clk := newClock()
	set := newBucketSet[netip.Addr](64, 1)
	lim := limitOf(2)
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}) }
	now := clk.now()
	for i := range 100000 { // all within one instant: no row is idle
		set.get(now, addr(i)).allow(now, 0, lim)
	}
	if n := set.len(); n > 64 {
		t.Fatalf("%d rows kept, bound 64", n)
	}
	// The newcomers share the overflow bucket, which the flood drained.
	if set.get(now, addr(200000)) != set.overflow {
		t.Fatalf("a new address got a row of its own in a full set of busy rows")
	}
	if set.get(now, addr(200000)).allow(now, 0, lim) {
		t.Errorf("the overflow bucket still had tokens after the flood")
	}
	// Once the flood's rows have refilled (1 s at 2/s with a burst of 2),
	// they are forgotten and newcomers get rows again.
	clk.advance(2 * time.Second)
	now = clk.now()
	if set.get(now, addr(300000)) == set.overflow {
		t.Errorf("no row for a new address after the flood went idle")
	}
	if n := set.len(); n != 1 {
		t.Errorf("%d rows after the idle ones were swept, want 1", n)
	}
	// The periodic sweep forgets idle rows even when the set is not full.
	clk.advance(sweepEvery)
	set.get(clk.now(), addr(1))
	if n := set.len(); n != 1 {
		t.Errorf("%d rows after the periodic sweep, want 1 (the one just used)", n)
	}
}

// Forgetting idle rows never hands a throttled client a fresh bucket.
func TestSweepKeepsDrainedBuckets(t *testing.T) {
	t.Parallel()
	clk := newClock()
	th := newThrottle(RateLimits{Write: 1}, clk.now)
	const a = "arn:aws:iam::111122223333:user/a"
	if n := admits(th, a, "TrentService.CreateKey", nil, 2); n != 1 {
		t.Fatalf("%d admitted, want 1", n)
	}
	clk.advance(500 * time.Millisecond)
	th.principals.mu.Lock()
	th.principals.sweepLocked(clk.now())
	th.principals.mu.Unlock()
	if n := admits(th, a, "TrentService.CreateKey", nil, 1); n != 0 {
		t.Errorf("a sweep refilled a drained bucket")
	}
	clk.advance(500 * time.Millisecond)
	th.principals.mu.Lock()
	th.principals.sweepLocked(clk.now())
	th.principals.mu.Unlock()
	// Refilled by then, the row was forgotten: a new one admits what the
	// kept one would have.
	if n := admits(th, a, "TrentService.CreateKey", nil, 2); n != 1 {
		t.Errorf("%d admitted after a refill, want 1", n)
	}
}

// Under concurrent requests a bucket admits exactly its tokens, per
// principal, whatever the interleaving (run with -race).
func TestConcurrentAdmission(t *testing.T) {
	t.Parallel()
	clk := newClock() // frozen: no refill during the test
	th := newThrottle(RateLimits{Symmetric: 100, PerSource: 300}, clk.now)
	const principals, goroutines, each = 4, 8, 50
	var admitted [principals]atomic.Int64
	var sources atomic.Int64
	var wg sync.WaitGroup
	for p := range principals {
		for range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				arn := fmt.Sprintf("arn:aws:iam::111122223333:user/p%d", p)
				for range each {
					if th.admitSource("192.0.2.9") == nil {
						sources.Add(1)
					}
					if th.admitPrincipal(arn, "TrentService.Encrypt", &service.EncryptInput{}) == nil {
						admitted[p].Add(1)
					}
				}
			}()
		}
	}
	wg.Wait()
	for p := range principals {
		if n := admitted[p].Load(); n != 100 {
			t.Errorf("principal %d: %d of %d admitted, want 100", p, n, goroutines*each)
		}
	}
	if n := sources.Load(); n != 300 {
		t.Errorf("one source: %d of %d admitted, want 300", n, principals*goroutines*each)
	}
}

// BenchmarkThrottle measures the throttle's cost on the hot path of an
// admitted request (rates so high nothing is refused), against no throttle
// (the zero RateLimits), in one run: per source address (before
// authentication), per principal (after), both, and both with every
// core busy.
func BenchmarkThrottle(b *testing.B) {
	high := RateLimits{PerSource: maxRate, Symmetric: maxRate, RSA: maxRate, ECC: maxRate, DataKeyPair: maxRate,
		Write: maxRate, Grant: maxRate, Read: maxRate, List: maxRate}
	const arn, addr, target = "arn:aws:iam::111122223333:user/bench", "192.0.2.10", "TrentService.Encrypt"
	in := &service.EncryptInput{KeyId: "alias/bench"}
	both := func(th *throttle) {
		if th.admitSource(addr) != nil || th.admitPrincipal(arn, target, in) != nil {
			b.Fatal("throttled")
		}
	}
	b.Run("off", func(b *testing.B) {
		th := newThrottle(RateLimits{}, time.Now)
		for b.Loop() {
			both(th)
		}
	})
	b.Run("source", func(b *testing.B) {
		th := newThrottle(RateLimits{PerSource: maxRate}, time.Now)
		for b.Loop() {
			if th.admitSource(addr) != nil {
				b.Fatal("throttled")
			}
		}
	})
	b.Run("principal", func(b *testing.B) {
		th := newThrottle(RateLimits{Symmetric: maxRate}, time.Now)
		for b.Loop() {
			if th.admitPrincipal(arn, target, in) != nil {
				b.Fatal("throttled")
			}
		}
	})
	b.Run("both", func(b *testing.B) {
		th := newThrottle(high, time.Now)
		for b.Loop() {
			both(th)
		}
	})
	b.Run("both-parallel", func(b *testing.B) {
		th := newThrottle(high, time.Now)
		var n atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			// One principal and address per goroutine, as independent
			// clients would be.
			i := n.Add(1)
			arn := fmt.Sprintf("arn:aws:iam::111122223333:user/bench%d", i)
			addr := fmt.Sprintf("192.0.2.%d", i)
			for pb.Next() {
				if th.admitSource(addr) != nil || th.admitPrincipal(arn, target, in) != nil {
					b.Error("throttled")
					return
				}
			}
		})
	})
	b.Run("refused", func(b *testing.B) {
		clk := newClock()
		th := newThrottle(RateLimits{PerSource: 1, Symmetric: 1}, clk.now)
		th.admitSource(addr)
		th.admitPrincipal(arn, target, in)
		for b.Loop() {
			if th.admitPrincipal(arn, target, in) == nil {
				b.Fatal("admitted")
			}
		}
	})
}

// A refused request never reaches its operation, and what it carried is
// zeroed as after any other request; a request that cannot be decoded is
// still asked about (so a flood of malformed requests is throttled too), and
// its refusal wins over the decoding error.
func TestAdmissionComesBeforeTheOperation(t *testing.T) {
	t.Parallel()
	var ran bool
	var zeroed []byte
	encrypt := op(func(_ *service.Service, _ context.Context, _ service.Caller, in service.EncryptInput) (*service.EncryptOutput, error) {
		ran = true
		return &service.EncryptOutput{}, nil
	}, func(in *service.EncryptInput) { zeroed = in.Plaintext; clear(in.Plaintext) })
	var asked []any
	refuse := func(in any) error { asked = append(asked, in); return throttled() }

	_, err := encrypt.call(context.Background(), nil, service.Caller{}, []byte(`{"KeyId":"k","Plaintext":"c2VjcmV0"}`), nil, refuse)
	if e := service.AsError(err); e.Code != service.ExcThrottling {
		t.Fatalf("refused request: %v", err)
	}
	if ran {
		t.Error("the operation ran for a refused request")
	}
	if len(zeroed) != len("secret") || !bytes.Equal(zeroed, make([]byte, len(zeroed))) {
		t.Errorf("plaintext of a refused request left as %q", zeroed)
	}
	if len(asked) != 1 || asked[0].(*service.EncryptInput).KeyId != "k" {
		t.Errorf("admit was asked about %v, want the decoded request", asked)
	}

	asked = nil
	_, err = encrypt.call(context.Background(), nil, service.Caller{}, []byte(`{"KeyId":`), nil, refuse)
	if e := service.AsError(err); e.Code != service.ExcThrottling || len(asked) != 1 || asked[0] != nil {
		t.Errorf("malformed request: %v, admit asked about %v; want ThrottlingException, asked about nil", err, asked)
	}
	admitAll := func(any) error { return nil }
	_, err = encrypt.call(context.Background(), nil, service.Caller{}, []byte(`{"KeyId":`), nil, admitAll)
	if e := service.AsError(err); e.Code != service.ExcSerialization {
		t.Errorf("malformed request, admitted: %v, want SerializationException", err)
	}
	if _, err := encrypt.call(context.Background(), nil, service.Caller{}, []byte(`{"KeyId":"k","Plaintext":"c2VjcmV0"}`), nil, admitAll); err != nil || !ran {
		t.Errorf("admitted request: %v, ran %v", err, ran)
	}
}
