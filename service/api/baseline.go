package api

import (
	"log/slog"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/hsmkms/hsmkms/service"
)

// NewBaseline returns the benchmark baseline: the same echo stack, body
// handling, request ids, dispatch lookup and response writing as the real
// endpoint, but no SigV4 and no service call — every known operation answers
// "{}". `make bench` compares the real endpoint's throughput with it.
func NewBaseline() http.Handler {
	e := newEcho(slog.New(slog.DiscardHandler))
	e.POST("/", func(c echo.Context) error {
		r, w := c.Request(), c.Response()
		body := getBuf()
		defer putBuf(body)
		if _, err := body.ReadFrom(http.MaxBytesReader(w, r.Body, DefaultBodyLimit)); err != nil {
			return service.Errorf(service.ExcSerialization, "Could not read the request body.")
		}
		if _, ok := operations[r.Header.Get("X-Amz-Target")]; !ok {
			return service.Errorf(service.ExcUnknownOperation, "")
		}
		w.Header().Set(echo.HeaderContentType, contentType)
		w.WriteHeader(http.StatusOK)
		_, err := w.Write([]byte("{}"))
		return err
	})
	return e
}
