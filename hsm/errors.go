package hsm

import (
	"context"
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"
)

// The closed set of error kinds this package returns. Every error from hsm
// wraps exactly one of them.
var (
	// ErrNotFound: no object with the requested key reference is in the token.
	ErrNotFound = errors.New("hsm: key object not found")
	// ErrInvalidCiphertext: the token refused to decrypt (bad tag, wrong AAD,
	// wrong key, malformed input). SoftHSM2 reports a failed GCM tag check as
	// CKR_GENERAL_ERROR, so on decrypt that code also lands here.
	ErrInvalidCiphertext = errors.New("hsm: invalid ciphertext")
	// ErrInvalidSignature: a signature or MAC did not verify (C_Verify said
	// so, or it was malformed before the token could see it).
	ErrInvalidSignature = errors.New("hsm: invalid signature")
	// ErrInvalidInput: the caller passed arguments the token refused (length
	// out of range, bad mechanism parameters).
	ErrInvalidInput = errors.New("hsm: invalid input")
	// ErrUnavailable: the token cannot be reached or used right now (removed,
	// not initialised, login failed, closed). Retrying later may succeed.
	ErrUnavailable = errors.New("hsm: token unavailable")
	// ErrTimeout: the token did not answer in time. No session became free
	// before the caller's deadline, or a call ran past Config.CallTimeout
	// (this one, or another that showed the token stopped answering).
	ErrTimeout = errors.New("hsm: timed out waiting for the token")
	// ErrExists: an object with that key reference already exists.
	ErrExists = errors.New("hsm: key object already exists")
	// ErrInternal: any other token failure.
	ErrInternal = errors.New("hsm: token error")
)

// Error is a token failure: the operation, the CKR code when there is one,
// and the kind (one of the sentinels above), which Unwrap returns.
type Error struct {
	Op   string
	Code uint // CKR_* value; 0 when the failure did not come from the token
	Kind error
	Err  error // underlying cause, if not a CKR code
}

func (e *Error) Error() string {
	switch {
	case e.Code != 0:
		return fmt.Sprintf("%s: %s: %s", e.Kind, e.Op, pkcs11.Error(e.Code))
	case e.Err != nil:
		return fmt.Sprintf("%s: %s: %v", e.Kind, e.Op, e.Err)
	default:
		return fmt.Sprintf("%s: %s", e.Kind, e.Op)
	}
}

// Unwrap returns the error kind, so errors.Is(err, hsm.ErrNotFound) works.
func (e *Error) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Kind, e.Err}
	}
	return []error{e.Kind}
}

// ckr extracts the CKR code from err, or 0.
func ckr(err error) uint {
	var he *Error
	if errors.As(err, &he) && he.Code != 0 {
		return he.Code
	}
	var pe pkcs11.Error
	if errors.As(err, &pe) {
		return uint(pe)
	}
	return 0
}

// CKR_AEAD_DECRYPT_FAILED is PKCS#11 3.0; miekg/pkcs11 does not name it.
const ckrAEADDecryptFailed = 0x00000035

// translate turns an error from the module into an *Error of the right kind.
// decrypt says whether the failing call was a decryption, where SoftHSM2's
// CKR_GENERAL_ERROR means a failed tag check.
func translate(op string, err error, decrypt bool) error {
	if err == nil {
		return nil
	}
	var he *Error
	if errors.As(err, &he) {
		return err
	}
	code := ckr(err)
	if code == 0 {
		kind := ErrInternal
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			kind = ErrTimeout
		}
		return &Error{Op: op, Kind: kind, Err: err}
	}
	return &Error{Op: op, Code: code, Kind: kindOf(code, decrypt)}
}

func kindOf(code uint, decrypt bool) error {
	switch code {
	case pkcs11.CKR_ENCRYPTED_DATA_INVALID, pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE, ckrAEADDecryptFailed:
		return ErrInvalidCiphertext
	case pkcs11.CKR_GENERAL_ERROR, pkcs11.CKR_FUNCTION_FAILED:
		if decrypt {
			return ErrInvalidCiphertext
		}
		return ErrInternal
	case pkcs11.CKR_DATA_LEN_RANGE, pkcs11.CKR_DATA_INVALID, pkcs11.CKR_ARGUMENTS_BAD,
		pkcs11.CKR_MECHANISM_PARAM_INVALID:
		return ErrInvalidInput
	case pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED,
		pkcs11.CKR_USER_NOT_LOGGED_IN, pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED,
		pkcs11.CKR_DEVICE_ERROR, pkcs11.CKR_PIN_INCORRECT, pkcs11.CKR_PIN_LOCKED,
		pkcs11.CKR_TOKEN_NOT_RECOGNIZED, pkcs11.CKR_SLOT_ID_INVALID:
		return ErrUnavailable
	case pkcs11.CKR_KEY_HANDLE_INVALID, pkcs11.CKR_OBJECT_HANDLE_INVALID:
		return ErrNotFound
	}
	return ErrInternal
}

// unavailable returns err as an ErrUnavailable: as it is if it is one.
func unavailable(op string, err error) error {
	if errors.Is(err, ErrUnavailable) {
		return err
	}
	return &Error{Op: op, Kind: ErrUnavailable, Err: err}
}

// sessionBroken: the session must be discarded, never reused. These codes
// say the session, its login or the device behind it is gone or in an
// unknown state, so a session that returned one would fail the next caller
// too (crypto11's pool puts such sessions back, and they keep failing;
// eclipse-keypont/crypto11 issue 142). Every other code — a refused
// ciphertext, signature, length or mechanism parameter, a missing object —
// is about the request, and ends the operation it was returned by as
// PKCS#11 requires, so the session goes back to the pool: evicting on any
// error would let a client that sends bad ciphertexts churn the pool.
func sessionBroken(err error) bool {
	switch ckr(err) {
	case pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED, pkcs11.CKR_DEVICE_ERROR,
		pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_TOKEN_NOT_RECOGNIZED,
		pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED, pkcs11.CKR_USER_NOT_LOGGED_IN, pkcs11.CKR_OPERATION_ACTIVE:
		return true
	}
	return false
}

// needsRecovery: the login or the module itself is gone; the token must be
// logged in again, or the module re-initialised, before any session works.
func needsRecovery(err error) bool {
	switch ckr(err) {
	case pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED,
		pkcs11.CKR_USER_NOT_LOGGED_IN, pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED,
		pkcs11.CKR_SLOT_ID_INVALID, pkcs11.CKR_TOKEN_NOT_RECOGNIZED:
		return true
	}
	return false
}

// storageSuspect: the failure may mean the module lost the token's storage,
// or may not; a probe of the token decides. SoftHSM2, once it failed to read
// a token's directory, answers CKR_GENERAL_ERROR to calls that write objects
// and finds no objects at all, until C_Initialize runs again. Only the kinds
// ErrNotFound, ErrInternal and ErrUnavailable qualify: a refused ciphertext
// (SoftHSM2's CKR_GENERAL_ERROR on a failed GCM tag is ErrInvalidCiphertext),
// signature or input says nothing about the token, and a client sending many
// must not be able to make the token probed, let alone re-initialised.
func storageSuspect(err error) bool {
	if errors.Is(err, ErrNotFound) {
		return true
	}
	if !errors.Is(err, ErrInternal) && !errors.Is(err, ErrUnavailable) {
		return false
	}
	switch ckr(err) {
	case pkcs11.CKR_GENERAL_ERROR, pkcs11.CKR_FUNCTION_FAILED, pkcs11.CKR_DEVICE_ERROR, pkcs11.CKR_DEVICE_MEMORY:
		return true
	}
	return false
}

// handleStale: a cached object handle no longer names the object (for example
// after a re-login); find the object again.
func handleStale(err error) bool {
	switch ckr(err) {
	case pkcs11.CKR_KEY_HANDLE_INVALID, pkcs11.CKR_OBJECT_HANDLE_INVALID:
		return true
	}
	return false
}
