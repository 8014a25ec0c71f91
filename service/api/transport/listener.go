package transport

import (
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pires/go-proxyproto"
)

// DefaultMaxConns bounds concurrent connections when ListenerConfig says
// nothing: far above what the token can serve (SoftHSM2 peaks near 30k
// operations/s; kept-alive clients need a few hundred connections), far below
// what file descriptors allow.
const DefaultMaxConns = 4096

// ListenerConfig shapes a Listener.
type ListenerConfig struct {
	// MaxConns bounds open connections (0: DefaultMaxConns). At the bound a
	// new connection displaces the oldest one that has not started a
	// request (a TLS handshake never finished, a client that connected and
	// said nothing, a kept-alive idle one); only when every connection is
	// busy with a request is the new one refused.
	MaxConns int
	// ProxyProtocol, when set, reads a PROXY protocol (v1 or v2) header from
	// connections whose peer Proxies trusts, and takes the client address
	// from it. A header from any other peer is read and ignored.
	ProxyProtocol bool
	// Proxies are the peers trusted to send a PROXY header.
	Proxies *Proxies
	// HeaderTimeout bounds the wait for a PROXY header (default 10 s).
	HeaderTimeout time.Duration
}

// Listener is a net.Listener that bounds connections. Give its ConnState to
// http.Server.ConnState, so it knows which connections are busy.
type Listener struct {
	inner net.Listener
	max   int

	mu    sync.Mutex
	conns map[*trackedConn]struct{}

	displaced atomic.Uint64
	refused   atomic.Uint64
}

// NewListener wraps ln.
func NewListener(ln net.Listener, cfg ListenerConfig) *Listener {
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.HeaderTimeout <= 0 {
		cfg.HeaderTimeout = 10 * time.Second
	}
	inner := ln
	if cfg.ProxyProtocol {
		proxies := cfg.Proxies
		inner = &proxyproto.Listener{
			Listener:          ln,
			ReadHeaderTimeout: cfg.HeaderTimeout,
			ConnPolicy: func(o proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
				if proxies.Trusts(peerAddr(o.Upstream.String())) {
					return proxyproto.USE, nil
				}
				return proxyproto.IGNORE, nil
			},
		}
	}
	return &Listener{inner: inner, max: cfg.MaxConns, conns: make(map[*trackedConn]struct{})}
}

// trackedConn is a connection the Listener counts.
type trackedConn struct {
	net.Conn
	l     *Listener
	since time.Time // when it last became idle (or was accepted)
	busy  bool      // serving a request
	once  sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.l.forget(c) })
	return c.Conn.Close()
}

// Accept waits for a connection and makes room for it.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.inner.Accept()
		if err != nil {
			return nil, err
		}
		tc := &trackedConn{Conn: c, l: l, since: time.Now()}
		victim, ok := l.admit(tc)
		if victim != nil {
			l.displaced.Add(1)
			victim.Close()
		}
		if !ok {
			l.refused.Add(1)
			c.Close()
			continue
		}
		return tc, nil
	}
}

// admit counts c in, choosing a connection to displace when at the bound:
// the one idle longest among those not serving a request. false: every
// connection is busy, and c is refused.
func (l *Listener) admit(c *trackedConn) (victim *trackedConn, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.conns) >= l.max {
		for o := range l.conns {
			if !o.busy && (victim == nil || o.since.Before(victim.since)) {
				victim = o
			}
		}
		if victim == nil {
			return nil, false
		}
		delete(l.conns, victim)
	}
	l.conns[c] = struct{}{}
	return victim, true
}

func (l *Listener) forget(c *trackedConn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

// ConnState follows http.Server's view of each connection.
func (l *Listener) ConnState(c net.Conn, s http.ConnState) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	t, ok := c.(*trackedConn)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, counted := l.conns[t]; !counted {
		return
	}
	switch s {
	case http.StateActive:
		t.busy = true
	case http.StateIdle:
		t.busy, t.since = false, time.Now()
	case http.StateHijacked, http.StateClosed:
		delete(l.conns, t)
	}
}

// Close closes the listener (not the connections: http.Server does that).
func (l *Listener) Close() error { return l.inner.Close() }

// Addr is the listening address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

// Stats are counts of what the bound did.
type Stats struct {
	Open      int    // connections open now
	Displaced uint64 // idle or unfinished connections closed to make room
	Refused   uint64 // new connections refused because every one was busy
}

// Stats reports the listener's counts.
func (l *Listener) Stats() Stats {
	l.mu.Lock()
	n := len(l.conns)
	l.mu.Unlock()
	return Stats{Open: n, Displaced: l.displaced.Load(), Refused: l.refused.Load()}
}
