package audit

// Status is the state of a Writer, for an operator's status report.
type Status struct {
	// OK is true when the log takes records; else Error says why.
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// File is the current log file ("" when the log goes to Out only) and
	// Size the bytes written to it.
	File string `json:"file,omitempty"`
	Size int64  `json:"size"`
	// Seq is the seq of the last record written (0: none yet); SignedSeq
	// that of the last record a checkpoint signed; Unsigned the records
	// after it.
	Seq       uint64 `json:"seq"`
	SignedSeq uint64 `json:"signedSeq"`
	Unsigned  int    `json:"unsigned"`
	// KeyFingerprint is the SHA-256 of the audit key's public key, hex.
	KeyFingerprint string `json:"keyFingerprint"`
}

// Status reports the log's state. It neither writes nor retries a broken
// log.
func (w *Writer) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := Status{OK: true, File: w.cfg.File, Size: w.size, Seq: w.seq, Unsigned: w.unsigned, KeyFingerprint: w.fingerprint}
	st.SignedSeq = w.seq - uint64(min(w.unsigned, int(w.seq)))
	switch {
	case w.closed:
		st.OK, st.Error = false, ErrClosed.Error()
	case w.broken != nil:
		st.OK, st.Error = false, w.broken.Error()
	case w.unsigned >= 2*w.every:
		st.OK, st.Error = false, "checkpoints fail: too many records are unsigned"
	}
	return st
}
