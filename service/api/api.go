// Package api serves the AWS KMS wire protocol (AWS JSON 1.1, X-Amz-Target:
// TrentService.<Operation>) over echo: SigV4 authentication, request rate
// limits, one dispatch table, one error writer, health endpoints. It turns
// requests into calls on service.Service and never does cryptography or
// storage itself.
//
// It imports service and echo; nothing but cmd imports it.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/hsmkms/hsmkms/service"
	"github.com/hsmkms/hsmkms/service/api/sigv4"
	"github.com/hsmkms/hsmkms/service/api/transport"
)

// contentType is the AWS JSON 1.1 media type, sent on every response.
const contentType = "application/x-amz-json-1.1"

// DefaultBodyLimit bounds request bodies. The largest legitimate KMS request
// is a CreateKey or PutKeyPolicy with a 128 KiB policy.
const DefaultBodyLimit = 256 << 10

// Config is what New needs.
type Config struct {
	Service *service.Service
	// Credentials maps access key ids to secrets and principals
	// (sigv4.Credential.Principal must be a service.Caller).
	Credentials sigv4.CredentialStore
	Region      string
	Logger      *slog.Logger
	BodyLimit   int64
	// Now is the clock used for signature dates (default time.Now).
	Now func() time.Time
	// Audit, if set, records every request, allowed, denied or failed; a
	// request whose record cannot be written fails, and a change is
	// recorded before it commits (see Auditor).
	Audit Auditor
	// AuthFailureRecords bounds the records of failed authentication (the
	// zero value: DefaultAuthFailureRecords).
	AuthFailureRecords RecordRate
	// AccessLog writes one line per request to Logger (level info):
	// request id, operation, principal, source address, key ARNs, outcome,
	// status and duration; never any content of the request.
	AccessLog bool
	// Proxies are the peers believed when they say, by X-Forwarded-For,
	// who their client is (aws:SourceIp and the audit record's
	// sourceIPAddress). nil: none, the TCP peer is the client.
	Proxies *transport.Proxies
	// RateLimits bound the requests admitted per client address and per
	// principal (the zero value: no limits; DefaultRateLimits are AWS's).
	// Records of throttled requests are rate-limited like those of failed
	// authentication (AuthFailureRecords), per principal.
	RateLimits RateLimits
	// Observer, if set, is told of every KMS request once answered, for
	// metrics (observe.go).
	Observer Observer
}

// Server is the KMS endpoint. It is an http.Handler.
type Server struct {
	svc       *service.Service
	verifier  *sigv4.Verifier
	log       *slog.Logger
	limit     int64
	echo      *echo.Echo
	audit     Auditor
	authFails *authFailureLimiter
	region    string
	partition string
	proxies   *transport.Proxies
	accessLog bool

	throttle *throttle
	// throttledRecords bounds the records of throttled requests, per
	// principal.
	throttledRecords *authFailureLimiter
	observer         Observer
}

// New builds the endpoint.
func New(cfg Config) (*Server, error) {
	if cfg.Service == nil || cfg.Credentials == nil || cfg.Region == "" {
		return nil, errors.New("api: service, credentials and region are required")
	}
	if err := cfg.RateLimits.Validate(); err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	s := &Server{
		svc: cfg.Service,
		// X-Amz-Target chooses the operation: it must be signed, or a
		// request signed for DescribeKey could be replayed as another.
		verifier: &sigv4.Verifier{Region: cfg.Region, Service: "kms", Store: cfg.Credentials, Now: cfg.Now,
			SignedHeaders: []string{"x-amz-target"}},
		log:    cfg.Logger,
		limit:  cfg.BodyLimit,
		audit:  cfg.Audit,
		region: cfg.Region, partition: "aws",
		proxies: cfg.Proxies, accessLog: cfg.AccessLog, observer: cfg.Observer,
	}
	s.authFails = newAuthFailureLimiter(cfg.AuthFailureRecords, time.Now)
	s.throttledRecords = newAuthFailureLimiter(cfg.AuthFailureRecords, time.Now)
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	s.throttle = newThrottle(cfg.RateLimits, now)
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.limit <= 0 {
		s.limit = DefaultBodyLimit
	}
	s.echo = newEcho(s.log)
	s.echo.POST("/", s.observed(s.handle))
	s.echo.GET("/healthz", func(c echo.Context) error { return c.String(http.StatusOK, "ok\n") })
	s.echo.GET("/readyz", s.ready)
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.echo.ServeHTTP(w, r) }

func newEcho(log *slog.Logger) *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = errorHandler(log)
	e.Pre(requestID)
	return e
}

// requestID gives every response, including the router's own errors, an
// x-amzn-RequestId, as AWS does.
func requestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		id := uuid.NewString()
		c.Set(requestIDKey, id)
		c.Response().Header().Set("x-amzn-RequestId", id)
		return next(c)
	}
}

// ready answers GET /readyz: 200 when requests can succeed, 503 naming what
// stands in the way — the token, a store that cannot commit, or an audit
// log that cannot take records
// (with the log broken every API request fails, so the server is not ready).
func (s *Server) ready(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	if err := s.svc.Ready(ctx); err != nil {
		s.log.Warn("readiness check failed", "err", err)
		if errors.Is(err, service.ErrStoreNotReady) {
			return c.String(http.StatusServiceUnavailable, "store unavailable\n")
		}
		return c.String(http.StatusServiceUnavailable, "token unavailable\n")
	}
	if s.audit != nil {
		check := s.audit.Err
		if r, ok := s.audit.(interface{ Ready() error }); ok {
			check = r.Ready
		}
		if err := check(); err != nil {
			s.log.Warn("readiness check failed", "err", err)
			return c.String(http.StatusServiceUnavailable, "audit log unavailable\n")
		}
	}
	return c.String(http.StatusOK, "ok\n")
}

// bufPool recycles request and response buffers. Buffers that held
// plaintext are zeroed before they go back.
var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func getBuf() *bytes.Buffer { return bufPool.Get().(*bytes.Buffer) }

func putBuf(b *bytes.Buffer) {
	clear(b.Bytes()[:b.Cap()])
	b.Reset()
	if b.Cap() <= 1<<20 { // a rare huge buffer is zeroed, then left to the GC
		bufPool.Put(b)
	}
}

// requestIDKey stores the request id in the echo context.
const requestIDKey = "hsmkms.requestID"

func (s *Server) handle(c echo.Context) error {
	start := time.Now()
	x := exchange{target: c.Request().Header.Get("X-Amz-Target")}
	err := s.respond(c, &x)
	if s.accessLog {
		s.logAccess(c, &x, err, start)
	}
	return err
}

// logAccess writes the access log line of a finished request: who asked
// for what, on which key, and how it ended. It is built from names, ids
// and codes only; nothing of the request's or the response's content.
func (s *Server) logAccess(c echo.Context, x *exchange, err error, start time.Time) {
	reqID, _ := c.Get(requestIDKey).(string)
	op := unknownEventName
	if _, ok := operations[x.target]; ok {
		op = strings.TrimPrefix(x.target, "TrentService.")
	}
	principal := x.akid
	if x.caller != nil {
		principal = x.caller.ARN
	}
	outcome, status := "ok", http.StatusOK
	if err != nil {
		e := service.AsError(err)
		outcome, status = e.Code, e.HTTPStatus()
	}
	attrs := []slog.Attr{
		slog.String("requestId", reqID), slog.String("operation", op), slog.String("principal", principal),
		slog.String("sourceIp", x.source),
		slog.String("outcome", outcome), slog.Int("status", status),
		slog.Float64("durationMs", float64(time.Since(start).Microseconds())/1000),
	}
	if arns := s.resourceARNs(x); len(arns) > 0 {
		attrs = append(attrs, slog.Any("keyArn", arns))
	}
	s.log.LogAttrs(c.Request().Context(), slog.LevelInfo, "request", attrs...)
}

// respond runs one request and writes its response, or returns the error
// the error handler turns into one.
func (s *Server) respond(c echo.Context, x *exchange) error {
	resp := getBuf()
	defer putBuf(resp) // may hold plaintext: zeroed on return
	err := s.process(c, x, resp)
	if s.audit != nil {
		if aerr := s.record(c, x, err); aerr != nil {
			if x.intentID == "" || err != nil {
				// Nothing changed, or the change failed: the caller gets
				// KMSInternalException and no result of the request.
				return &service.Error{Code: service.ExcInternal, Message: "An internal error occurred.",
					Cause: fmt.Errorf("audit record not written, request refused: %w", aerr)}
			}
			// The change committed after its intent was recorded (and
			// fsynced); only its outcome record is missing, and the log
			// is now broken, so nothing more happens until it recovers.
			// The caller is told the truth: answering 500 for a change
			// that happened would make it retry, and create a second key.
			reqID, _ := c.Get(requestIDKey).(string)
			s.log.Error("audit: the outcome of a committed change was not recorded; its intent record stands for it",
				"requestId", reqID, "intentEventId", x.intentID, "target", x.target, "err", aerr)
		}
	}
	if err != nil {
		return err
	}
	w := c.Response()
	w.Header().Set(echo.HeaderContentType, contentType)
	w.WriteHeader(http.StatusOK)
	_, err = w.Write(resp.Bytes())
	return err
}

// process authenticates and runs one request and leaves its response body
// in resp; x collects what the audit record needs.
func (s *Server) process(c echo.Context, x *exchange, resp *bytes.Buffer) error {
	r := c.Request()
	w := c.Response()
	// Before anything costs: a flood from one address is refused unread.
	source := s.proxies.ClientAddr(r)
	x.source = source
	if err := s.throttle.admitSource(source); err != nil {
		x.akid = accessKeyOf(r.Header.Get("Authorization"))
		return err
	}
	body := getBuf()
	defer putBuf(body) // the body may hold plaintext (base64): zeroed here
	if _, err := body.ReadFrom(http.MaxBytesReader(w, r.Body, s.limit)); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return service.Errorf(service.ExcRequestTooLarge, "Request body must be at most %d bytes.", s.limit)
		}
		return service.Errorf(service.ExcSerialization, "Could not read the request body.")
	}
	cred, err := s.verifier.Verify(r, body.Bytes())
	if err != nil {
		x.akid = accessKeyOf(r.Header.Get("Authorization"))
		return authError(err)
	}
	p, ok := cred.Principal.(principal)
	if !ok {
		return &service.Error{Code: service.ExcInternal, Message: "An internal error occurred.",
			Cause: errors.New("credential has no principal")}
	}
	caller := p.caller
	caller.AccessKeyID = cred.AccessKeyID
	if len(p.clientCerts) > 0 && !transport.Bound(r.TLS, p.clientCerts) {
		// The signature is good, so whoever sent it holds the secret; but
		// the key is bound to a client certificate this connection did not
		// present. The secret alone is not enough. Such refusals count
		// against the principal's rate, so a flood of them with a leaked
		// secret is throttled (and its records bounded) like any other.
		x.caller = &caller
		if err := s.throttle.admitPrincipal(caller.ARN, x.target, nil); err != nil {
			x.throttled = true
			return err
		}
		return service.Errorf(service.ExcAccessDenied, "Access key %s may be used only over a connection with its bound client certificate.", cred.AccessKeyID)
	}
	caller.SourceIP = source
	caller.SecureTransport = s.proxies.SecureTransport(r)
	x.caller = &caller

	// The principal's rate is checked once its request is decoded (its
	// algorithm chooses the bucket), before the operation runs.
	var admit func(any) error
	if s.throttle != nil {
		admit = func(in any) error {
			err := s.throttle.admitPrincipal(caller.ARN, x.target, in)
			x.throttled = err != nil
			return err
		}
	}
	op, ok := operations[x.target]
	if !ok {
		return admitted(admit, nil, service.Errorf(service.ExcUnknownOperation, ""))
	}
	ctx := r.Context()
	var params *map[string]any
	if s.audit != nil {
		// Do nothing that could not be recorded: with the log known to be
		// unusable, refuse before the operation runs.
		if err := s.audit.Err(); err != nil {
			return &service.Error{Code: service.ExcInternal, Message: "An internal error occurred.",
				Cause: fmt.Errorf("audit log unusable, request refused: %w", err)}
		}
		// A change is recorded before it commits.
		ctx = service.WithCommitGate(ctx, s.intentGate(c, x))
		params = &x.params
	}
	in := body.Bytes()
	if len(bytes.TrimSpace(in)) == 0 {
		in = []byte("{}")
	}
	out, err := op.call(ctx, s.svc, caller, in, params, admit)
	if err != nil {
		return err
	}
	x.out = out
	if out == nil {
		resp.WriteString("{}")
		return nil
	}
	handled, err := appendSecretJSON(resp, out)
	if !handled {
		err = json.NewEncoder(resp).Encode(out)
	}
	if z, ok := out.(interface{ Zero() }); ok {
		z.Zero()
	}
	if err != nil {
		return &service.Error{Code: service.ExcInternal, Message: "An internal error occurred.", Cause: err}
	}
	return nil
}

// authError maps a SigV4 failure to the exception AWS sends for it.
func authError(err error) *service.Error {
	code := service.ExcInvalidSignature
	switch {
	case errors.Is(err, sigv4.ErrMissingAuthentication):
		code = service.ExcMissingAuth
	case errors.Is(err, sigv4.ErrIncompleteSignature):
		code = service.ExcIncompleteSignature
	case errors.Is(err, sigv4.ErrUnrecognizedClient):
		code = service.ExcUnrecognizedClient
	}
	// sigv4 messages are written to be client-safe.
	return &service.Error{Code: code, Message: err.Error()}
}

// errorBody is the AWS JSON 1.1 error shape.
type errorBody struct {
	Type    string `json:"__type"`
	Message string `json:"message"`
}

// errorHandler writes every error response: the one place that turns an
// error into a status and body, and logs the cause.
func errorHandler(log *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		var e *service.Error
		var he *echo.HTTPError
		switch {
		case errors.As(err, &e):
		case errors.As(err, &he):
			code := service.ExcUnknownOperation
			switch he.Code {
			case http.StatusNotFound:
				code = "NotFound"
			case http.StatusMethodNotAllowed:
				code = "MethodNotAllowed"
			}
			if he.Code == http.StatusNotFound || he.Code == http.StatusMethodNotAllowed {
				c.Response().Header().Set(echo.HeaderContentType, contentType)
				c.JSON(he.Code, errorBody{Type: code, Message: http.StatusText(he.Code)})
				return
			}
			e = service.AsError(err)
		default:
			e = service.AsError(err)
		}
		status := e.HTTPStatus()
		reqID, _ := c.Get(requestIDKey).(string)
		level := slog.LevelDebug
		if status >= 500 {
			level = slog.LevelError
		}
		log.Log(c.Request().Context(), level, "request failed",
			"requestId", reqID, "target", c.Request().Header.Get("X-Amz-Target"),
			"exception", e.Code, "status", status, "cause", e.Cause)
		b, merr := json.Marshal(errorBody{Type: e.Code, Message: e.Message})
		if merr != nil {
			b = []byte(`{"__type":"KMSInternalException","message":"An internal error occurred."}`)
		}
		h := c.Response().Header()
		h.Set(echo.HeaderContentType, contentType)
		c.Response().WriteHeader(status)
		c.Response().Write(b)
	}
}

// decode unmarshals a request body into in. Malformed JSON, a body that a
// stricter reader could read differently (duplicate or case-variant names,
// invalid UTF-8, unpaired surrogates: see checkWireJSON), or a value of the
// wrong type (including bad base64 in a blob field) is SerializationException.
func decode(body []byte, in any) error {
	err := checkWireJSON(body, wireShapeOf(reflect.TypeOf(in)))
	if err == nil {
		err = json.Unmarshal(body, in)
	}
	if err != nil {
		return &service.Error{Code: service.ExcSerialization, Message: serializationMessage(err), Cause: sanitized(err)}
	}
	return nil
}

// sanitized keeps what a log needs from a decoding error — its type, the
// field and the offset — and drops its text, which can quote the body (and so
// plaintext).
func sanitized(err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	var we *wireError
	switch {
	case errors.As(err, &we):
		return we // built without the body's text
	case errors.As(err, &se):
		return fmt.Errorf("json syntax error at offset %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Errorf("json value of type %s for field %q (want %s) at offset %d", te.Value, te.Field, te.Type, te.Offset)
	}
	return fmt.Errorf("json decoding failed (%T)", err)
}

func serializationMessage(err error) string {
	var we *wireError
	if errors.As(err, &we) {
		return we.message
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return "Unexpected value type for field " + te.Field + "."
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return "The request body is not valid JSON."
	}
	return "The request body could not be deserialized."
}
