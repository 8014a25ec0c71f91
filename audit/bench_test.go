package audit

import (
	"io"
	"testing"
)

// BenchmarkWrite measures one Encrypt record written to a file on disk,
// checkpoint signing (in software here) amortised over the default 1000
// records. Compare ns/op with the ~25 µs of an Encrypt request.
func BenchmarkWrite(b *testing.B) {
	for _, bc := range []struct {
		name     string
		file     bool
		parallel bool
		sync     bool
	}{
		{name: "file", file: true},
		{name: "file-parallel", file: true, parallel: true},
		{name: "file-sync-each-record", file: true, sync: true},
		{name: "discard-encode-only"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := newSigner(b)
			cfg := testConfig(b, s)
			cfg.SyncEachRecord = bc.sync
			if !bc.file {
				cfg.File, cfg.Out = "", io.Discard
			}
			w := open(b, cfg)
			defer w.Close()
			ev := encryptEvent(1)
			b.ReportAllocs()
			if bc.parallel {
				b.RunParallel(func(pb *testing.PB) {
					ev := encryptEvent(2)
					for pb.Next() {
						ev.EventID = ""
						if err := w.Write(ev); err != nil {
							b.Error(err)
							return
						}
					}
				})
			} else {
				for b.Loop() {
					ev.EventID = "" // a fresh UUID per record, as in production
					if err := w.Write(ev); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
