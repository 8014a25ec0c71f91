package main

import (
	"net"
	"syscall"
)

// peerOf reads a unix socket peer's credentials (SO_PEERCRED).
func peerOf(c net.Conn) peerCred {
	p := peerCred{uid: -2, pid: -1} // -2: asked and not answered, which allowed refuses
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return p
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return p
	}
	raw.Control(func(fd uintptr) {
		if cred, err := syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED); err == nil {
			p = peerCred{uid: int(cred.Uid), pid: int(cred.Pid)}
		}
	})
	return p
}
