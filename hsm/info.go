package hsm

import (
	"context"
	"fmt"
	"strings"

	"github.com/miekg/pkcs11"
)

// TokenInfo is what an operator asks first about the token: which one it
// is, and how this process uses its sessions.
type TokenInfo struct {
	Label        string `json:"label"`
	Serial       string `json:"serial"`
	Manufacturer string `json:"manufacturer"`
	Model        string `json:"model"`
	Hardware     string `json:"hardwareVersion"`
	Firmware     string `json:"firmwareVersion"`
	// This process's session pool: its bound (Config.MaxSessions), the
	// sessions open, and those running an operation now. Max − InUse more
	// operations can start without waiting.
	SessionsMax   int `json:"sessionsMax"`
	SessionsOpen  int `json:"sessionsOpen"`
	SessionsInUse int `json:"sessionsInUse"`
	// The token's own counts (C_GetTokenInfo), every process together; -1
	// where the token does not say (SoftHSM2 does not), and a maximum of 0
	// means no limit.
	TokenSessions    int64 `json:"tokenSessions"`
	TokenMaxSessions int64 `json:"tokenMaxSessions"`
}

// Info describes the token and this process's sessions on it. It reads
// C_GetTokenInfo on a pooled session, bounded like every call (a token that
// stopped answering is ErrTimeout or ErrUnavailable), and does not count
// that session as in use. A token that is down (not found, being
// recovered) is ErrUnavailable; the labels the Token was configured with
// are still returned.
func (t *Token) Info(ctx context.Context) (TokenInfo, error) {
	info := TokenInfo{Label: t.cfg.TokenLabel, Serial: t.cfg.TokenSerial, SessionsMax: t.cfg.MaxSessions,
		TokenSessions: -1, TokenMaxSessions: -1}
	var ti pkcs11.TokenInfo
	err := t.Do(ctx, func(s *Session) error {
		info.SessionsOpen, info.SessionsInUse = t.pool.sessionCounts()
		info.SessionsInUse = max(info.SessionsInUse-1, 0) // this one
		var err error
		ti, err = s.calls().GetTokenInfo(t.slot)
		return translate("C_GetTokenInfo", err, false)
	})
	if err != nil {
		return info, err
	}
	trim := func(s string) string { return strings.TrimRight(s, " \x00") }
	info.Label, info.Serial = trim(ti.Label), trim(ti.SerialNumber)
	info.Manufacturer, info.Model = trim(ti.ManufacturerID), trim(ti.Model)
	info.Hardware = fmt.Sprintf("%d.%d", ti.HardwareVersion.Major, ti.HardwareVersion.Minor)
	info.Firmware = fmt.Sprintf("%d.%d", ti.FirmwareVersion.Major, ti.FirmwareVersion.Minor)
	info.TokenSessions, info.TokenMaxSessions = sessionCount(ti.SessionCount), sessionCount(ti.MaxSessionCount)
	return info, nil
}

// sessionCount turns a CK_ULONG count into a number, -1 for
// CK_UNAVAILABLE_INFORMATION (all bits set, of a 32- or 64-bit CK_ULONG).
func sessionCount(v uint) int64 {
	if v == ^uint(0) || v == 0xffffffff {
		return -1
	}
	return int64(v)
}

// sessionCounts returns the pool's open sessions and those in use (open
// and not idle). Channel lengths are safe to read at any time; the two are
// read apart, so under load they are a moment's picture, not one instant.
func (p *pool) sessionCounts() (open, inUse int) {
	open = len(p.slots)
	return open, max(open-len(p.idle), 0)
}
