package audit

import (
	"time"
)

// Observer is told of the log's writes, for metrics: the metrics package
// implements it, and audit imports nothing of it. AuditWrite is called once
// per Write or WriteDurable, from the writing goroutine, after the write:
// how long it took (its wait for the log's lock included) and its error (nil
// once the record is in the log). It must be quick and must not call the
// Writer.
type Observer interface {
	AuditWrite(d time.Duration, err error)
}

// epoch anchors the clock writes are timed with: time.Since on it reads
// only the monotonic clock, half the cost of time.Now.
var epoch = time.Now()

// observeWrite reports a write that started at start (time.Since(epoch))
// and ended with *err.
func (w *Writer) observeWrite(start time.Duration, err *error) {
	w.cfg.Observer.AuditWrite(time.Since(epoch)-start, *err)
}

// Broken reports whether the log refuses records now: it failed and has not
// recovered, or its checkpoints keep failing and too many records are
// unsigned (see Write). A closed log is not broken. Broken reads a flag the
// writer sets whenever its state may change, so it never waits for a write
// in progress (a log on a hung disk still answers).
func (w *Writer) Broken() bool { return w.brokenNow.Load() }

// publish sets the flag Broken reads. The caller holds mu.
func (w *Writer) publish() {
	w.brokenNow.Store(w.broken != nil || w.unsigned >= 2*w.every)
}
