package audit

import (
	"os"
	"testing"
)

// TestStatus: the status follows the log — records written, those a
// checkpoint signed, the file's size — and says when the log takes no
// records, and why.
func TestStatus(t *testing.T) {
	t.Parallel()
	s := newSigner(t)
	cfg := testConfig(t, s)
	cfg.CheckpointEvery = 4
	w := open(t, cfg)
	if st := w.Status(); !st.OK || st.Seq != 0 || st.SignedSeq != 0 || st.File != cfg.File || st.KeyFingerprint != Fingerprint(s.spki) {
		t.Fatalf("new log: %+v", st)
	}
	writeN(t, w, 6) // a checkpoint after the 4th
	st := w.Status()
	fi, err := os.Stat(cfg.File)
	if err != nil {
		t.Fatal(err)
	}
	if !st.OK || st.Seq != 6 || st.SignedSeq != 4 || st.Unsigned != 2 || st.Size != fi.Size() {
		t.Errorf("after 6 records: %+v (file size %d)", st, fi.Size())
	}
	if err := w.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if st := w.Status(); st.SignedSeq != 6 || st.Unsigned != 0 {
		t.Errorf("after a checkpoint: %+v", st)
	}
	// Checkpoints that fail leave records unsigned until the log refuses.
	s.fail.Store(true)
	writeN(t, w, 8)
	if st := w.Status(); st.OK || st.Error == "" || st.SignedSeq != 6 {
		t.Errorf("with 8 records unsigned and checkpoints failing: %+v, want not OK", st)
	}
	s.fail.Store(false)
	w.Close()
	if st := w.Status(); st.OK || st.Error != ErrClosed.Error() {
		t.Errorf("closed: %+v", st)
	}
}
