package hsm

import (
	"context"
	"testing"
)

// BenchmarkDoOverhead is what Do itself costs around a callback that makes
// no token call: the lock, the pool and the error classification. The
// token's own work (BenchmarkEncryptGCM1KiB) varies far more between runs
// than this, so this is where a slower hot path would show.
func BenchmarkDoOverhead(b *testing.B) {
	tk := openTokenB(b, false)
	nop := func(*Session) error { return nil }
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := tk.Do(context.Background(), nop); err != nil {
				b.Fatal(err)
			}
		}
	})
}
