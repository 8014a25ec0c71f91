package main

import (
	"context"
	"net"
	"os"
)

// peerCred is who is at the other end of an admin socket connection, as
// the kernel says (uid -1: unknown).
type peerCred struct {
	uid, pid int
}

// allowed: the server's own user and root may use the admin socket. On
// systems where the kernel does not say (uid -1), the socket's mode alone
// decides.
func (p peerCred) allowed() bool { return p.uid == -1 || p.uid == 0 || p.uid == os.Geteuid() }

type peerKey struct{}

// withPeer is the admin server's ConnContext: it puts the connection's
// peer credentials in its requests' context.
func withPeer(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, peerKey{}, peerOf(c))
}
