package api

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/hsmkms/hsmkms/service"
)

// Operation labels come from the dispatch table, never from the request.
func TestOperationName(t *testing.T) {
	t.Parallel()
	for target := range operations {
		if got, want := operationName(target), strings.TrimPrefix(target, "TrentService."); got != want {
			t.Errorf("operationName(%q) = %q, want %q", target, got, want)
		}
	}
	for _, target := range []string{"", "TrentService.", "TrentService.NoSuchThing", "trentservice.Encrypt",
		"Encrypt", "TrentService.Encrypt ", "TrentService.1234abcd-12ab-34cd-56ef-1234567890ab"} {
		if got := operationName(target); got != UnknownOperation {
			t.Errorf("operationName(%q) = %q, want %s", target, got, UnknownOperation)
		}
	}
}

// The outcome is what the error handler tells the caller.
func TestOutcome(t *testing.T) {
	t.Parallel()
	e := echo.New()
	ctx := func() echo.Context {
		return e.NewContext(httptest.NewRequest(http.MethodPost, "/", nil), httptest.NewRecorder())
	}
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"success", nil, OutcomeOK},
		{"exception", service.Errorf(service.ExcNotFound, "Key 'x' does not exist"), service.ExcNotFound},
		{"wrapped exception", errors.Join(errors.New("context"), &service.Error{Code: service.ExcThrottling}), service.ExcThrottling},
		{"any other error", errors.New("boom"), service.ExcInternal},
	} {
		if got := outcome(ctx(), tc.err); got != tc.want {
			t.Errorf("%s: outcome %q, want %q", tc.name, got, tc.want)
		}
	}
	// An answer already sent stands, whatever failed after it.
	c := ctx()
	c.Response().WriteHeader(http.StatusOK)
	if got := outcome(c, errors.New("broken pipe")); got != OutcomeOK {
		t.Errorf("committed answer: outcome %q, want ok", got)
	}
}
