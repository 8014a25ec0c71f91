package service

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/hsmkms/hsmkms/hsm"
)

// AWS KMS exception names, as sent in the error body's __type.
const (
	ExcAccessDenied        = "AccessDeniedException"
	ExcAlreadyExists       = "AlreadyExistsException"
	ExcConflict            = "ConflictException"
	ExcDependencyTimeout   = "DependencyTimeoutException"
	ExcDisabled            = "DisabledException"
	ExcDryRun              = "DryRunOperationException"
	ExcIncorrectKey        = "IncorrectKeyException"
	ExcInvalidCiphertext   = "InvalidCiphertextException"
	ExcInvalidGrantToken   = "InvalidGrantTokenException"
	ExcInvalidAliasName    = "InvalidAliasNameException"
	ExcInvalidKeyUsage     = "InvalidKeyUsageException"
	ExcInvalidKMSSignature = "KMSInvalidSignatureException"
	ExcInvalidMac          = "KMSInvalidMacException"
	ExcInvalidMarker       = "InvalidMarkerException"
	ExcInvalidState        = "KMSInvalidStateException"
	ExcInternal            = "KMSInternalException"
	ExcKeyUnavailable      = "KeyUnavailableException"
	ExcLimitExceeded       = "LimitExceededException"
	ExcMalformedPolicy     = "MalformedPolicyDocumentException"
	ExcNotFound            = "NotFoundException"
	ExcTag                 = "TagException"
	ExcUnsupportedOp       = "UnsupportedOperationException"
	ExcValidation          = "ValidationException"
	ExcCustomKeyStoreNF    = "CustomKeyStoreNotFoundException"
	ExcSerialization       = "SerializationException"
	ExcUnknownOperation    = "UnknownOperationException"
	ExcIncompleteSignature = "IncompleteSignatureException"
	ExcInvalidSignature    = "InvalidSignatureException"
	ExcMissingAuth         = "MissingAuthenticationTokenException"
	ExcUnrecognizedClient  = "UnrecognizedClientException"
	ExcThrottling          = "ThrottlingException"
	ExcRequestTooLarge     = "RequestEntityTooLargeException"
)

// serverFaults are the exceptions AWS sends with HTTP 500 (fault: server in
// the service model); SDKs retry them. Every other exception is a 400.
var serverFaults = map[string]bool{
	ExcInternal:          true,
	ExcKeyUnavailable:    true,
	ExcDependencyTimeout: true,
}

// Error is a KMS exception: the AWS type name, a message safe to send to the
// client, and the cause, which is logged and never sent. Every error the
// operations return is an *Error.
type Error struct {
	Code    string
	Message string
	Cause   error
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Cause)
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Cause }

// HTTPStatus is the status AWS sends with this exception.
func (e *Error) HTTPStatus() int { return StatusOf(e.Code) }

// StatusOf returns the HTTP status AWS sends with the named exception.
func StatusOf(code string) int {
	if serverFaults[code] {
		return http.StatusInternalServerError
	}
	if code == ExcRequestTooLarge {
		return http.StatusRequestEntityTooLarge
	}
	return http.StatusBadRequest
}

// Errorf builds an *Error with a formatted client-safe message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// AsError returns err as an *Error; anything else becomes KMSInternalException
// with a generic message (the original is kept as the cause, for the log).
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: ExcInternal, Message: "An internal error occurred.", Cause: err}
}

func internal(cause error) *Error {
	return &Error{Code: ExcInternal, Message: "An internal error occurred.", Cause: cause}
}

// invalidCiphertext: AWS sends InvalidCiphertextException with an empty
// message, whatever check failed, so nothing is revealed about why.
func invalidCiphertext(cause error) *Error {
	return &Error{Code: ExcInvalidCiphertext, Message: "", Cause: cause}
}

func incorrectKey() *Error {
	return Errorf(ExcIncorrectKey, "The key ID in the request does not identify a CMK that can perform this operation.")
}

func dryRun() *Error {
	return Errorf(ExcDryRun, "The request would have succeeded, but the DryRun option is set.")
}

func isDryRun(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == ExcDryRun
}

// fromToken maps an hsm error met while using keyARN to the exception AWS
// would send.
func fromToken(err error, keyARN string) *Error {
	switch {
	case errors.Is(err, hsm.ErrInvalidCiphertext):
		return invalidCiphertext(err)
	case errors.Is(err, hsm.ErrTimeout):
		return &Error{Code: ExcDependencyTimeout, Message: "The system timed out while trying to fulfill the request.", Cause: err}
	case errors.Is(err, hsm.ErrUnavailable), errors.Is(err, hsm.ErrNotFound):
		// The key record exists but its material cannot be used right now.
		msg := "The key material is not available in the key store."
		if keyARN != "" {
			msg = keyARN + " is unavailable."
		}
		return &Error{Code: ExcKeyUnavailable, Message: msg, Cause: err}
	}
	return internal(err)
}

// fromTokenNoKey maps an hsm error met where no key's material was used —
// generating new material, drawing random bytes, checking a marker — to the
// exceptions AWS models for such operations: DependencyTimeoutException after
// a bounded wait, KMSInternalException otherwise (KeyUnavailableException
// names a key that exists but cannot be used, which is not the case).
func fromTokenNoKey(err error) *Error {
	if errors.Is(err, hsm.ErrTimeout) {
		return &Error{Code: ExcDependencyTimeout, Message: "The system timed out while trying to fulfill the request.", Cause: err}
	}
	return internal(err)
}

// validation collects constraint failures and reports them the way AWS does:
// "1 validation error detected: Value '…' at 'field' failed to satisfy
// constraint: …", joined with "; " when there are several.
type validation struct{ msgs []string }

func (v *validation) add(value *string, field, constraint string) {
	if value != nil {
		v.msgs = append(v.msgs, fmt.Sprintf("Value '%s' at '%s' failed to satisfy constraint: %s", *value, field, constraint))
	} else {
		v.msgs = append(v.msgs, fmt.Sprintf("Value at '%s' failed to satisfy constraint: %s", field, constraint))
	}
}

// null reports a required member that is missing.
func (v *validation) null(field string) {
	v.msgs = append(v.msgs, fmt.Sprintf("Value null at '%s' failed to satisfy constraint: Member must not be null", field))
}

// length checks a string parameter's length bounds (the value is echoed).
// Lengths are counted in characters, as the AWS model counts them.
func (v *validation) length(s *string, field string, min, max int) {
	if s == nil {
		return
	}
	n := utf8.RuneCountInString(*s)
	if n < min {
		v.add(s, field, fmt.Sprintf("Member must have length greater than or equal to %d", min))
	} else if n > max {
		v.add(s, field, fmt.Sprintf("Member must have length less than or equal to %d", max))
	}
}

// blobLength checks a binary parameter's length bounds (the value is not
// echoed: it may be secret).
func (v *validation) blobLength(b []byte, present bool, field string, min, max int) {
	if !present {
		return
	}
	if len(b) < min {
		v.add(nil, field, fmt.Sprintf("Member must have length greater than or equal to %d", min))
	} else if len(b) > max {
		v.add(nil, field, fmt.Sprintf("Member must have length less than or equal to %d", max))
	}
}

func (v *validation) intRange(n *int32, field string, min, max int32) {
	if n == nil {
		return
	}
	s := fmt.Sprint(*n)
	if *n < min {
		v.add(&s, field, fmt.Sprintf("Member must have value greater than or equal to %d", min))
	} else if *n > max {
		v.add(&s, field, fmt.Sprintf("Member must have value less than or equal to %d", max))
	}
}

func (v *validation) enum(s *string, field string, allowed []string) {
	if s == nil {
		return
	}
	for _, a := range allowed {
		if *s == a {
			return
		}
	}
	v.add(s, field, "Member must satisfy enum value set: ["+strings.Join(allowed, ", ")+"]")
}

func (v *validation) grantTokens(tokens []string) {
	if len(tokens) > 10 {
		v.add(nil, "grantTokens", "Member must have length less than or equal to 10")
	}
	for i := range tokens {
		v.length(&tokens[i], fmt.Sprintf("grantTokens.%d.member", i+1), 1, 8192)
	}
}

func (v *validation) err() error {
	switch len(v.msgs) {
	case 0:
		return nil
	case 1:
		return Errorf(ExcValidation, "1 validation error detected: %s", v.msgs[0])
	default:
		return Errorf(ExcValidation, "%d validation errors detected: %s", len(v.msgs), strings.Join(v.msgs, "; "))
	}
}
