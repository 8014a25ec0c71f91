package main

import (
	"context"
	"errors"
	"fmt"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/hsmkms/hsmkms/metrics"
)

// metricsAddress resolves --metrics-listen (metrics.listen in the file). A
// bare port ("9464") or a port with no host (":9464") binds loopback,
// 127.0.0.1 — unlike Go's usual reading of ":9464" as every interface: the
// metrics are for a scraper on the same host unless the operator names an
// address others can reach (0.0.0.0:9464, [::]:9464, a host's address),
// which is allowed and logged at start.
func metricsAddress(s string) (string, error) {
	if _, err := strconv.ParseUint(s, 10, 16); err == nil {
		return net.JoinHostPort("127.0.0.1", s), nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("--metrics-listen %q: want PORT, :PORT or HOST:PORT: %w", s, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", fmt.Errorf("--metrics-listen %q: bad port", s)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// metricsEndpoint is serve's metrics side: a listener of its own, never the
// API's, serving GET /metrics without SigV4. A nil *metricsEndpoint is
// metrics off; its methods then do nothing and its Metrics is nil, whose
// observers are nil.
type metricsEndpoint struct {
	ln  net.Listener
	m   *metrics.Metrics
	srv *http.Server
}

// openMetrics binds the metrics listener, if addr is set: like the API's
// port, a busy one fails the start at once.
func openMetrics(addr string) (*metricsEndpoint, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen: %w", err)
	}
	return &metricsEndpoint{ln: ln, m: metrics.New()}, nil
}

// metrics returns the Metrics to wire observers to (nil when off).
func (e *metricsEndpoint) metrics() *metrics.Metrics {
	if e == nil {
		return nil
	}
	return e.m
}

// serve starts serving; close stops it.
func (e *metricsEndpoint) serve(log *slog.Logger) {
	if e == nil {
		return
	}
	e.srv = &http.Server{
		Handler:           e.m.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          stdlog.New(serverErrors{log}, "", 0),
	}
	addr := e.ln.Addr().String()
	log.Info("metrics serving", "endpoint", "http://"+addr+"/metrics")
	if loopbackOnly(addr) != nil {
		log.Warn("metrics served off loopback: anyone who can reach the address can read them (no authentication; they hold no key ids, principals or data)", "listen", addr)
	}
	go func() {
		if err := e.srv.Serve(e.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener failed; the KMS endpoint goes on", "err", err)
		}
	}()
}

// close stops the metrics server (or only the listener, if it never
// served).
func (e *metricsEndpoint) close() {
	if e == nil {
		return
	}
	if e.srv == nil {
		e.ln.Close()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e.srv.Shutdown(ctx) // scrapes in flight get 5 s; a scraper retries anyway
}
