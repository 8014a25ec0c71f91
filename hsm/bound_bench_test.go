package hsm

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkCallBound measures what bounding calls costs on the hot path: Do
// (the callback on a goroutine of its own, the caller waiting for it or for
// the token to be found stalled) against Do's attempts run on the caller's
// goroutine, as Do ran before calls were bounded. Both make the same
// bracketed calls. Every goroutine alternates blocks of each, so both see
// the same token and machine; the benchmark reports the time per operation
// of each and bounded/direct. A GCM encryption of 1 KiB (the hot path of
// Encrypt) and a callback that makes no call (Do's own cost), each serial
// (one caller: the handoff wakes an idle processor every time) and with
// 4×GOMAXPROCS callers (a loaded server: processors are seldom idle).
func BenchmarkCallBound(b *testing.B) {
	tk := openTokenB(b, true)
	r := newRef()
	if err := tk.GenerateAESKey(context.Background(), r); err != nil {
		b.Fatal(err)
	}
	pt := make([]byte, 1024)
	aad := make([]byte, 37)
	ops := []struct {
		name string
		fn   func(iv []byte) func(*Session) error
	}{
		{"encrypt-1KiB", func(iv []byte) func(*Session) error {
			return func(s *Session) error {
				if err := s.IV(iv); err != nil {
					return err
				}
				_, err := s.EncryptGCM(r, iv, aad, pt)
				return err
			}
		}},
		{"nop", func([]byte) func(*Session) error { return func(*Session) error { return nil } }},
	}
	const block = 16
	ctx := context.Background()
	for _, op := range ops {
		for _, parallel := range []bool{false, true} {
			b.Run(op.name+map[bool]string{false: "/serial", true: "/parallel"}[parallel], func(b *testing.B) {
				var bounded, direct, nb, nd atomic.Int64
				run := func(next func() bool) {
					fn := op.fn(make([]byte, GCMIVLen))
					for i := 0; ; i++ {
						viaDo := i%2 == 0
						start := time.Now()
						n := int64(0)
						for ; n < block && next(); n++ {
							var err error
							if viaDo {
								err = tk.Do(ctx, fn)
							} else {
								err = tk.attempts(ctx, fn, nil)
							}
							if err != nil {
								b.Error(err)
								return
							}
						}
						d := int64(time.Since(start))
						if viaDo {
							bounded.Add(d)
							nb.Add(n)
						} else {
							direct.Add(d)
							nd.Add(n)
						}
						if n < block {
							return
						}
					}
				}
				b.ReportAllocs()
				b.ResetTimer()
				if parallel {
					b.SetParallelism(4)
					b.RunParallel(func(pb *testing.PB) { run(pb.Next) })
				} else {
					i := 0
					run(func() bool { i++; return i <= b.N })
				}
				b.StopTimer()
				if nb.Load() == 0 || nd.Load() == 0 {
					return
				}
				bo, di := float64(bounded.Load())/float64(nb.Load()), float64(direct.Load())/float64(nd.Load())
				b.ReportMetric(bo, "bounded-ns/op")
				b.ReportMetric(di, "direct-ns/op")
				b.ReportMetric(bo/di, "bounded/direct")
			})
		}
	}
}
