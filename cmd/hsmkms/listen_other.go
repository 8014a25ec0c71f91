//go:build !linux

package main

import (
	"context"
	"errors"
	"net"
)

// listenTCP binds the KMS port; --reuse-port is Linux's SO_REUSEPORT
// semantics (listen_linux.go) and is refused elsewhere.
func listenTCP(ctx context.Context, addr string, reusePort bool) (net.Listener, error) {
	if reusePort {
		return nil, errors.New("--reuse-port is supported on Linux only")
	}
	var lc net.ListenConfig
	return lc.Listen(ctx, "tcp", addr)
}
