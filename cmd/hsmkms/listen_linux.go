//go:build linux

package main

import (
	"context"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// listenTCP binds the KMS port. With reusePort the socket sets SO_REUSEPORT
// before it binds, so several hsmkms processes on one host can serve one
// port, each with its own token sessions and Go runtime: the kernel hashes
// each new connection to one of them, which uses the host's cores where one
// process stops scaling (docs/ARCHITECTURE.md, decision 23). Linux lets only
// sockets of the same effective user join a reused port, so another user's
// process cannot take a share of the connections; without the flag a port
// held by anyone is busy, as before.
func listenTCP(ctx context.Context, addr string, reusePort bool) (net.Listener, error) {
	var lc net.ListenConfig
	if reusePort {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}); err != nil {
				return err
			}
			if serr != nil {
				return fmt.Errorf("SO_REUSEPORT: %w", serr)
			}
			return nil
		}
	}
	return lc.Listen(ctx, "tcp", addr)
}
