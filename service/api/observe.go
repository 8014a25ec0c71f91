package api

import (
	"errors"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/hsmkms/hsmkms/service"
)

// Observer is told of every KMS request once it has been answered, for
// metrics: the metrics package implements it. operation is the TrentService
// operation's name ("Encrypt"), or UnknownOperation for a target not in the
// dispatch table; outcome is OutcomeOK or the AWS exception name the caller
// got ("NotFoundException"). Both come from fixed sets, whatever a client
// sends, so they can label metrics. Request is called on the request path
// from many goroutines at once: it must be quick and must not block.
type Observer interface {
	Request(operation, outcome string, d time.Duration)
}

// The operation and outcome an Observer is given when no operation or no
// exception applies.
const (
	UnknownOperation = "UnknownOperation"
	OutcomeOK        = "ok"
)

// operationNames maps each target of the dispatch table to its operation's
// name: a string of the table's own, never one made from a request.
var operationNames = func() map[string]string {
	m := make(map[string]string, len(operations))
	for target := range operations {
		m[target] = strings.TrimPrefix(target, "TrentService.")
	}
	return m
}()

// observed wraps the KMS handler so that the Observer, if any, is told of
// each request when next has answered it.
func (s *Server) observed(next echo.HandlerFunc) echo.HandlerFunc {
	o := s.observer
	if o == nil {
		return next
	}
	return func(c echo.Context) error {
		start := time.Since(epoch)
		err := next(c)
		o.Request(operationName(c.Request().Header.Get("X-Amz-Target")), outcome(c, err), time.Since(epoch)-start)
		return err
	}
}

// epoch anchors the clock requests are timed with: time.Since on it reads
// only the monotonic clock, half the cost of time.Now.
var epoch = time.Now()

// operationName is the name of the operation target names, or
// UnknownOperation.
func operationName(target string) string {
	if name, ok := operationNames[target]; ok {
		return name
	}
	return UnknownOperation
}

// outcome is what the caller was told: OutcomeOK, or the exception the error
// handler writes for err. An error after the answer was committed (the
// client went away while it was sent) leaves the outcome the answer's.
func outcome(c echo.Context, err error) string {
	if err == nil || c.Response().Committed {
		return OutcomeOK
	}
	var e *service.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return service.ExcInternal
}
