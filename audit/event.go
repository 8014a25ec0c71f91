// Package audit owns the audit log: one JSON line per request in the shape
// of an AWS CloudTrail event (two for a change: its intent, written durably
// before the change commits, and its outcome; service events for what the
// service does on its own), linked into a SHA-256 hash chain and
// periodically sealed by a checkpoint that an HSM-resident ECDSA P-256 key
// signs. Writer appends records (to a rotating file and/or an io.Writer);
// Verify checks a set of log files against the signing key's public key.
// The line format is specified in FORMAT.md in this directory. For metrics,
// Config.Observer is told of every write and Writer.Broken says, without
// waiting for a write, whether the log refuses records.
//
// The package never sees key material: it signs through the small Signer
// interface, which the caller implements with the token. It must not
// import anything from this project or from outside the Go standard
// library, so that the verifier can be built and audited on its own.
package audit

import (
	"crypto/rand"
	"encoding/hex"
	"time"
)

// Values of fixed Event fields; Writer.Write fills them in when empty.
const (
	EventVersion = "1.08"
	EventSource  = "kms.amazonaws.com"
	EventType    = "AwsApiCall"
	// EventTypeService is the EventType of what the service did on its own:
	// deleting a key whose waiting period ended, rotating a key on schedule,
	// the log's own outages and retention.
	EventTypeService = "AwsServiceEvent"
)

// Values of UserIdentity.Type.
const (
	IdentityIAMUser     = "IAMUser"
	IdentityAssumedRole = "AssumedRole"
	IdentityRoot        = "Root"
	// IdentityUnknown is for requests whose caller was not authenticated
	// (bad signature, unknown access key, no credentials).
	IdentityUnknown = "Unknown"
	// IdentityService is the service itself, in service events (with
	// InvokedBy set to EventSource, as CloudTrail shows KMS's own events).
	IdentityService = "AWSService"
)

// ResourceTypeKey is the Resource.Type of a KMS key.
const ResourceTypeKey = "AWS::KMS::Key"

// Event is one audit record in CloudTrail's event shape. The field order is
// CloudTrail's; the writer appends the hash-chain link (FORMAT.md).
//
// The caller builds RequestParameters and ResponseElements and must never
// put plaintext, data keys, private keys, passwords or any other secret in
// them, nor in ErrorMessage: the log is readable by auditors and is kept
// for years. Log what CloudTrail logs for the operation (key id,
// algorithm, encryption context, grant tokens are not secret there), and
// nothing else. Error messages must be the client-safe message, never an
// internal cause.
type Event struct {
	EventVersion    string       `json:"eventVersion"` // EventVersion if empty
	UserIdentity    UserIdentity `json:"userIdentity"`
	EventTime       time.Time    `json:"eventTime"`   // now if zero; written in UTC, whole seconds
	EventSource     string       `json:"eventSource"` // EventSource if empty
	EventName       string       `json:"eventName"`   // the operation, e.g. "Encrypt"
	AWSRegion       string       `json:"awsRegion"`
	SourceIPAddress string       `json:"sourceIPAddress"`
	UserAgent       string       `json:"userAgent"`
	// ErrorCode is the exception name (e.g. "AccessDeniedException"), empty
	// when the request succeeded.
	ErrorCode    string `json:"errorCode,omitempty"`
	ErrorMessage string `json:"errorMessage,omitempty"`
	// RequestParameters and ResponseElements hold no secrets (see above).
	// ResponseElements is nil (JSON null) for failed requests.
	RequestParameters map[string]any `json:"requestParameters"`
	ResponseElements  map[string]any `json:"responseElements"`
	// AdditionalEventData holds what CloudTrail's fields have no place for:
	// the phase of a change recorded before it commits (PhaseIntent), the
	// details of a service event. No secrets either.
	AdditionalEventData map[string]any `json:"additionalEventData,omitempty"`
	RequestID           string         `json:"requestID,omitempty"`
	EventID             string         `json:"eventID"` // a random UUID v4 if empty
	ReadOnly            bool           `json:"readOnly"`
	Resources           []Resource     `json:"resources,omitempty"`
	EventType           string         `json:"eventType"` // EventType if empty
	RecipientAccountID  string         `json:"recipientAccountId"`
}

// UserIdentity is the caller as authenticated (or not) by the request.
type UserIdentity struct {
	Type        string `json:"type"` // IdentityIAMUser, IdentityAssumedRole, IdentityRoot or IdentityUnknown
	PrincipalID string `json:"principalId,omitempty"`
	ARN         string `json:"arn,omitempty"`
	AccountID   string `json:"accountId,omitempty"`
	AccessKeyID string `json:"accessKeyId,omitempty"`
	InvokedBy   string `json:"invokedBy,omitempty"`
}

// Keys and values of AdditionalEventData for a change recorded in two
// records: the intent, written (and fsynced) before the change commits, and
// the outcome, which names the intent's eventID. An intent without an
// outcome is a change whose result was not recorded: it may have happened.
const (
	PhaseKey       = "phase"
	PhaseIntent    = "intent"
	IntentEventKey = "intentEventId"
)

// Resource is a KMS key the request named.
type Resource struct {
	ARN       string `json:"ARN"`
	AccountID string `json:"accountId"`
	Type      string `json:"type"` // ResourceTypeKey
}

// fill sets the fields that have a fixed or generated value when the caller
// left them empty, and puts EventTime in CloudTrail's form.
func (ev *Event) fill(now time.Time) {
	if ev.EventVersion == "" {
		ev.EventVersion = EventVersion
	}
	if ev.EventSource == "" {
		ev.EventSource = EventSource
	}
	if ev.EventType == "" {
		ev.EventType = EventType
	}
	if ev.EventID == "" {
		ev.EventID = newEventID()
	}
	if ev.UserIdentity.Type == "" {
		ev.UserIdentity.Type = IdentityUnknown
	}
	if ev.EventTime.IsZero() {
		ev.EventTime = now
	}
	ev.EventTime = ev.EventTime.UTC().Truncate(time.Second)
}

// newEventID returns a random (version 4) UUID in canonical form.
func newEventID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails: crypto/rand crashes the program instead (Go 1.24+)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:36], b[10:16])
	return string(s[:])
}
