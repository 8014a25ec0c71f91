package api

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/hsmkms/hsmkms/audit"
	"github.com/hsmkms/hsmkms/service"
)

// Auditor records one event per request (audit.Writer). Write returns nil
// only once the record is written; a request whose record cannot be written
// fails with KMSInternalException: no key use goes unrecorded. A change is
// recorded twice: its intent with WriteDurable before it commits (if that
// fails, nothing changes), its outcome with Write after. Err says up front
// whether the log can take records; requests are refused while it cannot.
type Auditor interface {
	Write(*audit.Event) error
	WriteDurable(*audit.Event) error
	Err() error
}

// exchange is what one request leaves for its audit record.
type exchange struct {
	target   string
	caller   *service.Caller
	akid     string         // from the Authorization header when authentication failed
	params   map[string]any // the request's auditable fields
	out      any
	intentID string // the eventID of the change's intent record, once written
	// throttled: the principal's rate refused the request.
	throttled bool
	// source is the client's address (Proxies.ClientAddr), read once.
	source string
}

// Bounds on what a request puts in its record, so that a record's size does
// not depend on what an unauthenticated client sends.
const (
	maxUserAgent    = 512
	maxErrorMessage = 1024
	// unknownEventName stands for any X-Amz-Target that names no operation.
	unknownEventName = "UnknownOperation"
)

// record writes the audit record of a finished request. Records of requests
// refused before authentication (failed authentication, or throttled per
// source address) are rate-limited per source address, and records of
// requests throttled per principal per principal: one that a limiter drops is
// not written (and counted, for a later summary record).
func (s *Server) record(c echo.Context, x *exchange, err error) error {
	ev := s.event(c, x, err)
	switch {
	case x.caller == nil:
		ok, suppressed, since := s.authFails.allow(ev.SourceIPAddress)
		if !ok {
			return nil
		}
		if suppressed > 0 {
			ev.AdditionalEventData = map[string]any{"suppressedAuthFailureRecords": suppressed,
				"suppressedSince": since.UTC().Format(time.RFC3339)}
		}
	case x.throttled:
		ok, suppressed, since := s.throttledRecords.allow(x.caller.ARN)
		if !ok {
			return nil
		}
		if suppressed > 0 {
			ev.AdditionalEventData = map[string]any{"suppressedThrottledRecords": suppressed,
				"suppressedSince": since.UTC().Format(time.RFC3339)}
		}
	}
	return s.audit.Write(ev)
}

// intentGate is the commit gate of one request: it writes the intent record
// of the change the request is about to commit, durably.
func (s *Server) intentGate(c echo.Context, x *exchange) service.CommitGate {
	return func(_ context.Context, resources []string) error {
		ev := s.event(c, x, nil)
		ev.ResponseElements = nil
		ev.Resources = nil
		for _, arn := range resources {
			if arn != "" {
				ev.Resources = append(ev.Resources, keyResource(arn))
			}
		}
		ev.AdditionalEventData = map[string]any{audit.PhaseKey: audit.PhaseIntent}
		if err := s.audit.WriteDurable(ev); err != nil {
			return err
		}
		x.intentID = ev.EventID
		return nil
	}
}

// FlushAuditSummaries writes one record per source address whose records of
// failed authentication (or of requests throttled per source) were dropped
// since the last summary, and one per principal whose records of throttled
// requests were. cmd/hsmkms calls it every minute and at shutdown.
func (s *Server) FlushAuditSummaries() error {
	if s.audit == nil {
		return nil
	}
	var errs []error
	for _, sum := range s.throttledRecords.drain() {
		caller := service.Caller{ARN: sum.source}
		if f := strings.SplitN(sum.source, ":", 6); len(f) == 6 {
			caller.Account = f[4]
		}
		ev := &audit.Event{EventName: eventThrottledSuppressed, EventType: audit.EventTypeService, AWSRegion: s.region,
			UserIdentity: identity(&caller), RecipientAccountID: caller.Account, UserAgent: audit.EventSource,
			AdditionalEventData: map[string]any{"suppressedThrottledRecords": sum.suppressed,
				"suppressedSince": sum.since.UTC().Format(time.RFC3339)}}
		if err := s.audit.Write(ev); err != nil {
			errs = append(errs, err)
		}
	}
	for _, sum := range s.authFails.drain() {
		ev := &audit.Event{EventName: eventAuthFailuresSuppressed, EventType: audit.EventTypeService, AWSRegion: s.region,
			UserIdentity:    audit.UserIdentity{Type: audit.IdentityService, InvokedBy: audit.EventSource},
			SourceIPAddress: sum.source, UserAgent: audit.EventSource,
			AdditionalEventData: map[string]any{"suppressedAuthFailureRecords": sum.suppressed,
				"suppressedSince": sum.since.UTC().Format(time.RFC3339)}}
		if err := s.audit.Write(ev); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// eventAuthFailuresSuppressed names the summary of dropped records of failed
// authentication from one source address.
const eventAuthFailuresSuppressed = "AuthFailureRecordsSuppressed"

// eventThrottledSuppressed names the summary of dropped records of one
// principal's throttled requests.
const eventThrottledSuppressed = "ThrottledRecordsSuppressed"

// auditable are the request fields an audit record may show, as CloudTrail
// does: names, ids, algorithms, encryption contexts, grant properties. It is
// a list of what may be shown, not of what may not: Plaintext, Message, Mac,
// Signature, CiphertextBlob, Policy, grant tokens and anything added later
// stay out unless added here.
var auditable = []string{"KeyId", "SourceKeyId", "DestinationKeyId", "TargetKeyId", "AliasName",
	"EncryptionContext", "SourceEncryptionContext", "DestinationEncryptionContext", "EncryptionAlgorithm",
	"SourceEncryptionAlgorithm", "DestinationEncryptionAlgorithm", "KeySpec", "KeyUsage", "KeyPairSpec",
	"CustomerMasterKeySpec", "Origin", "MultiRegion", "NumberOfBytes", "SigningAlgorithm", "MessageType",
	"MacAlgorithm", "GrantId", "GranteePrincipal", "RetiringPrincipal", "Operations", "Name",
	"PendingWindowInDays", "RotationPeriodInDays", "IncludeKeyMaterial", "PolicyName", "TagKeys",
	"BypassPolicyLockoutSafetyCheck", "Limit", "DryRun"}

type auditField struct {
	index int
	name  string // CloudTrail's lower-camel name
}

var auditFieldsOf sync.Map // reflect.Type -> []auditField

// auditFields reads the auditable fields of a decoded request (a pointer to
// an Input struct) into CloudTrail's requestParameters; unset ones are left
// out.
func auditFields(in any) map[string]any {
	v := reflect.ValueOf(in).Elem()
	t := v.Type()
	fs, ok := auditFieldsOf.Load(t)
	if !ok {
		var list []auditField
		for _, name := range auditable {
			if f, ok := t.FieldByName(name); ok && len(f.Index) == 1 {
				list = append(list, auditField{index: f.Index[0], name: strings.ToLower(name[:1]) + name[1:]})
			}
		}
		fs, _ = auditFieldsOf.LoadOrStore(t, list)
	}
	m := make(map[string]any, 4)
	for _, f := range fs.([]auditField) {
		fv := v.Field(f.index)
		switch fv.Kind() {
		case reflect.Pointer:
			if fv.IsNil() {
				continue
			}
			fv = fv.Elem()
		case reflect.Map, reflect.Slice:
			if fv.Len() == 0 {
				continue
			}
		case reflect.String:
			if fv.Len() == 0 {
				continue
			}
		case reflect.Bool:
			if !fv.Bool() {
				continue
			}
		}
		m[f.name] = fv.Interface()
	}
	return m
}

// event builds the audit record of one request.
func (s *Server) event(c echo.Context, x *exchange, err error) *audit.Event {
	r := c.Request()
	reqID, _ := c.Get(requestIDKey).(string)
	name := unknownEventName
	if _, ok := operations[x.target]; ok {
		name = strings.TrimPrefix(x.target, "TrentService.")
	}
	ev := &audit.Event{
		EventName: name, AWSRegion: s.region, UserAgent: clipUTF8(r.UserAgent(), maxUserAgent), RequestID: reqID,
		ReadOnly: strings.HasPrefix(name, "Describe") || strings.HasPrefix(name, "List") || strings.HasPrefix(name, "Get"),
	}
	if x.intentID != "" {
		ev.AdditionalEventData = map[string]any{audit.IntentEventKey: x.intentID}
	}
	ev.SourceIPAddress = x.source
	if x.caller != nil {
		ev.UserIdentity = identity(x.caller)
		ev.RecipientAccountID = x.caller.Account
	} else {
		ev.UserIdentity = audit.UserIdentity{Type: audit.IdentityUnknown, AccessKeyID: x.akid}
	}
	ev.RequestParameters = x.params
	if err != nil {
		e := service.AsError(err)
		ev.ErrorCode, ev.ErrorMessage = e.Code, clipUTF8(e.Message, maxErrorMessage)
	} else {
		ev.ResponseElements = responseElements(x.out)
	}
	for _, arn := range s.resourceARNs(x) {
		ev.Resources = append(ev.Resources, keyResource(arn))
	}
	return ev
}

func keyResource(arn string) audit.Resource {
	acct := ""
	if f := strings.SplitN(arn, ":", 6); len(f) == 6 {
		acct = f[4]
	}
	return audit.Resource{ARN: arn, AccountID: acct, Type: audit.ResourceTypeKey}
}

// clipUTF8 cuts s to at most n bytes, on a character boundary.
func clipUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func identity(c *service.Caller) audit.UserIdentity {
	id := audit.UserIdentity{ARN: c.ARN, AccountID: c.Account, AccessKeyID: c.AccessKeyID, Type: audit.IdentityIAMUser}
	switch {
	case strings.HasSuffix(c.ARN, ":root"):
		id.Type, id.PrincipalID = audit.IdentityRoot, c.Account
	case strings.Contains(c.ARN, ":assumed-role/"):
		id.Type = audit.IdentityAssumedRole
		id.PrincipalID = c.ARN[strings.LastIndex(c.ARN, ":")+1:]
	default:
		id.PrincipalID = c.ARN[strings.LastIndex(c.ARN, "/")+1:]
	}
	return id
}

// responseElements: what CloudTrail shows of a response — nothing for the
// cryptographic operations, the key's metadata or the grant's id for the
// management ones; never plaintext, data keys, signatures or tokens.
func responseElements(out any) map[string]any {
	switch o := out.(type) {
	case *service.CreateKeyOutput:
		return map[string]any{"keyMetadata": map[string]any{"keyId": o.KeyMetadata.KeyId, "arn": o.KeyMetadata.Arn,
			"keySpec": o.KeyMetadata.KeySpec, "keyUsage": o.KeyMetadata.KeyUsage, "keyState": o.KeyMetadata.KeyState}}
	case *service.CreateGrantOutput:
		return map[string]any{"grantId": o.GrantId}
	case *service.ScheduleKeyDeletionOutput:
		return map[string]any{"keyId": o.KeyId, "deletionDate": o.DeletionDate, "keyState": o.KeyState}
	}
	return nil
}

// resourceARNs are the keys a request touched: from the response when it
// names them (it does so by ARN), else from the request's key ids.
func (s *Server) resourceARNs(x *exchange) []string {
	switch o := x.out.(type) {
	case *service.EncryptOutput:
		return []string{o.KeyId}
	case *service.DecryptOutput:
		return []string{o.KeyId}
	case *service.ReEncryptOutput:
		return []string{o.SourceKeyId, o.KeyId}
	case *service.GenerateDataKeyOutput:
		return []string{o.KeyId}
	case *service.GenerateDataKeyPairOutput:
		return []string{o.KeyId}
	case *service.SignOutput:
		return []string{o.KeyId}
	case *service.VerifyOutput:
		return []string{o.KeyId}
	case *service.GenerateMacOutput:
		return []string{o.KeyId}
	case *service.VerifyMacOutput:
		return []string{o.KeyId}
	case *service.CreateKeyOutput:
		return []string{o.KeyMetadata.Arn}
	case *service.DescribeKeyOutput:
		return []string{o.KeyMetadata.Arn}
	}
	if x.params == nil || x.caller == nil {
		return nil
	}
	var out []string
	for _, name := range []string{"keyId", "sourceKeyId", "destinationKeyId", "targetKeyId"} {
		id, _ := x.params[name].(string)
		switch {
		case id == "":
		case strings.HasPrefix(id, "arn:") && strings.Contains(id, ":key/"):
			out = append(out, id)
		case !strings.HasPrefix(id, "arn:") && !strings.HasPrefix(id, "alias/"):
			out = append(out, "arn:"+s.partition+":kms:"+s.region+":"+x.caller.Account+":key/"+id)
		}
	}
	return out
}

// accessKeyOf reads the access key id from a SigV4 Authorization header, for
// the record of a request whose authentication failed.
func accessKeyOf(h string) string {
	_, rest, ok := strings.Cut(h, "Credential=")
	if !ok {
		return ""
	}
	akid, _, _ := strings.Cut(rest, "/")
	if len(akid) > 128 {
		return ""
	}
	return akid
}
